/* fluxprm score: per-step rewards, final reward and trajectory score for each JSONL record. */
#include "apps/prm.h"
#include "base/json.h"
#include "cli/cli.h"
#include "cli/prm_opts.h"
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

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
CLI_PRM_HELP
"  --aggregate A        mean | min | last | prod (default mean)\n"
"  --alpha A            weight of the final reward in the score (default 1.0)\n"
"  -o, --output FILE    write here (atomically: FILE.partial, renamed when done) instead of stdout\n"
"  --resume             continue an interrupted run of the same -o FILE without rescoring its records\n"
"  --skip-bad           write {..., \"error\": \"...\"} for a bad record and go on (default: stop, exit 1)\n"
"  -q, --quiet          no progress bar\n"
"  -h, --help           this help\n"
"\n"
"Exit status: 0 ok, 1 runtime error (bad model or record; earlier output is kept for --resume), 2 usage.\n");
}

enum { OPT_AGG = 256, OPT_ALPHA, OPT_RESUME, OPT_SKIP_BAD };

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
        CLI_PRM_LONG_OPTIONS, {"aggregate", required_argument, 0, OPT_AGG}, {"alpha", required_argument, 0, OPT_ALPHA},
        {"output", required_argument, 0, 'o'}, {"resume", no_argument, 0, OPT_RESUME},
        {"skip-bad", no_argument, 0, OPT_SKIP_BAD}, {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    fp_prm_opts po;
    fp_prm_opts_default(&po);
    const char *out_path = NULL;
    int resume = 0, skip_bad = 0, quiet = 0, c;
    double d;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:qh", lopts, NULL)) != -1) {
        int handled = cli_prm_option("score", c, optarg, &po);
        if (handled < 0) return EXIT_USAGE;
        if (handled) continue;
        switch (c) {
        case OPT_AGG:
            if ((c = fp_aggregate_parse(optarg)) < 0) return cli_usage_error("score", "--aggregate must be mean, min, last or prod, got '%s'", optarg);
            po.aggregate = (fp_aggregate)c;
            break;
        case OPT_ALPHA:
            if (cli_parse_double(optarg, &d) || !isfinite(d)) return cli_usage_error("score", "--alpha needs a number, got '%s'", optarg);
            po.alpha = d;
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
    fp_progress *bar = fp_progress_new("score", cli_progress_enabled(quiet) ? cli_count_records(in) : 0, cli_progress_stream(quiet));
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
