/* fluxprm select: top-K against an independent brute-force sort made here, O(K) heap bound, ordering,
 * histogram (recounted here from the scores this test generated), bad-input errors, atomic output,
 * --resume.  Every expectation is computed in this file from the generated pool, never by the code under
 * test. */
#include "apps/select.h"
#include "harness.h"
#include "cli_helpers.h"
#include <jansson.h>
#include <stdint.h>

/* ---- helpers */
static int run_cli(const char *args, const char *errfile) { return cli_run("select", args, errfile); }
static int exists(const char *p) { return access(p, F_OK) == 0; }

/* A tiny deterministic generator (splitmix64), independent of the library's. */
static uint64_t sm(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

typedef struct { double s; long idx; } ref_item;
static int ref_cmp(const void *a, const void *b) {
    const ref_item *x = a, *y = b;
    if (x->s != y->s) return x->s > y->s ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

/* Writes a pool of n records {"id": i, "score": ...} with many exact ties, blank lines sprinkled in, and
 * three score shapes; ref[i] gets r̂ computed here (mean of steps, + alpha * final). */
static void make_pool(const char *path, long n, double alpha, double *ref) {
    FILE *f = fopen(path, "w");
    uint64_t seed = 12345;
    for (long i = 0; i < n; i++) {
        uint64_t r = sm(&seed);
        int shape = (int)(r % 3);
        double a = (double)((r >> 8) % 20) / 20.0; /* 20 distinct values: many ties */
        double b = (double)((r >> 20) % 4) / 4.0;
        if (shape == 0) {
            fprintf(f, "{\"id\":%ld,\"score\":%.17g}\n", i, a);
            ref[i] = a;
        } else if (shape == 1) {
            fprintf(f, "{\"id\":%ld,\"score\":[%.17g,%.17g]}\n", i, a, b);
            ref[i] = (a + b) / 2.0;
        } else {
            fprintf(f, "{\"id\":%ld,\"score\":{\"steps\":[%.17g],\"final\":%.17g}}\n", i, a, b);
            ref[i] = a + alpha * b;
        }
        if (i % 97 == 0) fputs("\n   \n", f); /* blank lines are not records */
    }
    fclose(f);
}

/* ids of the output records in order */
static long read_ids(const char *path, long *ids, long max) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[4096];
    long n = 0;
    while (fgets(line, sizeof line, f)) {
        json_error_t e;
        json_t *j = json_loads(line, 0, &e);
        if (!j) { fclose(f); return -2; }
        if (n < max) ids[n] = (long)json_integer_value(json_object_get(j, "id"));
        n++;
        json_decref(j);
    }
    fclose(f);
    return n;
}

/* ---- the heap alone */
static int test_topk_heap(void) {
    fp_topk h;
    CHECK_OK(fp_topk_init(&h, 7));
    uint64_t seed = 7;
    ref_item all[1000];
    for (long i = 0; i < 1000; i++) {
        double s = (double)(sm(&seed) % 50);
        fp_topk_item it = {s, i, i + 1, 0, 0, 0};
        fp_topk_push(&h, &it);
        all[i].s = s;
        all[i].idx = i;
        CHECK(h.size <= 7);
    }
    CHECK(h.peak == 7);
    qsort(all, 1000, sizeof all[0], ref_cmp);
    fp_topk_sort(&h, 0);
    for (int i = 0; i < 7; i++) CHECK(h.items[i].index == all[i].idx && h.items[i].score == all[i].s);
    fp_topk_free(&h);
    CHECK(fp_topk_init(&h, 0) == FP_EINVAL);
    return 0;
}

/* ---- top-K vs brute force, both orders, via the CLI */
static int test_topk_cli(void) {
    const char *d = th_tmpdir();
    char pool[512], out[512], err[512], args[4096];
    snprintf(pool, sizeof pool, "%s/pool.jsonl", d);
    snprintf(out, sizeof out, "%s/sel.jsonl", d);
    snprintf(err, sizeof err, "%s/err.txt", d);
    const long n = 3000;
    double *ref = malloc(n * sizeof *ref);
    make_pool(pool, n, 0.5, ref);
    ref_item *all = malloc(n * sizeof *all);
    for (long i = 0; i < n; i++) all[i].s = ref[i], all[i].idx = i;
    qsort(all, n, sizeof *all, ref_cmp);
    long ids[4000];
    long ks[] = {1, 37, 250, 3000, 5000};
    for (int t = 0; t < 5; t++) {
        long k = ks[t], kk = k < n ? k : n;
        /* score order: exactly the brute-force ranking */
        snprintf(args, sizeof args, "--top-k %ld --alpha 0.5 --order score --quiet -o %s %s", k, out, pool);
        CHECK(run_cli(args, err) == 0);
        CHECK(read_ids(out, ids, 4000) == kk);
        for (long i = 0; i < kk; i++) CHECK_MSG(ids[i] == all[i].idx, "k=%ld rank %ld: got id %ld, want %ld", k, i, ids[i], all[i].idx);
        /* input order: the same set, ascending id */
        snprintf(args, sizeof args, "--top-k %ld --alpha 0.5 --quiet -o %s %s", k, out, pool);
        CHECK(run_cli(args, err) == 0);
        CHECK(read_ids(out, ids, 4000) == kk);
        char *want = calloc(n, 1);
        for (long i = 0; i < kk; i++) want[all[i].idx] = 1;
        long prev = -1, hits = 0;
        for (long i = 0; i < kk; i++) {
            CHECK(ids[i] > prev);
            prev = ids[i];
            hits += ids[i] >= 0 && ids[i] < n && want[ids[i]];
        }
        CHECK(hits == kk);
        free(want);
    }
    /* --top-frac: K = ceil(F * records) */
    snprintf(args, sizeof args, "--top-frac 0.1 --alpha 0.5 --order score --quiet -o %s %s", out, pool);
    CHECK(run_cli(args, err) == 0);
    CHECK(read_ids(out, ids, 4000) == 300);
    for (long i = 0; i < 300; i++) CHECK(ids[i] == all[i].idx);
    snprintf(args, sizeof args, "--top-frac 0.0001 --alpha 0.5 --order score --quiet -o %s %s", out, pool);
    CHECK(run_cli(args, err) == 0);
    CHECK(read_ids(out, ids, 4000) == 1); /* ceil(0.3) */
    /* annotated output carries score and rank that agree with the reference */
    snprintf(args, sizeof args, "--top-k 20 --alpha 0.5 --order score --annotate --quiet -o %s %s", out, pool);
    CHECK(run_cli(args, err) == 0);
    FILE *f = fopen(out, "r");
    char line[4096];
    long r = 0;
    while (f && fgets(line, sizeof line, f)) {
        json_t *j = json_loads(line, 0, NULL);
        json_t *s = json_object_get(j, "select");
        CHECK(json_integer_value(json_object_get(s, "rank")) == r + 1);
        CHECK_NEAR(json_number_value(json_object_get(s, "score")), all[r].s, 1e-12);
        json_decref(j);
        r++;
    }
    if (f) fclose(f);
    CHECK(r == 20);
    free(ref);
    free(all);
    return 0;
}

/* ---- re-weighting `fluxprm score` output: step_rewards + final_reward fields with another alpha/aggregate */
static int test_score_output_fields(void) {
    const char *d = th_tmpdir();
    char pool[512], out[512], err[512], args[4096];
    snprintf(pool, sizeof pool, "%s/scored.jsonl", d);
    snprintf(out, sizeof out, "%s/scored_sel.jsonl", d);
    snprintf(err, sizeof err, "%s/scored_err.txt", d);
    FILE *f = fopen(pool, "w");
    uint64_t seed = 99;
    ref_item mean_items[200], min_items[200];
    for (long i = 0; i < 200; i++) {
        double a = (double)(sm(&seed) % 100) / 100, b = (double)(sm(&seed) % 100) / 100, c = (double)(sm(&seed) % 100) / 100;
        int has_final = i % 5 != 0;
        double fin = (double)(sm(&seed) % 10) / 10;
        fprintf(f, "{\"id\":%ld,\"step_rewards\":[%.17g,%.17g,%.17g],\"final_reward\":", i, a, b, c);
        if (has_final) fprintf(f, "%.17g,\"score\":0}\n", fin);
        else fputs("null,\"score\":0}\n", f);
        double mean = (0.0 + a + b + c) / 3.0, mn = fmin(a, fmin(b, c));
        mean_items[i].s = has_final ? mean + 0.8 * fin : mean;
        min_items[i].s = has_final ? mn + 0.8 * fin : mn;
        mean_items[i].idx = min_items[i].idx = i;
    }
    fclose(f);
    qsort(mean_items, 200, sizeof mean_items[0], ref_cmp);
    qsort(min_items, 200, sizeof min_items[0], ref_cmp);
    long ids[32];
    snprintf(args, sizeof args, "--scores-field step_rewards --final-field final_reward --alpha 0.8 --top-k 25 --order score --quiet -o %s %s", out, pool);
    CHECK(run_cli(args, err) == 0);
    CHECK(read_ids(out, ids, 32) == 25);
    for (int i = 0; i < 25; i++) CHECK(ids[i] == mean_items[i].idx);
    snprintf(args, sizeof args, "--scores-field step_rewards --final-field final_reward --aggregate min --alpha 0.8 --top-k 25 --order score --quiet -o %s %s", out, pool);
    CHECK(run_cli(args, err) == 0);
    CHECK(read_ids(out, ids, 32) == 25);
    for (int i = 0; i < 25; i++) CHECK(ids[i] == min_items[i].idx);
    return 0;
}

/* ---- memory bound: K = 10 over 200k records through the library; the heap never holds more than K */
static int test_memory_bound(void) {
    const char *d = th_tmpdir();
    char pool[512], out[512];
    snprintf(pool, sizeof pool, "%s/big.jsonl", d);
    snprintf(out, sizeof out, "%s/big_out.jsonl", d);
    const long n = 200000;
    double *ref = malloc(n * sizeof *ref);
    make_pool(pool, n, 1.0, ref);
    fp_select_opts o;
    fp_select_opts_default(&o);
    o.top_k = 10;
    o.order = FP_SELECT_ORDER_SCORE;
    fp_select_stats st;
    FILE *f = fopen(out, "w");
    CHECK_OK(fp_select_run(&o, pool, f, &st));
    fclose(f);
    CHECK(st.heap_peak == 10);
    CHECK(st.n_records == n && st.n_scored == n && st.n_kept == 10 && st.n_dropped == n - 10);
    ref_item *all = malloc(n * sizeof *all);
    for (long i = 0; i < n; i++) all[i].s = ref[i], all[i].idx = i;
    qsort(all, n, sizeof *all, ref_cmp);
    long ids[16];
    CHECK(read_ids(out, ids, 16) == 10);
    for (int i = 0; i < 10; i++) CHECK(ids[i] == all[i].idx);
    CHECK(st.threshold == all[9].s);
    /* histogram: recount here */
    double mn = all[n - 1].s, mx = all[0].s;
    CHECK(st.min == mn && st.max == mx && st.bins == 40);
    long cnt[40] = {0}, kept[40] = {0}, tot = 0, ktot = 0;
    for (long i = 0; i < n; i++) {
        double x = (all[i].s - mn) / (mx - mn) * 40;
        int b = x >= 40 ? 39 : (int)x;
        cnt[b]++;
        if (i < 10) kept[b]++;
    }
    for (int b = 0; b < 40; b++) {
        CHECK(st.hist_all[b] == cnt[b]);
        CHECK(st.hist_kept[b] == kept[b]);
        tot += st.hist_all[b];
        ktot += st.hist_kept[b];
    }
    CHECK(tot == n && ktot == 10);
    fp_select_stats_free(&st);
    free(ref);
    free(all);
    remove(pool);
    return 0;
}

/* ---- summary JSON + SVG histogram via the CLI */
static int test_histogram_svg(void) {
    const char *d = th_tmpdir();
    char pool[512], out[512], err[512], svg[512], sum[512], args[4096];
    snprintf(pool, sizeof pool, "%s/hpool.jsonl", d);
    snprintf(out, sizeof out, "%s/hsel.jsonl", d);
    snprintf(err, sizeof err, "%s/herr.txt", d);
    snprintf(svg, sizeof svg, "%s/h.svg", d);
    snprintf(sum, sizeof sum, "%s/h.json", d);
    const long n = 1000;
    double *ref = malloc(n * sizeof *ref);
    make_pool(pool, n, 1.0, ref);
    snprintf(args, sizeof args, "--top-k 100 --bins 25 --histogram %s --summary %s -o %s %s", svg, sum, out, pool);
    CHECK(run_cli(args, err) == 0);
    char *s = slurp(svg);
    CHECK(s != NULL);
    if (s) {
        CHECK(strstr(s, "<svg") != NULL);
        CHECK(strstr(s, "</svg>") != NULL && strstr(s, "</svg>") > strstr(s, "<svg"));
        CHECK(count_sub(s, "class=\"bin\"") == 25);
        CHECK(xml_balanced(s, 1));
        CHECK(count_sub(s, "<svg") == 1 && count_sub(s, "</svg>") == 1);
        CHECK(count_sub(s, "<text") == count_sub(s, "</text>"));
        CHECK(count_sub(s, "<title") == count_sub(s, "</title>"));
    }
    json_t *j = json_load_file(sum, 0, NULL);
    CHECK(j != NULL);
    if (j && s) {
        CHECK(json_integer_value(json_object_get(j, "kept")) == 100);
        CHECK(json_integer_value(json_object_get(j, "dropped")) == n - 100);
        CHECK(json_integer_value(json_object_get(j, "n_records")) == n);
        json_t *h = json_object_get(j, "histogram");
        json_t *counts = json_object_get(h, "counts"), *kept = json_object_get(h, "kept");
        CHECK(json_array_size(counts) == 25 && json_array_size(kept) == 25);
        /* recount from this test's own scores */
        ref_item *all = malloc(n * sizeof *all);
        for (long i = 0; i < n; i++) all[i].s = ref[i], all[i].idx = i;
        qsort(all, n, sizeof *all, ref_cmp);
        double mn = all[n - 1].s, mx = all[0].s;
        long c[25] = {0}, k[25] = {0};
        int nonzero_kept = 0;
        for (long i = 0; i < n; i++) {
            double x = (all[i].s - mn) / (mx - mn) * 25;
            int b = x >= 25 ? 24 : (int)x;
            c[b]++;
            if (i < 100) k[b]++;
        }
        for (int b = 0; b < 25; b++) {
            CHECK(json_integer_value(json_array_get(counts, b)) == c[b]);
            CHECK(json_integer_value(json_array_get(kept, b)) == k[b]);
            nonzero_kept += k[b] > 0;
        }
        CHECK(count_sub(s, "class=\"hl\"") == nonzero_kept);
        CHECK_NEAR(json_number_value(json_object_get(json_object_get(j, "score"), "threshold")), all[99].s, 1e-12);
        free(all);
    }
    json_decref(j);
    free(s);
    free(ref);
    return 0;
}

/* ---- bad input: errors name file:line and field; no partial output */
static int test_bad_input(void) {
    const char *d = th_tmpdir();
    char pool[512], out[512], err[512], args[4096];
    snprintf(pool, sizeof pool, "%s/bad.jsonl", d);
    snprintf(out, sizeof out, "%s/bad_out.jsonl", d);
    snprintf(err, sizeof err, "%s/bad_err.txt", d);
    struct { const char *line, *want; } cases[] = {
        {"{\"id\":2,\"score\":\"high\"}", "'score'"},
        {"{\"id\":2,\"quality\":0.5}", "missing field 'score'"},
        {"{\"id\":2,\"score\":[0.5,\"x\"]}", "step reward 1"},
        {"{\"id\":2,\"score\":[]}", "empty list"},
        {"{\"id\":2,\"score\":0.5", "malformed JSON"},
        {"[1,2]", "expected an object"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        FILE *f = fopen(pool, "w");
        fprintf(f, "{\"id\":0,\"score\":0.1}\n\n{\"id\":1,\"score\":0.9}\n");
        /* the bad record is on line 4: line 2 is blank */
        fprintf(f, "%s\n{\"id\":3,\"score\":0.3}\n", cases[c].line);
        fclose(f);
        /* old content must survive */
        f = fopen(out, "w");
        fputs("OLD\n", f);
        fclose(f);
        snprintf(args, sizeof args, "--top-k 2 -o %s %s", out, pool);
        CHECK(run_cli(args, err) == 1);
        char *e = slurp(err), *o = slurp(out);
        char want[600];
        snprintf(want, sizeof want, "%s:4:", pool);
        CHECK_MSG(e && strstr(e, want), "case %zu: stderr lacks '%s': %s", c, want, e ? e : "");
        CHECK_MSG(e && strstr(e, cases[c].want), "case %zu: stderr lacks '%s': %s", c, cases[c].want, e ? e : "");
        CHECK(o && !strcmp(o, "OLD\n"));
        free(e);
        free(o);
        /* a fresh output path is not created */
        remove(out);
        CHECK(run_cli(args, err) == 1);
        CHECK(!exists(out));
        /* --skip-bad: the bad record is left out and reported */
        snprintf(args, sizeof args, "--top-k 2 --skip-bad --order score -o %s %s", out, pool);
        CHECK(run_cli(args, err) == 0);
        long ids[8];
        CHECK(read_ids(out, ids, 8) == 2 && ids[0] == 1 && ids[1] == 3);
        e = slurp(err);
        CHECK(e && strstr(e, "skipped") && strstr(e, want));
        free(e);
        remove(out);
    }
    /* no temp files are left next to the output */
    CHECK(no_temp_files(d));
    /* usage errors */
    snprintf(args, sizeof args, "-o %s %s", out, pool);
    CHECK(run_cli(args, err) == 2); /* neither --top-k nor --top-frac */
    snprintf(args, sizeof args, "--top-k 0 %s", pool);
    CHECK(run_cli(args, err) == 2);
    snprintf(args, sizeof args, "--top-frac 1.5 %s", pool);
    CHECK(run_cli(args, err) == 2);
    snprintf(args, sizeof args, "--top-k 3 --order random %s", pool);
    CHECK(run_cli(args, err) == 2);
    CHECK(run_cli("--help >/dev/null", err) == 0);
    /* stdin cannot be re-read */
    snprintf(args, sizeof args, "--top-k 1 - < %s", pool);
    CHECK(run_cli(args, err) == 1);
    /* the library reports the same locations */
    fp_select_opts o;
    fp_select_opts_default(&o);
    o.top_k = 1;
    FILE *f = fopen(pool, "w");
    fputs("{\"score\":1}\n{\"score\":true}\n", f);
    fclose(f);
    fp_select_stats st;
    FILE *sink = fopen("/dev/null", "w");
    CHECK(fp_select_run(&o, pool, sink, &st) == FP_EINVAL);
    fclose(sink);
    CHECK(strstr(fp_last_error(), ":2:") && strstr(fp_last_error(), "'score'") && strstr(fp_last_error(), "boolean"));
    return 0;
}

/* ---- --resume: a pure function of (input, params): skip only when the recorded result matches */
static int test_resume(void) {
    const char *d = th_tmpdir();
    char pool[512], out[512], err[512], args[4096];
    snprintf(pool, sizeof pool, "%s/rpool.jsonl", d);
    snprintf(out, sizeof out, "%s/rsel.jsonl", d);
    snprintf(err, sizeof err, "%s/rerr.txt", d);
    double ref[500];
    make_pool(pool, 500, 1.0, ref);
    snprintf(args, sizeof args, "--top-k 5 --resume -o %s %s", out, pool);
    CHECK(run_cli(args, err) == 0);
    char sum[600];
    snprintf(sum, sizeof sum, "%s.summary.json", out);
    CHECK(exists(out) && exists(sum));
    char *first = slurp(out);
    /* second run: nothing to do */
    CHECK(run_cli(args, err) == 0);
    char *e = slurp(err);
    CHECK(e && strstr(e, "nothing to do"));
    free(e);
    /* a different K is a different result: recomputed */
    snprintf(args, sizeof args, "--top-k 6 --resume -o %s %s", out, pool);
    CHECK(run_cli(args, err) == 0);
    e = slurp(err);
    CHECK(e && !strstr(e, "nothing to do"));
    free(e);
    long ids[16];
    CHECK(read_ids(out, ids, 16) == 6);
    /* a truncated output (size differs from the summary) is recomputed */
    FILE *f = fopen(out, "w");
    fputs("{\"id\":1}\n", f);
    fclose(f);
    CHECK(run_cli(args, err) == 0);
    CHECK(read_ids(out, ids, 16) == 6);
    /* an input change is recomputed */
    make_pool(pool, 400, 1.0, ref);
    CHECK(run_cli(args, err) == 0);
    e = slurp(err);
    CHECK(e && !strstr(e, "nothing to do"));
    free(e);
    free(first);
    return 0;
}

int main(void) {
    RUN(test_topk_heap);
    RUN(test_topk_cli);
    RUN(test_score_output_fields);
    RUN(test_memory_bound);
    RUN(test_histogram_svg);
    RUN(test_bad_input);
    RUN(test_resume);
    return th_finish();
}
