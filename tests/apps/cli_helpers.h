/* Helpers for the tests that run a fluxprm subcommand and read back what it wrote.  Include after harness.h. */
#ifndef FP_TEST_CLI_HELPERS_H
#define FP_TEST_CLI_HELPERS_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

/* Runs `fluxprm SUB ARGS 2>ERRFILE` (ARGS may carry more shell redirections): the exit status, or -1. */
__attribute__((unused)) static int cli_run(const char *sub, const char *args, const char *errfile) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s %s %s 2>%s", th_bin(), sub, args, errfile);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The whole file as a NUL-terminated string (malloc'd), or NULL. */
__attribute__((unused)) static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = 0;
    fclose(f);
    return s;
}

/* Non-overlapping occurrences of sub in s. */
__attribute__((unused)) static int count_sub(const char *s, const char *sub) {
    int n = 0;
    for (const char *p = s; (p = strstr(p, sub)); p += strlen(sub)) n++;
    return n;
}

/* Well-formedness in the small: every element is closed in order (a tag stack), attribute values are quoted and
 * the single root is <svg>.  strict adds: the only entities are &lt; &gt; &amp; &quot;, no raw '<' inside a tag,
 * and no self-closed element outside the root. */
__attribute__((unused)) static int xml_balanced(const char *s, int strict) {
    char stack[64][32];
    int depth = 0, roots = 0;
    const char *p = s;
    if (!strncmp(p, "<?xml", 5)) { p = strstr(p, "?>"); if (!p) return 0; p += 2; }
    while (*p) {
        if (strict && *p == '&') {
            if (strncmp(p, "&lt;", 4) && strncmp(p, "&gt;", 4) && strncmp(p, "&amp;", 5) && strncmp(p, "&quot;", 6)) return 0;
            p++;
            continue;
        }
        if (*p != '<') { p++; continue; }
        int closing = p[1] == '/';
        const char *n = p + 1 + closing;
        size_t len = strcspn(n, " \t\n/>");
        if (len == 0 || len >= 32) return 0;
        const char *q = n + len;
        int inq = 0;
        while (*q && (inq || *q != '>')) { if (*q == '"') inq = !inq; else if (strict && *q == '<' && !inq) return 0; q++; }
        if (!*q) return 0;
        int self = q[-1] == '/';
        if (closing) {
            if (depth == 0 || strlen(stack[depth - 1]) != len || strncmp(stack[depth - 1], n, len)) return 0;
            depth--;
        } else if (!self) {
            if (depth == 0) { roots++; if (len != 3 || strncmp(n, "svg", 3)) return 0; }
            if (depth == 64) return 0;
            memcpy(stack[depth], n, len);
            stack[depth++][len] = 0;
        } else if (strict && depth == 0) return 0;
        p = q + 1;
    }
    return depth == 0 && roots == 1;
}

/* 1 when no temporary file (*.tmp.* or *.partial) is left in dir. */
__attribute__((unused)) static int no_temp_files(const char *dir) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "ls %s | grep -q -e '\\.tmp\\.' -e '\\.partial$'", dir);
    return system(cmd) != 0;
}
#endif
