/* Step-reward aggregation shared by score, select, bestofn and serve. */
#include "apps/aggregate.h"
#include <math.h>
#include <string.h>

int fp_aggregate_parse(const char *name) {
    static const char *names[] = {"mean", "min", "last", "prod"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(name, names[i])) return i;
    return -1;
}

const char *fp_aggregate_name(fp_aggregate a) {
    static const char *names[] = {"mean", "min", "last", "prod"};
    return (unsigned)a < 4 ? names[a] : "?";
}

double fp_aggregate_steps(const double *r, size_t n, fp_aggregate a) {
    if (n == 0) return NAN;
    double acc;
    switch (a) {
    case FP_AGG_MIN:
        acc = r[0];
        for (size_t i = 1; i < n; i++) acc = r[i] < acc ? r[i] : acc;
        return acc;
    case FP_AGG_LAST: return r[n - 1];
    case FP_AGG_PROD:
        acc = 1.0;
        for (size_t i = 0; i < n; i++) acc *= r[i];
        return acc;
    case FP_AGG_MEAN:
    default:
        acc = 0.0;
        for (size_t i = 0; i < n; i++) acc += r[i];
        return acc / (double)n;
    }
}

double fp_trajectory_score(const double *r, size_t n, fp_aggregate a, double final_reward, double alpha) {
    double s = fp_aggregate_steps(r, n, a);
    return isnan(final_reward) ? s : s + alpha * final_reward;
}
