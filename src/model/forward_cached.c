/* The Qwen2/Qwen3 forward with a KV cache: appends T tokens at positions n..n+T-1 of a cached sequence (a
 * chunked prefill, or T = 1 for one decode step; both run this same code) and reads the final hidden states
 * (and optionally LM-head logits) of requested new rows.  Per layer it is the prefill of forward.c with the
 * keys and values written into the cache and attention run over cache rows 0..n+T-1:
 *   x = embed[ids]; per layer: xn = rmsnorm(x); K,V rows n..n+T-1 of the cache = xn W^T + b (+ k-norm, rope);
 *   q = xn Wq^T (+ q-norm, rope at positions n+t); x += attention(q, cache K, cache V) Wo^T; x += MLP(x)
 * The last layer runs queries, attention and MLP only for the requested rows (none: it only fills K and V). */
#include "model/model.h"
#include "tensor/ops.h"
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define CACHED_CHUNK 2048            /* longer appends run in chunks of this many tokens */

static void matmul(const fp_model *m, float *out, const float *inp, const fp_tensor *w, const float *bias, int T) {
    fp_model_linear(m, out, inp, w, bias, T); /* w: [N, K] */
}

/* One append of T <= CACHED_CHUNK tokens; out[nrows,H] final normed hidden states of rows (local indices).
 * nseg > 1: ids holds nseg independent continuations of the cached sequence (segment s = rows seg_off[s] ..
 * seg_off[s+1]-1, positions restarting at c->n); each attends to the cache and to its own rows only, and the
 * cache keeps its length (segment s's keys and values occupy cache rows n.. only while its attention runs).
 * Then rows must be sorted (rows of one segment are contiguous). */
static int forward_chunk(fp_model *m, fp_kv_cache *c, const int32_t *ids, int T, const int *seg_off, int nseg,
                         const int *rows, int nrows, float *out) {
    const fp_model_config *cf = &m->cfg;
    const int H = cf->hidden_size, nh = cf->num_heads, nkv = cf->num_kv_heads,
              d = cf->head_dim, half = d / 2, NL = cf->num_layers;
    const int qd = nh * d, kvd = nkv * d, wide = qd > H ? qd : H, p0 = c->n;
    const float eps = (float)cf->rms_norm_eps;
    int maxlen = T;
    if (nseg > 1) {
        maxlen = 0;
        for (int g = 0; g < nseg; g++)
            if (seg_off[g + 1] - seg_off[g] > maxlen) maxlen = seg_off[g + 1] - seg_off[g];
    }
    int rc = fp_kv_cache_reserve(c, p0 + maxlen);
    if (rc) return rc;
    const int mlp_rows = fp_model_mlp_chunk_rows(m); /* the prefill's MLP chunk (forward.c) */
    int chunk = T < mlp_rows ? T : mlp_rows;
    const int nr = nrows > 0 ? nrows : 1;
    const size_t gate_cap = fp_model_mlp_gate_floats(m, chunk), up_cap = fp_model_mlp_up_floats(m, chunk);
    size_t tT = (size_t)T, F = sizeof(float), tq = (size_t)(T > nr ? T : nr);
    /* one arena for the call (fp_arena: planned, mapped, unmapped at the end, as in forward.c) */
    fp_arena ar = {0};
    float *x, *xn, *q, *gate, *up, *cos_t, *sin_t, *qcos, *qsin, *xs, *kb = NULL, *vb = NULL;
    int *pos, *rpos, *rfirst = NULL;
    for (int pass = 0; pass < 2; pass++) {
        if (pass && (rc = fp_arena_map(&ar))) return rc;
        x = fp_arena_take(&ar, F * tT * H);
        /* xn and q also hold the requested rows of the last layer, which may repeat rows (nrows > T) */
        xn = fp_arena_take(&ar, F * tq * wide);
        q = fp_arena_take(&ar, F * tq * wide);
        gate = fp_arena_take(&ar, F * gate_cap);
        up = fp_arena_take(&ar, F * up_cap);
        cos_t = fp_arena_take(&ar, F * tT * half);
        sin_t = fp_arena_take(&ar, F * tT * half);
        qcos = fp_arena_take(&ar, F * (size_t)nr * half);
        qsin = fp_arena_take(&ar, F * (size_t)nr * half);
        xs = fp_arena_take(&ar, F * (size_t)nr * H);
        pos = fp_arena_take(&ar, sizeof(int) * tT);
        rpos = fp_arena_take(&ar, sizeof(int) * (size_t)nr);
        /* branches: their new keys/values [T, kvd] (copied into the cache segment by segment); the first
         * requested row of each segment (rfirst[nseg] = nrows) */
        if (nseg > 1) {
            kb = fp_arena_take(&ar, F * tT * kvd);
            vb = fp_arena_take(&ar, F * tT * kvd);
            rfirst = fp_arena_take(&ar, sizeof(int) * (size_t)(nseg + 1));
        }
    }
    if (ar.used > ar.size) { /* the two passes disagree: fp_arena_take recorded the error */
        rc = FP_EINVAL;
        goto done;
    }
    int saved_threads = omp_get_max_threads();
    if (m->nthreads > 0) omp_set_num_threads(m->nthreads);

    fp_model_embed_rows(m, ids, T, x);
    if (nseg > 1) {
        for (int g = 0, r = 0; g < nseg; g++) {
            for (int t = seg_off[g]; t < seg_off[g + 1]; t++) pos[t] = p0 + t - seg_off[g];
            while (r < nrows && rows[r] < seg_off[g]) r++;
            rfirst[g] = r;
        }
        rfirst[nseg] = nrows;
    } else {
        for (int t = 0; t < T; t++) pos[t] = p0 + t;
    }
    fp_rope_tables(cos_t, sin_t, m->inv_freq, pos, T, d);
    for (int i = 0; i < nrows; i++) {
        rpos[i] = pos[rows[i]];
        memcpy(qcos + (size_t)i * half, cos_t + (size_t)rows[i] * half, sizeof(float) * half);
        memcpy(qsin + (size_t)i * half, sin_t + (size_t)rows[i] * half, sizeof(float) * half);
    }

    for (int l = 0; l < NL; l++) {
        const fp_layer *y = &m->layers[l];
        int sub = l == NL - 1, nq = sub ? nrows : T;
        float *k = nseg > 1 ? kb : c->k[l] + (size_t)p0 * kvd, *v = nseg > 1 ? vb : c->v[l] + (size_t)p0 * kvd;
        /* the last layer reads the normed rows again below: f32 rows there; else the norm may go straight into
         * bf16 tiles (fast precision on AMX; the same values) */
        if (sub || fp_model_norm_qkv_tiles(m, y, q, k, v, x, (uint16_t *)xn, F * tq * wide, T)) {
            fp_rmsnorm_forward(xn, x, y->in_norm, eps, T, H);
            fp_model_qkv(m, y, sub ? NULL : q, k, v, xn, T); /* q of every row with k and v in one pass */
        }
        if (y->k_norm) fp_rmsnorm_forward(k, k, y->k_norm, eps, T * nkv, d);
        fp_rope_forward(k, cos_t, sin_t, T, nkv, d);
        if (nq == 0) break; /* last layer, nothing to read: K and V are all the cache needs */
        if (sub) {
            for (int i = 0; i < nrows; i++) memcpy(xs + (size_t)i * H, xn + (size_t)rows[i] * H, sizeof(float) * H);
            matmul(m, q, xs, y->q_w, y->q_b, nrows);
        }
        if (y->q_norm) fp_rmsnorm_forward(q, q, y->q_norm, eps, nq * nh, d);
        fp_rope_forward(q, sub ? qcos : cos_t, sub ? qsin : sin_t, nq, nh, d);
        if (nseg == 1) {
            rc = fp_attention_forward_ex(!m->fast, xn, q, c->k[l], c->v[l], sub ? rpos : pos, NULL, nq, p0 + T, nh, nkv, d);
        } else { /* each branch over the cache + its own keys, written after the cached rows */
            for (int g = 0; g < nseg && !rc; g++) {
                int a = seg_off[g], len = seg_off[g + 1] - a, q0 = sub ? rfirst[g] : a;
                int nqg = sub ? rfirst[g + 1] - rfirst[g] : len;
                if (nqg == 0) continue;
                memcpy(c->k[l] + (size_t)p0 * kvd, kb + (size_t)a * kvd, sizeof(float) * (size_t)len * kvd);
                memcpy(c->v[l] + (size_t)p0 * kvd, vb + (size_t)a * kvd, sizeof(float) * (size_t)len * kvd);
                rc = fp_attention_forward_ex(!m->fast, xn + (size_t)q0 * qd, q + (size_t)q0 * qd, c->k[l], c->v[l],
                                          (sub ? rpos : pos) + q0, NULL, nqg, p0 + len, nh, nkv, d);
            }
        }
        if (rc) {
            rc = fp_errorf(FP_ENOMEM, "cached forward: out of memory (attention scratch)");
            break;
        }
        matmul(m, q, xn, y->o_w, NULL, nq);
        float *xr = x;
        if (sub) {
            for (int i = 0; i < nrows; i++) memcpy(xs + (size_t)i * H, x + (size_t)rows[i] * H, sizeof(float) * H);
            xr = xs;
        }
        fp_add_forward(xr, q, (size_t)nq * H);
        if ((rc = fp_model_mlp_block(m, y, xr, xn, gate, gate_cap, up, up_cap, nq, chunk))) break;
        if (sub) fp_rmsnorm_forward(out, xs, m->final_norm, eps, nrows, H);
    }
    if (m->nthreads > 0) omp_set_num_threads(saved_threads);
    if (!rc && nseg == 1) c->n = p0 + T;
done:
    fp_arena_unmap(&ar);
    return rc;
}

int fp_model_forward_cached(fp_model *m, fp_kv_cache *c, const int32_t *ids, int T, const int *rows, int nrows,
                            float *hidden, float *logits) {
    if (!m || !c || !ids || (nrows > 0 && !rows)) return fp_errorf(FP_EINVAL, "cached forward: NULL argument");
    if (c->m != m) return fp_errorf(FP_EINVAL, "cached forward: the KV cache belongs to another model");
    const fp_model_config *cf = &m->cfg;
    if (T <= 0) return fp_errorf(FP_EINVAL, "cached forward: no tokens (T = %d)", T);
    if (nrows < 0) return fp_errorf(FP_EINVAL, "cached forward: nrows = %d", nrows);
    if (c->n + (long)T > c->max_tokens)
        return fp_errorf(FP_ERANGE, "cached forward: %d + %d tokens exceed the KV cache's max_tokens %d", c->n, T,
                         c->max_tokens);
    for (int t = 0; t < T; t++)
        if (ids[t] < 0 || ids[t] >= cf->vocab_size)
            return fp_errorf(FP_EINVAL, "cached forward: token id %d at position %d is outside the vocabulary [0, %d)",
                             (int)ids[t], c->n + t, cf->vocab_size);
    for (int i = 0; i < nrows; i++)
        if (rows[i] < 0 || rows[i] >= T)
            return fp_errorf(FP_EINVAL, "cached forward: row %d (index %d) outside the new tokens [0, %d)", rows[i], i, T);
    const fp_tensor *lm = m->lm_head ? m->lm_head : cf->tie_word_embeddings ? m->embed : NULL;
    if (logits && nrows > 0 && !lm)
        return fp_errorf(FP_ESTATE, "model (%s) has no LM head (lm_head.weight or tied embeddings)", cf->architecture);
    const int H = cf->hidden_size, p_start = c->n;
    float *h = hidden;
    if (!h && nrows > 0 && !(h = fp_malloc(sizeof(float) * (size_t)nrows * H))) return FP_ENOMEM;
    int rc = FP_OK;
    if (T <= CACHED_CHUNK) {
        rc = forward_chunk(m, c, ids, T, NULL, 1, rows, nrows, h);
    } else { /* chunked prefill: each chunk reads out the requested rows that fall in it */
        int *lr = fp_malloc(sizeof(int) * (size_t)(nrows > 0 ? nrows : 1)),
            *slot = fp_malloc(sizeof(int) * (size_t)(nrows > 0 ? nrows : 1));
        float *hb = fp_malloc(sizeof(float) * (size_t)(nrows > 0 ? nrows : 1) * H);
        if (!lr || !slot || !hb) rc = FP_ENOMEM;
        for (int t0 = 0; !rc && t0 < T; t0 += CACHED_CHUNK) {
            int n = T - t0 < CACHED_CHUNK ? T - t0 : CACHED_CHUNK, k = 0;
            for (int i = 0; i < nrows; i++)
                if (rows[i] >= t0 && rows[i] < t0 + n) lr[k] = rows[i] - t0, slot[k++] = i;
            rc = forward_chunk(m, c, ids + t0, n, NULL, 1, lr, k, hb);
            for (int j = 0; !rc && j < k; j++) memcpy(h + (size_t)slot[j] * H, hb + (size_t)j * H, sizeof(float) * H);
        }
        free(lr); free(slot); free(hb);
    }
    if (rc) c->n = p_start;
    if (!rc && logits && nrows > 0) fp_model_linear(m, logits, h, lm, NULL, nrows);
    if (h != hidden) free(h);
    return rc;
}

static int cmp_row(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return x < y ? -1 : x > y;
}

int fp_model_forward_branches(fp_model *m, fp_kv_cache *c, const int32_t *ids, const int *seg_off, int nseg,
                              const int *rows, int nrows, float *hidden) {
    if (!m || !c || !ids || !seg_off || (nrows > 0 && (!rows || !hidden)))
        return fp_errorf(FP_EINVAL, "branch forward: NULL argument");
    if (c->m != m) return fp_errorf(FP_EINVAL, "branch forward: the KV cache belongs to another model");
    if (nseg < 1 || seg_off[0] != 0) return fp_errorf(FP_EINVAL, "branch forward: bad segment offsets");
    int T = seg_off[nseg], maxlen = 0;
    for (int g = 0; g < nseg; g++) {
        int len = seg_off[g + 1] - seg_off[g];
        if (len <= 0) return fp_errorf(FP_EINVAL, "branch forward: empty branch %d", g);
        if (len > maxlen) maxlen = len;
    }
    if (T > CACHED_CHUNK && nseg > 1)
        return fp_errorf(FP_ERANGE, "branch forward: %d tokens in one pass (at most %d)", T, CACHED_CHUNK);
    if (c->n + (long)maxlen > c->max_tokens)
        return fp_errorf(FP_ERANGE, "branch forward: %d + %d tokens exceed the KV cache's max_tokens %d", c->n, maxlen,
                         c->max_tokens);
    if (nrows < 0) return fp_errorf(FP_EINVAL, "branch forward: nrows = %d", nrows);
    for (int t = 0; t < T; t++)
        if (ids[t] < 0 || ids[t] >= m->cfg.vocab_size)
            return fp_errorf(FP_EINVAL, "branch forward: token id %d at row %d is outside the vocabulary [0, %d)",
                             (int)ids[t], t, m->cfg.vocab_size);
    for (int i = 0; i < nrows; i++)
        if (rows[i] < 0 || rows[i] >= T)
            return fp_errorf(FP_EINVAL, "branch forward: row %d (index %d) outside [0, %d)", rows[i], i, T);
    if (nseg == 1) { /* one branch: an append, then forget it */
        int n0 = c->n, rc = fp_model_forward_cached(m, c, ids, T, rows, nrows, hidden, NULL);
        if (!rc) rc = fp_kv_cache_truncate(c, n0);
        return rc;
    }
    /* the pass wants the read-out rows sorted (grouped by branch): sort (row, index) pairs, scatter back */
    const int H = m->cfg.hidden_size, nr = nrows > 0 ? nrows : 1;
    int *pairs = fp_malloc(sizeof(int) * 2 * (size_t)nr), *sorted = fp_malloc(sizeof(int) * (size_t)nr);
    float *h = fp_malloc(sizeof(float) * (size_t)nr * H);
    int rc = pairs && sorted && h ? FP_OK : FP_ENOMEM;
    if (!rc) {
        for (int i = 0; i < nrows; i++) pairs[2 * i] = rows[i], pairs[2 * i + 1] = i;
        qsort(pairs, (size_t)nrows, 2 * sizeof(int), cmp_row);
        for (int i = 0; i < nrows; i++) sorted[i] = pairs[2 * i];
        rc = forward_chunk(m, c, ids, T, seg_off, nseg, sorted, nrows, h);
    }
    for (int i = 0; !rc && i < nrows; i++)
        memcpy(hidden + (size_t)pairs[2 * i + 1] * H, h + (size_t)i * H, sizeof(float) * H);
    free(pairs); free(sorted); free(h);
    return rc;
}

int fp_model_decode_batch(fp_model *m, fp_kv_cache *const *caches, const int32_t *ids, int nseq, float *hidden,
                          float *logits) {
    if (!m || !caches || !ids || nseq < 1) return fp_errorf(FP_EINVAL, "batched decode: NULL argument or nseq < 1");
    const fp_model_config *cf = &m->cfg;
    const fp_tensor *lm = m->lm_head ? m->lm_head : cf->tie_word_embeddings ? m->embed : NULL;
    if (logits && !lm)
        return fp_errorf(FP_ESTATE, "model (%s) has no LM head (lm_head.weight or tied embeddings)", cf->architecture);
    for (int s = 0; s < nseq; s++) {
        if (!caches[s] || caches[s]->m != m) return fp_errorf(FP_EINVAL, "batched decode: cache %d is NULL or of another model", s);
        if (caches[s]->n + 1 > caches[s]->max_tokens)
            return fp_errorf(FP_ERANGE, "batched decode: cache %d is full (%d tokens)", s, caches[s]->max_tokens);
        if (ids[s] < 0 || ids[s] >= cf->vocab_size)
            return fp_errorf(FP_EINVAL, "batched decode: token id %d of sequence %d is outside the vocabulary [0, %d)",
                             (int)ids[s], s, cf->vocab_size);
        for (int r = 0; r < s; r++)
            if (caches[r] == caches[s]) return fp_errorf(FP_EINVAL, "batched decode: cache %d appears twice", s);
    }
    for (int s = 0; s < nseq; s++) {
        int rc = fp_kv_cache_reserve(caches[s], caches[s]->n + 1);
        if (rc) return rc;
    }
    const int H = cf->hidden_size, I = cf->intermediate_size, nh = cf->num_heads, nkv = cf->num_kv_heads,
              d = cf->head_dim, half = d / 2, NL = cf->num_layers;
    const int qd = nh * d, kvd = nkv * d, wide = qd > H ? qd : H, gate_cols = I > H ? I : H;
    const float eps = (float)cf->rms_norm_eps;
    size_t n = (size_t)nseq;
    float *x = fp_malloc(sizeof(float) * n * H), *xn = fp_malloc(sizeof(float) * n * wide),
          *q = fp_malloc(sizeof(float) * n * wide), *k = fp_malloc(sizeof(float) * n * kvd),
          *v = fp_malloc(sizeof(float) * n * kvd), *gate = fp_malloc(sizeof(float) * n * gate_cols),
          *up = fp_malloc(sizeof(float) * n * gate_cols), *cos_t = fp_malloc(sizeof(float) * n * half),
          *sin_t = fp_malloc(sizeof(float) * n * half), *h = hidden ? hidden : fp_malloc(sizeof(float) * n * H);
    int *pos = fp_malloc(sizeof(int) * n), rc = FP_OK;
    if (!x || !xn || !q || !k || !v || !gate || !up || !cos_t || !sin_t || !h || !pos) {
        rc = fp_errorf(FP_ENOMEM, "batched decode: out of memory for %d sequences", nseq);
        goto done;
    }
    int saved_threads = omp_get_max_threads();
    if (m->nthreads > 0) omp_set_num_threads(m->nthreads);
    fp_model_embed_rows(m, ids, nseq, x);
    for (int s = 0; s < nseq; s++) pos[s] = caches[s]->n;
    fp_rope_tables(cos_t, sin_t, m->inv_freq, pos, nseq, d);
    for (int l = 0; l < NL && !rc; l++) {
        const fp_layer *y = &m->layers[l];
        if (fp_model_norm_qkv_tiles(m, y, q, k, v, x, (uint16_t *)xn, sizeof(float) * n * wide, nseq)) {
            fp_rmsnorm_forward(xn, x, y->in_norm, eps, nseq, H);
            fp_model_qkv(m, y, q, k, v, xn, nseq);
        }
        if (y->k_norm) fp_rmsnorm_forward(k, k, y->k_norm, eps, nseq * nkv, d);
        if (y->q_norm) fp_rmsnorm_forward(q, q, y->q_norm, eps, nseq * nh, d);
        fp_rope_forward(k, cos_t, sin_t, nseq, nkv, d);
        fp_rope_forward(q, cos_t, sin_t, nseq, nh, d);
        for (int s = 0; s < nseq && !rc; s++) { /* each sequence: its new K/V row, then attention over its cache */
            fp_kv_cache *c = caches[s];
            memcpy(c->k[l] + (size_t)pos[s] * kvd, k + (size_t)s * kvd, sizeof(float) * kvd);
            memcpy(c->v[l] + (size_t)pos[s] * kvd, v + (size_t)s * kvd, sizeof(float) * kvd);
            if (fp_attention_forward_ex(!m->fast, xn + (size_t)s * qd, q + (size_t)s * qd, c->k[l], c->v[l], &pos[s], NULL, 1,
                                     pos[s] + 1, nh, nkv, d))
                rc = fp_errorf(FP_ENOMEM, "batched decode: out of memory (attention scratch)");
        }
        if (rc) break;
        matmul(m, q, xn, y->o_w, NULL, nseq);
        fp_add_forward(x, q, n * H);
        if ((rc = fp_model_mlp_block(m, y, x, xn, gate, (size_t)n * gate_cols, up, (size_t)n * gate_cols, nseq, nseq))) break;
    }
    if (!rc) {
        fp_rmsnorm_forward(h, x, m->final_norm, eps, nseq, H);
        if (logits) fp_model_linear(m, logits, h, lm, NULL, nseq);
        for (int s = 0; s < nseq; s++) caches[s]->n = pos[s] + 1;
    }
    if (m->nthreads > 0) omp_set_num_threads(saved_threads);
done:
    free(x); free(xn); free(q); free(k); free(v); free(gate); free(up); free(cos_t); free(sin_t); free(pos);
    if (h != hidden) free(h);
    return rc;
}
