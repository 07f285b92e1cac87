/* ProcessBench metric: definitions checked on hand-made cases, and the CLI on the real ProcessBench labels
 * with synthetic step rewards whose expected accuracies the test counts itself. */
#include "apps/eval.h"
#include "base/json.h"
#include "harness.h"

static int test_metric(void) {
    double r[] = {0.9, 0.7, 0.4, 0.2};
    CHECK(fp_pb_first_error(r, 4, 0.5) == 2);
    CHECK(fp_pb_first_error(r, 4, 0.1) == -1);
    CHECK(fp_pb_first_error(r, 4, 0.95) == 0);
    CHECK(fp_pb_first_error(r, 0, 0.5) == -1);
    fp_pb_stats s = {0};
    fp_pb_add(&s, 2, 2);   /* erroneous, hit */
    fp_pb_add(&s, 1, 3);   /* erroneous, miss */
    fp_pb_add(&s, -1, -1); /* correct, hit */
    fp_pb_add(&s, -1, -1);
    fp_pb_add(&s, -1, 0);  /* correct, miss */
    CHECK_NEAR(fp_pb_acc_erroneous(&s), 0.5, 1e-15);
    CHECK_NEAR(fp_pb_acc_correct(&s), 2.0 / 3.0, 1e-15);
    CHECK_NEAR(fp_pb_f1(&s), 2 * 0.5 * (2.0 / 3.0) / (0.5 + 2.0 / 3.0), 1e-15);
    return 0;
}

static int test_cli_on_processbench(void) {
    REQUIRE_SHARED(pb, "processbench/gsm8k.json");
    json_error_t e;
    json_t *all = json_load_file(pb, 0, &e);
    CHECK(json_is_array(all));
    char in[512], rep[512];
    snprintf(in, sizeof in, "%s/pb_scored.jsonl", th_tmpdir());
    snprintf(rep, sizeof rep, "%s/report.json", th_tmpdir());
    FILE *f = fopen(in, "w");
    long n_err = 0, hit_err = 0, n_ok = 0, hit_ok = 0;
    size_t i;
    json_t *rec;
    json_array_foreach(all, i, rec) {
        long label = (long)json_integer_value(json_object_get(rec, "label"));
        size_t n = json_array_size(json_object_get(rec, "steps"));
        /* synthetic rewards: every third record flags the labelled step, others flag step 0 or nothing */
        long flag = i % 3 == 0 ? label : (i % 3 == 1 ? 0 : -1);
        json_t *rw = json_array();
        for (size_t k = 0; k < n; k++) json_array_append_new(rw, json_real((long)k == flag ? 0.2 : 0.8));
        json_t *o = json_deep_copy(rec);
        json_object_set_new(o, "step_rewards", rw);
        fp_json_write_line(f, o);
        json_decref(o);
        long predicted = flag >= 0 && (size_t)flag < n ? flag : -1;
        if (label >= 0) { n_err++; hit_err += predicted == label; }
        else { n_ok++; hit_ok += predicted == -1; }
    }
    fclose(f);
    json_decref(all);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s eval --quiet --rewards-field step_rewards --report %s %s", th_bin(), rep, in);
    CHECK(system(cmd) == 0);
    json_t *r = json_load_file(rep, 0, &e);
    CHECK(r != NULL);
    double a = (double)hit_err / (double)n_err, b = (double)hit_ok / (double)n_ok;
    CHECK(json_integer_value(json_object_get(json_object_get(r, "erroneous"), "n")) == n_err);
    CHECK(json_integer_value(json_object_get(json_object_get(r, "correct"), "n")) == n_ok);
    CHECK_NEAR(json_real_value(json_object_get(json_object_get(r, "erroneous"), "acc")), a, 1e-6);
    CHECK_NEAR(json_real_value(json_object_get(json_object_get(r, "correct"), "acc")), b, 1e-6);
    CHECK_NEAR(json_real_value(json_object_get(r, "f1")), 2 * a * b / (a + b), 1e-6);
    json_decref(r);
    CHECK(n_err + n_ok == 400);
    /* usage and record errors */
    snprintf(cmd, sizeof cmd, "%s eval --quiet %s 2>/dev/null", th_bin(), in);
    CHECK(WEXITSTATUS(system(cmd)) == 2);
    snprintf(cmd, sizeof cmd, "%s eval --quiet --rewards-field nope %s 2>/dev/null", th_bin(), in);
    CHECK(WEXITSTATUS(system(cmd)) == 1);
    return 0;
}

int main(void) {
    RUN(test_metric);
    RUN(test_cli_on_processbench);
    return th_finish();
}
