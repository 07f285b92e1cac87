/* Integration: `fluxprm curate` with a REAL OpenAI-compatible server as judge and policy — Debian's
 * llama-server inside pyref serving the tiny random-weight Qwen2 GGUF of tiny_gguf.h (real Qwen2 tokenizer).
 * The judge's json_schema (integer 0..10) is grammar-constrained, so every step gets a strictly parsed score.
 * Templates are free text, which this planted model ends at once (<|im_end|> is its favourite token): the
 * template comes back empty, so the record states "template failed" and has no final_target, and the exit
 * status is 1 (a final_target, when one comes, must lie in [0, 1] with N rollouts; the rollout path is
 * covered against the mocks in test_curate_cli.c).  Checks: every qual present, an integer in 0..10;
 * step_targets = the softmax mix of the written components; every record without final_target says why;
 * then the same run with the server killed is served wholly from the cache (0 paid), byte-identical.
 *
 * Skips (visibly) when pyref's llama-server, the pyref script or the shared Qwen2 tokenizer is absent, or when
 * not running as root.  Environment: PYREF_ROOT, FLUXPRM_PYREF as in llama_server.h. */
#include "base/base.h"
#include "harness.h"
#include "llama_server.h"
#include "tiny_models.h"
#include <jansson.h>
#include <signal.h>
#include <sys/wait.h>

static int run_curate(const char *encdir, const char *cache, const char *out) {
    char cmd[8192], in[512];
    snprintf(in, sizeof in, "%s/in.jsonl", th_tmpdir());
    FILE *f = fopen(in, "w");
    if (!f) return -1;
    fputs("{\"id\":1,\"question\":\"What is 2 + 3?\",\"thinking\":\"Add them.\\n\\n2 + 3 = 5.\\n\\nCheck: 5 - 3 = 2.\",\"response\":\"2 + 3 = 5.\\n\\n\\\\boxed{5}\",\"gold\":\"5\"}\n", f);
    fputs("{\"id\":2,\"question\":\"Solve 2x = 10.\",\"thinking\":\"Divide by 2.\\n\\nx = 5.\",\"response\":\"x = 10 / 2.\\n\\nx = 5.\"}\n", f);
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "%s curate --embed-model %s --judge-url http://127.0.0.1:%d --judge-model tiny --integer-scores "
             "--max-tokens 24 --template-max-tokens 8 --rollout-max-tokens 8 --rollouts 2 --negatives 2 "
             "--concurrency 2 --retries 1 --timeout 60 --api-key-env FLUXPRM_TEST_UNSET --cache %s --skip-bad "
             "-o %s %s 2>%s.err",
             th_bin(), encdir, port, cache, out, in, out);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int test_curate_llama_server(void) {
    int s = llama_setup();
    if (s) return s;
    char encdir[512];
    snprintf(encdir, sizeof encdir, "%s/enc", th_tmpdir());
    CHECK(th_tiny_lm_dir(encdir, llama_tok) == 0);
    s = llama_write_model();
    if (s) return s;
    double t0 = now_s();
    if (!server_launch(120)) {
        CHECK_MSG(0, "llama-server did not become healthy on port %d", port);
        server_kill();
        return 0;
    }
    printf("  llama-server up after %.1f s\n", now_s() - t0);
    char out[512], out2[512], cache[512];
    snprintf(out, sizeof out, "%s/targets.jsonl", th_tmpdir());
    snprintf(out2, sizeof out2, "%s/targets2.jsonl", th_tmpdir());
    snprintf(cache, sizeof cache, "%s/cache", th_tmpdir());
    t0 = now_s();
    int rc = run_curate(encdir, cache, out);
    printf("  curate against llama-server: exit %d in %.1f s\n", rc, now_s() - t0);
    CHECK(rc == 0 || rc == 1); /* 1 when a free-text template came back empty (noted per record) */
    fp_jsonl_reader *r;
    CHECK_OK(fp_jsonl_open(&r, out));
    const char *line;
    size_t len;
    int n = 0, finals = 0;
    while (r && fp_jsonl_next_line(r, &line, &len) == FP_OK) {
        json_t *o = json_loadb(line, len, 0, NULL);
        n++;
        if (json_object_get(o, "error")) { json_decref(o); continue; }
        json_t *comp = json_object_get(o, "step_components"), *tg = json_object_get(o, "step_targets");
        json_t *js = json_object_get(json_object_get(o, "step_raw"), "judge_score");
        for (size_t t = 0; t < json_array_size(tg); t++) {
            double q = json_number_value(json_array_get(js, t));
            CHECK_MSG(json_is_number(json_array_get(js, t)) && q >= 0 && q <= 10 && q == floor(q), "line %d step %zu", n, t);
            double c[3], z = 0, mix = 0;
            static const char *const names[3] = {"align", "coh", "qual"};
            for (int k = 0; k < 3; k++) {
                json_t *v = json_array_get(json_object_get(comp, names[k]), t);
                c[k] = json_is_number(v) ? json_number_value(v) : NAN;
            }
            for (int k = 0; k < 3; k++) if (!isnan(c[k])) z += exp(c[k]);
            for (int k = 0; k < 3; k++) if (!isnan(c[k])) mix += exp(c[k]) / z * c[k];
            CHECK_NEAR(json_number_value(json_array_get(tg, t)), mix, 1e-6);
        }
        json_t *fin = json_object_get(o, "final_target");
        if (fin) {
            finals++;
            CHECK(json_number_value(fin) >= 0 && json_number_value(fin) <= 1);
            CHECK(json_integer_value(json_object_get(json_object_get(o, "rollouts"), "n")) == 2);
        } else {
            json_t *notes = json_object_get(o, "curate_notes");
            CHECK(notes != NULL); /* says why */
            if (n == 1 && notes) {
                char *d = json_dumps(notes, 0);
                printf("  record 1 has no final_target: %s\n", d);
                free(d);
            }
        }
        json_decref(o);
    }
    fp_jsonl_close(r);
    CHECK(n == 2);
    printf("  %d records, %d with a final_target\n", n, finals);
    /* server down: the same run is answered from the cache, same bytes */
    server_kill();
    int rc2 = run_curate(encdir, cache, out2);
    CHECK(rc2 == rc);
    char *a = NULL, *b = NULL, *err = NULL;
    size_t la = 0, lb = 0, le = 0;
    CHECK_OK(fp_read_file(out, &a, &la));
    CHECK_OK(fp_read_file(out2, &b, &lb));
    CHECK(a && b && la == lb && !memcmp(a, b, la));
    char ep[600];
    snprintf(ep, sizeof ep, "%s.err", out2);
    if (fp_read_file(ep, &err, &le) == FP_OK) {
        const char *j = strstr(err, "curate: judge: requests");
        long req = 0, hits = -1, paid = -1;
        CHECK_MSG(j && sscanf(j, "curate: judge: requests %ld (cache hits %ld, paid %ld", &req, &hits, &paid) == 3 &&
                      paid == 0 && hits > 0,
                  "%s", err);
    }
    free(a);
    free(b);
    free(err);
    if (getenv("FLUXPRM_KEEP")) return 0;
    unlink(model_rel);
    return 0;
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    RUN(test_curate_llama_server);
    server_kill();
    return th_finish();
}
