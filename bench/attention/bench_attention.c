/* Attention benchmark: GFLOP/s of fp_attention_forward_ex (exact f32 and fast bf16/AMX paths) and of the
 * one-row f32 kernel it replaced, on causal prefill shapes.
 *
 *   bench_attention [--threads N] [--reps R] [--paths exact,fast,rows] [--group K] [--shape NH/NKV/D/T]...
 * --group K: the AMX kernel's grouped tasks (fp_attention_amx_group): K > 0 forced with chunks of K keys, -1 off,
 * 0 (default) the kernel's own choice.
 * Default shapes: Qwen2.5-0.5B (14/2/64) and 1.5B (12/2/128) at T = 512, 2048, 8192.
 * flops = 2 * 2 * d * nh * T (T + 1) / 2 (S = Q K^T and P V over the causal half).  Each figure is the median
 * over R timed calls after a warm-up (the rows kernel, ~5-10x slower, gets max(1, R/3) calls at T >= 8192).
 * Output, one line per measurement:
 *   path nh nkv d T threads GFLOP/s(median wall) ms(median) best-GFLOP/s(min wall) cpu-GFLOP/s
 * cpu-GFLOP/s = flops / (median process CPU time / threads): discounts preemption on a shared machine. */
#include "fluxprm.h"
#include "tensor/kernels.h"
#include "tensor/ops.h"
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../bench_util.h"

int main(int argc, char **argv) {
    int threads = 1, reps = 5, nshape = 0;
    int shapes[32][4];
    const char *paths = "rows,exact,fast";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--paths") && i + 1 < argc) paths = argv[++i];
        else if (!strcmp(argv[i], "--group") && i + 1 < argc) fp_attention_amx_group(atoi(argv[++i]));
        else if (!strcmp(argv[i], "--shape") && i + 1 < argc && nshape < 32) {
            int *s = shapes[nshape];
            if (sscanf(argv[++i], "%d/%d/%d/%d", &s[0], &s[1], &s[2], &s[3]) == 4) nshape++;
        } else {
            fprintf(stderr, "usage: %s [--threads N] [--reps R] [--paths exact,fast,rows] [--group K] [--shape NH/NKV/D/T]...\n", argv[0]);
            return 2;
        }
    }
    if (!nshape) {
        const int def[6][4] = {{14, 2, 64, 512}, {14, 2, 64, 2048}, {14, 2, 64, 8192},
                               {12, 2, 128, 512}, {12, 2, 128, 2048}, {12, 2, 128, 8192}};
        memcpy(shapes, def, sizeof def);
        nshape = 6;
    }
    if (reps < 1) reps = 1;
    omp_set_num_threads(threads);
    int level = fp_kernel_level();
    printf("# level %s, %d thread(s); exact -> %s, fast -> %s, rows -> %s\n", fp_kernel_level_name(level), threads,
           fp_attention_kernel_name(level, 1, 1, 64), fp_attention_kernel_name(level, 0, 1, 64),
           fp_attention_kernel_name(level, 2, 1, 64));
    for (int si = 0; si < nshape; si++) {
        int nh = shapes[si][0], nkv = shapes[si][1], d = shapes[si][2], T = shapes[si][3];
        size_t nq = (size_t)T * nh * d, nk = (size_t)T * nkv * d;
        float *q = malloc(sizeof(float) * nq), *k = malloc(sizeof(float) * nk), *v = malloc(sizeof(float) * nk),
              *o = malloc(sizeof(float) * nq);
        if (!q || !k || !v || !o) return 1;
        for (size_t i = 0; i < nq; i++) q[i] = frand();
        for (size_t i = 0; i < nk; i++) k[i] = frand(), v[i] = frand();
        double flops = 2.0 * 2.0 * d * nh * (double)T * (T + 1) / 2.0;
        static const char *names[3] = {"rows", "exact", "fast"};
        static const int modes[3] = {2, 1, 0};
        for (int p = 0; p < 3; p++) {
            if (!strstr(paths, names[p])) continue;
            int r = p == 0 && T >= 8192 ? (reps / 3 > 0 ? reps / 3 : 1) : reps;
            double *w = malloc(sizeof(double) * r), *c = malloc(sizeof(double) * r);
            if (fp_attention_forward_level(level, modes[p], 1, o, q, k, v, NULL, NULL, T, T, nh, nkv, d)) return 1;
            for (int i = 0; i < r; i++) {
                double w0 = now(), c0 = cpu_now();
                fp_attention_forward_level(level, modes[p], 1, o, q, k, v, NULL, NULL, T, T, nh, nkv, d);
                w[i] = now() - w0;
                c[i] = cpu_now() - c0;
            }
            qsort(w, r, sizeof(double), cmp_d);
            qsort(c, r, sizeof(double), cmp_d);
            double med = w[r / 2], best = w[0], cpu = c[r / 2] / threads;
            printf("%-6s %3d %3d %4d %6d %3d %9.1f %10.3f %9.1f %9.1f\n", names[p], nh, nkv, d, T, threads,
                   flops / med * 1e-9, med * 1e3, flops / best * 1e-9, flops / cpu * 1e-9);
            fflush(stdout);
            free(w); free(c);
        }
        free(q); free(k); free(v); free(o);
    }
    return 0;
}
