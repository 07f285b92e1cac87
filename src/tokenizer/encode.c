/* Encoding and decoding: added-token matching, NFC, regex pre-tokenization, byte-level BPE with a
 * per-thread word cache. */
#include "tokenizer/tok_impl.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ------------------------------------------------------------------ UTF-8 helpers */
static size_t u8len(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

static uint32_t u8dec(const unsigned char *s, size_t *k) {
    unsigned c = s[0];
    if (c < 0x80) { *k = 1; return c; }
    if (c < 0xE0) { *k = 2; return ((c & 0x1F) << 6) | (s[1] & 0x3F); }
    if (c < 0xF0) { *k = 3; return ((c & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F); }
    *k = 4;
    return ((c & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F);
}

/* Start of the UTF-8 character that ends just before position i (i > 0). */
static size_t u8prev(const unsigned char *s, size_t i) {
    do i--; while (i > 0 && (s[i] & 0xC0) == 0x80);
    return i;
}

/* Unicode White_Space (Rust char::is_whitespace). */
static int is_ws(uint32_t c) {
    return (c >= 9 && c <= 13) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* A "word" character for single_word added tokens (regex \w: letters, marks, digits, connector punct.). */
static int is_word(uint32_t c) {
    if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (c == 0x200C || c == 0x200D) return 1;
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_ME) || k == UTF8PROC_CATEGORY_ND ||
           k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_PC;
}

/* ------------------------------------------------------------------ NFC */
/* Combining marks / decomposable characters that HF tokenizers' NFC (Rust unicode-normalization, older
 * Unicode data) leaves alone while newer Unicode data (utf8proc) would reorder or compose them.  Found by
 * comparing tokenizers.normalizers.NFC with Python's unicodedata over every code point with a non-zero
 * combining class or a decomposition (pyref, tokenizers 0.23.1).  They act as inert starters. */
static const uint32_t hf_nfc_inert[][2] = {
    {0x7FD, 0x7FD}, {0x897, 0x89F}, {0x8CA, 0x8D3}, {0x9FE, 0x9FE}, {0xC3C, 0xC3C}, {0xD3B, 0xD3C},
    {0xEBA, 0xEBA}, {0x1715, 0x1715}, {0x1ABF, 0x1ACE}, {0x1DF6, 0x1DFA}, {0xA82C, 0xA82C}, {0x10D24, 0x10D27},
    {0x10D69, 0x10D6D}, {0x10EAB, 0x10EAC}, {0x10EFD, 0x10EFF}, {0x10F46, 0x10F50}, {0x10F82, 0x10F85}, {0x11070, 0x11070},
    {0x1133B, 0x1133B}, {0x113CE, 0x113D0}, {0x1145E, 0x1145E}, {0x11839, 0x1183A}, {0x1193D, 0x1193E}, {0x11943, 0x11943},
    {0x119E0, 0x119E0}, {0x11A34, 0x11A34}, {0x11A47, 0x11A47}, {0x11A99, 0x11A99}, {0x11D42, 0x11D42}, {0x11D44, 0x11D45},
    {0x11D97, 0x11D97}, {0x11F41, 0x11F42}, {0x1612F, 0x1612F}, {0x16FF0, 0x16FF1}, {0x1E08F, 0x1E08F}, {0x1E130, 0x1E136},
    {0x1E2AE, 0x1E2AE}, {0x1E2EC, 0x1E2EF}, {0x1E4EC, 0x1E4EF}, {0x1E5EE, 0x1E5EF}};

static int hf_inert(uint32_t cp) {
    size_t lo = 0, hi = sizeof hf_nfc_inert / sizeof hf_nfc_inert[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < hf_nfc_inert[mid][0]) hi = mid;
        else if (cp > hf_nfc_inert[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

/* 1: an NFC-stable starter that never combines with a preceding character, so text may be cut before it
 * without changing its NFC form; 2: an inert character (cut before and after it); 0: anything else. */
static int nfc_boundary(uint32_t cp) {
    if (cp < 0x300 || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0xAC00 && cp <= 0xD7A3))
        return 1;
    return hf_inert(cp) ? 2 : 0;
}

/* 0 when s has no code point >= U+0300 (then NFC leaves it unchanged). */
static int nfc_maybe_changes(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    for (size_t i = 0; i < n; i++)
        if (s[i] >= 0xCC) return 1;
    return 0;
}

int fp_tok_nfc_append(fp_buf *out, const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    size_t copied = 0, i = 0, prev = 0; /* prev: start of the previous character */
    int have_prev = 0;
    while (i < n) {
        if (s[i] < 0xCC) { /* ASCII, continuation bytes and lead bytes of code points < U+0300 */
            prev = i;
            have_prev = 1;
            i += u8len(s[i]);
            continue;
        }
        size_t k;
        uint32_t cp = u8dec(s + i, &k);
        int b = nfc_boundary(cp);
        if (b) { prev = i; have_prev = b == 1; i += k; continue; }
        size_t seg = have_prev ? prev : i, j = i + k;
        while (j < n) {
            if (s[j] < 0xCC) break;
            uint32_t c2 = u8dec(s + j, &k);
            if (nfc_boundary(c2)) break;
            j += k;
        }
        if (fp_buf_append(out, s + copied, seg - copied)) return FP_ENOMEM;
        utf8proc_uint8_t *dst = NULL;
        utf8proc_ssize_t m = utf8proc_map(s + seg, (utf8proc_ssize_t)(j - seg), &dst, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (m < 0) {
            free(dst);
            if (m == UTF8PROC_ERROR_NOMEM) return fp_errorf(FP_ENOMEM, "out of memory in NFC normalization");
            return fp_errorf(FP_EINVAL, "NFC normalization failed: %s", utf8proc_errmsg(m));
        }
        int rc = fp_buf_append(out, dst, (size_t)m);
        free(dst);
        if (rc) return rc;
        copied = i = j;
        have_prev = 0;
    }
    return fp_buf_append(out, s + copied, n - copied);
}

/* ------------------------------------------------------------------ per-thread BPE cache */
typedef struct {
    uint64_t h;
    uint32_t klen, nids; /* klen 0: empty slot */
    int32_t *ids;        /* ids followed by the key bytes, one allocation */
} centry;
typedef struct {
    uint64_t serial;
    uint32_t mask, count;
    centry *tab;
} tcache;

enum { CACHE_SLOTS = 1 << 15, CACHE_MAX_KEY = 96 };
static _Thread_local tcache *tl_cache;
static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static int cache_key_ok;

static void cache_clear(tcache *c) {
    for (uint32_t i = 0; i <= c->mask; i++)
        if (c->tab[i].klen) { free(c->tab[i].ids); c->tab[i].klen = 0; }
    c->count = 0;
}
static void cache_destroy(void *p) {
    tcache *c = p;
    if (!c) return;
    cache_clear(c);
    free(c->tab);
    free(c);
}
static void cache_key_init(void) { cache_key_ok = pthread_key_create(&cache_key, cache_destroy) == 0; }

static tcache *cache_get(const fp_tokenizer *t) {
    tcache *c = tl_cache;
    if (!c) {
        pthread_once(&cache_once, cache_key_init);
        if (!cache_key_ok) return NULL;
        c = calloc(1, sizeof *c);
        if (!c) return NULL;
        c->tab = calloc(CACHE_SLOTS, sizeof *c->tab);
        if (!c->tab) { free(c); return NULL; }
        c->mask = CACHE_SLOTS - 1;
        pthread_setspecific(cache_key, c);
        tl_cache = c;
    }
    if (c->serial != t->serial) {
        cache_clear(c);
        c->serial = t->serial;
    }
    return c;
}

/* ------------------------------------------------------------------ encode context */
typedef struct {
    int32_t rank, pos;
} hitem;

enum { SMALL_BPE = 128 }; /* pieces up to this many symbols use the flat-array BPE */

typedef struct {
    const fp_tokenizer *t;
    int32_t *out;
    size_t n, cap;
    fp_buf nbuf;                 /* normalized text */
    pcre2_match_data **md;       /* one per split stage */
    int32_t *sym, *prev, *next;
    size_t symcap;
    int32_t rank[SMALL_BPE], nid[SMALL_BPE]; /* pair ranks / merged ids for bpe_small */
    hitem *heap;
    size_t heapn, heapcap;
    tcache *cache;
    char *blbuf;                 /* byte-level form of a piece (ignore_merges) */
    size_t blcap;
} ectx;

static int out_push(ectx *c, const int32_t *ids, size_t k) {
    if (c->n + k > c->cap) {
        size_t cap = c->cap ? c->cap : 256;
        while (cap < c->n + k) cap *= 2;
        int32_t *o = fp_realloc(c->out, cap * sizeof *o);
        if (!o) return FP_ENOMEM;
        c->out = o;
        c->cap = cap;
    }
    memcpy(c->out + c->n, ids, k * sizeof *ids);
    c->n += k;
    return FP_OK;
}

static int sym_reserve(ectx *c, size_t n) {
    if (n <= c->symcap) return FP_OK;
    size_t cap = c->symcap ? c->symcap : 64;
    while (cap < n) cap *= 2;
    int32_t **arrs[3] = {&c->sym, &c->prev, &c->next};
    for (int i = 0; i < 3; i++) {
        int32_t *p = fp_realloc(*arrs[i], cap * sizeof(int32_t));
        if (!p) return FP_ENOMEM;
        *arrs[i] = p;
    }
    c->symcap = cap;
    return FP_OK;
}

/* min-heap on (rank, pos) */
static int heap_push(ectx *c, int32_t rank, int32_t pos) {
    if (c->heapn == c->heapcap) {
        size_t cap = c->heapcap ? c->heapcap * 2 : 256;
        hitem *h = fp_realloc(c->heap, cap * sizeof *h);
        if (!h) return FP_ENOMEM;
        c->heap = h;
        c->heapcap = cap;
    }
    size_t i = c->heapn++;
    hitem it = {rank, pos};
    while (i > 0) {
        size_t p = (i - 1) / 2;
        hitem *hp = &c->heap[p];
        if (hp->rank < rank || (hp->rank == rank && hp->pos < pos)) break;
        c->heap[i] = *hp;
        i = p;
    }
    c->heap[i] = it;
    return FP_OK;
}

static hitem heap_pop(ectx *c) {
    hitem top = c->heap[0], last = c->heap[--c->heapn];
    size_t i = 0, n = c->heapn;
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        hitem best = last;
        if (l < n && (c->heap[l].rank < best.rank || (c->heap[l].rank == best.rank && c->heap[l].pos < best.pos))) { m = l; best = c->heap[l]; }
        if (l + 1 < n && (c->heap[l + 1].rank < best.rank || (c->heap[l + 1].rank == best.rank && c->heap[l + 1].pos < best.pos))) { m = l + 1; best = c->heap[l + 1]; }
        if (m == i) break;
        c->heap[i] = c->heap[m];
        i = m;
    }
    if (n) c->heap[i] = last;
    return top;
}

/* BPE on sym[0..n) in place; returns the new count.  Always merges the lowest-rank adjacent pair, leftmost
 * first (the order HF's priority queue produces). */
static size_t bpe_small(ectx *c, size_t n, const unsigned char *bytes) {
    const fp_tokenizer *t = c->t;
    int32_t *sym = c->sym, *rank = c->rank, *nid = c->nid;
    for (size_t i = 0; i + 1 < n; i++) {
        if (bytes) { /* symbols are still the bytes' ids: dense table */
            const int32_t *e = t->byte_pair[bytes[i] * 256 + bytes[i + 1]];
            rank[i] = e[0];
            nid[i] = e[1];
        } else {
            rank[i] = tok_merge_lookup(t, sym[i], sym[i + 1], &nid[i]);
        }
        if (rank[i] < 0) rank[i] = INT32_MAX;
    }
    while (n > 1) {
        size_t best = 0;
        for (size_t i = 1; i + 1 < n; i++)
            if (rank[i] < rank[best]) best = i;
        if (rank[best] == INT32_MAX) break;
        sym[best] = nid[best];
        size_t tail = n - best - 2;
        memmove(sym + best + 1, sym + best + 2, tail * sizeof *sym);
        memmove(rank + best + 1, rank + best + 2, (tail ? tail - 1 : 0) * sizeof *rank);
        memmove(nid + best + 1, nid + best + 2, (tail ? tail - 1 : 0) * sizeof *nid);
        n--;
        if (best > 0) {
            rank[best - 1] = tok_merge_lookup(t, sym[best - 1], sym[best], &nid[best - 1]);
            if (rank[best - 1] < 0) rank[best - 1] = INT32_MAX;
        }
        if (best + 1 < n) {
            rank[best] = tok_merge_lookup(t, sym[best], sym[best + 1], &nid[best]);
            if (rank[best] < 0) rank[best] = INT32_MAX;
        }
    }
    return n;
}

static int bpe_large(ectx *c, size_t n, size_t *out_n) {
    const fp_tokenizer *t = c->t;
    int32_t *sym = c->sym, *prev = c->prev, *next = c->next;
    c->heapn = 0;
    for (size_t i = 0; i < n; i++) {
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    int32_t nw;
    for (size_t i = 0; i + 1 < n; i++) {
        int32_t r = tok_merge_lookup(t, sym[i], sym[i + 1], &nw);
        if (r >= 0 && heap_push(c, r, (int32_t)i)) return FP_ENOMEM;
    }
    while (c->heapn) {
        hitem h = heap_pop(c);
        int32_t p = h.pos, q = next[p];
        if (sym[p] < 0 || q < 0) continue;
        int32_t r = tok_merge_lookup(t, sym[p], sym[q], &nw);
        if (r != h.rank) continue; /* stale entry */
        sym[p] = nw;
        sym[q] = -1;
        next[p] = next[q];
        if (next[q] >= 0) prev[next[q]] = p;
        if (prev[p] >= 0) {
            int32_t r2 = tok_merge_lookup(t, sym[prev[p]], sym[p], &nw);
            if (r2 >= 0 && heap_push(c, r2, prev[p])) return FP_ENOMEM;
        }
        if (next[p] >= 0) {
            int32_t r2 = tok_merge_lookup(t, sym[p], sym[next[p]], &nw);
            if (r2 >= 0 && heap_push(c, r2, p)) return FP_ENOMEM;
        }
    }
    size_t k = 0;
    for (int32_t i = 0; i >= 0; i = next[i]) sym[k++] = sym[i];
    *out_n = k;
    return FP_OK;
}

/* BPE of one pre-token piece (raw bytes), appended to the output. */
static int bpe_piece(ectx *c, const unsigned char *s, size_t n) {
    const fp_tokenizer *t = c->t;
    if (n == 0) return FP_OK;
    if (n == 1) return t->byte_id[s[0]] >= 0 ? out_push(c, &t->byte_id[s[0]], 1) : FP_OK;
    uint64_t h = 0;
    centry *slot = NULL;
    if (c->cache && n <= CACHE_MAX_KEY) {
        h = tok_hash(s, n);
        tcache *ca = c->cache;
        uint32_t i = (uint32_t)h & ca->mask;
        for (;; i = (i + 1) & ca->mask) {
            centry *e = &ca->tab[i];
            if (!e->klen) { slot = e; break; }
            if (e->h == h && e->klen == n && !memcmp((char *)(e->ids + e->nids), s, n)) return out_push(c, e->ids, e->nids);
        }
    }
    if (t->ignore_merges) {
        if (n * 2 > c->blcap) {
            char *b = fp_realloc(c->blbuf, n * 2 + 16);
            if (!b) return FP_ENOMEM;
            c->blbuf = b;
            c->blcap = n * 2 + 16;
        }
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
            uint32_t cp = fp_bytelevel_char(s[i]);
            if (cp < 0x80) c->blbuf[o++] = (char)cp;
            else { c->blbuf[o++] = (char)(0xC0 | (cp >> 6)); c->blbuf[o++] = (char)(0x80 | (cp & 0x3F)); }
        }
        int32_t id = tok_vocab_find(t, c->blbuf, o);
        if (id >= 0) return out_push(c, &id, 1);
    }
    if (n > (size_t)INT32_MAX - 1) return fp_errorf(FP_ERANGE, "pre-token of %zu bytes is too long", n);
    int rc = sym_reserve(c, n);
    if (rc) return rc;
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (t->byte_id[s[i]] >= 0) c->sym[m++] = t->byte_id[s[i]];
    if (m <= SMALL_BPE) m = bpe_small(c, m, m == n ? s : NULL);
    else if ((rc = bpe_large(c, m, &m))) return rc;
    if (slot) {
        tcache *ca = c->cache;
        if ((ca->count + 1) * 2 > ca->mask + 1) { /* full: start over */
            cache_clear(ca);
            uint32_t i = (uint32_t)h & ca->mask;
            slot = &ca->tab[i];
        }
        int32_t *mem = malloc(m * sizeof(int32_t) + n);
        if (mem) {
            memcpy(mem, c->sym, m * sizeof(int32_t));
            memcpy((char *)(mem + m), s, n);
            *slot = (centry){.h = h, .klen = (uint32_t)n, .nids = (uint32_t)m, .ids = mem};
            ca->count++;
        }
    }
    return out_push(c, c->sym, m);
}

/* Applies split stage k (and the following ones) to s[0..n), then BPE. */
static int pretok(ectx *c, int k, const char *s, size_t n) {
    const fp_tokenizer *t = c->t;
    if (n == 0) return FP_OK;
    if (k == t->n_splits) return bpe_piece(c, (const unsigned char *)s, n);
    const tok_split *sp = &t->splits[k];
    if (!c->md[k] && !(c->md[k] = pcre2_match_data_create_from_pattern(sp->re, NULL))) return fp_errorf(FP_ENOMEM, "out of memory");
    size_t pos = 0, last = 0;
    int rc;
    while (pos < n) {
        int m = pcre2_match(sp->re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, c->md[k], t->mctx);
        if (m == PCRE2_ERROR_NOMATCH) break;
        if (m < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(m, msg, sizeof msg);
            return fp_errorf(FP_ERANGE, "pre-tokenizer regex failed at byte %zu: %s", pos, (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md[k]);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { /* empty match: step over one character */
            if (ms >= n) break;
            pos = ms + u8len((unsigned char)s[ms]);
            continue;
        }
        if (ms > last && (rc = pretok(c, k + 1, s + last, ms - last))) return rc;
        if (sp->behavior == FP_SPLIT_ISOLATED && (rc = pretok(c, k + 1, s + ms, me - ms))) return rc;
        last = pos = me;
    }
    return last < n ? pretok(c, k + 1, s + last, n - last) : FP_OK;
}

/* Leftmost-longest added-token match in s[from..n) (trie tr); applies single_word / lstrip / rstrip.
 * Returns 1 and the (stripped) span and token index, or 0. */
static int find_added(const fp_tokenizer *t, const tok_trie *tr, const char *str, size_t n, size_t from, size_t *ms,
                      size_t *me, int32_t *which) {
    const unsigned char *s = (const unsigned char *)str;
    for (size_t i = from; i < n; i++) {
        int32_t node = tr->root[s[i]];
        if (node < 0) continue;
        int32_t best = -1;
        size_t best_end = 0, j = i;
        for (;;) {
            if (tr->nodes[node].added >= 0) { best = tr->nodes[node].added; best_end = j + 1; }
            if (++j >= n) break;
            int32_t ch = tr->nodes[node].child;
            while (ch >= 0 && tr->nodes[ch].byte != s[j]) ch = tr->nodes[ch].sibling;
            if (ch < 0) break;
            node = ch;
        }
        if (best < 0) continue;
        const fp_tok_added *a = &t->added[best];
        size_t start = i, stop = best_end, k;
        if (a->single_word) {
            int ok = 1;
            if (start > 0 && is_word(u8dec(s + u8prev(s, start), &k))) ok = 0;
            if (stop < n && is_word(u8dec(s + stop, &k))) ok = 0;
            if (!ok) { i = stop - 1; continue; } /* the match stays text; scanning resumes after it */
        }
        if (a->lstrip) {
            while (start > from) {
                size_t p = u8prev(s, start);
                if (!is_ws(u8dec(s + p, &k))) break;
                start = p;
            }
        }
        if (a->rstrip) {
            while (stop < n) {
                uint32_t cp = u8dec(s + stop, &k);
                if (!is_ws(cp)) break;
                stop += k;
            }
        }
        *ms = start;
        *me = stop;
        *which = best;
        return 1;
    }
    return 0;
}

/* Normalizes a text segment, matches normalized added tokens, pre-tokenizes and BPEs. */
static int encode_segment(ectx *c, const char *s, size_t n, int flags) {
    const fp_tokenizer *t = c->t;
    if (n == 0) return FP_OK;
    int rc;
    if (t->nfc && nfc_maybe_changes(s, n)) {
        c->nbuf.len = 0;
        if ((rc = fp_tok_nfc_append(&c->nbuf, s, n))) return rc;
        s = c->nbuf.data;
        n = c->nbuf.len;
    }
    if (t->norm_trie.count && !(flags & FP_TOKENIZE_NO_ADDED)) {
        size_t pos = 0, ms, me;
        int32_t w;
        while (find_added(t, &t->norm_trie, s, n, pos, &ms, &me, &w)) {
            if ((rc = pretok(c, 0, s + pos, ms - pos))) return rc;
            if ((rc = out_push(c, &t->added[w].id, 1))) return rc;
            pos = me;
        }
        return pretok(c, 0, s + pos, n - pos);
    }
    return pretok(c, 0, s, n);
}

int fp_tokenizer_encode_ex(const fp_tokenizer *t, const char *text, size_t len, int flags, int32_t **ids, size_t *n) {
    if (ids) *ids = NULL;
    if (n) *n = 0;
    if (!t || !ids || !n || (!text && len)) return fp_errorf(FP_EINVAL, "fp_tokenizer_encode: bad arguments");
    long bad = fp_utf8_invalid_offset(text, len);
    if (bad >= 0) return fp_errorf(FP_EINVAL, "text is not valid UTF-8 (byte offset %ld)", bad);
    ectx c = {.t = t};
    pcre2_match_data *md_local[4] = {0};
    c.md = t->n_splits <= 4 ? md_local : fp_calloc((size_t)t->n_splits, sizeof *c.md);
    int rc = c.md ? FP_OK : FP_ENOMEM;
    c.cache = cache_get(t);
    if (!rc && t->raw_trie.count && !(flags & FP_TOKENIZE_NO_ADDED)) {
        size_t pos = 0, ms, me;
        int32_t w;
        while (!rc && find_added(t, &t->raw_trie, text, len, pos, &ms, &me, &w)) {
            rc = encode_segment(&c, text + pos, ms - pos, flags);
            if (!rc) rc = out_push(&c, &t->added[w].id, 1);
            pos = me;
        }
        if (!rc) rc = encode_segment(&c, text + pos, len - pos, flags);
    } else if (!rc) {
        rc = encode_segment(&c, text, len, flags);
    }
    for (int k = 0; c.md && k < t->n_splits; k++) pcre2_match_data_free(c.md[k]);
    if (c.md != md_local) free(c.md);
    fp_buf_free(&c.nbuf);
    free(c.sym);
    free(c.prev);
    free(c.next);
    free(c.heap);
    free(c.blbuf);
    if (rc) { free(c.out); return rc; }
    *ids = c.out;
    *n = c.n;
    return FP_OK;
}

int fp_tokenizer_encode(const fp_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n) {
    return fp_tokenizer_encode_ex(t, text, len, 0, ids, n);
}

int fp_tokenizer_decode(const fp_tokenizer *t, const int32_t *ids, size_t n, int skip_special, char **text, size_t *len) {
    if (text) *text = NULL;
    if (len) *len = 0;
    if (!t || !text || (!ids && n)) return fp_errorf(FP_EINVAL, "fp_tokenizer_decode: bad arguments");
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids || (t->added_of[id] < 0 && t->str_len[id] == UINT32_MAX))
            return fp_errorf(FP_ERANGE, "ids[%zu] = %d is not a token id (vocab size %d)", i, (int)id, (int)t->n_ids);
        if (t->added_of[id] >= 0) {
            const fp_tok_added *a = &t->added[t->added_of[id]];
            if (!(skip_special && a->special)) total += strlen(a->content);
        } else {
            total += t->bytes_len[id];
        }
    }
    char *o = fp_malloc(total + 1);
    if (!o) return FP_ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (t->added_of[id] >= 0) {
            const fp_tok_added *a = &t->added[t->added_of[id]];
            if (skip_special && a->special) continue;
            size_t l = strlen(a->content);
            memcpy(o + k, a->content, l);
            k += l;
        } else {
            memcpy(o + k, t->pool.data + t->bytes_off[id], t->bytes_len[id]);
            k += t->bytes_len[id];
        }
    }
    o[k] = 0;
    *text = o;
    if (len) *len = k;
    return FP_OK;
}
