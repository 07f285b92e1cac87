/* `fluxprm train` library part: data loading, the training loop and checkpoints (see trainer.h). */
#include "train/trainer.h"
#include "base/json.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATE_DIR "training_state"
#define STATE_TMP "training_state.tmp"
#define STATE_OLD "training_state.old"
#define STATE_FORMAT "fluxprm-train-state"

/* ================================================================ data */

static const char *loss_name(int loss) { return loss == FPT_LOSS_CE ? "ce" : loss == FPT_LOSS_LM ? "lm" : "mse"; }

static void example_free(fpt_example *e) {
    free(e->tokens);
    free(e->step_pos);
    free(e->step_target);
    free(e->step_label);
    free(e->lm_targets);
    memset(e, 0, sizeof *e);
}

void fpt_dataset_free(fpt_dataset *d) {
    if (!d) return;
    for (size_t i = 0; i < d->n; i++) example_free(&d->ex[i]);
    free(d->ex);
    memset(d, 0, sizeof *d);
}

/* A number in [0, 1]; name[i] in messages. */
static int unit_number(const json_t *v, const char *name, long i, double *out) {
    char what[64];
    if (i >= 0) snprintf(what, sizeof what, "%s[%ld]", name, i);
    else snprintf(what, sizeof what, "%s", name);
    if (!json_is_number(v)) return fp_errorf(FP_EINVAL, "%s must be a number in [0, 1]", what);
    double x = json_number_value(v);
    if (!isfinite(x)) return fp_errorf(FP_EINVAL, "%s is not a finite number", what);
    if (x < 0 || x > 1) return fp_errorf(FP_ERANGE, "%s = %g is outside [0, 1]", what, x);
    *out = x;
    return FP_OK;
}

static int parse_step_record(fpt_example *ex, const json_t *obj, int loss, const fp_tokenizer *tok, int32_t step_id,
                             const char *step_token, const char *system, int max_tokens) {
    fp_format_opts fmt;
    memset(&fmt, 0, sizeof fmt);
    fmt.system = system;
    const char *field = loss == FPT_LOSS_CE ? "step_labels" : "step_targets";
    const json_t *jt = json_object_get(obj, field);
    if (!jt) return fp_errorf(FP_EINVAL, "missing \"%s\" (needed by --loss %s)", field, loss_name(loss));
    if (!json_is_array(jt)) return fp_errorf(FP_EINVAL, "\"%s\" must be an array", field);
    fp_record rec;
    int rc = fp_record_parse(&rec, obj, &fmt);
    if (rc) return rc;
    size_t n = json_array_size(jt);
    if (n != rec.n_steps) {
        rc = fp_errorf(FP_EINVAL, "\"%s\" has %zu values but the record has %zu steps", field, n, rec.n_steps);
        goto done;
    }
    ex->final_target = NAN;
    if (loss == FPT_LOSS_MSE) {
        if (!(ex->step_target = fp_malloc((n ? n : 1) * sizeof(float)))) { rc = FP_ENOMEM; goto done; }
        for (size_t i = 0; i < n; i++) {
            double x;
            if ((rc = unit_number(json_array_get(jt, i), field, (long)i, &x))) goto done;
            ex->step_target[i] = (float)x;
        }
        const json_t *ft = json_object_get(obj, "final_target");
        if (ft && !json_is_null(ft)) {
            double x;
            if ((rc = unit_number(ft, "final_target", -1, &x))) goto done;
            ex->final_target = (float)x;
        }
    } else {
        if (!(ex->step_label = fp_malloc((n ? n : 1) * sizeof(int)))) { rc = FP_ENOMEM; goto done; }
        for (size_t i = 0; i < n; i++) {
            const json_t *v = json_array_get(jt, i);
            if (json_is_boolean(v)) ex->step_label[i] = json_is_true(v);
            else if (json_is_integer(v) && (json_integer_value(v) == 0 || json_integer_value(v) == 1))
                ex->step_label[i] = (int)json_integer_value(v);
            else {
                rc = fp_errorf(FP_EINVAL, "step_labels[%zu] must be 0 or 1", i);
                goto done;
            }
        }
    }
    rc = fp_prm_encode_tokens(tok, step_id, step_token, max_tokens, &rec, &ex->tokens, &ex->T, &ex->step_pos,
                              &ex->n_steps);
done:
    fp_record_free(&rec);
    return rc;
}

/* ChatML: each message "<|im_start|>{role}\n{content}<|im_end|>\n".  The header, the content and the
 * "<|im_end|>\n" tail of each message are tokenized separately and concatenated, so that the assistant content
 * is exactly a run of tokens; the LM targets are the assistant contents and their <|im_end|>. */
static int append_ids(const fp_tokenizer *tok, const char *text, size_t len, int32_t **ids, int *T, int *cap,
                      int **mask, int m) {
    int32_t *p;
    size_t n;
    int rc = fp_tokenizer_encode(tok, text, len, &p, &n);
    if (rc) return rc;
    if (*T + (long)n > INT_MAX / 2) { free(p); return fp_errorf(FP_ERANGE, "record is too long"); }
    if (*T + (int)n > *cap) {
        int nc = (*T + (int)n) * 2 + 16;
        int32_t *ni = fp_realloc(*ids, (size_t)nc * sizeof **ids);
        if (!ni) { free(p); return FP_ENOMEM; }
        *ids = ni;
        int *nm = fp_realloc(*mask, (size_t)nc * sizeof **mask);
        if (!nm) { free(p); return FP_ENOMEM; }
        *mask = nm;
        *cap = nc;
    }
    for (size_t i = 0; i < n; i++) {
        (*ids)[*T] = p[i];
        (*mask)[*T] = m;
        (*T)++;
    }
    free(p);
    return FP_OK;
}

static int parse_sft_record(fpt_example *ex, const json_t *obj, const fp_tokenizer *tok, int max_tokens) {
    const json_t *msgs = json_object_get(obj, "messages");
    if (!msgs) return fp_errorf(FP_EINVAL, "missing \"messages\" (needed by --loss lm)");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return fp_errorf(FP_EINVAL, "\"messages\" must be a non-empty array of {\"role\", \"content\"}");
    int32_t *ids = NULL;
    int *mask = NULL, T = 0, cap = 0, rc = FP_OK;
    fp_buf hdr = {0};
    for (size_t i = 0; i < json_array_size(msgs) && !rc; i++) {
        const json_t *m = json_array_get(msgs, i);
        const json_t *role = json_object_get(m, "role"), *content = json_object_get(m, "content");
        if (!json_is_object(m) || !json_is_string(role) || !json_is_string(content)) {
            rc = fp_errorf(FP_EINVAL, "messages[%zu] needs string \"role\" and \"content\"", i);
            break;
        }
        int asst = !strcmp(json_string_value(role), "assistant");
        hdr.len = 0;
        if ((rc = fp_buf_printf(&hdr, "<|im_start|>%s\n", json_string_value(role)))) break;
        if ((rc = append_ids(tok, hdr.data, hdr.len, &ids, &T, &cap, &mask, 0))) break;
        if ((rc = append_ids(tok, json_string_value(content), json_string_length(content), &ids, &T, &cap, &mask, asst))) break;
        int before = T;
        if ((rc = append_ids(tok, "<|im_end|>\n", 11, &ids, &T, &cap, &mask, 0))) break;
        if (asst && T > before) mask[before] = 1; /* the <|im_end|> that closes the turn */
    }
    fp_buf_free(&hdr);
    if (!rc && T == 0) rc = fp_errorf(FP_EINVAL, "record encodes to no tokens");
    if (!rc && max_tokens > 0 && T > max_tokens)
        rc = fp_errorf(FP_ERANGE, "record is %d tokens, longer than --max-tokens %d", T, max_tokens);
    int n_targets = 0;
    if (!rc) {
        ex->lm_targets = fp_malloc((size_t)T * sizeof(int));
        if (!ex->lm_targets) rc = FP_ENOMEM;
        for (int t = 0; !rc && t < T; t++) {
            ex->lm_targets[t] = t + 1 < T && mask[t + 1] ? ids[t + 1] : -1;
            n_targets += ex->lm_targets[t] >= 0;
        }
        if (!rc && n_targets == 0) rc = fp_errorf(FP_EINVAL, "no assistant message to learn from");
    }
    free(mask);
    if (rc) { free(ids); return rc; }
    ex->tokens = ids;
    ex->T = T;
    ex->final_target = NAN;
    return FP_OK;
}

int fpt_dataset_load(fpt_dataset *d, const char *path, int loss, const fp_tokenizer *tok, int32_t step_id,
                     const char *step_token, const char *system, int max_tokens, int skip_bad,
                     void (*on_skip)(void *ctx, const char *msg), void *ctx) {
    memset(d, 0, sizeof *d);
    fp_jsonl_reader *rd;
    int rc = fp_jsonl_open(&rd, path);
    if (rc) return rc;
    size_t cap = 0;
    const char *line;
    size_t len;
    int next;
    while ((next = fp_jsonl_next_line(rd, &line, &len)) == FP_OK) {
        long lineno = fp_jsonl_line_number(rd);
        json_t *obj = NULL;
        fpt_example ex;
        memset(&ex, 0, sizeof ex);
        ex.line = lineno;
        int erc = fp_json_parse_record(&obj, line, len, fp_jsonl_path(rd), lineno);
        if (erc == FP_OK) {
            if (!json_is_object(obj)) erc = fp_errorf(FP_EINVAL, "the record is not a JSON object");
            else if (loss == FPT_LOSS_LM) erc = parse_sft_record(&ex, obj, tok, max_tokens);
            else erc = parse_step_record(&ex, obj, loss, tok, step_id, step_token, system, max_tokens);
            if (erc) fp_error_prefix("%s:%ld: ", fp_jsonl_path(rd), lineno);
        }
        json_decref(obj);
        if (erc) {
            example_free(&ex);
            if (erc == FP_ENOMEM || !skip_bad) { rc = erc; break; }
            d->skipped++;
            if (on_skip) on_skip(ctx, fp_last_error());
            continue;
        }
        if (d->n == cap) {
            size_t nc = cap ? 2 * cap : 64;
            fpt_example *ne = fp_realloc(d->ex, nc * sizeof *ne);
            if (!ne) { example_free(&ex); rc = FP_ENOMEM; break; }
            d->ex = ne;
            cap = nc;
        }
        d->ex[d->n++] = ex;
        d->tokens += ex.T;
    }
    fp_jsonl_close(rd);
    if (!rc && next != FP_ERANGE) rc = next; /* FP_ERANGE: end of input */
    if (rc) { fpt_dataset_free(d); return rc; }
    if (d->n == 0) {
        rc = fp_errorf(FP_EINVAL, "%s: no usable training records%s", path, d->skipped ? " (all were skipped)" : "");
        fpt_dataset_free(d);
    }
    return rc;
}

/* ================================================================ files */


static int mkdir_p(const char *dir) {
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s", dir) >= (int)sizeof tmp) return fp_errorf(FP_EINVAL, "path too long: %s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0777) && errno != EEXIST) return fp_errorf(FP_EIO, "%s: cannot create: %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0777) && errno != EEXIST) return fp_errorf(FP_EIO, "%s: cannot create: %s", tmp, strerror(errno));
    return FP_OK;
}

/* Removes a directory of plain files that this module wrote (no recursion into subdirectories). */
static void remove_flat_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[PATH_MAX + 300];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static void fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

static int write_text_atomic(const char *path, const char *text, size_t len) {
    fp_outfile *o;
    int rc = fp_outfile_open(&o, path, 0);
    if (rc) return rc;
    if (fwrite(text, 1, len, fp_outfile_stream(o)) != len) {
        fp_outfile_abort(o);
        return fp_errorf(FP_EIO, "%s: write failed", path);
    }
    return fp_outfile_commit(o);
}

static int write_json_atomic(const char *path, const json_t *j) {
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
    if (!text) return fp_errorf(FP_ENOMEM, "cannot format %s", path);
    size_t n = strlen(text);
    char *t2 = fp_realloc(text, n + 2);
    if (!t2) { free(text); return FP_ENOMEM; }
    t2[n] = '\n';
    t2[n + 1] = 0;
    int rc = write_text_atomic(path, t2, n + 1);
    free(t2);
    return rc;
}

static int copy_file_atomic(const char *src, const char *dst) {
    char *data;
    size_t len;
    int rc = fp_read_file(src, &data, &len);
    if (rc) return rc;
    rc = write_text_atomic(dst, data, len);
    free(data);
    return rc;
}

/* ================================================================ the trainer */

typedef struct {
    const fpt_train_opts *o;
    fpt_train_opts opts;     /* effective copy */
    fp_model_config mc;
    fp_weights *w;           /* the input checkpoint (kept open: tensors the trainer does not model are exported as is) */
    fpt_model *m;
    fpt_adamw opt;
    fpt_dataset data;
    fp_tokenizer *tok;
    int32_t step_id;
    char *system;
    int fresh_score;         /* the checkpoint had no score head: a new one was initialised */
    float *zero;             /* stand-in for absent score tensors while loading */
    char data_sha[65];
    long spe;                /* optimizer steps per epoch */
    long total_steps;
    long last_saved;         /* step of the last checkpoint on disk (-1: none) */
    int files_copied;
    size_t *order;
    long order_epoch;
    uint64_t order_rng;      /* the epoch shuffle's RNG state after shuffling */
} trainer;

static void event(trainer *t, int ev, long value, const char *msg) {
    if (t->opts.on_event) t->opts.on_event(t->opts.ctx, ev, value, msg);
}

static void on_skip_cb(void *ctx, const char *msg) { event((trainer *)ctx, FPT_EVENT_SKIPPED, 0, msg); }

void fpt_train_opts_default(fpt_train_opts *o) {
    memset(o, 0, sizeof *o);
    fp_prm_opts_default(&o->prm);
    o->mode = FPT_MODE_FULL;
    o->loss = FPT_LOSS_MSE;
    o->lambda_step = 1.0f;
    o->lambda_final = 1.0f;
    o->adamw = (fpt_adamw_cfg){.lr = 1e-5f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.0f,
                               .max_grad_norm = 1.0f, .schedule = FPT_SCHED_LINEAR, .warmup_steps = 0,
                               .total_steps = 0, .min_lr_ratio = 0.0f};
    o->epochs = 1;
    o->batch = 1;
    o->lora_rank = 8;
    o->lora_alpha = 16.0f;
    o->lora_targets = FPT_LORA_Q | FPT_LORA_K | FPT_LORA_V | FPT_LORA_O;
}

/* getter over the input weights; absent score.* tensors read as zeros when a new head is initialised */
typedef struct {
    trainer *t;
    fp_tensor tmp;
} getter_ctx;

static const fp_tensor *get_tensor(void *ctx, const char *name) {
    getter_ctx *g = ctx;
    const fp_tensor *x = fp_weights_get(g->t->w, name);
    if (x || !g->t->fresh_score || strncmp(name, "score.", 6)) return x;
    const fpt_param *p = fpt_model_find(g->t->m, name);
    if (!p) return NULL;
    memset(&g->tmp, 0, sizeof g->tmp);
    g->tmp.name = (char *)name;
    g->tmp.dtype = FP_F32;
    g->tmp.ndim = p->ndim;
    g->tmp.shape[0] = p->shape[0];
    g->tmp.shape[1] = p->shape[1];
    g->tmp.data = g->t->zero;
    g->tmp.nbytes = p->numel * sizeof(float);
    return &g->tmp;
}

/* HF init of a new score head: weights normal(0, 0.02), biases 0 (splitmix64 + Box-Muller). */
static void init_score_head(trainer *t) {
    fp_rng r;
    fp_rng_seed(&r, t->opts.seed, 0x5c0e, 0);
    float *P = fpt_model_params(t->m);
    const char *names[] = {"score.0.weight", "score.2.weight"};
    for (int k = 0; k < 2; k++) {
        const fpt_param *p = fpt_model_find(t->m, names[k]);
        if (!p) continue;
        for (size_t i = 0; i < p->numel; i++) {
            double u1 = ((fp_rng_next(&r) >> 11) + 1) * (1.0 / 9007199254740993.0);
            double u2 = (fp_rng_next(&r) >> 11) * (1.0 / 9007199254740992.0);
            P[p->offset + i] = (float)(0.02 * sqrt(-2.0 * log(u1)) * cos(2 * M_PI * u2));
        }
    }
}

static int setup_model(trainer *t) {
    const fpt_train_opts *o = &t->opts;
    const char *dir = o->prm.model_path;
    int rc = fp_model_config_load(&t->mc, dir);
    if (rc) return rc;
    if (t->mc.qk_norm || !t->mc.attention_bias)
        return fp_errorf(FP_EUNSUPPORTED, "%s: training supports Qwen2 (q/k/v bias, no q/k norm); this is %s",
                         dir, t->mc.model_type);
    if ((rc = fp_weights_open_safetensors(&t->w, dir))) return rc;
    fpt_config c;
    fpt_config_from_model(&c, &t->mc);
    int has_score_w = fp_weights_get(t->w, "score.0.weight") != NULL;
    if (o->loss == FPT_LOSS_LM) {
        c.has_lm_head = 1;
        c.has_score = has_score_w;
        if (!c.tie_embeddings && !fp_weights_get(t->w, "lm_head.weight"))
            return fp_errorf(FP_EINVAL, "%s: --loss lm needs an LM head (lm_head.weight or tie_word_embeddings)", dir);
    } else {
        if (!has_score_w) {
            if (fp_weights_get(t->w, "score.weight"))
                return fp_errorf(FP_EUNSUPPORTED, "%s: a one-layer score head (token classification) is not trainable "
                                 "here; the PRM losses use the 2-class score.0/score.2 head", dir);
            if (t->mc.num_labels > 2)
                return fp_errorf(FP_EINVAL, "%s: the checkpoint has %d labels; the PRM losses need 2", dir, t->mc.num_labels);
            t->fresh_score = 1; /* a base model: start a new PRM head */
        }
        c.has_score = 1;
    }
    if (o->mode == FPT_MODE_LORA) {
        c.lora_rank = o->lora_rank;
        c.lora_alpha = o->lora_alpha;
        c.lora_targets = o->lora_targets;
    }
    if ((rc = fpt_model_new(&t->m, &c))) return rc;
    if (t->fresh_score) {
        size_t mx = 0;
        for (int i = 0; i < fpt_model_param_count(t->m); i++) {
            const fpt_param *p = fpt_model_param(t->m, i);
            if (!strncmp(p->name, "score.", 6) && p->numel > mx) mx = p->numel;
        }
        if (!(t->zero = fp_calloc(mx ? mx : 1, sizeof(float)))) return FP_ENOMEM;
    }
    getter_ctx g = {.t = t};
    if ((rc = fpt_model_load(t->m, get_tensor, &g))) return fp_error_prefix("%s: ", dir);
    if (t->fresh_score) init_score_head(t);
    if (o->mode == FPT_MODE_LORA) fpt_lora_init(t->m, o->seed);
    fpt_model_set_mode(t->m, o->mode);
    return fpt_adamw_init(&t->opt, fpt_model_num_params(t->m));
}

/* ---------------------------------------------------------------- checkpoints */

static int out_path(const trainer *t, char *buf, size_t cap, const char *a, const char *b) {
    int n = b ? snprintf(buf, cap, "%s/%s/%s", t->opts.out_dir, a, b) : snprintf(buf, cap, "%s/%s", t->opts.out_dir, a);
    return n < 0 || (size_t)n >= cap ? fp_errorf(FP_EINVAL, "path too long under %s", t->opts.out_dir) : FP_OK;
}

/* The trainable parameters, F32, HF/PEFT names. */
static int save_trainable(trainer *t, const char *path) {
    int np = fpt_model_param_count(t->m), n = 0;
    fpt_st_tensor *ts = fp_calloc((size_t)np, sizeof *ts);
    if (!ts) return FP_ENOMEM;
    const float *P = fpt_model_params(t->m);
    for (int i = 0; i < np; i++) {
        const fpt_param *p = fpt_model_param(t->m, i);
        if (!p->trainable) continue;
        ts[n++] = (fpt_st_tensor){.name = p->name, .dtype = FP_F32, .ndim = p->ndim,
                                  .shape = {p->shape[0], p->shape[1]}, .data = P + p->offset};
    }
    const char *meta[] = {"format", "pt", NULL};
    int rc = fpt_st_write(path, ts, n, meta);
    free(ts);
    return rc;
}

static int load_trainable(trainer *t, const char *path) {
    fp_weights *w;
    int rc = fp_weights_open_safetensors(&w, path);
    if (rc) return rc;
    float *P = fpt_model_params(t->m);
    for (int i = 0; i < fpt_model_param_count(t->m) && !rc; i++) {
        const fpt_param *p = fpt_model_param(t->m, i);
        if (!p->trainable) continue;
        const fp_tensor *x = fp_weights_get(w, p->name);
        if (!x || x->dtype != FP_F32 || x->nbytes != p->numel * sizeof(float))
            rc = fp_errorf(FP_EPARSE, "%s: missing or mis-shaped %s", path, p->name);
        else memcpy(P + p->offset, x->data, x->nbytes);
    }
    fp_weights_free(w);
    return rc;
}

static json_t *state_json(const trainer *t, long step) {
    const fpt_train_opts *o = &t->opts;
    char rng[32];
    snprintf(rng, sizeof rng, "%016llx", (unsigned long long)t->order_rng);
    long epoch = t->spe ? step / t->spe : 0;
    long cursor = t->spe ? (step % t->spe) * o->batch : 0;
    json_t *j = json_pack("{s:s, s:i, s:I, s:I, s:I, s:I, s:I, s:s, s:s, s:i, s:I, s:s, s:I, s:s, s:s}",
                          "format", STATE_FORMAT, "version", 1, "step", (json_int_t)step, "epoch", (json_int_t)epoch,
                          "cursor", (json_int_t)cursor, "total_steps", (json_int_t)t->total_steps,
                          "steps_per_epoch", (json_int_t)t->spe, "mode",
                          o->mode == FPT_MODE_FULL ? "full" : o->mode == FPT_MODE_LORA ? "lora" : "head",
                          "loss", loss_name(o->loss), "batch_size", o->batch, "records", (json_int_t)t->data.n,
                          "data_sha256", t->data_sha, "seed", (json_int_t)o->seed, "rng", "splitmix64 (seed, epoch)",
                          "rng_state", rng);
    if (!j) return NULL;
    if (o->mode == FPT_MODE_LORA) {
        json_object_set_new(j, "lora_r", json_integer(o->lora_rank));
        json_object_set_new(j, "lora_alpha", json_real(o->lora_alpha));
        json_object_set_new(j, "lora_targets", json_integer(o->lora_targets));
    }
    json_object_set_new(j, "lr", json_real(o->adamw.lr));
    json_object_set_new(j, "model", json_string(o->prm.model_path));
    json_object_set_new(j, "data", json_string(o->data_path));
    return j;
}

/* training_state/: trainable.safetensors, optimizer.safetensors, state.json — written into training_state.tmp
 * and swapped in with one atomic rename(2) exchange, so a crash at any point leaves a complete state. */
static int save_state(trainer *t, long step) {
    char tmp[PATH_MAX], fin[PATH_MAX], p[PATH_MAX];
    int rc;
    if ((rc = out_path(t, tmp, sizeof tmp, STATE_TMP, NULL)) || (rc = out_path(t, fin, sizeof fin, STATE_DIR, NULL)))
        return rc;
    remove_flat_dir(tmp);
    if (mkdir(tmp, 0777)) return fp_errorf(FP_EIO, "%s: cannot create: %s", tmp, strerror(errno));
    json_t *j = NULL;
    if ((rc = out_path(t, p, sizeof p, STATE_TMP, "trainable.safetensors")) || (rc = save_trainable(t, p))) goto fail;
    if ((rc = out_path(t, p, sizeof p, STATE_TMP, "optimizer.safetensors")) || (rc = fpt_adamw_save(&t->opt, t->m, p)))
        goto fail;
    if (!(j = state_json(t, step))) { rc = fp_errorf(FP_ENOMEM, "training state"); goto fail; }
    if ((rc = out_path(t, p, sizeof p, STATE_TMP, "state.json")) || (rc = write_json_atomic(p, j))) goto fail;
    json_decref(j);
    j = NULL;
    fsync_dir(tmp);
    event(t, FPT_EVENT_STAGED, step, tmp);
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, fin, RENAME_EXCHANGE) == 0) {
        remove_flat_dir(tmp); /* now the previous state */
    } else if (errno == ENOENT) {
        if (rename(tmp, fin)) { rc = fp_errorf(FP_EIO, "%s: cannot rename into place: %s", fin, strerror(errno)); goto fail; }
    } else { /* no RENAME_EXCHANGE on this file system: move the old state aside first (resume looks there too) */
        char old[PATH_MAX];
        if ((rc = out_path(t, old, sizeof old, STATE_OLD, NULL))) goto fail;
        remove_flat_dir(old);
        if (rename(fin, old) || rename(tmp, fin)) {
            rc = fp_errorf(FP_EIO, "%s: cannot rename into place: %s", fin, strerror(errno));
            goto fail;
        }
        remove_flat_dir(old);
    }
    fsync_dir(t->opts.out_dir);
    return FP_OK;
fail:
    json_decref(j);
    remove_flat_dir(tmp);
    return rc;
}

static const char *const tokenizer_files[] = {"tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                                              "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
                                              "generation_config.json"};

static int copy_side_files(trainer *t) {
    const fpt_train_opts *o = &t->opts;
    char src[PATH_MAX + 64], dst[PATH_MAX];
    int rc;
    /* config.json: the input's, with the dtype we write; a new score head makes it a PRM */
    json_t *cfg;
    snprintf(src, sizeof src, "%s/config.json", o->prm.model_path);
    if ((rc = fp_json_load_file(&cfg, src))) return rc;
    json_object_set_new(cfg, "torch_dtype", json_string("float32"));
    if (json_object_get(cfg, "dtype")) json_object_set_new(cfg, "dtype", json_string("float32"));
    if (t->fresh_score) {
        json_object_set_new(cfg, "architectures", json_pack("[s]", "Qwen2ForProcessRewardModel"));
        json_object_set_new(cfg, "num_labels", json_integer(2));
    }
    if (!(rc = out_path(t, dst, sizeof dst, "config.json", NULL))) rc = write_json_atomic(dst, cfg);
    json_decref(cfg);
    if (rc) return rc;
    /* tokenizer files: from --tokenizer (a directory, or a tokenizer.json file), then the model directory */
    const char *tp = o->prm.tokenizer_path;
    for (size_t i = 0; i < sizeof tokenizer_files / sizeof *tokenizer_files; i++) {
        const char *name = tokenizer_files[i];
        int found = 0;
        if (tp && fp_is_dir(tp)) {
            snprintf(src, sizeof src, "%s/%s", tp, name);
            found = fp_is_file(src);
        } else if (tp && !strcmp(name, "tokenizer.json")) {
            snprintf(src, sizeof src, "%s", tp);
            found = fp_is_file(src);
        }
        if (!found) {
            snprintf(src, sizeof src, "%s/%s", o->prm.model_path, name);
            found = fp_is_file(src);
        }
        if (!found) continue;
        if ((rc = out_path(t, dst, sizeof dst, name, NULL)) || (rc = copy_file_atomic(src, dst))) return rc;
    }
    return FP_OK;
}

/* lora_A parameter name -> the base weight it adapts */
static int lora_base_name(const char *lora_a, char *out, size_t cap) {
    const char *pre = "base_model.model.", *suf = ".lora_A.weight";
    size_t n = strlen(lora_a), lp = strlen(pre), ls = strlen(suf);
    if (n <= lp + ls || strncmp(lora_a, pre, lp) || strcmp(lora_a + n - ls, suf)) return -1;
    if (n - lp - ls + 8 > cap) return -1;
    memcpy(out, lora_a + lp, n - lp - ls);
    strcpy(out + (n - lp - ls), ".weight");
    return 0;
}

/* model.safetensors: every base parameter (F32, HF names; LoRA merged in when merge) plus the input tensors the
 * training model does not hold (kept in their stored dtype). */
static int export_weights(trainer *t, const char *path, int merge) {
    int np = fpt_model_param_count(t->m);
    size_t nw = fp_weights_count(t->w);
    fpt_st_tensor *ts = fp_calloc((size_t)np + nw, sizeof *ts);
    float **merged = fp_calloc((size_t)np, sizeof *merged);
    if (!ts || !merged) { free(ts); free(merged); return FP_ENOMEM; }
    const float *P = fpt_model_params(t->m);
    const fpt_config *c = fpt_model_config(t->m);
    int n = 0, rc = FP_OK;
    for (int i = 0; i < np; i++) {
        const fpt_param *p = fpt_model_param(t->m, i);
        if (p->is_lora) continue;
        const float *data = P + p->offset;
        if (merge && c->lora_rank > 0) {
            /* find this weight's adapter: base_model.model.<name minus .weight>.lora_A.weight */
            char an[160];
            size_t ln = strlen(p->name);
            if (ln > 7 && !strcmp(p->name + ln - 7, ".weight")) {
                snprintf(an, sizeof an, "base_model.model.%.*s.lora_A.weight", (int)(ln - 7), p->name);
                const fpt_param *A = fpt_model_find(t->m, an);
                char bn[160];
                snprintf(bn, sizeof bn, "base_model.model.%.*s.lora_B.weight", (int)(ln - 7), p->name);
                const fpt_param *B = fpt_model_find(t->m, bn);
                char chk[160];
                if (A && B && !lora_base_name(an, chk, sizeof chk) && !strcmp(chk, p->name)) {
                    if (!(merged[i] = fp_malloc(p->numel * sizeof(float)))) { rc = FP_ENOMEM; goto done; }
                    int r = c->lora_rank, O = (int)p->shape[0], I = (int)p->shape[1];
                    float s = c->lora_alpha / (float)r;
                    const float *a = P + A->offset, *b = P + B->offset;
                    for (int oo = 0; oo < O; oo++)
                        for (int ii = 0; ii < I; ii++) {
                            float acc = 0;
                            for (int k = 0; k < r; k++) acc += b[(size_t)oo * r + k] * a[(size_t)k * I + ii];
                            merged[i][(size_t)oo * I + ii] = data[(size_t)oo * I + ii] + s * acc;
                        }
                    data = merged[i];
                }
            }
        }
        ts[n++] = (fpt_st_tensor){.name = p->name, .dtype = FP_F32, .ndim = p->ndim,
                                  .shape = {p->shape[0], p->shape[1]}, .data = data};
    }
    for (size_t i = 0; i < nw; i++) {
        const fp_tensor *x = fp_weights_at(t->w, i);
        if (fpt_model_find(t->m, x->name)) continue;
        if (x->dtype != FP_F32 && x->dtype != FP_F16 && x->dtype != FP_BF16) continue;
        fpt_st_tensor *e = &ts[n++];
        e->name = x->name;
        e->dtype = x->dtype;
        e->ndim = x->ndim;
        for (int d = 0; d < x->ndim && d < FP_MAX_DIMS; d++) e->shape[d] = x->shape[d];
        e->data = x->data;
    }
    const char *meta[] = {"format", "pt", NULL};
    rc = fpt_st_write(path, ts, n, meta);
done:
    for (int i = 0; i < np; i++) free(merged[i]);
    free(merged);
    free(ts);
    return rc;
}

static int save_checkpoint(trainer *t, long step) {
    int rc = save_state(t, step);
    if (rc) return rc;
    char p[PATH_MAX];
    if (!t->files_copied) {
        if ((rc = copy_side_files(t))) return rc;
        t->files_copied = 1;
    }
    if (t->opts.mode == FPT_MODE_LORA) {
        if ((rc = out_path(t, p, sizeof p, "adapter", NULL)) || (rc = fpt_lora_save(t->m, p, t->opts.prm.model_path)))
            return rc;
    }
    if (t->opts.mode != FPT_MODE_LORA || t->opts.merge_lora) {
        if ((rc = out_path(t, p, sizeof p, "model.safetensors", NULL)) ||
            (rc = export_weights(t, p, t->opts.mode == FPT_MODE_LORA)))
            return rc;
    }
    t->last_saved = step;
    event(t, FPT_EVENT_SAVED, step, t->opts.out_dir);
    return FP_OK;
}

static int state_int(const json_t *j, const char *key, json_int_t *v) {
    const json_t *x = json_object_get(j, key);
    if (!json_is_integer(x)) return -1;
    *v = json_integer_value(x);
    return 0;
}

static int resume_mismatch(const char *what, const char *now, const char *then) {
    return fp_errorf(FP_ESTATE, "cannot resume: %s is %s but the checkpoint was trained with %s (use the same "
                     "options, or a new --out)", what, now, then);
}

/* Loads training_state/ into the model and optimizer; *step gets the completed step count (-1: no state). */
static int load_state(trainer *t, long *step) {
    *step = -1;
    char dir[PATH_MAX], old[PATH_MAX], tmp[PATH_MAX], p[PATH_MAX];
    int rc;
    if ((rc = out_path(t, dir, sizeof dir, STATE_DIR, NULL)) || (rc = out_path(t, old, sizeof old, STATE_OLD, NULL)) ||
        (rc = out_path(t, tmp, sizeof tmp, STATE_TMP, NULL)))
        return rc;
    remove_flat_dir(tmp); /* an unfinished save */
    if (!fp_is_dir(dir) && fp_is_dir(old) && rename(old, dir))
        return fp_errorf(FP_EIO, "%s: cannot restore: %s", old, strerror(errno));
    if (!fp_is_dir(dir)) return FP_OK;
    json_t *j;
    if ((rc = out_path(t, p, sizeof p, STATE_DIR, "state.json")) || (rc = fp_json_load_file(&j, p))) return rc;
    const fpt_train_opts *o = &t->opts;
    json_int_t s = -1, recs = -1, batch = -1, seed = -1;
    const char *fmt = json_string_value(json_object_get(j, "format"));
    const char *mode = json_string_value(json_object_get(j, "mode"));
    const char *loss = json_string_value(json_object_get(j, "loss"));
    const char *sha = json_string_value(json_object_get(j, "data_sha256"));
    if (!fmt || strcmp(fmt, STATE_FORMAT) || state_int(j, "step", &s) || state_int(j, "records", &recs) ||
        state_int(j, "batch_size", &batch) || state_int(j, "seed", &seed) || !mode || !loss || !sha || s < 0) {
        json_decref(j);
        return fp_errorf(FP_EPARSE, "%s: not a fluxprm training state", p);
    }
    const char *mode_now = o->mode == FPT_MODE_FULL ? "full" : o->mode == FPT_MODE_LORA ? "lora" : "head";
    char a[64], b[64];
    if (strcmp(mode, mode_now)) rc = resume_mismatch("--mode", mode_now, mode);
    else if (strcmp(loss, loss_name(o->loss))) rc = resume_mismatch("--loss", loss_name(o->loss), loss);
    else if (strcmp(sha, t->data_sha)) rc = fp_errorf(FP_ESTATE, "cannot resume: %s is not the data file the checkpoint was trained on (its SHA-256 differs)", o->data_path);
    else if (recs != (json_int_t)t->data.n) {
        snprintf(a, sizeof a, "%zu records", t->data.n);
        snprintf(b, sizeof b, "%lld", (long long)recs);
        rc = resume_mismatch("the data", a, b);
    } else if (batch != o->batch) {
        snprintf(a, sizeof a, "%d", o->batch);
        snprintf(b, sizeof b, "%lld", (long long)batch);
        rc = resume_mismatch("--batch-size", a, b);
    } else if ((uint64_t)seed != o->seed) {
        snprintf(a, sizeof a, "%llu", (unsigned long long)o->seed);
        snprintf(b, sizeof b, "%lld", (long long)seed);
        rc = resume_mismatch("--seed", a, b);
    } else if (o->mode == FPT_MODE_LORA) {
        json_int_t r = -1, tg = -1;
        double al = json_number_value(json_object_get(j, "lora_alpha"));
        if (state_int(j, "lora_r", &r) || state_int(j, "lora_targets", &tg) || r != o->lora_rank ||
            (unsigned)tg != o->lora_targets || (float)al != o->lora_alpha)
            rc = fp_errorf(FP_ESTATE, "cannot resume: the LoRA options (--lora-r/--lora-alpha/--lora-targets) differ from the checkpoint's");
    }
    json_decref(j);
    if (rc) return rc;
    if ((rc = out_path(t, p, sizeof p, STATE_DIR, "trainable.safetensors")) || (rc = load_trainable(t, p))) return rc;
    if ((rc = out_path(t, p, sizeof p, STATE_DIR, "optimizer.safetensors")) || (rc = fpt_adamw_load(&t->opt, t->m, p)))
        return rc;
    if (t->opt.step != (long)s) return fp_errorf(FP_EPARSE, "%s: optimizer step %ld does not match state step %lld", dir, t->opt.step, (long long)s);
    *step = (long)s;
    return FP_OK;
}

/* ---------------------------------------------------------------- loop */

static void shuffle_epoch(trainer *t, long epoch) {
    size_t n = t->data.n;
    for (size_t i = 0; i < n; i++) t->order[i] = i;
    fp_rng r;
    fp_rng_seed(&r, t->opts.seed, (uint64_t)epoch, 0x5eed);
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)fp_rng_below(&r, i);
        size_t x = t->order[i - 1];
        t->order[i - 1] = t->order[j];
        t->order[j] = x;
    }
    t->order_epoch = epoch;
    t->order_rng = r.state;
}

static double trainable_sq_norm(fpt_model *m, const float *buf) {
    double s = 0;
    for (int i = 0; i < fpt_model_param_count(m); i++) {
        const fpt_param *p = fpt_model_param(m, i);
        if (!p->trainable) continue;
        double q = fpt_grad_norm(buf + p->offset, p->numel);
        s += q * q;
    }
    return s;
}

static int nonfinite(trainer *t, const char *what, double v, const fpt_example *ex, long step) {
    char kept[PATH_MAX + 80];
    if (t->last_saved >= 0) snprintf(kept, sizeof kept, "the checkpoint of step %ld in %s is kept", t->last_saved, t->opts.out_dir);
    else snprintf(kept, sizeof kept, "no checkpoint was written");
    if (ex)
        return fp_errorf(FP_ERANGE, "%s:%ld: non-finite %s (%g) at step %ld; training stopped, %s", t->opts.data_path,
                         ex->line, what, v, step, kept);
    return fp_errorf(FP_ERANGE, "non-finite %s at step %ld (learning rate too high?); training stopped, %s", what,
                     step, kept);
}

static int run_loop(trainer *t, long start, fpt_train_result *res) {
    const fpt_train_opts *o = &t->opts;
    fpt_loss_cfg lc = {.lambda_step = o->lambda_step, .lambda_final = o->lambda_final,
                       .w_joint = o->loss == FPT_LOSS_MSE, .w_ce = o->loss == FPT_LOSS_CE,
                       .w_lm = o->loss == FPT_LOSS_LM, .w_scalar = 0};
    fpt_adamw_cfg ac = o->adamw;
    ac.total_steps = t->total_steps;
    double t0 = fp_now();
    size_t N = t->data.n, B = (size_t)o->batch;
    long end = t->total_steps;
    if (o->stop_after > 0 && o->stop_after < end) end = o->stop_after;
    for (long s = start; s < end; s++) {
        double ts = fp_now();
        long epoch = s / t->spe, b = s % t->spe;
        if (epoch != t->order_epoch) shuffle_epoch(t, epoch);
        size_t lo = (size_t)b * B, hi = lo + B < N ? lo + B : N;
        float scale = 1.0f / (float)(hi - lo);
        fpt_step_info info;
        memset(&info, 0, sizeof info);
        fpt_model_zero_grad(t->m);
        for (size_t i = lo; i < hi; i++) {
            const fpt_example *ex = &t->data.ex[t->order[i]];
            fpt_record r = {.tokens = ex->tokens, .T = ex->T, .n_steps = ex->n_steps, .step_pos = ex->step_pos,
                            .step_reward = ex->step_target, .step_label = ex->step_label,
                            .final_reward = ex->final_target, .lm_targets = ex->lm_targets, .scalar_target = 0};
            fpt_loss_out lo_;
            int rc = fpt_forward_backward(t->m, &r, &lc, scale, &lo_);
            if (rc) return fp_error_prefix("%s:%ld: ", o->data_path, ex->line);
            if (!isfinite(lo_.total)) return nonfinite(t, "loss", lo_.total, ex, s + 1);
            double g2 = trainable_sq_norm(t->m, fpt_model_grads(t->m));
            if (!isfinite(g2)) return nonfinite(t, "gradient", g2, ex, s + 1);
            info.loss += lo_.total;
            info.joint += lo_.joint;
            info.step_mse += lo_.step_mse;
            info.final_mse += lo_.final_mse;
            info.ce += lo_.ce;
            info.lm += lo_.lm;
            info.tokens += ex->T;
        }
        int k = (int)(hi - lo);
        info.loss /= k;
        info.joint /= k;
        info.step_mse /= k;
        info.final_mse /= k;
        info.ce /= k;
        info.lm /= k;
        int rc = fpt_model_step(t->m, &t->opt, &ac, &info.grad_norm, &info.lr);
        if (rc) return rc;
        if (!isfinite(trainable_sq_norm(t->m, fpt_model_params(t->m)))) return nonfinite(t, "weights after the update", NAN, NULL, s + 1);
        info.step = s + 1;
        info.total_steps = t->total_steps;
        info.epoch = epoch;
        info.records = k;
        if ((o->save_every > 0 && (s + 1) % o->save_every == 0) || s + 1 == end) {
            if ((rc = save_checkpoint(t, s + 1))) return rc;
            info.saved = 1;
        }
        info.seconds = fp_now() - ts;
        info.elapsed = fp_now() - t0;
        res->end_step = s + 1;
        res->last_loss = info.loss;
        if (o->on_step) o->on_step(o->ctx, &info);
    }
    res->stopped = end < t->total_steps;
    return FP_OK;
}

static void trainer_free(trainer *t) {
    fpt_model_free(t->m);
    fpt_adamw_free(&t->opt);
    fp_weights_free(t->w);
    fpt_dataset_free(&t->data);
    fp_tokenizer_free(t->tok);
    free(t->system);
    free(t->zero);
    free(t->order);
}

static int check_opts(const fpt_train_opts *o) {
    if (!o->prm.model_path || !o->data_path || !o->out_dir)
        return fp_errorf(FP_EINVAL, "train: the model, data and output paths are required");
    if (o->batch < 1 || (o->steps <= 0 && o->epochs < 1) || o->save_every < 0)
        return fp_errorf(FP_EINVAL, "train: bad batch size, epochs or steps");
    if (o->mode == FPT_MODE_HEAD_ONLY && o->loss == FPT_LOSS_LM)
        return fp_errorf(FP_EINVAL, "train: --mode head trains only the score head; --loss lm needs --mode full or lora");
    if (o->mode == FPT_MODE_LORA && (o->lora_rank < 1 || !(o->lora_alpha > 0) || !(o->lora_targets & FPT_LORA_ALL)))
        return fp_errorf(FP_EINVAL, "train: LoRA needs a rank >= 1, alpha > 0 and at least one target");
    if (!(o->adamw.lr >= 0) || !isfinite(o->adamw.lr)) return fp_errorf(FP_EINVAL, "train: bad learning rate");
    size_t ml = strlen(o->prm.model_path);
    if (ml > 5 && !strcmp(o->prm.model_path + ml - 5, ".gguf"))
        return fp_errorf(FP_EUNSUPPORTED, "train: the model must be a Hugging Face directory (config.json + safetensors), not GGUF");
    return FP_OK;
}

int fpt_train(const fpt_train_opts *opts, fpt_train_result *res) {
    memset(res, 0, sizeof *res);
    res->last_loss = NAN;
    int rc = check_opts(opts);
    if (rc) return rc;
    trainer t;
    memset(&t, 0, sizeof t);
    t.o = opts;
    t.opts = *opts;
    t.last_saved = -1;
    t.order_epoch = -1;
    const fpt_train_opts *o = &t.opts;
    if (!fp_is_dir(o->prm.model_path)) return fp_errorf(FP_EINVAL, "%s: not a model directory", o->prm.model_path);
    /* the output directory: created, never the input model's */
    if ((rc = mkdir_p(o->out_dir))) return rc;
    char ra[PATH_MAX], rb[PATH_MAX];
    if (realpath(o->out_dir, ra) && realpath(o->prm.model_path, rb) && !strcmp(ra, rb))
        return fp_errorf(FP_EINVAL, "train: --out must not be the model directory");
    if (o->prm.threads > 0) omp_set_num_threads(o->prm.threads);

    if ((rc = setup_model(&t))) goto done;
    if (o->loss == FPT_LOSS_LM) {
        const char *tpath = o->prm.tokenizer_path ? o->prm.tokenizer_path : o->prm.model_path;
        if ((rc = fp_tokenizer_load(&t.tok, tpath))) goto done;
        if (o->prm.step_token_id >= 0 &&
            (rc = fp_tokenizer_set_step_token(t.tok, o->prm.step_token, o->prm.step_token_id, &t.step_id)))
            goto done;
    } else if ((rc = fp_prm_tokenizer_open(&o->prm, t.mc.vocab_size, &t.tok, &t.step_id, &t.system))) {
        goto done;
    }
    {
        char *bytes;
        size_t len;
        if ((rc = fp_read_file(o->data_path, &bytes, &len))) goto done;
        fp_sha256_hex(bytes, len, t.data_sha);
        free(bytes);
    }
    if ((rc = fpt_dataset_load(&t.data, o->data_path, o->loss, t.tok, t.step_id, o->prm.step_token, t.system,
                               o->prm.max_tokens, o->skip_bad, on_skip_cb, &t)))
        goto done;
    for (size_t i = 0; i < t.data.n; i++)
        for (int k = 0; k < t.data.ex[i].T; k++)
            if (t.data.ex[i].tokens[k] >= t.mc.vocab_size) {
                rc = fp_errorf(FP_EINVAL, "%s:%ld: token id %d is outside the model's vocabulary (%d)", o->data_path,
                               t.data.ex[i].line, t.data.ex[i].tokens[k], t.mc.vocab_size);
                goto done;
            }
    res->records = (long)t.data.n;
    res->skipped = t.data.skipped;
    {
        char msg[160];
        snprintf(msg, sizeof msg, "%zu records, %ld tokens%s", t.data.n, t.data.tokens,
                 t.fresh_score ? "; the checkpoint has no score head: a new one is initialised" : "");
        event(&t, FPT_EVENT_DATA, (long)t.data.n, msg);
    }
    t.spe = (long)((t.data.n + (size_t)o->batch - 1) / (size_t)o->batch);
    t.total_steps = o->steps > 0 ? o->steps : o->epochs * t.spe;
    res->total_steps = t.total_steps;
    if (!(t.order = fp_malloc(t.data.n * sizeof *t.order))) { rc = FP_ENOMEM; goto done; }

    long start = 0;
    char sd[PATH_MAX];
    if ((rc = out_path(&t, sd, sizeof sd, STATE_DIR, NULL))) goto done;
    if (o->resume) {
        long s;
        if ((rc = load_state(&t, &s))) goto done;
        if (s < 0) event(&t, FPT_EVENT_NO_STATE, 0, o->out_dir);
        else {
            start = s;
            t.last_saved = s;
            event(&t, FPT_EVENT_RESUMED, s, o->out_dir);
        }
    } else if (fp_is_dir(sd)) {
        rc = fp_errorf(FP_ESTATE, "%s already holds a training state: continue it with --resume, or choose another --out", o->out_dir);
        goto done;
    }
    res->start_step = res->end_step = start;
    rc = run_loop(&t, start, res);
done:
    trainer_free(&t);
    return rc;
}
