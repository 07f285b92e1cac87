/* f32 Qwen2 training model: parameters, gradients, saved activations, forward, losses, backward. */
#include "base/base.h"
#include "train/train.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Pointers into one flat buffer (parameters or gradients). */
typedef struct {
    float *ln1, *wq, *bq, *wk, *bk, *wv, *bv, *wo, *ln2, *wg, *wu, *wd;
    float *la[7], *lb[7]; /* LoRA A [r,in] / B [out,r] per target (NULL when not adapted) */
} layer_view;

/* LoRA targets in FPT_LORA_* bit order */
static const char *const lora_module[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                           "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};

static void lora_dims(const fpt_config *c, int i, int *in, int *out) {
    int C = c->hidden, F = c->intermediate, QD = c->heads * c->head_dim, KD = c->kv_heads * c->head_dim;
    switch (i) {
    case 0: *in = C; *out = QD; break;
    case 1: case 2: *in = C; *out = KD; break;
    case 3: *in = QD; *out = C; break;
    case 4: case 5: *in = C; *out = F; break;
    default: *in = F; *out = C; break;
    }
}

typedef struct {
    float *embed, *norm, *lm_head, *s0w, *s0b, *s2w, *s2b, *rw, *rb;
    layer_view *layer; /* [L] */
} model_view;

typedef struct {
    float *x, *ln1, *rstd1, *q, *k, *v, *att, *y, *xm, *ln2, *rstd2, *g, *u, *h;
    float *xa[7]; /* LoRA inp @ A^T [T,r] per target */
} layer_acts;

struct fpt_model {
    fpt_config cfg;
    fpt_param *params;
    int nparams;
    float *data, *grad;
    size_t numel;
    model_view P, G, Gt; /* parameters, gradients, gradients of trainable parameters only (NULL when frozen) */
    int mode;
    /* activations (capacity cap tokens) */
    int cap, T;
    layer_acts *acts;                   /* [L] */
    float *xf, *hf, *rstdf;             /* final residual [T,C], normed [T,C], rstd [T] */
    float *s_pre, *s_act, *logits2;     /* score head */
    float *rprob;                       /* scalar head [T] */
    float *lm_logits;                   /* [T,V] */
    float *cos_t, *sin_t;               /* [T, D/2] */
    /* backward scratch */
    float *dres, *dtmp, *dq, *dk, *dv, *dy, *datt, *dg, *du, *dh, *dlogits2, *drprob, *dxa;
    int ran_score, ran_lm, ran_reward;
};

/* ---------------------------------------------------------------- parameters */

static int add_param(fpt_model *m, int *cap, const char *name, int ndim, int64_t d0, int64_t d1) {
    if (m->nparams == *cap) {
        int nc = *cap ? *cap * 2 : 64;
        fpt_param *np = fp_realloc(m->params, sizeof *np * (size_t)nc);
        if (!np) return FP_ENOMEM;
        m->params = np;
        *cap = nc;
    }
    fpt_param *p = &m->params[m->nparams++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    p->shape[0] = d0;
    p->shape[1] = ndim == 2 ? d1 : 1;
    p->numel = (size_t)d0 * (size_t)(ndim == 2 ? d1 : 1);
    p->offset = m->numel;
    p->trainable = 1;
    p->decay = ndim == 2;
    m->numel += p->numel;
    return FP_OK;
}

/* Pointer to parameter `name` inside base (NULL when absent, or frozen and only_trainable is set). */
static float *pv(float *base, const fpt_model *m, const char *name, int only_trainable) {
    const fpt_param *p = fpt_model_find(m, name);
    if (!p || (only_trainable && !p->trainable)) return NULL;
    return base + p->offset;
}

static int bind_view(model_view *v, float *base, const fpt_model *m, int tr) {
    const fpt_config *c = &m->cfg;
    if (!v->layer) v->layer = fp_calloc((size_t)c->layers, sizeof *v->layer);
    if (!v->layer) return FP_ENOMEM;
    v->embed = pv(base, m, "model.embed_tokens.weight", tr);
    v->norm = pv(base, m, "model.norm.weight", tr);
    v->lm_head = c->tie_embeddings ? v->embed : pv(base, m, "lm_head.weight", tr);
    v->s0w = pv(base, m, "score.0.weight", tr);
    v->s0b = pv(base, m, "score.0.bias", tr);
    v->s2w = pv(base, m, "score.2.weight", tr);
    v->s2b = pv(base, m, "score.2.bias", tr);
    v->rw = pv(base, m, "reward_head.weight", tr);
    v->rb = pv(base, m, "reward_head.bias", tr);
    char nm[128];
    for (int l = 0; l < c->layers; l++) {
        layer_view *L = &v->layer[l];
#define LV(field, suffix) snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix); L->field = pv(base, m, nm, tr)
        LV(ln1, "input_layernorm.weight");
        LV(wq, "self_attn.q_proj.weight");
        LV(bq, "self_attn.q_proj.bias");
        LV(wk, "self_attn.k_proj.weight");
        LV(bk, "self_attn.k_proj.bias");
        LV(wv, "self_attn.v_proj.weight");
        LV(bv, "self_attn.v_proj.bias");
        LV(wo, "self_attn.o_proj.weight");
        LV(ln2, "post_attention_layernorm.weight");
        LV(wg, "mlp.gate_proj.weight");
        LV(wu, "mlp.up_proj.weight");
        LV(wd, "mlp.down_proj.weight");
#undef LV
        for (int i = 0; i < 7; i++) {
            snprintf(nm, sizeof nm, "base_model.model.model.layers.%d.%s.lora_A.weight", l, lora_module[i]);
            L->la[i] = pv(base, m, nm, tr);
            snprintf(nm, sizeof nm, "base_model.model.model.layers.%d.%s.lora_B.weight", l, lora_module[i]);
            L->lb[i] = pv(base, m, nm, tr);
        }
    }
    return FP_OK;
}

void fpt_config_from_model(fpt_config *c, const fp_model_config *mc) {
    memset(c, 0, sizeof *c);
    c->vocab = mc->vocab_size;
    c->hidden = mc->hidden_size;
    c->intermediate = mc->intermediate_size;
    c->layers = mc->num_layers;
    c->heads = mc->num_heads;
    c->kv_heads = mc->num_kv_heads;
    c->head_dim = mc->head_dim > 0 ? mc->head_dim : (mc->num_heads ? mc->hidden_size / mc->num_heads : 0);
    c->rms_eps = (float)mc->rms_norm_eps;
    c->rope_theta = mc->rope_theta;
    c->tie_embeddings = mc->tie_word_embeddings;
    c->has_score = mc->num_labels == 2 || mc->num_labels == 0;
}

int fpt_model_new(fpt_model **out, const fpt_config *cfg) {
    *out = NULL;
    const fpt_config *c = cfg;
    if (c->vocab <= 0 || c->hidden <= 0 || c->intermediate <= 0 || c->layers <= 0 || c->heads <= 0 ||
        c->kv_heads <= 0 || c->head_dim <= 0 || c->head_dim % 2 || c->heads % c->kv_heads || c->lora_rank < 0 ||
        (c->lora_rank > 0 && (!(c->lora_targets & FPT_LORA_ALL) || !(c->lora_alpha > 0))))
        return fp_errorf(FP_EINVAL, "train model: bad config (vocab %d hidden %d inter %d layers %d heads %d/%d "
                         "head_dim %d)", c->vocab, c->hidden, c->intermediate, c->layers, c->heads, c->kv_heads,
                         c->head_dim);
    fpt_model *m = fp_calloc(1, sizeof *m);
    if (!m) return FP_ENOMEM;
    m->cfg = *cfg;
    int cap = 0, rc = FP_OK;
    int C = c->hidden, F = c->intermediate, QD = c->heads * c->head_dim, KD = c->kv_heads * c->head_dim;
    rc |= add_param(m, &cap, "model.embed_tokens.weight", 2, c->vocab, C);
    char nm[128];
    for (int l = 0; l < c->layers && !rc; l++) {
#define AP(suffix, nd, a, b) \
    snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix); \
    rc |= add_param(m, &cap, nm, nd, a, b)
        AP("input_layernorm.weight", 1, C, 0);
        AP("self_attn.q_proj.weight", 2, QD, C);
        AP("self_attn.q_proj.bias", 1, QD, 0);
        AP("self_attn.k_proj.weight", 2, KD, C);
        AP("self_attn.k_proj.bias", 1, KD, 0);
        AP("self_attn.v_proj.weight", 2, KD, C);
        AP("self_attn.v_proj.bias", 1, KD, 0);
        AP("self_attn.o_proj.weight", 2, C, QD);
        AP("post_attention_layernorm.weight", 1, C, 0);
        AP("mlp.gate_proj.weight", 2, F, C);
        AP("mlp.up_proj.weight", 2, F, C);
        AP("mlp.down_proj.weight", 2, C, F);
#undef AP
    }
    rc |= add_param(m, &cap, "model.norm.weight", 1, C, 0);
    if (c->has_lm_head && !c->tie_embeddings) rc |= add_param(m, &cap, "lm_head.weight", 2, c->vocab, C);
    if (c->has_score) {
        rc |= add_param(m, &cap, "score.0.weight", 2, C, C);
        rc |= add_param(m, &cap, "score.0.bias", 1, C, 0);
        rc |= add_param(m, &cap, "score.2.weight", 2, 2, C);
        rc |= add_param(m, &cap, "score.2.bias", 1, 2, 0);
    }
    if (c->has_reward_head) {
        rc |= add_param(m, &cap, "reward_head.weight", 2, 1, C);
        rc |= add_param(m, &cap, "reward_head.bias", 1, 1, 0);
    }
    for (int l = 0; l < c->layers && c->lora_rank > 0 && !rc; l++)
        for (int i = 0; i < 7 && !rc; i++) {
            if (!(c->lora_targets & (1u << i))) continue;
            int in, o;
            lora_dims(c, i, &in, &o);
            snprintf(nm, sizeof nm, "base_model.model.model.layers.%d.%s.lora_A.weight", l, lora_module[i]);
            rc |= add_param(m, &cap, nm, 2, c->lora_rank, in);
            if (!rc) m->params[m->nparams - 1].is_lora = 1;
            snprintf(nm, sizeof nm, "base_model.model.model.layers.%d.%s.lora_B.weight", l, lora_module[i]);
            rc |= add_param(m, &cap, nm, 2, o, c->lora_rank);
            if (!rc) m->params[m->nparams - 1].is_lora = 1;
        }
    if (rc) { fpt_model_free(m); return FP_ENOMEM; }
    m->data = fp_calloc(m->numel, sizeof(float));
    m->grad = fp_calloc(m->numel, sizeof(float));
    if (!m->data || !m->grad || bind_view(&m->P, m->data, m, 0) || bind_view(&m->G, m->grad, m, 0) ||
        bind_view(&m->Gt, m->grad, m, 1)) {
        fpt_model_free(m);
        return FP_ENOMEM;
    }
    *out = m;
    return FP_OK;
}

static void free_acts(fpt_model *m) {
    if (m->acts) {
        for (int l = 0; l < m->cfg.layers; l++) {
            layer_acts *a = &m->acts[l];
            float **f[] = {&a->x, &a->ln1, &a->rstd1, &a->q, &a->k, &a->v, &a->att, &a->y, &a->xm, &a->ln2,
                           &a->rstd2, &a->g, &a->u, &a->h};
            for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) { free(*f[i]); *f[i] = NULL; }
            for (int i = 0; i < 7; i++) { free(a->xa[i]); a->xa[i] = NULL; }
        }
    }
    float **f[] = {&m->xf, &m->hf, &m->rstdf, &m->s_pre, &m->s_act, &m->logits2, &m->rprob, &m->lm_logits,
                   &m->cos_t, &m->sin_t, &m->dres, &m->dtmp, &m->dq, &m->dk, &m->dv, &m->dy, &m->datt,
                   &m->dg, &m->du, &m->dh, &m->dlogits2, &m->drprob, &m->dxa};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) { free(*f[i]); *f[i] = NULL; }
    m->cap = 0;
}

void fpt_model_free(fpt_model *m) {
    if (!m) return;
    free_acts(m);
    free(m->acts);
    free(m->P.layer);
    free(m->G.layer);
    free(m->Gt.layer);
    free(m->params);
    free(m->data);
    free(m->grad);
    free(m);
}

static int ensure_acts(fpt_model *m, int T) {
    if (T <= m->cap) return FP_OK;
    free_acts(m);
    const fpt_config *c = &m->cfg;
    size_t C = c->hidden, F = c->intermediate, QD = (size_t)c->heads * c->head_dim,
           KD = (size_t)c->kv_heads * c->head_dim, NH = c->heads, V = c->vocab, t = (size_t)T;
    if (!m->acts && !(m->acts = fp_calloc((size_t)c->layers, sizeof *m->acts))) return FP_ENOMEM;
    int bad = 0;
#define AL(ptr, n) do { size_t al_n = (n); (ptr) = fp_malloc(sizeof(float) * (al_n ? al_n : 1)); \
        if (!(ptr)) bad = 1; } while (0)
    for (int l = 0; l < c->layers; l++) {
        layer_acts *a = &m->acts[l];
        AL(a->x, t * C); AL(a->ln1, t * C); AL(a->rstd1, t); AL(a->q, t * QD); AL(a->k, t * KD);
        AL(a->v, t * KD); AL(a->att, NH * t * t); AL(a->y, t * QD); AL(a->xm, t * C); AL(a->ln2, t * C);
        AL(a->rstd2, t); AL(a->g, t * F); AL(a->u, t * F); AL(a->h, t * F);
        for (int i = 0; i < 7; i++)
            if (c->lora_rank > 0 && (c->lora_targets & (1u << i))) AL(a->xa[i], t * (size_t)c->lora_rank);
    }
    AL(m->xf, t * C); AL(m->hf, t * C); AL(m->rstdf, t);
    AL(m->s_pre, t * C); AL(m->s_act, t * C); AL(m->logits2, t * 2); AL(m->rprob, t);
    if (c->has_lm_head) AL(m->lm_logits, t * V);
    AL(m->cos_t, t * c->head_dim / 2); AL(m->sin_t, t * c->head_dim / 2);
    AL(m->dres, t * C); AL(m->dtmp, t * C); AL(m->dq, t * QD); AL(m->dk, t * KD); AL(m->dv, t * KD);
    AL(m->dy, t * QD); AL(m->datt, NH * t * t); AL(m->dg, t * F); AL(m->du, t * F); AL(m->dh, t * F);
    AL(m->dlogits2, t * 2); AL(m->drprob, t);
    if (c->lora_rank > 0) AL(m->dxa, t * (size_t)c->lora_rank);
#undef AL
    if (bad) { free_acts(m); return FP_ENOMEM; }
    m->cap = T;
    return FP_OK;
}

const fpt_config *fpt_model_config(const fpt_model *m) { return &m->cfg; }
size_t fpt_model_num_params(const fpt_model *m) { return m->numel; }
int fpt_model_param_count(const fpt_model *m) { return m->nparams; }
const fpt_param *fpt_model_param(const fpt_model *m, int i) {
    return i >= 0 && i < m->nparams ? &m->params[i] : NULL;
}
const fpt_param *fpt_model_find(const fpt_model *m, const char *name) {
    for (int i = 0; i < m->nparams; i++) if (!strcmp(m->params[i].name, name)) return &m->params[i];
    return NULL;
}
float *fpt_model_params(fpt_model *m) { return m->data; }
float *fpt_model_grads(fpt_model *m) { return m->grad; }
const float *fpt_model_score_logits(const fpt_model *m) { return m->ran_score ? m->logits2 : NULL; }
/* Only trainable ranges: frozen gradients stay zero, and their (calloc'd) pages are never touched, so a frozen
 * 7B trunk costs no gradient memory in LoRA / head-only mode. */
void fpt_model_zero_grad(fpt_model *m) {
    for (int i = 0; i < m->nparams; i++) {
        if (!m->params[i].trainable) continue;
        float *g = m->grad + m->params[i].offset;
        size_t n = m->params[i].numel;
        const size_t CH = 65536;
        long nch = (long)((n + CH - 1) / CH);
#pragma omp parallel for schedule(static) if (nch > 4)
        for (long j = 0; j < nch; j++) {
            size_t o = (size_t)j * CH;
            memset(g + o, 0, (n - o < CH ? n - o : CH) * sizeof(float));
        }
    }
}

void fpt_model_set_mode(fpt_model *m, int mode) {
    m->mode = mode;
    for (int i = 0; i < m->nparams; i++) {
        fpt_param *p = &m->params[i];
        int head = !strncmp(p->name, "score.", 6) || !strncmp(p->name, "reward_head.", 12);
        p->trainable = mode == FPT_MODE_FULL || head || (mode == FPT_MODE_LORA && p->is_lora);
    }
    bind_view(&m->Gt, m->grad, m, 1);
}

static int load_params(fpt_model *m, fpt_tensor_getter get, void *ctx, int lora) {
    for (int i = 0; i < m->nparams; i++) {
        fpt_param *p = &m->params[i];
        if (p->is_lora != lora) continue;
        const fp_tensor *t = get(ctx, p->name);
        if (!t) return fp_errorf(FP_EPARSE, "train model: missing tensor %s", p->name);
        int64_t n = 1;
        for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
        int shape_ok = (size_t)n == p->numel && t->shape[0] == p->shape[0];
        if (!shape_ok)
            return fp_errorf(FP_EPARSE, "train model: %s has %lld elements (shape[0] %lld), expected %lld x %lld",
                             p->name, (long long)n, (long long)(t->ndim ? t->shape[0] : 0),
                             (long long)p->shape[0], (long long)p->shape[1]);
        if (t->dtype != FP_F32 && t->dtype != FP_F16 && t->dtype != FP_BF16)
            return fp_errorf(FP_EUNSUPPORTED, "train model: %s: dtype %s not supported for training", p->name,
                             fp_dtype_name(t->dtype));
        fp_row_to_f32(m->data + p->offset, t->data, t->dtype, (int64_t)p->numel);
    }
    return FP_OK;
}

int fpt_model_load(fpt_model *m, fpt_tensor_getter get, void *ctx) { return load_params(m, get, ctx, 0); }
int fpt_model_load_lora(fpt_model *m, fpt_tensor_getter get, void *ctx) { return load_params(m, get, ctx, 1); }

/* splitmix64 + Box-Muller: deterministic, platform independent */
static uint64_t sm64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double unif(uint64_t *s) { return ((sm64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

void fpt_model_init_random(fpt_model *m, uint64_t seed, float std) {
    uint64_t s = seed;
    for (int i = 0; i < m->nparams; i++) {
        fpt_param *p = &m->params[i];
        float *d = m->data + p->offset;
        int is_norm = strstr(p->name, "norm") != NULL;
        for (size_t j = 0; j < p->numel; j++) {
            if (p->ndim == 1) { d[j] = is_norm ? 1.0f : 0.0f; continue; }
            double u1 = unif(&s), u2 = unif(&s);
            d[j] = (float)(std * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
        }
    }
}

int fpt_model_save(const fpt_model *m, const char *path) {
    fpt_st_tensor *t = fp_calloc((size_t)m->nparams, sizeof *t);
    if (!t) return FP_ENOMEM;
    for (int i = 0; i < m->nparams; i++) {
        const fpt_param *p = &m->params[i];
        t[i].name = p->name;
        t[i].dtype = FP_F32;
        t[i].ndim = p->ndim;
        t[i].shape[0] = p->shape[0];
        t[i].shape[1] = p->shape[1];
        t[i].data = m->data + p->offset;
    }
    const char *meta[] = {"format", "pt", NULL};
    int rc = fpt_st_write(path, t, m->nparams, meta);
    free(t);
    return rc;
}

/* ---------------------------------------------------------------- forward */

/* out += LoRA delta of target i (layer l's views w, activations a) */
#define LORA_FWD(i, out, inp) do { if (w->la[i]) { int li_, lo_; lora_dims(c, i, &li_, &lo_); \
    fpt_lora_forward(out, a->xa[i], inp, w->la[i], w->lb[i], lscale, T, li_, lo_, c->lora_rank); } } while (0)
#define LORA_BWD(i, dinp, dout, inp) do { if (w->la[i]) { int li_, lo_; lora_dims(c, i, &li_, &lo_); \
    fpt_lora_backward(dinp, gw->la[i], gw->lb[i], m->dxa, dout, inp, a->xa[i], w->la[i], w->lb[i], lscale, T, \
                      li_, lo_, c->lora_rank); } } while (0)

static void forward_trunk(fpt_model *m, const int *tokens, int T) {
    const fpt_config *c = &m->cfg;
    float lscale = c->lora_rank > 0 ? c->lora_alpha / (float)c->lora_rank : 0.0f;
    int C = c->hidden, F = c->intermediate, NH = c->heads, NKV = c->kv_heads, D = c->head_dim;
    int QD = NH * D, KD = NKV * D;
    size_t TC = (size_t)T * C;
    fpt_rope_table(m->cos_t, m->sin_t, 0, T, D, c->rope_theta);
    fpt_embedding_forward(m->acts[0].x, tokens, m->P.embed, T, C);
    for (int l = 0; l < c->layers; l++) {
        layer_acts *a = &m->acts[l];
        layer_view *w = &m->P.layer[l];
        float *xout = l + 1 < c->layers ? m->acts[l + 1].x : m->xf;
        fpt_rmsnorm_forward(a->ln1, a->rstd1, a->x, w->ln1, T, C, c->rms_eps);
        fpt_linear_forward(a->q, a->ln1, w->wq, w->bq, T, C, QD);
        fpt_linear_forward(a->k, a->ln1, w->wk, w->bk, T, C, KD);
        fpt_linear_forward(a->v, a->ln1, w->wv, w->bv, T, C, KD);
        LORA_FWD(0, a->q, a->ln1);
        LORA_FWD(1, a->k, a->ln1);
        LORA_FWD(2, a->v, a->ln1);
        fpt_rope_forward(a->q, m->cos_t, m->sin_t, T, NH, D);
        fpt_rope_forward(a->k, m->cos_t, m->sin_t, T, NKV, D);
        fpt_attention_forward(a->y, a->att, a->q, a->k, a->v, T, NH, NKV, D);
        fpt_linear_forward(m->dtmp, a->y, w->wo, NULL, T, QD, C); /* attn out -> scratch */
        LORA_FWD(3, m->dtmp, a->y);
        fpt_residual_forward(a->xm, a->x, m->dtmp, TC);
        fpt_rmsnorm_forward(a->ln2, a->rstd2, a->xm, w->ln2, T, C, c->rms_eps);
        fpt_linear_forward(a->g, a->ln2, w->wg, NULL, T, C, F);
        fpt_linear_forward(a->u, a->ln2, w->wu, NULL, T, C, F);
        LORA_FWD(4, a->g, a->ln2);
        LORA_FWD(5, a->u, a->ln2);
        fpt_swiglu_forward(a->h, a->g, a->u, T, F);
        fpt_linear_forward(m->dtmp, a->h, w->wd, NULL, T, F, C);
        LORA_FWD(6, m->dtmp, a->h);
        fpt_residual_forward(xout, a->xm, m->dtmp, TC);
    }
    fpt_rmsnorm_forward(m->hf, m->rstdf, m->xf, m->P.norm, T, C, c->rms_eps);
}

/* ---------------------------------------------------------------- losses */

/* log-sum-exp of n values */
static double lse(const float *z, int n) {
    float mx = z[0];
    for (int i = 1; i < n; i++) if (z[i] > mx) mx = z[i];
    double s = 0;
    for (int i = 0; i < n; i++) s += exp((double)z[i] - mx);
    return mx + log(s);
}

static int check_record(const fpt_model *m, const fpt_record *r, const fpt_loss_cfg *lc) {
    const fpt_config *c = &m->cfg;
    if (!r->tokens || r->T <= 0) return fp_errorf(FP_EINVAL, "train: empty record");
    for (int t = 0; t < r->T; t++)
        if (r->tokens[t] < 0 || r->tokens[t] >= c->vocab)
            return fp_errorf(FP_EINVAL, "train: token %d at position %d outside vocab %d", r->tokens[t], t, c->vocab);
    if ((lc->w_joint != 0 || lc->w_ce != 0) && !c->has_score)
        return fp_errorf(FP_ESTATE, "train: step losses need the score head");
    if (lc->w_lm != 0 && !c->has_lm_head) return fp_errorf(FP_ESTATE, "train: LM loss needs an LM head");
    if (lc->w_scalar != 0 && !c->has_reward_head) return fp_errorf(FP_ESTATE, "train: scalar loss needs reward_head");
    for (int i = 0; i < r->n_steps; i++) {
        if (!r->step_pos || r->step_pos[i] < 0 || r->step_pos[i] >= r->T)
            return fp_errorf(FP_EINVAL, "train: step position %d out of range", r->step_pos ? r->step_pos[i] : -1);
        if (lc->w_joint != 0 && !r->step_reward) return fp_errorf(FP_EINVAL, "train: joint loss needs step rewards");
        if (lc->w_ce != 0 && (!r->step_label || (r->step_label[i] != 0 && r->step_label[i] != 1)))
            return fp_errorf(FP_EINVAL, "train: CE loss needs 0/1 step labels");
    }
    if (r->lm_targets)
        for (int t = 0; t < r->T; t++)
            if (r->lm_targets[t] >= c->vocab) return fp_errorf(FP_EINVAL, "train: LM target out of vocab");
    return FP_OK;
}

int fpt_forward_backward(fpt_model *m, const fpt_record *r, const fpt_loss_cfg *lc, float grad_scale,
                         fpt_loss_out *out) {
    fpt_loss_out lo;
    memset(&lo, 0, sizeof lo);
    int rc = check_record(m, r, lc);
    if (rc) return rc;
    const fpt_config *c = &m->cfg;
    int T = r->T, C = c->hidden, V = c->vocab;
    if ((rc = ensure_acts(m, T))) return rc;
    m->T = T;
    forward_trunk(m, r->tokens, T);

    int need_score = c->has_score && (lc->w_joint != 0 || lc->w_ce != 0);
    int need_lm = c->has_lm_head && lc->w_lm != 0;
    int need_reward = c->has_reward_head && lc->w_scalar != 0;
    m->ran_score = need_score;
    m->ran_lm = need_lm;
    m->ran_reward = need_reward;
    int backward = grad_scale != 0.0f;

    /* ---- score head: joint MSE and hard-label CE on the 2-class logits */
    if (need_score) {
        fpt_prm_head_forward(m->logits2, m->s_pre, m->s_act, m->hf, m->P.s0w, m->P.s0b, m->P.s2w, m->P.s2b, T, C);
        memset(m->dlogits2, 0, sizeof(float) * 2 * (size_t)T);
        /* p = softmax(z)[1] = sigmoid(z1 - z0);  dp/dz1 = p(1-p) = -dp/dz0 */
        if (lc->w_joint != 0) {
            double smse = 0;
            for (int i = 0; i < r->n_steps; i++) {
                const float *z = m->logits2 + 2 * (size_t)r->step_pos[i];
                double p = 1.0 / (1.0 + exp((double)z[0] - z[1]));
                double e = p - r->step_reward[i];
                smse += e * e;
                double g = grad_scale * lc->w_joint * lc->lambda_step * 2.0 * e / r->n_steps * p * (1 - p);
                m->dlogits2[2 * (size_t)r->step_pos[i] + 1] += (float)g;
                m->dlogits2[2 * (size_t)r->step_pos[i]] -= (float)g;
            }
            if (r->n_steps) smse /= r->n_steps;
            const float *z = m->logits2 + 2 * (size_t)(T - 1);
            double p = 1.0 / (1.0 + exp((double)z[0] - z[1]));
            double e = isnan(r->final_reward) ? 0.0 : p - r->final_reward; /* NaN: no trajectory target */
            double g = grad_scale * lc->w_joint * lc->lambda_final * 2.0 * e * p * (1 - p);
            m->dlogits2[2 * (size_t)(T - 1) + 1] += (float)g;
            m->dlogits2[2 * (size_t)(T - 1)] -= (float)g;
            lo.step_mse = smse;
            lo.final_mse = e * e;
            lo.joint = lc->lambda_step * smse + lc->lambda_final * e * e;
            lo.total += lc->w_joint * lo.joint;
        }
        if (lc->w_ce != 0 && r->n_steps) {
            double ce = 0;
            for (int i = 0; i < r->n_steps; i++) {
                const float *z = m->logits2 + 2 * (size_t)r->step_pos[i];
                double l = lse(z, 2);
                int y = r->step_label[i];
                ce += l - z[y];
                for (int k = 0; k < 2; k++) {
                    double pk = exp(z[k] - l);
                    m->dlogits2[2 * (size_t)r->step_pos[i] + k] +=
                        (float)(grad_scale * lc->w_ce / r->n_steps * (pk - (k == y)));
                }
            }
            lo.ce = ce / r->n_steps;
            lo.total += lc->w_ce * lo.ce;
        }
        const float *z = m->logits2 + 2 * (size_t)(T - 1);
        lo.p_final = (float)(1.0 / (1.0 + exp((double)z[0] - z[1])));
    }
    /* ---- LM head: next-token cross-entropy */
    if (need_lm) {
        fpt_linear_forward(m->lm_logits, m->hf, m->P.lm_head, NULL, T, C, V);
        int n = 0;
        for (int t = 0; t < T; t++) {
            int y = r->lm_targets ? r->lm_targets[t] : (t + 1 < T ? r->tokens[t + 1] : -1);
            if (y >= 0) n++;
        }
        double lm = 0;
        for (int t = 0; t < T; t++) {
            int y = r->lm_targets ? r->lm_targets[t] : (t + 1 < T ? r->tokens[t + 1] : -1);
            float *z = m->lm_logits + (size_t)t * V;
            float *dz = z; /* the gradient overwrites the logits in place (halves the [T,V] memory) */
            if (y < 0) { memset(dz, 0, sizeof(float) * V); continue; }
            double l = lse(z, V);
            lm += l - z[y];
            double s = grad_scale * lc->w_lm / n;
            for (int k = 0; k < V; k++) dz[k] = (float)(s * (exp(z[k] - l) - (k == y)));
        }
        lo.lm = n ? lm / n : 0;
        lo.total += lc->w_lm * lo.lm;
    }
    /* ---- scalar head: MSE of sigmoid at the last token */
    if (need_reward) {
        fpt_scalar_head_forward(m->rprob, m->hf, m->P.rw, m->P.rb, T, C);
        memset(m->drprob, 0, sizeof(float) * (size_t)T);
        double e = (double)m->rprob[T - 1] - r->scalar_target;
        lo.scalar = e * e;
        lo.total += lc->w_scalar * lo.scalar;
        m->drprob[T - 1] = (float)(grad_scale * lc->w_scalar * 2.0 * e);
    }
    if (out) *out = lo;
    if (!backward) return FP_OK;

    /* ================= backward */
    int NH = c->heads, NKV = c->kv_heads, D = c->head_dim, F = c->intermediate;
    int QD = NH * D, KD = NKV * D;
    size_t TC = (size_t)T * C;
    int full = m->mode != FPT_MODE_HEAD_ONLY; /* does the gradient flow into the trunk? */
    float lscale = c->lora_rank > 0 ? c->lora_alpha / (float)c->lora_rank : 0.0f;
    float *dhf = m->dtmp; /* gradient w.r.t. the final normed hidden states */
    memset(dhf, 0, sizeof(float) * TC);
    if (need_score)
        fpt_prm_head_backward(dhf, m->Gt.s0w, m->Gt.s0b, m->Gt.s2w, m->Gt.s2b, m->dres, m->dlogits2, m->hf,
                              m->s_pre, m->s_act, m->P.s0w, m->P.s2w, T, C);
    if (need_reward)
        fpt_scalar_head_backward(dhf, m->Gt.rw, m->Gt.rb, m->drprob, m->rprob, m->hf, m->P.rw, T, C);
    if (need_lm)
        fpt_linear_backward(dhf, m->Gt.lm_head, NULL, m->lm_logits, m->hf, m->P.lm_head, T, C, V);
    if (!full) return FP_OK;

    /* dres: gradient w.r.t. the residual stream */
    float *dres = m->dres;
    memset(dres, 0, sizeof(float) * TC);
    fpt_rmsnorm_backward(dres, m->Gt.norm, dhf, m->xf, m->P.norm, m->rstdf, T, C);
    float *dln = m->dtmp;
    for (int l = c->layers - 1; l >= 0; l--) {
        layer_acts *a = &m->acts[l];
        layer_view *w = &m->P.layer[l], *gw = &m->Gt.layer[l];
        /* MLP: x_out = xm + down(swiglu(gate(ln2), up(ln2))); dres flows to xm unchanged */
        memset(m->dh, 0, sizeof(float) * (size_t)T * F);
        fpt_linear_backward(m->dh, gw->wd, NULL, dres, a->h, w->wd, T, F, C);
        LORA_BWD(6, m->dh, dres, a->h);
        memset(m->dg, 0, sizeof(float) * (size_t)T * F);
        memset(m->du, 0, sizeof(float) * (size_t)T * F);
        fpt_swiglu_backward(m->dg, m->du, m->dh, a->g, a->u, T, F);
        memset(dln, 0, sizeof(float) * TC);
        fpt_linear_backward(dln, gw->wg, NULL, m->dg, a->ln2, w->wg, T, C, F);
        fpt_linear_backward(dln, gw->wu, NULL, m->du, a->ln2, w->wu, T, C, F);
        LORA_BWD(4, dln, m->dg, a->ln2);
        LORA_BWD(5, dln, m->du, a->ln2);
        fpt_rmsnorm_backward(dres, gw->ln2, dln, a->xm, w->ln2, a->rstd2, T, C);
        /* attention: xm = x + o(attn(rope(q), rope(k), v)) */
        memset(m->dy, 0, sizeof(float) * (size_t)T * QD);
        fpt_linear_backward(m->dy, gw->wo, NULL, dres, a->y, w->wo, T, QD, C);
        LORA_BWD(3, m->dy, dres, a->y);
        memset(m->dq, 0, sizeof(float) * (size_t)T * QD);
        memset(m->dk, 0, sizeof(float) * (size_t)T * KD);
        memset(m->dv, 0, sizeof(float) * (size_t)T * KD);
        fpt_attention_backward(m->dq, m->dk, m->dv, m->datt, m->dy, a->att, a->q, a->k, a->v, T, NH, NKV, D);
        fpt_rope_backward(m->dq, m->cos_t, m->sin_t, T, NH, D);
        fpt_rope_backward(m->dk, m->cos_t, m->sin_t, T, NKV, D);
        memset(dln, 0, sizeof(float) * TC);
        fpt_linear_backward(dln, gw->wq, gw->bq, m->dq, a->ln1, w->wq, T, C, QD);
        fpt_linear_backward(dln, gw->wk, gw->bk, m->dk, a->ln1, w->wk, T, C, KD);
        fpt_linear_backward(dln, gw->wv, gw->bv, m->dv, a->ln1, w->wv, T, C, KD);
        LORA_BWD(0, dln, m->dq, a->ln1);
        LORA_BWD(1, dln, m->dk, a->ln1);
        LORA_BWD(2, dln, m->dv, a->ln1);
        fpt_rmsnorm_backward(dres, gw->ln1, dln, a->x, w->ln1, a->rstd1, T, C);
    }
    if (m->Gt.embed) fpt_embedding_backward(m->Gt.embed, dres, r->tokens, T, C);
    return FP_OK;
}
