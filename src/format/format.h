/* PRM input formatting: records → (system, question, steps) → the exact ChatML text of the
 * ReasonFlux-PRM / Qwen2.5-Math-PRM convention (spec.md §1.1):
 *   <|im_start|>system\n{SYS}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n
 *   <|im_start|>assistant\n{step_1}<extra_0>...{step_n}<extra_0><|im_end|>\n
 * and thinking↔response step alignment. */
#ifndef FP_FORMAT_H
#define FP_FORMAT_H
#include "base/base.h"
#include <jansson.h>

/* Which steps a thinking + response record contributes. */
typedef enum { FP_STEPS_BOTH = 0, FP_STEPS_THINKING, FP_STEPS_RESPONSE } fp_steps_from;

typedef struct {
    const char *system;        /* system prompt text; NULL = none */
    fp_steps_from steps_from;  /* default FP_STEPS_BOTH: thinking steps, then response steps */
    const char *question_field;/* NULL = auto (question | problem | prompt | instruction) */
    const char *steps_field;   /* NULL = auto (see fp_record_parse) */
} fp_format_opts;

typedef struct {
    char *system;          /* owned copy or NULL */
    char *question;
    char **steps;
    size_t n_steps;
    size_t n_thinking;     /* steps[0..n_thinking) come from the thinking trajectory */
    char *response;        /* the final response text when the record has one (else NULL) */
} fp_record;

/* Splits text on "\n\n"; pieces that are empty or only whitespace are dropped, the others kept verbatim.
 * Returns the number of steps in *n (0 is allowed: the caller decides whether that is an error). */
int fp_split_steps(const char *text, char ***steps, size_t *n);
void fp_free_strings(char **v, size_t n);

/* Builds a record from one JSON object.  Recognised shapes, first match wins:
 *   ProcessBench   {"problem", "steps": [..]}
 *   TRL stepwise   {"prompt", "completions": [..]}
 *   s1K            {"question", "thinking_trajectories": [..] | str, "attempt"}
 *   plain          {"question", "steps": [..]} | {"question", "thinking", "response"} | {"question", "response"}
 *                  where a response holding "<think>...</think>" is split into thinking and response.
 * A "system" string field in the record overrides opts->system.
 * Errors (FP_EINVAL) name the missing or mistyped field. */
int fp_record_parse(fp_record *rec, const json_t *obj, const fp_format_opts *opts);
void fp_record_free(fp_record *rec);

/* Renders the PRM ChatML text with step_token after every step (including the last). */
int fp_render_prm_chatml(const fp_record *rec, const char *step_token, fp_buf *out);
/* Renders "question + completion" (no template) for scalar-head PRMs (ReasonFlux-PRM-1.5B);
 * the completion is the response if present, else the steps joined with "\n\n". */
int fp_render_plain(const fp_record *rec, fp_buf *out);

/* The default system prompt a Qwen-style chat template injects when the conversation has none:
 * the literal '<|im_start|>system\n...<|im_end|>' string in the template source.  *out = NULL when the
 * template injects none.  Jinja string escapes (\n, \', \", \\) are decoded. */
int fp_template_default_system(const char *chat_template, char **out);
/* Reads tokenizer_config.json's chat_template from a model directory (or a .jinja file) and extracts the
 * default system prompt as above. *out = NULL when there is no template or it injects none. */
int fp_model_default_system(const char *path, char **out);

/* Thinking↔response alignment (authors' rule, spec.md §2.1): when the thinking trajectory has more steps
 * (T) than the response (M), surplus thinking steps are merged into the preceding one until T == M.
 * Which boundary to merge is chosen greedily: at each round the adjacent pair (i, i+1) whose merge gives
 * the largest gain in  Σ_j sim(thinking_j, response_j)  is merged (ties: the last such pair).
 * sim(a, b, ctx) scores two texts; NULL uses fp_lexical_similarity.  When T <= M nothing is merged.
 * On return *merged holds the new thinking steps (T' = min(T, M)) and group_start[j] the index of the
 * first original thinking step in merged step j (caller frees both). */
typedef double (*fp_similarity_fn)(const char *a, const char *b, void *ctx);
int fp_align_thinking(char **thinking, size_t T, char **response, size_t M, fp_similarity_fn sim,
                      void *ctx, char ***merged, size_t *n_merged, size_t **group_start);
/* Jaccard similarity of the two texts' lower-cased alphanumeric word sets (0 when both are empty). */
double fp_lexical_similarity(const char *a, const char *b, void *ctx);

#endif
