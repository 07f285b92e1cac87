/* GGUF: quantisers against an independent numpy implementation of llama.cpp's rules, writer -> reader round
 * trips (metadata, every tensor type), HF -> GGUF conversion of transformers-written fixtures read back by our
 * reader, damaged files, and (when the pyref chroot exists) Debian's llama.cpp loading what we write. */
#include "harness.h"
#include "base/base.h"
#include "model/gguf.h"
#include "model/weights.h"
#include <curl/curl.h>
#include <jansson.h>
#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FX "tests/ref/formats/data/"

static unsigned char *slurp(const char *path, size_t *n) {
    char *d;
    if (fp_read_file(path, &d, n)) return NULL;
    return (unsigned char *)d;
}

/* ------------------------------------------------------------------ quantisation vs numpy */
static int test_quant_matches_numpy(void) {
    size_t n;
    float *x = (float *)slurp(FX "quant/input_f32.bin", &n);
    CHECK(x && n == 6 * 128 * 4);
    if (!x) return 1;
    const int rows = 6, cols = 128;
    struct { const char *file; fp_dtype t; } cases[] = {
        {FX "quant/q8_0.bin", FP_Q8_0}, {FX "quant/q4_0.bin", FP_Q4_0}, {FX "quant/f16.bin", FP_F16}, {FX "quant/bf16.bin", FP_BF16}};
    for (int c = 0; c < 4; c++) {
        size_t m;
        unsigned char *ref = slurp(cases[c].file, &m);
        size_t rb = fp_dtype_row_bytes(cases[c].t, cols);
        CHECK_MSG(ref && m == rb * rows, "%s: %zu bytes", cases[c].file, m);
        if (!ref) continue;
        unsigned char *mine = malloc(rb * rows);
        for (int r = 0; r < rows; r++) fp_quantize_row(mine + r * rb, x + r * cols, cases[c].t, cols);
        int bad = 0;
        for (size_t i = 0; i < rb * rows; i++)
            if (mine[i] != ref[i]) { if (bad < 3) fprintf(stderr, "  %s: byte %zu: %u vs numpy %u\n", fp_dtype_name(cases[c].t), i, mine[i], ref[i]); bad++; }
        CHECK_MSG(bad == 0, "%s: %d bytes differ from the numpy reference", fp_dtype_name(cases[c].t), bad);
        /* dequantised error bound: |x - y| <= d/2 (q8_0), <= d (q4_0, truncation) per block */
        if (cases[c].t == FP_Q8_0 || cases[c].t == FP_Q4_0) {
            float *y = malloc(sizeof(float) * cols);
            for (int r = 0; r < rows; r++) {
                fp_row_to_f32(y, mine + r * rb, cases[c].t, cols);
                for (int b = 0; b < cols / 32; b++) {
                    uint16_t d16;
                    memcpy(&d16, mine + r * rb + b * (cases[c].t == FP_Q8_0 ? 34 : 18), 2);
                    double d = fabs(fp_f16_to_f32(d16)), amax = 0;
                    for (int j = 0; j < 32; j++) amax = fmax(amax, fabsf(x[r * cols + b * 32 + j]));
                    /* rounding (q8_0: half a step; q4_0: truncation, one step) + the fp16 rounding of the scale */
                    int q8 = cases[c].t == FP_Q8_0;
                    double dtrue = q8 ? amax / 127 : amax / 8, bound = (q8 ? 0.5 : 1.0) * dtrue * (1 + 1e-6) +
                                                                      (q8 ? 128 : 16) * fabs(d - dtrue) + 1e-30;
                    for (int j = 0; j < 32; j++) {
                        double e = fabs(x[r * cols + b * 32 + j] - y[b * 32 + j]);
                        CHECK_MSG(e <= bound, "%s row %d block %d: error %g > %g", fp_dtype_name(cases[c].t), r, b, e, bound);
                    }
                }
            }
            free(y);
        }
        free(mine);
        free(ref);
    }
    free(x);
    return 0;
}

/* ------------------------------------------------------------------ writer -> reader */
static void fill_random(void *p, size_t n, unsigned seed) {
    unsigned char *b = p;
    for (size_t i = 0; i < n; i++) { seed = seed * 1103515245u + 12345u; b[i] = (unsigned char)(seed >> 16); }
}

static const char *write_synthetic(const char *name, uint32_t extra_type) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", th_tmpdir(), name);
    fp_gguf_writer *w = fp_gguf_writer_new();
    CHECK_OK(fp_gguf_set_string(w, "general.architecture", "qwen2"));
    CHECK_OK(fp_gguf_set_u32(w, "qwen2.block_count", 1));
    CHECK_OK(fp_gguf_set_i32(w, "test.neg", -5));
    CHECK_OK(fp_gguf_set_f32(w, "test.f", 0.25f));
    CHECK_OK(fp_gguf_set_bool(w, "test.b", 1));
    const char *strs[] = {"a", "", "\xc4\xa0hello", "x y"};
    CHECK_OK(fp_gguf_set_string_array(w, "test.strs", strs, 4));
    int32_t ints[] = {1, -2, 3};
    CHECK_OK(fp_gguf_set_i32_array(w, "test.ints", ints, 3));
    CHECK(fp_gguf_set_u32(w, "test.neg", 1) == FP_EINVAL); /* duplicate key */
    static unsigned char f32[3 * 5 * 4], f16[7 * 2], bf16[2 * 3 * 4 * 2], q8[2 * 34 * 2], q4[3 * 18], kq[144];
    fill_random(f32, sizeof f32, 1);
    fill_random(f16, sizeof f16, 2);
    fill_random(bf16, sizeof bf16, 3);
    fill_random(q8, sizeof q8, 4);
    fill_random(q4, sizeof q4, 5);
    int64_t s1[] = {3, 5}, s2[] = {7}, s3[] = {2, 3, 4}, s4[] = {2, 64}, s5[] = {3, 32};
    CHECK_OK(fp_gguf_add_tensor(w, "a.f32", FP_GGML_F32, 2, s1, f32, sizeof f32, 0));
    CHECK_OK(fp_gguf_add_tensor(w, "b.f16", FP_GGML_F16, 1, s2, f16, sizeof f16, 1));
    CHECK_OK(fp_gguf_add_tensor(w, "c.bf16", FP_GGML_BF16, 3, s3, bf16, sizeof bf16, 0));
    CHECK_OK(fp_gguf_add_tensor(w, "d.q8", FP_GGML_Q8_0, 2, s4, q8, sizeof q8, 0));
    CHECK_OK(fp_gguf_add_tensor(w, "e.q4", FP_GGML_Q4_0, 2, s5, q4, sizeof q4, 0));
    if (extra_type) {
        int64_t s6[] = {256};
        CHECK_OK(fp_gguf_add_tensor(w, "f.kq", extra_type, 1, s6, kq, sizeof kq, 0));
    }
    CHECK_OK(fp_gguf_writer_write(w, path));
    fp_gguf_writer_free(w);
    return path;
}

static int test_writer_reader_roundtrip(void) {
    const char *path = write_synthetic("synthetic.gguf", 0);
    fp_gguf *g = NULL;
    CHECK_OK(fp_gguf_open(&g, path));
    if (!g) return 1;
    CHECK(fp_gguf_version(g) == 3 && fp_gguf_alignment(g) == 32);
    CHECK(fp_gguf_kv_count(g) == 8); /* 7 + general.alignment */
    int64_t v;
    double f;
    fp_gguf_str s;
    CHECK_OK(fp_gguf_get_int(g, "qwen2.block_count", &v));
    CHECK(v == 1);
    CHECK_OK(fp_gguf_get_int(g, "test.neg", &v));
    CHECK(v == -5);
    CHECK_OK(fp_gguf_get_float(g, "test.f", &f));
    CHECK(f == 0.25);
    int b;
    CHECK_OK(fp_gguf_get_bool(g, "test.b", &b));
    CHECK(b == 1);
    CHECK_OK(fp_gguf_get_string(g, "general.architecture", &s));
    CHECK(s.len == 5 && !memcmp(s.s, "qwen2", 5));
    CHECK(fp_gguf_get_int(g, "no.such.key", &v) == FP_ERANGE && strstr(fp_last_error(), "no.such.key"));
    CHECK(fp_gguf_get_int(g, "general.architecture", &v) == FP_EPARSE);
    fp_gguf_str *arr;
    size_t n;
    CHECK_OK(fp_gguf_get_string_array(g, "test.strs", &arr, &n));
    CHECK(n == 4 && arr[0].len == 1 && arr[1].len == 0 && arr[2].len == 7 && !memcmp(arr[2].s, "\xc4\xa0hello", 7) &&
          arr[3].len == 3);
    free(arr);
    int64_t *ia;
    CHECK_OK(fp_gguf_get_int_array(g, "test.ints", &ia, &n));
    CHECK(n == 3 && ia[0] == 1 && ia[1] == -2 && ia[2] == 3);
    free(ia);
    int et;
    uint64_t cnt;
    long idx = fp_gguf_find(g, "test.strs");
    CHECK(idx >= 0 && fp_gguf_kv_type(g, (size_t)idx, &et, &cnt) == FP_GGUF_ARRAY && et == FP_GGUF_STRING && cnt == 4);
    CHECK(fp_gguf_tensor_count(g) == 5);
    for (size_t i = 0; i < fp_gguf_tensor_count(g); i++) {
        const fp_gguf_tensor *t = fp_gguf_tensor_at(g, i);
        CHECK(t->data && ((uintptr_t)t->data % 32) == 0);
    }
    const fp_gguf_tensor *t = fp_gguf_tensor_at(g, 2);
    CHECK(t->ndim == 3 && t->ne[0] == 4 && t->ne[1] == 3 && t->ne[2] == 2 && t->type == FP_GGML_BF16 && t->nbytes == 48);
    fp_gguf_close(g);
    /* the same through fp_weights: HF shape order, bytes unchanged */
    fp_weights *w = NULL;
    CHECK_OK(fp_weights_open_gguf(&w, NULL, path));
    if (!w) return 1;
    CHECK(fp_weights_count(w) == 5);
    const fp_tensor *a = fp_weights_get(w, "a.f32"), *q8 = fp_weights_get(w, "d.q8"), *q4 = fp_weights_get(w, "e.q4");
    CHECK(a && a->dtype == FP_F32 && a->ndim == 2 && a->shape[0] == 3 && a->shape[1] == 5 && a->nbytes == 60);
    CHECK(q8 && q8->dtype == FP_Q8_0 && q8->shape[0] == 2 && q8->shape[1] == 64 && q8->nbytes == 136);
    CHECK(q4 && q4->dtype == FP_Q4_0 && q4->shape[0] == 3 && q4->shape[1] == 32 && q4->nbytes == 54);
    unsigned char ref[60];
    fill_random(ref, sizeof ref, 1);
    CHECK(a && !memcmp(a->data, ref, 60));
    /* no model metadata: asking for a config fails cleanly */
    fp_weights_free(w);
    fp_model_config cfg;
    w = NULL;
    CHECK(fp_weights_open_gguf(&w, &cfg, path) != FP_OK && w == NULL);
    return 0;
}

static int test_unsupported_type(void) {
    const char *path = write_synthetic("kquant.gguf", 12 /* Q4_K */);
    fp_weights *w = NULL;
    CHECK(fp_weights_open_gguf(&w, NULL, path) == FP_EUNSUPPORTED);
    CHECK_MSG(strstr(fp_last_error(), "f.kq") && strstr(fp_last_error(), "Q4_K"), "%s", fp_last_error());
    /* the metadata API still works on such files (tokenizer use) */
    fp_gguf *g = NULL;
    CHECK_OK(fp_gguf_open(&g, path));
    fp_gguf_close(g);
    return 0;
}

static int test_damaged_files(void) {
    const char *path = write_synthetic("damage.gguf", 0);
    size_t n;
    unsigned char *buf = slurp(path, &n);
    CHECK(buf != NULL);
    if (!buf) return 1;
    fp_gguf *g = NULL;
    int ok = 0;
    for (size_t len = 0; len < n; len++) {
        unsigned char *cp = malloc(len ? len : 1);
        memcpy(cp, buf, len);
        if (fp_gguf_open_memory(&g, cp, len, "trunc") == FP_OK) {
            ok++;
            fp_weights *w = NULL;
            if (fp_weights_from_gguf(&w, NULL, g) == FP_OK) fp_weights_free(w);
            fp_gguf_close(g);
        } else CHECK(fp_last_error()[0]);
        free(cp);
    }
    /* the last tensor's padding may be cut off without losing data; nothing shorter than its end loads */
    CHECK_MSG(ok <= 32, "%d truncations load", ok);
    unsigned char *cp = malloc(n);
    memcpy(cp, buf, n);
    cp[0] = 'X';
    CHECK(fp_gguf_open_memory(&g, cp, n, "m") == FP_EPARSE && strstr(fp_last_error(), "magic"));
    memcpy(cp, buf, n);
    cp[4] = 1;
    CHECK(fp_gguf_open_memory(&g, cp, n, "m") == FP_EUNSUPPORTED && strstr(fp_last_error(), "version"));
    memcpy(cp, buf, n);
    cp[15] = 0x7f; /* absurd tensor count */
    CHECK(fp_gguf_open_memory(&g, cp, n, "m") == FP_EPARSE);
    memcpy(cp, buf, n);
    cp[23] = 0x7f; /* absurd kv count */
    CHECK(fp_gguf_open_memory(&g, cp, n, "m") == FP_EPARSE);
    /* every single-byte corruption: no crash (ASan build checks memory safety) */
    int loaded = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(cp, buf, n);
        cp[i] ^= 0x81;
        if (fp_gguf_open_memory(&g, cp, n, "flip") == FP_OK) {
            loaded++;
            fp_weights *w = NULL;
            fp_model_config cfg;
            if (fp_weights_from_gguf(&w, &cfg, g) == FP_OK) fp_weights_free(w);
            fp_gguf_str *a;
            size_t k;
            if (fp_gguf_get_string_array(g, "test.strs", &a, &k) == FP_OK) free(a);
            fp_gguf_close(g);
        }
    }
    printf("  %zu byte flips: %d still parse (tensor data, values)\n", n, loaded);
    free(cp);
    free(buf);
    return 0;
}

/* ------------------------------------------------------------------ HF -> GGUF -> fp_weights */
static float *to_f32(const fp_tensor *t, int64_t *numel) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    float *f = malloc(sizeof(float) * (size_t)(n ? n : 1));
    fp_row_to_f32(f, t->data, t->dtype, n);
    *numel = n;
    return f;
}

/* Converts dir with type and checks every tensor against the safetensors source. */
static int convert_and_compare(const char *dir, fp_dtype type, int flags, const char *tag) {
    char out[512];
    snprintf(out, sizeof out, "%s/%s.gguf", th_tmpdir(), tag);
    fp_gguf_convert_info info;
    CHECK_OK(fp_gguf_convert_hf(dir, out, type, flags, &info));
    fp_weights *src = NULL, *g = NULL;
    fp_model_config want, got;
    CHECK_OK(fp_weights_open_safetensors(&src, dir));
    CHECK_OK(fp_model_config_load(&want, dir));
    CHECK_OK(fp_weights_open_gguf(&g, &got, out));
    if (!src || !g) { fp_weights_free(src); fp_weights_free(g); return 1; }
    size_t expected = 0;
    for (size_t i = 0; i < fp_weights_count(src); i++) {
        const fp_tensor *s = fp_weights_at(src, i);
        if (!strcmp(s->name, "lm_head.weight") && want.tie_word_embeddings) continue;
        if ((flags & FP_GGUF_TRUNK_ONLY) && !strncmp(s->name, "score.", 6)) continue;
        expected++;
        const fp_tensor *t = fp_weights_get(g, s->name);
        CHECK_MSG(t != NULL, "%s: %s missing after the round trip", tag, s->name);
        if (!t) continue;
        CHECK_MSG(t->ndim == s->ndim, "%s: %s ndim", tag, s->name);
        for (int d = 0; d < s->ndim; d++) CHECK_MSG(t->shape[d] == s->shape[d], "%s: %s shape[%d]", tag, s->name, d);
        fp_dtype tt = s->ndim >= 2 ? type : FP_F32;
        CHECK_MSG(t->dtype == tt, "%s: %s stored as %s", tag, s->name, fp_dtype_name(t->dtype));
        int64_t n, n2;
        float *a = to_f32(s, &n), *b = to_f32(t, &n2);
        if (tt == FP_F32 || (tt == s->dtype)) {
            CHECK_MSG(!memcmp(a, b, sizeof(float) * (size_t)n), "%s: %s values differ", tag, s->name);
        } else { /* the stored bytes are our quantisation of the source values */
            int64_t ne0 = s->shape[s->ndim - 1];
            size_t rb = fp_dtype_row_bytes(tt, ne0);
            unsigned char *q = malloc(rb);
            int bad = 0;
            for (int64_t r = 0; r < n / ne0; r++) {
                fp_quantize_row(q, a + r * ne0, tt, ne0);
                if (memcmp(q, (const unsigned char *)t->data + r * rb, rb)) bad++;
            }
            CHECK_MSG(bad == 0, "%s: %s: %d rows differ from the quantised source", tag, s->name, bad);
            free(q);
        }
        free(a);
        free(b);
    }
    /* reward_head.pt */
    char rh[512];
    snprintf(rh, sizeof rh, "%s/reward_head.pt", dir);
    int has_score = fp_weights_get(src, "score.0.weight") || fp_weights_get(src, "score.weight");
    if (access(rh, R_OK) == 0 && !(flags & FP_GGUF_TRUNK_ONLY) && !has_score) {
        fp_weights *h = NULL;
        CHECK_OK(fp_torchzip_load_state_dict(&h, rh));
        const fp_tensor *hw = h ? fp_weights_get(h, "weight") : NULL, *gw = fp_weights_get(g, "reward_head.weight");
        CHECK(hw && gw && gw->nbytes == hw->nbytes && !memcmp(gw->data, hw->data, hw->nbytes));
        CHECK(fp_weights_get(g, "reward_head.bias") != NULL);
        expected += 2;
        fp_weights_free(h);
    }
    CHECK_MSG(fp_weights_count(g) == expected, "%s: %zu tensors, expected %zu", tag, fp_weights_count(g), expected);
    CHECK((int)expected == info.tensors);
    /* hyper-parameters */
    CHECK_MSG(!strcmp(got.architecture, want.architecture), "%s: %s vs %s", tag, got.architecture, want.architecture);
    CHECK(!strcmp(got.model_type, want.model_type));
    CHECK(got.hidden_size == want.hidden_size && got.intermediate_size == want.intermediate_size);
    CHECK(got.num_layers == want.num_layers && got.num_heads == want.num_heads && got.num_kv_heads == want.num_kv_heads);
    CHECK(got.head_dim == want.head_dim && got.vocab_size == want.vocab_size);
    CHECK(got.max_position_embeddings == want.max_position_embeddings);
    CHECK(got.rope_theta == (double)(float)want.rope_theta && got.rms_norm_eps == (double)(float)want.rms_norm_eps);
    CHECK(got.tie_word_embeddings == want.tie_word_embeddings);
    CHECK(got.attention_bias == want.attention_bias && got.qk_norm == want.qk_norm);
    if (fp_weights_get(src, "score.2.weight") && !(flags & FP_GGUF_TRUNK_ONLY)) CHECK(got.num_labels == want.num_labels);
    fp_weights_free(src);
    fp_weights_free(g);
    return 0;
}

static int test_convert_prm(void) {
    convert_and_compare(FX "tiny-prm", FP_F32, 0, "prm-f32");
    convert_and_compare(FX "tiny-prm", FP_BF16, 0, "prm-bf16");
    convert_and_compare(FX "tiny-prm", FP_F16, 0, "prm-f16");
    convert_and_compare(FX "tiny-prm", FP_Q8_0, 0, "prm-q8_0");
    convert_and_compare(FX "tiny-prm", FP_Q4_0, 0, "prm-q4_0");
    convert_and_compare(FX "tiny-prm", FP_Q8_0, FP_GGUF_TRUNK_ONLY, "prm-trunk");
    /* head names in the file */
    char out[512];
    snprintf(out, sizeof out, "%s/prm-f32.gguf", th_tmpdir());
    fp_gguf *g = NULL;
    CHECK_OK(fp_gguf_open(&g, out));
    if (!g) return 1;
    int seen = 0;
    for (size_t i = 0; i < fp_gguf_tensor_count(g); i++) {
        fp_gguf_str nm = fp_gguf_tensor_at(g, i)->name;
        const char *want[] = {"cls.weight", "cls.bias", "cls.output.weight", "cls.output.bias", "output_norm.weight",
                              "token_embd.weight", "blk.0.attn_q.bias"};
        for (int k = 0; k < 7; k++)
            if (nm.len == strlen(want[k]) && !memcmp(nm.s, want[k], nm.len)) seen++;
    }
    CHECK(seen == 7);
    fp_gguf_str s;
    CHECK_OK(fp_gguf_get_string(g, "fluxprm.head", &s));
    CHECK(s.len == 4 && !memcmp(s.s, "prm2", 4));
    CHECK(fp_gguf_find(g, "tokenizer.ggml.tokens") < 0); /* no tokenizer.json in this fixture */
    fp_gguf_close(g);
    return 0;
}

static int test_convert_scalar_head(void) {
    convert_and_compare(FX "tiny-scalar", FP_F32, 0, "scalar-f32");
    convert_and_compare(FX "tiny-scalar", FP_Q8_0, 0, "scalar-q8_0");
    char out[512];
    snprintf(out, sizeof out, "%s/scalar-f32.gguf", th_tmpdir());
    fp_gguf *g = NULL;
    CHECK_OK(fp_gguf_open(&g, out));
    fp_gguf_str s;
    CHECK(g && fp_gguf_get_string(g, "fluxprm.head", &s) == FP_OK && s.len == 11 && !memcmp(s.s, "reward_head", 11));
    fp_gguf_close(g);
    return 0;
}

static int test_convert_qwen3(void) {
    convert_and_compare(FX "tiny-qwen3", FP_F32, 0, "q3-f32");
    convert_and_compare(FX "tiny-qwen3", FP_Q4_0, 0, "q3-q4_0");
    fp_weights *w = NULL;
    char out[512];
    snprintf(out, sizeof out, "%s/q3-f32.gguf", th_tmpdir());
    CHECK_OK(fp_weights_open_gguf(&w, NULL, out));
    CHECK(w && fp_weights_get(w, "model.layers.1.self_attn.k_norm.weight") && fp_weights_get(w, "lm_head.weight"));
    fp_weights_free(w);
    return 0;
}

/* tiny-qwen2 + the real Qwen2 tokenizer files copied next to it */
static const char *tiny_qwen2_dir(void) {
    static char dir[512];
    const char *tj = th_shared_file("tokenizer/qwen2/tokenizer.json");
    if (!tj) return NULL;
    snprintf(dir, sizeof dir, "%s/tiny-qwen2", th_tmpdir());
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp " FX "tiny-qwen2/*.json " FX "tiny-qwen2/model.safetensors %s/ && "
             "cp %s/data/tokenizer/qwen2/tokenizer.json %s/data/tokenizer/qwen2/tokenizer_config.json %s/",
             dir, dir, th_shared(), th_shared(), dir);
    return system(cmd) == 0 ? dir : NULL;
}

static int test_convert_tokenizer(void) {
    const char *dir = tiny_qwen2_dir();
    if (!dir) { printf("  (needs ../shared/data/tokenizer/qwen2)\n"); return TH_SKIP; }
    convert_and_compare(dir, FP_BF16, 0, "q2-bf16");
    char out[512];
    snprintf(out, sizeof out, "%s/q2-bf16.gguf", th_tmpdir());
    fp_gguf *g = NULL;
    CHECK_OK(fp_gguf_open(&g, out));
    if (!g) return 1;
    fp_gguf_str *tok, *mer;
    size_t nt, nm, ntt;
    int64_t *tt, v;
    CHECK_OK(fp_gguf_get_string_array(g, "tokenizer.ggml.tokens", &tok, &nt));
    CHECK_OK(fp_gguf_get_int_array(g, "tokenizer.ggml.token_type", &tt, &ntt));
    CHECK_OK(fp_gguf_get_string_array(g, "tokenizer.ggml.merges", &mer, &nm));
    CHECK(nt == 151936 && ntt == nt);
    CHECK(nt > 151645 && tok[0].len == 1 && tok[0].s[0] == '!');
    CHECK(tok[151645].len == 10 && !memcmp(tok[151645].s, "<|im_end|>", 10) && tt[151645] == 3);
    CHECK(tt[0] == 1 && tt[151935] == 5 && !memcmp(tok[151935].s, "[PAD151935]", 11));
    CHECK(nm > 150000 && mer[0].len == 5 && !memcmp(mer[0].s, "\xc4\xa0 \xc4\xa0", 5));
    CHECK_OK(fp_gguf_get_int(g, "tokenizer.ggml.eos_token_id", &v));
    CHECK(v == 151645);
    CHECK_OK(fp_gguf_get_int(g, "tokenizer.ggml.padding_token_id", &v));
    CHECK(v == 151643);
    fp_gguf_str s;
    CHECK_OK(fp_gguf_get_string(g, "tokenizer.chat_template", &s));
    CHECK(s.len > 100);
    CHECK_OK(fp_gguf_get_string(g, "tokenizer.ggml.pre", &s));
    CHECK(s.len == 5 && !memcmp(s.s, "qwen2", 5));
    free(tok);
    free(mer);
    free(tt);
    fp_gguf_close(g);
    return 0;
}

/* The tokenizer rebuilt from our GGUF metadata encodes like the one from tokenizer.json, and matches
 * llama.cpp's Qwen2 vocab test vectors. */
static int test_tokenizer_from_gguf(void) {
    const char *dir = tiny_qwen2_dir();
    const char *inp = th_shared_file("tokenizer/qwen2/ggml-vocab-qwen2.gguf.inp");
    if (!dir || !inp) { printf("  (needs ../shared/data/tokenizer/qwen2)\n"); return TH_SKIP; }
    char out[512], outp[4200];
    size_t il = strlen(inp);
    if (il + 1 > sizeof outp) return TH_SKIP;
    memcpy(outp, inp, il - 4);
    memcpy(outp + il - 4, ".out", 5);
    snprintf(out, sizeof out, "%s/tok-q8_0.gguf", th_tmpdir());
    CHECK_OK(fp_gguf_convert_hf(dir, out, FP_Q8_0, 0, NULL));
    fp_tokenizer *a = NULL, *b = NULL;
    CHECK_OK(fp_tokenizer_load(&a, dir));
    CHECK_OK(fp_gguf_load_tokenizer(&b, out));
    if (!a || !b) { fp_tokenizer_free(a); fp_tokenizer_free(b); return 1; }
    CHECK(fp_tokenizer_vocab_size(b) == 151936);
    CHECK(fp_tokenizer_token_to_id(b, "<|im_end|>") == 151645 && fp_tokenizer_is_special(b, 151645));
    CHECK(fp_tokenizer_token_to_id(b, "<think>") == 151667 && !fp_tokenizer_is_special(b, 151667));
    size_t ni, no;
    char *in = NULL, *exp = NULL;
    CHECK_OK(fp_read_file(inp, &in, &ni));
    CHECK_OK(fp_read_file(outp, &exp, &no));
    const char *sep = "\n__ggml_vocab_test__\n";
    char *p = in, *e = exp;
    int cases = 0, bad = 0;
    while (p && e && *p) {
        char *q = strstr(p, sep);
        if (!q) break;
        char *eol = strchr(e, '\n');
        if (!eol) break;
        *eol = 0;
        int32_t *ia = NULL, *ib = NULL;
        size_t na = 0, nb = 0;
        CHECK_OK(fp_tokenizer_encode(a, p, (size_t)(q - p), &ia, &na));
        CHECK_OK(fp_tokenizer_encode(b, p, (size_t)(q - p), &ib, &nb));
        /* expected ids from llama.cpp */
        int32_t want[512];
        size_t nw = 0;
        for (char *t = strtok(e, " "); t && nw < 512; t = strtok(NULL, " ")) want[nw++] = (int32_t)atol(t);
        int ok = na == nb && nb == nw && (!nb || (!memcmp(ia, ib, nb * 4) && !memcmp(ib, want, nb * 4)));
        if (!ok && bad++ < 3) fprintf(stderr, "  vocab test %d: json %zu ids, gguf %zu ids, llama.cpp %zu ids\n", cases, na, nb, nw);
        free(ia);
        free(ib);
        cases++;
        p = q + strlen(sep);
        e = eol + 1;
    }
    CHECK_MSG(bad == 0 && cases == 46, "%d of %d llama.cpp vocab vectors differ", bad, cases);
    const char *chat = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\nok</think> 4<|im_end|>";
    int32_t *ia = NULL, *ib = NULL;
    size_t na = 0, nb = 0;
    CHECK_OK(fp_tokenizer_encode(a, chat, strlen(chat), &ia, &na));
    CHECK_OK(fp_tokenizer_encode(b, chat, strlen(chat), &ib, &nb));
    CHECK(na == nb && na > 10 && !memcmp(ia, ib, na * 4) && ib[0] == 151644);
    free(ia);
    free(ib);
    free(in);
    free(exp);
    fp_tokenizer_free(a);
    fp_tokenizer_free(b);
    return 0;
}

/* Debian's llama.cpp (pyref chroot) loads and runs what we write. */
static int test_llama_cpp_loads(void) {
    const char *root = getenv("PYREF_ROOT") ? getenv("PYREF_ROOT") : "/var/cache/pyref-sid";
    char bench[512], pyref[512];
    snprintf(bench, sizeof bench, "%s/usr/bin/llama-bench", root);
    snprintf(pyref, sizeof pyref, "%s/tools/pyref", th_shared() ? th_shared() : "../shared");
    if (access(bench, X_OK) || access(pyref, X_OK) || geteuid() != 0) {
        printf("  (needs the pyref chroot with llama.cpp-tools at %s and root: run pyref setup)\n", root);
        return TH_SKIP;
    }
    const char *dir = tiny_qwen2_dir();
    if (!dir) { printf("  (needs ../shared/data/tokenizer/qwen2)\n"); return TH_SKIP; }
    const char *types[] = {"f32", "f16", "bf16", "q8_0", "q4_0"};
    for (int i = 0; i < 5; i++) {
        char cmd[2048];
        snprintf(cmd, sizeof cmd, "%s convert %s %s/llama-%s.gguf --type %s --quiet && %s exec llama-bench -m %s/llama-%s.gguf "
                 "-p 16 -n 0 -r 1 -t 1 >%s/llama-%s.log 2>&1", th_bin(), dir, th_tmpdir(), types[i], types[i], pyref,
                 th_tmpdir(), types[i], th_tmpdir(), types[i]);
        int rc = system(cmd);
        CHECK_MSG(rc == 0, "llama-bench on our %s file failed (see %s/llama-%s.log)", types[i], th_tmpdir(), types[i]);
        if (rc) {
            snprintf(cmd, sizeof cmd, "tail -5 %s/llama-%s.log >&2", th_tmpdir(), types[i]);
            if (system(cmd)) {}
        }
    }
    return 0;
}

/* llama.cpp's own writer and quantiser (llama-quantize --pure) on our f32 file: our reader reads its output,
 * and its Q8_0/Q4_0 blocks equal ours for the same weights. */
static int test_llama_quantize_agrees(void) {
    const char *root = getenv("PYREF_ROOT") ? getenv("PYREF_ROOT") : "/var/cache/pyref-sid";
    char q[512], pyref[512];
    snprintf(q, sizeof q, "%s/usr/bin/llama-quantize", root);
    snprintf(pyref, sizeof pyref, "%s/tools/pyref", th_shared() ? th_shared() : "../shared");
    if (access(q, X_OK) || access(pyref, X_OK) || geteuid() != 0) {
        printf("  (needs the pyref chroot with llama.cpp-tools at %s and root: run pyref setup)\n", root);
        return TH_SKIP;
    }
    const char *dir = tiny_qwen2_dir();
    if (!dir) { printf("  (needs ../shared/data/tokenizer/qwen2)\n"); return TH_SKIP; }
    char f32[512], cmd[2048];
    snprintf(f32, sizeof f32, "%s/lq-f32.gguf", th_tmpdir());
    CHECK_OK(fp_gguf_convert_hf(dir, f32, FP_F32, 0, NULL));
    fp_weights *src = NULL;
    CHECK_OK(fp_weights_open_gguf(&src, NULL, f32));
    if (!src) return 1;
    const char *types[] = {"Q8_0", "Q4_0"};
    for (int k = 0; k < 2; k++) {
        fp_dtype dt = k == 0 ? FP_Q8_0 : FP_Q4_0;
        snprintf(cmd, sizeof cmd, "%s exec llama-quantize --pure %s %s/lq-%s.gguf %s >%s/lq-%s.log 2>&1", pyref, f32,
                 th_tmpdir(), types[k], types[k], th_tmpdir(), types[k]);
        CHECK_MSG(system(cmd) == 0, "llama-quantize %s failed (%s/lq-%s.log)", types[k], th_tmpdir(), types[k]);
        snprintf(cmd, sizeof cmd, "%s/lq-%s.gguf", th_tmpdir(), types[k]);
        fp_weights *lq = NULL;
        fp_model_config cfg;
        CHECK_OK(fp_weights_open_gguf(&lq, &cfg, cmd));
        if (!lq) continue;
        CHECK(cfg.hidden_size == 32 && cfg.num_layers == 2 && cfg.vocab_size == 151936 && cfg.num_kv_heads == 1);
        CHECK(fp_weights_count(lq) == fp_weights_count(src));
        int quantised = 0;
        for (size_t i = 0; i < fp_weights_count(src); i++) {
            const fp_tensor *s = fp_weights_at(src, i), *t = fp_weights_get(lq, s->name);
            CHECK_MSG(t != NULL, "%s missing in llama-quantize output", s->name);
            if (!t) continue;
            if (s->ndim < 2) { CHECK(t->dtype == FP_F32 && !memcmp(t->data, s->data, s->nbytes)); continue; }
            CHECK_MSG(t->dtype == dt, "%s: llama.cpp wrote %s", s->name, fp_dtype_name(t->dtype));
            if (t->dtype != dt) continue;
            int64_t ne0 = s->shape[1], rows = s->shape[0];
            size_t rb = fp_dtype_row_bytes(dt, ne0);
            unsigned char *mine = malloc(rb);
            int bad = 0;
            for (int64_t r = 0; r < rows; r++) {
                fp_quantize_row(mine, (const float *)s->data + r * ne0, dt, ne0);
                if (memcmp(mine, (const unsigned char *)t->data + r * rb, rb)) bad++;
            }
            CHECK_MSG(bad == 0, "%s %s: %d of %lld rows differ from llama-quantize", types[k], s->name, bad, (long long)rows);
            free(mine);
            quantised++;
        }
        CHECK(quantised == 15); /* embedding + 7 matrices x 2 layers */
        fp_weights_free(lq);
    }
    fp_weights_free(src);
    return 0;
}

/* fp_model (the engine) on our GGUF file gives the same outputs as on the HF directory it came from. */
static int compare_model(const char *dir, const char *gguf, int use_head, double tol) {
    fp_model *a = NULL, *b = NULL;
    CHECK_OK(fp_model_load(&a, dir));
    CHECK_OK(fp_model_load(&b, gguf));
    if (!a || !b) { fp_model_free(a); fp_model_free(b); return 1; }
    fp_model_info ia, ib;
    fp_model_get_info(a, &ia);
    fp_model_get_info(b, &ib);
    CHECK_MSG(ia.head == ib.head && ia.num_labels == ib.num_labels, "%s: head %d/%d vs %d/%d", gguf, ia.head,
              ia.num_labels, ib.head, ib.num_labels);
    int32_t ids[7] = {1, 5, 9, 2, 33, 17, 4};
    int T = 7, n = use_head ? ia.num_labels : ia.hidden_size;
    float *x = calloc((size_t)(T * (n > 0 ? n : 1)), sizeof(float)), *y = calloc((size_t)(T * (n > 0 ? n : 1)), sizeof(float));
    int pos[7] = {0, 1, 2, 3, 4, 5, 6};
    if (use_head) {
        CHECK_OK(fp_model_head_logits(a, ids, T, pos, T, x));
        CHECK_OK(fp_model_head_logits(b, ids, T, pos, T, y));
    } else {
        CHECK_OK(fp_model_hidden_states(a, ids, T, NULL, T, x));
        CHECK_OK(fp_model_hidden_states(b, ids, T, NULL, T, y));
    }
    double maxd = 0, maxa = 0;
    for (int i = 0; i < T * n; i++) { maxd = fmax(maxd, fabs(x[i] - y[i])); maxa = fmax(maxa, fabs(x[i])); }
    CHECK_MSG(maxd <= tol * (1 + maxa), "%s: max |HF - GGUF| = %g (max |x| %g)", gguf, maxd, maxa);
    free(x);
    free(y);
    fp_model_free(a);
    fp_model_free(b);
    return 0;
}

static int test_engine_loads_our_gguf(void) {
    char out[512];
    const char *cases[][2] = {{"prm-f32", "1"}, {"prm-bf16", "0"}, {"q3-f32", "0"}, {"scalar-f32", "1"}};
    const char *dirs[] = {FX "tiny-prm", FX "tiny-prm", FX "tiny-qwen3", FX "tiny-scalar"};
    fp_dtype types[] = {FP_F32, FP_BF16, FP_F32, FP_F32};
    for (int i = 0; i < 4; i++) {
        snprintf(out, sizeof out, "%s/%s.gguf", th_tmpdir(), cases[i][0]);
        CHECK_OK(fp_gguf_convert_hf(dirs[i], out, types[i], 0, NULL));
        /* f32 and same-dtype files hold the very same weights: equal up to float rounding */
        compare_model(dirs[i], out, cases[i][1][0] == '1', types[i] == FP_F32 ? 1e-5 : 2e-2);
        if (cases[i][1][0] == '1') compare_model(dirs[i], out, 0, 1e-5);
    }
    return 0;
}

/* llama.cpp's forward on our f32 GGUF (llama-server --embedding --pooling none: final hidden states per token,
 * f32 KV cache) against fp_model on the same file. */
typedef struct { char *data; size_t len; } curlbuf;
static size_t curl_sink(char *p, size_t sz, size_t n, void *ud) {
    curlbuf *b = ud;
    char *d = realloc(b->data, b->len + sz * n + 1);
    if (!d) return 0;
    memcpy(d + b->len, p, sz * n);
    b->data = d;
    b->len += sz * n;
    d[b->len] = 0;
    return sz * n;
}
static long http_post(const char *url, const char *body, curlbuf *out) {
    CURL *c = curl_easy_init();
    long code = 0;
    if (!c) return 0;
    out->data = NULL;
    out->len = 0;
    curl_easy_setopt(c, CURLOPT_URL, url);
    if (body) curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, curl_sink);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    return code;
}

static int test_llama_cpp_hidden_states(void) {
    const char *root = getenv("PYREF_ROOT") ? getenv("PYREF_ROOT") : "/var/cache/pyref-sid";
    char srv[512], pyref[512];
    snprintf(srv, sizeof srv, "%s/usr/bin/llama-server", root);
    snprintf(pyref, sizeof pyref, "%s/tools/pyref", th_shared() ? th_shared() : "../shared");
    if (access(srv, X_OK) || access(pyref, X_OK) || geteuid() != 0) {
        printf("  (needs the pyref chroot with llama.cpp-tools at %s and root: run pyref setup)\n", root);
        return TH_SKIP;
    }
    const char *dir = tiny_qwen2_dir();
    if (!dir) { printf("  (needs ../shared/data/tokenizer/qwen2)\n"); return TH_SKIP; }
    char gguf[512], logp[512], portbuf[16];
    snprintf(gguf, sizeof gguf, "%s/hs-f32.gguf", th_tmpdir());
    snprintf(logp, sizeof logp, "%s/llama-server.log", th_tmpdir());
    CHECK_OK(fp_gguf_convert_hf(dir, gguf, FP_F32, 0, NULL));
    int port = 20000 + (int)(getpid() % 20000);
    snprintf(portbuf, sizeof portbuf, "%d", port);
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        FILE *f = freopen(logp, "w", stdout);
        if (f) dup2(fileno(stdout), 2);
        execl("/bin/sh", "sh", pyref, "exec", "llama-server", "-m", gguf, "--host", "127.0.0.1", "--port", portbuf,
              "--embedding", "--pooling", "none", "-t", "1", "-c", "256", "--no-webui", "-ctk", "f32", "-ctv", "f32", "-fa", "off",
              (char *)NULL);
        _exit(127);
    }
    setpgid(pid, pid);
    char url[128];
    curlbuf r = {0};
    int ready = 0;
    for (int i = 0; i < 120 && !ready; i++) { /* up to 60 s */
        snprintf(url, sizeof url, "http://127.0.0.1:%d/health", port);
        ready = http_post(url, NULL, &r) == 200;
        free(r.data);
        if (!ready) { struct timespec ts = {0, 500000000}; nanosleep(&ts, NULL); }
    }
    CHECK_MSG(ready, "llama-server did not come up (see %s)", logp);
    int32_t ids[] = {9707, 11, 1879, 0, 151645, 220, 17, 10, 18};
    int T = 9, H = 32;
    if (ready) {
        snprintf(url, sizeof url, "http://127.0.0.1:%d/embedding", port);
        char body[256] = "{\"content\": [";
        for (int i = 0; i < T; i++) snprintf(body + strlen(body), sizeof body - strlen(body), "%s%d", i ? "," : "", ids[i]);
        strcat(body, "]}");
        long code = http_post(url, body, &r);
        CHECK_MSG(code == 200, "POST /embedding: HTTP %ld: %.300s", code, r.data ? r.data : "");
        json_error_t jerr;
        json_t *j = r.data ? json_loads(r.data, 0, &jerr) : NULL;
        json_t *emb = json_object_get(json_array_get(j, 0), "embedding");
        CHECK_MSG(json_array_size(emb) == (size_t)T, "unexpected reply: %.300s", r.data ? r.data : "");
        fp_model *m = NULL;
        CHECK_OK(fp_model_load(&m, gguf)); /* the same f32 file (the HF directory is bf16) */
        float *ours = calloc((size_t)(T * H), sizeof(float));
        if (m) CHECK_OK(fp_model_hidden_states(m, ids, T, NULL, T, ours));
        double maxd = 0, maxa = 0;
        for (int t = 0; t < T && json_array_size(emb) == (size_t)T; t++) {
            json_t *row = json_array_get(emb, (size_t)t);
            CHECK(json_array_size(row) == (size_t)H);
            double rowd = 0;
            for (int k = 0; k < H && k < (int)json_array_size(row); k++) {
                double v = json_number_value(json_array_get(row, (size_t)k));
                rowd = fmax(rowd, fabs(v - ours[t * H + k]));
                maxa = fmax(maxa, fabs(v));
            }
            if (getenv("DBG")) printf("  token %d: max diff %g\n", t, rowd);
            maxd = fmax(maxd, rowd);
        }
        printf("  llama.cpp vs fluxprm final hidden states: max |diff| %.3g (max |h| %.3g)\n", maxd, maxa);
        CHECK_MSG(maxd <= 1e-4 * (1 + maxa), "llama.cpp and fluxprm disagree: %g", maxd);
        free(ours);
        fp_model_free(m);
        json_decref(j);
        free(r.data);
    }
    kill(-pid, SIGTERM);
    int st;
    for (int i = 0; i < 50 && waitpid(pid, &st, WNOHANG) == 0; i++) { struct timespec ts = {0, 100000000}; nanosleep(&ts, NULL); }
    if (waitpid(pid, &st, WNOHANG) == 0) { kill(-pid, SIGKILL); waitpid(pid, &st, 0); }
    return 0;
}

static int test_cli_usage(void) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s convert >/dev/null 2>&1", th_bin());
    int rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2);
    snprintf(cmd, sizeof cmd, "%s convert " FX "tiny-prm %s/x.gguf --type q5_k >/dev/null 2>&1", th_bin(), th_tmpdir());
    rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2);
    snprintf(cmd, sizeof cmd, "%s convert %s/no-such-dir %s/x.gguf 2>/dev/null", th_bin(), th_tmpdir(), th_tmpdir());
    rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 1);
    snprintf(cmd, sizeof cmd, "%s/x.gguf", th_tmpdir());
    CHECK(access(cmd, F_OK) != 0); /* nothing left behind */
    return 0;
}

int main(void) {
    RUN(test_quant_matches_numpy);
    RUN(test_writer_reader_roundtrip);
    RUN(test_unsupported_type);
    RUN(test_damaged_files);
    RUN(test_convert_prm);
    RUN(test_convert_scalar_head);
    RUN(test_convert_qwen3);
    RUN(test_convert_tokenizer);
    RUN(test_tokenizer_from_gguf);
    RUN(test_llama_cpp_loads);
    RUN(test_llama_quantize_agrees);
    RUN(test_engine_loads_our_gguf);
    RUN(test_llama_cpp_hidden_states);
    RUN(test_cli_usage);
    int rc = th_finish();
    if (!rc && !getenv("FLUXPRM_KEEP_TMP") && strncmp(th_tmpdir(), "tests/tmp/", 10) == 0) { /* ~60 MB of files */
        char cmd[512];
        snprintf(cmd, sizeof cmd, "rm -rf %s", th_tmpdir());
        if (system(cmd)) {}
    }
    return rc;
}
