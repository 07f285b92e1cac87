/* fluxprm <command> [options]: dispatch to subcommands. */
#include "cli/cli.h"
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void cli_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("fluxprm: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int cli_fail(const char *context) {
    if (context && *context) cli_error("%s: %s", context, fp_last_error());
    else cli_error("%s", fp_last_error());
    return EXIT_RUNTIME;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fluxprm %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nTry 'fluxprm %s --help'.\n", cmd);
    va_end(ap);
    return EXIT_USAGE;
}

int cli_progress_enabled(int quiet) { return !quiet && isatty(2); }
FILE *cli_progress_stream(int quiet) { return cli_progress_enabled(quiet) ? stderr : NULL; }

long cli_count_records(const char *path) {
    struct stat st;
    if (!path || !strcmp(path, "-") || stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return 0;
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    long n = 0;
    int c, blank = 1;
    while ((c = getc(f)) != EOF) {
        if (c == '\n') { if (!blank) n++; blank = 1; }
        else if (c != ' ' && c != '\t' && c != '\r') blank = 0;
    }
    if (!blank) n++;
    fclose(f);
    return n;
}

int cli_parse_long(const char *s, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end) return -1;
    *out = v;
    return 0;
}

int cli_parse_double(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end) return -1;
    *out = v;
    return 0;
}

int cmd_version(int argc, char **argv) {
    (void)argc;
    (void)argv;
    printf("fluxprm %s\n", fp_version());
    return EXIT_OK;
}

struct command {
    const char *name, *help;
    int (*fn)(int, char **);
};
#define CMD_ENTRY(name, help) {#name, help, cmd_##name},
static const struct command commands[] = {FP_COMMANDS(CMD_ENTRY)};
#undef CMD_ENTRY

static void usage(FILE *f) {
    fprintf(f, "fluxprm %s — trajectory-aware process reward models\n\nusage: fluxprm <command> [options]\n\ncommands:\n",
            fp_version());
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\nRun 'fluxprm <command> --help' for a command's options.\n"
               "Exit codes: 0 ok, 1 runtime error, 2 usage error.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return EXIT_USAGE; }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) { usage(stdout); return EXIT_OK; }
    if (!strcmp(argv[1], "--version")) { printf("fluxprm %s\n", fp_version()); return EXIT_OK; }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    cli_error("unknown command '%s' (see 'fluxprm --help')", argv[1]);
    return EXIT_USAGE;
}
