/* Final-answer extraction from solution texts (see docs/verify.md, "Extraction").
 * Rules, first match wins: boxed, gsm8k_hash, answer_is, bare, last_number. */
#include "verify/verify_internal.h"
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Trims whitespace, surrounding markdown '*', sentence-final '.', and a $...$ / \(...\) wrapper. */
static char *clean_answer(const char *s, size_t n) {
    for (int pass = 0; pass < 4; pass++) {
        while (n && (isspace((unsigned char)*s) || *s == '*' || *s == ':')) { s++; n--; }
        while (n && (isspace((unsigned char)s[n - 1]) || s[n - 1] == '*')) n--;
        while (n && (s[n - 1] == '.' || s[n - 1] == ',' || s[n - 1] == ';') &&
               !(n >= 2 && s[n - 1] == '.' && s[n - 2] == '\\'))
            n--;
        if (n >= 2 && s[0] == '$' && s[n - 1] == '$') {
            size_t k = 0;
            while (k < n && s[k] == '$') k++;
            size_t m = 0;
            while (m < n - k && s[n - 1 - m] == '$') m++;
            s += k;
            n -= k + m;
            continue;
        }
        if (n >= 4 && s[0] == '\\' && (s[1] == '(' || s[1] == '[') && s[n - 2] == '\\' &&
            (s[n - 1] == ')' || s[n - 1] == ']')) {
            s += 2;
            n -= 4;
            continue;
        }
        break;
    }
    return fp_strndup(s, n);
}

/* The argument of the last \boxed / \fbox with a non-empty, balanced argument: sets *b, *e. */
static int find_boxed(const char *text, const char **b, const char **e) {
    const char *best_b = NULL, *best_e = NULL;
    for (const char *p = text; (p = strchr(p, '\\')) != NULL; p++) {
        size_t kw;
        if (!strncmp(p, "\\boxed", 6)) kw = 6;
        else if (!strncmp(p, "\\fbox", 5)) kw = 5;
        else continue;
        const char *q = p + kw;
        if (isalpha((unsigned char)*q)) continue;
        while (*q == ' ') q++;
        if (*q == '{') {
            int d = 0;
            const char *r = q;
            for (; *r; r++) {
                if (*r == '\\' && r[1]) { r++; continue; }
                if (*r == '{') d++;
                else if (*r == '}' && --d == 0) break;
            }
            if (!*r) continue; /* unbalanced (truncated) */
            if (r > q + 1) { best_b = q + 1; best_e = r; }
        } else if (q > p + kw) { /* "\boxed 5" */
            const char *r = q;
            while (*r && !isspace((unsigned char)*r) && *r != '$') r++;
            if (r > q) { best_b = q; best_e = r; }
        }
    }
    if (!best_b) return 0;
    *b = best_b;
    *e = best_e;
    return 1;
}

static int find_hash(const char *text, const char **b, const char **e) {
    const char *last = NULL;
    for (const char *p = text; (p = strstr(p, "####")) != NULL; p += 4) last = p;
    if (!last) return 0;
    const char *q = last;
    while (*q == '#') q++;
    const char *r = q;
    while (*r && *r != '\n') r++;
    *b = q;
    *e = r;
    return 1;
}

/* Case-insensitive search for the last occurrence of needle. */
static const char *last_ci(const char *text, const char *needle) {
    size_t n = strlen(needle);
    const char *last = NULL;
    for (const char *p = text; *p; p++)
        if (!strncasecmp(p, needle, n)) last = p;
    return last;
}

/* "The (final) answer is X", "Answer: X", or a line starting "A: X": the rest of that sentence. */
static int find_answer_is(const char *text, const char **b, const char **e) {
    const char *best = NULL, *start = NULL;
    const char *p = last_ci(text, "answer is");
    if (p) { best = p; start = p + 9; }
    p = last_ci(text, "answer:");
    if (p && (!best || p > best)) { best = p; start = p + 7; }
    for (const char *q = text; (q = strstr(q, "A:")) != NULL; q += 2) {
        const char *l = q;
        while (l > text && (l[-1] == ' ' || l[-1] == '\t')) l--;
        if ((l == text || l[-1] == '\n') && (!best || q > best)) { best = q; start = q + 2; }
    }
    if (!best) return 0;
    while (*start == ' ' || *start == ':' || *start == '\t') start++;
    const char *r = start;
    /* to the end of the line, or to a sentence end ". " outside $...$ */
    int in_math = 0;
    while (*r && *r != '\n') {
        if (*r == '$') in_math = !in_math;
        if (!in_math && *r == '.' && (r[1] == ' ' || r[1] == '\n' || !r[1]) && r > start &&
            !isdigit((unsigned char)r[1]))
            break;
        r++;
    }
    /* prefer a math segment when the sentence mixes words and $...$ */
    const char *d1 = memchr(start, '$', (size_t)(r - start));
    if (d1) {
        const char *m = d1;
        while (m < r && *m == '$') m++;
        const char *d2 = memchr(m, '$', (size_t)(r - m));
        if (d2 && d2 > m) { start = m; r = d2; }
    }
    if (r == start) return 0;
    *b = start;
    *e = r;
    return 1;
}

/* A short single-line text with at most two plain words: the text itself is the answer. */
static int is_bare(const char *text) {
    size_t n = strlen(text);
    if (n == 0 || n > 400 || strchr(text, '\n')) return 0;
    int words = 0;
    for (const char *p = text; *p;) {
        if (isalpha((unsigned char)*p)) {
            const char *q = p;
            while (isalpha((unsigned char)*q)) q++;
            int cmd = p > text && (p[-1] == '\\' || p[-1] == '{');
            if (!cmd && q - p >= 3) words++;
            p = q;
        } else {
            p++;
        }
    }
    return words <= 2;
}

static int find_last_number(const char *text, const char **b, const char **e) {
    const char *best_b = NULL, *best_e = NULL;
    for (const char *p = text; *p;) {
        if (isdigit((unsigned char)*p) && (p == text || !isalnum((unsigned char)p[-1]))) {
            const char *s = p;
            if (s > text && s[-1] == '-') s--;
            const char *q = p;
            while (isdigit((unsigned char)*q)) q++;
            while (q[0] == ',' && isdigit((unsigned char)q[1]) && isdigit((unsigned char)q[2]) &&
                   isdigit((unsigned char)q[3]) && !isdigit((unsigned char)q[4]))
                q += 4;
            if (q[0] == '.' && isdigit((unsigned char)q[1])) {
                q++;
                while (isdigit((unsigned char)*q)) q++;
            }
            if (q[0] == '/' && isdigit((unsigned char)q[1])) {
                q++;
                while (isdigit((unsigned char)*q)) q++;
            }
            best_b = s;
            best_e = q;
            p = q;
        } else {
            p++;
        }
    }
    if (!best_b) return 0;
    *b = best_b;
    *e = best_e;
    return 1;
}

int fp_verify_extract(const char *text, char **answer, const char **rule) {
    const char *dummy;
    if (!rule) rule = &dummy;
    if (answer) *answer = NULL;
    *rule = "none";
    if (!text || !answer) return fp_errorf(FP_EINVAL, "fp_verify_extract: NULL argument");
    const char *b, *e;
    const char *name = NULL;
    /* trim the text once for the bare rule */
    const char *t = text;
    while (isspace((unsigned char)*t)) t++;
    size_t tn = strlen(t);
    while (tn && isspace((unsigned char)t[tn - 1])) tn--;
    if (find_boxed(text, &b, &e)) name = "boxed";
    else if (find_hash(text, &b, &e)) name = "gsm8k_hash";
    else if (find_answer_is(text, &b, &e)) name = "answer_is";
    else {
        char *trim = fp_strndup(t, tn);
        if (!trim) return FP_ENOMEM;
        int bare = is_bare(trim);
        free(trim);
        if (bare) { b = t; e = t + tn; name = "bare"; }
        else if (find_last_number(text, &b, &e)) name = "last_number";
    }
    if (!name) return FP_OK;
    char *a = clean_answer(b, (size_t)(e - b));
    if (!a) return FP_ENOMEM;
    if (!strcmp(name, "answer_is") && !is_bare(a)) {
        /* "Answer: Verna received $7.00 in change." -> the last number of that sentence */
        const char *nb, *ne;
        if (find_last_number(a, &nb, &ne)) {
            char *n = fp_strndup(nb, (size_t)(ne - nb));
            free(a);
            if (!n) return FP_ENOMEM;
            a = n;
        }
    }
    if (!*a) { free(a); return FP_OK; }
    *answer = a;
    *rule = name;
    return FP_OK;
}
