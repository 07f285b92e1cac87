/* The reward server (docs/serve.md): HTTP endpoints for online RL on top of one PRM.
 *
 *   POST /get_reward          OpenRLHF remote RM: r = (1-beta)*rule + beta*PRM
 *   POST /pooling             vLLM PRM pooling: [p_neg, p_pos] at every step token of pre-formatted text
 *   POST /v1/rerank           llama.cpp/Jina rerank: relevance_score = PRM score of (query, document)
 *   POST /v1/grpo/advantages  GRPO group normalisation (verl's rule)
 *   GET  /health, GET /v1/models
 *   POST /v1/chat/completions 501 (no generation engine)
 *
 * Threads: HTTP connection threads only parse, tokenise and serialise.  One inference worker owns the model
 * and drains a queue of sequences, taking as many queued sequences as fit in max_batch_tokens per batch
 * (at least one); each HTTP thread waits on a condition variable for the results of its own sequences.
 * Nothing here prints or exits. */
#ifndef FP_APPS_SERVE_H
#define FP_APPS_SERVE_H
#include "apps/prm.h"

typedef struct {
    const char *host;          /* listen address (default "127.0.0.1") */
    int port;                  /* default 8000; 0 = a free port (see fp_serve_port) */
    double beta;               /* PRM weight in /get_reward (default 0.75) */
    size_t max_body;           /* request bodies larger than this get 413 (default 8 MiB) */
    unsigned timeout_s;        /* idle connection timeout in seconds (default 60; 0 = none) */
    long max_batch_tokens;     /* tokens per worker batch (default 16384) */
    unsigned max_connections;  /* concurrent connections (default 512) */
    int whole_response;        /* 1: the response is ONE step (the released verl code); 0: split on "\n\n" */
    const char *model_id;      /* id in /v1/models and responses (default: basename of the model path) */
} fp_serve_opts;
void fp_serve_opts_default(fp_serve_opts *o);

typedef struct fp_serve fp_serve;

/* Opens the PRM (po) and starts the inference worker; no network yet.  Use fp_serve_handle in-process or
 * fp_serve_listen to accept HTTP connections. */
int fp_serve_new(fp_serve **out, const fp_prm_opts *po, const fp_serve_opts *so);
/* Starts the HTTP daemon on so->host:so->port. */
int fp_serve_listen(fp_serve *s);
/* The bound port (after fp_serve_listen), or 0. */
int fp_serve_port(const fp_serve *s);
/* Stops accepting, lets in-flight requests finish, stops the worker and frees everything. NULL is fine. */
void fp_serve_free(fp_serve *s);

/* One request in-process (what each HTTP connection thread runs): returns the HTTP status and a malloc'd
 * JSON body in *resp (*resp_len bytes, NUL-terminated).  path excludes any query string. */
int fp_serve_handle(fp_serve *s, const char *method, const char *path, const char *body, size_t len, char **resp,
                    size_t *resp_len);

typedef struct {
    long requests;        /* HTTP requests answered (any status) */
    long errors;          /* of those, 4xx/5xx */
    long sequences;       /* sequences run by the worker */
    long tokens;          /* their tokens */
    long batches;         /* worker batches */
    long max_batch_seqs;  /* most sequences coalesced into one batch */
} fp_serve_stats;
void fp_serve_get_stats(fp_serve *s, fp_serve_stats *st);

/* GRPO advantages of one group in place: (r - mean) / (std + 1e-6), std unbiased (N-1); a group of one has
 * mean 0 and std 1 (verl compute_grpo_outcome_advantage). */
void fp_grpo_advantages(const double *r, size_t n, double *adv);
#endif
