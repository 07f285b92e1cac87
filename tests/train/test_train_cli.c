/* `fluxprm train` end to end on the tiny PRM of tests/ref/score (Qwen2 hidden 8, the real 151936-id vocabulary and
 * tokenizer from ../shared, <extra_0> on id 151651 with --step-token-id).
 *   - the first step's loss (full batch = the input model's mean loss) equals HF transformers' (float64,
 *     tests/ref/train_cli/make_expected.py) for --loss mse (lambda 0.7/0.3), ce and lm: this checks the rendering,
 *     step positions, targets and SFT masks end to end;
 *   - overfitting a few records drives the loss down and `fluxprm score` on --out moves toward the targets;
 *   - --resume (after --stop-after, and after a SIGKILL in the middle of a checkpoint) gives the same final
 *     model.safetensors bytes as an uninterrupted run (--threads 1);
 *   - bad records (target 1.5, step count mismatch, NaN, missing fields) name file:line; --skip-bad;
 *   - a diverging run (--lr 1e30) stops at the non-finite loss, names the record and keeps the last checkpoint;
 *   - LoRA (adapter + --merge-lora), head-only, usage errors. */
#include "base/json.h"
#include "harness.h"
#include "json_files.h"
#include "tiny_models.h"
#include "model/weights.h"
#include "train/trainer.h"
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

#define REF "tests/ref/train_cli"
#define SREF "tests/ref/score"

static const char *prm_dir;

static int setup_model(void) { return th_tiny_prm_dirs(&prm_dir, NULL); }

static char last_err[1024];

/* Runs `fluxprm train --quiet --model PRM --step-token-id 151651 ARGS`; stderr goes to last_err's file. */
static int train(const char *args) {
    char cmd[8192];
    snprintf(last_err, sizeof last_err, "%s/train_%d.err", th_tmpdir(), rand());
    snprintf(cmd, sizeof cmd, "%s train --quiet --model %s --step-token-id 151651 %s 2>%s", th_bin(), prm_dir, args,
             last_err);
    int rc = system(cmd);
    if (WIFSIGNALED(rc)) return 128 + WTERMSIG(rc);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* stderr of the last train() contains all of the given strings */
static int err_has(const char *a, const char *b) {
    char *e;
    size_t n;
    if (fp_read_file(last_err, &e, &n)) return 0;
    int ok = strstr(e, a) && (!b || strstr(e, b));
    if (!ok) fprintf(stderr, "  stderr was: %s\n", e);
    free(e);
    return ok;
}

static char *outdir(const char *name) {
    static char buf[4][512];
    static int k;
    char *b = buf[k++ & 3];
    snprintf(b, sizeof buf[0], "%s/%s", th_tmpdir(), name);
    return b;
}

static double expected_loss(const char *which) {
    json_t *e;
    if (fp_json_load_file(&e, REF "/expected.json")) return NAN;
    double v = json_real_value(json_object_get(json_object_get(e, which), "mean_loss"));
    json_decref(e);
    return v;
}

/* `fluxprm score` of REF/targets.jsonl with model dir `model`: mean |reward - target| over steps and finals */
static double score_error(const char *model) {
    char out[1024], cmd[4096];
    snprintf(out, sizeof out, "%s/scored_%d.jsonl", th_tmpdir(), rand());
    snprintf(cmd, sizeof cmd, "%s score --quiet --model %s --step-token-id 151651 -o %s " REF "/targets.jsonl", th_bin(),
             model, out);
    if (system(cmd) != 0) return NAN;
    json_t *got = th_load_lines(out), *in = th_load_lines(REF "/targets.jsonl");
    double err = 0;
    int n = 0;
    for (size_t i = 0; i < json_array_size(got) && i < json_array_size(in); i++) {
        json_t *g = json_array_get(got, i), *r = json_array_get(in, i);
        json_t *gs = json_object_get(g, "step_rewards"), *ts = json_object_get(r, "step_targets");
        if (json_array_size(gs) != json_array_size(ts)) { json_decref(got); json_decref(in); return NAN; }
        for (size_t k = 0; k < json_array_size(ts); k++, n++)
            err += fabs(json_real_value(json_array_get(gs, k)) - json_number_value(json_array_get(ts, k)));
        if (json_object_get(r, "final_target")) {
            err += fabs(json_real_value(json_object_get(g, "final_reward")) -
                        json_number_value(json_object_get(r, "final_target")));
            n++;
        }
    }
    json_decref(got);
    json_decref(in);
    return n ? err / n : NAN;
}

static int exists(const char *dir, const char *name) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

static long state_step(const char *dir) {
    char p[1024];
    snprintf(p, sizeof p, "%s/training_state/state.json", dir);
    json_t *j;
    if (fp_json_load_file(&j, p)) return -1;
    long s = (long)json_integer_value(json_object_get(j, "step"));
    json_decref(j);
    return s;
}

/* The first full-batch step's loss is the input model's mean loss: compare with HF. */
static int test_first_loss_matches_hf(void) {
    int s = setup_model();
    if (s) return s;
    struct { const char *data, *loss, *key, *extra; int batch; } c[] = {
        {"targets", "mse", "mse", "--lambda-step 0.7 --lambda-final 0.3", 4},
        {"ce", "ce", "ce", "", 3},
        {"sft", "lm", "lm", "", 2},
    };
    for (int i = 0; i < 3; i++) {
        char args[2048], log[600];
        snprintf(log, sizeof log, "%s/first_%s.log", th_tmpdir(), c[i].key);
        snprintf(args, sizeof args, "--data " REF "/%s.jsonl --loss %s --batch-size %d --steps 1 --lr 1e-3 %s --out %s --log %s",
                 c[i].data, c[i].loss, c[i].batch, c[i].extra, outdir(c[i].key), log);
        CHECK(train(args) == 0);
        json_t *l = th_load_lines(log);
        CHECK(json_array_size(l) == 1);
        json_t *s1 = json_array_get(l, 0);
        double exp = expected_loss(c[i].key);
        CHECK_NEAR(json_real_value(json_object_get(s1, "loss")), exp, 1e-5 * fmax(1, exp));
        CHECK(json_integer_value(json_object_get(s1, "records")) == c[i].batch);
        CHECK(json_real_value(json_object_get(s1, "grad_norm")) > 0);
        CHECK(json_real_value(json_object_get(s1, "tokens_per_s")) > 0);
        json_decref(l);
    }
    return 0;
}

/* Overfit 4 records: the loss falls, and the saved checkpoint scores closer to the targets. */
static int test_overfit_and_score(void) {
    int s = setup_model();
    if (s) return s;
    char args[2048], log[600];
    const char *out = outdir("overfit");
    snprintf(log, sizeof log, "%s/overfit.log", th_tmpdir());
    snprintf(args, sizeof args, "--data " REF "/targets.jsonl --batch-size 4 --epochs 40 --lr 2e-2 --schedule constant "
             "--out %s --log %s", out, log);
    CHECK(train(args) == 0);
    json_t *l = th_load_lines(log);
    CHECK(json_array_size(l) == 40);
    double first = json_real_value(json_object_get(json_array_get(l, 0), "loss"));
    double last = json_real_value(json_object_get(json_array_get(l, json_array_size(l) - 1), "loss"));
    CHECK_MSG(last < 0.25 * first, "loss %g -> %g", first, last);
    for (size_t i = 0; i < json_array_size(l); i++) {
        json_t *e = json_array_get(l, i);
        CHECK(json_integer_value(json_object_get(e, "step")) == (json_int_t)i + 1);
        CHECK(json_integer_value(json_object_get(e, "epoch")) == (json_int_t)i);
        CHECK_NEAR(json_real_value(json_object_get(e, "lr")), 2e-2, 1e-9);
    }
    json_decref(l);
    /* an HF checkpoint directory */
    CHECK(exists(out, "config.json") && exists(out, "model.safetensors") && exists(out, "tokenizer.json") &&
          exists(out, "tokenizer_config.json") && exists(out, "training_state/optimizer.safetensors"));
    CHECK(!exists(out, "training_state.tmp"));
    char p[1024];
    snprintf(p, sizeof p, "%s/config.json", out);
    json_t *cfg;
    CHECK_OK(fp_json_load_file(&cfg, p));
    if (cfg) {
        CHECK(!strcmp(json_string_value(json_array_get(json_object_get(cfg, "architectures"), 0)), "Qwen2ForProcessRewardModel"));
        CHECK(json_integer_value(json_object_get(cfg, "hidden_size")) == 8);
        json_decref(cfg);
    }
    CHECK(state_step(out) == 40);
    double before = score_error(prm_dir), after = score_error(out);
    CHECK_MSG(after < 0.6 * before, "mean |reward - target|: %g before, %g after", before, after);
    return 0;
}

/* Interrupted + resumed == uninterrupted, byte for byte (--threads 1). */
static int test_resume_bitwise(void) {
    int s = setup_model();
    if (s) return s;
    const char *common = "--data " REF "/targets.jsonl --steps 7 --batch-size 3 --lr 5e-3 --schedule cosine --warmup 2 "
                         "--weight-decay 0.01 --clip 0.5 --threads 1 --seed 3";
    char args[4096], a[1024], b[1024];
    const char *full = outdir("full"), *stopped = outdir("stopped"), *killed = outdir("killed");
    snprintf(args, sizeof args, "%s --out %s", common, full);
    CHECK(train(args) == 0);
    /* stopped after step 3 (checkpoints at 2 and 3), then resumed to 7 */
    snprintf(args, sizeof args, "%s --out %s --save-every 2 --stop-after 3", common, stopped);
    CHECK(train(args) == 0);
    CHECK(state_step(stopped) == 3);
    snprintf(args, sizeof args, "%s --out %s --save-every 2", common, stopped);
    CHECK(train(args) == 1); /* a training state is there: refuses to start over without --resume */
    CHECK(err_has("--resume", NULL));
    snprintf(args, sizeof args, "%s --out %s --save-every 2 --resume", common, stopped);
    CHECK(train(args) == 0);
    CHECK(state_step(stopped) == 7);
    snprintf(a, sizeof a, "%s/model.safetensors", full);
    snprintf(b, sizeof b, "%s/model.safetensors", stopped);
    CHECK_MSG(th_same_file(a, b), "resumed weights differ from the uninterrupted run");
    /* SIGKILL while the step-4 checkpoint is half-way (new state written, not yet swapped in) */
    setenv("FLUXPRM_TEST_KILL_AT_SAVE", "4", 1);
    snprintf(args, sizeof args, "%s --out %s --save-every 2", common, killed);
    CHECK(train(args) == 128 + 9);
    unsetenv("FLUXPRM_TEST_KILL_AT_SAVE");
    CHECK(state_step(killed) == 2); /* the previous checkpoint is intact */
    snprintf(args, sizeof args, "%s --out %s --save-every 2 --resume", common, killed);
    CHECK(train(args) == 0);
    snprintf(b, sizeof b, "%s/model.safetensors", killed);
    CHECK_MSG(th_same_file(a, b), "weights after kill + resume differ from the uninterrupted run");
    CHECK(!exists(killed, "training_state.tmp"));
    /* a real SIGKILL at whatever moment the run has reached (before the first checkpoint, during one, or after
     * the end): the resumed run still ends bit-identical */
    const char *killed2 = outdir("killed2");
    char cmd[4096], sp[1024];
    snprintf(cmd, sizeof cmd, "exec %s train --quiet --model %s --step-token-id 151651 %s --out %s --save-every 1 2>/dev/null",
             th_bin(), prm_dir, common, killed2);
    snprintf(sp, sizeof sp, "%s/training_state/state.json", killed2);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 400 && access(sp, F_OK) != 0; i++) usleep(5000);
    usleep(20000);
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
    snprintf(args, sizeof args, "%s --out %s --save-every 1 --resume", common, killed2);
    CHECK(train(args) == 0);
    snprintf(b, sizeof b, "%s/model.safetensors", killed2);
    CHECK_MSG(th_same_file(a, b), "weights after a SIGKILL + resume differ from the uninterrupted run");
    /* a full disk while checkpointing (RLIMIT_FSIZE 6 MB: the 9.7 MB optimizer file cannot be written): exit 1, the
     * previous state stays complete, and resuming from it later still ends bit-identical */
    const char *disk = outdir("fulldisk");
    snprintf(args, sizeof args, "%s --out %s --stop-after 2", common, disk);
    CHECK(train(args) == 0);
    snprintf(cmd, sizeof cmd, "exec %s train --quiet --model %s --step-token-id 151651 %s --out %s --save-every 1 --resume 2>%s/disk.err",
             th_bin(), prm_dir, common, disk, th_tmpdir());
    pid = fork();
    if (pid == 0) {
        struct rlimit rl = {6 << 20, 6 << 20};
        setrlimit(RLIMIT_FSIZE, &rl);
        signal(SIGXFSZ, SIG_IGN);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    snprintf(last_err, sizeof last_err, "%s/disk.err", th_tmpdir());
    CHECK(err_has("optimizer.safetensors", NULL));
    CHECK(state_step(disk) == 2);
    CHECK(!exists(disk, "training_state.tmp"));
    snprintf(args, sizeof args, "%s --out %s --resume", common, disk);
    CHECK(train(args) == 0);
    snprintf(b, sizeof b, "%s/model.safetensors", disk);
    CHECK_MSG(th_same_file(a, b), "weights after a failed checkpoint + resume differ from the uninterrupted run");
    /* resuming a finished run does nothing; other data or batch size is refused */
    CHECK(train(args) == 0);
    snprintf(args, sizeof args, "--data " REF "/targets.jsonl --steps 7 --batch-size 2 --out %s --resume", killed);
    CHECK(train(args) == 1);
    CHECK(err_has("cannot resume", "--batch-size"));
    return 0;
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static int test_bad_records(void) {
    int s = setup_model();
    if (s) return s;
    const char *good = "{\"question\": \"q\", \"steps\": [\"a\", \"b\"], \"step_targets\": [0.5, 1]}\n";
    struct { const char *line, *msg; } bad[] = {
        {"{\"question\": \"q\", \"steps\": [\"a\", \"b\"], \"step_targets\": [0.5, 1.5]}", "outside [0, 1]"},
        {"{\"question\": \"q\", \"steps\": [\"a\", \"b\"], \"step_targets\": [0.5]}", "has 1 values but the record has 2 steps"},
        {"{\"question\": \"q\", \"steps\": [\"a<extra_0>\", \"b\"], \"step_targets\": [0.5, 0.5]}", "more step tokens"},
        {"{\"question\": \"q\", \"steps\": [\"a\", \"b\"], \"step_targets\": [NaN, 0.5]}", "malformed JSON"},
        {"{\"question\": \"q\", \"steps\": [\"a\", \"b\"], \"step_targets\": [1e999, 0.5]}", "malformed JSON"},
        {"{\"question\": \"q\", \"steps\": [\"a\", \"b\"], \"step_targets\": [0.5, 0.5], \"final_target\": -0.1}", "final_target"},
        {"{\"question\": \"q\", \"steps\": [\"a\", \"b\"], \"step_targets\": [\"x\", 0.5]}", "step_targets[0]"},
        {"{\"question\": \"q\", \"steps\": [\"a\", \"b\"]}", "missing \"step_targets\""},
    };
    char path[600], args[2048], text[1024];
    snprintf(path, sizeof path, "%s/bad.jsonl", th_tmpdir());
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(text, sizeof text, "%s%s\n%s", good, bad[i].line, good);
        write_file(path, text);
        snprintf(args, sizeof args, "--data %s --steps 1 --out %s", path, outdir("bad"));
        CHECK_MSG(train(args) == 1, "case %zu", i);
        CHECK_MSG(err_has("bad.jsonl:2:", bad[i].msg), "case %zu", i);
        CHECK(!exists(outdir("bad"), "training_state"));
    }
    /* CE labels must be 0/1 */
    snprintf(text, sizeof text, "{\"question\": \"q\", \"steps\": [\"a\"], \"step_labels\": [2]}\n");
    write_file(path, text);
    snprintf(args, sizeof args, "--data %s --loss ce --steps 1 --out %s", path, outdir("bad"));
    CHECK(train(args) == 1);
    CHECK(err_has("bad.jsonl:1:", "step_labels[0] must be 0 or 1"));
    /* SFT without an assistant turn */
    write_file(path, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n");
    snprintf(args, sizeof args, "--data %s --loss lm --steps 1 --out %s", path, outdir("bad"));
    CHECK(train(args) == 1);
    CHECK(err_has("bad.jsonl:1:", "no assistant message"));
    /* --skip-bad drops them with a warning and trains on the rest */
    snprintf(text, sizeof text, "%s%s\n%s\n%s", good, bad[0].line, bad[3].line, good);
    write_file(path, text);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s train --model %s --step-token-id 151651 --data %s --steps 2 --skip-bad --out %s 2>%s/skip.err",
             th_bin(), prm_dir, path, outdir("skip"), th_tmpdir());
    CHECK(system(cmd) == 0);
    snprintf(last_err, sizeof last_err, "%s/skip.err", th_tmpdir());
    CHECK(err_has("skipped", "bad.jsonl:2:") && err_has("bad.jsonl:3:", "2 bad records were skipped"));
    CHECK(state_step(outdir("skip")) == 2);
    return 0;
}

/* A diverging run stops at the first non-finite loss, naming the record; the last checkpoint stays. */
static int test_nonfinite_stops(void) {
    int s = setup_model();
    if (s) return s;
    char args[2048];
    const char *out = outdir("diverge");
    snprintf(args, sizeof args, "--data " REF "/targets.jsonl --epochs 3 --lr 1e30 --clip 0 --save-every 1 --out %s", out);
    CHECK(train(args) == 1);
    CHECK(err_has("non-finite", "targets.jsonl:"));
    CHECK(err_has("the checkpoint of step 1", NULL));
    CHECK(state_step(out) == 1);
    CHECK(!exists(out, "training_state.tmp"));
    /* the kept checkpoint is the step-1 one and still loads */
    char p[1024];
    snprintf(p, sizeof p, "%s/model.safetensors", out);
    fp_weights *w;
    CHECK_OK(fp_weights_open_safetensors(&w, p));
    fp_weights_free(w);
    return 0;
}

static int test_lora_and_head(void) {
    int s = setup_model();
    if (s) return s;
    char args[2048], p[1024];
    const char *lora = outdir("lora"), *head = outdir("head");
    snprintf(args, sizeof args, "--data " REF "/targets.jsonl --mode lora --lora-r 4 --lora-alpha 8 --lora-targets all "
             "--merge-lora --batch-size 4 --epochs 3 --lr 1e-2 --out %s", lora);
    CHECK(train(args) == 0);
    CHECK(exists(lora, "adapter/adapter_model.safetensors") && exists(lora, "adapter/adapter_config.json"));
    CHECK(exists(lora, "model.safetensors"));
    snprintf(p, sizeof p, "%s/adapter/adapter_config.json", lora);
    json_t *ac;
    CHECK_OK(fp_json_load_file(&ac, p));
    if (ac) {
        CHECK(json_integer_value(json_object_get(ac, "r")) == 4);
        CHECK(json_array_size(json_object_get(ac, "target_modules")) == 7);
        json_decref(ac);
    }
    /* merged = base + (alpha/r) B A, on one adapted weight */
    fp_weights *mw = NULL, *aw = NULL, *bw = NULL;
    snprintf(p, sizeof p, "%s/model.safetensors", lora);
    CHECK_OK(fp_weights_open_safetensors(&mw, p));
    snprintf(p, sizeof p, "%s/adapter/adapter_model.safetensors", lora);
    CHECK_OK(fp_weights_open_safetensors(&aw, p));
    CHECK_OK(fp_weights_open_safetensors(&bw, SREF "/trunk.safetensors"));
    if (mw && aw && bw) {
        const fp_tensor *W = fp_weights_get(mw, "model.layers.1.mlp.down_proj.weight"),
                        *W0 = fp_weights_get(bw, "model.layers.1.mlp.down_proj.weight"),
                        *A = fp_weights_get(aw, "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"),
                        *B = fp_weights_get(aw, "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight");
        CHECK(W && W0 && A && B && fp_weights_get(aw, "base_model.model.score.2.bias"));
        if (W && W0 && A && B) {
            const float *w = W->data, *w0 = W0->data, *a = A->data, *b = B->data;
            int O = (int)W->shape[0], I = (int)W->shape[1];
            double worst = 0, moved = 0;
            for (int o = 0; o < O; o++)
                for (int i = 0; i < I; i++) {
                    double d = 0;
                    for (int k = 0; k < 4; k++) d += (double)b[o * 4 + k] * a[k * I + i];
                    worst = fmax(worst, fabs(w[o * I + i] - (w0[o * I + i] + 2.0 * d)));
                    moved = fmax(moved, fabs(w[o * I + i] - w0[o * I + i]));
                }
            CHECK_MSG(worst < 1e-6, "merge error %g", worst);
            CHECK(moved > 0);
        }
    }
    fp_weights_free(mw);
    fp_weights_free(aw);
    fp_weights_free(bw);
    CHECK(!isnan(score_error(lora))); /* the merged checkpoint loads and scores */
    /* head-only: the trunk is untouched, the head moves */
    char log[600];
    snprintf(log, sizeof log, "%s/head.log", th_tmpdir());
    snprintf(args, sizeof args, "--data " REF "/targets.jsonl --mode head --batch-size 4 --epochs 20 --lr 5e-2 --out %s --log %s",
             head, log);
    CHECK(train(args) == 0);
    json_t *l = th_load_lines(log);
    CHECK(json_array_size(l) == 20);
    CHECK(json_real_value(json_object_get(json_array_get(l, 19), "loss")) <
          0.8 * json_real_value(json_object_get(json_array_get(l, 0), "loss")));
    json_decref(l);
    snprintf(p, sizeof p, "%s/model.safetensors", head);
    fp_weights *hw = NULL, *tw = NULL;
    CHECK_OK(fp_weights_open_safetensors(&hw, p));
    CHECK_OK(fp_weights_open_safetensors(&tw, SREF "/trunk.safetensors"));
    if (hw && tw) {
        for (size_t i = 0; i < fp_weights_count(tw); i++) {
            const fp_tensor *x = fp_weights_at(tw, i), *y = fp_weights_get(hw, x->name);
            CHECK_MSG(y && y->nbytes == x->nbytes && !memcmp(x->data, y->data, x->nbytes), "%s changed", x->name);
        }
    }
    fp_weights_free(hw);
    fp_weights_free(tw);
    double eh = score_error(head), e0 = score_error(prm_dir);
    CHECK_MSG(!isnan(eh) && eh != e0, "head-only run: mean |reward - target| %g, input model %g", eh, e0);
    return 0;
}

/* The trainer's encoding (fpt_dataset_load) equals `fluxprm score`'s (fp_prm_encode) on every record shape of
 * tests/ref/score/records.jsonl (ProcessBench, s1K thinking + attempt, <think> responses, TRL, system override). */
static int test_same_encoding_as_score(void) {
    int s = setup_model();
    if (s) return s;
    fp_prm_opts po;
    fp_prm_opts_default(&po);
    po.model_path = prm_dir;
    po.step_token_id = 151651;
    fp_prm *prm = NULL;
    CHECK_OK(fp_prm_open(&prm, &po));
    if (!prm) return 0;
    char path[600];
    snprintf(path, sizeof path, "%s/enc.jsonl", th_tmpdir());
    FILE *f = fopen(path, "w");
    json_t *recs = th_load_lines(SREF "/records.jsonl");
    for (size_t i = 0; i < json_array_size(recs); i++) {
        json_t *r = json_array_get(recs, i);
        fp_record rec;
        CHECK_OK(fp_record_parse(&rec, r, fp_prm_format_opts(prm)));
        json_t *t = json_array();
        for (size_t k = 0; k < rec.n_steps; k++) json_array_append_new(t, json_real(0.5));
        json_object_set_new(r, "step_targets", t);
        fp_json_write_line(f, r);
        fp_record_free(&rec);
    }
    fclose(f);
    fp_tokenizer *tok = NULL;
    int32_t step_id = -1;
    char *system = NULL;
    CHECK_OK(fp_prm_tokenizer_open(&po, 151936, &tok, &step_id, &system));
    CHECK(step_id == 151651);
    fpt_dataset d;
    memset(&d, 0, sizeof d);
    CHECK_OK(fpt_dataset_load(&d, path, FPT_LOSS_MSE, tok, step_id, "<extra_0>", system, 0, 0, NULL, NULL));
    CHECK(d.n == json_array_size(recs) && d.n == 7);
    for (size_t i = 0; i < d.n && i < json_array_size(recs); i++) {
        fp_record rec;
        int32_t *ids = NULL;
        int T = 0, *pos = NULL, np = 0;
        CHECK_OK(fp_record_parse(&rec, json_array_get(recs, i), fp_prm_format_opts(prm)));
        CHECK_OK(fp_prm_encode(prm, &rec, &ids, &T, &pos, &np));
        CHECK_MSG(T == d.ex[i].T && ids && !memcmp(ids, d.ex[i].tokens, (size_t)T * sizeof *ids), "record %zu tokens", i);
        CHECK_MSG(np == d.ex[i].n_steps && (!np || !memcmp(pos, d.ex[i].step_pos, (size_t)np * sizeof *pos)), "record %zu steps", i);
        CHECK(d.ex[i].line == (long)i + 1 && isnan(d.ex[i].final_target));
        free(ids);
        free(pos);
        fp_record_free(&rec);
    }
    fpt_dataset_free(&d);
    fp_tokenizer_free(tok);
    free(system);
    json_decref(recs);
    fp_prm_free(prm);
    return 0;
}

static int test_usage(void) {
    int s = setup_model();
    if (s) return s;
    CHECK(train("--data x.jsonl") == 2);                                  /* no --out */
    CHECK(train("--data x.jsonl --out y --mode half") == 2);
    CHECK(train("--data x.jsonl --out y --lora-r 4") == 2);               /* needs --mode lora */
    CHECK(train("--data x.jsonl --out y --lr -1") == 2);
    CHECK(train("--data x.jsonl --out y --final last-token") == 2);       /* a score option */
    CHECK(train("--data " REF "/sft.jsonl --out y --mode head --loss lm") == 1);
    CHECK(err_has("--mode head", NULL));
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s train --help >/dev/null", th_bin());
    CHECK(system(cmd) == 0);
    return 0;
}

int main(void) {
    RUN(test_same_encoding_as_score);
    RUN(test_first_loss_matches_hf);
    RUN(test_overfit_and_score);
    RUN(test_resume_bitwise);
    RUN(test_bad_records);
    RUN(test_nonfinite_stops);
    RUN(test_lora_and_head);
    RUN(test_usage);
    return th_finish();
}
