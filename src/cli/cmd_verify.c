/* fluxprm verify: stream JSONL records, extract each record's final answer and compare it with the gold
 * answer; writes the records with "extracted", "rule" and "correct" added to stdout. */
#include "cli/cli.h"
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static void verify_help(FILE *f) {
    fprintf(f,
            "usage: fluxprm verify [options] [in.jsonl|-]\n"
            "\n"
            "Reads JSONL records (stdin when no file or '-'), extracts the final answer from the prediction\n"
            "field (a whole solution or a bare answer: last \\boxed{}, '#### n', 'The answer is ...', 'A: n',\n"
            "a bare answer, else the last number), extracts the gold answer the same way (so a full GSM8K\n"
            "answer with '#### n' works), compares them (LaTeX normalisation, numeric tolerance 1e-6\n"
            "relative / 1e-9 absolute, tuples/sets/intervals, algebraic equivalence), and writes each record\n"
            "to stdout with three fields added:\n"
            "  \"extracted\"  the predicted final answer (string, or null when none was found)\n"
            "  \"rule\"       which extraction rule fired: boxed, gsm8k_hash, answer_is, bare, last_number, none\n"
            "  \"correct\"    true/false\n"
            "A summary line goes to stderr.\n"
            "\n"
            "options:\n"
            "  --pred-field F   field holding the prediction (default: response)\n"
            "  --gold-field G   field holding the gold answer (default: gold)\n"
            "  --skip-bad       skip (with a warning) records that are not valid JSON objects or lack a field,\n"
            "                   instead of stopping with exit status 1\n"
            "  -q, --quiet      no summary line\n"
            "  -h, --help       this help\n"
            "\n"
            "Fields may be strings or numbers.  Exit status: 0 ok, 1 runtime error (unreadable input, bad\n"
            "record without --skip-bad, write failure), 2 usage error.\n");
}

/* Returns a malloc'd string for a string or number field; NULL with *why set otherwise. */
static char *field_text(json_t *obj, const char *name, const char **why) {
    json_t *v = json_object_get(obj, name);
    if (!v) { *why = "missing"; return NULL; }
    if (json_is_string(v)) return strdup(json_string_value(v));
    char buf[64];
    if (json_is_integer(v)) { snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v)); return strdup(buf); }
    if (json_is_real(v)) { snprintf(buf, sizeof buf, "%.17g", json_real_value(v)); return strdup(buf); }
    *why = "not a string or number";
    return NULL;
}

int cmd_verify(int argc, char **argv) {
    const char *pred_field = "response", *gold_field = "gold", *in = NULL;
    int skip_bad = 0, quiet = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = NULL;
        const char *val = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { verify_help(stdout); return EXIT_OK; }
        if (!strcmp(a, "--skip-bad")) { skip_bad = 1; continue; }
        if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) { quiet = 1; continue; }
        if (!strncmp(a, "--pred-field", 12)) dst = &pred_field;
        else if (!strncmp(a, "--gold-field", 12)) dst = &gold_field;
        if (dst && a[12] == '=') val = a + 13;
        else if (dst && a[12] == 0) {
            if (i + 1 >= argc) return cli_usage_error("verify", "%s needs a value", a);
            val = argv[++i];
        } else if (!strcmp(a, "-") || a[0] != '-') {
            if (in) return cli_usage_error("verify", "more than one input file ('%s' and '%s')", in, a);
            in = a;
            continue;
        } else {
            return cli_usage_error("verify", "unknown option '%s'", a);
        }
        if (!*val) return cli_usage_error("verify", "%.12s needs a non-empty value", a);
        *dst = val;
    }

    fp_jsonl_reader *r;
    if (fp_jsonl_open(&r, in) != FP_OK) return cli_fail("verify");
    const char *path = fp_jsonl_path(r);
    long records = 0, correct = 0, skipped = 0;
    int status = EXIT_OK;
    for (;;) {
        const char *line;
        size_t len;
        int rc = fp_jsonl_next_line(r, &line, &len);
        if (rc == FP_ERANGE) break;
        if (rc != FP_OK) { status = cli_fail("verify"); break; }
        long ln = fp_jsonl_line_number(r);
        json_error_t err;
        json_t *obj = json_loadb(line, len, 0, &err);
        char problem[512] = "";
        char *pred = NULL, *gold = NULL;
        if (!obj) snprintf(problem, sizeof problem, "invalid JSON: %s", err.text);
        else if (!json_is_object(obj)) snprintf(problem, sizeof problem, "record is not a JSON object");
        else {
            const char *why = NULL;
            if (!(pred = field_text(obj, pred_field, &why)))
                snprintf(problem, sizeof problem, "field '%s' %s", pred_field, why);
            else if (!(gold = field_text(obj, gold_field, &why)))
                snprintf(problem, sizeof problem, "field '%s' %s", gold_field, why);
        }
        if (problem[0]) {
            free(pred);
            free(gold);
            json_decref(obj);
            if (skip_bad) {
                cli_error("verify: %s:%ld: %s (skipped)", path, ln, problem);
                skipped++;
                continue;
            }
            cli_error("verify: %s:%ld: %s", path, ln, problem);
            status = EXIT_RUNTIME;
            break;
        }
        int ok = 0;
        char *ex = NULL;
        const char *rule = "none";
        rc = fp_verify_check(pred, gold, &ok, &ex, &rule);
        free(pred);
        free(gold);
        if (rc != FP_OK) {
            json_decref(obj);
            cli_error("verify: %s:%ld: %s", path, ln, fp_last_error());
            status = EXIT_RUNTIME;
            break;
        }
        json_t *js = ex ? json_string(ex) : NULL; /* NULL also for (impossible) invalid UTF-8 */
        json_object_set_new(obj, "extracted", js ? js : json_null());
        json_object_set_new(obj, "rule", json_string(rule));
        json_object_set_new(obj, "correct", json_boolean(ok));
        free(ex);
        if (json_dumpf(obj, stdout, JSON_COMPACT) != 0 || fputc('\n', stdout) == EOF) {
            json_decref(obj);
            cli_error("verify: write error on stdout");
            status = EXIT_RUNTIME;
            break;
        }
        json_decref(obj);
        records++;
        correct += ok;
    }
    fp_jsonl_close(r);
    if (fflush(stdout) != 0 && status == EXIT_OK) {
        cli_error("verify: write error on stdout");
        status = EXIT_RUNTIME;
    }
    if (!quiet && status == EXIT_OK)
        fprintf(stderr, "verify: %ld records, %ld correct (%.2f%%), %ld skipped\n", records, correct,
                records ? 100.0 * (double)correct / (double)records : 0.0, skipped);
    return status;
}
