/* Training core: a self-contained f32 Qwen2 (+ PRM heads) with forward, backward, losses, AdamW,
 * and a safetensors writer.  Everything here is f32; weights are copied (converted) out of a checkpoint
 * so the trainer never depends on the inference engine's internal layouts.
 *
 * Layer code follows the llm.c manner: each op has
 *   fpt_op_forward(out, inp, w, ..., T, C)
 *   fpt_op_backward(dinp, dw, dout, inp, w, ..., T, C)
 * and every backward ACCUMULATES (+=) into its gradient outputs (dinp, dw, db).  Any gradient output
 * pointer may be NULL when that gradient is not wanted.  Shapes are row-major; "[T,C]" means T rows of C. */
#ifndef FP_TRAIN_H
#define FP_TRAIN_H
#include "fluxprm.h"
#include "model/weights.h"
#include <stddef.h>
#include <stdint.h>

/* ================================================================ ops (src/train/ops.c) */

/* out[T,C] = wte[tokens[t], :];  wte [V,C]. */
void fpt_embedding_forward(float *out, const int *tokens, const float *wte, int T, int C);
/* dwte[tokens[t], :] += dout[t, :]. */
void fpt_embedding_backward(float *dwte, const float *dout, const int *tokens, int T, int C);

/* HF Qwen2RMSNorm: out[T,C] = w[C] * x * rstd,  rstd[T] = 1/sqrt(mean(x^2) + eps). */
void fpt_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int T, int C, float eps);
void fpt_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                          const float *rstd, int T, int C);

/* out[T,N] = inp[T,K] @ w[N,K]^T (+ b[N] when b != NULL).  f32 GEMM, OpenMP, cache-blocked. */
void fpt_linear_forward(float *out, const float *inp, const float *w, const float *b, int T, int K, int N);
/* dinp[T,K] += dout[T,N] @ w[N,K];  dw[N,K] += dout^T @ inp;  db[N] += sum_t dout[t,:]. */
void fpt_linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                         const float *w, int T, int K, int N);

/* NeoX rotate-half RoPE as in HF Qwen2: inv_freq[i] = 1/theta^(2i/D) (f32), angle = pos*inv_freq (f32),
 * cos/sin tables [T, D/2] for positions pos0 .. pos0+T-1. */
void fpt_rope_table(float *cos_t, float *sin_t, int pos0, int T, int D, double theta);
/* In place on x[T, nh, D]: x' = x*cos + rotate_half(x)*sin. */
void fpt_rope_forward(float *x, const float *cos_t, const float *sin_t, int T, int nh, int D);
/* In place on dx[T, nh, D]: the transpose rotation (dx = R^T dx'). */
void fpt_rope_backward(float *dx, const float *cos_t, const float *sin_t, int T, int nh, int D);

/* Causal GQA attention.  q[T, NH*D], k,v[T, NKV*D]; query head h uses kv head h/(NH/NKV).
 * att[NH,T,T] receives the softmax probabilities (row t is valid for s <= t, zero above);
 * out[T, NH*D] = att @ v.  Scale 1/sqrt(D). */
void fpt_attention_forward(float *out, float *att, const float *q, const float *k, const float *v,
                           int T, int NH, int NKV, int D);
/* Accumulates dq, dk, dv.  scratch: NH*T*T floats. */
void fpt_attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                            const float *att, const float *q, const float *k, const float *v,
                            int T, int NH, int NKV, int D);

/* SwiGLU: out[T,F] = silu(gate) * up. */
void fpt_swiglu_forward(float *out, const float *gate, const float *up, int T, int F);
void fpt_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                         int T, int F);

/* out[n] = a[n] + b[n];  backward: da += dout, db += dout. */
void fpt_residual_forward(float *out, const float *a, const float *b, size_t n);
void fpt_residual_backward(float *da, float *db, const float *dout, size_t n);

/* out[n] = max(x, 0);  dinp += dout * (out > 0). */
void fpt_relu_forward(float *out, const float *inp, size_t n);
void fpt_relu_backward(float *dinp, const float *dout, const float *out, size_t n);

/* 2-class PRM head (Qwen2ForProcessRewardModel.score):
 *   pre[T,C] = inp @ w0^T + b0;  act = relu(pre);  logits[T,2] = act @ w2^T + b2.
 * w0 [C,C], b0 [C], w2 [2,C], b2 [2]. */
void fpt_prm_head_forward(float *logits, float *pre, float *act, const float *inp, const float *w0,
                          const float *b0, const float *w2, const float *b2, int T, int C);
/* scratch: T*C floats. */
void fpt_prm_head_backward(float *dinp, float *dw0, float *db0, float *dw2, float *db2, float *scratch,
                           const float *dlogits, const float *inp, const float *pre, const float *act,
                           const float *w0, const float *w2, int T, int C);

/* Scalar head (ReasonFlux-PRM-1.5B reward_head): prob[T] = sigmoid(inp @ w[1,C]^T + b[1]). */
void fpt_scalar_head_forward(float *prob, const float *inp, const float *w, const float *b, int T, int C);
/* dprob[T] is the gradient w.r.t. prob. */
void fpt_scalar_head_backward(float *dinp, float *dw, float *db, const float *dprob, const float *prob,
                              const float *inp, const float *w, int T, int C);

/* LM head: logits[T,V] = inp[T,C] @ w[V,C]^T (no bias) -- fpt_linear_forward with b = NULL. */

/* LoRA delta on a linear layer (PEFT math, no dropout): out[T,N] += s * (inp[T,K] @ A[r,K]^T) @ B[N,r]^T,
 * s = alpha/r.  xa[T,r] = inp @ A^T is saved for the backward. */
void fpt_lora_forward(float *out, float *xa, const float *inp, const float *A, const float *B, float s,
                      int T, int K, int N, int r);
/* dinp[T,K] += dxa @ A, dA[r,K] += dxa^T @ inp, dB[N,r] += s * dout^T @ xa, with dxa = s * dout @ B.
 * scratch: T*r floats. */
void fpt_lora_backward(float *dinp, float *dA, float *dB, float *scratch, const float *dout, const float *inp,
                       const float *xa, const float *A, const float *B, float s, int T, int K, int N, int r);

/* ================================================================ model (src/train/qwen2_train.c) */

typedef struct {
    int vocab, hidden, intermediate, layers, heads, kv_heads, head_dim;
    float rms_eps;
    double rope_theta;
    int tie_embeddings;  /* LM head reads model.embed_tokens.weight */
    int has_lm_head;     /* LM loss available (own lm_head.weight unless tied) */
    int has_score;       /* 2-class PRM head score.0 / score.2 */
    int has_reward_head; /* scalar head reward_head.weight/bias (1.5B design) */
    /* LoRA adapters (lora_rank 0: none): W x + (lora_alpha/lora_rank) * B A x on the FPT_LORA_* targets */
    int lora_rank;
    float lora_alpha;
    unsigned lora_targets;
} fpt_config;

/* LoRA targets (bit mask), in PEFT module names q_proj k_proj v_proj o_proj gate_proj up_proj down_proj. */
enum { FPT_LORA_Q = 1, FPT_LORA_K = 2, FPT_LORA_V = 4, FPT_LORA_O = 8, FPT_LORA_GATE = 16, FPT_LORA_UP = 32,
       FPT_LORA_DOWN = 64, FPT_LORA_ALL = 127 };
/* Parses a comma-separated list ("q,k,v,o,gate,up,down" or the *_proj names, or "all") into *mask. */
int fpt_lora_parse_targets(const char *list, unsigned *mask);

/* Fills the trunk part of c from an fp_model_config; heads default to has_score = (num_labels == 2 or 0),
 * has_lm_head = 0, has_reward_head = 0 (set them as needed before fpt_model_new). */
void fpt_config_from_model(fpt_config *c, const fp_model_config *mc);

typedef struct {
    char name[96]; /* HF name, e.g. "model.layers.0.self_attn.q_proj.weight" */
    int ndim;
    int64_t shape[2];
    size_t offset, numel; /* into fpt_model.params / .grads */
    int trainable;        /* 0: frozen (no gradient computed/updated) */
    int decay;            /* AdamW weight decay applies (2-D weights; not biases/norms) */
    int is_lora;          /* LoRA adapter matrix (PEFT name base_model.model.model.layers.N....lora_A.weight) */
} fpt_param;

enum { FPT_MODE_FULL = 0, FPT_MODE_HEAD_ONLY = 1, FPT_MODE_LORA = 2 };

typedef struct fpt_model fpt_model;

/* Allocates parameters (zero), gradients (zero) and views.  Activations grow on demand. */
int fpt_model_new(fpt_model **out, const fpt_config *cfg);
void fpt_model_free(fpt_model *m);
const fpt_config *fpt_model_config(const fpt_model *m);
size_t fpt_model_num_params(const fpt_model *m);
int fpt_model_param_count(const fpt_model *m);
const fpt_param *fpt_model_param(const fpt_model *m, int i);
const fpt_param *fpt_model_find(const fpt_model *m, const char *name);
float *fpt_model_params(fpt_model *m); /* all parameters, contiguous */
float *fpt_model_grads(fpt_model *m);  /* all gradients, same layout */
/* FULL: everything trainable.  HEAD_ONLY: only score / reward_head trainable, trunk frozen (backward stops at
 * the final norm output).  LORA: the LoRA matrices and the heads (PEFT modules_to_save) trainable, base frozen.
 * Frozen parameters get no gradient and no update.  Set the mode before accumulating gradients. */
void fpt_model_set_mode(fpt_model *m, int mode);

/* Tensor source for loading: returns the tensor named `name` or NULL. */
typedef const fp_tensor *(*fpt_tensor_getter)(void *ctx, const char *name);
/* Copies (converting to f32) every base (non-LoRA) parameter from get(); checks shapes.  Any missing tensor is
 * FP_EPARSE (with tie_embeddings the LM head is model.embed_tokens.weight and is not looked up). */
int fpt_model_load(fpt_model *m, fpt_tensor_getter get, void *ctx);
/* Copies the LoRA matrices (PEFT names) from get(). */
int fpt_model_load_lora(fpt_model *m, fpt_tensor_getter get, void *ctx);
/* PEFT default init: A ~ kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)), B = 0. */
void fpt_lora_init(fpt_model *m, uint64_t seed);
/* Writes dir/adapter_model.safetensors (LoRA matrices, plus the heads as base_model.model.score.* when they are
 * trainable) and dir/adapter_config.json (peft_type LORA, r, lora_alpha, target_modules, ...).  dir is created
 * if missing.  base_model (may be NULL) goes to base_model_name_or_path. */
int fpt_lora_save(const fpt_model *m, const char *dir, const char *base_model);
/* Convenience over an fp_weights (src/train/load.c). */
int fpt_model_load_weights(fpt_model *m, const fp_weights *w);
/* Deterministic random init (HF-style: normal(0,std) for matrices, 1 for norms, 0 for biases). */
void fpt_model_init_random(fpt_model *m, uint64_t seed, float std);
/* Writes all parameters (F32, HF names) as one safetensors file, atomically. */
int fpt_model_save(const fpt_model *m, const char *path);

/* One training record (batch of one sequence; use gradient accumulation for larger batches). */
typedef struct {
    const int *tokens;
    int T;
    int n_steps;              /* number of step-tag positions */
    const int *step_pos;      /* [n_steps] positions of the step tags (e.g. <extra_0>), ascending */
    const float *step_reward; /* [n_steps] soft targets r_t^step in [0,1] (joint MSE) */
    const int *step_label;    /* [n_steps] hard labels 0/1 (CE); NULL if unused */
    float final_reward;       /* r^final (joint MSE); NaN drops the final term for this record */
    const int *lm_targets;    /* [T] next-token targets, -1 = ignore; NULL: tokens[t+1] for t < T-1 */
    float scalar_target;      /* target of the scalar head's sigmoid at the last token (MSE) */
} fpt_record;

/* Loss mix.  total = w_joint * joint + w_ce * ce + w_lm * lm + w_scalar * scalar, where
 *   joint  = lambda_step * mean_t (p_t - r_t)^2 + lambda_final * (p_final - r_final)^2,
 *            p_t = softmax(score logits at step_pos[t])[1], p_final = softmax(score logits at T-1)[1]
 *            (the last token, as the released RL code reads it; spec 1.1/2.3);
 *   ce     = mean_t -log softmax(score logits at step_pos[t])[step_label[t]];
 *   lm     = mean over positions with a target of -log softmax(lm logits)[target];
 *   scalar = (sigmoid(reward_head(h_{T-1})) - scalar_target)^2. */
typedef struct {
    float lambda_step, lambda_final;
    float w_joint, w_ce, w_lm, w_scalar;
} fpt_loss_cfg;

typedef struct {
    double total, joint, step_mse, final_mse, ce, lm, scalar;
    float p_final; /* P(class 1) at the last token (when the score head ran) */
} fpt_loss_out;

/* Forward, loss, and (when grad_scale != 0) backward accumulating grad_scale * d(total)/d(params) into
 * the gradient buffer.  grad_scale = 1/n for n accumulated records. */
int fpt_forward_backward(fpt_model *m, const fpt_record *r, const fpt_loss_cfg *lc, float grad_scale,
                         fpt_loss_out *out);
/* Score-head logits [T,2] of the last forward (NULL if none).  (The LM logits are not kept: the backward
 * overwrites them with their gradient.) */
const float *fpt_model_score_logits(const fpt_model *m);
void fpt_model_zero_grad(fpt_model *m);

/* ================================================================ optimizer (src/train/optim.c) */

enum { FPT_SCHED_CONSTANT = 0, FPT_SCHED_LINEAR = 1, FPT_SCHED_COSINE = 2 };

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    float max_grad_norm; /* <= 0: no clipping */
    int schedule;        /* FPT_SCHED_* */
    long warmup_steps, total_steps;
    float min_lr_ratio;  /* floor of the decay, as a fraction of lr (0 = HF behaviour) */
} fpt_adamw_cfg;

/* Learning rate for optimizer step `step` (0-based), HF convention: warmup lr*step/warmup for
 * step < warmup, then linear (to min) or cosine decay 0.5*(1+cos(pi*progress)) over the remaining steps. */
double fpt_lr_at(const fpt_adamw_cfg *c, long step);
/* Global L2 norm of g[n] (double accumulation). */
double fpt_grad_norm(const float *g, size_t n);
/* Scales g by max_norm/(norm+1e-6) when that is < 1 (torch.nn.utils.clip_grad_norm_); returns the norm. */
double fpt_clip_grad_norm(float *g, size_t n, float max_norm);

typedef struct {
    float *m, *v; /* first/second moments, f32 */
    size_t n;
    long step;    /* number of completed steps */
} fpt_adamw;

int fpt_adamw_init(fpt_adamw *o, size_t n);
void fpt_adamw_free(fpt_adamw *o);
/* One AdamW update (torch.optim.AdamW semantics) on p[n] with gradient g[n], learning rate lr, time step t
 * (1-based, for bias correction).  decay == 0 disables weight decay for this range. */
void fpt_adamw_update(float *p, const float *g, float *m, float *v, size_t n, double lr, long t,
                      const fpt_adamw_cfg *c, int decay);
/* Clip + schedule + AdamW over every trainable parameter of the model; zeroes nothing.
 * grad_norm (optional) receives the pre-clip global norm; lr_used the rate applied. */
int fpt_model_step(fpt_model *m, fpt_adamw *o, const fpt_adamw_cfg *c, double *grad_norm, double *lr_used);

/* Optimizer state for resuming (src/train/ckpt.c): safetensors with F32 tensors "exp_avg.<param>" and
 * "exp_avg_sq.<param>" for every parameter, and "step" (F32 [1], exact below 2^24 steps). */
int fpt_adamw_save(const fpt_adamw *o, const fpt_model *m, const char *path);
/* o must be initialised for m (fpt_adamw_init with fpt_model_num_params). */
int fpt_adamw_load(fpt_adamw *o, const fpt_model *m, const char *path);

/* ================================================================ safetensors writer (src/train/st_write.c) */

typedef struct {
    const char *name;
    fp_dtype dtype; /* FP_F32, FP_F16 or FP_BF16 */
    int ndim;
    int64_t shape[FP_MAX_DIMS];
    const void *data; /* numel * element size bytes */
} fpt_st_tensor;

/* Writes tensors (in the given order) to path atomically (temp + rename).  metadata: optional NULL-terminated
 * key, value, key, value, ... list of strings stored under "__metadata__". */
int fpt_st_write(const char *path, const fpt_st_tensor *t, int n, const char *const *metadata);

#endif
