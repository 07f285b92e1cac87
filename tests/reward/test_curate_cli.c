/* `fluxprm curate` end to end against in-process libmicrohttpd mocks (tests/reward/mock_server.h):
 *  - a keyed mock acting as judge and policy: step score = strlen(step) % 11; templates fixed text; the policy
 *    answers \boxed{gold} when (seed + id) % 3 == 0 (id and gold are written in the question), else \boxed{-1};
 *  - every step target is recomputed here from independent parts: align from the HF embeddings of
 *    tests/ref/curate/fixture.json, coh from those embeddings with the documented reservoir + negatives
 *    rule and the InfoNCE formula written out, qual from the mock's rule, final from the mock's answers,
 *    and the softmax mix written out;
 *  - a bad record without --skip-bad stops with the earlier lines kept, and --resume --skip-bad completes
 *    the same file; a run killed (SIGKILL) while a judge request hangs, then --resume, gives the same bytes
 *    and no request answered before the kill is sent again;
 *  - the stock mock: retries and the cost summary, a failed judge reply, usage errors;
 *  - --no-judge --no-final with mean pooling, no server at all. */
#include "base/json.h"
#include "harness.h"
#include "json_files.h"
#include "tiny_models.h"
#include "mock_server.h"
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <sys/wait.h>

#define REF "tests/ref/curate"
enum { NEG = 2, POOL = 3, NROLL = 4 };
static const double TAU = 0.1;
static const uint64_t SEED = 5;

static mock_server keyed;
static char url[128], stock_url[128], encdir[512], prompts[3][512];
static atomic_int block_slow, blocking;
static char blocked_key[65];

static const char *between(const char *s, const char *open, const char *close, char *buf, size_t n) {
    const char *a = strstr(s, open), *b = a ? strstr(a + strlen(open), close) : NULL;
    if (!a || !b) return NULL;
    a += strlen(open);
    snprintf(buf, n, "%.*s", (int)(b - a), a);
    return buf;
}

static enum MHD_Result keyed_handle(void *cls, struct MHD_Connection *conn, const char *url_, const char *method,
                                    const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version; (void)url_; (void)method;
    mock_server *m = cls;
    if (mock_receiving(con_cls, upload, upload_size)) return MHD_YES;
    mock_conn *mc = *con_cls;
    atomic_fetch_add(&m->requests, 1);
    mock_count_attempt(m, mc->data, mc->len);
    json_t *req = json_loadb(mc->data, mc->len, 0, NULL);
    json_t *msgs = json_object_get(req, "messages");
    const char *content = json_string_value(json_object_get(json_array_get(msgs, json_array_size(msgs) - 1), "content"));
    long seed = (long)json_integer_value(json_object_get(req, "seed"));
    char reply[512], step[1024], tmp[64];
    if (!content) snprintf(reply, sizeof reply, "no content");
    else if (!strncmp(content, "ROLLOUT", 7)) {
        const char *g = between(content, "{{gold:", "}}", step, sizeof step);
        long id = atol(between(content, "{{id:", "}}", tmp, sizeof tmp) ? tmp : "0");
        snprintf(reply, sizeof reply, "Following the template.\n\nSo the result is \\boxed{%s}.", (seed + id) % 3 == 0 && g ? g : "-1");
    } else if (!strncmp(content, "JUDGE-TEMPLATE", 14)) {
        snprintf(reply, sizeof reply, "1. Restate the problem.\n2. Compute.\n3. Check.");
    } else if (between(content, "STEP<<", ">>STEP", step, sizeof step)) {
        if (atomic_load(&block_slow) && strstr(step, "Five squared")) {
            fp_sha256_hex(mc->data, mc->len, blocked_key);
            atomic_store(&blocking, 1);
            for (int i = 0; i < 1000 && atomic_load(&block_slow); i++) usleep(10000);
        }
        snprintf(reply, sizeof reply, "{\"score\": %zu}", strlen(step) % 11);
    } else snprintf(reply, sizeof reply, "unknown request");
    json_decref(req);
    return mock_reply(conn, reply);
}

static int keyed_start(mock_server *m) { return mock_start_with(m, keyed_handle); }

static void keyed_reset_counts(mock_server *m) {
    pthread_mutex_lock(&m->mu);
    m->n_keys = 0;
    pthread_mutex_unlock(&m->mu);
}

static int setup(void) {
    if (encdir[0]) return 0;
    const char *tj = th_shared_file("tokenizer/qwen2/tokenizer.json");
    if (!tj) { printf("  (needs ../shared/data/tokenizer/qwen2/tokenizer.json)\n"); return TH_SKIP; }
    snprintf(encdir, sizeof encdir, "%s/enc", th_tmpdir());
    if (th_tiny_lm_dir(encdir, tj)) return -1;
    static const char *const text[3] = {
        "[system]\nYou grade.\n[user]\nJUDGE-STEP Q {question} PREV {previous_steps} STEP<<{step}>>STEP RESP {response}\n",
        "JUDGE-TEMPLATE {question} RESP {response} STEPS {steps}\n", "ROLLOUT {question} T {template}\n"};
    static const char *const names[3] = {"step.txt", "template.txt", "rollout.txt"};
    for (int i = 0; i < 3; i++) {
        snprintf(prompts[i], sizeof prompts[i], "%s/%s", th_tmpdir(), names[i]);
        FILE *f = fopen(prompts[i], "w");
        if (!f) return -1;
        fputs(text[i], f);
        fclose(f);
    }
    return 0;
}

static void curate_cmd(char *cmd, size_t n, const char *extra, const char *out) {
    snprintf(cmd, n,
             "%s curate --quiet --embed-model %s --judge-url %s --judge-model judge --policy-model policy "
             "--api-key-env FLUXPRM_TEST_UNSET --step-prompt %s --template-prompt %s --rollout-prompt %s "
             "--negatives %d --pool-size %d --tau 0.1 --seed %llu --rollouts %d --retries 0 %s -o %s " REF "/records.jsonl",
             th_bin(), encdir, url, prompts[0], prompts[1], prompts[2], NEG, POOL, (unsigned long long)SEED, NROLL, extra,
             out);
}

static int run(const char *extra, const char *out) {
    char cmd[8192];
    curate_cmd(cmd, sizeof cmd, extra, out);
    size_t l = strlen(cmd);
    snprintf(cmd + l, sizeof cmd - l, " 2>%s.err", out);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static double num(json_t *v) { return json_is_null(v) || !v ? NAN : json_number_value(v); }

static void vec(json_t *a, double *out, size_t d) {
    for (size_t k = 0; k < d; k++) out[k] = json_number_value(json_array_get(a, k));
}
static double dcos(const double *a, const double *b, size_t d) {
    double ab = 0, aa = 0, bb = 0;
    for (size_t k = 0; k < d; k++) { ab += a[k] * b[k]; aa += a[k] * a[k]; bb += b[k] * b[k]; }
    return ab / sqrt(aa * bb);
}

/* Checks every record of a finished output against the independent recomputation. */
static void check_targets(json_t *out, json_t *fx) {
    json_t *recs = json_object_get(fx, "records");
    CHECK(json_array_size(out) == json_array_size(recs));
    enum { D = 8 };
    double res[POOL][D];
    uint64_t seen = 0;
    const long ids[] = {0, 1, 2, 3, 4};
    for (size_t i = 0; i < json_array_size(out) && i < json_array_size(recs); i++) {
        json_t *o = json_array_get(out, i), *w = json_array_get(recs, i);
        if (json_is_null(w)) {
            CHECK_MSG(json_is_string(json_object_get(o, "error")) && !json_object_get(o, "step_targets"), "record %zu", i);
            continue;
        }
        json_t *steps = json_object_get(o, "steps"), *wsteps = json_object_get(w, "steps");
        size_t T = json_array_size(wsteps);
        CHECK(json_array_size(steps) == T);
        json_t *comp = json_object_get(o, "step_components"), *raw = json_object_get(o, "step_raw");
        json_t *tg = json_object_get(o, "step_targets");
        double q[D], e[8][D];
        vec(json_object_get(w, "question_emb"), q, D);
        for (size_t t = 0; t < T && t < 8; t++) vec(json_array_get(json_object_get(w, "step_embs"), t), e[t], D);
        size_t R = seen < POOL ? (size_t)seen : POOL;
        for (size_t t = 0; t < T; t++) {
            const char *s = json_string_value(json_array_get(steps, t));
            CHECK_MSG(s && !strcmp(s, json_string_value(json_array_get(wsteps, t))), "record %zu step %zu text", i, t);
            /* align: HF cosine */
            double a = num(json_array_get(json_object_get(w, "align"), t));
            double ga = num(json_array_get(json_object_get(raw, "align_cos"), t));
            CHECK_MSG(isnan(a) ? isnan(ga) : fabs(a - ga) < 1e-5, "record %zu step %zu align %g vs HF %g", i, t, ga, a);
            /* qual: the mock's rule */
            double qs = (double)(strlen(s) % 11);
            CHECK_NEAR(num(json_array_get(json_object_get(raw, "judge_score"), t)), qs, 0);
            /* coh: negatives from the reservoir of earlier records (documented rule), InfoNCE written out */
            double coh = NAN;
            if (R >= NEG) {
                size_t idx[NEG];
                CHECK_OK(fp_reward_sample_negatives(SEED, (uint64_t)ids[i], t + 1, R + T, R, R + T, NEG, idx));
                const double *prev = t ? e[t - 1] : q;
                double lpos = dcos(prev, e[t], D) / TAU, z = exp(lpos);
                for (int k = 0; k < NEG; k++) z += exp(dcos(prev, res[idx[k]], D) / TAU);
                coh = lpos - log(z);
            }
            double gc = num(json_array_get(json_object_get(raw, "coh_log_prob"), t));
            CHECK_MSG(isnan(coh) ? isnan(gc) : fabs(coh - gc) < 1e-4, "record %zu step %zu coh %g vs %g", i, t, gc, coh);
            /* normalised components and the softmax mix */
            double c[3] = {isnan(a) ? NAN : (a + 1) / 2, isnan(coh) ? NAN : exp(coh), qs / 10}, z = 0, mix = 0;
            for (int k = 0; k < 3; k++) if (!isnan(c[k])) z += exp(c[k]);
            for (int k = 0; k < 3; k++) if (!isnan(c[k])) mix += exp(c[k]) / z * c[k];
            static const char *const cn[3] = {"align", "coh", "qual"};
            for (int k = 0; k < 3; k++) {
                double g = num(json_array_get(json_object_get(comp, cn[k]), t));
                CHECK_MSG(isnan(c[k]) ? isnan(g) : fabs(c[k] - g) < 1e-5, "record %zu step %zu %s", i, t, cn[k]);
            }
            CHECK_MSG(fabs(num(json_array_get(tg, t)) - mix) < 1e-5, "record %zu step %zu target %g vs %g", i, t,
                      num(json_array_get(tg, t)), mix);
        }
        /* reservoir update after the record (Algorithm R, rng(seed, 2^64-1, n)) */
        for (size_t t = 0; t < T; t++, seen++) {
            if (seen < POOL) { memcpy(res[seen], e[t], sizeof e[t]); continue; }
            fp_rng g;
            fp_rng_seed(&g, SEED, UINT64_MAX, seen);
            uint64_t j = fp_rng_below(&g, seen + 1);
            if (j < POOL) memcpy(res[j], e[t], sizeof e[t]);
        }
        /* final: fraction of rollouts whose seed s satisfies (s + id) % 3 == 0; no gold -> none */
        json_t *fin = json_object_get(o, "final_target");
        json_t *in_gold = json_object_get(o, "gold");
        if (!in_gold) {
            CHECK(!fin);
            json_t *notes = json_object_get(o, "curate_notes");
            int found = 0;
            for (size_t k = 0; k < json_array_size(notes); k++)
                found |= strstr(json_string_value(json_array_get(notes, k)), "no gold answer") != NULL;
            CHECK_MSG(found, "record %zu states that it has no gold", i);
        } else {
            int ok = 0;
            for (int s = 0; s < NROLL; s++) ok += (s + ids[i]) % 3 == 0;
            CHECK_MSG(fin && fabs(num(fin) - (double)ok / NROLL) < 1e-12, "record %zu final %g vs %d/%d", i, num(fin), ok, NROLL);
        }
        /* fields carried along, response kept */
        CHECK(json_object_get(o, "id") && json_is_string(json_object_get(o, "response")));
    }
    /* the first record has no earlier records: coh missing, and said so */
    json_t *n0 = json_object_get(json_array_get(out, 0), "curate_notes");
    CHECK(n0 && strstr(json_string_value(json_array_get(n0, 0)), "coh missing"));
    CHECK(json_is_object(json_object_get(json_array_get(out, 4), "extra")));
}

static int test_curate_e2e(void) {
    int s = setup();
    if (s) return s;
    json_t *fx;
    CHECK_OK(fp_json_load_file(&fx, REF "/fixture.json"));
    if (!fx) return 1;
    char outA[512], cacheA[512], extra[1024];
    snprintf(outA, sizeof outA, "%s/a.jsonl", th_tmpdir());
    snprintf(cacheA, sizeof cacheA, "%s/cacheA", th_tmpdir());
    snprintf(extra, sizeof extra, "--cache %s --batch 2 --concurrency 3 --skip-bad", cacheA);
    int rc = run(extra, outA);
    CHECK_MSG(rc == 0, "exit %d", rc);
    json_t *out = th_load_lines(outA);
    check_targets(out, fx);
    json_decref(out);
    /* the same run again: all from the cache, same bytes */
    int before = atomic_load(&keyed.requests);
    char outA2[512];
    snprintf(outA2, sizeof outA2, "%s/a2.jsonl", th_tmpdir());
    CHECK(run(extra, outA2) == 0);
    CHECK_MSG(atomic_load(&keyed.requests) == before, "rerun sent %d requests", atomic_load(&keyed.requests) - before);
    CHECK(th_same_file(outA, outA2));

    /* a bad record without --skip-bad: exit 1, the three records before it kept in .partial */
    char outB[512], cacheB[512], part[600];
    snprintf(outB, sizeof outB, "%s/b.jsonl", th_tmpdir());
    snprintf(cacheB, sizeof cacheB, "%s/cacheB", th_tmpdir());
    snprintf(part, sizeof part, "%s.partial", outB);
    snprintf(extra, sizeof extra, "--cache %s --batch 1", cacheB);
    keyed_reset_counts(&keyed);
    CHECK(run(extra, outB) == 1);
    json_t *pl = th_load_lines(part);
    CHECK_MSG(json_array_size(pl) == 3, "%zu lines kept", json_array_size(pl));
    json_decref(pl);
    CHECK(access(outB, F_OK) != 0);
    snprintf(extra, sizeof extra, "--cache %s --batch 1 --resume --skip-bad", cacheB);
    CHECK(run(extra, outB) == 0);
    CHECK_MSG(th_same_file(outA, outB), "resumed output differs from the uninterrupted run");
    pthread_mutex_lock(&keyed.mu);
    for (int k = 0; k < keyed.n_keys; k++) CHECK_MSG(keyed.counts[k] == 1, "a request was sent %d times", keyed.counts[k]);
    pthread_mutex_unlock(&keyed.mu);
    char *err = NULL;
    size_t el;

    /* SIGKILL while a judge request hangs, then --resume */
    char outC[512], cacheC[512], cmd[8192];
    snprintf(outC, sizeof outC, "%s/c.jsonl", th_tmpdir());
    snprintf(cacheC, sizeof cacheC, "%s/cacheC", th_tmpdir());
    snprintf(part, sizeof part, "%s.partial", outC);
    snprintf(extra, sizeof extra, "--cache %s --batch 1 --concurrency 2 --skip-bad", cacheC);
    keyed_reset_counts(&keyed);
    atomic_store(&blocking, 0);
    atomic_store(&block_slow, 1);
    curate_cmd(cmd, sizeof cmd, extra, outC);
    pid_t pid = fork();
    if (pid == 0) {
        char full[8300];
        snprintf(full, sizeof full, "exec %s 2>/dev/null", cmd);
        execl("/bin/sh", "sh", "-c", full, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 3000 && !atomic_load(&blocking); i++) usleep(10000);
    CHECK_MSG(atomic_load(&blocking), "the run never reached the hanging request");
    usleep(200000); /* let the other request of that batch be answered and cached */
    kill(pid, SIGKILL);
    int wst;
    waitpid(pid, &wst, 0);
    atomic_store(&block_slow, 0);
    pl = th_load_lines(part);
    CHECK_MSG(json_array_size(pl) == 2, "%zu lines before the kill", json_array_size(pl));
    json_decref(pl);
    CHECK(access(outC, F_OK) != 0);
    char outC_err[600];
    snprintf(outC_err, sizeof outC_err, "%s.resume", outC);
    snprintf(extra, sizeof extra, "--cache %s --batch 1 --concurrency 2 --skip-bad --resume", cacheC);
    /* not quiet this time: read the cost summary */
    curate_cmd(cmd, sizeof cmd, extra, outC);
    char *q = strstr(cmd, " --quiet");
    if (q) memmove(q, q + 8, strlen(q + 8) + 1);
    size_t l = strlen(cmd);
    snprintf(cmd + l, sizeof cmd - l, " 2>%s", outC_err);
    rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 0);
    CHECK_MSG(th_same_file(outA, outC), "output after kill + resume differs from the uninterrupted run");
    pthread_mutex_lock(&keyed.mu);
    for (int k = 0; k < keyed.n_keys; k++)
        CHECK_MSG(keyed.counts[k] == 1 || (!strcmp(keyed.keys[k], blocked_key) && keyed.counts[k] == 2),
                  "a request answered before the kill was sent again (%d times)", keyed.counts[k]);
    pthread_mutex_unlock(&keyed.mu);
    if (fp_read_file(outC_err, &err, &el) == FP_OK) {
        CHECK_MSG(strstr(err, "(2 resumed, 0 bad)") || strstr(err, "2 resumed"), "%s", err);
        const char *j = strstr(err, "judge: requests");
        long jreq = -1, jhits = -1;
        CHECK_MSG(j && sscanf(j, "judge: requests %ld (cache hits %ld,", &jreq, &jhits) == 2 && jhits >= 1, "%s", err);
        /* the answered request of the killed batch */
        free(err);
    } else CHECK(0);
    json_decref(fx);
    return 0;
}

/* The stock mock: every reply is {"score": 5}, so templates are that text and so is every rollout, which the
 * verify layer reads as the bare answer '{"score": 5}' (not 5): final_target 0.  "@500x2" in a thinking step
 * makes the first two attempts of every request that quotes it fail (both step requests: the step or its
 * previous steps; the template request: the steps): 3 x 2 retries in the cost summary. */
static int test_stock_mock_retries(void) {
    int s = setup();
    if (s) return s;
    mock_server stock;
    CHECK(mock_start(&stock) == 0);
    mock_url(&stock, stock_url, sizeof stock_url);
    char in[512], out[512], cmd[8192];
    snprintf(in, sizeof in, "%s/stock.jsonl", th_tmpdir());
    snprintf(out, sizeof out, "%s/stock_out.jsonl", th_tmpdir());
    FILE *f = fopen(in, "w");
    fputs("{\"question\":\"Q five\",\"thinking\":\"t1 @500x2\\n\\nt2\\n\\nt3\",\"response\":\"r1\\n\\nr2\",\"gold\":\"5\"}\n", f);
    fputs("{\"question\":\"Q six\",\"thinking\":\"u1\",\"response\":\"v1\",\"answer\":\"6\"}\n", f);
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "%s curate --embed-model %s --judge-url %s --judge-model m --api-key-env FLUXPRM_TEST_UNSET "
             "--rollouts 3 --negatives 1 --gold-field gold --timeout 10 -o %s %s 2>%s.err",
             th_bin(), encdir, stock_url, out, in, out);
    int rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 0);
    json_t *o = th_load_lines(out);
    CHECK(json_array_size(o) == 2);
    json_t *r0 = json_array_get(o, 0), *r1 = json_array_get(o, 1);
    int ok = -1;
    CHECK_OK(fp_verify_check("{\"score\": 5}", "5", &ok, NULL, NULL));
    CHECK(ok == 0 && num(json_object_get(r0, "final_target")) == 0.0);
    CHECK(json_array_size(json_object_get(r0, "steps")) == 2); /* 3 thinking steps merged onto 2 response steps */
    json_t *qual = json_object_get(json_object_get(r0, "step_components"), "qual");
    CHECK(num(json_array_get(qual, 0)) == 0.5 && num(json_array_get(qual, 1)) == 0.5);
    CHECK(!json_object_get(r1, "final_target") && json_object_get(r1, "answer")); /* gold is in "gold" only */
    /* record 1 sees record 0's steps: coherence present */
    CHECK(!json_is_null(json_array_get(json_object_get(json_object_get(r1, "step_components"), "coh"), 0)));
    json_decref(o);
    char ep[600], *err;
    size_t el;
    snprintf(ep, sizeof ep, "%s.err", out);
    if (fp_read_file(ep, &err, &el) == FP_OK) {
        const char *j = strstr(err, "curate: judge: requests");
        CHECK_MSG(j && strstr(j, "retries 6,"), "%s", err);
        const char *p = strstr(err, "curate: policy: requests 3 ");
        CHECK_MSG(p != NULL, "%s", err);
        CHECK_MSG(strstr(err, "final targets 1 (rollouts correct 0 of 3), no gold 1"), "%s", err);
        free(err);
    } else CHECK(0);
    /* a judge reply that is not JSON: qual missing on the steps whose requests quote it, said in curate_notes,
     * the mix over the rest; the output is complete and exit status 1 */
    f = fopen(in, "w");
    fputs("{\"question\":\"Q\",\"thinking\":\"x1\\n\\nx2 @reply=bad\",\"response\":\"y1\\n\\ny2\"}\n", f);
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "%s curate -q --embed-model %s --judge-url %s --judge-model m --api-key-env FLUXPRM_TEST_UNSET "
             "--no-final --retries 0 -o %s %s 2>/dev/null", th_bin(), encdir, stock_url, out, in);
    rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 1);
    o = th_load_lines(out);
    r0 = json_array_get(o, 0);
    qual = json_object_get(json_object_get(r0, "step_components"), "qual");
    CHECK(num(json_array_get(qual, 0)) == 0.5 && json_is_null(json_array_get(qual, 1)));
    json_t *notes = json_object_get(r0, "curate_notes");
    int found = 0;
    for (size_t k = 0; k < json_array_size(notes); k++)
        found |= strstr(json_string_value(json_array_get(notes, k)), "qual missing: judge step 2") != NULL;
    CHECK_MSG(found, "notes: %s", json_dumps(notes, 0));
    json_t *comp = json_object_get(r0, "step_components");
    double c2[2] = {num(json_array_get(json_object_get(comp, "align"), 1)), num(json_array_get(json_object_get(comp, "coh"), 1))};
    double z = 0, mix = 0;
    for (int k = 0; k < 2; k++) if (!isnan(c2[k])) z += exp(c2[k]);
    for (int k = 0; k < 2; k++) if (!isnan(c2[k])) mix += exp(c2[k]) / z * c2[k];
    CHECK_NEAR(num(json_array_get(json_object_get(r0, "step_targets"), 1)), mix, 1e-6);
    json_decref(o);
    /* usage errors */
    snprintf(cmd, sizeof cmd, "%s curate --embed-model %s %s >/dev/null 2>&1", th_bin(), encdir, in);
    rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2); /* judge URL/model required */
    snprintf(cmd, sizeof cmd, "%s curate --embed-model %s --no-judge --no-final --embed-pooling max %s >/dev/null 2>&1",
             th_bin(), encdir, in);
    rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2);
    mock_stop(&stock);
    return 0;
}

/* --no-judge --no-final: no server needed; qual and final missing with notes; mean pooling; the reservoir
 * turns coherence on from the second record. */
static int test_no_network(void) {
    int s = setup();
    if (s) return s;
    char out[512], cmd[4096];
    snprintf(out, sizeof out, "%s/nonet.jsonl", th_tmpdir());
    snprintf(cmd, sizeof cmd,
             "%s curate -q --embed-model %s --embed-pooling mean --no-judge --no-final --negatives 2 --skip-bad "
             "-o %s " REF "/records.jsonl 2>/dev/null", th_bin(), encdir, out);
    int rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 0);
    json_t *o = th_load_lines(out);
    CHECK(json_array_size(o) == 5);
    for (size_t i = 0; i < json_array_size(o); i++) {
        json_t *r = json_array_get(o, i);
        if (i == 3) { CHECK(json_object_get(r, "error") != NULL); continue; }
        CHECK(!json_object_get(r, "final_target"));
        json_t *comp = json_object_get(r, "step_components");
        CHECK(json_is_null(json_array_get(json_object_get(comp, "qual"), 0)));
        CHECK(json_is_null(json_array_get(json_object_get(comp, "coh"), 0)) == (i == 0));
        json_t *notes = json_object_get(r, "curate_notes");
        int found = 0;
        for (size_t k = 0; k < json_array_size(notes); k++)
            found |= !strcmp(json_string_value(json_array_get(notes, k)), "qual missing: --no-judge");
        CHECK(found);
    }
    json_decref(o);
    return 0;
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    RUN(test_no_network);
    if (keyed_start(&keyed)) { printf("cannot start the mock server\n"); return 1; }
    mock_url(&keyed, url, sizeof url);
    RUN(test_curate_e2e);
    RUN(test_stock_mock_retries);
    atomic_store(&block_slow, 0);
    mock_stop(&keyed);
    return th_finish();
}
