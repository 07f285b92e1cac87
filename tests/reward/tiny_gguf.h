/* Writes a tiny random-weight Qwen2 GGUF (v3, all F32) carrying the real Qwen2 tokenizer (tokens, types, merges,
 * chat template), for running llama-server in tests.  Self-contained on purpose: it does not depend on the
 * model subsystem's writer, so it also cross-checks the format from the ggml docs.
 *
 * The weights are random except for one planted direction that makes the greedy output usable under a JSON
 * grammar: embedding dimension 0 holds a positive per-token "preference" a_t (whitespace-only and backtick
 * tokens 0.5, the pieces of {"score": N} about 2.5, <|im_end|> 3, others uniform in [1, 2)), the other dimensions are small noise, and output_norm keeps only
 * dimension 0.  With the tied output layer the logits are then ~ h0 * a_t with h0 > 0: the model prefers
 * non-whitespace tokens and ends with <|im_end|> once the grammar allows it, instead of padding with
 * newlines until max_tokens. */
#ifndef FP_TEST_TINY_GGUF_H
#define FP_TEST_TINY_GGUF_H
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TG_U32 = 4, TG_I32 = 5, TG_F32 = 6, TG_BOOL = 7, TG_STRING = 8, TG_ARRAY = 9 };

static void tg_u32(FILE *f, uint32_t v) { fwrite(&v, 4, 1, f); }
static void tg_u64(FILE *f, uint64_t v) { fwrite(&v, 8, 1, f); }
static void tg_str(FILE *f, const char *s) { tg_u64(f, strlen(s)); fwrite(s, 1, strlen(s), f); }
static void tg_kv_str(FILE *f, const char *k, const char *v) { tg_str(f, k); tg_u32(f, TG_STRING); tg_str(f, v); }
static void tg_kv_u32(FILE *f, const char *k, uint32_t v) { tg_str(f, k); tg_u32(f, TG_U32); tg_u32(f, v); }
static void tg_kv_f32(FILE *f, const char *k, float v) { tg_str(f, k); tg_u32(f, TG_F32); fwrite(&v, 4, 1, f); }
static void tg_kv_bool(FILE *f, const char *k, int v) { tg_str(f, k); tg_u32(f, TG_BOOL); unsigned char b = v != 0; fwrite(&b, 1, 1, f); }

typedef struct {
    char name[64];
    int ndim;
    uint64_t ne[2]; /* ne[0] innermost */
    float init;     /* 0: random in [-0.05, 0.05); else the constant; -1: output_norm (1, 0, 0, ...);
                     * -2: token_embd (planted preference in dimension 0, see above) */
} tg_tensor;

/* Whether a byte-level BPE token string decodes to whitespace only (Ġ space, Ċ \n, ĉ \t, č \r). */
static int tg_is_space_token(const char *s) {
    if (!*s) return 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p += 2)
        if (p[0] != 0xC4 || (p[1] != 0xA0 && p[1] != 0x8A && p[1] != 0x89 && p[1] != 0x8D)) return 0;
    return 1;
}

static float tg_rand(void);
/* Planted preference a_t (dimension 0 of the embedding; see the top of this file). */
static float tg_preference(const char *tok, uint64_t id) {
    static const char *const json_pieces[] = {"{\"", "\"score\":", "\"score", "score", "\":", "}", "{", "\""};
    if (id == 151645) return 3.0f; /* <|im_end|> */
    for (size_t i = 0; i < sizeof json_pieces / sizeof json_pieces[0]; i++)
        if (!strcmp(tok, json_pieces[i])) return 2.5f + 0.01f * (float)strlen(tok);
    if (tg_is_space_token(tok) || strchr(tok, '`')) return 0.5f;
    return 1.5f + 10 * tg_rand();
}

static uint64_t tg_rng = 0x1234567u;
static float tg_rand(void) {
    tg_rng = tg_rng * 6364136223846793005ull + 1442695040888963407ull;
    return ((float)(tg_rng >> 40) / 16777216.0f - 0.5f) * 0.1f;
}

/* Returns 0 on success, else -1 with a message in err. */
static int tiny_gguf_write(const char *path, const char *tokenizer_json, const char *tokenizer_config, char *err,
                           size_t errn) {
    json_error_t je;
    json_t *tok = json_load_file(tokenizer_json, 0, &je);
    if (!tok) { snprintf(err, errn, "%s: %s", tokenizer_json, je.text); return -1; }
    json_t *cfg = tokenizer_config ? json_load_file(tokenizer_config, 0, NULL) : NULL;
    json_t *vocab = json_object_get(json_object_get(tok, "model"), "vocab");
    json_t *merges = json_object_get(json_object_get(tok, "model"), "merges");
    json_t *added = json_object_get(tok, "added_tokens");
    size_t n_vocab = 0;
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v) if ((size_t)json_integer_value(v) + 1 > n_vocab) n_vocab = (size_t)json_integer_value(v) + 1;
    size_t i;
    json_array_foreach(added, i, v) {
        size_t id = (size_t)json_integer_value(json_object_get(v, "id"));
        if (id + 1 > n_vocab) n_vocab = id + 1;
    }
    const char **tokens = calloc(n_vocab, sizeof *tokens);
    int32_t *types = calloc(n_vocab, sizeof *types);
    json_object_foreach(vocab, key, v) { tokens[json_integer_value(v)] = key; types[json_integer_value(v)] = 1; }
    json_array_foreach(added, i, v) {
        size_t id = (size_t)json_integer_value(json_object_get(v, "id"));
        tokens[id] = json_string_value(json_object_get(v, "content"));
        types[id] = json_is_true(json_object_get(v, "special")) ? 3 : 4;
    }
    char pad_names[64][32];
    int npad = 0;
    for (size_t t = 0; t < n_vocab; t++)
        if (!tokens[t] && npad < 64) { snprintf(pad_names[npad], 32, "[PAD%zu]", t); tokens[t] = pad_names[npad++]; types[t] = 5; }
    for (size_t t = 0; t < n_vocab; t++) if (!tokens[t]) { snprintf(err, errn, "token id %zu missing", t); return -1; }

    const uint32_t E = 64, H = 4, HKV = 2, FF = 128, L = 2, HD = E / H;
    tg_tensor ts[64];
    int nt = 0;
    ts[nt++] = (tg_tensor){"token_embd.weight", 2, {E, n_vocab}, -2};
    for (uint32_t l = 0; l < L; l++) {
        struct { const char *n; int nd; uint64_t a, b; float init; } spec[] = {
            {"attn_norm.weight", 1, E, 0, 1}, {"attn_q.weight", 2, E, E, 0}, {"attn_q.bias", 1, E, 0, 0},
            {"attn_k.weight", 2, E, HKV * HD, 0}, {"attn_k.bias", 1, HKV * HD, 0, 0},
            {"attn_v.weight", 2, E, HKV * HD, 0}, {"attn_v.bias", 1, HKV * HD, 0, 0},
            {"attn_output.weight", 2, E, E, 0}, {"ffn_norm.weight", 1, E, 0, 1}, {"ffn_gate.weight", 2, E, FF, 0},
            {"ffn_up.weight", 2, E, FF, 0}, {"ffn_down.weight", 2, FF, E, 0}};
        for (size_t s = 0; s < sizeof spec / sizeof spec[0]; s++) {
            tg_tensor *t = &ts[nt++];
            snprintf(t->name, sizeof t->name, "blk.%u.%s", l, spec[s].n);
            t->ndim = spec[s].nd;
            t->ne[0] = spec[s].a;
            t->ne[1] = spec[s].nd == 2 ? spec[s].b : 1;
            t->init = spec[s].init;
        }
    }
    ts[nt++] = (tg_tensor){"output_norm.weight", 1, {E, 1}, -1};

    FILE *f = fopen(path, "wb");
    if (!f) { snprintf(err, errn, "%s: cannot create", path); return -1; }
    const char *tmpl = cfg ? json_string_value(json_object_get(cfg, "chat_template")) : NULL;
    size_t n_merges = json_array_size(merges);
    uint64_t n_kv = 18 + (tmpl ? 1 : 0);
    fwrite("GGUF", 1, 4, f);
    tg_u32(f, 3);
    tg_u64(f, (uint64_t)nt);
    tg_u64(f, n_kv);
    tg_kv_str(f, "general.architecture", "qwen2");
    tg_kv_str(f, "general.name", "fluxprm-test-tiny-qwen2");
    tg_kv_u32(f, "general.alignment", 32);
    tg_kv_u32(f, "qwen2.context_length", 4096);
    tg_kv_u32(f, "qwen2.embedding_length", E);
    tg_kv_u32(f, "qwen2.block_count", L);
    tg_kv_u32(f, "qwen2.feed_forward_length", FF);
    tg_kv_u32(f, "qwen2.attention.head_count", H);
    tg_kv_u32(f, "qwen2.attention.head_count_kv", HKV);
    tg_kv_f32(f, "qwen2.attention.layer_norm_rms_epsilon", 1e-6f);
    tg_kv_f32(f, "qwen2.rope.freq_base", 1000000.0f);
    tg_kv_str(f, "tokenizer.ggml.model", "gpt2");
    tg_kv_str(f, "tokenizer.ggml.pre", "qwen2");
    tg_str(f, "tokenizer.ggml.tokens"); tg_u32(f, TG_ARRAY); tg_u32(f, TG_STRING); tg_u64(f, n_vocab);
    for (size_t t = 0; t < n_vocab; t++) tg_str(f, tokens[t]);
    tg_str(f, "tokenizer.ggml.token_type"); tg_u32(f, TG_ARRAY); tg_u32(f, TG_I32); tg_u64(f, n_vocab);
    fwrite(types, 4, n_vocab, f);
    tg_str(f, "tokenizer.ggml.merges"); tg_u32(f, TG_ARRAY); tg_u32(f, TG_STRING); tg_u64(f, n_merges);
    json_array_foreach(merges, i, v) {
        char buf[1024];
        if (json_is_string(v)) snprintf(buf, sizeof buf, "%s", json_string_value(v));
        else snprintf(buf, sizeof buf, "%s %s", json_string_value(json_array_get(v, 0)), json_string_value(json_array_get(v, 1)));
        tg_str(f, buf);
    }
    tg_kv_u32(f, "tokenizer.ggml.eos_token_id", 151645);
    tg_kv_bool(f, "tokenizer.ggml.add_bos_token", 0);
    if (tmpl) tg_kv_str(f, "tokenizer.chat_template", tmpl);
    uint64_t off = 0;
    for (int t = 0; t < nt; t++) {
        tg_str(f, ts[t].name);
        tg_u32(f, (uint32_t)ts[t].ndim);
        for (int d = 0; d < ts[t].ndim; d++) tg_u64(f, ts[t].ne[d]);
        tg_u32(f, 0); /* F32 */
        tg_u64(f, off);
        off += (ts[t].ne[0] * ts[t].ne[1] * 4 + 31) / 32 * 32;
    }
    long pos = ftell(f);
    while (pos % 32) { fputc(0, f); pos++; }
    for (int t = 0; t < nt; t++) {
        uint64_t n = ts[t].ne[0] * ts[t].ne[1];
        float buf[4096];
        for (uint64_t k = 0; k < n;) {
            size_t m = n - k < 4096 ? (size_t)(n - k) : 4096;
            for (size_t q = 0; q < m; q++) {
                uint64_t e = k + q, row = e / ts[t].ne[0], col = e % ts[t].ne[0];
                if (ts[t].init == -1) buf[q] = col == 0 ? 1.0f : 0.0f;
                else if (ts[t].init == -2 && col == 0)
                    buf[q] = tg_preference(tokens[row], row);
                else buf[q] = ts[t].init != 0 ? ts[t].init : tg_rand();
            }
            fwrite(buf, 4, m, f);
            k += m;
        }
        for (uint64_t p = n * 4; p % 32; p++) fputc(0, f);
    }
    int bad = ferror(f);
    bad |= fclose(f) != 0;
    free(tokens);
    free(types);
    json_decref(tok);
    json_decref(cfg);
    if (bad) { snprintf(err, errn, "%s: write failed", path); return -1; }
    return 0;
}
#endif
