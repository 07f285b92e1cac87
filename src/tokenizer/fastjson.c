/* Fast loading of tokenizer.json's model.vocab / model.merges (most of its 11 MB) without building a jansson
 * tree: a small scanner finds the two values, parses them into flat arrays and blanks them in the buffer. */
#include "tokenizer/tok_impl.h"
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *p, *end;
} cur;

static void ws(cur *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t')) c->p++;
}

static int skip_string(cur *c) {
    c->p++;
    while (c->p < c->end) {
        char ch = *c->p++;
        if (ch == '\\') {
            if (c->p >= c->end) return -1;
            c->p++;
        } else if (ch == '"') {
            return 0;
        }
    }
    return -1;
}

static int skip_value(cur *c) {
    ws(c);
    if (c->p >= c->end) return -1;
    if (*c->p == '"') return skip_string(c);
    if (*c->p == '{' || *c->p == '[') {
        int depth = 0;
        while (c->p < c->end) {
            char ch = *c->p;
            if (ch == '"') {
                if (skip_string(c)) return -1;
                continue;
            }
            if (ch == '{' || ch == '[') depth++;
            else if (ch == '}' || ch == ']') depth--;
            c->p++;
            if (depth == 0) return 0;
        }
        return -1;
    }
    const char *s = c->p;
    while (c->p < c->end && !strchr(",}] \t\r\n", *c->p)) c->p++;
    return c->p > s ? 0 : -1;
}

static int hex4(const char *p, uint32_t *v) {
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char ch = p[i];
        unsigned d = ch >= '0' && ch <= '9' ? (unsigned)(ch - '0') : ch >= 'a' && ch <= 'f' ? (unsigned)(ch - 'a' + 10)
                   : ch >= 'A' && ch <= 'F' ? (unsigned)(ch - 'A' + 10) : 99u;
        if (d > 15) return -1;
        *v = *v * 16 + d;
    }
    return 0;
}

/* Reads a JSON string at c->p ('"') unescaped into arena at offset *off, length *len. */
static int read_string(cur *c, fp_buf *arena, size_t *off, size_t *len) {
    if (c->p >= c->end || *c->p != '"') return -1;
    c->p++;
    *off = arena->len;
    for (;;) {
        const char *s = c->p;
        while (c->p < c->end && *c->p != '"' && *c->p != '\\' && (unsigned char)*c->p >= 0x20) c->p++;
        if (c->p >= c->end || (unsigned char)*c->p < 0x20) return -1;
        if (c->p > s && fp_buf_append(arena, s, (size_t)(c->p - s))) return -1;
        if (*c->p == '"') {
            c->p++;
            break;
        }
        /* escape */
        if (c->p + 1 >= c->end) return -1;
        char e = c->p[1], o;
        c->p += 2;
        switch (e) {
        case '"': o = '"'; break;
        case '\\': o = '\\'; break;
        case '/': o = '/'; break;
        case 'b': o = '\b'; break;
        case 'f': o = '\f'; break;
        case 'n': o = '\n'; break;
        case 'r': o = '\r'; break;
        case 't': o = '\t'; break;
        case 'u': {
            uint32_t cp, lo;
            if (c->end - c->p < 4 || hex4(c->p, &cp)) return -1;
            c->p += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return -1;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (c->end - c->p < 6 || c->p[0] != '\\' || c->p[1] != 'u' || hex4(c->p + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                    return -1;
                c->p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            char u[4];
            size_t k;
            if (cp < 0x80) { u[0] = (char)cp; k = 1; }
            else if (cp < 0x800) { u[0] = (char)(0xC0 | (cp >> 6)); u[1] = (char)(0x80 | (cp & 0x3F)); k = 2; }
            else if (cp < 0x10000) {
                u[0] = (char)(0xE0 | (cp >> 12)); u[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); u[2] = (char)(0x80 | (cp & 0x3F));
                k = 3;
            } else {
                u[0] = (char)(0xF0 | (cp >> 18)); u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
                u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); u[3] = (char)(0x80 | (cp & 0x3F));
                k = 4;
            }
            if (fp_buf_append(arena, u, k)) return -1;
            continue;
        }
        default: return -1;
        }
        if (fp_buf_append(arena, &o, 1)) return -1;
    }
    *len = arena->len - *off;
    return fp_buf_append(arena, "", 1) ? -1 : 0; /* NUL-terminate each string */
}

/* Finds the value of key `want` in the object at c->p; returns its span or -1. Scans the whole object. */
typedef struct {
    const char *s, *e;
} span;

static int object_members(cur *c, const char *const *keys, span *out, int nkeys) {
    ws(c);
    if (c->p >= c->end || *c->p != '{') return -1;
    c->p++;
    ws(c);
    if (c->p < c->end && *c->p == '}') { c->p++; return 0; }
    for (;;) {
        ws(c);
        if (c->p >= c->end || *c->p != '"') return -1;
        const char *ks = c->p + 1;
        if (skip_string(c)) return -1;
        size_t kl = (size_t)(c->p - 1 - ks);
        ws(c);
        if (c->p >= c->end || *c->p != ':') return -1;
        c->p++;
        ws(c);
        const char *vs = c->p;
        if (skip_value(c)) return -1;
        for (int i = 0; i < nkeys; i++)
            if (strlen(keys[i]) == kl && !memcmp(keys[i], ks, kl)) {
                out[i].s = vs;
                out[i].e = c->p;
            }
        ws(c);
        if (c->p >= c->end) return -1;
        if (*c->p == ',') { c->p++; continue; }
        if (*c->p == '}') { c->p++; return 0; }
        return -1;
    }
}

typedef struct {
    size_t off, len;
    int64_t id;
} ventry;
typedef struct {
    size_t aoff, alen, boff, blen;
} mentry;

static int grow(void **p, size_t *cap, size_t n, size_t elem) {
    if (n < *cap) return 0;
    size_t c = *cap ? *cap * 2 : 4096;
    void *q = realloc(*p, c * elem);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

int tok_fast_model(fp_tokenizer *t, char *buf, size_t len, int *done) {
    *done = 0;
    cur c = {buf, buf + len};
    const char *top_keys[] = {"model"}, *model_keys[] = {"vocab", "merges"};
    span model = {0}, vm[2] = {{0}};
    if (object_members(&c, top_keys, &model, 1) || !model.s || *model.s != '{') return FP_OK;
    cur mc = {model.s, model.e};
    if (object_members(&mc, model_keys, vm, 2) || !vm[0].s || !vm[1].s || *vm[0].s != '{' || *vm[1].s != '[') return FP_OK;

    fp_buf arena = {0};
    ventry *ve = NULL;
    mentry *me = NULL;
    size_t nv = 0, vcap = 0, nm = 0, mcap = 0;
    int ok = 0, rc = FP_OK;
    /* vocab */
    cur v = {vm[0].s + 1, vm[0].e};
    ws(&v);
    if (v.p < v.end && *v.p == '}') { v.p++; ok = 1; }
    while (!ok) {
        ws(&v);
        if (grow((void **)&ve, &vcap, nv, sizeof *ve)) goto out;
        if (read_string(&v, &arena, &ve[nv].off, &ve[nv].len)) goto out;
        ws(&v);
        if (v.p >= v.end || *v.p != ':') goto out;
        v.p++;
        ws(&v);
        const char *ns = v.p;
        int64_t id = 0;
        while (v.p < v.end && *v.p >= '0' && *v.p <= '9' && id < INT32_MAX) id = id * 10 + (*v.p++ - '0');
        if (v.p == ns || id >= INT32_MAX / 2) goto out; /* negative, fractional, huge: let jansson + checks report */
        if (v.p < v.end && (*v.p == '.' || *v.p == 'e' || *v.p == 'E')) goto out;
        ve[nv++].id = id;
        ws(&v);
        if (v.p >= v.end) goto out;
        if (*v.p == ',') { v.p++; continue; }
        if (*v.p == '}') { v.p++; ok = 1; break; }
        goto out;
    }
    /* merges */
    ok = 0;
    cur m = {vm[1].s + 1, vm[1].e};
    ws(&m);
    if (m.p < m.end && *m.p == ']') { m.p++; ok = 1; }
    while (!ok) {
        ws(&m);
        if (grow((void **)&me, &mcap, nm, sizeof *me)) goto out;
        mentry *e = &me[nm];
        if (m.p < m.end && *m.p == '"') {
            size_t off, l, sp;
            if (read_string(&m, &arena, &off, &l)) goto out;
            const char *s = arena.data + off;
            if (tok_split_merge_str(s, l, &sp) || memchr(s + sp + 1, ' ', l - sp - 1)) goto out;
            *e = (mentry){off, sp, off + sp + 1, l - sp - 1};
        } else if (m.p < m.end && *m.p == '[') {
            m.p++;
            ws(&m);
            if (read_string(&m, &arena, &e->aoff, &e->alen)) goto out;
            ws(&m);
            if (m.p >= m.end || *m.p != ',') goto out;
            m.p++;
            ws(&m);
            if (read_string(&m, &arena, &e->boff, &e->blen)) goto out;
            ws(&m);
            if (m.p >= m.end || *m.p != ']') goto out;
            m.p++;
        } else {
            goto out;
        }
        nm++;
        ws(&m);
        if (m.p >= m.end) goto out;
        if (*m.p == ',') { m.p++; continue; }
        if (*m.p == ']') { m.p++; ok = 1; break; }
        goto out;
    }
    if (nm >= (size_t)INT32_MAX) goto out;
    /* syntax is fine: from here on errors are real */
    int64_t maxid = -1;
    for (size_t i = 0; i < nv; i++)
        if (ve[i].id > maxid) maxid = ve[i].id;
    int32_t n = (int32_t)(maxid + 1);
    const char **by_id = fp_calloc((size_t)n + 1, sizeof *by_id);
    size_t *lens = fp_calloc((size_t)n + 1, sizeof *lens);
    if (!by_id || !lens) rc = FP_ENOMEM;
    for (size_t i = 0; !rc && i < nv; i++) {
        int32_t id = (int32_t)ve[i].id;
        if (by_id[id]) {
            rc = fp_errorf(FP_EPARSE, "%s: model.vocab: id %d is used by \"%.80s\" and \"%.80s\"", t->source, (int)id, by_id[id],
                           arena.data + ve[i].off);
            break;
        }
        by_id[id] = arena.data + ve[i].off;
        lens[id] = ve[i].len;
    }
    if (!rc) rc = tok_set_vocab(t, by_id, lens, n);
    free(by_id);
    free(lens);
    if (!rc) rc = tok_merges_alloc(t, (int32_t)nm);
    char *cat = NULL;
    size_t catcap = 0;
    for (size_t i = 0; !rc && i < nm; i++)
        rc = tok_add_merge(t, (int32_t)i, arena.data + me[i].aoff, me[i].alen, arena.data + me[i].boff, me[i].blen, &cat, &catcap);
    free(cat);
    t->n_merges = (int32_t)nm;
    if (!rc) {
        /* blank the two values, keeping newlines so jansson's line numbers stay right */
        for (int k = 0; k < 2; k++) {
            char *s = (char *)vm[k].s, *e = (char *)vm[k].e;
            for (char *q = s + 1; q < e - 1; q++)
                if (*q != '\n') *q = ' ';
        }
        *done = 1;
    }
out:
    fp_buf_free(&arena);
    free(ve);
    free(me);
    return rc;
}
