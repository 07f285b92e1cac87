/* libFuzzer target: GGUF parsing, metadata getters, fp_weights/config building, dequantisation of every
 * tensor.  Build and run: fuzz/run.sh. */
#include "model/gguf.h"
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fp_gguf *g = NULL;
    if (fp_gguf_open_memory(&g, data, size, "fuzz") != FP_OK) return 0;
    static const char *arrays[] = {"tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
                                   "tokenizer.ggml.scores", "test.strs", "test.ints"};
    for (size_t i = 0; i < sizeof arrays / sizeof *arrays; i++) {
        fp_gguf_str *s;
        int64_t *iv;
        float *fv;
        size_t n;
        if (fp_gguf_get_string_array(g, arrays[i], &s, &n) == FP_OK) {
            size_t sum = 0;
            for (size_t k = 0; k < n; k++) sum += s[k].len ? (unsigned char)s[k].s[s[k].len - 1] : 0;
            (void)sum;
            free(s);
        }
        if (fp_gguf_get_int_array(g, arrays[i], &iv, &n) == FP_OK) free(iv);
        if (fp_gguf_get_f32_array(g, arrays[i], &fv, &n) == FP_OK) free(fv);
    }
    for (size_t i = 0; i < fp_gguf_kv_count(g); i++) {
        fp_gguf_str k = fp_gguf_kv_key(g, i);
        char key[256];
        snprintf(key, sizeof key, "%.*s", (int)(k.len < 255 ? k.len : 255), k.s);
        int64_t v;
        double d;
        fp_gguf_str s;
        (void)fp_gguf_get_int(g, key, &v);
        (void)fp_gguf_get_float(g, key, &d);
        (void)fp_gguf_get_string(g, key, &s);
    }
    fp_weights *w = NULL;
    fp_model_config cfg;
    if (fp_weights_from_gguf(&w, &cfg, g) == FP_OK || (w = NULL, fp_weights_from_gguf(&w, NULL, g) == FP_OK)) {
        for (size_t i = 0; i < fp_weights_count(w); i++) {
            const fp_tensor *t = fp_weights_at(w, i);
            int64_t ne0 = t->ndim ? t->shape[t->ndim - 1] : 1, rows = 1;
            for (int d = 0; d + 1 < t->ndim; d++) rows *= t->shape[d];
            if (ne0 <= 0 || ne0 > (1 << 20) || rows > (1 << 12)) continue;
            float *row = malloc(sizeof(float) * (size_t)ne0);
            size_t rb = fp_dtype_row_bytes(t->dtype, ne0);
            for (int64_t r = 0; r < rows && row; r++) fp_row_to_f32(row, (const uint8_t *)t->data + r * rb, t->dtype, ne0);
            free(row);
        }
        fp_weights_free(w);
    }
    fp_gguf_close(g);
    return 0;
}
