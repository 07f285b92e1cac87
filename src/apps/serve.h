/* The reward server (docs/serve.md): HTTP endpoints for online RL on top of a PRM, a policy (causal LM), or both.
 *
 *   POST /get_reward          OpenRLHF remote RM: r = (1-beta)*rule + beta*PRM                      (PRM)
 *   POST /pooling             vLLM PRM pooling: [p_neg, p_pos] at every step token of pre-formatted text (PRM)
 *   POST /v1/rerank           llama.cpp/Jina rerank: relevance_score = PRM score of (query, document)  (PRM)
 *   POST /v1/chat/completions OpenAI chat completions, non-streaming                                 (policy)
 *   POST /v1/completions      OpenAI text completions, non-streaming                                 (policy)
 *   POST /v1/grpo/advantages  GRPO group normalisation (verl's rule)
 *   GET  /health, GET /v1/models
 * An endpoint whose model is not loaded answers 404 with a JSON error that names the missing option.
 *
 * Threads: HTTP connection threads only parse, tokenise and serialise.  One inference worker owns the PRM
 * and drains a queue of sequences, taking as many queued sequences as fit in max_batch_tokens per batch
 * (at least one); a second worker owns the policy's generator and drains a queue of generation requests,
 * decoding up to gen_batch sequences of requests with the same n together (fp_generate_batch).  Each HTTP
 * thread waits on a condition variable for the results of its own work.  Nothing here prints or exits. */
#ifndef FP_APPS_SERVE_H
#define FP_APPS_SERVE_H
#include "apps/generate.h"
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
    const char *model_id;      /* the PRM's id in /v1/models and responses (default: basename of the model path) */
    /* the policy: policy.model_path NULL = none; tokenizer_path, system_mode, system and threads as for
     * fp_generator_open (defaults: the model directory's tokenizer and the template's default system prompt) */
    fp_gen_opts policy;
    const char *policy_id;     /* the policy's id in /v1/models and responses (default: basename of its path) */
    int max_new_tokens;        /* most tokens a completion may ask for; also the default (default 1024) */
    int gen_batch;             /* sequences (prompts x n) decoded together by the generation worker (default 16) */
} fp_serve_opts;
void fp_serve_opts_default(fp_serve_opts *o);

typedef struct fp_serve fp_serve;

/* Opens the PRM (po; NULL or po->model_path NULL = none) and the policy (so->policy.model_path, may be NULL)
 * and starts their workers; no network yet.  At least one of the two is needed.  Use fp_serve_handle
 * in-process or fp_serve_listen to accept HTTP connections.  The PRM's po->max_tokens (default 32768) also
 * caps the policy's prompt length. */
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
    long gen_requests;    /* completion requests the generation worker finished */
    long gen_sequences;   /* their sequences (prompts x n) */
    long gen_tokens;      /* tokens they generated */
    long gen_batches;     /* fp_generate_batch calls */
} fp_serve_stats;
void fp_serve_get_stats(fp_serve *s, fp_serve_stats *st);

/* GRPO advantages of one group in place: (r - mean) / (std + 1e-6), std unbiased (N-1); a group of one has
 * mean 0 and std 1 (verl compute_grpo_outcome_advantage). */
void fp_grpo_advantages(const double *r, size_t n, double *adv);
#endif
