/* Tensor kernels shared by the model (forward), train (backward) and reward layers.
 * Layout convention: row-major; a weight W of shape [N, K] (HF nn.Linear: out_features x in_features)
 * is N rows of K contiguous elements, stored in its checkpoint dtype and converted on the fly. */
#ifndef FP_TENSOR_H
#define FP_TENSOR_H
#include <stddef.h>
#include <stdint.h>

typedef enum {
    FP_F32 = 0,
    FP_F16 = 1,
    FP_BF16 = 2,
    FP_Q8_0 = 3, /* blocks of 32: fp16 scale + 32 int8 (GGUF layout) */
    FP_Q4_0 = 4  /* blocks of 32: fp16 scale + 16 bytes of nibbles (GGUF layout) */
} fp_dtype;

const char *fp_dtype_name(fp_dtype t);
/* Bytes taken by one row of ncols elements (ncols must be a multiple of 32 for the q types). */
size_t fp_dtype_row_bytes(fp_dtype t, int64_t ncols);

/* Scalar conversions. */
float fp_bf16_to_f32(uint16_t h);
uint16_t fp_f32_to_bf16(float f); /* round to nearest even, NaN kept */
float fp_f16_to_f32(uint16_t h);
uint16_t fp_f32_to_f16(float f);
/* Converts one row of n elements of dtype t to f32. */
void fp_row_to_f32(float *out, const void *row, fp_dtype t, int64_t n);

/* out[T,N] = inp[T,K] @ W[N,K]^T (+ bias[N] when bias != NULL).
 * W is in dtype wt.  Multi-threaded (OpenMP); dispatches to the best kernel for this CPU. */
void fp_matmul_forward(float *out, const float *inp, const void *w, fp_dtype wt, const float *bias,
                       int T, int K, int N);
/* fp_matmul_forward with a precision choice: exact != 0 keeps the activations in f32 on every path (weights
 * widened to f32, FMA); exact == 0 lets the fastest kernels round activations to bf16 (vdpbf16ps, AMX) or
 * int8 (VNNI for Q8_0/Q4_0). */
void fp_matmul_forward_ex(int exact, float *out, const float *inp, const void *w, fp_dtype wt, const float *bias,
                          int T, int K, int N);
/* out[T,N] = silu(inp Wg^T) * (inp Wu^T) = g / (1 + exp(-g)) * u (the SwiGLU MLP's gate and up projections,
 * no bias; Wg, Wu [N,K] in dtype wt).  Always the same values as fp_matmul_forward_ex(exact) into gate and
 * up, then fp_swiglu_forward (exact) or fp_swiglu_forward_fast (exact == 0), bit for bit; with exact == 0, AMX-BF16, BF16/Q8_0/Q4_0 weights, T > 4 and
 * K <= 4096 it runs as one fused AMX kernel (gate and up tiles side by side, SwiGLU on the tiles: the [T,N]
 * gate and up buffers never exist).  Where the two GEMMs run on the blocked AVX-512 (non-AMX) or AVX2 kernels
 * it runs them per column block into small per-thread buffers with the SwiGLU as their epilogue (the "SwiGLU
 * pair": no [T,N] up buffer).  Otherwise (OpenBLAS, T <= 4, the reference level) it runs the two GEMMs, the
 * up one into a scratch of T*N floats (malloc'd per call).  0, or -1 when scratch cannot be allocated.  out
 * must not alias inp. */
int fp_matmul_swiglu_forward_ex(int exact, float *out, const float *inp, const void *wg, const void *wu, fp_dtype wt,
                                int T, int K, int N);
/* The same with the caller's scratch for the unfused path: up[T*N] floats (not aliasing out or inp; unused
 * by the fused kernel and the pair); up == NULL allocates as above. */
int fp_matmul_swiglu_forward_buf(int exact, float *out, const float *inp, const void *wg, const void *wu,
                                 fp_dtype wt, int T, int K, int N, float *up);
/* The plain scalar reference used to test every fast path. */
void fp_matmul_forward_ref(float *out, const float *inp, const void *w, fp_dtype wt, const float *bias,
                           int T, int K, int N);
/* Name of the kernel fp_matmul_forward runs for weights of dtype wt on this CPU (for T > 4 rows; up to 4
 * rows the AVX2/AVX-512 levels use "avx2-gemv"/"avx512-gemv", f32 activations), e.g. "amx-bf16",
 * "amx-bf16-q8", "avx512-vnni-q8", "avx512-f32fma", "avx2-f32fma", "ref".  FLUXPRM_KERNEL=ref|avx2|avx512
 * caps the level; FLUXPRM_AMX=0 turns AMX off.
 * Numerics: the AMX and vdpbf16ps paths round activations to bf16 (like bf16 inference engines; with
 * Q8_0/Q4_0 weights on AMX the dequantised weights too); the VNNI path quantises activations to int8 per
 * block of 32 (Q8_0 style); the f32 paths only reorder the sums.  See docs/performance.md. */
const char *fp_matmul_kernel_name(fp_dtype wt);
/* fp_matmul_forward keeps a grow-only scratch buffer per calling thread (converted activations + packed
 * weight panels: about T*K*2 bytes + up to ~0.5 MiB per OpenMP thread); this frees the calling thread's. */
void fp_matmul_scratch_release(void);

#endif
