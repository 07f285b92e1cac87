/* GGUF v3 reader: header, metadata, tensor infos (all bounds-checked), llama.cpp <-> HF tensor names, and the
 * model hyper-parameters from qwen2.* / qwen3.* keys. */
#include "model/gguf.h"
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    fp_gguf_str key;
    int type;
    int elem_type;   /* arrays */
    uint64_t count;  /* arrays */
    size_t off;      /* value (for arrays: first element) */
} kv_entry;

/* Duplicate detection in O(n): open addressing over string views. */
typedef struct {
    const fp_gguf_str **slot;
    size_t cap;
} strset;

struct fp_gguf {
    strset seen; /* during parsing */
    char *name;
    const uint8_t *buf;
    size_t size;
    fp_mmap map; /* when opened from a path */
    uint32_t version;
    size_t alignment;
    size_t data_start; /* file offset of the tensor data (after the metadata and the tensor table) */
    kv_entry *kv;
    size_t nkv;
    fp_gguf_tensor *t;
    size_t nt;
};

static uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

static const size_t scalar_size[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *fp_gguf_type_name(uint32_t type) {
    static const char *names[] = {"F32", "F16", "Q4_0", "Q4_1", "type 4", "type 5", "Q5_0", "Q5_1", "Q8_0", "Q8_1",
                                  "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS",
                                  "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64",
                                  "IQ1_M", "BF16", "type 31", "type 32", "type 33", "TQ1_0", "TQ2_0", "type 36",
                                  "type 37", "type 38", "MXFP4"};
    if (type < sizeof names / sizeof *names) return names[type];
    static _Thread_local char buf[32];
    snprintf(buf, sizeof buf, "type %u", type);
    return buf;
}

int fp_dtype_from_ggml(uint32_t t) {
    switch (t) {
    case FP_GGML_F32: return FP_F32;
    case FP_GGML_F16: return FP_F16;
    case FP_GGML_BF16: return FP_BF16;
    case FP_GGML_Q8_0: return FP_Q8_0;
    case FP_GGML_Q4_0: return FP_Q4_0;
    }
    return -1;
}

uint32_t fp_dtype_to_ggml(fp_dtype t) {
    switch (t) {
    case FP_F32: return FP_GGML_F32;
    case FP_F16: return FP_GGML_F16;
    case FP_BF16: return FP_GGML_BF16;
    case FP_Q8_0: return FP_GGML_Q8_0;
    case FP_Q4_0: return FP_GGML_Q4_0;
    }
    return FP_GGML_F32;
}

/* ------------------------------------------------------------------ parsing */
typedef struct {
    fp_gguf *g;
    size_t pos;
} cursor;

static int need(cursor *c, size_t n, const char *what) {
    if (c->g->size - c->pos < n)
        return fp_errorf(FP_EPARSE, "%s: truncated at offset %zu (reading %s)", c->g->name, c->pos, what);
    return FP_OK;
}

static int read_str(cursor *c, fp_gguf_str *s, const char *what) {
    int rc = need(c, 8, what);
    if (rc) return rc;
    uint64_t n = rd64(c->g->buf + c->pos);
    c->pos += 8;
    if (n > c->g->size - c->pos)
        return fp_errorf(FP_EPARSE, "%s: %s: string of %" PRIu64 " bytes at offset %zu runs past the end of the file",
                         c->g->name, what, n, c->pos - 8);
    s->s = (const char *)c->g->buf + c->pos;
    s->len = (size_t)n;
    c->pos += (size_t)n;
    return FP_OK;
}

/* Skips one value of type `type`, checking bounds (nested arrays up to depth 4). */
static int skip_value(cursor *c, int type, int depth, const char *key) {
    if (type < 0 || type > FP_GGUF_F64)
        return fp_errorf(FP_EPARSE, "%s: key %s: unknown value type %d", c->g->name, key, type);
    if (type == FP_GGUF_STRING) {
        fp_gguf_str s;
        return read_str(c, &s, key);
    }
    if (type == FP_GGUF_ARRAY) {
        if (depth >= 4) return fp_errorf(FP_EUNSUPPORTED, "%s: key %s: arrays nested too deeply", c->g->name, key);
        int rc = need(c, 12, key);
        if (rc) return rc;
        int et = (int)rd32(c->g->buf + c->pos);
        uint64_t n = rd64(c->g->buf + c->pos + 4);
        c->pos += 12;
        if (et < 0 || et > FP_GGUF_F64) return fp_errorf(FP_EPARSE, "%s: key %s: unknown array element type %d", c->g->name, key, et);
        if (et != FP_GGUF_STRING && et != FP_GGUF_ARRAY) {
            if (n > (c->g->size - c->pos) / scalar_size[et])
                return fp_errorf(FP_EPARSE, "%s: key %s: array of %" PRIu64 " elements runs past the end of the file", c->g->name, key, n);
            c->pos += (size_t)n * scalar_size[et];
            return FP_OK;
        }
        if (n > (c->g->size - c->pos) / 8)
            return fp_errorf(FP_EPARSE, "%s: key %s: array of %" PRIu64 " elements runs past the end of the file", c->g->name, key, n);
        for (uint64_t i = 0; i < n; i++)
            if ((rc = skip_value(c, et, depth + 1, key))) return rc;
        return FP_OK;
    }
    return need(c, scalar_size[type], key) ? FP_EPARSE : (c->pos += scalar_size[type], FP_OK);
}

static int str_eq(fp_gguf_str s, const char *z) { return strlen(z) == s.len && !memcmp(s.s, z, s.len); }

static int strset_init(strset *h, size_t n) {
    h->cap = 16;
    while (h->cap < 2 * n + 2) h->cap *= 2;
    h->slot = fp_calloc(h->cap, sizeof *h->slot);
    return h->slot ? FP_OK : FP_ENOMEM;
}

/* Returns 1 when s was already present. */
static int strset_add(strset *h, const fp_gguf_str *s) {
    uint64_t x = 1469598103934665603ull;
    for (size_t i = 0; i < s->len; i++) x = (x ^ (uint8_t)s->s[i]) * 1099511628211ull;
    size_t i = (size_t)x & (h->cap - 1);
    while (h->slot[i]) {
        if (h->slot[i]->len == s->len && !memcmp(h->slot[i]->s, s->s, s->len)) return 1;
        i = (i + 1) & (h->cap - 1);
    }
    h->slot[i] = s;
    return 0;
}

static int parse(fp_gguf *g) {
    cursor c = {g, 0};
    int rc = need(&c, 24, "header");
    if (rc) return rc;
    if (memcmp(g->buf, "GGUF", 4)) return fp_errorf(FP_EPARSE, "%s: not a GGUF file (bad magic)", g->name);
    g->version = rd32(g->buf + 4);
    if (g->version != 3 && g->version != 2)
        return fp_errorf(FP_EUNSUPPORTED, "%s: GGUF version %u (only 2 and 3 are supported)", g->name, g->version);
    uint64_t nt = rd64(g->buf + 8), nkv = rd64(g->buf + 16);
    c.pos = 24;
    /* each KV takes at least 8+4+1 bytes, each tensor info at least 8+4+4+8 */
    if (nkv > (g->size - c.pos) / 13) return fp_errorf(FP_EPARSE, "%s: %" PRIu64 " metadata pairs cannot fit in the file", g->name, nkv);
    if (nt > (g->size - c.pos) / 24) return fp_errorf(FP_EPARSE, "%s: %" PRIu64 " tensors cannot fit in the file", g->name, nt);
    g->kv = fp_calloc(nkv ? nkv : 1, sizeof *g->kv);
    g->t = fp_calloc(nt ? nt : 1, sizeof *g->t);
    if (!g->kv || !g->t) return FP_ENOMEM;
    g->alignment = FP_GGUF_DEFAULT_ALIGNMENT;
    if (strset_init(&g->seen, (size_t)nkv)) return FP_ENOMEM;
    for (uint64_t i = 0; i < nkv; i++) {
        kv_entry *e = &g->kv[i];
        char what[48];
        snprintf(what, sizeof what, "metadata key %" PRIu64, i);
        if ((rc = read_str(&c, &e->key, what))) return rc;
        char key[256];
        snprintf(key, sizeof key, "%.*s", (int)(e->key.len < 200 ? e->key.len : 200), e->key.s);
        if (strset_add(&g->seen, &e->key)) return fp_errorf(FP_EPARSE, "%s: duplicate metadata key %s", g->name, key);
        if ((rc = need(&c, 4, key))) return rc;
        e->type = (int)rd32(g->buf + c.pos);
        c.pos += 4;
        if (e->type == FP_GGUF_ARRAY) {
            if ((rc = need(&c, 12, key))) return rc;
            e->elem_type = (int)rd32(g->buf + c.pos);
            e->count = rd64(g->buf + c.pos + 4);
            e->off = c.pos + 12;
        } else e->off = c.pos;
        g->nkv++;
        if ((rc = skip_value(&c, e->type, 0, key))) return rc;
        if (str_eq(e->key, "general.alignment")) {
            uint32_t a = e->type == FP_GGUF_U32 ? rd32(g->buf + e->off) : 0;
            if (a == 0 || (a & (a - 1)) || a > (1u << 16))
                return fp_errorf(FP_EPARSE, "%s: general.alignment must be a u32 power of two (at most 65536)", g->name);
            g->alignment = a;
        }
    }
    free(g->seen.slot);
    if (strset_init(&g->seen, (size_t)nt)) return FP_ENOMEM;
    uint64_t *offs = fp_calloc(nt ? nt : 1, sizeof *offs);
    if (!offs) return FP_ENOMEM;
    for (uint64_t i = 0; i < nt; i++) {
        fp_gguf_tensor *t = &g->t[i];
        char what[48];
        snprintf(what, sizeof what, "tensor info %" PRIu64, i);
        if ((rc = read_str(&c, &t->name, what))) break;
        char nm[160];
        snprintf(nm, sizeof nm, "%.*s", (int)(t->name.len < 128 ? t->name.len : 128), t->name.s);
        if (t->name.len == 0 || memchr(t->name.s, 0, t->name.len)) { rc = fp_errorf(FP_EPARSE, "%s: tensor %" PRIu64 ": bad name", g->name, i); break; }
        if ((rc = need(&c, 4, nm))) break;
        uint32_t nd = rd32(g->buf + c.pos);
        c.pos += 4;
        if (nd == 0 || nd > FP_MAX_DIMS) { rc = fp_errorf(FP_EPARSE, "%s: tensor %s: %u dimensions (1..%d)", g->name, nm, nd, FP_MAX_DIMS); break; }
        t->ndim = (int)nd;
        if ((rc = need(&c, 8 * (size_t)nd + 12, nm))) break;
        uint64_t numel = 1;
        for (uint32_t d = 0; d < nd; d++) {
            uint64_t ne = rd64(g->buf + c.pos + 8 * d);
            if (ne > INT64_MAX || (ne && numel > UINT64_MAX / 64 / ne)) { rc = fp_errorf(FP_EPARSE, "%s: tensor %s: dimension %u too large", g->name, nm, d); break; }
            t->ne[d] = (int64_t)ne;
            numel *= ne;
        }
        if (rc) break;
        c.pos += 8 * (size_t)nd;
        t->type = rd32(g->buf + c.pos);
        offs[i] = rd64(g->buf + c.pos + 4);
        c.pos += 12;
        if (strset_add(&g->seen, &t->name)) { rc = fp_errorf(FP_EPARSE, "%s: duplicate tensor name %s", g->name, nm); break; }
        g->nt++;
        int dt = fp_dtype_from_ggml(t->type);
        if (dt < 0) continue; /* sized later by no one: fp_weights_from_gguf reports it */
        if ((dt == FP_Q8_0 || dt == FP_Q4_0) && t->ne[0] % 32) {
            rc = fp_errorf(FP_EPARSE, "%s: tensor %s: %s row of %" PRId64 " elements is not a multiple of 32", g->name, nm,
                           fp_gguf_type_name(t->type), t->ne[0]);
            break;
        }
        t->nbytes = fp_dtype_row_bytes((fp_dtype)dt, t->ne[0]) * (size_t)(t->ne[0] ? numel / (uint64_t)t->ne[0] : 0);
    }
    if (!rc) {
        size_t a = g->alignment, data_start = c.pos + (a - c.pos % a) % a;
        if (data_start > g->size && g->nt) rc = fp_errorf(FP_EPARSE, "%s: truncated before the tensor data", g->name);
        g->data_start = data_start;
        for (size_t i = 0; !rc && i < g->nt; i++) {
            fp_gguf_tensor *t = &g->t[i];
            if (offs[i] % a) {
                rc = fp_errorf(FP_EPARSE, "%s: tensor %.*s: offset %" PRIu64 " is not a multiple of the alignment %zu", g->name,
                               (int)t->name.len, t->name.s, offs[i], a);
                break;
            }
            if (fp_dtype_from_ggml(t->type) < 0) continue;
            if (data_start > g->size || offs[i] > g->size - data_start || t->nbytes > g->size - data_start - offs[i]) {
                rc = fp_errorf(FP_EPARSE, "%s: tensor %.*s: %zu bytes at data offset %" PRIu64 " run past the end of the file (truncated?)",
                               g->name, (int)t->name.len, t->name.s, t->nbytes, offs[i]);
                break;
            }
            t->data = g->buf + data_start + offs[i];
        }
    }
    free(offs);
    free(g->seen.slot);
    g->seen.slot = NULL;
    return rc;
}

static int open_common(fp_gguf **out, fp_gguf *g) {
    int rc = parse(g);
    if (rc) { fp_gguf_close(g); return rc; }
    *out = g;
    return FP_OK;
}

int fp_gguf_open_memory(fp_gguf **out, const void *data, size_t size, const char *name) {
    *out = NULL;
    fp_gguf *g = fp_calloc(1, sizeof *g);
    if (!g) return FP_ENOMEM;
    g->name = fp_strdup(name ? name : "<memory>");
    if (!g->name) { free(g); return FP_ENOMEM; }
    g->buf = data;
    g->size = size;
    return open_common(out, g);
}

int fp_gguf_open(fp_gguf **out, const char *path) {
    *out = NULL;
    fp_gguf *g = fp_calloc(1, sizeof *g);
    if (!g) return FP_ENOMEM;
    g->name = fp_strdup(path);
    if (!g->name) { free(g); return FP_ENOMEM; }
    int rc = fp_mmap_open(&g->map, path);
    if (rc) { free(g->name); free(g); return rc; }
    g->buf = g->map.data;
    g->size = g->map.size;
    return open_common(out, g);
}

void fp_gguf_close(fp_gguf *g) {
    if (!g) return;
    fp_mmap_close(&g->map);
    free(g->seen.slot);
    free(g->kv);
    free(g->t);
    free(g->name);
    free(g);
}

uint32_t fp_gguf_version(const fp_gguf *g) { return g->version; }
size_t fp_gguf_alignment(const fp_gguf *g) { return g->alignment; }
size_t fp_gguf_kv_count(const fp_gguf *g) { return g->nkv; }
fp_gguf_str fp_gguf_kv_key(const fp_gguf *g, size_t i) { return i < g->nkv ? g->kv[i].key : (fp_gguf_str){"", 0}; }
size_t fp_gguf_tensor_count(const fp_gguf *g) { return g->nt; }
const fp_gguf_tensor *fp_gguf_tensor_at(const fp_gguf *g, size_t i) { return i < g->nt ? &g->t[i] : NULL; }

long fp_gguf_find(const fp_gguf *g, const char *key) {
    for (size_t i = 0; i < g->nkv; i++)
        if (str_eq(g->kv[i].key, key)) return (long)i;
    return -1;
}

int fp_gguf_kv_type(const fp_gguf *g, size_t i, int *elem_type, uint64_t *count) {
    if (i >= g->nkv) return -1;
    if (elem_type) *elem_type = g->kv[i].type == FP_GGUF_ARRAY ? g->kv[i].elem_type : -1;
    if (count) *count = g->kv[i].type == FP_GGUF_ARRAY ? g->kv[i].count : 1;
    return g->kv[i].type;
}

static const kv_entry *lookup(const fp_gguf *g, const char *key) {
    long i = fp_gguf_find(g, key);
    if (i < 0) { fp_errorf(FP_ERANGE, "%s: metadata key %s missing", g->name, key); return NULL; }
    return &g->kv[i];
}

/* A scalar at p of type ty as int64 / double; returns 0 when ty is not numeric. */
static int scalar_int(const uint8_t *p, int ty, int64_t *v, int *overflow) {
    *overflow = 0;
    switch (ty) {
    case FP_GGUF_U8: case FP_GGUF_BOOL: *v = *p; return 1;
    case FP_GGUF_I8: *v = (int8_t)*p; return 1;
    case FP_GGUF_U16: { uint16_t x; memcpy(&x, p, 2); *v = x; return 1; }
    case FP_GGUF_I16: { int16_t x; memcpy(&x, p, 2); *v = x; return 1; }
    case FP_GGUF_U32: *v = rd32(p); return 1;
    case FP_GGUF_I32: *v = (int32_t)rd32(p); return 1;
    case FP_GGUF_U64: { uint64_t x = rd64(p); *overflow = x > INT64_MAX; *v = (int64_t)x; return 1; }
    case FP_GGUF_I64: *v = (int64_t)rd64(p); return 1;
    }
    return 0;
}

int fp_gguf_get_int(const fp_gguf *g, const char *key, int64_t *out) {
    const kv_entry *e = lookup(g, key);
    if (!e) return FP_ERANGE;
    int ovf;
    if (!scalar_int(g->buf + e->off, e->type, out, &ovf)) return fp_errorf(FP_EPARSE, "%s: metadata %s is not an integer", g->name, key);
    if (ovf) return fp_errorf(FP_EPARSE, "%s: metadata %s overflows int64", g->name, key);
    return FP_OK;
}

int fp_gguf_get_bool(const fp_gguf *g, const char *key, int *out) {
    int64_t v;
    int rc = fp_gguf_get_int(g, key, &v);
    if (!rc) *out = v != 0;
    return rc;
}

int fp_gguf_get_float(const fp_gguf *g, const char *key, double *out) {
    const kv_entry *e = lookup(g, key);
    if (!e) return FP_ERANGE;
    const uint8_t *p = g->buf + e->off;
    if (e->type == FP_GGUF_F32) { float f; memcpy(&f, p, 4); *out = f; return FP_OK; }
    if (e->type == FP_GGUF_F64) { double d; memcpy(&d, p, 8); *out = d; return FP_OK; }
    int64_t v;
    int ovf;
    if (scalar_int(p, e->type, &v, &ovf) && !ovf) { *out = (double)v; return FP_OK; }
    return fp_errorf(FP_EPARSE, "%s: metadata %s is not a number", g->name, key);
}

int fp_gguf_get_string(const fp_gguf *g, const char *key, fp_gguf_str *out) {
    const kv_entry *e = lookup(g, key);
    if (!e) return FP_ERANGE;
    if (e->type != FP_GGUF_STRING) return fp_errorf(FP_EPARSE, "%s: metadata %s is not a string", g->name, key);
    out->len = (size_t)rd64(g->buf + e->off);
    out->s = (const char *)g->buf + e->off + 8;
    return FP_OK;
}

static const kv_entry *lookup_array(const fp_gguf *g, const char *key) {
    const kv_entry *e = lookup(g, key);
    if (e && e->type != FP_GGUF_ARRAY) { fp_errorf(FP_EPARSE, "%s: metadata %s is not an array", g->name, key); return NULL; }
    return e;
}

int fp_gguf_get_string_array(const fp_gguf *g, const char *key, fp_gguf_str **out, size_t *n) {
    *out = NULL;
    *n = 0;
    const kv_entry *e = lookup_array(g, key);
    if (!e) return fp_last_error_code();
    if (e->elem_type != FP_GGUF_STRING) return fp_errorf(FP_EPARSE, "%s: metadata %s is not an array of strings", g->name, key);
    fp_gguf_str *a = fp_malloc(sizeof *a * (size_t)(e->count ? e->count : 1));
    if (!a) return FP_ENOMEM;
    size_t pos = e->off; /* bounds were checked at open */
    for (uint64_t i = 0; i < e->count; i++) {
        a[i].len = (size_t)rd64(g->buf + pos);
        a[i].s = (const char *)g->buf + pos + 8;
        pos += 8 + a[i].len;
    }
    *out = a;
    *n = (size_t)e->count;
    return FP_OK;
}

int fp_gguf_get_int_array(const fp_gguf *g, const char *key, int64_t **out, size_t *n) {
    *out = NULL;
    *n = 0;
    const kv_entry *e = lookup_array(g, key);
    if (!e) return fp_last_error_code();
    int64_t probe;
    int ovf;
    uint8_t zero[8] = {0};
    if (!scalar_int(zero, e->elem_type, &probe, &ovf)) return fp_errorf(FP_EPARSE, "%s: metadata %s is not an array of integers", g->name, key);
    int64_t *a = fp_malloc(sizeof *a * (size_t)(e->count ? e->count : 1));
    if (!a) return FP_ENOMEM;
    size_t es = scalar_size[e->elem_type];
    for (uint64_t i = 0; i < e->count; i++) {
        scalar_int(g->buf + e->off + i * es, e->elem_type, &a[i], &ovf);
        if (ovf) { free(a); return fp_errorf(FP_EPARSE, "%s: metadata %s[%" PRIu64 "] overflows int64", g->name, key, i); }
    }
    *out = a;
    *n = (size_t)e->count;
    return FP_OK;
}

int fp_gguf_get_f32_array(const fp_gguf *g, const char *key, float **out, size_t *n) {
    *out = NULL;
    *n = 0;
    const kv_entry *e = lookup_array(g, key);
    if (!e) return fp_last_error_code();
    if (e->elem_type != FP_GGUF_F32) return fp_errorf(FP_EPARSE, "%s: metadata %s is not an array of f32", g->name, key);
    float *a = fp_malloc(sizeof *a * (size_t)(e->count ? e->count : 1));
    if (!a) return FP_ENOMEM;
    memcpy(a, g->buf + e->off, (size_t)e->count * 4);
    *out = a;
    *n = (size_t)e->count;
    return FP_OK;
}

/* ------------------------------------------------------------------ names */
static const struct { const char *gguf, *hf; } layer_names[] = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},       {"attn_q.bias", "self_attn.q_proj.bias"},
    {"attn_k.weight", "self_attn.k_proj.weight"},       {"attn_k.bias", "self_attn.k_proj.bias"},
    {"attn_v.weight", "self_attn.v_proj.weight"},       {"attn_v.bias", "self_attn.v_proj.bias"},
    {"attn_output.weight", "self_attn.o_proj.weight"},  {"attn_output.bias", "self_attn.o_proj.bias"},
    {"attn_q_norm.weight", "self_attn.q_norm.weight"},  {"attn_k_norm.weight", "self_attn.k_norm.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},        {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
};
static const struct { const char *gguf, *hf; } top_names[] = {
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
    {"cls.output.weight", "score.2.weight"},   {"cls.output.bias", "score.2.bias"},
    {"fluxprm.reward_head.weight", "reward_head.weight"}, {"fluxprm.reward_head.bias", "reward_head.bias"},
};

static int put(char *out, size_t n, const char *fmt, const char *a, long layer, const char *b) {
    int k = layer >= 0 ? snprintf(out, n, fmt, a, layer, b) : snprintf(out, n, fmt, a, b);
    return k < 0 || (size_t)k >= n ? -1 : 0;
}

static long parse_layer(const char *s, const char **rest) {
    if (*s < '0' || *s > '9') return -1;
    long v = 0;
    while (*s >= '0' && *s <= '9') {
        v = v * 10 + (*s++ - '0');
        if (v > 1000000) return -1;
    }
    if (*s != '.') return -1;
    *rest = s + 1;
    return v;
}

int fp_gguf_name_to_hf(const char *name, int prm2_head, char *out, size_t n) {
    if (!strncmp(name, "blk.", 4)) {
        const char *rest;
        long L = parse_layer(name + 4, &rest);
        if (L < 0) return -1;
        for (size_t i = 0; i < sizeof layer_names / sizeof *layer_names; i++)
            if (!strcmp(rest, layer_names[i].gguf)) {
                int k = snprintf(out, n, "model.layers.%ld.%s", L, layer_names[i].hf);
                return k < 0 || (size_t)k >= n ? -1 : 0;
            }
        return -1;
    }
    for (size_t i = 0; i < sizeof top_names / sizeof *top_names; i++)
        if (!strcmp(name, top_names[i].gguf)) return put(out, n, "%s%s", top_names[i].hf, -1, "");
    if (!strcmp(name, "cls.weight")) return put(out, n, "%s%s", prm2_head ? "score.0" : "score", -1, ".weight");
    if (!strcmp(name, "cls.bias")) return put(out, n, "%s%s", prm2_head ? "score.0" : "score", -1, ".bias");
    return -1;
}

int fp_gguf_name_from_hf(const char *name, char *out, size_t n) {
    if (!strncmp(name, "model.layers.", 13)) {
        const char *rest;
        long L = parse_layer(name + 13, &rest);
        if (L < 0) return -1;
        for (size_t i = 0; i < sizeof layer_names / sizeof *layer_names; i++)
            if (!strcmp(rest, layer_names[i].hf)) {
                int k = snprintf(out, n, "blk.%ld.%s", L, layer_names[i].gguf);
                return k < 0 || (size_t)k >= n ? -1 : 0;
            }
        return -1;
    }
    for (size_t i = 0; i < sizeof top_names / sizeof *top_names; i++)
        if (!strcmp(name, top_names[i].hf)) return put(out, n, "%s%s", top_names[i].gguf, -1, "");
    if (!strcmp(name, "score.0.weight") || !strcmp(name, "score.weight")) return put(out, n, "%s%s", "cls.weight", -1, "");
    if (!strcmp(name, "score.0.bias") || !strcmp(name, "score.bias")) return put(out, n, "%s%s", "cls.bias", -1, "");
    return -1;
}

/* ------------------------------------------------------------------ weights + config */
static int opt_int(const fp_gguf *g, const char *arch, const char *suffix, int *out, int required) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int64_t v;
    int rc = fp_gguf_get_int(g, key, &v);
    if (rc == FP_ERANGE && !required) { fp_error_clear(); return FP_OK; }
    if (rc) return rc;
    if (v < 0 || v > INT32_MAX) return fp_errorf(FP_EPARSE, "%s: metadata %s = %" PRId64 " out of range", g->name, key, v);
    *out = (int)v;
    return FP_OK;
}

static int opt_float(const fp_gguf *g, const char *key, double *out) {
    int rc = fp_gguf_get_float(g, key, out);
    if (rc == FP_ERANGE) { fp_error_clear(); return FP_OK; }
    return rc;
}

static int fill_config(const fp_gguf *g, fp_weights *w, fp_model_config *cfg, int prm2) {
    memset(cfg, 0, sizeof *cfg);
    fp_gguf_str arch;
    int rc = fp_gguf_get_string(g, "general.architecture", &arch);
    if (rc) return rc;
    char a[32];
    snprintf(a, sizeof a, "%.*s", (int)(arch.len < 31 ? arch.len : 31), arch.s);
    if (strcmp(a, "qwen2") && strcmp(a, "qwen3"))
        return fp_errorf(FP_EUNSUPPORTED, "%s: general.architecture \"%s\" (qwen2 and qwen3 are supported)", g->name, a);
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", a);
    int qwen3 = !strcmp(a, "qwen3");
    fp_gguf_str hfa;
    if (fp_gguf_get_string(g, "fluxprm.hf_architecture", &hfa) == FP_OK)
        snprintf(cfg->architecture, sizeof cfg->architecture, "%.*s", (int)(hfa.len < 63 ? hfa.len : 63), hfa.s);
    else snprintf(cfg->architecture, sizeof cfg->architecture, "%s", qwen3 ? "Qwen3ForCausalLM" : "Qwen2ForCausalLM");
    fp_error_clear();
    if ((rc = opt_int(g, a, "embedding_length", &cfg->hidden_size, 1)) ||
        (rc = opt_int(g, a, "feed_forward_length", &cfg->intermediate_size, 1)) ||
        (rc = opt_int(g, a, "block_count", &cfg->num_layers, 1)) ||
        (rc = opt_int(g, a, "attention.head_count", &cfg->num_heads, 1)))
        return rc;
    cfg->num_kv_heads = cfg->num_heads;
    cfg->max_position_embeddings = 32768;
    if ((rc = opt_int(g, a, "attention.head_count_kv", &cfg->num_kv_heads, 0)) ||
        (rc = opt_int(g, a, "context_length", &cfg->max_position_embeddings, 0)))
        return rc;
    if (cfg->num_heads <= 0 || cfg->hidden_size <= 0 || cfg->num_kv_heads <= 0 || cfg->num_heads % cfg->num_kv_heads)
        return fp_errorf(FP_EPARSE, "%s: inconsistent head counts (%d heads, %d kv heads, hidden %d)", g->name, cfg->num_heads,
                         cfg->num_kv_heads, cfg->hidden_size);
    cfg->head_dim = cfg->hidden_size / cfg->num_heads;
    if ((rc = opt_int(g, a, "attention.key_length", &cfg->head_dim, 0))) return rc;
    char key[128];
    cfg->rope_theta = 10000.0;
    snprintf(key, sizeof key, "%s.rope.freq_base", a);
    if ((rc = opt_float(g, key, &cfg->rope_theta))) return rc;
    cfg->rms_norm_eps = 1e-6;
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", a);
    if ((rc = opt_float(g, key, &cfg->rms_norm_eps))) return rc;
    if (cfg->num_layers <= 0 || cfg->intermediate_size <= 0 || cfg->head_dim <= 0 || cfg->head_dim % 2 ||
        !(cfg->rope_theta > 0) || !(cfg->rms_norm_eps > 0) || cfg->max_position_embeddings <= 0)
        return fp_errorf(FP_EPARSE, "%s: bad hyper-parameters (%d layers, ffn %d, head_dim %d, rope base %g, eps %g, context %d)",
                         g->name, cfg->num_layers, cfg->intermediate_size, cfg->head_dim, cfg->rope_theta, cfg->rms_norm_eps,
                         cfg->max_position_embeddings);
    const fp_tensor *emb = fp_weights_get(w, "model.embed_tokens.weight");
    if (!emb || emb->ndim != 2) return fp_errorf(FP_EPARSE, "%s: tensor token_embd.weight missing or not 2-D", g->name);
    if (emb->shape[0] <= 0 || emb->shape[0] > INT32_MAX || emb->shape[1] != cfg->hidden_size)
        return fp_errorf(FP_EPARSE, "%s: token_embd.weight is [%lld, %lld], expected [vocab, %d]", g->name,
                         (long long)emb->shape[0], (long long)emb->shape[1], cfg->hidden_size);
    cfg->vocab_size = (int)emb->shape[0];
    cfg->tie_word_embeddings = fp_weights_get(w, "lm_head.weight") == NULL;
    int tie;
    if (fp_gguf_get_bool(g, "fluxprm.tie_word_embeddings", &tie) == FP_OK) cfg->tie_word_embeddings = tie;
    cfg->attention_bias = fp_weights_get(w, "model.layers.0.self_attn.q_proj.bias") != NULL;
    cfg->qk_norm = fp_weights_get(w, "model.layers.0.self_attn.q_norm.weight") != NULL;
    const fp_tensor *cls = fp_weights_get(w, prm2 ? "score.2.weight" : "score.weight");
    cfg->num_labels = cls && cls->ndim >= 1 ? (int)cls->shape[0] : 2;
    cfg->torch_dtype = emb->dtype == FP_BF16 || emb->dtype == FP_F16 ? emb->dtype : FP_F32;
    int64_t v;
    cfg->bos_token_id = cfg->eos_token_id = cfg->pad_token_id = -1;
    if (fp_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &v) == FP_OK) cfg->bos_token_id = (int)v;
    if (fp_gguf_get_int(g, "tokenizer.ggml.eos_token_id", &v) == FP_OK) cfg->eos_token_id = (int)v;
    if (fp_gguf_get_int(g, "tokenizer.ggml.padding_token_id", &v) == FP_OK) cfg->pad_token_id = (int)v;
    fp_error_clear();
    (void)qwen3;
    return FP_OK;
}

int fp_weights_from_gguf(fp_weights **out, fp_model_config *cfg, const fp_gguf *g) {
    *out = NULL;
    fp_weights *w = fp_weights_new();
    if (!w) return FP_ENOMEM;
    int prm2 = 0;
    for (size_t i = 0; i < g->nt; i++)
        if (str_eq(g->t[i].name, "cls.output.weight")) prm2 = 1;
    int rc = FP_OK;
    for (size_t i = 0; i < g->nt && !rc; i++) {
        const fp_gguf_tensor *t = &g->t[i];
        char gname[256], hf[300];
        snprintf(gname, sizeof gname, "%.*s", (int)(t->name.len < 255 ? t->name.len : 255), t->name.s);
        int dt = fp_dtype_from_ggml(t->type);
        if (dt < 0) {
            rc = fp_errorf(FP_EUNSUPPORTED, "%s: tensor %s has type %s (supported: F32, F16, BF16, Q8_0, Q4_0)", g->name, gname,
                           fp_gguf_type_name(t->type));
            break;
        }
        if (fp_gguf_name_to_hf(gname, prm2, hf, sizeof hf)) snprintf(hf, sizeof hf, "%s", gname); /* kept as is */
        int64_t shape[FP_MAX_DIMS];
        for (int d = 0; d < t->ndim; d++) shape[d] = t->ne[t->ndim - 1 - d];
        if ((rc = fp_weights_add(w, hf, (fp_dtype)dt, t->ndim, shape, t->data, t->nbytes))) fp_error_prefix("%s: ", g->name);
    }
    if (!rc && cfg) rc = fill_config(g, w, cfg, prm2);
    if (rc) { fp_weights_free(w); return rc; }
    *out = w;
    return FP_OK;
}

int fp_weights_open_gguf(fp_weights **out, fp_model_config *cfg, const char *path) {
    *out = NULL;
    fp_gguf *g;
    int rc = fp_gguf_open(&g, path);
    if (rc) return rc;
    fp_weights *w;
    rc = fp_weights_from_gguf(&w, cfg, g);
    /* the metadata (mostly the tokenizer's vocabulary and merges, ~6 MB for Qwen2) has been parsed into the
     * config: its pages need not stay resident while the model runs */
    if (!rc) fp_mmap_drop_prefix(&g->map, g->data_start < g->size ? g->data_start : g->size);
    if (!rc && (rc = fp_weights_adopt_mmap(w, &g->map))) { fp_weights_free(w); w = NULL; }
    fp_gguf_close(g); /* the mapping now belongs to w */
    if (!rc) *out = w;
    return rc;
}
