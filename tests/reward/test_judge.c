/* The judge: prompt files and rendering, strict score parsing, step scoring and templates against the mock
 * server, and the json_schema -> json_object -> text fallback on HTTP 400. */
#include "fluxprm.h"
#include "harness.h"
#include "mock_server.h"

static mock_server srv;
static char url[128];

static const char *write_file(const char *name, const char *text) {
    static char paths[8][512];
    static int k;
    char *p = paths[k++ % 8];
    snprintf(p, 512, "%s/%s", th_tmpdir(), name);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
    return p;
}

static int test_render(void) {
    const char *names[] = {"a", "bb"};
    const char *vals[] = {"X{bb}", "Y"};
    char *out;
    CHECK_OK(fp_prompt_render("{a}-{bb}-{c}-{ {a", names, vals, 2, &out));
    CHECK_MSG(out && !strcmp(out, "X{bb}-Y-{c}-{ {a"), "%s", out); /* one pass; unknown braces stay */
    free(out);
    CHECK_OK(fp_prompt_render("{\"score\": n} {bb}}", names, vals, 2, &out));
    CHECK(out && !strcmp(out, "{\"score\": n} Y}"));
    free(out);
    return 0;
}

static int test_parse_score(void) {
    double s;
    CHECK_OK(fp_judge_parse_score("{\"score\": 7}", 0, &s)); CHECK(s == 7);
    CHECK_OK(fp_judge_parse_score("  {\"score\": 0.5, \"why\": \"ok\"}\n", 0, &s)); CHECK(s == 0.5);
    CHECK_OK(fp_judge_parse_score("{\"score\": 10}", 0, &s)); CHECK(s == 10);
    CHECK_OK(fp_judge_parse_score("{\"score\": 0}", 0, &s)); CHECK(s == 0);
    CHECK(fp_judge_parse_score("{\"score\": 10.01}", 0, &s) == FP_ERANGE && isnan(s));
    CHECK(strstr(fp_last_error(), "outside [0, 10]") != NULL);
    CHECK(fp_judge_parse_score("{\"score\": -1}", 0, &s) == FP_ERANGE);
    CHECK(fp_judge_parse_score("{\"score\": \"7\"}", 0, &s) == FP_EPARSE);
    CHECK(strstr(fp_last_error(), "not a number") != NULL);
    CHECK(fp_judge_parse_score("{\"score\": true}", 0, &s) == FP_EPARSE);
    CHECK(fp_judge_parse_score("{\"score\": null}", 0, &s) == FP_EPARSE);
    CHECK(fp_judge_parse_score("{\"grade\": 5}", 0, &s) == FP_EPARSE);
    CHECK(strstr(fp_last_error(), "no \"score\"") != NULL);
    CHECK(fp_judge_parse_score("[7]", 0, &s) == FP_EPARSE);
    CHECK(fp_judge_parse_score("7", 0, &s) == FP_EPARSE);
    CHECK(fp_judge_parse_score("", 0, &s) == FP_EPARSE);
    CHECK(fp_judge_parse_score(NULL, 0, &s) == FP_EPARSE);
    CHECK(fp_judge_parse_score("{\"score\": 7, \"score\": 8}", 0, &s) == FP_EPARSE);
    CHECK(fp_judge_parse_score("{\"score\": 7", 0, &s) == FP_EPARSE);
    CHECK(strstr(fp_last_error(), "not JSON") != NULL);
    /* embedded only in text mode */
    const char *prose = "Sure.\n```json\n{\"score\": 6.5}\n```";
    CHECK(fp_judge_parse_score(prose, 0, &s) == FP_EPARSE);
    CHECK_OK(fp_judge_parse_score(prose, 1, &s)); CHECK(s == 6.5);
    CHECK(fp_judge_parse_score("The score is 7.", 1, &s) == FP_EPARSE);
    return 0;
}

static int test_prompt_files(void) {
    fp_openai_opts o;
    fp_openai_opts_default(&o);
    o.base_url = url;
    fp_openai_client *c;
    CHECK_OK(fp_openai_client_new(&c, &o));
    fp_judge_opts jo;
    fp_judge_opts_default(&jo);
    jo.model = "mock";
    fp_judge *j;
    CHECK_OK(fp_judge_new(&j, c, &jo)); /* the shipped prompts/ files load */
    fp_judge_free(j);
    jo.step_prompt_path = write_file("no_step.txt", "Question {question} response {response}");
    CHECK(fp_judge_new(&j, c, &jo) == FP_EPARSE && !j);
    CHECK(strstr(fp_last_error(), "{step}") != NULL);
    jo.step_prompt_path = write_file("bad_sections.txt", "[system]\nsys {question}\n");
    CHECK(fp_judge_new(&j, c, &jo) == FP_EPARSE);
    CHECK(strstr(fp_last_error(), "[user]") != NULL);
    jo.step_prompt_path = "tests/tmp/does/not/exist.txt";
    CHECK(fp_judge_new(&j, c, &jo) == FP_EIO);
    jo.step_prompt_path = NULL;
    jo.model = NULL;
    CHECK(fp_judge_new(&j, c, &jo) == FP_EINVAL);
    fp_openai_client_free(c);
    return 0;
}

static fp_judge *make_judge(fp_openai_client **c, int format) {
    fp_openai_opts o;
    fp_openai_opts_default(&o);
    o.base_url = url;
    o.backoff_base_s = 0.01;
    o.max_retries = 1;
    o.timeout_s = 5;
    CHECK_OK(fp_openai_client_new(c, &o));
    fp_judge_opts jo;
    fp_judge_opts_default(&jo);
    jo.model = "mock";
    jo.format = format;
    jo.step_prompt_path = write_file("step.txt", "[system]\nGrade. JSON only.\n[user]\nQ: {question}\nPREV: {previous_steps}\n"
                                                 "STEP<<{step}>> ({step_number}/{num_steps})\nRESP: {response}\n");
    jo.template_prompt_path = write_file("tmpl.txt", "Q: {question}\nSTEPS: {steps}\nSTEP<<{response}>>\n");
    fp_judge *j = NULL;
    CHECK_OK(fp_judge_new(&j, *c, &jo));
    return j;
}

static int test_step_scores(void) {
    fp_openai_client *c;
    fp_judge *j = make_judge(&c, FP_JUDGE_FORMAT_AUTO);
    if (!j) return 0;
    const char *s1[] = {"@reply=7 first", "@reply=11", "@reply=str"};
    const char *s2[] = {"@reply=bad", "@reply=nokey", "plain"};
    fp_judge_traj t[2] = {{"What is 2+2?", s1, 3, "4"}, {"Q2", s2, 3, "R2"}};
    fp_judge_score out[6];
    int rc = fp_judge_step_scores(j, t, 2, out);
    CHECK(rc == FP_ERANGE); /* first failure: trajectory 0 step 2 */
    CHECK_MSG(strstr(fp_last_error(), "trajectory 0 step 2: judge score 11 is outside [0, 10]") != NULL, "%s", fp_last_error());
    CHECK(out[0].status == FP_OK && out[0].score == 7 && !out[0].error);
    CHECK(out[1].status == FP_ERANGE && isnan(out[1].score));
    CHECK(out[2].status == FP_EPARSE && out[2].error && strstr(out[2].error, "trajectory 0 step 3") && strstr(out[2].error, "not a number"));
    CHECK(out[3].status == FP_EPARSE && strstr(out[3].error, "trajectory 1 step 1: judge reply is not JSON"));
    CHECK(out[4].status == FP_EPARSE && strstr(out[4].error, "no \"score\""));
    CHECK(out[5].status == FP_OK && out[5].score == 5);
    CHECK(fp_judge_format(j) == FP_JUDGE_FORMAT_AUTO);
    for (int i = 0; i < 6; i++) fp_judge_score_clear(&out[i]);
    fp_openai_stats st;
    fp_openai_client_stats(c, &st);
    CHECK(st.requests == 6 && st.successes == 6);
    fp_judge_free(j);
    fp_openai_client_free(c);
    return 0;
}

static int test_fallback(void) {
    fp_openai_client *c;
    fp_judge *j = make_judge(&c, FP_JUDGE_FORMAT_AUTO);
    if (!j) return 0;
    const char *s1[] = {"@noschema @reply=7", "@noschema"};
    fp_judge_traj t = {"Q", s1, 2, "R"};
    fp_judge_score out[2];
    CHECK_OK(fp_judge_step_scores(j, &t, 1, out));
    CHECK(out[0].score == 7 && out[1].score == 5);
    CHECK(fp_judge_format(j) == FP_JUDGE_FORMAT_JSON_OBJECT);
    /* sticky: the next call starts at json_object; then a server that takes no response_format at all */
    const char *s2[] = {"@noformat @reply=prose"};
    fp_judge_traj t2 = {"Q", s2, 1, "R"};
    CHECK_OK(fp_judge_step_scores(j, &t2, 1, out));
    CHECK(out[0].score == 6.5);
    CHECK(fp_judge_format(j) == FP_JUDGE_FORMAT_TEXT);
    fp_judge_free(j);
    fp_openai_client_free(c);
    /* a 400 with another cause: tried in every format, reported, and the judge is not degraded */
    j = make_judge(&c, FP_JUDGE_FORMAT_AUTO);
    const char *s3[] = {"@400"};
    fp_judge_traj t3 = {"Q", s3, 1, "R"};
    int before = atomic_load(&srv.requests);
    CHECK(fp_judge_step_scores(j, &t3, 1, out) == FP_EINVAL);
    CHECK(atomic_load(&srv.requests) - before == 3);
    CHECK_MSG(strstr(fp_last_error(), "trajectory 0 step 1: HTTP 400: bad request: model not found") != NULL, "%s", fp_last_error());
    CHECK(fp_judge_format(j) == FP_JUDGE_FORMAT_AUTO);
    fp_judge_score_clear(&out[0]);
    fp_judge_free(j);
    fp_openai_client_free(c);
    /* a fixed format does not fall back */
    j = make_judge(&c, FP_JUDGE_FORMAT_JSON_SCHEMA);
    CHECK(fp_judge_step_scores(j, &t, 1, out) == FP_EINVAL);
    CHECK(out[0].status == FP_EINVAL && strstr(out[0].error, "HTTP 400") && strstr(out[0].error, "json_schema"));
    for (int i = 0; i < 2; i++) fp_judge_score_clear(&out[i]);
    fp_judge_free(j);
    fp_openai_client_free(c);
    return 0;
}

static int test_templates(void) {
    fp_openai_client *c;
    fp_judge *j = make_judge(&c, FP_JUDGE_FORMAT_AUTO);
    if (!j) return 0;
    const char *s[] = {"a", "b"};
    fp_judge_traj t[2] = {{"Q", s, 2, "@reply=template"}, {"Q", s, 2, "@400"}};
    char *out[2];
    int st[2];
    CHECK(fp_judge_templates(j, t, 2, out, st) == FP_EINVAL);
    CHECK(st[0] == FP_OK && out[0] && !strcmp(out[0], "1. Set up the equation.\n2. Solve and check."));
    CHECK(st[1] == FP_EINVAL && !out[1]);
    CHECK_MSG(strstr(fp_last_error(), "trajectory 1: template request failed: HTTP 400") != NULL, "%s", fp_last_error());
    free(out[0]);
    fp_judge_free(j);
    fp_openai_client_free(c);
    return 0;
}

static int test_rollouts(void) {
    fp_openai_opts o;
    fp_openai_opts_default(&o);
    o.base_url = url;
    o.cache_dir = NULL;
    o.max_retries = 0;
    fp_openai_client *c;
    CHECK_OK(fp_openai_client_new(&c, &o));
    fp_rollout_opts ro;
    fp_rollout_opts_default(&ro);
    ro.model = "policy";
    ro.n = 3;
    const char *qs[2] = {"Q1 @reply=template", "Q2 @400"}, *tm[2] = {"1. think", "2. think"};
    char *out[6];
    int st[6];
    int before = atomic_load(&srv.requests);
    CHECK(fp_template_rollouts(c, &ro, qs, tm, 2, out, st) == FP_EINVAL);
    CHECK(atomic_load(&srv.requests) - before == 6); /* seeds 0, 1, 2: three distinct requests per question */
    for (int k = 0; k < 3; k++) CHECK(st[k] == FP_OK && out[k] && strstr(out[k], "Solve and check"));
    for (int k = 3; k < 6; k++) CHECK(st[k] == FP_EINVAL && !out[k]);
    CHECK_MSG(strstr(fp_last_error(), "question 1 rollout 0: HTTP 400") != NULL, "%s", fp_last_error());
    for (int k = 0; k < 6; k++) free(out[k]);
    ro.n = 0;
    CHECK(fp_template_rollouts(c, &ro, qs, tm, 2, out, st) == FP_EINVAL);
    ro.n = 1;
    ro.prompt_path = write_file("roll_bad.txt", "only {question}");
    CHECK(fp_template_rollouts(c, &ro, qs, tm, 2, out, st) == FP_EPARSE);
    CHECK(strstr(fp_last_error(), "{template}") != NULL);
    fp_openai_client_free(c);
    return 0;
}

int main(void) {
    if (mock_start(&srv) != 0) { printf("cannot start the mock server\n"); return 1; }
    mock_url(&srv, url, sizeof url);
    RUN(test_render);
    RUN(test_parse_score);
    RUN(test_prompt_files);
    RUN(test_step_scores);
    RUN(test_fallback);
    RUN(test_templates);
    RUN(test_rollouts);
    mock_stop(&srv);
    return th_finish();
}
