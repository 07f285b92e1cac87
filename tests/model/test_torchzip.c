/* torch.save(state_dict) reader: fixtures written by torch.save (tests/ref/formats/make_fixtures.py), values
 * compared with the ones torch reported (expected.json); damaged archives must fail cleanly. */
#include "harness.h"
#include "base/base.h"
#include "model/weights.h"
#include <jansson.h>
#include <stdint.h>

#define TZ "tests/ref/formats/data/torchzip/"

static const char *dtype_str(fp_dtype t) { return fp_dtype_name(t); }

static int check_against_expected(const char *file, json_t *exp) {
    char path[512];
    snprintf(path, sizeof path, TZ "%s", file);
    fp_weights *w = NULL;
    CHECK_OK(fp_torchzip_load_state_dict(&w, path));
    if (!w) return 1;
    CHECK_MSG(fp_weights_count(w) == json_object_size(exp), "%s: %zu tensors, expected %zu", file,
              fp_weights_count(w), json_object_size(exp));
    const char *name;
    json_t *e;
    json_object_foreach(exp, name, e) {
        const fp_tensor *t = fp_weights_get(w, name);
        CHECK_MSG(t != NULL, "%s: tensor %s missing", file, name);
        if (!t) continue;
        CHECK_MSG(!strcmp(dtype_str(t->dtype), json_string_value(json_object_get(e, "dtype"))), "%s/%s dtype %s", file, name,
                  dtype_str(t->dtype));
        json_t *shape = json_object_get(e, "shape"), *vals = json_object_get(e, "f32");
        CHECK_MSG(t->ndim == (int)json_array_size(shape), "%s/%s ndim %d", file, name, t->ndim);
        int64_t numel = 1;
        for (int d = 0; d < t->ndim && d < (int)json_array_size(shape); d++) {
            CHECK(t->shape[d] == json_integer_value(json_array_get(shape, (size_t)d)));
            numel *= t->shape[d];
        }
        CHECK((size_t)numel == json_array_size(vals));
        CHECK(t->nbytes == fp_dtype_row_bytes(t->dtype, numel));
        float *f = malloc(sizeof(float) * (size_t)(numel ? numel : 1));
        fp_row_to_f32(f, t->data, t->dtype, numel);
        int bad = 0;
        for (int64_t i = 0; i < numel; i++)
            if (f[i] != (float)json_real_value(json_array_get(vals, (size_t)i))) bad++;
        CHECK_MSG(bad == 0, "%s/%s: %d values differ", file, name, bad);
        free(f);
    }
    fp_weights_free(w);
    return 0;
}

static int test_torch_fixtures(void) {
    json_error_t jerr;
    json_t *all = json_load_file(TZ "expected.json", 0, &jerr);
    CHECK_MSG(all != NULL, "expected.json: %s", jerr.text);
    if (!all) return 1;
    const char *file;
    json_t *exp;
    json_object_foreach(all, file, exp) check_against_expected(file, exp);
    CHECK(json_object_size(all) >= 7);
    json_decref(all);
    return 0;
}

static int test_reward_head_like(void) {
    fp_weights *w = NULL;
    CHECK_OK(fp_torchzip_load_state_dict(&w, TZ "linear_state_dict.pt"));
    if (!w) return 1;
    const fp_tensor *wt = fp_weights_get(w, "weight"), *b = fp_weights_get(w, "bias");
    CHECK(wt && wt->dtype == FP_F32 && wt->ndim == 2 && wt->shape[0] == 1 && wt->shape[1] == 8);
    CHECK(b && b->dtype == FP_F32 && b->ndim == 1 && b->shape[0] == 1);
    CHECK(fp_weights_count(w) == 2);
    fp_weights_free(w);
    /* the scalar-head fixture's reward_head.pt (Linear(64,1)) */
    CHECK_OK(fp_torchzip_load_state_dict(&w, "tests/ref/formats/data/tiny-scalar/reward_head.pt"));
    wt = w ? fp_weights_get(w, "weight") : NULL;
    CHECK(wt && wt->shape[0] == 1 && wt->shape[1] == 64);
    fp_weights_free(w);
    return 0;
}

static int expect_error(const char *path, int code, const char *needle1, const char *needle2) {
    fp_weights *w = (fp_weights *)1;
    int rc = fp_torchzip_load_state_dict(&w, path);
    CHECK_MSG(rc == code, "%s: rc %d (%s), expected %d", path, rc, fp_last_error(), code);
    CHECK(w == NULL);
    CHECK_MSG(strstr(fp_last_error(), needle1) != NULL, "message '%s' lacks '%s'", fp_last_error(), needle1);
    if (needle2) CHECK_MSG(strstr(fp_last_error(), needle2) != NULL, "message '%s' lacks '%s'", fp_last_error(), needle2);
    return 0;
}

static int test_unsupported_inputs(void) {
    expect_error(TZ "noncontig.pt", FP_EUNSUPPORTED, "tensor t", "contiguous");
    expect_error(TZ "long.pt", FP_EUNSUPPORTED, "tensor ids", "LongStorage");
    expect_error(TZ "compressed.pt", FP_EUNSUPPORTED, "compressed", "f32_2d/");
    expect_error(TZ "float_pickle.pt", FP_EUNSUPPORTED, "opcode 0x47", "offset");
    expect_error(TZ "does-not-exist.pt", FP_EIO, "does-not-exist.pt", NULL);
    return 0;
}

static unsigned char *slurp(const char *path, size_t *n) {
    char *d;
    if (fp_read_file(path, &d, n)) return NULL;
    return (unsigned char *)d;
}

static int test_truncated_and_corrupt(void) {
    size_t n;
    unsigned char *buf = slurp(TZ "f32_2d.pt", &n);
    CHECK(buf != NULL);
    if (!buf) return 1;
    fp_weights *w = NULL;
    CHECK_OK(fp_torchzip_load_memory(&w, buf, n, "mem"));
    CHECK(w && fp_weights_count(w) == 2);
    fp_weights_free(w);
    /* every truncation fails with a message */
    int ok_count = 0;
    for (size_t len = 0; len < n; len++) {
        unsigned char *cp = malloc(len ? len : 1);
        memcpy(cp, buf, len);
        w = NULL;
        int rc = fp_torchzip_load_memory(&w, cp, len, "trunc");
        if (rc == FP_OK) ok_count++;
        else CHECK(fp_last_error()[0] != 0);
        fp_weights_free(w);
        free(cp);
    }
    CHECK_MSG(ok_count == 0, "%d truncated archives loaded", ok_count);
    /* bad central directory offset (end record: offset field at +16) */
    size_t eocd = n - 22;
    CHECK(buf[eocd] == 0x50 && buf[eocd + 1] == 0x4b && buf[eocd + 2] == 5 && buf[eocd + 3] == 6);
    unsigned char *cp = malloc(n);
    memcpy(cp, buf, n);
    cp[eocd + 16] ^= 0x40;
    CHECK(fp_torchzip_load_memory(&w, cp, n, "badcd") == FP_EPARSE);
    CHECK(strstr(fp_last_error(), "central directory") != NULL);
    /* every single-byte corruption: no crash, and damage in the pickle or tensor bytes is noticed (CRC) */
    int loaded = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(cp, buf, n);
        cp[i] ^= 0xa5;
        w = NULL;
        if (fp_torchzip_load_memory(&w, cp, n, "flip") == FP_OK) loaded++;
        fp_weights_free(w);
    }
    printf("  %zu byte flips: %d still load (alignment padding, unused entries and fields)\n", n, loaded);
    /* a flip inside the pickle is caught by the CRC */
    unsigned char *pk = memmem(buf, n, "\x80\x02}", 3);
    CHECK(pk != NULL);
    if (pk) {
        memcpy(cp, buf, n);
        cp[pk - buf + 10] ^= 1;
        CHECK(fp_torchzip_load_memory(&w, cp, n, "flip") == FP_EPARSE);
        CHECK(strstr(fp_last_error(), "CRC") != NULL);
    }
    free(cp);
    free(buf);
    return 0;
}

static int test_memory_matches_file(void) {
    size_t n;
    unsigned char *buf = slurp(TZ "multi.pt", &n);
    fp_weights *a = NULL, *b = NULL;
    CHECK_OK(fp_torchzip_load_state_dict(&a, TZ "multi.pt"));
    CHECK_OK(fp_torchzip_load_memory(&b, buf, n, "multi"));
    free(buf); /* b must not reference it */
    CHECK(a && b && fp_weights_count(a) == fp_weights_count(b) && fp_weights_count(a) == 5);
    for (size_t i = 0; a && b && i < fp_weights_count(a); i++) {
        const fp_tensor *x = fp_weights_at(a, i), *y = fp_weights_get(b, x->name);
        CHECK(y && y->nbytes == x->nbytes && !memcmp(x->data, y->data, x->nbytes));
    }
    /* insertion order is kept */
    CHECK(a && !strcmp(fp_weights_at(a, 0)->name, "a.weight") && !strcmp(fp_weights_at(a, 4)->name, "c"));
    fp_weights_free(a);
    fp_weights_free(b);
    return 0;
}

int main(void) {
    RUN(test_torch_fixtures);
    RUN(test_reward_head_like);
    RUN(test_unsupported_inputs);
    RUN(test_truncated_and_corrupt);
    RUN(test_memory_matches_file);
    return th_finish();
}
