/* `fluxprm score` end to end against HF transformers (tests/ref/score/make_fixture.py): the real Qwen2
 * tokenizer from ../shared, the Qwen2.5 chat template's default system prompt, <extra_0> renamed onto id
 * 151651 with --step-token-id, a sharded PRM checkpoint and a 1.5B-style trunk + reward_head.pt.
 * Tolerance: 1e-5 absolute on every reward (f32 weights; HF runs in float32). */
#include "base/json.h"
#include "harness.h"
#include "tiny_models.h"

#define REF "tests/ref/score"

static const char *prm_dir, *scalar_dir;

/* Builds the two model directories under the scratch dir (once). */
static int setup_models(void) { return th_tiny_prm_dirs(&prm_dir, &scalar_dir); }

static int run(const char *args, char *out_path, size_t cap) {
    char cmd[4096];
    snprintf(out_path, cap, "%s/out_%d.jsonl", th_tmpdir(), rand());
    snprintf(cmd, sizeof cmd, "%s score --quiet %s -o %s 2>%s.err", th_bin(), args, out_path, out_path);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static json_t *load_lines(const char *path, size_t *n) {
    json_t *arr = json_array();
    fp_jsonl_reader *r;
    if (fp_jsonl_open(&r, path)) return arr;
    const char *line;
    size_t len;
    while (fp_jsonl_next_line(r, &line, &len) == FP_OK) json_array_append_new(arr, json_loads(line, 0, NULL));
    fp_jsonl_close(r);
    *n = json_array_size(arr);
    return arr;
}

static int test_prm_matches_hf(void) {
    int s = setup_models();
    if (s) return s;
    char args[2048], out[1024];
    snprintf(args, sizeof args, "--model %s --step-token-id 151651 " REF "/records.jsonl", prm_dir);
    CHECK(run(args, out, sizeof out) == 0);
    size_t n = 0, ne = 0;
    json_t *got = load_lines(out, &n), *exp = load_lines(REF "/expected.jsonl", &ne);
    CHECK(n == ne && n == 7);
    for (size_t i = 0; i < n && i < ne; i++) {
        json_t *g = json_array_get(got, i), *e = json_array_get(exp, i);
        json_t *gs = json_object_get(g, "step_rewards"), *es = json_object_get(e, "step_rewards");
        CHECK_MSG(json_array_size(gs) == json_array_size(es), "record %zu: %zu vs %zu steps", i, json_array_size(gs), json_array_size(es));
        double sum = 0;
        for (size_t k = 0; k < json_array_size(gs) && k < json_array_size(es); k++) {
            CHECK_NEAR(json_real_value(json_array_get(gs, k)), json_real_value(json_array_get(es, k)), 1e-5);
            sum += json_real_value(json_array_get(es, k));
        }
        double fin = json_real_value(json_object_get(e, "final_reward"));
        CHECK_NEAR(json_real_value(json_object_get(g, "final_reward")), fin, 1e-5);
        /* default score: mean of the steps + 1.0 * final */
        CHECK_NEAR(json_real_value(json_object_get(g, "score")), sum / (double)json_array_size(es) + fin, 2e-5);
        CHECK(json_integer_value(json_object_get(g, "n_tokens")) == json_integer_value(json_object_get(e, "n_tokens")));
    }
    /* the input fields come through untouched */
    CHECK(json_object_get(json_array_get(got, 4), "labels") != NULL);
    json_decref(got);
    json_decref(exp);
    return 0;
}

static int test_scalar_head_matches_hf(void) {
    int s = setup_models();
    if (s) return s;
    char args[2048], out[1024];
    snprintf(args, sizeof args, "--model %s " REF "/records.jsonl", scalar_dir);
    CHECK(run(args, out, sizeof out) == 0);
    size_t n = 0, ne = 0;
    json_t *got = load_lines(out, &n), *exp = load_lines(REF "/expected.jsonl", &ne);
    CHECK(n == ne && n == 7);
    for (size_t i = 0; i < n && i < ne; i++) {
        json_t *g = json_array_get(got, i), *e = json_array_get(exp, i);
        CHECK_NEAR(json_real_value(json_object_get(g, "final_reward")), json_real_value(json_object_get(e, "scalar_reward")), 1e-5);
        CHECK(json_array_size(json_object_get(g, "step_rewards")) == 0);
        CHECK(json_integer_value(json_object_get(g, "n_tokens")) == json_integer_value(json_object_get(e, "n_plain_tokens")));
    }
    json_decref(got);
    json_decref(exp);
    return 0;
}

static int test_options_and_errors(void) {
    int s = setup_models();
    if (s) return s;
    char args[2048], out[1024], in[1024];
    /* aggregate min, alpha 0.5, final = last step */
    snprintf(args, sizeof args, "--model %s --step-token-id 151651 --aggregate min --alpha 0.5 --final last-step " REF "/records.jsonl", prm_dir);
    CHECK(run(args, out, sizeof out) == 0);
    size_t n = 0, ne = 0;
    json_t *got = load_lines(out, &n), *exp = load_lines(REF "/expected.jsonl", &ne);
    for (size_t i = 0; i < n && i < ne; i++) {
        json_t *es = json_object_get(json_array_get(exp, i), "step_rewards");
        double mn = 1e9;
        for (size_t k = 0; k < json_array_size(es); k++) mn = fmin(mn, json_real_value(json_array_get(es, k)));
        double last = json_real_value(json_array_get(es, json_array_size(es) - 1));
        CHECK_NEAR(json_real_value(json_object_get(json_array_get(got, i), "score")), mn + 0.5 * last, 2e-5);
    }
    json_decref(got);
    json_decref(exp);

    /* the stock tokenizer has no <extra_0>: without --step-token-id that is a clear error */
    snprintf(args, sizeof args, "--model %s " REF "/records.jsonl", prm_dir);
    CHECK(run(args, out, sizeof out) == 1);

    /* a bad record: exit 1 naming file:line, earlier records kept in the partial output */
    snprintf(in, sizeof in, "%s/bad.jsonl", th_tmpdir());
    FILE *f = fopen(in, "w");
    fprintf(f, "{\"question\":\"q\",\"steps\":[\"a\"]}\n{\"question\":\"q\"}\n{not json\n{\"question\":\"q\",\"steps\":[\"b\"]}\n");
    fclose(f);
    snprintf(args, sizeof args, "--model %s --step-token-id 151651 %s", prm_dir, in);
    CHECK(run(args, out, sizeof out) == 1);
    char errp[1100], *err;
    size_t elen;
    snprintf(errp, sizeof errp, "%s.err", out);
    if (fp_read_file(errp, &err, &elen) == FP_OK) {
        CHECK_MSG(strstr(err, "bad.jsonl:2:") && strstr(err, "missing steps"), "stderr: %s", err);
        free(err);
    }
    CHECK(access(out, F_OK) != 0); /* no finished output claimed */
    /* --skip-bad: one output line per input record, errors in an "error" field */
    char args2[2100];
    snprintf(args2, sizeof args2, "%s --skip-bad", args);
    CHECK(run(args2, out, sizeof out) == 0);
    got = load_lines(out, &n);
    CHECK(n == 4);
    CHECK(json_object_get(json_array_get(got, 0), "score") && !json_object_get(json_array_get(got, 0), "error"));
    CHECK(json_object_get(json_array_get(got, 1), "error"));
    CHECK(json_integer_value(json_object_get(json_array_get(got, 2), "line")) == 3);
    CHECK(json_object_get(json_array_get(got, 3), "score"));
    json_decref(got);
    /* --max-tokens */
    snprintf(args, sizeof args, "--model %s --step-token-id 151651 --max-tokens 50 " REF "/records.jsonl", prm_dir);
    CHECK(run(args, out, sizeof out) == 1);
    /* usage errors */
    CHECK(run("--aggregate median --model x", out, sizeof out) == 2);
    CHECK(run(REF "/records.jsonl", out, sizeof out) == 2);
    return 0;
}

/* A run killed mid-way resumes without rescoring or duplicating records. */
static int test_resume(void) {
    int s = setup_models();
    if (s) return s;
    char args[2048], full[1024], part[1024];
    snprintf(args, sizeof args, "--model %s --step-token-id 151651 " REF "/records.jsonl", prm_dir);
    CHECK(run(args, full, sizeof full) == 0);
    char *all;
    size_t len;
    CHECK_OK(fp_read_file(full, &all, &len));
    /* fake an interrupted run: the first 3 lines plus a torn fourth in <out>.partial */
    snprintf(part, sizeof part, "%s/resumed.jsonl", th_tmpdir());
    char pp[1100];
    snprintf(pp, sizeof pp, "%s.partial", part);
    size_t cut = 0;
    for (int nl = 0; cut < len && nl < 3; cut++) if (all[cut] == '\n') nl++;
    FILE *f = fopen(pp, "w");
    fwrite(all, 1, cut + 10, f);
    fclose(f);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s score --quiet %s --resume -o %s", th_bin(), args, part);
    CHECK(system(cmd) == 0);
    char *res;
    size_t rlen;
    CHECK_OK(fp_read_file(part, &res, &rlen));
    CHECK(rlen == len && !memcmp(res, all, len));
    free(res);
    free(all);
    return 0;
}

/* bestofn --model and select --model use exactly the scores `fluxprm score` gives the same texts. */
static int test_model_sources(void) {
    int s = setup_models();
    if (s) return s;
    char in[1024], cand[1024], cmd[8192], out[1024], sel_model[1024], sel_field[1024], scored[1024];
    snprintf(in, sizeof in, "%s/bon.jsonl", th_tmpdir());
    snprintf(cand, sizeof cand, "%s/cand.jsonl", th_tmpdir());
    const char *resp[3] = {"2+2=4\\n\\nThe answer is 4", "2+2=5\\n\\nThe answer is 5", "Four.\\n\\n\\\\boxed{4}"};
    FILE *f = fopen(in, "w"), *g = fopen(cand, "w");
    fprintf(f, "{\"question\":\"What is 2+2?\",\"responses\":[\"%s\",\"%s\",\"%s\"],\"gold\":\"4\"}\n", resp[0], resp[1], resp[2]);
    for (int i = 0; i < 3; i++) fprintf(g, "{\"question\":\"What is 2+2?\",\"response\":\"%s\"}\n", resp[i]);
    fclose(f);
    fclose(g);
    char args[2048];
    snprintf(args, sizeof args, "--model %s --step-token-id 151651 %s", prm_dir, cand);
    CHECK(run(args, scored, sizeof scored) == 0);
    snprintf(out, sizeof out, "%s/bon_out.jsonl", th_tmpdir());
    snprintf(cmd, sizeof cmd, "%s bestofn --quiet --model %s --step-token-id 151651 -o %s %s", th_bin(), prm_dir, out, in);
    CHECK(system(cmd) == 0);
    size_t n = 0, ns = 0;
    json_t *got = load_lines(out, &n), *exp = load_lines(scored, &ns);
    CHECK(n == 1 && ns == 3);
    json_t *scores = json_object_get(json_object_get(json_array_get(got, 0), "bestofn"), "scores");
    for (size_t i = 0; i < 3 && i < ns; i++)
        CHECK_NEAR(json_real_value(json_array_get(scores, i)), json_real_value(json_object_get(json_array_get(exp, i), "score")), 1e-6);
    json_decref(got);
    json_decref(exp);
    /* select by model == select by the score field of `fluxprm score` output */
    snprintf(args, sizeof args, "--model %s --step-token-id 151651 " REF "/records.jsonl", prm_dir);
    CHECK(run(args, scored, sizeof scored) == 0);
    snprintf(sel_model, sizeof sel_model, "%s/sel_model.jsonl", th_tmpdir());
    snprintf(sel_field, sizeof sel_field, "%s/sel_field.jsonl", th_tmpdir());
    snprintf(cmd, sizeof cmd, "%s select --quiet --model %s --step-token-id 151651 --top-k 3 -o %s " REF "/records.jsonl", th_bin(), prm_dir, sel_model);
    CHECK(system(cmd) == 0);
    snprintf(cmd, sizeof cmd, "%s select --quiet --scores-field score --top-k 3 -o %s %s", th_bin(), sel_field, scored);
    CHECK(system(cmd) == 0);
    got = load_lines(sel_model, &n);
    exp = load_lines(sel_field, &ns);
    CHECK(n == 3 && ns == 3);
    for (size_t i = 0; i < n && i < ns; i++) { /* same records kept, in the same order */
        json_t *e = json_deep_copy(json_array_get(exp, i));
        const char *added[] = {"step_rewards", "final_reward", "score", "n_tokens", "n_thinking_steps"};
        for (int k = 0; k < 5; k++) json_object_del(e, added[k]);
        CHECK_MSG(json_equal(json_array_get(got, i), e), "kept record %zu differs", i);
        json_decref(e);
    }
    json_decref(got);
    json_decref(exp);
    return 0;
}

/* `fluxprm convert` to GGUF, then score from the GGUF alone (weights, tokenizer and chat template from its
 * metadata): the output is identical to scoring the HF directory. */
static int test_gguf_identical(void) {
    int s = setup_models();
    if (s) return s;
    char gguf[1024], cmd[4096], args[2048], a[1024], b[1024];
    snprintf(gguf, sizeof gguf, "%s/prm.gguf", th_tmpdir());
    snprintf(cmd, sizeof cmd, "%s convert %s %s --type f32 --quiet", th_bin(), prm_dir, gguf);
    CHECK(system(cmd) == 0);
    snprintf(args, sizeof args, "--model %s --step-token-id 151651 " REF "/records.jsonl", prm_dir);
    CHECK(run(args, a, sizeof a) == 0);
    snprintf(args, sizeof args, "--model %s --step-token-id 151651 " REF "/records.jsonl", gguf);
    CHECK(run(args, b, sizeof b) == 0);
    char *da, *db;
    size_t la, lb;
    CHECK_OK(fp_read_file(a, &da, &la));
    CHECK_OK(fp_read_file(b, &db, &lb));
    CHECK(la == lb && !memcmp(da, db, la));
    free(da);
    free(db);
    return 0;
}

int main(void) {
    RUN(test_gguf_identical);
    RUN(test_model_sources);
    RUN(test_prm_matches_hf);
    RUN(test_scalar_head_matches_hf);
    RUN(test_options_and_errors);
    RUN(test_resume);
    return th_finish();
}
