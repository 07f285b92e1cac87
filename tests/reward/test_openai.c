/* OpenAI-compatible client against an in-process mock server: retries/backoff, Retry-After, timeouts, cache
 * (no request reaches the server on a rerun), concurrency, error handling, API-key hygiene, SHA-256. */
#include "fluxprm.h"
#include "harness.h"
#include "mock_server.h"
#include <time.h>

static double fp_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static mock_server srv;
static char url[128];

static fp_openai_opts fast_opts(const char *cache) {
    fp_openai_opts o;
    fp_openai_opts_default(&o);
    o.base_url = url;
    o.cache_dir = cache;
    o.concurrency = 4;
    o.max_retries = 4;
    o.timeout_s = 0.8;
    o.connect_timeout_s = 0.8;
    o.backoff_base_s = 0.02;
    o.backoff_max_s = 0.1;
    o.jitter_seed = 7;
    o.api_key_env = "FLUXPRM_TEST_NO_SUCH_KEY_VAR";
    return o;
}

static fp_chat_message msgs[64][1];
static fp_chat_request mkreq(int i, const char *text) {
    msgs[i][0] = (fp_chat_message){"user", text};
    fp_chat_request r;
    fp_chat_request_init(&r);
    r.model = "mock-judge";
    r.messages = msgs[i];
    r.n_messages = 1;
    r.max_tokens = 16;
    return r;
}

static char *cache_dir(const char *name) {
    static char buf[8][512];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, 512, "%s/%s", th_tmpdir(), name);
    return b;
}

static int test_sha256(void) {
    char hex[65];
    fp_sha256_hex("", 0, hex);
    CHECK(!strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    fp_sha256_hex("abc", 3, hex);
    CHECK(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    const char *s = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    fp_sha256_hex(s, strlen(s), hex);
    CHECK(!strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
    char big[1000];
    memset(big, 'a', sizeof big);
    fp_sha256_hex(big, sizeof big, hex); /* 1000 x 'a' (crosses several blocks) */
    CHECK(!strcmp(hex, "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3"));
    return 0;
}

static int test_canonical(void) {
    fp_chat_request r = mkreq(0, "hello \"world\"");
    r.temperature = 0.5;
    r.seed = 3;
    r.response_format = "{\"type\": \"json_object\"}";
    char *js;
    CHECK_OK(fp_chat_request_canonical(&r, &js));
    CHECK_MSG(js && !strcmp(js, "{\"max_tokens\":16,\"messages\":[{\"content\":\"hello \\\"world\\\"\",\"role\":\"user\"}],"
                                "\"model\":\"mock-judge\",\"response_format\":{\"type\":\"json_object\"},\"seed\":3,"
                                "\"stream\":false,\"temperature\":0.5}"), "%s", js);
    free(js);
    char k1[65], k2[65];
    CHECK_OK(fp_chat_request_key(&r, k1));
    r.seed = 4;
    CHECK_OK(fp_chat_request_key(&r, k2));
    CHECK(strcmp(k1, k2) != 0);
    r.response_format = "[1]";
    CHECK(fp_chat_request_key(&r, k2) == FP_EINVAL);
    r.response_format = NULL;
    r.model = NULL;
    CHECK(fp_chat_request_key(&r, k2) == FP_EINVAL);
    return 0;
}

/* 429 + Retry-After, 500 twice, a timeout, a plain request: all answered, with the right counters; a rerun
 * with a fresh client on the same cache sends nothing. */
static int test_retries_and_cache(void) {
    const char *cache = cache_dir("cache_retry");
    fp_openai_opts o = fast_opts(cache);
    fp_openai_client *c;
    CHECK_OK(fp_openai_client_new(&c, &o));
    if (!c) return 0;
    fp_chat_request reqs[4] = {mkreq(0, "a @429"), mkreq(1, "b @500x2"), mkreq(2, "c @slow"), mkreq(3, "d @reply=7")};
    fp_chat_response resp[4];
    int before = atomic_load(&srv.requests);
    double t0 = fp_now();
    CHECK_OK(fp_openai_chat_batch(c, reqs, 4, resp));
    double dt = fp_now() - t0;
    CHECK_MSG(dt >= 0.95, "Retry-After: 1 not honoured (batch took %.3f s)", dt);
    CHECK_MSG(dt < 5, "batch took %.3f s", dt);
    for (int i = 0; i < 4; i++) {
        CHECK_MSG(resp[i].status == FP_OK, "%d: %s", i, resp[i].error ? resp[i].error : "");
        CHECK(resp[i].content && !resp[i].from_cache);
    }
    CHECK(resp[0].attempts == 2 && resp[1].attempts == 3 && resp[2].attempts == 2 && resp[3].attempts == 1);
    CHECK(resp[3].content && !strcmp(resp[3].content, "{\"score\": 7}"));
    CHECK(resp[3].finish_reason && !strcmp(resp[3].finish_reason, "stop"));
    CHECK(resp[3].prompt_tokens == 10 && resp[3].completion_tokens == 3);
    fp_openai_stats s;
    fp_openai_client_stats(c, &s);
    CHECK_MSG(s.requests == 4 && s.cache_hits == 0 && s.attempts == 8 && s.retries == 4 && s.successes == 4 &&
              s.failures == 0, "requests %ld hits %ld attempts %ld retries %ld ok %ld fail %ld", s.requests,
              s.cache_hits, s.attempts, s.retries, s.successes, s.failures);
    CHECK(s.prompt_tokens == 40 && s.completion_tokens == 12);
    CHECK_MSG(atomic_load(&srv.requests) - before == 8, "server saw %d", atomic_load(&srv.requests) - before);
    for (int i = 0; i < 4; i++) fp_chat_response_clear(&resp[i]);
    fp_openai_client_free(c);

    /* rerun: everything from the cache, nothing reaches the server */
    before = atomic_load(&srv.requests);
    CHECK_OK(fp_openai_client_new(&c, &o));
    CHECK_OK(fp_openai_chat_batch(c, reqs, 4, resp));
    fp_openai_client_stats(c, &s);
    CHECK(s.cache_hits == 4 && s.attempts == 0 && s.successes == 0 && s.prompt_tokens == 0);
    CHECK(atomic_load(&srv.requests) == before);
    for (int i = 0; i < 4; i++) {
        CHECK(resp[i].status == FP_OK && resp[i].from_cache && resp[i].attempts == 0);
        CHECK(resp[i].prompt_tokens == 10);
    }
    CHECK(resp[3].content && !strcmp(resp[3].content, "{\"score\": 7}"));
    for (int i = 0; i < 4; i++) fp_chat_response_clear(&resp[i]);
    fp_openai_client_free(c);

    /* no temp files left behind in the cache */
    char cmd[700];
    snprintf(cmd, sizeof cmd, "test -z \"$(find %s -name '*.tmp.*')\" && test $(find %s -name '*.json' | wc -l) -eq 4",
             cache, cache);
    CHECK(system(cmd) == 0);
    return 0;
}

/* The backoff delays are deterministic for a seed: the same batch takes the same time (roughly). */
static int test_backoff_growth(void) {
    fp_openai_opts o = fast_opts(NULL);
    o.backoff_base_s = 0.1;
    o.backoff_max_s = 10;
    o.max_retries = 3;
    fp_openai_client *c;
    CHECK_OK(fp_openai_client_new(&c, &o));
    fp_chat_request r = mkreq(0, "x @always500 growth");
    fp_chat_response resp;
    double t0 = fp_now();
    CHECK(fp_openai_chat_batch(c, &r, 1, &resp) == FP_EIO);
    double dt = fp_now() - t0;
    /* delays in [d/2, d) for d = 0.1, 0.2, 0.4: total in [0.35, 0.7) plus request time */
    CHECK_MSG(dt >= 0.35 && dt < 1.5, "took %.3f s", dt);
    CHECK(resp.attempts == 4);
    CHECK_MSG(resp.error && strstr(resp.error, "HTTP 500") && strstr(resp.error, "always failing") &&
              strstr(resp.error, "retries exhausted"), "%s", resp.error);
    CHECK(strstr(fp_last_error(), "request 0:") != NULL);
    fp_openai_stats s;
    fp_openai_client_stats(c, &s);
    CHECK(s.retries == 3 && s.failures == 1 && s.successes == 0);
    fp_chat_response_clear(&resp);
    fp_openai_client_free(c);
    return 0;
}

static int test_concurrency(void) {
    for (int conc = 1; conc <= 4; conc += 3) {
        fp_openai_opts o = fast_opts(NULL);
        o.concurrency = conc;
        o.timeout_s = 5;
        fp_openai_client *c;
        CHECK_OK(fp_openai_client_new(&c, &o));
        fp_chat_request reqs[8];
        char texts[8][64];
        for (int i = 0; i < 8; i++) {
            snprintf(texts[i], sizeof texts[i], "@hold %d conc %d", i, conc);
            reqs[i] = mkreq(i, texts[i]);
        }
        fp_chat_response resp[8];
        for (int w = 0; w < 300 && atomic_load(&srv.inflight) > 0; w++) usleep(10000); /* a lingering @slow */
        atomic_store(&srv.max_inflight, 0);
        double t0 = fp_now();
        CHECK_OK(fp_openai_chat_batch(c, reqs, 8, resp));
        double dt = fp_now() - t0;
        int mx = atomic_load(&srv.max_inflight);
        CHECK_MSG(mx == conc, "concurrency %d: server saw %d in flight", conc, mx);
        double expect = 8.0 / conc * 0.3;
        CHECK_MSG(dt >= expect - 0.05 && dt < expect + 1.5, "concurrency %d: %.3f s (expected ~%.2f)", conc, dt, expect);
        for (int i = 0; i < 8; i++) { CHECK(resp[i].status == FP_OK); fp_chat_response_clear(&resp[i]); }
        fp_openai_client_free(c);
    }
    return 0;
}

static int test_errors(void) {
    fp_openai_opts o = fast_opts(cache_dir("cache_err"));
    fp_openai_client *c;
    CHECK_OK(fp_openai_client_new(&c, &o));
    fp_chat_request reqs[4] = {mkreq(0, "p @400"), mkreq(1, "q @garbage200"), mkreq(2, "r fine"), mkreq(3, "s @always500")};
    fp_chat_response resp[4];
    int rc = fp_openai_chat_batch(c, reqs, 4, resp);
    CHECK(rc == FP_EINVAL); /* the first failure: request 0 */
    CHECK_MSG(strstr(fp_last_error(), "request 0: HTTP 400: bad request: model not found") != NULL, "%s", fp_last_error());
    CHECK(resp[0].status == FP_EINVAL && resp[0].attempts == 1 && resp[0].http_status == 400);
    CHECK(resp[1].status == FP_EPARSE && resp[1].attempts == 1);
    CHECK_MSG(resp[1].error && strstr(resp[1].error, "malformed JSON"), "%s", resp[1].error);
    CHECK(resp[2].status == FP_OK);
    CHECK(resp[3].status == FP_EIO && resp[3].attempts == 5);
    for (int i = 0; i < 4; i++) fp_chat_response_clear(&resp[i]);
    fp_openai_client_free(c);
    /* rerun: the answered request comes from the cache, the failed ones are asked again */
    int before = atomic_load(&srv.requests);
    CHECK_OK(fp_openai_client_new(&c, &o));
    fp_openai_chat_batch(c, reqs, 4, resp);
    CHECK(resp[2].status == FP_OK && resp[2].from_cache);
    CHECK(atomic_load(&srv.requests) - before == 1 + 1 + 5);
    for (int i = 0; i < 4; i++) fp_chat_response_clear(&resp[i]);
    fp_openai_client_free(c);

    /* connection refused: retried, then FP_EIO */
    mock_server dead;
    CHECK(mock_start(&dead) == 0);
    char dead_url[128];
    mock_url(&dead, dead_url, sizeof dead_url);
    mock_stop(&dead);
    o = fast_opts(NULL);
    o.base_url = dead_url;
    o.max_retries = 2;
    CHECK_OK(fp_openai_client_new(&c, &o));
    fp_chat_request r = mkreq(0, "nobody home");
    fp_chat_response one;
    CHECK(fp_openai_chat_batch(c, &r, 1, &one) == FP_EIO);
    CHECK(one.attempts == 3 && one.http_status == 0);
    CHECK_MSG(one.error && strstr(one.error, "retries exhausted"), "%s", one.error);
    fp_chat_response_clear(&one);
    fp_openai_client_free(c);

    /* bad options */
    o = fast_opts(NULL);
    o.concurrency = 0;
    CHECK(fp_openai_client_new(&c, &o) == FP_EINVAL && !c);
    return 0;
}

static int test_duplicates(void) {
    fp_openai_opts o = fast_opts(NULL);
    fp_openai_client *c;
    CHECK_OK(fp_openai_client_new(&c, &o));
    fp_chat_request reqs[3] = {mkreq(0, "dup @reply=7"), mkreq(1, "other"), mkreq(2, "dup @reply=7")};
    fp_chat_response resp[3];
    int before = atomic_load(&srv.requests);
    CHECK_OK(fp_openai_chat_batch(c, reqs, 3, resp));
    CHECK(atomic_load(&srv.requests) - before == 2);
    CHECK(resp[2].content && !strcmp(resp[2].content, "{\"score\": 7}") && resp[2].from_cache);
    CHECK(!resp[0].from_cache);
    for (int i = 0; i < 3; i++) fp_chat_response_clear(&resp[i]);
    fp_openai_client_free(c);
    return 0;
}

static int file_contains(const char *dir, const char *needle) {
    char cmd[800];
    snprintf(cmd, sizeof cmd, "grep -rqF '%s' %s", needle, dir);
    return system(cmd) == 0;
}

static int test_api_key(void) {
    setenv("FLUXPRM_TEST_KEY", "sk-test-secret-42", 1);
    const char *cache = cache_dir("cache_key");
    fp_openai_opts o = fast_opts(cache);
    o.api_key_env = "FLUXPRM_TEST_KEY";
    fp_openai_client *c;
    CHECK_OK(fp_openai_client_new(&c, &o));
    fp_chat_request reqs[2] = {mkreq(0, "@auth"), mkreq(1, "@401echo")};
    fp_chat_response resp[2];
    CHECK(fp_openai_chat_batch(c, reqs, 2, resp) == FP_EINVAL);
    CHECK(resp[0].content && !strcmp(resp[0].content, "auth-ok"));
    CHECK(resp[1].status == FP_EINVAL && resp[1].http_status == 401);
    CHECK_MSG(resp[1].error && !strstr(resp[1].error, "sk-test-secret-42") && strstr(resp[1].error, "Bearer ***"),
              "%s", resp[1].error);
    CHECK(!strstr(fp_last_error(), "sk-test-secret-42"));
    CHECK(!file_contains(cache, "sk-test-secret-42"));
    for (int i = 0; i < 2; i++) fp_chat_response_clear(&resp[i]);
    fp_openai_client_free(c);
    /* without the variable: no Authorization header */
    o.api_key_env = "FLUXPRM_TEST_KEY_UNSET";
    o.cache_dir = NULL;
    CHECK_OK(fp_openai_client_new(&c, &o));
    CHECK_OK(fp_openai_chat_batch(c, reqs, 1, resp));
    CHECK(resp[0].content && !strcmp(resp[0].content, "auth-missing"));
    fp_chat_response_clear(&resp[0]);
    fp_openai_client_free(c);
    unsetenv("FLUXPRM_TEST_KEY");
    return 0;
}

int main(void) {
    if (mock_start(&srv) != 0) {
        printf("cannot start the mock server\n");
        return 1;
    }
    mock_url(&srv, url, sizeof url);
    RUN(test_sha256);
    RUN(test_canonical);
    RUN(test_retries_and_cache);
    RUN(test_backoff_growth);
    RUN(test_concurrency);
    RUN(test_errors);
    RUN(test_duplicates);
    RUN(test_api_key);
    mock_stop(&srv);
    return th_finish();
}
