/* Minimal test harness: each test binary prints one line per case and a final
 *   "RESULT <passed> <failed> <skipped>"
 * line that tests/run_tests.sh sums into "N passed, N failed, N skipped". */
#ifndef FP_TEST_HARNESS_H
#define FP_TEST_HARNESS_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int th_passed, th_failed, th_skipped, th_case_failed;
static const char *th_case;

#define CHECK(cond) do { if (!(cond)) { th_case_failed = 1; \
    fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); } } while (0)
#define CHECK_MSG(cond, ...) do { if (!(cond)) { th_case_failed = 1; \
    fprintf(stderr, "  %s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)
#define CHECK_NEAR(a, b, tol) do { double th_a = (a), th_b = (b); \
    if (!(fabs(th_a - th_b) <= (tol))) { th_case_failed = 1; \
    fprintf(stderr, "  %s:%d: |%s - %s| = |%.9g - %.9g| > %g\n", __FILE__, __LINE__, #a, #b, th_a, th_b, (double)(tol)); } } while (0)
#define CHECK_OK(expr) do { int th_rc = (expr); if (th_rc != 0) { th_case_failed = 1; \
    fprintf(stderr, "  %s:%d: %s returned %d: %s\n", __FILE__, __LINE__, #expr, th_rc, fp_last_error()); } } while (0)

/* Runs fn as one case.  fn returns 0 normally, or TH_SKIP to be counted as skipped. */
#define TH_SKIP 77
#define RUN(fn) th_run(#fn, fn)
static void th_run(const char *name, int (*fn)(void)) {
    th_case = name;
    th_case_failed = 0;
    int r = fn();
    if (r == TH_SKIP && !th_case_failed) { th_skipped++; printf("SKIP %s\n", name); }
    else if (th_case_failed || r != 0) { th_failed++; printf("FAIL %s\n", name); }
    else { th_passed++; printf("PASS %s\n", name); }
    fflush(stdout);
}
static int th_finish(void) {
    printf("RESULT %d %d %d\n", th_passed, th_failed, th_skipped);
    return th_failed ? 1 : 0;
}

/* ../shared next to the repository (override with FLUXPRM_SHARED).  Returns NULL when absent. */
__attribute__((unused)) static const char *th_shared(void) {
    static char path[4096];
    const char *env = getenv("FLUXPRM_SHARED");
    snprintf(path, sizeof path, "%s", env ? env : "../shared");
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? path : NULL;
}
/* A file under ../shared/data, or NULL (skip) when it is absent. */
__attribute__((unused)) static const char *th_shared_file(const char *rel) {
    static char path[8192];
    const char *root = th_shared();
    if (!root) return NULL;
    snprintf(path, sizeof path, "%s/data/%s", root, rel);
    struct stat st;
    if (stat(path, &st) != 0) return NULL;
    return path;
}
#define REQUIRE_SHARED(var, rel) const char *var = th_shared_file(rel); \
    if (!var) { printf("  (needs ../shared/data/%s)\n", rel); return TH_SKIP; }

/* The fluxprm binary under test (set by make test). */
__attribute__((unused)) static const char *th_bin(void) {
    const char *b = getenv("FLUXPRM_BIN");
    return b ? b : "build/fluxprm";
}
/* A scratch directory for this test binary (tests/tmp/<pid>), removed when it exits. */
static char th_tmp[256];
static void th_tmp_cleanup(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", th_tmp);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", th_tmp);
}
__attribute__((unused)) static const char *th_tmpdir(void) {
    if (!th_tmp[0]) {
        snprintf(th_tmp, sizeof th_tmp, "tests/tmp/%ld", (long)getpid());
        char cmd[300];
        snprintf(cmd, sizeof cmd, "mkdir -p %s", th_tmp);
        if (system(cmd) != 0) return "/tmp";
        atexit(th_tmp_cleanup);
    }
    return th_tmp;
}
#endif
