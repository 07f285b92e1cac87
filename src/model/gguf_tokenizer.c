/* A tokenizer from GGUF metadata (tokenizer.ggml.*), built with the tokenizer subsystem's fp_tokenizer_build. */
#include "model/gguf.h"
#include "tokenizer/tokenizer.h"
#include <stdlib.h>
#include <string.h>

static char *dup_view(fp_gguf_str s) {
    if (memchr(s.s, 0, s.len)) return NULL;
    return fp_strndup(s.s, s.len);
}

int fp_gguf_tokenizer(fp_tokenizer **out, const fp_gguf *g, const char *source) {
    *out = NULL;
    fp_gguf_str model, pre;
    int rc = fp_gguf_get_string(g, "tokenizer.ggml.model", &model);
    if (rc) return rc;
    if (model.len != 4 || memcmp(model.s, "gpt2", 4))
        return fp_errorf(FP_EUNSUPPORTED, "%s: tokenizer.ggml.model \"%.*s\" (only gpt2 byte-level BPE is supported)", source,
                         (int)(model.len < 64 ? model.len : 64), model.s);
    char prename[64] = "default";
    if (fp_gguf_get_string(g, "tokenizer.ggml.pre", &pre) == FP_OK)
        snprintf(prename, sizeof prename, "%.*s", (int)(pre.len < 63 ? pre.len : 63), pre.s);
    fp_error_clear();
    const char *regex = fp_tokenizer_gguf_pre_regex(prename);
    if (!regex) return fp_errorf(FP_EUNSUPPORTED, "%s: tokenizer.ggml.pre \"%s\" has no known pre-tokenizer regex", source, prename);
    fp_gguf_str *toks = NULL, *merges = NULL;
    int64_t *types = NULL;
    size_t nt = 0, nm = 0, ntt = 0;
    char **tk = NULL, **mg = NULL;
    fp_tok_added *added = NULL;
    int32_t nadded = 0;
    if ((rc = fp_gguf_get_string_array(g, "tokenizer.ggml.tokens", &toks, &nt)) ||
        (rc = fp_gguf_get_string_array(g, "tokenizer.ggml.merges", &merges, &nm)))
        goto done;
    if (fp_gguf_get_int_array(g, "tokenizer.ggml.token_type", &types, &ntt) != FP_OK) { types = NULL; ntt = 0; }
    fp_error_clear();
    if (types && ntt != nt) { rc = fp_errorf(FP_EPARSE, "%s: %zu token types for %zu tokens", source, ntt, nt); goto done; }
    if (nt > INT32_MAX || nm > INT32_MAX) { rc = fp_errorf(FP_EPARSE, "%s: vocabulary too large", source); goto done; }
    tk = fp_calloc(nt ? nt : 1, sizeof *tk);
    mg = fp_calloc(nm ? nm : 1, sizeof *mg);
    added = fp_calloc(nt ? nt : 1, sizeof *added);
    if (!tk || !mg || !added) { rc = FP_ENOMEM; goto done; }
    for (size_t i = 0; i < nt; i++) {
        int64_t ty = types ? types[i] : 1;
        if (ty == 5) continue; /* unused (padding) */
        char *s = dup_view(toks[i]);
        if (!s) { rc = fp_last_error_code() == FP_ENOMEM ? FP_ENOMEM : fp_errorf(FP_EPARSE, "%s: token %zu contains a NUL byte", source, i); goto done; }
        if (ty == 3 || ty == 4) { /* control / user-defined: added tokens (raw text) */
            added[nadded].id = (int32_t)i;
            added[nadded].content = s;
            added[nadded].special = ty == 3;
            nadded++;
        } else tk[i] = s;
    }
    for (size_t i = 0; i < nm; i++)
        if (!(mg[i] = dup_view(merges[i]))) { rc = fp_errorf(FP_EPARSE, "%s: merge %zu contains a NUL byte", source, i); goto done; }
    fp_tok_parts parts = {
        .source = source,
        .tokens = (const char *const *)tk,
        .n_tokens = (int32_t)nt,
        .merges = (const char *const *)mg,
        .n_merges = (int32_t)nm,
        .added = added,
        .n_added = nadded,
        .pretok_regex = regex,
        .nfc = !strcmp(prename, "qwen2"), /* HF Qwen2 tokenizers normalise with NFC; GGUF has no key for it */
    };
    rc = fp_tokenizer_build(out, &parts);
done:
    for (size_t i = 0; tk && i < nt; i++) free(tk[i]);
    for (size_t i = 0; mg && i < nm; i++) free(mg[i]);
    for (int32_t i = 0; i < nadded; i++) free((char *)added[i].content);
    free(tk);
    free(mg);
    free(added);
    free(toks);
    free(merges);
    free(types);
    return rc;
}

int fp_gguf_load_tokenizer(fp_tokenizer **out, const char *path) {
    *out = NULL;
    fp_gguf *g;
    int rc = fp_gguf_open(&g, path);
    if (rc) return rc;
    rc = fp_gguf_tokenizer(out, g, path);
    fp_gguf_close(g);
    return rc;
}
