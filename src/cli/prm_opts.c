/* Parsing of the shared PRM model options. */
#include "cli/prm_opts.h"
#include "cli/cli.h"
#include <string.h>

int cli_prm_option(const char *cmd, int opt, const char *arg, fp_prm_opts *po) {
    long v;
    switch (opt) {
    case CLI_PRM_MODEL: po->model_path = arg; return 1;
    case CLI_PRM_TOKENIZER: po->tokenizer_path = arg; return 1;
    case CLI_PRM_SYSTEM: po->system_mode = FP_SYSTEM_TEXT; po->system = arg; return 1;
    case CLI_PRM_NO_SYSTEM: po->system_mode = FP_SYSTEM_NONE; return 1;
    case CLI_PRM_STEP_TOKEN:
        if (!*arg) { cli_usage_error(cmd, "--step-token needs a non-empty token"); return -1; }
        po->step_token = arg;
        return 1;
    case CLI_PRM_STEP_ID:
        if (cli_parse_long(arg, &v) || v < 0 || v > INT32_MAX) { cli_usage_error(cmd, "--step-token-id needs a token id, got '%s'", arg); return -1; }
        po->step_token_id = (int32_t)v;
        return 1;
    case CLI_PRM_FINAL:
        if (!strcmp(arg, "last-token")) po->final_mode = FP_FINAL_LAST_TOKEN;
        else if (!strcmp(arg, "last-step")) po->final_mode = FP_FINAL_LAST_STEP;
        else if (!strcmp(arg, "none")) po->final_mode = FP_FINAL_NONE;
        else { cli_usage_error(cmd, "--final must be last-token, last-step or none, got '%s'", arg); return -1; }
        return 1;
    case CLI_PRM_STEPS:
        if (!strcmp(arg, "both")) po->steps_from = FP_STEPS_BOTH;
        else if (!strcmp(arg, "thinking")) po->steps_from = FP_STEPS_THINKING;
        else if (!strcmp(arg, "response")) po->steps_from = FP_STEPS_RESPONSE;
        else { cli_usage_error(cmd, "--steps must be both, thinking or response, got '%s'", arg); return -1; }
        return 1;
    case CLI_PRM_MAX_TOKENS:
        if (cli_parse_long(arg, &v) || v < 1 || v > INT32_MAX) { cli_usage_error(cmd, "--max-tokens needs a positive integer, got '%s'", arg); return -1; }
        po->max_tokens = (int)v;
        return 1;
    case CLI_PRM_FAST: po->fast = 1; return 1;
    case CLI_PRM_THREADS:
        if (cli_parse_long(arg, &v) || v < 1 || v > 4096) { cli_usage_error(cmd, "--threads needs a positive integer, got '%s'", arg); return -1; }
        po->threads = (int)v;
        return 1;
    }
    return 0;
}
