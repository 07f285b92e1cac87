/* torch.save(state_dict) files: a ZIP archive (stored entries) holding data.pkl (pickle protocol 2) and one
 * entry per storage (data/<key>).  Our own ZIP central-directory reader (no zlib: compressed entries are
 * refused) and a minimal pickle interpreter that understands exactly what torch emits for a dict of tensors. */
#include "base/base.h"
#include "model/weights.h"
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ little-endian readers */
static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

/* ------------------------------------------------------------------ ZIP */
typedef struct {
    const char *name;
    size_t name_len;
    int method;
    uint32_t crc;
    uint64_t csize, usize;
    const uint8_t *data; /* csize bytes inside the buffer */
} zentry;

typedef struct {
    const char *path;
    const uint8_t *buf;
    size_t size;
    zentry *e;
    size_t n;
} zarchive;

static uint32_t crc32_buf(const uint8_t *p, size_t n) {
    static uint32_t table[256];
    static int ready;
    if (!ready) { /* benign race: every thread writes the same values */
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        ready = 1;
    }
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

static int zentry_cmp(const void *a, const void *b) {
    const zentry *x = a, *y = b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    return c ? c : (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

static int zip_parse(zarchive *z) {
    const uint8_t *b = z->buf;
    size_t size = z->size;
    if (size < 22) return fp_errorf(FP_EPARSE, "%s: not a zip archive (%zu bytes, truncated?)", z->path, size);
    /* end of central directory: 22 bytes + comment (at most 65535) at the end */
    size_t eocd = (size_t)-1;
    size_t lo = size > 22 + 65535 ? size - 22 - 65535 : 0;
    for (size_t i = size - 22 + 1; i-- > lo;) {
        if (rd32(b + i) == 0x06054b50u && i + 22 + rd16(b + i + 20) <= size) { eocd = i; break; }
    }
    if (eocd == (size_t)-1)
        return fp_errorf(FP_EPARSE, "%s: not a zip archive (no end-of-central-directory record; truncated?)", z->path);
    uint64_t nent = rd16(b + eocd + 10), cd_size = rd32(b + eocd + 12), cd_off = rd32(b + eocd + 16);
    if (nent == 0xffff || cd_size == 0xffffffffu || cd_off == 0xffffffffu) { /* ZIP64 */
        if (eocd < 20 || rd32(b + eocd - 20) != 0x07064b50u)
            return fp_errorf(FP_EPARSE, "%s: zip64 locator missing", z->path);
        uint64_t z64 = rd64(b + eocd - 20 + 8);
        if (z64 > size || size - z64 < 56 || rd32(b + z64) != 0x06064b50u)
            return fp_errorf(FP_EPARSE, "%s: bad zip64 end-of-central-directory record", z->path);
        nent = rd64(b + z64 + 32);
        cd_size = rd64(b + z64 + 40);
        cd_off = rd64(b + z64 + 48);
    }
    if (cd_off > size || cd_size > size - cd_off)
        return fp_errorf(FP_EPARSE, "%s: central directory (offset %" PRIu64 ", %" PRIu64 " bytes) lies outside the file", z->path, cd_off, cd_size);
    if (nent > cd_size / 46) return fp_errorf(FP_EPARSE, "%s: central directory too small for %" PRIu64 " entries", z->path, nent);
    z->e = fp_calloc(nent ? nent : 1, sizeof *z->e);
    if (!z->e) return FP_ENOMEM;
    const uint8_t *p = b + cd_off, *end = b + cd_off + cd_size;
    for (uint64_t i = 0; i < nent; i++) {
        if (end - p < 46 || rd32(p) != 0x02014b50u)
            return fp_errorf(FP_EPARSE, "%s: bad central directory entry %" PRIu64, z->path, i);
        zentry *e = &z->e[z->n];
        size_t nl = rd16(p + 28), xl = rd16(p + 30), cl = rd16(p + 32);
        if ((size_t)(end - p) < 46 + nl + xl + cl)
            return fp_errorf(FP_EPARSE, "%s: central directory entry %" PRIu64 " runs past the directory", z->path, i);
        e->name = (const char *)p + 46;
        e->name_len = nl;
        e->method = rd16(p + 10);
        e->crc = rd32(p + 16);
        e->csize = rd32(p + 20);
        e->usize = rd32(p + 24);
        uint64_t loff = rd32(p + 42);
        /* zip64 extra field: the 64-bit values of those fields that hold 0xffffffff, in this order */
        const uint8_t *x = p + 46 + nl, *xe = x + xl;
        while (xe - x >= 4) {
            size_t id = rd16(x), len = rd16(x + 2);
            if ((size_t)(xe - x - 4) < len) break;
            if (id == 1) {
                const uint8_t *q = x + 4, *qe = x + 4 + len;
                if (e->usize == 0xffffffffu) { if (qe - q < 8) break; e->usize = rd64(q); q += 8; }
                if (e->csize == 0xffffffffu) { if (qe - q < 8) break; e->csize = rd64(q); q += 8; }
                if (loff == 0xffffffffu) { if (qe - q < 8) break; loff = rd64(q); q += 8; }
            }
            x += 4 + len;
        }
        if (loff > size || size - loff < 30 || rd32(b + loff) != 0x04034b50u)
            return fp_errorf(FP_EPARSE, "%s: entry %.*s: bad local header offset %" PRIu64, z->path, (int)nl, e->name, loff);
        uint64_t doff = loff + 30 + rd16(b + loff + 26) + rd16(b + loff + 28);
        if (doff > size || e->csize > size - doff)
            return fp_errorf(FP_EPARSE, "%s: entry %.*s: data (%" PRIu64 " bytes at %" PRIu64 ") runs past the end of the file (truncated?)",
                             z->path, (int)nl, e->name, e->csize, doff);
        e->data = b + doff;
        z->n++;
        p += 46 + nl + xl + cl;
    }
    qsort(z->e, z->n, sizeof *z->e, zentry_cmp);
    return FP_OK;
}

/* Entry prefix+name (binary search: z->e is sorted by name after zip_parse). */
static const zentry *zip_find(const zarchive *z, const char *prefix, size_t plen, const char *name) {
    char key[512];
    size_t nlen = strlen(name);
    if (plen + nlen > sizeof key) return NULL;
    memcpy(key, prefix, plen);
    memcpy(key + plen, name, nlen);
    zentry probe = {.name = key, .name_len = plen + nlen};
    return z->n ? bsearch(&probe, z->e, z->n, sizeof *z->e, zentry_cmp) : NULL;
}

/* The bytes of a stored (uncompressed) entry; compressed entries are refused. */
static int zip_entry_bytes(const zarchive *z, const zentry *e, int check_crc) {
    if (e->method != 0)
        return fp_errorf(FP_EUNSUPPORTED, "%s: entry %.*s is compressed (method %d); only stored entries are supported",
                         z->path, (int)e->name_len, e->name, e->method);
    if (e->csize != e->usize)
        return fp_errorf(FP_EPARSE, "%s: entry %.*s: stored entry with sizes %" PRIu64 " != %" PRIu64, z->path,
                         (int)e->name_len, e->name, e->csize, e->usize);
    if (check_crc && crc32_buf(e->data, (size_t)e->usize) != e->crc)
        return fp_errorf(FP_EPARSE, "%s: entry %.*s: CRC mismatch (corrupt file)", z->path, (int)e->name_len, e->name);
    return FP_OK;
}

/* ------------------------------------------------------------------ pickle values */
enum { V_MARK, V_NONE, V_BOOL, V_INT, V_STR, V_TUPLE, V_DICT, V_GLOBAL, V_STORAGE, V_TENSOR };

typedef struct pv pv;
struct pv {
    int kind;
    int64_t i;     /* V_INT, V_BOOL; V_STORAGE: numel; V_TENSOR: storage offset */
    char *s;       /* V_STR; V_GLOBAL: "module.name"; V_STORAGE: key */
    pv **items;    /* V_TUPLE items; V_DICT keys/values interleaved */
    size_t n, cap; /* items used / allocated */
    int dtype;     /* V_STORAGE: fp_dtype or -1 when unsupported */
    char *stype;   /* V_STORAGE: storage type name */
    pv *storage;   /* V_TENSOR */
    int ndim;
    int64_t shape[FP_MAX_DIMS], stride[FP_MAX_DIMS];
};

typedef struct {
    const char *path;
    const uint8_t *p, *end, *start;
    pv **all; /* every value allocated, freed together */
    size_t nall, capall;
    pv **stack;
    size_t sp, capstack;
    pv **memo;
    size_t nmemo;
} pvm;

static pv *pv_new(pvm *m, int kind) {
    if (m->nall == m->capall) {
        size_t cap = m->capall ? m->capall * 2 : 256;
        pv **a = fp_realloc(m->all, cap * sizeof *a);
        if (!a) return NULL;
        m->all = a;
        m->capall = cap;
    }
    pv *v = fp_calloc(1, sizeof *v);
    if (!v) return NULL;
    v->kind = kind;
    m->all[m->nall++] = v;
    return v;
}

static int pv_append(pv *v, pv *item) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 8;
        pv **a = fp_realloc(v->items, cap * sizeof *a);
        if (!a) return FP_ENOMEM;
        v->items = a;
        v->cap = cap;
    }
    v->items[v->n++] = item;
    return FP_OK;
}

static void pvm_free(pvm *m) {
    for (size_t i = 0; i < m->nall; i++) {
        free(m->all[i]->s);
        free(m->all[i]->stype);
        free(m->all[i]->items);
        free(m->all[i]);
    }
    free(m->all);
    free(m->stack);
    free(m->memo);
}

static int push(pvm *m, pv *v) {
    if (!v) return FP_ENOMEM;
    if (m->sp == m->capstack) {
        size_t cap = m->capstack ? m->capstack * 2 : 64;
        pv **s = fp_realloc(m->stack, cap * sizeof *s);
        if (!s) return FP_ENOMEM;
        m->stack = s;
        m->capstack = cap;
    }
    m->stack[m->sp++] = v;
    return FP_OK;
}

#define OFF(m, op_at) ((long)((op_at) - (m)->start))

static const char *kind_name(int k) {
    static const char *names[] = {"mark", "None", "bool", "int", "str", "tuple", "dict", "global", "storage", "tensor"};
    return k >= 0 && k <= V_TENSOR ? names[k] : "?";
}

/* Index of the topmost MARK, or -1. */
static long find_mark(const pvm *m) {
    for (size_t i = m->sp; i-- > 0;)
        if (m->stack[i]->kind == V_MARK) return (long)i;
    return -1;
}

static int get_int_tuple(pvm *m, const pv *t, int64_t *out, int *n, const char *what, const uint8_t *at) {
    if (t->kind != V_TUPLE) return fp_errorf(FP_EPARSE, "%s: pickle offset %ld: tensor %s is a %s, not a tuple", m->path, OFF(m, at), what, kind_name(t->kind));
    if (t->n > FP_MAX_DIMS) return fp_errorf(FP_EUNSUPPORTED, "%s: pickle offset %ld: tensor with %zu dimensions (at most %d)", m->path, OFF(m, at), t->n, FP_MAX_DIMS);
    for (size_t i = 0; i < t->n; i++) {
        if (t->items[i]->kind != V_INT) return fp_errorf(FP_EPARSE, "%s: pickle offset %ld: tensor %s holds a %s", m->path, OFF(m, at), what, kind_name(t->items[i]->kind));
        out[i] = t->items[i]->i;
    }
    *n = (int)t->n;
    return FP_OK;
}

/* REDUCE: callable(args) for the few callables torch uses in a state_dict. */
static int do_reduce(pvm *m, pv *fn, pv *args, const uint8_t *at, pv **res) {
    if (fn->kind != V_GLOBAL) return fp_errorf(FP_EPARSE, "%s: pickle offset %ld: REDUCE on a %s", m->path, OFF(m, at), kind_name(fn->kind));
    if (args->kind != V_TUPLE) return fp_errorf(FP_EPARSE, "%s: pickle offset %ld: REDUCE arguments are a %s", m->path, OFF(m, at), kind_name(args->kind));
    if (!strcmp(fn->s, "collections.OrderedDict")) {
        if (args->n != 0) return fp_errorf(FP_EUNSUPPORTED, "%s: pickle offset %ld: OrderedDict with arguments", m->path, OFF(m, at));
        *res = pv_new(m, V_DICT);
        return *res ? FP_OK : FP_ENOMEM;
    }
    if (!strcmp(fn->s, "torch._utils._rebuild_tensor_v2") || !strcmp(fn->s, "torch._utils._rebuild_tensor")) {
        if (args->n < 4) return fp_errorf(FP_EPARSE, "%s: pickle offset %ld: %s with %zu arguments", m->path, OFF(m, at), fn->s, args->n);
        pv *st = args->items[0], *off = args->items[1];
        if (st->kind != V_STORAGE || off->kind != V_INT)
            return fp_errorf(FP_EPARSE, "%s: pickle offset %ld: %s(%s, %s, ...): expected (storage, offset, size, stride)", m->path,
                             OFF(m, at), fn->s, kind_name(st->kind), kind_name(off->kind));
        pv *t = pv_new(m, V_TENSOR);
        if (!t) return FP_ENOMEM;
        t->storage = st;
        t->i = off->i;
        int nd1, nd2;
        int rc = get_int_tuple(m, args->items[2], t->shape, &nd1, "size", at);
        if (!rc) rc = get_int_tuple(m, args->items[3], t->stride, &nd2, "stride", at);
        if (rc) return rc;
        if (nd1 != nd2) return fp_errorf(FP_EPARSE, "%s: pickle offset %ld: size has %d dimensions, stride %d", m->path, OFF(m, at), nd1, nd2);
        t->ndim = nd1;
        *res = t;
        return FP_OK;
    }
    if (!strcmp(fn->s, "torch._utils._rebuild_parameter") || !strcmp(fn->s, "torch._utils._rebuild_parameter_with_state")) {
        if (args->n < 1 || args->items[0]->kind != V_TENSOR)
            return fp_errorf(FP_EPARSE, "%s: pickle offset %ld: %s without a tensor", m->path, OFF(m, at), fn->s);
        *res = args->items[0];
        return FP_OK;
    }
    return fp_errorf(FP_EUNSUPPORTED, "%s: pickle offset %ld: unsupported callable %s (REDUCE)", m->path, OFF(m, at), fn->s);
}

/* BINPERSID: ('storage', torch.<Type>Storage, key, location, numel). */
static int do_persid(pvm *m, pv *pid, const uint8_t *at, pv **res) {
    if (pid->kind != V_TUPLE || pid->n != 5 || pid->items[0]->kind != V_STR || strcmp(pid->items[0]->s, "storage") ||
        pid->items[1]->kind != V_GLOBAL || pid->items[2]->kind != V_STR || pid->items[4]->kind != V_INT)
        return fp_errorf(FP_EUNSUPPORTED, "%s: pickle offset %ld: persistent id is not ('storage', type, key, location, numel)",
                         m->path, OFF(m, at));
    pv *s = pv_new(m, V_STORAGE);
    if (!s) return FP_ENOMEM;
    const char *ty = pid->items[1]->s;
    s->dtype = !strcmp(ty, "torch.FloatStorage") ? FP_F32 : !strcmp(ty, "torch.BFloat16Storage") ? FP_BF16
             : !strcmp(ty, "torch.HalfStorage") ? FP_F16 : -1;
    s->stype = fp_strdup(ty);
    s->s = fp_strdup(pid->items[2]->s);
    if (!s->stype || !s->s) return FP_ENOMEM;
    s->i = pid->items[4]->i;
    if (s->i < 0) return fp_errorf(FP_EPARSE, "%s: pickle offset %ld: storage %s has %" PRId64 " elements", m->path, OFF(m, at), s->s, s->i);
    *res = s;
    return FP_OK;
}

static int need(pvm *m, size_t n, const uint8_t *at) {
    if ((size_t)(m->end - m->p) < n) return fp_errorf(FP_EPARSE, "%s: pickle truncated at offset %ld (opcode 0x%02x)", m->path, OFF(m, at), *at);
    return FP_OK;
}

static int memo_put(pvm *m, uint64_t idx, const uint8_t *at) {
    if (!m->sp) return fp_errorf(FP_EPARSE, "%s: pickle offset %ld: memo put on an empty stack", m->path, OFF(m, at));
    if (idx > (1u << 24)) return fp_errorf(FP_EUNSUPPORTED, "%s: pickle offset %ld: memo index %" PRIu64 " too large", m->path, OFF(m, at), idx);
    if (idx >= m->nmemo) {
        size_t n = (size_t)idx + 1 > m->nmemo * 2 ? (size_t)idx + 1 : m->nmemo * 2;
        pv **a = fp_realloc(m->memo, n * sizeof *a);
        if (!a) return FP_ENOMEM;
        memset(a + m->nmemo, 0, (n - m->nmemo) * sizeof *a);
        m->memo = a;
        m->nmemo = n;
    }
    m->memo[idx] = m->stack[m->sp - 1];
    return FP_OK;
}

static int memo_get(pvm *m, uint64_t idx, const uint8_t *at) {
    if (idx >= m->nmemo || !m->memo[idx]) return fp_errorf(FP_EPARSE, "%s: pickle offset %ld: memo key %" PRIu64 " undefined", m->path, OFF(m, at), idx);
    return push(m, m->memo[idx]);
}

static int pickle_run(pvm *m, pv **result) {
    int rc;
    for (;;) {
        const uint8_t *at = m->p;
        if (m->p >= m->end) return fp_errorf(FP_EPARSE, "%s: pickle ended without STOP", m->path);
        uint8_t op = *m->p++;
#define POP(var) do { \
            if (m->sp == 0 || m->stack[m->sp - 1]->kind == V_MARK) \
                return fp_errorf(FP_EPARSE, "%s: pickle offset %ld: stack underflow (opcode 0x%02x)", m->path, OFF(m, at), op); \
            var = m->stack[--m->sp]; \
        } while (0)
        switch (op) {
        case 0x80: /* PROTO */
            if ((rc = need(m, 1, at))) return rc;
            if (*m->p > 5) return fp_errorf(FP_EUNSUPPORTED, "%s: pickle protocol %d", m->path, *m->p);
            m->p++;
            break;
        case 0x95: /* FRAME (protocol 4): the frame length is only a hint */
            if ((rc = need(m, 8, at))) return rc;
            m->p += 8;
            break;
        case '.': { /* STOP */
            pv *v;
            POP(v);
            *result = v;
            return FP_OK;
        }
        case '(': if ((rc = push(m, pv_new(m, V_MARK)))) return rc; break;
        case 'N': if ((rc = push(m, pv_new(m, V_NONE)))) return rc; break;
        case 0x88: case 0x89: { /* NEWTRUE / NEWFALSE */
            pv *v = pv_new(m, V_BOOL);
            if (!v) return FP_ENOMEM;
            v->i = op == 0x88;
            if ((rc = push(m, v))) return rc;
            break;
        }
        case 'J': case 'K': case 'M': case 0x8a: { /* BININT, BININT1, BININT2, LONG1 */
            pv *v = pv_new(m, V_INT);
            if (!v) return FP_ENOMEM;
            if (op == 'J') { if ((rc = need(m, 4, at))) return rc; v->i = (int32_t)rd32(m->p); m->p += 4; }
            else if (op == 'K') { if ((rc = need(m, 1, at))) return rc; v->i = *m->p++; }
            else if (op == 'M') { if ((rc = need(m, 2, at))) return rc; v->i = rd16(m->p); m->p += 2; }
            else {
                if ((rc = need(m, 1, at))) return rc;
                size_t n = *m->p++;
                if ((rc = need(m, n, at))) return rc;
                if (n > 8) return fp_errorf(FP_EUNSUPPORTED, "%s: pickle offset %ld: LONG1 integer of %zu bytes", m->path, OFF(m, at), n);
                uint64_t u = 0;
                for (size_t k = 0; k < n; k++) u |= (uint64_t)m->p[k] << (8 * k);
                if (n > 0 && n < 8 && (m->p[n - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * n); /* sign-extend */
                v->i = (int64_t)u;
                m->p += n;
            }
            if ((rc = push(m, v))) return rc;
            break;
        }
        case 'X': case 0x8c: { /* BINUNICODE, SHORT_BINUNICODE */
            size_t n;
            if (op == 'X') { if ((rc = need(m, 4, at))) return rc; n = rd32(m->p); m->p += 4; }
            else { if ((rc = need(m, 1, at))) return rc; n = *m->p++; }
            if ((rc = need(m, n, at))) return rc;
            pv *v = pv_new(m, V_STR);
            if (!v) return FP_ENOMEM;
            if (memchr(m->p, 0, n)) return fp_errorf(FP_EUNSUPPORTED, "%s: pickle offset %ld: string with a NUL byte", m->path, OFF(m, at));
            v->s = fp_strndup((const char *)m->p, n);
            if (!v->s) return FP_ENOMEM;
            m->p += n;
            if ((rc = push(m, v))) return rc;
            break;
        }
        case 'c': { /* GLOBAL "module\nname\n" */
            const uint8_t *nl1 = memchr(m->p, '\n', (size_t)(m->end - m->p));
            const uint8_t *nl2 = nl1 ? memchr(nl1 + 1, '\n', (size_t)(m->end - nl1 - 1)) : NULL;
            if (!nl2) return fp_errorf(FP_EPARSE, "%s: pickle offset %ld: truncated GLOBAL", m->path, OFF(m, at));
            pv *v = pv_new(m, V_GLOBAL);
            if (!v) return FP_ENOMEM;
            size_t a = (size_t)(nl1 - m->p), b = (size_t)(nl2 - nl1 - 1);
            v->s = fp_malloc(a + b + 2);
            if (!v->s) return FP_ENOMEM;
            memcpy(v->s, m->p, a);
            v->s[a] = '.';
            memcpy(v->s + a + 1, nl1 + 1, b);
            v->s[a + 1 + b] = 0;
            if (strlen(v->s) != a + b + 1) return fp_errorf(FP_EPARSE, "%s: pickle offset %ld: GLOBAL with a NUL byte", m->path, OFF(m, at));
            m->p = nl2 + 1;
            if ((rc = push(m, v))) return rc;
            break;
        }
        case '}': if ((rc = push(m, pv_new(m, V_DICT)))) return rc; break;
        case ')': if ((rc = push(m, pv_new(m, V_TUPLE)))) return rc; break;
        case 0x85: case 0x86: case 0x87: { /* TUPLE1/2/3 */
            size_t n = (size_t)(op - 0x84);
            if (m->sp < n) return fp_errorf(FP_EPARSE, "%s: pickle offset %ld: stack underflow (TUPLE%zu)", m->path, OFF(m, at), n);
            pv *t = pv_new(m, V_TUPLE);
            if (!t) return FP_ENOMEM;
            for (size_t k = m->sp - n; k < m->sp; k++) {
                if (m->stack[k]->kind == V_MARK) return fp_errorf(FP_EPARSE, "%s: pickle offset %ld: MARK inside TUPLE%zu", m->path, OFF(m, at), n);
                if ((rc = pv_append(t, m->stack[k]))) return rc;
            }
            m->sp -= n;
            if ((rc = push(m, t))) return rc;
            break;
        }
        case 't': { /* TUPLE from MARK */
            long mk = find_mark(m);
            if (mk < 0) return fp_errorf(FP_EPARSE, "%s: pickle offset %ld: TUPLE without MARK", m->path, OFF(m, at));
            pv *t = pv_new(m, V_TUPLE);
            if (!t) return FP_ENOMEM;
            for (size_t k = (size_t)mk + 1; k < m->sp; k++)
                if ((rc = pv_append(t, m->stack[k]))) return rc;
            m->sp = (size_t)mk;
            if ((rc = push(m, t))) return rc;
            break;
        }
        case 's': case 'u': { /* SETITEM, SETITEMS */
            size_t first;
            if (op == 'u') {
                long mk = find_mark(m);
                if (mk < 0) return fp_errorf(FP_EPARSE, "%s: pickle offset %ld: SETITEMS without MARK", m->path, OFF(m, at));
                first = (size_t)mk + 1;
                if ((m->sp - first) % 2) return fp_errorf(FP_EPARSE, "%s: pickle offset %ld: SETITEMS with an odd item count", m->path, OFF(m, at));
            } else {
                if (m->sp < 3) return fp_errorf(FP_EPARSE, "%s: pickle offset %ld: stack underflow (SETITEM)", m->path, OFF(m, at));
                first = m->sp - 2;
            }
            size_t dict_at = op == 'u' ? first - 2 : first - 1;
            if (op == 'u' && first < 2) return fp_errorf(FP_EPARSE, "%s: pickle offset %ld: SETITEMS without a dict", m->path, OFF(m, at));
            pv *d = m->stack[dict_at];
            if (d->kind != V_DICT) return fp_errorf(FP_EPARSE, "%s: pickle offset %ld: SETITEM(S) on a %s", m->path, OFF(m, at), kind_name(d->kind));
            for (size_t k = first; k < m->sp; k++) {
                if (m->stack[k]->kind == V_MARK) return fp_errorf(FP_EPARSE, "%s: pickle offset %ld: stray MARK in SETITEM", m->path, OFF(m, at));
                if ((rc = pv_append(d, m->stack[k]))) return rc;
            }
            m->sp = dict_at + 1;
            break;
        }
        case 'R': { /* REDUCE */
            pv *args, *fn, *res = NULL;
            POP(args);
            POP(fn);
            if ((rc = do_reduce(m, fn, args, at, &res))) return rc;
            if ((rc = push(m, res))) return rc;
            break;
        }
        case 'Q': { /* BINPERSID */
            pv *pid, *res = NULL;
            POP(pid);
            if ((rc = do_persid(m, pid, at, &res))) return rc;
            if ((rc = push(m, res))) return rc;
            break;
        }
        case 'b': { /* BUILD: the state (OrderedDict _metadata, tensor state) carries nothing we need */
            pv *state, *obj;
            POP(state);
            POP(obj);
            (void)state;
            if (obj->kind != V_DICT && obj->kind != V_TENSOR)
                return fp_errorf(FP_EUNSUPPORTED, "%s: pickle offset %ld: BUILD on a %s", m->path, OFF(m, at), kind_name(obj->kind));
            if ((rc = push(m, obj))) return rc;
            break;
        }
        case 'q': case 'h': /* BINPUT, BINGET */
            if ((rc = need(m, 1, at))) return rc;
            rc = op == 'q' ? memo_put(m, *m->p, at) : memo_get(m, *m->p, at);
            m->p++;
            if (rc) return rc;
            break;
        case 'r': case 'j': /* LONG_BINPUT, LONG_BINGET */
            if ((rc = need(m, 4, at))) return rc;
            rc = op == 'r' ? memo_put(m, rd32(m->p), at) : memo_get(m, rd32(m->p), at);
            m->p += 4;
            if (rc) return rc;
            break;
        case 0x94: /* MEMOIZE */
            if ((rc = memo_put(m, m->nmemo, at))) return rc;
            break;
        default:
            return fp_errorf(FP_EUNSUPPORTED, "%s: pickle opcode 0x%02x ('%c') at offset %ld is not supported", m->path, op,
                             op >= 32 && op < 127 ? op : '?', OFF(m, at));
        }
#undef POP
    }
}

/* ------------------------------------------------------------------ state dict -> fp_weights */
typedef struct {
    const char *path;
    zarchive *z;
    const char *prefix; /* "archive/" */
    size_t plen;
    fp_weights *w;
    int copy; /* always copy tensor data (the buffer is not owned by w) */
} loadctx;

static int add_tensor(loadctx *c, const char *name, const pv *t) {
    const pv *st = t->storage;
    if (st->dtype < 0) return fp_errorf(FP_EUNSUPPORTED, "%s: tensor %s: unsupported storage type %s", c->path, name, st->stype);
    size_t es = st->dtype == FP_F32 ? 4 : 2;
    int64_t numel = 1, expect = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] < 0) return fp_errorf(FP_EPARSE, "%s: tensor %s: negative size", c->path, name);
        if (t->shape[d] > 1 && t->stride[d] != expect)
            return fp_errorf(FP_EUNSUPPORTED, "%s: tensor %s: not contiguous (stride %" PRId64 " in dimension %d, expected %" PRId64 ")",
                             c->path, name, t->stride[d], d, expect);
        if (t->shape[d] && numel > INT64_MAX / t->shape[d]) return fp_errorf(FP_EPARSE, "%s: tensor %s: size overflows", c->path, name);
        numel *= t->shape[d];
        if (t->shape[d]) expect = numel;
    }
    if (t->i < 0 || t->i > st->i || numel > st->i - t->i)
        return fp_errorf(FP_EPARSE, "%s: tensor %s: offset %" PRId64 " + %" PRId64 " elements exceed its storage of %" PRId64,
                         c->path, name, t->i, numel, st->i);
    char ename[300];
    snprintf(ename, sizeof ename, "data/%s", st->s);
    const zentry *e = zip_find(c->z, c->prefix, c->plen, ename);
    if (!e) return fp_errorf(FP_EPARSE, "%s: tensor %s: storage entry %.*s%s missing", c->path, name, (int)c->plen, c->prefix, ename);
    int rc = zip_entry_bytes(c->z, e, e->usize <= (64u << 20));
    if (rc) return rc;
    if ((uint64_t)st->i > e->usize / es)
        return fp_errorf(FP_EPARSE, "%s: tensor %s: storage %s holds %" PRIu64 " bytes, less than %" PRId64 " elements of %zu bytes",
                         c->path, name, st->s, e->usize, st->i, es);
    const uint8_t *src = e->data + (size_t)t->i * es;
    size_t nbytes = (size_t)numel * es;
    const void *data = src;
    if (c->copy || ((uintptr_t)src % es)) {
        void *buf = fp_malloc(nbytes ? nbytes : 1);
        if (!buf) return FP_ENOMEM;
        memcpy(buf, src, nbytes);
        if ((rc = fp_weights_adopt_buffer(c->w, buf))) { free(buf); return rc; }
        data = buf;
    }
    if ((rc = fp_weights_add(c->w, name, (fp_dtype)st->dtype, t->ndim, t->shape, data, nbytes))) return fp_error_prefix("%s: ", c->path);
    return FP_OK;
}

static int flatten(loadctx *c, const pv *d, const char *prefix, int depth) {
    if (depth > 16) return fp_errorf(FP_EUNSUPPORTED, "%s: dictionaries nested too deeply", c->path);
    for (size_t i = 0; i + 1 < d->n; i += 2) {
        const pv *k = d->items[i], *v = d->items[i + 1];
        char key[64];
        const char *ks;
        if (k->kind == V_STR) ks = k->s;
        else if (k->kind == V_INT) { snprintf(key, sizeof key, "%" PRId64, k->i); ks = key; }
        else continue;
        size_t n = strlen(prefix) + strlen(ks) + 2;
        char *name = fp_malloc(n);
        if (!name) return FP_ENOMEM;
        snprintf(name, n, "%s%s%s", prefix, *prefix ? "." : "", ks);
        int rc = FP_OK;
        if (v->kind == V_TENSOR) rc = add_tensor(c, name, v);
        else if (v->kind == V_DICT) rc = flatten(c, v, name, depth + 1);
        free(name); /* other values (ints, None, ...) carry no tensors */
        if (rc) return rc;
    }
    return FP_OK;
}

static int load_archive(fp_weights **out, const char *path, const uint8_t *buf, size_t size, fp_mmap *owned) {
    *out = NULL;
    zarchive z = {.path = path, .buf = buf, .size = size};
    pvm m = {.path = path};
    fp_weights *w = NULL;
    int rc = zip_parse(&z);
    if (rc) goto done;
    /* <prefix>data.pkl with the shortest prefix (torch uses "<archive name>/") */
    const zentry *pkl = NULL;
    for (size_t i = 0; i < z.n; i++) {
        const zentry *e = &z.e[i];
        if (e->name_len >= 8 && !memcmp(e->name + e->name_len - 8, "data.pkl", 8) &&
            (e->name_len == 8 || e->name[e->name_len - 9] == '/') && (!pkl || e->name_len < pkl->name_len))
            pkl = e;
    }
    if (!pkl) { rc = fp_errorf(FP_EPARSE, "%s: no data.pkl in the archive (not a torch.save file?)", path); goto done; }
    size_t plen = pkl->name_len - 8;
    const zentry *bo = zip_find(&z, pkl->name, plen, "byteorder");
    if (bo && !zip_entry_bytes(&z, bo, 0) && bo->usize >= 3 && !memcmp(bo->data, "big", 3)) {
        rc = fp_errorf(FP_EUNSUPPORTED, "%s: big-endian tensor data", path);
        goto done;
    }
    if ((rc = zip_entry_bytes(&z, pkl, 1))) goto done;
    m.p = m.start = pkl->data;
    m.end = pkl->data + pkl->usize;
    pv *root = NULL;
    if ((rc = pickle_run(&m, &root))) goto done;
    if (root->kind != V_DICT) {
        rc = fp_errorf(FP_EUNSUPPORTED, "%s: the pickled object is a %s, not a state_dict", path, kind_name(root->kind));
        goto done;
    }
    w = fp_weights_new();
    if (!w) { rc = FP_ENOMEM; goto done; }
    if (owned && (rc = fp_weights_adopt_mmap(w, owned))) goto done;
    loadctx c = {.path = path, .z = &z, .prefix = pkl->name, .plen = plen, .w = w, .copy = owned == NULL};
    if ((rc = flatten(&c, root, "", 0))) goto done;
    *out = w;
    w = NULL;
done:
    fp_weights_free(w);
    pvm_free(&m);
    free(z.e);
    return rc;
}

int fp_torchzip_load_memory(fp_weights **out, const void *data, size_t size, const char *name) {
    return load_archive(out, name ? name : "<memory>", data, size, NULL);
}

int fp_torchzip_load_state_dict(fp_weights **out, const char *path) {
    *out = NULL;
    fp_mmap map;
    int rc = fp_mmap_open(&map, path);
    if (rc) return rc;
    rc = load_archive(out, path, map.data, map.size, &map);
    fp_mmap_close(&map); /* no-op once adopted */
    return rc;
}
