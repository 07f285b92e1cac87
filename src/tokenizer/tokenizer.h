/* Tokenizer internals shared with the GGUF writer/reader and the PRM formatting code.
 *
 * A tokenizer is a byte-level BPE model (vocab + ranked merges), a list of added tokens matched in the raw
 * text before BPE, an optional NFC normalizer and a chain of regex split stages.  See docs/tokenizer.md. */
#ifndef FP_TOKENIZER_INTERNAL_H
#define FP_TOKENIZER_INTERNAL_H
#include "base/base.h"
#include <stdbool.h>
#include <stdint.h>

/* One added token (tokenizer.json "added_tokens" / tokenizer_config.json "added_tokens_decoder"). */
typedef struct {
    int32_t id;
    const char *content; /* raw UTF-8 (not byte-level encoded) */
    bool special, lstrip, rstrip, single_word, normalized;
} fp_tok_added;

/* Split behaviours (HF SplitDelimiterBehavior) supported by the pre-tokenizer. */
enum { FP_SPLIT_ISOLATED = 0, FP_SPLIT_REMOVED = 1 };

/* Everything needed to build a tokenizer without a tokenizer.json (e.g. from GGUF metadata). */
typedef struct {
    const char *source;          /* name used in error messages (file path) */
    /* vocab: tokens[i] is the string form of id i exactly as in tokenizer.json (byte-level encoded, e.g.
     * "Ġthe"), or NULL for an unused id.  Ids that are also added tokens may be given here or left NULL. */
    const char *const *tokens;
    int32_t n_tokens;
    /* merges in rank order: merges[i] is "left right" (split at the first space after the first char) */
    const char *const *merges;
    int32_t n_merges;
    const fp_tok_added *added;
    int32_t n_added;
    /* regex of the single Isolated Split pre-tokenizer stage (HF/Oniguruma syntax), NULL for none */
    const char *pretok_regex;
    bool nfc;                    /* NFC normalizer */
} fp_tok_parts;

int fp_tokenizer_build(fp_tokenizer **out, const fp_tok_parts *parts);

/* Regex llama.cpp associates with a GGUF "tokenizer.ggml.pre" name ("qwen2"), or NULL when unknown. */
const char *fp_tokenizer_gguf_pre_regex(const char *pre);

/* ---- iteration (for writers) ---- */
/* Number of model vocab entries (ids with a string form from the BPE model). */
int32_t fp_tokenizer_n_vocab(const fp_tokenizer *t);
/* String form of a model vocab id as in tokenizer.json (byte-level encoded), or NULL.  Added tokens that are
 * not in the model vocab return NULL here; use fp_tokenizer_id_to_token for "whatever id i is". */
const char *fp_tokenizer_vocab_token(const fp_tokenizer *t, int32_t id);
int32_t fp_tokenizer_n_merges(const fp_tokenizer *t);
/* Merge i (rank order) as its two string-form halves; returns FP_ERANGE for a bad index. */
int fp_tokenizer_merge(const fp_tokenizer *t, int32_t i, const char **left, const char **right);
int32_t fp_tokenizer_n_added(const fp_tokenizer *t);
/* Added token i (0-based, in file order; contents owned by the tokenizer). */
const fp_tok_added *fp_tokenizer_added(const fp_tokenizer *t, int32_t i);
/* Regex of the first Split stage (NULL if none) and whether NFC is applied. */
const char *fp_tokenizer_pretok_regex(const fp_tokenizer *t);
bool fp_tokenizer_has_nfc(const fp_tokenizer *t);
/* eos/bos/pad token strings from tokenizer_config.json (name "eos_token", "bos_token", "pad_token"), or NULL. */
const char *fp_tokenizer_config_token(const fp_tokenizer *t, const char *name);

/* ---- byte-level alphabet (GPT-2 bytes_to_unicode) ---- */
/* Code point that byte b maps to. */
uint32_t fp_bytelevel_char(uint8_t b);
/* Byte for a code point of the alphabet, or -1. */
int fp_bytelevel_byte(uint32_t cp);

/* NFC of s[0..n) appended to out (fast path for text that is already stable).  Returns FP_OK/FP_ENOMEM. */
int fp_tok_nfc_append(fp_buf *out, const char *s, size_t n);
#endif
