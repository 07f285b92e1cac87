/* Small helpers shared by the C benchmarks (bench/<name>/bench_<name>.c): clocks, sorting, a seeded RNG. */
#ifndef FP_BENCH_UTIL_H
#define FP_BENCH_UTIL_H
#include <stdint.h>
#include <time.h>

/* Seconds on clock c (CLOCK_MONOTONIC: wall; CLOCK_PROCESS_CPUTIME_ID: CPU time of all threads). */
static inline double bench_clock(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static inline double now(void) { return bench_clock(CLOCK_MONOTONIC); }
static inline double cpu_now(void) { return bench_clock(CLOCK_PROCESS_CPUTIME_ID); }

/* qsort comparator for doubles (medians) */
static inline int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* uniform in [-1, 1), xorshift64, the same stream on every run */
static uint64_t bench_rng = 88172645463325252ull;
static inline float frand(void) {
    bench_rng ^= bench_rng << 13;
    bench_rng ^= bench_rng >> 7;
    bench_rng ^= bench_rng << 17;
    return (float)((bench_rng >> 40) * (1.0 / 16777216.0) * 2.0 - 1.0);
}
#endif
