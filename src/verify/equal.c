/* Answer equivalence (see docs/verify.md, "Comparison"). */
#include "verify/verify_internal.h"
#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_ITEMS 64
#define MAX_DEPTH 8
#define MAX_LEN 4000 /* longer answers are compared as normalised strings only */

/* ---------------------------------------------------------------- small string helpers */

static char *dupn(const char *s, size_t n) {
    char *r = malloc(n + 1);
    if (!r) return NULL;
    memcpy(r, s, n);
    r[n] = 0;
    return r;
}

static int is_open(char c) { return c == '(' || c == '[' || c == '{'; }
static int is_close(char c) { return c == ')' || c == ']' || c == '}'; }

/* Nesting depth walk: calls back at depth-0 positions.  "\{" "\}" count as brackets too. */
static size_t bracket_step(const char *s, size_t i, int *depth) {
    if (s[i] == '\\' && (s[i + 1] == '{' || s[i + 1] == '}')) {
        *depth += s[i + 1] == '{' ? 1 : -1;
        return 2;
    }
    if (s[i] == '\\' && s[i + 1] == '\\') return 2;
    if (is_open(s[i])) (*depth)++;
    else if (is_close(s[i])) (*depth)--;
    return 1;
}

/* Splits s[0..n) at depth-0 occurrences of sep (a string).  Returns the count (0 when too many). */
static int split_top(const char *s, size_t n, const char *sep, size_t *starts, size_t *lens, int max) {
    size_t sl = strlen(sep);
    int depth = 0, k = 0;
    size_t start = 0;
    for (size_t i = 0; i < n;) {
        if (depth == 0 && i + sl <= n && !strncmp(s + i, sep, sl) &&
            !(sep[0] == '\\' && isalpha((unsigned char)s[i + sl]))) {
            if (k == max) return 0;
            starts[k] = start;
            lens[k++] = i - start;
            i += sl;
            start = i;
            continue;
        }
        i += bracket_step(s, i, &depth);
    }
    if (k == max) return 0;
    starts[k] = start;
    lens[k++] = n - start;
    return k;
}

/* Whether the bracket opening at s[0] closes exactly at s[n-1] (of width cw). */
static int wraps_whole(const char *s, size_t n, size_t cw) {
    int depth = 0;
    for (size_t i = 0; i < n;) {
        i += bracket_step(s, i, &depth);
        if (depth == 0) return i == n && i >= cw;
    }
    return 0;
}

/* ---------------------------------------------------------------- number canonicalisation */

/* "1,234,567.5" (whole string, optionally followed by non-digit text) -> commas removed, in place. */
static void strip_thousands(char *s) {
    char *p = s;
    if (*p == '-' || *p == '+') p++;
    char *q = p;
    while (isdigit((unsigned char)*q)) q++;
    size_t lead = (size_t)(q - p);
    if (lead < 1 || lead > 3 || *q != ',') return;
    int groups = 0;
    while (q[0] == ',' && isdigit((unsigned char)q[1]) && isdigit((unsigned char)q[2]) &&
           isdigit((unsigned char)q[3]) && !isdigit((unsigned char)q[4])) {
        q += 4;
        groups++;
    }
    if (!groups) return;
    const char *rest = q;
    if (*rest == '.') rest++;
    while (isdigit((unsigned char)*rest)) rest++;
    for (const char *t = rest; *t; t++)
        if (isdigit((unsigned char)*t) || *t == ',') return;
    char *w = p;
    for (char *r = p; *r; r++)
        if (!(r < q && *r == ',')) *w++ = *r;
    *w = 0;
}

/* Letters in s that are not part of a control word. */
static int has_bare_letter(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\') {
            i++;
            while (i < n && isalpha((unsigned char)s[i])) i++;
            i--;
            continue;
        }
        if (isalpha((unsigned char)s[i])) return 1;
    }
    return 0;
}

/* Drops a trailing unit word ("5.4cents", "15cm^2", "18dollars") when what precedes it is purely numeric. */
static void strip_units(char *s) {
    size_t n = strlen(s);
    size_t e = n;
    if (e >= 2 && s[e - 2] == '^' && isdigit((unsigned char)s[e - 1])) e -= 2;
    size_t w = e;
    while (w > 0 && isalpha((unsigned char)s[w - 1])) w--;
    if (e - w < 2 || w == 0) return;
    if (s[w - 1] == '\\') return; /* a control word such as \pi */
    if (s[w - 1] == '/') return; /* "5/km" is a rate, keep */
    int digit = 0;
    for (size_t i = 0; i < w; i++)
        if (isdigit((unsigned char)s[i])) digit = 1;
    if (!digit || has_bare_letter(s, w)) return;
    s[w] = 0;
}

/* "2\frac{1}{2}" / "2\frac12" -> "(2+\frac{1}{2})" when numerator < denominator. */
static char *mixed_number(const char *s) {
    const char *p = s;
    int neg = 0;
    if (*p == '-') { neg = 1; p++; }
    const char *q = p;
    while (isdigit((unsigned char)*q)) q++;
    if (q == p || strncmp(q, "\\frac", 5)) return NULL;
    const char *f = q + 5;
    long num, den;
    char *end;
    if (*f == '{') {
        num = strtol(f + 1, &end, 10);
        if (end == f + 1 || *end != '}' || end[1] != '{') return NULL;
        const char *d = end + 2;
        den = strtol(d, &end, 10);
        if (end == d || *end != '}' || end[1]) return NULL;
    } else if (isdigit((unsigned char)f[0]) && isdigit((unsigned char)f[1]) && !f[2]) {
        num = f[0] - '0';
        den = f[1] - '0';
    } else {
        return NULL;
    }
    if (num < 0 || den <= 0 || num >= den) return NULL;
    size_t n = strlen(s) + 8;
    char *r = malloc(n);
    if (!r) return NULL;
    snprintf(r, n, "%s(%.*s+%s)", neg ? "-" : "", (int)(q - p), p, q);
    return r;
}

/* ---------------------------------------------------------------- expressions */

static uint64_t rng_next(uint64_t *s) {
    *s += 0x9E3779B97F4A7C15ull;
    uint64_t z = *s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* mode 0: equal at random points; mode 1: proportional with a constant non-zero ratio. */
static int exprs_match(const fpv_expr *a, const fpv_expr *b, int mode) {
    /* variables are matched by name over the union of both sets ("\sin^2x+\cos^2x" == "1") */
    char names[2 * FPV_MAX_VARS][sizeof a->vars[0]];
    int nn = 0, ma[FPV_MAX_VARS], mb[FPV_MAX_VARS];
    for (int side = 0; side < 2; side++) {
        const fpv_expr *e = side ? b : a;
        int *m = side ? mb : ma;
        for (int i = 0; i < e->nvars; i++) {
            int j = 0;
            while (j < nn && strcmp(names[j], e->vars[i])) j++;
            if (j == nn) strcpy(names[nn++], e->vars[i]);
            m[i] = j;
        }
    }
    if (nn == 0 && mode == 0) {
        double x = fpv_expr_eval(a, NULL), y = fpv_expr_eval(b, NULL);
        return fpv_num_equal(x, y);
    }
    uint64_t seed = 0x5EEDF1u;
    double vu[2 * FPV_MAX_VARS], va[FPV_MAX_VARS], vb[FPV_MAX_VARS];
    int valid = 0;
    double ratio = NAN;
    for (int k = 0; k < 12; k++) {
        for (int j = 0; j < nn; j++) {
            double u = (double)(rng_next(&seed) >> 11) / 9007199254740992.0;
            vu[j] = (k % 2 == 0) ? 0.3 + 2.6 * u : -3.0 + 6.0 * u;
        }
        for (int i = 0; i < a->nvars; i++) va[i] = vu[ma[i]];
        for (int i = 0; i < b->nvars; i++) vb[i] = vu[mb[i]];
        double x = fpv_expr_eval(a, va), y = fpv_expr_eval(b, vb);
        if (!isfinite(x) || !isfinite(y)) continue;
        if (mode == 0) {
            if (!fpv_num_equal(x, y)) return 0;
        } else {
            if (fabs(y) < 1e-12) {
                if (fabs(x) > 1e-9) return 0;
                continue;
            }
            double r = x / y;
            if (isnan(ratio)) {
                if (fabs(r) < 1e-12) return 0;
                ratio = r;
            } else if (!fpv_num_equal(r, ratio)) {
                return 0;
            }
        }
        valid++;
    }
    return valid >= 3;
}

/* ---------------------------------------------------------------- comparison */

static int eq_any(const char *a, const char *b, int depth, long *bud);

/* The index of the single top-level '=' (not part of <=, >=, !=), -1 if none, -2 if several. */
static long find_eq(const char *s) {
    int depth = 0;
    long at = -1;
    for (size_t i = 0; s[i];) {
        if (depth == 0 && s[i] == '=' && !(i > 0 && strchr("<>!:", s[i - 1])) && s[i + 1] != '=') {
            if (at >= 0) return -2;
            at = (long)i;
        }
        i += bracket_step(s, i, &depth);
    }
    return at;
}

/* Whether s[0..n) is a single variable name: a letter, optionally with a subscript. */
static int is_var_name(const char *s, size_t n) {
    if (n == 0 || !isalpha((unsigned char)s[0])) return 0;
    if (n == 1) return 1;
    if (s[1] != '_') return 0;
    return n >= 3;
}

/* Removes a leading "x=" or "x\in" when s has no other '='. Returns a pointer into s. */
static const char *strip_lhs(const char *s) {
    long at = find_eq(s);
    if (at > 0 && is_var_name(s, (size_t)at)) return s + at + 1;
    const char *in = strstr(s, "\\in");
    if (in && in > s && is_var_name(s, (size_t)(in - s)) && !isalpha((unsigned char)in[3])) return in + 3;
    return s;
}

/* A run of three or more letters that is not a control word. */
static int has_word3(const char *s) {
    for (const char *p = s; *p;) {
        if (*p == '\\') {
            p++;
            while (isalpha((unsigned char)*p)) p++;
            continue;
        }
        const char *q = p;
        while (isalpha((unsigned char)*q)) q++;
        if (q - p >= 3) return 1;
        p = q > p ? q : p + 1;
    }
    return 0;
}

static int has_digit(const char *s) {
    for (; *s; s++)
        if (isdigit((unsigned char)*s)) return 1;
    return 0;
}

/* "-?[0-9]+" without leading zeros. */
static int is_int_literal(const char *s) {
    if (*s == '-') s++;
    if (!isdigit((unsigned char)*s) || (s[0] == '0' && s[1])) return 0;
    while (isdigit((unsigned char)*s)) s++;
    return *s == 0;
}

static int int_equal(const char *a, const char *b) {
    int na = *a == '-', nb = *b == '-';
    a += na;
    b += nb;
    if (strcmp(a, b)) return 0;
    return na == nb || !strcmp(a, "0");
}

/* Equivalence of two atoms (no top-level structure). */
static int eq_atom(const char *a0, const char *b0, int depth, long *bud) {
    if (!strcmp(a0, b0)) return 1;
    /* word answers ignore case ("\text{East}" == "east"); single letters are variables and do not */
    if (!has_digit(a0) && !has_digit(b0) && has_word3(a0) && !strcasecmp(a0, b0)) return 1;
    /* equations */
    long ea = find_eq(a0), eb = find_eq(b0);
    if (ea == -2 || eb == -2) return 0;
    if (ea >= 0 && eb >= 0) {
        char *l1 = dupn(a0, (size_t)ea), *l2 = dupn(b0, (size_t)eb);
        int r = 0;
        if (l1 && l2) {
            const char *r1 = a0 + ea + 1, *r2 = b0 + eb + 1;
            r = (eq_any(l1, l2, depth + 1, bud) && eq_any(r1, r2, depth + 1, bud)) ||
                (eq_any(l1, r2, depth + 1, bud) && eq_any(r1, l2, depth + 1, bud));
            if (!r) { /* same relation up to a constant factor: (l1-r1) ~ c (l2-r2) */
                size_t n1 = strlen(a0) + 8, n2 = strlen(b0) + 8;
                char *d1 = malloc(n1), *d2 = malloc(n2);
                if (d1 && d2) {
                    snprintf(d1, n1, "(%s)-(%s)", l1, r1);
                    snprintf(d2, n2, "(%s)-(%s)", l2, r2);
                    fpv_expr x, y;
                    if (!fpv_expr_parse(d1, &x)) {
                        if (!fpv_expr_parse(d2, &y)) {
                            r = x.nvars > 0 && exprs_match(&x, &y, 1);
                            fpv_expr_free(&y);
                        }
                        fpv_expr_free(&x);
                    }
                }
                free(d1);
                free(d2);
            }
        }
        free(l1);
        free(l2);
        return r;
    }
    if (ea >= 0 || eb >= 0) {
        /* "5 = x" style (a leading "x=" was already removed) */
        const char *eqs = ea >= 0 ? a0 : b0, *other = ea >= 0 ? b0 : a0;
        long at = ea >= 0 ? ea : eb;
        if (is_var_name(eqs + at + 1, strlen(eqs + at + 1))) {
            char *l = dupn(eqs, (size_t)at);
            int r = l && eq_any(l, other, depth + 1, bud);
            free(l);
            return r;
        }
        return 0;
    }
    /* multiple choice "(B)" */
    char a[4096], b[4096];
    if (strlen(a0) >= sizeof a || strlen(b0) >= sizeof b) return 0;
    strcpy(a, a0);
    strcpy(b, b0);
    char *sides[2] = {a, b};
    int pct[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        char *s = sides[k];
        size_t n = strlen(s);
        if (n == 3 && s[0] == '(' && isupper((unsigned char)s[1]) && s[2] == ')') {
            s[0] = s[1];
            s[1] = 0;
            n = 1;
        }
        if (n > 1 && s[n - 1] == '%') { s[--n] = 0; pct[k] = 1; }
        strip_units(s);
        n = strlen(s);
        if (n > 1 && s[n - 1] == '%') { s[--n] = 0; pct[k] = 1; }
        strip_thousands(s);
    }
    if (!strcmp(a, b)) return 1;
    char *ma = mixed_number(a), *mb = mixed_number(b);
    const char *pa = ma ? ma : a, *pb = mb ? mb : b;
    int r = 0;
    fpv_expr x, y;
    if (!fpv_expr_parse(pa, &x)) {
        if (!fpv_expr_parse(pb, &y)) {
            if (is_int_literal(pa) && is_int_literal(pb)) {
                r = int_equal(pa, pb) && !pct[0] == !pct[1]; /* integers compare exactly */
                if (!r && (pct[0] || pct[1])) {
                    double u = fpv_expr_eval(&x, NULL), v = fpv_expr_eval(&y, NULL);
                    r = (pct[0] && fpv_num_equal(u / 100, v)) || (pct[1] && fpv_num_equal(u, v / 100)) ||
                        u == v;
                }
            } else if (x.nvars == 0 && y.nvars == 0) {
                double u = fpv_expr_eval(&x, NULL), v = fpv_expr_eval(&y, NULL);
                r = fpv_num_equal(u, v) || (pct[0] && fpv_num_equal(u / 100, v)) ||
                    (pct[1] && fpv_num_equal(u, v / 100));
            } else {
                r = exprs_match(&x, &y, 0);
            }
            fpv_expr_free(&y);
        }
        fpv_expr_free(&x);
    }
    free(ma);
    free(mb);
    return r;
}

/* Structure of an answer: an atom, an ordered tuple/interval, an unordered set/list/union, or a matrix. */
enum { K_ATOM, K_TUPLE, K_SET, K_LIST, K_UNION, K_MATRIX };
typedef struct {
    int kind;
    char open, close;
    int rows;
    int n;
    char *items[MAX_ITEMS];
} shape;

static void shape_free(shape *sh) {
    for (int i = 0; i < sh->n; i++) free(sh->items[i]);
    sh->n = 0;
}

static int push_item(shape *sh, const char *s, size_t n) {
    while (n && s[0] == ' ') { s++; n--; }
    /* "a \pm b" -> a+b, a-b */
    const char *pm = NULL;
    size_t pml = 3;
    for (size_t i = 0; i + 3 <= n && !pm; i++)
        if ((!strncmp(s + i, "\\pm", 3) || !strncmp(s + i, "\\mp", 3)) &&
            (i + 3 == n || !isalpha((unsigned char)s[i + 3])))
            pm = s + i;
    if (pm && sh->kind != K_TUPLE && sh->kind != K_MATRIX) {
        if (sh->n + 2 > MAX_ITEMS) return -1;
        size_t pre = (size_t)(pm - s), post = n - pre - pml;
        for (int sign = 0; sign < 2; sign++) {
            char *it = malloc(n + 8);
            if (!it) return -1;
            if (pre == 0) snprintf(it, n + 8, "%c(%.*s)", sign ? '-' : '+', (int)post, pm + pml);
            else snprintf(it, n + 8, "%.*s%c(%.*s)", (int)pre, s, sign ? '-' : '+', (int)post, pm + pml);
            sh->items[sh->n++] = it;
        }
        return 0;
    }
    if (sh->n == MAX_ITEMS) return -1;
    sh->items[sh->n] = dupn(s, n);
    if (!sh->items[sh->n]) return -1;
    sh->n++;
    return 0;
}

static int push_split(shape *sh, const char *s, size_t n, const char *sep) {
    size_t st[MAX_ITEMS], ln[MAX_ITEMS];
    int k = split_top(s, n, sep, st, ln, MAX_ITEMS);
    if (!k) return -1;
    for (int i = 0; i < k; i++)
        if (push_item(sh, s + st[i], ln[i])) return -1;
    return 0;
}

/* Returns 0 and fills sh, or -1 when the text is too large to structure (treated as an atom). */
static int shape_of(const char *s, shape *sh) {
    memset(sh, 0, sizeof *sh);
    size_t n = strlen(s);
    size_t st[MAX_ITEMS], ln[MAX_ITEMS];
    /* matrices */
    if (!strncmp(s, "\\begin{", 7)) {
        const char *body = strchr(s, '}');
        const char *end = strstr(s, "\\end{");
        if (body && end && end > body) {
            body++;
            sh->kind = K_MATRIX;
            int rows = split_top(body, (size_t)(end - body), "\\\\", st, ln, MAX_ITEMS);
            if (!rows) return -1;
            sh->rows = rows;
            for (int r = 0; r < rows; r++)
                if (push_split(sh, body + st[r], ln[r], "&")) return -1;
            return 0;
        }
    }
    /* unions of intervals */
    int k = split_top(s, n, "\\cup", st, ln, MAX_ITEMS);
    if (k > 1) {
        sh->kind = K_UNION;
        for (int i = 0; i < k; i++)
            if (push_item(sh, s + st[i], ln[i])) return -1;
        return 0;
    }
    /* sets \{...\} */
    if (n >= 4 && !strncmp(s, "\\{", 2) && !strcmp(s + n - 2, "\\}") && wraps_whole(s, n, 2)) {
        sh->kind = K_SET;
        return push_split(sh, s + 2, n - 4, ",");
    }
    /* tuples and intervals */
    if (n >= 2 && (s[0] == '(' || s[0] == '[') && (s[n - 1] == ')' || s[n - 1] == ']') && wraps_whole(s, n, 1)) {
        k = split_top(s + 1, n - 2, ",", st, ln, MAX_ITEMS);
        if (k > 1) {
            sh->kind = K_TUPLE;
            sh->open = s[0];
            sh->close = s[n - 1];
            return push_split(sh, s + 1, n - 2, ",");
        }
    }
    /* bare lists "1, -2" */
    k = split_top(s, n, ",", st, ln, MAX_ITEMS);
    if (k > 1) {
        sh->kind = K_LIST;
        return push_split(sh, s, n, ",");
    }
    sh->kind = K_ATOM;
    if (push_item(sh, s, n)) return -1;
    if (sh->n > 1) sh->kind = K_LIST; /* "1 \pm \sqrt{19}" */
    return 0;
}

static int match_unordered(char **a, char **b, int n, int i, unsigned char *used, int depth, long *bud) {
    if (i == n) return 1;
    for (int j = 0; j < n; j++) {
        if (used[j] || !eq_any(a[i], b[j], depth + 1, bud)) continue;
        used[j] = 1;
        if (match_unordered(a, b, n, i + 1, used, depth, bud)) return 1;
        used[j] = 0;
        if (n > 8) return 0; /* no deep backtracking for long lists */
    }
    return 0;
}

/* bud: a work budget shared by one top-level comparison, so adversarial nesting stays cheap. */
static int eq_any(const char *a0, const char *b0, int depth, long *bud) {
    if (depth > MAX_DEPTH || --*bud < 0 || strlen(a0) > MAX_LEN || strlen(b0) > MAX_LEN) return !strcmp(a0, b0);
    if (!strcmp(a0, b0)) return 1;
    const char *a = strip_lhs(a0), *b = strip_lhs(b0);
    if (!*a || !*b) return 0;
    if (!strcmp(a, b)) return 1;
    char *ca = strdup(a), *cb = strdup(b);
    if (!ca || !cb) { free(ca); free(cb); return 0; }
    strip_thousands(ca);
    strip_thousands(cb);
    shape sa, sb;
    int ra = shape_of(ca, &sa), rb = shape_of(cb, &sb);
    int r = 0;
    if (ra || rb) {
        r = !strcmp(ca, cb);
    } else if (sa.kind == K_ATOM && sb.kind == K_ATOM) {
        r = eq_atom(ca, cb, depth, bud);
    } else if (sa.kind == K_ATOM || sb.kind == K_ATOM) {
        r = 0;
    } else if (sa.n != sb.n) {
        r = 0;
    } else if (sa.kind == K_TUPLE || sb.kind == K_TUPLE || sa.kind == K_MATRIX || sb.kind == K_MATRIX) {
        r = sa.kind == sb.kind && sa.open == sb.open && sa.close == sb.close && sa.rows == sb.rows;
        for (int i = 0; r && i < sa.n; i++) r = eq_any(sa.items[i], sb.items[i], depth + 1, bud);
    } else {
        /* unordered: sets, bare lists (interchangeable), unions */
        int ua = sa.kind == K_UNION, ub = sb.kind == K_UNION;
        if (ua == ub) {
            unsigned char used[MAX_ITEMS] = {0};
            r = match_unordered(sa.items, sb.items, sa.n, 0, used, depth, bud);
        }
    }
    shape_free(&sa);
    shape_free(&sb);
    free(ca);
    free(cb);
    return r;
}

int fp_verify_equal(const char *pred, const char *gold) {
    if (!pred || !gold) return 0;
    char *a = fpv_normalize(pred), *b = fpv_normalize(gold);
    long budget = 20000;
    int r = a && b && *a && *b && eq_any(a, b, 0, &budget);
    free(a);
    free(b);
    return r;
}

int fp_verify_check(const char *text, const char *gold, int *correct, char **extracted, const char **rule) {
    const char *dummy;
    if (!rule) rule = &dummy;
    *rule = "none";
    if (extracted) *extracted = NULL;
    if (correct) *correct = 0;
    if (!text || !gold || !correct) return fp_errorf(FP_EINVAL, "fp_verify_check: NULL argument");
    char *pa = NULL, *ga = NULL;
    const char *grule;
    int rc = fp_verify_extract(text, &pa, rule);
    if (rc) return rc;
    rc = fp_verify_extract(gold, &ga, &grule);
    if (rc) { free(pa); return rc; }
    *correct = pa && ga && fp_verify_equal(pa, ga);
    free(ga);
    if (extracted) *extracted = pa;
    else free(pa);
    return FP_OK;
}
