/* The Qwen2/Qwen3 trunk forward pass: causal prefill over a whole sequence, f32 activations, weights in their
 * stored dtype.  One layer's activations live at a time (buffers reused across layers); the MLP runs in
 * token chunks; the last layer computes queries, attention output and MLP only for the requested rows.
 *
 *   x = embed[ids]                                        [T,H]
 *   per layer:  xn = rmsnorm(x) ; q,k,v = xn W^T + b      [T,nh*d], [T,nkv*d]
 *               (qwen3: per-head rmsnorm of q, k) ; rope(q, k)
 *               x += attention(q, k, v) Wo^T
 *               x += down(silu(gate(rmsnorm(x))) * up(rmsnorm(x)))
 *   out = rmsnorm(x)                                      [npos,H] */
#include "model/model.h"
#include "tensor/kernels.h"
#include "tensor/ops.h"
#include <omp.h>
#include <stdlib.h>
#include <string.h>


typedef struct {
    float *x, *xn, *q, *k, *v, *gate, *up, *cos_t, *sin_t, *qcos, *qsin, *xs;
    int *tokpos, *kst, *qkst; /* packed sequences: position in own sequence, its first row (all rows / requested) */
} fwd_bufs;

static void matmul(const fp_model *m, float *out, const float *inp, const fp_tensor *w, const float *bias, int T) {
    fp_model_linear(m, out, inp, w, bias, T); /* w: [N, K] */
}

/* Profiling (fp_model_profile): when m->prof is set, each LAP adds the time since the previous lap to a phase. */
#define LAP(phase) do { if (m->prof) { double lap_now = fp_now(); m->prof->seconds[phase] += lap_now - lap_t; lap_t = lap_now; } } while (0)

size_t fp_model_mlp_up_floats(const fp_model *m, int chunk) {
    int H = m->cfg.hidden_size, I = m->cfg.intermediate_size;
    /* the fused kernel needs no up scratch: only the down projection's [chunk, H] output lives there */
    int fused = 1;
    for (int l = 0; l < m->cfg.num_layers && fused; l++) {
        const fp_tensor *gw = m->layers[l].gate_w, *uw = m->layers[l].up_w;
        fused = gw->dtype == uw->dtype && gw->shape[0] == uw->shape[0] && gw->shape[1] == uw->shape[1] &&
                fp_matmul_swiglu_fused(!m->fast, gw->dtype, chunk, H, I);
    }
    return (size_t)chunk * (size_t)(fused || I < H ? H : I);
}

/* 1 when every chunk of `chunk` rows (but a last one of <= FP_GEMV_MAX_T rows) hands SwiGLU -> down over bf16
 * tiles (fp_matmul_swiglu_tiles_ok) in every layer */
static int mlp_tiles_everywhere(const fp_model *m, int chunk) {
    int H = m->cfg.hidden_size, I = m->cfg.intermediate_size;
    for (int l = 0; l < m->cfg.num_layers; l++) {
        const fp_layer *y = &m->layers[l];
        if (y->gate_w->dtype != y->up_w->dtype ||
            !fp_matmul_swiglu_tiles_ok(!m->fast, y->gate_w->dtype, y->down_w->dtype, chunk, H, I))
            return 0;
    }
    return 1;
}

size_t fp_model_mlp_gate_floats(const fp_model *m, int chunk) {
    int H = m->cfg.hidden_size, I = m->cfg.intermediate_size, wide = I > H ? I : H;
    size_t f32 = (size_t)chunk * (size_t)wide;
    if (!mlp_tiles_everywhere(m, chunk)) return f32;
    /* bf16 tiles, or f32 rows for a last chunk too short for the AMX kernels */
    size_t tiles = (fp_matmul_tiles_bytes(chunk, I) + 3) / 4, tail = (size_t)FP_GEMV_MAX_T * (size_t)wide;
    return tiles > tail ? tiles : tail;
}

/* x[n,H] += MLP(rmsnorm(x)), in chunks of rows. xn: [n,H] scratch; gate: gate_cap floats of scratch
 * (fp_model_mlp_gate_floats); up: up_cap floats of scratch (>= chunk * H; fp_model_mlp_up_floats). */
int fp_model_mlp_block(const fp_model *m, const fp_layer *y, float *x, float *xn, float *gate, size_t gate_cap,
                       float *up, size_t up_cap, int n, int chunk) {
    int H = m->cfg.hidden_size, I = m->cfg.intermediate_size;
    float eps = (float)m->cfg.rms_norm_eps;
    double lap_t = m->prof ? fp_now() : 0;
    fp_rmsnorm_forward(xn, x, y->post_norm, eps, n, H);
    LAP(FP_PROFILE_RMSNORM);
    for (int r0 = 0; r0 < n; r0 += chunk) {
        int c = n - r0 < chunk ? n - r0 : chunk;
        const float *xin = xn + (size_t)r0 * H;
        const fp_tensor *gw = y->gate_w, *uw = y->up_w;
        /* down -> up's storage ([c,H] fits in [c,I] only when H <= I; use xn rows already consumed otherwise) */
        float *d = H <= I ? up : (float *)xin;
        if (gw->dtype == uw->dtype && gw->shape[0] == uw->shape[0] && gw->shape[1] == uw->shape[1] &&
            fp_matmul_swiglu_tiles_ok(!m->fast, gw->dtype, y->down_w->dtype, c, H, I) &&
            fp_matmul_tiles_bytes(c, I) <= gate_cap * sizeof(float)) {
            /* fast precision on AMX: silu(g) * u goes to the down GEMM as bf16 tiles in gate's storage (the
             * values of the f32 path below, bit for bit); its time counts as gate/up */
            uint16_t *tiles = (uint16_t *)gate;
            int rc = fp_matmul_avx512_swiglu_tiles(tiles, xin, gw->data, uw->data, gw->dtype, c, H, I);
            LAP(FP_PROFILE_GATE_UP);
            if (!rc) rc = fp_matmul_avx512_tiles(d, tiles, y->down_w->data, y->down_w->dtype, NULL, c, I, H);
            LAP(FP_PROFILE_DOWN);
            if (rc < 0) return fp_errorf(FP_ENOMEM, "model forward: out of memory (GEMM scratch, %d rows)", c);
            if (rc == 0) {
                fp_add_forward(x + (size_t)r0 * H, d, (size_t)c * H);
                LAP(FP_PROFILE_RESIDUAL);
                continue;
            }
            /* rc == 1 (not expected after fp_matmul_swiglu_tiles_ok): the f32 path below */
        }
        if ((size_t)c * (size_t)(I > H ? I : H) > gate_cap)
            return fp_errorf(FP_EINVAL, "model forward: MLP gate scratch of %zu floats for %d rows", gate_cap, c);
        if (gw->dtype == uw->dtype && gw->shape[0] == uw->shape[0] && gw->shape[1] == uw->shape[1]) {
            /* gate = silu(xin Wg^T) * (xin Wu^T) [c,I]: one fused AMX kernel in fast precision, else the two
             * GEMMs (up as scratch) + SwiGLU, the same values either way; its time counts as gate/up */
            /* the unfused fallback allocates its own [c, I] up scratch when ours is only [chunk, H] */
            float *up_scratch = (size_t)c * (size_t)gw->shape[0] <= up_cap ? up : NULL;
            if (fp_matmul_swiglu_forward_buf(!m->fast, gate, xin, gw->data, uw->data, gw->dtype, c, (int)gw->shape[1],
                                             (int)gw->shape[0], up_scratch))
                return fp_errorf(FP_ENOMEM, "model forward: out of memory (MLP scratch, %d rows)", c);
            LAP(FP_PROFILE_GATE_UP);
        } else {
            if ((size_t)c * (size_t)I > up_cap) /* fp_model_mlp_up_floats sized up for this case */
                return fp_errorf(FP_EINVAL, "model forward: MLP up scratch of %zu floats for %d rows", up_cap, c);
            matmul(m, gate, xin, gw, NULL, c); /* [c,I] */
            matmul(m, up, xin, uw, NULL, c);   /* [c,I] */
            LAP(FP_PROFILE_GATE_UP);
            fp_swiglu_forward(gate, gate, up, c, I);
        }
        LAP(FP_PROFILE_SWIGLU);
        matmul(m, d, gate, y->down_w, NULL, c); /* [c,H] */
        LAP(FP_PROFILE_DOWN);
        fp_add_forward(x + (size_t)r0 * H, d, (size_t)c * H);
        LAP(FP_PROFILE_RESIDUAL);
    }
    return FP_OK;
}

int fp_model_trunk_forward(fp_model *m, const int32_t *ids, int T, const int *positions, int npos, float *out) {
    return fp_model_trunk_forward_packed(m, ids, T, NULL, 1, positions, npos, out);
}

int fp_model_trunk_forward_packed(fp_model *m, const int32_t *ids, int T, const int *seg_off, int nseg,
                                  const int *positions, int npos, float *out) {
    if (!m || !ids || !out) return fp_errorf(FP_EINVAL, "model forward: NULL argument");
    const fp_model_config *c = &m->cfg;
    if (T <= 0) return fp_errorf(FP_EINVAL, "model forward: empty sequence (T = %d)", T);
    if ((size_t)T * (size_t)(c->num_heads * c->head_dim > c->hidden_size ? c->num_heads * c->head_dim : c->hidden_size) >
        (size_t)1 << 31)
        return fp_errorf(FP_ERANGE, "model forward: sequence of %d tokens is too long", T);
    for (int t = 0; t < T; t++)
        if (ids[t] < 0 || ids[t] >= c->vocab_size)
            return fp_errorf(FP_EINVAL, "model forward: token id %d at position %d is outside the vocabulary [0, %d)",
                             (int)ids[t], t, c->vocab_size);
    if (positions) {
        if (npos <= 0) return fp_errorf(FP_EINVAL, "model forward: npos = %d", npos);
        for (int i = 0; i < npos; i++)
            if (positions[i] < 0 || positions[i] >= T)
                return fp_errorf(FP_EINVAL, "model forward: position %d (index %d) outside the sequence [0, %d)",
                                 positions[i], i, T);
    } else npos = T;
    if (seg_off) {
        if (nseg < 1 || seg_off[0] != 0 || seg_off[nseg] != T)
            return fp_errorf(FP_EINVAL, "model forward: bad packed sequence offsets");
        for (int s = 0; s < nseg; s++)
            if (seg_off[s + 1] <= seg_off[s]) return fp_errorf(FP_EINVAL, "model forward: empty packed sequence %d", s);
    }

    const int H = c->hidden_size, nh = c->num_heads, nkv = c->num_kv_heads,
              d = c->head_dim, half = d / 2, NL = c->num_layers;
    const int qd = nh * d, kvd = nkv * d;
    const float eps = (float)c->rms_norm_eps;
    int chunk = T < FP_MLP_CHUNK_ROWS ? T : FP_MLP_CHUNK_ROWS;

    fwd_bufs b = {0};
    size_t tT = (size_t)T;
    /* the residual stream lives in out when out holds every row ([T,H]): one [T,H] buffer less */
    b.x = positions ? fp_malloc(sizeof(float) * tT * H) : out;
    b.xn = fp_malloc(sizeof(float) * tT * (qd > H ? qd : H));
    b.q = fp_malloc(sizeof(float) * tT * (qd > H ? qd : H));
    b.k = fp_malloc(sizeof(float) * tT * kvd);
    b.v = fp_malloc(sizeof(float) * tT * kvd);
    size_t gate_cap = fp_model_mlp_gate_floats(m, chunk);
    b.gate = fp_malloc(sizeof(float) * gate_cap);
    size_t up_cap = fp_model_mlp_up_floats(m, chunk);
    b.up = fp_malloc(sizeof(float) * up_cap);
    b.cos_t = fp_malloc(sizeof(float) * tT * half);
    b.sin_t = fp_malloc(sizeof(float) * tT * half);
    if (positions) {
        b.qcos = fp_malloc(sizeof(float) * (size_t)npos * half);
        b.qsin = fp_malloc(sizeof(float) * (size_t)npos * half);
        b.xs = fp_malloc(sizeof(float) * (size_t)npos * H);
    }
    if (seg_off) {
        b.tokpos = fp_malloc(sizeof(int) * tT);
        b.kst = fp_malloc(sizeof(int) * tT);
        if (positions) b.qkst = fp_malloc(sizeof(int) * (size_t)npos);
    }
    int rc = FP_OK;
    if (!b.x || !b.xn || !b.q || !b.k || !b.v || !b.gate || !b.up || !b.cos_t || !b.sin_t ||
        (positions && (!b.qcos || !b.qsin || !b.xs)) || (seg_off && (!b.tokpos || !b.kst || (positions && !b.qkst)))) {
        rc = fp_errorf(FP_ENOMEM, "model forward: out of memory for %d tokens", T);
        goto done;
    }

    int saved_threads = omp_get_max_threads();
    if (m->nthreads > 0) omp_set_num_threads(m->nthreads);

    double lap_t = m->prof ? fp_now() : 0;
    /* Embeddings: x[t] = embed[ids[t]] */
    fp_model_embed_rows(m, ids, T, b.x);

    if (seg_off) {
        for (int s = 0; s < nseg; s++)
            for (int t = seg_off[s]; t < seg_off[s + 1]; t++) b.tokpos[t] = t - seg_off[s], b.kst[t] = seg_off[s];
        if (positions)
            for (int i = 0; i < npos; i++) b.qkst[i] = b.kst[positions[i]];
    }
    LAP(FP_PROFILE_EMBED);
    fp_rope_tables(b.cos_t, b.sin_t, m->inv_freq, b.tokpos, T, d); /* positions restart in each packed sequence */
    if (positions)
        for (int i = 0; i < npos; i++) {
            memcpy(b.qcos + (size_t)i * half, b.cos_t + (size_t)positions[i] * half, sizeof(float) * half);
            memcpy(b.qsin + (size_t)i * half, b.sin_t + (size_t)positions[i] * half, sizeof(float) * half);
        }

    for (int l = 0; l < NL; l++) {
        const fp_layer *y = &m->layers[l];
        int sub = positions && l == NL - 1; /* last layer: only the requested rows */
        int nq = sub ? npos : T;
        /* attention block */
        LAP(FP_PROFILE_ROPE);
        fp_rmsnorm_forward(b.xn, b.x, y->in_norm, eps, T, H); /* [T,H] */
        LAP(FP_PROFILE_RMSNORM);
        if (sub) {
            fp_model_qkv(m, y, NULL, b.k, b.v, b.xn, T); /* [T,kvd] */
            for (int i = 0; i < npos; i++) /* gather normalised rows (xs as scratch) */
                memcpy(b.xs + (size_t)i * H, b.xn + (size_t)positions[i] * H, sizeof(float) * H);
            matmul(m, b.q, b.xs, y->q_w, y->q_b, npos); /* [npos,qd] */
        } else {
            fp_model_qkv(m, y, b.q, b.k, b.v, b.xn, T); /* [T,qd], [T,kvd] x 2 */
        }
        LAP(FP_PROFILE_QKV);
        if (y->q_norm) {
            fp_rmsnorm_forward(b.q, b.q, y->q_norm, eps, nq * nh, d);
            fp_rmsnorm_forward(b.k, b.k, y->k_norm, eps, T * nkv, d);
            LAP(FP_PROFILE_RMSNORM);
        }
        fp_rope_forward(b.q, sub ? b.qcos : b.cos_t, sub ? b.qsin : b.sin_t, nq, nh, d);
        fp_rope_forward(b.k, b.cos_t, b.sin_t, T, nkv, d);
        LAP(FP_PROFILE_ROPE);
        /* xn is free once q, k, v exist: attention output -> xn, o_proj -> q (q is free after attention) */
        if (fp_attention_forward_ex(!m->fast, b.xn, b.q, b.k, b.v, sub ? positions : NULL, sub ? b.qkst : b.kst, nq, T, nh, nkv,
                                 d)) { /* [nq,qd] */
            rc = fp_errorf(FP_ENOMEM, "model forward: out of memory (attention scratch)");
            break;
        }
        LAP(FP_PROFILE_ATTENTION);
        matmul(m, b.q, b.xn, y->o_w, NULL, nq); /* [nq,H] */
        LAP(FP_PROFILE_OPROJ);
        float *x = b.x;
        if (sub) { /* residual rows of the requested positions */
            for (int i = 0; i < npos; i++)
                memcpy(b.xs + (size_t)i * H, b.x + (size_t)positions[i] * H, sizeof(float) * H);
            x = b.xs;
        }
        fp_add_forward(x, b.q, (size_t)nq * H);
        LAP(FP_PROFILE_RESIDUAL);
        /* MLP block */
        if ((rc = fp_model_mlp_block(m, y, x, b.xn, b.gate, gate_cap, b.up, up_cap, nq, chunk))) break;
        if (m->prof) lap_t = fp_now(); /* the MLP block timed itself */
        if (sub) { /* final norm of the requested rows */
            fp_rmsnorm_forward(out, b.xs, m->final_norm, eps, npos, H);
            LAP(FP_PROFILE_RMSNORM);
        }
    }
    if (!rc && !positions) {
        fp_rmsnorm_forward(out, b.x, m->final_norm, eps, T, H); /* in place (b.x == out) */
        LAP(FP_PROFILE_RMSNORM);
    }
    if (m->nthreads > 0) omp_set_num_threads(saved_threads);
done:
    if (b.x != out) free(b.x);
    free(b.xn); free(b.q); free(b.k); free(b.v); free(b.gate); free(b.up);
    free(b.cos_t); free(b.sin_t); free(b.qcos); free(b.qsin); free(b.xs);
    free(b.tokpos); free(b.kst); free(b.qkst);
    return rc;
}
