/* fluxprm score: per-step rewards, final reward and trajectory score for each JSONL record. */
#include "apps/prm.h"
#include "base/json.h"
#include "cli/cli.h"
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void score_help(FILE *f) {
    fprintf(f,
"usage: fluxprm score --model DIR|FILE.gguf [options] [in.jsonl|-]\n"
"\n"
"Scores each JSONL record with a process reward model and writes the record with these fields added:\n"
"  \"step_rewards\"  P(class 1) at each step token (2-class PRM heads; [] for scalar-head models)\n"
"  \"final_reward\"  the trajectory-level read-out (see --final; null with --final none)\n"
"  \"score\"         r = aggregate(step_rewards) + alpha * final_reward\n"
"  \"n_tokens\"      tokens in the model input;  \"n_thinking_steps\" when the record has a thinking part\n"
"Records: ProcessBench {problem, steps}, s1K {question, thinking_trajectories, attempt}, TRL {prompt,\n"
"completions}, or {question, steps | response | thinking + response}; \"\\n\\n\" splits text into steps and\n"
"<think>...</think> in a response separates thinking from the answer.  A \"system\" field overrides --system.\n"
"\n"
"options:\n"
"  --model P            HF checkpoint directory (config.json + safetensors) or a GGUF file (required)\n"
"  --tokenizer P        tokenizer.json or its directory (default: the model directory)\n"
"  --system TEXT        system prompt (default: the one the checkpoint's chat template injects)\n"
"  --no-system          no system turn at all\n"
"  --step-token S       step separator token (default <extra_0>)\n"
"  --step-token-id N    use id N for the step token even if the tokenizer names it otherwise\n"
"  --aggregate A        mean | min | last | prod (default mean)\n"
"  --alpha A            weight of the final reward in the score (default 1.0)\n"
"  --final F            last-token (P(class 1) at the last token, default) | last-step | none\n"
"  --steps S            for thinking + response records: both (default) | thinking | response\n"
"  --max-tokens N       refuse records longer than N tokens (default 32768)\n"
"  --threads N          compute threads (default: all cores)\n"
"  -o, --output FILE    write here (atomically: FILE.partial, renamed when done) instead of stdout\n"
"  --resume             continue an interrupted run of the same -o FILE without rescoring its records\n"
"  --skip-bad           write {..., \"error\": \"...\"} for a bad record and go on (default: stop, exit 1)\n"
"  -q, --quiet          no progress bar\n"
"  -h, --help           this help\n"
"\n"
"Exit status: 0 ok, 1 runtime error (bad model or record; earlier output is kept for --resume), 2 usage.\n");
}

enum { OPT_MODEL = 256, OPT_TOKENIZER, OPT_SYSTEM, OPT_NO_SYSTEM, OPT_STEP_TOKEN, OPT_STEP_ID, OPT_AGG, OPT_ALPHA,
       OPT_FINAL, OPT_STEPS, OPT_MAX_TOKENS, OPT_THREADS, OPT_RESUME, OPT_SKIP_BAD };

static long count_records(const char *path) {
    struct stat st;
    if (!path || !strcmp(path, "-") || stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return 0;
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    long n = 0;
    int c, prev = '\n', blank = 1;
    while ((c = getc(f)) != EOF) {
        if (c == '\n') { if (!blank) n++; blank = 1; }
        else if (c != ' ' && c != '\t' && c != '\r') blank = 0;
        prev = c;
    }
    if (prev != '\n' && !blank) n++;
    fclose(f);
    return n;
}

/* Adds the result fields; returns a new object. */
static json_t *result_fields(const fp_prm_result *r, int has_steps) {
    json_t *o = json_object(), *steps = json_array();
    for (size_t i = 0; i < r->n_steps; i++) json_array_append_new(steps, json_real(r->step_rewards[i]));
    json_object_set_new(o, "step_rewards", steps);
    json_object_set_new(o, "final_reward", isnan(r->final_reward) ? json_null() : json_real(r->final_reward));
    json_object_set_new(o, "score", isnan(r->score) ? json_null() : json_real(r->score));
    json_object_set_new(o, "n_tokens", json_integer(r->n_tokens));
    if (has_steps && r->n_thinking) json_object_set_new(o, "n_thinking_steps", json_integer((json_int_t)r->n_thinking));
    return o;
}

int cmd_score(int argc, char **argv) {
    static const struct option lopts[] = {
        {"model", required_argument, 0, OPT_MODEL}, {"tokenizer", required_argument, 0, OPT_TOKENIZER},
        {"system", required_argument, 0, OPT_SYSTEM}, {"no-system", no_argument, 0, OPT_NO_SYSTEM},
        {"step-token", required_argument, 0, OPT_STEP_TOKEN}, {"step-token-id", required_argument, 0, OPT_STEP_ID},
        {"aggregate", required_argument, 0, OPT_AGG}, {"alpha", required_argument, 0, OPT_ALPHA},
        {"final", required_argument, 0, OPT_FINAL}, {"steps", required_argument, 0, OPT_STEPS},
        {"max-tokens", required_argument, 0, OPT_MAX_TOKENS}, {"threads", required_argument, 0, OPT_THREADS},
        {"output", required_argument, 0, 'o'}, {"resume", no_argument, 0, OPT_RESUME},
        {"skip-bad", no_argument, 0, OPT_SKIP_BAD}, {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    fp_prm_opts po;
    fp_prm_opts_default(&po);
    const char *out_path = NULL;
    int resume = 0, skip_bad = 0, quiet = 0, c;
    long v;
    double d;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:qh", lopts, NULL)) != -1) {
        switch (c) {
        case OPT_MODEL: po.model_path = optarg; break;
        case OPT_TOKENIZER: po.tokenizer_path = optarg; break;
        case OPT_SYSTEM: po.system_mode = FP_SYSTEM_TEXT; po.system = optarg; break;
        case OPT_NO_SYSTEM: po.system_mode = FP_SYSTEM_NONE; break;
        case OPT_STEP_TOKEN:
            if (!*optarg) return cli_usage_error("score", "--step-token needs a non-empty token");
            po.step_token = optarg;
            break;
        case OPT_STEP_ID:
            if (cli_parse_long(optarg, &v) || v < 0 || v > INT32_MAX) return cli_usage_error("score", "--step-token-id needs a token id, got '%s'", optarg);
            po.step_token_id = (int32_t)v;
            break;
        case OPT_AGG:
            if ((c = fp_aggregate_parse(optarg)) < 0) return cli_usage_error("score", "--aggregate must be mean, min, last or prod, got '%s'", optarg);
            po.aggregate = (fp_aggregate)c;
            break;
        case OPT_ALPHA:
            if (cli_parse_double(optarg, &d) || !isfinite(d)) return cli_usage_error("score", "--alpha needs a number, got '%s'", optarg);
            po.alpha = d;
            break;
        case OPT_FINAL:
            if (!strcmp(optarg, "last-token")) po.final_mode = FP_FINAL_LAST_TOKEN;
            else if (!strcmp(optarg, "last-step")) po.final_mode = FP_FINAL_LAST_STEP;
            else if (!strcmp(optarg, "none")) po.final_mode = FP_FINAL_NONE;
            else return cli_usage_error("score", "--final must be last-token, last-step or none, got '%s'", optarg);
            break;
        case OPT_STEPS:
            if (!strcmp(optarg, "both")) po.steps_from = FP_STEPS_BOTH;
            else if (!strcmp(optarg, "thinking")) po.steps_from = FP_STEPS_THINKING;
            else if (!strcmp(optarg, "response")) po.steps_from = FP_STEPS_RESPONSE;
            else return cli_usage_error("score", "--steps must be both, thinking or response, got '%s'", optarg);
            break;
        case OPT_MAX_TOKENS:
            if (cli_parse_long(optarg, &v) || v < 1 || v > INT32_MAX) return cli_usage_error("score", "--max-tokens needs a positive integer, got '%s'", optarg);
            po.max_tokens = (int)v;
            break;
        case OPT_THREADS:
            if (cli_parse_long(optarg, &v) || v < 1 || v > 4096) return cli_usage_error("score", "--threads needs a positive integer, got '%s'", optarg);
            po.threads = (int)v;
            break;
        case 'o': out_path = optarg; break;
        case OPT_RESUME: resume = 1; break;
        case OPT_SKIP_BAD: skip_bad = 1; break;
        case 'q': quiet = 1; break;
        case 'h': score_help(stdout); return EXIT_OK;
        case ':': return cli_usage_error("score", "option '%s' needs a value", argv[optind - 1]);
        default: return cli_usage_error("score", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (!po.model_path) return cli_usage_error("score", "--model is required");
    if (argc - optind > 1) return cli_usage_error("score", "one input file at most (got '%s' and '%s')", argv[optind], argv[optind + 1]);
    const char *in = optind < argc ? argv[optind] : "-";
    if (resume && (!out_path || !strcmp(out_path, "-"))) return cli_usage_error("score", "--resume needs -o FILE");

    fp_jsonl_reader *rd = NULL;
    if (fp_jsonl_open(&rd, in)) return cli_fail("score");
    fp_prm *prm = NULL;
    if (fp_prm_open(&prm, &po)) { fp_jsonl_close(rd); return cli_fail("score"); }
    fp_outfile *of = NULL;
    if (fp_outfile_open(&of, out_path, resume)) { fp_prm_free(prm); fp_jsonl_close(rd); return cli_fail("score"); }
    FILE *out = fp_outfile_stream(of);
    long skip = fp_outfile_resumed_lines(of);
    fp_progress *bar = fp_progress_new("score", cli_progress_enabled(quiet) ? count_records(in) : 0, cli_progress_enabled(quiet));
    fp_progress_add(bar, skip, 0);

    int status = EXIT_OK;
    long nrec = 0, nbad = 0;
    const char *line;
    size_t len;
    int rc;
    while ((rc = fp_jsonl_next_line(rd, &line, &len)) == FP_OK) {
        if (nrec++ < skip) continue; /* already in the output of the interrupted run */
        long lineno = fp_jsonl_line_number(rd);
        json_t *rec = NULL;
        fp_record r;
        fp_prm_result res;
        int ok = 0;
        if (fp_json_parse_record(&rec, line, len, fp_jsonl_path(rd), lineno) == FP_OK) {
            if (fp_record_parse(&r, rec, fp_prm_format_opts(prm)) == FP_OK) {
                if (fp_prm_score_record(prm, &r, &res) == FP_OK) ok = 1;
                fp_record_free(&r);
            }
            if (!ok) fp_error_prefix("%s:%ld: ", fp_jsonl_path(rd), lineno);
        }
        if (ok) {
            json_t *add = result_fields(&res, fp_prm_has_steps(prm));
            rc = fp_json_write_extended(out, line, len, rec, add);
            json_decref(add);
            fp_progress_add(bar, 1, res.n_tokens);
            fp_prm_result_free(&res);
        } else if (skip_bad) {
            nbad++;
            json_t *add = json_pack("{s:s}", "error", fp_last_error());
            rc = rec ? fp_json_write_extended(out, line, len, rec, add)
                     : (json_object_set_new(add, "line", json_integer(lineno)), fp_json_write_line(out, add));
            json_decref(add);
            fp_progress_add(bar, 1, 0);
        } else {
            json_decref(rec);
            status = cli_fail("score");
            break;
        }
        json_decref(rec);
        if (rc || fflush(out) != 0) { status = cli_fail("score: writing output"); break; }
    }
    if (status == EXIT_OK && rc != FP_ERANGE && rc != FP_OK) status = cli_fail("score");
    fp_progress_finish(bar);
    if (status == EXIT_OK) {
        if (fp_outfile_commit(of)) status = cli_fail("score");
        if (nbad && !quiet) cli_error("score: %ld of %ld records had errors (see their \"error\" field)", nbad, nrec);
    } else {
        fp_outfile_keep_partial(of); /* earlier records stay for --resume */
    }
    fp_prm_free(prm);
    fp_jsonl_close(rd);
    return status;
}
