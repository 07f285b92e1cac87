/* Trajectory scores from step rewards: r̂ = aggregate(step rewards) + α · final (spec.md §1.1, §3.1). */
#ifndef FP_AGGREGATE_H
#define FP_AGGREGATE_H
#include <stddef.h>

typedef enum { FP_AGG_MEAN = 0, FP_AGG_MIN, FP_AGG_LAST, FP_AGG_PROD } fp_aggregate;

/* Parses "mean" | "min" | "last" | "prod"; returns -1 for anything else. */
int fp_aggregate_parse(const char *name);
const char *fp_aggregate_name(fp_aggregate a);
/* Aggregates n step rewards (n >= 1; n == 0 gives NAN). */
double fp_aggregate_steps(const double *r, size_t n, fp_aggregate a);
/* aggregate + alpha * final; final may be NAN when the model has no final read-out (then alpha is ignored). */
double fp_trajectory_score(const double *r, size_t n, fp_aggregate a, double final_reward, double alpha);
#endif
