/* fluxprm — a native engine and toolkit for trajectory-aware process reward models (ReasonFlux-PRM).
 *
 * Conventions: every function that can fail returns an int status (FP_OK = 0, else an FP_E* code) and
 * records a message retrievable with fp_last_error() (per thread).  Nothing here prints or exits.
 * Handles are opaque; each has a matching *_free that accepts NULL. */
#ifndef FLUXPRM_H
#define FLUXPRM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- errors */
enum {
    FP_OK = 0,
    FP_EINVAL = 1,      /* bad argument or bad input data */
    FP_EIO = 2,         /* file system / network failure */
    FP_EPARSE = 3,      /* malformed file or record */
    FP_ENOMEM = 4,
    FP_EUNSUPPORTED = 5,/* valid but not supported (yet) */
    FP_ERANGE = 6,      /* value out of the allowed range (e.g. sequence too long) */
    FP_ESTATE = 7       /* operation not valid in the current state */
};
/* Message of the last failure on this thread ("" if none). */
const char *fp_last_error(void);
/* Status code of the last failure on this thread. */
int fp_last_error_code(void);
/* Human name of a status code. */
const char *fp_status_name(int status);
const char *fp_version(void);

/* ---------------------------------------------------------------- JSONL streaming */
/* Reads a JSONL file (or stdin) one record at a time in constant memory (plus the longest line).  A file
 * that starts with '[' is read as a JSON array of records instead (loaded whole); then "line numbers" are
 * 1-based element numbers. */
typedef struct fp_jsonl_reader fp_jsonl_reader;
/* path "-" or NULL reads stdin. */
int fp_jsonl_open(fp_jsonl_reader **out, const char *path);
/* Reads the next non-blank line into *line (owned by the reader, valid until the next call) and sets *len.
 * Returns FP_OK, or FP_ERANGE at end of input, or FP_EIO. */
int fp_jsonl_next_line(fp_jsonl_reader *r, const char **line, size_t *len);
/* 1-based line number of the line last returned. */
long fp_jsonl_line_number(const fp_jsonl_reader *r);
const char *fp_jsonl_path(const fp_jsonl_reader *r);
void fp_jsonl_close(fp_jsonl_reader *r);

/* Output file written atomically: records go to "<path>.partial" (locked against a second writer) and the
 * file is renamed to <path> on commit, so <path> only ever holds a finished output.  With resume, the
 * complete lines of an existing "<path>.partial" (or of a finished <path>) are kept — a torn last line from a
 * killed run is cut — and fp_outfile_resumed_lines() says how many, so the caller can skip that many
 * input records.  path "-" or NULL writes stdout directly (no atomicity, no resume). */
typedef struct fp_outfile fp_outfile;
int fp_outfile_open(fp_outfile **out, const char *path, int resume);
FILE *fp_outfile_stream(fp_outfile *o);
long fp_outfile_resumed_lines(const fp_outfile *o);
/* Flushes, fsyncs and renames into place. Frees o. */
int fp_outfile_commit(fp_outfile *o);
/* Discards the partial file, leaving any existing <path> untouched. Frees o. */
void fp_outfile_abort(fp_outfile *o);
/* Stops writing but keeps "<path>.partial" so a later run can --resume (after a runtime error). Frees o. */
void fp_outfile_keep_partial(fp_outfile *o);

/* ---------------------------------------------------------------- progress */
typedef struct fp_progress fp_progress;
/* total may be 0 when unknown.  Draws on out (the CLI passes stderr when it is a TTY and --quiet is not
 * given); out NULL draws nothing. */
fp_progress *fp_progress_new(const char *label, long total, FILE *out);
/* Adds done records and tokens; redraws at most ~10x per second. */
void fp_progress_add(fp_progress *p, long records, long tokens);
void fp_progress_finish(fp_progress *p);

/* ---------------------------------------------------------------- tokenizer */
/* Byte-exact HF `tokenizers` BPE (Qwen2 family) from tokenizer.json (docs/tokenizer.md).  Encoding equals
 * HF Tokenizer.encode(text, add_special_tokens=False).ids: added tokens (special or not) found in the raw
 * text map to their ids; no BOS/EOS is added.  A loaded tokenizer is immutable apart from
 * fp_tokenizer_set_step_token (call that before sharing it); encode/decode are thread-safe. */
typedef struct fp_tokenizer fp_tokenizer;
/* path: a directory holding tokenizer.json (+ optional tokenizer_config.json), or a tokenizer.json file
 * (a tokenizer_config.json next to it is read too). */
int fp_tokenizer_load(fp_tokenizer **out, const char *dir_or_file);
void fp_tokenizer_free(fp_tokenizer *tok);
/* Encodes len bytes of UTF-8 text (NUL bytes allowed) into *ids (malloc'd, caller frees; NULL when *n is 0).
 * Invalid UTF-8 gives FP_EINVAL with a message naming the byte offset. */
int fp_tokenizer_encode(const fp_tokenizer *tok, const char *text, size_t len, int32_t **ids, size_t *n);
enum { FP_TOKENIZE_NO_ADDED = 1 /* treat added/special token strings as plain text */ };
int fp_tokenizer_encode_ex(const fp_tokenizer *tok, const char *text, size_t len, int flags, int32_t **ids,
                           size_t *n);
/* Concatenated bytes of the tokens (byte-level decoded; added tokens give their content) into *text
 * (malloc'd and NUL-terminated, caller frees).  The bytes are not necessarily valid UTF-8 when ids cut a
 * character.  skip_special drops special added tokens.  An unknown id gives FP_ERANGE naming its index. */
int fp_tokenizer_decode(const fp_tokenizer *tok, const int32_t *ids, size_t n, int skip_special, char **text,
                        size_t *len);
/* Id of a token by its string form (added-token content, or the vocab form such as "Ġthe"); -1 if none. */
int32_t fp_tokenizer_token_to_id(const fp_tokenizer *tok, const char *token);
/* String form of an id (owned by the tokenizer), or NULL when the id is unused/out of range. */
const char *fp_tokenizer_id_to_token(const fp_tokenizer *tok, int32_t id);
/* 1 when id is a special added token. */
int fp_tokenizer_is_special(const fp_tokenizer *tok, int32_t id);
/* Number of ids (highest id + 1, added tokens included). */
size_t fp_tokenizer_vocab_size(const fp_tokenizer *tok);
/* Makes `token` (e.g. "<extra_0>") a special added token: with id >= 0 that id is renamed to it (e.g. 151651,
 * which stock Qwen2.5 calls "<|quad_end|>"); with id -1 an existing token of that name is kept, else it gets
 * a new id (vocab size).  Afterwards text containing `token` encodes it as that id.  Returns the id via
 * *out_id (may be NULL).  Not thread-safe: call before encoding from several threads. */
int fp_tokenizer_set_step_token(fp_tokenizer *tok, const char *token, int32_t id, int32_t *out_id);

/* ---------------------------------------------------------------- model */
/* A Qwen2/Qwen3 checkpoint (config.json + safetensors, single or sharded) with its head, detected from the
 * tensor names.  Scoring is a causal prefill over the whole sequence: the LM head is never run. */
typedef struct fp_model fp_model;

typedef enum {
    FP_HEAD_NONE = 0,      /* trunk only (CausalLM / bare model): hidden states and embeddings */
    FP_HEAD_PRM = 1,       /* Qwen2ForProcessRewardModel: score.0 Linear(H,H) -> ReLU -> score.2 Linear(H,2) */
    FP_HEAD_TOKEN_CLS = 2, /* *ForTokenClassification: score Linear(H,num_labels) with bias */
    FP_HEAD_SEQ_CLS = 3,   /* *ForSequenceClassification: score Linear(H,num_labels), no bias */
    FP_HEAD_SCALAR = 4     /* ReasonFlux-PRM-1.5B: reward_head Linear(H,1) (+ sigmoid), from reward_head.* */
} fp_head_kind;
const char *fp_head_name(int head);

typedef struct {
    const char *architecture, *model_type; /* owned by the model */
    int head;                              /* fp_head_kind */
    int num_labels;                        /* outputs of the head (1 for FP_HEAD_SCALAR, 0 for none) */
    int hidden_size, intermediate_size, num_layers, num_heads, num_kv_heads, head_dim, vocab_size;
    int max_position_embeddings, tie_word_embeddings, has_lm_head;
    double rope_theta, rms_norm_eps;
    const char *weight_dtype; /* dtype of the projection weights: "F32", "BF16", "F16" */
    int bos_token_id, eos_token_id, pad_token_id; /* -1 when absent */
} fp_model_info;

/* Loads <dir>/config.json and the weights next to it (model.safetensors or model.safetensors.index.json),
 * plus reward_head.safetensors / reward_head.pt when present and no score head is in the checkpoint.
 * Validates every tensor name and shape against the config.  A path ending in ".gguf" loads that GGUF file
 * (config from its metadata; head tensors inside it). */
int fp_model_load(fp_model **out, const char *dir);
void fp_model_free(fp_model *m);
void fp_model_get_info(const fp_model *m, fp_model_info *info);
/* Precision of the GEMMs.  FP_PRECISION_EXACT (the default) keeps activations in f32 on every kernel (bf16/q8
 * weights are widened), matching HF run in float32 on the same weights to ~1e-6.  FP_PRECISION_FAST lets the
 * fastest kernels (AMX-BF16, vdpbf16ps, VNNI) round activations to bf16/int8, and on AVX-512 SwiGLU uses a
 * shorter kernel (within 12 ulp of the exact one): much faster on BF16/Q8_0 weights, step rewards within ~1e-2
 * (docs/performance.md). */
enum { FP_PRECISION_EXACT = 0, FP_PRECISION_FAST = 1 };
void fp_model_set_precision(fp_model *m, int precision);
/* Threads used by the forward pass (0 = the OpenMP default). */
void fp_model_set_threads(fp_model *m, int nthreads);

/* Final hidden states (after the last RMSNorm) of ids[T] at positions[npos] (each in [0,T)) into
 * out[npos, hidden_size]; positions NULL means all T rows (npos ignored). */
int fp_model_hidden_states(fp_model *m, const int32_t *ids, int T, const int *positions, int npos, float *out);
/* Raw head logits at positions: out[npos, num_labels]. */
int fp_model_head_logits(fp_model *m, const int32_t *ids, int T, const int *positions, int npos, float *out);
/* Scores at positions: P(class 1) = softmax(logits)[1] for heads with >= 2 labels (the PRM step reward at each
 * <extra_0>), sigmoid(logit) for one-output heads.  out_probs[npos]. */
int fp_model_score_positions(fp_model *m, const int32_t *ids, int T, const int *positions, int npos,
                             float *out_probs);
/* The score at the last token (ReasonFlux-PRM-1.5B reward, or P(class 1) at the last token). */
int fp_model_score_last(fp_model *m, const int32_t *ids, int T, float *out);

enum { FP_POOL_LAST = 0, FP_POOL_MEAN = 1 };
/* L2-normalised pooled final hidden state (last token or mean over all tokens): out[hidden_size]. */
int fp_model_embed(fp_model *m, const int32_t *ids, int T, int pooling, float *out);

/* Several independent sequences, each scored like fp_model_score_positions.  Short sequences are packed into
 * shared forwards of up to 4096 tokens (each attends only to itself; positions restart at 0), which keeps the
 * matrix multiplies efficient; results equal separate calls up to f32 rounding. */
typedef struct {
    const int32_t *ids;
    int T;
    const int *positions; /* NULL: the last token (npos ignored, one output) */
    int npos;
    float *out_probs;  /* [npos] P(class 1) or sigmoid, or NULL */
    float *out_logits; /* [npos, num_labels] raw head logits, or NULL */
} fp_model_seq;
int fp_model_score_batch(fp_model *m, fp_model_seq *seqs, int nseq);

/* KV cache of one sequence (docs/model.md "KV cache"): per layer the keys (after q/k-norm and RoPE) and values
 * of tokens 0..n-1, f32, grown on demand up to max_tokens.  A cache belongs to one model and one thread at a
 * time; several caches may share a model concurrently. */
typedef struct fp_kv_cache fp_kv_cache;
/* NULL on failure (fp_last_error says why).  max_tokens >= 1. */
fp_kv_cache *fp_kv_cache_new(fp_model *m, int max_tokens);
void fp_kv_cache_free(fp_kv_cache *c);
/* Tokens held. */
int fp_kv_cache_len(const fp_kv_cache *c);
int fp_kv_cache_max_tokens(const fp_kv_cache *c);
/* Forgets everything after the first n tokens (0 <= n <= len), so a shared prefix can take another suffix. */
int fp_kv_cache_truncate(fp_kv_cache *c, int n);
/* dst takes a copy of src's tokens (same model; dst's max_tokens must hold them). */
int fp_kv_cache_copy(fp_kv_cache *dst, const fp_kv_cache *src);
/* A new cache holding a copy of src (same max_tokens), or NULL. */
fp_kv_cache *fp_kv_cache_fork(const fp_kv_cache *src);
/* Appends ids[T] at positions len..len+T-1 (a chunked prefill, or T = 1 for a decode step) and reads out the
 * new tokens' rows rows[nrows] (indices into ids, each in [0,T)): hidden (may be NULL) gets the final
 * normalised hidden states [nrows, H], logits (may be NULL) the LM-head logits [nrows, vocab_size] (needs
 * lm_head.weight or tied embeddings, else FP_ESTATE).  nrows 0 only fills the cache (the last layer then
 * computes just K and V).  FP_ERANGE when len + T exceeds max_tokens; on any error the cache keeps its
 * previous length.  Results equal fp_model_hidden_states over the whole sequence up to f32 rounding. */
int fp_model_forward_cached(fp_model *m, fp_kv_cache *c, const int32_t *ids, int T, const int *rows, int nrows,
                            float *hidden, float *logits);
/* nseg independent continuations ("branches", e.g. the N answers to one cached question) in one pass: branch
 * s is ids[seg_off[s] .. seg_off[s+1]-1] (seg_off[0] = 0, non-empty branches, seg_off[nseg] <= 2048 tokens in
 * all when nseg > 1), at positions len.. of the cache, attending to the cached tokens and to its own tokens only.
 * The projections run once over all branches' rows; the cache keeps its length (nothing is appended; its
 * max_tokens must hold len + the longest branch).  hidden[nrows, H] gets the final normalised hidden states of
 * rows (indices into ids, any order).  Results equal fp_model_forward_cached of each branch after
 * fp_kv_cache_truncate to len, up to f32 rounding. */
int fp_model_forward_branches(fp_model *m, fp_kv_cache *c, const int32_t *ids, const int *seg_off, int nseg,
                              const int *rows, int nrows, float *hidden);
/* One decode step for nseq independent sequences at once (e.g. the N samples of one prompt, or several
 * requests): appends ids[s] to caches[s] (distinct caches of model m, each with room for one more token) and
 * reads that token's final hidden state hidden[nseq, H] and/or LM-head logits[nseq, vocab_size] (either may be
 * NULL).  The projections run as one matrix multiply over the nseq rows, so the weights are read once per step
 * for all sequences; attention runs per sequence over its own cache.  Results equal nseq separate
 * fp_model_forward_cached(T = 1) calls up to f32 rounding.  On error no cache changes length. */
int fp_model_decode_batch(fp_model *m, fp_kv_cache *const *caches, const int32_t *ids, int nseq, float *hidden,
                          float *logits);

/* ---------------------------------------------------------------- verify */
/* Math answer verification (docs/verify.md).  All functions are thread-safe (no global mutable state). */
/* Extracts the final answer from a solution text.  *answer gets a malloc'd string (caller frees) or NULL
 * when nothing answer-like is found; *rule (may be NULL) gets a static name of the rule that fired:
 * "boxed" (last \boxed{..}/\fbox{..}/\boxed x), "gsm8k_hash" (#### n), "answer_is" ("The answer is x",
 * "A: x", "Answer: x"), "bare" (the text itself is a short answer), "last_number", or "none".
 * Returns FP_OK, FP_EINVAL (text NULL) or FP_ENOMEM. */
int fp_verify_extract(const char *text, char **answer, const char **rule);
/* 1 when the two final answers are mathematically equivalent (after LaTeX normalisation, numeric comparison
 * with relative tolerance 1e-6 / absolute 1e-9, tuple/set/interval structure, and randomised numeric
 * identity testing of expressions), else 0.  NULL arguments give 0. */
int fp_verify_equal(const char *pred, const char *gold);
/* Extracts the answer from text (a full solution or a bare answer) and from gold (a bare answer, or a full
 * reference solution such as GSM8K's "... #### 18"), then compares.  *correct gets 1/0; extracted
 * (may be NULL) gets the malloc'd predicted answer or NULL; rule (may be NULL) as in fp_verify_extract. */
int fp_verify_check(const char *text, const char *gold, int *correct, char **extracted, const char **rule);

/* ---------------------------------------------------------------- reward */
/* Reward design (spec §2): an OpenAI-compatible chat client, the LLM judge, and the pure target math.
 * See docs/reward.md for every formula, default and file format. */

/* --- OpenAI-compatible chat client (POST {base_url}/v1/chat/completions, curl multi) */
typedef struct fp_openai_client fp_openai_client;
typedef struct {
    const char *base_url;        /* e.g. "http://127.0.0.1:8080"; "/v1/chat/completions" is appended */
    const char *api_key_env;     /* NAME of the env var holding the key (default "OPENAI_API_KEY"); unset or
                                  * empty = no Authorization header.  The key is never put in any message. */
    const char *cache_dir;       /* response cache directory (created), or NULL for none */
    int concurrency;             /* requests in flight at once (default 4) */
    int max_retries;             /* retries per request after the first attempt (default 6) */
    double timeout_s;            /* whole-request timeout per attempt (default 120) */
    double connect_timeout_s;    /* default 10 */
    double backoff_base_s;       /* first retry delay before jitter (default 1); doubles per retry */
    double backoff_max_s;        /* cap of the exponential delay (default 60) */
    double retry_after_max_s;    /* longest Retry-After honoured (default 300); longer values are capped */
    uint64_t jitter_seed;        /* seeds the jitter (default 0): same seed, same delays */
} fp_openai_opts;
void fp_openai_opts_default(fp_openai_opts *o);

typedef struct {
    const char *role;            /* "system", "user", "assistant" */
    const char *content;
} fp_chat_message;

typedef struct {
    const char *model;
    const fp_chat_message *messages;
    size_t n_messages;
    double temperature;          /* < 0 = omitted */
    long max_tokens;             /* <= 0 = omitted */
    int64_t seed;                /* < 0 = omitted */
    const char *response_format; /* JSON object text sent as "response_format", or NULL */
} fp_chat_request;
/* temperature 0, max_tokens 512, seed 0, no response_format. */
void fp_chat_request_init(fp_chat_request *r);

typedef struct {
    int status;                  /* FP_OK, or the FP_E* code of this request's failure */
    long http_status;            /* last HTTP status seen (0: none, e.g. connection refused or cache hit) */
    char *content;               /* choices[0].message.content (malloc'd), NULL on failure */
    char *finish_reason;         /* malloc'd or NULL */
    char *error;                 /* malloc'd message on failure (server's error.message when it sent one) */
    int from_cache;              /* 1 when answered from the cache (no network) */
    int attempts;                /* HTTP attempts made for this request (0 for a cache hit) */
    long prompt_tokens, completion_tokens;  /* from "usage" (also reported for cache hits) */
} fp_chat_response;
void fp_chat_response_clear(fp_chat_response *r);

typedef struct {
    long requests;               /* requests asked for (cache hits included) */
    long cache_hits;
    long attempts;               /* HTTP requests sent (first tries and retries) */
    long retries;                /* re-sends after 429/5xx/408/connection error/timeout */
    long successes;              /* 2xx answers received and parsed ("paid" calls) */
    long failures;               /* requests given up (non-retryable error or retries exhausted) */
    long prompt_tokens, completion_tokens;  /* summed over successes (not cache hits) */
} fp_openai_stats;

int fp_openai_client_new(fp_openai_client **out, const fp_openai_opts *opts);
void fp_openai_client_free(fp_openai_client *c);
/* Runs n requests, up to opts.concurrency at a time, filling out[i] for reqs[i] (out[] is overwritten;
 * clear each with fp_chat_response_clear).  Returns FP_OK when every request succeeded, else the status of
 * the first failed one (message names its index); every out[i] is filled either way.  Thread-safe for
 * different clients; one client runs one batch at a time. */
int fp_openai_chat_batch(fp_openai_client *c, const fp_chat_request *reqs, size_t n, fp_chat_response *out);
/* Counters since the client was made (safe to read from another thread during a batch). */
void fp_openai_client_stats(const fp_openai_client *c, fp_openai_stats *s);
/* Canonical request JSON (sorted keys, compact) and its SHA-256 hex digest, the cache key. */
int fp_chat_request_canonical(const fp_chat_request *r, char **json);
int fp_chat_request_key(const fp_chat_request *r, char hex[65]);
/* SHA-256 of data as 64 lowercase hex digits + NUL. */
void fp_sha256_hex(const void *data, size_t n, char hex[65]);

/* --- LLM judge: step quality and trajectory templates */
typedef struct fp_judge fp_judge;
enum {
    FP_JUDGE_FORMAT_AUTO = 0,    /* json_schema; on HTTP 400 fall back to json_object, then plain text */
    FP_JUDGE_FORMAT_JSON_SCHEMA, FP_JUDGE_FORMAT_JSON_OBJECT, FP_JUDGE_FORMAT_TEXT
};
typedef struct {
    const char *model;                  /* judge model name (required) */
    const char *step_prompt_path;       /* default "prompts/judge_step.txt" */
    const char *template_prompt_path;   /* default "prompts/judge_template.txt" */
    double temperature;                 /* default 0 */
    long max_tokens;                    /* default 64 for scores; templates use template_max_tokens */
    long template_max_tokens;           /* default 1024 */
    int64_t seed;                       /* default 0 (< 0 omits it) */
    int format;                         /* FP_JUDGE_FORMAT_* (default AUTO) */
    int integer_scores;                 /* 1: schema asks for an integer 0..10 (default 0: number 0..10) */
} fp_judge_opts;
void fp_judge_opts_default(fp_judge_opts *o);

typedef struct {
    const char *question;               /* x */
    const char *const *steps;           /* thinking steps s_1..s_T */
    size_t n_steps;
    const char *response;               /* final response a */
} fp_judge_traj;

typedef struct {
    double score;                       /* judge score in [0, 10]; NAN on failure */
    int status;                         /* FP_OK or FP_E* */
    char *error;                        /* malloc'd per-record message on failure */
} fp_judge_score;

/* The client is borrowed (must outlive the judge).  Loads and checks both prompt files. */
int fp_judge_new(fp_judge **out, fp_openai_client *client, const fp_judge_opts *opts);
void fp_judge_free(fp_judge *j);
/* Scores every step of n trajectories in one concurrent batch: out has Σ trajs[i].n_steps entries in
 * trajectory-then-step order.  Returns FP_OK when all were scored, else the first failure's status. */
int fp_judge_step_scores(fp_judge *j, const fp_judge_traj *trajs, size_t n, fp_judge_score *out);
/* Trajectory-level reasoning templates: out[i] gets a malloc'd template (NULL on failure), status[i] (may be
 * NULL) its status.  Returns FP_OK when all succeeded. */
int fp_judge_templates(fp_judge *j, const fp_judge_traj *trajs, size_t n, char **out, int *status);
/* Template-guided rollouts (spec §2.2 step 2): n answers per question from a policy model given the judge's
 * template.  Rollout j is sent with seed + j, so each is a distinct request with its own cache entry. */
typedef struct {
    const char *model;                  /* policy model name (required) */
    const char *prompt_path;            /* default "prompts/rollout.txt" ({question}, {template}) */
    int n;                              /* rollouts per question (default 4) */
    double temperature;                 /* default 0.7 */
    long max_tokens;                    /* default 2048 */
    int64_t seed;                       /* default 0; must be >= 0 */
} fp_rollout_opts;
void fp_rollout_opts_default(fp_rollout_opts *o);
/* out[i * n + j] gets a malloc'd answer (NULL on failure), status[i * n + j] (may be NULL) its status.
 * Returns FP_OK when all succeeded, else the first failure's status.  Correctness (r_final) is the
 * caller's: check each answer, then fp_reward_final. */
int fp_template_rollouts(fp_openai_client *c, const fp_rollout_opts *o, const char *const *questions,
                         const char *const *templates, size_t n_questions, char **out, int *status);
/* The format actually in use after any fallback (FP_JUDGE_FORMAT_*). */
int fp_judge_format(const fp_judge *j);
void fp_judge_score_clear(fp_judge_score *s);
/* Strict score parsing of a judge reply: a JSON object with a numeric "score" in [0, 10] (in TEXT format a
 * JSON object embedded in prose or a ``` fence is accepted).  FP_EPARSE / FP_ERANGE with a clear message. */
int fp_judge_parse_score(const char *content, int allow_embedded, double *score);
/* Substitutes {name} placeholders (only the names given; other braces stay) in one pass. */
int fp_prompt_render(const char *tmpl, const char *const *names, const char *const *values, size_t n,
                     char **out);

/* --- target math (pure functions) */
/* Cosine similarity; 0 when either vector has zero norm. */
double fp_cosine(const float *a, const float *b, size_t dim);
/* InfoNCE coherence: log[ exp(cos(prev,pos)/tau) / (exp(cos(prev,pos)/tau) + Σ_j exp(cos(prev,neg_j)/tau)) ]
 * (the positive is in the denominator; the result is a log-probability in (-inf, 0]).  negs: k rows of dim. */
int fp_reward_coherence(const float *prev, const float *pos, const float *negs, size_t k, size_t dim,
                        double tau, double *log_prob);
/* Splitmix64-based reproducible RNG. */
typedef struct { uint64_t state; } fp_rng;
/* Seeds from (seed, record, step): state = mix(mix(mix(seed) ^ record) ^ step) — see docs/reward.md. */
void fp_rng_seed(fp_rng *r, uint64_t seed, uint64_t record, uint64_t step);
uint64_t fp_rng_next(fp_rng *r);
/* Uniform in [0, m): (next * m) >> 64. */
uint64_t fp_rng_below(fp_rng *r, uint64_t m);
/* Draws k distinct negative indices from a pool of pool_n steps, excluding the current trajectory's own
 * rows [excl_lo, excl_hi) (pool rows are grouped by trajectory).  FP_ERANGE when fewer than k remain. */
int fp_reward_sample_negatives(uint64_t seed, uint64_t record, uint64_t step, size_t pool_n, size_t excl_lo,
                               size_t excl_hi, size_t k, size_t *out_idx);
/* Normalised components in [0,1]: align (cos+1)/2; coh exp(log_prob); qual score/10. */
typedef struct { double align, coh, qual, mixed; } fp_step_reward;
/* Softmax-weighted mix r = Σ_k softmax(c)_k · c_k over the non-NaN entries of c; NAN when none. */
double fp_reward_mix(const double *c, size_t k);
/* All three components (any may be NAN = missing) → normalised values + mix. */
void fp_reward_step(double cos_align, double coh_log_prob, double qual_score, fp_step_reward *out);
/* r_final = fraction of n rollouts that are correct (correct[i] != 0); NAN when n == 0. */
double fp_reward_final(const int *correct, size_t n);

/* All step targets of one trajectory (what `curate` needs once Φ exists).  The pool holds the embeddings of
 * every thinking step of every trajectory, pool_n rows of dim floats, grouped by trajectory; this trajectory's
 * T steps are rows [lo, lo + T) and its index in the input is `record` (seeds the negatives).
 *   question: Φ(x) (prev of step 1); response: Φ(a_1..a_M), n_resp rows (alignment is by index: steps with
 *   t >= n_resp get NAN alignment); qual: T judge scores in [0, 10] (NULL or NAN entries = missing).
 * out[t] receives the normalised components and the mix; raw_align / raw_coh (each may be NULL) the cosine and
 * the InfoNCE log-probability.  FP_ERANGE when the pool has fewer than k_neg rows outside the trajectory. */
typedef struct {
    const float *pool;
    size_t pool_n, dim;
    double tau;          /* InfoNCE temperature (> 0) */
    size_t k_neg;        /* negatives per step */
    uint64_t seed;       /* negatives seed */
} fp_step_pool;
int fp_reward_trajectory(const fp_step_pool *p, uint64_t record, size_t lo, size_t n_steps, const float *question,
                         const float *response, size_t n_resp, const double *qual, fp_step_reward *out,
                         double *raw_align, double *raw_coh);

#ifdef __cplusplus
}
#endif
#endif
