/* Top-K data selection in O(K) memory: bounded heap of offsets, then a second pass by offset. */
#include "apps/select.h"
#include "apps/scorer.h"
#include "apps/svg.h"
#include "base/json.h"
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---------------------------------------------------------------- heap */

int fp_topk_init(fp_topk *h, size_t k) {
    memset(h, 0, sizeof *h);
    if (k == 0) return fp_errorf(FP_EINVAL, "top-k: K must be at least 1");
    h->items = fp_malloc(k * sizeof *h->items);
    if (!h->items) return FP_ENOMEM;
    h->cap = k;
    return FP_OK;
}

void fp_topk_free(fp_topk *h) {
    free(h->items);
    memset(h, 0, sizeof *h);
}

int fp_topk_better(const fp_topk_item *a, const fp_topk_item *b) {
    if (a->score != b->score) return a->score > b->score;
    return a->index < b->index;
}

/* min-heap on "better": the root is the item every other kept item beats */
static void sift_down(fp_topk_item *v, size_t n, size_t i) {
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && fp_topk_better(&v[w], &v[l])) w = l;
        if (r < n && fp_topk_better(&v[w], &v[r])) w = r;
        if (w == i) return;
        fp_topk_item t = v[i];
        v[i] = v[w];
        v[w] = t;
        i = w;
    }
}

int fp_topk_push(fp_topk *h, const fp_topk_item *it) {
    if (h->size < h->cap) {
        size_t i = h->size++;
        h->items[i] = *it;
        while (i > 0) {
            size_t p = (i - 1) / 2;
            if (!fp_topk_better(&h->items[p], &h->items[i])) break;
            fp_topk_item t = h->items[p];
            h->items[p] = h->items[i];
            h->items[i] = t;
            i = p;
        }
        if (h->size > h->peak) h->peak = h->size;
        return 1;
    }
    if (!fp_topk_better(it, &h->items[0])) return 0;
    h->items[0] = *it;
    sift_down(h->items, h->size, 0);
    return 1;
}

static int cmp_rank(const void *a, const void *b) {
    const fp_topk_item *x = a, *y = b;
    return fp_topk_better(x, y) ? -1 : fp_topk_better(y, x) ? 1 : 0;
}
static int cmp_index(const void *a, const void *b) {
    const fp_topk_item *x = a, *y = b;
    return (x->index > y->index) - (x->index < y->index);
}
void fp_topk_sort(fp_topk *h, int by_index) {
    qsort(h->items, h->size, sizeof *h->items, by_index ? cmp_index : cmp_rank);
}

/* ---------------------------------------------------------------- driver */

void fp_select_opts_default(fp_select_opts *o) {
    memset(o, 0, sizeof *o);
    o->scores_field = "score";
    o->agg = FP_AGG_MEAN;
    o->alpha = 1.0;
    o->order = FP_SELECT_ORDER_INPUT;
    o->bins = 40;
}

void fp_select_stats_free(fp_select_stats *st) {
    free(st->hist_all);
    free(st->hist_kept);
    st->hist_all = st->hist_kept = NULL;
}

static int blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t') return 0;
    return 1;
}

/* Reads the next non-blank line that starts before end (end < 0: no limit); *off its byte offset, *len
 * without "\r\n".  FP_ERANGE at EOF or at end. */
static int next_line(FILE *f, const char *path, char **buf, size_t *cap, long *lineno, off_t *off, size_t *len,
                     off_t end) {
    for (;;) {
        off_t o = ftello(f);
        if (end >= 0 && o >= end) return FP_ERANGE;
        errno = 0;
        ssize_t n = getline(buf, cap, f);
        if (n < 0) {
            if (ferror(f)) return fp_errorf(FP_EIO, "%s:%ld: read error: %s", path, *lineno + 1, strerror(errno));
            return FP_ERANGE;
        }
        ++*lineno;
        size_t k = (size_t)n;
        while (k > 0 && ((*buf)[k - 1] == '\n' || (*buf)[k - 1] == '\r')) k--;
        if (blank(*buf, k)) continue;
        (*buf)[k] = 0;
        *off = o;
        *len = k;
        return FP_OK;
    }
}

int fp_select_check_unchanged(FILE *f, const char *path, const fp_select_stats *st) {
    uint64_t size;
    int64_t mtime;
    int rc = fp_select_file_id(f, path, &size, &mtime);
    if (!rc && (size != st->in_size || mtime != st->in_mtime_ns))
        rc = fp_errorf(FP_ESTATE, "%s: the file changed while it was being read", path);
    return rc;
}

int fp_select_file_id(FILE *f, const char *path, uint64_t *size, int64_t *mtime_ns) {
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0) return fp_errorf(FP_EIO, "%s: cannot stat: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return fp_errorf(FP_EINVAL, "%s: not a regular file (select reads the pool twice and seeks; save it to a file first)", path);
    *size = (uint64_t)sb.st_size;
    *mtime_ns = (int64_t)sb.st_mtim.tv_sec * 1000000000LL + sb.st_mtim.tv_nsec;
    return FP_OK;
}

int fp_select_count_range(FILE *f, const char *path, off_t start, off_t end, long *n_lines, long *n_records) {
    char *buf = NULL;
    size_t cap = 0, len;
    long lineno = 0;
    off_t off;
    int rc;
    *n_records = 0;
    if (fseeko(f, start, SEEK_SET) != 0) return fp_errorf(FP_EIO, "%s: cannot seek: %s", path, strerror(errno));
    while ((rc = next_line(f, path, &buf, &cap, &lineno, &off, &len, end)) == FP_OK) ++*n_records;
    free(buf);
    *n_lines = lineno;
    if (rc != FP_ERANGE) return rc;
    if (fseeko(f, start, SEEK_SET) != 0) return fp_errorf(FP_EIO, "%s: cannot seek: %s", path, strerror(errno));
    return FP_OK;
}

typedef struct {
    double s;
    long i;
} spill_rec; /* one scored record in the histogram spill file */

int fp_select_scan_range(const fp_select_opts *o, FILE *f, const char *path, off_t start, off_t end,
                         long first_index, long first_lineno, fp_topk *heap, FILE *spill, fp_select_part *p) {
    memset(p, 0, sizeof *p);
    p->min = p->max = NAN;
    if (fseeko(f, start, SEEK_SET) != 0) return fp_errorf(FP_EIO, "%s: cannot seek: %s", path, strerror(errno));
    char *buf = NULL;
    size_t cap = 0;
    long lineno = first_lineno;
    char where[1200];
    int rc = FP_OK;
    while (!rc) {
        off_t off;
        size_t len;
        rc = next_line(f, path, &buf, &cap, &lineno, &off, &len, end);
        if (rc == FP_ERANGE) { rc = FP_OK; break; }
        if (rc) break;
        long index = first_index + p->n_records++;
        if (o->progress) fp_progress_add(o->progress, 1, 0);
        snprintf(where, sizeof where, "%s:%ld", path, lineno);
        json_t *rec = NULL;
        double s = NAN;
        rc = fp_json_parse_record(&rec, buf, len, path, lineno);
        if (!rc) {
            if (o->scorer.score) {
                rc = o->scorer.score(o->scorer.ctx, rec, where, &s);
                if (!rc && !isfinite(s)) rc = fp_errorf(FP_EINVAL, "%s: the score source gave a non-finite score", where);
            } else {
                rc = fp_record_score(rec, o->scores_field, o->final_field, o->agg, o->alpha, where, &s);
            }
        }
        json_decref(rec);
        if (rc == FP_EINVAL || rc == FP_EPARSE) {
            if (o->skip_bad) {
                if (o->on_skip) o->on_skip(o->on_skip_ctx, fp_last_error());
                p->n_skipped++;
                rc = FP_OK;
                continue;
            }
        }
        if (rc) break;
        p->n_scored++;
        p->sum += s;
        if (p->n_scored == 1 || s < p->min) p->min = s;
        if (p->n_scored == 1 || s > p->max) p->max = s;
        fp_topk_item it = {s, index, lineno, off, len, 0};
        fp_topk_push(heap, &it);
        if (spill) {
            spill_rec rec2 = {s, index};
            if (fwrite(&rec2, sizeof rec2, 1, spill) != 1)
                rc = fp_errorf(FP_EIO, "histogram temporary file: write failed: %s", strerror(errno));
        }
    }
    free(buf);
    return rc;
}

int fp_select_spill_sum(FILE *spill, double *sum) {
    if (fseeko(spill, 0, SEEK_SET) != 0) return fp_errorf(FP_EIO, "score temporary file: cannot seek");
    spill_rec r;
    while (fread(&r, sizeof r, 1, spill) == 1) *sum += r.s;
    if (ferror(spill)) return fp_errorf(FP_EIO, "score temporary file: read failed");
    return FP_OK;
}

int fp_select_hist_spill(FILE *spill, size_t bins, double min, double max, const fp_topk_item *worst, long *all,
                         long *kept) {
    if (fseeko(spill, 0, SEEK_SET) != 0) return fp_errorf(FP_EIO, "histogram temporary file: cannot seek");
    spill_rec r2;
    double span = max - min;
    while (fread(&r2, sizeof r2, 1, spill) == 1) {
        size_t b = 0;
        if (span > 0) {
            double x = (r2.s - min) / span * (double)bins;
            b = x >= (double)bins ? bins - 1 : (size_t)x;
        }
        all[b]++;
        fp_topk_item probe = {r2.s, r2.i, 0, 0, 0, 0};
        if (worst && (probe.score == worst->score && probe.index == worst->index ? 1 : fp_topk_better(&probe, worst)))
            kept[b]++;
    }
    if (ferror(spill)) return fp_errorf(FP_EIO, "histogram temporary file: read failed");
    return FP_OK;
}

int fp_select_emit(const fp_select_opts *o, FILE *f, const char *path, fp_topk *heap, FILE *out,
                   fp_select_stats *st, fp_topk_item *worst_out) {
    int rc = FP_OK;
    st->heap_peak = heap->peak;
    st->n_kept = (long)heap->size;
    st->n_dropped = st->n_scored - st->n_kept;
    fp_topk_item worst = {0};
    if (heap->size) {
        worst = heap->items[0];
        st->threshold = worst.score;
    }
    if (worst_out) *worst_out = worst;
    /* ranks (1 = best) for annotation: sort by rank first, then (for input order) by index */
    fp_topk_sort(heap, 0);
    double ksum = 0;
    for (size_t i = 0; i < heap->size; i++) {
        heap->items[i].rank = (long)i + 1;
        ksum += heap->items[i].score;
    }
    if (heap->size) {
        st->kept_max = heap->items[0].score;
        st->kept_min = heap->items[heap->size - 1].score;
        st->kept_mean = ksum / (double)heap->size;
    }
    if (o->order == FP_SELECT_ORDER_INPUT) fp_topk_sort(heap, 1);
    /* pass 2: copy the kept lines by offset */
    char *buf = NULL;
    size_t cap = 0;
    for (size_t i = 0; !rc && i < heap->size; i++) {
        const fp_topk_item *it = &heap->items[i];
        if (it->len + 1 > cap) {
            char *nb = fp_realloc(buf, it->len + 1);
            if (!nb) { rc = FP_ENOMEM; break; }
            buf = nb;
            cap = it->len + 1;
        }
        if (fseeko(f, it->offset, SEEK_SET) != 0 || fread(buf, 1, it->len, f) != it->len) {
            rc = fp_errorf(FP_EIO, "%s:%ld: cannot re-read the kept record: %s", path, it->lineno, strerror(errno));
            break;
        }
        buf[it->len] = 0;
        if (o->annotate) {
            json_t *rec = NULL;
            rc = fp_json_parse_record(&rec, buf, it->len, path, it->lineno);
            if (rc) break;
            json_t *added = json_pack("{s:{s:f,s:I}}", "select", "score", it->score, "rank",
                                      (json_int_t)it->rank);
            rc = added ? fp_json_write_extended(out, buf, it->len, rec, added) : FP_ENOMEM;
            json_decref(added);
            json_decref(rec);
        } else if (fwrite(buf, 1, it->len, out) != it->len || fputc('\n', out) == EOF) {
            rc = fp_errorf(FP_EIO, "write failed: %s", strerror(errno));
        }
    }
    free(buf);
    return rc;
}

int fp_select_run(const fp_select_opts *o, const char *in_path, FILE *out, fp_select_stats *st) {
    memset(st, 0, sizeof *st);
    st->min = st->max = st->mean = st->kept_min = st->kept_max = st->kept_mean = st->threshold = NAN;
    if (!in_path || !strcmp(in_path, "-"))
        return fp_errorf(FP_EINVAL, "select needs a pool file (it is read twice), not stdin");
    if (o->top_k < 0 || (o->top_k == 0 && !(o->top_frac > 0 && o->top_frac <= 1)))
        return fp_errorf(FP_EINVAL, "select: K must be >= 1 or the fraction in (0, 1]");
    FILE *f = fopen(in_path, "rb");
    if (!f) return fp_errorf(FP_EIO, "%s: cannot open: %s", in_path, strerror(errno));
    FILE *spill = NULL;
    fp_topk heap = {0};
    int rc = fp_select_file_id(f, in_path, &st->in_size, &st->in_mtime_ns);
    long k = o->top_k;
    if (!rc && k == 0) {
        long n, lines;
        rc = fp_select_count_range(f, in_path, 0, -1, &lines, &n);
        k = fp_select_frac_k(o->top_frac, n);
    }
    st->k = k;
    if (!rc) rc = fp_topk_init(&heap, (size_t)k);
    if (!rc && o->bins) {
        spill = tmpfile();
        if (!spill) rc = fp_errorf(FP_EIO, "cannot create a temporary file for the histogram: %s", strerror(errno));
    }
    /* pass 1: score every record, keep the top K offsets */
    fp_select_part part;
    if (!rc) {
        rc = fp_select_scan_range(o, f, in_path, 0, -1, 0, 0, &heap, spill, &part);
        st->n_records = part.n_records;
        st->n_scored = part.n_scored;
        st->n_skipped = part.n_skipped;
        st->min = part.min;
        st->max = part.max;
    }
    if (!rc) rc = fp_select_check_unchanged(f, in_path, st);
    if (!rc) {
        if (st->n_scored) st->mean = part.sum / (double)st->n_scored;
        fp_topk_item worst;
        rc = fp_select_emit(o, f, in_path, &heap, out, st, &worst);
        /* histogram from the spilled scores */
        if (!rc && spill) {
            st->bins = o->bins;
            st->hist_lo = st->n_scored ? st->min : 0;
            st->hist_hi = st->n_scored ? st->max : 0;
            st->hist_all = fp_calloc(o->bins, sizeof *st->hist_all);
            st->hist_kept = fp_calloc(o->bins, sizeof *st->hist_kept);
            if (!st->hist_all || !st->hist_kept) rc = FP_ENOMEM;
            if (!rc)
                rc = fp_select_hist_spill(spill, o->bins, st->min, st->max, st->n_kept ? &worst : NULL, st->hist_all,
                                          st->hist_kept);
        }
    }
    if (spill) fclose(spill);
    fp_topk_free(&heap);
    fclose(f);
    if (rc) fp_select_stats_free(st);
    return rc;
}

long fp_select_frac_k(double frac, long n_records) {
    long k = (long)ceil(frac * (double)n_records - 1e-9);
    return k < 1 ? 1 : k;
}

/* ---------------------------------------------------------------- summary, histogram, resume */

static json_t *num_or_null(double x) { return isfinite(x) ? json_real(x) : json_null(); }

json_t *fp_select_params_json(const fp_select_opts *o) {
    json_t *p = json_pack("{s:s,s:o,s:s,s:f,s:I,s:f,s:s,s:b,s:I,s:b}", "scores_field", o->scores_field,
                     "final_field", o->final_field ? json_string(o->final_field) : json_null(), "aggregate",
                     fp_aggregate_name(o->agg), "alpha", o->alpha, "top_k", (json_int_t)o->top_k, "top_frac",
                     o->top_frac, "order", o->order == FP_SELECT_ORDER_SCORE ? "score" : "input", "annotate",
                     o->annotate, "bins", (json_int_t)o->bins, "skip_bad", o->skip_bad);
    if (p && o->scorer.score) json_object_set_new(p, "scorer", json_string(o->scorer.name ? o->scorer.name : "custom"));
    return p;
}

json_t *fp_select_summary_json(const fp_select_opts *o, const fp_select_stats *st, const char *in_path,
                               const char *out_path, long long out_size) {
    json_t *j = json_object();
    json_object_set_new(j, "complete", json_true());
    json_object_set_new(j, "input", json_pack("{s:s,s:I,s:I}", "path", in_path, "size", (json_int_t)st->in_size,
                                              "mtime_ns", (json_int_t)st->in_mtime_ns));
    json_object_set_new(j, "output", json_pack("{s:o,s:o}", "path", out_path ? json_string(out_path) : json_null(),
                                               "size", out_size >= 0 ? json_integer(out_size) : json_null()));
    json_object_set_new(j, "params", fp_select_params_json(o));
    json_object_set_new(j, "n_records", json_integer(st->n_records));
    json_object_set_new(j, "n_scored", json_integer(st->n_scored));
    json_object_set_new(j, "n_skipped", json_integer(st->n_skipped));
    json_object_set_new(j, "k", json_integer(st->k));
    json_object_set_new(j, "kept", json_integer(st->n_kept));
    json_object_set_new(j, "dropped", json_integer(st->n_dropped));
    json_object_set_new(j, "heap_peak", json_integer((json_int_t)st->heap_peak));
    json_t *sc = json_object();
    json_object_set_new(sc, "min", num_or_null(st->min));
    json_object_set_new(sc, "max", num_or_null(st->max));
    json_object_set_new(sc, "mean", num_or_null(st->mean));
    json_object_set_new(sc, "threshold", num_or_null(st->threshold));
    json_object_set_new(sc, "kept_min", num_or_null(st->kept_min));
    json_object_set_new(sc, "kept_max", num_or_null(st->kept_max));
    json_object_set_new(sc, "kept_mean", num_or_null(st->kept_mean));
    json_object_set_new(j, "score", sc);
    if (st->hist_all) {
        json_t *h = json_object(), *edges = json_array(), *all = json_array(), *kept = json_array();
        for (size_t b = 0; b <= st->bins; b++)
            json_array_append_new(edges, json_real(st->hist_lo + (st->hist_hi - st->hist_lo) * (double)b / (double)st->bins));
        for (size_t b = 0; b < st->bins; b++) {
            json_array_append_new(all, json_integer(st->hist_all[b]));
            json_array_append_new(kept, json_integer(st->hist_kept[b]));
        }
        json_object_set_new(h, "bins", json_integer((json_int_t)st->bins));
        json_object_set_new(h, "lo", json_real(st->hist_lo));
        json_object_set_new(h, "hi", json_real(st->hist_hi));
        json_object_set_new(h, "edges", edges);
        json_object_set_new(h, "counts", all);
        json_object_set_new(h, "kept", kept);
        json_object_set_new(j, "histogram", h);
    }
    return j;
}

int fp_select_histogram_svg(const fp_select_stats *st, FILE *f) {
    if (!st->hist_all) return fp_errorf(FP_ESTATE, "no histogram was computed (no scored records or bins = 0)");
    char title[160], hl[64];
    snprintf(title, sizeof title, "PRM score distribution (%ld records, top %ld kept)", st->n_scored, st->n_kept);
    snprintf(hl, sizeof hl, "kept (%ld)", st->n_kept);
    return fp_svg_histogram(f, title, "trajectory score r\xcc\x82", st->hist_lo, st->hist_hi, st->hist_all, st->hist_kept,
                            st->bins, "all records", hl);
}

int fp_select_is_complete(const fp_select_opts *o, const char *in_path, const char *out_path,
                          const char *summary_path) {
    if (!in_path || !out_path || !summary_path || !strcmp(out_path, "-")) return 0;
    json_error_t err;
    json_t *s = json_load_file(summary_path, 0, &err);
    if (!s) return 0;
    int ok = 0;
    struct stat si, so;
    json_t *params = fp_select_params_json(o);
    json_t *in = json_object_get(s, "input"), *out = json_object_get(s, "output");
    if (json_is_true(json_object_get(s, "complete")) && params && json_equal(params, json_object_get(s, "params")) &&
        stat(in_path, &si) == 0 && stat(out_path, &so) == 0 && json_is_object(in) && json_is_object(out)) {
        int64_t mt = (int64_t)si.st_mtim.tv_sec * 1000000000LL + si.st_mtim.tv_nsec;
        const char *ip = json_string_value(json_object_get(in, "path"));
        const char *op = json_string_value(json_object_get(out, "path"));
        ok = ip && !strcmp(ip, in_path) && op && !strcmp(op, out_path) &&
             json_integer_value(json_object_get(in, "size")) == (json_int_t)si.st_size &&
             json_integer_value(json_object_get(in, "mtime_ns")) == (json_int_t)mt &&
             json_is_integer(json_object_get(out, "size")) &&
             json_integer_value(json_object_get(out, "size")) == (json_int_t)so.st_size;
    }
    json_decref(params);
    json_decref(s);
    return ok;
}
