/* Private layout of fp_tokenizer (src/tokenizer only). */
#ifndef FP_TOK_IMPL_H
#define FP_TOK_IMPL_H
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/tokenizer.h"
#include <pcre2.h>

/* open-addressing map: string form -> id (keys live in the tokenizer's string pool) */
typedef struct {
    uint32_t *slots; /* id + 1, 0 = empty */
    uint32_t mask;
} tok_strmap;

/* open-addressing map: (left id, right id) -> (rank, merged id) */
typedef struct {
    uint64_t key; /* ((uint64)left << 32 | right) + 1; 0 = empty */
    int32_t rank, new_id;
} tok_merge_slot;

/* byte trie over added-token contents, for leftmost-longest matching */
typedef struct {
    int32_t child, sibling; /* node indices, -1 = none */
    int32_t added;          /* index into added[] ending here, -1 = none */
    uint8_t byte;
} tok_trie_node;
typedef struct {
    tok_trie_node *nodes;
    int32_t n, cap;
    int32_t root[256]; /* first-level nodes */
    int32_t count;     /* tokens in the trie */
} tok_trie;

typedef struct {
    char *pattern;   /* as given (HF / Oniguruma syntax) */
    pcre2_code *re;  /* translated + JIT-compiled */
    int behavior;
} tok_split;

struct fp_tokenizer {
    char *source;
    /* per id */
    int32_t n_ids;
    uint32_t *str_off, *str_len;     /* string form in pool; str_len UINT32_MAX = unused id */
    uint32_t *bytes_off, *bytes_len; /* decoded bytes in pool */
    int32_t *added_of;               /* index into added[] or -1 */
    int32_t n_vocab;                 /* ids that came from the model vocab */
    fp_buf pool;
    tok_strmap vmap;                 /* vocab string form -> id */
    /* merges */
    int32_t n_merges;
    int32_t (*merges)[2];
    tok_merge_slot *mmap;
    uint64_t mmask;
    int32_t byte_id[256];
    int32_t (*byte_pair)[2]; /* [a * 256 + b] = {rank or -1, merged id} for the byte symbols of a and b */
    bool ignore_merges;
    /* added tokens */
    fp_tok_added *added;
    int32_t n_added, cap_added;
    tok_trie raw_trie, norm_trie;
    /* pipeline */
    bool nfc;
    tok_split *splits;
    int n_splits;
    char *cfg_bos, *cfg_eos, *cfg_pad;
    pcre2_match_context *mctx; /* raised match limits for huge inputs */
    uint64_t serial; /* identifies this tokenizer (and its state) for the per-thread cache */
};

static inline const char *tok_str(const fp_tokenizer *t, int32_t id) { return t->pool.data + t->str_off[id]; }

uint64_t tok_hash(const void *p, size_t n);
int32_t tok_vocab_find(const fp_tokenizer *t, const char *s, size_t n);
int32_t tok_merge_lookup(const fp_tokenizer *t, int32_t a, int32_t b, int32_t *new_id);
int tok_rebuild_tries(fp_tokenizer *t);
int tok_set_vocab(fp_tokenizer *t, const char *const *tokens, const size_t *lens, int32_t n);
int tok_merges_alloc(fp_tokenizer *t, int32_t n);
int tok_add_merge(fp_tokenizer *t, int32_t rank, const char *a, size_t an, const char *b, size_t bn, char **cat,
                  size_t *catcap);
int tok_split_merge_str(const char *s, size_t n, size_t *sp);
/* Fast path for the big part of tokenizer.json: parses model.vocab and model.merges straight from the text
 * buffer into t and blanks them out of buf (keeping line numbers) so that jansson only parses the rest.
 * *done = 0 (and t untouched) when the layout is unusual or malformed; the caller then parses it all with
 * jansson, which reports syntax errors properly. */
int tok_fast_model(fp_tokenizer *t, char *buf, size_t len, int *done);
uint64_t tok_new_serial(void);
#endif
