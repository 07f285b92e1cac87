/* PRM scoring: formatting, tokenisation, one forward pass, read-outs and aggregation. */
#include "apps/prm.h"
#include "apps/checkpoint.h"
#include "model/model.h" /* fp_model_apply_head, for the shared-prefix path */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct fp_prm {
    fp_prm_opts opts;
    fp_format_opts fmt;
    char *system; /* owned */
    fp_model *model;
    fp_tokenizer *tok;
    fp_model_info info;
    int32_t step_id;
    int steps; /* model reads per-step rewards */
};

static int tokenizer_open(const fp_prm_opts *opts, int vocab_size, int need_step, fp_tokenizer **tok_out,
                          int32_t *step_id_out, char **system_out);
static int encode_record(const fp_tokenizer *tok, int32_t step_id, const char *step_token, int max_tokens,
                         const fp_record *rec, int32_t **ids_out, int *T_out, int **pos_out, int *npos_out);

void fp_prm_opts_default(fp_prm_opts *o) {
    memset(o, 0, sizeof *o);
    o->step_token = "<extra_0>";
    o->step_token_id = -1;
    o->aggregate = FP_AGG_MEAN;
    o->alpha = 1.0;
    o->final_mode = FP_FINAL_LAST_TOKEN;
    o->max_tokens = 32768;
}


int fp_prm_open(fp_prm **out, const fp_prm_opts *opts) {
    *out = NULL;
    fp_prm *p = fp_calloc(1, sizeof *p);
    if (!p) return FP_ENOMEM;
    p->opts = *opts;
    int rc = fp_model_load(&p->model, opts->model_path);
    if (rc) goto fail;
    fp_model_get_info(p->model, &p->info);
    if (opts->threads > 0) fp_model_set_threads(p->model, opts->threads);
    if (opts->fast) fp_model_set_precision(p->model, FP_PRECISION_FAST);
    p->steps = p->info.head == FP_HEAD_PRM || p->info.head == FP_HEAD_TOKEN_CLS;
    if (p->info.head == FP_HEAD_NONE) {
        rc = fp_errorf(FP_EINVAL, "%s: the checkpoint has no reward head (architecture %s): nothing to score with",
                       opts->model_path, p->info.architecture ? p->info.architecture : "?");
        goto fail;
    }
    if (p->steps && p->info.num_labels < 2) {
        rc = fp_errorf(FP_EINVAL, "%s: a per-step head needs at least 2 labels, the checkpoint has %d",
                       opts->model_path, p->info.num_labels);
        goto fail;
    }
    if ((rc = tokenizer_open(opts, p->info.vocab_size, p->steps, &p->tok, &p->step_id, &p->system))) goto fail;
    p->fmt.system = p->system;
    p->fmt.steps_from = opts->steps_from;
    *out = p;
    return FP_OK;
fail:
    fp_prm_free(p);
    return rc;
}

void fp_prm_free(fp_prm *p) {
    if (!p) return;
    fp_model_free(p->model);
    fp_tokenizer_free(p->tok);
    free(p->system);
    free(p);
}

const fp_format_opts *fp_prm_format_opts(const fp_prm *p) { return &p->fmt; }
int fp_prm_has_steps(const fp_prm *p) { return p->steps; }
fp_model *fp_prm_model(fp_prm *p) { return p->model; }
const fp_tokenizer *fp_prm_tokenizer(const fp_prm *p) { return p->tok; }
int32_t fp_prm_step_id(const fp_prm *p) { return p->steps ? p->step_id : -1; }

void fp_prm_result_free(fp_prm_result *r) {
    free(r->step_rewards);
    memset(r, 0, sizeof *r);
}

int fp_prm_encode(fp_prm *p, const fp_record *rec, int32_t **ids_out, int *T_out, int **pos_out, int *npos_out) {
    return encode_record(p->tok, p->steps ? p->step_id : -1, p->opts.step_token, p->opts.max_tokens, rec, ids_out,
                         T_out, pos_out, npos_out);
}

int fp_prm_score_record(fp_prm *p, const fp_record *rec, fp_prm_result *res) {
    memset(res, 0, sizeof *res);
    res->final_reward = NAN;
    int32_t *ids;
    int T, *pos, np;
    int rc = fp_prm_encode(p, rec, &ids, &T, &pos, &np);
    if (rc) return rc;
    res->n_tokens = T;
    res->n_thinking = rec->n_thinking;
    if (!p->steps) { /* scalar head: one reward at the last token of question + completion */
        float r;
        rc = fp_model_score_last(p->model, ids, T, &r);
        if (rc == FP_OK) {
            res->final_reward = r;
            res->score = r;
        }
        free(ids);
        free(pos);
        return rc;
    }
    int want_last = p->opts.final_mode == FP_FINAL_LAST_TOKEN;
    if (want_last) pos[np] = T - 1;
    float *probs = fp_malloc((size_t)(np + 1) * sizeof *probs);
    res->step_rewards = fp_malloc((size_t)(np ? np : 1) * sizeof *res->step_rewards);
    if (!probs || !res->step_rewards) rc = FP_ENOMEM;
    if (rc == FP_OK) rc = fp_model_score_positions(p->model, ids, T, pos, np + want_last, probs);
    if (rc == FP_OK) {
        res->n_steps = (size_t)np;
        for (int i = 0; i < np; i++) res->step_rewards[i] = probs[i];
        if (want_last) res->final_reward = probs[np];
        else if (p->opts.final_mode == FP_FINAL_LAST_STEP) res->final_reward = probs[np - 1];
        res->score = fp_trajectory_score(res->step_rewards, res->n_steps, p->opts.aggregate, res->final_reward,
                                         p->opts.alpha);
    }
    free(probs);
    free(ids);
    free(pos);
    if (rc) fp_prm_result_free(res);
    return rc;
}

/* Tokenizer, step token (only when need_step: per-step heads) and system prompt, for fp_prm_open and training. */
static int tokenizer_open(const fp_prm_opts *opts, int vocab_size, int need_step, fp_tokenizer **tok_out,
                          int32_t *step_id_out, char **system_out) {
    *tok_out = NULL;
    *step_id_out = -1;
    *system_out = NULL;
    const char *tpath = opts->tokenizer_path ? opts->tokenizer_path : opts->model_path;
    fp_tokenizer *tok;
    int rc = fp_checkpoint_tokenizer(&tok, tpath);
    if (rc) return rc;
    int32_t step_id = -1;
    char *system = NULL;
    if ((size_t)vocab_size < fp_tokenizer_vocab_size(tok) && opts->step_token_id < 0) {
        rc = fp_errorf(FP_EINVAL, "%s: tokenizer has %zu ids but the model's vocab_size is %d", tpath,
                       fp_tokenizer_vocab_size(tok), vocab_size);
        goto fail;
    }
    if (need_step) step_id = fp_tokenizer_token_to_id(tok, opts->step_token);
    if (need_step && (opts->step_token_id >= 0 || step_id < 0)) {
        if (opts->step_token_id < 0) {
            rc = fp_errorf(FP_EINVAL, "%s: the tokenizer has no step token \"%s\"; name its id with --step-token-id",
                           tpath, opts->step_token);
            goto fail;
        }
        if ((rc = fp_tokenizer_set_step_token(tok, opts->step_token, opts->step_token_id, &step_id))) goto fail;
    }
    if (need_step && step_id >= vocab_size) {
        rc = fp_errorf(FP_EINVAL, "step token id %d is outside the model's vocabulary (%d)", step_id, vocab_size);
        goto fail;
    }
    if (opts->system_mode == FP_SYSTEM_TEXT) {
        if (!(system = fp_strdup(opts->system ? opts->system : ""))) { rc = FP_ENOMEM; goto fail; }
    } else if (opts->system_mode == FP_SYSTEM_TEMPLATE) { /* the model directory's template, else the tokenizer's */
        if ((rc = fp_checkpoint_default_system(fp_is_dir(opts->model_path) ? opts->model_path : tpath, &system))) goto fail;
    }
    *tok_out = tok;
    *step_id_out = step_id;
    *system_out = system;
    return FP_OK;
fail:
    fp_tokenizer_free(tok);
    free(system);
    return rc;
}

int fp_prm_tokenizer_open(const fp_prm_opts *opts, int vocab_size, fp_tokenizer **tok_out, int32_t *step_id_out,
                          char **system_out) {
    return tokenizer_open(opts, vocab_size, 1, tok_out, step_id_out, system_out);
}

/* Renders rec (PRM ChatML with step_token after each step; with step_id < 0 plain question + completion for
 * scalar heads), tokenizes it and finds the rec->n_steps step-token positions. */
static int encode_record(const fp_tokenizer *tok, int32_t step_id, const char *step_token, int max_tokens,
                         const fp_record *rec, int32_t **ids_out, int *T_out, int **pos_out, int *npos_out) {
    *ids_out = NULL;
    *pos_out = NULL;
    *T_out = *npos_out = 0;
    fp_buf text = {0};
    int rc = step_id >= 0 ? fp_render_prm_chatml(rec, step_token, &text) : fp_render_plain(rec, &text);
    if (rc) return rc;
    int32_t *ids;
    size_t n;
    rc = fp_tokenizer_encode(tok, text.data, text.len, &ids, &n);
    fp_buf_free(&text);
    if (rc) return rc;
    if (n == 0) { free(ids); return fp_errorf(FP_EINVAL, "record encodes to no tokens"); }
    if (max_tokens > 0 && n > (size_t)max_tokens) {
        free(ids);
        return fp_errorf(FP_ERANGE, "record is %zu tokens, longer than --max-tokens %d", n, max_tokens);
    }
    int *pos = fp_malloc((rec->n_steps + 1) * sizeof *pos);
    if (!pos) { free(ids); return FP_ENOMEM; }
    int np = 0;
    for (size_t i = 0; step_id >= 0 && i < n; i++) {
        if (ids[i] != step_id) continue;
        if ((size_t)np == rec->n_steps) { np++; break; }
        pos[np++] = (int)i;
    }
    if (step_id >= 0 && (size_t)np != rec->n_steps) {
        free(ids);
        free(pos);
        return fp_errorf(FP_EINVAL, "record has %zu steps but its text holds %s step tokens \"%s\" (a step contains the step token?)",
                         rec->n_steps, (size_t)np > rec->n_steps ? "more" : "fewer", step_token);
    }
    *ids_out = ids;
    *T_out = (int)n;
    *pos_out = pos;
    *npos_out = np;
    return FP_OK;
}

int fp_prm_encode_tokens(const fp_tokenizer *tok, int32_t step_id, const char *step_token, int max_tokens,
                         const fp_record *rec, int32_t **ids_out, int *T_out, int **pos_out, int *npos_out) {
    if (step_id < 0) return fp_errorf(FP_EINVAL, "fp_prm_encode_tokens: no step token id");
    return encode_record(tok, step_id, step_token, max_tokens, rec, ids_out, T_out, pos_out, npos_out);
}

/* ---- shared-prefix scoring (Best-of-N candidates) */

/* P(class 1) = softmax(z)[1] for >= 2 labels, sigmoid(z) for one output (as fp_model_score_positions). */
static double prob_class1(const float *z, int L) {
    if (L == 1) return (float)(1.0 / (1.0 + exp(-(double)z[0])));
    double mx = z[0], s = 0;
    for (int j = 1; j < L; j++) mx = z[j] > mx ? z[j] : mx;
    for (int j = 0; j < L; j++) s += exp((double)z[j] - mx);
    return (float)(exp((double)z[1] - mx) / s);
}

/* Suffix rows per batched pass of fp_prm_score_candidates (fp_model_forward_branches takes at most 2048). */
#ifndef PRM_BRANCH_TOKENS /* (tests build with a small value to cross group boundaries) */
#define PRM_BRANCH_TOKENS 2048
#endif

int fp_prm_score_candidates(fp_prm *p, const fp_record *const *recs, size_t n, fp_prm_result *results) {
    if (!p || (n && (!recs || !results))) return fp_errorf(FP_EINVAL, "fp_prm_score_candidates: NULL argument");
    for (size_t i = 0; i < n; i++) {
        memset(&results[i], 0, sizeof results[i]);
        results[i].final_reward = NAN;
    }
    if (n == 0) return FP_OK;
    int32_t **ids = fp_calloc(n, sizeof *ids);
    int **pos = fp_calloc(n, sizeof *pos), *T = fp_calloc(n, sizeof *T), *np = fp_calloc(n, sizeof *np);
    int rc = ids && pos && T && np ? FP_OK : FP_ENOMEM;
    size_t i = 0;
    for (; !rc && i < n; i++) rc = fp_prm_encode(p, recs[i], &ids[i], &T[i], &pos[i], &np[i]);
    if (rc) { if (i) fp_error_prefix("candidate %zu: ", i - 1); goto done; }
    int want_last = !p->steps || p->opts.final_mode == FP_FINAL_LAST_TOKEN;
    /* common prefix, ending before every read-out row (each suffix keeps at least one token) */
    int L = T[0], Tmax = 0;
    for (i = 0; i < n; i++) {
        int k = 0;
        while (k < L && k < T[i] && ids[i][k] == ids[0][k]) k++;
        L = k;
        if (L > T[i] - 1) L = T[i] - 1;
        if (p->steps && np[i] > 0 && L > pos[i][0]) L = pos[i][0];
        if (T[i] > Tmax) Tmax = T[i];
    }
    if (n == 1 || L <= 0) { /* nothing shared: score one by one */
        for (i = 0; !rc && i < n; i++)
            if ((rc = fp_prm_score_record(p, recs[i], &results[i]))) fp_error_prefix("candidate %zu: ", i);
        goto done;
    }
    fp_model *m = p->model;
    fp_kv_cache *c = fp_kv_cache_new(m, Tmax);
    int H = p->info.hidden_size, NL = p->info.num_labels;
    if (!c) { rc = fp_last_error_code() ? fp_last_error_code() : FP_ENOMEM; goto done; }
    rc = fp_model_forward_cached(m, c, ids[0], L, NULL, 0, NULL, NULL); /* the shared prefix, once */
    /* the suffixes, as branches of the prefix: groups of up to PRM_BRANCH_TOKENS rows run as one pass (the
     * projections see all of them at once); a longer suffix runs alone */
    for (size_t g0 = 0; !rc && g0 < n;) {
        size_t g1 = g0;
        int rows_in = 0, nr = 0;
        while (g1 < n && (g1 == g0 || rows_in + (T[g1] - L) <= PRM_BRANCH_TOKENS)) {
            rows_in += T[g1] - L;
            nr += (p->steps ? np[g1] : 0) + want_last;
            g1++;
        }
        int32_t *cat = fp_malloc(sizeof(int32_t) * (size_t)rows_in);
        int *seg = fp_malloc(sizeof(int) * (g1 - g0 + 1)), *rows = fp_malloc(sizeof(int) * (size_t)(nr ? nr : 1));
        float *h = fp_malloc(sizeof(float) * (size_t)(nr ? nr : 1) * H),
              *lg = fp_malloc(sizeof(float) * (size_t)(nr ? nr : 1) * NL);
        if (!cat || !seg || !rows || !h || !lg) rc = FP_ENOMEM;
        int k = 0;
        seg[0] = 0;
        for (i = g0; !rc && i < g1; i++) {
            int o = seg[i - g0];
            memcpy(cat + o, ids[i] + L, sizeof(int32_t) * (size_t)(T[i] - L));
            seg[i - g0 + 1] = o + T[i] - L;
            for (int j = 0; p->steps && j < np[i]; j++) rows[k++] = o + pos[i][j] - L;
            if (want_last) rows[k++] = o + T[i] - 1 - L;
        }
        if (!rc) rc = fp_model_forward_branches(m, c, cat, seg, (int)(g1 - g0), rows, nr, h);
        if (!rc) rc = fp_model_apply_head(m, h, nr, lg);
        if (rc) {
            if (g1 - g0 == 1) fp_error_prefix("candidate %zu: ", g0);
            else fp_error_prefix("candidates %zu-%zu: ", g0, g1 - 1);
        }
        const float *lgi = lg;
        for (i = g0; !rc && i < g1; i++) {
            fp_prm_result *res = &results[i];
            res->n_tokens = T[i];
            res->n_thinking = recs[i]->n_thinking;
            if (!p->steps) {
                res->final_reward = res->score = prob_class1(lgi, NL);
            } else {
                res->step_rewards = fp_malloc((size_t)(np[i] ? np[i] : 1) * sizeof *res->step_rewards);
                if (!res->step_rewards) { rc = FP_ENOMEM; break; }
                res->n_steps = (size_t)np[i];
                for (int j = 0; j < np[i]; j++) res->step_rewards[j] = prob_class1(lgi + (size_t)j * NL, NL);
                if (want_last) res->final_reward = prob_class1(lgi + (size_t)np[i] * NL, NL);
                else if (p->opts.final_mode == FP_FINAL_LAST_STEP && np[i] > 0) res->final_reward = res->step_rewards[np[i] - 1];
                res->score = fp_trajectory_score(res->step_rewards, res->n_steps, p->opts.aggregate, res->final_reward,
                                                 p->opts.alpha);
            }
            lgi += (size_t)((p->steps ? np[i] : 0) + want_last) * NL;
        }
        free(cat); free(seg); free(rows); free(h); free(lg);
        g0 = g1;
    }
    fp_kv_cache_free(c);
done:
    if (rc)
        for (i = 0; i < n; i++) fp_prm_result_free(&results[i]);
    for (i = 0; ids && i < n; i++) free(ids[i]);
    for (i = 0; pos && i < n; i++) free(pos[i]);
    free(ids); free(pos); free(T); free(np);
    return rc;
}
