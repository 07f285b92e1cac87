/* fluxprm tokenize: JSONL text -> token ids (or ids -> text with --decode). */
#include "base/json.h"
#include "cli/cli.h"
#include <stdlib.h>
#include <string.h>

static void tokenize_usage(FILE *f) {
    fprintf(f,
            "usage: fluxprm tokenize --tokenizer DIR|FILE [--decode] [--lines] [--field NAME] [--skip-bad] [--quiet]\n"
            "                        [in.jsonl|-]\n\n"
            "Reads JSONL records {\"text\": ...} (stdin when no file or '-') and writes {\"ids\": [...]} per record to\n"
            "stdout: the ids HF tokenizers gives for encode(text, add_special_tokens=False) (added/special token\n"
            "strings in the text map to their ids; no BOS/EOS is added).\n\n"
            "options:\n"
            "  --tokenizer P  directory with tokenizer.json (+ tokenizer_config.json), or a tokenizer.json file\n"
            "  --decode       read {\"ids\": [...]} records and write {\"text\": ...} (bytes that are not valid UTF-8\n"
            "                 become U+FFFD)\n"
            "  --lines        input is raw text, one record per line (blank lines are skipped; a trailing \\r is\n"
            "                 dropped); the text must be valid UTF-8\n"
            "  --field NAME   read the text from field NAME instead of \"text\"\n"
            "  --skip-bad     report bad records on stderr and go on (no output line for them) instead of stopping\n"
            "  --quiet        no progress bar and no skip warnings\n"
            "  -h, --help     this help\n\n"
            "Errors name the input file and line.  Exit codes: 0 ok, 1 runtime error (bad record without\n"
            "--skip-bad, unreadable tokenizer), 2 usage error.\n");
}

static void put_json_string(FILE *o, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    putc('"', o);
    size_t i = 0;
    while (i < n) {
        long bad = fp_utf8_invalid_offset((const char *)p + i, n - i);
        size_t good = bad < 0 ? n - i : (size_t)bad;
        for (size_t k = i; k < i + good; k++) {
            unsigned c = p[k];
            if (c == '"' || c == '\\') { putc('\\', o); putc((int)c, o); }
            else if (c == '\n') fputs("\\n", o);
            else if (c == '\t') fputs("\\t", o);
            else if (c == '\r') fputs("\\r", o);
            else if (c < 0x20 || c == 0x7f) { fputs("\\u00", o); putc(hex[c >> 4], o); putc(hex[c & 15], o); }
            else putc((int)c, o);
        }
        i += good;
        if (bad < 0) break;
        /* one U+FFFD per maximal ill-formed subsequence (as Python's errors="replace") */
        unsigned c = p[i];
        size_t len = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 1, k = 1;
        if (len > 1 && i + 1 < n) {
            unsigned lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80, hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
            if (p[i + 1] >= lo && p[i + 1] <= hi) {
                k = 2;
                while (k < len && i + k < n && (p[i + k] & 0xC0) == 0x80) k++;
            }
        }
        fputs("\xef\xbf\xbd", o);
        i += k;
    }
    putc('"', o);
}

static void put_ids(FILE *o, const int32_t *ids, size_t n) {
    char buf[4096];
    size_t k = 0;
    memcpy(buf, "{\"ids\":[", 8);
    k = 8;
    for (size_t i = 0; i < n; i++) {
        if (k > sizeof buf - 16) { fwrite(buf, 1, k, o); k = 0; }
        if (i) buf[k++] = ',';
        char tmp[12];
        int m = 0;
        uint32_t v = (uint32_t)ids[i];
        do tmp[m++] = (char)('0' + v % 10); while ((v /= 10));
        while (m) buf[k++] = tmp[--m];
    }
    memcpy(buf + k, "]}\n", 3);
    fwrite(buf, 1, k + 3, o);
}

int cmd_tokenize(int argc, char **argv) {
    const char *tokpath = NULL, *input = NULL, *field = "text";
    int decode = 0, lines = 0, skip_bad = 0, quiet = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { tokenize_usage(stdout); return EXIT_OK; }
        else if (!strcmp(a, "--tokenizer") || !strcmp(a, "--field")) {
            if (i + 1 >= argc) return cli_usage_error("tokenize", "%s needs a value", a);
            if (a[2] == 't') tokpath = argv[++i];
            else field = argv[++i];
        } else if (!strcmp(a, "--decode")) decode = 1;
        else if (!strcmp(a, "--lines")) lines = 1;
        else if (!strcmp(a, "--skip-bad")) skip_bad = 1;
        else if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) quiet = 1;
        else if (a[0] == '-' && a[1]) return cli_usage_error("tokenize", "unknown option '%s'", a);
        else if (input) return cli_usage_error("tokenize", "more than one input file given");
        else input = a;
    }
    if (!tokpath) return cli_usage_error("tokenize", "--tokenizer DIR|FILE is required");
    if (decode && lines) return cli_usage_error("tokenize", "--decode reads JSONL records; it cannot be used with --lines");
    fp_tokenizer *tok;
    if (fp_tokenizer_load(&tok, tokpath)) return cli_fail("");
    fp_jsonl_reader *r;
    if (fp_jsonl_open(&r, input)) { fp_tokenizer_free(tok); return cli_fail(""); }
    static char obuf[1 << 20];
    setvbuf(stdout, obuf, _IOFBF, sizeof obuf);
    fp_progress *prog = fp_progress_new(decode ? "decode" : "tokenize", 0, cli_progress_stream(quiet));
    const char *path = fp_jsonl_path(r);
    int rc = EXIT_OK;
    long skipped = 0;
    const char *line;
    size_t len;
    int st;
    while ((st = fp_jsonl_next_line(r, &line, &len)) == FP_OK) {
        long ln = fp_jsonl_line_number(r);
        json_t *rec = NULL;
        int err = FP_OK;
        int32_t *ids = NULL;
        size_t n = 0;
        if (lines) {
            err = fp_tokenizer_encode(tok, line, len, &ids, &n);
            if (err) fp_error_prefix("%s:%ld: ", path, ln);
            else put_ids(stdout, ids, n);
        } else if (!(err = fp_json_parse_record(&rec, line, len, path, ln))) {
            if (decode) {
                json_t *arr = json_object_get(rec, "ids");
                size_t na = json_array_size(arr);
                if (!json_is_array(arr)) err = fp_errorf(FP_EINVAL, "%s:%ld: field \"ids\" missing or not an array", path, ln);
                else if (na && !(ids = malloc(na * sizeof *ids))) err = fp_errorf(FP_ENOMEM, "out of memory");
                for (size_t i = 0; !err && i < na; i++) {
                    json_t *v = json_array_get(arr, i);
                    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
                        err = fp_errorf(FP_EINVAL, "%s:%ld: ids[%zu] is not a token id", path, ln, i);
                    else ids[i] = (int32_t)json_integer_value(v);
                }
                char *text = NULL;
                size_t tl = 0;
                if (!err && (err = fp_tokenizer_decode(tok, ids, na, 0, &text, &tl))) fp_error_prefix("%s:%ld: ", path, ln);
                if (!err) {
                    fputs("{\"text\":", stdout);
                    put_json_string(stdout, text, tl);
                    fputs("}\n", stdout);
                }
                n = na;
                free(text);
            } else {
                json_t *tx = json_object_get(rec, field);
                if (!json_is_string(tx)) err = fp_errorf(FP_EINVAL, "%s:%ld: field \"%s\" missing or not a string", path, ln, field);
                else if ((err = fp_tokenizer_encode(tok, json_string_value(tx), json_string_length(tx), &ids, &n)))
                    fp_error_prefix("%s:%ld: field \"%s\": ", path, ln, field);
                else put_ids(stdout, ids, n);
            }
            json_decref(rec);
        }
        free(ids);
        if (err) {
            if (!skip_bad) { rc = cli_fail(""); break; }
            skipped++;
            if (!quiet) cli_error("skipping: %s", fp_last_error());
            continue;
        }
        fp_progress_add(prog, 1, (long)n);
    }
    if (rc == EXIT_OK && st != FP_ERANGE) rc = cli_fail("");
    fp_progress_finish(prog);
    if (fflush(stdout) != 0 && rc == EXIT_OK) { cli_error("cannot write to stdout"); rc = EXIT_RUNTIME; }
    if (skipped && !quiet) cli_error("%ld bad record%s skipped", skipped, skipped == 1 ? "" : "s");
    fp_jsonl_close(r);
    fp_tokenizer_free(tok);
    return rc;
}
