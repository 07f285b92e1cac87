/* Model loading: config + weights -> fp_model, with head detection and validation of every tensor name,
 * shape and dtype against the config; the head read-outs (PRM 2-class, classification, scalar reward head). */
#include "model/model.h"
#include "tensor/kernels.h"
#include "tensor/ops.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

const char *fp_head_name(int head) {
    switch (head) {
    case FP_HEAD_NONE: return "none";
    case FP_HEAD_PRM: return "prm";
    case FP_HEAD_TOKEN_CLS: return "token-classification";
    case FP_HEAD_SEQ_CLS: return "sequence-classification";
    case FP_HEAD_SCALAR: return "scalar";
    }
    return "?";
}

/* ---- validation helpers */

typedef struct {
    fp_model *m;
    const fp_weights *w;
    const char *src; /* file or directory named in messages */
    unsigned char *used;
} loader;

static void mark_used(loader *L, const fp_tensor *t) {
    const fp_tensor *first = fp_weights_at(L->w, 0);
    if (first && t >= first && t < first + fp_weights_count(L->w)) L->used[t - first] = 1;
}

static int shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    int k = snprintf(buf, n, "[");
    for (int i = 0; i < ndim; i++) k += snprintf(buf + k, n - (size_t)k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    return snprintf(buf + k, n - (size_t)k, "]");
}

/* Looks up name (d1 = -1 for a 1-D tensor) and checks its shape; *out = NULL when optional and absent. */
static int expect(loader *L, const fp_tensor **out, const char *name, int64_t d0, int64_t d1, int required) {
    const fp_tensor *t = fp_weights_get(L->w, name);
    *out = t;
    if (!t) return required ? fp_errorf(FP_EINVAL, "%s: missing tensor %s", L->src, name) : FP_OK;
    mark_used(L, t);
    int ndim = d1 < 0 ? 1 : 2;
    int64_t want[2] = {d0, d1};
    int ok = t->ndim == ndim && t->shape[0] == d0 && (ndim == 1 || t->shape[1] == d1);
    if (!ok) {
        char a[96], b[96];
        shape_str(a, sizeof a, t->ndim, t->shape);
        shape_str(b, sizeof b, ndim, want);
        return fp_errorf(FP_EINVAL, "%s: tensor %s has shape %s but config.json implies %s", L->src, name, a, b);
    }
    if (t->dtype != FP_F32 && t->dtype != FP_BF16 && t->dtype != FP_F16 && !(ndim == 2 && d1 % 32 == 0))
        return fp_errorf(FP_EUNSUPPORTED, "%s: tensor %s: dtype %s needs a row length that is a multiple of 32",
                         L->src, name, fp_dtype_name(t->dtype));
    return FP_OK;
}

/* An f32 copy of a (small) 1-D tensor, owned by the model. */
static int to_f32(fp_model *m, const fp_tensor *t, float **out) {
    *out = NULL;
    if (!t) return FP_OK;
    int64_t n = t->shape[0];
    float *f = fp_malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (!f) return FP_ENOMEM;
    float **o = fp_realloc(m->owned, (m->nowned + 1) * sizeof *o);
    if (!o) { free(f); return FP_ENOMEM; }
    m->owned = o;
    m->owned[m->nowned++] = f;
    fp_row_to_f32(f, t->data, t->dtype, n);
    *out = f;
    return FP_OK;
}

static int vec(loader *L, float **out, const char *name, int64_t n, int required) {
    const fp_tensor *t;
    int rc = expect(L, &t, name, n, -1, required);
    if (rc) return rc;
    return to_f32(L->m, t, out);
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* ---- head from reward_head.safetensors / reward_head.pt */

static int load_reward_head(fp_model *m, const char *dir, int *found) {
    char p[4096];
    int rc;
    *found = 0;
    snprintf(p, sizeof p, "%s/reward_head.safetensors", dir);
    if (file_exists(p)) rc = fp_weights_open_safetensors(&m->head_w, p);
    else {
        snprintf(p, sizeof p, "%s/reward_head.pt", dir);
        if (!file_exists(p)) return FP_OK;
        rc = fp_torchzip_load_state_dict(&m->head_w, p);
    }
    if (rc) return fp_error_prefix("reward head: ");
    *found = 1;
    int H = m->cfg.hidden_size;
    const fp_tensor *w = fp_weights_get(m->head_w, "weight"), *b = fp_weights_get(m->head_w, "bias");
    if (!w) w = fp_weights_get(m->head_w, "reward_head.weight"), b = fp_weights_get(m->head_w, "reward_head.bias");
    if (!w) return fp_errorf(FP_EINVAL, "%s: missing tensor weight (reward_head Linear(H,1))", p);
    size_t nexpected = 1 + (b != NULL);
    if (fp_weights_count(m->head_w) != nexpected)
        for (size_t i = 0; i < fp_weights_count(m->head_w); i++) {
            const fp_tensor *t = fp_weights_at(m->head_w, i);
            if (t != w && t != b) return fp_errorf(FP_EINVAL, "%s: unexpected tensor %s", p, t->name);
        }
    if (w->ndim != 2 || w->shape[1] != H || w->shape[0] < 1) {
        char a[96];
        shape_str(a, sizeof a, w->ndim, w->shape);
        return fp_errorf(FP_EINVAL, "%s: tensor %s has shape %s but hidden_size is %d (expected [1, %d])", p, w->name,
                         a, H, H);
    }
    int L = (int)w->shape[0];
    if (b && (b->ndim != 1 || b->shape[0] != L)) {
        char a[96];
        shape_str(a, sizeof a, b->ndim, b->shape);
        return fp_errorf(FP_EINVAL, "%s: tensor %s has shape %s, expected [%d]", p, b->name, a, L);
    }
    if (w->dtype != FP_F32 && w->dtype != FP_BF16 && w->dtype != FP_F16)
        return fp_errorf(FP_EUNSUPPORTED, "%s: tensor %s: dtype %s", p, w->name, fp_dtype_name(w->dtype));
    m->head = FP_HEAD_SCALAR;
    m->num_labels = L;
    m->head_w2 = w;
    return to_f32(m, b, &m->head_b2);
}

/* ---- load */

static int load_tensors(fp_model *m, const char *dir, const char *src) {
    fp_model_config *c = &m->cfg;
    loader L = {m, m->w, src, NULL};
    size_t n = fp_weights_count(m->w);
    L.used = fp_calloc(n ? n : 1, 1);
    if (!L.used) return FP_ENOMEM;
    int rc = FP_OK;
    const int64_t H = c->hidden_size, I = c->intermediate_size, V = c->vocab_size, hd = c->head_dim;
    const int64_t qd = (int64_t)c->num_heads * hd, kvd = (int64_t)c->num_kv_heads * hd;
    const char *pre = fp_weights_get(m->w, "model.embed_tokens.weight") ? "model."
                      : fp_weights_get(m->w, "embed_tokens.weight")   ? ""
                                                                      : "model.";
    char name[256];
#define NAME(...) (snprintf(name, sizeof name, __VA_ARGS__), name)
    if ((rc = expect(&L, &m->embed, NAME("%sembed_tokens.weight", pre), V, H, 1))) goto done;
    if ((rc = vec(&L, &m->final_norm, NAME("%snorm.weight", pre), H, 1))) goto done;
    m->layers = fp_calloc((size_t)c->num_layers, sizeof *m->layers);
    if (!m->layers) { rc = FP_ENOMEM; goto done; }
    for (int l = 0; l < c->num_layers; l++) {
        fp_layer *y = &m->layers[l];
        const char *a = "self_attn", *f = "mlp";
        if ((rc = vec(&L, &y->in_norm, NAME("%slayers.%d.input_layernorm.weight", pre, l), H, 1)) ||
            (rc = vec(&L, &y->post_norm, NAME("%slayers.%d.post_attention_layernorm.weight", pre, l), H, 1)) ||
            (rc = expect(&L, &y->q_w, NAME("%slayers.%d.%s.q_proj.weight", pre, l, a), qd, H, 1)) ||
            (rc = expect(&L, &y->k_w, NAME("%slayers.%d.%s.k_proj.weight", pre, l, a), kvd, H, 1)) ||
            (rc = expect(&L, &y->v_w, NAME("%slayers.%d.%s.v_proj.weight", pre, l, a), kvd, H, 1)) ||
            (rc = expect(&L, &y->o_w, NAME("%slayers.%d.%s.o_proj.weight", pre, l, a), H, qd, 1)) ||
            (rc = expect(&L, &y->gate_w, NAME("%slayers.%d.%s.gate_proj.weight", pre, l, f), I, H, 1)) ||
            (rc = expect(&L, &y->up_w, NAME("%slayers.%d.%s.up_proj.weight", pre, l, f), I, H, 1)) ||
            (rc = expect(&L, &y->down_w, NAME("%slayers.%d.%s.down_proj.weight", pre, l, f), H, I, 1)))
            goto done;
        if (c->attention_bias &&
            ((rc = vec(&L, &y->q_b, NAME("%slayers.%d.%s.q_proj.bias", pre, l, a), qd, 1)) ||
             (rc = vec(&L, &y->k_b, NAME("%slayers.%d.%s.k_proj.bias", pre, l, a), kvd, 1)) ||
             (rc = vec(&L, &y->v_b, NAME("%slayers.%d.%s.v_proj.bias", pre, l, a), kvd, 1))))
            goto done;
        if (c->qk_norm && ((rc = vec(&L, &y->q_norm, NAME("%slayers.%d.%s.q_norm.weight", pre, l, a), hd, 1)) ||
                           (rc = vec(&L, &y->k_norm, NAME("%slayers.%d.%s.k_norm.weight", pre, l, a), hd, 1))))
            goto done;
    }
    int causal = strstr(c->architecture, "ForCausalLM") != NULL;
    if ((rc = expect(&L, &m->lm_head, "lm_head.weight", V, H, causal && !c->tie_word_embeddings))) goto done;

    /* The head: from the checkpoint's tensor names first, then a separate reward_head file. */
    const fp_tensor *t;
    int want_prm = strstr(c->architecture, "ProcessRewardModel") != NULL;
    int want_cls = strstr(c->architecture, "Classification") != NULL;
    if (fp_weights_get(m->w, "score.0.weight") || want_prm) {
        if ((rc = expect(&L, &m->head_w1, "score.0.weight", H, H, 1)) ||
            (rc = vec(&L, &m->head_b1, "score.0.bias", H, 1)))
            goto done;
        t = fp_weights_get(m->w, "score.2.weight");
        if (!t) { rc = fp_errorf(FP_EINVAL, "%s: missing tensor score.2.weight", src); goto done; }
        if ((rc = expect(&L, &m->head_w2, "score.2.weight", t->ndim ? t->shape[0] : 0, H, 1)) ||
            (rc = vec(&L, &m->head_b2, "score.2.bias", m->head_w2->shape[0], 1)))
            goto done;
        m->head = FP_HEAD_PRM;
        m->num_labels = (int)m->head_w2->shape[0];
    } else if (fp_weights_get(m->w, "score.weight") || want_cls) {
        t = fp_weights_get(m->w, "score.weight");
        if (!t) { rc = fp_errorf(FP_EINVAL, "%s: missing tensor score.weight", src); goto done; }
        if ((rc = expect(&L, &m->head_w2, "score.weight", t->ndim ? t->shape[0] : 0, H, 1))) goto done;
        m->num_labels = (int)m->head_w2->shape[0];
        if ((rc = vec(&L, &m->head_b2, "score.bias", m->num_labels, 0))) goto done;
        m->head = strstr(c->architecture, "SequenceClassification") ? FP_HEAD_SEQ_CLS : FP_HEAD_TOKEN_CLS;
    } else if ((t = fp_weights_get(m->w, "reward_head.weight"))) { /* a GGUF file carrying the scalar head */
        if ((rc = expect(&L, &m->head_w2, "reward_head.weight", t->ndim == 2 ? t->shape[0] : 1, H, 1))) goto done;
        m->num_labels = (int)m->head_w2->shape[0];
        if ((rc = vec(&L, &m->head_b2, "reward_head.bias", m->num_labels, 0))) goto done;
        m->head = FP_HEAD_SCALAR;
    } else if (dir) {
        int found;
        if ((rc = load_reward_head(m, dir, &found))) goto done;
    }
    if (m->head != FP_HEAD_NONE && m->num_labels < 1) {
        rc = fp_errorf(FP_EINVAL, "%s: head has no outputs", src);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const fp_tensor *u = fp_weights_at(m->w, i);
        size_t ln = strlen(u->name);
        if (!L.used[i] && !(ln >= 19 && !strcmp(u->name + ln - 19, "rotary_emb.inv_freq"))) {
            rc = fp_errorf(FP_EINVAL, "%s: unexpected tensor %s (not part of a %s model with this config.json)", src,
                           u->name, c->architecture[0] ? c->architecture : c->model_type);
            goto done;
        }
    }
#undef NAME
done:
    free(L.used);
    return rc;
}

int fp_model_load(fp_model **out, const char *dir) {
    if (!out || !dir) return fp_errorf(FP_EINVAL, "fp_model_load: NULL argument");
    *out = NULL;
    fp_model *m = fp_calloc(1, sizeof *m);
    if (!m) return FP_ENOMEM;
    size_t n = strlen(dir);
    int rc;
    if (n > 5 && !strcmp(dir + n - 5, ".gguf") && file_exists(dir)) {
        /* A GGUF file: config from its metadata, HF tensor names from the GGUF reader; head tensors inside. */
        rc = fp_weights_open_gguf(&m->w, &m->cfg, dir);
        if (!rc) rc = load_tensors(m, NULL, dir);
    } else {
        rc = fp_model_config_load(&m->cfg, dir);
        if (!rc) rc = fp_weights_open_safetensors(&m->w, dir);
        if (!rc) rc = load_tensors(m, dir, dir);
    }
    if (!rc) {
        m->inv_freq = fp_malloc(sizeof(float) * (size_t)(m->cfg.head_dim / 2));
        if (!m->inv_freq) rc = FP_ENOMEM;
        else fp_rope_inv_freq(m->inv_freq, m->cfg.rope_theta, m->cfg.head_dim);
    }
    if (rc) { fp_model_free(m); return rc; }
    /* FLUXPRM_PRECISION=fast|exact sets the default precision (benchmarks, tests); the API call overrides it */
    const char *prec = getenv("FLUXPRM_PRECISION");
    m->fast = prec && !strcmp(prec, "fast");
    *out = m;
    return FP_OK;
}

void fp_model_free(fp_model *m) {
    if (!m) return;
    for (size_t i = 0; i < m->nowned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    free(m->inv_freq);
    fp_weights_free(m->w);
    fp_weights_free(m->head_w);
    free(m);
}

void fp_model_get_info(const fp_model *m, fp_model_info *info) {
    memset(info, 0, sizeof *info);
    const fp_model_config *c = &m->cfg;
    info->architecture = c->architecture;
    info->model_type = c->model_type;
    info->head = m->head;
    info->num_labels = m->head ? m->num_labels : 0;
    info->hidden_size = c->hidden_size;
    info->intermediate_size = c->intermediate_size;
    info->num_layers = c->num_layers;
    info->num_heads = c->num_heads;
    info->num_kv_heads = c->num_kv_heads;
    info->head_dim = c->head_dim;
    info->vocab_size = c->vocab_size;
    info->max_position_embeddings = c->max_position_embeddings;
    info->tie_word_embeddings = c->tie_word_embeddings;
    info->has_lm_head = m->lm_head != NULL || c->tie_word_embeddings;
    info->rope_theta = c->rope_theta;
    info->rms_norm_eps = c->rms_norm_eps;
    info->weight_dtype = fp_dtype_name(m->layers[0].q_w->dtype);
    info->bos_token_id = c->bos_token_id;
    info->eos_token_id = c->eos_token_id;
    info->pad_token_id = c->pad_token_id;
}

void fp_model_embed_rows(const fp_model *m, const int32_t *ids, int T, float *x) {
    const fp_tensor *e = m->embed;
    const int H = m->cfg.hidden_size;
    const size_t erow = fp_dtype_row_bytes(e->dtype, H);
    int fd = -1;
    uint64_t off = 0;
    if (!fp_weights_file_span(m->w, e->data, e->nbytes, &fd, &off)) fd = -1;
#pragma omp parallel if (T > 64)
    {
        /* a row buffer per thread (f32 rows are read straight into x) */
        char *buf = fd >= 0 && e->dtype != FP_F32 ? malloc(erow) : NULL;
#pragma omp for schedule(static)
        for (int t = 0; t < T; t++) {
            const char *src = (const char *)e->data + (size_t)ids[t] * erow;
            float *dst = x + (size_t)t * H;
            if (fd >= 0 && (buf || e->dtype == FP_F32)) {
                char *to = buf ? buf : (char *)dst;
                off_t at = (off_t)(off + (uint64_t)ids[t] * erow);
                size_t got = 0;
                while (got < erow) {
                    ssize_t r = pread(fd, to + got, erow - got, at + (off_t)got);
                    if (r <= 0) break;
                    got += (size_t)r;
                }
                if (got == erow) { /* else: read through the mapping (same bytes) */
                    if (buf) fp_row_to_f32(dst, buf, e->dtype, H);
                    continue;
                }
            }
            fp_row_to_f32(dst, src, e->dtype, H);
        }
        free(buf);
    }
}

void fp_model_linear(const fp_model *m, float *out, const float *inp, const fp_tensor *w, const float *bias, int T) {
    fp_matmul_forward_ex(!m->fast, out, inp, w->data, w->dtype, bias, T, (int)w->shape[1], (int)w->shape[0]);
}

/* The q/k/v projections of layer y as the segments of one GEMM pass (fp_matmul_forward_multi's arguments
 * from index o: 1 without q).  1 when the segments share a dtype and K (one pass), 0 otherwise. */
typedef struct {
    float *out[3];
    const void *w[3];
    const float *bias[3];
    int N[3], o, n, K;
    fp_dtype wt;
} qkv_segs;
static int qkv_segments(const fp_layer *y, float *q, float *k, float *v, qkv_segs *g) {
    const fp_tensor *w3[3] = {y->q_w, y->k_w, y->v_w};
    const float *b3[3] = {y->q_b, y->k_b, y->v_b};
    float *o3[3] = {q, k, v};
    g->o = q ? 0 : 1;
    g->n = 3 - g->o;
    g->K = (int)w3[g->o]->shape[1];
    g->wt = w3[g->o]->dtype;
    int same = 1;
    for (int i = 0; i < 3; i++) {
        g->out[i] = o3[i];
        g->w[i] = w3[i]->data;
        g->bias[i] = b3[i];
        g->N[i] = (int)w3[i]->shape[0];
        if (i >= g->o) same &= w3[i]->dtype == g->wt && (int)w3[i]->shape[1] == g->K;
    }
    return same;
}

int fp_model_norm_qkv_tiles(const fp_model *m, const fp_layer *y, float *q, float *k, float *v, const float *x,
                            uint16_t *tiles, size_t tiles_cap, int T) {
    qkv_segs g;
    if (!qkv_segments(y, q, k, v, &g) || g.K != m->cfg.hidden_size || fp_matmul_tiles_bytes(T, g.K) > tiles_cap ||
        !fp_matmul_amx_ok(!m->fast, g.wt, T, g.K))
        return 1;
    for (int i = g.o; i < 2; i++)
        if (g.N[i] % 32) return 1; /* fp_matmul_avx512_multi: every segment but the last a multiple of 32 */
    if (fp_rmsnorm_tiles(tiles, x, y->in_norm, (float)m->cfg.rms_norm_eps, T, g.K)) return 1;
    return fp_matmul_avx512_multi(g.n, g.out + g.o, g.w + g.o, g.bias + g.o, g.N + g.o, g.wt, NULL, tiles, T, g.K) ? 1 : 0;
}

void fp_model_qkv(const fp_model *m, const fp_layer *y, float *q, float *k, float *v, const float *inp, int T) {
    qkv_segs g;
    if (!qkv_segments(y, q, k, v, &g)) { /* mixed dtypes (a hand-made checkpoint): one GEMM each */
        if (q) fp_model_linear(m, q, inp, y->q_w, y->q_b, T);
        fp_model_linear(m, k, inp, y->k_w, y->k_b, T);
        fp_model_linear(m, v, inp, y->v_w, y->v_b, T);
        return;
    }
    fp_matmul_forward_multi(!m->fast, g.n, g.out + g.o, g.w + g.o, g.bias + g.o, g.N + g.o, g.wt, inp, T, g.K);
}

void fp_model_set_precision(fp_model *m, int precision) {
    if (m) m->fast = precision == FP_PRECISION_FAST;
}

void fp_model_set_threads(fp_model *m, int nthreads) {
    if (m) m->nthreads = nthreads > 0 ? nthreads : 0;
}

/* ---- read-outs */

int fp_model_hidden_states(fp_model *m, const int32_t *ids, int T, const int *positions, int npos, float *out) {
    if (!m || !out) return fp_errorf(FP_EINVAL, "fp_model_hidden_states: NULL argument");
    return fp_model_trunk_forward(m, ids, T, positions, positions ? npos : T, out);
}

/* The head runs on a handful of rows (the step positions), so it always takes f32 activations: the bf16
 * fast path would round the hidden states right where the rewards are read out, for no measurable gain. */
static void head_matmul(float *out, const float *inp, const fp_tensor *w, const float *bias, int n, int K, int N) {
    fp_matmul_forward_ex(1, out, inp, w->data, w->dtype, bias, n, K, N);
}

/* logits[n, L] from final hidden states h[n, H]. */
int fp_model_apply_head(fp_model *m, const float *h, int n, float *logits) {
    int H = m->cfg.hidden_size, L = m->num_labels;
    const fp_tensor *w2 = m->head_w2;
    if (m->head == FP_HEAD_PRM) {
        float *z = fp_malloc(sizeof(float) * (size_t)n * H);
        if (!z) return FP_ENOMEM;
        head_matmul(z, h, m->head_w1, m->head_b1, n, H, H);                        /* [n,H] */
        for (size_t i = 0; i < (size_t)n * H; i++) z[i] = z[i] > 0.0f ? z[i] : 0.0f; /* ReLU */
        head_matmul(logits, z, w2, m->head_b2, n, H, L);                            /* [n,L] */
        free(z);
    } else {
        head_matmul(logits, h, w2, m->head_b2, n, H, L);
    }
    return FP_OK;
}

int fp_model_head_logits(fp_model *m, const int32_t *ids, int T, const int *positions, int npos, float *out) {
    if (!m || !out || !positions) return fp_errorf(FP_EINVAL, "fp_model_head_logits: NULL argument");
    if (m->head == FP_HEAD_NONE)
        return fp_errorf(FP_ESTATE, "model (%s) has no score head", m->cfg.architecture);
    if (npos <= 0) return fp_errorf(FP_EINVAL, "fp_model_head_logits: npos = %d", npos);
    float *h = fp_malloc(sizeof(float) * (size_t)npos * m->cfg.hidden_size);
    if (!h) return FP_ENOMEM;
    int rc = fp_model_trunk_forward(m, ids, T, positions, npos, h);
    if (!rc) rc = fp_model_apply_head(m, h, npos, out);
    free(h);
    return rc;
}

/* P(class 1) = softmax(z)[1] for >= 2 labels, sigmoid(z) for one output; rows of L logits. */
static void probs_from_logits(const float *lg, int n, int L, float *out) {
    for (int i = 0; i < n; i++) {
        const float *z = lg + (size_t)i * L;
        if (L == 1) {
            out[i] = (float)(1.0 / (1.0 + exp(-(double)z[0])));
        } else {
            double mx = z[0], s = 0;
            for (int j = 1; j < L; j++) mx = z[j] > mx ? z[j] : mx;
            for (int j = 0; j < L; j++) s += exp((double)z[j] - mx);
            out[i] = (float)(exp((double)z[1] - mx) / s);
        }
    }
}

int fp_model_score_positions(fp_model *m, const int32_t *ids, int T, const int *positions, int npos,
                             float *out_probs) {
    if (!m || !out_probs || !positions) return fp_errorf(FP_EINVAL, "fp_model_score_positions: NULL argument");
    if (m->head == FP_HEAD_NONE)
        return fp_errorf(FP_ESTATE, "model (%s) has no score head", m->cfg.architecture);
    if (npos <= 0) return fp_errorf(FP_EINVAL, "fp_model_score_positions: npos = %d", npos);
    int L = m->num_labels;
    float *lg = fp_malloc(sizeof(float) * (size_t)npos * L);
    if (!lg) return FP_ENOMEM;
    int rc = fp_model_head_logits(m, ids, T, positions, npos, lg);
    if (!rc) probs_from_logits(lg, npos, L, out_probs);
    free(lg);
    return rc;
}

int fp_model_score_last(fp_model *m, const int32_t *ids, int T, float *out) {
    if (T <= 0) return fp_errorf(FP_EINVAL, "fp_model_score_last: empty sequence");
    int last = T - 1;
    return fp_model_score_positions(m, ids, T, &last, 1, out);
}

int fp_model_embed(fp_model *m, const int32_t *ids, int T, int pooling, float *out) {
    if (!m || !out) return fp_errorf(FP_EINVAL, "fp_model_embed: NULL argument");
    if (T <= 0) return fp_errorf(FP_EINVAL, "fp_model_embed: empty sequence");
    int H = m->cfg.hidden_size, rc;
    if (pooling == FP_POOL_LAST) {
        int last = T - 1;
        rc = fp_model_trunk_forward(m, ids, T, &last, 1, out);
        if (rc) return rc;
    } else if (pooling == FP_POOL_MEAN) {
        float *h = fp_malloc(sizeof(float) * (size_t)T * H);
        if (!h) return FP_ENOMEM;
        rc = fp_model_trunk_forward(m, ids, T, NULL, T, h);
        if (!rc)
            for (int j = 0; j < H; j++) {
                double s = 0;
                for (int t = 0; t < T; t++) s += h[(size_t)t * H + j];
                out[j] = (float)(s / T);
            }
        free(h);
        if (rc) return rc;
    } else {
        return fp_errorf(FP_EINVAL, "fp_model_embed: unknown pooling %d", pooling);
    }
    double ss = 0;
    for (int j = 0; j < H; j++) ss += (double)out[j] * out[j];
    double nrm = sqrt(ss);
    if (nrm < 1e-12) nrm = 1e-12; /* torch.nn.functional.normalize eps */
    for (int j = 0; j < H; j++) out[j] = (float)(out[j] / nrm);
    return FP_OK;
}

/* Sequences are packed (concatenated, attention kept within each) into forwards of up to this many tokens. */
#define PACK_TOKENS 4096

int fp_model_score_batch(fp_model *m, fp_model_seq *seqs, int nseq) {
    if (!m || (!seqs && nseq)) return fp_errorf(FP_EINVAL, "fp_model_score_batch: NULL argument");
    if (m->head == FP_HEAD_NONE) return fp_errorf(FP_ESTATE, "model (%s) has no score head", m->cfg.architecture);
    for (int i = 0; i < nseq; i++) { /* validate up front, with messages in each sequence's own terms */
        const fp_model_seq *q = &seqs[i];
        if (!q->ids || q->T <= 0 || (!q->out_probs && !q->out_logits))
            return fp_errorf(FP_EINVAL, "sequence %d: empty, or no ids or outputs", i);
        if (q->positions && q->npos <= 0) return fp_errorf(FP_EINVAL, "sequence %d: npos = %d", i, q->npos);
        for (int t = 0; t < q->T; t++)
            if (q->ids[t] < 0 || q->ids[t] >= m->cfg.vocab_size)
                return fp_errorf(FP_EINVAL, "sequence %d: token id %d at position %d is outside the vocabulary [0, %d)", i,
                                 (int)q->ids[t], t, m->cfg.vocab_size);
        for (int k = 0; q->positions && k < q->npos; k++)
            if (q->positions[k] < 0 || q->positions[k] >= q->T)
                return fp_errorf(FP_EINVAL, "sequence %d: position %d outside the sequence [0, %d)", i, q->positions[k],
                                 q->T);
    }
    int H = m->cfg.hidden_size, L = m->num_labels, rc = FP_OK;
    for (int i0 = 0; i0 < nseq && !rc;) {
        int i1 = i0, T = 0, np = 0;
        while (i1 < nseq && (i1 == i0 || T + seqs[i1].T <= PACK_TOKENS)) {
            T += seqs[i1].T;
            np += seqs[i1].positions ? seqs[i1].npos : 1;
            i1++;
        }
        int32_t *ids = fp_malloc(sizeof(int32_t) * (size_t)T);
        int *off = fp_malloc(sizeof(int) * (size_t)(i1 - i0 + 1)), *pos = fp_malloc(sizeof(int) * (size_t)np);
        float *h = fp_malloc(sizeof(float) * (size_t)np * H), *lg = fp_malloc(sizeof(float) * (size_t)np * L);
        if (!ids || !off || !pos || !h || !lg) rc = FP_ENOMEM;
        for (int i = i0, t = 0, k = 0; !rc && i < i1; i++) {
            const fp_model_seq *q = &seqs[i];
            off[i - i0] = t;
            memcpy(ids + t, q->ids, sizeof(int32_t) * (size_t)q->T);
            if (q->positions)
                for (int j = 0; j < q->npos; j++) pos[k++] = t + q->positions[j];
            else pos[k++] = t + q->T - 1;
            t += q->T;
            off[i - i0 + 1] = t;
        }
        if (!rc) rc = fp_model_trunk_forward_packed(m, ids, T, off, i1 - i0, pos, np, h);
        if (!rc) rc = fp_model_apply_head(m, h, np, lg);
        for (int i = i0, k = 0; !rc && i < i1; i++) {
            fp_model_seq *q = &seqs[i];
            int n = q->positions ? q->npos : 1;
            if (q->out_logits) memcpy(q->out_logits, lg + (size_t)k * L, sizeof(float) * (size_t)n * L);
            if (q->out_probs) probs_from_logits(lg + (size_t)k * L, n, L, q->out_probs);
            k += n;
        }
        free(ids); free(off); free(pos); free(h); free(lg);
        i0 = i1;
    }
    return rc;
}
