/* PRM input formatting: step splitting, record shapes, ChatML rendering vs HF apply_chat_template,
 * default system prompts from chat templates, thinking↔response alignment. */
#include "format/format.h"
#include "harness.h"

static int test_split_steps(void) {
    char **s;
    size_t n;
    CHECK_OK(fp_split_steps("a\n\nb\n\n\n\nc", &s, &n));
    CHECK(n == 3 && !strcmp(s[0], "a") && !strcmp(s[1], "b") && !strcmp(s[2], "c"));
    fp_free_strings(s, n);
    /* an odd number of newlines leaves the extra "\n" on the next piece, verbatim */
    CHECK_OK(fp_split_steps("a\n\n\nb", &s, &n));
    CHECK(n == 2 && !strcmp(s[1], "\nb"));
    fp_free_strings(s, n);
    CHECK_OK(fp_split_steps("\n\n  \n\n", &s, &n));
    CHECK(n == 0);
    fp_free_strings(s, n);
    CHECK_OK(fp_split_steps("single step\n", &s, &n));
    CHECK(n == 1 && !strcmp(s[0], "single step\n"));
    fp_free_strings(s, n);
    return 0;
}

static json_t *js(const char *text) {
    json_error_t e;
    json_t *j = json_loads(text, JSON_ALLOW_NUL, &e);
    if (!j) fprintf(stderr, "bad test json: %s\n", e.text);
    return j;
}

static int test_record_shapes(void) {
    fp_record r;
    json_t *j = js("{\"problem\":\"P\",\"steps\":[\"s1\",\"s2\"],\"label\":1}");
    CHECK_OK(fp_record_parse(&r, j, NULL));
    CHECK(!strcmp(r.question, "P") && r.n_steps == 2 && r.n_thinking == 0 && !r.system);
    fp_record_free(&r);
    json_decref(j);

    j = js("{\"prompt\":\"Q\",\"completions\":[\"c1\",\"c2\",\"c3\"],\"labels\":[true,true,false]}");
    CHECK_OK(fp_record_parse(&r, j, NULL));
    CHECK(r.n_steps == 3 && !strcmp(r.steps[2], "c3"));
    fp_record_free(&r);
    json_decref(j);

    j = js("{\"question\":\"Q\",\"thinking_trajectories\":[\"t1\\n\\nt2\",\"t3\"],\"attempt\":\"a1\\n\\na2\"}");
    CHECK_OK(fp_record_parse(&r, j, NULL));
    CHECK(r.n_steps == 5 && r.n_thinking == 3 && !strcmp(r.steps[2], "t3") && !strcmp(r.steps[4], "a2"));
    CHECK(r.response && !strcmp(r.response, "a1\n\na2"));
    fp_record_free(&r);
    fp_format_opts o = {.steps_from = FP_STEPS_RESPONSE};
    CHECK_OK(fp_record_parse(&r, j, &o));
    CHECK(r.n_steps == 2 && r.n_thinking == 0 && !strcmp(r.steps[0], "a1"));
    fp_record_free(&r);
    o.steps_from = FP_STEPS_THINKING;
    CHECK_OK(fp_record_parse(&r, j, &o));
    CHECK(r.n_steps == 3 && r.n_thinking == 3);
    fp_record_free(&r);
    json_decref(j);

    j = js("{\"question\":\"Q\",\"response\":\"<think>\\nx\\n\\ny\\n</think>\\n\\nfinal\",\"system\":\"S\"}");
    CHECK_OK(fp_record_parse(&r, j, NULL));
    CHECK(r.n_thinking == 2 && r.n_steps == 3 && !strcmp(r.steps[0], "\nx") && !strcmp(r.steps[2], "final"));
    CHECK(r.system && !strcmp(r.system, "S"));
    fp_record_free(&r);
    json_decref(j);

    j = js("{\"question\":\"Q\",\"thinking\":\"a\",\"response\":\"b\"}");
    CHECK_OK(fp_record_parse(&r, j, NULL));
    CHECK(r.n_steps == 2 && r.n_thinking == 1);
    fp_record_free(&r);
    json_decref(j);
    return 0;
}

static int test_record_errors(void) {
    fp_record r;
    struct { const char *json, *needle; } cases[] = {
        {"{\"steps\":[\"a\"]}", "missing question"},
        {"{\"question\":\"q\"}", "missing steps"},
        {"{\"question\":5,\"steps\":[\"a\"]}", "\"question\" must be a string"},
        {"{\"question\":\"q\",\"steps\":[\"a\",3]}", "\"steps\"[1] must be a string"},
        {"{\"question\":\"q\",\"steps\":\"a\"}", "\"steps\" must be an array"},
        {"{\"question\":\"q\",\"steps\":[]}", "no steps"},
        {"{\"question\":\"q\",\"response\":\"\\n\\n\"}", "no steps"},
        {"{\"question\":\"a\\u0000b\",\"steps\":[\"x\"]}", "NUL"},
        {"[1,2]", "not a JSON object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *j = js(cases[i].json);
        int rc = fp_record_parse(&r, j, NULL);
        CHECK_MSG(rc == FP_EINVAL && strstr(fp_last_error(), cases[i].needle), "case %zu: rc=%d msg=%s", i, rc,
                  fp_last_error());
        json_decref(j);
    }
    return 0;
}

/* Byte-for-byte against HF apply_chat_template (tests/ref/format/make_chatml_fixture.py). */
static int test_chatml_matches_hf(void) {
    REQUIRE_SHARED(tpl, "templates/qwen2.5-instruct.jinja");
    char *def_sys;
    CHECK_OK(fp_model_default_system(tpl, &def_sys));
    CHECK(def_sys && !strcmp(def_sys, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."));
    fp_jsonl_reader *rd;
    CHECK_OK(fp_jsonl_open(&rd, "tests/ref/format/chatml_qwen25.jsonl"));
    const char *line;
    size_t len;
    int n = 0;
    while (fp_jsonl_next_line(rd, &line, &len) == FP_OK) {
        json_t *j = js(line);
        fp_format_opts o = {.system = def_sys};
        fp_record r;
        CHECK_OK(fp_record_parse(&r, j, &o));
        fp_buf out = {0};
        CHECK_OK(fp_render_prm_chatml(&r, "<extra_0>", &out));
        const char *exp = json_string_value(json_object_get(j, "expected"));
        CHECK_MSG(exp && !strcmp(out.data, exp), "record %d differs:\n got %s\nwant %s", n, out.data, exp);
        fp_buf_free(&out);
        fp_record_free(&r);
        json_decref(j);
        n++;
    }
    fp_jsonl_close(rd);
    CHECK(n == 40);
    free(def_sys);
    return 0;
}

static int test_default_system(void) {
    char *s;
    CHECK_OK(fp_template_default_system("{{- '<|im_start|>system\\nLine one\\nIt\\'s <b>.<|im_end|>\\n' }}", &s));
    CHECK(s && !strcmp(s, "Line one\nIt's <b>."));
    free(s);
    /* a system turn built from the message content is not a default */
    CHECK_OK(fp_template_default_system("{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}", &s));
    CHECK(s == NULL);
    REQUIRE_SHARED(tokdir, "tokenizer/qwen2/tokenizer_config.json");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", tokdir);
    *strrchr(dir, '/') = 0;
    CHECK_OK(fp_model_default_system(dir, &s)); /* the Qwen3 template injects no system prompt */
    CHECK(s == NULL);
    return 0;
}

static int test_plain_render(void) {
    json_t *j = js("{\"question\":\"Q? \",\"steps\":[\"a\",\"b\"]}");
    fp_record r;
    CHECK_OK(fp_record_parse(&r, j, NULL));
    fp_buf out = {0};
    CHECK_OK(fp_render_plain(&r, &out));
    CHECK(!strcmp(out.data, "Q? a\n\nb"));
    fp_buf_free(&out);
    fp_record_free(&r);
    json_decref(j);
    return 0;
}

static int test_alignment(void) {
    /* thinking has a surplus step "compute the sum carefully" that belongs with the sum step */
    char *th[] = {"first read the numbers 3 and 4", "add 3 and 4 to get the sum 7", "compute the sum carefully 7",
                  "so the answer is 7"};
    char *re[] = {"numbers 3 and 4", "sum 3 and 4 is 7", "answer 7"};
    char **m;
    size_t n, *start;
    CHECK_OK(fp_align_thinking(th, 4, re, 3, NULL, NULL, &m, &n, &start));
    CHECK(n == 3);
    CHECK(start[0] == 0 && start[1] == 1 && start[2] == 3);
    CHECK(!strcmp(m[1], "add 3 and 4 to get the sum 7\n\ncompute the sum carefully 7"));
    fp_free_strings(m, n);
    free(start);
    /* T <= M: unchanged */
    CHECK_OK(fp_align_thinking(th, 2, re, 3, NULL, NULL, &m, &n, &start));
    CHECK(n == 2 && !strcmp(m[0], th[0]) && start[1] == 1);
    fp_free_strings(m, n);
    free(start);
    /* surplus steps with no lexical signal merge at the end (ties go to the last pair) */
    char *th2[] = {"x", "y", "z", "w"};
    char *re2[] = {"x"};
    CHECK_OK(fp_align_thinking(th2, 4, re2, 1, NULL, NULL, &m, &n, &start));
    CHECK(n == 1 && !strcmp(m[0], "x\n\ny\n\nz\n\nw"));
    fp_free_strings(m, n);
    free(start);
    CHECK_NEAR(fp_lexical_similarity("The cat sat", "the CAT", NULL), 2.0 / 3.0, 1e-12);
    return 0;
}

int main(void) {
    RUN(test_split_steps);
    RUN(test_record_shapes);
    RUN(test_record_errors);
    RUN(test_chatml_matches_hf);
    RUN(test_default_system);
    RUN(test_plain_render);
    RUN(test_alignment);
    return th_finish();
}
