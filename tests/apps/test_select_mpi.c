/* fluxprm select under MPI: `mpirun -np P fluxprm select ...` must give the single-process result exactly.
 *
 * Every case runs the same selection twice, once in one process and once under mpirun, and compares the
 * output bytes, the SVG bytes and the summary (all but output.path), or through the library (this binary
 * re-runs itself under mpirun as a worker) every statistic bit for bit, histogram included.  The pools have
 * many exact ties, blank lines, lines of very different lengths and, in one, a line longer than a rank's
 * share of the file, so ranges start mid-line, coincide or are empty.
 *
 * Skipped (visibly) unless the build defines FP_WITH_MPI (`make MPI=1`) and `mpirun` is on PATH.  The
 * launcher is `mpirun --allow-run-as-root --oversubscribe` unless FLUXPRM_MPIRUN says otherwise. */
#include "apps/select.h"
#include "harness.h"
#include "tiny_models.h"
#include <jansson.h>
#include <stdint.h>
#include <sys/wait.h>

#ifdef FP_WITH_MPI
#define HAVE_MPI 1
#else
#define HAVE_MPI 0
#endif

/* ---- helpers (kept local: this file does not depend on the other select tests) */
static const char *launcher(void) {
    const char *l = getenv("FLUXPRM_MPIRUN");
    return l && *l ? l : "mpirun --allow-run-as-root --oversubscribe";
}

/* 1 when MPI runs can be tested here; otherwise prints why and returns 0. */
static int mpi_ready(void) {
    if (!HAVE_MPI) {
        printf("  (needs a `make MPI=1` build: FP_WITH_MPI is not defined)\n");
        return 0;
    }
    if (system("command -v mpirun >/dev/null 2>&1") != 0) {
        printf("  (needs mpirun on PATH: scripts/install-deps.sh --mpi)\n");
        return 0;
    }
    return 1;
}

static int sh(const char *cmd) {
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* `[LAUNCHER -np P] fluxprm select ARGS 2>ERR`; np = 0: one process, no launcher. */
static int run_select(int np, const char *args, const char *err) {
    char cmd[8192];
    if (np > 0)
        snprintf(cmd, sizeof cmd, "%s -np %d %s select %s 2>%s", launcher(), np, th_bin(), args, err);
    else
        snprintf(cmd, sizeof cmd, "%s select %s 2>%s", th_bin(), args, err);
    return sh(cmd);
}

static char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)len + 1);
    size_t got = fread(s, 1, (size_t)len, f);
    s[got] = 0;
    fclose(f);
    if (n) *n = got;
    return s;
}

static int same_bytes(const char *a, const char *b) {
    size_t na, nb;
    char *x = read_all(a, &na), *y = read_all(b, &nb);
    int same = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

/* The summaries agree except for output.path (the two runs write different files). */
static int same_summary(const char *a, const char *b) {
    json_t *x = json_load_file(a, 0, NULL), *y = json_load_file(b, 0, NULL);
    int same = 0;
    if (x && y) {
        json_object_set_new(json_object_get(x, "output"), "path", json_null());
        json_object_set_new(json_object_get(y, "output"), "path", json_null());
        same = json_equal(x, y);
    }
    json_decref(x);
    json_decref(y);
    return same;
}

static uint64_t mix(uint64_t *s) { /* xorshift64*: a small generator of this test's own */
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s * 0x2545f4914f6cdd1dULL;
}

/* n records {"id", "score"} with ~16 distinct r̂ values (ties everywhere), three score shapes, padding of
 * 0..400 bytes, blank lines, some CRLF lines; dyadic = 0 gives scores like k/7, whose sums depend on the order. */
static void make_pool(const char *path, long n, int dyadic) {
    FILE *f = fopen(path, "w");
    uint64_t s = 0x9e3779b97f4a7c15ULL;
    for (long i = 0; i < n; i++) {
        uint64_t r = mix(&s);
        double a = dyadic ? (double)(r % 8) / 8.0 : (double)(r % 8) / 7.0;
        double b = (double)((r >> 8) % 2) / 2.0;
        int pad = (int)((r >> 16) % 401);
        const char *eol = (r >> 30) % 11 == 0 ? "\r\n" : "\n";
        switch ((r >> 40) % 3) {
        case 0: fprintf(f, "{\"id\":%ld,\"score\":%.17g,\"pad\":\"%*s\"}%s", i, a, pad, "", eol); break;
        case 1: fprintf(f, "{\"id\":%ld,\"score\":[%.17g,%.17g]}%s", i, a, b, eol); break;
        default: fprintf(f, "{\"id\":%ld,\"pad\":\"%*s\",\"score\":{\"steps\":[%.17g],\"final\":%.17g}}%s", i, pad, "", a, b, eol);
        }
        if (i % 53 == 0) fputs("\n \t \n", f);
    }
    fclose(f);
}

/* ---- the CLI: outputs, histograms and summaries of 1 and 3 processes are identical */
static int test_cli_identical(void) {
    if (!mpi_ready()) return TH_SKIP;
    const char *d = th_tmpdir();
    char pool[512], err[512], o1[512], o2[512], s1[512], s2[512], h1[512], h2[512], args[4096];
    snprintf(pool, sizeof pool, "%s/pool.jsonl", d);
    snprintf(err, sizeof err, "%s/err.txt", d);
    snprintf(o1, sizeof o1, "%s/one.jsonl", d);
    snprintf(o2, sizeof o2, "%s/mpi.jsonl", d);
    snprintf(s1, sizeof s1, "%s/one.json", d);
    snprintf(s2, sizeof s2, "%s/mpi.json", d);
    snprintf(h1, sizeof h1, "%s/one.svg", d);
    snprintf(h2, sizeof h2, "%s/mpi.svg", d);
    const long n = 2500;
    make_pool(pool, n, 0);
    const char *cases[] = {
        "--top-k 1", "--top-k 1 --order score", "--top-k 7", "--top-k 7 --order score",
        "--top-k 2500 --order input", "--top-k 9999 --order score", "--top-frac 0.1", "--top-frac 0.0001 --order score",
        "--top-k 40 --order score --annotate --alpha 0.5 --aggregate min", "--top-frac 0.33 --annotate --bins 7",
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        snprintf(args, sizeof args, "%s --quiet --summary %s --histogram %s -o %s %s", cases[c], s1, h1, o1, pool);
        CHECK(run_select(0, args, err) == 0);
        snprintf(args, sizeof args, "%s --quiet --summary %s --histogram %s -o %s %s", cases[c], s2, h2, o2, pool);
        int rc = run_select(3, args, err);
        CHECK_MSG(rc == 0, "case '%s': mpirun exit %d", cases[c], rc);
        CHECK_MSG(same_bytes(o1, o2), "case '%s': outputs differ", cases[c]);
        CHECK_MSG(same_bytes(h1, h2), "case '%s': histograms differ", cases[c]);
        CHECK_MSG(same_summary(s1, s2), "case '%s': summaries differ", cases[c]);
        json_t *j = json_load_file(s2, 0, NULL);
        long kept = (long)json_integer_value(json_object_get(j, "kept"));
        CHECK(json_integer_value(json_object_get(j, "n_records")) == n && kept >= 1 && kept <= n);
        json_decref(j);
    }
    /* mpirun -np 1 is the single-process path */
    snprintf(args, sizeof args, "--top-k 7 --order score --quiet --summary %s --histogram %s -o %s %s", s1, h1, o1, pool);
    CHECK(run_select(0, args, err) == 0);
    snprintf(args, sizeof args, "--top-k 7 --order score --quiet --summary %s --histogram %s -o %s %s", s2, h2, o2, pool);
    CHECK(run_select(1, args, err) == 0);
    CHECK(same_bytes(o1, o2) && same_bytes(h1, h2) && same_summary(s1, s2));
    return 0;
}

/* ---- bad records: the same first error (file:line) and exit code; --skip-bad: same output and reports */
static int test_cli_errors(void) {
    if (!mpi_ready()) return TH_SKIP;
    const char *d = th_tmpdir();
    char pool[512], err[512], o1[512], o2[512], args[4096];
    snprintf(pool, sizeof pool, "%s/bad.jsonl", d);
    snprintf(err, sizeof err, "%s/bad_err.txt", d);
    snprintf(o1, sizeof o1, "%s/bad_one.jsonl", d);
    snprintf(o2, sizeof o2, "%s/bad_mpi.jsonl", d);
    FILE *f = fopen(pool, "w");
    for (int i = 0; i < 900; i++) {
        if (i == 500) fputs("{\"id\":500,\"score\":\"high\"}\n", f);       /* line 501, in the middle rank */
        else if (i == 850) fputs("{\"id\":850,\"score\":[]}\n", f);       /* line 851, in the last rank */
        else fprintf(f, "{\"id\":%d,\"score\":%d}\n", i, (i * 7) % 13);
    }
    fclose(f);
    snprintf(args, sizeof args, "--top-k 5 -o %s %s", o2, pool);
    CHECK(run_select(3, args, err) != 0);
    char *e = read_all(err, NULL);
    char want[600], later[600];
    snprintf(want, sizeof want, "%s:501:", pool);
    snprintf(later, sizeof later, "%s:851:", pool);
    CHECK_MSG(e && strstr(e, want) && strstr(e, "'score'"), "stderr: %s", e ? e : "");
    CHECK_MSG(e && !strstr(e, later), "stderr names a later error: %s", e ? e : "");
    free(e);
    CHECK(access(o2, F_OK) != 0); /* no partial output */
    /* --skip-bad: identical output, the same two reports (ranks may interleave them) */
    char e1[512];
    snprintf(e1, sizeof e1, "%s/bad_err1.txt", d);
    snprintf(args, sizeof args, "--top-k 5 --skip-bad --order score -o %s %s", o1, pool);
    CHECK(run_select(0, args, e1) == 0);
    snprintf(args, sizeof args, "--top-k 5 --skip-bad --order score -o %s %s", o2, pool);
    CHECK(run_select(3, args, err) == 0);
    CHECK(same_bytes(o1, o2));
    e = read_all(err, NULL);
    CHECK(e && strstr(e, want) && strstr(e, later) && strstr(e, "2 skipped"));
    free(e);
    /* usage errors: exit 2, reported once */
    snprintf(args, sizeof args, "--top-k 0 %s", pool);
    CHECK(run_select(3, args, err) == 2);
    e = read_all(err, NULL);
    const char *p1 = e ? strstr(e, "--top-k needs") : NULL;
    CHECK(p1 && !strstr(p1 + 1, "--top-k needs"));
    free(e);
    return 0;
}

/* ---- --resume: a result written by one process is complete for the MPI run, and vice versa */
static int test_cli_resume(void) {
    if (!mpi_ready()) return TH_SKIP;
    const char *d = th_tmpdir();
    char pool[512], err[512], out[512], ref[512], args[4096];
    snprintf(pool, sizeof pool, "%s/rpool.jsonl", d);
    snprintf(err, sizeof err, "%s/rerr.txt", d);
    snprintf(out, sizeof out, "%s/rsel.jsonl", d);
    snprintf(ref, sizeof ref, "%s/rref.jsonl", d);
    make_pool(pool, 700, 1);
    snprintf(args, sizeof args, "--top-k 9 --resume -o %s %s", out, pool);
    CHECK(run_select(0, args, err) == 0);
    CHECK(run_select(3, args, err) == 0);
    char *e = read_all(err, NULL);
    CHECK(e && strstr(e, "nothing to do"));
    free(e);
    snprintf(args, sizeof args, "--top-k 10 --resume -o %s %s", out, pool);
    CHECK(run_select(3, args, err) == 0);
    e = read_all(err, NULL);
    CHECK(e && !strstr(e, "nothing to do"));
    free(e);
    CHECK(run_select(0, args, err) == 0);
    e = read_all(err, NULL);
    CHECK(e && strstr(e, "nothing to do"));
    free(e);
    snprintf(args, sizeof args, "--top-k 10 -o %s %s", ref, pool);
    CHECK(run_select(0, args, err) == 0);
    CHECK(same_bytes(out, ref));
    return 0;
}

/* ---- --model: every rank loads the PRM and scores its own records (tiny fixture PRM; needs ../shared) */
static int test_cli_model(void) {
    if (!mpi_ready()) return TH_SKIP;
    const char *prm;
    int s = th_tiny_prm_dirs(&prm, NULL);
    if (s == TH_SKIP) printf("  (needs the Qwen2 tokenizer and chat template under ../shared/data)\n");
    if (s) return s == TH_SKIP ? TH_SKIP : 1;
    const char *d = th_tmpdir();
    char pool[512], err[512], o1[512], o2[512], s1[512], s2[512], args[4096];
    snprintf(pool, sizeof pool, "%s/mpool.jsonl", d);
    snprintf(err, sizeof err, "%s/merr.txt", d);
    snprintf(o1, sizeof o1, "%s/m_one.jsonl", d);
    snprintf(o2, sizeof o2, "%s/m_mpi.jsonl", d);
    snprintf(s1, sizeof s1, "%s/m_one.json", d);
    snprintf(s2, sizeof s2, "%s/m_mpi.json", d);
    char *recs = read_all(TINY_REF "/records.jsonl", NULL);
    CHECK(recs != NULL);
    if (!recs) return 0;
    FILE *f = fopen(pool, "w");
    for (int copy = 0; copy < 4; copy++) fputs(recs, f); /* copies score alike: ties across ranks */
    fclose(f);
    free(recs);
    const char *cases[] = {"--top-k 5 --order score --annotate", "--top-frac 0.5"};
    for (int c = 0; c < 2; c++) {
        snprintf(args, sizeof args, "--model %s --step-token-id 151651 --threads 1 %s --quiet --summary %s -o %s %s", prm,
                 cases[c], s1, o1, pool);
        CHECK(run_select(0, args, err) == 0);
        snprintf(args, sizeof args, "--model %s --step-token-id 151651 --threads 1 %s --quiet --summary %s -o %s %s", prm,
                 cases[c], s2, o2, pool);
        CHECK(run_select(3, args, err) == 0);
        CHECK_MSG(same_bytes(o1, o2), "case '%s': outputs differ", cases[c]);
        CHECK_MSG(same_summary(s1, s2), "case '%s': summaries differ", cases[c]);
    }
    /* a model that cannot be loaded stops every rank, reported once */
    snprintf(args, sizeof args, "--model %s/nonexistent --top-k 1 -o %s %s", d, o2, pool);
    CHECK(run_select(3, args, err) == 1);
    return 0;
}

/* ---- the library, bit for bit: this binary as an MPI worker vs fp_select_run in this process */
static void stats_text(const fp_select_stats *st, char *buf, size_t cap) {
    int n = snprintf(buf, cap, "%ld %ld %ld %ld %ld %ld %zu %a %a %a %a %a %a %a %zu %a %a %llu %lld |", st->n_records,
                     st->n_scored, st->n_skipped, st->n_kept, st->n_dropped, st->k, st->heap_peak, st->min, st->max,
                     st->mean, st->kept_min, st->kept_max, st->kept_mean, st->threshold, st->bins, st->hist_lo,
                     st->hist_hi, (unsigned long long)st->in_size, (long long)st->in_mtime_ns);
    for (size_t b = 0; st->hist_all && b < st->bins && n > 0 && (size_t)n < cap; b++)
        n += snprintf(buf + n, cap - (size_t)n, " %ld/%ld", st->hist_all[b], st->hist_kept[b]);
}

static void worker_opts(fp_select_opts *o, long k, double frac, int order, int annotate, long bins) {
    fp_select_opts_default(o);
    o->top_k = k;
    o->top_frac = frac;
    o->order = order;
    o->annotate = annotate;
    o->bins = (size_t)bins;
}

/* argv: --mpi-worker POOL OUT STATS K FRAC ORDER ANNOTATE BINS */
static int worker(char **argv) {
    int rank, size;
    if (fp_select_mpi_init(&rank, &size)) return 3;
    fp_select_opts o;
    worker_opts(&o, atol(argv[5]), atof(argv[6]), atoi(argv[7]), atoi(argv[8]), atol(argv[9]));
    FILE *out = rank == 0 ? fopen(argv[3], "w") : NULL;
    fp_select_stats st;
    int rc = fp_select_run_mpi(&o, argv[2], out, &st);
    if (out) fclose(out);
    if (rank == 0) {
        FILE *f = fopen(argv[4], "w");
        static char buf[1 << 16];
        if (rc) snprintf(buf, sizeof buf, "error %d: %s", rc, fp_last_error());
        else stats_text(&st, buf, sizeof buf);
        fprintf(f, "size %d\n%s\n", size, buf);
        fclose(f);
    }
    if (!rc) fp_select_stats_free(&st);
    fp_select_mpi_finalize();
    return rc ? 1 : 0;
}

static int compare_library(const char *pool, int np, long k, double frac, int order, int annotate, long bins) {
    const char *d = th_tmpdir();
    char out1[512], out2[512], stats[512], err[512], self[4096], cmd[16384];
    snprintf(out1, sizeof out1, "%s/lib_one.jsonl", d);
    snprintf(out2, sizeof out2, "%s/lib_mpi.jsonl", d);
    snprintf(stats, sizeof stats, "%s/lib_stats.txt", d);
    snprintf(err, sizeof err, "%s/lib_err.txt", d);
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return 0;
    self[n] = 0;
    fp_select_opts o;
    worker_opts(&o, k, frac, order, annotate, bins);
    fp_select_stats st;
    FILE *f = fopen(out1, "w");
    int rc = fp_select_run(&o, pool, f, &st);
    fclose(f);
    CHECK_OK(rc);
    if (rc) return 0;
    static char want[1 << 16];
    int w = snprintf(want, sizeof want, "size %d\n", np);
    stats_text(&st, want + w, sizeof want - (size_t)w);
    strncat(want, "\n", sizeof want - strlen(want) - 1);
    fp_select_stats_free(&st);
    snprintf(cmd, sizeof cmd, "%s -np %d %s --mpi-worker %s %s %s %ld %.17g %d %d %ld 2>%s", launcher(), np, self, pool,
             out2, stats, k, frac, order, annotate, bins, err);
    CHECK_MSG(sh(cmd) == 0, "worker np=%d failed (see %s)", np, err);
    char *got = read_all(stats, NULL);
    CHECK_MSG(got && !strcmp(got, want), "np=%d k=%ld frac=%g order=%d:\n  one: %s  mpi: %s", np, k, frac, order, want,
              got ? got : "(none)\n");
    free(got);
    CHECK_MSG(same_bytes(out1, out2), "np=%d k=%ld: outputs differ", np, k);
    return 0;
}

static int test_library_bitwise(void) {
    if (!mpi_ready()) return TH_SKIP;
    const char *d = th_tmpdir();
    char pool[512], edge[512];
    snprintf(pool, sizeof pool, "%s/lib_pool.jsonl", d);
    snprintf(edge, sizeof edge, "%s/lib_edge.jsonl", d);
    make_pool(pool, 3000, 0); /* non-dyadic scores: the mean's sum depends on the order of the additions */
    compare_library(pool, 2, 7, 0, FP_SELECT_ORDER_SCORE, 0, 40);
    compare_library(pool, 3, 3000, 0, FP_SELECT_ORDER_INPUT, 1, 40);
    compare_library(pool, 5, 0, 0.05, FP_SELECT_ORDER_INPUT, 0, 0); /* no histogram */
    compare_library(pool, 4, 1, 0, FP_SELECT_ORDER_SCORE, 1, 13);
    /* one line longer than a rank's share, blank lines at the range edges, no final newline: several
     * ranks start at the same line (empty ranges) */
    FILE *f = fopen(edge, "w");
    fprintf(f, "{\"id\":0,\"score\":0.25,\"pad\":\"%*s\"}\n", 6000, "");
    for (int i = 1; i < 6; i++) fprintf(f, "\n{\"id\":%d,\"score\":%s}\n\n", i, i % 2 ? "0.25" : "[0.5,0]");
    fputs("{\"id\":6,\"score\":0.75}", f);
    fclose(f);
    compare_library(edge, 4, 3, 0, FP_SELECT_ORDER_SCORE, 0, 5);
    compare_library(edge, 6, 100, 0, FP_SELECT_ORDER_INPUT, 1, 5);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 9 && !strcmp(argv[1], "--mpi-worker")) return worker(argv);
    RUN(test_cli_identical);
    RUN(test_cli_errors);
    RUN(test_cli_resume);
    RUN(test_cli_model);
    RUN(test_library_bitwise);
    return th_finish();
}
