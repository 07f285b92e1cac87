/* LaTeX-level normalisation of extracted answers (see docs/verify.md, "Normalisation"). */
#include "verify/verify_internal.h"
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static size_t word_len(const char *p, size_t n) {
    size_t k = 0;
    while (k < n && isalpha((unsigned char)p[k])) k++;
    return k;
}
static int word_is(const char *w, size_t n, const char *name) { return strlen(name) == n && !strncmp(w, name, n); }
static int word_in(const char *w, size_t n, const char *const *list) {
    for (; *list; list++)
        if (word_is(w, n, *list)) return 1;
    return 0;
}

static const char *const drop_words[] = {
    "left", "right", "big", "Big", "bigg", "Bigg", "bigl", "bigr", "Bigl", "Bigr", "biggl", "biggr", "Biggl",
    "Biggr", "middle", "displaystyle", "textstyle", "scriptstyle", "limits", "nolimits", "quad", "qquad",
    "enspace", "thinspace", "medspace", "thickspace", "negthinspace", "hfill", "circ", "degree", "mathstrut",
    "phantom", NULL};
static const char *const wrap_words[] = {
    "text", "textbf", "textit", "textrm", "textsf", "texttt", "textnormal", "mathrm", "mathbf", "mathit",
    "mathsf", "mathtt", "mathbb", "mathcal", "mbox", "hbox", "operatorname", "emph", "bm", "boldsymbol",
    "textup", "mathup", NULL};

/* Index just past the brace group starting at s[i] == '{', or n when unbalanced. */
static size_t match_brace(const char *s, size_t n, size_t i) {
    int d = 0;
    for (size_t k = i; k < n; k++) {
        if (s[k] == '\\' && k + 1 < n) { k++; continue; }
        if (s[k] == '{') d++;
        else if (s[k] == '}' && --d == 0) return k + 1;
    }
    return n;
}

/* Skips "^\circ", "^{\circ}", "^{ \circ }" at s[i] == '^'; returns the new index or i when not a degree. */
static size_t skip_degree(const char *s, size_t n, size_t i) {
    size_t k = i + 1;
    while (k < n && s[k] == ' ') k++;
    int brace = 0;
    if (k < n && s[k] == '{') { brace = 1; k++; }
    while (k < n && s[k] == ' ') k++;
    if (k + 5 <= n && !strncmp(s + k, "\\circ", 5) && (k + 5 == n || !isalpha((unsigned char)s[k + 5]))) k += 5;
    else return i;
    while (k < n && s[k] == ' ') k++;
    if (brace) {
        if (k < n && s[k] == '}') k++;
        else return i;
    }
    return k;
}

static int norm_into(fp_buf *o, const char *s, size_t n, int depth);

static int emit(fp_buf *o, const char *t, size_t n) { return fp_buf_append(o, t, n); }
static int emits(fp_buf *o, const char *t) { return fp_buf_append(o, t, strlen(t)); }

static int norm_into(fp_buf *o, const char *s, size_t n, int depth) {
    if (depth > 50) return emit(o, s, n);
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c == '$' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '~') { i++; continue; }
        if (c == '\\') {
            if (i + 1 >= n) { i++; continue; }
            char d = s[i + 1];
            if (!isalpha((unsigned char)d)) {
                switch (d) {
                case '$': case '!': case ',': case ';': case ':': case ' ': case '(': case ')': case '[': case ']':
                    break;
                case '%': if (emits(o, "%")) return -1; break;
                case '{': if (emits(o, "\\{")) return -1; break;
                case '}': if (emits(o, "\\}")) return -1; break;
                case '\\': if (emits(o, "\\\\")) return -1; break;
                case '#': case '&': case '_': if (emit(o, &s[i + 1], 1)) return -1; break;
                case '0': case '1': case '2': case '3': case '4': case '5': case '6': case '7': case '8': case '9':
                    if (emit(o, &s[i + 1], 1)) return -1; /* "\15": a mangled "\$15" */
                    break;
                default: if (emit(o, &s[i], 2)) return -1; break;
                }
                i += 2;
                continue;
            }
            const char *w = s + i + 1;
            size_t wl = word_len(w, n - i - 1);
            size_t next = i + 1 + wl;
            if (word_in(w, wl, drop_words)) {
                i = next;
                if (word_is(w, wl, "left") || word_is(w, wl, "right")) {
                    while (i < n && s[i] == ' ') i++;
                    if (i < n && s[i] == '.') i++; /* \left. / \right. */
                }
                if (word_is(w, wl, "phantom")) {
                    while (i < n && s[i] == ' ') i++;
                    if (i < n && s[i] == '{') i = match_brace(s, n, i);
                }
                continue;
            }
            if (word_in(w, wl, wrap_words)) {
                size_t k = next;
                while (k < n && s[k] == ' ') k++;
                if (k < n && s[k] == '{') {
                    size_t end = match_brace(s, n, k);
                    size_t inner_end = end > k + 1 && s[end - 1] == '}' ? end - 1 : end;
                    if (norm_into(o, s + k + 1, inner_end - k - 1, depth + 1)) return -1;
                    i = end;
                } else {
                    i = next;
                }
                continue;
            }
            const char *rep = NULL;
            if (word_is(w, wl, "dfrac") || word_is(w, wl, "tfrac") || word_is(w, wl, "cfrac")) rep = "\\frac";
            else if (word_is(w, wl, "dbinom") || word_is(w, wl, "tbinom")) rep = "\\binom";
            else if (word_is(w, wl, "cdot") || word_is(w, wl, "times") || word_is(w, wl, "ast")) rep = "*";
            else if (word_is(w, wl, "div")) rep = "/";
            else if (word_is(w, wl, "lbrace")) rep = "\\{";
            else if (word_is(w, wl, "rbrace")) rep = "\\}";
            else if (word_is(w, wl, "langle")) rep = "(";
            else if (word_is(w, wl, "rangle")) rep = ")";
            else if (word_is(w, wl, "geq") || word_is(w, wl, "geqslant")) rep = "\\ge";
            else if (word_is(w, wl, "leq") || word_is(w, wl, "leqslant")) rep = "\\le";
            else if (word_is(w, wl, "neq")) rep = "\\ne";
            else if (word_is(w, wl, "dots") || word_is(w, wl, "cdots") || word_is(w, wl, "ldots")) rep = "\\ldots";
            else if (word_is(w, wl, "varnothing")) rep = "\\emptyset";
            else if (word_is(w, wl, "colon")) rep = ":";
            if (rep) {
                if (emits(o, rep)) return -1;
                i = next;
                if (rep[0] == '\\' && isalpha((unsigned char)rep[1])) {
                    size_t k = i;
                    while (k < n && s[k] == ' ') k++;
                    if (k < n && isalpha((unsigned char)s[k]) && emits(o, " ")) return -1;
                }
                continue;
            }
            if (emit(o, s + i, 1 + wl)) return -1;
            i = next;
            size_t k = i;
            while (k < n && s[k] == ' ') k++;
            /* keep "\cot x" apart from "\cotx" */
            if (k > i && k < n && isalpha((unsigned char)s[k]) && emits(o, " ")) return -1;
            continue;
        }
        if (c == '^' || c == '_') {
            if (c == '^') {
                size_t k = skip_degree(s, n, i);
                if (k != i) { i = k; continue; }
            }
            size_t k = i + 1;
            while (k < n && s[k] == ' ') k++;
            if (k + 2 < n + 0 && s[k] == '{' && isalnum((unsigned char)s[k + 1]) && s[k + 2] == '}') {
                char t[2] = {(char)c, s[k + 1]};
                if (emit(o, t, 2)) return -1;
                i = k + 3;
                continue;
            }
            if (emit(o, s + i, 1)) return -1;
            i++;
            continue;
        }
        if (c == '{' && i + 2 < n && s[i + 1] == ',' && s[i + 2] == '}') {
            if (emits(o, ",")) return -1;
            i += 3;
            continue;
        }
        /* a few UTF-8 symbols */
        if (c == 0xC2 && i + 1 < n && (unsigned char)s[i + 1] == 0xB0) { i += 2; continue; }            /* ° */
        if (c == 0xC2 && i + 1 < n && (unsigned char)s[i + 1] == 0xB7) { if (emits(o, "*")) return -1; i += 2; continue; }
        if (c == 0xC3 && i + 1 < n && (unsigned char)s[i + 1] == 0x97) { if (emits(o, "*")) return -1; i += 2; continue; }
        if (c == 0xC3 && i + 1 < n && (unsigned char)s[i + 1] == 0xB7) { if (emits(o, "/")) return -1; i += 2; continue; }
        if (c == 0xCF && i + 1 < n && (unsigned char)s[i + 1] == 0x80) { if (emits(o, "\\pi")) return -1; i += 2; continue; }
        if (c == 0xE2 && i + 2 < n && (unsigned char)s[i + 1] == 0x88) {
            unsigned char e = (unsigned char)s[i + 2];
            const char *rep = e == 0x92 ? "-" : e == 0x9E ? "\\infty" : e == 0x9A ? "\\sqrt" : NULL;
            if (rep) { if (emits(o, rep)) return -1; i += 3; continue; }
        }
        if (c == 0xE2 && i + 2 < n && (unsigned char)s[i + 1] == 0x89) {
            unsigned char e = (unsigned char)s[i + 2];
            const char *rep = e == 0xA4 ? "\\le" : e == 0xA5 ? "\\ge" : e == 0xA0 ? "\\ne" : NULL;
            if (rep) { if (emits(o, rep)) return -1; i += 3; continue; }
        }
        if (emit(o, s + i, 1)) return -1;
        i++;
    }
    return 0;
}

char *fpv_normalize(const char *s) {
    fp_buf o = {0};
    if (norm_into(&o, s, strlen(s), 0) || fp_buf_append(&o, "", 0)) {
        fp_buf_free(&o);
        return NULL;
    }
    char *r = o.data;
    size_t len = strlen(r);
    /* sentence punctuation at the end */
    while (len > 0 && (r[len - 1] == '.' || r[len - 1] == ',' || r[len - 1] == ';' || r[len - 1] == ' '))
        r[--len] = 0;
    return r;
}

int fpv_num_equal(double a, double b) {
    if (a == b) return 1;
    if (!isfinite(a) || !isfinite(b)) return 0;
    double d = fabs(a - b);
    return d <= 1e-9 || d <= 1e-6 * fmax(fabs(a), fabs(b));
}
