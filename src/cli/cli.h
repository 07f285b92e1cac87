/* The CLI layer: each subcommand is `int cmd_<name>(int argc, char **argv)` returning the process exit
 * code (0 ok, 1 runtime error, 2 usage error).  Only this layer prints. */
#ifndef FP_CLI_H
#define FP_CLI_H
#include "fluxprm.h"
#include <stdio.h>

enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

/* Prints "fluxprm: <message>" to stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints "fluxprm: <context>: <fp_last_error()>" and returns EXIT_RUNTIME. */
int cli_fail(const char *context);
/* Usage error: prints "fluxprm <cmd>: <message>\nTry 'fluxprm <cmd> --help'." and returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Whether progress bars should draw (stderr is a TTY and quiet is 0), and the stream to draw on (or NULL). */
int cli_progress_enabled(int quiet);
FILE *cli_progress_stream(int quiet);
/* Non-blank lines of a regular file (a progress bar's total); 0 for stdin or when unknown. */
long cli_count_records(const char *path);
/* Parses a positive/non-negative number option strictly; returns 0 on success. */
int cli_parse_long(const char *s, long *out);
int cli_parse_double(const char *s, double *out);

/* One line per subcommand, kept in alphabetical order. */
#define FP_COMMANDS(X) \
    X(bench, "trunk prefill speed of a checkpoint: tok/s, GFLOP/s, kernels and a per-phase profile") \
    X(bestofn, "Best-of-N selection (PRM, majority, PRM-weighted vote) with accuracy curves") \
    X(convert, "convert a Hugging Face checkpoint to GGUF (f32/f16/bf16/q8_0/q4_0)") \
    X(curate, "ReasonFlux-PRM training targets: merged steps, align/coh/qual step targets, rollout final target") \
    X(eval, "ProcessBench evaluation of a PRM: first-error accuracy on erroneous/correct samples and F1") \
    X(generate, "sample or greedy-decode completions from a Qwen2/Qwen3 causal LM with a KV cache (chat or raw prompts)") \
    X(inspect, "show a checkpoint's config and detected head, validate its tensors, time a prefill") \
    X(judge, "LLM-judge step-quality scores (0-10) and reasoning templates via an OpenAI-compatible API") \
    X(score, "per-step and trajectory rewards for JSONL records with a PRM checkpoint") \
    X(select, "keep the top-K records of a scored pool (O(K) memory), with score histogram") \
    X(serve, "HTTP reward server for online RL (OpenRLHF /get_reward, vLLM /pooling, rerank, GRPO advantages)") \
    X(tokenize, "text JSONL to token ids (or back with --decode), byte-exact with HF tokenizers") \
    X(train, "fine-tune a PRM (full, LoRA or head-only; MSE/CE/LM losses) into an HF checkpoint, with resume") \
    X(verify, "check final answers in JSONL against gold answers") \
    X(version, "print the version")

#define DECLARE_CMD(name, help) int cmd_##name(int argc, char **argv);
FP_COMMANDS(DECLARE_CMD)
#undef DECLARE_CMD
#endif
