/* Building blocks of `fluxprm curate` (spec §2.1 step targets): the encoder Φ (pooled, L2-normalised
 * embeddings from any Qwen2/Qwen3 trunk), a per-record text→embedding cache that backs the similarity
 * callback of the thinking↔response merge (fp_align_thinking), a seeded streaming reservoir of earlier
 * records' step embeddings (the coherence negatives) and the per-record step targets.
 * The formulas and rules are in docs/reward.md ("curate").  Library code: nothing prints or exits. */
#ifndef FP_REWARD_CURATE_H
#define FP_REWARD_CURATE_H
#include "base/base.h"

/* Embeds one NUL-terminated text into out[dim] (L2-normalised).  Returns FP_OK or an FP_E* status. */
typedef int (*fp_embed_fn)(void *ctx, const char *text, float *out);

/* ---- encoder Φ: fp_model_load + fp_tokenizer_load + fp_model_embed */
typedef struct fp_encoder fp_encoder;
typedef struct {
    const char *model_path;     /* HF directory (config.json + safetensors) or .gguf; any head is ignored */
    const char *tokenizer_path; /* NULL = the model directory */
    int pooling;                /* FP_POOL_LAST (default) or FP_POOL_MEAN */
    int max_tokens;             /* longer texts keep their first max_tokens tokens (counted); 0 = the
                                 * model's max_position_embeddings */
    int threads;                /* 0 = OpenMP default */
} fp_encoder_opts;
void fp_encoder_opts_default(fp_encoder_opts *o);
int fp_encoder_open(fp_encoder **out, const fp_encoder_opts *o);
void fp_encoder_free(fp_encoder *e);
size_t fp_encoder_dim(const fp_encoder *e);
/* An fp_embed_fn (ctx = the encoder).  Empty texts (no tokens) are FP_EINVAL. */
int fp_encoder_embed(void *encoder, const char *text, float *out);
typedef struct { long texts, tokens, truncated; } fp_encoder_stats;
void fp_encoder_get_stats(const fp_encoder *e, fp_encoder_stats *s);

/* ---- text → embedding cache (one record at a time; cleared between records) */
typedef struct fp_embed_cache fp_embed_cache;
int fp_embed_cache_new(fp_embed_cache **out, size_t dim, fp_embed_fn fn, void *ctx);
void fp_embed_cache_free(fp_embed_cache *c);
/* *out points into the cache, valid until the next get or clear (rows move as the cache grows).  The first
 * failure is remembered (see _error). */
int fp_embed_cache_get(fp_embed_cache *c, const char *text, const float **out);
/* Forgets every text and the remembered error; counters keep running. */
void fp_embed_cache_clear(fp_embed_cache *c);
/* FP_OK, or the status of the first failed embedding since the last clear (message in fp_last_error()
 * at the time it failed; fp_embed_cache_error_message gives it later). */
int fp_embed_cache_error(const fp_embed_cache *c);
const char *fp_embed_cache_error_message(const fp_embed_cache *c);
void fp_embed_cache_stats(const fp_embed_cache *c, long *hits, long *misses);
/* fp_similarity_fn for fp_align_thinking (ctx = an fp_embed_cache): cos(Φ(a), Φ(b)).  A failed embedding
 * gives 0 and is remembered in the cache (check fp_embed_cache_error afterwards). */
double fp_embed_similarity(const char *a, const char *b, void *cache);

/* The merge rule of spec §2.1 with embedding similarity: when T > M > 0, fp_align_thinking with
 * fp_embed_similarity; otherwise the thinking steps are kept as they are (groups 0..T-1).  Returns the
 * embedding error, if any, instead of a merge computed from failed embeddings. */
int fp_curate_align(fp_embed_cache *c, char **thinking, size_t T, char **response, size_t M, char ***merged,
                    size_t *n_merged, size_t **group_start);

/* ---- streaming reservoir of step embeddings (coherence negatives) */
/* Algorithm R over the stream of every step of every earlier record, in input order.  Step number n
 * (0-based over the whole stream) goes to slot n while n < cap; after that j = fp_rng_below(rng, n + 1)
 * with rng = fp_rng_seed(seed, FP_RESERVOIR_STREAM, n), and it replaces slot j when j < cap.  The decision
 * depends only on (seed, n), so it can be replayed from step counts alone (resume). */
#define FP_RESERVOIR_STREAM UINT64_MAX
typedef struct fp_reservoir fp_reservoir;
int fp_reservoir_new(fp_reservoir **out, size_t cap, size_t dim, uint64_t seed);
void fp_reservoir_free(fp_reservoir *r);
/* Decides where the next stream step goes: its slot, or -1 when it is dropped.  Advances the stream. */
long fp_reservoir_offer(fp_reservoir *r);
/* Stores v (dim floats) in a slot returned by fp_reservoir_offer. */
void fp_reservoir_put(fp_reservoir *r, size_t slot, const float *v);
/* offer + put for n rows. */
void fp_reservoir_add(fp_reservoir *r, const float *rows, size_t n);
size_t fp_reservoir_size(const fp_reservoir *r);   /* filled slots: min(cap, seen) */
uint64_t fp_reservoir_seen(const fp_reservoir *r); /* steps offered so far */
const float *fp_reservoir_rows(const fp_reservoir *r);

/* ---- step targets of one record */
typedef struct {
    double tau;     /* InfoNCE temperature (> 0) */
    size_t k_neg;   /* negatives per step; 0 = no coherence */
    uint64_t seed;  /* negatives seed */
} fp_curate_coh_opts;
/* The record's T step embeddings steps[T·dim], Φ(question), Φ(a_1..a_M) (M may be 0: no alignment),
 * judge scores qual[T] (NULL / NAN = missing).  Coherence negatives: the k_neg rows drawn by
 * fp_reward_sample_negatives(seed, record, t, size + T, size, size + T, k_neg) from the pool
 * "reservoir rows ++ this record's rows" — i.e. only from the reservoir (earlier records).  When the
 * reservoir holds fewer than k_neg rows coherence is missing (NAN) for the whole record and *coh_skipped
 * (may be NULL) is set to 1.  Equal to fp_reward_trajectory on that concatenated pool.  out[T], raw_align[T],
 * raw_coh[T] (the raw arrays may be NULL). */
int fp_curate_step_targets(const fp_reservoir *res, const fp_curate_coh_opts *o, uint64_t record, const float *steps,
                           size_t T, const float *question, const float *response, size_t M, const double *qual,
                           fp_step_reward *out, double *raw_align, double *raw_coh, int *coh_skipped);
#endif
