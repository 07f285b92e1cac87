/* Layer kernels for the transformer forward pass, llm.c style: op_forward(out, inp, params..., T, C).
 * All activations are row-major [T, C] f32.  RMSNorm, RoPE, SwiGLU and the residual add run a vector
 * version (AVX2 / AVX-512) or the scalar reference according to fp_kernel_level() (FLUXPRM_KERNEL=ref
 * selects the scalar code); see ops.c for what may differ between them (SwiGLU's exp: <= 2 ulp). */
#ifndef FP_TENSOR_OPS_H
#define FP_TENSOR_OPS_H
#include "tensor/tensor.h"

/* x[n] += dx[n]   (the residual add; OpenMP for large n) */
void fp_add_forward(float *x, const float *dx, size_t n);

/* out[T,C] = weight[C] * (inp[T,C] * r),  r = 1 / sqrtf(var + eps),  var = (float)(sum(inp^2) / C)
 * (HF Qwen2RMSNorm's order; out may alias inp).  The sum of squares is accumulated in double, so it does
 * not overflow; var is f32 as in HF, so rows with rms above ~1.8e19 give var = inf and out = 0 (x finite). */
void fp_rmsnorm_forward(float *out, const float *inp, const float *weight, float eps, int T, int C);
/* fp_rmsnorm_forward's values for T rows on the calling thread only (no OpenMP): the same kernel, so the same
 * bits (the fused RMSNorm -> bf16 tiles of the AMX GEMMs runs it row by row inside its own parallel loop). */
void fp_rmsnorm_rows(float *out, const float *inp, const float *weight, float eps, int T, int C);

/* inv_freq[d/2] = 1 / theta^(2i/d), computed in float32 exactly as HF's default rotary init. */
void fp_rope_inv_freq(float *inv_freq, double theta, int d);
/* cos/sin tables [T, d/2] for positions pos[t] (pos NULL: t): angle = (float)pos * inv_freq[i]. */
void fp_rope_tables(float *cos_t, float *sin_t, const float *inv_freq, const int *pos, int T, int d);
/* In-place NeoX (rotate-half) rotary embedding on x[T, nh*d] with tables [T, d/2]:
 *   x1' = x1*cos - x2*sin, x2' = x2*cos + x1*sin  (x1 = first half of each head, x2 = second half). */
void fp_rope_forward(float *x, const float *cos_t, const float *sin_t, int T, int nh, int d);

/* out[T,C] = silu(gate[T,C]) * up[T,C] = gate / (1 + exp(-gate)) * up, HF's order  (out may alias gate).
 * gate < -88.72 gives -0 * up (exp overflows; the exact value is below 3e-37 |up|), gate = -inf gives NaN
 * (-inf / inf, as torch), NaN propagates. */
void fp_swiglu_forward(float *out, const float *gate, const float *up, int T, int C);
/* The same for precision "fast" (exact == 0): at the avx512 level a shorter kernel (tensor/swiglu16_fast.h: a
 * degree-5 exp and a reciprocal estimate refined once, within 12 u of the exact value for gate >= -87; the
 * fused AMX SwiGLU GEMM uses the same code); below it, fp_swiglu_forward.  (out may alias gate.) */
void fp_swiglu_forward_fast(float *out, const float *gate, const float *up, int T, int C);

/* Causal multi-head attention with grouped K/V heads, as a tiled online softmax (no T x T buffer).
 *   q[nq, nh*d]: row i is the query at absolute position qpos[i] (qpos NULL: i, with nq == T);
 *   k, v [T, nkv*d]: keys/values for positions 0..T-1;  out[nq, nh*d].
 * Query row i, head h attends with kv head h / (nh/nkv) to keys kstart[i] .. qpos[i] (kstart NULL: 0; packed
 * sequences pass the start of their own sequence).  Scale 1/sqrt(d).  OpenMP over heads x query tiles.
 * Returns 0, or -1 when its scratch (threads x ~100 x d floats, plus an f32 copy of the visible keys on
 * AVX-512) cannot be allocated. */
int fp_attention_forward(float *out, const float *q, const float *k, const float *v, const int *qpos,
                         const int *kstart, int nq, int T, int nh, int nkv, int d);
/* The same with a precision choice: exact != 0 is fp_attention_forward (f32 throughout).  exact == 0 lets the
 * kernel round Q, K, V and the softmax weights P to bf16 (f32 accumulation, f32 softmax statistics, like
 * flash-attention / PyTorch bf16 sdpa): with AMX-BF16 (and FLUXPRM_KERNEL / FLUXPRM_AMX allowing it) and
 * d % 32 == 0, S = Q K^T and P V run on AMX tiles; otherwise it is the exact path.  Error vs exact: about
 * 2^-8 relative per rounded input (see src/tensor/attention_avx512.c).  A NaN/Inf in V at key j may also
 * reach rows of the same 64-key block that do not see j (masked weights are exact zeros, 0 * NaN = NaN) in
 * the blocked kernels; rows before that block never see it.  Returns 0, or -1 when scratch (threads x
 * tile plus a bf16 or f32 copy of the visible K/V) cannot be allocated. */
int fp_attention_forward_ex(int exact, float *out, const float *q, const float *k, const float *v, const int *qpos,
                            const int *kstart, int nq, int T, int nh, int nkv, int d);
/* Plain two-pass softmax reference of the same, in double (for tests; O(T) scratch). */
void fp_attention_forward_ref(float *out, const float *q, const float *k, const float *v, const int *qpos,
                              const int *kstart, int nq, int T, int nh, int nkv, int d);
#endif
