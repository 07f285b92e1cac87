/* fluxprm train: fine-tune a PRM (or SFT a model) on JSONL targets; HF-compatible checkpoints with resume. */
#include "base/json.h"
#include "cli/cli.h"
#include "cli/prm_opts.h"
#include "train/trainer.h"
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void train_help(FILE *f) {
    fprintf(f,
"usage: fluxprm train --model DIR --data targets.jsonl --out DIR [options]\n"
"\n"
"Fine-tunes a Qwen2 process reward model in f32 on the CPU and writes an HF-compatible checkpoint to --out\n"
"(config.json, model.safetensors, tokenizer files; adapter/ in LoRA mode) plus training_state/ for --resume.\n"
"Records are rendered and tokenized exactly as `fluxprm score` does (same system prompt and step token).\n"
"Data (JSONL, one record per line):\n"
"  --loss mse  {\"question\", \"steps\": [..], \"step_targets\": [0..1, ..], \"final_target\": 0..1 (optional),\n"
"               \"system\" (optional)}: lambda_step*mean_t (p_t - target_t)^2 + lambda_final*(p_last - final)^2\n"
"  --loss ce   {\"question\", \"steps\", \"step_labels\": [0|1, ..]}: cross-entropy at the step tokens\n"
"  --loss lm   {\"messages\": [{\"role\", \"content\"}, ..]}: next-token loss on the assistant turns (SFT)\n"
"\n"
"options:\n"
"  --model DIR          input checkpoint (HF directory: config.json + safetensors)\n"
"  --data FILE          training records (JSONL)\n"
"  --out DIR            output checkpoint directory\n"
"  --mode M             full (default) | lora | head (the score head only)\n"
"  --loss L             mse (default) | ce | lm\n"
"  --epochs N           passes over the data (default 1)\n"
"  --steps N            optimizer steps in all (overrides --epochs)\n"
"  --batch-size B       records per optimizer step, by gradient accumulation (default 1)\n"
"  --lr X               peak learning rate (default 1e-5)\n"
"  --schedule S         constant | linear (default) | cosine, after --warmup\n"
"  --warmup N           linear warm-up steps (default 0)\n"
"  --weight-decay W     AdamW decoupled weight decay on 2-D weights (default 0)\n"
"  --clip G             clip the global gradient norm at G (default 1.0; 0 = off)\n"
"  --lambda-step A      weight of the step term of --loss mse (default 1)\n"
"  --lambda-final B     weight of the final term of --loss mse (default 1)\n"
"  --lora-r R           LoRA rank (default 8)\n"
"  --lora-alpha A       LoRA alpha (default 16)\n"
"  --lora-targets L     comma list of q,k,v,o,gate,up,down or all (default q,k,v,o)\n"
"  --merge-lora         LoRA mode: also write merged full weights as model.safetensors\n"
"  --save-every K       checkpoint every K optimizer steps (default: only at the end)\n"
"  --stop-after K       stop after step K as if interrupted (checkpoint written; continue with --resume)\n"
"  --seed S             data order, LoRA and new-head initialisation (default 0)\n"
"  --resume             continue from --out/training_state (same data and options)\n"
"  --skip-bad           drop bad records with a warning (default: stop, exit 1)\n"
"  --log FILE           append one JSON line per optimizer step (loss components, lr, grad_norm, tokens/s)\n"
"  -q, --quiet          no progress bar or messages\n"
"  -h, --help           this help\n"
"model input options (as for `fluxprm score`):\n"
"  --tokenizer P        tokenizer.json or its directory (default: the model directory)\n"
"  --system TEXT        system prompt (default: the one the checkpoint's chat template injects)\n"
"  --no-system          no system turn at all\n"
"  --step-token S       step separator token (default <extra_0>)\n"
"  --step-token-id N    use id N for the step token even if the tokenizer names it otherwise\n"
"  --max-tokens N       refuse records longer than N tokens (default 32768)\n"
"  --threads N          compute threads (default: all cores; --threads 1 makes --resume bitwise exact)\n"
"\n"
"Exit status: 0 ok, 1 runtime error (bad record named by file:line, non-finite loss; the last checkpoint is\n"
"kept), 2 usage.\n");
}

enum { OPT_DATA = 300, OPT_OUT, OPT_MODE, OPT_LOSS, OPT_EPOCHS, OPT_STEPS_N, OPT_BATCH, OPT_LR, OPT_SCHEDULE,
       OPT_WARMUP, OPT_WD, OPT_CLIP, OPT_LSTEP, OPT_LFINAL, OPT_LORA_R, OPT_LORA_ALPHA, OPT_LORA_TARGETS,
       OPT_MERGE, OPT_SAVE_EVERY, OPT_STOP_AFTER, OPT_SEED, OPT_RESUME, OPT_SKIP_BAD, OPT_LOG };

typedef struct {
    int progress, quiet;
    FILE *log;
    int loss;
    int log_failed;
    long crash_at; /* test hook: FLUXPRM_TEST_KILL_AT_SAVE=K kills the process (SIGKILL) mid-checkpoint at step K */
} train_ui;

static void on_event(void *ctx, int ev, long value, const char *msg) {
    train_ui *u = ctx;
    if (ev == FPT_EVENT_STAGED && u->crash_at > 0 && value == u->crash_at) raise(SIGKILL);
    if (u->quiet) return;
    if (u->progress) fputs("\r\033[K", stderr);
    switch (ev) {
    case FPT_EVENT_DATA: cli_error("train: %s", msg); break;
    case FPT_EVENT_SKIPPED: cli_error("train: skipped %s", msg); break;
    case FPT_EVENT_RESUMED: cli_error("train: resuming %s at step %ld", msg, value); break;
    case FPT_EVENT_NO_STATE: cli_error("train: no training state in %s: starting at step 0", msg); break;
    default: break;
    }
}

static void on_step(void *ctx, const fpt_step_info *s) {
    train_ui *u = ctx;
    double tps = s->seconds > 0 ? s->tokens / s->seconds : 0;
    json_t *j = u->log ? json_pack("{s:I, s:I, s:f}", "step", (json_int_t)s->step, "epoch", (json_int_t)s->epoch,
                                   "loss", s->loss) : NULL;
    if (j) {
        if (u->loss == FPT_LOSS_MSE) {
            json_object_set_new(j, "step_mse", json_real(s->step_mse));
            json_object_set_new(j, "final_mse", json_real(s->final_mse));
        } else if (u->loss == FPT_LOSS_CE) json_object_set_new(j, "ce", json_real(s->ce));
        else json_object_set_new(j, "lm", json_real(s->lm));
        json_object_set_new(j, "lr", json_real(s->lr));
        json_object_set_new(j, "grad_norm", json_real(s->grad_norm));
        json_object_set_new(j, "records", json_integer(s->records));
        json_object_set_new(j, "tokens", json_integer(s->tokens));
        json_object_set_new(j, "tokens_per_s", json_real(tps));
        json_object_set_new(j, "elapsed_s", json_real(s->elapsed));
        if (s->saved) json_object_set_new(j, "saved", json_true());
        if (fp_json_write_line(u->log, j) || fflush(u->log)) u->log_failed = 1;
        json_decref(j);
    }
    if (u->progress) {
        int w = 20, k = s->total_steps > 0 ? (int)((double)w * s->step / s->total_steps) : 0;
        char bar[32];
        for (int i = 0; i < w; i++) bar[i] = i < k ? '#' : '.';
        bar[w] = 0;
        fprintf(stderr, "\rtrain [%s] %ld/%ld  loss %.4g  %.0f tok/s  ", bar, s->step, s->total_steps, s->loss, tps);
        fflush(stderr);
    }
}

/* ETA needs the run's own step count: wrap on_step */
typedef struct {
    train_ui ui;
    long first_step;
} train_ctx;

static void on_step_eta(void *ctx, const fpt_step_info *s) {
    train_ctx *c = ctx;
    if (!c->first_step) c->first_step = s->step;
    on_step(&c->ui, s);
    if (c->ui.progress) {
        long done = s->step - c->first_step + 1, left = s->total_steps - s->step;
        double rem = done > 0 ? s->elapsed / (double)done * (double)left : 0;
        fprintf(stderr, "ETA %dm%02ds   ", (int)(rem / 60), (int)rem % 60);
        fflush(stderr);
    }
}
static void on_event_ctx(void *ctx, int ev, long value, const char *msg) { on_event(&((train_ctx *)ctx)->ui, ev, value, msg); }

static int parse_float(const char *cmd, const char *opt, const char *arg, float *out, double lo) {
    double d;
    if (cli_parse_double(arg, &d) || !isfinite(d) || d < lo)
        return cli_usage_error(cmd, "%s needs a number >= %g, got '%s'", opt, lo, arg);
    *out = (float)d;
    return 0;
}

static int parse_count(const char *cmd, const char *opt, const char *arg, long *out, long lo) {
    long v;
    if (cli_parse_long(arg, &v) || v < lo) return cli_usage_error(cmd, "%s needs an integer >= %ld, got '%s'", opt, lo, arg);
    *out = v;
    return 0;
}

int cmd_train(int argc, char **argv) {
    static const struct option lopts[] = {
        CLI_PRM_LONG_OPTIONS,
        {"data", required_argument, 0, OPT_DATA}, {"out", required_argument, 0, OPT_OUT},
        {"mode", required_argument, 0, OPT_MODE}, {"loss", required_argument, 0, OPT_LOSS},
        {"epochs", required_argument, 0, OPT_EPOCHS}, /* --steps N: CLI_PRM_LONG_OPTIONS names it (mapped below) */
        {"batch-size", required_argument, 0, OPT_BATCH}, {"lr", required_argument, 0, OPT_LR},
        {"schedule", required_argument, 0, OPT_SCHEDULE}, {"warmup", required_argument, 0, OPT_WARMUP},
        {"weight-decay", required_argument, 0, OPT_WD}, {"clip", required_argument, 0, OPT_CLIP},
        {"lambda-step", required_argument, 0, OPT_LSTEP}, {"lambda-final", required_argument, 0, OPT_LFINAL},
        {"lora-r", required_argument, 0, OPT_LORA_R}, {"lora-alpha", required_argument, 0, OPT_LORA_ALPHA},
        {"lora-targets", required_argument, 0, OPT_LORA_TARGETS}, {"merge-lora", no_argument, 0, OPT_MERGE},
        {"save-every", required_argument, 0, OPT_SAVE_EVERY}, {"stop-after", required_argument, 0, OPT_STOP_AFTER},
        {"seed", required_argument, 0, OPT_SEED}, {"resume", no_argument, 0, OPT_RESUME},
        {"skip-bad", no_argument, 0, OPT_SKIP_BAD}, {"log", required_argument, 0, OPT_LOG},
        {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *cmd = "train";
    fpt_train_opts o;
    fpt_train_opts_default(&o);
    const char *log_path = NULL;
    int quiet = 0, c, lora_opt = 0;
    long v = 0;
    optind = 1;
    opterr = 0;
    /* the score-only options (--final, --steps S) are not train options: --steps means a step count here */
    while ((c = getopt_long(argc, argv, ":qh", lopts, NULL)) != -1) {
        if (c == CLI_PRM_FINAL) return cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
        if (c == CLI_PRM_STEPS) c = OPT_STEPS_N; /* CLI_PRM_LONG_OPTIONS also names --steps */
        if (c != OPT_STEPS_N) {
            int handled = cli_prm_option(cmd, c, optarg, &o.prm);
            if (handled < 0) return EXIT_USAGE;
            if (handled) continue;
        }
        switch (c) {
        case OPT_DATA: o.data_path = optarg; break;
        case OPT_OUT: o.out_dir = optarg; break;
        case OPT_MODE:
            if (!strcmp(optarg, "full")) o.mode = FPT_MODE_FULL;
            else if (!strcmp(optarg, "lora")) o.mode = FPT_MODE_LORA;
            else if (!strcmp(optarg, "head")) o.mode = FPT_MODE_HEAD_ONLY;
            else return cli_usage_error(cmd, "--mode must be full, lora or head, got '%s'", optarg);
            break;
        case OPT_LOSS:
            if (!strcmp(optarg, "mse")) o.loss = FPT_LOSS_MSE;
            else if (!strcmp(optarg, "ce")) o.loss = FPT_LOSS_CE;
            else if (!strcmp(optarg, "lm")) o.loss = FPT_LOSS_LM;
            else return cli_usage_error(cmd, "--loss must be mse, ce or lm, got '%s'", optarg);
            break;
        case OPT_EPOCHS: if (parse_count(cmd, "--epochs", optarg, &o.epochs, 1)) return EXIT_USAGE; break;
        case OPT_STEPS_N: if (parse_count(cmd, "--steps", optarg, &o.steps, 1)) return EXIT_USAGE; break;
        case OPT_BATCH:
            if (parse_count(cmd, "--batch-size", optarg, &v, 1)) return EXIT_USAGE;
            if (v > 1000000) return cli_usage_error(cmd, "--batch-size is too large");
            o.batch = (int)v;
            break;
        case OPT_LR:
            if (parse_float(cmd, "--lr", optarg, &o.adamw.lr, 0)) return EXIT_USAGE;
            if (isinf(o.adamw.lr)) return cli_usage_error(cmd, "--lr is out of range");
            break;
        case OPT_SCHEDULE:
            if (!strcmp(optarg, "constant")) o.adamw.schedule = FPT_SCHED_CONSTANT;
            else if (!strcmp(optarg, "linear")) o.adamw.schedule = FPT_SCHED_LINEAR;
            else if (!strcmp(optarg, "cosine")) o.adamw.schedule = FPT_SCHED_COSINE;
            else return cli_usage_error(cmd, "--schedule must be constant, linear or cosine, got '%s'", optarg);
            break;
        case OPT_WARMUP: if (parse_count(cmd, "--warmup", optarg, &o.adamw.warmup_steps, 0)) return EXIT_USAGE; break;
        case OPT_WD: if (parse_float(cmd, "--weight-decay", optarg, &o.adamw.weight_decay, 0)) return EXIT_USAGE; break;
        case OPT_CLIP: if (parse_float(cmd, "--clip", optarg, &o.adamw.max_grad_norm, 0)) return EXIT_USAGE; break;
        case OPT_LSTEP: if (parse_float(cmd, "--lambda-step", optarg, &o.lambda_step, 0)) return EXIT_USAGE; break;
        case OPT_LFINAL: if (parse_float(cmd, "--lambda-final", optarg, &o.lambda_final, 0)) return EXIT_USAGE; break;
        case OPT_LORA_R:
            if (parse_count(cmd, "--lora-r", optarg, &v, 1)) return EXIT_USAGE;
            if (v > 4096) return cli_usage_error(cmd, "--lora-r is too large");
            o.lora_rank = (int)v;
            lora_opt = 1;
            break;
        case OPT_LORA_ALPHA:
            if (parse_float(cmd, "--lora-alpha", optarg, &o.lora_alpha, 0) ) return EXIT_USAGE;
            if (!(o.lora_alpha > 0)) return cli_usage_error(cmd, "--lora-alpha must be positive");
            lora_opt = 1;
            break;
        case OPT_LORA_TARGETS:
            if (fpt_lora_parse_targets(optarg, &o.lora_targets))
                return cli_usage_error(cmd, "--lora-targets: %s", fp_last_error());
            lora_opt = 1;
            break;
        case OPT_MERGE: o.merge_lora = 1; lora_opt = 1; break;
        case OPT_SAVE_EVERY: if (parse_count(cmd, "--save-every", optarg, &o.save_every, 1)) return EXIT_USAGE; break;
        case OPT_STOP_AFTER: if (parse_count(cmd, "--stop-after", optarg, &o.stop_after, 1)) return EXIT_USAGE; break;
        case OPT_SEED:
            if (parse_count(cmd, "--seed", optarg, &v, 0)) return EXIT_USAGE;
            o.seed = (uint64_t)v;
            break;
        case OPT_RESUME: o.resume = 1; break;
        case OPT_SKIP_BAD: o.skip_bad = 1; break;
        case OPT_LOG: log_path = optarg; break;
        case 'q': quiet = 1; break;
        case 'h': train_help(stdout); return EXIT_OK;
        case ':': return cli_usage_error(cmd, "option '%s' needs a value", argv[optind - 1]);
        default: return cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!o.prm.model_path) return cli_usage_error(cmd, "--model is required");
    if (!o.data_path) return cli_usage_error(cmd, "--data is required");
    if (!o.out_dir) return cli_usage_error(cmd, "--out is required");
    if (lora_opt && o.mode != FPT_MODE_LORA) return cli_usage_error(cmd, "the --lora-* and --merge-lora options need --mode lora");

    train_ctx tc;
    memset(&tc, 0, sizeof tc);
    tc.ui.quiet = quiet;
    tc.ui.progress = cli_progress_enabled(quiet);
    tc.ui.loss = o.loss;
    const char *crash = getenv("FLUXPRM_TEST_KILL_AT_SAVE");
    if (crash) tc.ui.crash_at = atol(crash);
    if (log_path && !(tc.ui.log = fopen(log_path, "a"))) {
        cli_error("train: cannot open --log %s", log_path);
        return EXIT_RUNTIME;
    }
    o.on_step = on_step_eta;
    o.on_event = on_event_ctx;
    o.ctx = &tc;
    fpt_train_result res;
    int rc = fpt_train(&o, &res);
    if (tc.ui.progress) fputc('\n', stderr);
    if (tc.ui.log && fclose(tc.ui.log) && !rc) tc.ui.log_failed = 1;
    if (rc) return cli_fail("train");
    if (tc.ui.log_failed) cli_error("train: writing the --log file failed");
    if (!quiet) {
        if (res.stopped)
            cli_error("train: stopped after step %ld of %ld (--stop-after); checkpoint in %s, continue with --resume",
                      res.end_step, res.total_steps, o.out_dir);
        else if (res.end_step > res.start_step)
            cli_error("train: %ld steps done (loss %.6g); checkpoint in %s", res.end_step - res.start_step, res.last_loss, o.out_dir);
        else cli_error("train: nothing to do (already at step %ld of %ld)", res.end_step, res.total_steps);
        if (res.skipped) cli_error("train: %ld bad records were skipped", res.skipped);
    }
    return tc.ui.log_failed ? EXIT_RUNTIME : EXIT_OK;
}
