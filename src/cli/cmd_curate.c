/* fluxprm curate: ReasonFlux-PRM training targets (spec §2) for thinking + response records — merged
 * thinking steps, per-step targets (alignment, coherence, judge quality, softmax-mixed) and the
 * template-guided trajectory target — in the JSONL format `fluxprm train` reads.  docs/reward.md "curate". */
#include "base/json.h"
#include "cli/cli.h"
#include "format/format.h"
#include "reward/curate.h"
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void curate_help(FILE *f) {
    fputs(
"usage: fluxprm curate --embed-model DIR --judge-url URL --judge-model NAME [options] [in.jsonl|-]\n"
"\n"
"Builds ReasonFlux-PRM training targets from thinking + response records (s1K {question,\n"
"thinking_trajectories, attempt}, {question, thinking, response}, <think>...</think> in a response).\n"
"Both parts are split on \"\\n\\n\"; surplus thinking steps are merged into the preceding one so that\n"
"step t lines up with response step t (the authors' rule; the merge boundary maximises the summed\n"
"cosine of the encoder's embeddings).  Per merged thinking step t:\n"
"  align  cos(phi(s_t), phi(a_t))                    -> (cos + 1) / 2\n"
"  coh    InfoNCE log-prob of s_t after s_{t-1} (the question for t = 1) against K negatives drawn\n"
"         from a seeded reservoir of EARLIER records' steps             -> exp(log-prob)\n"
"  qual   LLM-judge score 0..10                      -> score / 10\n"
"  step_target = sum_k softmax(c)_k * c_k over the available components.\n"
"Trajectory target: the judge writes a reasoning template, a policy model answers N times from\n"
"(question, template), and final_target = fraction of answers equal to the record's gold answer.\n"
"Output (one line per input record): {\"question\", \"steps\", \"step_targets\", \"final_target\"?,\n"
"\"system\"?, \"step_components\": {\"align\",\"coh\",\"qual\"}, \"step_raw\", \"response\", ...,\n"
"the input's other fields}.  A cost summary goes to stderr.\n"
"\n"
"encoder:\n"
"  --embed-model DIR      Qwen2/Qwen3 checkpoint (HF dir or .gguf; only the trunk is used)  (required)\n"
"  --embed-tokenizer P    tokenizer dir or tokenizer.json (default: the model dir)\n"
"  --embed-pooling P      last (default) or mean; embeddings are L2-normalised\n"
"  --embed-max-tokens N   longer texts keep their first N tokens (default: max_position_embeddings)\n"
"  --threads N            forward-pass threads (default: OpenMP default)\n"
"step targets:\n"
"  --tau T                InfoNCE temperature (default 0.1)\n"
"  --negatives K          negatives per step (default 16; 0 = no coherence)\n"
"  --pool-size N          reservoir of earlier records' step embeddings (default 4096)\n"
"  --seed S               seeds the reservoir and the negatives (default 0)\n"
"judge and policy (OpenAI-compatible POST {url}/v1/chat/completions):\n"
"  --judge-url URL        --judge-model NAME\n"
"  --policy-url URL       (default: the judge URL)   --policy-model NAME (default: the judge model)\n"
"  --rollouts N           policy answers per record (default 4)\n"
"  --rollout-seed S       seed of rollout 0; rollout j uses S + j (default 0)\n"
"  --gold-field F         record field with the gold answer (default \"gold\"); no gold -> no final_target\n"
"  --api-key-env NAME     environment variable holding the API key (default OPENAI_API_KEY)\n"
"  --cache DIR            response cache: a rerun (or --resume) pays for no request twice\n"
"  --concurrency N        requests in flight (default 4)   --batch N  records per batch (default 16)\n"
"  --retries N (default 6)   --timeout S (default 120)\n"
"  --step-prompt F  --template-prompt F  --rollout-prompt F  (defaults in prompts/)\n"
"  --integer-scores       the judge schema asks for an integer score\n"
"  --max-tokens N         per judge score (default 64)   --template-max-tokens N (default 1024)\n"
"  --rollout-max-tokens N (default 2048)   --rollout-temperature T (default 0.7)\n"
"  --no-judge             no step-quality calls (qual missing; the mix uses align and coh)\n"
"  --no-final             no templates or rollouts (no final_target)\n"
"output:\n"
"  -o, --output FILE      write here atomically (FILE.partial, renamed when done)\n"
"  --resume               continue an interrupted run of the same -o FILE (skips as many input records\n"
"                         as it holds lines; the reservoir is rebuilt from those lines' steps)\n"
"  --skip-bad             write {\"error\", \"line\", \"input\"} for a bad record and go on\n"
"  -q, --quiet            no progress bar or summary\n"
"  -h, --help             this help\n"
"\n"
"Exit status: 0 ok; 1 runtime error, a bad record without --skip-bad (the output so far is kept for\n"
"--resume), or some judge/policy call failed (the output is complete; see \"curate_notes\"); 2 usage.\n",
        f);
}

enum {
    OPT_EMBED_MODEL = 256, OPT_EMBED_TOK, OPT_EMBED_POOL, OPT_EMBED_MAX, OPT_THREADS, OPT_TAU, OPT_NEG, OPT_POOL,
    OPT_SEED, OPT_JUDGE_URL, OPT_JUDGE_MODEL, OPT_POLICY_URL, OPT_POLICY_MODEL, OPT_ROLLOUTS, OPT_ROLLOUT_SEED,
    OPT_GOLD, OPT_KEYENV, OPT_CACHE, OPT_CONC, OPT_BATCH, OPT_RETRIES, OPT_TIMEOUT, OPT_STEP_PROMPT,
    OPT_TMPL_PROMPT, OPT_ROLL_PROMPT, OPT_INT_SCORES, OPT_NO_JUDGE, OPT_NO_FINAL, OPT_RESUME, OPT_SKIP_BAD,
    OPT_MAX_TOK, OPT_TMPL_MAX_TOK, OPT_ROLL_MAX_TOK, OPT_ROLL_TEMP
};

typedef struct {
    long index, lineno;
    json_t *obj;
    char *error;               /* bad record (with --skip-bad) */
    fp_record rec;
    char **steps;              /* merged thinking steps (owned) */
    size_t T, T_orig, M;
    size_t *groups;
    char **resp;               /* response steps (pointers into rec.steps) */
    float *q_emb, *s_emb, *r_emb;
    char *gold;
    double *qual;
    char **qual_err;
    char *tmpl;
    char *final_note;
    int *correct;
    char **extracted;
    size_t n_roll;             /* entries of correct / extracted */
    double final;              /* NAN = none */
} item;

static void item_free(item *it) {
    json_decref(it->obj);
    free(it->error);
    fp_free_strings(it->steps, it->T);
    free(it->groups);
    free(it->q_emb);
    free(it->s_emb);
    free(it->r_emb);
    free(it->gold);
    free(it->qual);
    if (it->qual_err) fp_free_strings(it->qual_err, it->T);
    free(it->tmpl);
    free(it->final_note);
    free(it->correct);
    if (it->extracted) fp_free_strings(it->extracted, it->n_roll);
    fp_record_free(&it->rec);
    memset(it, 0, sizeof *it);
}

typedef struct {
    fp_encoder *enc;
    fp_embed_cache *cache;
    size_t dim;
    fp_judge *judge;
    fp_openai_client *jclient, *pclient;
    fp_rollout_opts ro;
    fp_reservoir *res;
    fp_curate_coh_opts coh;
    const char *gold_field;
    int no_judge, no_final, skip_bad;
    long n_rollouts;
    /* counters */
    long records, bad, written, steps, merged_records, coh_skipped, qual_failed, final_failed, no_gold, finals;
    long rollouts_correct, rollouts_total;
} ctx;

static json_t *num_or_null(double d) { return isfinite(d) ? json_real(d) : json_null(); }

static char *gold_string(const json_t *v) {
    if (json_is_string(v)) return json_string_length(v) ? fp_strdup(json_string_value(v)) : NULL;
    char buf[64];
    if (json_is_integer(v)) { snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(v)); return fp_strdup(buf); }
    if (json_is_real(v)) { snprintf(buf, sizeof buf, "%.17g", json_real_value(v)); return fp_strdup(buf); }
    return NULL;
}

/* Embeds every text of one record (question, merged steps, response steps) through the per-record cache. */
static int embed_rows(ctx *c, char *const *texts, size_t n, float **out) {
    *out = fp_malloc((n ? n : 1) * c->dim * sizeof **out);
    if (!*out) return FP_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const float *e;
        int rc = fp_embed_cache_get(c->cache, texts[i], &e);
        if (rc) return rc;
        memcpy(*out + i * c->dim, e, c->dim * sizeof *e);
    }
    return FP_OK;
}

/* Parse, split, merge and embed one record.  Returns FP_OK or a record error (message set). */
static int prepare(ctx *c, item *it, const char *line, size_t len, const char *path) {
    int rc = fp_json_parse_record(&it->obj, line, len, path, it->lineno);
    if (rc) return rc;
    fp_format_opts fo = {0};
    fo.steps_from = FP_STEPS_BOTH;
    if ((rc = fp_record_parse(&it->rec, it->obj, &fo))) return rc;
    fp_record *r = &it->rec;
    size_t nth = r->n_thinking, nre = r->n_steps - r->n_thinking;
    char **th = r->steps;
    size_t T0 = nth;
    if (nth == 0) { /* no thinking part: the record's steps are the PRM steps, nothing to align to */
        T0 = r->n_steps;
        nre = 0;
    }
    it->resp = r->steps + nth;
    it->M = nth ? nre : 0;
    it->T_orig = T0;
    fp_embed_cache_clear(c->cache);
    if ((rc = fp_curate_align(c->cache, th, T0, it->resp, it->M, &it->steps, &it->T, &it->groups))) return rc;
    if (it->T < T0) c->merged_records++;
    const char *q = r->question;
    if ((rc = embed_rows(c, (char *const *)&q, 1, &it->q_emb)) || (rc = embed_rows(c, it->steps, it->T, &it->s_emb)) ||
        (rc = embed_rows(c, it->resp, it->M, &it->r_emb)))
        return rc;
    json_t *g = json_object_get(it->obj, c->gold_field);
    if (g && !json_is_null(g) && !json_is_string(g) && !json_is_number(g))
        return fp_errorf(FP_EINVAL, "field \"%s\" (gold answer) must be a string or a number", c->gold_field);
    it->gold = g ? gold_string(g) : NULL;
    it->final = NAN;
    return FP_OK;
}

static const char NO_RESPONSE[] = "(not given)";

static void note(item *it, json_t **notes, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void note(item *it, json_t **notes, const char *fmt, ...) {
    (void)it;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (!*notes) *notes = json_array();
    json_array_append_new(*notes, json_string(buf));
}

/* Judge quality scores, templates and rollouts for the good records of a batch. */
static int paid_calls(ctx *c, item *b, size_t n) {
    size_t ng = 0, total = 0;
    for (size_t i = 0; i < n; i++) if (!b[i].error) { ng++; total += b[i].T; }
    if (!ng) return FP_OK;
    fp_judge_traj *tr = fp_calloc(ng, sizeof *tr);
    item **map = fp_calloc(ng, sizeof *map);
    if (!tr || !map) { free(tr); free(map); return FP_ENOMEM; }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (b[i].error) continue;
        map[k] = &b[i];
        tr[k++] = (fp_judge_traj){b[i].rec.question, (const char *const *)b[i].steps, b[i].T,
                                  b[i].rec.response ? b[i].rec.response : NO_RESPONSE};
        b[i].qual = fp_malloc((b[i].T ? b[i].T : 1) * sizeof *b[i].qual);
        if (!b[i].qual) { free(tr); free(map); return FP_ENOMEM; }
        for (size_t t = 0; t < b[i].T; t++) b[i].qual[t] = NAN;
    }
    if (!c->no_judge && total) {
        fp_judge_score *sc = fp_calloc(total, sizeof *sc);
        if (!sc) { free(tr); free(map); return FP_ENOMEM; }
        fp_judge_step_scores(c->judge, tr, ng, sc);
        size_t q = 0;
        for (size_t i = 0; i < ng; i++) {
            item *it = map[i];
            for (size_t t = 0; t < it->T; t++, q++) {
                if (sc[q].status == FP_OK) { it->qual[t] = sc[q].score; continue; }
                c->qual_failed++;
                if (!it->qual_err && !(it->qual_err = fp_calloc(it->T + 1, sizeof *it->qual_err))) continue;
                const char *m = sc[q].error ? sc[q].error : "failed";
                const char *st = !strncmp(m, "trajectory ", 11) ? strstr(m, " step ") : NULL;
                it->qual_err[t] = fp_strdup(st ? st + 1 : m);
            }
        }
        for (size_t q2 = 0; q2 < total; q2++) fp_judge_score_clear(&sc[q2]);
        free(sc);
    }
    if (!c->no_final) {
        /* templates + rollouts for the records that have a gold answer */
        size_t nf = 0;
        for (size_t i = 0; i < ng; i++) if (map[i]->gold && map[i]->T) tr[nf] = tr[i], map[nf++] = map[i];
        char **tm = fp_calloc(nf + 1, sizeof *tm);
        int *tst = fp_calloc(nf + 1, sizeof *tst);
        if (!tm || !tst) { free(tm); free(tst); free(tr); free(map); return FP_ENOMEM; }
        if (nf) fp_judge_templates(c->judge, tr, nf, tm, tst);
        size_t nt = 0;
        const char **qs = fp_calloc(nf + 1, sizeof *qs), **ts = fp_calloc(nf + 1, sizeof *ts);
        item **tmap = fp_calloc(nf + 1, sizeof *tmap);
        if (!qs || !ts || !tmap) { free(qs); free(ts); free(tmap); free(tm); free(tst); free(tr); free(map); return FP_ENOMEM; }
        for (size_t i = 0; i < nf; i++) {
            item *it = map[i];
            if (!tm[i]) {
                c->final_failed++;
                fp_buf m = {0};
                fp_buf_printf(&m, "template failed (%s): no final_target", fp_status_name(tst[i]));
                it->final_note = m.data;
                continue;
            }
            it->tmpl = tm[i];
            tm[i] = NULL;
            qs[nt] = it->rec.question;
            ts[nt] = it->tmpl;
            tmap[nt++] = it;
        }
        size_t N = (size_t)c->n_rollouts, na = nt * N;
        char **ans = fp_calloc(na + 1, sizeof *ans);
        int *ast = fp_calloc(na + 1, sizeof *ast);
        if (!ans || !ast) { free(ans); free(ast); free(qs); free(ts); free(tmap); free(tm); free(tst); free(tr); free(map); return FP_ENOMEM; }
        if (nt) fp_template_rollouts(c->pclient, &c->ro, qs, ts, nt, ans, ast);
        for (size_t i = 0; i < nt; i++) {
            item *it = tmap[i];
            it->correct = fp_calloc(N + 1, sizeof *it->correct);
            it->extracted = fp_calloc(N + 1, sizeof *it->extracted);
            it->n_roll = N;
            int failed = !it->correct || !it->extracted;
            for (size_t j = 0; j < N && !failed; j++) {
                if (!ans[i * N + j]) { failed = 1; break; }
                int ok = 0;
                char *ex = NULL;
                if (fp_verify_check(ans[i * N + j], it->gold, &ok, &ex, NULL)) { failed = 1; free(ex); break; }
                it->correct[j] = ok;
                it->extracted[j] = ex;
            }
            if (failed) {
                c->final_failed++;
                it->final_note = fp_strdup("a policy rollout failed: no final_target");
                continue;
            }
            it->final = fp_reward_final(it->correct, N);
            c->finals++;
            for (size_t j = 0; j < N; j++) c->rollouts_correct += it->correct[j];
            c->rollouts_total += (long)N;
        }
        for (size_t q = 0; q < na; q++) free(ans[q]);
        for (size_t i = 0; i < nf; i++) free(tm[i]);
        free(ans); free(ast); free(qs); free(ts); free(tmap); free(tm); free(tst);
    }
    free(tr);
    free(map);
    return FP_OK;
}

static int is_consumed(const char *key) {
    static const char *const consumed[] = {"question", "problem", "prompt", "instruction", "system", "steps",
                                           "completions", "thinking_trajectories", "thinking", "attempt",
                                           "response", "completion"};
    for (size_t i = 0; i < sizeof consumed / sizeof consumed[0]; i++) if (!strcmp(key, consumed[i])) return 1;
    return 0;
}

/* Step targets of one good record (using the reservoir of earlier records) → its output object. */
static int build_output(ctx *c, item *it, json_t **out) {
    *out = NULL;
    size_t T = it->T;
    fp_step_reward *sr = fp_calloc(T + 1, sizeof *sr);
    double *ra = fp_calloc(T + 1, sizeof *ra), *rc_ = fp_calloc(T + 1, sizeof *rc_);
    if (!sr || !ra || !rc_) { free(sr); free(ra); free(rc_); return FP_ENOMEM; }
    int skipped = 0;
    int rc = fp_curate_step_targets(c->res, &c->coh, (uint64_t)it->index, it->s_emb, T, it->q_emb, it->r_emb, it->M,
                                    it->qual, sr, ra, rc_, &skipped);
    if (rc) { free(sr); free(ra); free(rc_); return rc; }
    json_t *o = json_object(), *notes = NULL;
    json_object_set_new(o, "question", json_string(it->rec.question));
    if (it->rec.system) json_object_set_new(o, "system", json_string(it->rec.system));
    json_t *steps = json_array(), *tg = json_array(), *ca = json_array(), *cc = json_array(), *cq = json_array();
    json_t *xa = json_array(), *xc = json_array(), *xq = json_array(), *grp = json_array();
    for (size_t t = 0; t < T; t++) {
        json_array_append_new(steps, json_string(it->steps[t]));
        json_array_append_new(tg, num_or_null(sr[t].mixed));
        json_array_append_new(ca, num_or_null(sr[t].align));
        json_array_append_new(cc, num_or_null(sr[t].coh));
        json_array_append_new(cq, num_or_null(sr[t].qual));
        json_array_append_new(xa, num_or_null(ra[t]));
        json_array_append_new(xc, num_or_null(rc_[t]));
        json_array_append_new(xq, num_or_null(it->qual ? it->qual[t] : NAN));
        json_array_append_new(grp, json_integer((json_int_t)it->groups[t]));
    }
    json_object_set_new(o, "steps", steps);
    json_object_set_new(o, "step_targets", tg);
    if (!isnan(it->final)) json_object_set_new(o, "final_target", json_real(it->final));
    json_object_set_new(o, "step_components", json_pack("{s:o,s:o,s:o}", "align", ca, "coh", cc, "qual", cq));
    json_object_set_new(o, "step_raw", json_pack("{s:o,s:o,s:o}", "align_cos", xa, "coh_log_prob", xc, "judge_score", xq));
    if (it->rec.response) json_object_set_new(o, "response", json_string(it->rec.response));
    json_object_set_new(o, "n_response_steps", json_integer((json_int_t)it->M));
    json_object_set_new(o, "n_thinking_steps", json_integer((json_int_t)it->T_orig));
    json_object_set_new(o, "step_groups", grp);
    if (it->tmpl) json_object_set_new(o, "template", json_string(it->tmpl));
    if (it->correct && !isnan(it->final)) {
        json_t *cor = json_array(), *ex = json_array();
        for (long j = 0; j < c->n_rollouts; j++) {
            json_array_append_new(cor, json_boolean(it->correct[j]));
            json_array_append_new(ex, it->extracted[j] ? json_string(it->extracted[j]) : json_null());
        }
        json_object_set_new(o, "rollouts", json_pack("{s:I,s:o,s:o}", "n", (json_int_t)c->n_rollouts, "correct", cor, "answers", ex));
    }
    /* what is missing, and why */
    if (it->M == 0) note(it, &notes, it->rec.n_thinking ? "no response steps: align missing" : "no thinking part: the record's steps are the PRM steps, align missing");
    else if (T > it->M) note(it, &notes, "%zu thinking steps but %zu response steps: align missing after step %zu", T, it->M, it->M);
    if (skipped && c->coh.k_neg) {
        note(it, &notes, "coh missing: the reservoir holds %zu steps of earlier records, fewer than %zu negatives",
             fp_reservoir_size(c->res), c->coh.k_neg);
        c->coh_skipped++;
    }
    if (c->no_judge) note(it, &notes, "qual missing: --no-judge");
    for (size_t t = 0; it->qual_err && t < T; t++)
        if (it->qual_err[t]) note(it, &notes, "qual missing: judge %s", it->qual_err[t]);
    if (!c->no_final && !it->gold) {
        note(it, &notes, "no gold answer (field \"%s\"): no final_target", c->gold_field);
        c->no_gold++;
    }
    if (it->final_note) note(it, &notes, "%s", it->final_note);
    if (notes) json_object_set_new(o, "curate_notes", notes);
    /* the input's other fields */
    const char *key;
    json_t *v;
    json_object_foreach(it->obj, key, v) {
        if (is_consumed(key) || json_object_get(o, key)) continue;
        json_object_set(o, key, v);
    }
    free(sr); free(ra); free(rc_);
    *out = o;
    return FP_OK;
}

/* Writes a batch in input order; each good record sees the reservoir of the records before it. */
static int write_batch(ctx *c, item *b, size_t n, FILE *f) {
    for (size_t i = 0; i < n; i++) {
        item *it = &b[i];
        json_t *o = NULL;
        int rc;
        if (it->error) {
            o = json_pack("{s:s,s:I}", "error", it->error, "line", (json_int_t)it->lineno);
            if (it->obj) json_object_set(o, "input", it->obj);
        } else {
            if ((rc = build_output(c, it, &o))) return fp_error_prefix("line %ld: ", it->lineno);
            fp_reservoir_add(c->res, it->s_emb, it->T);
            c->steps += (long)it->T;
        }
        rc = fp_json_write_line(f, o);
        json_decref(o);
        if (rc || fflush(f) != 0) return rc ? rc : fp_errorf(FP_EIO, "writing output failed");
        c->written++;
    }
    return FP_OK;
}

/* --resume: rebuilds the reservoir from the steps of the first `lines` output lines (error lines have none).
 * Which steps stay depends only on their stream positions, so only the survivors are embedded. */
static int replay_reservoir(ctx *c, const char *out_path, long lines) {
    if (lines <= 0) return FP_OK;
    fp_buf p = {0};
    if (fp_buf_printf(&p, "%s.partial", out_path)) return FP_ENOMEM;
    fp_jsonl_reader *r = NULL;
    int rc = fp_jsonl_open(&r, p.data);
    char **slot = NULL;
    size_t nslots = 0;
    if (rc == FP_OK) {
        const char *line;
        size_t len;
        long k = 0;
        while (k < lines && (rc = fp_jsonl_next_line(r, &line, &len)) == FP_OK) {
            k++;
            json_error_t err;
            json_t *o = json_loadb(line, len, 0, &err);
            if (!o) { rc = fp_errorf(FP_EPARSE, "%s:%ld: %s", p.data, k, err.text); break; }
            json_t *st = json_object_get(o, "steps");
            if (!json_object_get(o, "error") && json_is_array(st)) {
                for (size_t t = 0; t < json_array_size(st) && rc == FP_OK; t++) {
                    const char *s = json_string_value(json_array_get(st, t));
                    long sl = fp_reservoir_offer(c->res);
                    if (!s) { rc = fp_errorf(FP_EPARSE, "%s:%ld: steps[%zu] is not a string", p.data, k, t); break; }
                    if (sl < 0) continue;
                    if ((size_t)sl >= nslots) {
                        size_t nn = (size_t)sl + 1;
                        char **ns = fp_realloc(slot, nn * sizeof *ns);
                        if (!ns) { rc = FP_ENOMEM; break; }
                        for (size_t q = nslots; q < nn; q++) ns[q] = NULL;
                        slot = ns;
                        nslots = nn;
                    }
                    free(slot[sl]);
                    if (!(slot[sl] = fp_strdup(s))) rc = FP_ENOMEM;
                }
                c->steps += (long)json_array_size(st);
            }
            json_decref(o);
        }
        if (rc == FP_ERANGE) rc = fp_errorf(FP_EIO, "%s: fewer than %ld lines", p.data, lines);
    }
    float *v = rc == FP_OK ? fp_malloc(c->dim * sizeof *v) : NULL;
    if (rc == FP_OK && !v) rc = FP_ENOMEM;
    for (size_t s = 0; s < nslots && rc == FP_OK; s++) {
        if (!slot[s]) continue;
        if ((rc = fp_encoder_embed(c->enc, slot[s], v)) == FP_OK) fp_reservoir_put(c->res, s, v);
    }
    free(v);
    for (size_t s = 0; s < nslots; s++) free(slot[s]);
    free(slot);
    fp_jsonl_close(r);
    if (rc) fp_error_prefix("resume: ");
    fp_buf_free(&p);
    return rc;
}

static void print_stats(const char *who, const fp_openai_client *cl) {
    fp_openai_stats s;
    fp_openai_client_stats(cl, &s);
    fprintf(stderr, "curate: %s: requests %ld (cache hits %ld, paid %ld, sent %ld, retries %ld, failed %ld), "
            "tokens %ld prompt + %ld completion\n", who, s.requests, s.cache_hits, s.successes, s.attempts, s.retries,
            s.failures, s.prompt_tokens, s.completion_tokens);
}

int cmd_curate(int argc, char **argv) {
    static const struct option lopts[] = {
        {"embed-model", required_argument, 0, OPT_EMBED_MODEL}, {"embed-tokenizer", required_argument, 0, OPT_EMBED_TOK},
        {"embed-pooling", required_argument, 0, OPT_EMBED_POOL}, {"embed-max-tokens", required_argument, 0, OPT_EMBED_MAX},
        {"threads", required_argument, 0, OPT_THREADS}, {"tau", required_argument, 0, OPT_TAU},
        {"negatives", required_argument, 0, OPT_NEG}, {"pool-size", required_argument, 0, OPT_POOL},
        {"seed", required_argument, 0, OPT_SEED}, {"judge-url", required_argument, 0, OPT_JUDGE_URL},
        {"judge-model", required_argument, 0, OPT_JUDGE_MODEL}, {"policy-url", required_argument, 0, OPT_POLICY_URL},
        {"policy-model", required_argument, 0, OPT_POLICY_MODEL}, {"rollouts", required_argument, 0, OPT_ROLLOUTS},
        {"rollout-seed", required_argument, 0, OPT_ROLLOUT_SEED}, {"gold-field", required_argument, 0, OPT_GOLD},
        {"api-key-env", required_argument, 0, OPT_KEYENV}, {"cache", required_argument, 0, OPT_CACHE},
        {"concurrency", required_argument, 0, OPT_CONC}, {"batch", required_argument, 0, OPT_BATCH},
        {"retries", required_argument, 0, OPT_RETRIES}, {"timeout", required_argument, 0, OPT_TIMEOUT},
        {"step-prompt", required_argument, 0, OPT_STEP_PROMPT}, {"template-prompt", required_argument, 0, OPT_TMPL_PROMPT},
        {"rollout-prompt", required_argument, 0, OPT_ROLL_PROMPT}, {"integer-scores", no_argument, 0, OPT_INT_SCORES},
        {"max-tokens", required_argument, 0, OPT_MAX_TOK}, {"template-max-tokens", required_argument, 0, OPT_TMPL_MAX_TOK},
        {"rollout-max-tokens", required_argument, 0, OPT_ROLL_MAX_TOK},
        {"rollout-temperature", required_argument, 0, OPT_ROLL_TEMP}, {"no-judge", no_argument, 0, OPT_NO_JUDGE}, {"no-final", no_argument, 0, OPT_NO_FINAL},
        {"output", required_argument, 0, 'o'}, {"resume", no_argument, 0, OPT_RESUME},
        {"skip-bad", no_argument, 0, OPT_SKIP_BAD}, {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    fp_encoder_opts eo;
    fp_encoder_opts_default(&eo);
    fp_openai_opts jo, po;
    fp_openai_opts_default(&jo);
    fp_judge_opts jj;
    fp_judge_opts_default(&jj);
    ctx c;
    memset(&c, 0, sizeof c);
    fp_rollout_opts_default(&c.ro);
    c.coh = (fp_curate_coh_opts){0.1, 16, 0};
    c.gold_field = "gold";
    c.n_rollouts = 4;
    long pool = 4096, batch = 16, l;
    double d;
    const char *out_path = NULL, *policy_url = NULL;
    int resume = 0, quiet = 0, ch;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":o:qh", lopts, NULL)) != -1) {
        switch (ch) {
        case OPT_EMBED_MODEL: eo.model_path = optarg; break;
        case OPT_EMBED_TOK: eo.tokenizer_path = optarg; break;
        case OPT_EMBED_POOL:
            if (!strcmp(optarg, "last")) eo.pooling = FP_POOL_LAST;
            else if (!strcmp(optarg, "mean")) eo.pooling = FP_POOL_MEAN;
            else return cli_usage_error("curate", "--embed-pooling must be last or mean, got '%s'", optarg);
            break;
        case OPT_EMBED_MAX: case OPT_THREADS: case OPT_NEG: case OPT_POOL: case OPT_ROLLOUTS: case OPT_CONC:
        case OPT_BATCH: case OPT_RETRIES: case OPT_SEED: case OPT_ROLLOUT_SEED: case OPT_MAX_TOK:
        case OPT_TMPL_MAX_TOK: case OPT_ROLL_MAX_TOK:
            if (cli_parse_long(optarg, &l) || l < 0) return cli_usage_error("curate", "%s needs a non-negative integer, got '%s'", argv[optind - 1], optarg);
            if (ch == OPT_EMBED_MAX) eo.max_tokens = (int)(l > 1 << 30 ? 1 << 30 : l);
            else if (ch == OPT_THREADS) eo.threads = (int)(l > 4096 ? 4096 : l);
            else if (ch == OPT_NEG) c.coh.k_neg = (size_t)l;
            else if (ch == OPT_POOL) pool = l;
            else if (ch == OPT_SEED) c.coh.seed = (uint64_t)l;
            else if (ch == OPT_ROLLOUT_SEED) c.ro.seed = l;
            else if (ch == OPT_MAX_TOK || ch == OPT_TMPL_MAX_TOK || ch == OPT_ROLL_MAX_TOK) {
                if (l < 1) return cli_usage_error("curate", "%s must be >= 1", argv[optind - 1]);
                if (ch == OPT_MAX_TOK) jj.max_tokens = l;
                else if (ch == OPT_TMPL_MAX_TOK) jj.template_max_tokens = l;
                else c.ro.max_tokens = l;
            }
            else if (ch == OPT_RETRIES) { if (l > 1000) return cli_usage_error("curate", "--retries must be <= 1000"); jo.max_retries = (int)l; }
            else if (ch == OPT_ROLLOUTS) { if (l < 1 || l > 1000) return cli_usage_error("curate", "--rollouts must be 1..1000"); c.n_rollouts = l; }
            else if (ch == OPT_CONC) { if (l < 1 || l > 1024) return cli_usage_error("curate", "--concurrency must be 1..1024"); jo.concurrency = (int)l; }
            else if (ch == OPT_BATCH) { if (l < 1 || l > 100000) return cli_usage_error("curate", "--batch must be 1..100000"); batch = l; }
            break;
        case OPT_TAU:
            if (cli_parse_double(optarg, &d) || !(d > 0) || !isfinite(d)) return cli_usage_error("curate", "--tau needs a number > 0, got '%s'", optarg);
            c.coh.tau = d;
            break;
        case OPT_ROLL_TEMP:
            if (cli_parse_double(optarg, &d) || d < 0 || !isfinite(d)) return cli_usage_error("curate", "--rollout-temperature needs a number >= 0, got '%s'", optarg);
            c.ro.temperature = d;
            break;
        case OPT_TIMEOUT:
            if (cli_parse_double(optarg, &d) || !(d > 0)) return cli_usage_error("curate", "--timeout needs seconds > 0, got '%s'", optarg);
            jo.timeout_s = d;
            break;
        case OPT_JUDGE_URL: jo.base_url = optarg; break;
        case OPT_JUDGE_MODEL: jj.model = optarg; break;
        case OPT_POLICY_URL: policy_url = optarg; break;
        case OPT_POLICY_MODEL: c.ro.model = optarg; break;
        case OPT_GOLD: c.gold_field = optarg; break;
        case OPT_KEYENV: jo.api_key_env = optarg; break;
        case OPT_CACHE: jo.cache_dir = optarg; break;
        case OPT_STEP_PROMPT: jj.step_prompt_path = optarg; break;
        case OPT_TMPL_PROMPT: jj.template_prompt_path = optarg; break;
        case OPT_ROLL_PROMPT: c.ro.prompt_path = optarg; break;
        case OPT_INT_SCORES: jj.integer_scores = 1; break;
        case OPT_NO_JUDGE: c.no_judge = 1; break;
        case OPT_NO_FINAL: c.no_final = 1; break;
        case 'o': out_path = optarg; break;
        case OPT_RESUME: resume = 1; break;
        case OPT_SKIP_BAD: c.skip_bad = 1; break;
        case 'q': quiet = 1; break;
        case 'h': curate_help(stdout); return EXIT_OK;
        case ':': return cli_usage_error("curate", "option '%s' needs a value", argv[optind - 1]);
        default: return cli_usage_error("curate", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (!eo.model_path) return cli_usage_error("curate", "--embed-model is required");
    int need_judge = !c.no_judge || !c.no_final;
    if (need_judge && (!jo.base_url || !jj.model))
        return cli_usage_error("curate", "--judge-url and --judge-model are required (unless --no-judge --no-final)");
    if (argc - optind > 1) return cli_usage_error("curate", "one input file at most (got '%s' and '%s')", argv[optind], argv[optind + 1]);
    const char *in = optind < argc ? argv[optind] : "-";
    if (resume && (!out_path || !strcmp(out_path, "-"))) return cli_usage_error("curate", "--resume needs -o FILE");
    po = jo;
    po.base_url = policy_url ? policy_url : jo.base_url;
    if (!c.ro.model) c.ro.model = jj.model;
    c.ro.n = (int)c.n_rollouts;

    int status = EXIT_OK;
    fp_jsonl_reader *rd = NULL;
    fp_outfile *of = NULL;
    item *b = NULL;
    if (fp_encoder_open(&c.enc, &eo)) return cli_fail("curate");
    c.dim = fp_encoder_dim(c.enc);
    if (fp_embed_cache_new(&c.cache, c.dim, fp_encoder_embed, c.enc) || fp_reservoir_new(&c.res, (size_t)pool, c.dim, c.coh.seed)) {
        status = cli_fail("curate");
        goto done;
    }
    if (need_judge && (fp_openai_client_new(&c.jclient, &jo) || fp_judge_new(&c.judge, c.jclient, &jj))) { status = cli_fail("curate"); goto done; }
    if (!c.no_final && fp_openai_client_new(&c.pclient, &po)) { status = cli_fail("curate"); goto done; }
    if (!(b = calloc((size_t)batch, sizeof *b))) { cli_error("curate: out of memory"); status = EXIT_RUNTIME; goto done; }
    if (fp_jsonl_open(&rd, in) || fp_outfile_open(&of, out_path, resume)) { status = cli_fail("curate"); goto done; }
    long skip = fp_outfile_resumed_lines(of);
    if (skip && replay_reservoir(&c, out_path, skip)) { status = cli_fail("curate"); fp_outfile_keep_partial(of); of = NULL; goto done; }
    FILE *out = fp_outfile_stream(of);
    fp_progress *bar = fp_progress_new("curate", cli_progress_enabled(quiet) ? cli_count_records(in) : 0, cli_progress_stream(quiet));
    fp_progress_add(bar, skip, 0);
    const char *path = fp_jsonl_path(rd);
    size_t nb = 0;
    long idx = 0;
    int rc = FP_OK, eof = 0;
    while (status == EXIT_OK && !eof) {
        const char *line;
        size_t len;
        rc = fp_jsonl_next_line(rd, &line, &len);
        if (rc == FP_ERANGE) eof = 1;
        else if (rc != FP_OK) { status = cli_fail("curate"); break; }
        if (!eof) {
            long my = idx++;
            if (my < skip) continue; /* already in the output of the interrupted run */
            item *it = &b[nb];
            memset(it, 0, sizeof *it);
            it->index = my;
            it->lineno = fp_jsonl_line_number(rd);
            c.records++;
            if (prepare(&c, it, line, len, path) != FP_OK) {
                fp_error_prefix("%s:%ld: ", path, it->lineno);
                if (!c.skip_bad) { status = cli_fail("curate"); item_free(it); break; }
                cli_error("curate: %s (written as an error line)", fp_last_error());
                json_t *keep = it->obj;
                long keep_line = it->lineno;
                it->obj = NULL;
                item_free(it);
                it->obj = keep;
                it->index = my;
                it->lineno = keep_line;
                it->error = strdup(fp_last_error());
                c.bad++;
            }
            nb++;
        }
        if (nb && (nb == (size_t)batch || eof)) {
            if (paid_calls(&c, b, nb) || write_batch(&c, b, nb, out)) status = cli_fail("curate");
            fp_progress_add(bar, (long)nb, 0);
            for (size_t q = 0; q < nb; q++) item_free(&b[q]);
            nb = 0;
        }
    }
    for (size_t q = 0; q < nb; q++) item_free(&b[q]);
    fp_progress_finish(bar);
    if (status == EXIT_OK) {
        if (fp_outfile_commit(of)) status = cli_fail("curate");
    } else {
        fp_outfile_keep_partial(of); /* earlier records stay for --resume */
    }
    of = NULL;
    if (!quiet) {
        long hits = 0, misses = 0;
        fp_embed_cache_stats(c.cache, &hits, &misses);
        fp_encoder_stats es;
        fp_encoder_get_stats(c.enc, &es);
        fprintf(stderr, "curate: %ld records (%ld resumed, %ld bad), %ld written; %ld steps, %ld records merged; "
                "coh skipped for %ld records\n", c.records, skip, c.bad, c.written, c.steps, c.merged_records, c.coh_skipped);
        fprintf(stderr, "curate: encoder: %ld texts embedded (%ld tokens, %ld truncated), per-record cache hits %ld\n",
                es.texts, es.tokens, es.truncated, hits);
        if (c.jclient) print_stats("judge", c.jclient);
        if (c.pclient) print_stats("policy", c.pclient);
        if (!c.no_final)
            fprintf(stderr, "curate: final targets %ld (rollouts correct %ld of %ld), no gold %ld, failed %ld\n", c.finals,
                    c.rollouts_correct, c.rollouts_total, c.no_gold, c.final_failed);
    }
    if (status == EXIT_OK && (c.qual_failed || c.final_failed)) {
        cli_error("curate: %ld step scores and %ld trajectory targets could not be computed (see curate_notes)",
                  c.qual_failed, c.final_failed);
        status = EXIT_RUNTIME;
    }
done:
    if (of) fp_outfile_abort(of);
    free(b);
    fp_jsonl_close(rd);
    fp_judge_free(c.judge);
    fp_openai_client_free(c.jclient);
    fp_openai_client_free(c.pclient);
    fp_reservoir_free(c.res);
    fp_embed_cache_free(c.cache);
    fp_encoder_free(c.enc);
    return status;
}
