/* Internals of the math answer verifier (src/verify). */
#ifndef FP_VERIFY_INTERNAL_H
#define FP_VERIFY_INTERNAL_H
#include "base/base.h"

/* ---- expression parser / evaluator (expr.c) */
#define FPV_MAX_VARS 8
typedef struct {
    int op;        /* FPV_N_* */
    int a, b;      /* child node indices (-1 when unused) */
    double v;      /* constant value, or function id */
} fpv_node;
typedef struct {
    fpv_node *nodes;
    int count, cap;
    int root;
    int nvars;
    char vars[FPV_MAX_VARS][24];
} fpv_expr;
/* Parses a normalised answer as an arithmetic expression.  Returns 0 on success (e must then be freed
 * with fpv_expr_free), -1 when the text is not an expression this parser understands. */
int fpv_expr_parse(const char *s, fpv_expr *e);
/* Evaluates with vals[i] bound to variable e->vars[i]; NaN on domain errors. */
double fpv_expr_eval(const fpv_expr *e, const double *vals);
void fpv_expr_free(fpv_expr *e);

/* ---- normalisation (normalize.c) */
/* LaTeX-level cleanup of an extracted answer: strips $, \left/\right, spacing commands, \text{} wrappers,
 * degree marks, \dfrac/\tfrac, brace-wrapped single-character scripts, unicode operators.  Returns a
 * malloc'd string or NULL (out of memory). */
char *fpv_normalize(const char *s);

/* Numeric equality with the verifier's tolerances (relative 1e-6, absolute 1e-9). */
int fpv_num_equal(double a, double b);
#endif
