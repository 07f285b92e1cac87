/* `fluxprm judge` end to end against the in-process mock server: s1K and plain records, per-step errors in
 * the output, templates, exit codes, and a rerun that is served from the cache. */
#include "fluxprm.h"
#include "harness.h"
#include "mock_server.h"
#include <jansson.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

static mock_server srv;
static char url[128];

static int run(const char *args, char *out_path_buf, size_t n, const char *name) {
    snprintf(out_path_buf, n, "%s/%s", th_tmpdir(), name);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s judge --base-url %s --model mock --api-key-env FLUXPRM_TEST_UNSET %s -o %s 2>%s.err",
             th_bin(), url, args, out_path_buf, out_path_buf);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static json_t *line_at(const char *path, int k) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    char buf[65536];
    json_t *r = NULL;
    for (int i = 0; i <= k && fgets(buf, sizeof buf, f); i++)
        if (i == k) r = json_loads(buf, 0, NULL);
    fclose(f);
    return r;
}

static int test_cli_judge(void) {
    char in[512], out[512], cache[512];
    snprintf(in, sizeof in, "%s/in.jsonl", th_tmpdir());
    snprintf(cache, sizeof cache, "%s/cache", th_tmpdir());
    FILE *f = fopen(in, "w");
    fputs("{\"id\":1,\"question\":\"Q1\",\"thinking_trajectories\":[\"t1 @reply=7\\n\\nt2\"],\"attempt\":\"A1 @reply=template\"}\n", f);
    fputs("{\"id\":2,\"question\":\"Q2\",\"steps\":[\"s1\",\"s2 @reply=bad\"]}\n", f);
    fclose(f);
    char args[2048];
    snprintf(args, sizeof args, "--cache %s --templates --batch 1 --retries 0 %s", cache, in);
    /* our step prompt that marks the graded step for the mock */
    char sp[512];
    snprintf(sp, sizeof sp, "%s/step.txt", th_tmpdir());
    f = fopen(sp, "w");
    fputs("Q {question} PREV {previous_steps} STEP<<{step}>> RESP {response}\n", f);
    fclose(f);
    char args2[3000];
    snprintf(args2, sizeof args2, "--step-prompt %s %s", sp, args);
    int before = atomic_load(&srv.requests);
    int rc = run(args2, out, sizeof out, "out1.jsonl");
    CHECK_MSG(rc == 1, "exit %d (one step fails to parse: expected 1)", rc);
    int sent = atomic_load(&srv.requests) - before;
    CHECK_MSG(sent == 2 + 1 + 2 + 1, "server saw %d requests", sent); /* 2 steps + template, twice */
    json_t *r1 = line_at(out, 0), *r2 = line_at(out, 1);
    CHECK(r1 && r2);
    if (r1 && r2) {
        CHECK(json_integer_value(json_object_get(r1, "id")) == 1);
        json_t *s1 = json_object_get(r1, "judge_scores");
        CHECK(json_array_size(s1) == 2 && json_number_value(json_array_get(s1, 0)) == 7 &&
              json_number_value(json_array_get(s1, 1)) == 5);
        CHECK(!json_object_get(r1, "judge_errors"));
        const char *tm = json_string_value(json_object_get(r1, "judge_template"));
        CHECK(tm && strstr(tm, "Set up the equation"));
        json_t *s2 = json_object_get(r2, "judge_scores");
        CHECK(json_array_size(s2) == 2 && json_number_value(json_array_get(s2, 0)) == 5 && json_is_null(json_array_get(s2, 1)));
        json_t *e2 = json_object_get(r2, "judge_errors");
        CHECK(json_is_null(json_array_get(e2, 0)));
        const char *msg = json_string_value(json_array_get(e2, 1));
        CHECK_MSG(msg && strstr(msg, "step 2: judge reply is not JSON"), "%s", msg ? msg : "(none)");
    }
    json_decref(r1);
    json_decref(r2);
    /* rerun: everything answered before comes from the cache */
    before = atomic_load(&srv.requests);
    rc = run(args2, out, sizeof out, "out2.jsonl");
    CHECK(rc == 1);
    CHECK_MSG(atomic_load(&srv.requests) == before, "rerun sent %d requests", atomic_load(&srv.requests) - before);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "grep -q 'cache hits 6, sent 0' %s/out2.jsonl.err", th_tmpdir());
    CHECK(system(cmd) == 0);
    /* usage errors */
    snprintf(cmd, sizeof cmd, "%s judge %s 2>/dev/null", th_bin(), in);
    rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2);
    snprintf(cmd, sizeof cmd, "%s judge --model m --concurrency 0 %s 2>/dev/null", th_bin(), in);
    rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2);
    /* a bad record stops the run (exit 1), --skip-bad skips it */
    f = fopen(in, "a");
    fputs("{\"question\": 5}\n", f);
    fclose(f);
    rc = run(args2, out, sizeof out, "out3.jsonl");
    CHECK(rc == 1);
    snprintf(args2, sizeof args2, "--step-prompt %s --skip-bad %s", sp, args);
    rc = run(args2, out, sizeof out, "out4.jsonl");
    CHECK(rc == 1); /* still 1: the bad step */
    snprintf(cmd, sizeof cmd, "test $(wc -l < %s) -eq 2 && grep -q skipped %s.err", out, out);
    CHECK(system(cmd) == 0);
    return 0;
}

static int count_cache_files(const char *dir) {
    char cmd[700];
    snprintf(cmd, sizeof cmd, "find %s -name '*.json' 2>/dev/null | wc -l", dir);
    FILE *p = popen(cmd, "r");
    int n = -1;
    if (p) { if (fscanf(p, "%d", &n) != 1) n = -1; pclose(p); }
    return n;
}

/* kill -9 in the middle of a run: every answer received before the kill is in the cache, and the rerun asks
 * the server only for the rest. */
static int test_crash_resume(void) {
    char in[512], out[512], cache[512], sp[512];
    snprintf(in, sizeof in, "%s/crash.jsonl", th_tmpdir());
    snprintf(out, sizeof out, "%s/crash_out.jsonl", th_tmpdir());
    snprintf(cache, sizeof cache, "%s/crash_cache", th_tmpdir());
    snprintf(sp, sizeof sp, "%s/crash_step.txt", th_tmpdir());
    FILE *f = fopen(sp, "w");
    fputs("Q {question} STEP<<{step}>> RESP {response}\n", f);
    fclose(f);
    f = fopen(in, "w");
    fputs("{\"question\":\"Q\",\"steps\":[\"@hold 1\",\"@hold 2\",\"@hold 3\",\"@hold 4\",\"@hold 5\",\"@hold 6\","
          "\"@hold 7\",\"@hold 8\"]}\n", f);
    fclose(f);
    int before = atomic_load(&srv.requests);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 2);
        execl(th_bin(), th_bin(), "judge", "--base-url", url, "--model", "mock", "--api-key-env", "FLUXPRM_TEST_UNSET",
              "--concurrency", "2", "--cache", cache, "--step-prompt", sp, "-o", out, in, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 300 && count_cache_files(cache) < 2; i++) usleep(10000);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    int answered = count_cache_files(cache);
    int sent1 = atomic_load(&srv.requests) - before;
    CHECK_MSG(answered >= 2 && answered < 8, "%d answers cached before the kill", answered);
    struct stat st;
    CHECK(stat(out, &st) != 0); /* no half-written output under the real name */
    before = atomic_load(&srv.requests);
    char args[2048], o2[512];
    snprintf(args, sizeof args, "--concurrency 2 --cache %s --step-prompt %s %s", cache, sp, in);
    int rc = run(args, o2, sizeof o2, "crash_out2.jsonl");
    CHECK_MSG(rc == 0, "rerun exit %d", rc);
    int sent2 = atomic_load(&srv.requests) - before;
    printf("  killed after %d answers (%d requests sent); the rerun sent %d\n", answered, sent1, sent2);
    CHECK_MSG(sent2 == 8 - answered, "rerun sent %d requests, expected %d", sent2, 8 - answered);
    json_t *r = line_at(o2, 0);
    CHECK(r && json_array_size(json_object_get(r, "judge_scores")) == 8);
    json_decref(r);
    return 0;
}

int main(void) {
    if (access(th_bin(), X_OK) != 0) { printf("SKIP test_cli_judge (no %s)\nRESULT 0 0 1\n", th_bin()); return 0; }
    if (mock_start(&srv) != 0) { printf("cannot start the mock server\n"); return 1; }
    mock_url(&srv, url, sizeof url);
    RUN(test_cli_judge);
    RUN(test_crash_resume);
    mock_stop(&srv);
    return th_finish();
}
