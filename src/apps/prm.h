/* The PRM scoring pipeline: record → text (format) → ids (tokenizer) → one prefill (model) → step rewards,
 * final reward and the trajectory score r̂ = aggregate(steps) + α·final. */
#ifndef FP_APPS_PRM_H
#define FP_APPS_PRM_H
#include "apps/aggregate.h"
#include "format/format.h"

/* Where the trajectory-level ("final") reward is read. */
typedef enum {
    FP_FINAL_LAST_TOKEN = 0, /* P(class 1) at the last token of the sequence (the released RL code's read-out) */
    FP_FINAL_LAST_STEP,      /* the last step's reward */
    FP_FINAL_NONE            /* no final term: r̂ = aggregate(steps) */
} fp_final_mode;

typedef enum { FP_SYSTEM_TEMPLATE = 0, FP_SYSTEM_NONE, FP_SYSTEM_TEXT } fp_system_mode;

typedef struct {
    const char *model_path;     /* HF directory or .gguf file */
    const char *tokenizer_path; /* NULL = the model directory (or the GGUF's own metadata) */
    fp_system_mode system_mode; /* default: the system prompt the checkpoint's chat template injects */
    const char *system;         /* with FP_SYSTEM_TEXT */
    const char *step_token;     /* default "<extra_0>" */
    int32_t step_token_id;      /* >= 0: force this id for step_token (renaming it in the vocabulary); -1 = look up */
    fp_aggregate aggregate;     /* default mean */
    double alpha;               /* default 1.0 */
    fp_final_mode final_mode;   /* default last-token */
    fp_steps_from steps_from;   /* default both */
    int threads;                /* 0 = OpenMP default */
    int fast;                   /* FP_PRECISION_FAST: bf16/int8 activations on the fast GEMM kernels */
    int max_tokens;             /* sequences longer than this are an error; default 32768 */
} fp_prm_opts;
void fp_prm_opts_default(fp_prm_opts *o);

typedef struct fp_prm fp_prm;
int fp_prm_open(fp_prm **out, const fp_prm_opts *opts);
void fp_prm_free(fp_prm *p);
const fp_format_opts *fp_prm_format_opts(const fp_prm *p);
/* 1 when the model reads per-step rewards (2-class PRM / token classification); 0 for scalar heads. */
int fp_prm_has_steps(const fp_prm *p);
/* The loaded model, tokenizer and step-token id (owned by p; -1 id for scalar heads), for callers that run
 * their own read-outs on one owner thread (serve).  The tokenizer is immutable and thread-safe. */
fp_model *fp_prm_model(fp_prm *p);
const fp_tokenizer *fp_prm_tokenizer(const fp_prm *p);
int32_t fp_prm_step_id(const fp_prm *p);

typedef struct {
    double *step_rewards; /* [n_steps] (malloc'd; NULL for scalar-head models) */
    size_t n_steps, n_thinking;
    double final_reward;  /* NAN when final_mode is none */
    double score;         /* r̂ */
    int n_tokens;
} fp_prm_result;
void fp_prm_result_free(fp_prm_result *r);

/* Scores one parsed record.  Errors (FP_EINVAL/FP_ERANGE) describe the record problem without location. */
int fp_prm_score_record(fp_prm *p, const fp_record *rec, fp_prm_result *res);
/* Renders and tokenizes a record as the model sees it (ids malloc'd) with the step-token positions. */
int fp_prm_encode(fp_prm *p, const fp_record *rec, int32_t **ids, int *T, int **positions, int *npos);
/* Scores n records that share a token prefix (Best-of-N: N responses to one question) with the prefix run once:
 * every record is encoded as fp_prm_score_record does, the longest common token prefix (cut before the first
 * read-out position of any record) is prefilled into a KV cache, and each record's suffix runs on that cache
 * truncated back to the prefix.  results[i] equals fp_prm_score_record(recs[i]) up to f32 rounding.  With
 * n == 1 or no common prefix it scores the records one by one.  Errors name the candidate index; results are
 * all freed on failure. */
int fp_prm_score_candidates(fp_prm *p, const fp_record *const *recs, size_t n, fp_prm_result *results);

/* The same PRM encoding without the inference model (training: `fluxprm train`).
 * fp_prm_tokenizer_open is the tokenizer half of fp_prm_open: loads the tokenizer (opts->tokenizer_path, else
 * opts->model_path), checks it against the model's vocab_size, resolves the step token exactly as fp_prm_open
 * does for a per-step head (opts->step_token / step_token_id) into *step_id, and the system prompt
 * (opts->system_mode) into *system (malloc'd, or NULL for none).  Frees nothing of the caller's on failure. */
int fp_prm_tokenizer_open(const fp_prm_opts *opts, int vocab_size, fp_tokenizer **tok, int32_t *step_id,
                          char **system);
/* fp_prm_encode for a per-step head with an already-opened tokenizer: renders rec as PRM ChatML with step_token
 * after each step, tokenizes it, and finds exactly rec->n_steps positions of step_id (else FP_EINVAL);
 * max_tokens > 0 refuses longer records (FP_ERANGE).  *positions has room for n_steps + 1 entries. */
int fp_prm_encode_tokens(const fp_tokenizer *tok, int32_t step_id, const char *step_token, int max_tokens,
                         const fp_record *rec, int32_t **ids, int *T, int **positions, int *npos);
#endif
