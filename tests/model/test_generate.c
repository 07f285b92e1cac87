/* KV-cache forward and generation against HF transformers (tests/ref/generate/make_fixture.py):
 *  - greedy decoding of 64 tokens equals HF generate(do_sample=False) on an untied Qwen2 and a tied Qwen3
 *    (f32, vocab 1024, ids fed directly), and the logits of the first 3 decode steps agree within 1e-4;
 *  - the cached forward (any chunking, truncate + copy of a shared prefix, internal 2048-token chunks) equals
 *    the full prefill within f32 rounding;
 *  - a batched decode step over several caches equals separate one-token steps;
 *  - eos ids, seeded sampling (the N samples of a prompt decode in lockstep), top-k / top-p limits;
 *  - `fluxprm generate` on chat and raw-prompt records with the real Qwen2 tokenizer and the Qwen2.5 chat
 *    template equals HF apply_chat_template + generate (greedy, 24 tokens), including stop strings; records
 *    decoded together (--batch) give the same output as one at a time. */
#include "apps/generate.h"
#include "base/json.h"
#include "harness.h"
#include "json_files.h"
#include "tiny_models.h"
#include "model/model.h"
#include <limits.h>
#include <sys/wait.h>

#define REF "tests/ref/generate"

static int *ints(json_t *a, int *n) {
    *n = (int)json_array_size(a);
    int *v = malloc(sizeof(int) * (size_t)(*n ? *n : 1));
    for (int i = 0; i < *n; i++) v[i] = (int)json_integer_value(json_array_get(a, (size_t)i));
    return v;
}

static void greedy_fixture(const char *name) {
    char dir[256], p[300];
    snprintf(dir, sizeof dir, REF "/%s", name);
    snprintf(p, sizeof p, "%s/expected.json", dir);
    json_t *ex = json_load_file(p, 0, NULL);
    CHECK(ex != NULL);
    fp_model *m = NULL;
    CHECK_OK(fp_model_load(&m, dir));
    if (!ex || !m) { json_decref(ex); fp_model_free(m); return; }
    int V = m->cfg.vocab_size;
    fp_sample_opts o;
    fp_sample_opts_default(&o);
    o.temperature = 0;
    o.max_new_tokens = 64;
    json_t *cases = json_object_get(ex, "cases");
    for (size_t ci = 0; ci < json_array_size(cases); ci++) {
        json_t *c = json_array_get(cases, ci);
        int T, nt;
        int *prompt = ints(json_object_get(c, "prompt"), &T), *want = ints(json_object_get(c, "tokens"), &nt);
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)T);
        for (int i = 0; i < T; i++) ids[i] = prompt[i];
        float *lg = malloc(sizeof(float) * 3 * (size_t)V);
        fp_completion out;
        CHECK_OK(fp_generate_tokens(m, NULL, NULL, 0, ids, T, &o, 0, 1, &out, lg, 3));
        CHECK_MSG(out.n_tokens == (size_t)nt, "%s case %zu: %zu tokens, HF %d", name, ci, out.n_tokens, nt);
        int first_bad = -1;
        for (int i = 0; i < nt && i < (int)out.n_tokens; i++)
            if (out.tokens[i] != want[i] && first_bad < 0) first_bad = i;
        CHECK_MSG(first_bad < 0, "%s case %zu: token %d is %d, HF %d", name, ci, first_bad,
                  first_bad >= 0 ? out.tokens[first_bad] : 0, first_bad >= 0 ? want[first_bad] : 0);
        CHECK(out.finish == FP_FINISH_LENGTH && out.prompt_tokens == T && out.text && !*out.text);
        double md = 0;
        json_t *el = json_object_get(c, "logits");
        for (int s = 0; s < 3; s++)
            for (int j = 0; j < V; j++)
                md = fmax(md, fabs(lg[(size_t)s * V + j] - json_number_value(json_array_get(json_array_get(el, s), j))));
        CHECK_MSG(md <= 1e-4, "%s case %zu: first 3 decode-step logits differ from HF by %g", name, ci, md);
        printf("  %s prompt %d: 64 greedy tokens equal HF; logits max diff %.2g\n", name, T, md);

        /* eos: stop at the first occurrence of HF's 10th token; that token is not included */
        int32_t eos = want[9];
        int k = 0;
        while (want[k] != eos) k++;
        fp_completion e;
        CHECK_OK(fp_generate_tokens(m, NULL, &eos, 1, ids, T, &o, 0, 1, &e, NULL, 0));
        CHECK(e.n_tokens == (size_t)k && e.finish == FP_FINISH_STOP);
        o.ignore_eos = 1;
        fp_completion_free(&e);
        CHECK_OK(fp_generate_tokens(m, NULL, &eos, 1, ids, T, &o, 0, 1, &e, NULL, 0));
        CHECK(e.n_tokens == 64 && e.finish == FP_FINISH_LENGTH);
        o.ignore_eos = 0;
        fp_completion_free(&e);
        fp_completion_free(&out);
        free(prompt); free(want); free(ids); free(lg);
    }
    json_decref(ex);
    fp_model_free(m);
}

/* Two prompts of different lengths decoded together with their own options: each equals HF's greedy tokens. */
static int test_batch_prompts(void) {
    json_t *ex = json_load_file(REF "/qwen2_gen/expected.json", 0, NULL);
    fp_model *m = NULL;
    CHECK_OK(fp_model_load(&m, REF "/qwen2_gen"));
    CHECK(ex != NULL);
    if (!m || !ex) { fp_model_free(m); json_decref(ex); return 0; }
    json_t *cases = json_object_get(ex, "cases");
    fp_sample_opts o[2];
    fp_gen_prompt pr[2];
    int *want[2], nw[2], *prompt[2];
    int32_t *ids[2];
    for (int i = 0; i < 2; i++) {
        fp_sample_opts_default(&o[i]);
        o[i].temperature = 0;
        o[i].max_new_tokens = i ? 20 : 64;
        int T;
        prompt[i] = ints(json_object_get(json_array_get(cases, (size_t)i), "prompt"), &T);
        want[i] = ints(json_object_get(json_array_get(cases, (size_t)i), "tokens"), &nw[i]);
        ids[i] = malloc(sizeof(int32_t) * (size_t)T);
        for (int t = 0; t < T; t++) ids[i][t] = prompt[i][t];
        pr[i] = (fp_gen_prompt){ids[i], T, (uint64_t)i, &o[i]};
    }
    fp_completion out[4];
    CHECK_OK(fp_generate_batch(m, NULL, NULL, 0, pr, 2, NULL, 2, out)); /* 2 samples each: greedy, so equal */
    for (int k = 0; k < 4; k++) {
        int i = k / 2;
        CHECK(out[k].n_tokens == (size_t)o[i].max_new_tokens && out[k].finish == FP_FINISH_LENGTH);
        for (size_t t = 0; t < out[k].n_tokens && t < (size_t)nw[i]; t++)
            CHECK_MSG(out[k].tokens[t] == want[i][t], "prompt %d sample %d token %zu", i, k % 2, t);
        fp_completion_free(&out[k]);
    }
    for (int i = 0; i < 2; i++) { free(want[i]); free(prompt[i]); free(ids[i]); }
    json_decref(ex);
    fp_model_free(m);
    return 0;
}

static int test_greedy_qwen2(void) { greedy_fixture("qwen2_gen"); return 0; }
static int test_greedy_qwen3(void) { greedy_fixture("qwen3_gen"); return 0; }

static double maxdiff(const float *a, const float *b, size_t n, double *maxref) {
    double md = 0, mr = 0;
    for (size_t i = 0; i < n; i++) md = fmax(md, fabs(a[i] - b[i])), mr = fmax(mr, fabs(b[i]));
    if (maxref) *maxref = mr;
    return md;
}

/* The cached forward equals the full prefill: arbitrary chunks, a forked/truncated shared prefix, and the
 * internal chunking of long appends. */
static int test_cached_equals_full(void) {
    fp_model *m = NULL;
    CHECK_OK(fp_model_load(&m, REF "/qwen2_gen"));
    if (!m) return 0;
    const int H = m->cfg.hidden_size, T = 2100;
    int32_t *ids = malloc(sizeof(int32_t) * T);
    srand(5);
    for (int t = 0; t < T; t++) ids[t] = rand() % m->cfg.vocab_size;
    const int T1 = 150;
    float *full = malloc(sizeof(float) * (size_t)T1 * H), *got = malloc(sizeof(float) * (size_t)T1 * H);
    CHECK_OK(fp_model_hidden_states(m, ids, T1, NULL, 0, full));
    /* chunks of 1, 6, 57, 86 tokens, all rows read */
    fp_kv_cache *c = fp_kv_cache_new(m, T1);
    CHECK(c != NULL);
    int cuts[] = {0, 1, 7, 64, T1}, rows[T1];
    for (int i = 0; i < T1; i++) rows[i] = i;
    for (int k = 0; k < 4; k++)
        CHECK_OK(fp_model_forward_cached(m, c, ids + cuts[k], cuts[k + 1] - cuts[k], rows, cuts[k + 1] - cuts[k], got + (size_t)cuts[k] * H, NULL));
    double mr, md = maxdiff(got, full, (size_t)T1 * H, &mr);
    CHECK_MSG(md <= 1e-5 * mr, "chunked cached forward differs by %g (max |ref| %g)", md, mr);
    CHECK(fp_kv_cache_len(c) == T1);
    /* over capacity: FP_ERANGE, length unchanged */
    CHECK(fp_model_forward_cached(m, c, ids, 1, NULL, 0, NULL, NULL) == FP_ERANGE && fp_kv_cache_len(c) == T1);
    /* shared prefix: truncate to 100, fork, append a different suffix; compare with a full forward */
    CHECK_OK(fp_kv_cache_truncate(c, 100));
    fp_kv_cache *f = fp_kv_cache_fork(c);
    CHECK(f != NULL && fp_kv_cache_len(f) == 100);
    int32_t alt[T1];
    memcpy(alt, ids, sizeof(int32_t) * 100);
    for (int t = 100; t < T1; t++) alt[t] = (ids[t] + 17) % m->cfg.vocab_size;
    float *full2 = malloc(sizeof(float) * (size_t)T1 * H);
    CHECK_OK(fp_model_hidden_states(m, alt, T1, NULL, 0, full2));
    int last[] = {49, 0, 20};
    float h3[3 * 64];
    CHECK_OK(fp_model_forward_cached(m, f, alt + 100, 50, last, 3, h3, NULL));
    for (int i = 0; i < 3; i++) {
        md = maxdiff(h3 + (size_t)i * H, full2 + (size_t)(100 + last[i]) * H, (size_t)H, &mr);
        CHECK_MSG(md <= 1e-5 * mr, "forked prefix row %d differs by %g", last[i], md);
    }
    /* requested rows may repeat, more of them than new tokens: 7 reads of 5 new tokens (once overran [T,.]) */
    fp_kv_cache *rp = fp_kv_cache_new(m, 105);
    CHECK(rp != NULL);
    CHECK_OK(fp_model_forward_cached(m, rp, alt, 100, NULL, 0, NULL, NULL));
    int rep[7] = {4, 0, 4, 2, 1, 3, 0};
    float h7[7 * 64];
    CHECK(H <= 64);
    CHECK_OK(fp_model_forward_cached(m, rp, alt + 100, 5, rep, 7, h7, NULL));
    for (int i = 0; i < 7; i++) {
        md = maxdiff(h7 + (size_t)i * H, full2 + (size_t)(100 + rep[i]) * H, (size_t)H, &mr);
        CHECK_MSG(md <= 1e-5 * mr, "repeated row %d (read %d) differs by %g", rep[i], i, md);
    }
    fp_kv_cache_free(rp);
    /* the original cache still holds the first sequence's prefix: append its own suffix */
    CHECK_OK(fp_model_forward_cached(m, c, ids + 100, 50, last, 1, h3, NULL));
    md = maxdiff(h3, full + (size_t)149 * H, (size_t)H, &mr);
    CHECK_MSG(md <= 1e-5 * mr, "truncated cache differs by %g", md);
    /* copy into an existing cache */
    fp_kv_cache *d = fp_kv_cache_new(m, T1);
    CHECK_OK(fp_kv_cache_truncate(f, 100));
    CHECK_OK(fp_kv_cache_copy(d, f));
    CHECK(fp_kv_cache_len(d) == 100);
    fp_kv_cache_free(d);
    fp_kv_cache_free(f);
    fp_kv_cache_free(c);
    /* logits: LM head of the hidden states */
    /* a long append runs in internal chunks: rows in several chunks */
    int lr[] = {T - 1, 5, 2047, 2048};
    int lpos[] = {T - 1, 5, 2047, 2048};
    float *hl = malloc(sizeof(float) * 4 * (size_t)H), *hr = malloc(sizeof(float) * 4 * (size_t)H);
    CHECK_OK(fp_model_hidden_states(m, ids, T, lpos, 4, hr));
    c = fp_kv_cache_new(m, T);
    CHECK_OK(fp_model_forward_cached(m, c, ids, T, lr, 4, hl, NULL));
    md = maxdiff(hl, hr, 4 * (size_t)H, &mr);
    CHECK_MSG(md <= 1e-4 * mr, "long cached prefill differs by %g (max |ref| %g)", md, mr);
    /* errors */
    int bad = T;
    CHECK(fp_model_forward_cached(m, c, ids, 0, NULL, 0, NULL, NULL) == FP_EINVAL);
    fp_kv_cache_free(c);
    c = fp_kv_cache_new(m, 10);
    CHECK(fp_model_forward_cached(m, c, ids, 2, &bad, 1, hl, NULL) == FP_EINVAL);
    int32_t oob = m->cfg.vocab_size;
    CHECK(fp_model_forward_cached(m, c, &oob, 1, NULL, 0, NULL, NULL) == FP_EINVAL && fp_kv_cache_len(c) == 0);
    CHECK(fp_kv_cache_truncate(c, 1) == FP_EINVAL);
    CHECK(fp_kv_cache_new(m, 0) == NULL);
    fp_kv_cache_free(c);
    free(hl); free(hr); free(ids); free(full); free(full2); free(got);
    fp_model_free(m);
    return 0;
}

/* Branches (fp_model_forward_branches): several continuations of one cached prefix in one pass equal full
 * prefills of prefix + that continuation (fp_model_hidden_states), rows in any order; the cache keeps its length. */
static int test_branches(void) {
    fp_model *m = NULL;
    CHECK_OK(fp_model_load(&m, REF "/qwen2_gen"));
    if (!m) return 0;
    const int H = m->cfg.hidden_size, P = 70, NB = 4;
    const int len[4] = {33, 1, 64, 5}, off[5] = {0, 33, 34, 98, 103};
    int32_t pre[70], br[103], full_ids[70 + 64];
    srand(11);
    for (int t = 0; t < P; t++) pre[t] = rand() % m->cfg.vocab_size;
    for (int t = 0; t < off[NB]; t++) br[t] = rand() % m->cfg.vocab_size;
    /* read-out rows: unsorted, every branch, first and last rows, a repeat */
    int rows[] = {102, 0, 33, 97, 32, 34, 40, 98, 0};
    const int nrows = (int)(sizeof rows / sizeof rows[0]);
    float *got = malloc(sizeof(float) * (size_t)nrows * H), *ref = malloc(sizeof(float) * (size_t)H);
    fp_kv_cache *c = fp_kv_cache_new(m, P + 64);
    CHECK(c != NULL && got && ref);
    CHECK_OK(fp_model_forward_cached(m, c, pre, P, NULL, 0, NULL, NULL));
    for (int rep = 0; rep < 2; rep++) { /* twice: the first pass leaves the cache as it found it */
        CHECK_OK(fp_model_forward_branches(m, c, br, off, NB, rows, nrows, got));
        CHECK(fp_kv_cache_len(c) == P);
        for (int i = 0; i < nrows; i++) {
            int g = 0;
            while (rows[i] >= off[g + 1]) g++;
            memcpy(full_ids, pre, sizeof(int32_t) * P);
            memcpy(full_ids + P, br + off[g], sizeof(int32_t) * (size_t)len[g]);
            int at = P + rows[i] - off[g];
            CHECK_OK(fp_model_hidden_states(m, full_ids, P + len[g], &at, 1, ref));
            double mr, md = maxdiff(got + (size_t)i * H, ref, (size_t)H, &mr);
            CHECK_MSG(md <= 1e-5 * mr, "branch %d row %d differs by %g (max |ref| %g)", g, rows[i], md, mr);
        }
    }
    /* one branch = an append that is forgotten */
    int one_off[2] = {0, 5}, r4 = 4;
    CHECK_OK(fp_model_forward_branches(m, c, br + 98, one_off, 1, &r4, 1, got));
    CHECK(fp_kv_cache_len(c) == P);
    memcpy(full_ids, pre, sizeof(int32_t) * P);
    memcpy(full_ids + P, br + 98, sizeof(int32_t) * 5);
    int at = P + 4;
    CHECK_OK(fp_model_hidden_states(m, full_ids, P + 5, &at, 1, ref));
    double mr, md = maxdiff(got, ref, (size_t)H, &mr);
    CHECK_MSG(md <= 1e-5 * mr, "single branch differs by %g", md);
    /* errors: empty branch, row out of range, too long for the cache; the cache is untouched */
    int bad_off[3] = {0, 5, 5}, big_off[2] = {0, 65}, bad_row = 103;
    CHECK(fp_model_forward_branches(m, c, br, bad_off, 2, NULL, 0, NULL) == FP_EINVAL);
    CHECK(fp_model_forward_branches(m, c, br, off, NB, &bad_row, 1, got) == FP_EINVAL);
    CHECK(fp_model_forward_branches(m, c, br, big_off, 1, NULL, 0, NULL) == FP_ERANGE);
    CHECK(fp_kv_cache_len(c) == P);
    fp_kv_cache_free(c);
    free(got); free(ref);
    fp_model_free(m);
    return 0;
}

/* One batched decode step over several caches equals separate one-token cached forwards. */
static int test_decode_batch(void) {
    fp_model *m = NULL;
    CHECK_OK(fp_model_load(&m, REF "/qwen3_gen"));
    if (!m) return 0;
    const int V = m->cfg.vocab_size;
    int32_t a[40], b[40];
    for (int t = 0; t < 40; t++) a[t] = (t * 37 + 11) % V, b[t] = (t * 101 + 3) % V;
    fp_kv_cache *c[3] = {fp_kv_cache_new(m, 64), fp_kv_cache_new(m, 64), NULL}, *r[3];
    CHECK_OK(fp_model_forward_cached(m, c[0], a, 10, NULL, 0, NULL, NULL));
    CHECK_OK(fp_model_forward_cached(m, c[1], b, 33, NULL, 0, NULL, NULL));
    c[2] = fp_kv_cache_fork(c[0]);
    for (int s = 0; s < 3; s++) r[s] = fp_kv_cache_fork(c[s]);
    int32_t ids[3] = {5, 6, 7};
    float *got = malloc(sizeof(float) * 3 * (size_t)V), *want = malloc(sizeof(float) * 3 * (size_t)V);
    for (int step = 0; step < 3; step++) {
        CHECK_OK(fp_model_decode_batch(m, c, ids, 3, NULL, got));
        int row = 0;
        for (int s = 0; s < 3; s++) CHECK_OK(fp_model_forward_cached(m, r[s], &ids[s], 1, &row, 1, NULL, want + (size_t)s * V));
        double mr, md = maxdiff(got, want, 3 * (size_t)V, &mr);
        CHECK_MSG(md <= 1e-5 * mr, "step %d: batched decode differs by %g (max |ref| %g)", step, md, mr);
        for (int s = 0; s < 3; s++) ids[s] = (ids[s] * 7 + step) % V;
    }
    CHECK(fp_kv_cache_len(c[0]) == 13 && fp_kv_cache_len(c[1]) == 36 && fp_kv_cache_len(c[2]) == 13);
    fp_kv_cache *dup[2] = {c[0], c[0]};
    CHECK(fp_model_decode_batch(m, dup, ids, 2, NULL, got) == FP_EINVAL);
    fp_kv_cache *full = fp_kv_cache_new(m, 1);
    CHECK_OK(fp_model_forward_cached(m, full, a, 1, NULL, 0, NULL, NULL));
    fp_kv_cache *mix[2] = {c[0], full};
    CHECK(fp_model_decode_batch(m, mix, ids, 2, NULL, got) == FP_ERANGE && fp_kv_cache_len(c[0]) == 13);
    fp_kv_cache_free(full);
    for (int s = 0; s < 3; s++) { fp_kv_cache_free(c[s]); fp_kv_cache_free(r[s]); }
    free(got); free(want);
    fp_model_free(m);
    return 0;
}

static int same_tokens(const fp_completion *a, const fp_completion *b) {
    return a->n_tokens == b->n_tokens && !memcmp(a->tokens, b->tokens, sizeof(int32_t) * a->n_tokens);
}

static int test_sampling(void) {
    fp_model *m = NULL;
    CHECK_OK(fp_model_load(&m, REF "/qwen2_gen"));
    if (!m) return 0;
    int32_t prompt[] = {1, 2, 3, 4, 5};
    fp_sample_opts o;
    fp_sample_opts_default(&o);
    o.max_new_tokens = 16;
    fp_completion g, a[3], b, k1, p0;
    o.temperature = 0;
    CHECK_OK(fp_generate_tokens(m, NULL, NULL, 0, prompt, 5, &o, 0, 1, &g, NULL, 0));
    o.temperature = 1.5;
    o.seed = 42;
    CHECK_OK(fp_generate_tokens(m, NULL, NULL, 0, prompt, 5, &o, 7, 3, a, NULL, 0));
    CHECK_OK(fp_generate_tokens(m, NULL, NULL, 0, prompt, 5, &o, 7, 1, &b, NULL, 0));
    CHECK(same_tokens(&a[0], &b));                             /* sample 0 of record 7 is reproducible */
    CHECK(!same_tokens(&a[0], &a[1]) && !same_tokens(&a[1], &a[2])); /* samples differ (16 tokens at t=1.5) */
    CHECK(!same_tokens(&a[0], &g));
    o.top_k = 1;
    CHECK_OK(fp_generate_tokens(m, NULL, NULL, 0, prompt, 5, &o, 7, 1, &k1, NULL, 0));
    CHECK(same_tokens(&k1, &g)); /* top-k 1 is greedy */
    o.top_k = 0;
    o.top_p = 1e-9;
    CHECK_OK(fp_generate_tokens(m, NULL, NULL, 0, prompt, 5, &o, 7, 1, &p0, NULL, 0));
    CHECK(same_tokens(&p0, &g)); /* top-p -> 0 is greedy */
    o.top_p = 0;
    fp_completion x;
    CHECK(fp_generate_tokens(m, NULL, NULL, 0, prompt, 5, &o, 7, 1, &x, NULL, 0) == FP_EINVAL);
    for (int i = 0; i < 3; i++) fp_completion_free(&a[i]);
    fp_completion_free(&g); fp_completion_free(&b); fp_completion_free(&k1); fp_completion_free(&p0);
    fp_model_free(m);
    return 0;
}

/* ---- CLI with the real tokenizer and chat template */

static int run_gen(const char *args, const char *out) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s generate --quiet --threads 1 %s -o %s 2>%s.err", th_bin(), args, out, out);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int test_cli_chat(void) {
    char tok[PATH_MAX], *tpl_text;
    size_t tpl_len;
    int s = th_tiny_qwen_files(tok, &tpl_text, &tpl_len);
    if (s) return s;
    char dir[512], out[1024], args[2048];
    snprintf(dir, sizeof dir, "%s/lm", th_tmpdir());
    CHECK(th_tiny_lm_dir(dir, tok) == 0);
    CHECK(th_tiny_chat_template(dir, tpl_text, tpl_len) == 0);
    free(tpl_text);

    json_t *exp = th_load_lines(REF "/chat_expected.jsonl"), *recs = th_load_lines(REF "/chat_records.jsonl");
    size_t n = json_array_size(exp);
    CHECK(n == 4 && json_array_size(recs) == n);
    snprintf(out, sizeof out, "%s/greedy.jsonl", th_tmpdir());
    snprintf(args, sizeof args, "--model %s --temperature 0 --max-new-tokens 24 " REF "/chat_records.jsonl", dir);
    CHECK(run_gen(args, out) == 0);
    json_t *got = th_load_lines(out);
    CHECK(json_array_size(got) == n);
    for (size_t i = 0; i < n && i < json_array_size(got); i++) {
        json_t *g = json_array_get(got, i), *e = json_array_get(exp, i);
        CHECK_MSG(json_equal(json_object_get(g, "tokens"), json_object_get(e, "tokens")), "record %zu: tokens differ from HF", i);
        CHECK_MSG(json_equal(json_object_get(g, "completion"), json_object_get(e, "completion")), "record %zu: completion differs from HF", i);
        CHECK(json_integer_value(json_object_get(g, "prompt_tokens")) == (json_int_t)json_array_size(json_object_get(e, "prompt_ids")));
        CHECK(!strcmp(json_string_value(json_object_get(g, "finish_reason")), "length"));
        CHECK(json_object_get(g, "messages") || json_object_get(g, "prompt")); /* input fields kept */
    }
    json_decref(got);

    /* stop strings (a per-record "stop" field): the text before the stop, tokens up to the completing one */
    char in[1024];
    snprintf(in, sizeof in, "%s/stop_in.jsonl", th_tmpdir());
    FILE *f = fopen(in, "w");
    for (size_t i = 0; i < n; i++) {
        json_t *r = json_deep_copy(json_array_get(recs, i));
        json_object_set(r, "stop", json_object_get(json_array_get(exp, i), "stop"));
        char *s = json_dumps(r, JSON_COMPACT);
        fprintf(f, "%s\n", s);
        free(s);
        json_decref(r);
    }
    fclose(f);
    snprintf(out, sizeof out, "%s/stop.jsonl", th_tmpdir());
    snprintf(args, sizeof args, "--model %s --temperature 0 --max-new-tokens 24 %s", dir, in);
    CHECK(run_gen(args, out) == 0);
    got = th_load_lines(out);
    for (size_t i = 0; i < n && i < json_array_size(got); i++) {
        json_t *g = json_array_get(got, i), *e = json_array_get(exp, i);
        CHECK_MSG(json_equal(json_object_get(g, "tokens"), json_object_get(e, "stop_tokens")), "record %zu: stop tokens", i);
        CHECK_MSG(json_equal(json_object_get(g, "completion"), json_object_get(e, "stop_completion")), "record %zu: stop text", i);
        CHECK(!strcmp(json_string_value(json_object_get(g, "finish_reason")), "stop"));
    }
    json_decref(got);

    /* --n 3 sampling: 3 lines per record, reproducible with the same seed */
    snprintf(out, sizeof out, "%s/n3.jsonl", th_tmpdir());
    snprintf(args, sizeof args, "--model %s --n 3 --seed 9 --top-k 50 --max-new-tokens 6 " REF "/chat_records.jsonl", dir);
    CHECK(run_gen(args, out) == 0);
    got = th_load_lines(out);
    CHECK(json_array_size(got) == 3 * n);
    CHECK(json_integer_value(json_object_get(json_array_get(got, 2), "sample")) == 2);
    char out2[1024];
    snprintf(out2, sizeof out2, "%s/n3b.jsonl", th_tmpdir());
    CHECK(run_gen(args, out2) == 0);
    json_t *got2 = th_load_lines(out2);
    CHECK(json_equal(got, got2));
    json_decref(got2);
    /* all 4 records x 3 samples decoded together (default --batch 16) == one record at a time (--batch 3) */
    snprintf(args, sizeof args, "--model %s --n 3 --seed 9 --top-k 50 --max-new-tokens 6 --batch 3 " REF "/chat_records.jsonl", dir);
    CHECK(run_gen(args, out2) == 0);
    got2 = th_load_lines(out2);
    CHECK(json_equal(got, got2));
    json_decref(got);
    json_decref(got2);

    /* errors: a record with neither field; a model without an LM head is refused up front */
    snprintf(in, sizeof in, "%s/bad.jsonl", th_tmpdir());
    f = fopen(in, "w");
    fprintf(f, "{\"prompt\": \"hi\"}\n{\"question\": \"x\"}\n");
    fclose(f);
    snprintf(out, sizeof out, "%s/bad.out", th_tmpdir());
    snprintf(args, sizeof args, "--model %s --max-new-tokens 2 %s", dir, in);
    CHECK(run_gen(args, out) == 1);
    snprintf(args, sizeof args, "--model %s --max-new-tokens 2 --skip-bad %s", dir, in);
    CHECK(run_gen(args, out) == 0);
    got = th_load_lines(out);
    CHECK(json_array_size(got) == 2 && json_object_get(json_array_get(got, 1), "error"));
    json_decref(got);
    snprintf(args, sizeof args, "--model %s --temperature -1 %s", dir, in);
    CHECK(run_gen(args, out) == 2);
    json_decref(exp);
    json_decref(recs);
    return 0;
}

int main(void) {
    RUN(test_cached_equals_full);
    RUN(test_branches);
    RUN(test_decode_batch);
    RUN(test_greedy_qwen2);
    RUN(test_greedy_qwen3);
    RUN(test_batch_prompts);
    RUN(test_sampling);
    RUN(test_cli_chat);
    return th_finish();
}
