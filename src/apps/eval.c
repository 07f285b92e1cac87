/* ProcessBench metric. */
#include "apps/eval.h"

long fp_pb_first_error(const double *r, size_t n, double threshold) {
    for (size_t i = 0; i < n; i++)
        if (r[i] < threshold) return (long)i;
    return -1;
}

void fp_pb_add(fp_pb_stats *s, long label, long predicted) {
    if (label >= 0) {
        s->n_erroneous++;
        s->hit_erroneous += predicted == label;
    } else {
        s->n_correct++;
        s->hit_correct += predicted == -1;
    }
}

double fp_pb_acc_erroneous(const fp_pb_stats *s) { return s->n_erroneous ? (double)s->hit_erroneous / (double)s->n_erroneous : 0.0; }
double fp_pb_acc_correct(const fp_pb_stats *s) { return s->n_correct ? (double)s->hit_correct / (double)s->n_correct : 0.0; }

double fp_pb_f1(const fp_pb_stats *s) {
    double a = fp_pb_acc_erroneous(s), b = fp_pb_acc_correct(s);
    return a + b > 0 ? 2 * a * b / (a + b) : 0.0;
}
