/* Reference (scalar, f32) layer kernels for the transformer forward pass, llm.c style:
 * op_forward(out, inp, params..., T, C).  All activations are row-major [T, C] f32. */
#ifndef FP_TENSOR_OPS_H
#define FP_TENSOR_OPS_H
#include "tensor/tensor.h"

/* out[T,C] = inp[T,C] / sqrt(mean(inp^2) + eps) * weight[C]   (HF Qwen2RMSNorm; out may alias inp) */
void fp_rmsnorm_forward(float *out, const float *inp, const float *weight, float eps, int T, int C);

/* inv_freq[d/2] = 1 / theta^(2i/d), computed in float32 exactly as HF's default rotary init. */
void fp_rope_inv_freq(float *inv_freq, double theta, int d);
/* cos/sin tables [T, d/2] for positions pos[t] (pos NULL: t): angle = (float)pos * inv_freq[i]. */
void fp_rope_tables(float *cos_t, float *sin_t, const float *inv_freq, const int *pos, int T, int d);
/* In-place NeoX (rotate-half) rotary embedding on x[T, nh*d] with tables [T, d/2]:
 *   x1' = x1*cos - x2*sin, x2' = x2*cos + x1*sin  (x1 = first half of each head, x2 = second half). */
void fp_rope_forward(float *x, const float *cos_t, const float *sin_t, int T, int nh, int d);

/* out[T,C] = silu(gate[T,C]) * up[T,C]   (out may alias gate) */
void fp_swiglu_forward(float *out, const float *gate, const float *up, int T, int C);

/* Causal multi-head attention with grouped K/V heads, as a tiled online softmax (no T x T buffer).
 *   q[nq, nh*d]: row i is the query at absolute position qpos[i] (qpos NULL: i, with nq == T);
 *   k, v [T, nkv*d]: keys/values for positions 0..T-1;  out[nq, nh*d].
 * Query row i, head h attends with kv head h / (nh/nkv) to keys kstart[i] .. qpos[i] (kstart NULL: 0; packed
 * sequences pass the start of their own sequence).  Scale 1/sqrt(d).  OpenMP over heads x query tiles.
 * Returns 0, or -1 when its scratch (threads x ~100 x d floats) cannot be allocated. */
int fp_attention_forward(float *out, const float *q, const float *k, const float *v, const int *qpos,
                         const int *kstart, int nq, int T, int nh, int nkv, int d);
/* Plain two-pass softmax reference of the same, in double (for tests; O(T) scratch). */
void fp_attention_forward_ref(float *out, const float *q, const float *k, const float *v, const int *qpos,
                              const int *kstart, int nq, int T, int nh, int nkv, int d);
#endif
