/* fluxprm generate: KV-cache decoding with a Qwen2/Qwen3 causal LM over JSONL records. */
#include "apps/generate.h"
#include "base/json.h"
#include "cli/cli.h"
#include "cli/prm_opts.h"
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void generate_help(FILE *f) {
    fprintf(f,
"usage: fluxprm generate --model DIR|FILE.gguf [options] [in.jsonl|-]\n"
"\n"
"Generates completions with a Qwen2/Qwen3 causal LM (lm_head.weight or tied embeddings) using a KV cache.\n"
"Records: {\"messages\": [{\"role\": ..., \"content\": ...}, ...]} rendered as ChatML with the generation prompt\n"
"(<|im_start|>role\\ncontent<|im_end|>\\n ... <|im_start|>assistant\\n; without a system turn the checkpoint\n"
"template's default system prompt is added), or {\"prompt\": \"...\"} encoded as is.  An optional \"stop\" field\n"
"(a string or a list) adds stop strings for that record.  Each output line is the input record plus\n"
"  \"completion\"     the decoded text (special tokens skipped), cut before a stop string\n"
"  \"tokens\"         the generated ids (an eos that ended generation is not included)\n"
"  \"finish_reason\"  \"stop\" (eos id or stop string) | \"length\" (--max-new-tokens reached)\n"
"  \"prompt_tokens\"  tokens in the prompt;  \"sample\" (0..N-1) with --n N > 1 (one line per sample)\n"
"\n"
"options:\n"
"  --model P            HF checkpoint directory or a GGUF file (required)\n"
"  --tokenizer P        tokenizer.json or its directory (default: the model directory)\n"
"  --system TEXT        default system prompt for chat records (default: the chat template's)\n"
"  --no-system          no default system turn\n"
"  --max-new-tokens N   new tokens per sample (default 256)\n"
"  --temperature T      0 = greedy; default 1.0\n"
"  --top-p P            nucleus sampling (default 1.0 = off)\n"
"  --top-k K            keep the K most likely tokens (default 0 = off)\n"
"  --seed S             sample j of record i draws from splitmix64 seeded by (S, i, j) (default 0)\n"
"  --n N                samples per record (the prompt is prefilled once; default 1)\n"
"  --batch B            sequences decoded together (records x samples; default 16): one matrix multiply per\n"
"                       step serves them all; each holds its own KV cache (memory grows with B)\n"
"  --stop S             stop string (repeatable), checked on the decoded text\n"
"  --eos-id N           also stop at token id N (repeatable); eos ids otherwise come from config.json,\n"
"                       generation_config.json and tokenizer_config.json\n"
"  --ignore-eos         generate until --max-new-tokens or a stop string\n"
"  --threads N          compute threads (default: all cores)\n"
"  -o, --output FILE    write here (atomically) instead of stdout\n"
"  --skip-bad           write {..., \"error\": \"...\"} for a bad record and go on (default: stop, exit 1)\n"
"  -q, --quiet          no progress bar\n"
"  -h, --help           this help\n"
"\n"
"Exit status: 0 ok, 1 runtime error, 2 usage.\n");
}

enum { OPT_MAX_NEW = 256, OPT_TEMP, OPT_TOP_P, OPT_TOP_K, OPT_SEED, OPT_N, OPT_STOP, OPT_EOS, OPT_IGNORE_EOS,
       OPT_SKIP_BAD, OPT_BATCH };

#define MAX_STOPS 64

/* One input record of the group being generated. */
typedef struct {
    char *line;           /* a copy of the input line */
    size_t len;
    long lineno;
    json_t *rec;          /* parsed, or NULL */
    int32_t *ids;         /* the prompt */
    int T;
    fp_sample_opts o;     /* with this record's stop strings */
    const char *stops[MAX_STOPS];
    char *err;            /* malloc'd message when the record failed */
} pending;

static void pending_clear(pending *p) {
    free(p->line);
    json_decref(p->rec);
    free(p->ids);
    free(p->err);
    memset(p, 0, sizeof *p);
}

/* Parses, renders and encodes one record; its sampling options are base plus the record's "stop" field. */
static int prepare(fp_generator *g, pending *p, const fp_sample_opts *base) {
    const json_t *rec = p->rec;
    p->o = *base;
    size_t ns = 0;
    for (size_t i = 0; i < base->n_stop && ns < MAX_STOPS; i++) p->stops[ns++] = base->stop[i];
    json_t *st = json_object_get(rec, "stop");
    if (json_is_string(st)) {
        if (ns >= MAX_STOPS) return fp_errorf(FP_EINVAL, "more than %d stop strings", MAX_STOPS);
        p->stops[ns++] = json_string_value(st);
    } else if (json_is_array(st)) {
        for (size_t i = 0; i < json_array_size(st); i++) {
            json_t *x = json_array_get(st, i);
            if (!json_is_string(x)) return fp_errorf(FP_EINVAL, "\"stop\" must hold strings");
            if (ns >= MAX_STOPS) return fp_errorf(FP_EINVAL, "more than %d stop strings", MAX_STOPS);
            p->stops[ns++] = json_string_value(x);
        }
    } else if (st && !json_is_null(st)) {
        return fp_errorf(FP_EINVAL, "\"stop\" must be a string or a list of strings");
    }
    p->o.stop = p->stops;
    p->o.n_stop = ns;
    json_t *msgs = json_object_get(rec, "messages"), *prompt = json_object_get(rec, "prompt");
    if (json_is_array(msgs)) {
        size_t nm = json_array_size(msgs);
        if (!nm) return fp_errorf(FP_EINVAL, "\"messages\" is empty");
        fp_chat_message *m = fp_calloc(nm, sizeof *m);
        if (!m) return FP_ENOMEM;
        for (size_t i = 0; i < nm; i++) {
            json_t *e = json_array_get(msgs, i), *r = json_object_get(e, "role"), *c = json_object_get(e, "content");
            if (!json_is_string(r) || !json_is_string(c)) {
                free(m);
                return fp_errorf(FP_EINVAL, "messages[%zu] needs string \"role\" and \"content\"", i);
            }
            m[i].role = json_string_value(r);
            m[i].content = json_string_value(c);
        }
        int rc = fp_generator_encode_chat(g, m, nm, &p->ids, &p->T);
        free(m);
        return rc;
    }
    if (json_is_string(prompt)) return fp_generator_encode_text(g, json_string_value(prompt), &p->ids, &p->T);
    return fp_errorf(FP_EINVAL, "the record has neither a \"messages\" list nor a \"prompt\" string");
}

/* Generates for the prepared records of a group at once; when that fails, record by record so that the failing
 * record is the one named.  res[i * n + j] is sample j of group[i] (for records without an error). */
static int run_group(fp_generator *g, pending *grp, int ng, int n, const uint64_t *index, fp_completion *res) {
    fp_gen_prompt *pr = calloc((size_t)ng, sizeof *pr);
    fp_completion *tmp = calloc((size_t)ng * (size_t)n, sizeof *tmp);
    int *map = calloc((size_t)ng, sizeof *map), np = 0, rc = FP_OK;
    size_t neos;
    const int32_t *eos = fp_generator_eos(g, &neos);
    fp_model *m = fp_generator_model(g);
    const fp_tokenizer *tok = fp_generator_tokenizer(g);
    if (!pr || !tmp || !map) rc = FP_ENOMEM;
    for (int i = 0; !rc && i < ng; i++)
        if (!grp[i].err) pr[np] = (fp_gen_prompt){grp[i].ids, grp[i].T, index[i], &grp[i].o}, map[np++] = i;
    if (!rc && np) {
        if (fp_generate_batch(m, tok, eos, neos, pr, np, NULL, n, tmp) == FP_OK) {
            for (int a = 0; a < np; a++)
                memcpy(&res[(size_t)map[a] * n], &tmp[(size_t)a * n], sizeof *res * (size_t)n);
        } else {
            for (int a = 0; a < np; a++) {
                pending *p = &grp[map[a]];
                if (fp_generate_batch(m, tok, eos, neos, &pr[a], 1, NULL, n, &res[(size_t)map[a] * n]))
                    p->err = strdup(fp_last_error());
            }
        }
    }
    free(pr);
    free(tmp);
    free(map);
    return rc;
}

int cmd_generate(int argc, char **argv) {
    static const struct option lopts[] = {
        {"model", required_argument, 0, CLI_PRM_MODEL}, {"tokenizer", required_argument, 0, CLI_PRM_TOKENIZER},
        {"system", required_argument, 0, CLI_PRM_SYSTEM}, {"no-system", no_argument, 0, CLI_PRM_NO_SYSTEM},
        {"threads", required_argument, 0, CLI_PRM_THREADS}, {"max-new-tokens", required_argument, 0, OPT_MAX_NEW},
        {"temperature", required_argument, 0, OPT_TEMP}, {"top-p", required_argument, 0, OPT_TOP_P},
        {"top-k", required_argument, 0, OPT_TOP_K}, {"seed", required_argument, 0, OPT_SEED},
        {"n", required_argument, 0, OPT_N}, {"stop", required_argument, 0, OPT_STOP},
        {"eos-id", required_argument, 0, OPT_EOS}, {"ignore-eos", no_argument, 0, OPT_IGNORE_EOS},
        {"output", required_argument, 0, 'o'}, {"skip-bad", no_argument, 0, OPT_SKIP_BAD},
        {"batch", required_argument, 0, OPT_BATCH},
        {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    fp_prm_opts po; /* model / tokenizer / system / threads, parsed by the shared option code */
    fp_prm_opts_default(&po);
    fp_sample_opts so;
    fp_sample_opts_default(&so);
    const char *out_path = NULL, *stops[MAX_STOPS];
    long eos_ids[MAX_STOPS], v;
    size_t n_eos = 0, ns = 0;
    int n = 1, batch = 16, skip_bad = 0, quiet = 0, c;
    double d;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:qh", lopts, NULL)) != -1) {
        int handled = cli_prm_option("generate", c, optarg, &po);
        if (handled < 0) return EXIT_USAGE;
        if (handled) continue;
        switch (c) {
        case OPT_MAX_NEW:
            if (cli_parse_long(optarg, &v) || v < 0 || v > 1000000) return cli_usage_error("generate", "--max-new-tokens needs a count, got '%s'", optarg);
            so.max_new_tokens = (int)v;
            break;
        case OPT_TEMP:
            if (cli_parse_double(optarg, &d) || !isfinite(d) || d < 0) return cli_usage_error("generate", "--temperature needs a number >= 0, got '%s'", optarg);
            so.temperature = d;
            break;
        case OPT_TOP_P:
            if (cli_parse_double(optarg, &d) || !(d > 0 && d <= 1)) return cli_usage_error("generate", "--top-p needs a number in (0, 1], got '%s'", optarg);
            so.top_p = d;
            break;
        case OPT_TOP_K:
            if (cli_parse_long(optarg, &v) || v < 0 || v > INT32_MAX) return cli_usage_error("generate", "--top-k needs a count, got '%s'", optarg);
            so.top_k = (int)v;
            break;
        case OPT_SEED:
            if (cli_parse_long(optarg, &v) || v < 0) return cli_usage_error("generate", "--seed needs a non-negative integer, got '%s'", optarg);
            so.seed = (uint64_t)v;
            break;
        case OPT_N:
            if (cli_parse_long(optarg, &v) || v < 1 || v > 4096) return cli_usage_error("generate", "--n needs a positive count, got '%s'", optarg);
            n = (int)v;
            break;
        case OPT_STOP:
            if (!*optarg) return cli_usage_error("generate", "--stop needs a non-empty string");
            if (ns >= MAX_STOPS) return cli_usage_error("generate", "at most %d --stop strings", MAX_STOPS);
            stops[ns++] = optarg;
            break;
        case OPT_EOS:
            if (cli_parse_long(optarg, &v) || v < 0 || v > INT32_MAX) return cli_usage_error("generate", "--eos-id needs a token id, got '%s'", optarg);
            if (n_eos >= MAX_STOPS) return cli_usage_error("generate", "at most %d --eos-id", MAX_STOPS);
            eos_ids[n_eos++] = v;
            break;
        case OPT_IGNORE_EOS: so.ignore_eos = 1; break;
        case OPT_BATCH:
            if (cli_parse_long(optarg, &v) || v < 1 || v > 4096) return cli_usage_error("generate", "--batch needs a positive count, got '%s'", optarg);
            batch = (int)v;
            break;
        case 'o': out_path = optarg; break;
        case OPT_SKIP_BAD: skip_bad = 1; break;
        case 'q': quiet = 1; break;
        case 'h': generate_help(stdout); return EXIT_OK;
        case ':': return cli_usage_error("generate", "option '%s' needs a value", argv[optind - 1]);
        default: return cli_usage_error("generate", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (!po.model_path) return cli_usage_error("generate", "--model is required");
    if (argc - optind > 1) return cli_usage_error("generate", "one input file at most (got '%s' and '%s')", argv[optind], argv[optind + 1]);
    const char *in = optind < argc ? argv[optind] : "-";
    so.stop = stops;
    so.n_stop = ns;

    fp_gen_opts go;
    fp_gen_opts_default(&go);
    go.model_path = po.model_path;
    go.tokenizer_path = po.tokenizer_path;
    go.system_mode = po.system_mode;
    go.system = po.system;
    go.threads = po.threads;
    fp_jsonl_reader *rd = NULL;
    if (fp_jsonl_open(&rd, in)) return cli_fail("generate");
    fp_generator *g = NULL;
    if (fp_generator_open(&g, &go)) { fp_jsonl_close(rd); return cli_fail("generate"); }
    for (size_t i = 0; i < n_eos; i++)
        if (fp_generator_add_eos(g, (int32_t)eos_ids[i])) { fp_generator_free(g); fp_jsonl_close(rd); return cli_fail("generate"); }
    fp_outfile *of = NULL;
    if (fp_outfile_open(&of, out_path, 0)) { fp_generator_free(g); fp_jsonl_close(rd); return cli_fail("generate"); }
    FILE *out = fp_outfile_stream(of);
    fp_progress *bar = fp_progress_new("generate", 0, cli_progress_stream(quiet));
    int group = batch / n > 0 ? batch / n : 1; /* records decoded together: group * n sequences <= --batch */
    pending *grp = calloc((size_t)group, sizeof *grp);
    uint64_t *index = calloc((size_t)group, sizeof *index);
    fp_completion *res = calloc((size_t)group * (size_t)n, sizeof *res);
    int status = grp && index && res ? EXIT_OK : (cli_error("generate: out of memory"), EXIT_RUNTIME);
    long nrec = 0, nbad = 0;
    int rc = FP_OK, eof = 0;
    while (status == EXIT_OK && !eof) {
        int ng = 0;
        const char *line;
        size_t len;
        while (ng < group && (rc = fp_jsonl_next_line(rd, &line, &len)) == FP_OK) { /* read and prepare a group */
            pending *p = &grp[ng];
            index[ng] = (uint64_t)nrec++;
            p->lineno = fp_jsonl_line_number(rd);
            p->line = malloc(len + 1);
            if (!p->line) { rc = FP_ENOMEM; break; }
            memcpy(p->line, line, len);
            p->line[len] = 0;
            p->len = len;
            ng++;
            if (fp_json_parse_record(&p->rec, line, len, fp_jsonl_path(rd), p->lineno) != FP_OK || prepare(g, p, &so) != FP_OK)
                p->err = strdup(fp_last_error());
        }
        if (rc == FP_ERANGE) eof = 1, rc = FP_OK;
        if (rc) { status = cli_fail("generate"); break; }
        if (ng && run_group(g, grp, ng, n, index, res)) { status = cli_fail("generate"); break; }
        for (int i = 0; i < ng && status == EXIT_OK; i++) { /* write in input order */
            pending *p = &grp[i];
            int wrc = FP_OK;
            if (!p->err) {
                long toks = 0;
                for (int j = 0; j < n && !wrc; j++) {
                    fp_completion *c = &res[(size_t)i * n + j];
                    json_t *ids = json_array();
                    for (size_t k = 0; k < c->n_tokens; k++) json_array_append_new(ids, json_integer(c->tokens[k]));
                    json_t *add = json_pack("{s:s, s:o, s:s, s:i}", "completion", c->text, "tokens", ids,
                                            "finish_reason", fp_finish_name(c->finish), "prompt_tokens", c->prompt_tokens);
                    if (add && n > 1) json_object_set_new(add, "sample", json_integer(j));
                    wrc = add ? fp_json_write_extended(out, p->line, p->len, p->rec, add) : FP_ENOMEM;
                    json_decref(add);
                    toks += (long)c->n_tokens;
                }
                fp_progress_add(bar, 1, toks);
            } else if (skip_bad) {
                nbad++;
                json_t *add = json_pack("{s:s}", "error", p->err);
                wrc = p->rec ? fp_json_write_extended(out, p->line, p->len, p->rec, add)
                             : (json_object_set_new(add, "line", json_integer(p->lineno)), fp_json_write_line(out, add));
                json_decref(add);
                fp_progress_add(bar, 1, 0);
            } else {
                cli_error("generate: %s:%ld: %s", fp_jsonl_path(rd), p->lineno, p->err);
                status = EXIT_RUNTIME;
            }
            if (status == EXIT_OK && (wrc || fflush(out) != 0)) status = cli_fail("generate: writing output");
        }
        for (int i = 0; i < ng; i++) {
            for (int j = 0; j < n; j++) fp_completion_free(&res[(size_t)i * n + j]);
            pending_clear(&grp[i]);
        }
    }
    fp_progress_finish(bar);
    if (status == EXIT_OK) {
        if (fp_outfile_commit(of)) status = cli_fail("generate");
        if (nbad && !quiet) cli_error("generate: %ld of %ld records had errors (see their \"error\" field)", nbad, nrec);
    } else {
        fp_outfile_abort(of);
    }
    for (int i = 0; grp && i < group; i++) pending_clear(&grp[i]);
    free(res);
    free(grp);
    free(index);
    fp_generator_free(g);
    fp_jsonl_close(rd);
    return status;
}
