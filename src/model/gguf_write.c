/* GGUF v3 writer: metadata in call order, tensor infos with data offsets aligned to 32, written atomically. */
#include "model/gguf.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *key;
    fp_buf val; /* u32 type + serialized value */
} wkv;

typedef struct {
    char *name;
    uint32_t type;
    int ndim;
    int64_t ne[FP_MAX_DIMS];
    const void *data;
    void *owned;
    size_t nbytes;
    const fp_tensor *src; /* converted at write time when not NULL */
    fp_dtype target;
} wtensor;

struct fp_gguf_writer {
    wkv *kv;
    size_t nkv, capkv;
    wtensor *t;
    size_t nt, capt;
};

#define ALIGN 32

fp_gguf_writer *fp_gguf_writer_new(void) { return fp_calloc(1, sizeof(fp_gguf_writer)); }

void fp_gguf_writer_free(fp_gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->nkv; i++) { free(w->kv[i].key); fp_buf_free(&w->kv[i].val); }
    for (size_t i = 0; i < w->nt; i++) { free(w->t[i].name); free(w->t[i].owned); }
    free(w->kv);
    free(w->t);
    free(w);
}

static int put_u32(fp_buf *b, uint32_t v) { return fp_buf_append(b, &v, 4); }
static int put_u64(fp_buf *b, uint64_t v) { return fp_buf_append(b, &v, 8); }
static int put_str(fp_buf *b, const char *s, size_t n) { return put_u64(b, n) || fp_buf_append(b, s, n) ? FP_ENOMEM : FP_OK; }

static fp_buf *new_kv(fp_gguf_writer *w, const char *key, uint32_t type) {
    for (size_t i = 0; i < w->nkv; i++)
        if (!strcmp(w->kv[i].key, key)) { fp_errorf(FP_EINVAL, "gguf writer: duplicate metadata key %s", key); return NULL; }
    if (w->nkv == w->capkv) {
        size_t cap = w->capkv ? w->capkv * 2 : 32;
        wkv *a = fp_realloc(w->kv, cap * sizeof *a);
        if (!a) return NULL;
        w->kv = a;
        w->capkv = cap;
    }
    wkv *e = &w->kv[w->nkv];
    memset(e, 0, sizeof *e);
    e->key = fp_strdup(key);
    if (!e->key || put_u32(&e->val, type)) { free(e->key); fp_buf_free(&e->val); return NULL; }
    w->nkv++;
    return &e->val;
}

int fp_gguf_set_string(fp_gguf_writer *w, const char *key, const char *val) {
    fp_buf *b = new_kv(w, key, FP_GGUF_STRING);
    return !b ? fp_last_error_code() : put_str(b, val, strlen(val));
}
int fp_gguf_set_u32(fp_gguf_writer *w, const char *key, uint32_t val) {
    fp_buf *b = new_kv(w, key, FP_GGUF_U32);
    return !b ? fp_last_error_code() : put_u32(b, val);
}
int fp_gguf_set_i32(fp_gguf_writer *w, const char *key, int32_t val) {
    fp_buf *b = new_kv(w, key, FP_GGUF_I32);
    return !b ? fp_last_error_code() : fp_buf_append(b, &val, 4);
}
int fp_gguf_set_f32(fp_gguf_writer *w, const char *key, float val) {
    fp_buf *b = new_kv(w, key, FP_GGUF_F32);
    return !b ? fp_last_error_code() : fp_buf_append(b, &val, 4);
}
int fp_gguf_set_bool(fp_gguf_writer *w, const char *key, int val) {
    fp_buf *b = new_kv(w, key, FP_GGUF_BOOL);
    uint8_t v = val ? 1 : 0;
    return !b ? fp_last_error_code() : fp_buf_append(b, &v, 1);
}
int fp_gguf_set_string_array(fp_gguf_writer *w, const char *key, const char *const *vals, size_t n) {
    fp_buf *b = new_kv(w, key, FP_GGUF_ARRAY);
    if (!b) return fp_last_error_code();
    if (put_u32(b, FP_GGUF_STRING) || put_u64(b, n)) return FP_ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (put_str(b, vals[i], strlen(vals[i]))) return FP_ENOMEM;
    return FP_OK;
}
int fp_gguf_set_i32_array(fp_gguf_writer *w, const char *key, const int32_t *vals, size_t n) {
    fp_buf *b = new_kv(w, key, FP_GGUF_ARRAY);
    if (!b) return fp_last_error_code();
    return put_u32(b, FP_GGUF_I32) || put_u64(b, n) || fp_buf_append(b, vals, n * 4) ? FP_ENOMEM : FP_OK;
}

int fp_gguf_add_tensor(fp_gguf_writer *w, const char *name, uint32_t type, int ndim, const int64_t *shape,
                       const void *data, size_t nbytes, int copy) {
    if (ndim < 1 || ndim > FP_MAX_DIMS) return fp_errorf(FP_EINVAL, "gguf writer: tensor %s: %d dimensions", name, ndim);
    for (size_t i = 0; i < w->nt; i++)
        if (!strcmp(w->t[i].name, name)) return fp_errorf(FP_EINVAL, "gguf writer: duplicate tensor %s", name);
    if (w->nt == w->capt) {
        size_t cap = w->capt ? w->capt * 2 : 64;
        wtensor *a = fp_realloc(w->t, cap * sizeof *a);
        if (!a) return FP_ENOMEM;
        w->t = a;
        w->capt = cap;
    }
    wtensor *t = &w->t[w->nt];
    memset(t, 0, sizeof *t);
    t->name = fp_strdup(name);
    if (!t->name) return FP_ENOMEM;
    t->type = type;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) t->ne[d] = shape[ndim - 1 - d];
    t->nbytes = nbytes;
    t->data = data;
    if (copy) {
        t->owned = fp_malloc(nbytes ? nbytes : 1);
        if (!t->owned) { free(t->name); return FP_ENOMEM; }
        memcpy(t->owned, data, nbytes);
        t->data = t->owned;
    }
    w->nt++;
    return FP_OK;
}

static size_t pad_to(size_t x) { return (ALIGN - x % ALIGN) % ALIGN; }

static int64_t row_len(const fp_tensor *t) { return t->ndim ? t->shape[t->ndim - 1] : 1; }

int fp_gguf_add_tensor_convert(fp_gguf_writer *w, const char *name, fp_dtype target, const fp_tensor *src) {
    int64_t shape[FP_MAX_DIMS] = {1}, numel = 1, ne0 = row_len(src);
    int ndim = src->ndim ? src->ndim : 1;
    for (int d = 0; d < src->ndim; d++) { shape[d] = src->shape[d]; numel *= src->shape[d]; }
    if (fp_dtype_row_bytes(src->dtype, numel) != src->nbytes && (src->dtype != FP_Q8_0 && src->dtype != FP_Q4_0))
        return fp_errorf(FP_EINVAL, "tensor %s: %zu bytes for %lld elements of %s", src->name, src->nbytes, (long long)numel,
                         fp_dtype_name(src->dtype));
    if ((src->dtype == FP_Q8_0 || src->dtype == FP_Q4_0 || target == FP_Q8_0 || target == FP_Q4_0) && ne0 % 32)
        return fp_errorf(FP_EINVAL, "tensor %s: rows of %lld elements cannot be %s blocks of 32", src->name, (long long)ne0,
                         fp_dtype_name(target));
    int rc = fp_gguf_add_tensor(w, name, fp_dtype_to_ggml(target), ndim, shape, NULL, 0, 0);
    if (rc) return rc;
    wtensor *t = &w->t[w->nt - 1];
    t->src = src;
    t->target = target;
    t->nbytes = fp_dtype_row_bytes(target, ne0) * (size_t)(ne0 ? numel / ne0 : 0);
    return FP_OK;
}

/* Row by row: stored dtype -> f32 -> target (bytes copied unchanged when the dtypes agree). */
static int write_converted(FILE *f, const wtensor *t) {
    const fp_tensor *s = t->src;
    int64_t ne0 = row_len(s), rows = 1;
    for (int d = 0; d + 1 < s->ndim; d++) rows *= s->shape[d];
    if (!ne0) return FP_OK;
    size_t in_row = fp_dtype_row_bytes(s->dtype, ne0), out_row = fp_dtype_row_bytes(t->target, ne0);
    if (s->dtype == t->target) {
        if (fwrite(s->data, 1, s->nbytes, f) != s->nbytes) return fp_errorf(FP_EIO, "write failed: %s", strerror(errno));
        return FP_OK;
    }
    float *tmp = fp_malloc((size_t)ne0 * sizeof(float));
    void *out = fp_malloc(out_row);
    int rc = FP_OK;
    if (!tmp || !out) rc = FP_ENOMEM;
    for (int64_t r = 0; r < rows && !rc; r++) {
        fp_row_to_f32(tmp, (const uint8_t *)s->data + (size_t)r * in_row, s->dtype, ne0);
        fp_quantize_row(out, tmp, t->target, ne0);
        if (fwrite(out, 1, out_row, f) != out_row) rc = fp_errorf(FP_EIO, "write failed: %s", strerror(errno));
    }
    free(tmp);
    free(out);
    return rc;
}

int fp_gguf_writer_write(fp_gguf_writer *w, const char *path) {
    int has_align = 0;
    for (size_t i = 0; i < w->nkv; i++) has_align |= !strcmp(w->kv[i].key, "general.alignment");
    if (!has_align) {
        int rc = fp_gguf_set_u32(w, "general.alignment", ALIGN);
        if (rc) return rc;
    }
    fp_buf head = {0};
    int rc = FP_ENOMEM;
    if (fp_buf_append(&head, "GGUF", 4) || put_u32(&head, 3) || put_u64(&head, w->nt) || put_u64(&head, w->nkv)) goto fail;
    for (size_t i = 0; i < w->nkv; i++)
        if (put_str(&head, w->kv[i].key, strlen(w->kv[i].key)) || fp_buf_append(&head, w->kv[i].val.data, w->kv[i].val.len)) goto fail;
    size_t off = 0;
    for (size_t i = 0; i < w->nt; i++) {
        wtensor *t = &w->t[i];
        if (put_str(&head, t->name, strlen(t->name)) || put_u32(&head, (uint32_t)t->ndim)) goto fail;
        for (int d = 0; d < t->ndim; d++)
            if (put_u64(&head, (uint64_t)t->ne[d])) goto fail;
        if (put_u32(&head, t->type) || put_u64(&head, off)) goto fail;
        off += t->nbytes + pad_to(t->nbytes);
    }
    static const char zeros[ALIGN];
    if (fp_buf_append(&head, zeros, pad_to(head.len))) goto fail;
    fp_outfile *o;
    if ((rc = fp_outfile_open(&o, path, 0))) goto fail;
    FILE *f = fp_outfile_stream(o);
    int bad = fwrite(head.data, 1, head.len, f) != head.len;
    for (size_t i = 0; i < w->nt && !bad; i++) {
        const wtensor *t = &w->t[i];
        if (t->src) {
            if ((rc = write_converted(f, t))) { fp_outfile_abort(o); goto fail; }
        } else bad = fwrite(t->data, 1, t->nbytes, f) != t->nbytes;
        if (!bad) bad = fwrite(zeros, 1, pad_to(t->nbytes), f) != pad_to(t->nbytes);
    }
    if (bad) {
        rc = fp_errorf(FP_EIO, "%s: write failed: %s", path, strerror(errno));
        fp_outfile_abort(o);
        goto fail;
    }
    rc = fp_outfile_commit(o);
fail:
    fp_buf_free(&head);
    return rc;
}
