/* `fluxprm curate` building blocks: encoder Φ, per-record embedding cache + similarity callback, seeded
 * streaming reservoir of negatives, per-record step targets.  See curate.h and docs/reward.md. */
#include "reward/curate.h"
#include "format/format.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ encoder */

struct fp_encoder {
    fp_model *model;
    fp_tokenizer *tok;
    int pooling, max_tokens;
    size_t dim;
    fp_encoder_stats st;
};

void fp_encoder_opts_default(fp_encoder_opts *o) {
    memset(o, 0, sizeof *o);
    o->pooling = FP_POOL_LAST;
}

int fp_encoder_open(fp_encoder **out, const fp_encoder_opts *o) {
    *out = NULL;
    if (!o || !o->model_path) return fp_errorf(FP_EINVAL, "encoder: no model path");
    if (o->pooling != FP_POOL_LAST && o->pooling != FP_POOL_MEAN)
        return fp_errorf(FP_EINVAL, "encoder: unknown pooling %d", o->pooling);
    if (o->max_tokens < 0) return fp_errorf(FP_EINVAL, "encoder: max_tokens must be >= 0");
    fp_encoder *e = fp_calloc(1, sizeof *e);
    if (!e) return FP_ENOMEM;
    int rc = fp_model_load(&e->model, o->model_path);
    if (rc) { free(e); return fp_error_prefix("encoder: "); }
    rc = fp_tokenizer_load(&e->tok, o->tokenizer_path ? o->tokenizer_path : o->model_path);
    if (rc) { fp_model_free(e->model); free(e); return fp_error_prefix("encoder tokenizer: "); }
    fp_model_info info;
    fp_model_get_info(e->model, &info);
    e->dim = (size_t)info.hidden_size;
    e->pooling = o->pooling;
    e->max_tokens = o->max_tokens ? o->max_tokens : info.max_position_embeddings;
    if (e->max_tokens <= 0) e->max_tokens = 32768;
    if (o->threads > 0) fp_model_set_threads(e->model, o->threads);
    *out = e;
    return FP_OK;
}

void fp_encoder_free(fp_encoder *e) {
    if (!e) return;
    fp_model_free(e->model);
    fp_tokenizer_free(e->tok);
    free(e);
}

size_t fp_encoder_dim(const fp_encoder *e) { return e->dim; }

void fp_encoder_get_stats(const fp_encoder *e, fp_encoder_stats *s) { *s = e->st; }

int fp_encoder_embed(void *encoder, const char *text, float *out) {
    fp_encoder *e = encoder;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = fp_tokenizer_encode(e->tok, text, strlen(text), &ids, &n);
    if (rc) return fp_error_prefix("encoder: ");
    if (n == 0) { free(ids); return fp_errorf(FP_EINVAL, "encoder: text has no tokens"); }
    if (n > (size_t)e->max_tokens) { n = (size_t)e->max_tokens; e->st.truncated++; }
    rc = fp_model_embed(e->model, ids, (int)n, e->pooling, out);
    free(ids);
    if (rc) return fp_error_prefix("encoder: ");
    e->st.texts++;
    e->st.tokens += (long)n;
    return FP_OK;
}

/* ------------------------------------------------------------------ embedding cache */

typedef struct {
    char *text;   /* NULL = empty slot */
    uint64_t h;
    size_t row;
} cache_slot;

struct fp_embed_cache {
    size_t dim;
    fp_embed_fn fn;
    void *ctx;
    cache_slot *slots;
    size_t cap, used;    /* open addressing, cap a power of two */
    float *rows;
    size_t rows_cap;
    long hits, misses;
    int err;
    char *err_msg;
};

static uint64_t hash_text(const char *s) { /* FNV-1a 64 */
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

int fp_embed_cache_new(fp_embed_cache **out, size_t dim, fp_embed_fn fn, void *ctx) {
    *out = NULL;
    if (!dim || !fn) return fp_errorf(FP_EINVAL, "embedding cache: dim 0 or no embed function");
    fp_embed_cache *c = fp_calloc(1, sizeof *c);
    if (!c) return FP_ENOMEM;
    c->dim = dim;
    c->fn = fn;
    c->ctx = ctx;
    c->cap = 64;
    c->slots = fp_calloc(c->cap, sizeof *c->slots);
    if (!c->slots) { free(c); return FP_ENOMEM; }
    *out = c;
    return FP_OK;
}

void fp_embed_cache_clear(fp_embed_cache *c) {
    for (size_t i = 0; i < c->cap; i++) {
        free(c->slots[i].text);
        c->slots[i].text = NULL;
    }
    c->used = 0;
    c->err = FP_OK;
    free(c->err_msg);
    c->err_msg = NULL;
}

void fp_embed_cache_free(fp_embed_cache *c) {
    if (!c) return;
    fp_embed_cache_clear(c);
    free(c->slots);
    free(c->rows);
    free(c);
}

int fp_embed_cache_error(const fp_embed_cache *c) { return c->err; }
const char *fp_embed_cache_error_message(const fp_embed_cache *c) { return c->err_msg ? c->err_msg : ""; }

void fp_embed_cache_stats(const fp_embed_cache *c, long *hits, long *misses) {
    if (hits) *hits = c->hits;
    if (misses) *misses = c->misses;
}

static int cache_grow(fp_embed_cache *c) {
    size_t nc = c->cap * 2;
    cache_slot *ns = fp_calloc(nc, sizeof *ns);
    if (!ns) return FP_ENOMEM;
    for (size_t i = 0; i < c->cap; i++) {
        if (!c->slots[i].text) continue;
        size_t k = (size_t)c->slots[i].h & (nc - 1);
        while (ns[k].text) k = (k + 1) & (nc - 1);
        ns[k] = c->slots[i];
    }
    free(c->slots);
    c->slots = ns;
    c->cap = nc;
    return FP_OK;
}

/* The row of text's embedding, embedding it on a miss.  Rows may move when the table grows: callers keep
 * row numbers, not pointers, across calls. */
static int cache_row(fp_embed_cache *c, const char *text, size_t *row) {
    uint64_t h = hash_text(text);
    size_t k = (size_t)h & (c->cap - 1);
    while (c->slots[k].text) {
        if (c->slots[k].h == h && !strcmp(c->slots[k].text, text)) {
            c->hits++;
            *row = c->slots[k].row;
            return FP_OK;
        }
        k = (k + 1) & (c->cap - 1);
    }
    c->misses++;
    if (c->used == c->rows_cap) {
        size_t nr = c->rows_cap ? 2 * c->rows_cap : 32;
        float *rows = fp_realloc(c->rows, nr * c->dim * sizeof *rows);
        if (!rows) return FP_ENOMEM;
        c->rows = rows;
        c->rows_cap = nr;
    }
    float *dst = c->rows + c->used * c->dim;
    int rc = c->fn(c->ctx, text, dst);
    if (rc) {
        if (!c->err) {
            c->err = rc;
            c->err_msg = fp_strdup(fp_last_error());
        }
        return rc;
    }
    char *copy = fp_strdup(text);
    if (!copy) return FP_ENOMEM;
    c->slots[k] = (cache_slot){copy, h, c->used};
    *row = c->used++;
    if (c->used * 2 > c->cap && cache_grow(c)) return FP_ENOMEM; /* the entry is in; growth failed */
    return FP_OK;
}

int fp_embed_cache_get(fp_embed_cache *c, const char *text, const float **out) {
    size_t row;
    *out = NULL;
    int rc = cache_row(c, text, &row);
    if (rc) return rc;
    *out = c->rows + row * c->dim;
    return FP_OK;
}

double fp_embed_similarity(const char *a, const char *b, void *cache) {
    fp_embed_cache *c = cache;
    size_t ra, rb;
    if (cache_row(c, a, &ra) || cache_row(c, b, &rb)) return 0;
    return fp_cosine(c->rows + ra * c->dim, c->rows + rb * c->dim, c->dim);
}

int fp_curate_align(fp_embed_cache *c, char **thinking, size_t T, char **response, size_t M, char ***merged,
                    size_t *n_merged, size_t **group_start) {
    *merged = NULL;
    *group_start = NULL;
    *n_merged = 0;
    if (T > M && M > 0) {
        int rc = fp_align_thinking(thinking, T, response, M, fp_embed_similarity, c, merged, n_merged, group_start);
        if (rc) return rc;
        if (c->err) {
            fp_free_strings(*merged, *n_merged);
            free(*group_start);
            *merged = NULL;
            *group_start = NULL;
            *n_merged = 0;
            return fp_errorf(c->err, "%s", fp_embed_cache_error_message(c));
        }
        return FP_OK;
    }
    char **m = fp_calloc(T + 1, sizeof *m);
    size_t *g = fp_calloc(T + 1, sizeof *g);
    if (!m || !g) { free(m); free(g); return FP_ENOMEM; }
    for (size_t i = 0; i < T; i++) {
        g[i] = i;
        if (!(m[i] = fp_strdup(thinking[i]))) { fp_free_strings(m, i); free(g); return FP_ENOMEM; }
    }
    *merged = m;
    *n_merged = T;
    *group_start = g;
    return FP_OK;
}

/* ------------------------------------------------------------------ reservoir */

struct fp_reservoir {
    size_t cap, dim;
    uint64_t seed, seen;
    float *rows;
};

int fp_reservoir_new(fp_reservoir **out, size_t cap, size_t dim, uint64_t seed) {
    *out = NULL;
    if (!dim) return fp_errorf(FP_EINVAL, "reservoir: dim 0");
    fp_reservoir *r = fp_calloc(1, sizeof *r);
    if (!r) return FP_ENOMEM;
    r->cap = cap;
    r->dim = dim;
    r->seed = seed;
    if (cap && !(r->rows = fp_calloc(cap * dim, sizeof *r->rows))) { free(r); return FP_ENOMEM; }
    *out = r;
    return FP_OK;
}

void fp_reservoir_free(fp_reservoir *r) {
    if (!r) return;
    free(r->rows);
    free(r);
}

long fp_reservoir_offer(fp_reservoir *r) {
    uint64_t n = r->seen++;
    if (!r->cap) return -1;
    if (n < r->cap) return (long)n;
    fp_rng g;
    fp_rng_seed(&g, r->seed, FP_RESERVOIR_STREAM, n);
    uint64_t j = fp_rng_below(&g, n + 1);
    return j < r->cap ? (long)j : -1;
}

void fp_reservoir_put(fp_reservoir *r, size_t slot, const float *v) {
    if (slot < r->cap) memcpy(r->rows + slot * r->dim, v, r->dim * sizeof *v);
}

void fp_reservoir_add(fp_reservoir *r, const float *rows, size_t n) {
    for (size_t i = 0; i < n; i++) {
        long s = fp_reservoir_offer(r);
        if (s >= 0) fp_reservoir_put(r, (size_t)s, rows + i * r->dim);
    }
}

size_t fp_reservoir_size(const fp_reservoir *r) { return r->seen < r->cap ? (size_t)r->seen : r->cap; }
uint64_t fp_reservoir_seen(const fp_reservoir *r) { return r->seen; }
const float *fp_reservoir_rows(const fp_reservoir *r) { return r->rows; }

/* ------------------------------------------------------------------ step targets */

int fp_curate_step_targets(const fp_reservoir *res, const fp_curate_coh_opts *o, uint64_t record, const float *steps,
                           size_t T, const float *question, const float *response, size_t M, const double *qual,
                           fp_step_reward *out, double *raw_align, double *raw_coh, int *coh_skipped) {
    if (!res || !o || (T && (!steps || !out)) || !question || (M && !response))
        return fp_errorf(FP_EINVAL, "curate targets: NULL argument");
    size_t d = res->dim, R = fp_reservoir_size(res), K = o->k_neg;
    int use_coh = K > 0 && R >= K;
    if (coh_skipped) *coh_skipped = !use_coh;
    if (use_coh && !(o->tau > 0 && isfinite(o->tau)))
        return fp_errorf(FP_EINVAL, "curate targets: temperature must be > 0 (got %g)", o->tau);
    size_t *idx = use_coh ? fp_malloc(K * sizeof *idx) : NULL;
    float *negs = use_coh ? fp_malloc(K * d * sizeof *negs) : NULL;
    if (use_coh && (!idx || !negs)) { free(idx); free(negs); return FP_ENOMEM; }
    int rc = FP_OK;
    for (size_t t = 0; t < T && rc == FP_OK; t++) {
        const float *st = steps + t * d;
        const float *prev = t ? steps + (t - 1) * d : question;
        double align = t < M ? fp_cosine(st, response + t * d, d) : NAN;
        double coh = NAN;
        if (use_coh) {
            rc = fp_reward_sample_negatives(o->seed, record, t + 1, R + T, R, R + T, K, idx);
            if (rc) break;
            for (size_t j = 0; j < K; j++) memcpy(negs + j * d, res->rows + idx[j] * d, d * sizeof *negs);
            rc = fp_reward_coherence(prev, st, negs, K, d, o->tau, &coh);
            if (rc) break;
        }
        fp_reward_step(align, coh, qual ? qual[t] : NAN, &out[t]);
        if (raw_align) raw_align[t] = align;
        if (raw_coh) raw_coh[t] = coh;
    }
    free(idx);
    free(negs);
    return rc ? fp_error_prefix("record %llu: ", (unsigned long long)record) : FP_OK;
}
