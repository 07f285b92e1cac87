/* ProcessBench-style evaluation of step rewards: the predicted first wrong step is the first step whose
 * reward is below a threshold (-1 when none is); accuracy on erroneous samples (label >= 0) and on correct
 * samples (label == -1), and F1 = their harmonic mean (the ProcessBench metric). */
#ifndef FP_APPS_EVAL_H
#define FP_APPS_EVAL_H
#include <stddef.h>

typedef struct {
    long n_erroneous, hit_erroneous; /* label >= 0, and predicted == label */
    long n_correct, hit_correct;     /* label == -1, and predicted == -1 */
} fp_pb_stats;

/* First index with r[i] < threshold, or -1. */
long fp_pb_first_error(const double *r, size_t n, double threshold);
void fp_pb_add(fp_pb_stats *s, long label, long predicted);
double fp_pb_acc_erroneous(const fp_pb_stats *s);
double fp_pb_acc_correct(const fp_pb_stats *s);
/* Harmonic mean of the two accuracies (0 when both are 0). */
double fp_pb_f1(const fp_pb_stats *s);
#endif
