/* A small recursive-descent parser and evaluator for normalised answer expressions:
 *   + - * / ^ (and \cdot \times \div), implicit multiplication, parentheses / brackets / braces, |x|,
 *   postfix !, \frac{a}{b} and \frac ab, \sqrt{x} and \sqrt[n]{x}, \pi, e, \infty, single-letter variables
 *   (optionally subscripted: x_1, a_{10}), and the functions sin cos tan sec csc cot arcsin arccos arctan
 *   sinh cosh tanh log ln exp (with or without a backslash; \log_b x; \sin^2 x).
 * The parser accepts only input it consumes completely; anything else is "not an expression". */
#include "verify/verify_internal.h"
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

enum {
    N_NUM, N_VAR, N_ADD, N_SUB, N_MUL, N_DIV, N_POW, N_NEG, N_FUNC, N_ABS, N_FACT, N_LOGB
};
enum {
    F_SIN, F_COS, F_TAN, F_SEC, F_CSC, F_COT, F_ASIN, F_ACOS, F_ATAN, F_SINH, F_COSH, F_TANH, F_LOG, F_LN,
    F_EXP, F_SQRT
};
static const struct { const char *name; int id; } funcs[] = {
    {"arcsin", F_ASIN}, {"arccos", F_ACOS}, {"arctan", F_ATAN}, {"sinh", F_SINH}, {"cosh", F_COSH},
    {"tanh", F_TANH}, {"sin", F_SIN}, {"cos", F_COS}, {"tan", F_TAN}, {"sec", F_SEC}, {"csc", F_CSC},
    {"cot", F_COT}, {"log", F_LOG}, {"ln", F_LN}, {"exp", F_EXP}, {"sqrt", F_SQRT},
};

typedef struct {
    const char *p;
    fpv_expr *e;
    int depth;
    int err;
} parser;

static int add_node(parser *ps, int op, int a, int b, double v) {
    fpv_expr *e = ps->e;
    if (ps->err) return -1;
    if (e->count == e->cap) {
        int nc = e->cap ? e->cap * 2 : 32;
        fpv_node *n = realloc(e->nodes, (size_t)nc * sizeof *n);
        if (!n) { ps->err = 1; return -1; }
        e->nodes = n;
        e->cap = nc;
    }
    e->nodes[e->count] = (fpv_node){op, a, b, v};
    return e->count++;
}

static void skip_ws(parser *ps) {
    while (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n') ps->p++;
}

/* Length of the control word at p (p points at the backslash), 0 if p is not a control word. */
static size_t cmd_len(const char *p) {
    if (p[0] != '\\' || !isalpha((unsigned char)p[1])) return 0;
    size_t n = 1;
    while (isalpha((unsigned char)p[n])) n++;
    return n;
}
static int is_cmd(const char *p, const char *name) {
    size_t n = cmd_len(p);
    return n && n - 1 == strlen(name) && !strncmp(p + 1, name, n - 1);
}
static int func_at(const char *p, size_t len) {
    for (size_t i = 0; i < sizeof funcs / sizeof funcs[0]; i++)
        if (strlen(funcs[i].name) == len && !strncmp(p, funcs[i].name, len)) return funcs[i].id;
    return -1;
}
/* A function name starting at p (after an optional backslash): sets *len of the whole token. */
static int func_prefix(const char *p, size_t *len) {
    for (size_t i = 0; i < sizeof funcs / sizeof funcs[0]; i++) {
        size_t n = strlen(funcs[i].name);
        if (!strncmp(p, funcs[i].name, n)) { *len = n; return funcs[i].id; }
    }
    return -1;
}

static int parse_expr(parser *ps);
static int parse_unary(parser *ps);
static int parse_power(parser *ps);

static int fail(parser *ps) {
    ps->err = 1;
    return -1;
}

static int parse_number(parser *ps) {
    const char *s = ps->p;
    const char *q = s;
    while (isdigit((unsigned char)*q)) q++;
    if (*q == '.' && isdigit((unsigned char)q[1])) {
        q++;
        while (isdigit((unsigned char)*q)) q++;
    } else if (*q == '.' && q > s && !isdigit((unsigned char)q[1])) {
        q++; /* "5." */
    }
    if (q == s) return fail(ps);
    if ((*q == 'e' || *q == 'E') &&
        (isdigit((unsigned char)q[1]) || ((q[1] == '+' || q[1] == '-') && isdigit((unsigned char)q[2])))) {
        q += 2;
        while (isdigit((unsigned char)*q)) q++;
    }
    char buf[128];
    size_t n = (size_t)(q - s);
    if (n >= sizeof buf) return fail(ps);
    memcpy(buf, s, n);
    buf[n] = 0;
    ps->p = q;
    return add_node(ps, N_NUM, -1, -1, strtod(buf, NULL));
}

/* A LaTeX macro argument: {expr}, a single digit, a single letter, or a control word primary. */
static int parse_arg(parser *ps) {
    skip_ws(ps);
    char c = *ps->p;
    if (c == '{') {
        ps->p++;
        int r = parse_expr(ps);
        skip_ws(ps);
        if (*ps->p != '}') return fail(ps);
        ps->p++;
        return r;
    }
    if (isdigit((unsigned char)c)) {
        ps->p++;
        return add_node(ps, N_NUM, -1, -1, c - '0');
    }
    if (isalpha((unsigned char)c) || c == '\\') return parse_power(ps); /* one letter or control word */
    return fail(ps);
}

static int var_node(parser *ps, const char *name, size_t n) {
    fpv_expr *e = ps->e;
    if (n >= sizeof e->vars[0]) return fail(ps);
    for (int i = 0; i < e->nvars; i++)
        if (strlen(e->vars[i]) == n && !strncmp(e->vars[i], name, n)) return add_node(ps, N_VAR, -1, -1, i);
    if (e->nvars == FPV_MAX_VARS) return fail(ps);
    memcpy(e->vars[e->nvars], name, n);
    e->vars[e->nvars][n] = 0;
    return add_node(ps, N_VAR, -1, -1, e->nvars++);
}

/* Function application after the name: optional ^power, then (expr), {expr}, or a power-level factor. */
static int parse_func_app(parser *ps, int fid) {
    int pw = -1;
    skip_ws(ps);
    if (fid == F_SQRT) {
        int idx = -1;
        if (*ps->p == '[') {
            ps->p++;
            idx = parse_expr(ps);
            skip_ws(ps);
            if (*ps->p != ']') return fail(ps);
            ps->p++;
        }
        int arg;
        skip_ws(ps);
        if (*ps->p == '(') {
            ps->p++;
            arg = parse_expr(ps);
            skip_ws(ps);
            if (*ps->p != ')') return fail(ps);
            ps->p++;
        } else {
            arg = parse_arg(ps);
        }
        if (idx < 0) return add_node(ps, N_FUNC, arg, -1, F_SQRT);
        int one = add_node(ps, N_NUM, -1, -1, 1);
        int inv = add_node(ps, N_DIV, one, idx, 0);
        return add_node(ps, N_POW, arg, inv, 0);
    }
    int base = -1;
    if ((fid == F_LOG) && *ps->p == '_') {
        ps->p++;
        base = parse_arg(ps);
        skip_ws(ps);
    }
    if (*ps->p == '^') {
        ps->p++;
        skip_ws(ps);
        if (*ps->p == '{') pw = parse_arg(ps);
        else if (*ps->p == '-') { ps->p++; int t = parse_arg(ps); pw = add_node(ps, N_NEG, t, -1, 0); }
        else pw = parse_arg(ps);
        skip_ws(ps);
    }
    int arg;
    if (*ps->p == '(' || *ps->p == '{') {
        char close = *ps->p == '(' ? ')' : '}';
        ps->p++;
        arg = parse_expr(ps);
        skip_ws(ps);
        if (*ps->p != close) return fail(ps);
        ps->p++;
    } else {
        arg = parse_power(ps);
    }
    int r = base >= 0 ? add_node(ps, N_LOGB, arg, base, 0) : add_node(ps, N_FUNC, arg, -1, fid);
    if (pw >= 0) {
        /* \sin^{-1} x means arcsin */
        if (ps->e->nodes[pw].op == N_NEG && ps->e->nodes[ps->e->nodes[pw].a].op == N_NUM &&
            ps->e->nodes[ps->e->nodes[pw].a].v == 1 && fid <= F_TAN) {
            ps->e->nodes[r].v = fid == F_SIN ? F_ASIN : fid == F_COS ? F_ACOS : F_ATAN;
            return r;
        }
        r = add_node(ps, N_POW, r, pw, 0);
    }
    return r;
}

static int parse_primary(parser *ps) {
    if (++ps->depth > 200) return fail(ps);
    skip_ws(ps);
    const char *p = ps->p;
    char c = *p;
    int r;
    if (isdigit((unsigned char)c) || (c == '.' && isdigit((unsigned char)p[1]))) {
        r = parse_number(ps);
    } else if (c == '(' || c == '[' || c == '{') {
        char close = c == '(' ? ')' : c == '[' ? ']' : '}';
        ps->p++;
        r = parse_expr(ps);
        skip_ws(ps);
        if (*ps->p != close) r = fail(ps);
        else ps->p++;
    } else if (c == '|') {
        ps->p++;
        int a = parse_expr(ps);
        skip_ws(ps);
        if (*ps->p != '|') r = fail(ps);
        else { ps->p++; r = add_node(ps, N_ABS, a, -1, 0); }
    } else if (c == '\\') {
        size_t n = cmd_len(p);
        if (!n) return fail(ps);
        int fid = func_at(p + 1, n - 1);
        if (is_cmd(p, "frac") || is_cmd(p, "dfrac") || is_cmd(p, "tfrac")) {
            ps->p += n;
            int a = parse_arg(ps);
            int b = parse_arg(ps);
            r = add_node(ps, N_DIV, a, b, 0);
        } else if (is_cmd(p, "pi")) {
            ps->p += n;
            r = add_node(ps, N_NUM, -1, -1, M_PI);
        } else if (is_cmd(p, "infty")) {
            ps->p += n;
            r = add_node(ps, N_NUM, -1, -1, INFINITY);
        } else if (fid >= 0) {
            ps->p += n;
            r = parse_func_app(ps, fid);
        } else {
            return fail(ps);
        }
    } else if (isalpha((unsigned char)c)) {
        size_t flen;
        int fid = func_prefix(p, &flen);
        if (fid >= 0) {
            ps->p += flen;
            r = parse_func_app(ps, fid);
        } else if (c == 'p' && p[1] == 'i' && !isalpha((unsigned char)p[2])) {
            ps->p += 2;
            r = add_node(ps, N_NUM, -1, -1, M_PI);
        } else if (c == 'e' && p[1] != '_') {
            ps->p++;
            r = add_node(ps, N_NUM, -1, -1, M_E);
        } else {
            const char *q = p + 1;
            if (*q == '_') {
                q++;
                if (*q == '{') {
                    const char *end = strchr(q, '}');
                    if (!end) return fail(ps);
                    q = end + 1;
                } else if (isalnum((unsigned char)*q)) {
                    q++;
                } else {
                    return fail(ps);
                }
            }
            ps->p = q;
            r = var_node(ps, p, (size_t)(q - p));
        }
    } else {
        return fail(ps);
    }
    /* postfix factorial */
    skip_ws(ps);
    while (*ps->p == '!' ) {
        ps->p++;
        r = add_node(ps, N_FACT, r, -1, 0);
        skip_ws(ps);
    }
    ps->depth--;
    return r;
}

static int parse_power(parser *ps) {
    int base = parse_primary(ps);
    if (ps->err) return -1;
    skip_ws(ps);
    if (*ps->p != '^') return base;
    ps->p++;
    skip_ws(ps);
    int ex;
    if (*ps->p == '{' || *ps->p == '(') {
        ex = parse_primary(ps);
    } else if (*ps->p == '-' || *ps->p == '+') {
        int neg = *ps->p == '-';
        ps->p++;
        ex = parse_power(ps);
        if (neg) ex = add_node(ps, N_NEG, ex, -1, 0);
    } else {
        ex = parse_power(ps); /* right-associative; a whole number is one exponent (2^10) */
    }
    return add_node(ps, N_POW, base, ex, 0);
}

static int parse_unary(parser *ps) {
    if (ps->depth > 200) return fail(ps);
    skip_ws(ps);
    if (*ps->p == '-') {
        ps->p++;
        ps->depth++;
        int a = parse_unary(ps);
        ps->depth--;
        return add_node(ps, N_NEG, a, -1, 0);
    }
    if (*ps->p == '+') {
        ps->p++;
        ps->depth++;
        int a = parse_unary(ps);
        ps->depth--;
        return a;
    }
    return parse_power(ps);
}

/* Whether the text at p starts a factor (for implicit multiplication). */
static int starts_factor(const char *p) {
    char c = *p;
    if (isalnum((unsigned char)c) || c == '(' || c == '[' || c == '{' || c == '.') return 1;
    if (c == '\\') {
        if (is_cmd(p, "cdot") || is_cmd(p, "times") || is_cmd(p, "div")) return 0;
        return cmd_len(p) > 0;
    }
    return 0;
}

static int parse_term(parser *ps) {
    int l = parse_unary(ps);
    for (;;) {
        if (ps->err) return -1;
        skip_ws(ps);
        const char *p = ps->p;
        if (*p == '*' || *p == '/') {
            ps->p++;
            int r = parse_unary(ps);
            l = add_node(ps, *p == '*' ? N_MUL : N_DIV, l, r, 0);
        } else if (is_cmd(p, "cdot") || is_cmd(p, "times")) {
            ps->p += cmd_len(p);
            int r = parse_unary(ps);
            l = add_node(ps, N_MUL, l, r, 0);
        } else if (is_cmd(p, "div")) {
            ps->p += cmd_len(p);
            int r = parse_unary(ps);
            l = add_node(ps, N_DIV, l, r, 0);
        } else if (starts_factor(p)) {
            int r = parse_power(ps);
            l = add_node(ps, N_MUL, l, r, 0);
        } else {
            return l;
        }
    }
}

static int parse_expr(parser *ps) {
    if (++ps->depth > 200) return fail(ps);
    int l = parse_term(ps);
    for (;;) {
        if (ps->err) return -1;
        skip_ws(ps);
        char c = *ps->p;
        if (c != '+' && c != '-') break;
        ps->p++;
        int r = parse_term(ps);
        l = add_node(ps, c == '+' ? N_ADD : N_SUB, l, r, 0);
    }
    ps->depth--;
    return l;
}

/* Runs of 3+ letters that are not control words or function names mean words, not algebra. */
static int has_word(const char *s) {
    for (const char *p = s; *p;) {
        if (*p == '\\' && cmd_len(p)) { p += cmd_len(p); continue; }
        if (isalpha((unsigned char)*p)) {
            const char *q = p;
            while (isalpha((unsigned char)*q)) q++;
            if (q - p >= 3) {
                /* allow concatenated function names like "sinx"? no: only exact function prefixes */
                const char *t = p;
                while (t < q) {
                    size_t fl;
                    if (func_prefix(t, &fl) >= 0) { t += fl; continue; }
                    if (t[0] == 'p' && t[1] == 'i') { t += 2; continue; }
                    break;
                }
                /* leftover letters after function names (e.g. "sinx") are variables: at most 2 */
                if (q - t >= 3) return 1;
            }
            p = q;
            continue;
        }
        p++;
    }
    return 0;
}

int fpv_expr_parse(const char *s, fpv_expr *e) {
    memset(e, 0, sizeof *e);
    e->root = -1;
    if (!s || strlen(s) > 2000 || has_word(s)) return -1; /* long input: bounded recursion in eval */
    parser ps = {s, e, 0, 0};
    skip_ws(&ps);
    if (!*ps.p) return -1;
    int r = parse_expr(&ps);
    skip_ws(&ps);
    if (ps.err || r < 0 || *ps.p) {
        fpv_expr_free(e);
        return -1;
    }
    e->root = r;
    return 0;
}

void fpv_expr_free(fpv_expr *e) {
    free(e->nodes);
    e->nodes = NULL;
    e->count = e->cap = 0;
}

static double eval_node(const fpv_expr *e, int i, const double *vals) {
    const fpv_node *n = &e->nodes[i];
    double a, b;
    switch (n->op) {
    case N_NUM: return n->v;
    case N_VAR: return vals[(int)n->v];
    case N_ADD: return eval_node(e, n->a, vals) + eval_node(e, n->b, vals);
    case N_SUB: return eval_node(e, n->a, vals) - eval_node(e, n->b, vals);
    case N_MUL: return eval_node(e, n->a, vals) * eval_node(e, n->b, vals);
    case N_DIV:
        b = eval_node(e, n->b, vals);
        if (b == 0) return NAN;
        return eval_node(e, n->a, vals) / b;
    case N_POW: return pow(eval_node(e, n->a, vals), eval_node(e, n->b, vals));
    case N_NEG: return -eval_node(e, n->a, vals);
    case N_ABS: return fabs(eval_node(e, n->a, vals));
    case N_FACT:
        a = eval_node(e, n->a, vals);
        if (a < 0 || a != floor(a) || a > 170) return NAN;
        return tgamma(a + 1);
    case N_LOGB:
        a = eval_node(e, n->a, vals);
        b = eval_node(e, n->b, vals);
        if (a <= 0 || b <= 0 || b == 1) return NAN;
        return log(a) / log(b);
    case N_FUNC:
        a = eval_node(e, n->a, vals);
        switch ((int)n->v) {
        case F_SIN: return sin(a);
        case F_COS: return cos(a);
        case F_TAN: return tan(a);
        case F_SEC: return 1 / cos(a);
        case F_CSC: return 1 / sin(a);
        case F_COT: return cos(a) / sin(a);
        case F_ASIN: return asin(a);
        case F_ACOS: return acos(a);
        case F_ATAN: return atan(a);
        case F_SINH: return sinh(a);
        case F_COSH: return cosh(a);
        case F_TANH: return tanh(a);
        case F_LOG: return a > 0 ? log10(a) : NAN; /* \log without a base: base 10 (ambiguous; see docs) */
        case F_LN: return a > 0 ? log(a) : NAN;
        case F_EXP: return exp(a);
        case F_SQRT: return a >= 0 ? sqrt(a) : NAN;
        }
        return NAN;
    }
    return NAN;
}

double fpv_expr_eval(const fpv_expr *e, const double *vals) {
    if (!e->nodes || e->root < 0) return NAN;
    return eval_node(e, e->root, vals);
}
