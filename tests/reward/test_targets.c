/* Reward-target math: hand-computable cases plus a numpy-computed fixture (tests/ref/reward/make_fixture.py). */
#include "fluxprm.h"
#include "harness.h"
#include <jansson.h>

static int test_cosine(void) {
    float a[2] = {1, 0}, b[2] = {0, 1}, c[2] = {2, 0}, d[2] = {-3, 0}, z[2] = {0, 0};
    float e[3] = {1, 2, 2}, f[3] = {2, 4, 4}, g[3] = {2, 1, -2};
    CHECK_NEAR(fp_cosine(a, b, 2), 0.0, 1e-12);
    CHECK_NEAR(fp_cosine(a, c, 2), 1.0, 1e-12);
    CHECK_NEAR(fp_cosine(a, d, 2), -1.0, 1e-12);
    CHECK_NEAR(fp_cosine(a, z, 2), 0.0, 0);
    CHECK_NEAR(fp_cosine(e, f, 3), 1.0, 1e-12);
    CHECK_NEAR(fp_cosine(e, g, 3), 0.0, 1e-12); /* 2 + 2 - 4 = 0 */
    float h[2] = {3, 4};
    CHECK_NEAR(fp_cosine(a, h, 2), 0.6, 1e-7);
    return 0;
}

static int test_coherence_by_hand(void) {
    float prev[2] = {1, 0}, pos[2] = {1, 0}, negs[4] = {0, 1, -1, 0};
    double lp;
    /* cos: positive 1, negatives 0 and -1; tau 1: log(e / (e + 1 + 1/e)) */
    CHECK_OK(fp_reward_coherence(prev, pos, negs, 2, 2, 1.0, &lp));
    CHECK_NEAR(lp, 1.0 - log(exp(1.0) + 1.0 + exp(-1.0)), 1e-12);
    /* tau 0.5 doubles the logits */
    CHECK_OK(fp_reward_coherence(prev, pos, negs, 2, 2, 0.5, &lp));
    CHECK_NEAR(lp, 2.0 - log(exp(2.0) + 1.0 + exp(-2.0)), 1e-12);
    /* no negatives: the positive is alone in the denominator, probability 1 */
    CHECK_OK(fp_reward_coherence(prev, pos, NULL, 0, 2, 1.0, &lp));
    CHECK_NEAR(lp, 0.0, 1e-15);
    /* a negative identical to the positive: probability 1/2 */
    CHECK_OK(fp_reward_coherence(prev, pos, pos, 1, 2, 0.1, &lp));
    CHECK_NEAR(lp, log(0.5), 1e-12);
    /* tiny tau does not overflow */
    CHECK_OK(fp_reward_coherence(prev, pos, negs, 2, 2, 1e-4, &lp));
    CHECK(isfinite(lp) && lp <= 0 && lp > -1e-6);
    CHECK(fp_reward_coherence(prev, pos, negs, 2, 2, 0.0, &lp) == FP_EINVAL);
    CHECK(fp_reward_coherence(prev, pos, negs, 2, 2, -1.0, &lp) == FP_EINVAL);
    return 0;
}

static int test_mix_and_step(void) {
    double c3[3] = {0.5, 0.5, 0.5};
    CHECK_NEAR(fp_reward_mix(c3, 3), 0.5, 1e-15);
    double c2[2] = {1, 0};
    CHECK_NEAR(fp_reward_mix(c2, 2), exp(1.0) / (exp(1.0) + 1.0), 1e-15);
    double cn[3] = {1, NAN, 0};
    CHECK_NEAR(fp_reward_mix(cn, 3), exp(1.0) / (exp(1.0) + 1.0), 1e-15);
    double all_nan[2] = {NAN, NAN};
    CHECK(isnan(fp_reward_mix(all_nan, 2)));
    fp_step_reward r;
    fp_reward_step(0.0, log(0.25), 8.0, &r);
    CHECK_NEAR(r.align, 0.5, 1e-15);
    CHECK_NEAR(r.coh, 0.25, 1e-15);
    CHECK_NEAR(r.qual, 0.8, 1e-15);
    double w[3] = {exp(0.5), exp(0.25), exp(0.8)};
    CHECK_NEAR(r.mixed, (w[0] * 0.5 + w[1] * 0.25 + w[2] * 0.8) / (w[0] + w[1] + w[2]), 1e-15);
    fp_reward_step(-1.0, 0.0, NAN, &r); /* judge missing */
    CHECK(r.align == 0.0 && r.coh == 1.0 && isnan(r.qual));
    CHECK_NEAR(r.mixed, exp(1.0) / (exp(1.0) + 1.0), 1e-15);
    int ok[4] = {1, 0, 1, 1};
    CHECK_NEAR(fp_reward_final(ok, 4), 0.75, 0);
    CHECK(isnan(fp_reward_final(ok, 0)));
    return 0;
}

static int test_rng_and_negatives(void) {
    /* splitmix64 from state 0: the published first outputs */
    fp_rng r = {0};
    CHECK(fp_rng_next(&r) == 0xE220A8397B1DCDAFull);
    CHECK(fp_rng_next(&r) == 0x6E789E6AA1B965F4ull);
    CHECK(fp_rng_next(&r) == 0x06C45D188009454Full);
    size_t idx[16], idx2[16];
    CHECK_OK(fp_reward_sample_negatives(5, 3, 1, 40, 10, 20, 16, idx));
    CHECK_OK(fp_reward_sample_negatives(5, 3, 1, 40, 10, 20, 16, idx2));
    CHECK(!memcmp(idx, idx2, sizeof idx));
    for (int i = 0; i < 16; i++) {
        CHECK(idx[i] < 40 && (idx[i] < 10 || idx[i] >= 20));
        for (int j = 0; j < i; j++) CHECK(idx[i] != idx[j]);
    }
    CHECK_OK(fp_reward_sample_negatives(5, 3, 2, 40, 10, 20, 16, idx2)); /* another step: another draw */
    CHECK(memcmp(idx, idx2, sizeof idx) != 0);
    /* all 30 outside rows when k = 30 */
    size_t all[30];
    CHECK_OK(fp_reward_sample_negatives(9, 0, 0, 40, 10, 20, 30, all));
    CHECK(fp_reward_sample_negatives(9, 0, 0, 40, 10, 20, 31, all) == FP_ERANGE);
    CHECK(fp_reward_sample_negatives(9, 0, 0, 40, 20, 10, 1, all) == FP_EINVAL);
    CHECK(fp_reward_sample_negatives(9, 0, 0, 40, 10, 41, 1, all) == FP_EINVAL);
    return 0;
}

static float *floats(json_t *arr) {
    size_t n = json_array_size(arr);
    float *v = malloc((n ? n : 1) * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = (float)json_number_value(json_array_get(arr, i));
    return v;
}

static int test_fixture(void) {
    json_error_t err;
    json_t *fx = json_load_file("tests/ref/reward/fixture.json", 0, &err);
    CHECK_MSG(fx != NULL, "tests/ref/reward/fixture.json: %s", err.text);
    if (!fx) return 0;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(fx, "cases"), i, c) {
        size_t dim = (size_t)json_integer_value(json_object_get(c, "dim"));
        size_t k = (size_t)json_integer_value(json_object_get(c, "k"));
        double tau = json_number_value(json_object_get(c, "tau"));
        float *prev = floats(json_object_get(c, "prev")), *pos = floats(json_object_get(c, "pos"));
        float *negs = floats(json_object_get(c, "negs"));
        double cs = fp_cosine(prev, pos, dim), lp;
        CHECK_NEAR(cs, json_number_value(json_object_get(c, "cos")), 1e-12);
        CHECK_OK(fp_reward_coherence(prev, pos, negs, k, dim, tau, &lp));
        CHECK_NEAR(lp, json_number_value(json_object_get(c, "log_prob")), 1e-10);
        fp_step_reward r;
        fp_reward_step(cs, lp, json_number_value(json_object_get(c, "qual_score")), &r);
        json_t *norm = json_object_get(c, "norm");
        CHECK_NEAR(r.align, json_number_value(json_array_get(norm, 0)), 1e-12);
        CHECK_NEAR(r.coh, json_number_value(json_array_get(norm, 1)), 1e-10);
        CHECK_NEAR(r.qual, json_number_value(json_array_get(norm, 2)), 1e-15);
        CHECK_NEAR(r.mixed, json_number_value(json_object_get(c, "mix")), 1e-10);
        double two[2] = {r.align, r.coh};
        CHECK_NEAR(fp_reward_mix(two, 2), json_number_value(json_object_get(c, "mix_no_qual")), 1e-10);
        free(prev); free(pos); free(negs);
    }
    CHECK(i == 4);
    json_array_foreach(json_object_get(fx, "negatives"), i, c) {
        size_t k = (size_t)json_integer_value(json_object_get(c, "k"));
        size_t idx[64];
        CHECK_OK(fp_reward_sample_negatives((uint64_t)json_integer_value(json_object_get(c, "seed")),
                                            (uint64_t)json_integer_value(json_object_get(c, "record")),
                                            (uint64_t)json_integer_value(json_object_get(c, "step")),
                                            (size_t)json_integer_value(json_object_get(c, "pool_n")),
                                            (size_t)json_integer_value(json_object_get(c, "lo")),
                                            (size_t)json_integer_value(json_object_get(c, "hi")), k, idx));
        json_t *want = json_object_get(c, "idx");
        CHECK(json_array_size(want) == k);
        for (size_t j = 0; j < k; j++)
            CHECK_MSG(idx[j] == (size_t)json_integer_value(json_array_get(want, j)), "draw %zu index %zu", i, j);
    }
    fp_rng r;
    fp_rng_seed(&r, 0, 0, 0);
    json_t *s;
    json_array_foreach(json_object_get(fx, "rng_000"), i, s) CHECK(fp_rng_next(&r) == strtoull(json_string_value(s), NULL, 10));
    json_decref(fx);
    return 0;
}

static int test_trajectory(void) {
    /* trajectory 0 = rows 0-1, trajectory 1 = rows 2-3; k = 2 takes every outside row, so the draw order
     * does not matter and the values are computable by hand */
    float pool[8] = {1, 0, 0, 1, -1, 0, 0, -1}, q[2] = {1, 0}, resp[2] = {1, 0};
    fp_step_pool p = {pool, 4, 2, 1.0, 2, 99};
    double qual[2] = {8, NAN}, ra[2], rc[2];
    fp_step_reward out[2];
    CHECK_OK(fp_reward_trajectory(&p, 0, 0, 2, q, resp, 1, qual, out, ra, rc));
    double e = exp(1.0);
    CHECK_NEAR(ra[0], 1.0, 1e-12);
    CHECK(isnan(ra[1]) && isnan(out[1].align)); /* only one response step */
    CHECK_NEAR(rc[0], 1.0 - log(e + 1.0 / e + 1.0), 1e-12); /* prev = question: cos 1; negatives -1, 0 */
    CHECK_NEAR(rc[1], 0.0 - log(1.0 + 1.0 / e + 1.0), 1e-12); /* prev = step 1: cos 0; negatives -1, 0 */
    double c0[3] = {1.0, e / (e + 1.0 / e + 1.0), 0.8};
    CHECK_NEAR(out[0].mixed, fp_reward_mix(c0, 3), 1e-12);
    CHECK_NEAR(out[1].mixed, 1.0 / (2.0 + 1.0 / e), 1e-12); /* coherence alone */
    p.k_neg = 3;
    CHECK(fp_reward_trajectory(&p, 0, 0, 2, q, resp, 1, qual, out, NULL, NULL) == FP_ERANGE);
    CHECK(strstr(fp_last_error(), "trajectory 0:") != NULL);
    p.k_neg = 2;
    CHECK(fp_reward_trajectory(&p, 1, 3, 2, q, resp, 1, NULL, out, NULL, NULL) == FP_EINVAL);
    return 0;
}

int main(void) {
    RUN(test_cosine);
    RUN(test_coherence_by_hand);
    RUN(test_mix_and_step);
    RUN(test_rng_and_negatives);
    RUN(test_fixture);
    RUN(test_trajectory);
    return th_finish();
}
