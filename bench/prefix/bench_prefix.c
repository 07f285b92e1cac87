/* Shared-prefix cost check (not a test): N candidates = one prefix of P tokens + N different suffixes of S
 * tokens, each with step read-outs in its suffix.  Times
 *   full:   N separate fp_model_score_positions over P + S tokens,
 *   packed: fp_model_score_batch over the N sequences (what `score` does for a batch),
 *   prefix: the prefix prefilled once into a KV cache, then the suffixes as branches of it
 *           (fp_model_forward_branches, up to 2048 rows per pass: the path of fp_prm_score_candidates /
 *           bestofn --model),
 * and prints the ratios and the largest probability difference.
 * usage: bench_prefix [--model DIR] [--prefix P] [--suffix S] [--n N] [--threads T] [--reps R] */
#include "model/model.h"
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    const char *dir = "tests/ref/model/qwen2_prm";
    int P = 512, S = 128, N = 8, threads = 0, reps = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) dir = argv[i + 1];
        else if (!strcmp(argv[i], "--prefix")) P = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--suffix")) S = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--n")) N = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
    }
    if (P < 1 || S < 1 || N < 1 || reps < 1) { fprintf(stderr, "bad sizes\n"); return 2; }
    fp_model *m;
    if (fp_model_load(&m, dir)) { fprintf(stderr, "%s\n", fp_last_error()); return 1; }
    if (threads > 0) fp_model_set_threads(m, threads);
    if (m->head == FP_HEAD_NONE) { fprintf(stderr, "%s: needs a score head\n", dir); return 1; }
    const int T = P + S, V = m->cfg.vocab_size, H = m->cfg.hidden_size, L = m->num_labels;
    int npos = S / 32 + 1; /* a step every 32 tokens of the suffix, and the last token */
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)N * T);
    int *pos = malloc(sizeof(int) * (size_t)npos), *rows = malloc(sizeof(int) * (size_t)npos);
    float *pf = malloc(sizeof(float) * (size_t)N * npos), *pp = malloc(sizeof(float) * (size_t)N * npos),
          *pc = malloc(sizeof(float) * (size_t)N * npos), *h = malloc(sizeof(float) * (size_t)N * npos * H),
          *lg = malloc(sizeof(float) * (size_t)N * npos * L);
    int32_t *bra = malloc(sizeof(int32_t) * (size_t)N * S);
    int *seg = calloc((size_t)N + 1, sizeof(int)), *brows = malloc(sizeof(int) * (size_t)N * npos);
    srand(1);
    for (int t = 0; t < P; t++) ids[t] = rand() % V;
    for (int i = 0; i < N; i++) {
        memcpy(ids + (size_t)i * T, ids, sizeof(int32_t) * (size_t)P);
        for (int t = P; t < T; t++) ids[(size_t)i * T + t] = rand() % V;
    }
    for (int k = 0; k < npos; k++) pos[k] = k + 1 < npos ? P + 31 + 32 * k : T - 1, rows[k] = pos[k] - P;
    fp_model_seq *seqs = calloc((size_t)N, sizeof *seqs);
    for (int i = 0; i < N; i++)
        seqs[i] = (fp_model_seq){ids + (size_t)i * T, T, pos, npos, pp + (size_t)i * npos, NULL};
    double tf = 1e30, tp = 1e30, tc = 1e30;
    fp_kv_cache *c = fp_kv_cache_new(m, T);
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        for (int i = 0; i < N; i++) fp_model_score_positions(m, ids + (size_t)i * T, T, pos, npos, pf + (size_t)i * npos);
        double t1 = now();
        fp_model_score_batch(m, seqs, N);
        double t2 = now();
        fp_kv_cache_truncate(c, 0);
        fp_model_forward_cached(m, c, ids, P, NULL, 0, NULL, NULL);
        for (int i0 = 0; i0 < N;) { /* suffixes as branches of the prefix, up to 2048 rows per pass */
            int nb = 0;
            for (; i0 + nb < N && (nb == 0 || (nb + 1) * S <= 2048); nb++) {
                memcpy(bra + (size_t)nb * S, ids + (size_t)(i0 + nb) * T + P, sizeof(int32_t) * (size_t)S);
                seg[nb + 1] = (nb + 1) * S;
                for (int k = 0; k < npos; k++) brows[nb * npos + k] = nb * S + rows[k];
            }
            fp_model_forward_branches(m, c, bra, seg, nb, brows, nb * npos, h);
            fp_model_apply_head(m, h, nb * npos, lg);
            for (int k = 0; k < nb * npos; k++) { /* P(class 1) as fp_model_score_positions */
                const float *z = lg + (size_t)k * L;
                double mx = z[0], s = 0;
                for (int j = 1; j < L; j++) mx = z[j] > mx ? z[j] : mx;
                for (int j = 0; j < L; j++) s += exp((double)z[j] - mx);
                pc[(size_t)i0 * npos + k] = L == 1 ? (float)(1.0 / (1.0 + exp(-(double)z[0]))) : (float)(exp((double)z[1] - mx) / s);
            }
            i0 += nb;
        }
        double t3 = now();
        if (t1 - t0 < tf) tf = t1 - t0;
        if (t2 - t1 < tp) tp = t2 - t1;
        if (t3 - t2 < tc) tc = t3 - t2;
    }
    double md = 0;
    for (int i = 0; i < N * npos; i++) md = fmax(md, fmax(fabs(pc[i] - pf[i]), fabs(pp[i] - pf[i])));
    printf("model %s  H=%d layers=%d  prefix %d + suffix %d tokens, N=%d, threads %d, best of %d\n", dir, H,
           m->cfg.num_layers, P, S, N, threads > 0 ? threads : omp_get_max_threads(), reps);
    printf("  full   (N x score_positions): %8.3f s\n", tf);
    printf("  packed (score_batch):         %8.3f s\n", tp);
    printf("  prefix (KV cache, 1 prefix):  %8.3f s\n", tc);
    printf("  ratio prefix/full = %.3f   prefix/packed = %.3f   (ideal (P + N S)/(N (P + S)) = %.3f)\n", tc / tf, tc / tp,
           (double)(P + (double)N * S) / ((double)N * T));
    printf("  max |prob diff| = %.2g\n", md);
    fp_kv_cache_free(c);
    fp_model_free(m);
    free(ids); free(pos); free(rows); free(pf); free(pp); free(pc); free(h); free(lg); free(seqs); free(bra); free(seg); free(brows);
    return 0;
}
