/* Model exactness tests: tiny random-weight checkpoints built by tests/ref/model/make_fixtures.py with the real
 * HF transformers classes; expected outputs are HF float32 results stored in each fixture's expected.json.
 * Tolerances: final hidden states max|ours - ref| <= 1e-4 * max|ref|; step probabilities within 1e-5 (f32
 * weights; also for bf16 weights, whose reference runs HF in f32 on the same bf16-rounded values);
 * pooled embeddings within 1e-5; rotary inv_freq bit-exact. */
#include "fluxprm.h"
#include "harness.h"
#include "model/gguf.h"
#include "model/model.h"
#include "tensor/kernels.h"
#include "tensor/ops.h"
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <unistd.h>

#define FIX "tests/ref/model/"

static json_t *load_expected(const char *dir) {
    char p[512];
    snprintf(p, sizeof p, "%s/expected.json", dir);
    json_error_t e;
    json_t *j = json_load_file(p, 0, &e);
    if (!j) fprintf(stderr, "  cannot read %s: %s\n", p, e.text);
    return j;
}

static int32_t *ids_of(json_t *c, int *T) {
    json_t *a = json_object_get(c, "ids");
    *T = (int)json_array_size(a);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)*T);
    for (int i = 0; i < *T; i++) ids[i] = (int32_t)json_integer_value(json_array_get(a, (size_t)i));
    return ids;
}
static int *ints_of(json_t *a, int *n) {
    *n = (int)json_array_size(a);
    int *v = malloc(sizeof(int) * (size_t)(*n ? *n : 1));
    for (int i = 0; i < *n; i++) v[i] = (int)json_integer_value(json_array_get(a, (size_t)i));
    return v;
}
static double num(json_t *a, size_t i) { return json_number_value(json_array_get(a, i)); }

/* Compares every output the fixture records; prob_tol for step probabilities. */
static void check_fixture_any(const char *model_path, const char *dir, double prob_tol, double hid_tol, double emb_tol,
                              int check_hidden_all) {
    json_t *ex = load_expected(dir);
    CHECK(ex != NULL);
    if (!ex) return;
    fp_model *m = NULL;
    CHECK_OK(fp_model_load(&m, model_path));
    if (!m) { json_decref(ex); return; }
    fp_model_info info;
    fp_model_get_info(m, &info);
    int H = info.hidden_size;

    /* rotary inv_freq: bit-exact with HF */
    json_t *inv = json_object_get(ex, "inv_freq");
    CHECK((int)json_array_size(inv) == info.head_dim / 2);
    int inv_bad = 0;
    for (int i = 0; i < info.head_dim / 2 && i < (int)json_array_size(inv); i++)
        if (m->inv_freq[i] != (float)num(inv, (size_t)i)) inv_bad++;
    CHECK_MSG(inv_bad == 0, "%s: %d inv_freq values differ from HF", dir, inv_bad);

    json_t *cases = json_object_get(ex, "cases");
    for (size_t ci = 0; ci < json_array_size(cases); ci++) {
        json_t *c = json_array_get(cases, ci);
        int T, nh, np;
        int32_t *ids = ids_of(c, &T);
        int *hp = ints_of(json_object_get(c, "hidden_positions"), &nh);
        int *pos = ints_of(json_object_get(c, "positions"), &np);
        json_t *hid = json_object_get(c, "hidden");

        /* hidden states at the recorded positions (a subset forward: last layer only those rows) */
        float *h = malloc(sizeof(float) * (size_t)nh * H);
        CHECK_OK(fp_model_hidden_states(m, ids, T, hp, nh, h));
        double maxref = 0, maxdiff = 0;
        for (int i = 0; i < nh; i++)
            for (int j = 0; j < H; j++) {
                double r = num(json_array_get(hid, (size_t)i), (size_t)j);
                if (fabs(r) > maxref) maxref = fabs(r);
                double dd = fabs(r - h[(size_t)i * H + j]);
                if (dd > maxdiff || dd != dd) maxdiff = dd;
            }
        CHECK_MSG(maxdiff <= hid_tol * maxref, "%s case %zu: hidden max diff %g (max|ref| %g)", dir, ci, maxdiff, maxref);
        printf("  %s case %zu (T=%d): hidden max diff %.3g of max|ref| %.3g\n", dir, ci, T, maxdiff, maxref);

        if (check_hidden_all && nh == T) { /* the all-rows path gives the same numbers */
            float *all = malloc(sizeof(float) * (size_t)T * H);
            CHECK_OK(fp_model_hidden_states(m, ids, T, NULL, 0, all));
            double dd = 0;
            for (size_t i = 0; i < (size_t)T * H; i++) dd = fmax(dd, fabs(all[i] - h[i]));
            CHECK_MSG(dd <= 1e-5 * maxref, "all-rows vs subset forward differ by %g", dd);
            free(all);
        }

        /* pooled embeddings (short sequences: each is another full forward) */
        float *e = malloc(sizeof(float) * (size_t)H);
        const char *pools[2] = {"embed_last", "embed_mean"};
        for (int p = 0; p < 2 && T <= 4096; p++) {
            CHECK_OK(fp_model_embed(m, ids, T, p == 0 ? FP_POOL_LAST : FP_POOL_MEAN, e));
            json_t *re = json_object_get(c, pools[p]);
            double md = 0;
            for (int j = 0; j < H; j++) md = fmax(md, fabs(e[j] - num(re, (size_t)j)));
            CHECK_MSG(md <= emb_tol, "%s case %zu: %s max diff %g", dir, ci, pools[p], md);
        }
        free(e);

        /* head outputs */
        json_t *probs = json_object_get(c, "probs");
        if (probs) {
            CHECK(info.head != FP_HEAD_NONE);
            float *pr = malloc(sizeof(float) * (size_t)np);
            float *lg = malloc(sizeof(float) * (size_t)np * (info.num_labels > 0 ? info.num_labels : 1));
            if (T <= 4096) {
                CHECK_OK(fp_model_head_logits(m, ids, T, pos, np, lg));
                CHECK_OK(fp_model_score_positions(m, ids, T, pos, np, pr));
            } else { /* long: the head on the hidden rows already computed (step positions are among them) */
                for (int i = 0; i < np; i++) {
                    int r = 0;
                    while (r < nh && hp[r] != pos[i]) r++;
                    CHECK(r < nh);
                    if (r == nh) r = 0;
                    CHECK_OK(fp_model_apply_head(m, h + (size_t)r * H, 1, lg + (size_t)i * info.num_labels));
                    pr[i] = 1.0f / (1.0f + expf(lg[2 * i] - lg[2 * i + 1])); /* softmax(2 logits)[1] */
                }
            }
            double md = 0, ml = 0;
            json_t *rl = json_object_get(c, "logits");
            for (int i = 0; i < np; i++) {
                md = fmax(md, fabs(pr[i] - num(probs, (size_t)i)));
                for (int j = 0; j < info.num_labels; j++)
                    ml = fmax(ml, fabs(lg[(size_t)i * info.num_labels + j] - num(json_array_get(rl, (size_t)i), (size_t)j)));
            }
            CHECK_MSG(md <= prob_tol, "%s case %zu: step probability max diff %g > %g", dir, ci, md, prob_tol);
            printf("  %s case %zu: %d scores, max prob diff %.3g, max logit diff %.3g\n", dir, ci, np, md, ml);
            free(pr);
            free(lg);
        } else {
            float p;
            CHECK(fp_model_score_last(m, ids, T, &p) == FP_ESTATE); /* trunk only: no head */
        }
        free(h);
        free(hp);
        free(pos);
        free(ids);
    }
    fp_model_free(m);
    json_decref(ex);
}

static void check_fixture_tol(const char *dir, double prob_tol, double hid_tol, double emb_tol, int check_hidden_all) {
    check_fixture_any(dir, dir, prob_tol, hid_tol, emb_tol, check_hidden_all);
}
static void check_fixture_path(const char *model_path, const char *dir, double prob_tol, double hid_tol, double emb_tol) {
    check_fixture_any(model_path, dir, prob_tol, hid_tol, emb_tol, 0);
}
static void check_fixture(const char *dir, double prob_tol, int check_hidden_all) {
    check_fixture_tol(dir, prob_tol, 1e-4, 1e-5, check_hidden_all);
}

static int test_config(void) {
    fp_model_config c;
    CHECK_OK(fp_model_config_load(&c, FIX "qwen2_prm"));
    CHECK(!strcmp(c.model_type, "qwen2"));
    CHECK(!strcmp(c.architecture, "Qwen2ForProcessRewardModel"));
    CHECK(c.hidden_size == 112 && c.intermediate_size == 160 && c.num_layers == 2);
    CHECK(c.num_heads == 14 && c.num_kv_heads == 2 && c.head_dim == 8);
    CHECK(c.rope_theta == 1e4 && c.rms_norm_eps == 1e-5 && !c.tie_word_embeddings);
    CHECK(c.attention_bias && !c.qk_norm && c.vocab_size == 4096);
    CHECK(c.bos_token_id == 4000 && c.eos_token_id == 4001 && c.pad_token_id == -1);
    CHECK_OK(fp_model_config_load(&c, FIX "qwen3/config.json"));
    CHECK(!strcmp(c.model_type, "qwen3") && c.head_dim == 32 && c.qk_norm && !c.attention_bias);
    CHECK(c.rope_theta == 1e6);
    CHECK_OK(fp_model_config_load(&c, FIX "qwen2_prm_bf16"));
    CHECK(c.torch_dtype == FP_BF16);
    CHECK(fp_model_config_load(&c, FIX "nonexistent") == FP_EIO);

    /* transformers 4.x style (the Qwen2.5-Math-PRM-7B config.json keys): top-level rope_theta, torch_dtype,
     * rope_scaling null, sliding_window set but disabled, eos as a list */
    char p[600];
    snprintf(p, sizeof p, "%s/config4.json", th_tmpdir());
    FILE *f = fopen(p, "w");
    fputs("{\"architectures\":[\"Qwen2ForProcessRewardModel\"],\"auto_map\":{\"AutoModel\":\"modeling_qwen2_rm."
          "Qwen2ForProcessRewardModel\"},\"bos_token_id\":151643,\"eos_token_id\":[151645,151643],"
          "\"hidden_act\":\"silu\",\"hidden_size\":3584,\"intermediate_size\":18944,\"max_position_embeddings\":4096,"
          "\"max_window_layers\":28,\"model_type\":\"qwen2\",\"num_attention_heads\":28,\"num_hidden_layers\":28,"
          "\"num_key_value_heads\":4,\"rms_norm_eps\":1e-05,\"rope_scaling\":null,\"rope_theta\":10000.0,"
          "\"sliding_window\":4096,\"tie_word_embeddings\":false,\"torch_dtype\":\"bfloat16\",\"use_cache\":true,"
          "\"use_sliding_window\":false,\"vocab_size\":152064}", f);
    fclose(f);
    CHECK_OK(fp_model_config_load(&c, p));
    CHECK(c.hidden_size == 3584 && c.num_layers == 28 && c.num_kv_heads == 4 && c.head_dim == 128);
    CHECK(c.rope_theta == 10000.0 && c.rms_norm_eps == 1e-5 && c.torch_dtype == FP_BF16 && c.vocab_size == 152064);
    CHECK(c.eos_token_id == 151645 && c.bos_token_id == 151643 && c.pad_token_id == -1 && c.max_position_embeddings == 4096);
    return 0;
}

static int test_tied(void) {
    fp_model *m = NULL;
    CHECK_OK(fp_model_load(&m, FIX "qwen2_tied"));
    if (m) {
        fp_model_info i;
        fp_model_get_info(m, &i);
        CHECK(i.head == FP_HEAD_NONE && i.tie_word_embeddings && i.has_lm_head && !strcmp(i.weight_dtype, "F32"));
        fp_model_free(m);
    }
    check_fixture(FIX "qwen2_tied", 0, 1);
    return 0;
}

static int test_prm_sharded(void) {
    fp_model *m = NULL;
    CHECK_OK(fp_model_load(&m, FIX "qwen2_prm"));
    if (m) {
        fp_model_info i;
        fp_model_get_info(m, &i);
        CHECK(i.head == FP_HEAD_PRM && i.num_labels == 2 && !i.has_lm_head);
        /* the embedding gather preads rows from the shard the table lives in: same values as the mapping */
        int fd = -1;
        uint64_t off = 0;
        CHECK(fp_weights_file_span(m->w, m->embed->data, m->embed->nbytes, &fd, &off) == 1 && fd >= 0);
        int fd2 = -1;
        CHECK(fp_weights_file_span(m->w, &fd2, sizeof fd2, &fd2, &off) == 0 && fd2 == -1); /* not mapped memory */
        int H = i.hidden_size, V = i.vocab_size;
        int32_t ids[5] = {0, V - 1, 7, 7, V / 2};
        float *x = malloc(sizeof(float) * 5 * (size_t)H), *y = malloc(sizeof(float) * (size_t)H);
        fp_model_embed_rows(m, ids, 5, x);
        size_t erow = fp_dtype_row_bytes(m->embed->dtype, H);
        for (int t = 0; t < 5; t++) {
            fp_row_to_f32(y, (const char *)m->embed->data + (size_t)ids[t] * erow, m->embed->dtype, H);
            CHECK(!memcmp(x + (size_t)t * H, y, sizeof(float) * (size_t)H));
        }
        free(x);
        free(y);
        fp_model_free(m);
    }
    check_fixture(FIX "qwen2_prm", 1e-5, 1);
    return 0;
}

static int test_prm_bf16(void) {
    fp_model *m = NULL;
    CHECK_OK(fp_model_load(&m, FIX "qwen2_prm_bf16"));
    if (m) {
        fp_model_info i;
        fp_model_get_info(m, &i);
        CHECK(!strcmp(i.weight_dtype, "BF16"));
        fp_model_free(m);
    }
    /* The default precision keeps f32 activations on every kernel: HF float32 on the same bf16 weights. */
    check_fixture(FIX "qwen2_prm_bf16", 1e-5, 0);
    /* ... on each dispatch level too */
    fp_kernel_force(fp_cpu_max_kernel() >= FP_KERN_AVX2 ? FP_KERN_AVX2 : FP_KERN_REF);
    check_fixture(FIX "qwen2_prm_bf16", 1e-5, 0);
    fp_kernel_force(-1);
    /* FLUXPRM_PRECISION=fast: on AMX / AVX512-BF16 CPUs the BF16 GEMMs round activations to bf16, so the
     * tolerance is the bf16 one (step rewards 1e-2, hidden states 2e-2 relative, embeddings 5e-3). */
    setenv("FLUXPRM_PRECISION", "fast", 1);
    printf("  fast precision, kernel level %d:\n", fp_kernel_level());
    check_fixture_tol(FIX "qwen2_prm_bf16", 1e-2, 2e-2, 5e-3, 0);
    unsetenv("FLUXPRM_PRECISION");
    return 0;
}

static int test_qwen3(void) {
    check_fixture(FIX "qwen3", 0, 1);
    /* head_dim 32: fast precision runs the bf16 attention kernel (amx-bf16 or avx512-bf16dp, where the CPU has
     * one; Q, K, V and the weights rounded to bf16) on up to 1100 rows: the bf16 tolerance against HF float32 */
    setenv("FLUXPRM_PRECISION", "fast", 1);
    printf("  fast precision, attention kernel %s:\n", fp_attention_kernel_name(fp_kernel_level(), 0, FP_ATT_FAST_AUTO, 32));
    check_fixture_tol(FIX "qwen3", 1e-2, 2e-2, 5e-3, 1);
    unsetenv("FLUXPRM_PRECISION");
    return 0;
}

static int test_seqcls(void) {
    fp_model *m = NULL;
    CHECK_OK(fp_model_load(&m, FIX "qwen2_seqcls"));
    if (m) {
        fp_model_info i;
        fp_model_get_info(m, &i);
        CHECK(i.head == FP_HEAD_SEQ_CLS && i.num_labels == 3);
        fp_model_free(m);
    }
    check_fixture(FIX "qwen2_seqcls", 1e-5, 0);
    return 0;
}

static int test_tokcls(void) {
    fp_model *m = NULL;
    CHECK_OK(fp_model_load(&m, FIX "qwen2_tokcls"));
    if (m) {
        fp_model_info i;
        fp_model_get_info(m, &i);
        CHECK(i.head == FP_HEAD_TOKEN_CLS && i.num_labels == 2);
        fp_model_free(m);
    }
    check_fixture(FIX "qwen2_tokcls", 1e-5, 1);
    return 0;
}

/* 1.5B style: real vocabulary size, tied embeddings, reward_head.safetensors (and reward_head.pt). */
static int test_scalar_head(void) {
    fp_model *m = NULL;
    CHECK_OK(fp_model_load(&m, FIX "qwen2_scalar"));
    if (m) {
        fp_model_info i;
        fp_model_get_info(m, &i);
        CHECK(i.head == FP_HEAD_SCALAR && i.num_labels == 1 && i.vocab_size == 151936);
        fp_model_free(m);
    }
    check_fixture(FIX "qwen2_scalar", 1e-5, 0);

    /* The same model with only reward_head.pt next to it (torch zip reader). */
    char dir[512], cmd[4096], cwd[1024];
    snprintf(dir, sizeof dir, "%s/scalar_pt", th_tmpdir());
    if (!getcwd(cwd, sizeof cwd)) return 1;
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s && for f in config.json model.safetensors expected.json reward_head.pt; do "
             "ln -sf %s/" FIX "qwen2_scalar/$f %s/$f; done",
             dir, cwd, dir);
    CHECK(system(cmd) == 0);
    int rc = fp_model_load(&m, dir);
    if (rc == FP_EUNSUPPORTED) {
        printf("  (reward_head.pt: torch zip reader not available: %s)\n", fp_last_error());
        return TH_SKIP;
    }
    CHECK_OK(rc);
    if (m) {
        fp_model_info i;
        fp_model_get_info(m, &i);
        CHECK(i.head == FP_HEAD_SCALAR);
        fp_model_free(m);
    }
    check_fixture(dir, 1e-5, 0);
    return 0;
}

/* GGUF files written by the converter (src/model/gguf_convert.c) from the fixtures load through
 * fp_model_load(path.gguf) and give the same outputs: F32 exactly (HF tolerances), Q8_0 approximately. */
static int test_gguf(void) {
    const char *fx[3] = {"qwen2_prm", "qwen2_scalar", "qwen3"};
    for (int i = 0; i < 3; i++) {
        char src[256], out[1024], expdir[512], cmd[4096], cwd[1024];
        snprintf(src, sizeof src, FIX "%s", fx[i]);
        snprintf(expdir, sizeof expdir, "%s/gguf_%s", th_tmpdir(), fx[i]);
        snprintf(out, sizeof out, "%s/model.gguf", expdir);
        if (!getcwd(cwd, sizeof cwd)) return 1;
        snprintf(cmd, sizeof cmd, "mkdir -p %s && ln -sf %s/%s/expected.json %s/expected.json", expdir, cwd, src, expdir);
        CHECK(system(cmd) == 0);
        fp_gguf_convert_info ci;
        CHECK_OK(fp_gguf_convert_hf(src, out, FP_F32, 0, &ci));
        fp_model *m = NULL;
        CHECK_OK(fp_model_load(&m, out));
        if (!m) continue;
        fp_model_info info, ref;
        fp_model_get_info(m, &info);
        fp_model_free(m);
        CHECK_OK(fp_model_load(&m, src));
        if (!m) continue;
        fp_model_get_info(m, &ref);
        fp_model_free(m);
        CHECK(info.head == ref.head && info.num_labels == ref.num_labels && info.num_layers == ref.num_layers);
        /* GGUF stores rope theta and eps as f32; the forward uses them as f32 too (like HF) */
        CHECK((float)info.rope_theta == (float)ref.rope_theta && (float)info.rms_norm_eps == (float)ref.rms_norm_eps);
        CHECK(info.head_dim == ref.head_dim && info.vocab_size == ref.vocab_size);
        /* check_fixture reads expected.json next to the model path's directory: point it at the GGUF file */
        json_t *ex = load_expected(expdir);
        if (!ex) continue;
        json_decref(ex);
        check_fixture_path(out, expdir, 1e-5, 1e-4, 1e-5);
    }
    /* Q8_0: weights quantised, so only approximately equal */
    char out[512];
    snprintf(out, sizeof out, "%s/gguf_qwen2_prm/model_q8.gguf", th_tmpdir());
    fp_gguf_convert_info ci;
    CHECK_OK(fp_gguf_convert_hf(FIX "qwen2_prm", out, FP_Q8_0, 0, &ci));
    char expdir[512];
    snprintf(expdir, sizeof expdir, "%s/gguf_qwen2_prm", th_tmpdir());
    printf("  Q8_0 (%d of %d tensors fell back to F16):\n", ci.fallback, ci.tensors);
    check_fixture_path(out, expdir, 0.05, 0.05, 0.02);
    return 0;
}

/* Batch API and thread count give the same numbers as single calls. */
static int test_batch_threads(void) {
    json_t *ex = load_expected(FIX "qwen2_prm");
    fp_model *m = NULL;
    CHECK_OK(fp_model_load(&m, FIX "qwen2_prm"));
    if (!m || !ex) { fp_model_free(m); json_decref(ex); return 1; }
    json_t *cases = json_object_get(ex, "cases");
    int n = (int)json_array_size(cases);
    fp_model_seq seqs[8];
    memset(seqs, 0, sizeof seqs);
    int32_t *ids[8];
    int *pos[8];
    float *out[8], last[8];
    for (int i = 0; i < n && i < 8; i++) {
        json_t *c = json_array_get(cases, (size_t)i);
        ids[i] = ids_of(c, &seqs[i].T);
        pos[i] = ints_of(json_object_get(c, "positions"), &seqs[i].npos);
        seqs[i].ids = ids[i];
        seqs[i].positions = pos[i];
        out[i] = calloc((size_t)seqs[i].npos, sizeof(float));
        seqs[i].out_probs = out[i];
    }
    fp_model_set_threads(m, 1);
    CHECK_OK(fp_model_score_batch(m, seqs, n));
    fp_model_set_threads(m, 0);
    for (int i = 0; i < n; i++) {
        json_t *probs = json_object_get(json_array_get(cases, (size_t)i), "probs");
        for (int j = 0; j < seqs[i].npos; j++) CHECK_NEAR(out[i][j], num(probs, (size_t)j), 1e-5);
        CHECK_OK(fp_model_score_last(m, ids[i], seqs[i].T, &last[i]));
        CHECK_NEAR(last[i], out[i][seqs[i].npos - 1], 1e-5); /* the last position is a step position */
        free(out[i]);
    }
    /* A larger mixed batch: 120 sequences (the fixture cases in turn, some cut short, one of 1 token), more than
     * one pack of 4096 tokens; last-token and step-position outputs, logits too.  Each must equal its own
     * separate call. */
    enum { NB = 120 };
    fp_model_seq big[NB];
    memset(big, 0, sizeof big);
    float *bp[NB], *bl[NB];
    int total = 0;
    for (int i = 0; i < NB; i++) {
        int c = i % n;
        big[i].ids = ids[c];
        big[i].T = i % 7 == 3 ? 1 + i % 11 : seqs[c].T;
        if (i == 5) big[i].T = 1;
        big[i].positions = i % 2 || big[i].T != seqs[c].T ? NULL : pos[c];
        big[i].npos = big[i].positions ? seqs[c].npos : 1;
        bp[i] = calloc((size_t)big[i].npos, sizeof(float));
        bl[i] = calloc((size_t)big[i].npos * 2, sizeof(float));
        big[i].out_probs = bp[i];
        big[i].out_logits = bl[i];
        total += big[i].T;
    }
    CHECK(total > 4096);
    CHECK_OK(fp_model_score_batch(m, big, NB));
    double md = 0;
    for (int i = 0; i < NB; i++) {
        int lastp = big[i].T - 1;
        const int *pp = big[i].positions ? big[i].positions : &lastp;
        float one[16], lg1[32];
        CHECK_OK(fp_model_score_positions(m, big[i].ids, big[i].T, pp, big[i].npos, one));
        CHECK_OK(fp_model_head_logits(m, big[i].ids, big[i].T, pp, big[i].npos, lg1));
        for (int j = 0; j < big[i].npos; j++) {
            md = fmax(md, fabs(bp[i][j] - one[j]));
            md = fmax(md, fmax(fabs(bl[i][2 * j] - lg1[2 * j]), fabs(bl[i][2 * j + 1] - lg1[2 * j + 1])));
        }
        free(bp[i]);
        free(bl[i]);
    }
    CHECK_MSG(md <= 1e-5, "packed batch vs separate calls: max diff %g", md);
    printf("  packed batch of %d sequences (%d tokens): max diff vs separate calls %.3g\n", NB, total, md);
    for (int i = 0; i < n; i++) {
        free(ids[i]);
        free(pos[i]);
    }
    /* batch argument errors name the sequence */
    int32_t okids[4] = {1, 2, 3, 4};
    int badpos = 1000;
    float o2[2];
    fp_model_seq two[2] = {{okids, 4, NULL, 1, o2, NULL}, {okids, 4, &badpos, 1, o2 + 1, NULL}};
    CHECK(fp_model_score_batch(m, two, 2) == FP_EINVAL);
    CHECK_MSG(strstr(fp_last_error(), "sequence 1") != NULL, "%s", fp_last_error());
    /* bad arguments: clear errors, no crash */
    int32_t bad[3] = {1, 5000, 2};
    int p = 1;
    float r;
    CHECK(fp_model_score_positions(m, bad, 3, &p, 1, &r) == FP_EINVAL);
    CHECK(strstr(fp_last_error(), "5000") != NULL);
    p = 3;
    bad[1] = 5;
    CHECK(fp_model_score_positions(m, bad, 3, &p, 1, &r) == FP_EINVAL);
    CHECK(fp_model_score_positions(m, bad, 0, &p, 1, &r) == FP_EINVAL);
    fp_model_free(m);
    json_decref(ex);
    return 0;
}

/* The tiled online-softmax attention against the plain two-pass reference, including query subsets. */
static int test_attention_kernel(void) {
    const int dims[5] = {8, 16, 24, 64, 128}; /* scalar (d % 16 != 0) and 16-wide paths, 1..2 chunks of 64 */
    for (int di = 0; di < 5; di++) {
        int T = 150, nh = 6, nkv = 2, d = dims[di];
        float *q = malloc(sizeof(float) * T * nh * d), *k = malloc(sizeof(float) * T * nkv * d),
              *v = malloc(sizeof(float) * T * nkv * d), *o1 = malloc(sizeof(float) * T * nh * d),
              *o2 = malloc(sizeof(float) * T * nh * d);
        srand(7 + di);
        for (int i = 0; i < T * nh * d; i++) q[i] = (float)rand() / RAND_MAX * 6 - 3;
        for (int i = 0; i < T * nkv * d; i++)
            k[i] = (float)rand() / RAND_MAX * 6 - 3, v[i] = (float)rand() / RAND_MAX - 0.5f;
        CHECK(fp_attention_forward(o1, q, k, v, NULL, NULL, T, T, nh, nkv, d) == 0);
        fp_attention_forward_ref(o2, q, k, v, NULL, NULL, T, T, nh, nkv, d);
        double md = 0;
        for (int i = 0; i < T * nh * d; i++) md = fmax(md, fabs(o1[i] - o2[i]));
        CHECK_MSG(md < 2e-6, "d=%d: attention max diff %g", d, md);
        int qpos[4] = {0, 63, 64, 149};
        float *qs = malloc(sizeof(float) * 4 * nh * d);
        for (int i = 0; i < 4; i++) memcpy(qs + i * nh * d, q + qpos[i] * nh * d, sizeof(float) * nh * d);
        CHECK(fp_attention_forward(o1, qs, k, v, qpos, NULL, 4, T, nh, nkv, d) == 0);
        double md2 = 0;
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < nh * d; j++) md2 = fmax(md2, fabs(o1[i * nh * d + j] - o2[qpos[i] * nh * d + j]));
        CHECK_MSG(md2 < 2e-6, "d=%d: attention (query subset) max diff %g", d, md2);
        /* packed sequences [0,40) [40,41) [41,150): each row sees only keys of its own sequence */
        int *kst = malloc(sizeof(int) * T);
        for (int t = 0; t < T; t++) kst[t] = t < 40 ? 0 : t < 41 ? 40 : 41;
        CHECK(fp_attention_forward(o1, q, k, v, NULL, kst, T, T, nh, nkv, d) == 0);
        fp_attention_forward_ref(o2, q, k, v, NULL, kst, T, T, nh, nkv, d);
        double md3 = 0;
        for (int i = 0; i < T * nh * d; i++) md3 = fmax(md3, fabs(o1[i] - o2[i]));
        CHECK_MSG(md3 < 2e-6, "d=%d: attention (packed) max diff %g", d, md3);
        /* row 40 attends only to itself: output = its own value row */
        for (int h = 0; h < nh; h++)
            for (int x = 0; x < d; x++)
                CHECK_NEAR(o1[40 * nh * d + h * d + x], v[40 * nkv * d + (h / (nh / nkv)) * d + x], 1e-6);
        free(kst);
        printf("  d=%d: max diff vs f64 reference %.3g (all rows), %.3g (subset), %.3g (packed)\n", d, md, md2, md3);
        free(q); free(k); free(v); free(o1); free(o2); free(qs);
    }
    return 0;
}

/* 20k tokens through a tiny PRM (HF sdpa reference): hidden states and step rewards at 62 positions.
 * One 20k-token forward: about 5 s on 2 idle cores, so it always runs. */
static int test_long_context(void) {
    struct stat st;
    if (stat(FIX "qwen2_long/expected.json", &st) != 0) {
        printf("  (no fixture: run make_fixtures.py --long)\n");
        return TH_SKIP;
    }
    double t0 = fp_now();
    check_fixture(FIX "qwen2_long", 1e-5, 0);
    printf("  long-context checks took %.1f s\n", fp_now() - t0);
    return 0;
}


/* Sequences longer than one layer chunk (fp_model_layer_chunk_rows) in both precisions: T = 1027 runs every
 * layer in chunks of 352 + 352 + 323 rows, each chunk's queries attending to the keys of its own and the
 * earlier chunks; the residual stream is kept in the caller's output (all rows) or in a buffer of its own (a
 * positions subset, whose last layer runs the requested rows in chunks of their own).  Checks: every row of
 * the full forward equals the all-positions forward (1e-6 relative: the same kernels on the same rows), the
 * forward of a 515-token prefix (chunks 272 + 243) equals the first 515 rows (causal; 1e-5), and the fast
 * precision stays within the bf16 tolerance of the exact one (2e-2 of max|exact|, as test_prm_bf16), whose
 * f32 path the HF fixtures check. */
static double max_abs(const float *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}
static double max_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        m = d > m || d != d ? d : m;
    }
    return m;
}
static int test_layer_chunks(void) {
    fp_model *m = NULL;
    CHECK_OK(fp_model_load(&m, FIX "qwen2_prm_bf16"));
    if (!m) return 1;
    fp_model_info info;
    fp_model_get_info(m, &info);
    const int T = 2 * FP_MLP_CHUNK_ROWS + 3, T2 = FP_MLP_CHUNK_ROWS + 3, H = info.hidden_size;
    int32_t *ids = malloc(sizeof(int32_t) * T);
    int *all = malloc(sizeof(int) * T);
    uint32_t seed = 12345;
    for (int t = 0; t < T; t++) {
        seed = seed * 1103515245u + 12345u;
        ids[t] = (int32_t)((seed >> 8) % (uint32_t)info.vocab_size);
        all[t] = t;
    }
    size_t n = (size_t)T * H;
    float *exact = malloc(sizeof(float) * n), *full = malloc(sizeof(float) * n), *sub = malloc(sizeof(float) * n),
          *pre = malloc(sizeof(float) * (size_t)T2 * H);
    for (int prec = 0; prec < 2; prec++) {
        fp_model_set_precision(m, prec ? FP_PRECISION_FAST : FP_PRECISION_EXACT);
        CHECK_OK(fp_model_trunk_forward(m, ids, T, NULL, 0, full));
        CHECK_OK(fp_model_trunk_forward(m, ids, T, all, T, sub));
        CHECK_OK(fp_model_trunk_forward(m, ids, T2, NULL, 0, pre));
        CHECK(fp_model_layer_chunk_rows(m, T) == FP_MLP_CHUNK_ROWS); /* the chunking the comment above describes */
        /* a tiny model's buffers outweigh its weights: the shortest MLP chunk, or, where the MLP runs unfused on
         * GEMM kernels that read the weights once per block of rows anyway (exact precision on AVX-512: f32
         * FMA, 256-row blocks), that block; long inputs take ~T/8 */
        int pass = fp_matmul_swiglu_fused(!prec, FP_BF16, FP_MLP_CHUNK_ROWS, H, info.intermediate_size)
                       ? 0 : fp_matmul_rows_per_weight_pass(!prec, FP_BF16);
        CHECK(fp_model_mlp_chunk_rows(m) == (pass > 0 && pass < FP_MLP_CHUNK_ROWS ? pass : FP_MLP_CHUNK_ROWS));
        CHECK(prec || fp_kernel_level() < FP_KERN_AVX512 || fp_model_mlp_chunk_rows(m) == 256);
        CHECK(fp_model_layer_chunk_rows(m, 8192) == 2 * FP_MLP_CHUNK_ROWS && fp_model_layer_chunk_rows(m, 100) == 100);
        const int C = FP_MLP_CHUNK_ROWS;
        double scale = max_abs(full, n), d_sub = max_diff(full, sub, n), d_pre = max_diff(full, pre, (size_t)C * H),
               d_tail = max_diff(full + (size_t)C * H, pre + (size_t)C * H, (size_t)(T2 - C) * H);
        printf("  %s: T=%d max|h| %.3g, vs all positions %.2g, vs %d-token prefix %.2g (first %d rows), %.2g (rest)\n",
               prec ? "fast" : "exact", T, scale, d_sub, T2, d_pre, C, d_tail);
        CHECK(scale > 0 && d_sub <= 1e-6 * scale && d_pre <= 1e-5 * scale);
        CHECK(d_tail <= 1e-5 * scale);
        if (!prec) memcpy(exact, full, sizeof(float) * n);
        else {
            double d = max_diff(full, exact, n);
            printf("  fast vs exact: %.3g (%.2g of max|exact|)\n", d, d / max_abs(exact, n));
            CHECK(d <= 2e-2 * max_abs(exact, n));
        }
    }
    free(ids); free(all); free(exact); free(full); free(sub); free(pre);
    fp_model_free(m);
    return 0;
}

/* Requested positions may repeat rows, so there can be more of them than tokens: npos > T, both below the
 * layer chunk (T = 10, 15 positions: the last layer's requested rows run in chunks of at most 10) and above it
 * (T = 600, 1300 positions, chunks of at most 512).  Each must equal its row of the all-rows forward (1e-6
 * relative, as test_layer_chunks), in both precisions.  (The requested rows once overran buffers of T rows.) */
static int test_repeated_positions(void) {
    fp_model *m = NULL;
    CHECK_OK(fp_model_load(&m, FIX "qwen2_prm_bf16"));
    if (!m) return 1;
    fp_model_info info;
    fp_model_get_info(m, &info);
    const int H = info.hidden_size, Ts[2] = {10, 600}, nps[2] = {15, 1300};
    for (int c = 0; c < 2; c++) {
        int T = Ts[c], npos = nps[c];
        int32_t *ids = malloc(sizeof(int32_t) * T);
        int *pos = malloc(sizeof(int) * npos);
        float *full = malloc(sizeof(float) * T * H), *sub = malloc(sizeof(float) * npos * H);
        for (int t = 0; t < T; t++) ids[t] = (int32_t)((t * 7919u + 13u) % (uint32_t)info.vocab_size);
        for (int i = 0; i < npos; i++) pos[i] = (int)((i * 37u + 5u) % (uint32_t)T);
        for (int prec = 0; prec < 2; prec++) {
            fp_model_set_precision(m, prec ? FP_PRECISION_FAST : FP_PRECISION_EXACT);
            CHECK_OK(fp_model_trunk_forward(m, ids, T, NULL, 0, full));
            CHECK_OK(fp_model_trunk_forward(m, ids, T, pos, npos, sub));
            double scale = max_abs(full, (size_t)T * H), d = 0;
            for (int i = 0; i < npos; i++) {
                double di = max_diff(full + (size_t)pos[i] * H, sub + (size_t)i * H, (size_t)H);
                d = di > d || di != di ? di : d;
            }
            printf("  %s: T=%d, %d positions: max diff %.2g of max|h| %.3g\n", prec ? "fast" : "exact", T, npos, d,
                   scale);
            CHECK(scale > 0 && d <= 1e-6 * scale);
        }
        free(ids); free(pos); free(full); free(sub);
    }
    fp_model_free(m);
    return 0;
}

int main(void) {
    RUN(test_config);
    RUN(test_attention_kernel);
    RUN(test_tied);
    RUN(test_prm_sharded);
    RUN(test_prm_bf16);
    RUN(test_qwen3);
    RUN(test_seqcls);
    RUN(test_tokcls);
    RUN(test_scalar_head);
    RUN(test_gguf);
    RUN(test_batch_threads);
    RUN(test_layer_chunks);
    RUN(test_repeated_positions);
    RUN(test_long_context);
    return th_finish();
}
