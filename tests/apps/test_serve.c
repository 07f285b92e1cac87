/* fluxprm serve: every endpoint's shape and values over real HTTP on 127.0.0.1, with the tiny PRM fixture of
 * tests/apps/test_score.c (Qwen2 tokenizer from ../shared, <extra_0> on id 151651).  PRM numbers are compared
 * with `fluxprm score` run on the same {question, response} records (itself tested against HF); rule
 * rewards and GRPO advantages with hand-computed values.  Then a bounded load test (libcurl multi, 64 in
 * flight, 2,000 requests, 10 % malformed), a slowloris client, and the CLI (port 0, SIGTERM). */
#include "apps/serve.h"
#include "base/json.h"
#include "harness.h"
#include "serve_proc.h"
#include "tiny_models.h"
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>

#define REF "tests/ref/score"
#define MAX_BODY 65536

static const char *prm_dir;

/* The PRM model directory of tests/apps/test_score.c. */
static int setup_model(void) { return th_tiny_prm_dirs(&prm_dir, NULL); }

/* ---------------------------------------------------------------- the texts and their reference scores */
typedef struct {
    const char *prompt, *response, *label;
    double rule; /* hand-known verifier result; NAN = no label */
} pair;

static const pair pairs[] = {
    {"What is 2+2?", "2+2=4\n\nThe answer is \\boxed{4}", "4", 1.0},
    {"What is 2+2?", "2+2=5\n\nThe answer is \\boxed{5}", "4", 0.0},
    {"<|im_start|>user\nSolve x^2=4 for x>0.<|im_end|>\n<|im_start|>assistant\n",
     "We take square roots.\n\nSo x = 2.\n\n\\boxed{2}", "2", 1.0},
    {"Compute 7*6.", "<think>\n7*6 = 42\n</think>\n\n42", NULL, NAN},
    {"问题：1+1=?", "一加一等于二。\n\n答案是 \\boxed{2}", "2", 1.0},
    {NULL, "Q: 3+3?\n\nA: the answer is 6", "6", 1.0}, /* no prompt: the whole query is the response */
};
#define NPAIRS (sizeof pairs / sizeof pairs[0])

static double ref_score[NPAIRS], ref_whole[2];
static json_t *ref_steps[NPAIRS];

static int run_score(const char *in, json_t **lines) {
    char cmd[4096], out[1100];
    snprintf(out, sizeof out, "%s.out", in);
    snprintf(cmd, sizeof cmd, "%s score --quiet --model %s --step-token-id 151651 -o %s %s", th_bin(), prm_dir, out, in);
    if (system(cmd) != 0) return -1;
    *lines = json_array();
    fp_jsonl_reader *r;
    if (fp_jsonl_open(&r, out)) return -1;
    const char *line;
    size_t len;
    while (fp_jsonl_next_line(r, &line, &len) == FP_OK) json_array_append_new(*lines, json_loadb(line, len, 0, NULL));
    fp_jsonl_close(r);
    return 0;
}

/* `fluxprm score` on the same {question, response} records (and {question, steps: [response]} for the
 * whole-response mode), once. */
static int setup_refs(void) {
    static int done;
    if (done) return 0;
    int s = setup_model();
    if (s) return s;
    char in[1024];
    snprintf(in, sizeof in, "%s/refs.jsonl", th_tmpdir());
    FILE *f = fopen(in, "w");
    for (size_t i = 0; i < NPAIRS; i++) {
        json_t *o = json_pack("{s:s,s:s}", "question", pairs[i].prompt ? pairs[i].prompt : "", "response", pairs[i].response);
        fp_json_write_line(f, o);
        json_decref(o);
    }
    for (size_t i = 0; i < 2; i++) {
        size_t k = i ? 3 : 0;
        json_t *o = json_pack("{s:s,s:[s]}", "question", pairs[k].prompt, "steps", pairs[k].response);
        fp_json_write_line(f, o);
        json_decref(o);
    }
    fclose(f);
    json_t *lines;
    if (run_score(in, &lines) || json_array_size(lines) != NPAIRS + 2) return -1;
    for (size_t i = 0; i < NPAIRS; i++) {
        json_t *l = json_array_get(lines, i);
        ref_score[i] = json_real_value(json_object_get(l, "score"));
        ref_steps[i] = json_incref(json_object_get(l, "step_rewards"));
    }
    for (size_t i = 0; i < 2; i++) ref_whole[i] = json_real_value(json_object_get(json_array_get(lines, NPAIRS + i), "score"));
    json_decref(lines);
    done = 1;
    return 0;
}

static double expected_reward(size_t i, double beta) {
    return isnan(pairs[i].rule) ? ref_score[i] : (1 - beta) * pairs[i].rule + beta * ref_score[i];
}

/* ---------------------------------------------------------------- HTTP client helpers */
static fp_serve *srv;
static int port;

static int srv_timeout_s;

/* The shared server, with a connection timeout of timeout_s seconds (restarted when a test needs another). */
static int start_server_timeout(int timeout_s) {
    if (srv && srv_timeout_s == timeout_s) return 0;
    if (srv) {
        fp_serve_free(srv);
        srv = NULL;
    }
    int s = setup_refs();
    if (s) return s;
    fp_prm_opts po;
    fp_prm_opts_default(&po);
    po.model_path = prm_dir;
    po.step_token_id = 151651;
    po.threads = 1;
    fp_serve_opts so;
    fp_serve_opts_default(&so);
    so.port = 0;
    so.max_body = MAX_BODY;
    so.timeout_s = timeout_s;
    so.max_batch_tokens = 2048;
    if (fp_serve_new(&srv, &po, &so) || fp_serve_listen(srv)) {
        fprintf(stderr, "  server: %s\n", fp_last_error());
        return -1;
    }
    port = fp_serve_port(srv);
    srv_timeout_s = timeout_s;
    return port > 0 ? 0 : -1;
}
/* 10 s: long enough that a keep-alive connection the load test's client leaves idle on a busy machine (two
 * CPU hogs and ASan: > 1 s) is not closed while the client sends its next request on it (curl: "empty reply"). */
static int start_server(void) { return start_server_timeout(10); }

typedef struct {
    fp_buf body;
} sink;

static size_t on_data(char *p, size_t sz, size_t n, void *ud) {
    sink *s = ud;
    return fp_buf_append(&s->body, p, sz * n) ? 0 : sz * n;
}

/* One request; returns the HTTP status (0 on transport failure) and the parsed JSON reply in *out. */
static long http(const char *method, const char *path, const char *body, long len, json_t **out) {
    CURL *c = curl_easy_init();
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    sink s = {{0}};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, len < 0 ? (long)strlen(body) : len);
    }
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (out) *out = s.body.data ? json_loadb(s.body.data, s.body.len, 0, NULL) : NULL;
    fp_buf_free(&s.body);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return status;
}

static long post_json(const char *path, json_t *req, json_t **out) {
    char *b = json_dumps(req, JSON_COMPACT);
    long st = http("POST", path, b, -1, out);
    free(b);
    json_decref(req);
    return st;
}

/* The OpenRLHF request for pairs idx[0..n): query = prompt + response. */
static json_t *reward_request(const size_t *idx, size_t n) {
    json_t *q = json_array(), *p = json_array(), *l = json_array();
    for (size_t k = 0; k < n; k++) {
        const pair *x = &pairs[idx[k]];
        char qt[1024];
        snprintf(qt, sizeof qt, "%s%s", x->prompt ? x->prompt : "", x->response);
        json_array_append_new(q, json_string(qt));
        json_array_append_new(p, x->prompt ? json_string(x->prompt) : json_null());
        json_array_append_new(l, x->label ? json_string(x->label) : json_null());
    }
    return json_pack("{s:o,s:o,s:o}", "query", q, "prompts", p, "labels", l);
}

static int is_error_body(json_t *r) {
    json_t *e = json_object_get(r, "error");
    return json_is_string(json_object_get(e, "message")) && json_is_string(json_object_get(e, "type"));
}

/* ---------------------------------------------------------------- endpoint cases */
static int test_get_reward(void) {
    int s = start_server();
    if (s) return s;
    size_t idx[NPAIRS];
    for (size_t i = 0; i < NPAIRS; i++) idx[i] = i;
    json_t *r;
    CHECK(post_json("/get_reward", reward_request(idx, NPAIRS), &r) == 200);
    json_t *rw = json_object_get(r, "rewards"), *sc = json_object_get(r, "scores"), *xl = json_object_get(r, "extra_logs");
    CHECK(json_array_size(rw) == NPAIRS && json_array_size(sc) == NPAIRS);
    for (size_t i = 0; i < NPAIRS; i++) {
        CHECK_NEAR(json_number_value(json_array_get(rw, i)), expected_reward(i, 0.75), 1e-6);
        CHECK_NEAR(json_number_value(json_array_get(sc, i)), ref_score[i], 1e-6);
        CHECK_NEAR(json_number_value(json_array_get(json_object_get(xl, "prm"), i)), ref_score[i], 1e-6);
        json_t *rule = json_array_get(json_object_get(xl, "rule"), i);
        if (isnan(pairs[i].rule)) CHECK(json_is_null(rule));
        else CHECK_NEAR(json_number_value(rule), pairs[i].rule, 0);
        json_t *st = json_array_get(json_object_get(xl, "step_rewards"), i);
        CHECK_MSG(json_array_size(st) == json_array_size(ref_steps[i]), "pair %zu: %zu vs %zu steps", i, json_array_size(st), json_array_size(ref_steps[i]));
        for (size_t k = 0; k < json_array_size(st); k++)
            CHECK_NEAR(json_number_value(json_array_get(st, k)), json_number_value(json_array_get(ref_steps[i], k)), 1e-6);
    }
    json_decref(r);

    /* an older client: only "query" (the whole query is the response, the question empty) */
    char q[512];
    snprintf(q, sizeof q, "%s", pairs[5].response);
    CHECK(post_json("/get_reward", json_pack("{s:[s]}", "query", q), &r) == 200);
    CHECK_NEAR(json_number_value(json_array_get(json_object_get(r, "rewards"), 0)), ref_score[5], 1e-6);
    json_decref(r);
    /* unknown extra fields are ignored; a blank response still gets a (finite) reward */
    CHECK(post_json("/get_reward", json_pack("{s:[s],s:[s],s:i}", "query", "Q?   ", "prompts", "Q?", "extra", 1), &r) == 200);
    CHECK(json_is_number(json_array_get(json_object_get(r, "rewards"), 0)));
    json_decref(r);

    /* --whole-response (in-process handler of a second server): the response is ONE step */
    fp_prm_opts po;
    fp_prm_opts_default(&po);
    po.model_path = prm_dir;
    po.step_token_id = 151651;
    fp_serve_opts so;
    fp_serve_opts_default(&so);
    so.whole_response = 1;
    so.beta = 0.5;
    fp_serve *w = NULL;
    CHECK_OK(fp_serve_new(&w, &po, &so));
    if (w) {
        size_t two[2] = {0, 3};
        json_t *req = reward_request(two, 2);
        char *body = json_dumps(req, JSON_COMPACT), *resp;
        size_t rlen;
        json_decref(req);
        CHECK(fp_serve_handle(w, "POST", "/get_reward", body, strlen(body), &resp, &rlen) == 200);
        r = json_loads(resp, 0, NULL);
        CHECK_NEAR(json_number_value(json_array_get(json_object_get(r, "rewards"), 0)), 0.5 * 1.0 + 0.5 * ref_whole[0], 1e-6);
        CHECK_NEAR(json_number_value(json_array_get(json_object_get(r, "rewards"), 1)), ref_whole[1], 1e-6);
        CHECK(json_array_size(json_array_get(json_object_get(json_object_get(r, "extra_logs"), "step_rewards"), 0)) == 1);
        json_decref(r);
        free(resp);
        free(body);
        fp_serve_free(w);
    }
    return 0;
}

static void check_rows(json_t *rows, size_t pair_i) {
    CHECK_MSG(json_array_size(rows) == json_array_size(ref_steps[pair_i]), "%zu rows, %zu steps", json_array_size(rows),
              json_array_size(ref_steps[pair_i]));
    for (size_t k = 0; k < json_array_size(rows) && k < json_array_size(ref_steps[pair_i]); k++) {
        json_t *row = json_array_get(rows, k);
        CHECK(json_array_size(row) == 2);
        double pn = json_number_value(json_array_get(row, 0)), pp = json_number_value(json_array_get(row, 1));
        CHECK_NEAR(pp, json_number_value(json_array_get(ref_steps[pair_i], k)), 1e-6);
        CHECK_NEAR(pn + pp, 1.0, 1e-9);
    }
}

static int test_pooling(void) {
    int s = start_server();
    if (s) return s;
    char *sys = NULL;
    CHECK_OK(fp_model_default_system(prm_dir, &sys));
    CHECK(sys != NULL);
    /* the ChatML text `fluxprm score` builds for pairs[0] (steps split on "\n\n") */
    char text[2048], asst[512];
    snprintf(asst, sizeof asst, "2+2=4<extra_0>The answer is \\boxed{4}<extra_0>");
    snprintf(text, sizeof text, "<|im_start|>system\n%s<|im_end|>\n<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n%s<|im_end|>\n",
             sys ? sys : "", pairs[0].prompt, asst);
    json_t *r;
    CHECK(post_json("/pooling", json_pack("{s:s,s:s}", "model", "m", "input", text), &r) == 200);
    CHECK(!strncmp(json_string_value(json_object_get(r, "id")), "pool-", 5));
    CHECK(!strcmp(json_string_value(json_object_get(r, "object")), "list"));
    CHECK(!strcmp(json_string_value(json_object_get(r, "model")), "m"));
    CHECK(json_is_integer(json_object_get(r, "created")));
    json_t *d0 = json_array_get(json_object_get(r, "data"), 0);
    CHECK(json_integer_value(json_object_get(d0, "index")) == 0);
    CHECK(!strcmp(json_string_value(json_object_get(d0, "object")), "pooling"));
    check_rows(json_object_get(d0, "data"), 0);
    json_t *usage = json_object_get(r, "usage");
    long ntok = (long)json_integer_value(json_object_get(usage, "prompt_tokens"));
    CHECK(ntok > 10 && json_integer_value(json_object_get(usage, "total_tokens")) == ntok);
    CHECK(json_integer_value(json_object_get(usage, "completion_tokens")) == 0);
    json_decref(r);

    /* a list of strings, the chat form and token ids give the same rows */
    CHECK(post_json("/pooling", json_pack("{s:[s,s]}", "input", text, "no step tokens here"), &r) == 200);
    CHECK(json_array_size(json_object_get(r, "data")) == 2);
    check_rows(json_object_get(json_array_get(json_object_get(r, "data"), 0), "data"), 0);
    CHECK(json_array_size(json_object_get(json_array_get(json_object_get(r, "data"), 1), "data")) == 0);
    json_decref(r);
    CHECK(post_json("/pooling", json_pack("{s:[{s:s,s:s},{s:s,s:s}]}", "messages", "role", "user", "content", pairs[0].prompt,
                                          "role", "assistant", "content", asst), &r) == 200);
    check_rows(json_object_get(json_array_get(json_object_get(r, "data"), 0), "data"), 0);
    json_decref(r);
    fp_tokenizer *tok;
    CHECK_OK(fp_tokenizer_load(&tok, prm_dir));
    CHECK_OK(fp_tokenizer_set_step_token(tok, "<extra_0>", 151651, NULL));
    int32_t *ids;
    size_t n;
    CHECK_OK(fp_tokenizer_encode(tok, text, strlen(text), &ids, &n));
    CHECK((long)n == ntok);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(arr, json_integer(ids[i]));
    CHECK(post_json("/pooling", json_pack("{s:[o]}", "input", arr), &r) == 200);
    check_rows(json_object_get(json_array_get(json_object_get(r, "data"), 0), "data"), 0);
    json_decref(r);
    free(ids);
    fp_tokenizer_free(tok);
    free(sys);
    /* errors */
    CHECK(post_json("/pooling", json_pack("{s:[]}", "input"), &r) == 400 && is_error_body(r));
    json_decref(r);
    CHECK(post_json("/pooling", json_pack("{s:[[i,i]]}", "input", 1, 99999999), &r) == 400 && is_error_body(r));
    json_decref(r);
    CHECK(post_json("/pooling", json_pack("{s:i}", "input", 3), &r) == 400);
    json_decref(r);
    CHECK(post_json("/pooling", json_pack("{s:s,s:s}", "input", "x", "encoding_format", "base64"), &r) == 400);
    json_decref(r);
    return 0;
}

static int test_rerank(void) {
    int s = start_server();
    if (s) return s;
    json_t *r;
    CHECK(post_json("/v1/rerank", json_pack("{s:s,s:[s,s]}", "query", pairs[0].prompt, "documents", pairs[1].response,
                                            pairs[0].response), &r) == 200);
    json_t *res = json_object_get(r, "results");
    CHECK(json_array_size(res) == 2);
    double sc[2] = {ref_score[1], ref_score[0]};
    size_t best = sc[0] >= sc[1] ? 0 : 1;
    CHECK(json_integer_value(json_object_get(json_array_get(res, 0), "index")) == (json_int_t)best);
    for (size_t k = 0; k < json_array_size(res); k++) {
        json_t *e = json_array_get(res, k);
        size_t i = (size_t)json_integer_value(json_object_get(e, "index"));
        CHECK(i < 2);
        if (i < 2) CHECK_NEAR(json_number_value(json_object_get(e, "relevance_score")), sc[i], 1e-6);
    }
    CHECK(json_is_object(json_object_get(r, "usage")) && json_is_string(json_object_get(r, "model")));
    json_decref(r);
    CHECK(post_json("/v1/rerank", json_pack("{s:s,s:[s,{s:s}],s:i,s:b}", "query", pairs[0].prompt, "documents",
                                            pairs[1].response, "text", pairs[0].response, "top_n", 1, "return_documents", 1), &r) == 200);
    res = json_object_get(r, "results");
    CHECK(json_array_size(res) == 1);
    CHECK(json_is_string(json_object_get(json_object_get(json_array_get(res, 0), "document"), "text")));
    json_decref(r);
    CHECK(post_json("/v1/rerank", json_pack("{s:s,s:[]}", "query", "q", "documents"), &r) == 400);
    json_decref(r);
    return 0;
}

static int test_advantages_and_misc(void) {
    int s = start_server();
    if (s) return s;
    json_t *r;
    /* hand-computed: group [1,0,1,0]: mean 0.5, unbiased std sqrt(1/3); group [3]: mean 0, std 1 */
    CHECK(post_json("/v1/grpo/advantages", json_pack("{s:[[i,i,i,i],[f]]}", "groups", 1, 0, 1, 0, 3.0), &r) == 200);
    json_t *a = json_object_get(r, "advantages");
    double g = 0.5 / (sqrt(1.0 / 3.0) + 1e-6);
    double want0[4] = {g, -g, g, -g};
    for (int i = 0; i < 4; i++) CHECK_NEAR(json_number_value(json_array_get(json_array_get(a, 0), i)), want0[i], 1e-9);
    CHECK_NEAR(json_number_value(json_array_get(json_array_get(a, 1), 0)), 3.0 / (1.0 + 1e-6), 1e-9);
    json_decref(r);
    /* flat form: groups of 2: [1,3] -> -+1/sqrt(2); [2,2] -> 0 */
    CHECK(post_json("/v1/grpo/advantages", json_pack("{s:[i,i,i,i],s:i}", "rewards", 1, 3, 2, 2, "group_size", 2), &r) == 200);
    a = json_object_get(r, "advantages");
    double h = 1.0 / (sqrt(2.0) + 1e-6), want1[4] = {-h, h, 0, 0};
    for (int i = 0; i < 4; i++) CHECK_NEAR(json_number_value(json_array_get(a, i)), want1[i], 1e-9);
    json_decref(r);
    CHECK(post_json("/v1/grpo/advantages", json_pack("{s:[i,i,i],s:i}", "rewards", 1, 2, 3, "group_size", 2), &r) == 400);
    json_decref(r);
    CHECK(post_json("/v1/grpo/advantages", json_pack("{s:[[]]}", "groups"), &r) == 400);
    json_decref(r);
    CHECK(post_json("/v1/grpo/advantages", json_pack("{s:[s],s:i}", "rewards", "x", "group_size", 1), &r) == 400);
    json_decref(r);

    CHECK(http("GET", "/health", NULL, 0, &r) == 200);
    CHECK(!strcmp(json_string_value(json_object_get(r, "status")), "ok"));
    json_decref(r);
    CHECK(http("GET", "/v1/models", NULL, 0, &r) == 200);
    CHECK(!strcmp(json_string_value(json_object_get(r, "object")), "list"));
    CHECK(!strcmp(json_string_value(json_object_get(json_array_get(json_object_get(r, "data"), 0), "id")), "prm"));
    json_decref(r);
    CHECK(http("GET", "/nope", NULL, 0, &r) == 404 && is_error_body(r));
    json_decref(r);
    CHECK(http("GET", "/get_reward", NULL, 0, &r) == 405 && is_error_body(r));
    json_decref(r);
    CHECK(http("POST", "/health", "{}", -1, &r) == 405);
    json_decref(r);
    CHECK(http("POST", "/v1/chat/completions", "{\"model\":\"m\",\"messages\":[]}", -1, &r) == 404 && is_error_body(r)); /* no policy */
    json_decref(r);
    return 0;
}

/* ---------------------------------------------------------------- load */
/* Sanitizer builds run the model ~30x slower: they send fewer requests so the case stays bounded. */
#if defined(__SANITIZE_ADDRESS__)
enum { N_REQ = 200, IN_FLIGHT = 64 };
#else
enum { N_REQ = 2000, IN_FLIGHT = 64 };
#endif

typedef struct {
    CURL *c;
    char *body;
    long len;
    int malformed;
    size_t idx[3], n;
    sink out;
    struct curl_slist *h;
} load_req;

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void make_request(load_req *q, int i) {
    memset(q, 0, sizeof *q);
    q->malformed = i % 10 == 7;
    if (q->malformed) {
        static const char *bad[] = {
            "{\"query\": [\"unterminated",                    /* bad JSON */
            "{\"query\": 5}",                                 /* wrong type */
            "{\"query\": [\"a\"], \"prompts\": [1]}",         /* wrong element type */
            "{\"query\": [\"a\", \"b\"], \"labels\": [\"1\"]}", /* mismatched lengths */
            "{\"query\": []}",                                /* empty */
            "[1, 2, 3]",                                      /* not an object */
            "{\"query\": [\"\xff\xfe bad utf-8\"]}",          /* non-UTF-8 */
            "{\"queries\": [\"a\"]}",                         /* missing field */
        };
        int k = (i / 10) % 10;
        if (k >= 8) { /* oversize: a valid request padded past --max-body */
            size_t n = MAX_BODY + 1000 + (size_t)(rnd() % 4096);
            q->body = malloc(n + 64);
            int h = sprintf(q->body, "{\"query\": [\"");
            memset(q->body + h, 'x', n);
            strcpy(q->body + h + n, "\"]}");
        } else {
            q->body = strdup(bad[k]);
        }
        q->len = (long)strlen(q->body);
        return;
    }
    q->n = 1 + rnd() % 3;
    for (size_t k = 0; k < q->n; k++) q->idx[k] = rnd() % NPAIRS;
    json_t *req = reward_request(q->idx, q->n);
    q->body = json_dumps(req, JSON_COMPACT);
    q->len = (long)strlen(q->body);
    json_decref(req);
}

static int test_load(void) {
    int s = start_server();
    if (s) return s;
    fp_serve_stats st0, st1;
    fp_serve_get_stats(srv, &st0);
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)IN_FLIGHT);
    load_req *reqs = calloc(N_REQ, sizeof *reqs);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/get_reward", port);
    int next = 0, running = 0, done = 0, bad_valid = 0, bad_malformed = 0, transport = 0;
    double t0 = fp_now();
    while (done < N_REQ && fp_now() - t0 < 60) {
        while (next < N_REQ && next - done < IN_FLIGHT) {
            load_req *q = &reqs[next];
            make_request(q, next);
            q->c = curl_easy_init();
            q->h = curl_slist_append(NULL, "Content-Type: application/json");
            if (next % 20 == 17) q->h = curl_slist_append(q->h, "Expect:"); /* oversize bodies sent without 100-continue */
            curl_easy_setopt(q->c, CURLOPT_URL, url);
            curl_easy_setopt(q->c, CURLOPT_POSTFIELDS, q->body);
            curl_easy_setopt(q->c, CURLOPT_POSTFIELDSIZE, q->len);
            curl_easy_setopt(q->c, CURLOPT_HTTPHEADER, q->h);
            curl_easy_setopt(q->c, CURLOPT_TIMEOUT, 30L);
            curl_easy_setopt(q->c, CURLOPT_WRITEFUNCTION, on_data);
            curl_easy_setopt(q->c, CURLOPT_WRITEDATA, &q->out);
            curl_easy_setopt(q->c, CURLOPT_PRIVATE, q);
            curl_multi_add_handle(m, q->c);
            next++;
        }
        curl_multi_perform(m, &running);
        curl_multi_poll(m, NULL, 0, 100, NULL);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            load_req *q;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&q);
            long status = 0;
            if (msg->data.result == CURLE_OK) curl_easy_getinfo(q->c, CURLINFO_RESPONSE_CODE, &status);
            else transport++;
            json_t *r = q->out.body.data ? json_loadb(q->out.body.data, q->out.body.len, 0, NULL) : NULL;
            if (q->malformed) {
                if (!(status >= 400 && status < 500 && is_error_body(r))) {
                    if (bad_malformed++ < 5) fprintf(stderr, "  malformed request %d: status %ld (curl %d) body %.200s\n", (int)(q - reqs), status, msg->data.result, q->out.body.data ? q->out.body.data : "");
                }
            } else {
                int ok = status == 200;
                json_t *rw = json_object_get(r, "rewards");
                ok = ok && json_array_size(rw) == q->n;
                for (size_t k = 0; ok && k < q->n; k++)
                    ok = fabs(json_number_value(json_array_get(rw, k)) - expected_reward(q->idx[k], 0.75)) <= 1e-6;
                if (!ok && bad_valid++ < 5) fprintf(stderr, "  valid request %d: status %ld body %.200s\n", (int)(q - reqs), status, q->out.body.data ? q->out.body.data : "");
            }
            json_decref(r);
            curl_multi_remove_handle(m, q->c);
            curl_easy_cleanup(q->c);
            curl_slist_free_all(q->h);
            fp_buf_free(&q->out.body);
            free(q->body);
            q->body = NULL;
            done++;
        }
    }
    double dt = fp_now() - t0;
    for (int i = 0; i < next; i++) /* only after a timeout: requests still in flight */
        if (reqs[i].body) {
            curl_multi_remove_handle(m, reqs[i].c);
            curl_easy_cleanup(reqs[i].c);
            curl_slist_free_all(reqs[i].h);
            fp_buf_free(&reqs[i].out.body);
            free(reqs[i].body);
        }
    curl_multi_cleanup(m);
    free(reqs);
    CHECK_MSG(done == N_REQ, "%d of %d requests finished", done, N_REQ);
    CHECK_MSG(bad_valid == 0, "%d valid requests got a wrong answer", bad_valid);
    CHECK_MSG(bad_malformed == 0, "%d malformed requests were not answered 4xx (%d transport errors)", bad_malformed, transport);
    json_t *r;
    CHECK(http("GET", "/health", NULL, 0, &r) == 200); /* still up */
    json_decref(r);
    fp_serve_get_stats(srv, &st1);
    printf("  load: %d requests in %.2f s (%.0f req/s); worker: %ld sequences in %ld batches (max %ld per batch)\n", done, dt,
           done / dt, st1.sequences - st0.sequences, st1.batches - st0.batches, st1.max_batch_seqs);
    return 0;
}

/* A client that sends half a header and stalls neither blocks others nor survives the timeout (1 s). */
static int test_slowloris(void) {
    int s = start_server_timeout(1);
    if (s) return s;
    const char *partial[2] = {"POST /get_reward HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le",
                              "POST /get_reward HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"query\""};
    for (int k = 0; k < 2; k++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {0};
        sa.sin_family = AF_INET;
        sa.sin_port = htons((uint16_t)port);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        CHECK(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
        CHECK(send(fd, partial[k], strlen(partial[k]), 0) == (ssize_t)strlen(partial[k]));
        /* others are served meanwhile */
        json_t *r;
        size_t one = 0;
        CHECK(http("GET", "/health", NULL, 0, &r) == 200);
        json_decref(r);
        CHECK(post_json("/get_reward", reward_request(&one, 1), &r) == 200);
        json_decref(r);
        /* the stalled connection is closed by the server after the timeout (bounded wait: 8 s) */
        double t0 = fp_now();
        int closed = 0;
        while (!closed && fp_now() - t0 < 8) {
            struct pollfd p = {fd, POLLIN, 0};
            if (poll(&p, 1, 200) > 0) {
                char buf[512];
                ssize_t n = recv(fd, buf, sizeof buf, 0);
                if (n <= 0) closed = 1; /* EOF or reset; a 408 reply first is fine too */
            }
        }
        CHECK_MSG(closed, "stalled connection %d still open after %.1f s", k, fp_now() - t0);
        close(fd);
    }
    return 0;
}

/* The CLI: --port 0 prints the port; SIGTERM stops it cleanly (exit 0); usage errors exit 2. */
static int test_cli(void) {
    int s = setup_refs();
    if (s) return s;
    char errf[1024], cmd[2048];
    snprintf(errf, sizeof errf, "%s/serve.err", th_tmpdir());
    char *argv[] = {(char *)th_bin(), "serve", "--model", (char *)prm_dir, "--step-token-id", "151651", "--port", "0",
                    "--timeout", "2", "--max-body", "4096", NULL};
    int cli_port;
    pid_t pid = serve_spawn(errf, argv, &cli_port);
    CHECK_MSG(cli_port > 0, "no 'listening on' line");
    if (cli_port > 0) {
        int saved = port;
        port = cli_port;
        json_t *r;
        CHECK(http("GET", "/health", NULL, 0, &r) == 200);
        json_decref(r);
        size_t idx[2] = {0, 1};
        CHECK(post_json("/get_reward", reward_request(idx, 2), &r) == 200);
        for (size_t k = 0; k < 2; k++)
            CHECK_NEAR(json_number_value(json_array_get(json_object_get(r, "rewards"), k)), expected_reward(k, 0.75), 1e-6);
        json_decref(r);
        char big[5000];
        memset(big, ' ', sizeof big);
        memcpy(big, "{}", 2);
        CHECK(http("POST", "/get_reward", big, (long)sizeof big, &r) == 413);
        json_decref(r);
        port = saved;
    }
    if (pid > 0) CHECK_MSG(serve_stop(pid), "serve did not exit 0 on SIGTERM");
    snprintf(cmd, sizeof cmd, "%s serve --port 0 2>/dev/null", th_bin());
    int rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2);
    snprintf(cmd, sizeof cmd, "%s serve --model %s --beta 2 2>/dev/null", th_bin(), prm_dir);
    rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2);
    return 0;
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    RUN(test_get_reward);
    RUN(test_pooling);
    RUN(test_rerank);
    RUN(test_advantages_and_misc);
    RUN(test_load);
    RUN(test_slowloris);
    RUN(test_cli);
    fp_serve_free(srv);
    for (size_t i = 0; i < NPAIRS; i++) json_decref(ref_steps[i]);
    curl_global_cleanup();
    return th_finish();
}
