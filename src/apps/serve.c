/* The reward server: request handlers, the single-owner PRM worker with its batching queue, the single-owner
 * generation worker (the policy's completions) with its own queue, and the libmicrohttpd front end.  See
 * serve.h and docs/serve.md. */
#include "apps/serve.h"
#include "base/json.h"
#include "tensor/tensor.h"
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* libmicrohttpd, loaded when a server first listens (fp_dynlib_load): mhd.start_daemon(...) calls
 * MHD_start_daemon */
#define MHD_FUNCS(X, p)                                                                                       \
    X(p, start_daemon) X(p, stop_daemon) X(p, get_daemon_info) X(p, lookup_connection_value)                  \
    X(p, create_response_from_buffer) X(p, add_response_header) X(p, queue_response) X(p, destroy_response)
FP_DYNLIB_TABLE(mhd, mhd_names, MHD_FUNCS, MHD_);
static fp_dynlib mhd_lib = {
    .soname = "libmicrohttpd.so.12", .user = "the reward server", .names = mhd_names, .syms = mhd.sym, .n = mhd_n};

/* Bodies announced this much beyond max_body are refused before they are read (the client may then see the
 * connection reset instead of the 413); smaller oversize bodies are read and discarded, then answered 413. */
#define DRAIN_MAX ((unsigned long long)64 << 20)

/* Limits of one completion request. */
#define GEN_MAX_N 16        /* "n" */
#define GEN_MAX_STOP 16     /* stop strings */
#define GEN_MAX_PROMPTS 64  /* prompts of one /v1/completions request */

/* ---------------------------------------------------------------- queue */
typedef struct waiter {
    pthread_cond_t cv;
    size_t remaining;
} waiter;

typedef struct job {
    const int32_t *ids;
    int T;
    const int *pos;
    int npos;
    float *logits; /* [npos * L] */
    int rc;
    char *err;
    waiter *w;
    struct job *next;
} job;

/* One completion request on the generation worker's queue: its prompts are taken in slices of up to
 * gen_batch / n prompts, possibly together with slices of other requests with the same n. */
typedef struct gen_job {
    const fp_gen_prompt *pr; /* [np], each with its own sampling options */
    int np, n;
    fp_completion *out;      /* [np * n]: sample j of prompt i at i * n + j */
    int taken;               /* prompts handed to the worker */
    int remaining;           /* prompts not finished */
    int rc;                  /* first failure */
    char err[512];
    pthread_cond_t cv;
    struct gen_job *next;
} gen_job;

typedef struct {
    gen_job *j;
    int from, count;
    int rc;
} gen_slice;

struct fp_serve {
    fp_serve_opts o;
    fp_prm_opts po;
    char *host, *model_id, *policy_id;
    fp_generator *gen;
    int gen_vocab;
    pthread_cond_t gen_cv;
    gen_job *ghead, *gtail;
    gen_slice *gsl;       /* worker scratch: [gen_batch] slices, prompts and [max(gen_batch, GEN_MAX_N)] outputs */
    fp_gen_prompt *gpr;
    fp_completion *gout;
    int gen_started;
    pthread_t gen_worker;
    fp_prm *prm;
    fp_model *model;
    const fp_tokenizer *tok;
    int32_t step_id;
    int L, vocab, has_steps;
    long created;
    pthread_mutex_t mu;
    pthread_cond_t work_cv;
    job *head, *tail;
    int stop, worker_started;
    pthread_t worker;
    struct MHD_Daemon *d;
    int port;
    fp_serve_stats st;
    unsigned long idn;
};

void fp_serve_opts_default(fp_serve_opts *o) {
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8000;
    o->beta = 0.75;
    o->max_body = (size_t)8 << 20;
    o->timeout_s = 60;
    o->max_batch_tokens = 16384;
    o->max_connections = 512;
    fp_gen_opts_default(&o->policy);
    o->max_new_tokens = 1024;
    o->gen_batch = 16;
}

static void *worker_main(void *arg) {
    fp_serve *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->head && !s->stop) pthread_cond_wait(&s->work_cv, &s->mu);
        if (!s->head) break; /* stopping and drained */
        /* coalesce queued sequences up to max_batch_tokens (always at least one) */
        job *b = s->head, *last = b;
        long tok = b->T, nb = 1;
        while (last->next && tok + last->next->T <= s->o.max_batch_tokens) {
            last = last->next;
            tok += last->T;
            nb++;
        }
        s->head = last->next;
        if (!s->head) s->tail = NULL;
        last->next = NULL;
        s->st.batches++;
        s->st.sequences += nb;
        s->st.tokens += tok;
        if (nb > s->st.max_batch_seqs) s->st.max_batch_seqs = nb;
        /* The model scores one sequence at a time, so each result is handed back as soon as it exists
         * (a request does not wait for the rest of its batch).  The job may be freed by its waiter once
         * released, so its successor is read first. */
        for (job *j = b, *nx; j; j = nx) {
            nx = j->next;
            pthread_mutex_unlock(&s->mu);
            j->rc = fp_model_head_logits(s->model, j->ids, j->T, j->pos, j->npos, j->logits);
            if (j->rc) j->err = strdup(fp_last_error());
            pthread_mutex_lock(&s->mu);
            if (--j->w->remaining == 0) pthread_cond_signal(&j->w->cv);
        }
    }
    pthread_mutex_unlock(&s->mu);
    fp_matmul_scratch_release(); /* this thread's kernel scratch */
    return NULL;
}

/* Queues n jobs and waits for all of them.  Returns 0, or -1 when the server is stopping. */
static int run_jobs(fp_serve *s, job *jobs, size_t n) {
    if (!n) return 0;
    waiter w;
    pthread_cond_init(&w.cv, NULL);
    w.remaining = n;
    for (size_t i = 0; i < n; i++) {
        jobs[i].w = &w;
        jobs[i].next = i + 1 < n ? &jobs[i + 1] : NULL;
    }
    pthread_mutex_lock(&s->mu);
    if (s->stop) {
        pthread_mutex_unlock(&s->mu);
        pthread_cond_destroy(&w.cv);
        return -1;
    }
    if (s->tail) s->tail->next = &jobs[0];
    else s->head = &jobs[0];
    s->tail = &jobs[n - 1];
    pthread_cond_signal(&s->work_cv);
    while (w.remaining) pthread_cond_wait(&w.cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    pthread_cond_destroy(&w.cv);
    return 0;
}

/* The generation worker: the only thread that runs the policy.  Each round takes the oldest queued request's n,
 * then slices of up to gen_batch / n prompts (at least one) from the queued requests with that n, oldest first
 * (requests with another n keep their place), and decodes them in one fp_generate_batch call.  When that call
 * fails, each slice is retried alone so that the error reaches the request that caused it. */
static void *gen_main(void *arg) {
    fp_serve *s = arg;
    fp_model *m = fp_generator_model(s->gen);
    const fp_tokenizer *tok = fp_generator_tokenizer(s->gen);
    size_t neos;
    const int32_t *eos = fp_generator_eos(s->gen, &neos);
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->ghead && !s->stop) pthread_cond_wait(&s->gen_cv, &s->mu);
        if (!s->ghead) break; /* stopping and drained */
        int n = s->ghead->n, maxp = s->o.gen_batch / n > 0 ? s->o.gen_batch / n : 1, np = 0, ns = 0;
        gen_job *prev = NULL, *j = s->ghead;
        while (j && np < maxp) {
            gen_job *nx = j->next;
            if (j->n != n) { prev = j; j = nx; continue; }
            int c = j->np - j->taken;
            if (c > maxp - np) c = maxp - np;
            s->gsl[ns++] = (gen_slice){j, j->taken, c, 0};
            j->taken += c;
            np += c;
            if (j->taken == j->np) { /* fully handed over: off the queue */
                if (prev) prev->next = nx;
                else s->ghead = nx;
                if (s->gtail == j) s->gtail = prev;
                j->next = NULL;
            } else {
                prev = j;
            }
            j = nx;
        }
        pthread_mutex_unlock(&s->mu);
        int k = 0;
        for (int a = 0; a < ns; a++)
            for (int i = 0; i < s->gsl[a].count; i++) s->gpr[k++] = s->gsl[a].j->pr[s->gsl[a].from + i];
        long calls = 1;
        int rc = fp_generate_batch(m, tok, eos, neos, s->gpr, np, NULL, n, s->gout);
        if (rc == FP_OK) {
            k = 0;
            for (int a = 0; a < ns; a++) {
                gen_slice *q = &s->gsl[a];
                memcpy(q->j->out + (size_t)q->from * n, s->gout + (size_t)k * n, sizeof *s->gout * (size_t)q->count * n);
                k += q->count;
            }
        } else {
            k = 0;
            for (int a = 0; a < ns; a++) {
                gen_slice *q = &s->gsl[a];
                q->rc = rc;
                if (ns > 1) {
                    calls++;
                    q->rc = fp_generate_batch(m, tok, eos, neos, s->gpr + k, q->count, NULL, n, q->j->out + (size_t)q->from * n);
                }
                /* rc and err are written by this worker only, and read by the request's thread once it has seen
                 * remaining == 0 under the mutex */
                if (q->rc && !q->j->rc) {
                    q->j->rc = q->rc;
                    snprintf(q->j->err, sizeof q->j->err, "%s", fp_last_error());
                }
                k += q->count;
            }
        }
        pthread_mutex_lock(&s->mu);
        s->st.gen_batches += calls;
        for (int a = 0; a < ns; a++) {
            gen_slice *q = &s->gsl[a];
            if (!q->rc) {
                s->st.gen_sequences += (long)q->count * n;
                for (int i = 0; i < q->count * n; i++) s->st.gen_tokens += (long)q->j->out[(size_t)q->from * n + i].n_tokens;
            }
            q->j->remaining -= q->count;
            if (q->j->remaining == 0) {
                s->st.gen_requests++;
                pthread_cond_signal(&q->j->cv);
            }
        }
    }
    pthread_mutex_unlock(&s->mu);
    fp_matmul_scratch_release();
    return NULL;
}

/* ---------------------------------------------------------------- request state */
typedef struct {
    int status;        /* HTTP status on error */
    const char *type;  /* error type */
    char msg[1024];
    const char *allow; /* Allow header for 405 */
} req_err;

static int fail(req_err *e, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(req_err *e, int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    e->status = status;
    e->type = status == 501 ? "not_implemented_error" : status >= 500 ? "server_error"
              : "invalid_request_error";
    return status;
}

/* One model input. */
typedef struct {
    int32_t *ids;
    int T;
    int *pos; /* capacity nsteps + 1 */
    int nsteps;
    int npos; /* positions handed to the model */
    float *logits;
} seq;

static void seqs_free(seq *v, size_t n) {
    if (!v) return;
    for (size_t i = 0; i < n; i++) {
        free(v[i].ids);
        free(v[i].pos);
        free(v[i].logits);
    }
    free(v);
}

/* Runs every sequence with npos > 0 through the worker. */
static int run_seqs(fp_serve *s, seq *v, size_t n, req_err *e) {
    job *jobs = calloc(n ? n : 1, sizeof *jobs);
    size_t nj = 0;
    if (!jobs) return fail(e, 500, "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (v[i].npos <= 0) continue;
        if (!(v[i].logits = malloc(sizeof(float) * (size_t)v[i].npos * (size_t)s->L))) { free(jobs); return fail(e, 500, "out of memory"); }
        jobs[nj++] = (job){v[i].ids, v[i].T, v[i].pos, v[i].npos, v[i].logits, 0, NULL, NULL, NULL};
    }
    int rc = 0;
    if (run_jobs(s, jobs, nj)) rc = fail(e, 503, "the server is shutting down");
    for (size_t k = 0; k < nj; k++) {
        if (jobs[k].rc && !rc) rc = fail(e, 500, "inference failed: %s", jobs[k].err ? jobs[k].err : "?");
        free(jobs[k].err);
    }
    free(jobs);
    return rc;
}

/* Exactly model.c's read-out: softmax(z)[1] (or sigmoid for one output), computed in double, kept as float. */
static double prob_pos(const float *z, int L) {
    if (L == 1) return (float)(1.0 / (1.0 + exp(-(double)z[0])));
    double mx = z[0], sum = 0;
    for (int j = 1; j < L; j++) mx = z[j] > mx ? z[j] : mx;
    for (int j = 0; j < L; j++) sum += exp((double)z[j] - mx);
    return (float)(exp((double)z[1] - mx) / sum);
}

/* The question/response record as `fluxprm score` would parse {"question": q, "response": r}; with
 * whole_response (or when the response has no non-blank step) the response is one step. */
static int build_record(fp_serve *s, const char *q, size_t qlen, const char *r, size_t rlen, fp_record *rec) {
    memset(rec, 0, sizeof *rec);
    if (!s->o.whole_response) {
        json_t *o = json_object();
        json_object_set_new(o, "question", json_stringn(q, qlen));
        json_object_set_new(o, "response", json_stringn(r, rlen));
        int rc = fp_record_parse(rec, o, fp_prm_format_opts(s->prm));
        json_decref(o);
        if (rc == FP_OK) return FP_OK;
    }
    const fp_format_opts *f = fp_prm_format_opts(s->prm);
    rec->question = fp_strndup(q, qlen);
    rec->system = f->system ? fp_strdup(f->system) : NULL;
    rec->steps = fp_malloc(sizeof(char *));
    if (rec->steps) rec->steps[0] = fp_strndup(r, rlen);
    if (!rec->question || (f->system && !rec->system) || !rec->steps || !rec->steps[0]) {
        if (rec->steps && !rec->steps[0]) { free(rec->steps); rec->steps = NULL; }
        fp_record_free(rec);
        return FP_ENOMEM;
    }
    rec->n_steps = 1;
    return FP_OK;
}

/* Encodes a record for the PRM read-out: step positions plus the last token when the final reward needs it. */
static int encode_record(fp_serve *s, const fp_record *rec, seq *q) {
    int rc = fp_prm_encode(s->prm, rec, &q->ids, &q->T, &q->pos, &q->nsteps);
    if (rc) return rc;
    q->npos = q->nsteps;
    if (!s->has_steps || s->po.final_mode == FP_FINAL_LAST_TOKEN) q->pos[q->npos++] = q->T - 1;
    return FP_OK;
}

typedef struct {
    double *steps;
    size_t n;
    double final, score;
} prm_out;

static int prm_readout(fp_serve *s, const seq *q, prm_out *out) {
    out->final = NAN;
    out->n = 0;
    out->steps = NULL;
    if (!s->has_steps) {
        out->final = out->score = prob_pos(q->logits, s->L);
        return 0;
    }
    if (!(out->steps = malloc(sizeof(double) * (size_t)(q->nsteps ? q->nsteps : 1)))) return -1;
    out->n = (size_t)q->nsteps;
    for (int i = 0; i < q->nsteps; i++) out->steps[i] = prob_pos(q->logits + (size_t)i * s->L, s->L);
    if (s->po.final_mode == FP_FINAL_LAST_TOKEN) out->final = prob_pos(q->logits + (size_t)q->nsteps * s->L, s->L);
    else if (s->po.final_mode == FP_FINAL_LAST_STEP && q->nsteps) out->final = out->steps[q->nsteps - 1];
    out->score = fp_trajectory_score(out->steps, out->n, s->po.aggregate, out->final, s->po.alpha);
    return 0;
}

static json_t *jnum(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static json_t *jsteps(const prm_out *p) {
    json_t *a = json_array();
    for (size_t k = 0; k < p->n; k++) json_array_append_new(a, jnum(p->steps[k]));
    return a;
}

/* Scores n (question, response) pairs: out[i] filled; tokens summed into *ntok.  what names the input list
 * in error messages. */
static int score_pairs(fp_serve *s, const char *const *qs, const size_t *ql, const char *const *rs, const size_t *rl,
                       size_t n, const char *what, prm_out *out, long *ntok, req_err *e) {
    seq *v = calloc(n, sizeof *v);
    if (!v) return fail(e, 500, "out of memory");
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        fp_record rec;
        int r = build_record(s, qs[i], ql[i], rs[i], rl[i], &rec);
        if (r == FP_OK) {
            r = encode_record(s, &rec, &v[i]);
            fp_record_free(&rec);
        }
        if (r == FP_ENOMEM) rc = fail(e, 500, "out of memory");
        else if (r) rc = fail(e, 400, "%s[%zu]: %s", what, i, fp_last_error());
    }
    if (!rc) rc = run_seqs(s, v, n, e);
    *ntok = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        if (prm_readout(s, &v[i], &out[i])) rc = fail(e, 500, "out of memory");
        *ntok += v[i].T;
    }
    seqs_free(v, n);
    return rc;
}

/* ---------------------------------------------------------------- handlers */
typedef int (*handler_fn)(fp_serve *s, json_t *req, json_t **resp, req_err *e);

static int h_health(fp_serve *s, json_t *req, json_t **resp, req_err *e) {
    (void)s, (void)req, (void)e;
    *resp = json_pack("{s:s}", "status", "ok");
    return 200;
}

/* The loaded models: the PRM first, then the policy. */
static int h_models(fp_serve *s, json_t *req, json_t **resp, req_err *e) {
    (void)req, (void)e;
    json_t *data = json_array();
    if (s->prm)
        json_array_append_new(data, json_pack("{s:s,s:s,s:I,s:s}", "id", s->model_id, "object", "model", "created",
                                              (json_int_t)s->created, "owned_by", "fluxprm"));
    if (s->gen)
        json_array_append_new(data, json_pack("{s:s,s:s,s:I,s:s}", "id", s->policy_id, "object", "model", "created",
                                              (json_int_t)s->created, "owned_by", "fluxprm"));
    *resp = json_pack("{s:s,s:o}", "object", "list", "data", data);
    return 200;
}

/* An optional list field: NULL when absent or null; else it must be an array of n entries. */
static int opt_list(json_t *req, const char *name, size_t n, json_t **out, req_err *e) {
    json_t *v = json_object_get(req, name);
    *out = NULL;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_array(v)) return fail(e, 400, "\"%s\" must be an array", name);
    if (json_array_size(v) != n)
        return fail(e, 400, "\"%s\" has %zu entries but \"query\" has %zu", name, json_array_size(v), n);
    *out = v;
    return 0;
}

static int h_get_reward(fp_serve *s, json_t *req, json_t **resp, req_err *e) {
    json_t *jq = json_object_get(req, "query"), *jp, *jl;
    if (!jq) return fail(e, 400, "missing \"query\" (an array of prompt + response strings)");
    if (!json_is_array(jq)) return fail(e, 400, "\"query\" must be an array of strings");
    size_t n = json_array_size(jq);
    if (!n) return fail(e, 400, "\"query\" is empty");
    int rc;
    if ((rc = opt_list(req, "prompts", n, &jp, e)) || (rc = opt_list(req, "labels", n, &jl, e))) return rc;
    const char **qs = calloc(n, sizeof *qs), **rs = calloc(n, sizeof *rs);
    size_t *ql = calloc(n, sizeof *ql), *rl = calloc(n, sizeof *rl);
    double *rule = malloc(n * sizeof *rule);
    prm_out *po = calloc(n, sizeof *po);
    char num[64];
    if (!qs || !rs || !ql || !rl || !rule || !po) { rc = fail(e, 500, "out of memory"); goto done; }
    for (size_t i = 0; i < n && !rc; i++) {
        json_t *q = json_array_get(jq, i), *p = jp ? json_array_get(jp, i) : NULL, *l = jl ? json_array_get(jl, i) : NULL;
        if (!json_is_string(q)) { rc = fail(e, 400, "query[%zu] must be a string", i); break; }
        if (p && !json_is_null(p) && !json_is_string(p)) { rc = fail(e, 400, "prompts[%zu] must be a string or null", i); break; }
        if (l && !json_is_null(l) && !json_is_string(l) && !json_is_number(l)) { rc = fail(e, 400, "labels[%zu] must be a string, a number or null", i); break; }
        const char *qt = json_string_value(q);
        size_t qn = json_string_length(q);
        qs[i] = "";
        rs[i] = qt;
        rl[i] = qn;
        if (p && json_is_string(p)) {
            const char *pt = json_string_value(p);
            size_t pn = json_string_length(p);
            qs[i] = pt;
            ql[i] = pn;
            if (pn <= qn && !memcmp(qt, pt, pn)) { rs[i] = qt + pn; rl[i] = qn - pn; } /* query = prompt + response */
        }
        rule[i] = NAN;
        if (l && !json_is_null(l)) {
            const char *gold = num;
            if (json_is_string(l)) gold = json_string_value(l);
            else if (json_is_integer(l)) snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(l));
            else snprintf(num, sizeof num, "%.17g", json_real_value(l));
            char *resp_text = strndup(rs[i], rl[i]);
            int correct = 0;
            if (!resp_text || fp_verify_check(resp_text, gold, &correct, NULL, NULL)) correct = 0;
            free(resp_text);
            rule[i] = correct ? 1.0 : 0.0;
        }
    }
    long ntok = 0;
    if (!rc) rc = score_pairs(s, qs, ql, rs, rl, n, "query", po, &ntok, e);
    if (!rc) {
        json_t *rewards = json_array(), *scores = json_array(), *prm = json_array(), *rl_ = json_array(),
               *steps = json_array();
        for (size_t i = 0; i < n; i++) {
            double r = isnan(rule[i]) ? po[i].score : (1.0 - s->o.beta) * rule[i] + s->o.beta * po[i].score;
            json_array_append_new(rewards, jnum(r));
            json_array_append_new(scores, jnum(po[i].score));
            json_array_append_new(prm, jnum(po[i].score));
            json_array_append_new(rl_, jnum(rule[i]));
            json_array_append_new(steps, jsteps(&po[i]));
        }
        *resp = json_pack("{s:o,s:o,s:{s:o,s:o,s:o}}", "rewards", rewards, "scores", scores, "extra_logs", "prm", prm,
                          "rule", rl_, "step_rewards", steps);
        rc = 200;
    }
done:
    for (size_t i = 0; po && i < n; i++) free(po[i].steps);
    free(po);
    free(qs);
    free(rs);
    free(ql);
    free(rl);
    free(rule);
    return rc;
}

static void new_id(fp_serve *s, const char *prefix, char *out, size_t cap) {
    char seed[128], hex[65];
    pthread_mutex_lock(&s->mu);
    unsigned long k = ++s->idn;
    pthread_mutex_unlock(&s->mu);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int n = snprintf(seed, sizeof seed, "%p/%ld/%ld/%lu/%ld", (void *)s, (long)ts.tv_sec, ts.tv_nsec, k, (long)getpid());
    fp_sha256_hex(seed, (size_t)n, hex);
    snprintf(out, cap, "%s%.32s", prefix, hex);
}

/* Renders chat messages the way the Qwen2 chat template does (a default system turn when none is given; no
 * generation prompt). */
static int render_messages(fp_serve *s, json_t *msgs, fp_buf *out, req_err *e) {
    if (!json_is_array(msgs)) return fail(e, 400, "\"messages\" must be an array");
    if (!json_array_size(msgs)) return fail(e, 400, "\"messages\" is empty");
    const char *sys = fp_prm_format_opts(s->prm)->system;
    int ok = 0;
    for (size_t i = 0; i < json_array_size(msgs); i++) {
        json_t *m = json_array_get(msgs, i), *role = json_object_get(m, "role"), *content = json_object_get(m, "content");
        if (!json_is_object(m) || !json_is_string(role) || !json_is_string(content))
            return fail(e, 400, "messages[%zu] must be an object with string \"role\" and \"content\"", i);
        if (i == 0 && strcmp(json_string_value(role), "system") && sys)
            ok |= fp_buf_printf(out, "<|im_start|>system\n%s<|im_end|>\n", sys);
        ok |= fp_buf_append(out, "<|im_start|>", 12);
        ok |= fp_buf_append(out, json_string_value(role), json_string_length(role));
        ok |= fp_buf_append(out, "\n", 1);
        ok |= fp_buf_append(out, json_string_value(content), json_string_length(content));
        ok |= fp_buf_append(out, "<|im_end|>\n", 11);
    }
    return ok ? fail(e, 500, "out of memory") : 0;
}

/* Positions of every step token (the last token for scalar heads). */
static int pool_positions(fp_serve *s, seq *q, req_err *e) {
    if (!(q->pos = malloc(sizeof(int) * (size_t)(q->T ? q->T : 1)))) return fail(e, 500, "out of memory");
    q->npos = 0;
    if (s->step_id < 0) q->pos[q->npos++] = q->T - 1;
    else
        for (int t = 0; t < q->T; t++)
            if (q->ids[t] == s->step_id) q->pos[q->npos++] = t;
    return 0;
}

static int h_pooling(fp_serve *s, json_t *req, json_t **resp, req_err *e) {
    json_t *in = json_object_get(req, "input"), *msgs = json_object_get(req, "messages"),
           *fmt = json_object_get(req, "encoding_format");
    if (fmt && !json_is_null(fmt) && (!json_is_string(fmt) || strcmp(json_string_value(fmt), "float")))
        return fail(e, 400, "\"encoding_format\" must be \"float\"");
    if (in && msgs) return fail(e, 400, "give either \"input\" or \"messages\", not both");
    if (!in && !msgs) return fail(e, 400, "missing \"input\" (string, array of strings or of token-id arrays) or \"messages\"");
    size_t n = 1;
    int kind; /* 0 string(s), 1 one id list, 2 id lists, 3 messages */
    if (msgs) kind = 3;
    else if (json_is_string(in)) kind = 0;
    else if (json_is_array(in)) {
        n = json_array_size(in);
        if (!n) return fail(e, 400, "\"input\" is empty");
        json_t *first = json_array_get(in, 0);
        kind = json_is_string(first) ? 0 : json_is_integer(first) ? 1 : json_is_array(first) ? 2 : -1;
        if (kind < 0) return fail(e, 400, "\"input\" must be a string, an array of strings or of token-id arrays");
        if (kind == 1) n = 1;
    } else return fail(e, 400, "\"input\" must be a string, an array of strings or of token-id arrays");
    seq *v = calloc(n, sizeof *v);
    if (!v) return fail(e, 500, "out of memory");
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        if (kind == 0 || kind == 3) {
            fp_buf b = {0};
            const char *text;
            size_t len;
            if (kind == 3) {
                if ((rc = render_messages(s, msgs, &b, e))) { fp_buf_free(&b); break; }
                text = b.data ? b.data : "";
                len = b.len;
            } else {
                json_t *x = json_is_string(in) ? in : json_array_get(in, i);
                if (!json_is_string(x)) { rc = fail(e, 400, "input[%zu] must be a string", i); break; }
                text = json_string_value(x);
                len = json_string_length(x);
            }
            size_t T;
            int r = fp_tokenizer_encode(s->tok, text, len, &v[i].ids, &T);
            fp_buf_free(&b);
            if (r) { rc = fail(e, r == FP_ENOMEM ? 500 : 400, "input[%zu]: %s", i, fp_last_error()); break; }
            if (T > (size_t)INT32_MAX) { rc = fail(e, 400, "input[%zu] is too long", i); break; }
            v[i].T = (int)T;
        } else {
            json_t *x = kind == 1 ? in : json_array_get(in, i);
            if (!json_is_array(x)) { rc = fail(e, 400, "input[%zu] must be an array of token ids", i); break; }
            size_t T = json_array_size(x);
            if (!(v[i].ids = malloc(sizeof(int32_t) * (T ? T : 1)))) { rc = fail(e, 500, "out of memory"); break; }
            for (size_t t = 0; t < T && !rc; t++) {
                json_t *id = json_array_get(x, t);
                json_int_t k = json_is_integer(id) ? json_integer_value(id) : -1;
                if (k < 0 || k >= s->vocab) rc = fail(e, 400, "input[%zu][%zu] is not a token id in [0, %d)", i, t, s->vocab);
                else v[i].ids[t] = (int32_t)k;
            }
            v[i].T = (int)T;
        }
        if (rc) break;
        if (v[i].T == 0) rc = fail(e, 400, "input[%zu] encodes to no tokens", i);
        else if (s->po.max_tokens > 0 && v[i].T > s->po.max_tokens)
            rc = fail(e, 400, "input[%zu] is %d tokens, longer than the server's --max-tokens %d", i, v[i].T, s->po.max_tokens);
        else rc = pool_positions(s, &v[i], e);
    }
    if (!rc) rc = run_seqs(s, v, n, e);
    if (!rc) {
        json_t *data = json_array();
        long ntok = 0;
        for (size_t i = 0; i < n; i++) {
            json_t *rows = json_array();
            for (int k = 0; k < v[i].npos; k++) {
                const float *z = v[i].logits + (size_t)k * s->L;
                json_t *row = json_array();
                if (s->L == 1) json_array_append_new(row, jnum(1.0 / (1.0 + exp(-(double)z[0]))));
                else {
                    double mx = z[0], sum = 0;
                    for (int j = 1; j < s->L; j++) mx = z[j] > mx ? z[j] : mx;
                    for (int j = 0; j < s->L; j++) sum += exp((double)z[j] - mx);
                    for (int j = 0; j < s->L; j++) json_array_append_new(row, jnum(exp((double)z[j] - mx) / sum));
                }
                json_array_append_new(rows, row);
            }
            json_array_append_new(data, json_pack("{s:I,s:s,s:o}", "index", (json_int_t)i, "object", "pooling", "data", rows));
            ntok += v[i].T;
        }
        char id[64];
        new_id(s, "pool-", id, sizeof id);
        json_t *model = json_object_get(req, "model");
        *resp = json_pack("{s:s,s:s,s:I,s:s,s:o,s:{s:I,s:I,s:i,s:n}}", "id", id, "object", "list", "created",
                          (json_int_t)time(NULL), "model", json_is_string(model) ? json_string_value(model) : s->model_id,
                          "data", data, "usage", "prompt_tokens", (json_int_t)ntok, "total_tokens", (json_int_t)ntok,
                          "completion_tokens", 0, "prompt_tokens_details");
        rc = 200;
    }
    seqs_free(v, n);
    return rc;
}

typedef struct {
    size_t index;
    double score;
} ranked;

static int cmp_ranked(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    /* descending score (NaN last), then ascending index */
    int xn = isnan(x->score), yn = isnan(y->score);
    if (xn != yn) return xn - yn;
    if (!xn && x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static int h_rerank(fp_serve *s, json_t *req, json_t **resp, req_err *e) {
    json_t *jq = json_object_get(req, "query"), *jd = json_object_get(req, "documents"),
           *jn = json_object_get(req, "top_n"), *jr = json_object_get(req, "return_documents");
    if (!json_is_string(jq)) return fail(e, 400, "\"query\" must be a string");
    if (!json_is_array(jd)) return fail(e, 400, "\"documents\" must be an array of strings");
    size_t n = json_array_size(jd), top = n;
    if (!n) return fail(e, 400, "\"documents\" is empty");
    if (jn && !json_is_null(jn)) {
        if (!json_is_integer(jn) || json_integer_value(jn) < 1) return fail(e, 400, "\"top_n\" must be a positive integer");
        if ((json_int_t)top > json_integer_value(jn)) top = (size_t)json_integer_value(jn);
    }
    if (jr && !json_is_null(jr) && !json_is_boolean(jr)) return fail(e, 400, "\"return_documents\" must be a boolean");
    const char **qs = calloc(n, sizeof *qs), **ds = calloc(n, sizeof *ds);
    size_t *ql = calloc(n, sizeof *ql), *dl = calloc(n, sizeof *dl);
    prm_out *po = calloc(n, sizeof *po);
    ranked *rk = calloc(n, sizeof *rk);
    int rc = 0;
    if (!qs || !ds || !ql || !dl || !po || !rk) rc = fail(e, 500, "out of memory");
    for (size_t i = 0; i < n && !rc; i++) {
        json_t *d = json_array_get(jd, i);
        if (json_is_object(d)) d = json_object_get(d, "text");
        if (!json_is_string(d)) { rc = fail(e, 400, "documents[%zu] must be a string (or an object with a string \"text\")", i); break; }
        qs[i] = json_string_value(jq);
        ql[i] = json_string_length(jq);
        ds[i] = json_string_value(d);
        dl[i] = json_string_length(d);
    }
    long ntok = 0;
    if (!rc) rc = score_pairs(s, qs, ql, ds, dl, n, "documents", po, &ntok, e);
    if (!rc) {
        for (size_t i = 0; i < n; i++) rk[i] = (ranked){i, po[i].score};
        qsort(rk, n, sizeof *rk, cmp_ranked);
        json_t *results = json_array();
        for (size_t i = 0; i < top; i++) {
            json_t *r = json_pack("{s:I,s:o}", "index", (json_int_t)rk[i].index, "relevance_score", jnum(rk[i].score));
            if (json_is_true(jr)) json_object_set_new(r, "document", json_pack("{s:s%}", "text", ds[rk[i].index], dl[rk[i].index]));
            json_array_append_new(results, r);
        }
        json_t *model = json_object_get(req, "model");
        *resp = json_pack("{s:s,s:s,s:o,s:{s:I,s:I}}", "model", json_is_string(model) ? json_string_value(model) : s->model_id,
                          "object", "list", "results", results, "usage", "prompt_tokens", (json_int_t)ntok,
                          "total_tokens", (json_int_t)ntok);
        rc = 200;
    }
    for (size_t i = 0; po && i < n; i++) free(po[i].steps);
    free(po);
    free(rk);
    free(qs);
    free(ds);
    free(ql);
    free(dl);
    return rc;
}

void fp_grpo_advantages(const double *r, size_t n, double *adv) {
    double mean = 0, sd = 1;
    if (n > 1) {
        for (size_t i = 0; i < n; i++) mean += r[i];
        mean /= (double)n;
        double ss = 0;
        for (size_t i = 0; i < n; i++) ss += (r[i] - mean) * (r[i] - mean);
        sd = sqrt(ss / (double)(n - 1));
    }
    for (size_t i = 0; i < n; i++) adv[i] = (r[i] - mean) / (sd + 1e-6);
}

/* Numbers of a JSON array into a new double array (NULL + error on a non-number or an empty array). */
static double *numbers(json_t *a, const char *name, req_err *e) {
    if (!json_is_array(a)) { fail(e, 400, "\"%s\" must be an array of numbers", name); return NULL; }
    size_t n = json_array_size(a);
    if (!n) { fail(e, 400, "\"%s\" is empty", name); return NULL; }
    double *v = malloc(n * sizeof *v);
    if (!v) { fail(e, 500, "out of memory"); return NULL; }
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(a, i);
        if (!json_is_number(x)) { free(v); fail(e, 400, "%s[%zu] must be a number", name, i); return NULL; }
        v[i] = json_number_value(x);
    }
    return v;
}

static json_t *jnums(const double *v, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, jnum(v[i]));
    return a;
}

static int h_advantages(fp_serve *s, json_t *req, json_t **resp, req_err *e) {
    (void)s;
    json_t *jr = json_object_get(req, "rewards"), *jg = json_object_get(req, "groups"), *js = json_object_get(req, "group_size");
    if (jr && jg) return fail(e, 400, "give either \"rewards\" + \"group_size\" or \"groups\", not both");
    if (jg) {
        if (!json_is_array(jg)) return fail(e, 400, "\"groups\" must be an array of arrays of numbers");
        if (!json_array_size(jg)) return fail(e, 400, "\"groups\" is empty");
        json_t *out = json_array();
        for (size_t g = 0; g < json_array_size(jg); g++) {
            char name[48];
            snprintf(name, sizeof name, "groups[%zu]", g);
            json_t *grp = json_array_get(jg, g);
            double *v = numbers(grp, name, e);
            if (!v) { json_decref(out); return e->status; }
            size_t n = json_array_size(grp);
            double *a = malloc(n * sizeof *a);
            if (!a) { free(v); json_decref(out); return fail(e, 500, "out of memory"); }
            fp_grpo_advantages(v, n, a);
            json_array_append_new(out, jnums(a, n));
            free(v);
            free(a);
        }
        *resp = json_pack("{s:o}", "advantages", out);
        return 200;
    }
    if (!jr) return fail(e, 400, "missing \"rewards\" (with \"group_size\") or \"groups\"");
    if (!json_is_integer(js) || json_integer_value(js) < 1) return fail(e, 400, "\"group_size\" must be a positive integer");
    double *v = numbers(jr, "rewards", e);
    if (!v) return e->status;
    size_t n = json_array_size(jr), G = (size_t)json_integer_value(js);
    if (n % G) { free(v); return fail(e, 400, "%zu rewards do not split into groups of %zu", n, G); }
    double *a = malloc(n * sizeof *a);
    if (!a) { free(v); return fail(e, 500, "out of memory"); }
    for (size_t g = 0; g < n; g += G) fp_grpo_advantages(v + g, G, a + g);
    *resp = json_pack("{s:o}", "advantages", jnums(a, n));
    free(v);
    free(a);
    return 200;
}

/* ---------------------------------------------------------------- completions (the policy) */
/* Queues np prompts (n samples each) for the generation worker and waits for them: out[np * n] filled. */
static int run_gen(fp_serve *s, const fp_gen_prompt *pr, int np, int n, fp_completion *out, req_err *e) {
    gen_job j;
    memset(&j, 0, sizeof j);
    j.pr = pr;
    j.np = np;
    j.n = n;
    j.out = out;
    j.remaining = np;
    pthread_cond_init(&j.cv, NULL);
    pthread_mutex_lock(&s->mu);
    if (s->stop) {
        pthread_mutex_unlock(&s->mu);
        pthread_cond_destroy(&j.cv);
        return fail(e, 503, "the server is shutting down");
    }
    if (s->gtail) s->gtail->next = &j;
    else s->ghead = &j;
    s->gtail = &j;
    pthread_cond_signal(&s->gen_cv);
    while (j.remaining) pthread_cond_wait(&j.cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    pthread_cond_destroy(&j.cv);
    if (j.rc) {
        for (size_t i = 0; i < (size_t)np * (size_t)n; i++) fp_completion_free(&out[i]);
        return fail(e, 500, "generation failed: %s", j.err);
    }
    return 0;
}

/* A member that is present and not null, else NULL (OpenAI clients send null for "not set"). */
static json_t *opt_member(json_t *req, const char *name) {
    json_t *v = json_object_get(req, name);
    return v && !json_is_null(v) ? v : NULL;
}

/* A request's sampling options (with the stop strings, which point into req). */
typedef struct {
    fp_sample_opts o;
    const char *stops[GEN_MAX_STOP];
    int n, return_ids;
} gen_params;

/* A seed for a request that gives none: requests without "seed" must not repeat each other's samples. */
static uint64_t fresh_seed(fp_serve *s) {
    pthread_mutex_lock(&s->mu);
    unsigned long k = ++s->idn;
    pthread_mutex_unlock(&s->mu);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t z = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)k << 40) ^ (uint64_t)getpid() << 20;
    z += 0x9e3779b97f4a7c15ull; /* splitmix64 finaliser */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* An option that fluxprm cannot honour is refused rather than ignored (it would change the samples). */
static int refuse_nonzero(json_t *req, const char *name, double neutral, req_err *e) {
    json_t *v = opt_member(req, name);
    if (!v) return 0;
    if (!json_is_number(v)) return fail(e, 400, "\"%s\" must be a number", name);
    if (json_number_value(v) != neutral) return fail(e, 400, "\"%s\" is not supported (only %g)", name, neutral);
    return 0;
}

/* The sampling fields shared by /v1/chat/completions and /v1/completions. */
static int parse_gen_params(fp_serve *s, json_t *req, gen_params *p, req_err *e) {
    memset(p, 0, sizeof *p);
    fp_sample_opts_default(&p->o);
    p->o.max_new_tokens = s->o.max_new_tokens;
    p->n = 1;
    json_t *v;
    int rc;
    if ((v = opt_member(req, "stream"))) {
        if (!json_is_boolean(v)) return fail(e, 400, "\"stream\" must be a boolean");
        if (json_is_true(v))
            return fail(e, 400, "streaming is not supported: send \"stream\": false (or leave it out) to get the whole "
                                "completion in one JSON response");
    }
    json_t *mt = opt_member(req, "max_tokens"), *mct = opt_member(req, "max_completion_tokens");
    const char *names[2] = {"max_tokens", "max_completion_tokens"};
    json_t *vals[2] = {mt, mct};
    for (int i = 0; i < 2; i++) {
        if (!vals[i]) continue;
        json_int_t k = json_is_integer(vals[i]) ? json_integer_value(vals[i]) : -1;
        if (k < 1 || k > s->o.max_new_tokens)
            return fail(e, 400, "\"%s\" must be an integer in [1, %d] (the server's --max-new-tokens)", names[i], s->o.max_new_tokens);
        p->o.max_new_tokens = (int)k;
    }
    if (mt && mct && json_integer_value(mt) != json_integer_value(mct))
        return fail(e, 400, "\"max_tokens\" and \"max_completion_tokens\" disagree; give one");
    if ((v = opt_member(req, "temperature"))) {
        double t = json_is_number(v) ? json_number_value(v) : -1;
        if (!(t >= 0) || !isfinite(t)) return fail(e, 400, "\"temperature\" must be a number >= 0 (0 = greedy)");
        p->o.temperature = t;
    }
    if ((v = opt_member(req, "top_p"))) {
        double t = json_is_number(v) ? json_number_value(v) : -1;
        if (!(t > 0 && t <= 1)) return fail(e, 400, "\"top_p\" must be a number in (0, 1]");
        p->o.top_p = t;
    }
    if ((v = opt_member(req, "top_k"))) {
        json_int_t k = json_is_integer(v) ? json_integer_value(v) : -2;
        if (k < -1 || k > INT32_MAX) return fail(e, 400, "\"top_k\" must be an integer >= -1 (0 or -1 = off)");
        p->o.top_k = k > 0 ? (int)k : 0;
    }
    if ((v = opt_member(req, "seed"))) {
        if (!json_is_integer(v)) return fail(e, 400, "\"seed\" must be an integer");
        p->o.seed = (uint64_t)json_integer_value(v);
    } else {
        p->o.seed = fresh_seed(s);
    }
    if ((v = opt_member(req, "n"))) {
        json_int_t k = json_is_integer(v) ? json_integer_value(v) : 0;
        if (k < 1 || k > GEN_MAX_N) return fail(e, 400, "\"n\" must be an integer in [1, %d]", GEN_MAX_N);
        p->n = (int)k;
    }
    if ((v = opt_member(req, "stop"))) {
        if (json_is_string(v)) {
            p->stops[p->o.n_stop++] = json_string_value(v);
        } else if (json_is_array(v)) {
            if (json_array_size(v) > GEN_MAX_STOP) return fail(e, 400, "\"stop\" has more than %d strings", GEN_MAX_STOP);
            for (size_t i = 0; i < json_array_size(v); i++) {
                json_t *x = json_array_get(v, i);
                if (!json_is_string(x)) return fail(e, 400, "stop[%zu] must be a string", i);
                p->stops[p->o.n_stop++] = json_string_value(x);
            }
        } else {
            return fail(e, 400, "\"stop\" must be a string or an array of strings");
        }
        p->o.stop = p->stops;
    }
    if ((v = opt_member(req, "ignore_eos"))) {
        if (!json_is_boolean(v)) return fail(e, 400, "\"ignore_eos\" must be a boolean");
        p->o.ignore_eos = json_is_true(v);
    }
    if ((v = opt_member(req, "return_token_ids"))) {
        if (!json_is_boolean(v)) return fail(e, 400, "\"return_token_ids\" must be a boolean");
        p->return_ids = json_is_true(v);
    }
    /* options that fluxprm does not implement: refused when they would change the result */
    if ((v = opt_member(req, "logprobs")) && !json_is_false(v) && !(json_is_integer(v) && json_integer_value(v) == 0))
        return fail(e, 400, "\"logprobs\" is not supported");
    if ((v = opt_member(req, "top_logprobs")) && !(json_is_integer(v) && json_integer_value(v) == 0))
        return fail(e, 400, "\"top_logprobs\" is not supported");
    if ((v = opt_member(req, "echo")) && !json_is_false(v)) return fail(e, 400, "\"echo\" is not supported");
    if ((v = opt_member(req, "suffix")) && !(json_is_string(v) && !json_string_length(v)))
        return fail(e, 400, "\"suffix\" is not supported");
    if ((v = opt_member(req, "best_of")) && !(json_is_integer(v) && json_integer_value(v) == p->n))
        return fail(e, 400, "\"best_of\" is not supported (only best_of = n)");
    if ((v = opt_member(req, "response_format"))) {
        json_t *t = json_object_get(v, "type");
        if (!json_is_string(t) || strcmp(json_string_value(t), "text"))
            return fail(e, 400, "\"response_format\" is not supported (only {\"type\": \"text\"})");
    }
    if ((v = opt_member(req, "tools")) && !(json_is_array(v) && !json_array_size(v)))
        return fail(e, 400, "\"tools\" is not supported");
    if ((v = opt_member(req, "logit_bias")) && !(json_is_object(v) && !json_object_size(v)))
        return fail(e, 400, "\"logit_bias\" is not supported");
    if ((rc = refuse_nonzero(req, "presence_penalty", 0, e)) || (rc = refuse_nonzero(req, "frequency_penalty", 0, e)) ||
        (rc = refuse_nonzero(req, "repetition_penalty", 1, e)) || (rc = refuse_nonzero(req, "min_p", 0, e)))
        return rc;
    return 0;
}

/* An encoder error: out of memory is the server's, anything else the request's. */
static int encode_fail(req_err *e, int r, const char *what) {
    return fail(e, r == FP_ENOMEM ? 500 : 400, "%s: %s", what, fp_last_error());
}

static int check_prompt_len(fp_serve *s, int T, const char *what, req_err *e) {
    if (s->po.max_tokens > 0 && T > s->po.max_tokens)
        return fail(e, 400, "%s is %d tokens, longer than the server's --max-tokens %d", what, T, s->po.max_tokens);
    return 0;
}

static json_t *jids(const int32_t *ids, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_integer(ids[i]));
    return a;
}

/* The response's "model": the request's, else the policy's id. */
static const char *resp_model(fp_serve *s, json_t *req) {
    json_t *m = json_object_get(req, "model");
    return json_is_string(m) ? json_string_value(m) : s->policy_id;
}

/* The text of a message's "content": a string, or an array of {"type": "text", "text": ...} parts joined with
 * "\n".  *owned is set when the text had to be built (free it). */
static int message_text(json_t *c, size_t i, const char **text, char **owned, req_err *e) {
    *owned = NULL;
    if (json_is_string(c)) {
        *text = json_string_value(c);
        return 0;
    }
    if (!json_is_array(c) || !json_array_size(c))
        return fail(e, 400, "messages[%zu].content must be a string or an array of text parts", i);
    fp_buf b = {0};
    for (size_t k = 0; k < json_array_size(c); k++) {
        json_t *part = json_array_get(c, k), *type = json_object_get(part, "type"), *t = json_object_get(part, "text");
        if (!json_is_string(type) || strcmp(json_string_value(type), "text") || !json_is_string(t)) {
            fp_buf_free(&b);
            return fail(e, 400, "messages[%zu].content[%zu] must be {\"type\": \"text\", \"text\": \"...\"} (only text is "
                                "supported)", i, k);
        }
        if ((k && fp_buf_append(&b, "\n", 1)) || fp_buf_append(&b, json_string_value(t), json_string_length(t))) {
            fp_buf_free(&b);
            return fail(e, 500, "out of memory");
        }
    }
    if (!b.data && fp_buf_append(&b, "", 0)) return fail(e, 500, "out of memory");
    *text = *owned = b.data;
    return 0;
}

static int h_chat(fp_serve *s, json_t *req, json_t **resp, req_err *e) {
    gen_params p;
    int rc = parse_gen_params(s, req, &p, e);
    if (rc) return rc;
    json_t *msgs = json_object_get(req, "messages");
    if (!msgs) return fail(e, 400, "missing \"messages\" (an array of {\"role\": ..., \"content\": ...})");
    if (!json_is_array(msgs)) return fail(e, 400, "\"messages\" must be an array");
    size_t nm = json_array_size(msgs);
    if (!nm) return fail(e, 400, "\"messages\" is empty");
    fp_chat_message *m = calloc(nm, sizeof *m);
    char **owned = calloc(nm, sizeof *owned);
    fp_completion *out = calloc((size_t)p.n, sizeof *out);
    int32_t *ids = NULL;
    int T = 0;
    if (!m || !owned || !out) rc = fail(e, 500, "out of memory");
    for (size_t i = 0; i < nm && !rc; i++) {
        json_t *x = json_array_get(msgs, i), *role = json_object_get(x, "role");
        if (!json_is_object(x)) { rc = fail(e, 400, "messages[%zu] must be an object", i); break; }
        if (!json_is_string(role) || !json_string_length(role)) { rc = fail(e, 400, "messages[%zu].role must be a non-empty string", i); break; }
        m[i].role = json_string_value(role);
        rc = message_text(json_object_get(x, "content"), i, &m[i].content, &owned[i], e);
    }
    if (!rc) {
        int r = fp_generator_encode_chat(s->gen, m, nm, &ids, &T);
        if (r) rc = encode_fail(e, r, "messages");
        else rc = check_prompt_len(s, T, "the rendered conversation", e);
    }
    if (!rc) {
        fp_gen_prompt pr = {ids, T, 0, &p.o};
        rc = run_gen(s, &pr, 1, p.n, out, e);
    }
    if (!rc) {
        json_t *choices = json_array();
        long ctok = 0;
        for (int j = 0; j < p.n; j++) {
            json_t *c = json_pack("{s:i,s:{s:s,s:s},s:n,s:s}", "index", j, "message", "role", "assistant", "content",
                                  out[j].text, "logprobs", "finish_reason", fp_finish_name(out[j].finish));
            if (c && p.return_ids) json_object_set_new(c, "token_ids", jids(out[j].tokens, out[j].n_tokens));
            json_array_append_new(choices, c);
            ctok += (long)out[j].n_tokens;
        }
        char id[64];
        new_id(s, "chatcmpl-", id, sizeof id);
        *resp = json_pack("{s:s,s:s,s:I,s:s,s:o,s:{s:I,s:I,s:I}}", "id", id, "object", "chat.completion", "created",
                          (json_int_t)time(NULL), "model", resp_model(s, req), "choices", choices, "usage",
                          "prompt_tokens", (json_int_t)T, "completion_tokens", (json_int_t)ctok, "total_tokens",
                          (json_int_t)(T + ctok));
        if (*resp && p.return_ids) json_object_set_new(*resp, "prompt_token_ids", jids(ids, (size_t)T));
        rc = 200;
    }
    for (int j = 0; out && j < p.n; j++) fp_completion_free(&out[j]);
    for (size_t i = 0; owned && i < nm; i++) free(owned[i]);
    free(owned);
    free(m);
    free(out);
    free(ids);
    return rc;
}

/* "prompt": a string, an array of strings, an array of token ids, or an array of token-id arrays. */
static int h_completions(fp_serve *s, json_t *req, json_t **resp, req_err *e) {
    gen_params p;
    int rc = parse_gen_params(s, req, &p, e);
    if (rc) return rc;
    json_t *jp = json_object_get(req, "prompt");
    if (!jp) return fail(e, 400, "missing \"prompt\" (a string, an array of strings or of token ids)");
    size_t np = 1;
    int kind; /* 0 string(s), 1 one id list, 2 id lists */
    if (json_is_string(jp)) kind = 0;
    else if (json_is_array(jp)) {
        np = json_array_size(jp);
        if (!np) return fail(e, 400, "\"prompt\" is empty");
        json_t *first = json_array_get(jp, 0);
        kind = json_is_string(first) ? 0 : json_is_integer(first) ? 1 : json_is_array(first) ? 2 : -1;
        if (kind < 0) return fail(e, 400, "\"prompt\" must be a string, an array of strings or of token ids");
        if (kind == 1) np = 1;
    } else return fail(e, 400, "\"prompt\" must be a string, an array of strings or of token ids");
    if (np > GEN_MAX_PROMPTS) return fail(e, 400, "\"prompt\" has %zu prompts; at most %d per request", np, GEN_MAX_PROMPTS);
    fp_gen_prompt *pr = calloc(np, sizeof *pr);
    fp_completion *out = calloc(np * (size_t)p.n, sizeof *out);
    if (!pr || !out) rc = fail(e, 500, "out of memory");
    char what[48];
    for (size_t i = 0; i < np && !rc; i++) {
        snprintf(what, sizeof what, json_is_array(jp) && kind != 1 ? "prompt[%zu]" : "prompt", i);
        int32_t *ids = NULL;
        int T = 0;
        if (kind == 0) {
            json_t *x = json_is_string(jp) ? jp : json_array_get(jp, i);
            if (!json_is_string(x)) { rc = fail(e, 400, "%s must be a string", what); break; }
            int r = fp_generator_encode_text(s->gen, json_string_value(x), &ids, &T);
            if (r) { rc = encode_fail(e, r, what); break; }
        } else {
            json_t *x = kind == 1 ? jp : json_array_get(jp, i);
            if (!json_is_array(x)) { rc = fail(e, 400, "%s must be an array of token ids", what); break; }
            size_t n = json_array_size(x);
            if (!n) { rc = fail(e, 400, "%s is empty", what); break; }
            if (n > (size_t)INT32_MAX / 2) { rc = fail(e, 400, "%s is too long", what); break; }
            if (!(ids = malloc(sizeof(int32_t) * n))) { rc = fail(e, 500, "out of memory"); break; }
            for (size_t t = 0; t < n && !rc; t++) {
                json_t *id = json_array_get(x, t);
                json_int_t k = json_is_integer(id) ? json_integer_value(id) : -1;
                if (k < 0 || k >= s->gen_vocab) rc = fail(e, 400, "%s[%zu] is not a token id in [0, %d)", what, t, s->gen_vocab);
                else ids[t] = (int32_t)k;
            }
            T = (int)n;
        }
        pr[i] = (fp_gen_prompt){ids, T, (uint64_t)i, &p.o};
        if (!rc) rc = check_prompt_len(s, T, what, e);
    }
    if (!rc) rc = run_gen(s, pr, (int)np, p.n, out, e);
    if (!rc) {
        json_t *choices = json_array();
        long ptok = 0, ctok = 0;
        for (size_t i = 0; i < np; i++) {
            ptok += pr[i].T;
            for (int j = 0; j < p.n; j++) {
                fp_completion *c = &out[i * (size_t)p.n + (size_t)j];
                json_t *ch = json_pack("{s:I,s:s,s:n,s:s}", "index", (json_int_t)(i * (size_t)p.n + (size_t)j), "text",
                                       c->text, "logprobs", "finish_reason", fp_finish_name(c->finish));
                if (ch && p.return_ids) {
                    json_object_set_new(ch, "prompt_token_ids", jids(pr[i].ids, (size_t)pr[i].T));
                    json_object_set_new(ch, "token_ids", jids(c->tokens, c->n_tokens));
                }
                json_array_append_new(choices, ch);
                ctok += (long)c->n_tokens;
            }
        }
        char id[64];
        new_id(s, "cmpl-", id, sizeof id);
        *resp = json_pack("{s:s,s:s,s:I,s:s,s:o,s:{s:I,s:I,s:I}}", "id", id, "object", "text_completion", "created",
                          (json_int_t)time(NULL), "model", resp_model(s, req), "choices", choices, "usage",
                          "prompt_tokens", (json_int_t)ptok, "completion_tokens", (json_int_t)ctok, "total_tokens",
                          (json_int_t)(ptok + ctok));
        rc = 200;
    }
    for (size_t k = 0; out && k < np * (size_t)p.n; k++) fp_completion_free(&out[k]);
    for (size_t i = 0; pr && i < np; i++) free((void *)pr[i].ids);
    free(pr);
    free(out);
    return rc;
}

enum { NEED_NONE, NEED_PRM, NEED_POLICY };

static const struct route {
    const char *path, *method;
    handler_fn fn;
    int body; /* takes a JSON body */
    int need; /* the model it needs */
} routes[] = {
    {"/get_reward", "POST", h_get_reward, 1, NEED_PRM},
    {"/pooling", "POST", h_pooling, 1, NEED_PRM},
    {"/v1/rerank", "POST", h_rerank, 1, NEED_PRM},
    {"/rerank", "POST", h_rerank, 1, NEED_PRM},
    {"/v1/grpo/advantages", "POST", h_advantages, 1, NEED_NONE},
    {"/health", "GET", h_health, 0, NEED_NONE},
    {"/v1/models", "GET", h_models, 0, NEED_NONE},
    {"/v1/chat/completions", "POST", h_chat, 1, NEED_POLICY},
    {"/v1/completions", "POST", h_completions, 1, NEED_POLICY},
};

static char *error_body(const req_err *e, size_t *len) {
    json_t *o = json_pack("{s:{s:s,s:s,s:n,s:i}}", "error", "message", e->msg, "type", e->type, "param", "code", e->status);
    char *txt = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!txt) txt = strdup("{\"error\":{\"message\":\"internal error\",\"type\":\"server_error\"}}");
    *len = txt ? strlen(txt) : 0;
    return txt;
}

static void count(fp_serve *s, int status) {
    pthread_mutex_lock(&s->mu);
    s->st.requests++;
    if (status >= 400) s->st.errors++;
    pthread_mutex_unlock(&s->mu);
}

static int handle(fp_serve *s, const char *method, const char *path, const char *body, size_t len, char **resp,
                  size_t *resp_len, const char **allow) {
    req_err e = {0};
    json_t *out = NULL, *req = NULL;
    int status = 0;
    const struct route *rt = NULL;
    *allow = NULL;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (!strcmp(path, routes[i].path)) rt = &routes[i];
    if (!rt) status = fail(&e, 404, "no such endpoint: %s %s", method, path);
    else if (strcmp(method, rt->method) && !(!strcmp(method, "HEAD") && !strcmp(rt->method, "GET"))) {
        status = fail(&e, 405, "%s needs %s, got %s", path, rt->method, method);
        *allow = rt->method;
    } else if (rt->need == NEED_PRM && !s->prm) {
        status = fail(&e, 404, "%s needs a PRM, and this server has none (start fluxprm serve with --model DIR)", path);
    } else if (rt->need == NEED_POLICY && !s->gen) {
        status = fail(&e, 404, "%s needs a policy model, and this server has none (start fluxprm serve with "
                      "--policy-model DIR)", path);
    } else if (len > s->o.max_body) {
        status = fail(&e, 413, "request body of %zu bytes is larger than the server's --max-body %zu", len, s->o.max_body);
    } else if (rt->body) {
        json_error_t je;
        req = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES, &je);
        if (!req) status = fail(&e, 400, "invalid JSON body: %s (line %d, column %d)", je.text, je.line, je.column);
        else if (!json_is_object(req)) status = fail(&e, 400, "the request body must be a JSON object");
    }
    if (!status) status = rt->fn(s, req, &out, &e);
    json_decref(req);
    char *txt = NULL;
    if (status == 200) {
        txt = out ? json_dumps(out, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
        if (!txt) status = fail(&e, 500, "could not serialise the response");
    }
    json_decref(out);
    if (status != 200) txt = error_body(&e, resp_len);
    else *resp_len = strlen(txt);
    *resp = txt;
    count(s, status);
    return status;
}

int fp_serve_handle(fp_serve *s, const char *method, const char *path, const char *body, size_t len, char **resp,
                    size_t *resp_len) {
    const char *allow;
    return handle(s, method, path, body, len, resp, resp_len, &allow);
}

/* ---------------------------------------------------------------- HTTP front end */
typedef struct {
    fp_buf body;
    unsigned long long seen; /* body bytes received */
    int too_large;
} conn_ctx;

static enum MHD_Result send_body(struct MHD_Connection *c, int status, char *txt, size_t len, const char *allow) {
    if (!txt) return MHD_NO;
    struct MHD_Response *r = mhd.create_response_from_buffer(len, txt, MHD_RESPMEM_MUST_FREE);
    if (!r) { free(txt); return MHD_NO; }
    mhd.add_response_header(r, "Content-Type", "application/json");
    if (allow) mhd.add_response_header(r, "Allow", allow);
    enum MHD_Result ret = mhd.queue_response(c, (unsigned)status, r);
    mhd.destroy_response(r);
    return ret;
}

static enum MHD_Result send_413(fp_serve *s, struct MHD_Connection *c) {
    req_err e = {0};
    fail(&e, 413, "request body is larger than the server's --max-body %zu bytes", s->o.max_body);
    size_t len;
    char *txt = error_body(&e, &len);
    count(s, 413);
    return send_body(c, 413, txt, len, NULL);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                 const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version;
    fp_serve *s = cls;
    conn_ctx *cx = *con_cls;
    if (!cx) {
        if (!(cx = calloc(1, sizeof *cx))) return MHD_NO;
        *con_cls = cx;
        const char *cl = mhd.lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl) {
            unsigned long long v = strtoull(cl, NULL, 10);
            if (v > s->o.max_body) {
                cx->too_large = 1;
                const char *ex = mhd.lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
                if ((ex && strcasestr(ex, "100-continue")) || v > s->o.max_body + DRAIN_MAX) return send_413(s, c);
            }
        }
        return MHD_YES;
    }
    if (*upload_size) {
        cx->seen += *upload_size;
        if (cx->seen > s->o.max_body + DRAIN_MAX) return MHD_NO; /* endless (chunked) upload: drop it */
        if (!cx->too_large && cx->body.len + *upload_size > s->o.max_body) {
            cx->too_large = 1;
            fp_buf_free(&cx->body);
        }
        if (!cx->too_large && fp_buf_append(&cx->body, upload, *upload_size)) return MHD_NO;
        *upload_size = 0;
        return MHD_YES;
    }
    if (cx->too_large) return send_413(s, c);
    char *txt;
    size_t len;
    const char *allow;
    int status = handle(s, method, url, cx->body.data, cx->body.len, &txt, &len, &allow);
    fp_buf_free(&cx->body);
    return send_body(c, status, txt, len, allow);
}

static void on_done(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode t) {
    (void)cls, (void)c, (void)t;
    conn_ctx *cx = *con_cls;
    if (cx) {
        fp_buf_free(&cx->body);
        free(cx);
        *con_cls = NULL;
    }
}

static void quiet_log(void *cls, const char *fmt, va_list ap) { (void)cls, (void)fmt, (void)ap; }

/* An id for /v1/models: as given, else the last component of the model path (*out malloc'd). */
static int model_id_of(const char *given, const char *path, char **out) {
    if (given) return (*out = fp_strdup(given)) ? FP_OK : FP_ENOMEM;
    char *tmp = fp_strdup(path ? path : "fluxprm");
    if (!tmp) return FP_ENOMEM;
    size_t n = strlen(tmp);
    while (n > 1 && tmp[n - 1] == '/') tmp[--n] = 0;
    char *slash = strrchr(tmp, '/');
    *out = fp_strdup(slash && slash[1] ? slash + 1 : tmp);
    free(tmp);
    return *out ? FP_OK : FP_ENOMEM;
}

int fp_serve_new(fp_serve **out, const fp_prm_opts *po, const fp_serve_opts *so) {
    *out = NULL;
    int has_prm = po && po->model_path, has_policy = so->policy.model_path != NULL;
    if (!has_prm && !has_policy) return fp_errorf(FP_EINVAL, "nothing to serve: give a PRM, a policy model or both");
    if (!(so->beta >= 0 && so->beta <= 1)) return fp_errorf(FP_EINVAL, "beta must be in [0, 1], got %g", so->beta);
    if (so->max_batch_tokens < 1) return fp_errorf(FP_EINVAL, "max_batch_tokens must be positive");
    if (has_policy && (so->max_new_tokens < 1 || so->gen_batch < 1))
        return fp_errorf(FP_EINVAL, "max_new_tokens and gen_batch must be positive");
    fp_serve *s = fp_calloc(1, sizeof *s);
    if (!s) return FP_ENOMEM;
    s->o = *so;
    if (po) s->po = *po;
    else fp_prm_opts_default(&s->po);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->work_cv, NULL);
    pthread_cond_init(&s->gen_cv, NULL);
    s->created = (long)time(NULL);
    int rc;
    if (has_prm) {
        if ((rc = fp_prm_open(&s->prm, po))) { fp_serve_free(s); return rc; }
        s->model = fp_prm_model(s->prm);
        s->tok = fp_prm_tokenizer(s->prm);
        s->step_id = fp_prm_step_id(s->prm);
        s->has_steps = fp_prm_has_steps(s->prm);
        fp_model_info info;
        fp_model_get_info(s->model, &info);
        s->L = info.num_labels > 0 ? info.num_labels : 1;
        s->vocab = info.vocab_size;
        if ((rc = model_id_of(so->model_id, po->model_path, &s->model_id))) { fp_serve_free(s); return rc; }
    }
    if (has_policy) {
        if ((rc = fp_generator_open(&s->gen, &so->policy))) {
            fp_error_prefix("policy model: ");
            fp_serve_free(s);
            return rc;
        }
        fp_model_info info;
        fp_model_get_info(fp_generator_model(s->gen), &info);
        s->gen_vocab = info.vocab_size;
        size_t nseq = (size_t)(so->gen_batch > GEN_MAX_N ? so->gen_batch : GEN_MAX_N);
        s->gsl = fp_calloc((size_t)so->gen_batch, sizeof *s->gsl);
        s->gpr = fp_calloc((size_t)so->gen_batch, sizeof *s->gpr);
        s->gout = fp_calloc(nseq, sizeof *s->gout);
        if (!s->gsl || !s->gpr || !s->gout) { fp_serve_free(s); return FP_ENOMEM; }
        if ((rc = model_id_of(so->policy_id, so->policy.model_path, &s->policy_id))) { fp_serve_free(s); return rc; }
    }
    s->host = fp_strdup(so->host ? so->host : "127.0.0.1");
    if (!s->host) { fp_serve_free(s); return FP_ENOMEM; }
    s->o.host = s->host;
    s->o.model_id = s->model_id;
    s->o.policy_id = s->policy_id;
    s->o.policy.model_path = s->o.policy.tokenizer_path = s->o.policy.system = NULL; /* the caller's strings */
    if (has_prm) {
        if (pthread_create(&s->worker, NULL, worker_main, s)) {
            fp_serve_free(s);
            return fp_errorf(FP_ENOMEM, "could not start the inference worker thread");
        }
        s->worker_started = 1;
    }
    if (has_policy) {
        if (pthread_create(&s->gen_worker, NULL, gen_main, s)) {
            fp_serve_free(s);
            return fp_errorf(FP_ENOMEM, "could not start the generation worker thread");
        }
        s->gen_started = 1;
    }
    *out = s;
    return FP_OK;
}

int fp_serve_listen(fp_serve *s) {
    if (s->d) return fp_errorf(FP_ESTATE, "the server is already listening");
    int lrc = fp_dynlib_load(&mhd_lib);
    if (lrc) return lrc;
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char port[16];
    snprintf(port, sizeof port, "%d", s->o.port);
    if (s->o.port < 0 || s->o.port > 65535) return fp_errorf(FP_EINVAL, "bad port %d", s->o.port);
    int g = getaddrinfo(s->host, port, &hints, &ai);
    if (g || !ai) return fp_errorf(FP_EINVAL, "cannot resolve listen address '%s': %s", s->host, gai_strerror(g));
    struct sockaddr_storage sa;
    memset(&sa, 0, sizeof sa);
    memcpy(&sa, ai->ai_addr, ai->ai_addrlen < sizeof sa ? ai->ai_addrlen : sizeof sa);
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    freeaddrinfo(ai);
    s->d = mhd.start_daemon(flags, 0, NULL, NULL, on_access, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)s->o.timeout_s,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned int)(s->o.max_connections ? s->o.max_connections : 512),
                            MHD_OPTION_NOTIFY_COMPLETED, on_done, s, MHD_OPTION_EXTERNAL_LOGGER, quiet_log, NULL,
                            MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned int)1, MHD_OPTION_END);
    if (!s->d) return fp_errorf(FP_EIO, "cannot listen on %s:%d (address in use or not available?)", s->host, s->o.port);
    const union MHD_DaemonInfo *info = mhd.get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : s->o.port;
    return FP_OK;
}

int fp_serve_port(const fp_serve *s) { return s ? s->port : 0; }

void fp_serve_get_stats(fp_serve *s, fp_serve_stats *st) {
    pthread_mutex_lock(&s->mu);
    *st = s->st;
    pthread_mutex_unlock(&s->mu);
}

void fp_serve_free(fp_serve *s) {
    if (!s) return;
    if (s->d) mhd.stop_daemon(s->d); /* joins the connection threads; their queued work still completes */
    s->d = NULL;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_broadcast(&s->work_cv);
    pthread_cond_broadcast(&s->gen_cv);
    pthread_mutex_unlock(&s->mu);
    if (s->worker_started) pthread_join(s->worker, NULL);
    if (s->gen_started) pthread_join(s->gen_worker, NULL);
    fp_prm_free(s->prm);
    fp_generator_free(s->gen);
    pthread_cond_destroy(&s->work_cv);
    pthread_cond_destroy(&s->gen_cv);
    pthread_mutex_destroy(&s->mu);
    free(s->gsl);
    free(s->gpr);
    free(s->gout);
    free(s->host);
    free(s->model_id);
    free(s->policy_id);
    free(s);
}
