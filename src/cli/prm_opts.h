/* Model options shared by every command that scores with a PRM (score, bestofn, select). */
#ifndef FP_CLI_PRM_OPTS_H
#define FP_CLI_PRM_OPTS_H
#include "apps/prm.h"
#include <getopt.h>

enum { CLI_PRM_MODEL = 1000, CLI_PRM_TOKENIZER, CLI_PRM_SYSTEM, CLI_PRM_NO_SYSTEM, CLI_PRM_STEP_TOKEN,
       CLI_PRM_STEP_ID, CLI_PRM_FINAL, CLI_PRM_STEPS, CLI_PRM_MAX_TOKENS, CLI_PRM_THREADS, CLI_PRM_FAST };

#define CLI_PRM_LONG_OPTIONS \
    {"model", required_argument, 0, CLI_PRM_MODEL}, {"tokenizer", required_argument, 0, CLI_PRM_TOKENIZER}, \
    {"system", required_argument, 0, CLI_PRM_SYSTEM}, {"no-system", no_argument, 0, CLI_PRM_NO_SYSTEM}, \
    {"step-token", required_argument, 0, CLI_PRM_STEP_TOKEN}, {"step-token-id", required_argument, 0, CLI_PRM_STEP_ID}, \
    {"final", required_argument, 0, CLI_PRM_FINAL}, {"steps", required_argument, 0, CLI_PRM_STEPS}, \
    {"max-tokens", required_argument, 0, CLI_PRM_MAX_TOKENS}, {"threads", required_argument, 0, CLI_PRM_THREADS}, \
    {"fast", no_argument, 0, CLI_PRM_FAST}

#define CLI_PRM_HELP \
"  --model P            HF checkpoint directory (config.json + safetensors) or a GGUF file\n" \
"  --tokenizer P        tokenizer.json or its directory (default: the model directory)\n" \
"  --system TEXT        system prompt (default: the one the checkpoint's chat template injects)\n" \
"  --no-system          no system turn at all\n" \
"  --step-token S       step separator token (default <extra_0>)\n" \
"  --step-token-id N    use id N for the step token even if the tokenizer names it otherwise\n" \
"  --final F            final reward: last-token (P(class 1) at the last token, default) | last-step | none\n" \
"  --steps S            for thinking + response records: both (default) | thinking | response\n" \
"  --max-tokens N       refuse records longer than N tokens (default 32768)\n" \
"  --threads N          compute threads (default: all cores)\n" \
"  --fast               let the GEMMs round activations to bf16/int8 (AMX, AVX512-BF16, VNNI): much faster\n" \
"                       on BF16/Q8_0 weights, rewards within ~1e-2 of the exact f32-activation default\n"

/* Handles one of the options above: 1 = handled, 0 = not a model option, -1 = usage error (printed). */
int cli_prm_option(const char *cmd, int opt, const char *arg, fp_prm_opts *po);
#endif
