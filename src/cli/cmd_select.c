/* fluxprm select: keep the top-K records of a pool by r̂ = aggregate(steps) + α·final, in O(K) memory. */
#include "apps/prm_sources.h"
#include "apps/select.h"
#include "base/json.h"
#include "cli/cli.h"
#include "cli/prm_opts.h"
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f) {
    fputs("usage: fluxprm select (--top-k K | --top-frac F) [options] [-o out.jsonl] pool.jsonl\n"
          "\n"
          "Keeps the K best records of a scored pool by r = aggregate(step rewards) + alpha*final.  The pool\n"
          "is streamed (memory O(K): only scores and byte offsets are kept) and must be a regular file: the\n"
          "kept records are re-read by offset and copied verbatim.  Ties: the earlier record wins.\n"
          "\n"
          "Scores come from a PRM (--model: every record scored as `fluxprm score` does) or from a field.\n"
          "\n"
          "  --scores-field F   per-record score: a number (r itself), a list of step rewards, or\n"
          "                     {\"steps\": [...], \"final\": f} (default \"score\")\n"
          "  --final-field F    record-level final score added as alpha*final to step-reward lists\n"
          "  --aggregate A      mean|min|last|prod step aggregation (default mean)\n"
          "  --alpha A          weight of the final score (default 1.0)\n"
          "  --top-k K          keep K records\n"
          "  --top-frac F       keep ceil(F * records) records, 0 < F <= 1 (records = non-blank lines)\n"
          "  --order O          input (default: kept records in pool order) | score (best first)\n"
          "  --annotate         add \"select\": {\"score\", \"rank\"} to each kept record\n"
          "model options (score each pool record with a PRM):\n"
          CLI_PRM_HELP
          "\n"
          "  -o, --output FILE  output JSONL (written atomically; default stdout)\n"
          "  --summary FILE     JSON summary: counts, score statistics, histogram, input/params fingerprint\n"
          "  --histogram FILE   SVG histogram of all scores with the kept ones highlighted\n"
          "  --bins B           histogram bins (default 40)\n"
          "  --resume           do nothing when -o already holds the complete result for this input and\n"
          "                     these parameters (checked against the summary; default <out>.summary.json)\n"
          "  --skip-bad         report bad records on stderr and leave them out (default: stop)\n"
          "  --quiet            no summary on stderr\n"
          "  -h, --help         this help\n"
          "\n"
          "Under `mpirun -np P` (a `make MPI=1` build) the P ranks share the pool by byte ranges and rank 0 writes\n"
          "the same output, summary and histogram as one process would (see docs/apps.md).\n"
          "\n"
          "Exit codes: 0 ok, 1 runtime error, 2 usage error.\n",
          f);
}

/* Where skip reports go: stderr, except on MPI ranks other than 0, whose stderr is silenced (rank 0 reports
 * usage and errors for all ranks) while their skip reports still go to the real stderr. */
static FILE *skip_stream;

static void print_skip(void *ctx, const char *msg) {
    (void)ctx;
    fprintf(skip_stream ? skip_stream : stderr, "fluxprm select: skipped: %s\n", msg);
}

static int write_json_pretty(FILE *f, json_t *j) {
    char *s = j ? json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(9)) : NULL;
    if (!s) return fp_errorf(FP_ENOMEM, "cannot serialise the summary");
    int bad = fputs(s, f) < 0 || fputc('\n', f) == EOF;
    free(s);
    return bad ? fp_errorf(FP_EIO, "write failed") : FP_OK;
}

static fp_prm *select_prm; /* the model source, when --model is given (freed by cmd_select) */

/* rank, size: this process in an MPI run (0, 1 otherwise: then everything is the single-process path). */
static int select_main(int argc, char **argv, int rank, int size) {
    enum { O_SCORES = 256, O_FINAL, O_AGG, O_ALPHA, O_TOPK, O_FRAC, O_ORDER, O_ANNOTATE, O_SUMMARY, O_HIST, O_BINS,
           O_RESUME, O_SKIP, O_QUIET };
    static const struct option lo[] = {
        {"scores-field", 1, 0, O_SCORES}, {"final-field", 1, 0, O_FINAL}, {"aggregate", 1, 0, O_AGG},
        {"alpha", 1, 0, O_ALPHA}, {"top-k", 1, 0, O_TOPK}, {"top-frac", 1, 0, O_FRAC}, {"order", 1, 0, O_ORDER},
        {"annotate", 0, 0, O_ANNOTATE}, {"output", 1, 0, 'o'}, {"summary", 1, 0, O_SUMMARY}, CLI_PRM_LONG_OPTIONS,
        {"histogram", 1, 0, O_HIST}, {"bins", 1, 0, O_BINS}, {"resume", 0, 0, O_RESUME}, {"skip-bad", 0, 0, O_SKIP},
        {"quiet", 0, 0, O_QUIET}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    fp_select_opts o;
    fp_select_opts_default(&o);
    const char *out_path = NULL, *summary = NULL, *hist = NULL;
    int quiet = 0, resume = 0, have_k = 0, have_frac = 0, c;
    long v;
    optind = 1;
    opterr = 0;
    fp_prm_opts po;
    fp_prm_opts_default(&po);
    int field_given = 0;
    while ((c = getopt_long(argc, argv, "o:h", lo, NULL)) != -1) {
        int handled = cli_prm_option("select", c, optarg, &po);
        if (handled < 0) return EXIT_USAGE;
        if (handled) continue;
        switch (c) {
        case 'h': if (rank == 0) usage(stdout); return EXIT_OK;
        case 'o': out_path = optarg; break;
        case O_SCORES: o.scores_field = optarg; field_given = 1; break;
        case O_FINAL: o.final_field = optarg; field_given = 1; break;
        case O_AGG: {
            int a = fp_aggregate_parse(optarg);
            if (a < 0) return cli_usage_error("select", "--aggregate must be mean, min, last or prod (got '%s')", optarg);
            o.agg = (fp_aggregate)a;
            break;
        }
        case O_ALPHA:
            if (cli_parse_double(optarg, &o.alpha) || !isfinite(o.alpha))
                return cli_usage_error("select", "--alpha needs a number (got '%s')", optarg);
            break;
        case O_TOPK:
            if (cli_parse_long(optarg, &v) || v < 1) return cli_usage_error("select", "--top-k needs an integer >= 1 (got '%s')", optarg);
            o.top_k = v;
            have_k = 1;
            break;
        case O_FRAC:
            if (cli_parse_double(optarg, &o.top_frac) || !(o.top_frac > 0 && o.top_frac <= 1))
                return cli_usage_error("select", "--top-frac needs a number in (0, 1] (got '%s')", optarg);
            have_frac = 1;
            break;
        case O_ORDER:
            if (!strcmp(optarg, "input")) o.order = FP_SELECT_ORDER_INPUT;
            else if (!strcmp(optarg, "score")) o.order = FP_SELECT_ORDER_SCORE;
            else return cli_usage_error("select", "--order must be input or score (got '%s')", optarg);
            break;
        case O_ANNOTATE: o.annotate = 1; break;
        case O_SUMMARY: summary = optarg; break;
        case O_HIST: hist = optarg; break;
        case O_BINS:
            if (cli_parse_long(optarg, &v) || v < 1 || v > 100000)
                return cli_usage_error("select", "--bins needs an integer in 1..100000 (got '%s')", optarg);
            o.bins = (size_t)v;
            break;
        case O_RESUME: resume = 1; break;
        case O_SKIP: o.skip_bad = 1; break;
        case O_QUIET: quiet = 1; break;
        default:
            if (optopt) return cli_usage_error("select", "option '%s' needs a value or is unknown", argv[optind - 1]);
            return cli_usage_error("select", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) return cli_usage_error("select", optind >= argc ? "missing pool file" : "exactly one pool file expected");
    if (po.model_path && field_given)
        return cli_usage_error("select", "--model and --scores-field/--final-field are alternatives: give one");
    if (have_k == have_frac) return cli_usage_error("select", "give exactly one of --top-k and --top-frac");
    if (resume && (!out_path || !strcmp(out_path, "-"))) return cli_usage_error("select", "--resume needs -o FILE");
    if (po.model_path) {
        po.aggregate = o.agg;
        po.alpha = o.alpha;
        int prc = fp_prm_open(&select_prm, &po);
        if (size > 1) prc = fp_select_mpi_agree(prc); /* every rank loads the model; any failure stops all */
        if (prc) return cli_fail("select");
        o.scorer = (fp_record_scorer){fp_prm_record_score, select_prm, po.model_path};
    }
    const char *in_path = argv[optind];
    o.on_skip = print_skip;

    char *auto_summary = NULL;
    if (resume && !summary) {
        size_t n = strlen(out_path) + 16;
        auto_summary = malloc(n);
        if (!auto_summary) { cli_error("out of memory"); return EXIT_RUNTIME; }
        snprintf(auto_summary, n, "%s.summary.json", out_path);
        summary = auto_summary;
    }
    int complete = resume && fp_select_is_complete(&o, in_path, out_path, summary) && (!hist || access(hist, F_OK) == 0);
    if (size > 1) complete = fp_select_mpi_bcast_int(complete); /* rank 0's files decide */
    if (complete) {
        if (!quiet) fprintf(stderr, "select: %s is complete for this input and parameters (see %s); nothing to do\n", out_path, summary);
        free(auto_summary);
        return EXIT_OK;
    }

    /* All outputs go to temporary files and are renamed into place only when everything succeeded;
     * the summary (the completion marker for --resume) is renamed last. */
    fp_outfile *of = NULL, *hf = NULL, *sf = NULL;
    fp_select_stats st;
    memset(&st, 0, sizeof st);
    int ret = EXIT_OK;
    const int writer = rank == 0; /* in an MPI run only rank 0 opens and writes the output files */
    int orc = writer ? fp_outfile_open(&of, out_path, 0) : FP_OK;
    if (size > 1) orc = fp_select_mpi_agree(orc);
    if (orc) { free(auto_summary); return cli_fail(""); }
    if (writer && hist && fp_outfile_open(&hf, hist, 0)) ret = cli_fail("");
    if (writer && !ret && summary && fp_outfile_open(&sf, summary, 0)) ret = cli_fail("");
    if (size > 1 && fp_select_mpi_agree(ret ? FP_EIO : FP_OK)) ret = EXIT_RUNTIME;
    if (!ret) {
        o.progress = fp_progress_new("select", 0, cli_progress_stream(quiet || !writer));
        int rc = size > 1 ? fp_select_run_mpi(&o, in_path, of ? fp_outfile_stream(of) : NULL, &st)
                          : fp_select_run(&o, in_path, fp_outfile_stream(of), &st);
        fp_progress_finish(o.progress);
        if (rc) ret = cli_fail("select");
    }
    if (!ret && hf && fp_select_histogram_svg(&st, fp_outfile_stream(hf))) ret = cli_fail(hist);
    if (!ret && sf) {
        long long out_size = -1;
        if (out_path && strcmp(out_path, "-")) {
            if (fflush(fp_outfile_stream(of)) == 0) out_size = (long long)ftello(fp_outfile_stream(of));
        }
        json_t *j = fp_select_summary_json(&o, &st, in_path, out_path, out_size);
        if (write_json_pretty(fp_outfile_stream(sf), j)) ret = cli_fail(summary);
        json_decref(j);
    }
    if (ret) {
        fp_outfile_abort(of);
        fp_outfile_abort(hf);
        fp_outfile_abort(sf);
    } else if (writer) {
        if (fp_outfile_commit(of)) ret = cli_fail("");
        if (hf) { if (ret) fp_outfile_abort(hf); else if (fp_outfile_commit(hf)) ret = cli_fail(""); }
        if (sf) { if (ret) fp_outfile_abort(sf); else if (fp_outfile_commit(sf)) ret = cli_fail(""); }
    }
    if (!ret && !quiet && writer) {
        fprintf(stderr, "select: %ld records, %ld scored, %ld skipped; kept %ld (K = %ld), dropped %ld\n", st.n_records,
                st.n_scored, st.n_skipped, st.n_kept, st.k, st.n_dropped);
        if (st.n_scored)
            fprintf(stderr, "  score: min %.6g, mean %.6g, max %.6g; kept: min %.6g, mean %.6g\n", st.min, st.mean, st.max,
                    st.kept_min, st.kept_mean);
    }
    fp_select_stats_free(&st);
    free(auto_summary);
    return ret;
}

int cmd_select(int argc, char **argv) {
    int rank = 0, size = 1, saved = -1;
    if (fp_select_mpi_init(&rank, &size)) return cli_fail("select"); /* size 1 unless built with MPI and under mpirun */
    if (size > 1 && rank != 0) {
        /* rank 0 speaks for all ranks (errors are agreed on collectively); keep the real stderr for skips */
        fflush(stderr);
        int nul = open("/dev/null", O_WRONLY);
        saved = dup(2);
        if (nul >= 0 && saved >= 0 && dup2(nul, 2) >= 0) skip_stream = fdopen(dup(saved), "w");
        if (nul >= 0) close(nul);
    }
    int rc = select_main(argc, argv, rank, size);
    fp_prm_free(select_prm);
    select_prm = NULL;
    if (size > 1) rc = fp_select_mpi_max_int(rc); /* one exit status for the whole run */
    fp_select_mpi_finalize();
    if (skip_stream) fclose(skip_stream);
    skip_stream = NULL;
    if (saved >= 0) {
        fflush(stderr);
        dup2(saved, 2);
        close(saved);
    }
    return rc;
}
