/* Generation on the KV-cache forward: prefill, then decode with greedy or seeded sampling (see generate.h). */
#include "apps/generate.h"
#include "apps/checkpoint.h"
#include "model/model.h"
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void fp_gen_opts_default(fp_gen_opts *o) { memset(o, 0, sizeof *o); }

void fp_sample_opts_default(fp_sample_opts *o) {
    memset(o, 0, sizeof *o);
    o->max_new_tokens = 256;
    o->temperature = 1.0;
    o->top_p = 1.0;
}

const char *fp_finish_name(int finish) { return finish == FP_FINISH_LENGTH ? "length" : "stop"; }

void fp_completion_free(fp_completion *c) {
    if (!c) return;
    free(c->text);
    free(c->tokens);
    memset(c, 0, sizeof *c);
}

/* ---- sampling */

typedef struct { double z; int32_t id; } cand;

static int cand_cmp(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->z != y->z) return x->z > y->z ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Uniform double in [0, 1) from the top 53 bits of the next draw. */
static double rng_unit(fp_rng *r) { return (double)(fp_rng_next(r) >> 11) * (1.0 / 9007199254740992.0); }

/* "x ranks before y": larger logit first, lower id on ties. */
static int ranks_before(const cand *x, const cand *y) { return x->z > y->z || (x->z == y->z && x->id < y->id); }

static void sift_down(cand *h, int n, int i) { /* min-heap by rank: the worst-ranked candidate at the root */
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && ranks_before(&h[w], &h[l])) w = l;
        if (r < n && ranks_before(&h[w], &h[r])) w = r;
        if (w == i) return;
        cand t = h[i]; h[i] = h[w]; h[w] = t;
        i = w;
    }
}

/* The best k of all[V] by rank, sorted, into top[k] (a bounded heap: O(V log k)). */
static void top_k_sorted(const cand *all, int V, int k, cand *top) {
    for (int i = 0; i < k; i++) top[i] = all[i];
    for (int i = k / 2 - 1; i >= 0; i--) sift_down(top, k, i);
    for (int i = k; i < V; i++)
        if (ranks_before(&all[i], &top[0])) { top[0] = all[i]; sift_down(top, k, 0); }
    qsort(top, (size_t)k, sizeof *top, cand_cmp);
}

/* The next token from logits[V].  temperature <= 0: argmax (lowest id on ties).  Otherwise softmax(z / t) in
 * double; with top_k > 0 or top_p < 1 the candidates are ranked by logit (descending, ties by id), cut to the
 * k best and then to the shortest prefix whose probability reaches top_p, renormalised; one uniform u picks the
 * first candidate whose cumulative probability exceeds u * total (id order when nothing is cut).
 * buf holds 2 V candidates. */
static int32_t sample_token(const float *lg, int V, const fp_sample_opts *o, fp_rng *r, cand *buf) {
    int32_t best = 0;
    for (int i = 1; i < V; i++)
        if (lg[i] > lg[best]) best = i;
    if (o->temperature <= 0) return best;
    double inv_t = 1.0 / o->temperature, mx = lg[best] * inv_t;
    cand *all = buf, *c = buf;
    int n = V;
    for (int i = 0; i < V; i++) all[i].z = lg[i] * inv_t, all[i].id = i;
    int limit_k = o->top_k > 0 && o->top_k < V ? o->top_k : V;
    if (limit_k < V || o->top_p < 1.0) {
        double total = 0;
        for (int i = 0; i < V; i++) total += exp(all[i].z - mx);
        /* grow the ranked prefix until it holds top_k candidates or reaches top_p of the mass */
        for (int m = limit_k < 64 ? limit_k : 64;; m = m * 8 < limit_k ? m * 8 : limit_k) {
            c = buf + V;
            if (m > V / 4) { /* most of the vocabulary: one full sort */
                memcpy(c, all, sizeof *c * (size_t)V);
                qsort(c, (size_t)V, sizeof *c, cand_cmp);
            } else {
                top_k_sorted(all, V, m, c);
            }
            double acc = 0;
            int k = 0;
            while (k < m) {
                acc += exp(c[k++].z - mx);
                if (o->top_p < 1.0 && acc >= o->top_p * total) break;
            }
            if (k < m || m == limit_k) { n = k; break; }
        }
    }
    double total = 0;
    for (int i = 0; i < n; i++) total += (c[i].z = exp(c[i].z - mx));
    double u = rng_unit(r) * total, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += c[i].z;
        if (acc > u) return c[i].id;
    }
    return c[n - 1].id;
}

/* ---- UTF-8 */

/* Appends bytes[n] to out with every maximal ill-formed subsequence replaced by U+FFFD (Python's and Rust's
 * from_utf8_lossy rule), then NUL-terminates. */
static int append_lossy(fp_buf *out, const unsigned char *p, size_t n) {
    size_t i = 0;
    int rc = FP_OK;
    while (i < n && !rc) {
        unsigned c = p[i];
        size_t len = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        size_t k = 1;
        int ok = len == 1;
        if (len > 1) {
            unsigned lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80, hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
            if (i + 1 < n && p[i + 1] >= lo && p[i + 1] <= hi) {
                k = 2;
                while (k < len && i + k < n && (p[i + k] & 0xC0) == 0x80) k++;
                ok = k == len;
            }
        }
        rc = ok ? fp_buf_append(out, p + i, k) : fp_buf_append(out, "\xef\xbf\xbd", 3);
        i += k;
    }
    if (!rc) rc = fp_buf_append(out, "", 1);
    if (!rc) out->len--;
    return rc;
}

/* ---- decoding: every sample of every prompt in lockstep */

typedef struct {
    fp_kv_cache *c;
    const fp_sample_opts *o;
    fp_rng rng;
    float *lg;  /* [V] logits for the next token */
    fp_buf raw; /* decoded bytes so far */
    size_t cut; /* byte offset of the first stop string, or (size_t)-1 */
    size_t max_stop;
    int done, owns_cache;
} sample_state;

static int is_eos(const int32_t *eos, size_t n_eos, int32_t id) {
    for (size_t i = 0; i < n_eos; i++)
        if (eos[i] == id) return 1;
    return 0;
}

/* Appends the decoded bytes of id to st->raw and looks for a stop string ending in them. */
static int add_piece(const fp_tokenizer *tok, sample_state *st, int32_t id) {
    char *piece = NULL;
    size_t plen = 0;
    if (fp_tokenizer_decode(tok, &id, 1, 1, &piece, &plen) != FP_OK) { /* an id the tokenizer lacks adds nothing */
        fp_error_clear();
        return FP_OK;
    }
    size_t before = st->raw.len;
    int rc = fp_buf_append(&st->raw, piece, plen);
    free(piece);
    if (rc || !st->max_stop || !plen) return rc;
    size_t from = before + 1 > st->max_stop ? before + 1 - st->max_stop : 0;
    for (size_t s = 0; s < st->o->n_stop; s++) {
        size_t sl = strlen(st->o->stop[s]);
        if (!sl) continue;
        for (size_t at = from; at + sl <= st->raw.len; at++)
            if (!memcmp(st->raw.data + at, st->o->stop[s], sl)) {
                if (at < st->cut) st->cut = at;
                break;
            }
    }
    return FP_OK;
}

static int check_opts(const fp_sample_opts *o, int i) {
    if (o->max_new_tokens < 0) return fp_errorf(FP_EINVAL, "generate: prompt %d: max_new_tokens = %d", i, o->max_new_tokens);
    if (!(o->top_p > 0 && o->top_p <= 1))
        return fp_errorf(FP_EINVAL, "generate: prompt %d: top_p must be in (0, 1], got %g", i, o->top_p);
    if (!(o->temperature >= 0) || !isfinite(o->temperature))
        return fp_errorf(FP_EINVAL, "generate: prompt %d: temperature must be >= 0, got %g", i, o->temperature);
    return FP_OK;
}

static int generate_core(fp_model *m, const fp_tokenizer *tok, const int32_t *eos, size_t n_eos,
                         const fp_gen_prompt *pr, int np, const fp_sample_opts *o0, int n, fp_completion *out,
                         float *first_logits, int n_logits) {
    if (!m || !pr || !out || np < 1 || n < 1) return fp_errorf(FP_EINVAL, "generate: NULL argument, or no prompts or samples");
    const int S = np * n, V = m->cfg.vocab_size;
    memset(out, 0, sizeof *out * (size_t)S);
    for (int i = 0; i < np; i++) {
        const fp_sample_opts *o = pr[i].opts ? pr[i].opts : o0;
        if (!o) return fp_errorf(FP_EINVAL, "generate: prompt %d has no sampling options", i);
        if (!pr[i].ids || pr[i].T <= 0) return fp_errorf(FP_EINVAL, "generate: prompt %d is empty", i);
        int rc = check_opts(o, i);
        if (rc) return rc;
    }
    if (!m->lm_head && !m->cfg.tie_word_embeddings)
        return fp_errorf(FP_ESTATE, "model (%s) has no LM head (lm_head.weight or tied embeddings): cannot generate",
                         m->cfg.architecture);
    sample_state *st = fp_calloc((size_t)S, sizeof *st);
    cand *buf = fp_malloc(sizeof(cand) * 2 * (size_t)V);
    float *lgb = fp_malloc(sizeof(float) * (size_t)S * V), *tmp = fp_malloc(sizeof(float) * (size_t)S * V);
    fp_kv_cache **act_c = fp_malloc(sizeof *act_c * (size_t)S);
    int32_t *act_id = fp_malloc(sizeof *act_id * (size_t)S);
    int *act_k = fp_malloc(sizeof *act_k * (size_t)S), maxsteps = 0;
    int rc = st && buf && lgb && tmp && act_c && act_id && act_k ? FP_OK : FP_ENOMEM;
    for (int i = 0; !rc && i < np; i++) { /* prefill each prompt once; its samples fork the cache */
        const fp_sample_opts *o = pr[i].opts ? pr[i].opts : o0;
        int T = pr[i].T, maxnew = o->max_new_tokens, last = T - 1;
        if (maxnew > maxsteps) maxsteps = maxnew;
        size_t max_stop = 0;
        for (size_t k = 0; tok && k < o->n_stop; k++)
            if (strlen(o->stop[k]) > max_stop) max_stop = strlen(o->stop[k]);
        /* the last sampled token is never fed back: the cache needs T + max_new_tokens - 1 rows */
        fp_kv_cache *base = fp_kv_cache_new(m, T + (maxnew > 1 ? maxnew - 1 : 0));
        float *lg0 = lgb + (size_t)i * n * V;
        if (!base) { rc = fp_last_error_code() ? fp_last_error_code() : FP_ENOMEM; break; }
        rc = fp_model_forward_cached(m, base, pr[i].ids, T, &last, 1, NULL, lg0);
        if (rc) { fp_error_prefix("prompt %d: ", i); fp_kv_cache_free(base); break; }
        for (int j = n - 1; !rc && j >= 0; j--) { /* sample 0 keeps the prefix cache itself */
            sample_state *q = &st[i * n + j];
            q->c = j == 0 ? base : fp_kv_cache_fork(base);
            q->owns_cache = 1;
            q->o = o;
            q->lg = lg0 + (size_t)j * V;
            q->cut = (size_t)-1;
            q->max_stop = max_stop;
            if (!q->c) { rc = FP_ENOMEM; fp_kv_cache_free(base); break; } /* j > 0: base is nobody's yet */
            if (j) memcpy(q->lg, lg0, sizeof(float) * (size_t)V);
            fp_rng_seed(&q->rng, o->seed, pr[i].record, (uint64_t)j);
            fp_completion *c = &out[i * n + j];
            c->prompt_tokens = T;
            c->finish = FP_FINISH_LENGTH;
            if (!(c->tokens = fp_malloc(sizeof(int32_t) * (size_t)(maxnew > 0 ? maxnew : 1)))) rc = FP_ENOMEM;
            if (maxnew == 0) q->done = 1;
        }
    }
    for (int step = 0; !rc && step < maxsteps; step++) {
        int nact = 0;
        for (int k = 0; !rc && k < S; k++) {
            sample_state *q = &st[k];
            if (q->done) continue;
            fp_completion *c = &out[k];
            if (k == 0 && first_logits && step < n_logits)
                memcpy(first_logits + (size_t)step * V, q->lg, sizeof(float) * (size_t)V);
            int32_t id = sample_token(q->lg, V, q->o, &q->rng, buf);
            if (!q->o->ignore_eos && is_eos(eos, n_eos, id)) { c->finish = FP_FINISH_STOP; q->done = 1; continue; }
            c->tokens[c->n_tokens++] = id;
            if (tok && (rc = add_piece(tok, q, id))) break;
            if (q->cut != (size_t)-1) { c->finish = FP_FINISH_STOP; q->done = 1; continue; }
            if (step + 1 >= q->o->max_new_tokens) { q->done = 1; continue; }
            act_c[nact] = q->c, act_id[nact] = id, act_k[nact++] = k;
        }
        if (rc || nact == 0) break;
        /* one step for every running sample: the weights are read once for all of them */
        rc = fp_model_decode_batch(m, act_c, act_id, nact, NULL, tmp);
        for (int a = 0; !rc && a < nact; a++) memcpy(st[act_k[a]].lg, tmp + (size_t)a * V, sizeof(float) * (size_t)V);
    }
    for (int k = 0; st && k < S; k++) {
        sample_state *q = &st[k];
        fp_buf text = {0};
        if (!rc) rc = append_lossy(&text, (const unsigned char *)q->raw.data, q->cut != (size_t)-1 ? q->cut : q->raw.len);
        if (!rc) {
            out[k].text = text.data ? text.data : fp_strdup("");
            if (!out[k].text) rc = FP_ENOMEM;
        } else {
            fp_buf_free(&text);
        }
        fp_buf_free(&q->raw);
        if (q->owns_cache) fp_kv_cache_free(q->c);
    }
    if (rc)
        for (int k = 0; k < S; k++) fp_completion_free(&out[k]);
    free(st); free(buf); free(lgb); free(tmp); free(act_c); free(act_id); free(act_k);
    return rc;
}

int fp_generate_tokens(fp_model *m, const fp_tokenizer *tok, const int32_t *eos, size_t n_eos, const int32_t *prompt,
                       int T, const fp_sample_opts *o, uint64_t record, int n, fp_completion *out, float *first_logits,
                       int n_logits) {
    if (!o) return fp_errorf(FP_EINVAL, "generate: NULL options");
    fp_gen_prompt p = {prompt, T, record, NULL};
    return generate_core(m, tok, eos, n_eos, &p, 1, o, n, out, first_logits, n_logits);
}

int fp_generate_batch(fp_model *m, const fp_tokenizer *tok, const int32_t *eos, size_t n_eos,
                      const fp_gen_prompt *prompts, int nprompts, const fp_sample_opts *o, int n, fp_completion *out) {
    return generate_core(m, tok, eos, n_eos, prompts, nprompts, o, n, out, NULL, 0);
}

/* ---- the generator */

struct fp_generator {
    fp_model *m;
    fp_tokenizer *tok;
    char *system;
    int32_t *eos;
    size_t n_eos;
};


int fp_generator_add_eos(fp_generator *g, int32_t id) {
    if (id < 0) return FP_OK;
    for (size_t i = 0; i < g->n_eos; i++)
        if (g->eos[i] == id) return FP_OK;
    int32_t *e = fp_realloc(g->eos, sizeof(int32_t) * (g->n_eos + 1));
    if (!e) return FP_ENOMEM;
    g->eos = e;
    g->eos[g->n_eos++] = id;
    return FP_OK;
}

static int add_eos_json(fp_generator *g, const json_t *v) {
    int rc = FP_OK;
    if (json_is_integer(v)) return fp_generator_add_eos(g, (int32_t)json_integer_value(v));
    if (json_is_array(v))
        for (size_t i = 0; !rc && i < json_array_size(v); i++) rc = add_eos_json(g, json_array_get(v, i));
    return rc;
}

static int load_eos(fp_generator *g, const char *model_dir, const char *tok_dir) {
    fp_model_info info;
    fp_model_get_info(g->m, &info);
    int rc = fp_generator_add_eos(g, info.eos_token_id);
    char p[4096];
    if (!rc && model_dir) {
        snprintf(p, sizeof p, "%s/generation_config.json", model_dir);
        json_t *j = json_load_file(p, 0, NULL);
        if (j) rc = add_eos_json(g, json_object_get(j, "eos_token_id"));
        json_decref(j);
    }
    if (!rc && tok_dir) {
        snprintf(p, sizeof p, "%s/tokenizer_config.json", tok_dir);
        json_t *j = json_load_file(p, 0, NULL), *e = j ? json_object_get(j, "eos_token") : NULL;
        if (json_is_object(e)) e = json_object_get(e, "content");
        if (json_is_string(e)) {
            int32_t id = fp_tokenizer_token_to_id(g->tok, json_string_value(e));
            if (id >= 0 && id < info.vocab_size) rc = fp_generator_add_eos(g, id);
        }
        json_decref(j);
    }
    return rc;
}

int fp_generator_open(fp_generator **out, const fp_gen_opts *o) {
    *out = NULL;
    if (!o || !o->model_path) return fp_errorf(FP_EINVAL, "generator: no model path");
    fp_generator *g = fp_calloc(1, sizeof *g);
    if (!g) return FP_ENOMEM;
    int rc = fp_model_load(&g->m, o->model_path);
    if (rc) goto fail;
    if (o->threads > 0) fp_model_set_threads(g->m, o->threads);
    fp_model_info info;
    fp_model_get_info(g->m, &info);
    if (!info.has_lm_head) {
        rc = fp_errorf(FP_EINVAL, "%s: the checkpoint (%s) has no LM head (lm_head.weight or tied embeddings): it "
                       "cannot generate", o->model_path, info.architecture ? info.architecture : "?");
        goto fail;
    }
    const char *tpath = o->tokenizer_path ? o->tokenizer_path : o->model_path;
    if ((rc = fp_checkpoint_tokenizer(&g->tok, tpath))) goto fail;
    const char *mdir = fp_is_dir(o->model_path) ? o->model_path : NULL;
    const char *tdir = fp_is_dir(tpath) ? tpath : mdir;
    if (o->system_mode == FP_SYSTEM_TEXT) {
        if (!(g->system = fp_strdup(o->system ? o->system : ""))) { rc = FP_ENOMEM; goto fail; }
    } else if (o->system_mode == FP_SYSTEM_TEMPLATE) { /* the tokenizer's directory, the model's, or the GGUF */
        if ((rc = fp_checkpoint_default_system(tdir ? tdir : tpath, &g->system))) goto fail;
    }
    if ((rc = load_eos(g, mdir, tdir))) goto fail;
    *out = g;
    return FP_OK;
fail:
    fp_generator_free(g);
    return rc;
}

void fp_generator_free(fp_generator *g) {
    if (!g) return;
    fp_model_free(g->m);
    fp_tokenizer_free(g->tok);
    free(g->system);
    free(g->eos);
    free(g);
}

fp_model *fp_generator_model(fp_generator *g) { return g->m; }
const fp_tokenizer *fp_generator_tokenizer(const fp_generator *g) { return g->tok; }
const int32_t *fp_generator_eos(const fp_generator *g, size_t *n) {
    *n = g->n_eos;
    return g->eos;
}

int fp_generator_render_chat(const fp_generator *g, const fp_chat_message *msgs, size_t n, char **text) {
    *text = NULL;
    if (!n || !msgs) return fp_errorf(FP_EINVAL, "chat: no messages");
    fp_buf b = {0};
    int rc = FP_OK;
    if (g->system && !(msgs[0].role && !strcmp(msgs[0].role, "system")))
        rc = fp_buf_printf(&b, "<|im_start|>system\n%s<|im_end|>\n", g->system);
    for (size_t i = 0; !rc && i < n; i++) {
        if (!msgs[i].role || !msgs[i].content) { fp_buf_free(&b); return fp_errorf(FP_EINVAL, "chat: message %zu has no role or content", i); }
        rc = fp_buf_printf(&b, "<|im_start|>%s\n%s<|im_end|>\n", msgs[i].role, msgs[i].content);
    }
    if (!rc) rc = fp_buf_printf(&b, "<|im_start|>assistant\n");
    if (rc) { fp_buf_free(&b); return rc; }
    *text = b.data;
    return FP_OK;
}

int fp_generator_encode_text(const fp_generator *g, const char *prompt, int32_t **ids_out, int *T_out) {
    *ids_out = NULL;
    *T_out = 0;
    if (!g || !prompt) return fp_errorf(FP_EINVAL, "generate: NULL argument");
    int32_t *ids;
    size_t T;
    int rc = fp_tokenizer_encode(g->tok, prompt, strlen(prompt), &ids, &T);
    if (rc) return rc;
    if (T == 0) { free(ids); return fp_errorf(FP_EINVAL, "generate: the prompt encodes to no tokens"); }
    if (T > INT32_MAX / 2) { free(ids); return fp_errorf(FP_ERANGE, "generate: prompt too long"); }
    *ids_out = ids;
    *T_out = (int)T;
    return FP_OK;
}

int fp_generator_encode_chat(const fp_generator *g, const fp_chat_message *msgs, size_t n_msgs, int32_t **ids,
                             int *T) {
    *ids = NULL;
    *T = 0;
    char *text;
    int rc = fp_generator_render_chat(g, msgs, n_msgs, &text);
    if (rc) return rc;
    rc = fp_generator_encode_text(g, text, ids, T);
    free(text);
    return rc;
}

int fp_generate_text(fp_generator *g, const char *prompt, const fp_sample_opts *o, uint64_t record, int n,
                     fp_completion *out) {
    int32_t *ids;
    int T;
    int rc = fp_generator_encode_text(g, prompt, &ids, &T);
    if (rc) return rc;
    rc = fp_generate_tokens(g->m, g->tok, g->eos, g->n_eos, ids, T, o, record, n, out, NULL, 0);
    free(ids);
    return rc;
}

int fp_generate_chat(fp_generator *g, const fp_chat_message *msgs, size_t n_msgs, const fp_sample_opts *o,
                     uint64_t record, int n, fp_completion *out) {
    int32_t *ids;
    int T;
    int rc = fp_generator_encode_chat(g, msgs, n_msgs, &ids, &T);
    if (rc) return rc;
    rc = fp_generate_tokens(g->m, g->tok, g->eos, g->n_eos, ids, T, o, record, n, out, NULL, 0);
    free(ids);
    return rc;
}
