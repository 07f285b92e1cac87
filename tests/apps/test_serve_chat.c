/* fluxprm serve with a policy model: POST /v1/chat/completions and /v1/completions over real HTTP on 127.0.0.1,
 * with the tiny causal LM of tests/model/test_generate.c (the tied 8-wide Qwen2 trunk of tests/ref/score, the
 * real Qwen2 tokenizer from ../shared and the Qwen2.5 chat template).  Greedy answers must equal `fluxprm
 * generate` on the same records and HF's apply_chat_template + generate (tests/ref/generate/chat_expected.jsonl),
 * tokens and text; stop strings cut as they do there; seeded sampling is reproducible and equals `fluxprm
 * generate --seed`; usage counts the tokens; concurrent requests (decoded together by the generation worker)
 * get the answers they get alone; malformed requests get 4xx JSON errors; a server without the policy (or
 * without the PRM) answers the endpoints it cannot serve with 404.  Then the CLI (--policy-model only). */
#include "apps/serve.h"
#include "base/json.h"
#include "harness.h"
#include "serve_proc.h"
#include "json_files.h"
#include "tiny_models.h"
#include <curl/curl.h>
#include <signal.h>
#include <sys/wait.h>

#define GREF "tests/ref/generate"

static char lm_dir[512];
static const char *prm_dir;
static json_t *expected, *records; /* HF references and their input records */

/* The policy directory (as test_generate.c builds it) and the PRM directory of test_score.c. */
static int setup(void) {
    if (lm_dir[0]) return 0;
    char tok[PATH_MAX], *tpl_text;
    size_t tpl_len;
    int s = th_tiny_qwen_files(tok, &tpl_text, &tpl_len);
    if (s == TH_SKIP) printf("  (needs ../shared/data/tokenizer/qwen2/tokenizer.json and templates/qwen2.5-instruct.jinja)\n");
    if (s) return s;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/lm", th_tmpdir());
    int bad = th_tiny_lm_dir(dir, tok) || th_tiny_chat_template(dir, tpl_text, tpl_len);
    free(tpl_text);
    if (bad || (s = th_tiny_prm_dirs(&prm_dir, NULL))) return s ? s : -1;
    expected = th_load_lines(GREF "/chat_expected.jsonl");
    records = th_load_lines(GREF "/chat_records.jsonl");
    if (json_array_size(expected) != 4 || json_array_size(records) != 4) return -1;
    snprintf(lm_dir, sizeof lm_dir, "%s", dir);
    return 0;
}

/* ---------------------------------------------------------------- servers and HTTP */
static fp_serve *srv; /* PRM + policy */
static int port;

static fp_serve *new_server(int prm, int policy, int max_new) {
    fp_prm_opts po;
    fp_prm_opts_default(&po);
    if (prm) po.model_path = prm_dir;
    po.step_token_id = 151651;
    po.threads = 1;
    fp_serve_opts so;
    fp_serve_opts_default(&so);
    so.port = 0;
    so.timeout_s = 5;
    if (policy) so.policy.model_path = lm_dir;
    so.policy.threads = 1;
    so.max_new_tokens = max_new;
    fp_serve *s = NULL;
    if (fp_serve_new(&s, &po, &so)) fprintf(stderr, "  server: %s\n", fp_last_error());
    return s;
}

static int start_server(void) {
    if (srv) return 0;
    int s = setup();
    if (s) return s;
    if (!(srv = new_server(1, 1, 64)) || fp_serve_listen(srv)) {
        fprintf(stderr, "  listen: %s\n", fp_last_error());
        return -1;
    }
    port = fp_serve_port(srv);
    return port > 0 ? 0 : -1;
}

static size_t on_data(char *p, size_t sz, size_t n, void *ud) {
    return fp_buf_append(ud, p, sz * n) ? 0 : sz * n;
}

static CURL *new_easy(const char *method, const char *path, const char *body, fp_buf *sink, struct curl_slist **h) {
    CURL *c = curl_easy_init();
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, sink);
    *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, *h);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    return c;
}

/* One request: the HTTP status (0 on a transport failure) and the parsed reply in *out. */
static long http(const char *method, const char *path, const char *body, json_t **out) {
    fp_buf b = {0};
    struct curl_slist *h;
    CURL *c = new_easy(method, path, body, &b, &h);
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    *out = b.data ? json_loadb(b.data, b.len, 0, NULL) : NULL;
    fp_buf_free(&b);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return status;
}

/* POSTs req (consumed). */
static long post(const char *path, json_t *req, json_t **out) {
    char *b = json_dumps(req, JSON_COMPACT);
    long st = http("POST", path, b, out);
    free(b);
    json_decref(req);
    return st;
}

/* The same through fp_serve_handle (no network). */
static int handle(fp_serve *s, const char *method, const char *path, const char *body, json_t **out) {
    char *resp = NULL;
    size_t len;
    int st = fp_serve_handle(s, method, path, body, body ? strlen(body) : 0, &resp, &len);
    *out = resp ? json_loadb(resp, len, 0, NULL) : NULL;
    free(resp);
    return st;
}

static const char *err_msg(json_t *r) {
    const char *m = json_string_value(json_object_get(json_object_get(r, "error"), "message"));
    return m ? m : "";
}

static int is_error(json_t *r) {
    json_t *e = json_object_get(r, "error");
    return json_is_string(json_object_get(e, "message")) && json_is_string(json_object_get(e, "type"));
}

/* ---------------------------------------------------------------- the requests */
/* The request for record i: chat records to /v1/chat/completions, prompt records to /v1/completions. */
static const char *endpoint(size_t i) {
    return json_object_get(json_array_get(records, i), "messages") ? "/v1/chat/completions" : "/v1/completions";
}

static json_t *request(size_t i, const char *extra_json) {
    json_t *rec = json_array_get(records, i), *req = json_pack("{s:s}", "model", "policy");
    json_t *m = json_object_get(rec, "messages");
    json_object_set(req, m ? "messages" : "prompt", m ? m : json_object_get(rec, "prompt"));
    if (extra_json) {
        json_t *x = json_loads(extra_json, 0, NULL);
        json_object_update(req, x);
        json_decref(x);
    }
    return req;
}

static const char *choice_text(json_t *r, size_t k, int chat) {
    json_t *c = json_array_get(json_object_get(r, "choices"), k);
    return json_string_value(chat ? json_object_get(json_object_get(c, "message"), "content") : json_object_get(c, "text"));
}

/* Usage holds the prompt's tokens and the sum of the choices' tokens. */
static void check_usage(json_t *r, json_int_t prompt_tokens) {
    json_t *u = json_object_get(r, "usage"), *ch = json_object_get(r, "choices");
    json_int_t ct = 0;
    for (size_t k = 0; k < json_array_size(ch); k++) ct += (json_int_t)json_array_size(json_object_get(json_array_get(ch, k), "token_ids"));
    CHECK(json_integer_value(json_object_get(u, "prompt_tokens")) == prompt_tokens);
    CHECK_MSG(json_integer_value(json_object_get(u, "completion_tokens")) == ct, "completion_tokens %" JSON_INTEGER_FORMAT
              " vs %" JSON_INTEGER_FORMAT " token ids", json_integer_value(json_object_get(u, "completion_tokens")), ct);
    CHECK(json_integer_value(json_object_get(u, "total_tokens")) == prompt_tokens + ct);
}

static int run_gen(const char *args, const char *in, const char *out) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s generate --quiet --threads 1 %s -o %s %s 2>%s.err", th_bin(), args, out, in, out);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* Greedy: every record's answer equals `fluxprm generate` and HF (tokens, text, prompt ids); usage counts them. */
static int test_greedy(void) {
    int s = start_server();
    if (s) return s;
    char out[1024];
    snprintf(out, sizeof out, "%s/greedy.jsonl", th_tmpdir());
    char args[1024];
    snprintf(args, sizeof args, "--model %s --temperature 0 --max-new-tokens 24", lm_dir);
    CHECK(run_gen(args, GREF "/chat_records.jsonl", out) == 0);
    json_t *gen = th_load_lines(out);
    CHECK(json_array_size(gen) == 4);
    for (size_t i = 0; i < 4 && i < json_array_size(gen); i++) {
        json_t *r, *g = json_array_get(gen, i), *e = json_array_get(expected, i);
        int chat = strstr(endpoint(i), "chat") != NULL;
        CHECK(post(endpoint(i), request(i, "{\"temperature\": 0, \"max_tokens\": 24, \"return_token_ids\": true}"), &r) == 200);
        json_t *c0 = json_array_get(json_object_get(r, "choices"), 0);
        CHECK(json_array_size(json_object_get(r, "choices")) == 1);
        CHECK(!strcmp(json_string_value(json_object_get(r, "object")), chat ? "chat.completion" : "text_completion"));
        CHECK(!strncmp(json_string_value(json_object_get(r, "id")), chat ? "chatcmpl-" : "cmpl-", chat ? 9 : 5));
        CHECK(json_is_integer(json_object_get(r, "created")));
        CHECK(!strcmp(json_string_value(json_object_get(r, "model")), "policy"));
        CHECK(json_integer_value(json_object_get(c0, "index")) == 0);
        if (chat) CHECK(!strcmp(json_string_value(json_object_get(json_object_get(c0, "message"), "role")), "assistant"));
        CHECK(!strcmp(json_string_value(json_object_get(c0, "finish_reason")), "length"));
        const char *text = choice_text(r, 0, chat);
        CHECK_MSG(text && !strcmp(text, json_string_value(json_object_get(g, "completion"))), "record %zu: text differs from fluxprm generate", i);
        CHECK_MSG(text && !strcmp(text, json_string_value(json_object_get(e, "completion"))), "record %zu: text differs from HF", i);
        CHECK_MSG(json_equal(json_object_get(c0, "token_ids"), json_object_get(g, "tokens")), "record %zu: tokens differ from fluxprm generate", i);
        CHECK_MSG(json_equal(json_object_get(c0, "token_ids"), json_object_get(e, "tokens")), "record %zu: tokens differ from HF", i);
        json_t *pids = chat ? json_object_get(r, "prompt_token_ids") : json_object_get(c0, "prompt_token_ids");
        CHECK_MSG(json_equal(pids, json_object_get(e, "prompt_ids")), "record %zu: prompt ids differ from HF", i);
        check_usage(r, (json_int_t)json_array_size(json_object_get(e, "prompt_ids")));
        CHECK(json_integer_value(json_object_get(json_object_get(r, "usage"), "completion_tokens")) == 24);
        json_decref(r);
    }
    json_decref(gen);
    /* without return_token_ids: no id lists; null optional fields and unknown fields are accepted */
    json_t *r;
    CHECK(post("/v1/chat/completions", request(0, "{\"temperature\": 0, \"max_tokens\": 24, \"stop\": null, \"seed\": null, "
                                                  "\"stream\": false, \"user\": \"u\", \"logprobs\": false}"), &r) == 200);
    CHECK(!json_object_get(r, "prompt_token_ids") && !json_object_get(json_array_get(json_object_get(r, "choices"), 0), "token_ids"));
    CHECK(!strcmp(choice_text(r, 0, 1), json_string_value(json_object_get(json_array_get(expected, 0), "completion"))));
    json_decref(r);
    /* text parts join into the content; max_completion_tokens is max_tokens */
    CHECK(post("/v1/chat/completions", json_pack("{s:[{s:s,s:[{s:s,s:s}]}],s:i,s:i}", "messages", "role", "user", "content",
                                                 "type", "text", "text", "What is 2+3?", "temperature", 0,
                                                 "max_completion_tokens", 24), &r) == 200);
    CHECK(!strcmp(choice_text(r, 0, 1), json_string_value(json_object_get(json_array_get(expected, 0), "completion"))));
    json_decref(r);
    /* the prompt as token ids gives the same answer as the text */
    json_t *ids = json_deep_copy(json_object_get(json_array_get(expected, 3), "prompt_ids"));
    CHECK(post("/v1/completions", json_pack("{s:o,s:i,s:i}", "prompt", ids, "temperature", 0, "max_tokens", 24), &r) == 200);
    CHECK(!strcmp(choice_text(r, 0, 0), json_string_value(json_object_get(json_array_get(expected, 3), "completion"))));
    json_decref(r);
    return 0;
}

/* Stop strings (a string, or a list) cut the text before the stop and the tokens at the one that completed it. */
static int test_stop(void) {
    int s = start_server();
    if (s) return s;
    for (size_t i = 0; i < 4; i++) {
        json_t *e = json_array_get(expected, i), *r;
        const char *stop = json_string_value(json_object_get(e, "stop"));
        char extra[512];
        if (i % 2) snprintf(extra, sizeof extra, "{\"temperature\": 0, \"max_tokens\": 24, \"return_token_ids\": true, \"stop\": \"%s\"}", stop);
        else snprintf(extra, sizeof extra, "{\"temperature\": 0, \"max_tokens\": 24, \"return_token_ids\": true, \"stop\": [\"never seen\", \"%s\"]}", stop);
        CHECK(post(endpoint(i), request(i, extra), &r) == 200);
        json_t *c0 = json_array_get(json_object_get(r, "choices"), 0);
        int chat = strstr(endpoint(i), "chat") != NULL;
        CHECK_MSG(!strcmp(choice_text(r, 0, chat), json_string_value(json_object_get(e, "stop_completion"))), "record %zu: stop text", i);
        CHECK_MSG(json_equal(json_object_get(c0, "token_ids"), json_object_get(e, "stop_tokens")), "record %zu: stop tokens", i);
        CHECK(!strcmp(json_string_value(json_object_get(c0, "finish_reason")), "stop"));
        check_usage(r, (json_int_t)json_array_size(json_object_get(e, "prompt_ids")));
        json_decref(r);
    }
    return 0;
}

static json_t *texts(json_t *r, int chat) {
    json_t *a = json_array();
    for (size_t k = 0; k < json_array_size(json_object_get(r, "choices")); k++) {
        const char *t = choice_text(r, k, chat);
        json_array_append_new(a, json_string(t ? t : "?"));
    }
    return a;
}

/* Seeded sampling: n choices, the same seed gives the same answer, and it is `fluxprm generate --seed`'s. */
static int test_sampling(void) {
    int s = start_server();
    if (s) return s;
    const char *opts = "{\"temperature\": 1.5, \"top_k\": 50, \"top_p\": 0.95, \"seed\": 9, \"n\": 2, \"max_tokens\": 8, "
                       "\"return_token_ids\": true}";
    json_t *a, *b, *c;
    CHECK(post("/v1/chat/completions", request(0, opts), &a) == 200);
    CHECK(post("/v1/chat/completions", request(0, opts), &b) == 200);
    json_t *ch = json_object_get(a, "choices");
    CHECK(json_array_size(ch) == 2);
    for (size_t k = 0; k < json_array_size(ch); k++) CHECK(json_integer_value(json_object_get(json_array_get(ch, k), "index")) == (json_int_t)k);
    CHECK(json_equal(ch, json_object_get(b, "choices")));
    CHECK(!json_equal(json_object_get(json_array_get(ch, 0), "token_ids"), json_object_get(json_array_get(ch, 1), "token_ids")));
    check_usage(a, (json_int_t)json_array_size(json_object_get(json_array_get(expected, 0), "prompt_ids")));
    /* `fluxprm generate` on the same record (record 0) with the same options: the same samples */
    char in[1024], out[1024], args[1024];
    snprintf(in, sizeof in, "%s/one.jsonl", th_tmpdir());
    snprintf(out, sizeof out, "%s/one.out", th_tmpdir());
    FILE *f = fopen(in, "w");
    fp_json_write_line(f, json_array_get(records, 0));
    fclose(f);
    snprintf(args, sizeof args, "--model %s --temperature 1.5 --top-k 50 --top-p 0.95 --seed 9 --n 2 --max-new-tokens 8", lm_dir);
    CHECK(run_gen(args, in, out) == 0);
    json_t *gen = th_load_lines(out);
    CHECK(json_array_size(gen) == 2);
    for (size_t k = 0; k < 2 && k < json_array_size(gen); k++) {
        json_t *g = json_array_get(gen, k);
        CHECK_MSG(json_equal(json_object_get(json_array_get(ch, k), "token_ids"), json_object_get(g, "tokens")), "sample %zu differs from fluxprm generate", k);
        CHECK(!strcmp(choice_text(a, k, 1), json_string_value(json_object_get(g, "completion"))));
    }
    json_decref(gen);
    /* another seed, or no seed (a fresh one per request), gives other samples (16 tokens each: ignore_eos, for
     * this random-weight model samples its eos as the first token about one time in six) */
    CHECK(post("/v1/chat/completions", request(0, "{\"temperature\": 1.5, \"seed\": 10, \"max_tokens\": 16, \"ignore_eos\": true}"), &c) == 200);
    CHECK(json_integer_value(json_object_get(json_object_get(c, "usage"), "completion_tokens")) == 16);
    json_t *t1 = texts(a, 1), *t2 = texts(c, 1);
    CHECK(!json_equal(json_array_get(t1, 0), json_array_get(t2, 0)));
    json_decref(t1);
    json_decref(t2);
    json_decref(c);
    json_t *u, *v;
    CHECK(post("/v1/chat/completions", request(0, "{\"temperature\": 1.5, \"max_tokens\": 16, \"ignore_eos\": true}"), &u) == 200);
    CHECK(post("/v1/chat/completions", request(0, "{\"temperature\": 1.5, \"max_tokens\": 16, \"ignore_eos\": true}"), &v) == 200);
    t1 = texts(u, 1);
    t2 = texts(v, 1);
    CHECK(!json_equal(t1, t2));
    json_decref(t1);
    json_decref(t2);
    json_decref(u);
    json_decref(v);
    json_decref(a);
    json_decref(b);
    /* /v1/completions with two prompts and n = 2: choice i * n + j is sample j of prompt i, prompt i seeded as
     * record i (fluxprm generate on the two prompts as lines 0 and 1) */
    CHECK(post("/v1/completions", json_pack("{s:[s,s],s:f,s:i,s:i,s:i,s:i,s:b}", "prompt", "The capital of France is", "Hi",
                                            "temperature", 1.5, "top_k", 50, "seed", 3, "n", 2, "max_tokens", 6,
                                            "return_token_ids", 1), &a) == 200);
    f = fopen(in, "w");
    fprintf(f, "{\"prompt\": \"The capital of France is\"}\n{\"prompt\": \"Hi\"}\n");
    fclose(f);
    snprintf(args, sizeof args, "--model %s --temperature 1.5 --top-k 50 --seed 3 --n 2 --max-new-tokens 6", lm_dir);
    CHECK(run_gen(args, in, out) == 0);
    gen = th_load_lines(out);
    ch = json_object_get(a, "choices");
    CHECK(json_array_size(ch) == 4 && json_array_size(gen) == 4);
    json_int_t ptok = 0;
    for (size_t k = 0; k < 4 && k < json_array_size(ch) && k < json_array_size(gen); k++) {
        json_t *g = json_array_get(gen, k), *c1 = json_array_get(ch, k);
        CHECK(json_integer_value(json_object_get(c1, "index")) == (json_int_t)k);
        CHECK_MSG(json_equal(json_object_get(c1, "token_ids"), json_object_get(g, "tokens")), "choice %zu differs from fluxprm generate", k);
        CHECK(!strcmp(json_string_value(json_object_get(c1, "text")), json_string_value(json_object_get(g, "completion"))));
        if (k % 2 == 0) ptok += json_integer_value(json_object_get(g, "prompt_tokens"));
    }
    check_usage(a, ptok);
    json_decref(gen);
    json_decref(a);
    return 0;
}

/* Concurrent requests (greedy, with n 1 and 2): each gets the answer it gets alone, whatever it was decoded with. */
static int test_concurrent(void) {
    int s = start_server();
    if (s) return s;
    enum { NREQ = 12 };
    fp_serve_stats st0, st1;
    fp_serve_get_stats(srv, &st0);
    CURLM *m = curl_multi_init();
    CURL *c[NREQ];
    fp_buf out[NREQ];
    struct curl_slist *h[NREQ];
    char *body[NREQ];
    memset(out, 0, sizeof out);
    for (int i = 0; i < NREQ; i++) {
        json_t *req = request((size_t)i % 4, i % 3 ? "{\"temperature\": 0, \"max_tokens\": 24, \"return_token_ids\": true}"
                                                   : "{\"temperature\": 0, \"max_tokens\": 24, \"return_token_ids\": true, \"n\": 2}");
        body[i] = json_dumps(req, JSON_COMPACT);
        json_decref(req);
        c[i] = new_easy("POST", endpoint((size_t)i % 4), body[i], &out[i], &h[i]);
        curl_multi_add_handle(m, c[i]);
    }
    int running = 1;
    for (double t0 = fp_now(); running && fp_now() - t0 < 60;) {
        curl_multi_perform(m, &running);
        if (running) curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    for (int i = 0; i < NREQ; i++) {
        long status = 0;
        curl_easy_getinfo(c[i], CURLINFO_RESPONSE_CODE, &status);
        json_t *r = out[i].data ? json_loadb(out[i].data, out[i].len, 0, NULL) : NULL, *e = json_array_get(expected, (size_t)i % 4);
        CHECK_MSG(status == 200, "request %d: status %ld", i, status);
        json_t *ch = json_object_get(r, "choices");
        CHECK(json_array_size(ch) == (i % 3 ? 1u : 2u));
        for (size_t k = 0; k < json_array_size(ch); k++)
            CHECK_MSG(json_equal(json_object_get(json_array_get(ch, k), "token_ids"), json_object_get(e, "tokens")),
                      "request %d choice %zu: tokens differ from HF", i, k);
        json_decref(r);
        curl_multi_remove_handle(m, c[i]);
        curl_easy_cleanup(c[i]);
        curl_slist_free_all(h[i]);
        fp_buf_free(&out[i]);
        free(body[i]);
    }
    curl_multi_cleanup(m);
    fp_serve_get_stats(srv, &st1);
    CHECK(st1.gen_requests - st0.gen_requests == NREQ);
    CHECK(st1.gen_sequences - st0.gen_sequences == NREQ + NREQ / 3);
    printf("  %d concurrent requests (%ld sequences) in %ld generation batches\n", NREQ, st1.gen_sequences - st0.gen_sequences,
           st1.gen_batches - st0.gen_batches);
    return 0;
}

/* Malformed requests get a 4xx JSON error; "stream": true gets 400 saying so. */
static int test_errors(void) {
    int s = start_server();
    if (s) return s;
    static const struct {
        const char *path, *body, *says;
    } bad[] = {
        {"/v1/chat/completions", "{\"messages\": [", "invalid JSON"},
        {"/v1/chat/completions", "[1]", "JSON object"},
        {"/v1/chat/completions", "{}", "messages"},
        {"/v1/chat/completions", "{\"messages\": \"hi\"}", "messages"},
        {"/v1/chat/completions", "{\"messages\": []}", "empty"},
        {"/v1/chat/completions", "{\"messages\": [\"hi\"]}", "messages[0]"},
        {"/v1/chat/completions", "{\"messages\": [{\"content\": \"hi\"}]}", "role"},
        {"/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": 5}]}", "content"},
        {"/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": null}]}", "content"},
        {"/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\"}]}]}", "text"},
        {"/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"\\u00ff\"}], \"stream\": true}", "streaming is not supported"},
        {"/v1/completions", "{\"prompt\": \"x\", \"stream\": true}", "streaming is not supported"},
        {"/v1/completions", "{\"prompt\": \"x\", \"stream\": \"yes\"}", "stream"},
        {"/v1/completions", "{\"prompt\": \"x\", \"max_tokens\": 0}", "max_tokens"},
        {"/v1/completions", "{\"prompt\": \"x\", \"max_tokens\": 65}", "--max-new-tokens"},
        {"/v1/completions", "{\"prompt\": \"x\", \"max_tokens\": \"5\"}", "max_tokens"},
        {"/v1/completions", "{\"prompt\": \"x\", \"max_tokens\": 4, \"max_completion_tokens\": 5}", "disagree"},
        {"/v1/completions", "{\"prompt\": \"x\", \"temperature\": -1}", "temperature"},
        {"/v1/completions", "{\"prompt\": \"x\", \"temperature\": \"hot\"}", "temperature"},
        {"/v1/completions", "{\"prompt\": \"x\", \"top_p\": 0}", "top_p"},
        {"/v1/completions", "{\"prompt\": \"x\", \"top_p\": 1.5}", "top_p"},
        {"/v1/completions", "{\"prompt\": \"x\", \"top_k\": -2}", "top_k"},
        {"/v1/completions", "{\"prompt\": \"x\", \"n\": 0}", "\"n\""},
        {"/v1/completions", "{\"prompt\": \"x\", \"n\": 17}", "\"n\""},
        {"/v1/completions", "{\"prompt\": \"x\", \"n\": 1.5}", "\"n\""},
        {"/v1/completions", "{\"prompt\": \"x\", \"seed\": \"s\"}", "seed"},
        {"/v1/completions", "{\"prompt\": \"x\", \"stop\": 5}", "stop"},
        {"/v1/completions", "{\"prompt\": \"x\", \"stop\": [1]}", "stop[0]"},
        {"/v1/completions", "{\"prompt\": \"x\", \"stop\": [\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\",\"l\",\"m\",\"n\",\"o\",\"p\",\"q\"]}", "stop"},
        {"/v1/completions", "{\"prompt\": \"x\", \"logprobs\": 2}", "logprobs"},
        {"/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"logprobs\": true}", "logprobs"},
        {"/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"response_format\": {\"type\": \"json_object\"}}", "response_format"},
        {"/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"tools\": [{\"type\": \"function\"}]}", "tools"},
        {"/v1/completions", "{\"prompt\": \"x\", \"presence_penalty\": 0.5}", "presence_penalty"},
        {"/v1/completions", "{\"prompt\": \"x\", \"echo\": true}", "echo"},
        {"/v1/completions", "{}", "prompt"},
        {"/v1/completions", "{\"prompt\": 5}", "prompt"},
        {"/v1/completions", "{\"prompt\": []}", "empty"},
        {"/v1/completions", "{\"prompt\": [[]]}", "empty"},
        {"/v1/completions", "{\"prompt\": [{}]}", "prompt"},
        {"/v1/completions", "{\"prompt\": [\"a\", 5]}", "prompt[1]"},
        {"/v1/completions", "{\"prompt\": [1, 99999999]}", "token id"},
        {"/v1/completions", "{\"prompt\": [[1], [-1]]}", "prompt[1][0]"},
        {"/v1/completions", "{\"prompt\": \"\"}", "no tokens"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *r;
        long st = http("POST", bad[i].path, bad[i].body, &r);
        CHECK_MSG(st == 400 && is_error(r) && strstr(err_msg(r), bad[i].says), "case %zu (%s): status %ld, \"%s\"", i,
                  bad[i].body, st, err_msg(r));
        json_decref(r);
    }
    json_t *r;
    CHECK(http("GET", "/v1/chat/completions", NULL, &r) == 405 && is_error(r));
    json_decref(r);
    CHECK(http("GET", "/v1/completions", NULL, &r) == 405 && is_error(r));
    json_decref(r);
    /* the server still answers */
    CHECK(post("/v1/completions", json_pack("{s:s,s:i,s:b}", "prompt", "Hi", "max_tokens", 2, "return_token_ids", 1), &r) == 200);
    check_usage(r, json_integer_value(json_object_get(json_object_get(r, "usage"), "prompt_tokens")));
    json_decref(r);
    return 0;
}

/* Which endpoints each kind of server answers, and /v1/models. */
static int test_models(void) {
    int s = start_server();
    if (s) return s;
    json_t *r;
    CHECK(http("GET", "/v1/models", NULL, &r) == 200);
    json_t *d = json_object_get(r, "data");
    CHECK(json_array_size(d) == 2);
    CHECK(!strcmp(json_string_value(json_object_get(json_array_get(d, 0), "id")), "prm"));
    CHECK(!strcmp(json_string_value(json_object_get(json_array_get(d, 1), "id")), "lm"));
    for (size_t k = 0; k < json_array_size(d); k++) CHECK(!strcmp(json_string_value(json_object_get(json_array_get(d, k), "object")), "model"));
    json_decref(r);
    /* the reward endpoints still work next to the policy */
    CHECK(post("/get_reward", json_pack("{s:[s]}", "query", "2+2=4\n\nThe answer is 4"), &r) == 200);
    CHECK(json_is_number(json_array_get(json_object_get(r, "rewards"), 0)));
    json_decref(r);

    /* a PRM-only server: the completion endpoints answer 404 and name --policy-model */
    fp_serve *p = new_server(1, 0, 64);
    CHECK(p != NULL);
    if (p) {
        const char *chat = "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}";
        CHECK(handle(p, "POST", "/v1/chat/completions", chat, &r) == 404 && is_error(r) && strstr(err_msg(r), "--policy-model"));
        json_decref(r);
        CHECK(handle(p, "POST", "/v1/completions", "{\"prompt\": \"hi\"}", &r) == 404 && strstr(err_msg(r), "policy model"));
        json_decref(r);
        CHECK(handle(p, "GET", "/v1/models", NULL, &r) == 200 && json_array_size(json_object_get(r, "data")) == 1);
        json_decref(r);
        fp_serve_free(p);
    }
    /* a policy-only server: the PRM endpoints answer 404 and name --model; the rest works */
    p = new_server(0, 1, 64);
    CHECK(p != NULL);
    if (p) {
        const char *paths[] = {"/get_reward", "/pooling", "/v1/rerank", "/rerank"};
        for (size_t k = 0; k < 4; k++) {
            CHECK(handle(p, "POST", paths[k], "{\"query\": [\"x\"]}", &r) == 404 && is_error(r) && strstr(err_msg(r), "--model"));
            json_decref(r);
        }
        CHECK(handle(p, "POST", "/v1/grpo/advantages", "{\"groups\": [[1, 2]]}", &r) == 200);
        json_decref(r);
        CHECK(handle(p, "GET", "/health", NULL, &r) == 200);
        json_decref(r);
        CHECK(handle(p, "GET", "/v1/models", NULL, &r) == 200);
        CHECK(json_array_size(json_object_get(r, "data")) == 1);
        CHECK(!strcmp(json_string_value(json_object_get(json_array_get(json_object_get(r, "data"), 0), "id")), "lm"));
        json_decref(r);
        CHECK(handle(p, "POST", "/v1/completions", "{\"prompt\": \"Hi\", \"max_tokens\": 3, \"temperature\": 0}", &r) == 200);
        CHECK(json_integer_value(json_object_get(json_object_get(r, "usage"), "completion_tokens")) == 3);
        json_decref(r);
        fp_serve_free(p);
    }
    /* neither model: refused */
    fp_serve_opts so;
    fp_serve_opts_default(&so);
    CHECK(fp_serve_new(&p, NULL, &so) == FP_EINVAL && p == NULL);
    return 0;
}

/* The CLI with only --policy-model: port 0, --max-new-tokens caps max_tokens, SIGTERM exits 0; usage errors. */
static int test_cli(void) {
    int s = setup();
    if (s) return s;
    char errf[1024], cmd[2048];
    snprintf(errf, sizeof errf, "%s/serve_chat.err", th_tmpdir());
    char *argv[] = {(char *)th_bin(), "serve", "--policy-model", (char *)lm_dir, "--policy-name", "pol", "--port", "0",
                    "--threads", "1", "--max-new-tokens", "8", "--gen-batch", "4", NULL};
    int cli_port;
    pid_t pid = serve_spawn(errf, argv, &cli_port);
    CHECK_MSG(cli_port > 0, "no 'listening on' line");
    if (cli_port > 0) {
        int saved = port;
        port = cli_port;
        json_t *r;
        CHECK(post("/v1/chat/completions", request(0, "{\"temperature\": 0, \"max_tokens\": 8, \"return_token_ids\": true}"), &r) == 200);
        CHECK(!strcmp(json_string_value(json_object_get(r, "model")), "policy"));
        json_t *want = json_array(), *tokens = json_object_get(json_array_get(expected, 0), "tokens");
        for (size_t k = 0; k < 8; k++) json_array_append(want, json_array_get(tokens, k));
        CHECK(json_equal(json_object_get(json_array_get(json_object_get(r, "choices"), 0), "token_ids"), want));
        json_decref(want);
        json_decref(r);
        /* no max_tokens: the cap */
        CHECK(post("/v1/completions", json_pack("{s:s}", "prompt", "Hi"), &r) == 200);
        CHECK(json_integer_value(json_object_get(json_object_get(r, "usage"), "completion_tokens")) <= 8);
        json_decref(r);
        CHECK(post("/v1/completions", json_pack("{s:s,s:i}", "prompt", "Hi", "max_tokens", 9), &r) == 400);
        json_decref(r);
        CHECK(http("GET", "/v1/models", NULL, &r) == 200);
        CHECK(!strcmp(json_string_value(json_object_get(json_array_get(json_object_get(r, "data"), 0), "id")), "pol"));
        json_decref(r);
        CHECK(post("/get_reward", json_pack("{s:[s]}", "query", "x"), &r) == 404);
        json_decref(r);
        port = saved;
    }
    if (pid > 0) CHECK_MSG(serve_stop(pid), "serve did not exit 0 on SIGTERM");
    const char *usage[] = {"--port 0", "--policy-name x --model-name y --port 0", "--policy-model %s --model-name y",
                           "--policy-model %s --max-new-tokens 0", "--policy-model %s --gen-batch 0",
                           "--model %s --policy-tokenizer t"};
    for (size_t k = 0; k < sizeof usage / sizeof usage[0]; k++) {
        char args[1024];
        snprintf(args, sizeof args, usage[k], lm_dir);
        snprintf(cmd, sizeof cmd, "%s serve %s 2>/dev/null", th_bin(), args);
        int rc = system(cmd);
        CHECK_MSG(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "serve %s: exit %d", args, WIFEXITED(rc) ? WEXITSTATUS(rc) : -1);
    }
    /* a policy that cannot be loaded is a runtime error (exit 1) */
    snprintf(cmd, sizeof cmd, "%s serve --policy-model %s/missing --port 0 2>/dev/null", th_bin(), th_tmpdir());
    int rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 1);
    return 0;
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    RUN(test_greedy);
    RUN(test_stop);
    RUN(test_sampling);
    RUN(test_concurrent);
    RUN(test_errors);
    RUN(test_models);
    RUN(test_cli);
    fp_serve_free(srv);
    json_decref(expected);
    json_decref(records);
    curl_global_cleanup();
    return th_finish();
}
