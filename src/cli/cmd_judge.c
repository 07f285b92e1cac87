/* fluxprm judge: step-quality scores (spec §2.1 r_qual) and optional reasoning templates (§2.2) for JSONL
 * records from an OpenAI-compatible LLM judge, with a response cache so reruns pay nothing twice. */
#include "base/json.h"
#include "cli/cli.h"
#include "format/format.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void judge_help(FILE *f) {
    fputs("usage: fluxprm judge --model NAME [options] [in.jsonl|-]\n"
          "\n"
          "Scores every thinking step of each JSONL record with an LLM judge at an OpenAI-compatible\n"
          "POST {base-url}/v1/chat/completions, asking for {\"score\": 0..10} (json_schema response_format,\n"
          "falling back to json_object, then plain text, when the server answers 400).  Records are those\n"
          "`fluxprm score` reads (s1K thinking_trajectories + attempt, question + thinking + response,\n"
          "<think> tags, question + steps, ...).  The judged steps are the thinking steps when the record has\n"
          "them, else all steps; the final response is the record's response (or \"(not given)\").\n"
          "Each record is written with fields added:\n"
          "  \"judge_scores\"    one number in [0, 10] per judged step (null where the judge failed)\n"
          "  \"judge_errors\"    per-step error messages (only when a step failed)\n"
          "  \"judge_template\"  the reasoning template (with --templates; null on failure)\n"
          "A summary line (requests, cache hits, retries, tokens) goes to stderr.\n"
          "\n"
          "options:\n"
          "  --model NAME          judge model (required)\n"
          "  --base-url URL        server (default http://127.0.0.1:8080)\n"
          "  --api-key-env NAME    environment variable holding the API key (default OPENAI_API_KEY;\n"
          "                        unset = no Authorization header).  The key is never printed.\n"
          "  --cache DIR           response cache: a rerun sends no request already answered\n"
          "  --concurrency N       requests in flight (default 4)\n"
          "  --retries N           retries per request on 429/5xx/timeouts/connection errors (default 6)\n"
          "  --timeout S           per-attempt timeout in seconds (default 120)\n"
          "  --temperature T       (default 0)      --seed N   (default 0; -1 omits it)\n"
          "  --max-tokens N        per score (default 64)\n"
          "  --format F            auto (default), json_schema, json_object or text\n"
          "  --integer-scores      the schema asks for an integer 0..10\n"
          "  --step-prompt FILE    (default prompts/judge_step.txt)\n"
          "  --template-prompt FILE (default prompts/judge_template.txt)\n"
          "  --templates           also write a reasoning template per record\n"
          "  --batch N             records sent per concurrent batch (default 32)\n"
          "  -o, --output FILE     write here atomically (default stdout)\n"
          "  --skip-bad            skip records that cannot be parsed instead of stopping\n"
          "  -q, --quiet           no progress bar or summary\n"
          "  -h, --help            this help\n"
          "\n"
          "Exit status: 0 ok, 1 runtime error (also when any step could not be scored: the output is still\n"
          "complete, with nulls and judge_errors), 2 usage error.  See docs/reward.md.\n",
          f);
}

typedef struct {
    char *line;
    size_t len;
    json_t *obj;
    fp_record rec;
    const char **steps;
    fp_judge_traj traj;
} pending;

static void pending_free(pending *p) {
    free(p->line);
    json_decref(p->obj);
    fp_record_free(&p->rec);
    free(p->steps);
    memset(p, 0, sizeof *p);
}

static const char NO_RESPONSE[] = "(not given)";

/* Judges and writes one batch.  Returns EXIT_OK, or EXIT_RUNTIME on a write/memory failure. */
static int flush_batch(fp_judge *j, pending *b, size_t n, int templates, FILE *out, long *steps_ok, long *steps_bad,
                       long *tmpl_bad) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += b[i].traj.n_steps;
    fp_judge_traj *t = calloc(n ? n : 1, sizeof *t);
    fp_judge_score *sc = calloc(total ? total : 1, sizeof *sc);
    char **tm = calloc(n ? n : 1, sizeof *tm);
    int *tst = calloc(n ? n : 1, sizeof *tst);
    if (!t || !sc || !tm || !tst) { free(t); free(sc); free(tm); free(tst); cli_error("judge: out of memory"); return EXIT_RUNTIME; }
    for (size_t i = 0; i < n; i++) t[i] = b[i].traj;
    fp_judge_step_scores(j, t, n, sc);
    if (templates) fp_judge_templates(j, t, n, tm, tst);
    int status = EXIT_OK;
    size_t k = 0;
    for (size_t i = 0; i < n && status == EXIT_OK; i++) {
        json_t *added = json_object(), *scores = json_array(), *errs = NULL;
        for (size_t s = 0; s < t[i].n_steps; s++, k++) {
            if (sc[k].status == FP_OK) {
                json_array_append_new(scores, json_real(sc[k].score));
                (*steps_ok)++;
            } else {
                json_array_append_new(scores, json_null());
                (*steps_bad)++;
            }
        }
        size_t k0 = k - t[i].n_steps;
        for (size_t s = 0; s < t[i].n_steps; s++) {
            if (sc[k0 + s].status == FP_OK) continue;
            if (!errs) {
                errs = json_array();
                for (size_t q = 0; q < t[i].n_steps; q++) json_array_append_new(errs, json_null());
            }
            /* "trajectory <i> step <t>: ..." -> "step <t>: ..." (i counts within the batch, not the file) */
            const char *m = sc[k0 + s].error ? sc[k0 + s].error : "failed";
            const char *st = !strncmp(m, "trajectory ", 11) ? strstr(m, " step ") : NULL;
            json_array_set_new(errs, s, json_string(st ? st + 1 : m));
        }
        json_object_set_new(added, "judge_scores", scores);
        if (errs) json_object_set_new(added, "judge_errors", errs);
        if (templates) {
            json_t *tv = tm[i] ? json_string(tm[i]) : NULL;
            json_object_set_new(added, "judge_template", tv ? tv : json_null());
            if (!tv) (*tmpl_bad)++;
        }
        if (fp_json_write_extended(out, b[i].line, b[i].len, b[i].obj, added) != FP_OK) status = cli_fail("judge");
        json_decref(added);
    }
    for (size_t q = 0; q < total; q++) fp_judge_score_clear(&sc[q]);
    for (size_t i = 0; i < n; i++) free(tm[i]);
    free(t); free(sc); free(tm); free(tst);
    return status;
}

static int parse_format(const char *s, int *out) {
    static const char *names[] = {"auto", "json_schema", "json_object", "text"};
    for (int i = 0; i < 4; i++) if (!strcmp(s, names[i])) { *out = i; return 0; }
    return -1;
}

int cmd_judge(int argc, char **argv) {
    fp_openai_opts oo;
    fp_openai_opts_default(&oo);
    fp_judge_opts jo;
    fp_judge_opts_default(&jo);
    const char *in = NULL, *out_path = NULL;
    long batch = 32;
    int templates = 0, skip_bad = 0, quiet = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { judge_help(stdout); return EXIT_OK; }
        if (!strcmp(a, "--templates")) { templates = 1; continue; }
        if (!strcmp(a, "--integer-scores")) { jo.integer_scores = 1; continue; }
        if (!strcmp(a, "--skip-bad")) { skip_bad = 1; continue; }
        if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) { quiet = 1; continue; }
        if (!strcmp(a, "-") || a[0] != '-') {
            if (in) return cli_usage_error("judge", "more than one input file ('%s' and '%s')", in, a);
            in = a;
            continue;
        }
        /* options with a value: "--opt v" or "--opt=v" */
        static const char *const with_value[] = {"--model", "--base-url", "--api-key-env", "--cache", "--concurrency",
                                                 "--retries", "--timeout", "--temperature", "--seed", "--max-tokens",
                                                 "--format", "--step-prompt", "--template-prompt", "--batch",
                                                 "--output", "-o"};
        const char *val = NULL, *name = NULL;
        for (size_t q = 0; q < sizeof with_value / sizeof with_value[0] && !name; q++) {
            size_t l = strlen(with_value[q]);
            if (!strncmp(a, with_value[q], l) && (a[l] == 0 || a[l] == '=')) {
                name = with_value[q];
                if (a[l] == '=') val = a + l + 1;
                else if (i + 1 < argc) val = argv[++i];
                else return cli_usage_error("judge", "%s needs a value", a);
            }
        }
        if (!name) return cli_usage_error("judge", "unknown option '%s'", a);
        if (!*val) return cli_usage_error("judge", "%s needs a non-empty value", name);
        long l;
        double d;
        if (!strcmp(name, "--model")) jo.model = val;
        else if (!strcmp(name, "--base-url")) oo.base_url = val;
        else if (!strcmp(name, "--api-key-env")) oo.api_key_env = val;
        else if (!strcmp(name, "--cache")) oo.cache_dir = val;
        else if (!strcmp(name, "--step-prompt")) jo.step_prompt_path = val;
        else if (!strcmp(name, "--template-prompt")) jo.template_prompt_path = val;
        else if (!strcmp(name, "--output") || !strcmp(name, "-o")) out_path = val;
        else if (!strcmp(name, "--format")) {
            if (parse_format(val, &jo.format)) return cli_usage_error("judge", "--format %s: expected auto, json_schema, json_object or text", val);
        } else if (!strcmp(name, "--temperature")) {
            if (cli_parse_double(val, &d) || d < 0) return cli_usage_error("judge", "--temperature %s: expected a number >= 0", val);
            jo.temperature = d;
        } else if (!strcmp(name, "--timeout")) {
            if (cli_parse_double(val, &d) || !(d > 0)) return cli_usage_error("judge", "--timeout %s: expected seconds > 0", val);
            oo.timeout_s = d;
        } else if (!strcmp(name, "--seed")) {
            if (!strcmp(val, "-1")) jo.seed = -1;
            else if (cli_parse_long(val, &l)) return cli_usage_error("judge", "--seed %s: expected an integer >= -1", val);
            else jo.seed = l;
        } else {
            if (cli_parse_long(val, &l)) return cli_usage_error("judge", "%s %s: expected a non-negative integer", name, val);
            if (!strcmp(name, "--concurrency")) {
                if (l < 1 || l > 1024) return cli_usage_error("judge", "--concurrency must be 1..1024");
                oo.concurrency = (int)l;
            } else if (!strcmp(name, "--retries")) {
                if (l > 1000) return cli_usage_error("judge", "--retries must be <= 1000");
                oo.max_retries = (int)l;
            } else if (!strcmp(name, "--max-tokens")) {
                if (l < 1) return cli_usage_error("judge", "--max-tokens must be >= 1");
                jo.max_tokens = l;
            } else if (!strcmp(name, "--batch")) {
                if (l < 1) return cli_usage_error("judge", "--batch must be >= 1");
                batch = l;
            }
        }
    }
    if (!jo.model) return cli_usage_error("judge", "--model is required");

    fp_openai_client *client = NULL;
    fp_judge *j = NULL;
    fp_jsonl_reader *r = NULL;
    fp_outfile *of = NULL;
    pending *b = calloc((size_t)batch, sizeof *b);
    if (!b) { cli_error("judge: out of memory"); return EXIT_RUNTIME; }
    if (fp_openai_client_new(&client, &oo) || fp_judge_new(&j, client, &jo)) { free(b); fp_openai_client_free(client); return cli_fail("judge"); }
    if (fp_jsonl_open(&r, in) || fp_outfile_open(&of, out_path, 0)) {
        int st = cli_fail("judge");
        fp_jsonl_close(r); fp_judge_free(j); fp_openai_client_free(client); free(b);
        return st;
    }
    FILE *out = fp_outfile_stream(of);
    fp_progress *pr = fp_progress_new("judge", 0, cli_progress_stream(quiet));
    const char *path = fp_jsonl_path(r);
    fp_format_opts fo = {0};
    fo.steps_from = FP_STEPS_BOTH;
    size_t nb = 0;
    long records = 0, skipped = 0, steps_ok = 0, steps_bad = 0, tmpl_bad = 0;
    int status = EXIT_OK;
    for (;;) {
        const char *line;
        size_t len;
        int rc = fp_jsonl_next_line(r, &line, &len);
        if (rc == FP_ERANGE) break;
        if (rc != FP_OK) { status = cli_fail("judge"); break; }
        long ln = fp_jsonl_line_number(r);
        pending *p = &b[nb];
        json_t *obj = NULL;
        rc = fp_json_parse_record(&obj, line, len, path, ln);
        if (rc == FP_OK && !json_is_object(obj)) rc = fp_errorf(FP_EPARSE, "%s:%ld: record is not a JSON object", path, ln);
        if (rc == FP_OK && (rc = fp_record_parse(&p->rec, obj, &fo)) != FP_OK) fp_error_prefix("%s:%ld: ", path, ln);
        if (rc != FP_OK) {
            json_decref(obj);
            fp_record_free(&p->rec);
            memset(p, 0, sizeof *p);
            if (skip_bad) { cli_error("judge: %s (skipped)", fp_last_error()); skipped++; continue; }
            status = cli_fail("judge");
            break;
        }
        p->obj = obj;
        p->line = malloc(len + 1);
        size_t n = p->rec.n_thinking ? p->rec.n_thinking : p->rec.n_steps;
        p->steps = malloc((n ? n : 1) * sizeof *p->steps);
        if (!p->line || !p->steps) { pending_free(p); cli_error("judge: out of memory"); status = EXIT_RUNTIME; break; }
        memcpy(p->line, line, len);
        p->line[len] = 0;
        p->len = len;
        for (size_t s = 0; s < n; s++) p->steps[s] = p->rec.steps[s];
        p->traj = (fp_judge_traj){p->rec.question, p->steps, n, p->rec.response ? p->rec.response : NO_RESPONSE};
        if (++nb == (size_t)batch) {
            status = flush_batch(j, b, nb, templates, out, &steps_ok, &steps_bad, &tmpl_bad);
            long steps = 0;
            for (size_t q = 0; q < nb; q++) { steps += (long)b[q].traj.n_steps; pending_free(&b[q]); }
            fp_progress_add(pr, (long)nb, steps);
            records += (long)nb;
            nb = 0;
            if (status != EXIT_OK) break;
        }
    }
    if (status == EXIT_OK && nb) {
        status = flush_batch(j, b, nb, templates, out, &steps_ok, &steps_bad, &tmpl_bad);
        fp_progress_add(pr, (long)nb, 0);
        records += (long)nb;
    }
    for (size_t q = 0; q < nb; q++) pending_free(&b[q]);
    fp_progress_finish(pr);
    fp_jsonl_close(r);
    if (status == EXIT_OK) {
        if (fp_outfile_commit(of) != FP_OK) status = cli_fail("judge");
    } else {
        fp_outfile_abort(of);
    }
    fp_openai_stats st;
    fp_openai_client_stats(client, &st);
    if (!quiet && status == EXIT_OK)
        fprintf(stderr,
                "judge: %ld records, %ld steps scored, %ld failed%s; %ld skipped; requests %ld (cache hits %ld, "
                "sent %ld, retries %ld), tokens %ld prompt + %ld completion\n",
                records, steps_ok, steps_bad, templates ? (tmpl_bad ? ", some templates failed" : ", templates ok") : "",
                skipped, st.requests, st.cache_hits, st.attempts, st.retries, st.prompt_tokens, st.completion_tokens);
    if (status == EXIT_OK && (steps_bad || tmpl_bad)) {
        cli_error("judge: %ld steps and %ld templates could not be judged (see judge_errors)", steps_bad, tmpl_bad);
        status = EXIT_RUNTIME;
    }
    fp_judge_free(j);
    fp_openai_client_free(client);
    free(b);
    return status;
}
