/* Internal view of a loaded Qwen2/Qwen3 model (shared by model.c and forward.c). */
#ifndef FP_MODEL_MODEL_H
#define FP_MODEL_MODEL_H
#include "base/base.h"
#include "model/weights.h"

typedef struct {
    const fp_tensor *q_w, *k_w, *v_w, *o_w, *gate_w, *up_w, *down_w; /* [out, in], stored dtype */
    float *q_b, *k_b, *v_b;                                          /* f32 copies, NULL without bias */
    float *in_norm, *post_norm;                                      /* [H] */
    float *q_norm, *k_norm;                                          /* [head_dim] (Qwen3), else NULL */
} fp_layer;

struct fp_model {
    fp_model_config cfg;
    fp_weights *w;      /* the checkpoint */
    fp_weights *head_w; /* reward_head.* when the head comes from a separate file */
    fp_layer *layers;
    const fp_tensor *embed;   /* [V, H] */
    float *final_norm;        /* [H] */
    const fp_tensor *lm_head; /* [V, H] or NULL (tied or absent); generation only */
    int head, num_labels;
    const fp_tensor *head_w1, *head_w2; /* PRM: score.0 [H,H], score.2 [L,H]; others: head_w2 = [L,H] */
    float *head_b1, *head_b2;
    float *inv_freq; /* [head_dim/2] */
    int nthreads;
    struct fp_model_profile_result *prof; /* set only while fp_model_profile runs: forward.c adds phase times */
    int fast;  /* fp_model_set_precision: let GEMMs round activations to bf16/int8 (default 0: f32) */
    float **owned; /* f32 copies to free */
    size_t nowned;
};

/* x[T, H] = embed[ids[t]] as f32.  Rows of a mapped checkpoint are read with pread: touching them through the
 * mapping would make the kernel map its fault-around window (64 KiB) with each row, i.e. most of a 0.3-1 GB
 * table for a few thousand scattered ids, all of it counted in the process's resident memory. */
void fp_model_embed_rows(const fp_model *m, const int32_t *ids, int T, float *x);

/* out[T, N] = inp[T, K] @ w[N, K]^T + bias with the model's precision setting. */
void fp_model_linear(const fp_model *m, float *out, const float *inp, const fp_tensor *w, const float *bias, int T);

/* The trunk: final hidden states (after the last RMSNorm) at positions (or every row when positions is
 * NULL: npos = T) into out[npos, H]. */
int fp_model_trunk_forward(fp_model *m, const int32_t *ids, int T, const int *positions, int npos, float *out);
/* The same over nseg independent sequences packed into ids[T]: sequence s is rows seg_off[s] .. seg_off[s+1]-1
 * (seg_off[0] = 0, seg_off[nseg] = T); each attends only to itself and its positions restart at 0.
 * positions index the packed rows.  seg_off NULL: one sequence. */
int fp_model_trunk_forward_packed(fp_model *m, const int32_t *ids, int T, const int *seg_off, int nseg,
                                  const int *positions, int npos, float *out);
/* Head logits[n, num_labels] from final hidden states h[n, H] (requires a head). */
int fp_model_apply_head(fp_model *m, const float *h, int n, float *logits);
/* x[n,H] += MLP(rmsnorm(x) * post_norm) of layer y, in row chunks of `chunk`; xn [n,H] scratch, gate gate_cap
 * floats of scratch (fp_model_mlp_gate_floats(m, chunk)), up up_cap floats (fp_model_mlp_up_floats(m, chunk));
 * FP_OK or an error (out of memory) (forward.c; shared with the KV-cache forward in forward_cached.c). */
/* MLP row chunk of the prefill: gate/up activations exist for this many rows at a time.  Each chunk is one
 * more pass over the weights (the GEMMs pack them per call): 256 rows ran ~15 % slower than 512 at T=512
 * (0.5B, AMX); at T=2048, 2048-row chunks ran ~10 % faster than 512-row ones.  So fp_model_mlp_chunk_rows
 * takes FP_MLP_CHUNK_ROWS doubled (up to FP_MLP_CHUNK_ROWS_MAX) while the buffers that grow with the rows
 * stay within 1/8 of the layers' weight bytes: a quantised model (chosen to save memory, and cheaper to
 * re-read) keeps shorter chunks than the same model in bf16.  Where the MLP runs unfused on GEMM kernels that
 * read the weights once per block of rows anyway (f32 FMA and VNNI: 256 rows; exact precision, or no AMX),
 * the chunk is that block: taller ones only hold more of the [rows, I] f32 gate and up. */
#define FP_MLP_CHUNK_ROWS 512
#define FP_MLP_CHUNK_ROWS_MAX 2048
int fp_model_mlp_chunk_rows(const fp_model *m);
/* Rows of one layer chunk of the prefill (forward.c): a layer runs over the sequence in chunks of about this
 * many rows (balanced), so only K, V and the residual stream are [T, .]; the MLP chunk up to T = 4096, then
 * T/8 where that is more. */
int fp_model_layer_chunk_rows(const fp_model *m, int T);
/* rmsnorm(x [T,H]) -> q, k, v as fp_model_qkv with the norm written straight into bf16 tiles (tiles_cap bytes
 * of scratch; fp_rmsnorm_tiles) and the one-pass AMX GEMM reading them: bit for bit fp_rmsnorm_forward +
 * fp_model_qkv.  0 done; 1 not taken (exact precision, no AMX, dtypes / shapes, tiles_cap too small, no
 * memory): nothing written to q, k, v; the caller runs the norm and fp_model_qkv on f32 rows. */
int fp_model_norm_qkv_tiles(const fp_model *m, const fp_layer *y, float *q, float *k, float *v, const float *x,
                            uint16_t *tiles, size_t tiles_cap, int T);
/* The attention projections of layer y over inp [T,H]: q [T,qd] (unless q is NULL), k and v [T,kvd], with
 * their biases; one pass over the activations where the kernels allow (fp_matmul_forward_multi). */
void fp_model_qkv(const fp_model *m, const fp_layer *y, float *q, float *k, float *v, const float *inp, int T);
int fp_model_mlp_block(const fp_model *m, const fp_layer *y, float *x, float *xn, float *gate, size_t gate_cap,
                       float *up, size_t up_cap, int n, int chunk);
/* Floats of `gate` scratch for row chunks of `chunk`: chunk * max(I, H) f32, or less where the fast precision
 * hands SwiGLU -> down over bf16 tiles (fp_matmul_swiglu_tiles_ok) in every layer. */
size_t fp_model_mlp_gate_floats(const fp_model *m, int chunk);
/* Floats of `up` scratch fp_model_mlp_block needs for row chunks of `chunk`: chunk * H when the fused
 * gate/up + SwiGLU kernel runs (it needs no [chunk, I] up buffer), chunk * max(I, H) otherwise. */
size_t fp_model_mlp_up_floats(const fp_model *m, int chunk);

/* KV cache (kvcache.c): per layer, K (after q/k-norm and RoPE) and V rows [cap, nkv*head_dim] for tokens
 * 0..n-1 of one sequence; grows on demand up to max_tokens. */
struct fp_kv_cache {
    fp_model *m;
    int n, cap, max_tokens;
    float **k, **v; /* [num_layers] */
};
/* Makes room for `need` tokens (need <= max_tokens), keeping the first n rows. */
int fp_kv_cache_reserve(fp_kv_cache *c, int need);

/* Per-phase profile of the trunk prefill (profile.c, used by `fluxprm bench`): runs fp_model_trunk_forward over
 * ids[T] (all rows, no head) with timing laps enabled in forward.c (seconds per phase summed over the layers;
 * total = the wall time of that forward). */
enum {
    FP_PROFILE_EMBED = 0, FP_PROFILE_RMSNORM, FP_PROFILE_QKV, FP_PROFILE_ROPE, FP_PROFILE_ATTENTION,
    FP_PROFILE_OPROJ, FP_PROFILE_GATE_UP, FP_PROFILE_SWIGLU, FP_PROFILE_DOWN, FP_PROFILE_RESIDUAL,
    FP_PROFILE_NPHASES
};
typedef struct fp_model_profile_result {
    double seconds[FP_PROFILE_NPHASES];
    double total; /* wall time of the whole forward */
} fp_model_profile_result;
int fp_model_profile(fp_model *m, const int32_t *ids, int T, fp_model_profile_result *r);
const char *fp_model_profile_phase_name(int phase);
/* FLOPs of each phase for a full prefill of T tokens (0 for the phases not counted: norms, rope, swiglu,
 * residual, embedding).  Matmuls 2*T*K*N; causal attention 2*2*d*nh*T(T+1)/2 per layer. */
void fp_model_profile_flops(const fp_model *m, int T, double *flops);

#endif
