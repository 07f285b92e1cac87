/* Integration: the judge against a REAL OpenAI-compatible server, Debian's llama-server run inside pyref, serving
 * a tiny random-weight Qwen2 GGUF with the real Qwen2 tokenizer (written by tiny_gguf.h).  json_schema
 * response_format makes llama-server grammar-constrain the output, so even random weights answer
 * {"score": n}; the reply is parsed strictly.  Then the server is killed in the middle of a batch and
 * restarted: every request is answered, answers already received come from the cache, and no answer is paid
 * for twice.  A last run with the server down is served entirely from the cache.
 *
 * Skips (visibly) when pyref's llama-server or the shared Qwen2 tokenizer is absent.  Needs root (pyref uses
 * chroot/unshare).  Environment: PYREF_ROOT, FLUXPRM_PYREF (see llama_server.h). */
#include "fluxprm.h"
#include "harness.h"
#include "llama_server.h"
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

typedef struct {
    fp_judge *j;
    const fp_judge_traj *t;
    size_t n;
    fp_judge_score *out;
    int rc;
} batch_arg;

static void *run_batch(void *p) {
    batch_arg *a = p;
    a->rc = fp_judge_step_scores(a->j, a->t, a->n, a->out);
    return NULL;
}

static int scores_ok(const fp_judge_score *s, size_t n) {
    int ok = 1;
    for (size_t i = 0; i < n; i++) {
        CHECK_MSG(s[i].status == FP_OK && s[i].score >= 0 && s[i].score <= 10, "score %zu: %s", i,
                  s[i].error ? s[i].error : "?");
        if (s[i].status != FP_OK) ok = 0;
    }
    return ok;
}

static int test_llama_server(void) {
    int st = llama_setup();
    if (st) return st;
    double t0 = now_s();
    st = llama_write_model();
    if (st) return st;
    if (!server_launch(120)) {
        CHECK_MSG(0, "llama-server did not become healthy on port %d", port);
        show_log();
        server_kill();
        return 0;
    }
    printf("  llama-server up on 127.0.0.1:%d after %.1f s\n", port, now_s() - t0);

    char url[64], cache[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    snprintf(cache, sizeof cache, "%s/judge-cache", th_tmpdir());
    fp_openai_opts o;
    fp_openai_opts_default(&o);
    o.base_url = url;
    o.cache_dir = cache;
    o.concurrency = 2;
    o.max_retries = 100;
    o.timeout_s = 60;
    o.connect_timeout_s = 2;
    o.backoff_base_s = 0.1;
    o.backoff_max_s = 0.5;
    o.api_key_env = "FLUXPRM_TEST_UNSET_KEY";
    fp_openai_client *c = NULL;
    CHECK_OK(fp_openai_client_new(&c, &o));
    fp_judge_opts jo;
    fp_judge_opts_default(&jo);
    jo.model = "tiny-qwen2";
    jo.integer_scores = 1;
    jo.max_tokens = 24;
    jo.template_max_tokens = 8;
    fp_judge *j = NULL;
    CHECK_OK(fp_judge_new(&j, c, &jo)); /* the shipped prompts/judge_step.txt and judge_template.txt */
    if (!j) { server_kill(); fp_openai_client_free(c); return 0; }

    /* Run A: two steps, json_schema accepted, strict parsing. */
    const char *sa[] = {"Add the numbers: 2 + 3.", "2 + 3 = 5, so the answer is 5."};
    fp_judge_traj ta = {"What is 2 + 3?", sa, 2, "The answer is 5."};
    fp_judge_score outa[2];
    double t1 = now_s();
    CHECK_OK(fp_judge_step_scores(j, &ta, 1, outa));
    scores_ok(outa, 2);
    CHECK(fp_judge_format(j) == FP_JUDGE_FORMAT_AUTO);
    fp_openai_stats s;
    fp_openai_client_stats(c, &s);
    CHECK_MSG(s.successes == 2 && s.retries == 0 && s.prompt_tokens > 100 && s.completion_tokens > 0,
              "ok %ld retries %ld tokens %ld/%ld", s.successes, s.retries, s.prompt_tokens, s.completion_tokens);
    printf("  run A: scores %g %g in %.1f s (%ld prompt + %ld completion tokens)\n", outa[0].score, outa[1].score,
           now_s() - t1, s.prompt_tokens, s.completion_tokens);
    /* a template request (free text, a few tokens): answered, or a clear "empty template" error */
    char *tmpl = NULL;
    int tst = -1;
    int trc = fp_judge_templates(j, &ta, 1, &tmpl, &tst);
    CHECK_MSG(trc == FP_OK || trc == FP_EPARSE, "template: %s", fp_last_error());
    CHECK(trc != FP_OK || (tmpl && *tmpl));
    free(tmpl);
    fp_openai_client_stats(c, &s);
    long paid_before_b = s.successes, hits_before_b = s.cache_hits;

    /* Run B: the two answered steps again + four new ones; the server is killed after the first new answer and
     * restarted a moment later. */
    const char *sb[] = {"Let x be the unknown.", "Then 2x = 10.", "Divide by 2: x = 5.", "Check: 2 * 5 = 10."};
    fp_judge_traj tb[2] = {ta, {"Solve 2x = 10.", sb, 4, "x = 5"}};
    fp_judge_score outb[6];
    batch_arg arg = {j, tb, 2, outb, -1};
    pthread_t th;
    t1 = now_s();
    pthread_create(&th, NULL, run_batch, &arg);
    while (now_s() - t1 < 120) {
        fp_openai_client_stats(c, &s);
        if (s.successes > paid_before_b) break;
        usleep(20000);
    }
    CHECK_MSG(s.successes - paid_before_b < 4, "the kill came late: %ld answers already", s.successes - paid_before_b);
    server_kill();
    printf("  run B: killed the server after the first new answer (%.1f s)\n", now_s() - t1);
    usleep(1500000);
    server_start();
    int up = server_wait(120);
    CHECK_MSG(up, "llama-server did not come back");
    if (!up) show_log();
    pthread_join(th, NULL);
    CHECK_MSG(arg.rc == FP_OK, "run B: %s", fp_last_error());
    scores_ok(outb, 6);
    for (int i = 0; i < 2; i++) CHECK(outb[i].score == outa[i].score); /* the cached answers */
    fp_openai_stats sb_stats;
    fp_openai_client_stats(c, &sb_stats);
    long paid = sb_stats.successes - paid_before_b;
    printf("  run B: done in %.1f s: %ld answers paid, %ld cache hits, %ld retries, %ld attempts\n", now_s() - t1,
           paid, sb_stats.cache_hits - hits_before_b, sb_stats.retries, sb_stats.attempts);
    CHECK_MSG(paid == 4, "run B paid %ld answers (expected 4: nothing twice)", paid);
    CHECK(sb_stats.cache_hits - hits_before_b == 2);
    CHECK_MSG(sb_stats.retries >= 1, "the kill caused no retry");
    CHECK(sb_stats.failures == 0);
    long total_paid = sb_stats.successes;

    /* Run C: server down, a fresh client on the same cache: everything from disk, no network. */
    server_kill();
    fp_judge_free(j);
    fp_openai_client_free(c);
    CHECK_OK(fp_openai_client_new(&c, &o));
    CHECK_OK(fp_judge_new(&j, c, &jo));
    fp_judge_score outc[6];
    CHECK_OK(fp_judge_step_scores(j, tb, 2, outc));
    for (int i = 0; i < 6; i++) CHECK(outc[i].status == FP_OK && outc[i].score == outb[i].score);
    fp_openai_client_stats(c, &s);
    CHECK(s.cache_hits == 6 && s.attempts == 0 && s.successes == 0);
    printf("  run C: server down, 6/6 from the cache; %ld answers paid in all for %d distinct requests\n", total_paid,
           2 + 1 + 4);
    CHECK(total_paid == 2 + 1 + 4); /* run A, the template, run B's new steps */
    for (int i = 0; i < 6; i++) { fp_judge_score_clear(&outb[i]); fp_judge_score_clear(&outc[i]); }
    for (int i = 0; i < 2; i++) fp_judge_score_clear(&outa[i]);
    fp_judge_free(j);
    fp_openai_client_free(c);
    unlink(model_rel); /* 45 MB */
    return 0;
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    RUN(test_llama_server);
    server_kill();
    return th_finish();
}
