/* Element-wise layer ops (fp_swiglu_forward, fp_rmsnorm_forward, fp_rope_forward, fp_add_forward) at every
 * kernel level this CPU has (ref, avx2, avx512, forced with fp_kernel_force), against an independent
 * double-precision evaluation of the same formula on random data, odd sizes and extreme inputs.
 *
 * Tolerances (u = 2^-24, the f32 unit roundoff; 1 ulp of a value v is at most 2u|v|):
 *  - swiglu: |got - exact| <= 8u |exact| (4 ulp) + 3e-37 |up| + 2^-148.  The f32 path has the exp error
 *    (<= 2 ulp for the vector exp, ~1 for libm), 1 + e, the division and the product (0.5 ulp each).  The
 *    absolute terms: g < -88.72 makes exp(-g) overflow, so HF's form gives -0 * up where the exact value is
 *    below 88.8 e^-88.72 |up| < 3e-37 |up|; a subnormal silu(g) (|g| < 2.4e-38 or g < -87.3) is off by up to
 *    2^-150 before the product with up (< 3e-37 |up| too); subnormal results are off by 2^-149 per rounding.
 *    The ulp statistic (and its <= 4 check) excludes those flushed/subnormal cases.
 *    Exact zeros/infinities/NaNs of the double formula must be met exactly (NaN for NaN, same infinity).
 *  - rmsnorm: |got - exact| <= 1e-6 |exact| + 1e-37: var, var + eps, sqrtf, the division, x r and w (x r)
 *    each round once (<= 6 u ~ 3.6e-7 in all), the double sum of squares adds ~1e-16.
 *  - rope: |got - exact| <= 2u (|x1 c| + |x2 s|) (resp. |x2 c| + |x1 s|): products and sum round once each.
 *  - add: bit-exact: the f32 sum is correctly rounded, and (float)((double)a + b) equals it for the
 *    operands used here (exponents within 29 of each other, so the double sum is exact).
 * The largest swiglu error seen is printed in ulps of the exact value. */
#include "harness.h"
#include "fluxprm.h"
#include "tensor/kernels.h"
#include "tensor/ops.h"
#include "test_rand.h"
#include <float.h>
#include <stdint.h>

/* sign * 10^e, e uniform in [lo, hi] */
static float flog(double lo, double hi) {
    double e = lo + (hi - lo) * (rnd() >> 8) * (1.0 / 16777216.0);
    return (float)((rnd() & 1 ? -1.0 : 1.0) * pow(10.0, e));
}

static const int Cs[] = {1, 7, 15, 17, 896, 4864, 1001};
static const int Ts[] = {1, 2, 5, 16, 17, 33, 100};
#define NC (int)(sizeof Cs / sizeof Cs[0])
#define NT (int)(sizeof Ts / sizeof Ts[0])

static int level_ok(int level) {
    if (level > fp_cpu_max_kernel()) {
        printf("  (CPU lacks %s)\n", fp_kernel_level_name(level));
        return 0;
    }
    fp_kernel_force(level);
    CHECK(fp_kernel_level() == level);
    return 1;
}

/* ---------------------------------------------------------------- swiglu */
static double sw_maxulp;

static void check_swiglu(const float *g, const float *u, const float *got, size_t n) {
    int bad = 0;
    for (size_t i = 0; i < n && bad < 5; i++) {
        double gd = g[i], ud = u[i];
        double ex = gd / (1.0 + exp(-gd)) * ud;
        double o = got[i];
        int ok;
        if (isnan(ex)) ok = isnan(o);
        else if (isinf(ud) && fabs(gd / (1.0 + exp(-gd))) < 3e-37) /* silu(g) flushes to 0 in f32: 0 * inf */
            ok = isnan(o) || o == ex;                           /* = NaN, as HF's f32 form */
        else if (fabs(ex) > FLT_MAX) /* overflows f32: inf, or FLT_MAX when within the error bound */
            ok = (isinf(o) || fabs(o) >= FLT_MAX * (1.0 - 8.0 * 0x1p-24)) && signbit(o) == signbit(ex);
        else {
            double err = fabs(o - ex), tol = 8.0 * 0x1p-24 * fabs(ex) + 3e-37 * fabs(ud) + 0x1p-148;
            ok = err <= tol;
            /* ulps where neither silu(g) nor the result is subnormal or flushed */
            if (fabs(ex) >= FLT_MIN && fabs(gd / (1.0 + exp(-gd))) >= FLT_MIN && gd > -88.72) {
                int e;
                frexp(ex, &e);
                double ulps = err / ldexp(1.0, e - 24);
                if (ulps > sw_maxulp) sw_maxulp = ulps;
            }
        }
        if (!ok) {
            bad++;
            CHECK_MSG(0, "swiglu[%zu]: g %.9g u %.9g -> %.9g, exact %.9g", i, g[i], u[i], got[i], ex);
        }
    }
}

static void run_swiglu(int T, int C, int mode, int alias) {
    size_t n = (size_t)T * C;
    float *g = malloc(sizeof(float) * n), *u = malloc(sizeof(float) * n), *o = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) {
        g[i] = mode == 0 ? 8.0f * frand() : flog(-40, 2.1); /* mode 1: |g| from 1e-40 to ~126 */
        u[i] = mode == 0 ? 2.0f * frand() : flog(-3, 3);
    }
    float *g0 = alias ? malloc(sizeof(float) * n) : g;
    if (alias) memcpy(g0, g, sizeof(float) * n);
    fp_swiglu_forward(alias ? g : o, g, u, T, C);
    check_swiglu(g0, u, alias ? g : o, n);
    if (alias) free(g0);
    free(g);
    free(u);
    free(o);
}

static int swiglu_level(int level) {
    if (!level_ok(level)) return TH_SKIP;
    sw_maxulp = 0;
    for (int ti = 0; ti < NT; ti++)
        for (int ci = 0; ci < NC; ci++) run_swiglu(Ts[ti], Cs[ci], (ti + ci) & 1, ci == 4);
    run_swiglu(512, 4864, 0, 1); /* the model's shape, threaded */
    /* every f32 exponent range of g, and the neighbourhood of the exp overflow / underflow thresholds */
    for (int rep = 0; rep < 4; rep++) {
        int n = 4001;
        float *g = malloc(sizeof(float) * n), *u = malloc(sizeof(float) * n), *o = malloc(sizeof(float) * n);
        for (int i = 0; i < n; i++) {
            if (rep == 0) g[i] = flog(-45, 38.5);
            else if (rep == 1) g[i] = -(86.0f + 20.0f * (float)i / n); /* -86 .. -106 */
            else if (rep == 2) g[i] = 85.0f + 21.0f * (float)i / n;
            else g[i] = -0.7f + 1.4f * (float)i / n; /* reduction boundaries near |g| = ln2/2 */
            u[i] = rep == 0 ? flog(-2, 2) : 1.0f;
        }
        fp_swiglu_forward(o, g, u, 1, n);
        check_swiglu(g, u, o, (size_t)n);
        free(g);
        free(u);
        free(o);
    }
    /* special values */
    const float sv[] = {100.0f, -100.0f, 1e-30f, -1e-30f, 0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN,
                        88.72f, -88.72f, 88.73f, -88.73f, 104.0f, -104.0f, 1e30f, -1e30f, FLT_MAX, -FLT_MAX,
                        FLT_MIN, 1e-45f, -1e-45f, 0.5f, -0.5f, 20.0f, -20.0f};
    const float su[] = {1.0f, -3.0f, 0.0f, 1e30f, INFINITY, NAN};
    int ns = (int)(sizeof sv / sizeof sv[0]), nu = (int)(sizeof su / sizeof su[0]);
    float g[200], u[200], o[200];
    int n = 0;
    for (int a = 0; a < ns; a++)
        for (int b = 0; b < nu; b++)
            if (n < 200) g[n] = sv[a], u[n] = su[b], n++;
    fp_swiglu_forward(o, g, u, 1, n);
    check_swiglu(g, u, o, (size_t)n);
    /* the documented limits, exactly */
    float gs[6] = {-100.0f, 100.0f, -INFINITY, INFINITY, NAN, -1e-30f}, us[6] = {2, 2, 2, 2, 2, 2}, os[6];
    fp_swiglu_forward(os, gs, us, 1, 6);
    CHECK(os[0] == 0.0f && signbit(os[0])); /* -0: exp(100) overflows, as in HF's f32 */
    CHECK(os[1] == 200.0f);
    CHECK(isnan(os[2])); /* -inf / inf, as torch.nn.functional.silu */
    CHECK(isinf(os[3]) && os[3] > 0);
    CHECK(isnan(os[4]));
    CHECK(os[5] == -1e-30f);
    printf("  %s: swiglu max error %.2f ulp\n", fp_kernel_level_name(level), sw_maxulp);
    CHECK(sw_maxulp <= 4.0);
    fp_kernel_force(-1);
    return 0;
}

/* fp_swiglu_forward_fast (tensor/swiglu16_fast.h): at the avx512 level within 12 u (u = 2^-24) of the exact
 * value relative, for gate >= -87 (exp(-g) <= 2^125.5: every intermediate normal); below, |out| <= 2^-125
 * |g u| + the relative bound; the documented special values; the same code for tails and aliasing.  Below
 * avx512 it is fp_swiglu_forward, bit for bit. */
static int test_swiglu_fast(void) {
    if (fp_cpu_max_kernel() < FP_KERN_AVX512) return TH_SKIP;
    int n = 20011; /* not a multiple of 16: a tail */
    float *g = malloc(sizeof(float) * n), *u = malloc(sizeof(float) * n), *o = malloc(sizeof(float) * n),
          *o2 = malloc(sizeof(float) * n);
    double worst = 0;
    for (int rep = 0; rep < 4; rep++) {
        for (int i = 0; i < n; i++) {
            if (rep == 0) g[i] = flog(-40, 1.94); /* |g| from 1e-40 to ~87 */
            else if (rep == 1) g[i] = -87.0f + 200.0f * (float)i / n; /* -87 .. 113: saturation to g */
            else if (rep == 2) g[i] = -0.7f + 1.4f * (float)i / n;    /* 2^t near integers of t */
            else g[i] = 8.0f * frand();
            u[i] = rep == 0 ? flog(-3, 3) : 2.0f * frand() + 0.5f;
        }
        fp_kernel_force(FP_KERN_AVX512);
        fp_swiglu_forward_fast(o, g, u, 1, n);
        for (int i = 0; i < n; i++) {
            double gd = g[i], ex = gd / (1.0 + exp(-gd)) * u[i], err = fabs(o[i] - ex);
            /* 12 u relative; + 2^-148 (1 + |u|) where g sigmoid(g) or the result is subnormal (|g| from 1e-40):
             * the spacing there is 2^-149, times u for the intermediate */
            if (err > 12.0 * 0x1p-24 * fabs(ex) + 0x1p-148 * (1.0 + fabs(u[i]))) {
                CHECK_MSG(0, "swiglu fast: g %.9g u %.9g -> %.9g, exact %.9g", g[i], u[i], o[i], ex);
                break;
            }
            if (fabs(ex) >= FLT_MIN && fabs(gd / (1.0 + exp(-gd))) >= FLT_MIN && err / fabs(ex) / 0x1p-24 > worst)
                worst = err / fabs(ex) / 0x1p-24;
        }
        /* in place (out aliases gate), and the avx2 level: the exact kernel */
        memcpy(o2, g, sizeof(float) * n);
        fp_swiglu_forward_fast(o2, o2, u, 1, n);
        CHECK(!memcmp(o, o2, sizeof(float) * n));
        fp_kernel_force(FP_KERN_AVX2);
        fp_swiglu_forward_fast(o, g, u, 1, n);
        fp_swiglu_forward(o2, g, u, 1, n);
        CHECK(!memcmp(o, o2, sizeof(float) * n));
    }
    fp_kernel_force(FP_KERN_AVX512);
    float gs[8] = {-100.0f, 100.0f, -INFINITY, INFINITY, NAN, -1e-30f, 0.0f, -200.0f}, us[8] = {2, 2, 2, 2, 2, 2, 2, 2}, os[8];
    fp_swiglu_forward_fast(os, gs, us, 1, 8);
    CHECK(fabsf(os[0]) <= 0x1p-125f * 200.0f);     /* the exact kernel gives -0 */
    CHECK(os[1] == 200.0f);
    CHECK(isinf(os[2]) && os[2] < 0);              /* -inf * 2: the clamp keeps 1 + 2^t finite */
    CHECK(isinf(os[3]) && os[3] > 0);
    CHECK(isnan(os[4]));
    CHECK(os[5] == -1e-30f);
    CHECK(os[6] == 0.0f);
    CHECK(fabsf(os[7]) <= 0x1p-125f * 400.0f);
    fp_kernel_force(-1);
    printf("  avx512: swiglu fast max error %.2f u relative\n", worst);
    free(g);
    free(u);
    free(o);
    free(o2);
    return 0;
}

/* ---------------------------------------------------------------- rmsnorm */
static void rms_exact(double *ex, const float *x, const float *w, float eps, int T, int C) {
    for (int t = 0; t < T; t++) {
        long double ss = 0;
        for (int i = 0; i < C; i++) ss += (long double)x[(size_t)t * C + i] * x[(size_t)t * C + i];
        double r = 1.0 / sqrt((double)(ss / C) + eps);
        for (int i = 0; i < C; i++) ex[(size_t)t * C + i] = (double)w[i] * x[(size_t)t * C + i] * r;
    }
}

/* kind 0: random, 1: all zeros, 2: huge (|x| ~ 1e18: an f32 sum of squares overflows), 3: tiny (1e-20:
 * f32 squares underflow), 4: mixed magnitudes within a row */
static void run_rmsnorm(int T, int C, int kind, int alias) {
    size_t n = (size_t)T * C;
    float *x = malloc(sizeof(float) * n), *o = malloc(sizeof(float) * n), *w = malloc(sizeof(float) * C);
    double *ex = malloc(sizeof(double) * n);
    const float eps = 1e-6f;
    for (int i = 0; i < C; i++) w[i] = 1.0f + 0.5f * frand();
    for (size_t i = 0; i < n; i++) {
        float v = frand();
        x[i] = kind == 0 ? 3.0f * v : kind == 1 ? 0.0f : kind == 2 ? 1e18f * v : kind == 3 ? 1e-20f * v
                                                                              : v * flog(-6, 6);
    }
    rms_exact(ex, x, w, eps, T, C);
    fp_rmsnorm_forward(alias ? x : o, x, w, eps, T, C);
    const float *got = alias ? x : o;
    int bad = 0;
    for (size_t i = 0; i < n && bad < 5; i++)
        if (!(fabs(got[i] - ex[i]) <= 1e-6 * fabs(ex[i]) + 1e-37)) {
            bad++;
            CHECK_MSG(0, "rmsnorm T %d C %d kind %d [%zu]: %.9g vs %.9g", T, C, kind, i, got[i], ex[i]);
        }
    free(x);
    free(o);
    free(w);
    free(ex);
}

static int rmsnorm_level(int level) {
    if (!level_ok(level)) return TH_SKIP;
    for (int ti = 0; ti < NT; ti++)
        for (int ci = 0; ci < NC; ci++) run_rmsnorm(Ts[ti], Cs[ci], (ti * 3 + ci) % 5, ci & 1);
    for (int kind = 0; kind < 5; kind++) {
        run_rmsnorm(3, 896, kind, 0);
        run_rmsnorm(20, 64, kind, 1);
        run_rmsnorm(2, 4864, kind, 0);
    }
    run_rmsnorm(2048, 896, 0, 0); /* the model's shape, threaded */
    /* Documented limit: var is f32 (HF), so rms >= ~1.8e19 gives var = inf, r = 0 and out = 0 (HF's f32 path
     * overflows there too).  Finite inputs never give NaN. */
    {
        float x[33], w[33], o[33];
        for (int i = 0; i < 33; i++) x[i] = (i & 1 ? -1e20f : 1e20f), w[i] = 1.0f;
        fp_rmsnorm_forward(o, x, w, 1e-6f, 1, 33);
        for (int i = 0; i < 33; i++) CHECK(o[i] == 0.0f);
        for (int i = 0; i < 33; i++) x[i] = FLT_MAX;
        fp_rmsnorm_forward(o, x, w, 1e-6f, 1, 33);
        for (int i = 0; i < 33; i++) CHECK(o[i] == 0.0f);
        /* just below: 1e19 (mean square 1e38 < FLT_MAX) is still normalised */
        for (int i = 0; i < 33; i++) x[i] = 1e19f;
        fp_rmsnorm_forward(o, x, w, 1e-6f, 1, 33);
        for (int i = 0; i < 33; i++) CHECK_NEAR(o[i], 1.0, 1e-6);
        /* zeros: out = w * (0 * 1/sqrt(eps)) = 0 */
        for (int i = 0; i < 33; i++) x[i] = 0.0f, w[i] = 2.0f;
        fp_rmsnorm_forward(o, x, w, 1e-6f, 1, 33);
        for (int i = 0; i < 33; i++) CHECK(o[i] == 0.0f);
    }
    fp_kernel_force(-1);
    return 0;
}

/* ---------------------------------------------------------------- rope */
static void run_rope(int T, int nh, int d) {
    int half = d / 2;
    size_t n = (size_t)T * nh * d;
    float *x = malloc(sizeof(float) * n), *x0 = malloc(sizeof(float) * n);
    float *ct = malloc(sizeof(float) * (size_t)T * half), *st = malloc(sizeof(float) * (size_t)T * half);
    float *inv = malloc(sizeof(float) * half);
    int *pos = malloc(sizeof(int) * T);
    for (int t = 0; t < T; t++) pos[t] = (int)(rnd() % 40000);
    fp_rope_inv_freq(inv, 1e6, d);
    fp_rope_tables(ct, st, inv, T & 1 ? pos : NULL, T, d);
    for (size_t i = 0; i < n; i++) x0[i] = x[i] = 4.0f * frand();
    fp_rope_forward(x, ct, st, T, nh, d);
    int bad = 0;
    for (int t = 0; t < T; t++)
        for (int h = 0; h < nh; h++)
            for (int i = 0; i < half && bad < 5; i++) {
                size_t b = ((size_t)t * nh + h) * d;
                double x1 = x0[b + i], x2 = x0[b + i + half];
                double c = ct[(size_t)t * half + i], s = st[(size_t)t * half + i];
                double e1 = x1 * c - x2 * s, e2 = x2 * c + x1 * s;
                double tol1 = 2.0 * 0x1p-24 * (fabs(x1 * c) + fabs(x2 * s));
                double tol2 = 2.0 * 0x1p-24 * (fabs(x2 * c) + fabs(x1 * s));
                if (!(fabs(x[b + i] - e1) <= tol1) || !(fabs(x[b + i + half] - e2) <= tol2)) {
                    bad++;
                    CHECK_MSG(0, "rope T %d nh %d d %d: t %d h %d i %d: %.9g %.9g vs %.9g %.9g", T, nh, d, t, h, i,
                              x[b + i], x[b + i + half], e1, e2);
                }
            }
    free(x);
    free(x0);
    free(ct);
    free(st);
    free(inv);
    free(pos);
}

static int rope_level(int level) {
    if (!level_ok(level)) return TH_SKIP;
    const int ds[] = {2, 8, 30, 34, 64, 128};
    const int nhs[] = {1, 2, 14};
    for (int ti = 0; ti < NT; ti++)
        for (int di = 0; di < 6; di++) run_rope(Ts[ti], nhs[(ti + di) % 3], ds[di]);
    run_rope(512, 14, 64); /* threaded */
    fp_kernel_force(-1);
    return 0;
}

/* ---------------------------------------------------------------- add */
static void run_add(size_t n) {
    float *x = malloc(sizeof(float) * (n + 1)), *dx = malloc(sizeof(float) * (n + 1)), *x0 = malloc(sizeof(float) * (n + 1));
    for (size_t i = 0; i < n; i++) {
        x0[i] = x[i] = flog(-3, 3);
        dx[i] = flog(-3, 3);
    }
    if (n > 4) x0[3] = x[3] = NAN, x0[4] = x[4] = INFINITY, dx[4] = -INFINITY; /* NaN, inf - inf */
    x[n] = 12345.0f; /* guard */
    dx[n] = 1.0f;
    fp_add_forward(x, dx, n);
    int bad = 0;
    for (size_t i = 0; i < n && bad < 5; i++) {
        float e = (float)((double)x0[i] + (double)dx[i]);
        if (!(x[i] == e || (isnan(x[i]) && isnan(e)))) {
            bad++;
            CHECK_MSG(0, "add n %zu [%zu]: %.9g vs %.9g", n, i, x[i], e);
        }
    }
    CHECK(x[n] == 12345.0f);
    free(x);
    free(dx);
    free(x0);
}

static int add_level(int level) {
    if (!level_ok(level)) return TH_SKIP;
    const size_t ns[] = {0, 1, 7, 15, 16, 17, 63, 64, 65, 896, 1001, 4096, 4097, 65537, 512 * 896 + 3};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) run_add(ns[i]);
    fp_kernel_force(-1);
    return 0;
}

static int test_swiglu_ref(void) { return swiglu_level(FP_KERN_REF); }
static int test_swiglu_avx2(void) { return swiglu_level(FP_KERN_AVX2); }
static int test_swiglu_avx512(void) { return swiglu_level(FP_KERN_AVX512); }
static int test_rmsnorm_ref(void) { return rmsnorm_level(FP_KERN_REF); }
static int test_rmsnorm_avx2(void) { return rmsnorm_level(FP_KERN_AVX2); }
static int test_rmsnorm_avx512(void) { return rmsnorm_level(FP_KERN_AVX512); }
static int test_rope_ref(void) { return rope_level(FP_KERN_REF); }
static int test_rope_avx2(void) { return rope_level(FP_KERN_AVX2); }
static int test_rope_avx512(void) { return rope_level(FP_KERN_AVX512); }
static int test_add_ref(void) { return add_level(FP_KERN_REF); }
static int test_add_avx2(void) { return add_level(FP_KERN_AVX2); }
static int test_add_avx512(void) { return add_level(FP_KERN_AVX512); }

/* The vector levels compute the same lanes with the same operations: avx2 and avx512 agree bit for bit. */
static int test_levels_agree(void) {
    if (fp_cpu_max_kernel() < FP_KERN_AVX512) return TH_SKIP;
    int T = 7, C = 1001;
    size_t n = (size_t)T * C;
    float *g = malloc(sizeof(float) * n), *u = malloc(sizeof(float) * n), *a = malloc(sizeof(float) * n),
          *b = malloc(sizeof(float) * n), *w = malloc(sizeof(float) * C);
    for (size_t i = 0; i < n; i++) g[i] = flog(-10, 2), u[i] = frand();
    for (int i = 0; i < C; i++) w[i] = frand();
    fp_kernel_force(FP_KERN_AVX2);
    fp_swiglu_forward(a, g, u, T, C);
    fp_kernel_force(FP_KERN_AVX512);
    fp_swiglu_forward(b, g, u, T, C);
    CHECK(!memcmp(a, b, sizeof(float) * n));
    fp_kernel_force(FP_KERN_AVX2);
    fp_rmsnorm_forward(a, g, w, 1e-6f, T, C);
    fp_kernel_force(FP_KERN_AVX512);
    fp_rmsnorm_forward(b, g, w, 1e-6f, T, C);
    CHECK(!memcmp(a, b, sizeof(float) * n));
    fp_kernel_force(-1);
    free(g);
    free(u);
    free(a);
    free(b);
    free(w);
    return 0;
}

int main(void) {
    RUN(test_swiglu_ref);
    RUN(test_swiglu_avx2);
    RUN(test_swiglu_avx512);
    RUN(test_swiglu_fast);
    RUN(test_rmsnorm_ref);
    RUN(test_rmsnorm_avx2);
    RUN(test_rmsnorm_avx512);
    RUN(test_rope_ref);
    RUN(test_rope_avx2);
    RUN(test_rope_avx512);
    RUN(test_add_ref);
    RUN(test_add_avx2);
    RUN(test_add_avx512);
    RUN(test_levels_agree);
    return th_finish();
}
