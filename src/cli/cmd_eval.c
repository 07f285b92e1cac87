/* fluxprm eval: ProcessBench-style evaluation of a PRM (or of step rewards already in the records). */
#include "apps/eval.h"
#include "apps/prm.h"
#include "base/json.h"
#include "cli/cli.h"
#include "cli/prm_opts.h"
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void eval_help(FILE *f) {
    fprintf(f,
"usage: fluxprm eval [options] in.json|in.jsonl\n"
"\n"
"ProcessBench evaluation: for each record with step labels, the predicted first wrong step is the first\n"
"step whose reward is below --threshold (none: -1).  Prints a JSON report with the accuracy on erroneous\n"
"samples (label >= 0: predicted == label), on correct samples (label == -1: predicted == -1) and F1, their\n"
"harmonic mean.  Input: ProcessBench records {problem, steps, label} as a JSON array or JSONL.\n"
"Step rewards come from a PRM (--model) or from a field of records that `fluxprm score` already wrote.\n"
"\n"
"options:\n"
CLI_PRM_HELP
"  --rewards-field F    read step rewards from this field instead of running a model (e.g. step_rewards)\n"
"  --label-field F      index of the first wrong step, -1 when all are right (default label)\n"
"  --threshold T        reward below T marks a step wrong (default 0.5)\n"
"  --report FILE        write the JSON report here (atomically) instead of stdout\n"
"  -q, --quiet          no progress bar\n"
"  -h, --help           this help\n"
"\n"
"Exit status: 0 ok, 1 runtime error (names file:record), 2 usage error.\n");
}

enum { OPT_REWARDS = 256, OPT_LABEL, OPT_THRESHOLD, OPT_REPORT };

static int rewards_from_field(const json_t *rec, const char *field, double **r, size_t *n) {
    json_t *a = json_object_get(rec, field);
    if (!json_is_array(a)) return fp_errorf(FP_EINVAL, "field \"%s\" must be an array of numbers", field);
    *n = json_array_size(a);
    *r = fp_malloc((*n ? *n : 1) * sizeof **r);
    if (!*r) return FP_ENOMEM;
    for (size_t i = 0; i < *n; i++) {
        json_t *v = json_array_get(a, i);
        if (!json_is_number(v)) { free(*r); return fp_errorf(FP_EINVAL, "field \"%s\"[%zu] is not a number", field, i); }
        (*r)[i] = json_number_value(v);
    }
    return FP_OK;
}

int cmd_eval(int argc, char **argv) {
    static const struct option lopts[] = {
        CLI_PRM_LONG_OPTIONS, {"rewards-field", required_argument, 0, OPT_REWARDS},
        {"label-field", required_argument, 0, OPT_LABEL}, {"threshold", required_argument, 0, OPT_THRESHOLD},
        {"report", required_argument, 0, OPT_REPORT}, {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    fp_prm_opts po;
    fp_prm_opts_default(&po);
    po.final_mode = FP_FINAL_NONE;
    const char *rewards_field = NULL, *label_field = "label", *report = NULL;
    double threshold = 0.5;
    int quiet = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":qh", lopts, NULL)) != -1) {
        int handled = cli_prm_option("eval", c, optarg, &po);
        if (handled < 0) return EXIT_USAGE;
        if (handled) continue;
        switch (c) {
        case OPT_REWARDS: rewards_field = optarg; break;
        case OPT_LABEL: label_field = optarg; break;
        case OPT_THRESHOLD:
            if (cli_parse_double(optarg, &threshold) || !isfinite(threshold)) return cli_usage_error("eval", "--threshold needs a number, got '%s'", optarg);
            break;
        case OPT_REPORT: report = optarg; break;
        case 'q': quiet = 1; break;
        case 'h': eval_help(stdout); return EXIT_OK;
        case ':': return cli_usage_error("eval", "option '%s' needs a value", argv[optind - 1]);
        default: return cli_usage_error("eval", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (!po.model_path == !rewards_field) return cli_usage_error("eval", "give exactly one of --model and --rewards-field");
    if (optind != argc - 1) return cli_usage_error("eval", "exactly one input file expected");
    fp_jsonl_reader *rd;
    if (fp_jsonl_open(&rd, argv[optind])) return cli_fail("eval");
    fp_prm *prm = NULL;
    if (po.model_path && fp_prm_open(&prm, &po)) { fp_jsonl_close(rd); return cli_fail("eval"); }
    fp_progress *bar = fp_progress_new("eval", 0, cli_progress_stream(quiet));
    fp_pb_stats st = {0};
    int status = EXIT_OK, rc;
    const char *line;
    size_t len;
    long tokens = 0;
    while ((rc = fp_jsonl_next_line(rd, &line, &len)) == FP_OK) {
        long lineno = fp_jsonl_line_number(rd);
        json_t *rec;
        if (fp_json_parse_record(&rec, line, len, fp_jsonl_path(rd), lineno)) { status = cli_fail("eval"); break; }
        double *r = NULL;
        size_t n = 0;
        json_t *lab = json_object_get(rec, label_field);
        if (!json_is_integer(lab)) rc = fp_errorf(FP_EINVAL, "field \"%s\" must be an integer step index (-1: all correct)", label_field);
        else if (rewards_field) rc = rewards_from_field(rec, rewards_field, &r, &n);
        else {
            fp_record fr;
            fp_prm_result res;
            rc = fp_record_parse(&fr, rec, fp_prm_format_opts(prm));
            if (rc == FP_OK) {
                rc = fp_prm_score_record(prm, &fr, &res);
                fp_record_free(&fr);
                if (rc == FP_OK) {
                    r = res.step_rewards;
                    n = res.n_steps;
                    tokens += res.n_tokens;
                }
            }
        }
        if (rc == FP_OK) fp_pb_add(&st, (long)json_integer_value(lab), fp_pb_first_error(r, n, threshold));
        free(r);
        json_decref(rec);
        if (rc) {
            fp_error_prefix("%s:%ld: ", fp_jsonl_path(rd), lineno);
            status = cli_fail("eval");
            break;
        }
        fp_progress_add(bar, 1, tokens);
        tokens = 0;
    }
    if (status == EXIT_OK && rc != FP_ERANGE) status = cli_fail("eval");
    fp_progress_finish(bar);
    if (status == EXIT_OK) {
        json_t *rep = json_pack("{s:f, s:{s:I, s:f}, s:{s:I, s:f}, s:f, s:s}", "threshold", threshold,
                                "erroneous", "n", (json_int_t)st.n_erroneous, "acc", fp_pb_acc_erroneous(&st),
                                "correct", "n", (json_int_t)st.n_correct, "acc", fp_pb_acc_correct(&st),
                                "f1", fp_pb_f1(&st), "source", po.model_path ? po.model_path : rewards_field);
        fp_outfile *of;
        if (fp_outfile_open(&of, report, 0)) status = cli_fail("eval");
        else {
            char *s = json_dumps(rep, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
            fprintf(fp_outfile_stream(of), "%s\n", s);
            free(s);
            if (fp_outfile_commit(of)) status = cli_fail("eval");
        }
        json_decref(rep);
    }
    fp_prm_free(prm);
    fp_jsonl_close(rd);
    return status;
}
