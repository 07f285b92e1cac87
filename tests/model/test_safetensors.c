/* safetensors reader and model validation: good files read back as stored; malformed files, truncation,
 * bad offsets, dtype/shape mismatches and checkpoints that disagree with config.json give clear errors that
 * name the file and the tensor (and never crash). */
#include "fluxprm.h"
#include "harness.h"
#include "model/weights.h"
#include <jansson.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#define FIX "tests/ref/model/"

static char g_path[1024];
static const char *tmp(const char *name) {
    snprintf(g_path, sizeof g_path, "%s/%s", th_tmpdir(), name);
    return g_path;
}

/* Writes an 8-byte length (hlen_override when nonzero), the header and data. */
static void write_raw(const char *path, const char *hdr, uint64_t hlen_override, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    uint64_t hl = hlen_override ? hlen_override : strlen(hdr);
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hl >> (8 * i));
    fwrite(b, 1, 8, f);
    fwrite(hdr, 1, strlen(hdr), f);
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

/* Opens path expecting failure code `code` with every needle in the message. */
static void expect_fail(const char *path, int code, const char *n1, const char *n2) {
    fp_weights *w = NULL;
    int rc = fp_weights_open_safetensors(&w, path);
    CHECK_MSG(rc == code, "%s: got %d (%s), want %d", path, rc, fp_last_error(), code);
    CHECK(w == NULL);
    if (n1) CHECK_MSG(strstr(fp_last_error(), n1) != NULL, "message \"%s\" lacks \"%s\"", fp_last_error(), n1);
    if (n2) CHECK_MSG(strstr(fp_last_error(), n2) != NULL, "message \"%s\" lacks \"%s\"", fp_last_error(), n2);
    printf("  ok: %s\n", fp_last_error());
    fp_weights_free(w);
}

static int test_good_file(void) {
    /* F32 [2], BF16 [2,2], F16 [1] with the data section starting at an odd address (header of odd length). */
    float f[2] = {1.5f, -2.0f};
    uint16_t bf[4] = {0x3f80, 0x4000, 0xbf80, 0x0000}; /* 1, 2, -1, 0 */
    uint16_t h[1] = {0x3c00};                           /* 1.0 */
    unsigned char data[8 + 8 + 2];
    memcpy(data, f, 8);
    memcpy(data + 8, bf, 8);
    memcpy(data + 16, h, 2);
    const char *hdr = "{\"__metadata__\":{\"format\":\"pt\"},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"b\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[8,16]},"
                      "\"c\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[16,18]} ";
    char h2[512];
    snprintf(h2, sizeof h2, "%s%s}", hdr, strlen(hdr) % 2 ? "" : " "); /* odd total -> misaligned data */
    write_raw(tmp("good.safetensors"), h2, 0, data, sizeof data);
    fp_weights *w = NULL;
    CHECK_OK(fp_weights_open_safetensors(&w, tmp("good.safetensors")));
    if (!w) return 1;
    CHECK(fp_weights_count(w) == 3);
    const fp_tensor *a = fp_weights_get(w, "a"), *b = fp_weights_get(w, "b"), *c = fp_weights_get(w, "c");
    CHECK(a && b && c && !fp_weights_get(w, "__metadata__"));
    if (a && b && c) {
        CHECK(a->dtype == FP_F32 && a->ndim == 1 && a->shape[0] == 2 && a->nbytes == 8);
        CHECK(((const float *)a->data)[0] == 1.5f && ((const float *)a->data)[1] == -2.0f);
        CHECK((uintptr_t)a->data % 4 == 0);
        CHECK(b->dtype == FP_BF16 && b->ndim == 2 && b->shape[0] == 2 && b->shape[1] == 2);
        float r[4];
        fp_row_to_f32(r, b->data, b->dtype, 4);
        CHECK(r[0] == 1 && r[1] == 2 && r[2] == -1 && r[3] == 0);
        CHECK(c->dtype == FP_F16 && fp_f16_to_f32(((const uint16_t *)c->data)[0]) == 1.0f);
    }
    fp_weights_free(w);
    return 0;
}

static int test_malformed(void) {
    float d[4] = {0};
    FILE *f = fopen(tmp("tiny.safetensors"), "wb");
    fwrite("abc", 1, 3, f);
    fclose(f);
    expect_fail(tmp("tiny.safetensors"), FP_EPARSE, "tiny.safetensors", "truncated");
    write_raw(tmp("hlen.safetensors"), "{}", 1000, NULL, 0);
    expect_fail(tmp("hlen.safetensors"), FP_EPARSE, "hlen.safetensors", "exceeds the file size");
    write_raw(tmp("json.safetensors"), "{\"a\":{\"dtype\":", 0, d, 8);
    expect_fail(tmp("json.safetensors"), FP_EPARSE, "json.safetensors", "not valid JSON");
    write_raw(tmp("range.safetensors"), "{\"w1\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 0, d, 8);
    expect_fail(tmp("range.safetensors"), FP_EPARSE, "tensor w1", "out of range");
    write_raw(tmp("neg.safetensors"), "{\"w1\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 0, d, 8);
    expect_fail(tmp("neg.safetensors"), FP_EPARSE, "tensor w1", "out of range");
    write_raw(tmp("overlap.safetensors"),
              "{\"w1\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"w2\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
              0, d, 16);
    expect_fail(tmp("overlap.safetensors"), FP_EPARSE, "w1 and w2", "overlapping");
    write_raw(tmp("size.safetensors"), "{\"w3\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 0, d, 16);
    expect_fail(tmp("size.safetensors"), FP_EPARSE, "tensor w3", "need 12");
    write_raw(tmp("bf.safetensors"), "{\"w3\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 0, d, 16);
    expect_fail(tmp("bf.safetensors"), FP_EPARSE, "tensor w3", "need 8");
    write_raw(tmp("unk.safetensors"), "{\"w4\":{\"dtype\":\"Q7\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, d, 8);
    expect_fail(tmp("unk.safetensors"), FP_EPARSE, "tensor w4", "unknown dtype Q7");
    write_raw(tmp("i64.safetensors"), "{\"w5\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 0, d, 8);
    expect_fail(tmp("i64.safetensors"), FP_EUNSUPPORTED, "tensor w5", "unsupported dtype I64");
    write_raw(tmp("shape.safetensors"), "{\"w6\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 0, d, 8);
    expect_fail(tmp("shape.safetensors"), FP_EPARSE, "tensor w6", "shape");
    write_raw(tmp("dup.safetensors"),
              "{\"w7\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
              "\"w7\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
              0, d, 8);
    expect_fail(tmp("dup.safetensors"), FP_EPARSE, "dup.safetensors", NULL);
    write_raw(tmp("arr.safetensors"), "[1,2]", 0, d, 8);
    expect_fail(tmp("arr.safetensors"), FP_EPARSE, "arr.safetensors", "not a JSON object");
    expect_fail(tmp("absent.safetensors"), FP_EIO, "absent.safetensors", NULL);
    return 0;
}

/* Copies the first n bytes of src to dst (n = -k: all but k bytes). */
static void copy_prefix(const char *src, const char *dst, long n) {
    FILE *f = fopen(src, "rb");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (n < 0) n = size + n;
    char *buf = malloc((size_t)n);
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    f = fopen(dst, "wb");
    fwrite(buf, 1, got, f);
    fclose(f);
    free(buf);
}

static int test_truncated_checkpoint(void) {
    /* the last tensor of the real fixture loses its tail */
    copy_prefix(FIX "qwen2_tied/model.safetensors", tmp("cut.safetensors"), -100);
    expect_fail(tmp("cut.safetensors"), FP_EPARSE, "cut.safetensors", "out of range");
    /* cut inside the header */
    copy_prefix(FIX "qwen2_tied/model.safetensors", tmp("cut2.safetensors"), 200);
    expect_fail(tmp("cut2.safetensors"), FP_EPARSE, "cut2.safetensors", "exceeds the file size");
    return 0;
}

/* Writes the tensors of w except `skip` as one safetensors file (and a renamed copy of `rename_from`). */
static void write_weights(const fp_weights *w, const char *path, const char *skip, const char *extra_name) {
    json_t *hdr = json_object();
    size_t off = 0;
    for (size_t i = 0; i < fp_weights_count(w); i++) {
        const fp_tensor *t = fp_weights_at(w, i);
        if (skip && !strcmp(t->name, skip)) continue;
        json_t *shape = json_array();
        for (int k = 0; k < t->ndim; k++) json_array_append_new(shape, json_integer(t->shape[k]));
        json_t *o = json_pack("{s:s, s:o, s:[I,I]}", "dtype", fp_dtype_name(t->dtype), "shape", shape, "data_offsets",
                              (json_int_t)off, (json_int_t)(off + t->nbytes));
        json_object_set_new(hdr, t->name, o);
        off += t->nbytes;
    }
    if (extra_name)
        json_object_set_new(hdr, extra_name, json_pack("{s:s, s:[i], s:[I,I]}", "dtype", "F32", "shape", 1,
                                                       "data_offsets", (json_int_t)off, (json_int_t)(off + 4)));
    char *h = json_dumps(hdr, JSON_COMPACT);
    FILE *f = fopen(path, "wb");
    uint64_t hl = strlen(h);
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hl >> (8 * i));
    fwrite(b, 1, 8, f);
    fwrite(h, 1, hl, f);
    for (size_t i = 0; i < fp_weights_count(w); i++) {
        const fp_tensor *t = fp_weights_at(w, i);
        if (!(skip && !strcmp(t->name, skip))) fwrite(t->data, 1, t->nbytes, f);
    }
    if (extra_name) fwrite("\0\0\0\0", 1, 4, f);
    fclose(f);
    free(h);
    json_decref(hdr);
}

/* A model directory under tmp: config.json from `fixture` with one field changed (NULL: unchanged) and the
 * given weights file. */
static const char *model_dir(const char *name, const char *fixture, const char *key, json_t *value,
                             const char *weights_file) {
    static char dir[1024];
    char cmd[4096], cwd[1024], p[1200];
    snprintf(dir, sizeof dir, "%s/%s", th_tmpdir(), name);
    if (!getcwd(cwd, sizeof cwd)) return dir;
    snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
    if (system(cmd)) return dir;
    snprintf(p, sizeof p, "%s/config.json", fixture);
    json_t *cfg = json_load_file(p, 0, NULL);
    if (key) json_object_set_new(cfg, key, value);
    snprintf(p, sizeof p, "%s/config.json", dir);
    json_dump_file(cfg, p, JSON_INDENT(1));
    json_decref(cfg);
    if (weights_file) {
        snprintf(cmd, sizeof cmd, "ln -sf %s%s%s %s/model.safetensors", weights_file[0] == '/' ? "" : cwd,
                 weights_file[0] == '/' ? "" : "/", weights_file, dir);
        if (system(cmd)) return dir;
    }
    return dir;
}

static void expect_model_fail(const char *dir, int code, const char *n1, const char *n2) {
    fp_model *m = NULL;
    int rc = fp_model_load(&m, dir);
    CHECK_MSG(rc == code, "%s: got %d (%s), want %d", dir, rc, fp_last_error(), code);
    CHECK(m == NULL);
    if (n1) CHECK_MSG(strstr(fp_last_error(), n1) != NULL, "message \"%s\" lacks \"%s\"", fp_last_error(), n1);
    if (n2) CHECK_MSG(strstr(fp_last_error(), n2) != NULL, "message \"%s\" lacks \"%s\"", fp_last_error(), n2);
    printf("  ok: %s\n", fp_last_error());
    fp_model_free(m);
}

static int test_model_validation(void) {
    const char *fx = FIX "qwen2_tied", *st = FIX "qwen2_tied/model.safetensors";
    expect_model_fail(model_dir("layers3", fx, "num_hidden_layers", json_integer(3), st), FP_EINVAL,
                      "missing tensor model.layers.2.", NULL);
    expect_model_fail(model_dir("layers1", fx, "num_hidden_layers", json_integer(1), st), FP_EINVAL,
                      "unexpected tensor model.layers.1.", NULL);
    expect_model_fail(model_dir("inter", fx, "intermediate_size", json_integer(100), st), FP_EINVAL,
                      "model.layers.0.mlp.", "[100, 64]");
    expect_model_fail(model_dir("vocab", fx, "vocab_size", json_integer(5000), st), FP_EINVAL,
                      "model.embed_tokens.weight has shape [4096, 64]", "[5000, 64]");
    expect_model_fail(model_dir("kvheads", fx, "num_key_value_heads", json_integer(4), st), FP_EINVAL,
                      "k_proj.weight has shape [32, 64]", "[64, 64]");
    expect_model_fail(model_dir("untied", fx, "tie_word_embeddings", json_false(), st), FP_EINVAL,
                      "missing tensor lm_head.weight", NULL);
    expect_model_fail(model_dir("prm", fx, "architectures", json_pack("[s]", "Qwen2ForProcessRewardModel"), st),
                      FP_EINVAL, "missing tensor score.0.weight", NULL);
    expect_model_fail(model_dir("heads3", fx, "num_attention_heads", json_integer(3), st), FP_EPARSE,
                      "num_attention_heads 3", NULL);
    expect_model_fail(model_dir("nohidden", fx, "hidden_size", json_null(), st), FP_EPARSE, "hidden_size", NULL);
    expect_model_fail(model_dir("llama", fx, "model_type", json_string("llama"), st), FP_EUNSUPPORTED, "llama", NULL);
    expect_model_fail(model_dir("rope", fx, "rope_scaling", json_pack("{s:s,s:f}", "type", "yarn", "factor", 4.0), st),
                      FP_EUNSUPPORTED, "rope_scaling", NULL);
    expect_model_fail(model_dir("noweights", fx, NULL, NULL, NULL), FP_EIO, "model.safetensors", NULL);

    /* weights that lack a tensor, or carry an extra one */
    fp_weights *w = NULL;
    CHECK_OK(fp_weights_open_safetensors(&w, st));
    if (!w) return 1;
    char p[1024];
    snprintf(p, sizeof p, "%s", tmp("missing.safetensors"));
    write_weights(w, p, "model.norm.weight", NULL);
    expect_model_fail(model_dir("missing", fx, NULL, NULL, p), FP_EINVAL, "missing tensor model.norm.weight", NULL);
    snprintf(p, sizeof p, "%s", tmp("extra.safetensors"));
    write_weights(w, p, NULL, "model.layers.0.mlp.extra");
    expect_model_fail(model_dir("extra", fx, NULL, NULL, p), FP_EINVAL, "unexpected tensor model.layers.0.mlp.extra",
                      NULL);
    fp_weights_free(w);
    /* a reward head that does not fit the trunk (1.5B style: reward_head.safetensors next to the checkpoint) */
    {
        const char *rd = model_dir("badhead", FIX "qwen2_scalar", NULL, NULL, FIX "qwen2_scalar/model.safetensors");
        char hp[1200];
        snprintf(hp, sizeof hp, "%s/reward_head.safetensors", rd);
        float z[18] = {0};
        write_raw(hp, "{\"weight\":{\"dtype\":\"F32\",\"shape\":[1,17],\"data_offsets\":[0,68]},"
                      "\"bias\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[68,72]}}",
                  0, z, sizeof z);
        expect_model_fail(rd, FP_EINVAL, "reward_head.safetensors: tensor weight has shape [1, 17]", "hidden_size is 16");
        write_raw(hp, "{\"bias\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 0, z, 4);
        expect_model_fail(rd, FP_EINVAL, "missing tensor weight", NULL);
    }
    /* a malformed config.json */
    const char *d = model_dir("badjson", fx, NULL, NULL, st);
    snprintf(p, sizeof p, "%s/config.json", d);
    FILE *f = fopen(p, "w");
    fputs("{\"model_type\": \"qwen2\",", f);
    fclose(f);
    expect_model_fail(d, FP_EPARSE, "config.json", "JSON");
    return 0;
}

static int test_sharded_errors(void) {
    char cmd[4096], cwd[1024];
    if (!getcwd(cwd, sizeof cwd)) return 1;
    const char *dir = tmp("shards");
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp %s/" FIX "qwen2_prm/*.safetensors %s/", dir, cwd, dir);
    CHECK(system(cmd) == 0);
    char idx[1200];
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
    json_t *j = json_load_file(FIX "qwen2_prm/model.safetensors.index.json", 0, NULL);
    json_t *map = json_object_get(j, "weight_map");
    /* a tensor listed in the index that no shard holds */
    json_object_set_new(map, "model.layers.9.mlp.up_proj.weight", json_string("model-00001-of-00003.safetensors"));
    json_dump_file(j, idx, 0);
    expect_fail(dir, FP_EPARSE, "model.layers.9.mlp.up_proj.weight", "missing from shard");
    /* a shard file that does not exist */
    json_object_del(map, "model.layers.9.mlp.up_proj.weight");
    json_object_set_new(map, "extra.weight", json_string("model-00009-of-00003.safetensors"));
    json_dump_file(j, idx, 0);
    expect_fail(dir, FP_EIO, "model-00009-of-00003.safetensors", NULL);
    json_decref(j);
    /* the real sharded index opens */
    fp_weights *w = NULL;
    CHECK_OK(fp_weights_open_safetensors(&w, FIX "qwen2_prm"));
    CHECK(w && fp_weights_get(w, "score.2.bias") && fp_weights_get(w, "model.embed_tokens.weight"));
    fp_weights_free(w);
    return 0;
}

/* Random byte corruptions of a real header: any outcome but a crash (run under `make asan` for memory errors). */
static int test_corrupt_headers(void) {
    FILE *f = fopen(FIX "qwen2_seqcls/model.safetensors", "rb");
    CHECK(f != NULL);
    if (!f) return 1;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *orig = malloc((size_t)size), *buf = malloc((size_t)size);
    CHECK(fread(orig, 1, (size_t)size, f) == (size_t)size);
    fclose(f);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | orig[i];
    unsigned seed = 12345;
    int ok = 0, failed = 0;
    const char *path = tmp("fuzz.safetensors");
    char pathc[1024];
    snprintf(pathc, sizeof pathc, "%s", path);
    for (int it = 0; it < 150; it++) {
        memcpy(buf, orig, (size_t)size);
        int nmut = 1 + it % 4;
        for (int k = 0; k < nmut; k++) {
            seed = seed * 1103515245u + 12345u;
            size_t pos = (seed >> 8) % (size_t)(8 + hl);
            seed = seed * 1103515245u + 12345u;
            const char repl[] = "0123456789[]{},:\"-eE.x\\ ";
            buf[pos] = (seed >> 16) % 3 ? (unsigned char)repl[(seed >> 20) % (sizeof repl - 1)] : (unsigned char)(seed >> 24);
        }
        f = fopen(pathc, "wb");
        fwrite(buf, 1, (size_t)size, f);
        fclose(f);
        fp_weights *w = NULL;
        if (fp_weights_open_safetensors(&w, pathc) == FP_OK) {
            ok++;
            for (size_t i = 0; i < fp_weights_count(w); i++) { /* every tensor must lie inside the file */
                const fp_tensor *t = fp_weights_at(w, i);
                volatile unsigned char sink = 0;
                if (t->nbytes) sink ^= ((const unsigned char *)t->data)[t->nbytes - 1];
                (void)sink;
            }
        } else {
            failed++;
            CHECK(fp_last_error()[0] != 0);
        }
        fp_weights_free(w);
    }
    printf("  150 corrupted headers: %d opened, %d rejected with a message\n", ok, failed);
    free(orig);
    free(buf);
    return 0;
}

/* fluxprm inspect: exit 0 with the detected head for a good checkpoint, 1 with the validation message otherwise. */
static int test_cli_inspect(void) {
    char cmd[2048], out[8192];
    if (access(th_bin(), X_OK) != 0) {
        printf("  (no %s: set FLUXPRM_BIN)\n", th_bin());
        return TH_SKIP;
    }
    snprintf(cmd, sizeof cmd, "%s inspect " FIX "qwen2_prm --bench 64 2>&1", th_bin());
    FILE *p = popen(cmd, "r");
    size_t n = p ? fread(out, 1, sizeof out - 1, p) : 0;
    out[n] = 0;
    int st = p ? pclose(p) : -1;
    CHECK_MSG(st == 0, "%s -> %d: %s", cmd, st, out);
    CHECK(strstr(out, "head: prm (2 outputs)") && strstr(out, "heads: 14 (kv 2, head_dim 8)") && strstr(out, "prefill: 64"));
    const char *d = model_dir("cli_layers3", FIX "qwen2_tied", "num_hidden_layers", json_integer(3),
                              FIX "qwen2_tied/model.safetensors");
    snprintf(cmd, sizeof cmd, "%s inspect %s 2>&1", th_bin(), d);
    p = popen(cmd, "r");
    n = p ? fread(out, 1, sizeof out - 1, p) : 0;
    out[n] = 0;
    st = p ? pclose(p) : -1;
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 1, "exit %d", st);
    CHECK_MSG(strstr(out, "missing tensor model.layers.2.input_layernorm.weight") != NULL, "%s", out);
    return 0;
}

int main(void) {
    RUN(test_good_file);
    RUN(test_malformed);
    RUN(test_truncated_checkpoint);
    RUN(test_model_validation);
    RUN(test_sharded_errors);
    RUN(test_corrupt_headers);
    RUN(test_cli_inspect);
    return th_finish();
}
