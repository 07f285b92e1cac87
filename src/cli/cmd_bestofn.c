/* fluxprm bestofn: Best-of-N selection (PRM, majority vote, PRM-weighted vote) with accuracy and N-curve. */
#include "apps/bestofn.h"
#include "apps/prm_sources.h"
#include "base/json.h"
#include "cli/cli.h"
#include "cli/prm_opts.h"
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fputs("usage: fluxprm bestofn [options] in.jsonl > out.jsonl\n"
          "\n"
          "Best-of-N over N candidate responses per question (one JSONL record per question).  Each output\n"
          "record is the input record plus a \"bestofn\" object: per-candidate scores, answers, clusters and\n"
          "correctness, and the choice of each method (prm, majority, prm_vote).\n"
          "\n"
          "Scores come from a PRM (--model) or from a field of precomputed scores (--scores-field).\n"
          "\n"
          "  --responses-field F  list of N candidate responses (default \"responses\")\n"
          "  --scores-field F     list of N scores: numbers, step-reward lists, or {\"steps\",\"final\"}\n"
          "                       objects (default \"scores\"); r = aggregate(steps) + alpha*final\n"
          "  --final-field F      list of N final scores added as alpha*final to step-reward lists\n"
          "  --aggregate A        mean|min|last|prod step aggregation (default mean)\n"
          "  --alpha A            weight of the final score (default 1.0)\n"
          "  --answers-field F    list of N final answers (default: extracted from each response)\n"
          "  --gold-field F       gold answer (default \"gold\"; optional per record)\n"
          "  --correct-field F    list of N correctness labels (true/false/0/1) used instead of gold\n"
          "  --question-field F   question text (default: question|problem|prompt when present)\n"
          "model options (score each candidate as {question, response} with a PRM):\n"
          CLI_PRM_HELP
          "\n"
          "  -o, --output FILE    write records to FILE (atomically) instead of stdout\n"
          "  --report FILE        JSON summary: accuracies of prm, majority, prm_vote, pass_at_n, curve\n"
          "  --curve FILE.svg     accuracy vs N line chart (N = 1, 2, 4, ..., max N)\n"
          "  --skip-bad           report bad records on stderr and skip them (default: stop)\n"
          "  --quiet              no summary on stderr\n"
          "  -h, --help           this help\n"
          "\n"
          "Ties: prm → lowest index; votes → the cluster holding the earliest candidate.  The N-curve uses the\n"
          "first n candidates of each record.  Exit codes: 0 ok, 1 runtime error, 2 usage error.\n",
          f);
}

static void print_skip(void *ctx, const char *msg) {
    (void)ctx;
    fprintf(stderr, "fluxprm bestofn: skipped: %s\n", msg);
}

/* Writes the JSON report (kind 0) or the SVG curve (kind 1) into an uncommitted fp_outfile. */
static int write_side_file(fp_outfile *of, const fp_bestofn_report *rep, int kind) {
    FILE *f = fp_outfile_stream(of);
    if (kind == 1) return fp_bestofn_curve_svg(rep, f);
    json_t *j = fp_bestofn_report_json(rep);
    char *s = j ? json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(j);
    if (!s) { cli_error("out of memory"); return FP_ENOMEM; }
    int bad = fputs(s, f) < 0 || fputc('\n', f) == EOF;
    free(s);
    return bad ? FP_EIO : FP_OK;
}

int cmd_bestofn(int argc, char **argv) {
    enum { O_RESP = 256, O_SCORES, O_FINAL, O_AGG, O_ALPHA, O_ANS, O_GOLD, O_CORRECT, O_QUESTION, O_REPORT, O_CURVE,
           O_SKIP, O_QUIET };
    static const struct option lo[] = {
        {"responses-field", 1, 0, O_RESP}, {"scores-field", 1, 0, O_SCORES}, {"final-field", 1, 0, O_FINAL},
        {"aggregate", 1, 0, O_AGG}, {"alpha", 1, 0, O_ALPHA}, {"answers-field", 1, 0, O_ANS},
        {"gold-field", 1, 0, O_GOLD}, {"correct-field", 1, 0, O_CORRECT}, {"question-field", 1, 0, O_QUESTION},
        {"output", 1, 0, 'o'}, {"report", 1, 0, O_REPORT}, {"curve", 1, 0, O_CURVE}, {"skip-bad", 0, 0, O_SKIP},
        {"quiet", 0, 0, O_QUIET}, {"help", 0, 0, 'h'}, CLI_PRM_LONG_OPTIONS, {0, 0, 0, 0}};
    fp_prm_opts po;
    fp_prm_opts_default(&po);
    int scores_field_given = 0;
    fp_bestofn_opts o;
    fp_bestofn_opts_default(&o);
    fp_field_scorer fs = {"scores", NULL, FP_AGG_MEAN, 1.0};
    const char *out_path = NULL, *report = NULL, *curve = NULL;
    int quiet = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "o:h", lo, NULL)) != -1) {
        int handled = cli_prm_option("bestofn", c, optarg, &po);
        if (handled < 0) return EXIT_USAGE;
        if (handled) continue;
        switch (c) {
        case 'h': usage(stdout); return EXIT_OK;
        case 'o': out_path = optarg; break;
        case O_RESP: o.responses_field = optarg; break;
        case O_SCORES: fs.field = optarg; scores_field_given = 1; break;
        case O_FINAL: fs.final_field = optarg; break;
        case O_AGG: {
            int a = fp_aggregate_parse(optarg);
            if (a < 0) return cli_usage_error("bestofn", "--aggregate must be mean, min, last or prod (got '%s')", optarg);
            fs.agg = (fp_aggregate)a;
            break;
        }
        case O_ALPHA:
            if (cli_parse_double(optarg, &fs.alpha) || !isfinite(fs.alpha))
                return cli_usage_error("bestofn", "--alpha needs a number (got '%s')", optarg);
            break;
        case O_ANS: o.answers_field = optarg; break;
        case O_GOLD: o.gold_field = optarg; break;
        case O_CORRECT: o.correct_field = optarg; break;
        case O_QUESTION: o.question_field = optarg; break;
        case O_REPORT: report = optarg; break;
        case O_CURVE: curve = optarg; break;
        case O_SKIP: o.skip_bad = 1; break;
        case O_QUIET: quiet = 1; break;
        default:
            if (optopt) return cli_usage_error("bestofn", "option '%s' needs a value or is unknown", argv[optind - 1]);
            return cli_usage_error("bestofn", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) return cli_usage_error("bestofn", optind >= argc ? "missing input file" : "exactly one input file expected");
    const char *in_path = argv[optind];
    if (po.model_path && (scores_field_given || fs.final_field))
        return cli_usage_error("bestofn", "--model and --scores-field/--final-field are alternatives: give one");
    fp_prm *prm = NULL;
    if (po.model_path) {
        po.aggregate = fs.agg;
        po.alpha = fs.alpha;
        if (fp_prm_open(&prm, &po)) return cli_fail("bestofn");
        o.scorer = (fp_candidate_scorer){fp_prm_candidate_score, prm, po.model_path};
    } else {
        o.scorer = fp_field_scorer_make(&fs);
    }
    o.on_skip = print_skip;

    /* Every output goes to a temporary file; all are renamed into place only when everything succeeded. */
    fp_outfile *of = NULL, *side[2] = {NULL, NULL};
    const char *side_path[2] = {report, curve};
    if (fp_outfile_open(&of, out_path, 0)) { fp_prm_free(prm); return cli_fail(""); }
    for (int k = 0; k < 2; k++)
        if (side_path[k] && fp_outfile_open(&side[k], side_path[k], 0)) {
            fp_outfile_abort(of);
            if (k) fp_outfile_abort(side[0]);
            fp_prm_free(prm);
            return cli_fail("");
        }
    fp_bestofn_report *rep = calloc(1, sizeof *rep);
    int ret = EXIT_OK;
    if (!rep) { cli_error("out of memory"); ret = EXIT_RUNTIME; }
    else {
        o.progress = fp_progress_new("bestofn", 0, cli_progress_stream(quiet));
        int rc = fp_bestofn_run(&o, in_path, fp_outfile_stream(of), rep);
        fp_progress_finish(o.progress);
        if (rc) ret = cli_fail("bestofn");
    }
    for (int k = 0; k < 2 && !ret; k++)
        if (side[k] && write_side_file(side[k], rep, k)) {
            cli_error("%s: cannot write: %s", side_path[k], fp_last_error());
            ret = EXIT_RUNTIME;
        }
    if (ret) {
        fp_outfile_abort(of);
        for (int k = 0; k < 2; k++) fp_outfile_abort(side[k]);
        free(rep);
        fp_prm_free(prm);
        return ret;
    }
    if (fp_outfile_commit(of)) ret = cli_fail("");
    for (int k = 0; k < 2; k++) {
        if (!side[k]) continue;
        if (ret) fp_outfile_abort(side[k]);
        else if (fp_outfile_commit(side[k])) ret = cli_fail("");
    }
    if (!quiet) {
        fprintf(stderr, "bestofn: %ld questions (N = %zu..%zu), %ld skipped, %ld with gold/labels\n", rep->n_questions,
                rep->min_n, rep->max_n, rep->n_skipped, rep->n_evaluated);
        if (rep->n_evaluated) {
            fprintf(stderr, "  %-6s %8s %8s %8s %10s\n", "N", "prm", "majority", "prm_vote", "pass@N");
            for (size_t p = 0; p < rep->n_points; p++)
                fprintf(stderr, "  %-6g %8.4f %8.4f %8.4f %10.4f\n", rep->curve_n[p],
                        (double)rep->curve_correct[p][0] / (double)rep->n_evaluated,
                        (double)rep->curve_correct[p][1] / (double)rep->n_evaluated,
                        (double)rep->curve_correct[p][2] / (double)rep->n_evaluated,
                        (double)rep->curve_correct[p][3] / (double)rep->n_evaluated);
        }
        if (rep->n_evaluated && rep->n_evaluated < rep->n_questions)
            fprintf(stderr, "  note: %ld records have no gold/labels and are left out of the accuracies\n",
                    rep->n_questions - rep->n_evaluated);
    }
    free(rep);
    fp_prm_free(prm);
    return ret;
}
