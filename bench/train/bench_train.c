/* Training-step benchmark: one joint-loss (PRM MSE) training step = forward + backward + AdamW on a
 * random-weight Qwen2 of the 0.5B shape (hidden 896, FFN 4864, 14/2 heads, head_dim 64), f32.
 *   bench_train [--layers L] [--T T] [--vocab V] [--steps N] [--threads N] [--no-step]
 * Prints one line per timed step and a summary line:
 *   fluxprm layers=L T=T vocab=V threads=N params=P median_s=... tokens_per_s=... cpu_s=... peak_rss_mb=...
 * (median_s: wall seconds per step; cpu_s: median process CPU seconds (user+sys) per step, which discounts the
 * time the threads were descheduled on a shared machine; peak_rss_mb: ru_maxrss in MiB.) */
#include "train/train.h"
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    int L = 24, T = 1024, V = 151936, steps = 3, threads = 2, do_step = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--layers") && i + 1 < argc) L = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--T") && i + 1 < argc) T = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--vocab") && i + 1 < argc) V = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-step")) do_step = 0;
        else { fprintf(stderr, "bench_train: unknown argument %s\n", argv[i]); return 2; }
    }
    if (L < 1 || T < 8 || V < 16 || steps < 1 || threads < 1) { fprintf(stderr, "bench_train: bad arguments\n"); return 2; }
    omp_set_num_threads(threads);
    fpt_config c = {.vocab = V, .hidden = 896, .intermediate = 4864, .layers = L, .heads = 14, .kv_heads = 2,
                    .head_dim = 64, .rms_eps = 1e-6f, .rope_theta = 1000000.0, .tie_embeddings = 1,
                    .has_score = 1};
    fpt_model *m = NULL;
    if (fpt_model_new(&m, &c)) { fprintf(stderr, "bench_train: model alloc failed\n"); return 1; }
    fpt_model_init_random(m, 1234, 0.02f);
    fpt_model_set_mode(m, FPT_MODE_FULL);
    fpt_adamw cfg_o;
    if (fpt_adamw_init(&cfg_o, fpt_model_num_params(m))) { fprintf(stderr, "bench_train: adam alloc failed\n"); return 1; }
    fpt_adamw_cfg oc = {.lr = 1e-5f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.0f,
                        .max_grad_norm = 1.0f, .schedule = FPT_SCHED_CONSTANT};
    int *tok = malloc(sizeof(int) * (size_t)T);
    int nst = T / 64 > 0 ? T / 64 : 1;
    int *pos = malloc(sizeof(int) * (size_t)nst);
    float *rew = malloc(sizeof(float) * (size_t)nst);
    uint64_t s = 99;
    for (int t = 0; t < T; t++) { s = s * 6364136223846793005ull + 1442695040888963407ull; tok[t] = (int)((s >> 33) % (uint64_t)V); }
    for (int i = 0; i < nst; i++) { pos[i] = (i + 1) * (T / nst) - 2; rew[i] = (float)((i * 37) % 100) / 100.0f; }
    fpt_record r = {.tokens = tok, .T = T, .n_steps = nst, .step_pos = pos, .step_reward = rew,
                    .final_reward = 0.7f};
    fpt_loss_cfg lc = {.lambda_step = 1, .lambda_final = 1, .w_joint = 1};
    double *ts = malloc(sizeof(double) * (size_t)(steps + 1)), *cs = malloc(sizeof(double) * (size_t)(steps + 1));
    for (int i = 0; i <= steps; i++) { /* step 0 is a warm-up (first touch of activations) */
        fpt_loss_out lo;
        double t0 = now_s(), c0 = cpu_s();
        if (fpt_forward_backward(m, &r, &lc, 1.0f, &lo)) { fprintf(stderr, "bench_train: step failed\n"); return 1; }
        double t1 = now_s();
        double gn = 0, lr = 0;
        if (do_step && fpt_model_step(m, &cfg_o, &oc, &gn, &lr)) { fprintf(stderr, "bench_train: adamw failed\n"); return 1; }
        fpt_model_zero_grad(m);
        double t2 = now_s();
        if (i > 0) { ts[i - 1] = t2 - t0; cs[i - 1] = cpu_s() - c0; }
        printf("# step %d%s: fwd+bwd %.3f s, adamw+zero %.3f s, loss %.6f, grad_norm %.4g\n", i,
               i ? "" : " (warm-up)", t1 - t0, t2 - t1, lo.total, gn);
        fflush(stdout);
    }
    qsort(ts, (size_t)steps, sizeof(double), cmp_d);
    qsort(cs, (size_t)steps, sizeof(double), cmp_d);
    double med = steps % 2 ? ts[steps / 2] : 0.5 * (ts[steps / 2 - 1] + ts[steps / 2]);
    double cmed = steps % 2 ? cs[steps / 2] : 0.5 * (cs[steps / 2 - 1] + cs[steps / 2]);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("fluxprm layers=%d T=%d vocab=%d threads=%d params=%zu median_s=%.4f tokens_per_s=%.1f cpu_s=%.3f peak_rss_mb=%.0f\n",
           L, T, V, threads, fpt_model_num_params(m), med, T / med, cmed, ru.ru_maxrss / 1024.0);
    fpt_adamw_free(&cfg_o);
    fpt_model_free(m);
    free(tok); free(pos); free(rew); free(ts); free(cs);
    return 0;
}
