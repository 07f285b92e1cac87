/* The training driver behind `fluxprm train`: JSONL targets → tokenized examples (rendered exactly like
 * `fluxprm score` renders them), a deterministic loop over the training core (src/train/train.h) with gradient
 * accumulation, AdamW, schedule and clipping, and HF-compatible checkpoints with an atomically swapped
 * training-state directory for --resume.  See docs/training.md ("fluxprm train").
 *
 * Nothing here prints: progress and events go to the caller's callbacks. */
#ifndef FP_TRAIN_TRAINER_H
#define FP_TRAIN_TRAINER_H
#include "apps/prm.h"
#include "train/train.h"

enum { FPT_LOSS_MSE = 0, /* ReasonFlux joint objective on "step_targets" / "final_target" */
       FPT_LOSS_CE = 1,  /* hard-label cross-entropy on "step_labels" */
       FPT_LOSS_LM = 2   /* next-token cross-entropy on the assistant turns of "messages" (SFT) */ };

/* One tokenized training example. */
typedef struct {
    int32_t *tokens;
    int T;
    int *step_pos;      /* [n_steps] positions of the step token */
    int n_steps;
    float *step_target; /* [n_steps] (MSE) */
    int *step_label;    /* [n_steps] (CE) */
    float final_target; /* NaN: none */
    int *lm_targets;    /* [T] (LM): tokens[t+1] inside assistant turns, else -1 */
    long line;          /* 1-based line of the record in the data file */
} fpt_example;

typedef struct {
    fpt_example *ex;
    size_t n;
    long skipped; /* bad records dropped with skip_bad */
    long tokens;  /* sum of T */
} fpt_dataset;

/* Reads a targets / SFT JSONL file (see docs/training.md for the record shapes).  tok, step_id and system come
 * from fp_prm_tokenizer_open.  A bad record is an error naming "path:line: ..." unless skip_bad, which drops it;
 * on_skip (may be NULL) then gets the message. */
int fpt_dataset_load(fpt_dataset *d, const char *path, int loss, const fp_tokenizer *tok, int32_t step_id,
                     const char *step_token, const char *system, int max_tokens, int skip_bad,
                     void (*on_skip)(void *ctx, const char *msg), void *ctx);
void fpt_dataset_free(fpt_dataset *d);

/* Per-optimizer-step report. */
typedef struct {
    long step;        /* optimizer steps completed (1-based: this step's number) */
    long total_steps;
    long epoch;       /* 0-based epoch this step belongs to */
    int records;      /* records accumulated into this step */
    double loss, joint, step_mse, final_mse, ce, lm; /* means over the step's records */
    double lr, grad_norm; /* rate applied; global norm of the trainable gradient before clipping */
    long tokens;      /* tokens in this step */
    double seconds;   /* wall time of this step */
    double elapsed;   /* since this run started (resumed runs: since the resume) */
    int saved;        /* a checkpoint was written after this step */
} fpt_step_info;

enum {
    FPT_EVENT_DATA = 1,    /* value: records loaded; msg: a summary */
    FPT_EVENT_SKIPPED,     /* msg: a dropped record's error (skip_bad) */
    FPT_EVENT_RESUMED,     /* value: the step training resumes from */
    FPT_EVENT_NO_STATE,    /* --resume found no training state: starting at step 0 */
    FPT_EVENT_STAGED,      /* value: step; the new training state is complete in its temp dir, not yet swapped
                            * in (a crash here must leave the previous checkpoint intact) */
    FPT_EVENT_SAVED        /* value: step; checkpoint written */
};

typedef struct {
    fp_prm_opts prm;         /* model_path (HF directory), tokenizer, system, step token, max_tokens, threads */
    const char *data_path;
    const char *out_dir;     /* checkpoint directory (created; must differ from the model directory) */
    int mode;                /* FPT_MODE_FULL | FPT_MODE_HEAD_ONLY | FPT_MODE_LORA */
    int loss;                /* FPT_LOSS_* */
    float lambda_step, lambda_final;
    fpt_adamw_cfg adamw;     /* total_steps is set by fpt_train */
    long epochs;             /* default 1 */
    long steps;              /* > 0: this many optimizer steps (overrides epochs) */
    int batch;               /* records per optimizer step (gradient accumulation), default 1 */
    int lora_rank;           /* LoRA mode (default 8) */
    float lora_alpha;        /* default 16 */
    unsigned lora_targets;   /* default q,k,v,o */
    int merge_lora;          /* LoRA mode: also write merged full weights as model.safetensors */
    long save_every;         /* checkpoint every K optimizer steps (0: only at the end) */
    long stop_after;         /* > 0: stop after this step as if interrupted (checkpoint written); for resuming */
    uint64_t seed;           /* data order, LoRA init, fresh score head init */
    int resume;
    int skip_bad;
    void (*on_step)(void *ctx, const fpt_step_info *info);
    void (*on_event)(void *ctx, int event, long value, const char *msg);
    void *ctx;
} fpt_train_opts;
void fpt_train_opts_default(fpt_train_opts *o);

typedef struct {
    long records, skipped;
    long start_step, end_step, total_steps;
    double last_loss;       /* mean loss of the last step run (NaN if none) */
    int stopped;            /* 1 when stop_after ended the run early */
} fpt_train_result;

/* Runs the whole thing.  Errors: FP_EINVAL/FP_EPARSE/FP_ERANGE for bad data ("path:line: ..."), FP_ERANGE for a
 * non-finite loss, gradient or update (naming the record; the previous checkpoint is left as it was),
 * FP_EIO for checkpoint writes (the previous training state stays intact). */
int fpt_train(const fpt_train_opts *o, fpt_train_result *res);

#endif
