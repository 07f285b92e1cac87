/* Aggregation rules, with expectations worked out by hand from their definitions (spec.md §3.1). */
#include "apps/aggregate.h"
#include "harness.h"

static int test_aggregates(void) {
    double r[] = {0.5, 0.25, 1.0};
    CHECK_NEAR(fp_aggregate_steps(r, 3, FP_AGG_MEAN), 1.75 / 3, 1e-15);
    CHECK_NEAR(fp_aggregate_steps(r, 3, FP_AGG_MIN), 0.25, 0);
    CHECK_NEAR(fp_aggregate_steps(r, 3, FP_AGG_LAST), 1.0, 0);
    CHECK_NEAR(fp_aggregate_steps(r, 3, FP_AGG_PROD), 0.125, 1e-15);
    CHECK(isnan(fp_aggregate_steps(r, 0, FP_AGG_MEAN)));
    CHECK_NEAR(fp_trajectory_score(r, 3, FP_AGG_MIN, 0.5, 2.0), 1.25, 1e-15);
    CHECK_NEAR(fp_trajectory_score(r, 3, FP_AGG_LAST, NAN, 2.0), 1.0, 0);
    CHECK(fp_aggregate_parse("prod") == FP_AGG_PROD && fp_aggregate_parse("median") == -1);
    return 0;
}

int main(void) {
    RUN(test_aggregates);
    return th_finish();
}
