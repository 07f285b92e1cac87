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
    int *rowpos;              /* 0 .. T-1: the query positions of a chunk of consecutive rows */
    int *tokpos, *kst, *qkst; /* packed sequences: position in own sequence, its first row (all rows / requested) */
    size_t gate_cap, up_cap;
    size_t xn_bytes; /* xn's size ([rows, wide] f32), for the bf16 tiles it may hold instead */
    int mlp_chunk;
} fwd_bufs;

static void matmul(const fp_model *m, float *out, const float *inp, const fp_tensor *w, const float *bias, int T) {
    fp_model_linear(m, out, inp, w, bias, T); /* w: [N, K] */
}

/* Profiling (fp_model_profile): when m->prof is set, each LAP adds the time since the previous lap to a phase. */
#define LAP(phase) do { if (m->prof) { double lap_now = fp_now(); m->prof->seconds[phase] += lap_now - lap_t; lap_t = lap_now; } } while (0)

size_t fp_model_mlp_up_floats(const fp_model *m, int chunk) {
    int H = m->cfg.hidden_size, I = m->cfg.intermediate_size;
    /* the fused AMX kernel and the SwiGLU pair need no up scratch: only the down projection's [chunk, H]
     * output lives there */
    int fused = 1;
    for (int l = 0; l < m->cfg.num_layers && fused; l++) {
        const fp_tensor *gw = m->layers[l].gate_w, *uw = m->layers[l].up_w;
        fused = gw->dtype == uw->dtype && gw->shape[0] == uw->shape[0] && gw->shape[1] == uw->shape[1] &&
                !fp_matmul_swiglu_needs_up(!m->fast, gw->dtype, chunk, H, I);
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

/* Chunks of n rows: as few as chunks of at most `rows` allow, of equal size (a multiple of 16 rows, the AMX
 * tile height, where that stays <= rows) but the last, so no chunk is left with a few rows for the GEMV
 * kernels (whose fast precision rounds differently).  Never more than rows (the buffers' height); n may
 * exceed it (requested positions may repeat rows). */
static int balanced_step(int n, int rows) {
    int nch = (n + rows - 1) / rows, step = (n + nch - 1) / nch, step16 = (step + 15) / 16 * 16;
    return nch == 1 ? n : step16 <= rows ? step16 : step;
}

/* x[n,H] += MLP(rmsnorm(x)), in chunks of rows. xn: [n,H] scratch; gate: gate_cap floats of scratch
 * (fp_model_mlp_gate_floats); up: up_cap floats of scratch (>= chunk * H; fp_model_mlp_up_floats). */
int fp_model_mlp_block(const fp_model *m, const fp_layer *y, float *x, float *xn, float *gate, size_t gate_cap,
                       float *up, size_t up_cap, int n, int chunk) {
    int H = m->cfg.hidden_size, I = m->cfg.intermediate_size;
    float eps = (float)m->cfg.rms_norm_eps;
    double lap_t = m->prof ? fp_now() : 0;
    /* fast precision on AMX, every chunk on the tiles path below: the norm straight into bf16 tiles in xn's
     * storage ([n,H] f32 holds them), which the fused gate/up GEMM reads (fp_rmsnorm_tiles) */
    const fp_tensor *gw = y->gate_w, *uw = y->up_w;
    int same_gu = gw->dtype == uw->dtype && gw->shape[0] == uw->shape[0] && gw->shape[1] == uw->shape[1];
    uint16_t *xt = NULL;
    if (same_gu && H <= I && (n <= chunk || chunk % 32 == 0) && fp_matmul_tiles_bytes(n, H) <= sizeof(float) * (size_t)n * H) {
        int ok = 1;
        for (int r0 = 0; r0 < n && ok; r0 += chunk) {
            int c = n - r0 < chunk ? n - r0 : chunk;
            ok = fp_matmul_swiglu_tiles_ok(!m->fast, gw->dtype, y->down_w->dtype, c, H, I) &&
                 fp_matmul_tiles_bytes(c, I) <= gate_cap * sizeof(float);
        }
        if (ok && fp_rmsnorm_tiles((uint16_t *)xn, x, y->post_norm, eps, n, H) == 0) xt = (uint16_t *)xn;
    }
    if (!xt) fp_rmsnorm_forward(xn, x, y->post_norm, eps, n, H);
    LAP(FP_PROFILE_RMSNORM);
    const int nkb_h = (H + 31) / 32; /* k blocks of the xt tiles */
    /* equal chunks (the tiles path: of `chunk` rows, whose row blocks start on 32-row tile boundaries) */
    const int step = xt ? chunk : balanced_step(n, chunk);
    for (int r0 = 0; r0 < n; r0 += step) {
        int c = n - r0 < step ? n - r0 : step;
        const float *xin = xt ? NULL : xn + (size_t)r0 * H;
        /* down -> up's storage ([c,H] fits in [c,I] only when H <= I; use xn rows already consumed otherwise) */
        float *d = H <= I ? up : (float *)xin;
        if (xt || (same_gu && fp_matmul_swiglu_tiles_ok(!m->fast, gw->dtype, y->down_w->dtype, c, H, I) &&
                   fp_matmul_tiles_bytes(c, I) <= gate_cap * sizeof(float))) {
            /* fast precision on AMX: silu(g) * u goes to the down GEMM as bf16 tiles in gate's storage (the
             * values of the f32 path below, bit for bit); its time counts as gate/up */
            uint16_t *tiles = (uint16_t *)gate;
            const uint16_t *in_tiles = xt ? xt + (size_t)(r0 / 16) * nkb_h * 512 : NULL; /* r0 % 32 == 0 */
            int rc = fp_matmul_avx512_swiglu_tiles(tiles, xin, in_tiles, gw->data, uw->data, gw->dtype, c, H, I);
            LAP(FP_PROFILE_GATE_UP);
            if (!rc) rc = fp_matmul_avx512_tiles(d, tiles, y->down_w->data, y->down_w->dtype, NULL, c, I, H);
            LAP(FP_PROFILE_DOWN);
            if (rc < 0) return fp_errorf(FP_ENOMEM, "model forward: out of memory (GEMM scratch, %d rows)", c);
            if (rc == 0) {
                fp_add_forward(x + (size_t)r0 * H, d, (size_t)c * H);
                LAP(FP_PROFILE_RESIDUAL);
                continue;
            }
            /* rc == 1 (not expected after fp_matmul_swiglu_tiles_ok): the f32 path below, which needs f32 rows */
            if (xt) return fp_errorf(FP_EINVAL, "model forward: the AMX MLP kernel refused %d rows it was checked for", c);
        }
        if ((size_t)c * (size_t)(I > H ? I : H) > gate_cap)
            return fp_errorf(FP_EINVAL, "model forward: MLP gate scratch of %zu floats for %d rows", gate_cap, c);
        if (same_gu) {
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
            if (m->fast) fp_swiglu_forward_fast(gate, gate, up, c, I);
            else fp_swiglu_forward(gate, gate, up, c, I);
        }
        LAP(FP_PROFILE_SWIGLU);
        matmul(m, d, gate, y->down_w, NULL, c); /* [c,H] */
        LAP(FP_PROFILE_DOWN);
        fp_add_forward(x + (size_t)r0 * H, d, (size_t)c * H);
        LAP(FP_PROFILE_RESIDUAL);
    }
    return FP_OK;
}

/* The rows per pass over the weights that all the MLP's GEMMs share when it runs unfused in every layer (gate
 * GEMM + up GEMM + SwiGLU, then down: fp_matmul_rows_per_weight_pass), else 0. */
static int mlp_rows_per_weight_pass(const fp_model *m) {
    int H = m->cfg.hidden_size, I = m->cfg.intermediate_size, pass = 0;
    for (int l = 0; l < m->cfg.num_layers; l++) {
        const fp_tensor *w[3] = {m->layers[l].gate_w, m->layers[l].up_w, m->layers[l].down_w};
        if (fp_matmul_swiglu_fused(!m->fast, w[0]->dtype, FP_MLP_CHUNK_ROWS, H, I)) return 0;
        for (int i = 0; i < 3; i++) {
            int p = fp_matmul_rows_per_weight_pass(!m->fast, w[i]->dtype);
            if (p <= 0 || (pass && p != pass)) return 0;
            pass = p;
        }
    }
    return pass;
}

/* Bytes of the buffers that grow with the rows of a chunk: normed rows and q ([rows, wide] f32 each), the
 * MLP's gate and up scratch, and the GEMMs' bf16 copy of their widest input (counted as [rows, I]). */
static size_t chunk_bytes(const fp_model *m, int rows) {
    const fp_model_config *c = &m->cfg;
    int H = c->hidden_size, qd = c->num_heads * c->head_dim, wide = qd > H ? qd : H, I = c->intermediate_size;
    return sizeof(float) * ((size_t)2 * rows * wide + fp_model_mlp_gate_floats(m, rows) + fp_model_mlp_up_floats(m, rows)) +
           (size_t)2 * rows * (I > H ? I : H);
}

int fp_model_mlp_chunk_rows(const fp_model *m) {
    size_t wbytes = 0;
    for (int l = 0; l < m->cfg.num_layers; l++) {
        const fp_layer *y = &m->layers[l];
        const fp_tensor *w[7] = {y->q_w, y->k_w, y->v_w, y->o_w, y->gate_w, y->up_w, y->down_w};
        for (int i = 0; i < 7; i++) wbytes += fp_dtype_row_bytes(w[i]->dtype, w[i]->shape[1]) * (size_t)w[i]->shape[0];
    }
    int rows = FP_MLP_CHUNK_ROWS;
    while (rows < FP_MLP_CHUNK_ROWS_MAX && chunk_bytes(m, 2 * rows) <= wbytes / 8) rows *= 2;
    /* an unfused MLP whose GEMM kernels read the weights once per block of rows anyway (f32 FMA, VNNI: exact
     * precision, or no AMX) gains nothing from taller chunks but holds [rows, I] gate and up in f32: chunks of
     * that block height then (0.5B Q8_0 on VNNI, T=512: peak RSS 394 -> 384 MB) */
    int pass = mlp_rows_per_weight_pass(m);
    if (pass > 0 && pass < rows) rows = pass;
    return rows;
}

int fp_model_layer_chunk_rows(const fp_model *m, int T) {
    /* the MLP chunk up to 4096 tokens, then T/8 (in steps of 512): each chunk's attention call packs the keys
     * it sees again, so long sequences take fewer, longer chunks */
    int per = (T + 8 * FP_MLP_CHUNK_ROWS - 1) / (8 * FP_MLP_CHUNK_ROWS);
    int rows = FP_MLP_CHUNK_ROWS * (per < 1 ? 1 : per), mlp = fp_model_mlp_chunk_rows(m);
    if (rows < mlp) rows = mlp;
    return T < rows ? T : rows;
}

/* The rest of a layer for n query rows whose normed input is in b->xn, q (after q-norm and RoPE) in b->q, at
 * positions qpos, with every key and value they see already in the first nkeys rows of b->k, b->v:
 * attention -> b->xn, o_proj -> b->q, xres[n,H] += that, then xres += MLP(xres). */
static int fwd_chunk(fp_model *m, const fp_layer *y, fwd_bufs *b, float *xres, const int *qpos, const int *kst,
                     int n, int nkeys) {
    const fp_model_config *c = &m->cfg;
    const int H = c->hidden_size;
    double lap_t = m->prof ? fp_now() : 0;
    const int qd = c->num_heads * c->head_dim;
    /* fast precision on AMX: the attention output goes to o_proj as bf16 tiles in xn's storage (the values of
     * the f32 path, bit for bit: fp_attention_avx512) */
    int rc = 1;
    if (fp_matmul_amx_ok(!m->fast, y->o_w->dtype, n, qd) && fp_matmul_tiles_bytes(n, qd) <= b->xn_bytes)
        rc = fp_attention_forward_tiles((uint16_t *)b->xn, b->q, b->k, b->v, qpos, kst, n, nkeys, c->num_heads,
                                        c->num_kv_heads, c->head_dim);
    if (rc == 0) {
        LAP(FP_PROFILE_ATTENTION);
        rc = fp_matmul_avx512_tiles(b->q, (const uint16_t *)b->xn, y->o_w->data, y->o_w->dtype, NULL, n, qd, H);
        if (rc < 0) return fp_errorf(FP_ENOMEM, "model forward: out of memory (GEMM scratch, %d rows)", n);
        if (rc) return fp_errorf(FP_EINVAL, "model forward: the AMX o_proj kernel refused %d rows it was checked for", n);
    } else {
        if (rc > 0 && fp_attention_forward_ex(!m->fast, b->xn, b->q, b->k, b->v, qpos, kst, n, nkeys, c->num_heads,
                                              c->num_kv_heads, c->head_dim)) /* [n,qd] */
            rc = -1;
        if (rc < 0) return fp_errorf(FP_ENOMEM, "model forward: out of memory (attention scratch)");
        LAP(FP_PROFILE_ATTENTION);
        matmul(m, b->q, b->xn, y->o_w, NULL, n); /* [n,H] */
    }
    LAP(FP_PROFILE_OPROJ);
    fp_add_forward(xres, b->q, (size_t)n * H);
    LAP(FP_PROFILE_RESIDUAL);
    /* q is free now: the MLP's up scratch where it is large enough (b->up NULL) */
    return fp_model_mlp_block(m, y, xres, b->xn, b->gate, b->gate_cap, b->up ? b->up : b->q, b->up_cap, n,
                              b->mlp_chunk);
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
    const int qd = nh * d, kvd = nkv * d, wide = qd > H ? qd : H;
    const float eps = (float)c->rms_norm_eps;
    /* rows of one layer chunk (all of a layer but K and V: see fwd_chunk) and of one MLP chunk */
    const int rows = fp_model_layer_chunk_rows(m, T), mlp_rows = fp_model_mlp_chunk_rows(m),
              chunk = rows < mlp_rows ? rows : mlp_rows;

    /* every buffer but the residual stream when it lives in out: one arena, planned then mapped */
    fwd_bufs b = {0};
    fp_arena ar = {0};
    size_t gate_cap = fp_model_mlp_gate_floats(m, chunk), up_cap = fp_model_mlp_up_floats(m, chunk);
    int rc = FP_OK;
    for (int pass = 0; pass < 2; pass++) {
        size_t tT = (size_t)T, F = sizeof(float), I = sizeof(int);
        if (pass && (rc = fp_arena_map(&ar))) goto done;
        b.x = positions ? fp_arena_take(&ar, F * tT * H) : out;
        b.xn = fp_arena_take(&ar, F * (size_t)rows * wide);
        b.q = fp_arena_take(&ar, F * (size_t)rows * wide);
        b.k = fp_arena_take(&ar, F * tT * kvd);
        b.v = fp_arena_take(&ar, F * tT * kvd);
        b.gate = fp_arena_take(&ar, F * gate_cap);
        b.up = up_cap > (size_t)rows * wide ? fp_arena_take(&ar, F * up_cap) : NULL; /* else q (fwd_chunk) */
        b.cos_t = fp_arena_take(&ar, F * tT * half);
        b.sin_t = fp_arena_take(&ar, F * tT * half);
        b.rowpos = fp_arena_take(&ar, I * tT);
        if (positions) {
            b.qcos = fp_arena_take(&ar, F * (size_t)npos * half);
            b.qsin = fp_arena_take(&ar, F * (size_t)npos * half);
            b.xs = fp_arena_take(&ar, F * (size_t)rows * H);
        }
        if (seg_off) {
            b.tokpos = fp_arena_take(&ar, I * tT);
            b.kst = fp_arena_take(&ar, I * tT);
            if (positions) b.qkst = fp_arena_take(&ar, I * (size_t)npos);
        }
    }
    if (ar.used > ar.size) { /* the two passes disagree: fp_arena_take recorded the error */
        rc = FP_EINVAL;
        goto done;
    }
    b.gate_cap = gate_cap, b.up_cap = b.up ? up_cap : (size_t)rows * wide, b.mlp_chunk = chunk;
    b.xn_bytes = sizeof(float) * (size_t)rows * wide;

    int saved_threads = omp_get_max_threads();
    if (m->nthreads > 0) omp_set_num_threads(m->nthreads);

    double lap_t = m->prof ? fp_now() : 0;
    /* Embeddings: x[t] = embed[ids[t]] */
    fp_model_embed_rows(m, ids, T, b.x);

    for (int t = 0; t < T; t++) b.rowpos[t] = t;
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

    /* Layer by layer, and within a layer chunk by chunk of rows in order: a chunk's queries see only keys of
     * its own and earlier rows, which exist by then, so only K and V ([T,kvd]) and the residual stream span the
     * whole sequence; the normed rows, q and the MLP activations exist for one chunk at a time. */
    const int step = balanced_step(T, rows);
    for (int l = 0; l < NL && !rc; l++) {
        const fp_layer *y = &m->layers[l];
        int sub = positions && l == NL - 1; /* last layer: only the requested rows */
        for (int r0 = 0; r0 < T && !rc; r0 += step) {
            int n = T - r0 < step ? T - r0 : step;
            float *kr = b.k + (size_t)r0 * kvd, *vr = b.v + (size_t)r0 * kvd;
            /* fast precision on AMX: the norm straight into bf16 tiles in xn's storage (its time counts as qkv) */
            if (fp_model_norm_qkv_tiles(m, y, sub ? NULL : b.q, kr, vr, b.x + (size_t)r0 * H, (uint16_t *)b.xn,
                                        b.xn_bytes, n)) {
                fp_rmsnorm_forward(b.xn, b.x + (size_t)r0 * H, y->in_norm, eps, n, H); /* [n,H] */
                LAP(FP_PROFILE_RMSNORM);
                fp_model_qkv(m, y, sub ? NULL : b.q, kr, vr, b.xn, n); /* [n,qd], [n,kvd] x 2 */
            }
            LAP(FP_PROFILE_QKV);
            if (y->q_norm) {
                if (!sub) fp_rmsnorm_forward(b.q, b.q, y->q_norm, eps, n * nh, d);
                fp_rmsnorm_forward(kr, kr, y->k_norm, eps, n * nkv, d);
                LAP(FP_PROFILE_RMSNORM);
            }
            const float *cr = b.cos_t + (size_t)r0 * half, *sr = b.sin_t + (size_t)r0 * half;
            fp_rope_forward(kr, cr, sr, n, nkv, d);
            if (!sub) fp_rope_forward(b.q, cr, sr, n, nh, d);
            LAP(FP_PROFILE_ROPE);
            if (sub) continue;
            rc = fwd_chunk(m, y, &b, b.x + (size_t)r0 * H, b.rowpos + r0, b.kst ? b.kst + r0 : NULL, n, r0 + n);
            if (m->prof) lap_t = fp_now(); /* fwd_chunk timed itself */
        }
        if (!sub) continue;
        /* the requested rows of the last layer, in chunks: gather, norm, q, then as above; final norm -> out */
        const int qstep = balanced_step(npos, rows);
        for (int i0 = 0; i0 < npos && !rc; i0 += qstep) {
            int n = npos - i0 < qstep ? npos - i0 : qstep;
            for (int i = 0; i < n; i++)
                memcpy(b.xs + (size_t)i * H, b.x + (size_t)positions[i0 + i] * H, sizeof(float) * H);
            fp_rmsnorm_forward(b.xn, b.xs, y->in_norm, eps, n, H);
            LAP(FP_PROFILE_RMSNORM);
            matmul(m, b.q, b.xn, y->q_w, y->q_b, n); /* [n,qd] */
            LAP(FP_PROFILE_QKV);
            if (y->q_norm) {
                fp_rmsnorm_forward(b.q, b.q, y->q_norm, eps, n * nh, d);
                LAP(FP_PROFILE_RMSNORM);
            }
            fp_rope_forward(b.q, b.qcos + (size_t)i0 * half, b.qsin + (size_t)i0 * half, n, nh, d);
            LAP(FP_PROFILE_ROPE);
            if ((rc = fwd_chunk(m, y, &b, b.xs, positions + i0, b.qkst ? b.qkst + i0 : NULL, n, T))) break;
            if (m->prof) lap_t = fp_now();
            fp_rmsnorm_forward(out + (size_t)i0 * H, b.xs, m->final_norm, eps, n, H);
            LAP(FP_PROFILE_RMSNORM);
        }
    }
    if (!rc && !positions) {
        if (m->prof) lap_t = fp_now();
        fp_rmsnorm_forward(out, b.x, m->final_norm, eps, T, H); /* in place (b.x == out) */
        LAP(FP_PROFILE_RMSNORM);
    }
    if (m->nthreads > 0) omp_set_num_threads(saved_threads);
done:
    fp_arena_unmap(&ar);
    return rc;
}
