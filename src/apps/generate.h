/* Text generation with a Qwen2/Qwen3 causal LM on the KV-cache forward (docs/model.md "Generation"):
 * chat-template rendering, a prefill of the prompt, then one decode step per new token with greedy or
 * seeded temperature / top-k / top-p sampling, eos ids and stop strings.  `fluxprm generate` is a thin CLI
 * over this; the reward server can serve /v1/chat/completions from fp_generate_chat. */
#ifndef FP_APPS_GENERATE_H
#define FP_APPS_GENERATE_H
#include "apps/prm.h"

typedef struct {
    const char *model_path;     /* HF directory or .gguf file; needs lm_head.weight or tied embeddings */
    const char *tokenizer_path; /* NULL = the model directory */
    fp_system_mode system_mode; /* chat records without a system turn: default = the checkpoint template's */
    const char *system;         /* with FP_SYSTEM_TEXT */
    int threads;                /* 0 = OpenMP default */
} fp_gen_opts;
void fp_gen_opts_default(fp_gen_opts *o);

typedef struct {
    int max_new_tokens;        /* default 256 */
    double temperature;        /* default 1.0; 0 = greedy (argmax, lowest id on ties) */
    double top_p;              /* default 1.0 (off) */
    int top_k;                 /* default 0 (off) */
    uint64_t seed;             /* default 0 */
    const char *const *stop;   /* stop strings, checked on the decoded text */
    size_t n_stop;
    int ignore_eos;            /* 1: do not stop at eos ids */
} fp_sample_opts;
void fp_sample_opts_default(fp_sample_opts *o);

enum { FP_FINISH_STOP = 0, FP_FINISH_LENGTH = 1 };
const char *fp_finish_name(int finish); /* "stop" | "length" */

typedef struct {
    char *text;          /* the completion: decoded (special tokens skipped), cut before the first stop string,
                          * invalid UTF-8 replaced by U+FFFD; malloc'd */
    int32_t *tokens;     /* generated ids: an eos that ended generation is not included; a stop string ends
                          * the list at the token that completed it */
    size_t n_tokens;
    int finish;          /* FP_FINISH_STOP (eos or stop string) | FP_FINISH_LENGTH (max_new_tokens) */
    int prompt_tokens;
} fp_completion;
void fp_completion_free(fp_completion *c);

/* The model-level decoder (no generator needed; tests use it on id-only fixtures).  Prefills prompt[T] once and
 * draws n samples, each on its own copy of the prompt's KV cache; sample j draws from
 * fp_rng_seed(seed, record, j) (one 53-bit uniform per sampled token).  tok (may be NULL: no text, no stop
 * strings) decodes the completions; eos[n_eos] end a sample (unless o->ignore_eos).  The samples decode in lockstep:
 * each step is one fp_model_decode_batch over the samples still running.  first_logits (may be NULL)
 * gets sample 0's raw logits of its first n_logits decode steps, [n_logits, vocab_size] (steps not reached are
 * left untouched).  out[n] is filled (free each with fp_completion_free). */
int fp_generate_tokens(fp_model *m, const fp_tokenizer *tok, const int32_t *eos, size_t n_eos, const int32_t *prompt,
                       int T, const fp_sample_opts *o, uint64_t record, int n, fp_completion *out, float *first_logits,
                       int n_logits);

/* Several prompts at once: every sample of every prompt decodes in lockstep (one fp_model_decode_batch per
 * step over all running samples), each on its own KV cache.  out[i * n + j] is sample j of prompts[i]; each
 * prompt may carry its own options (NULL: o).  Results equal separate fp_generate_tokens calls (up to f32
 * rounding of the batched matrix multiplies).  On failure every out entry is freed. */
typedef struct {
    const int32_t *ids;
    int T;
    uint64_t record;            /* seeds its samples: sample j draws from fp_rng_seed(seed, record, j) */
    const fp_sample_opts *opts; /* NULL = the batch's options */
} fp_gen_prompt;
int fp_generate_batch(fp_model *m, const fp_tokenizer *tok, const int32_t *eos, size_t n_eos,
                      const fp_gen_prompt *prompts, int nprompts, const fp_sample_opts *o, int n, fp_completion *out);

typedef struct fp_generator fp_generator;
/* Loads the model and tokenizer, the default system prompt (fp_model_default_system) and the eos ids: config.json
 * eos_token_id, generation_config.json eos_token_id (an id or a list) and tokenizer_config.json eos_token. */
int fp_generator_open(fp_generator **out, const fp_gen_opts *o);
void fp_generator_free(fp_generator *g);
fp_model *fp_generator_model(fp_generator *g);
const fp_tokenizer *fp_generator_tokenizer(const fp_generator *g);
/* The eos ids in use (owned by g), and a way to add one (e.g. --eos-id). */
const int32_t *fp_generator_eos(const fp_generator *g, size_t *n);
int fp_generator_add_eos(fp_generator *g, int32_t id);
/* ChatML with the generation prompt, as Qwen2.5's template renders it:
 *   [<|im_start|>system\n{default system}<|im_end|>\n]  (only when messages[0] is not a system turn)
 *   <|im_start|>{role}\n{content}<|im_end|>\n ...  <|im_start|>assistant\n
 * *text malloc'd. */
int fp_generator_render_chat(const fp_generator *g, const fp_chat_message *msgs, size_t n, char **text);
/* Generation from prompt text (encoded as is, no template) or from chat messages (rendered as above); record
 * seeds the samples as in fp_generate_tokens.  These only read g (model and tokenizer are read-only), so several
 * threads may generate with one generator at once; fp_generator_add_eos must not run concurrently with them. */
int fp_generate_text(fp_generator *g, const char *prompt, const fp_sample_opts *o, uint64_t record, int n,
                     fp_completion *out);
int fp_generate_chat(fp_generator *g, const fp_chat_message *msgs, size_t n_msgs, const fp_sample_opts *o,
                     uint64_t record, int n, fp_completion *out);
/* The token ids generation would start from: prompt text encoded as is, or chat messages rendered as above
 * (ids malloc'd).  With fp_generator_model / fp_generator_tokenizer / fp_generator_eos they feed
 * fp_generate_batch (what `fluxprm generate` does for a group of records). */
int fp_generator_encode_text(const fp_generator *g, const char *prompt, int32_t **ids, int *T);
int fp_generator_encode_chat(const fp_generator *g, const fp_chat_message *msgs, size_t n_msgs, int32_t **ids, int *T);
#endif
