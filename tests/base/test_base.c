/* Base layer: errors, buffers, UTF-8 validation, JSONL streaming, atomic output files. */
#include "base/base.h"
#include "base/json.h"
#include "harness.h"
#include <unistd.h>

static int test_error_messages(void) {
    CHECK(fp_errorf(FP_EPARSE, "bad %s at %d", "thing", 7) == FP_EPARSE);
    CHECK(!strcmp(fp_last_error(), "bad thing at 7"));
    CHECK(fp_last_error_code() == FP_EPARSE);
    fp_error_prefix("file.json:3: ");
    CHECK(!strcmp(fp_last_error(), "file.json:3: bad thing at 7"));
    fp_error_clear();
    CHECK(fp_last_error()[0] == 0);
    return 0;
}

/* fp_arena: the planning pass only counts; the mapped pass hands out the same pieces, 64-byte aligned,
 * disjoint and writable; taking beyond the plan fails with a message instead of overrunning. */
static int test_arena(void) {
    fp_arena a = {0};
    const size_t sizes[4] = {1, 100, 4096 * 3 + 5, 64};
    unsigned char *p[4];
    for (int pass = 0; pass < 2; pass++) {
        if (pass) CHECK_OK(fp_arena_map(&a));
        for (int i = 0; i < 4; i++) p[i] = fp_arena_take(&a, sizes[i]);
        if (!pass) {
            for (int i = 0; i < 4; i++) CHECK(p[i] == NULL);
            CHECK(a.used == 64 + 128 + 12352 + 64);
        }
    }
    CHECK(a.base && a.size == 64 + 128 + 12352 + 64 && a.used == a.size);
    for (int i = 0; i < 4; i++) {
        CHECK(p[i] && ((uintptr_t)p[i] & 63) == 0);
        memset(p[i], 0x40 + i, sizes[i]);
    }
    for (int i = 0; i < 3; i++) CHECK(p[i] + sizes[i] <= p[i + 1] && p[i + 1][0] == 0x40 + i + 1);
    CHECK(p[0][0] == 0x40 && p[2][sizes[2] - 1] == 0x42);
    fp_error_clear();
    CHECK(fp_arena_take(&a, 1) == NULL && strstr(fp_last_error(), "beyond"));
    fp_arena_unmap(&a);
    CHECK(a.base == NULL && a.size == 0 && a.used == 0);
    return 0;
}

#define LIBM_FUNCS(X, p) X(p, cos) X(p, sqrt)
FP_DYNLIB_TABLE(lm, lm_names, LIBM_FUNCS, );

/* fp_dynlib_resolve: a real library's symbol is the function itself; a missing library or symbol is an
 * FP_EIO naming the user, the library and the symbol, with every output pointer NULL. */
static int test_dynlib(void) {
    const char *names[2] = {"cos", "sqrt"};
    void *syms[2] = {0};
    CHECK_OK(fp_dynlib_resolve("libm.so.6", "the test", names, syms, 2));
    double (*c)(double) = (double (*)(double))syms[0], (*r)(double) = (double (*)(double))syms[1];
    CHECK(c && r && c(0.0) == 1.0 && r(16.0) == 4.0);
    const char *bad[2] = {"cos", "no_such_symbol_xyz"};
    CHECK(fp_dynlib_resolve("libm.so.6", "the test", bad, syms, 2) == FP_EIO);
    CHECK(strstr(fp_last_error(), "the test") && strstr(fp_last_error(), "no_such_symbol_xyz"));
    CHECK(syms[0] == NULL && syms[1] == NULL);
    CHECK(fp_dynlib_resolve("libfluxprm-missing.so.0", "the judge", names, syms, 2) == FP_EIO);
    CHECK(strstr(fp_last_error(), "the judge") && strstr(fp_last_error(), "libfluxprm-missing.so.0"));
    /* fp_dynlib_load: once; a failure is repeated with its message, a success fills syms */
    void *lsyms[2] = {0};
    fp_dynlib missing = {
        .soname = "libfluxprm-missing.so.0", .user = "the server", .names = names, .syms = lsyms, .n = 2};
    for (int i = 0; i < 2; i++) {
        fp_error_clear();
        CHECK(fp_dynlib_load(&missing) == FP_EIO && strstr(fp_last_error(), "the server") &&
              strstr(fp_last_error(), "libfluxprm-missing.so.0"));
    }
    /* FP_DYNLIB_TABLE: typed pointers (lm.cos(x) calls cos) filled through lm.sym */
    fp_dynlib libm = {.soname = "libm.so.6", .user = "the test", .names = lm_names, .syms = lm.sym, .n = lm_n};
    CHECK(lm_n == 2 && !strcmp(lm_names[0], "cos") && !strcmp(lm_names[1], "sqrt") && !lm.cos);
    CHECK_OK(fp_dynlib_load(&libm));
    CHECK_OK(fp_dynlib_load(&libm));
    CHECK(lm.cos && lm.sqrt && lm.cos(0.0) == 1.0 && lm.sqrt(16.0) == 4.0);
    return 0;
}

/* The CLI does not link libcurl or libmicrohttpd (loaded on first use), so commands that need neither do not
 * map them (and their TLS stacks): no DT_NEEDED entry for them in the binary (readelf from binutils). */
static int test_cli_lazy_libs(void) {
    char cmd[1024], out[8192];
    if (access(th_bin(), X_OK) != 0) {
        printf("  (no %s: set FLUXPRM_BIN)\n", th_bin());
        return TH_SKIP;
    }
    snprintf(cmd, sizeof cmd, "readelf -d '%s' 2>&1", th_bin());
    FILE *p = popen(cmd, "r");
    size_t n = p ? fread(out, 1, sizeof out - 1, p) : 0;
    out[n] = 0;
    int st = p ? pclose(p) : -1;
    CHECK_MSG(st == 0 && strstr(out, "(NEEDED)"), "%s -> %d: %s", cmd, st, out);
    CHECK_MSG(strstr(out, "libjansson") && !strstr(out, "libcurl") && !strstr(out, "libmicrohttpd"), "%s", out);
    return 0;
}

static int test_buf(void) {
    fp_buf b = {0};
    for (int i = 0; i < 1000; i++) CHECK_OK(fp_buf_printf(&b, "%d,", i));
    CHECK(b.len == strlen(b.data));
    CHECK(!strncmp(b.data, "0,1,2,", 6));
    CHECK(!strcmp(b.data + b.len - 4, "999,"));
    fp_buf_free(&b);
    return 0;
}

static int test_utf8_validation(void) {
    CHECK(fp_utf8_invalid_offset("plain ascii", 11) == -1);
    CHECK(fp_utf8_invalid_offset("caf\xc3\xa9 \xf0\x9f\x98\x80", 10) == -1);
    CHECK(fp_utf8_invalid_offset("ab\xff", 3) == 2);          /* invalid lead byte */
    CHECK(fp_utf8_invalid_offset("ab\xc3", 3) == 2);          /* truncated */
    CHECK(fp_utf8_invalid_offset("\xc0\x80", 2) == 0);        /* overlong NUL */
    CHECK(fp_utf8_invalid_offset("\xed\xa0\x80", 3) == 0);    /* surrogate */
    CHECK(fp_utf8_invalid_offset("\xf4\x90\x80\x80", 4) == 0);/* > U+10FFFF */
    return 0;
}

static void write_file(const char *path, const char *data, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
}

static int test_jsonl_lines(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/a.jsonl", th_tmpdir());
    { const char *d = "{\"a\":1}\n\n  \n{\"b\":2}\r\n{\"c\":3}"; write_file(path, d, strlen(d)); }
    fp_jsonl_reader *r;
    CHECK_OK(fp_jsonl_open(&r, path));
    const char *line;
    size_t len;
    CHECK_OK(fp_jsonl_next_line(r, &line, &len));
    CHECK(!strcmp(line, "{\"a\":1}") && fp_jsonl_line_number(r) == 1);
    CHECK_OK(fp_jsonl_next_line(r, &line, &len));
    CHECK(!strcmp(line, "{\"b\":2}") && fp_jsonl_line_number(r) == 4);
    CHECK_OK(fp_jsonl_next_line(r, &line, &len));
    CHECK(!strcmp(line, "{\"c\":3}") && fp_jsonl_line_number(r) == 5 && len == 7);
    CHECK(fp_jsonl_next_line(r, &line, &len) == FP_ERANGE);
    fp_jsonl_close(r);
    CHECK(fp_jsonl_open(&r, "/nonexistent/x.jsonl") == FP_EIO);
    CHECK(strstr(fp_last_error(), "/nonexistent/x.jsonl") != NULL);
    return 0;
}

static int test_jsonl_array_file(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/arr.json", th_tmpdir());
    const char *d = "\n [ {\"a\": 1},\n {\"b\": [2, 3]} ]\n";
    write_file(path, d, strlen(d));
    fp_jsonl_reader *r;
    CHECK_OK(fp_jsonl_open(&r, path));
    const char *line;
    size_t len;
    CHECK_OK(fp_jsonl_next_line(r, &line, &len));
    CHECK(!strcmp(line, "{\"a\":1}") && fp_jsonl_line_number(r) == 1);
    CHECK_OK(fp_jsonl_next_line(r, &line, &len));
    CHECK(!strcmp(line, "{\"b\":[2,3]}") && fp_jsonl_line_number(r) == 2);
    CHECK(fp_jsonl_next_line(r, &line, &len) == FP_ERANGE);
    fp_jsonl_close(r);
    d = "[ {\"a\": 1},";
    write_file(path, d, strlen(d));
    CHECK(fp_jsonl_open(&r, path) == FP_EPARSE && strstr(fp_last_error(), "arr.json:"));
    return 0;
}

static int test_jsonl_50mb_record(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/big.jsonl", th_tmpdir());
    size_t n = 50u << 20;
    char *big = malloc(n + 16);
    memcpy(big, "{\"text\":\"", 9);
    memset(big + 9, 'x', n);
    memcpy(big + 9 + n, "\"}\n{}\n", 6);
    write_file(path, big, n + 15);
    free(big);
    fp_jsonl_reader *r;
    CHECK_OK(fp_jsonl_open(&r, path));
    const char *line;
    size_t len;
    CHECK_OK(fp_jsonl_next_line(r, &line, &len));
    CHECK(len == n + 11);
    CHECK_OK(fp_jsonl_next_line(r, &line, &len));
    CHECK(len == 2 && fp_jsonl_line_number(r) == 2);
    fp_jsonl_close(r);
    unlink(path);
    return 0;
}

static int test_outfile_atomic(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/out.jsonl", th_tmpdir());
    write_file(path, "old\n", 4);
    fp_outfile *o;
    CHECK_OK(fp_outfile_open(&o, path, 0));
    fputs("new partial", fp_outfile_stream(o));
    fp_outfile_abort(o);
    char *data;
    size_t len;
    CHECK_OK(fp_read_file(path, &data, &len));
    CHECK(!strcmp(data, "old\n")); /* an aborted write never touches the previous output */
    free(data);
    CHECK_OK(fp_outfile_open(&o, path, 0));
    fputs("new\n", fp_outfile_stream(o));
    CHECK_OK(fp_outfile_commit(o));
    CHECK_OK(fp_read_file(path, &data, &len));
    CHECK(!strcmp(data, "new\n"));
    free(data);
    /* resume keeps complete lines of the partial file and drops a torn last line */
    char partial[600];
    snprintf(partial, sizeof partial, "%s.partial", path);
    write_file(partial, "l1\nl2\ntorn", 10);
    CHECK_OK(fp_outfile_open(&o, path, 1));
    CHECK(fp_outfile_resumed_lines(o) == 2);
    fp_outfile *o2;
    CHECK(fp_outfile_open(&o2, path, 1) == FP_EIO); /* a second writer is refused */
    fputs("l3\n", fp_outfile_stream(o));
    CHECK_OK(fp_outfile_commit(o));
    CHECK_OK(fp_read_file(path, &data, &len));
    CHECK(!strcmp(data, "l1\nl2\nl3\n"));
    free(data);
    CHECK(access(partial, F_OK) != 0);
    /* resuming a finished output continues after its last line */
    CHECK_OK(fp_outfile_open(&o, path, 1));
    CHECK(fp_outfile_resumed_lines(o) == 3);
    fp_outfile_keep_partial(o);
    CHECK(access(partial, F_OK) == 0);
    CHECK_OK(fp_outfile_open(&o, path, 0)); /* a fresh run starts the partial file over */
    CHECK(fp_outfile_resumed_lines(o) == 0);
    fp_outfile_abort(o);
    CHECK(access(partial, F_OK) != 0);
    return 0;
}

static int test_mmap(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/m.bin", th_tmpdir());
    write_file(path, "hello", 5);
    fp_mmap m;
    CHECK_OK(fp_mmap_open(&m, path));
    CHECK(m.size == 5 && !memcmp(m.data, "hello", 5));
    fp_mmap_close(&m);
    CHECK(fp_mmap_open(&m, th_tmpdir()) == FP_EIO); /* a directory is not a weights file */
    return 0;
}

static char *extend(const char *line, const char *added_json) {
    json_t *rec, *add = json_loads(added_json, 0, NULL);
    if (fp_json_parse_record(&rec, line, strlen(line), "t.jsonl", 1)) return NULL;
    char *buf = NULL;
    size_t sz = 0;
    FILE *f = open_memstream(&buf, &sz);
    fp_json_write_extended(f, line, strlen(line), rec, add);
    fclose(f);
    json_decref(rec);
    json_decref(add);
    return buf;
}

static int test_json_extend(void) {
    char *s = extend("{\"b\": 0.1, \"a\": 1e300}  ", "{\"r\":[0.5,0.25]}");
    CHECK(s && !strcmp(s, "{\"b\": 0.1, \"a\": 1e300,\"r\":[0.5,0.25]}\n")); /* input bytes kept */
    free(s);
    s = extend("{}", "{\"r\":1}");
    CHECK(s && !strcmp(s, "{\"r\":1}\n"));
    free(s);
    s = extend("{\"r\":0,\"x\":2}", "{\"r\":1}"); /* a clash re-serialises with the new value */
    CHECK(s && !strcmp(s, "{\"r\":1,\"x\":2}\n"));
    free(s);
    json_t *rec;
    CHECK(fp_json_parse_record(&rec, "{\"a\":", 6, "in.jsonl", 7) == FP_EPARSE);
    CHECK(strstr(fp_last_error(), "in.jsonl:7: malformed JSON") != NULL);
    CHECK(fp_json_parse_record(&rec, "{\"a\":1,\"a\":2}", 13, "in.jsonl", 8) == FP_EPARSE);
    return 0;
}

int main(void) {
    RUN(test_json_extend);
    RUN(test_error_messages);
    RUN(test_arena);
    RUN(test_dynlib);
    RUN(test_cli_lazy_libs);
    RUN(test_buf);
    RUN(test_utf8_validation);
    RUN(test_jsonl_lines);
    RUN(test_jsonl_array_file);
    RUN(test_jsonl_50mb_record);
    RUN(test_outfile_atomic);
    RUN(test_mmap);
    return th_finish();
}
