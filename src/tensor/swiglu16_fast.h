/* fp_swiglu16_fast: 16 elements of out = silu(gate) * up for precision "fast" (exact == 0), AVX-512 intrinsics
 * (the including function must have AVX-512F/DQ enabled).  Shared by ops.c's fp_swiglu_forward_fast and the
 * fused SwiGLU GEMM epilogue of matmul_avx512.c, which must agree bit for bit.
 *
 * Why a second SwiGLU: in fast precision the gate and up values come from bf16-rounded activations and the
 * result is rounded to bf16 again for the down projection, so the exact kernel's division and degree-7 exp
 * (tensor/swiglu16.h, ~35 operations per 16 values: 12-15 % of the fused gate/up GEMM's time) buy nothing.
 * Here, with t = -gate log2(e) for gate clamped to +-87.33 (t within +-126), carried as a rounded product plus
 * its error (added after the reduction):
 *   2^t = p(f) 2^floor(t), f = t - floor(t) in [0, 1) by vreduceps, p the degree-5 minimax polynomial of 2^f
 *         (relative error 9.1e-8 = 1.5 u with f32 coefficients; Remez exchange), vscalefps for the power;
 *   sigmoid = 1 / (1 + 2^t) by vrcp14ps and one Newton step (relative error ~2^-27);
 *   out = gate * sigmoid * up.
 * Relative error of out against the exact value: below 12 u (u = 2^-24; 4.2 u seen) for gate >= -87 where
 * gate sigmoid(gate) and out are normal (test_ops checks it against a double reference); the clamp keeps
 * every intermediate normal and finite, so gate < -87.33, where the true sigmoid is below 2^-126, gives
 * |out| <= 2^-125 |gate up| (the exact kernel gives -0 there) and gate = -inf gives -inf * up instead of NaN;
 * NaN propagates. */
#ifndef FP_TENSOR_SWIGLU16_FAST_H
#define FP_TENSOR_SWIGLU16_FAST_H
#include <immintrin.h>

static inline __attribute__((always_inline, target("avx512f,avx512dq"))) void fp_swiglu16_fast(float *out, const float *gate, const float *up) {
    const __m512 c_hi = _mm512_set1_ps(-1.44269502e+00f), c_lo = _mm512_set1_ps(-1.92596303e-08f); /* -log2(e) */
    __m512 g = _mm512_loadu_ps(gate);
    /* the exponent from g clamped to +-87.33: t within +-126 (1 + 2^t finite and normal; infinities too); min
     * and max return their second operand when one is NaN, so gc keeps a NaN */
    __m512 gc = _mm512_max_ps(_mm512_set1_ps(-87.33f), _mm512_min_ps(_mm512_set1_ps(87.33f), g));
    /* t = -gc log2(e) as th + tl: the rounding of th alone would be |t| u / 2, i.e. 2^t off by up to 37 u at
     * t ~ 107; tl = the exact error of th (an FMA) + gc c_lo */
    __m512 th = _mm512_mul_ps(gc, c_hi);
    __m512 tl = _mm512_fmadd_ps(gc, c_lo, _mm512_fmsub_ps(gc, c_hi, th));
    /* f = th - floor(th) (exact) + tl: in [0, 1) up to |tl| <= ulp(th), where p is still accurate */
    __m512 f = _mm512_add_ps(_mm512_reduce_ps(th, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC), tl);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.877576676e-03f), f, _mm512_set1_ps(8.989340088e-03f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.582631806e-02f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.401536170e-01f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931530732e-01f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.999999251e-01f));
    __m512 d = _mm512_add_ps(_mm512_set1_ps(1.0f), _mm512_scalef_ps(p, th)); /* in [1, 1 + 2^126] */
    __m512 r = _mm512_rcp14_ps(d);
    r = _mm512_fmadd_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(1.0f)), r); /* r + r (1 - d r) */
    _mm512_storeu_ps(out, _mm512_mul_ps(_mm512_mul_ps(g, r), _mm512_loadu_ps(up)));
}
#endif
