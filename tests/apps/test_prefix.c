/* Shared-prefix scoring (fp_prm_score_candidates): N candidates of one question scored with the question's KV
 * cache prefilled once give the same step rewards, final reward and score as fp_prm_score_record on each
 * candidate (within 1e-5; f32 fixture of tests/ref/score: sharded PRM + real Qwen2 tokenizer + Qwen2.5 chat
 * template, and the 1.5B-style scalar head); bestofn's model scorer goes through it. */
#include "apps/prm.h"
#include "apps/prm_sources.h"
#include "harness.h"
#include "tiny_models.h"

#define REF "tests/ref/score"

static const char *prm_dir, *scalar_dir;

static int setup_models(void) { return th_tiny_prm_dirs(&prm_dir, &scalar_dir); }

static const char *QUESTION = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
                              "in May. How many clips did Natalia sell altogether in April and May?";
static const char *RESPONSES[] = {
    "In April she sold 48 clips.\n\nIn May she sold 48 / 2 = 24 clips.\n\nAltogether 48 + 24 = 72.\n\\boxed{72}",
    "In April: 48.\n\nIn May: 96.\n\nTotal 144.\n\\boxed{144}",
    "<think>\nHalf of 48 is 24.\n\n48+24=72\n</think>\n\nThe answer is \\boxed{72}.",
    "72",
    "In April she sold 48 clips.\n\nIn May she sold 24.\n\nSo \\boxed{72}",
};
#define NRESP 5

/* Parses {question, response} candidates (question NULL: each its own question). */
static void make_records(fp_prm *p, fp_record *recs, const char *const *questions) {
    for (int i = 0; i < NRESP; i++) {
        json_t *o = json_pack("{s:s, s:s}", "question", questions ? questions[i] : QUESTION, "response", RESPONSES[i]);
        CHECK_OK(fp_record_parse(&recs[i], o, fp_prm_format_opts(p)));
        json_decref(o);
    }
}

static void compare_all(fp_prm *p, const char *const *questions, const char *what) {
    fp_record recs[NRESP];
    const fp_record *rp[NRESP];
    fp_prm_result got[NRESP], ref;
    make_records(p, recs, questions);
    for (int i = 0; i < NRESP; i++) rp[i] = &recs[i];
    CHECK_OK(fp_prm_score_candidates(p, rp, NRESP, got));
    double md = 0;
    for (int i = 0; i < NRESP; i++) {
        CHECK_OK(fp_prm_score_record(p, &recs[i], &ref));
        CHECK(got[i].n_steps == ref.n_steps && got[i].n_tokens == ref.n_tokens && got[i].n_thinking == ref.n_thinking);
        for (size_t k = 0; k < ref.n_steps && k < got[i].n_steps; k++)
            md = fmax(md, fabs(got[i].step_rewards[k] - ref.step_rewards[k]));
        if (isnan(ref.final_reward)) CHECK(isnan(got[i].final_reward));
        else md = fmax(md, fabs(got[i].final_reward - ref.final_reward));
        md = fmax(md, fabs(got[i].score - ref.score));
        fp_prm_result_free(&ref);
        fp_prm_result_free(&got[i]);
        fp_record_free(&recs[i]);
    }
    CHECK_MSG(md <= 1e-5, "%s: shared-prefix results differ from fp_prm_score_record by %g", what, md);
    printf("  %s: max |diff| %.2g\n", what, md);
}

static int test_prm_candidates(void) {
    int s = setup_models();
    if (s) return s;
    fp_prm_opts o;
    fp_prm_opts_default(&o);
    o.model_path = prm_dir;
    o.step_token_id = 151651;
    fp_prm *p = NULL;
    CHECK_OK(fp_prm_open(&p, &o));
    if (!p) return 0;
    compare_all(p, NULL, "PRM, last-token final");
    const char *qs[NRESP] = {"What is 1+1?", "Compute 2*3.", QUESTION, "x", "What is 1+1? Be careful."};
    compare_all(p, qs, "PRM, different questions (only the system turn shared)");
    fp_prm_free(p);
    o.final_mode = FP_FINAL_LAST_STEP;
    o.aggregate = FP_AGG_MIN;
    o.alpha = 0.5;
    CHECK_OK(fp_prm_open(&p, &o));
    if (p) compare_all(p, NULL, "PRM, last-step final, min");
    fp_prm_free(p);
    o.final_mode = FP_FINAL_LAST_TOKEN;
    o.system_mode = FP_SYSTEM_NONE; /* the records then share only the question's tokens */
    CHECK_OK(fp_prm_open(&p, &o));
    if (p) compare_all(p, NULL, "PRM, no system turn");
    /* one candidate, and zero */
    fp_record r;
    json_t *j = json_pack("{s:s, s:s}", "question", QUESTION, "response", RESPONSES[0]);
    CHECK_OK(fp_record_parse(&r, j, fp_prm_format_opts(p)));
    json_decref(j);
    const fp_record *rp = &r;
    fp_prm_result a, b;
    CHECK_OK(fp_prm_score_candidates(p, &rp, 1, &a));
    CHECK_OK(fp_prm_score_record(p, &r, &b));
    CHECK_NEAR(a.score, b.score, 1e-6);
    CHECK_OK(fp_prm_score_candidates(p, NULL, 0, NULL));
    fp_prm_result_free(&a);
    fp_prm_result_free(&b);
    fp_record_free(&r);
    fp_prm_free(p);
    return 0;
}

static int test_scalar_candidates(void) {
    int s = setup_models();
    if (s) return s;
    fp_prm_opts o;
    fp_prm_opts_default(&o);
    o.model_path = scalar_dir;
    fp_prm *p = NULL;
    CHECK_OK(fp_prm_open(&p, &o));
    if (!p) return 0;
    compare_all(p, NULL, "scalar head");
    fp_prm_free(p);
    return 0;
}

/* bestofn's model scorer (fp_prm_candidate_score) goes through the shared prefix: same scores as one by one. */
static int test_bestofn_scorer(void) {
    int s = setup_models();
    if (s) return s;
    fp_prm_opts o;
    fp_prm_opts_default(&o);
    o.model_path = prm_dir;
    o.step_token_id = 151651;
    fp_prm *p = NULL;
    CHECK_OK(fp_prm_open(&p, &o));
    if (!p) return 0;
    fp_candidates c = {NULL, QUESTION, RESPONSES, NRESP, "test:1"};
    double sc[NRESP];
    CHECK_OK(fp_prm_candidate_score(p, &c, sc));
    fp_record recs[NRESP];
    make_records(p, recs, NULL);
    for (int i = 0; i < NRESP; i++) {
        fp_prm_result r;
        CHECK_OK(fp_prm_score_record(p, &recs[i], &r));
        CHECK_NEAR(sc[i], r.score, 1e-5);
        fp_prm_result_free(&r);
        fp_record_free(&recs[i]);
    }
    /* a candidate that cannot be encoded is named (the step token inside a step) */
    const char *bad[] = {"fine.\n\nok", "a <extra_0> b"};
    fp_candidates cb = {NULL, QUESTION, bad, 2, "test:2"};
    CHECK(fp_prm_candidate_score(p, &cb, sc) == FP_EINVAL);
    CHECK_MSG(strstr(fp_last_error(), "candidate 1") && strstr(fp_last_error(), "test:2"), "message: %s", fp_last_error());
    fp_prm_free(p);
    return 0;
}

int main(void) {
    RUN(test_prm_candidates);
    RUN(test_scalar_candidates);
    RUN(test_bestofn_scorer);
    return th_finish();
}
