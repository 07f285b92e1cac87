/* fp_swiglu16: 16 elements of out = silu(gate) * up = gate / (1 + exp(-gate)) * up, HF's order, with a
 * vectorised exp (GCC vector extensions, 16 f32 lanes: one zmm or two ymm, whatever the including code's
 * target is).  Shared by ops.c's SwiGLU and the fused SwiGLU GEMM epilogue of matmul_avx512.c, which must
 * agree bit for bit (the build's -std=c11 keeps multiplies and adds unfused).
 *
 * exp(x), f32, within 2 ulp of the correctly rounded result over the whole f32 range (tests/tensor/test_ops.c
 * measures it against libm's double exp):
 *  - x > 88.7228 (ln FLT_MAX) gives +inf, x < -103.98 (where exp < 2^-150 rounds to 0) gives +0, results in
 *    between (subnormals included) are computed, NaN propagates (the comparisons are false for NaN).
 *  - Reduction x = n ln2 + r, n = round(x / ln2), |r| <= ~ln2/2: Cody-Waite with ln2 = C1 + C2, C1 = 355/512
 *    (9 bits, so n C1 is exact for |n| < 2^15) and C2 = ln2 - C1 rounded to f32 (error of r below 2e-9).
 *  - e^r by its degree-7 Taylor polynomial in Horner form: truncation r^8/8! < 6e-9 relative on |r| <= 0.347,
 *    i.e. < 0.1 ulp; the Horner steps add about 1 ulp.
 *  - 2^n as two exact power-of-two factors 2^(n>>1) * 2^(n - (n>>1)), each normal for n in [-150, 128]:
 *    p 2^n1 is exact, and the one rounding of the last multiply also gives correctly placed subnormals
 *    and the overflow to +inf.
 *  - n comes from the round-to-nearest trick kf = t + 1.5 * 2^23 (|t| <= 151 keeps kf in [2^23, 2^24), where
 *    the f32 spacing is 1): n = kf - 1.5 * 2^23 exactly, and its integer is bits(kf) - bits(1.5 * 2^23).
 * Large g: exp(-g) -> 0, gives g * u; g < -88.72: exp(-g) = +inf, gives -0 * u (the exact value is below
 * 3e-37 |u|); g = -inf: -inf / inf = NaN, as in torch.  Pointers only (no vector crosses a call). */
#ifndef FP_TENSOR_SWIGLU16_H
#define FP_TENSOR_SWIGLU16_H
#include <stdint.h>

typedef float fp_sw_v16 __attribute__((vector_size(64), aligned(4)));
typedef uint32_t fp_sw_v16u __attribute__((vector_size(64)));
typedef int32_t fp_sw_v16s __attribute__((vector_size(64)));
#define FP_SW_SPLAT(a) ((fp_sw_v16){0} + (a))
#define FP_SW_SEL(mask, a, b) \
    ((fp_sw_v16)(((fp_sw_v16u)(mask) & (fp_sw_v16u)(a)) | (~(fp_sw_v16u)(mask) & (fp_sw_v16u)(b))))

static inline __attribute__((always_inline)) void fp_swiglu16(float *out, const float *gate, const float *up) {
    const float magic = 12582912.0f; /* 1.5 * 2^23 */
    fp_sw_v16 g = *(const fp_sw_v16 *)gate;
    fp_sw_v16 x = -g; /* exp(x) */
    x = FP_SW_SEL(x < -104.0f, FP_SW_SPLAT(-104.0f), x);
    x = FP_SW_SEL(x > 89.0f, FP_SW_SPLAT(89.0f), x);
    fp_sw_v16 kf = x * 1.44269504088896341f + magic;
    fp_sw_v16 n = kf - magic;
    fp_sw_v16 r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
    fp_sw_v16 p = FP_SW_SPLAT(1.0f / 5040.0f);
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    fp_sw_v16s ni = (fp_sw_v16s)((fp_sw_v16u)kf - (fp_sw_v16u)FP_SW_SPLAT(magic)); /* NaN lanes: p is NaN */
    fp_sw_v16s n1 = ni >> 1, n2 = ni - n1;
    fp_sw_v16 s1 = (fp_sw_v16)((fp_sw_v16u)(n1 + 127) << 23), s2 = (fp_sw_v16)((fp_sw_v16u)(n2 + 127) << 23);
    fp_sw_v16 e = p * s1 * s2;
    *(fp_sw_v16 *)out = g / (1.0f + e) * *(const fp_sw_v16 *)up;
}
#endif
