/* Element-wise layer kernels: RMSNorm, rotary embedding, SwiGLU, residual add.
 *
 * Two implementations of each, picked per call by fp_kernel_level() (FLUXPRM_KERNEL / fp_kernel_force):
 *  - ref:          the plain scalar f32 code (the original kernels; expf from libm, double sum of squares);
 *  - avx2, avx512: one vector body (GCC vector extensions, 16 f32 lanes) compiled twice with target
 *                  attributes, lowered to 2 ymm / 1 zmm per vector.
 * Both follow HF's order of operations.  The build uses -std=c11, which implies -ffp-contract=off: no
 * multiply-add is fused, so the vector bodies round exactly like the scalar code except where noted (the
 * vectorised exp in SwiGLU, the summation order of RMSNorm's double sum).  The avx2 and avx512 variants
 * are bit-identical to each other (same lanes, same operations).  OpenMP threading happens outside the
 * target-specific code (the parallel loops call the selected row/chunk kernel). */
#include "tensor/ops.h"
#include "tensor/kernels.h"
#include "tensor/swiglu16.h"
#if defined(__x86_64__) || defined(__i386__)
#include "tensor/swiglu16_fast.h"
#endif
#include <math.h>
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------------------
 * Scalar reference (level "ref") */

static void rmsnorm_rows_ref(float *out, const float *inp, const float *weight, float eps, int t0, int t1, int C) {
    for (int t = t0; t < t1; t++) {
        const float *x = inp + (size_t)t * C;
        float *o = out + (size_t)t * C;
        double ss = 0.0;
        for (int i = 0; i < C; i++) ss += (double)x[i] * x[i];
        float var = (float)(ss / C);
        float r = 1.0f / sqrtf(var + eps);
        for (int i = 0; i < C; i++) o[i] = weight[i] * (x[i] * r);
    }
}

static void rope_row_ref(float *x, const float *c, const float *s, int nh, int d) {
    int half = d / 2;
    for (int h = 0; h < nh; h++) {
        float *xh = x + (size_t)h * d;
        for (int i = 0; i < half; i++) {
            float x1 = xh[i], x2 = xh[i + half];
            xh[i] = x1 * c[i] - x2 * s[i];
            xh[i + half] = x2 * c[i] + x1 * s[i];
        }
    }
}

static void swiglu_ref(float *out, const float *gate, const float *up, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = (g / (1.0f + expf(-g))) * up[i];
    }
}

static void add_ref(float *x, const float *dx, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] += dx[i];
}

/* ------------------------------------------------------------------------------------------------------
 * Vector bodies (always inlined into the target-specific wrappers below) */
#if defined(__x86_64__) || defined(__i386__)
#define FP_OPS_SIMD 1
typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));
typedef uint32_t v16i __attribute__((vector_size(64)));
typedef int32_t v16s __attribute__((vector_size(64)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));
typedef double v8d __attribute__((vector_size(64)));
#define AI static inline __attribute__((always_inline))

/* Helpers as macros: no function here takes or returns a vector by value (no ABI questions). */
#define LD16(p) (*(const v16u *)(p))
#define ST16(p, x) (*(v16u *)(p) = (x))
#define SPLAT(a) ((v16){0} + (a))
/* mask ? a : b, lane-wise (mask lanes all-ones or zero, as vector comparisons give) */
#define VSEL(mask, a, b) ((v16)(((v16i)(mask) & (v16i)(a)) | (~(v16i)(mask) & (v16i)(b))))

/* n values through a 16-value SwiGLU kernel (f16: fp_swiglu16 or fp_swiglu16_fast, inlined here), the tail
 * through the same code, zero padded. */
AI void swiglu_apply(void (*f16)(float *, const float *, const float *), float *out, const float *gate,
                     const float *up, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) f16(out + i, gate + i, up + i);
    if (i < n) {
        float g[16] = {0}, u[16] = {0}, o[16];
        memcpy(g, gate + i, sizeof(float) * (n - i));
        memcpy(u, up + i, sizeof(float) * (n - i));
        f16(o, g, u);
        memcpy(out + i, o, sizeof(float) * (n - i));
    }
}
AI void swiglu_body(float *out, const float *gate, const float *up, size_t n) {
    swiglu_apply(fp_swiglu16, out, gate, up, n); /* tensor/swiglu16.h */
}

/* Sum of squares in double lanes, as the reference: a double square of an f32 is exact (48-bit product) and
 * cannot overflow, so rows of any finite f32 values are summed without overflow (x ~ 1e18 over 896 columns
 * already overflows an f32 sum) and with ~1e-16 relative error; only the order of the additions differs from
 * the reference (32 lanes, then a tree).  f32 lanes would need scaling for that range and the accumulation
 * is not the bottleneck: the row is read once here and once more in the normalisation pass. */
AI void rmsnorm_rows_body(float *out, const float *inp, const float *weight, float eps, int t0, int t1, int C) {
    for (int t = t0; t < t1; t++) {
        const float *x = inp + (size_t)t * C;
        float *o = out + (size_t)t * C;
        v8d a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        int i = 0;
        for (; i + 32 <= C; i += 32) {
            v8d d0 = __builtin_convertvector(*(const v8u *)(x + i), v8d);
            v8d d1 = __builtin_convertvector(*(const v8u *)(x + i + 8), v8d);
            v8d d2 = __builtin_convertvector(*(const v8u *)(x + i + 16), v8d);
            v8d d3 = __builtin_convertvector(*(const v8u *)(x + i + 24), v8d);
            a0 += d0 * d0;
            a1 += d1 * d1;
            a2 += d2 * d2;
            a3 += d3 * d3;
        }
        for (; i + 8 <= C; i += 8) {
            v8d d0 = __builtin_convertvector(*(const v8u *)(x + i), v8d);
            a0 += d0 * d0;
        }
        a0 = (a0 + a1) + (a2 + a3);
        double ss = 0.0;
        for (; i < C; i++) ss += (double)x[i] * x[i];
        ss += ((a0[0] + a0[4]) + (a0[1] + a0[5])) + ((a0[2] + a0[6]) + (a0[3] + a0[7]));
        float var = (float)(ss / C);
        float r = 1.0f / sqrtf(var + eps);
        i = 0;
        for (; i + 16 <= C; i += 16) ST16(o + i, LD16(weight + i) * (LD16(x + i) * r));
        for (; i < C; i++) o[i] = weight[i] * (x[i] * r);
    }
}

AI void rope_row_body(float *x, const float *c, const float *s, int nh, int d) {
    int half = d / 2;
    for (int h = 0; h < nh; h++) {
        float *xh = x + (size_t)h * d;
        int i = 0;
        for (; i + 16 <= half; i += 16) {
            v16 x1 = LD16(xh + i), x2 = LD16(xh + i + half), cv = LD16(c + i), sv = LD16(s + i);
            ST16(xh + i, x1 * cv - x2 * sv);
            ST16(xh + i + half, x2 * cv + x1 * sv);
        }
        for (; i < half; i++) {
            float x1 = xh[i], x2 = xh[i + half];
            xh[i] = x1 * c[i] - x2 * s[i];
            xh[i + half] = x2 * c[i] + x1 * s[i];
        }
    }
}

AI void add_body(float *x, const float *dx, size_t n) {
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        v16 a0 = LD16(x + i) + LD16(dx + i), a1 = LD16(x + i + 16) + LD16(dx + i + 16);
        v16 a2 = LD16(x + i + 32) + LD16(dx + i + 32), a3 = LD16(x + i + 48) + LD16(dx + i + 48);
        ST16(x + i, a0);
        ST16(x + i + 16, a1);
        ST16(x + i + 32, a2);
        ST16(x + i + 48, a3);
    }
    for (; i + 16 <= n; i += 16) ST16(x + i, LD16(x + i) + LD16(dx + i));
    for (; i < n; i++) x[i] += dx[i];
}

#define TGT_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")))
#define TGT_AVX2 __attribute__((target("avx2,fma")))
#define DEFINE_LEVEL(SUF, TGT)                                                                                   \
    TGT static void rmsnorm_rows_##SUF(float *out, const float *inp, const float *weight, float eps, int t0,    \
                                       int t1, int C) {                                                          \
        rmsnorm_rows_body(out, inp, weight, eps, t0, t1, C);                                                     \
    }                                                                                                            \
    TGT static void rope_row_##SUF(float *x, const float *c, const float *s, int nh, int d) {                   \
        rope_row_body(x, c, s, nh, d);                                                                           \
    }                                                                                                            \
    TGT static void swiglu_##SUF(float *out, const float *gate, const float *up, size_t n) {                    \
        swiglu_body(out, gate, up, n);                                                                           \
    }                                                                                                            \
    TGT static void add_##SUF(float *x, const float *dx, size_t n) { add_body(x, dx, n); }
DEFINE_LEVEL(avx512, TGT_AVX512)
DEFINE_LEVEL(avx2, TGT_AVX2)

/* SwiGLU for precision "fast" (tensor/swiglu16_fast.h), AVX-512 only; tails through the same code, zero padded. */
TGT_AVX512 static void swiglu_fast_avx512(float *out, const float *gate, const float *up, size_t n) {
    swiglu_apply(fp_swiglu16_fast, out, gate, up, n);
}
#endif /* x86 */

/* ------------------------------------------------------------------------------------------------------
 * Dispatch */
typedef struct {
    void (*rmsnorm_rows)(float *, const float *, const float *, float, int, int, int);
    void (*rope_row)(float *, const float *, const float *, int, int);
    void (*swiglu)(float *, const float *, const float *, size_t);
    void (*add)(float *, const float *, size_t);
} ops_impl;

static const ops_impl impl_ref = {rmsnorm_rows_ref, rope_row_ref, swiglu_ref, add_ref};
#ifdef FP_OPS_SIMD
static const ops_impl impl_avx2 = {rmsnorm_rows_avx2, rope_row_avx2, swiglu_avx2, add_avx2};
static const ops_impl impl_avx512 = {rmsnorm_rows_avx512, rope_row_avx512, swiglu_avx512, add_avx512};
#endif

static const ops_impl *ops(void) {
#ifdef FP_OPS_SIMD
    int lv = fp_kernel_level(); /* already clamped to what the CPU supports */
    if (lv >= FP_KERN_AVX512) return &impl_avx512;
    if (lv >= FP_KERN_AVX2) return &impl_avx2;
#endif
    return &impl_ref;
}

#define OPS_CHUNK 4096 /* elements per OpenMP work item of the flat ops */

void fp_rmsnorm_rows(float *out, const float *inp, const float *weight, float eps, int T, int C) {
    ops()->rmsnorm_rows(out, inp, weight, eps, 0, T, C);
}

void fp_rmsnorm_forward(float *out, const float *inp, const float *weight, float eps, int T, int C) {
    const ops_impl *k = ops();
    if (T <= 16) {
        k->rmsnorm_rows(out, inp, weight, eps, 0, T, C);
        return;
    }
    int nb = (T + 7) / 8;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < nb; b++) k->rmsnorm_rows(out, inp, weight, eps, 8 * b, 8 * b + 8 < T ? 8 * b + 8 : T, C);
}

void fp_rope_inv_freq(float *inv_freq, double theta, int d) {
    /* HF: 1.0 / (base ** (torch.arange(0, d, 2).float() / d)), all float32. */
    float base = (float)theta;
    for (int i = 0; i < d / 2; i++) {
        float e = (float)(2 * i) / (float)d;
        float p = (float)pow((double)base, (double)e); /* correctly rounded float32 power */
        inv_freq[i] = 1.0f / p;
    }
}

void fp_rope_tables(float *cos_t, float *sin_t, const float *inv_freq, const int *pos, int T, int d) {
    int half = d / 2;
#pragma omp parallel for schedule(static) if (T > 64)
    for (int t = 0; t < T; t++) {
        float p = (float)(pos ? pos[t] : t);
        for (int i = 0; i < half; i++) {
            float a = p * inv_freq[i];
            cos_t[(size_t)t * half + i] = (float)cos((double)a);
            sin_t[(size_t)t * half + i] = (float)sin((double)a);
        }
    }
}

void fp_rope_forward(float *x, const float *cos_t, const float *sin_t, int T, int nh, int d) {
    const ops_impl *k = ops();
    size_t half = (size_t)(d / 2);
#pragma omp parallel for schedule(static) if (T > 64)
    for (int t = 0; t < T; t++) k->rope_row(x + (size_t)t * nh * d, cos_t + t * half, sin_t + t * half, nh, d);
}

void fp_swiglu_forward(float *out, const float *gate, const float *up, int T, int C) {
    const ops_impl *k = ops();
    size_t n = (size_t)T * C, nb = (n + OPS_CHUNK - 1) / OPS_CHUNK;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t b = 0; b < nb; b++) {
        size_t i = b * OPS_CHUNK, m = n - i < OPS_CHUNK ? n - i : OPS_CHUNK;
        k->swiglu(out + i, gate + i, up + i, m);
    }
}

void fp_swiglu_forward_fast(float *out, const float *gate, const float *up, int T, int C) {
    void (*f)(float *, const float *, const float *, size_t) = ops()->swiglu;
#ifdef FP_OPS_SIMD
    if (fp_kernel_level() >= FP_KERN_AVX512) f = swiglu_fast_avx512;
#endif
    size_t n = (size_t)T * C, nb = (n + OPS_CHUNK - 1) / OPS_CHUNK;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t b = 0; b < nb; b++) {
        size_t i = b * OPS_CHUNK, m = n - i < OPS_CHUNK ? n - i : OPS_CHUNK;
        f(out + i, gate + i, up + i, m);
    }
}

void fp_add_forward(float *x, const float *dx, size_t n) {
    const ops_impl *k = ops();
    size_t nb = (n + OPS_CHUNK - 1) / OPS_CHUNK;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t b = 0; b < nb; b++) {
        size_t i = b * OPS_CHUNK, m = n - i < OPS_CHUNK ? n - i : OPS_CHUNK;
        k->add(x + i, dx + i, m);
    }
}
