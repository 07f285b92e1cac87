/* KV cache of one sequence: per layer, f32 K (after q/k-norm and RoPE) and V rows, grown on demand. */
#include "model/model.h"
#include <stdlib.h>
#include <string.h>

#define KV_FIRST_CAP 256

static size_t kv_row(const fp_model *m) { return (size_t)m->cfg.num_kv_heads * (size_t)m->cfg.head_dim; }

fp_kv_cache *fp_kv_cache_new(fp_model *m, int max_tokens) {
    if (!m) { fp_errorf(FP_EINVAL, "fp_kv_cache_new: NULL model"); return NULL; }
    if (max_tokens < 1) { fp_errorf(FP_EINVAL, "fp_kv_cache_new: max_tokens = %d", max_tokens); return NULL; }
    fp_kv_cache *c = fp_calloc(1, sizeof *c);
    if (!c) return NULL;
    c->m = m;
    c->max_tokens = max_tokens;
    c->k = fp_calloc((size_t)m->cfg.num_layers, sizeof *c->k);
    c->v = fp_calloc((size_t)m->cfg.num_layers, sizeof *c->v);
    if (!c->k || !c->v) { fp_kv_cache_free(c); return NULL; }
    return c;
}

void fp_kv_cache_free(fp_kv_cache *c) {
    if (!c) return;
    for (int l = 0; c->k && c->v && l < c->m->cfg.num_layers; l++) { free(c->k[l]); free(c->v[l]); }
    free(c->k);
    free(c->v);
    free(c);
}

int fp_kv_cache_len(const fp_kv_cache *c) { return c ? c->n : 0; }
int fp_kv_cache_max_tokens(const fp_kv_cache *c) { return c ? c->max_tokens : 0; }

int fp_kv_cache_reserve(fp_kv_cache *c, int need) {
    if (need <= c->cap) return FP_OK;
    if (need > c->max_tokens)
        return fp_errorf(FP_ERANGE, "KV cache: %d tokens exceed its max_tokens %d", need, c->max_tokens);
    int cap = c->cap ? c->cap : KV_FIRST_CAP;
    while (cap < need) cap = cap > c->max_tokens / 2 ? c->max_tokens : cap * 2;
    if (cap > c->max_tokens) cap = c->max_tokens;
    size_t bytes = sizeof(float) * (size_t)cap * kv_row(c->m);
    for (int l = 0; l < c->m->cfg.num_layers; l++) {
        float *k = fp_realloc(c->k[l], bytes);
        if (!k) return fp_errorf(FP_ENOMEM, "KV cache: out of memory for %d tokens", cap);
        c->k[l] = k;
        float *v = fp_realloc(c->v[l], bytes);
        if (!v) return fp_errorf(FP_ENOMEM, "KV cache: out of memory for %d tokens", cap);
        c->v[l] = v;
    }
    c->cap = cap;
    return FP_OK;
}

int fp_kv_cache_truncate(fp_kv_cache *c, int n) {
    if (!c) return fp_errorf(FP_EINVAL, "fp_kv_cache_truncate: NULL cache");
    if (n < 0 || n > c->n) return fp_errorf(FP_EINVAL, "fp_kv_cache_truncate: %d outside [0, %d]", n, c->n);
    c->n = n;
    return FP_OK;
}

int fp_kv_cache_copy(fp_kv_cache *dst, const fp_kv_cache *src) {
    if (!dst || !src) return fp_errorf(FP_EINVAL, "fp_kv_cache_copy: NULL cache");
    if (dst == src) return FP_OK;
    if (dst->m != src->m) return fp_errorf(FP_EINVAL, "fp_kv_cache_copy: the caches belong to different models");
    int rc = fp_kv_cache_reserve(dst, src->n);
    if (rc) return rc;
    size_t bytes = sizeof(float) * (size_t)src->n * kv_row(src->m);
    for (int l = 0; l < src->m->cfg.num_layers && bytes; l++) {
        memcpy(dst->k[l], src->k[l], bytes);
        memcpy(dst->v[l], src->v[l], bytes);
    }
    dst->n = src->n;
    return FP_OK;
}

fp_kv_cache *fp_kv_cache_fork(const fp_kv_cache *src) {
    if (!src) { fp_errorf(FP_EINVAL, "fp_kv_cache_fork: NULL cache"); return NULL; }
    fp_kv_cache *c = fp_kv_cache_new(src->m, src->max_tokens);
    if (c && fp_kv_cache_copy(c, src)) { fp_kv_cache_free(c); return NULL; }
    return c;
}
