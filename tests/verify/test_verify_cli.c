/* Smoke tests of `fluxprm verify`: output fields, options, exit codes and error messages. */
#include "fluxprm.h"
#include "harness.h"
#include <jansson.h>
#include <sys/wait.h>

static char tmp_in[512], tmp_out[512], tmp_err[512];

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return strdup("");
    char *buf = malloc(1 << 16);
    size_t n = fread(buf, 1, (1 << 16) - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

/* Runs `fluxprm verify <args>` with stdout/stderr to files; returns the exit status (-1 if it crashed). */
static int run_verify(const char *args) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' verify %s >'%s' 2>'%s'", th_bin(), args, tmp_out, tmp_err);
    int st = system(cmd);
    if (st == -1 || !WIFEXITED(st)) return -1;
    return WEXITSTATUS(st);
}

static void setup(void) {
    const char *d = th_tmpdir();
    snprintf(tmp_in, sizeof tmp_in, "%s/verify_in.jsonl", d);
    snprintf(tmp_out, sizeof tmp_out, "%s/verify_out.jsonl", d);
    snprintf(tmp_err, sizeof tmp_err, "%s/verify_err.txt", d);
}

static int test_fields(void) {
    write_file(tmp_in,
               "{\"id\": 1, \"response\": \"We get $\\\\boxed{\\\\dfrac{1}{2}}$.\", \"gold\": \"0.5\"}\n"
               "\n"
               "{\"id\": 2, \"response\": \"3 + 4 = 7\\nA: 7\", \"gold\": \"so 7\\n#### 8\"}\n"
               "{\"id\": 3, \"response\": \"I could not solve this problem today\", \"gold\": 5}\n"
               "{\"id\": 4, \"response\": \"(1, 2)\", \"gold\": \"\\\\left(1,2\\\\right)\"}\n");
    int rc = run_verify(tmp_in);
    CHECK_MSG(rc == 0, "exit %d", rc);
    char *out = slurp(tmp_out);
    static const int want_correct[] = {1, 0, 0, 1};
    static const char *want_rule[] = {"boxed", "answer_is", "none", "bare"};
    int n = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"), n++) {
        json_error_t err;
        json_t *o = json_loads(line, 0, &err);
        CHECK_MSG(o != NULL, "output line %d not JSON: %s", n + 1, line);
        if (!o || n >= 4) { json_decref(o); continue; }
        CHECK(json_integer_value(json_object_get(o, "id")) == n + 1); /* original fields kept, in order */
        CHECK(json_is_boolean(json_object_get(o, "correct")));
        CHECK_MSG(json_is_true(json_object_get(o, "correct")) == want_correct[n], "record %d", n + 1);
        const char *rule = json_string_value(json_object_get(o, "rule"));
        CHECK_MSG(rule && !strcmp(rule, want_rule[n]), "record %d rule %s", n + 1, rule ? rule : "(null)");
        json_t *ex = json_object_get(o, "extracted");
        CHECK(ex != NULL);
        if (n == 0) CHECK(json_is_string(ex) && !strcmp(json_string_value(ex), "\\dfrac{1}{2}"));
        if (n == 2) CHECK(json_is_null(ex));
        json_decref(o);
    }
    CHECK(n == 4);
    free(out);
    char *err = slurp(tmp_err);
    CHECK_MSG(strstr(err, "4 records, 2 correct") != NULL, "summary: %s", err);
    free(err);
    return 0;
}

static int test_custom_fields_and_stdin(void) {
    write_file(tmp_in, "{\"solution\": \"The answer is 1,000.\", \"answer\": \"1000\"}\n");
    char args[1200];
    snprintf(args, sizeof args, "--pred-field solution --gold-field=answer -q - <'%s'", tmp_in);
    int rc = run_verify(args);
    CHECK_MSG(rc == 0, "exit %d", rc);
    char *out = slurp(tmp_out);
    CHECK_MSG(strstr(out, "\"correct\":true") != NULL, "%s", out);
    free(out);
    char *err = slurp(tmp_err);
    CHECK_MSG(err[0] == 0, "--quiet printed: %s", err);
    free(err);
    return 0;
}

static int test_bad_json(void) {
    write_file(tmp_in, "{\"response\": \"5\", \"gold\": \"5\"}\n{not json\n{\"response\": \"6\", \"gold\": \"6\"}\n");
    int rc = run_verify(tmp_in);
    CHECK_MSG(rc == 1, "exit %d", rc);
    char *err = slurp(tmp_err);
    char want[600];
    snprintf(want, sizeof want, "%s:2:", tmp_in);
    CHECK_MSG(strstr(err, want) != NULL, "message lacks file:line: %s", err);
    free(err);
    /* --skip-bad: the bad line is skipped, the rest is processed */
    char args[600];
    snprintf(args, sizeof args, "--skip-bad '%s'", tmp_in);
    rc = run_verify(args);
    CHECK_MSG(rc == 0, "exit %d", rc);
    char *out = slurp(tmp_out);
    int lines = 0;
    for (char *p = out; *p; p++) lines += *p == '\n';
    CHECK(lines == 2);
    free(out);
    err = slurp(tmp_err);
    CHECK_MSG(strstr(err, want) != NULL && strstr(err, "1 skipped"), "%s", err);
    free(err);
    return 0;
}

static int test_missing_field(void) {
    write_file(tmp_in, "{\"response\": \"5\", \"gold\": \"5\"}\n{\"response\": \"5\"}\n");
    int rc = run_verify(tmp_in);
    CHECK_MSG(rc == 1, "exit %d", rc);
    char *err = slurp(tmp_err);
    char want[600];
    snprintf(want, sizeof want, "%s:2:", tmp_in);
    CHECK_MSG(strstr(err, want) && strstr(err, "'gold'"), "message lacks file:line or field: %s", err);
    free(err);
    return 0;
}

static int test_usage(void) {
    CHECK(run_verify("--no-such-flag") == 2);
    CHECK(run_verify("--pred-field") == 2);
    CHECK(run_verify("a.jsonl b.jsonl") == 2);
    CHECK(run_verify("--help") == 0);
    char *out = slurp(tmp_out);
    CHECK(strstr(out, "--pred-field") && strstr(out, "--skip-bad"));
    free(out);
    CHECK(run_verify("tests/verify/does-not-exist.jsonl") == 1);
    return 0;
}

int main(void) {
    setup();
    RUN(test_fields);
    RUN(test_custom_fields_and_stdin);
    RUN(test_bad_json);
    RUN(test_missing_field);
    RUN(test_usage);
    return th_finish();
}
