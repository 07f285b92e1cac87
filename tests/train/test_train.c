/* Training core vs PyTorch autograd (fixtures from tests/ref/train/make_fixtures.py, HF Qwen2Model in float64):
 *   - every parameter gradient of the joint MSE, hard-label CE, LM and scalar-head losses within 1e-4 of the
 *     reference, relative to max|grad| of that tensor;
 *   - 10 AdamW steps (grad accumulation 2, global-norm clipping, warmup + cosine): losses and final weights
 *     within 1e-5 (absolute);
 *   - head-only mode, safetensors writer round trip, schedules, and an overfitting run. */
#include "base/base.h"
#include "harness.h"
#include "tensor/kernels.h"
#include "train/train.h"
#include <jansson.h>
#include <math.h>

#define FIX "tests/ref/train/fixtures"

static json_t *load_expected(void) {
    json_error_t err;
    json_t *j = json_load_file(FIX "/expected.json", 0, &err);
    if (!j) fprintf(stderr, "  expected.json: %s\n", err.text);
    return j;
}

/* ints / floats out of a JSON array (caller frees) */
static int *jints(json_t *a, int *n) {
    *n = (int)json_array_size(a);
    int *v = calloc((size_t)*n + 1, sizeof *v);
    for (int i = 0; i < *n; i++) v[i] = (int)json_integer_value(json_array_get(a, (size_t)i));
    return v;
}
static float *jfloats(json_t *a, int *n) {
    *n = (int)json_array_size(a);
    float *v = calloc((size_t)*n + 1, sizeof *v);
    for (int i = 0; i < *n; i++) v[i] = (float)json_number_value(json_array_get(a, (size_t)i));
    return v;
}

typedef struct {
    int *tokens, *pos, *label;
    float *reward;
    fpt_record r;
} rec_buf;

static void rec_from_json(rec_buf *b, json_t *j) {
    int n;
    b->tokens = jints(json_object_get(j, "tokens"), &b->r.T);
    b->pos = jints(json_object_get(j, "step_pos"), &b->r.n_steps);
    b->label = jints(json_object_get(j, "step_label"), &n);
    b->reward = jfloats(json_object_get(j, "step_reward"), &n);
    b->r.tokens = b->tokens;
    b->r.step_pos = b->pos;
    b->r.step_label = b->label;
    b->r.step_reward = b->reward;
    b->r.final_reward = (float)json_number_value(json_object_get(j, "final_reward"));
    b->r.scalar_target = (float)json_number_value(json_object_get(j, "scalar_target"));
    b->r.lm_targets = NULL;
}
static void rec_free(rec_buf *b) { free(b->tokens); free(b->pos); free(b->label); free(b->reward); }

static int new_fixture_model(fpt_model **m, int extra_heads) {
    fp_model_config mc;
    int rc = fp_model_config_load(&mc, FIX "/config.json");
    if (rc) return rc;
    fpt_config c;
    fpt_config_from_model(&c, &mc);
    c.has_lm_head = extra_heads;
    c.has_reward_head = extra_heads;
    if ((rc = fpt_model_new(m, &c))) return rc;
    fp_weights *w;
    if ((rc = fp_weights_open_safetensors(&w, FIX "/model.safetensors"))) { fpt_model_free(*m); return rc; }
    rc = fpt_model_load_weights(*m, w);
    fp_weights_free(w);
    if (rc) fpt_model_free(*m);
    return rc;
}

/* max |a-b| over a param; ref tensor must be F32 */
static double max_abs_diff(const float *a, const float *ref, size_t n, double *ref_max) {
    double d = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - ref[i]);
        if (e > d) d = e;
        if (fabs(ref[i]) > mx) mx = fabs(ref[i]);
    }
    if (ref_max) *ref_max = mx;
    return d;
}

static const fpt_loss_cfg *loss_for(const char *name, json_t *exp) {
    static fpt_loss_cfg lc;
    memset(&lc, 0, sizeof lc);
    lc.lambda_step = (float)json_number_value(json_object_get(exp, "lambda_step"));
    lc.lambda_final = (float)json_number_value(json_object_get(exp, "lambda_final"));
    if (!strcmp(name, "joint")) lc.w_joint = 1;
    if (!strcmp(name, "ce")) lc.w_ce = 1;
    if (!strcmp(name, "lm")) lc.w_lm = 1;
    if (!strcmp(name, "scalar")) lc.w_scalar = 1;
    return &lc;
}

/* Gradient tolerance: 1e-4 relative to max|grad| of the tensor. */
#define GRAD_RTOL 1e-4

static int check_grads_rec(const char *loss, const char *rec_key, const char *loss_key, const char *file) {
    json_t *exp = load_expected();
    CHECK(exp != NULL);
    if (!exp) return 0;
    fpt_model *m = NULL;
    CHECK_OK(new_fixture_model(&m, 1));
    if (!m) { json_decref(exp); return 0; }
    rec_buf rb;
    rec_from_json(&rb, json_object_get(exp, rec_key));
    fpt_loss_out lo;
    fpt_model_zero_grad(m);
    double t0 = fp_now();
    CHECK_OK(fpt_forward_backward(m, &rb.r, loss_for(loss, exp), 1.0f, &lo));
    double secs = fp_now() - t0;
    json_t *jw = json_object_get(exp, loss_key);
    double want = json_number_value(json_is_object(jw) ? json_object_get(jw, loss) : jw);
    double got = !strcmp(loss, "joint") ? lo.joint : !strcmp(loss, "ce") ? lo.ce
                 : !strcmp(loss, "lm")  ? lo.lm : lo.scalar;
    CHECK_NEAR(got, want, 1e-5 * (1 + fabs(want)));
    CHECK_NEAR(lo.total, want, 1e-5 * (1 + fabs(want)));
    if (!strcmp(rec_key, "grad_record") && !strcmp(loss, "joint")) {
        int n;
        float *lg = jfloats(json_object_get(exp, "grad_logits2"), &n);
        const float *z = fpt_model_score_logits(m);
        CHECK(n == 2 * rb.r.T && z);
        for (int i = 0; z && i < n; i++) CHECK_NEAR(z[i], lg[i], 1e-4 * (1 + fabs(lg[i])));
        free(lg);
    }
    fp_weights *g;
    CHECK_OK(fp_weights_open_safetensors(&g, file));
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; g && i < fpt_model_param_count(m); i++) {
        const fpt_param *p = fpt_model_param(m, i);
        const fp_tensor *t = fp_weights_get(g, p->name);
        if (!t && (!strncmp(p->name, "lm_head.", 8) || !strncmp(p->name, "reward_head.", 12))) continue;
        CHECK_MSG(t && t->dtype == FP_F32 && t->nbytes == p->numel * 4, "%s", p->name);
        if (!t) continue;
        double rmax, d = max_abs_diff(fpt_model_grads(m) + p->offset, t->data, p->numel, &rmax);
        double rel = rmax > 0 ? d / rmax : d;
        if (rmax == 0) CHECK_MSG(d == 0, "%s: reference gradient is zero, ours max %g", p->name, d);
        else CHECK_MSG(rel <= GRAD_RTOL, "%s: max diff %g, max|ref| %g, rel %g", p->name, d, rmax, rel);
        if (rel > worst) { worst = rel; worst_name = p->name; }
    }
    printf("  %s (T=%d, %.3f s): loss %.9g (ref %.9g), worst relative grad diff %.3g (%s)\n", loss, rb.r.T, secs,
           got, want, worst, worst_name);
    fp_weights_free(g);
    rec_free(&rb);
    fpt_model_free(m);
    json_decref(exp);
    return 0;
}

static int check_grads(const char *loss) {
    char path[256];
    snprintf(path, sizeof path, FIX "/grads_%s.safetensors", loss);
    return check_grads_rec(loss, "grad_record", "grad_losses", path);
}

static int test_grads_joint(void) { return check_grads("joint"); }
static int test_grads_joint_long(void) {
    return check_grads_rec("joint", "long_record", "long_joint", FIX "/grads_joint_long.safetensors");
}
static int test_grads_ce(void) { return check_grads("ce"); }
static int test_grads_lm(void) { return check_grads("lm"); }
static int test_grads_scalar(void) { return check_grads("scalar"); }

/* Head-only mode: the head's gradients equal the full model's, the trunk gets none. */
static int test_head_only(void) {
    json_t *exp = load_expected();
    fpt_model *m = NULL;
    CHECK_OK(new_fixture_model(&m, 1));
    if (!m || !exp) { fpt_model_free(m); json_decref(exp); return 0; }
    rec_buf rb;
    rec_from_json(&rb, json_object_get(exp, "grad_record"));
    fp_weights *g;
    CHECK_OK(fp_weights_open_safetensors(&g, FIX "/grads_joint.safetensors"));
    fpt_model_set_mode(m, FPT_MODE_HEAD_ONLY);
    fpt_model_zero_grad(m);
    CHECK_OK(fpt_forward_backward(m, &rb.r, loss_for("joint", exp), 1.0f, NULL));
    for (int i = 0; g && i < fpt_model_param_count(m); i++) {
        const fpt_param *p = fpt_model_param(m, i);
        const float *gr = fpt_model_grads(m) + p->offset;
        if (!strncmp(p->name, "score.", 6)) {
            CHECK(p->trainable);
            double rmax, d = max_abs_diff(gr, fp_weights_get(g, p->name)->data, p->numel, &rmax);
            CHECK_MSG(d <= GRAD_RTOL * rmax, "%s", p->name);
        } else if (strncmp(p->name, "reward_head.", 12)) {
            CHECK(!p->trainable);
            double d = max_abs_diff(gr, gr, p->numel, NULL), mx = 0;
            for (size_t j = 0; j < p->numel; j++) if (fabs(gr[j]) > mx) mx = fabs(gr[j]);
            CHECK_MSG(mx == 0 && d == 0, "%s has gradient %g in head-only mode", p->name, mx);
        }
    }
    fp_weights_free(g);
    rec_free(&rb);
    fpt_model_free(m);
    json_decref(exp);
    return 0;
}

/* Gradient accumulation: two records at scale 1/2 == the mean of the two single-record gradients. */
static int test_grad_accumulation(void) {
    json_t *exp = load_expected();
    fpt_model *m = NULL;
    CHECK_OK(new_fixture_model(&m, 0));
    if (!m || !exp) { fpt_model_free(m); json_decref(exp); return 0; }
    json_t *recs = json_object_get(json_object_get(exp, "adamw"), "records");
    rec_buf a, b;
    rec_from_json(&a, json_array_get(recs, 0));
    rec_from_json(&b, json_array_get(recs, 1));
    size_t n = fpt_model_num_params(m);
    float *ga = malloc(n * sizeof(float)), *gb = malloc(n * sizeof(float));
    const fpt_loss_cfg *lc = loss_for("joint", exp);
    fpt_model_zero_grad(m);
    CHECK_OK(fpt_forward_backward(m, &a.r, lc, 1.0f, NULL));
    memcpy(ga, fpt_model_grads(m), n * sizeof(float));
    fpt_model_zero_grad(m);
    CHECK_OK(fpt_forward_backward(m, &b.r, lc, 1.0f, NULL));
    memcpy(gb, fpt_model_grads(m), n * sizeof(float));
    fpt_model_zero_grad(m);
    CHECK_OK(fpt_forward_backward(m, &a.r, lc, 0.5f, NULL));
    CHECK_OK(fpt_forward_backward(m, &b.r, lc, 0.5f, NULL));
    double d = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        double want = 0.5 * ((double)ga[i] + gb[i]);
        d = fmax(d, fabs(fpt_model_grads(m)[i] - want));
        mx = fmax(mx, fabs(want));
    }
    CHECK_MSG(d <= 1e-6 * mx, "accumulated gradient off by %g (max %g)", d, mx);
    free(ga);
    free(gb);
    rec_free(&a);
    rec_free(&b);
    fpt_model_free(m);
    json_decref(exp);
    return 0;
}

static int test_adamw_steps(void) {
    json_t *exp = load_expected();
    fpt_model *m = NULL;
    CHECK_OK(new_fixture_model(&m, 0));
    if (!m || !exp) { fpt_model_free(m); json_decref(exp); return 0; }
    json_t *aw = json_object_get(exp, "adamw"), *oc = json_object_get(aw, "config");
    fpt_adamw_cfg c = {0};
    c.lr = (float)json_number_value(json_object_get(oc, "lr"));
    c.beta1 = (float)json_number_value(json_object_get(oc, "beta1"));
    c.beta2 = (float)json_number_value(json_object_get(oc, "beta2"));
    c.eps = (float)json_number_value(json_object_get(oc, "eps"));
    c.weight_decay = (float)json_number_value(json_object_get(oc, "weight_decay"));
    c.max_grad_norm = (float)json_number_value(json_object_get(oc, "max_grad_norm"));
    c.warmup_steps = json_integer_value(json_object_get(oc, "warmup_steps"));
    c.total_steps = json_integer_value(json_object_get(oc, "total_steps"));
    c.schedule = FPT_SCHED_COSINE;
    int accum = (int)json_integer_value(json_object_get(oc, "accum"));
    json_t *recs = json_object_get(aw, "records");
    int nrec = (int)json_array_size(recs);
    rec_buf *rb = calloc((size_t)nrec, sizeof *rb);
    for (int i = 0; i < nrec; i++) rec_from_json(&rb[i], json_array_get(recs, (size_t)i));
    fpt_adamw opt;
    CHECK_OK(fpt_adamw_init(&opt, fpt_model_num_params(m)));
    const fpt_loss_cfg *lc = loss_for("joint", exp);
    double worst_loss = 0, worst_norm = 0;
    for (long step = 0; step < c.total_steps; step++) {
        fpt_model_zero_grad(m);
        double total = 0;
        for (int j = 0; j < accum; j++) {
            fpt_loss_out lo;
            CHECK_OK(fpt_forward_backward(m, &rb[(step * accum + j) % nrec].r, lc, 1.0f / accum, &lo));
            total += lo.total / accum;
        }
        double norm, lr;
        CHECK_OK(fpt_model_step(m, &opt, &c, &norm, &lr));
        double wl = json_number_value(json_array_get(json_object_get(aw, "losses"), (size_t)step));
        double wn = json_number_value(json_array_get(json_object_get(aw, "grad_norms"), (size_t)step));
        double wr = json_number_value(json_array_get(json_object_get(aw, "lrs"), (size_t)step));
        CHECK_NEAR(total, wl, 1e-5);
        CHECK_NEAR(norm, wn, 1e-4 * wn);
        CHECK_NEAR(lr, wr, 1e-6 * c.lr); /* c.lr is an f32 copy of the JSON value */
        worst_loss = fmax(worst_loss, fabs(total - wl));
        worst_norm = fmax(worst_norm, fabs(norm - wn) / wn);
    }
    fp_weights *w;
    CHECK_OK(fp_weights_open_safetensors(&w, FIX "/adamw_final.safetensors"));
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; w && i < fpt_model_param_count(m); i++) {
        const fpt_param *p = fpt_model_param(m, i);
        const fp_tensor *t = fp_weights_get(w, p->name);
        CHECK_MSG(t != NULL, "%s", p->name);
        if (!t) continue;
        double d = max_abs_diff(fpt_model_params(m) + p->offset, t->data, p->numel, NULL);
        CHECK_MSG(d <= 1e-5, "%s: weights differ by %g after 10 steps", p->name, d);
        if (d > worst) { worst = d; worst_name = p->name; }
    }
    printf("  worst loss diff %.3g, worst grad-norm rel diff %.3g, worst weight diff %.3g (%s)\n", worst_loss,
           worst_norm, worst, worst_name);
    fp_weights_free(w);
    fpt_adamw_free(&opt);
    for (int i = 0; i < nrec; i++) rec_free(&rb[i]);
    free(rb);
    fpt_model_free(m);
    json_decref(exp);
    return 0;
}

/* Resume: 3 steps, save weights + optimizer, 3 more steps == fresh model loaded from the checkpoint, 3 steps. */
static int test_resume(void) {
    json_t *exp = load_expected();
    fpt_model *a = NULL, *b = NULL;
    CHECK_OK(new_fixture_model(&a, 0));
    CHECK_OK(new_fixture_model(&b, 0));
    fpt_adamw oa = {0}, ob = {0};
    fp_weights *w = NULL;
    if (!a || !b || !exp) goto done;
    fpt_adamw_cfg c = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.1f,
                       .max_grad_norm = 0.5f, .schedule = FPT_SCHED_LINEAR, .warmup_steps = 1, .total_steps = 6};
    rec_buf rb;
    rec_from_json(&rb, json_array_get(json_object_get(json_object_get(exp, "adamw"), "records"), 2));
    const fpt_loss_cfg *lc = loss_for("joint", exp);
    CHECK_OK(fpt_adamw_init(&oa, fpt_model_num_params(a)));
    CHECK_OK(fpt_adamw_init(&ob, fpt_model_num_params(b)));
    char wpath[512], opath[512];
    snprintf(wpath, sizeof wpath, "%s/resume_model.safetensors", th_tmpdir());
    snprintf(opath, sizeof opath, "%s/resume_optim.safetensors", th_tmpdir());
    for (int step = 0; step < 6; step++) {
        if (step == 3) {
            CHECK_OK(fpt_model_save(a, wpath));
            CHECK_OK(fpt_adamw_save(&oa, a, opath));
        }
        fpt_model_zero_grad(a);
        CHECK_OK(fpt_forward_backward(a, &rb.r, lc, 1.0f, NULL));
        CHECK_OK(fpt_model_step(a, &oa, &c, NULL, NULL));
    }
    CHECK_OK(fp_weights_open_safetensors(&w, wpath));
    if (w) CHECK_OK(fpt_model_load_weights(b, w));
    CHECK_OK(fpt_adamw_load(&ob, b, opath));
    CHECK(ob.step == 3);
    for (int step = 3; step < 6; step++) {
        fpt_model_zero_grad(b);
        CHECK_OK(fpt_forward_backward(b, &rb.r, lc, 1.0f, NULL));
        CHECK_OK(fpt_model_step(b, &ob, &c, NULL, NULL));
    }
    CHECK(!memcmp(fpt_model_params(a), fpt_model_params(b), fpt_model_num_params(a) * sizeof(float)));
    CHECK(!memcmp(oa.v, ob.v, oa.n * sizeof(float)));
    CHECK(fpt_adamw_load(&ob, b, wpath) == FP_EPARSE); /* not an optimizer file */
    rec_free(&rb);
done:
    fp_weights_free(w);
    fpt_adamw_free(&oa);
    fpt_adamw_free(&ob);
    fpt_model_free(a);
    fpt_model_free(b);
    json_decref(exp);
    return 0;
}

/* Train -> save -> serve: a trained PRM checkpoint written by fpt_model_save loads in the inference engine
 * (fp_model_load) and gives the same score logits.  Tolerance 1e-2 absolute leaves room for reduced-precision
 * fast paths in the engine; layout or naming mistakes give O(1) differences. */
static int test_engine_roundtrip(void) {
    json_t *exp = load_expected();
    fpt_model *m = NULL;
    fp_model *im = NULL;
    char *cfg = NULL;
    CHECK_OK(new_fixture_model(&m, 0));
    if (!m || !exp) goto done;
    rec_buf rb;
    rec_from_json(&rb, json_object_get(exp, "long_record"));
    fpt_adamw_cfg c = {.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .schedule = FPT_SCHED_CONSTANT};
    fpt_adamw opt;
    CHECK_OK(fpt_adamw_init(&opt, fpt_model_num_params(m)));
    fpt_model_zero_grad(m);
    CHECK_OK(fpt_forward_backward(m, &rb.r, loss_for("joint", exp), 1.0f, NULL));
    CHECK_OK(fpt_model_step(m, &opt, &c, NULL, NULL));
    fpt_adamw_free(&opt);
    CHECK_OK(fpt_forward_backward(m, &rb.r, loss_for("joint", exp), 0.0f, NULL)); /* logits of the new weights */
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/served", th_tmpdir());
    mkdir(dir, 0777);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK_OK(fpt_model_save(m, path));
    size_t len;
    CHECK_OK(fp_read_file(FIX "/config.json", &cfg, &len));
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "wb");
    CHECK(f && cfg && fwrite(cfg, 1, len, f) == len);
    if (f) fclose(f);
    CHECK_OK(fp_model_load(&im, dir));
    if (im) {
        int T = rb.r.T;
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)T);
        int *pos = malloc(sizeof(int) * (size_t)T);
        float *lg = malloc(sizeof(float) * 2 * (size_t)T);
        for (int t = 0; t < T; t++) ids[t] = rb.r.tokens[t], pos[t] = t;
        CHECK_OK(fp_model_head_logits(im, ids, T, pos, T, lg));
        const float *z = fpt_model_score_logits(m);
        double d = 0;
        for (int i = 0; z && i < 2 * T; i++) d = fmax(d, fabs(z[i] - lg[i]));
        CHECK_MSG(z && d <= 1e-2, "trainer vs inference engine logits differ by %g", d);
        printf("  T=%d: trainer vs inference engine score logits max diff %.3g\n", T, d);
        free(ids);
        free(pos);
        free(lg);
    }
    rec_free(&rb);
done:
    free(cfg);
    fp_model_free(im);
    fpt_model_free(m);
    json_decref(exp);
    return 0;
}

static int test_schedules(void) {
    fpt_adamw_cfg c = {.lr = 1.0f, .schedule = FPT_SCHED_LINEAR, .warmup_steps = 4, .total_steps = 14};
    CHECK_NEAR(fpt_lr_at(&c, 0), 0.0, 1e-12);
    CHECK_NEAR(fpt_lr_at(&c, 2), 0.5, 1e-12);
    CHECK_NEAR(fpt_lr_at(&c, 4), 1.0, 1e-12);
    CHECK_NEAR(fpt_lr_at(&c, 9), 0.5, 1e-12);
    CHECK_NEAR(fpt_lr_at(&c, 14), 0.0, 1e-12);
    CHECK_NEAR(fpt_lr_at(&c, 20), 0.0, 1e-12);
    c.schedule = FPT_SCHED_COSINE;
    c.min_lr_ratio = 0.1f;
    CHECK_NEAR(fpt_lr_at(&c, 9), 0.1 + 0.9 * 0.5, 1e-7);
    CHECK_NEAR(fpt_lr_at(&c, 14), 0.1, 1e-7);
    c.schedule = FPT_SCHED_CONSTANT;
    CHECK_NEAR(fpt_lr_at(&c, 100), 1.0, 1e-12);
    float g[3] = {3, 4, 0};
    CHECK_NEAR(fpt_clip_grad_norm(g, 3, 1.0f), 5.0, 1e-9);
    CHECK_NEAR(g[0], 0.6, 1e-6);
    CHECK_NEAR(g[1], 0.8, 1e-6);
    CHECK_NEAR(fpt_clip_grad_norm(g, 3, 10.0f), 1.0, 1e-6);
    CHECK_NEAR(g[0], 0.6, 1e-6);
    return 0;
}

/* The writer's output reads back bit-exactly through the project's safetensors reader.  With FPT_ST_OUT set
 * the file is also copied there for tests/ref/train/check_st_write.py (Python safetensors). */
static int test_st_write(void) {
    fpt_model *m = NULL;
    CHECK_OK(new_fixture_model(&m, 1));
    if (!m) return 0;
    char path[512];
    snprintf(path, sizeof path, "%s/ckpt.safetensors", th_tmpdir());
    CHECK_OK(fpt_model_save(m, path));
    fp_weights *w;
    CHECK_OK(fp_weights_open_safetensors(&w, path));
    CHECK(w && (int)fp_weights_count(w) == fpt_model_param_count(m));
    for (int i = 0; w && i < fpt_model_param_count(m); i++) {
        const fpt_param *p = fpt_model_param(m, i);
        const fp_tensor *t = fp_weights_get(w, p->name);
        CHECK_MSG(t && t->dtype == FP_F32 && t->ndim == p->ndim && t->shape[0] == p->shape[0] &&
                  !memcmp(t->data, fpt_model_params(m) + p->offset, p->numel * 4), "%s", p->name);
    }
    fp_weights_free(w);
    /* header is 8-byte aligned and padded with spaces */
    char *data;
    size_t len;
    CHECK_OK(fp_read_file(path, &data, &len));
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++) hl |= (uint64_t)(unsigned char)data[i] << (8 * i);
    CHECK(hl % 8 == 0 && hl < len && data[8] == '{');
    CHECK(!strncmp(data + 8, "{\"__metadata__\":{\"format\":\"pt\"}", 30));
    free(data);
    /* a mixed-dtype file with a name needing escapes */
    uint16_t hv[3] = {0x3c00, 0x4000, 0xc000};
    float one = 1.0f;
    fpt_st_tensor ts[2] = {{.name = "a\"b", .dtype = FP_F16, .ndim = 1, .shape = {3}, .data = hv},
                           {.name = "scalar", .dtype = FP_F32, .ndim = 0, .data = &one}};
    snprintf(path, sizeof path, "%s/mixed.safetensors", th_tmpdir());
    CHECK_OK(fpt_st_write(path, ts, 2, NULL));
    CHECK_OK(fp_weights_open_safetensors(&w, path));
    const fp_tensor *t = w ? fp_weights_get(w, "a\"b") : NULL;
    CHECK(t && t->dtype == FP_F16 && t->shape[0] == 3 && !memcmp(t->data, hv, 6));
    fp_weights_free(w);
    fpt_st_tensor dup[2] = {ts[1], ts[1]};
    CHECK(fpt_st_write(path, dup, 2, NULL) == FP_EINVAL);
    const char *keep = getenv("FPT_ST_OUT");
    if (keep) {
        CHECK_OK(fpt_model_save(m, keep));
        printf("  wrote %s\n", keep);
    }
    fpt_model_free(m);
    return 0;
}

/* A tiny model drives the joint loss on 32 records below 1% of its starting value. */
static int test_overfit(void) {
    fpt_config c = {.vocab = 32, .hidden = 32, .intermediate = 64, .layers = 2, .heads = 4, .kv_heads = 2,
                    .head_dim = 8, .rms_eps = 1e-6f, .rope_theta = 10000.0, .has_score = 1};
    fpt_model *m;
    CHECK_OK(fpt_model_new(&m, &c));
    if (!m) return 0;
    fpt_model_init_random(m, 42, 0.2f);
    enum { NREC = 32, T = 16, NS = 3 };
    static int tok[NREC][T], pos[NREC][NS];
    static float rew[NREC][NS];
    fpt_record rec[NREC];
    uint64_t s = 7;
    for (int i = 0; i < NREC; i++) {
        for (int t = 0; t < T; t++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            tok[i][t] = 2 + (int)((s >> 33) % 30);
        }
        for (int k = 0; k < NS; k++) {
            pos[i][k] = 4 + 4 * k;
            tok[i][pos[i][k]] = 1; /* step tag */
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            rew[i][k] = (float)((s >> 40) % 1000) / 999.0f;
        }
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        rec[i] = (fpt_record){.tokens = tok[i], .T = T, .n_steps = NS, .step_pos = pos[i], .step_reward = rew[i],
                              .final_reward = (float)((s >> 40) % 1000) / 999.0f};
    }
    fpt_loss_cfg lc = {.lambda_step = 1, .lambda_final = 1, .w_joint = 1};
    fpt_adamw_cfg oc = {.lr = 3e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.0f,
                        .max_grad_norm = 1.0f, .schedule = FPT_SCHED_CONSTANT, .warmup_steps = 10};
    fpt_adamw opt;
    CHECK_OK(fpt_adamw_init(&opt, fpt_model_num_params(m)));
    double start = 0, loss = 0;
    int steps = 0;
    double t0 = fp_now();
    for (; steps < 600; steps++) {
        fpt_model_zero_grad(m);
        loss = 0;
        for (int i = 0; i < NREC; i++) {
            fpt_loss_out lo;
            CHECK_OK(fpt_forward_backward(m, &rec[i], &lc, 1.0f / NREC, &lo));
            loss += lo.total / NREC;
        }
        if (steps == 0) start = loss;
        if (loss < 0.01 * start) break;
        CHECK_OK(fpt_model_step(m, &opt, &oc, NULL, NULL));
    }
    printf("  joint loss %.4g -> %.4g after %d full-batch steps (%.1f s)\n", start, loss, steps, fp_now() - t0);
    CHECK(loss < 0.01 * start);
    fpt_adamw_free(&opt);
    fpt_model_free(m);
    return 0;
}

static const fp_tensor *get_w(void *ctx, const char *name) { return fp_weights_get(ctx, name); }

/* LoRA (all seven targets, r 4, alpha 8, random B) + trainable score head: gradients vs PyTorch, base frozen,
 * and the PEFT-format adapter written by fpt_lora_save. */
static int test_lora(void) {
    json_t *exp = load_expected();
    if (!exp) { CHECK(exp != NULL); return 0; }
    json_t *jl = json_object_get(exp, "lora");
    fp_model_config mc;
    CHECK_OK(fp_model_config_load(&mc, FIX "/config.json"));
    fpt_config c;
    fpt_config_from_model(&c, &mc);
    c.lora_rank = (int)json_integer_value(json_object_get(jl, "r"));
    c.lora_alpha = (float)json_number_value(json_object_get(jl, "alpha"));
    CHECK_OK(fpt_lora_parse_targets("q,k,v,o_proj, gate,up,down", &c.lora_targets));
    CHECK(c.lora_targets == FPT_LORA_ALL);
    fpt_model *m = NULL;
    CHECK_OK(fpt_model_new(&m, &c));
    fp_weights *base = NULL, *lw = NULL, *g = NULL;
    CHECK_OK(fp_weights_open_safetensors(&base, FIX "/model.safetensors"));
    CHECK_OK(fp_weights_open_safetensors(&lw, FIX "/lora_init.safetensors"));
    CHECK_OK(fp_weights_open_safetensors(&g, FIX "/grads_lora_joint.safetensors"));
    if (!m || !base || !lw || !g) goto done;
    CHECK_OK(fpt_model_load(m, get_w, base));
    CHECK_OK(fpt_model_load_lora(m, get_w, lw));
    fpt_model_set_mode(m, FPT_MODE_LORA);
    rec_buf rb;
    rec_from_json(&rb, json_object_get(exp, "grad_record"));
    fpt_model_zero_grad(m);
    fpt_loss_out lo;
    CHECK_OK(fpt_forward_backward(m, &rb.r, loss_for("joint", exp), 1.0f, &lo));
    double want = json_number_value(json_object_get(jl, "joint"));
    CHECK_NEAR(lo.joint, want, 1e-5 * (1 + fabs(want)));
    double worst = 0;
    int nlora = 0;
    for (int i = 0; i < fpt_model_param_count(m); i++) {
        const fpt_param *p = fpt_model_param(m, i);
        const float *gr = fpt_model_grads(m) + p->offset;
        const fp_tensor *t = fp_weights_get(g, p->name);
        if (t) {
            CHECK_MSG(p->trainable, "%s", p->name);
            double rmax, d = max_abs_diff(gr, t->data, p->numel, &rmax);
            CHECK_MSG(rmax > 0 && d <= GRAD_RTOL * rmax, "%s: max diff %g, max|ref| %g", p->name, d, rmax);
            worst = fmax(worst, rmax > 0 ? d / rmax : d);
            nlora += p->is_lora;
        } else {
            double mx = 0;
            for (size_t j = 0; j < p->numel; j++) mx = fmax(mx, fabs(gr[j]));
            CHECK_MSG(!p->trainable && mx == 0, "%s: frozen base parameter got gradient %g", p->name, mx);
        }
    }
    CHECK(nlora == 2 * 7 * c.layers);
    printf("  lora: loss %.9g (ref %.9g), %d adapter matrices, worst relative grad diff %.3g\n", lo.joint, want,
           nlora, worst);
    rec_free(&rb);

    /* PEFT adapter directory */
    char dir[512], path[600];
    const char *keep = getenv("FPT_LORA_OUT");
    snprintf(dir, sizeof dir, "%s", keep ? keep : "");
    if (!keep) snprintf(dir, sizeof dir, "%s/adapter", th_tmpdir());
    CHECK_OK(fpt_lora_save(m, dir, "tiny-qwen2-prm"));
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    fp_weights *aw = NULL;
    CHECK_OK(fp_weights_open_safetensors(&aw, path));
    CHECK(aw && (int)fp_weights_count(aw) == nlora + 4);
    const fp_tensor *t = aw ? fp_weights_get(aw, "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight") : NULL;
    CHECK(t && t->ndim == 2 && t->shape[0] == c.hidden && t->shape[1] == c.lora_rank);
    CHECK(aw && fp_weights_get(aw, "base_model.model.score.2.bias") != NULL);
    fp_weights_free(aw);
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    json_error_t err;
    json_t *cfg = json_load_file(path, 0, &err);
    CHECK(cfg != NULL);
    if (cfg) {
        CHECK(!strcmp(json_string_value(json_object_get(cfg, "peft_type")), "LORA"));
        CHECK(json_integer_value(json_object_get(cfg, "r")) == c.lora_rank);
        CHECK(json_number_value(json_object_get(cfg, "lora_alpha")) == c.lora_alpha);
        CHECK(json_array_size(json_object_get(cfg, "target_modules")) == 7);
        json_decref(cfg);
    }
    /* PEFT default init: B = 0 (the adapter starts as the identity), |A| <= 1/sqrt(in) */
    fpt_lora_init(m, 1);
    const fpt_param *pa = fpt_model_find(m, "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight");
    const fpt_param *pb = fpt_model_find(m, "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight");
    CHECK(pa && pb && pa->shape[1] == c.intermediate);
    double amax = 0, bmax = 0;
    for (size_t j = 0; pa && j < pa->numel; j++) amax = fmax(amax, fabs(fpt_model_params(m)[pa->offset + j]));
    for (size_t j = 0; pb && j < pb->numel; j++) bmax = fmax(bmax, fabs(fpt_model_params(m)[pb->offset + j]));
    CHECK(amax > 0.5 / sqrt(c.intermediate) && amax <= 1.0 / sqrt(c.intermediate) && bmax == 0);
    unsigned mask;
    CHECK(fpt_lora_parse_targets("q,bogus", &mask) == FP_EINVAL);
done:
    fp_weights_free(base);
    fp_weights_free(lw);
    fp_weights_free(g);
    fpt_model_free(m);
    json_decref(exp);
    return 0;
}

/* Tied embeddings (Qwen2.5-1.5B style): d/d embed of the tied model == d/d embed + d/d lm_head of an untied
 * model whose lm_head holds a copy of the embedding. */
static int test_tied_lm_head(void) {
    json_t *exp = load_expected();
    fpt_model *u = NULL, *t = NULL;
    CHECK_OK(new_fixture_model(&u, 1));
    fp_model_config mc;
    CHECK_OK(fp_model_config_load(&mc, FIX "/config.json"));
    fpt_config c;
    fpt_config_from_model(&c, &mc);
    c.tie_embeddings = 1;
    c.has_lm_head = 1;
    CHECK_OK(fpt_model_new(&t, &c));
    if (!u || !t || !exp) goto done;
    CHECK(fpt_model_find(t, "lm_head.weight") == NULL);
    const fpt_param *ue = fpt_model_find(u, "model.embed_tokens.weight"), *ul = fpt_model_find(u, "lm_head.weight");
    memcpy(fpt_model_params(u) + ul->offset, fpt_model_params(u) + ue->offset, ue->numel * sizeof(float));
    for (int i = 0; i < fpt_model_param_count(t); i++) {
        const fpt_param *p = fpt_model_param(t, i), *q = fpt_model_find(u, p->name);
        memcpy(fpt_model_params(t) + p->offset, fpt_model_params(u) + q->offset, p->numel * sizeof(float));
    }
    rec_buf rb;
    rec_from_json(&rb, json_object_get(exp, "grad_record"));
    fpt_loss_out lu, lt;
    fpt_model_zero_grad(u);
    fpt_model_zero_grad(t);
    CHECK_OK(fpt_forward_backward(u, &rb.r, loss_for("lm", exp), 1.0f, &lu));
    CHECK_OK(fpt_forward_backward(t, &rb.r, loss_for("lm", exp), 1.0f, &lt));
    CHECK_NEAR(lu.lm, lt.lm, 1e-6);
    const float *ge = fpt_model_grads(u) + ue->offset, *gl = fpt_model_grads(u) + ul->offset;
    const float *gt = fpt_model_grads(t) + fpt_model_find(t, "model.embed_tokens.weight")->offset;
    double d = 0, mx = 0;
    for (size_t j = 0; j < ue->numel; j++) {
        d = fmax(d, fabs(gt[j] - ((double)ge[j] + gl[j])));
        mx = fmax(mx, fabs(gt[j]));
    }
    CHECK_MSG(d <= 1e-6 * mx, "tied embedding gradient off by %g (max %g)", d, mx);
    rec_free(&rb);
done:
    fpt_model_free(u);
    fpt_model_free(t);
    json_decref(exp);
    return 0;
}

static int test_bad_input(void) {
    fpt_config c = {.vocab = 16, .hidden = 8, .intermediate = 8, .layers = 1, .heads = 2, .kv_heads = 1,
                    .head_dim = 4, .rms_eps = 1e-6f, .rope_theta = 10000.0, .has_score = 1};
    fpt_model *m;
    CHECK_OK(fpt_model_new(&m, &c));
    int tok[3] = {1, 99, 2}, pos[1] = {5};
    float r[1] = {0.5f};
    fpt_record rec = {.tokens = tok, .T = 3, .n_steps = 1, .step_pos = pos, .step_reward = r};
    fpt_loss_cfg lc = {.lambda_step = 1, .w_joint = 1};
    CHECK(fpt_forward_backward(m, &rec, &lc, 1, NULL) == FP_EINVAL);
    tok[1] = 3;
    CHECK(fpt_forward_backward(m, &rec, &lc, 1, NULL) == FP_EINVAL); /* step position out of range */
    pos[0] = 1;
    CHECK_OK(fpt_forward_backward(m, &rec, &lc, 1, NULL));
    lc.w_lm = 1;
    CHECK(fpt_forward_backward(m, &rec, &lc, 1, NULL) == FP_ESTATE); /* no LM head */
    c.heads = 3; /* not a multiple of kv_heads */
    c.kv_heads = 2;
    fpt_model *bad = NULL;
    CHECK(fpt_model_new(&bad, &c) == FP_EINVAL && !bad);
    fpt_model_free(m);
    return 0;
}

/* ---------------------------------------------------------------- kernels vs plain double loops */

static float *rand_buf(size_t n, uint64_t *s) {
    float *v = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) {
        *s = *s * 6364136223846793005ull + 1442695040888963407ull;
        v[i] = (float)((double)(*s >> 40) / 16777216.0 * 2.0 - 1.0);
    }
    return v;
}

/* max |a-b| / max(max|b|, 1e-30) over n */
static double rel_diff(const float *a, const double *b, size_t n) {
    double mx = 0, d = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs(b[i]) > mx) mx = fabs(b[i]);
        if (fabs(a[i] - b[i]) > d || isnan(a[i])) d = isnan(a[i]) ? INFINITY : fabs(a[i] - b[i]);
    }
    return d / (mx > 1e-30 ? mx : 1e-30);
}

/* fpt_linear_forward / fpt_linear_backward at every kernel level (the avx512 level is the blocked, packed
 * kernel of gemm_fast_avx512.c) on odd shapes: ragged 64-column panels, row tails of the 6-row tile, inner
 * dimensions over the 256-deep K chunk, row counts over the 384-row job block, and T <= 4. */
static int test_linear_kernels(void) {
    static const int shapes[][3] = {{37, 83, 131}, {1, 17, 5}, {4, 300, 70}, {401, 130, 67}, {300, 520, 129},
                                    {13, 64, 2}, {150, 896, 128}};
    uint64_t seed = 7;
    double worst = 0;
    for (int lv = FP_KERN_REF; lv <= FP_KERN_AVX512; lv++) {
        fp_kernel_force(lv);
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            int T = shapes[si][0], K = shapes[si][1], N = shapes[si][2];
            float *x = rand_buf((size_t)T * K, &seed), *w = rand_buf((size_t)N * K, &seed), *b = rand_buf(N, &seed);
            float *dy = rand_buf((size_t)T * N, &seed), *y = rand_buf((size_t)T * N, &seed);
            float *dx = rand_buf((size_t)T * K, &seed), *dw = rand_buf((size_t)N * K, &seed), *db = rand_buf(N, &seed);
            double *ry = malloc(sizeof(double) * T * N), *rdx = malloc(sizeof(double) * T * K);
            double *rdw = malloc(sizeof(double) * N * K), *rdb = malloc(sizeof(double) * N);
            /* reference: y = x w^T + b; dx = dx0 + dy w; dw = dw0 + dy^T x; db = db0 + colsum dy */
            for (int t = 0; t < T; t++)
                for (int n = 0; n < N; n++) {
                    double a = b[n];
                    for (int k = 0; k < K; k++) a += (double)x[(size_t)t * K + k] * w[(size_t)n * K + k];
                    ry[(size_t)t * N + n] = a;
                }
            for (int t = 0; t < T; t++)
                for (int k = 0; k < K; k++) {
                    double a = dx[(size_t)t * K + k];
                    for (int n = 0; n < N; n++) a += (double)dy[(size_t)t * N + n] * w[(size_t)n * K + k];
                    rdx[(size_t)t * K + k] = a;
                }
            for (int n = 0; n < N; n++) {
                double sb = db[n];
                for (int t = 0; t < T; t++) sb += dy[(size_t)t * N + n];
                rdb[n] = sb;
                for (int k = 0; k < K; k++) {
                    double a = dw[(size_t)n * K + k];
                    for (int t = 0; t < T; t++) a += (double)dy[(size_t)t * N + n] * x[(size_t)t * K + k];
                    rdw[(size_t)n * K + k] = a;
                }
            }
            fpt_linear_forward(y, x, w, b, T, K, N);
            fpt_linear_backward(dx, dw, db, dy, x, w, T, K, N);
            double e[4] = {rel_diff(y, ry, (size_t)T * N), rel_diff(dx, rdx, (size_t)T * K),
                           rel_diff(dw, rdw, (size_t)N * K), rel_diff(db, rdb, N)};
            for (int i = 0; i < 4; i++) {
                CHECK_MSG(e[i] < 1e-5, "level %d T %d K %d N %d: output %d rel diff %.3g", lv, T, K, N, i, e[i]);
                if (e[i] > worst) worst = e[i];
            }
            free(x); free(w); free(b); free(dy); free(y); free(dx); free(dw); free(db);
            free(ry); free(rdx); free(rdw); free(rdb);
        }
    }
    fp_kernel_force(-1);
    printf("  linear fwd/bwd, 7 shapes x 3 levels: worst relative diff %.3g\n", worst);
    return 0;
}

/* fpt_attention_forward / _backward at every level vs a double-precision reference, T not a multiple of the
 * 64-row attention blocks, GQA 6/2 heads, head_dim 24. */
static int test_attention_kernels(void) {
    static const int Ts[] = {1, 23, 150};
    const int NH = 6, NKV = 2, D = 24, group = NH / NKV;
    uint64_t seed = 11;
    double worst = 0;
    for (int lv = FP_KERN_REF; lv <= FP_KERN_AVX512; lv++) {
        fp_kernel_force(lv);
        for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
            int T = Ts[ti];
            size_t nq = (size_t)T * NH * D, nk = (size_t)T * NKV * D, na = (size_t)NH * T * T;
            float *q = rand_buf(nq, &seed), *k = rand_buf(nk, &seed), *v = rand_buf(nk, &seed);
            float *dy = rand_buf(nq, &seed), *dq = rand_buf(nq, &seed), *dk = rand_buf(nk, &seed);
            float *dv = rand_buf(nk, &seed), *out = malloc(sizeof(float) * nq), *att = malloc(sizeof(float) * na);
            float *scr = malloc(sizeof(float) * na);
            for (size_t i = 0; i < nq; i++) q[i] *= 3.0f; /* peaked softmax rows */
            double *rout = calloc(nq, sizeof(double)), *ratt = calloc(na, sizeof(double));
            double *rdq = malloc(sizeof(double) * nq), *rdk = malloc(sizeof(double) * nk);
            double *rdv = malloc(sizeof(double) * nk), *dp = malloc(sizeof(double) * T);
            for (size_t i = 0; i < nq; i++) rdq[i] = dq[i];
            for (size_t i = 0; i < nk; i++) { rdk[i] = dk[i]; rdv[i] = dv[i]; }
            double sc = 1.0 / sqrt((double)D);
            for (int h = 0; h < NH; h++) {
                int g = h / group;
                for (int t = 0; t < T; t++) {
                    const float *qt = q + ((size_t)t * NH + h) * D;
                    double *row = ratt + ((size_t)h * T + t) * T, mx = -INFINITY, sum = 0, dot = 0;
                    for (int s = 0; s <= t; s++) {
                        double a = 0;
                        for (int d = 0; d < D; d++) a += (double)qt[d] * k[((size_t)s * NKV + g) * D + d];
                        row[s] = a * sc;
                        if (row[s] > mx) mx = row[s];
                    }
                    for (int s = 0; s <= t; s++) { row[s] = exp(row[s] - mx); sum += row[s]; }
                    for (int s = 0; s <= t; s++) row[s] /= sum;
                    const float *g_ = dy + ((size_t)t * NH + h) * D;
                    for (int s = 0; s <= t; s++) {
                        double a = 0;
                        for (int d = 0; d < D; d++) {
                            rout[((size_t)t * NH + h) * D + d] += row[s] * v[((size_t)s * NKV + g) * D + d];
                            a += (double)g_[d] * v[((size_t)s * NKV + g) * D + d];
                        }
                        dp[s] = a;
                        dot += a * row[s];
                    }
                    for (int s = 0; s <= t; s++) {
                        double ds = row[s] * (dp[s] - dot) * sc;
                        for (int d = 0; d < D; d++) {
                            rdq[((size_t)t * NH + h) * D + d] += ds * k[((size_t)s * NKV + g) * D + d];
                            rdk[((size_t)s * NKV + g) * D + d] += ds * qt[d];
                            rdv[((size_t)s * NKV + g) * D + d] += row[s] * g_[d];
                        }
                    }
                }
            }
            fpt_attention_forward(out, att, q, k, v, T, NH, NKV, D);
            fpt_attention_backward(dq, dk, dv, scr, dy, att, q, k, v, T, NH, NKV, D);
            double e[5] = {rel_diff(out, rout, nq), rel_diff(att, ratt, na), rel_diff(dq, rdq, nq),
                           rel_diff(dk, rdk, nk), rel_diff(dv, rdv, nk)};
            for (int i = 0; i < 5; i++) {
                CHECK_MSG(e[i] < 1e-5, "level %d T %d: output %d rel diff %.3g", lv, T, i, e[i]);
                if (e[i] > worst) worst = e[i];
            }
            free(q); free(k); free(v); free(dy); free(dq); free(dk); free(dv); free(out); free(att); free(scr);
            free(rout); free(ratt); free(rdq); free(rdk); free(rdv); free(dp);
        }
    }
    fp_kernel_force(-1);
    printf("  attention fwd/bwd, T 1/23/150 x 3 levels: worst relative diff %.3g\n", worst);
    return 0;
}

/* fpt_adamw_update (vectorised) gives exactly the bits of the scalar torch-order expression, tails included. */
static int test_adamw_update_bits(void) {
    uint64_t seed = 5;
    const size_t n = 70001; /* over the parallel threshold, odd tail */
    float *p = rand_buf(n, &seed), *g = rand_buf(n, &seed), *m = rand_buf(n, &seed), *v = rand_buf(n, &seed);
    for (size_t i = 0; i < n; i++) v[i] = v[i] * v[i];
    float *p2 = malloc(sizeof(float) * n), *m2 = malloc(sizeof(float) * n), *v2 = malloc(sizeof(float) * n);
    memcpy(p2, p, sizeof(float) * n); memcpy(m2, m, sizeof(float) * n); memcpy(v2, v, sizeof(float) * n);
    fpt_adamw_cfg c = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.1f};
    fpt_adamw_update(p, g, m, v, n, 1e-3, 3, &c, 1);
    double bc1 = 1.0 - pow(c.beta1, 3.0), bc2 = 1.0 - pow(c.beta2, 3.0);
    float step_size = (float)(1e-3 / bc1), bc2s = (float)sqrt(bc2), wdf = (float)(1.0 - 1e-3 * c.weight_decay);
    for (size_t i = 0; i < n; i++) {
        float gi = g[i];
        p2[i] *= wdf;
        m2[i] = c.beta1 * m2[i] + (1.0f - c.beta1) * gi;
        v2[i] = c.beta2 * v2[i] + (1.0f - c.beta2) * gi * gi;
        p2[i] -= step_size * m2[i] / (sqrtf(v2[i]) / bc2s + c.eps);
    }
    CHECK(!memcmp(p, p2, sizeof(float) * n));
    CHECK(!memcmp(m, m2, sizeof(float) * n));
    CHECK(!memcmp(v, v2, sizeof(float) * n));
    free(p); free(g); free(m); free(v); free(p2); free(m2); free(v2);
    return 0;
}

int main(void) {
    RUN(test_grads_joint);
    RUN(test_grads_joint_long);
    RUN(test_grads_ce);
    RUN(test_grads_lm);
    RUN(test_grads_scalar);
    RUN(test_head_only);
    RUN(test_grad_accumulation);
    RUN(test_adamw_steps);
    RUN(test_resume);
    RUN(test_engine_roundtrip);
    RUN(test_schedules);
    RUN(test_st_write);
    RUN(test_overfit);
    RUN(test_lora);
    RUN(test_tied_lm_head);
    RUN(test_bad_input);
    RUN(test_linear_kernels);
    RUN(test_attention_kernels);
    RUN(test_adamw_update_bits);
    return th_finish();
}
