/* Best-of-N: per-question selection (prm, majority, prm_vote) and the file driver with the N-curve. */
#include "apps/bestofn.h"
#include "apps/svg.h"
#include "base/json.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *fp_bon_method_name(int m) {
    static const char *names[] = {"prm", "majority", "prm_vote", "pass_at_n"};
    return (unsigned)m < FP_BON_NMETRIC ? names[m] : "?";
}

int fp_bon_cluster(char *const *answers, size_t n, fp_answer_equal_fn eq, void *ctx, int *cluster) {
    size_t *first = fp_malloc((n ? n : 1) * sizeof *first); /* first member of each cluster */
    if (!first) return FP_ENOMEM;
    int nc = 0;
    for (size_t i = 0; i < n; i++) {
        cluster[i] = -1;
        if (!answers[i]) continue;
        for (int c = 0; c < nc; c++)
            if (eq(ctx, answers[i], answers[first[c]])) { cluster[i] = c; break; }
        if (cluster[i] < 0) { first[nc] = i; cluster[i] = nc++; }
    }
    free(first);
    return FP_OK;
}

void fp_bon_choose(const double *scores, const int *cluster, size_t n, fp_bon_choice *out) {
    memset(out, 0, sizeof *out);
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (scores[i] > scores[best]) best = i;
    out->index[FP_BON_PRM] = best;
    out->cluster[FP_BON_PRM] = cluster[best];
    /* Cluster ids among the first n candidates are < n (ids are given in order of first member). */
    int nc = 0;
    for (size_t i = 0; i < n; i++) if (cluster[i] + 1 > nc) nc = cluster[i] + 1;
    if (nc == 0) {
        out->index[FP_BON_MAJORITY] = 0;
        out->index[FP_BON_PRM_VOTE] = best;
        out->cluster[FP_BON_MAJORITY] = out->cluster[FP_BON_PRM_VOTE] = -1;
        return;
    }
    double cnt_buf[64], w_buf[64];
    size_t first_buf[64], top_buf[64];
    int heap = nc > 64;
    double *cnt = heap ? calloc((size_t)nc, sizeof *cnt) : cnt_buf, *w = heap ? calloc((size_t)nc, sizeof *w) : w_buf;
    size_t *first = heap ? calloc((size_t)nc, sizeof *first) : first_buf;
    size_t *top = heap ? calloc((size_t)nc, sizeof *top) : top_buf;
    if (!cnt || !w || !first || !top) { /* out of memory: degrade to the prm choice */
        if (heap) { free(cnt); free(w); free(first); free(top); }
        out->index[FP_BON_MAJORITY] = out->index[FP_BON_PRM_VOTE] = best;
        out->cluster[FP_BON_MAJORITY] = out->cluster[FP_BON_PRM_VOTE] = cluster[best];
        return;
    }
    if (!heap) for (int c = 0; c < nc; c++) cnt[c] = w[c] = 0;
    for (size_t i = 0; i < n; i++) { /* index order: sums are taken in that order, ties keep the lowest index */
        int c = cluster[i];
        if (c < 0) continue;
        if (cnt[c] == 0) first[c] = top[c] = i;
        else if (scores[i] > scores[top[c]]) top[c] = i;
        cnt[c] += 1;
        w[c] += scores[i];
    }
    int bm = 0, bv = 0;
    for (int c = 1; c < nc; c++) {
        if (cnt[c] > cnt[bm]) bm = c;
        if (w[c] > w[bv]) bv = c;
    }
    out->index[FP_BON_MAJORITY] = first[bm];
    out->cluster[FP_BON_MAJORITY] = bm;
    out->votes = cnt[bm];
    out->index[FP_BON_PRM_VOTE] = top[bv];
    out->cluster[FP_BON_PRM_VOTE] = bv;
    out->weight = w[bv];
    if (heap) { free(cnt); free(w); free(first); free(top); }
}

/* ---------------------------------------------------------------- file driver */

void fp_bestofn_opts_default(fp_bestofn_opts *o) {
    memset(o, 0, sizeof *o);
    o->responses_field = "responses";
    o->gold_field = "gold";
    o->output_key = "bestofn";
}

static int verify_extract(void *ctx, const char *text, char **answer) {
    (void)ctx;
    return fp_verify_extract(text, answer, NULL);
}
static int verify_equal(void *ctx, const char *a, const char *b) {
    (void)ctx;
    return fp_verify_equal(a, b);
}


/* A JSON string or number as an answer string (malloc'd); NULL for null. */
static int answer_string(const json_t *v, char **out) {
    *out = NULL;
    if (json_is_string(v)) return (*out = fp_strndup(json_string_value(v), json_string_length(v))) ? FP_OK : FP_ENOMEM;
    char buf[64];
    if (json_is_integer(v)) snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (json_is_real(v)) snprintf(buf, sizeof buf, "%.17g", json_real_value(v));
    else return json_is_null(v) ? FP_OK : FP_EINVAL;
    return (*out = fp_strdup(buf)) ? FP_OK : FP_ENOMEM;
}

typedef struct {
    size_t n;
    const char **resp;
    double *scores;
    char **answers;
    int *cluster;
    int *correct; /* NULL when the record is not evaluated */
} bon_item;

static void item_free(bon_item *it) {
    if (it->answers) for (size_t i = 0; i < it->n; i++) free(it->answers[i]);
    free(it->answers);
    free(it->resp);
    free(it->scores);
    free(it->cluster);
    free(it->correct);
    memset(it, 0, sizeof *it);
}

static int process(const fp_bestofn_opts *o, const json_t *rec, const char *where, bon_item *it) {
    memset(it, 0, sizeof *it);
    fp_answer_extract_fn extract = o->extract ? o->extract : verify_extract;
    fp_answer_equal_fn equal = o->equal ? o->equal : verify_equal;
    if (!json_is_object(rec)) return fp_errorf(FP_EINVAL, "%s: record is %s, expected an object", where, fp_json_kind(rec));
    const json_t *rs = json_object_get(rec, o->responses_field);
    if (!rs) return fp_errorf(FP_EINVAL, "%s: missing field '%s'", where, o->responses_field);
    if (!json_is_array(rs))
        return fp_errorf(FP_EINVAL, "%s: field '%s' is %s, expected a list of responses", where, o->responses_field, fp_json_kind(rs));
    size_t n = json_array_size(rs);
    if (n == 0) return fp_errorf(FP_EINVAL, "%s: field '%s' is an empty list (no candidates)", where, o->responses_field);
    it->n = n;
    it->resp = fp_calloc(n, sizeof *it->resp);
    it->scores = fp_calloc(n, sizeof *it->scores);
    it->answers = fp_calloc(n, sizeof *it->answers);
    it->cluster = fp_calloc(n, sizeof *it->cluster);
    if (!it->resp || !it->scores || !it->answers || !it->cluster) return FP_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const json_t *r = json_array_get(rs, i);
        if (!json_is_string(r))
            return fp_errorf(FP_EINVAL, "%s: field '%s'[%zu] is %s, expected a string", where, o->responses_field, i, fp_json_kind(r));
        it->resp[i] = json_string_value(r);
    }
    const char *question = NULL;
    if (o->question_field) {
        const json_t *q = json_object_get(rec, o->question_field);
        if (!q) return fp_errorf(FP_EINVAL, "%s: missing field '%s'", where, o->question_field);
        if (!json_is_string(q)) return fp_errorf(FP_EINVAL, "%s: field '%s' is %s, expected a string", where, o->question_field, fp_json_kind(q));
        question = json_string_value(q);
    } else {
        static const char *auto_q[] = {"question", "problem", "prompt"};
        for (int k = 0; k < 3 && !question; k++) {
            const json_t *q = json_object_get(rec, auto_q[k]);
            if (json_is_string(q)) question = json_string_value(q);
        }
    }
    if (!o->scorer.score) return fp_errorf(FP_EINVAL, "bestofn: no score source configured");
    fp_candidates c = {rec, question, it->resp, n, where};
    int rc = o->scorer.score(o->scorer.ctx, &c, it->scores);
    if (rc) return rc;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(it->scores[i])) return fp_errorf(FP_EINVAL, "%s: candidate %zu has a non-finite score", where, i);

    if (o->answers_field) {
        const json_t *as = json_object_get(rec, o->answers_field);
        if (!as) return fp_errorf(FP_EINVAL, "%s: missing field '%s'", where, o->answers_field);
        if (!json_is_array(as)) return fp_errorf(FP_EINVAL, "%s: field '%s' is %s, expected a list of %zu answers", where, o->answers_field, fp_json_kind(as), n);
        if (json_array_size(as) != n)
            return fp_errorf(FP_EINVAL, "%s: field '%s' has %zu answers for %zu candidates", where, o->answers_field, json_array_size(as), n);
        for (size_t i = 0; i < n; i++) {
            rc = answer_string(json_array_get(as, i), &it->answers[i]);
            if (rc == FP_EINVAL)
                return fp_errorf(FP_EINVAL, "%s: field '%s'[%zu] is %s, expected a string, number or null", where,
                                 o->answers_field, i, fp_json_kind(json_array_get(as, i)));
            if (rc) return rc;
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            rc = extract(o->answer_ctx, it->resp[i], &it->answers[i]);
            if (rc) return fp_error_prefix("%s: candidate %zu: answer extraction: ", where, i);
        }
    }
    rc = fp_bon_cluster(it->answers, n, equal, o->answer_ctx, it->cluster);
    if (rc) return rc;

    if (o->correct_field) {
        const json_t *cs = json_object_get(rec, o->correct_field);
        if (!cs) return fp_errorf(FP_EINVAL, "%s: missing field '%s'", where, o->correct_field);
        if (!json_is_array(cs) || json_array_size(cs) != n)
            return fp_errorf(FP_EINVAL, "%s: field '%s' must be a list of %zu correctness labels (got %s of size %zu)",
                             where, o->correct_field, n, fp_json_kind(cs), json_array_size(cs));
        if (!(it->correct = fp_calloc(n, sizeof *it->correct))) return FP_ENOMEM;
        for (size_t i = 0; i < n; i++) {
            const json_t *e = json_array_get(cs, i);
            if (json_is_boolean(e)) it->correct[i] = json_is_true(e);
            else if (json_is_integer(e) && (json_integer_value(e) == 0 || json_integer_value(e) == 1))
                it->correct[i] = (int)json_integer_value(e);
            else return fp_errorf(FP_EINVAL, "%s: field '%s'[%zu] is %s, expected true/false/0/1", where, o->correct_field, i, fp_json_kind(e));
        }
    } else if (o->gold_field) {
        const json_t *g = json_object_get(rec, o->gold_field);
        if (g && !json_is_null(g)) {
            char *gs = NULL, *gans = NULL;
            rc = answer_string(g, &gs);
            if (rc == FP_EINVAL) return fp_errorf(FP_EINVAL, "%s: field '%s' is %s, expected a string or number", where, o->gold_field, fp_json_kind(g));
            if (rc) return rc;
            rc = extract(o->answer_ctx, gs, &gans);
            if (rc) { free(gs); return fp_error_prefix("%s: field '%s': answer extraction: ", where, o->gold_field); }
            if (gans) { free(gs); gs = gans; }
            if (!(it->correct = fp_calloc(n, sizeof *it->correct))) { free(gs); return FP_ENOMEM; }
            for (size_t i = 0; i < n; i++) it->correct[i] = it->answers[i] && equal(o->answer_ctx, it->answers[i], gs);
            free(gs);
        }
    }
    return FP_OK;
}

static json_t *choice_json(const bon_item *it, const fp_bon_choice *ch, int m) {
    size_t i = ch->index[m];
    json_t *j = json_object();
    json_object_set_new(j, "index", json_integer((json_int_t)i));
    int has = m == FP_BON_PRM ? it->answers[i] != NULL : ch->cluster[m] >= 0;
    json_object_set_new(j, "answer", has ? json_string(it->answers[i]) : json_null());
    if (m == FP_BON_PRM) json_object_set_new(j, "score", json_real(it->scores[i]));
    if (m == FP_BON_MAJORITY) json_object_set_new(j, "votes", json_integer((json_int_t)ch->votes));
    if (m == FP_BON_PRM_VOTE) json_object_set_new(j, "weight", json_real(ch->weight));
    if (it->correct) json_object_set_new(j, "correct", json_boolean(it->correct[i]));
    return j;
}

static json_t *item_json(const bon_item *it, const fp_bon_choice *ch) {
    json_t *o = json_object(), *sc = json_array(), *an = json_array(), *cl = json_array(), *co = it->correct ? json_array() : NULL;
    for (size_t i = 0; i < it->n; i++) {
        json_array_append_new(sc, json_real(it->scores[i]));
        json_array_append_new(an, it->answers[i] ? json_string(it->answers[i]) : json_null());
        json_array_append_new(cl, it->cluster[i] >= 0 ? json_integer(it->cluster[i]) : json_null());
        if (co) json_array_append_new(co, json_boolean(it->correct[i]));
    }
    json_object_set_new(o, "n", json_integer((json_int_t)it->n));
    json_object_set_new(o, "scores", sc);
    json_object_set_new(o, "answers", an);
    json_object_set_new(o, "cluster", cl);
    if (co) json_object_set_new(o, "correct", co);
    for (int m = 0; m < 3; m++) json_object_set_new(o, fp_bon_method_name(m), choice_json(it, ch, m));
    if (it->correct) {
        int any = 0;
        for (size_t i = 0; i < it->n; i++) any |= it->correct[i];
        json_object_set_new(o, "pass_at_n", json_boolean(any));
    }
    return o;
}

/* Correctness of the four metrics over the first n candidates. */
static void metrics(const bon_item *it, size_t n, long out[FP_BON_NMETRIC]) {
    fp_bon_choice ch;
    fp_bon_choose(it->scores, it->cluster, n, &ch);
    for (int m = 0; m < 3; m++) out[m] = it->correct[ch.index[m]];
    long any = 0;
    for (size_t i = 0; i < n; i++) any |= it->correct[i];
    out[FP_BON_PASS] = any;
}

static void accumulate(fp_bestofn_report *r, const bon_item *it) {
    long v[FP_BON_NMETRIC];
    int L = 0;
    for (; L < FP_BON_MAX_LEVELS - 1 && ((size_t)1 << L) < it->n; L++) {
        metrics(it, (size_t)1 << L, v);
        for (int m = 0; m < FP_BON_NMETRIC; m++) r->lvl_[L][m] += v[m];
    }
    metrics(it, it->n, v);
    for (int m = 0; m < FP_BON_NMETRIC; m++) {
        r->from_[L][m] += v[m];
        r->correct[m] += v[m];
    }
}

static void finish_curve(fp_bestofn_report *r) {
    r->n_points = 0;
    long run[FP_BON_NMETRIC] = {0};
    for (int L = 0; L < FP_BON_MAX_LEVELS && ((size_t)1 << L) < r->max_n; L++) {
        for (int m = 0; m < FP_BON_NMETRIC; m++) {
            run[m] += r->from_[L][m];
            r->curve_correct[r->n_points][m] = r->lvl_[L][m] + run[m];
        }
        r->curve_n[r->n_points++] = (double)((size_t)1 << L);
    }
    if (r->max_n) {
        for (int m = 0; m < FP_BON_NMETRIC; m++) r->curve_correct[r->n_points][m] = r->correct[m];
        r->curve_n[r->n_points++] = (double)r->max_n;
    }
}

int fp_bestofn_run(const fp_bestofn_opts *o, const char *in_path, FILE *out, fp_bestofn_report *rep) {
    memset(rep, 0, sizeof *rep);
    fp_jsonl_reader *rd;
    int rc = fp_jsonl_open(&rd, in_path);
    if (rc) return rc;
    const char *key = o->output_key ? o->output_key : "bestofn";
    const char *line;
    size_t len;
    char where[1200];
    for (;;) {
        rc = fp_jsonl_next_line(rd, &line, &len);
        if (rc == FP_ERANGE) { rc = FP_OK; break; }
        if (rc) break;
        rep->n_records++;
        snprintf(where, sizeof where, "%s:%ld", fp_jsonl_path(rd), fp_jsonl_line_number(rd));
        json_t *rec = NULL;
        bon_item it;
        memset(&it, 0, sizeof it);
        rc = fp_json_parse_record(&rec, line, len, fp_jsonl_path(rd), fp_jsonl_line_number(rd));
        if (!rc) rc = process(o, rec, where, &it);
        if (rc == FP_EINVAL || rc == FP_EPARSE) {
            if (o->skip_bad) {
                if (o->on_skip) o->on_skip(o->on_skip_ctx, fp_last_error());
                rep->n_skipped++;
                json_decref(rec);
                item_free(&it);
                rc = FP_OK;
                continue;
            }
        }
        if (rc) { json_decref(rec); item_free(&it); break; }
        fp_bon_choice ch;
        fp_bon_choose(it.scores, it.cluster, it.n, &ch);
        json_t *added = json_object(), *obj = item_json(&it, &ch);
        json_object_set_new(added, key, obj);
        rc = fp_json_write_extended(out, line, len, rec, added);
        json_decref(added);
        if (rc) { json_decref(rec); item_free(&it); break; }
        rep->n_questions++;
        if (o->progress) fp_progress_add(o->progress, 1, 0);
        if (it.n > rep->max_n) rep->max_n = it.n;
        if (rep->min_n == 0 || it.n < rep->min_n) rep->min_n = it.n;
        if (it.correct) {
            rep->n_evaluated++;
            accumulate(rep, &it);
        }
        json_decref(rec);
        item_free(&it);
    }
    fp_jsonl_close(rd);
    if (rc) return rc;
    finish_curve(rep);
    return FP_OK;
}

double fp_bestofn_accuracy(const fp_bestofn_report *r, int m) {
    if (r->n_evaluated == 0 || (unsigned)m >= FP_BON_NMETRIC) return NAN;
    return (double)r->correct[m] / (double)r->n_evaluated;
}

static json_t *acc_json(long correct, long n) { return n ? json_real((double)correct / (double)n) : json_null(); }

json_t *fp_bestofn_report_json(const fp_bestofn_report *r) {
    json_t *o = json_object();
    json_object_set_new(o, "n_questions", json_integer(r->n_questions));
    json_object_set_new(o, "n_evaluated", json_integer(r->n_evaluated));
    json_object_set_new(o, "n_skipped", json_integer(r->n_skipped));
    json_object_set_new(o, "max_n", json_integer((json_int_t)r->max_n));
    json_object_set_new(o, "min_n", json_integer((json_int_t)r->min_n));
    for (int m = 0; m < FP_BON_NMETRIC; m++) json_object_set_new(o, fp_bon_method_name(m), acc_json(r->correct[m], r->n_evaluated));
    json_t *counts = json_object();
    for (int m = 0; m < FP_BON_NMETRIC; m++) json_object_set_new(counts, fp_bon_method_name(m), json_integer(r->correct[m]));
    json_object_set_new(o, "correct", counts);
    json_t *curve = json_array();
    for (size_t p = 0; p < r->n_points; p++) {
        json_t *pt = json_object();
        json_object_set_new(pt, "n", json_integer((json_int_t)r->curve_n[p]));
        for (int m = 0; m < FP_BON_NMETRIC; m++)
            json_object_set_new(pt, fp_bon_method_name(m), acc_json(r->curve_correct[p][m], r->n_evaluated));
        json_array_append_new(curve, pt);
    }
    json_object_set_new(o, "curve", curve);
    return o;
}

int fp_bestofn_curve_svg(const fp_bestofn_report *r, FILE *f) {
    double y[FP_BON_NMETRIC][FP_BON_MAX_LEVELS + 1];
    fp_svg_series s[FP_BON_NMETRIC];
    static const char *names[] = {"PRM (best r\xcc\x82)", "majority vote", "PRM-weighted vote", "pass@N"};
    for (int m = 0; m < FP_BON_NMETRIC; m++) {
        for (size_t p = 0; p < r->n_points; p++)
            y[m][p] = r->n_evaluated ? (double)r->curve_correct[p][m] / (double)r->n_evaluated : NAN;
        s[m].name = names[m];
        s[m].y = y[m];
    }
    char title[128];
    snprintf(title, sizeof title, "Best-of-N accuracy (%ld questions)", r->n_evaluated);
    return fp_svg_line_chart(f, title, "N (candidates per question)", "accuracy", r->curve_n, r->n_points, s,
                             FP_BON_NMETRIC, 1, 0, 0);
}
