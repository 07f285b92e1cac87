/* The fp_weights container shared by every checkpoint reader (safetensors, GGUF, torch zip): a list of named
 * tensors plus the mappings and buffers that back their data, with a hash index for lookup by name. */
#include "base/base.h"
#include "model/weights.h"
#include <stdlib.h>
#include <string.h>

struct fp_weights {
    fp_tensor *t;
    size_t n, cap;
    size_t *index; /* open addressing: slot -> tensor index + 1 (0 = empty) */
    size_t index_cap;
    fp_mmap *maps;
    size_t nmaps;
    void **bufs;
    size_t nbufs;
};

static uint64_t name_hash(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

fp_weights *fp_weights_new(void) { return fp_calloc(1, sizeof(fp_weights)); }

static int index_rebuild(fp_weights *w, size_t cap) {
    size_t *idx = fp_calloc(cap, sizeof *idx);
    if (!idx) return FP_ENOMEM;
    for (size_t i = 0; i < w->n; i++) {
        size_t s = (size_t)(name_hash(w->t[i].name) & (cap - 1));
        while (idx[s]) s = (s + 1) & (cap - 1);
        idx[s] = i + 1;
    }
    free(w->index);
    w->index = idx;
    w->index_cap = cap;
    return FP_OK;
}

const fp_tensor *fp_weights_get(const fp_weights *w, const char *name) {
    if (!w || !name || !w->index_cap) return NULL;
    size_t s = (size_t)(name_hash(name) & (w->index_cap - 1));
    while (w->index[s]) {
        const fp_tensor *t = &w->t[w->index[s] - 1];
        if (!strcmp(t->name, name)) return t;
        s = (s + 1) & (w->index_cap - 1);
    }
    return NULL;
}

int fp_weights_add(fp_weights *w, const char *name, fp_dtype dt, int ndim, const int64_t *shape,
                   const void *data, size_t nbytes) {
    if (!w || !name) return fp_errorf(FP_EINVAL, "fp_weights_add: NULL argument");
    if (ndim < 0 || ndim > FP_MAX_DIMS)
        return fp_errorf(FP_EUNSUPPORTED, "tensor %s: %d dimensions (at most %d supported)", name, ndim, FP_MAX_DIMS);
    if (fp_weights_get(w, name)) return fp_errorf(FP_EPARSE, "tensor %s: duplicate name", name);
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        fp_tensor *t = fp_realloc(w->t, cap * sizeof *t);
        if (!t) return FP_ENOMEM;
        w->t = t;
        w->cap = cap;
    }
    fp_tensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    t->name = fp_strdup(name);
    if (!t->name) return FP_ENOMEM;
    t->dtype = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->data = data;
    t->nbytes = nbytes;
    w->n++;
    if (w->n * 2 > w->index_cap) {
        if (index_rebuild(w, w->index_cap ? w->index_cap * 2 : 128)) { free(t->name); w->n--; return FP_ENOMEM; }
    } else {
        size_t s = (size_t)(name_hash(name) & (w->index_cap - 1));
        while (w->index[s]) s = (s + 1) & (w->index_cap - 1);
        w->index[s] = w->n;
    }
    return FP_OK;
}

int fp_weights_adopt_mmap(fp_weights *w, fp_mmap *m) {
    fp_mmap *maps = fp_realloc(w->maps, (w->nmaps + 1) * sizeof *maps);
    if (!maps) return FP_ENOMEM;
    w->maps = maps;
    w->maps[w->nmaps++] = *m;
    m->data = NULL;
    m->size = 0;
    return FP_OK;
}

int fp_weights_adopt_buffer(fp_weights *w, void *buf) {
    void **b = fp_realloc(w->bufs, (w->nbufs + 1) * sizeof *b);
    if (!b) return FP_ENOMEM;
    w->bufs = b;
    w->bufs[w->nbufs++] = buf;
    return FP_OK;
}

int fp_weights_file_span(const fp_weights *w, const void *p, size_t n, int *fd, uint64_t *offset) {
    for (size_t i = 0; w && i < w->nmaps; i++) {
        const char *b = w->maps[i].data, *c = p;
        if (b && w->maps[i].fd >= 0 && c >= b && n <= w->maps[i].size && (size_t)(c - b) <= w->maps[i].size - n) {
            *fd = w->maps[i].fd;
            *offset = (uint64_t)(c - b);
            return 1;
        }
    }
    return 0;
}

size_t fp_weights_count(const fp_weights *w) { return w ? w->n : 0; }

const fp_tensor *fp_weights_at(const fp_weights *w, size_t i) { return w && i < w->n ? &w->t[i] : NULL; }

void fp_weights_free(fp_weights *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n; i++) free(w->t[i].name);
    free(w->t);
    free(w->index);
    for (size_t i = 0; i < w->nmaps; i++) fp_mmap_close(&w->maps[i]);
    free(w->maps);
    for (size_t i = 0; i < w->nbufs; i++) free(w->bufs[i]);
    free(w->bufs);
    free(w);
}
