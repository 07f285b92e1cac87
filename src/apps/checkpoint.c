/* Tokenizer and default system prompt of a checkpoint (HF directory or GGUF). */
#include "apps/checkpoint.h"
#include "format/format.h"
#include "model/gguf.h"
#include <stdlib.h>
#include <string.h>

static int is_gguf(const char *path) {
    size_t n = strlen(path);
    return n > 5 && !strcmp(path + n - 5, ".gguf");
}

int fp_checkpoint_tokenizer(fp_tokenizer **tok, const char *path) {
    return is_gguf(path) ? fp_gguf_load_tokenizer(tok, path) : fp_tokenizer_load(tok, path);
}

int fp_checkpoint_default_system(const char *path, char **out) {
    *out = NULL;
    size_t n = strlen(path);
    if (fp_is_dir(path) || (n > 6 && !strcmp(path + n - 6, ".jinja"))) return fp_model_default_system(path, out);
    if (!is_gguf(path)) return FP_OK;
    fp_gguf *g;
    int rc = fp_gguf_open(&g, path);
    if (rc) return rc;
    fp_gguf_str tpl;
    if (fp_gguf_get_string(g, "tokenizer.chat_template", &tpl) == FP_OK) {
        char *t = fp_strndup(tpl.s, tpl.len);
        rc = t ? fp_template_default_system(t, out) : FP_ENOMEM;
        free(t);
    }
    fp_gguf_close(g);
    return rc;
}
