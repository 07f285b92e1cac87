/* curate building blocks: the embedding-backed merge callback on a hand-made case, the seeded reservoir
 * (same seed, same negatives; replay from step counts), the step targets against fp_reward_trajectory, and
 * the encoder Φ against HF transformers (tests/ref/curate/fixture.json from make_fixture.py): last-token
 * and mean pooled, L2-normalised embeddings of the tiny trunk in tests/ref/score, within 1e-5. */
#include "base/json.h"
#include "format/format.h"
#include "harness.h"
#include "tiny_models.h"
#include "reward/curate.h"
#include <limits.h>

/* ---- a hand-made embedding table */
typedef struct { const char *text; float v[3]; } hand_vec;
static const hand_vec HAND[] = {
    {"A", {1, 0, 0}}, {"B", {0, 0.6f, 0.8f}}, {"C", {0, 0, 1}}, {"X", {1, 0, 0}}, {"Y", {0, 1, 0}},
    {"A\n\nB", {0.70710678f, 0.70710678f, 0}}, {"B\n\nC", {0, 1, 0}},
};
static int hand_calls;
static int hand_embed(void *ctx, const char *text, float *out) {
    (void)ctx;
    hand_calls++;
    for (size_t i = 0; i < sizeof HAND / sizeof HAND[0]; i++)
        if (!strcmp(HAND[i].text, text)) { memcpy(out, HAND[i].v, sizeof HAND[i].v); return FP_OK; }
    return fp_errorf(FP_EINVAL, "no embedding for '%s'", text);
}

static int test_align_callback(void) {
    fp_embed_cache *c;
    CHECK_OK(fp_embed_cache_new(&c, 3, hand_embed, NULL));
    char *th[] = {"A", "B", "C"}, *re[] = {"X", "Y"};
    char **m;
    size_t n, *g;
    /* merge (0,1): cos(A\n\nB, X) + cos(C, Y) = 0.707 + 0;  merge (1,2): cos(A, X) + cos(B\n\nC, Y) = 1 + 1 */
    hand_calls = 0;
    CHECK_OK(fp_curate_align(c, th, 3, re, 2, &m, &n, &g));
    CHECK(n == 2);
    if (n == 2) {
        CHECK(!strcmp(m[0], "A") && !strcmp(m[1], "B\n\nC"));
        CHECK(g[0] == 0 && g[1] == 1);
    }
    long hits, misses;
    fp_embed_cache_stats(c, &hits, &misses);
    CHECK_MSG(hand_calls == 7 && misses == 7, "each of the 7 texts embedded once: %d calls, %ld misses", hand_calls, misses);
    CHECK(hits > 0);
    fp_free_strings(m, n);
    free(g);
    /* the lexical default would not see it: Jaccard gives every candidate 0 here */
    CHECK_NEAR(fp_lexical_similarity("B\n\nC", "Y", NULL), 0, 0);
    /* sim is the cosine of the embeddings */
    CHECK_NEAR(fp_embed_similarity("B", "Y", c), 0.6, 1e-7);
    /* T <= M: nothing merged, identity groups */
    CHECK_OK(fp_curate_align(c, th, 2, re, 2, &m, &n, &g));
    CHECK(n == 2 && !strcmp(m[1], "B") && g[1] == 1);
    fp_free_strings(m, n);
    free(g);
    /* a failing embedding is an error, not a merge from zeros */
    fp_embed_cache_clear(c);
    char *bad[] = {"A", "B", "unknown"};
    int rc = fp_curate_align(c, bad, 3, re, 2, &m, &n, &g);
    CHECK(rc == FP_EINVAL && strstr(fp_last_error(), "unknown"));
    CHECK(fp_embed_cache_error(c) == FP_EINVAL);
    fp_embed_cache_clear(c);
    CHECK(fp_embed_cache_error(c) == FP_OK);
    fp_embed_cache_free(c);
    return 0;
}

/* a synthetic encoder: 5 dims from a hash of the text */
static void synth_vec(const char *text, float *out) {
    uint64_t h = 1469598103934665603ull;
    for (const char *p = text; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    fp_rng r;
    fp_rng_seed(&r, h, 0, 0);
    for (int k = 0; k < 5; k++) out[k] = (float)fp_rng_below(&r, 1000) / 500.0f - 1.0f;
}
static int synth_embed(void *ctx, const char *text, float *out) {
    (void)ctx;
    synth_vec(text, out);
    return FP_OK;
}

/* Many texts: the table and the rows grow while similarities are taken (rows move: no stale pointers). */
static int test_cache_growth(void) {
    fp_embed_cache *c;
    CHECK_OK(fp_embed_cache_new(&c, 5, synth_embed, NULL));
    char a[32], b[32];
    for (int i = 0; i < 300; i++) {
        snprintf(a, sizeof a, "text %d", i);
        snprintf(b, sizeof b, "text %d", i + 1);
        float va[5], vb[5];
        synth_vec(a, va);
        synth_vec(b, vb);
        CHECK_NEAR(fp_embed_similarity(a, b, c), fp_cosine(va, vb, 5), 1e-12);
    }
    long hits, misses;
    fp_embed_cache_stats(c, &hits, &misses);
    CHECK(misses == 301 && hits == 299);
    const float *e;
    CHECK_OK(fp_embed_cache_get(c, "text 7", &e));
    float v7[5];
    synth_vec("text 7", v7);
    CHECK(e && !memcmp(e, v7, sizeof v7));
    fp_embed_cache_clear(c);
    CHECK_OK(fp_embed_cache_get(c, "text 7", &e));
    fp_embed_cache_stats(c, &hits, &misses);
    CHECK(misses == 302);
    fp_embed_cache_free(c);
    return 0;
}

static void fill_rows(float *rows, size_t n, size_t d, unsigned seed) {
    fp_rng r;
    fp_rng_seed(&r, seed, 1, 2);
    for (size_t i = 0; i < n * d; i++) rows[i] = (float)((double)fp_rng_below(&r, 2000) / 1000.0 - 1.0);
}

static int test_reservoir(void) {
    enum { D = 4, N = 60, CAP = 7 };
    float rows[N * D];
    fill_rows(rows, N, D, 3);
    fp_reservoir *a, *b, *c, *z;
    CHECK_OK(fp_reservoir_new(&a, CAP, D, 11));
    CHECK_OK(fp_reservoir_new(&b, CAP, D, 11));
    CHECK_OK(fp_reservoir_new(&c, CAP, D, 12));
    CHECK_OK(fp_reservoir_new(&z, CAP, D, 11));
    /* the same stream in different chunkings */
    fp_reservoir_add(a, rows, N);
    for (size_t i = 0; i < N; i += 5) fp_reservoir_add(b, rows + i * D, 5);
    fp_reservoir_add(c, rows, N);
    CHECK(fp_reservoir_seen(a) == N && fp_reservoir_size(a) == CAP);
    CHECK(!memcmp(fp_reservoir_rows(a), fp_reservoir_rows(b), sizeof(float) * CAP * D));
    CHECK(memcmp(fp_reservoir_rows(a), fp_reservoir_rows(c), sizeof(float) * CAP * D) != 0);
    /* the documented rule, recomputed: slot n while n < cap, then j = below(n + 1) from rng(seed, 2^64-1, n) */
    int src[CAP];
    for (int i = 0; i < CAP; i++) src[i] = i;
    for (uint64_t n = CAP; n < N; n++) {
        fp_rng g;
        fp_rng_seed(&g, 11, UINT64_MAX, n);
        uint64_t j = fp_rng_below(&g, n + 1);
        if (j < CAP) src[j] = (int)n;
    }
    int replaced = 0;
    for (int i = 0; i < CAP; i++) {
        CHECK(!memcmp(fp_reservoir_rows(a) + i * D, rows + src[i] * D, sizeof(float) * D));
        replaced += src[i] >= CAP;
    }
    CHECK(replaced > 0);
    /* replay from counts alone (resume): offer without data, put only the survivors */
    int slot_src[CAP] = {0};
    for (int n = 0; n < N; n++) {
        long s = fp_reservoir_offer(z);
        if (s >= 0) slot_src[s] = n;
    }
    for (int i = 0; i < CAP; i++) fp_reservoir_put(z, (size_t)i, rows + slot_src[i] * D);
    CHECK(!memcmp(fp_reservoir_rows(a), fp_reservoir_rows(z), sizeof(float) * CAP * D));

    /* step targets: same seed -> same negatives -> same coherence; equal to fp_reward_trajectory on the pool
     * "reservoir ++ record" */
    enum { T = 3, M = 2 };
    float st[T * D], q[D], resp[M * D];
    fill_rows(st, T, D, 5);
    fill_rows(q, 1, D, 6);
    fill_rows(resp, M, D, 7);
    double qual[T] = {7, NAN, 3};
    fp_curate_coh_opts o = {0.5, 3, 99};
    fp_step_reward r1[T], r2[T], r3[T];
    double ra[T], rc1[T], rc2[T];
    int sk = -1;
    CHECK_OK(fp_curate_step_targets(a, &o, 4, st, T, q, resp, M, qual, r1, ra, rc1, &sk));
    CHECK(sk == 0);
    CHECK_OK(fp_curate_step_targets(b, &o, 4, st, T, q, resp, M, qual, r2, NULL, rc2, NULL));
    for (int t = 0; t < T; t++) {
        CHECK(rc1[t] == rc2[t] && r1[t].mixed == r2[t].mixed);
        CHECK(rc1[t] < 0 && !isnan(r1[t].mixed));
    }
    CHECK(isnan(ra[2]) && isnan(r1[2].align) && isnan(r1[1].qual));
    float pool[(CAP + T) * D];
    memcpy(pool, fp_reservoir_rows(a), sizeof(float) * CAP * D);
    memcpy(pool + CAP * D, st, sizeof st);
    fp_step_pool p = {pool, CAP + T, D, o.tau, o.k_neg, o.seed};
    double rt[T];
    CHECK_OK(fp_reward_trajectory(&p, 4, CAP, T, q, resp, M, qual, r3, NULL, rt));
    for (int t = 0; t < T; t++) {
        CHECK_NEAR(rt[t], rc1[t], 0);
        CHECK_NEAR(r3[t].mixed, r1[t].mixed, 0);
    }
    /* another record index draws other negatives */
    CHECK_OK(fp_curate_step_targets(a, &o, 5, st, T, q, resp, M, qual, r2, NULL, rc2, NULL));
    CHECK(rc2[0] != rc1[0] || rc2[1] != rc1[1] || rc2[2] != rc1[2]);
    /* fewer rows than negatives: coherence missing, the mix uses the rest */
    fp_reservoir *small;
    CHECK_OK(fp_reservoir_new(&small, CAP, D, 11));
    fp_reservoir_add(small, rows, 2);
    CHECK_OK(fp_curate_step_targets(small, &o, 0, st, T, q, resp, M, qual, r2, NULL, rc2, &sk));
    CHECK(sk == 1 && isnan(rc2[0]) && isnan(r2[0].coh));
    double comp[2] = {r2[0].align, r2[0].qual};
    CHECK_NEAR(r2[0].mixed, fp_reward_mix(comp, 2), 1e-15);
    fp_reservoir_free(small);
    fp_reservoir_free(a);
    fp_reservoir_free(b);
    fp_reservoir_free(c);
    fp_reservoir_free(z);
    return 0;
}

static int test_encoder_vs_hf(void) {
    REQUIRE_SHARED(tj, "tokenizer/qwen2/tokenizer.json");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/enc", th_tmpdir());
    CHECK(th_tiny_lm_dir(dir, tj) == 0);
    json_t *fx;
    CHECK_OK(fp_json_load_file(&fx, "tests/ref/curate/fixture.json"));
    if (!fx) return 1;
    json_t *texts = json_object_get(fx, "texts");
    CHECK(json_array_size(texts) >= 4);
    for (int pooling = 0; pooling < 2; pooling++) {
        fp_encoder_opts eo;
        fp_encoder_opts_default(&eo);
        eo.model_path = dir;
        eo.pooling = pooling ? FP_POOL_MEAN : FP_POOL_LAST;
        fp_encoder *e = NULL;
        CHECK_OK(fp_encoder_open(&e, &eo));
        if (!e) break;
        size_t d = fp_encoder_dim(e), n = json_array_size(texts);
        CHECK(d == 8);
        float *ours = calloc(n * d, sizeof *ours), *ref = calloc(n * d, sizeof *ref);
        for (size_t i = 0; i < n; i++) {
            json_t *t = json_array_get(texts, i), *v = json_object_get(t, pooling ? "mean" : "last");
            CHECK_OK(fp_encoder_embed(e, json_string_value(json_object_get(t, "text")), ours + i * d));
            CHECK(json_array_size(v) == d);
            for (size_t k = 0; k < d; k++) {
                ref[i * d + k] = (float)json_number_value(json_array_get(v, k));
                CHECK_NEAR(ours[i * d + k], ref[i * d + k], 1e-5);
            }
        }
        double worst = 0;
        for (size_t i = 0; i < n; i++)
            for (size_t j = i + 1; j < n; j++) {
                double a = fp_cosine(ours + i * d, ours + j * d, d), b = fp_cosine(ref + i * d, ref + j * d, d);
                CHECK_NEAR(a, b, 1e-5);
                if (fabs(a - b) > worst) worst = fabs(a - b);
            }
        printf("  %s pooling: max |cos ours - cos HF| = %.2g over %zu pairs\n", pooling ? "mean" : "last", worst, n * (n - 1) / 2);
        /* an empty text has no tokens */
        CHECK(fp_encoder_embed(e, "", ours) == FP_EINVAL);
        free(ours);
        free(ref);
        fp_encoder_free(e);
    }
    /* the merge with our embeddings gives the fixture's (HF) merged steps */
    json_t *recs = json_object_get(fx, "records");
    fp_encoder_opts eo;
    fp_encoder_opts_default(&eo);
    eo.model_path = dir;
    fp_encoder *e = NULL;
    CHECK_OK(fp_encoder_open(&e, &eo));
    fp_embed_cache *c = NULL;
    if (e) CHECK_OK(fp_embed_cache_new(&c, fp_encoder_dim(e), fp_encoder_embed, e));
    fp_jsonl_reader *rd = NULL;
    CHECK_OK(fp_jsonl_open(&rd, "tests/ref/curate/records.jsonl"));
    const char *line;
    size_t len;
    for (size_t i = 0; c && rd && fp_jsonl_next_line(rd, &line, &len) == FP_OK; i++) {
        json_t *want = json_array_get(recs, i);
        json_t *obj = json_loadb(line, len, 0, NULL);
        fp_record r;
        fp_format_opts fo = {0};
        int rc = fp_record_parse(&r, obj, &fo);
        CHECK((rc == FP_OK) == !json_is_null(want));
        if (rc == FP_OK) {
            char **m;
            size_t n, *g;
            fp_embed_cache_clear(c);
            CHECK_OK(fp_curate_align(c, r.steps, r.n_thinking, r.steps + r.n_thinking, r.n_steps - r.n_thinking, &m, &n, &g));
            json_t *ws = json_object_get(want, "steps");
            CHECK_MSG(n == json_array_size(ws), "record %zu: %zu merged steps, HF merge gives %zu", i, n, json_array_size(ws));
            for (size_t t = 0; t < n && t < json_array_size(ws); t++)
                CHECK_MSG(!strcmp(m[t], json_string_value(json_array_get(ws, t))), "record %zu step %zu differs", i, t);
            fp_free_strings(m, n);
            free(g);
            fp_record_free(&r);
        }
        json_decref(obj);
    }
    fp_jsonl_close(rd);
    fp_embed_cache_free(c);
    fp_encoder_free(e);
    json_decref(fx);
    return 0;
}

int main(void) {
    RUN(test_align_callback);
    RUN(test_cache_growth);
    RUN(test_reservoir);
    RUN(test_encoder_vs_hf);
    return th_finish();
}
