/* Tokenizer construction: tokenizer.json / tokenizer_config.json loading, the vocab and merge tables, added
 * tokens, the pre-tokenizer regex translation, accessors and the step-token override. */
#include "tokenizer/tok_impl.h"
#include "base/json.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ------------------------------------------------------------------ hashing */
uint64_t tok_hash(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = (h ^ v) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v |= (uint64_t)s[i] << (8 * i);
    h = (h ^ v) * 0x94d049bb133111ebull;
    h ^= h >> 32;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 29;
    return h;
}

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

uint64_t tok_new_serial(void) {
    static uint64_t counter;
    return __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
}

/* ------------------------------------------------------------------ byte-level alphabet */
static int bl_printable(unsigned b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE); }

static uint16_t bl_fwd[256];
static int16_t bl_inv[324];
static pthread_once_t bl_once = PTHREAD_ONCE_INIT;
static void bl_init(void) {
    unsigned k = 0; /* non-printable bytes map to 256, 257, ... in byte order */
    for (int i = 0; i < 324; i++) bl_inv[i] = -1;
    for (unsigned b = 0; b < 256; b++) {
        bl_fwd[b] = (uint16_t)(bl_printable(b) ? b : 256 + k++);
        bl_inv[bl_fwd[b]] = (int16_t)b;
    }
}

uint32_t fp_bytelevel_char(uint8_t b) {
    pthread_once(&bl_once, bl_init);
    return bl_fwd[b];
}

int fp_bytelevel_byte(uint32_t cp) {
    pthread_once(&bl_once, bl_init);
    return cp < 324 ? bl_inv[cp] : -1;
}

static size_t utf8_put(char *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes one UTF-8 char at s (valid input assumed); returns its length. */
static size_t utf8_get(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned c = s[0];
    if (c < 0x80 || n < 2) { *cp = c; return 1; }
    if ((c & 0xE0) == 0xC0) { *cp = ((c & 0x1F) << 6) | (s[1] & 0x3F); return 2; }
    if ((c & 0xF0) == 0xE0 && n >= 3) { *cp = ((c & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F); return 3; }
    if (n >= 4) {
        *cp = ((c & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F);
        return 4;
    }
    *cp = c;
    return 1;
}

/* ------------------------------------------------------------------ id tables */
static int ensure_ids(fp_tokenizer *t, int32_t n) {
    if (n <= t->n_ids) return FP_OK;
    size_t sz = (size_t)n;
    uint32_t *a = fp_realloc(t->str_off, sz * 4), *b;
    if (!a) return FP_ENOMEM;
    t->str_off = a;
    if (!(b = fp_realloc(t->str_len, sz * 4))) return FP_ENOMEM;
    t->str_len = b;
    if (!(a = fp_realloc(t->bytes_off, sz * 4))) return FP_ENOMEM;
    t->bytes_off = a;
    if (!(b = fp_realloc(t->bytes_len, sz * 4))) return FP_ENOMEM;
    t->bytes_len = b;
    int32_t *c = fp_realloc(t->added_of, sz * 4);
    if (!c) return FP_ENOMEM;
    t->added_of = c;
    for (int32_t i = t->n_ids; i < n; i++) {
        t->str_off[i] = t->bytes_off[i] = 0;
        t->str_len[i] = UINT32_MAX;
        t->bytes_len[i] = 0;
        t->added_of[i] = -1;
    }
    t->n_ids = n;
    return FP_OK;
}

static int pool_add(fp_tokenizer *t, const void *s, size_t n, uint32_t *off) {
    if (t->pool.len + n + 1 > UINT32_MAX) return fp_errorf(FP_ERANGE, "%s: vocabulary too large", t->source);
    *off = (uint32_t)t->pool.len;
    if (fp_buf_append(&t->pool, s, n) || fp_buf_append(&t->pool, "", 1)) return FP_ENOMEM;
    return FP_OK;
}

int32_t tok_vocab_find(const fp_tokenizer *t, const char *s, size_t n) {
    if (!t->vmap.slots) return -1;
    uint32_t i = (uint32_t)tok_hash(s, n) & t->vmap.mask;
    for (;;) {
        uint32_t v = t->vmap.slots[i];
        if (!v) return -1;
        int32_t id = (int32_t)(v - 1);
        if (t->str_len[id] == n && !memcmp(tok_str(t, id), s, n)) return id;
        i = (i + 1) & t->vmap.mask;
    }
}

/* Sets the vocab: tokens[i] (len lens[i], or strlen when lens is NULL) for id i; NULL entries are unused. */
int tok_set_vocab(fp_tokenizer *t, const char *const *tokens, const size_t *lens, int32_t n) {
    int rc = ensure_ids(t, n);
    if (rc) return rc;
    uint32_t cap = 1024;
    while (cap < (uint32_t)n * 2u + 2u) cap *= 2;
    t->vmap.slots = fp_calloc(cap, sizeof *t->vmap.slots);
    if (!t->vmap.slots) return FP_ENOMEM;
    t->vmap.mask = cap - 1;
    char *tmp = NULL;
    size_t tmpcap = 0;
    for (int32_t id = 0; id < n; id++) {
        const char *s = tokens[id];
        if (!s) continue;
        size_t len = lens ? lens[id] : strlen(s);
        if (tok_vocab_find(t, s, len) >= 0) {
            free(tmp);
            return fp_errorf(FP_EPARSE, "%s: model.vocab: token \"%.*s\" appears twice", t->source, (int)(len > 80 ? 80 : len), s);
        }
        if ((rc = pool_add(t, s, len, &t->str_off[id]))) { free(tmp); return rc; }
        t->str_len[id] = (uint32_t)len;
        /* byte-level decode; characters outside the alphabet are kept as their UTF-8 bytes */
        if (len > tmpcap) {
            tmpcap = len * 2 + 16;
            char *nt = fp_realloc(tmp, tmpcap);
            if (!nt) { free(tmp); return FP_ENOMEM; }
            tmp = nt;
        }
        size_t o = 0;
        for (size_t i = 0; i < len;) {
            uint32_t cp;
            size_t k = utf8_get((const unsigned char *)s + i, len - i, &cp);
            int b = fp_bytelevel_byte(cp);
            if (b >= 0) tmp[o++] = (char)b;
            else { memcpy(tmp + o, s + i, k); o += k; }
            i += k;
        }
        if ((rc = pool_add(t, tmp, o, &t->bytes_off[id]))) { free(tmp); return rc; }
        t->bytes_len[id] = (uint32_t)o;
        uint32_t h = (uint32_t)tok_hash(s, len) & t->vmap.mask;
        while (t->vmap.slots[h]) h = (h + 1) & t->vmap.mask;
        t->vmap.slots[h] = (uint32_t)id + 1;
        t->n_vocab++;
    }
    free(tmp);
    for (unsigned b = 0; b < 256; b++) {
        char u[4];
        size_t k = utf8_put(u, fp_bytelevel_char((uint8_t)b));
        t->byte_id[b] = tok_vocab_find(t, u, k);
    }
    return FP_OK;
}

int tok_merges_alloc(fp_tokenizer *t, int32_t n) {
    t->merges = fp_malloc(((size_t)n + 1) * sizeof *t->merges);
    uint64_t cap = 1024;
    while (cap < (uint64_t)n * 3 / 2 + 2) cap *= 2; /* load <= 2/3: a smaller table stays in cache better */
    t->mmap = fp_calloc(cap, sizeof *t->mmap);
    if (!t->merges || !t->mmap) return FP_ENOMEM;
    t->mmask = cap - 1;
    return FP_OK;
}

int32_t tok_merge_lookup(const fp_tokenizer *t, int32_t a, int32_t b, int32_t *new_id) {
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    uint64_t i = mix64(key) & t->mmask;
    for (;;) {
        const tok_merge_slot *s = &t->mmap[i];
        if (s->key == key) { *new_id = s->new_id; return s->rank; }
        if (!s->key) return -1;
        i = (i + 1) & t->mmask;
    }
}

/* Adds merge `rank` (a, b); later duplicates override earlier ones, as in HF. */
int tok_add_merge(fp_tokenizer *t, int32_t rank, const char *a, size_t an, const char *b, size_t bn, char **cat,
                     size_t *catcap) {
    int32_t ia = tok_vocab_find(t, a, an), ib = tok_vocab_find(t, b, bn);
    if (ia < 0 || ib < 0)
        return fp_errorf(FP_EPARSE, "%s: model.merges[%d]: token \"%.*s\" is not in the vocab", t->source, (int)rank,
                         (int)(ia < 0 ? an : bn), ia < 0 ? a : b);
    if (an + bn > *catcap) {
        *catcap = (an + bn) * 2 + 64;
        char *n = fp_realloc(*cat, *catcap);
        if (!n) return FP_ENOMEM;
        *cat = n;
    }
    memcpy(*cat, a, an);
    memcpy(*cat + an, b, bn);
    int32_t inew = tok_vocab_find(t, *cat, an + bn);
    if (inew < 0)
        return fp_errorf(FP_EPARSE, "%s: model.merges[%d]: merged token \"%.*s\" is not in the vocab", t->source,
                         (int)rank, (int)(an + bn), *cat);
    t->merges[rank][0] = ia;
    t->merges[rank][1] = ib;
    uint64_t key = (((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib) + 1;
    uint64_t i = mix64(key) & t->mmask;
    while (t->mmap[i].key && t->mmap[i].key != key) i = (i + 1) & t->mmask;
    t->mmap[i].key = key;
    t->mmap[i].rank = rank;
    t->mmap[i].new_id = inew;
    return FP_OK;
}

/* Splits "a b" at the first space after the first character. */
int tok_split_merge_str(const char *s, size_t n, size_t *sp) {
    if (n < 3) return -1;
    const char *p = memchr(s + 1, ' ', n - 1);
    if (!p || p == s + n - 1) return -1;
    *sp = (size_t)(p - s);
    return 0;
}

/* ------------------------------------------------------------------ added tokens */
static int add_added(fp_tokenizer *t, const fp_tok_added *a) {
    if (a->id < 0 || a->id >= INT32_MAX - 1) return fp_errorf(FP_EPARSE, "%s: added token id %d out of range", t->source, (int)a->id);
    if (!a->content || !a->content[0]) return fp_errorf(FP_EPARSE, "%s: added token %d has empty content", t->source, (int)a->id);
    if (fp_utf8_invalid_offset(a->content, strlen(a->content)) >= 0)
        return fp_errorf(FP_EPARSE, "%s: added token %d: content is not valid UTF-8", t->source, (int)a->id);
    int rc = ensure_ids(t, a->id + 1);
    if (rc) return rc;
    char *c = fp_strdup(a->content);
    if (!c) return FP_ENOMEM;
    /* the same content under another id: that entry gives way (the newest definition wins) */
    for (int32_t i = 0; i < t->n_added; i++)
        if (t->added[i].id != a->id && !strcmp(t->added[i].content, c)) {
            t->added_of[t->added[i].id] = -1;
            free((char *)t->added[i].content);
            memmove(&t->added[i], &t->added[i + 1], (size_t)(t->n_added - i - 1) * sizeof *t->added);
            t->n_added--;
            for (int32_t j = 0; j < t->n_ids; j++)
                if (t->added_of[j] > i) t->added_of[j]--;
            break;
        }
    int32_t k = t->added_of[a->id];
    if (k < 0) {
        if (t->n_added == t->cap_added) {
            int32_t cap = t->cap_added ? t->cap_added * 2 : 32;
            fp_tok_added *n = fp_realloc(t->added, (size_t)cap * sizeof *n);
            if (!n) { free(c); return FP_ENOMEM; }
            t->added = n;
            t->cap_added = cap;
        }
        k = t->n_added++;
        t->added_of[a->id] = k;
    } else {
        free((char *)t->added[k].content);
    }
    t->added[k] = *a;
    t->added[k].content = c;
    return FP_OK;
}

static int trie_add(tok_trie *tr, const char *s, int32_t added_index) {
    const unsigned char *p = (const unsigned char *)s;
    int32_t parent = -1;
    for (size_t i = 0; p[i]; i++) {
        int32_t cur = parent < 0 ? tr->root[p[i]] : tr->nodes[parent].child, prev = -1;
        while (cur >= 0 && tr->nodes[cur].byte != p[i]) { prev = cur; cur = tr->nodes[cur].sibling; }
        if (cur < 0) {
            if (tr->n == tr->cap) {
                int32_t cap = tr->cap ? tr->cap * 2 : 256;
                tok_trie_node *n = fp_realloc(tr->nodes, (size_t)cap * sizeof *n);
                if (!n) return FP_ENOMEM;
                tr->nodes = n;
                tr->cap = cap;
            }
            cur = tr->n++;
            tr->nodes[cur] = (tok_trie_node){.child = -1, .sibling = -1, .added = -1, .byte = p[i]};
            if (parent < 0) tr->root[p[i]] = cur;
            else if (prev < 0) tr->nodes[parent].child = cur;
            else tr->nodes[prev].sibling = cur;
        }
        parent = cur;
    }
    if (parent >= 0) {
        tr->nodes[parent].added = added_index;
        tr->count++;
    }
    return FP_OK;
}

/* Dense table of the merges between two single-byte symbols (the first BPE step of every word). */
static int build_byte_pairs(fp_tokenizer *t) {
    if (!t->byte_pair && !(t->byte_pair = fp_malloc(65536 * sizeof *t->byte_pair))) return FP_ENOMEM;
    for (int a = 0; a < 256; a++)
        for (int b = 0; b < 256; b++) {
            int32_t *e = t->byte_pair[a * 256 + b];
            e[0] = -1;
            e[1] = -1;
            if (t->mmap && t->byte_id[a] >= 0 && t->byte_id[b] >= 0) e[0] = tok_merge_lookup(t, t->byte_id[a], t->byte_id[b], &e[1]);
        }
    return FP_OK;
}

int tok_rebuild_tries(fp_tokenizer *t) {
    int brc = build_byte_pairs(t);
    if (brc) return brc;
    tok_trie *ts[2] = {&t->raw_trie, &t->norm_trie};
    for (int k = 0; k < 2; k++) {
        ts[k]->n = 0;
        ts[k]->count = 0;
        for (int b = 0; b < 256; b++) ts[k]->root[b] = -1;
    }
    for (int32_t i = 0; i < t->n_added; i++) {
        const fp_tok_added *a = &t->added[i];
        if (a->normalized && t->nfc) {
            fp_buf nb = {0};
            int rc = fp_tok_nfc_append(&nb, a->content, strlen(a->content));
            if (!rc) rc = trie_add(&t->norm_trie, nb.data ? nb.data : "", i);
            fp_buf_free(&nb);
            if (rc) return rc;
        } else {
            int rc = trie_add(a->normalized ? &t->norm_trie : &t->raw_trie, a->content, i);
            if (rc) return rc;
        }
    }
    t->serial = tok_new_serial();
    return FP_OK;
}

/* ------------------------------------------------------------------ pre-tokenizer regex */
/* Oniguruma's \s (Unicode White_Space, as HF tokenizers uses) spelled out for PCRE2, whose \s lacks U+0085. */
#define WS_SET "\\t\\n\\x0b\\f\\r\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"

static char *translate_regex(const char *pat) {
    fp_buf b = {0};
    int in_class = 0;
    for (size_t i = 0; pat[i]; i++) {
        char c = pat[i];
        int rc = 0;
        if (c == '\\' && pat[i + 1]) {
            char e = pat[i + 1];
            if (e == 's') rc = fp_buf_printf(&b, in_class ? "%s" : "[%s]", WS_SET);
            else if (e == 'S' && !in_class) rc = fp_buf_printf(&b, "[^%s]", WS_SET);
            else rc = fp_buf_append(&b, pat + i, 2);
            i++;
        } else {
            if (c == '[' && !in_class) {
                in_class = 1;
                rc = fp_buf_append(&b, pat + i, 1);
                if (pat[i + 1] == '^') rc |= fp_buf_append(&b, pat + ++i, 1);
                if (pat[i + 1] == ']') rc |= fp_buf_append(&b, pat + ++i, 1); /* literal ] first in a class */
                if (rc) { fp_buf_free(&b); return NULL; }
                continue;
            }
            if (c == '[' && in_class) in_class++;
            else if (c == ']' && in_class) in_class--;
            rc = fp_buf_append(&b, pat + i, 1);
        }
        if (rc) { fp_buf_free(&b); return NULL; }
    }
    if (!b.data && fp_buf_append(&b, "", 0)) return NULL;
    return b.data;
}

static int add_split(fp_tokenizer *t, const char *pattern, int literal, int behavior) {
    tok_split *n = fp_realloc(t->splits, (size_t)(t->n_splits + 1) * sizeof *n);
    if (!n) return FP_ENOMEM;
    t->splits = n;
    tok_split *s = &t->splits[t->n_splits];
    memset(s, 0, sizeof *s);
    s->behavior = behavior;
    s->pattern = fp_strdup(pattern);
    if (!s->pattern) return FP_ENOMEM;
    t->n_splits++;
    char *tr = literal ? fp_strdup(pattern) : translate_regex(pattern);
    if (!tr) return FP_ENOMEM;
    int err;
    PCRE2_SIZE eoff;
    s->re = pcre2_compile((PCRE2_SPTR)tr, PCRE2_ZERO_TERMINATED, PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP),
                          &err, &eoff, NULL);
    free(tr);
    if (!s->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return fp_errorf(FP_EUNSUPPORTED, "%s: pre_tokenizer Split regex /%s/ is not supported: %s", t->source,
                         pattern, (const char *)msg);
    }
    pcre2_jit_compile(s->re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter if JIT is unavailable */
    return FP_OK;
}

/* The regex HF's ByteLevel pre-tokenizer applies when use_regex is true (GPT-2). */
static const char *const GPT2_REGEX = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

const char *fp_tokenizer_gguf_pre_regex(const char *pre) {
    if (!pre) return NULL;
    if (!strcmp(pre, "qwen2"))
        return "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    if (!strcmp(pre, "gpt2") || !strcmp(pre, "default")) return GPT2_REGEX;
    return NULL;
}

/* ------------------------------------------------------------------ lifetime */
static fp_tokenizer *tok_new(const char *source) {
    fp_tokenizer *t = fp_calloc(1, sizeof *t);
    if (!t) return NULL;
    t->source = fp_strdup(source ? source : "<tokenizer>");
    for (int b = 0; b < 256; b++) t->byte_id[b] = t->raw_trie.root[b] = t->norm_trie.root[b] = -1;
    t->mctx = pcre2_match_context_create(NULL);
    if (!t->source || !t->mctx) { free(t->source); pcre2_match_context_free(t->mctx); free(t); return NULL; }
    pcre2_set_match_limit(t->mctx, UINT32_MAX);
    pcre2_set_depth_limit(t->mctx, UINT32_MAX);
    pcre2_set_heap_limit(t->mctx, UINT32_MAX); /* KiB; only used when JIT is unavailable */
    return t;
}

void fp_tokenizer_free(fp_tokenizer *t) {
    if (!t) return;
    free(t->source);
    free(t->str_off);
    free(t->str_len);
    free(t->bytes_off);
    free(t->bytes_len);
    free(t->added_of);
    fp_buf_free(&t->pool);
    free(t->vmap.slots);
    free(t->merges);
    free(t->mmap);
    free(t->byte_pair);
    for (int32_t i = 0; i < t->n_added; i++) free((char *)t->added[i].content);
    free(t->added);
    free(t->raw_trie.nodes);
    free(t->norm_trie.nodes);
    for (int i = 0; i < t->n_splits; i++) {
        free(t->splits[i].pattern);
        pcre2_code_free(t->splits[i].re);
    }
    free(t->splits);
    free(t->cfg_bos);
    free(t->cfg_eos);
    free(t->cfg_pad);
    pcre2_match_context_free(t->mctx);
    free(t);
}

int fp_tokenizer_build(fp_tokenizer **out, const fp_tok_parts *p) {
    *out = NULL;
    if (!p || (p->n_tokens > 0 && !p->tokens) || p->n_tokens < 0 || p->n_merges < 0 || (p->n_merges && !p->merges))
        return fp_errorf(FP_EINVAL, "fp_tokenizer_build: bad arguments");
    fp_tokenizer *t = tok_new(p->source);
    if (!t) return FP_ENOMEM;
    t->nfc = p->nfc;
    int rc = tok_set_vocab(t, p->tokens, NULL, p->n_tokens);
    if (!rc) rc = tok_merges_alloc(t, p->n_merges);
    char *cat = NULL;
    size_t catcap = 0;
    for (int32_t i = 0; !rc && i < p->n_merges; i++) {
        const char *m = p->merges[i];
        size_t sp, n = m ? strlen(m) : 0;
        if (!m || tok_split_merge_str(m, n, &sp)) rc = fp_errorf(FP_EPARSE, "%s: merges[%d]: expected \"left right\"", t->source, (int)i);
        else rc = tok_add_merge(t, i, m, sp, m + sp + 1, n - sp - 1, &cat, &catcap);
    }
    free(cat);
    t->n_merges = p->n_merges;
    for (int32_t i = 0; !rc && i < p->n_added; i++) rc = add_added(t, &p->added[i]);
    if (!rc && p->pretok_regex) rc = add_split(t, p->pretok_regex, 0, FP_SPLIT_ISOLATED);
    if (!rc) rc = tok_rebuild_tries(t);
    if (rc) { fp_tokenizer_free(t); return rc; }
    *out = t;
    return FP_OK;
}

/* ------------------------------------------------------------------ tokenizer.json */
static int jbool(json_t *o, const char *k, bool dflt) {
    json_t *v = json_object_get(o, k);
    return v && json_is_boolean(v) ? json_is_true(v) : dflt;
}

static const char *jtype(json_t *o) {
    json_t *v = json_object_get(o, "type");
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int parse_normalizer(fp_tokenizer *t, json_t *n) {
    if (!n || json_is_null(n)) return FP_OK;
    const char *type = jtype(n);
    if (!json_is_object(n) || !type) return fp_errorf(FP_EPARSE, "%s: normalizer: expected an object with a \"type\"", t->source);
    if (!strcmp(type, "NFC")) { t->nfc = true; return FP_OK; }
    if (!strcmp(type, "Sequence")) {
        json_t *arr = json_object_get(n, "normalizers");
        if (!json_is_array(arr)) return fp_errorf(FP_EPARSE, "%s: normalizer: Sequence without \"normalizers\" array", t->source);
        size_t i;
        json_t *e;
        json_array_foreach(arr, i, e) {
            int rc = parse_normalizer(t, e);
            if (rc) return rc;
        }
        return FP_OK;
    }
    return fp_errorf(FP_EUNSUPPORTED, "%s: normalizer type \"%s\" is not supported (supported: NFC, Sequence)", t->source, type);
}

/* *byte_level is set when the ByteLevel stage has been seen; it must come last. */
static int parse_pretok(fp_tokenizer *t, json_t *p, int *byte_level) {
    if (!p || json_is_null(p)) return FP_OK;
    const char *type = jtype(p);
    if (!json_is_object(p) || !type) return fp_errorf(FP_EPARSE, "%s: pre_tokenizer: expected an object with a \"type\"", t->source);
    if (*byte_level)
        return fp_errorf(FP_EUNSUPPORTED, "%s: pre_tokenizer \"%s\" after ByteLevel is not supported", t->source, type);
    if (!strcmp(type, "Sequence")) {
        json_t *arr = json_object_get(p, "pretokenizers");
        if (!json_is_array(arr)) return fp_errorf(FP_EPARSE, "%s: pre_tokenizer: Sequence without \"pretokenizers\" array", t->source);
        size_t i;
        json_t *e;
        json_array_foreach(arr, i, e) {
            int rc = parse_pretok(t, e, byte_level);
            if (rc) return rc;
        }
        return FP_OK;
    }
    if (!strcmp(type, "Split")) {
        json_t *pat = json_object_get(p, "pattern");
        json_t *re = json_object_get(pat, "Regex"), *str = json_object_get(pat, "String");
        if (!json_is_string(re) && !json_is_string(str))
            return fp_errorf(FP_EPARSE, "%s: pre_tokenizer Split: \"pattern\" must be {\"Regex\": ...} or {\"String\": ...}", t->source);
        json_t *beh = json_object_get(p, "behavior");
        const char *b = json_is_string(beh) ? json_string_value(beh) : "";
        int behavior;
        if (!strcmp(b, "Isolated")) behavior = FP_SPLIT_ISOLATED;
        else if (!strcmp(b, "Removed")) behavior = FP_SPLIT_REMOVED;
        else return fp_errorf(FP_EUNSUPPORTED, "%s: pre_tokenizer Split behavior \"%s\" is not supported (supported: Isolated, Removed)", t->source, b);
        if (jbool(p, "invert", false)) return fp_errorf(FP_EUNSUPPORTED, "%s: pre_tokenizer Split with invert=true is not supported", t->source);
        return add_split(t, json_string_value(json_is_string(re) ? re : str), !json_is_string(re), behavior);
    }
    if (!strcmp(type, "ByteLevel")) {
        if (jbool(p, "add_prefix_space", false))
            return fp_errorf(FP_EUNSUPPORTED, "%s: pre_tokenizer ByteLevel with add_prefix_space=true is not supported", t->source);
        *byte_level = 1;
        if (jbool(p, "use_regex", true)) return add_split(t, GPT2_REGEX, 0, FP_SPLIT_ISOLATED);
        return FP_OK;
    }
    return fp_errorf(FP_EUNSUPPORTED, "%s: pre_tokenizer type \"%s\" is not supported (supported: Split, ByteLevel, Sequence)", t->source, type);
}

static int parse_decoder(fp_tokenizer *t, json_t *d) {
    if (!d || json_is_null(d)) return FP_OK;
    const char *type = jtype(d);
    if (!json_is_object(d) || !type) return fp_errorf(FP_EPARSE, "%s: decoder: expected an object with a \"type\"", t->source);
    if (!strcmp(type, "ByteLevel")) return FP_OK;
    if (!strcmp(type, "Sequence")) {
        json_t *arr = json_object_get(d, "decoders");
        size_t i;
        json_t *e;
        json_array_foreach(arr, i, e) {
            int rc = parse_decoder(t, e);
            if (rc) return rc;
        }
        return FP_OK;
    }
    return fp_errorf(FP_EUNSUPPORTED, "%s: decoder type \"%s\" is not supported (supported: ByteLevel)", t->source, type);
}

static int parse_added_obj(fp_tokenizer *t, json_t *o, int32_t id, const char *where) {
    json_t *c = json_object_get(o, "content");
    if (!json_is_object(o) || !json_is_string(c))
        return fp_errorf(FP_EPARSE, "%s: %s: expected an object with a string \"content\"", t->source, where);
    if (strlen(json_string_value(c)) != json_string_length(c))
        return fp_errorf(FP_EPARSE, "%s: %s: content contains a NUL character", t->source, where);
    fp_tok_added a = {.id = id,
                      .content = json_string_value(c),
                      .special = jbool(o, "special", false),
                      .lstrip = jbool(o, "lstrip", false),
                      .rstrip = jbool(o, "rstrip", false),
                      .single_word = jbool(o, "single_word", false),
                      .normalized = jbool(o, "normalized", !jbool(o, "special", false))};
    int rc = add_added(t, &a);
    if (rc && rc != FP_ENOMEM) fp_error_prefix("%s: ", where);
    return rc;
}

static int parse_model(fp_tokenizer *t, json_t *model, int vocab_done) {
    if (!json_is_object(model)) return fp_errorf(FP_EPARSE, "%s: missing \"model\" object", t->source);
    const char *type = jtype(model);
    if (type && strcmp(type, "BPE"))
        return fp_errorf(FP_EUNSUPPORTED, "%s: model type \"%s\" is not supported (supported: BPE)", t->source, type);
    json_t *v = json_object_get(model, "dropout");
    if (v && !json_is_null(v) && json_number_value(v) != 0.0)
        return fp_errorf(FP_EUNSUPPORTED, "%s: model.dropout is not supported", t->source);
    const char *fields[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        v = json_object_get(model, fields[i]);
        if (json_is_string(v) && json_string_length(v) > 0)
            return fp_errorf(FP_EUNSUPPORTED, "%s: model.%s \"%s\" is not supported", t->source, fields[i], json_string_value(v));
    }
    t->ignore_merges = jbool(model, "ignore_merges", false);
    if (vocab_done) return FP_OK; /* vocab and merges came from the fast path */
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    if (!json_is_object(vocab)) return fp_errorf(FP_EPARSE, "%s: model.vocab: expected an object", t->source);
    if (!json_is_array(merges)) return fp_errorf(FP_EPARSE, "%s: model.merges: expected an array", t->source);
    /* vocab: id -> string */
    int64_t maxid = -1;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= INT32_MAX / 2)
            return fp_errorf(FP_EPARSE, "%s: model.vocab[\"%.80s\"]: id must be a non-negative integer", t->source, key);
        if (json_integer_value(val) > maxid) maxid = json_integer_value(val);
    }
    int32_t n = (int32_t)(maxid + 1);
    const char **by_id = fp_calloc((size_t)n + 1, sizeof *by_id);
    size_t *lens = fp_calloc((size_t)n + 1, sizeof *lens);
    if (!by_id || !lens) { free(by_id); free(lens); return FP_ENOMEM; }
    int rc = FP_OK;
    json_object_foreach(vocab, key, val) {
        int32_t id = (int32_t)json_integer_value(val);
        if (by_id[id]) {
            rc = fp_errorf(FP_EPARSE, "%s: model.vocab: id %d is used by \"%.80s\" and \"%.80s\"", t->source, (int)id, by_id[id], key);
            break;
        }
        by_id[id] = key;
        lens[id] = json_object_iter_key_len(json_object_key_to_iter(key));
    }
    if (!rc) rc = tok_set_vocab(t, by_id, lens, n);
    free(by_id);
    free(lens);
    if (rc) return rc;
    /* merges */
    size_t nm = json_array_size(merges);
    if (nm >= (size_t)INT32_MAX) return fp_errorf(FP_ERANGE, "%s: too many merges", t->source);
    if ((rc = tok_merges_alloc(t, (int32_t)nm))) return rc;
    char *cat = NULL;
    size_t catcap = 0;
    for (size_t i = 0; i < nm && !rc; i++) {
        json_t *m = json_array_get(merges, i);
        if (json_is_string(m)) {
            const char *s = json_string_value(m);
            size_t len = json_string_length(m), sp;
            if (tok_split_merge_str(s, len, &sp) || memchr(s + sp + 1, ' ', len - sp - 1))
                rc = fp_errorf(FP_EPARSE, "%s: model.merges[%zu]: expected \"left right\", got \"%.80s\"", t->source, i, s);
            else rc = tok_add_merge(t, (int32_t)i, s, sp, s + sp + 1, len - sp - 1, &cat, &catcap);
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            json_t *a = json_array_get(m, 0), *b = json_array_get(m, 1);
            rc = tok_add_merge(t, (int32_t)i, json_string_value(a), json_string_length(a), json_string_value(b),
                           json_string_length(b), &cat, &catcap);
        } else {
            rc = fp_errorf(FP_EPARSE, "%s: model.merges[%zu]: expected a string \"a b\" or a pair [\"a\", \"b\"]", t->source, i);
        }
    }
    free(cat);
    t->n_merges = (int32_t)nm;
    return rc;
}

static int cfg_token_string(json_t *cfg, const char *name, char **out) {
    json_t *v = json_object_get(cfg, name);
    if (json_is_object(v)) v = json_object_get(v, "content");
    if (!json_is_string(v)) return FP_OK;
    *out = fp_strdup(json_string_value(v));
    return *out ? FP_OK : FP_ENOMEM;
}

static int parse_config(fp_tokenizer *t, const char *path) {
    json_t *cfg;
    int rc = fp_json_load_file(&cfg, path);
    if (rc) return rc;
    char *saved = t->source;
    t->source = (char *)path;
    if (!json_is_object(cfg)) rc = fp_errorf(FP_EPARSE, "%s: expected a JSON object", path);
    json_t *atd = json_object_get(cfg, "added_tokens_decoder");
    if (!rc && atd && !json_is_object(atd)) rc = fp_errorf(FP_EPARSE, "%s: added_tokens_decoder: expected an object", path);
    if (!rc && atd) {
        const char *key;
        json_t *val;
        json_object_foreach(atd, key, val) {
            char *end;
            long id = strtol(key, &end, 10);
            char where[128];
            snprintf(where, sizeof where, "added_tokens_decoder[\"%.40s\"]", key);
            if (*end || end == key || id < 0 || id >= INT32_MAX / 2) { rc = fp_errorf(FP_EPARSE, "%s: %s: key is not a token id", path, where); break; }
            json_t *c = json_object_get(val, "content");
            /* an id already defined with the same content keeps the flags of tokenizer.json */
            if (id < t->n_ids && t->added_of[id] >= 0 && json_is_string(c) &&
                !strcmp(t->added[t->added_of[id]].content, json_string_value(c)))
                continue;
            if ((rc = parse_added_obj(t, val, (int32_t)id, where))) break;
        }
    }
    if (!rc) rc = cfg_token_string(cfg, "bos_token", &t->cfg_bos);
    if (!rc) rc = cfg_token_string(cfg, "eos_token", &t->cfg_eos);
    if (!rc) rc = cfg_token_string(cfg, "pad_token", &t->cfg_pad);
    t->source = saved;
    json_decref(cfg);
    return rc;
}

static int load_json(fp_tokenizer *t, const char *path) {
    char *data;
    size_t len;
    int rc = fp_read_file(path, &data, &len);
    if (rc) return rc;
    int fast = 0;
    if ((rc = tok_fast_model(t, data, len, &fast))) { free(data); return rc; }
    json_error_t err;
    json_t *root = json_loadb(data, len, JSON_ALLOW_NUL, &err);
    free(data);
    if (!root) return fp_errorf(FP_EPARSE, "%s:%d:%d: malformed JSON: %s", path, err.line, err.column, err.text);
    if (!json_is_object(root)) rc = fp_errorf(FP_EPARSE, "%s: expected a JSON object", path);
    int byte_level = 0;
    if (!rc) rc = parse_model(t, json_object_get(root, "model"), fast);
    if (!rc) rc = parse_normalizer(t, json_object_get(root, "normalizer"));
    if (!rc) rc = parse_pretok(t, json_object_get(root, "pre_tokenizer"), &byte_level);
    if (!rc && !byte_level)
        rc = fp_errorf(FP_EUNSUPPORTED, "%s: pre_tokenizer has no ByteLevel stage; only byte-level BPE is supported", path);
    if (!rc) rc = parse_decoder(t, json_object_get(root, "decoder"));
    json_t *added = json_object_get(root, "added_tokens");
    if (!rc && added && !json_is_array(added) && !json_is_null(added))
        rc = fp_errorf(FP_EPARSE, "%s: added_tokens: expected an array", path);
    if (!rc && json_is_array(added)) {
        size_t i;
        json_t *a;
        json_array_foreach(added, i, a) {
            json_t *id = json_object_get(a, "id");
            char where[64];
            snprintf(where, sizeof where, "added_tokens[%zu]", i);
            if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= INT32_MAX / 2) {
                rc = fp_errorf(FP_EPARSE, "%s: %s: missing or bad \"id\"", path, where);
                break;
            }
            if ((rc = parse_added_obj(t, a, (int32_t)json_integer_value(id), where))) break;
        }
    }
    json_decref(root);
    return rc;
}

int fp_tokenizer_load(fp_tokenizer **out, const char *path) {
    *out = NULL;
    if (!path || !*path) return fp_errorf(FP_EINVAL, "fp_tokenizer_load: no path given");
    struct stat st;
    if (stat(path, &st) != 0) return fp_errorf(FP_EIO, "%s: no such file or directory", path);
    fp_buf file = {0}, cfg = {0};
    int rc;
    if (S_ISDIR(st.st_mode)) {
        rc = fp_buf_printf(&file, "%s/tokenizer.json", path);
        if (!rc) rc = fp_buf_printf(&cfg, "%s/tokenizer_config.json", path);
    } else {
        rc = fp_buf_printf(&file, "%s", path);
        const char *slash = strrchr(path, '/');
        if (!rc) rc = slash ? fp_buf_printf(&cfg, "%.*s/tokenizer_config.json", (int)(slash - path), path)
                            : fp_buf_printf(&cfg, "tokenizer_config.json");
    }
    fp_tokenizer *t = NULL;
    if (!rc && stat(file.data, &st) != 0) rc = fp_errorf(FP_EIO, "%s: no tokenizer.json found", path);
    if (!rc && !(t = tok_new(file.data))) rc = FP_ENOMEM;
    if (!rc) rc = load_json(t, file.data);
    if (!rc && stat(cfg.data, &st) == 0) rc = parse_config(t, cfg.data);
    if (!rc) rc = tok_rebuild_tries(t);
    fp_buf_free(&file);
    fp_buf_free(&cfg);
    if (rc) { fp_tokenizer_free(t); return rc; }
    *out = t;
    return FP_OK;
}

/* ------------------------------------------------------------------ accessors */
int32_t fp_tokenizer_token_to_id(const fp_tokenizer *t, const char *token) {
    if (!t || !token) return -1;
    for (int32_t i = 0; i < t->n_added; i++)
        if (!strcmp(t->added[i].content, token)) return t->added[i].id;
    return tok_vocab_find(t, token, strlen(token));
}

const char *fp_tokenizer_id_to_token(const fp_tokenizer *t, int32_t id) {
    if (!t || id < 0 || id >= t->n_ids) return NULL;
    if (t->added_of[id] >= 0) return t->added[t->added_of[id]].content;
    return t->str_len[id] == UINT32_MAX ? NULL : tok_str(t, id);
}

int fp_tokenizer_is_special(const fp_tokenizer *t, int32_t id) {
    return t && id >= 0 && id < t->n_ids && t->added_of[id] >= 0 && t->added[t->added_of[id]].special;
}

size_t fp_tokenizer_vocab_size(const fp_tokenizer *t) { return t ? (size_t)t->n_ids : 0; }
int32_t fp_tokenizer_n_vocab(const fp_tokenizer *t) { return t->n_vocab; }
const char *fp_tokenizer_vocab_token(const fp_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->n_ids || t->str_len[id] == UINT32_MAX) return NULL;
    return tok_str(t, id);
}
int32_t fp_tokenizer_n_merges(const fp_tokenizer *t) { return t->n_merges; }
int fp_tokenizer_merge(const fp_tokenizer *t, int32_t i, const char **left, const char **right) {
    if (i < 0 || i >= t->n_merges) return fp_errorf(FP_ERANGE, "merge index %d out of range", (int)i);
    *left = tok_str(t, t->merges[i][0]);
    *right = tok_str(t, t->merges[i][1]);
    return FP_OK;
}
int32_t fp_tokenizer_n_added(const fp_tokenizer *t) { return t->n_added; }
const fp_tok_added *fp_tokenizer_added(const fp_tokenizer *t, int32_t i) {
    return i >= 0 && i < t->n_added ? &t->added[i] : NULL;
}
const char *fp_tokenizer_pretok_regex(const fp_tokenizer *t) { return t->n_splits ? t->splits[0].pattern : NULL; }
bool fp_tokenizer_has_nfc(const fp_tokenizer *t) { return t->nfc; }
const char *fp_tokenizer_config_token(const fp_tokenizer *t, const char *name) {
    if (!strcmp(name, "bos_token")) return t->cfg_bos;
    if (!strcmp(name, "eos_token")) return t->cfg_eos;
    if (!strcmp(name, "pad_token")) return t->cfg_pad;
    return NULL;
}

int fp_tokenizer_set_step_token(fp_tokenizer *t, const char *token, int32_t id, int32_t *out_id) {
    if (!t || !token || !*token) return fp_errorf(FP_EINVAL, "fp_tokenizer_set_step_token: empty token");
    if (id < -1 || id >= INT32_MAX / 2) return fp_errorf(FP_EINVAL, "fp_tokenizer_set_step_token: bad id %d", (int)id);
    if (id < 0) {
        id = fp_tokenizer_token_to_id(t, token);
        if (id < 0) id = t->n_ids;
    }
    if (id < t->n_ids && t->added_of[id] >= 0 && !strcmp(t->added[t->added_of[id]].content, token) &&
        t->added[t->added_of[id]].special) {
        if (out_id) *out_id = id;
        return FP_OK;
    }
    fp_tok_added a = {.id = id, .content = token, .special = true};
    int rc = add_added(t, &a);
    if (!rc) rc = tok_rebuild_tries(t);
    if (rc) return rc;
    if (out_id) *out_id = id;
    return FP_OK;
}
