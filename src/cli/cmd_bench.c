/* fluxprm bench --model M --tokens 512,2048 [--threads N] [--repeat R] [--warmup W] [--seed S] [--no-profile]
 * [--json]: trunk prefill throughput (tok/s, GFLOP/s) on seeded random token ids, with a per-phase profile
 * profile (src/model/profile.c).  See docs/performance.md "Model prefill". */
#include "cli/cli.h"
#include "base/base.h"
#include "model/model.h"
#include "tensor/kernels.h"
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define MAX_TS 32
#define WARMUP_T 256 /* tokens of a warm-up run (at most T) */

static void usage(FILE *f) {
    fputs("Usage: fluxprm bench --model <model-dir|file.gguf> [--tokens 512,2048] [--threads N] [--repeat R]\n"
          "                     [--warmup W] [--seed S] [--no-profile] [--json]\n"
          "\n"
          "Times the trunk prefill (every layer over all T rows, final norm; no head) of seeded random token\n"
          "ids and prints, per T: median / best tokens per second over R timed runs (after W warm-up runs),\n"
          "achieved GFLOP/s, tokens per CPU-second x threads (discounts preemption on a shared machine;\n"
          "OpenMP spin-waiting counts as CPU time), the GEMM kernel in use, and a per-phase breakdown from\n"
          "one extra instrumented forward per T (--no-profile skips it).\n"
          "FLOPs: 2*T*(H*(q+2kv) + q*H + 3*H*I)"
          " per layer for the projections,\n"
          "plus 2*2*d*heads*T*(T+1)/2 per layer for causal attention.\n"
          "Precision: exact (f32 activations; the model default) or fast (GEMMs round activations to bf16, or\n"
          "int8 on the VNNI path), as fp_model_set_precision; the default comes from FLUXPRM_PRECISION.\n"
          "\n"
          "  --tokens LIST  comma-separated sequence lengths (default 512,2048), run in this order; the peak RSS\n"
          "                 is also reported after each (the process peak so far: per length when ascending)\n"
          "  --threads N    OpenMP threads (default: all)\n"
          "  --repeat R     timed runs per length (default 3)\n"
          "  --warmup W     untimed runs of min(T, 256) tokens per length first (default 1)\n"
          "  --seed S       token-id seed (default 1)\n"
          "  --precision P  exact | fast (default: the model's default)\n"
          "  --json         one JSON object on stdout instead of the table\n"
          "  --bestofn N,P,S  also time Best-of-N scoring at the model level: N candidates of P shared prefix\n"
          "                 tokens + S own tokens, read out at each candidate's last token; N separate prefills\n"
          "                 vs the prefix prefilled once into a KV cache and each suffix run on it (the scheme of\n"
          "                 fp_prm_score_candidates, without its tokenizer and PRM head)\n", f);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double peak_rss_mb(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru)) return 0;
    return ru.ru_maxrss / 1024.0; /* Linux: KiB */
}

static double cpu_seconds(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru)) return 0;
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

/* Memory of the weights the trunk reads (projections, norms, embedding table), as stored. */
static double weight_bytes(const fp_model *m) {
    double b = 0;
    for (size_t i = 0; i < fp_weights_count(m->w); i++) b += (double)fp_weights_at(m->w, i)->nbytes;
    return b;
}

/* Best-of-N at the model level: seconds for N separate prefills of P+S tokens vs a shared-prefix KV cache, and
 * the floor both are measured against: one prefill of the P + N*S distinct tokens (prefix + N suffixes). */
static int bench_bestofn(fp_model *m, int vocab, int H, int N, int P, int S, double *t_sep, double *t_shared,
                         double *t_once) {
    int T = P + S, rc = FP_OK;
    int32_t *ids = malloc(sizeof(int32_t) * ((size_t)T * N + (size_t)P + (size_t)N * S));
    float *h = malloc(sizeof(float) * (size_t)H), *hb = malloc(sizeof(float) * 64 * (size_t)H);
    int32_t *bra = malloc(sizeof(int32_t) * (size_t)S * (N < 64 ? N : 64));
    int seg[65] = {0};
    fp_kv_cache *c = fp_kv_cache_new(m, T);
    if (!ids || !h || !hb || !bra || !c) { rc = fp_errorf(FP_ENOMEM, "bench: out of memory (best-of-N)"); goto out; }
    uint64_t st = 0x2545F4914F6CDD1Dull;
    for (int i = 0; i < N; i++)
        for (int t = 0; t < T; t++) {
            st ^= st >> 12, st ^= st << 25, st ^= st >> 27;
            ids[(size_t)i * T + t] = i && t < P ? ids[t] : (int32_t)(((st * 0x2545F4914F6CDD1Dull) >> 33) % (uint64_t)vocab);
        }
    int last = T - 1, slast = S - 1;
    double t0 = fp_now();
    for (int i = 0; i < N && !rc; i++) rc = fp_model_hidden_states(m, ids + (size_t)i * T, T, &last, 1, h);
    *t_sep = fp_now() - t0;
    if (rc) goto out;
    t0 = fp_now();
    /* as fp_prm_score_candidates: the prefix once, then the suffixes as branches, up to 2048 rows per pass */
    rc = fp_model_forward_cached(m, c, ids, P, NULL, 0, NULL, NULL);
    for (int i0 = 0; i0 < N && !rc;) {
        int nb = 0, cat_rows[64];
        for (; i0 + nb < N && nb < 64 && (nb == 0 || (nb + 1) * S <= 2048); nb++) {
            memcpy(bra + (size_t)nb * S, ids + (size_t)(i0 + nb) * T + P, sizeof(int32_t) * (size_t)S);
            seg[nb + 1] = (nb + 1) * S;
            cat_rows[nb] = nb * S + slast;
        }
        rc = fp_model_forward_branches(m, c, bra, seg, nb, cat_rows, nb, hb);
        i0 += nb;
    }
    *t_shared = fp_now() - t0;
    if (rc) goto out;
    /* prefix + N suffixes as one sequence (every suffix also sees the earlier ones: slightly more attention) */
    int32_t *once = ids + (size_t)T * N;
    int n_once = P + N * S, lo = n_once - 1;
    memcpy(once, ids, sizeof(int32_t) * (size_t)P);
    for (int i = 0; i < N; i++) memcpy(once + P + (size_t)i * S, ids + (size_t)i * T + P, sizeof(int32_t) * (size_t)S);
    t0 = fp_now();
    rc = fp_model_hidden_states(m, once, n_once, &lo, 1, h);
    *t_once = fp_now() - t0;
out:
    free(ids); free(h); free(hb); free(bra);
    if (c) fp_kv_cache_free(c);
    return rc;
}

static int parse_tokens(const char *s, int *ts, int *n) {
    *n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v <= 0 || v > (1 << 20) || *n >= MAX_TS) return -1;
        ts[(*n)++] = (int)v;
        if (*end == ',') end++;
        else if (*end) return -1;
        s = end;
    }
    return *n ? 0 : -1;
}

typedef struct {
    int T;
    double med, best, worst, cpu_med; /* seconds per forward */
    fp_model_profile_result prof;
    int have_prof;
    double rss_mb; /* process peak RSS after this length (MB) */
    double flops[FP_PROFILE_NPHASES], total_flops;
} bench_row;

int cmd_bench(int argc, char **argv) {
    const char *path = NULL;
    int ts[MAX_TS], nts = 2, json = 0, profile = 1;
    ts[0] = 512, ts[1] = 2048;
    long threads = 0, repeat = 3, warmup = 1, seed = 1;
    int bon[3] = {0, 0, 0}; /* best-of-N: N, P, S */
    int prec = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return EXIT_OK; }
        else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--no-profile")) profile = 0;
        else if (!strcmp(a, "--precision")) {
            if (++i >= argc || (strcmp(argv[i], "fast") && strcmp(argv[i], "exact")))
                return cli_usage_error("bench", "--precision needs exact or fast");
            prec = !strcmp(argv[i], "fast") ? FP_PRECISION_FAST : FP_PRECISION_EXACT;
        }
        else if (!strcmp(a, "--bestofn")) {
            if (++i >= argc || sscanf(argv[i], "%d,%d,%d", &bon[0], &bon[1], &bon[2]) != 3 || bon[0] < 1 ||
                bon[0] > 1024 || bon[1] < 1 || bon[2] < 1 || bon[1] > (1 << 20) || bon[2] > (1 << 20))
                return cli_usage_error("bench", "--bestofn needs N,P,S (candidates, prefix tokens, suffix tokens)");
        }
        else if (!strcmp(a, "--model") || !strcmp(a, "-m")) {
            if (++i >= argc) return cli_usage_error("bench", "--model needs a path");
            path = argv[i];
        } else if (!strcmp(a, "--tokens")) {
            if (++i >= argc || parse_tokens(argv[i], ts, &nts))
                return cli_usage_error("bench", "--tokens needs a list of up to %d lengths in 1..1048576, e.g. 512,2048",
                                       MAX_TS);
        } else if (!strcmp(a, "--threads") || !strcmp(a, "--repeat") || !strcmp(a, "--warmup") ||
                   !strcmp(a, "--seed")) {
            long *dst = a[2] == 't' ? &threads : a[2] == 'r' ? &repeat : a[2] == 'w' ? &warmup : &seed;
            int need_pos = a[2] == 'r';
            if (i + 1 >= argc || cli_parse_long(argv[i + 1], dst) || *dst < need_pos || *dst > 1000000)
                return cli_usage_error("bench", "%s needs a %s number", a, need_pos ? "positive" : "non-negative");
            i++;
        } else if (a[0] == '-' && a[1]) return cli_usage_error("bench", "unknown option %s", a);
        else if (!path) path = a;
        else return cli_usage_error("bench", "unexpected argument %s", a);
    }
    if (!path) return cli_usage_error("bench", "expected --model <model-dir|file.gguf>");

    double t_load = fp_now();
    fp_model *m = NULL;
    if (fp_model_load(&m, path)) return cli_fail("bench");
    t_load = fp_now() - t_load;
    double rss_load = peak_rss_mb();
    fp_model_set_threads(m, (int)threads);
    if (prec >= 0) fp_model_set_precision(m, prec);
    fp_model_info info;
    fp_model_get_info(m, &info);
    const fp_tensor *wq = m->layers[0].q_w;
    /* the kernel fp_model_linear reaches (matmul.c's dispatch: exact = f32-FMA kernels, no bf16/int8 paths) */
    int level = fp_kernel_level();
    const char *kernel = m->fast ? fp_matmul_kernel_name(wq->dtype)
                         : level >= FP_KERN_AVX512 ? fp_matmul_avx512_name(wq->dtype, FP_BF16_FMA, 0)
                         : fp_matmul_kernel_name_level(level, wq->dtype);
    char kbuf[96];
    if (wq->dtype == FP_F32 && fp_matmul_blas_mode() != FP_BLAS_OFF) { /* make BLAS=1: the large F32 GEMMs */
        snprintf(kbuf, sizeof kbuf, "%s + openblas-sgemm (large GEMMs)", kernel);
        kernel = kbuf;
    }
    const char *precision = m->fast ? "fast (GEMMs may round activations to bf16 / int8; SwiGLU within 12 ulp)"
                                    : "exact (f32 activations)";
    double wbytes = weight_bytes(m);

    int maxT = 0;
    for (int i = 0; i < nts; i++) maxT = ts[i] > maxT ? ts[i] : maxT;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)maxT);
    float *out = malloc(sizeof(float) * (size_t)maxT * info.hidden_size);
    bench_row *rows = calloc((size_t)nts, sizeof(bench_row));
    double *secs = malloc(sizeof(double) * (size_t)repeat), *cpus = malloc(sizeof(double) * (size_t)repeat);
    int rc = EXIT_OK;
    if (!ids || !out || !rows || !secs || !cpus) { cli_error("out of memory"); rc = EXIT_RUNTIME; goto done; }
    uint64_t st = 0x9E3779B97F4A7C15ull * (uint64_t)(seed + 1);
    for (int t = 0; t < maxT; t++) { /* xorshift64*: ids uniform over the vocabulary */
        st ^= st >> 12, st ^= st << 25, st ^= st >> 27;
        ids[t] = (int32_t)(((st * 0x2545F4914F6CDD1Dull) >> 33) % (uint64_t)info.vocab_size);
    }

    for (int i = 0; i < nts && rc == EXIT_OK; i++) {
        bench_row *r = &rows[i];
        int T = r->T = ts[i];
        for (long w = 0; w < warmup; w++) /* faults the mapped weights in, grows the scratch, starts the pool */
            if (fp_model_hidden_states(m, ids, T < WARMUP_T ? T : WARMUP_T, NULL, 0, out)) {
                rc = cli_fail("bench: forward");
                break;
            }
        for (long k = 0; k < repeat && rc == EXIT_OK; k++) {
            double c0 = cpu_seconds(), t0 = fp_now();
            if (fp_model_hidden_states(m, ids, T, NULL, 0, out)) { rc = cli_fail("bench: forward"); break; }
            secs[k] = fp_now() - t0;
            cpus[k] = cpu_seconds() - c0;
        }
        if (rc) break;
        qsort(secs, (size_t)repeat, sizeof(double), cmp_double);
        qsort(cpus, (size_t)repeat, sizeof(double), cmp_double);
        r->med = repeat % 2 ? secs[repeat / 2] : 0.5 * (secs[repeat / 2 - 1] + secs[repeat / 2]);
        r->cpu_med = repeat % 2 ? cpus[repeat / 2] : 0.5 * (cpus[repeat / 2 - 1] + cpus[repeat / 2]);
        r->best = secs[0];
        r->worst = secs[repeat - 1];
        fp_model_profile_flops(m, T, r->flops);
        for (int p = 0; p < FP_PROFILE_NPHASES; p++) r->total_flops += r->flops[p];
        if (profile) {
            if (fp_model_profile(m, ids, T, &r->prof)) { rc = cli_fail("bench: profile"); break; }
            r->have_prof = 1;
        }
        r->rss_mb = peak_rss_mb(); /* the process peak so far: this length's own peak when lengths ascend */
        if (!json) fprintf(stderr, "fluxprm bench: T=%d done (median %.3f s)\n", T, r->med);
    }
    if (rc) goto done;
    double bon_sep = 0, bon_shared = 0, bon_once = 0;
    if (bon[0]) {
        if (bench_bestofn(m, info.vocab_size, info.hidden_size, bon[0], bon[1], bon[2], &bon_sep, &bon_shared,
                          &bon_once)) {
            rc = cli_fail("bench: best-of-N");
            goto done;
        }
    }
    double rss_peak = peak_rss_mb();
    int nth = threads > 0 ? (int)threads : 0, nthr = nth ? nth : omp_get_max_threads();
    if (json) {
        printf("{\"model\": \"%s\", \"weights\": \"%s\", \"kernel\": \"%s\", \"precision\": \"%s\", "
               "\"hidden\": %d, \"layers\": %d, \"ffn\": %d, \"heads\": %d, \"kv_heads\": %d, \"vocab\": %d, "
               "\"threads\": %d, \"repeat\": %ld, \"warmup\": %ld, \"load_s\": %.3f, \"weight_bytes\": %.0f, "
               "\"rss_after_load_mb\": %.1f, \"peak_rss_mb\": %.1f, \"results\": [",
               path, info.weight_dtype, kernel, strstr(precision, "fast") ? "fast" : "exact", info.hidden_size,
               info.num_layers, info.intermediate_size, info.num_heads, info.num_kv_heads, info.vocab_size, nth,
               repeat, warmup, t_load, wbytes, rss_load, rss_peak);
        for (int i = 0; i < nts; i++) {
            bench_row *r = &rows[i];
            printf("%s{\"T\": %d, \"median_s\": %.6f, \"best_s\": %.6f, \"worst_s\": %.6f, \"cpu_s\": %.6f, "
                   "\"tok_s\": %.2f, \"best_tok_s\": %.2f, \"cpu_tok_s\": %.2f, \"gflops\": %.2f, \"gflop\": %.3f",
                   i ? ", " : "", r->T, r->med, r->best, r->worst, r->cpu_med, r->T / r->med, r->T / r->best,
                   r->cpu_med > 0 ? r->T / (r->cpu_med / nthr) : 0.0, r->total_flops / r->med * 1e-9, r->total_flops * 1e-9);
            printf(", \"peak_rss_mb\": %.1f", r->rss_mb);
            if (r->have_prof) {
                printf(", \"profile_total_s\": %.6f, \"phases\": {", r->prof.total);
                for (int p = 0; p < FP_PROFILE_NPHASES; p++)
                    printf("%s\"%s\": {\"s\": %.6f, \"gflops\": %.2f}", p ? ", " : "", fp_model_profile_phase_name(p),
                           r->prof.seconds[p],
                           r->prof.seconds[p] > 0 ? r->flops[p] / r->prof.seconds[p] * 1e-9 : 0.0);
                printf("}");
            }
            printf("}");
        }
        printf("]");
        if (bon[0])
            printf(", \"bestofn\": {\"n\": %d, \"prefix\": %d, \"suffix\": %d, \"separate_s\": %.6f, "
                   "\"shared_s\": %.6f, \"speedup\": %.3f, \"once_s\": %.6f, \"shared_vs_once\": %.3f}",
                   bon[0], bon[1], bon[2], bon_sep, bon_shared, bon_sep / bon_shared, bon_once, bon_shared / bon_once);
        printf("}\n");
    } else {
        printf("model: %s (%s, H %d, %d layers, FFN %d, heads %d/%d, vocab %d)\n", path, info.model_type,
               info.hidden_size, info.num_layers, info.intermediate_size, info.num_heads, info.num_kv_heads,
               info.vocab_size);
        printf("weights: %s, %.1f MB stored; loaded in %.2f s\n", info.weight_dtype, wbytes / 1e6, t_load);
        printf("kernel: %s (T > %d rows); precision: %s\n", kernel, FP_GEMV_MAX_T, precision);
        if (nth) printf("threads: %d", nth);
        else printf("threads: OpenMP default");
        printf("; %ld warm-up + %ld timed runs per length; trunk prefill over all rows, no head\n", warmup, repeat);
        printf("%7s %10s %10s %10s %9s %9s %10s %12s\n", "T", "tok/s", "best", "worst", "s/run", "GFLOP/s", "cpu/wall",
               "tok/cpu-s*N");
        for (int i = 0; i < nts; i++) {
            bench_row *r = &rows[i];
            printf("%7d %10.1f %10.1f %10.1f %9.3f %9.1f %10.2f %12.1f\n", r->T, r->T / r->med, r->T / r->best,
                   r->T / r->worst, r->med, r->total_flops / r->med * 1e-9, r->cpu_med / r->med,
                   r->cpu_med > 0 ? r->T / (r->cpu_med / nthr) : 0.0);
        }
        for (int i = 0; i < nts; i++) {
            bench_row *r = &rows[i];
            if (!r->have_prof) continue;
            printf("phases at T=%d (profiled run: %.3f s vs forward median %.3f s):\n", r->T, r->prof.total, r->med);
            for (int p = 0; p < FP_PROFILE_NPHASES; p++) {
                double s = r->prof.seconds[p];
                printf("  %-13s %8.3f s %5.1f %%", fp_model_profile_phase_name(p), s,
                       r->prof.total > 0 ? 100 * s / r->prof.total : 0.0);
                if (r->flops[p] > 0 && s > 0) printf(" %8.1f GFLOP/s", r->flops[p] / s * 1e-9);
                printf("\n");
            }
        }
        if (bon[0]) {
            double tot = (double)bon[0] * (bon[1] + bon[2]);
            printf("best-of-N (%d candidates x (%d shared + %d own tokens), read-out at the last token):\n"
                   "  separate prefills %8.3f s (%.1f candidate tok/s)\n"
                   "  shared prefix     %8.3f s (%.1f candidate tok/s): %.2fx faster\n"
                   "  prefix + %d suffixes as one %d-token prefill (the floor): %.3f s; shared prefix costs %.2fx it\n",
                   bon[0], bon[1], bon[2], bon_sep, tot / bon_sep, bon_shared, tot / bon_shared, bon_sep / bon_shared,
                   bon[0], bon[1] + bon[0] * bon[2], bon_once, bon_shared / bon_once);
        }
        printf("peak RSS: %.1f MB (after load: %.1f MB; after each length:", rss_peak, rss_load);
        for (int i = 0; i < nts; i++) printf(" T=%d %.1f MB", rows[i].T, rows[i].rss_mb);
        printf(")\n");
    }
done:
    free(ids); free(out); free(rows); free(secs); free(cpus);
    fp_model_free(m);
    return rc;
}
