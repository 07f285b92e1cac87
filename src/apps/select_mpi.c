/* Distributed `select` over MPI (built only with `make MPI=1`, which defines FP_WITH_MPI and compiles with
 * mpicc).  The result is byte-for-byte the single-process one:
 *
 *   ranges   rank r owns the lines that start in [a_r, a_{r+1}), where a_r is the first line start at or
 *            after r·size/P (a_0 = 0; the last range runs to EOF), so each rank reads only its own bytes;
 *   numbers  a counting pass (no JSON) gives each range's lines and records; exclusive prefix sums give
 *            every record its global index and line number, so ties, messages and --top-frac's K match;
 *   pass 1   each rank keeps a local top-K heap of (r̂, global index, offset, length) and spills its
 *            (r̂, index) pairs to an unnamed temporary file;
 *   merge    rank 0 gathers the local heaps (MPI_Gatherv of fixed-size items) and pushes them into one
 *            K-heap with the same comparator; any global top-K item is in its rank's local top K;
 *   pass 2   rank 0 re-reads the kept records by offset, exactly as fp_select_run does;
 *   stats    counts are summed; min/max are combined in rank order with the sequential rule; the mean's sum
 *            is carried rank to rank (each rank re-adds its spilled scores in order onto its predecessor's
 *            sum), so it is the same floating-point sum as one sequential scan; histogram bins use the
 *            global [min, max] and the broadcast worst kept item, and are summed on rank 0.
 *
 * Errors: after every step the ranks agree on a status; the lowest failing rank's message (for bad records:
 * the first one in file order, as in a single scan) becomes every rank's fp_last_error.  MPI failures
 * themselves abort (MPI_ERRORS_ARE_FATAL). */
#include "apps/select.h"
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef FP_WITH_MPI
#include <limits.h>
#include <mpi.h>

static int g_rank = 0, g_size = 1, g_owned = 0;

static int launched(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK");
}

int fp_select_mpi_init(int *rank, int *size) {
    if (!g_owned && launched()) {
        int inited = 0;
        MPI_Initialized(&inited);
        if (!inited) {
            int provided;
            if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
                return fp_errorf(FP_EIO, "MPI_Init failed");
            g_owned = 1;
        }
        MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
        MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    }
    *rank = g_rank;
    *size = g_size;
    return FP_OK;
}

void fp_select_mpi_finalize(void) {
    if (g_owned) MPI_Finalize();
    g_owned = 0;
    g_rank = 0;
    g_size = 1;
}

int fp_select_mpi_agree(int rc) {
    if (g_size <= 1) return rc;
    int mine = rc ? g_rank : g_size, first;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (first == g_size) return FP_OK;
    struct {
        int code;
        char msg[2048];
    } e;
    memset(&e, 0, sizeof e);
    if (g_rank == first) {
        e.code = rc;
        snprintf(e.msg, sizeof e.msg, "%s", fp_last_error());
    }
    MPI_Bcast(&e, (int)sizeof e, MPI_BYTE, first, MPI_COMM_WORLD);
    e.msg[sizeof e.msg - 1] = 0;
    return fp_errorf(e.code, "%s", e.msg);
}

int fp_select_mpi_bcast_int(int v) {
    if (g_size > 1) MPI_Bcast(&v, 1, MPI_INT, 0, MPI_COMM_WORLD);
    return v;
}

int fp_select_mpi_max_int(int v) {
    int m = v;
    if (g_size > 1) MPI_Allreduce(&v, &m, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return m;
}

/* The first line start at or after pos (pos itself when pos == 0 or the byte before it is '\n'). */
static int line_start_at(FILE *f, const char *path, uint64_t pos, uint64_t size, int64_t *out) {
    if (pos == 0 || pos >= size) {
        *out = (int64_t)(pos == 0 ? 0 : size);
        return FP_OK;
    }
    if (fseeko(f, (off_t)(pos - 1), SEEK_SET) != 0) return fp_errorf(FP_EIO, "%s: cannot seek: %s", path, strerror(errno));
    int c;
    while ((c = getc(f)) != EOF && c != '\n') {}
    if (ferror(f)) return fp_errorf(FP_EIO, "%s: read error: %s", path, strerror(errno));
    *out = (int64_t)ftello(f);
    return FP_OK;
}

/* What every rank tells the others about its file and its range. */
typedef struct {
    int64_t start, mtime_ns;
    uint64_t size;
    long lines, records;
} range_info;

typedef struct {
    fp_select_part part;
    size_t peak;
} part_info;

#define AGREE()                                  \
    do {                                         \
        if ((rc = fp_select_mpi_agree(rc))) goto done; \
    } while (0)

int fp_select_run_mpi(const fp_select_opts *o, const char *in_path, FILE *out, fp_select_stats *st) {
    if (g_size <= 1) return fp_select_run(o, in_path, out, st);
    const int P = g_size, R = g_rank;
    memset(st, 0, sizeof *st);
    st->min = st->max = st->mean = st->kept_min = st->kept_max = st->kept_mean = st->threshold = NAN;
    int rc = FP_OK;
    FILE *f = NULL, *spill = NULL;
    fp_topk heap = {0}, merged = {0};
    range_info *ri = NULL;
    part_info *pi = NULL;
    fp_topk_item *items = NULL;
    int *counts = NULL, *displs = NULL;
    long *l_all = NULL, *l_kept = NULL;
    MPI_Datatype item_type = MPI_DATATYPE_NULL;

    if (!in_path || !strcmp(in_path, "-"))
        rc = fp_errorf(FP_EINVAL, "select needs a pool file (it is read twice), not stdin");
    else if (o->top_k < 0 || (o->top_k == 0 && !(o->top_frac > 0 && o->top_frac <= 1)))
        rc = fp_errorf(FP_EINVAL, "select: K must be >= 1 or the fraction in (0, 1]");
    else if (!(f = fopen(in_path, "rb")))
        rc = fp_errorf(FP_EIO, "%s: cannot open: %s", in_path, strerror(errno));
    if (!rc) rc = fp_select_file_id(f, in_path, &st->in_size, &st->in_mtime_ns);
    ri = calloc((size_t)P, sizeof *ri);
    pi = calloc((size_t)P, sizeof *pi);
    if (!rc && (!ri || !pi)) rc = fp_errorf(FP_ENOMEM, "out of memory");
    AGREE();

    /* ranges: rank r starts at the first line start at or after r·size/P */
    range_info me = {0, st->in_mtime_ns, st->in_size, 0, 0};
    uint64_t S = st->in_size, nominal = S / (uint64_t)P * (uint64_t)R + S % (uint64_t)P * (uint64_t)R / (uint64_t)P;
    rc = line_start_at(f, in_path, nominal, S, &me.start);
    AGREE();
    MPI_Allgather(&me, (int)sizeof me, MPI_BYTE, ri, (int)sizeof me, MPI_BYTE, MPI_COMM_WORLD);
    for (int r = 0; r < P; r++)
        if (ri[r].size != S || ri[r].mtime_ns != st->in_mtime_ns)
            rc = fp_errorf(FP_ESTATE, "%s: the ranks see different files (size or modification time differs on rank %d)", in_path, r);
    AGREE();
    off_t start = (off_t)me.start, end = R + 1 < P ? (off_t)ri[R + 1].start : -1;

    /* counting pass: global record indices and line numbers for this range, and K for --top-frac */
    rc = fp_select_count_range(f, in_path, start, end, &me.lines, &me.records);
    AGREE();
    MPI_Allgather(&me, (int)sizeof me, MPI_BYTE, ri, (int)sizeof me, MPI_BYTE, MPI_COMM_WORLD);
    long first_index = 0, first_line = 0, total = 0;
    for (int r = 0; r < P; r++) {
        if (r < R) first_index += ri[r].records, first_line += ri[r].lines;
        total += ri[r].records;
    }
    long k = o->top_k ? o->top_k : fp_select_frac_k(o->top_frac, total);
    st->k = k;
    rc = fp_topk_init(&heap, (size_t)k);
    if (!rc && !(spill = tmpfile())) rc = fp_errorf(FP_EIO, "cannot create a temporary file for the scores: %s", strerror(errno));
    AGREE();

    /* pass 1 over this rank's range */
    part_info mine;
    memset(&mine, 0, sizeof mine);
    rc = fp_select_scan_range(o, f, in_path, start, end, first_index, first_line, &heap, spill, &mine.part);
    mine.peak = heap.peak;
    if (!rc) rc = fp_select_check_unchanged(f, in_path, st);
    AGREE();
    MPI_Allgather(&mine, (int)sizeof mine, MPI_BYTE, pi, (int)sizeof mine, MPI_BYTE, MPI_COMM_WORLD);
    for (int r = 0; r < P; r++) { /* in rank order = record order: the sequential rules */
        const fp_select_part *p = &pi[r].part;
        if (p->n_scored) {
            if (st->n_scored == 0 || p->min < st->min) st->min = p->min;
            if (st->n_scored == 0 || p->max > st->max) st->max = p->max;
        }
        st->n_records += p->n_records;
        st->n_scored += p->n_scored;
        st->n_skipped += p->n_skipped;
    }

    /* the sum, carried rank to rank so that it is the sequential one */
    double sum = 0;
    if (R > 0) MPI_Recv(&sum, 1, MPI_DOUBLE, R - 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    if (R == 0) sum = mine.part.sum;
    else rc = fp_select_spill_sum(spill, &sum);
    if (R + 1 < P) MPI_Send(&sum, 1, MPI_DOUBLE, R + 1, 0, MPI_COMM_WORLD);
    MPI_Bcast(&sum, 1, MPI_DOUBLE, P - 1, MPI_COMM_WORLD);
    if (st->n_scored) st->mean = sum / (double)st->n_scored;
    AGREE();

    /* gather the local heaps on rank 0 and merge them */
    MPI_Type_contiguous((int)sizeof(fp_topk_item), MPI_BYTE, &item_type);
    MPI_Type_commit(&item_type);
    int n_mine = heap.size > (size_t)INT_MAX ? -1 : (int)heap.size;
    if (R == 0) {
        counts = calloc((size_t)P, sizeof *counts);
        displs = calloc((size_t)P, sizeof *displs);
        if (!counts || !displs) rc = fp_errorf(FP_ENOMEM, "out of memory");
    }
    if (n_mine < 0) rc = fp_errorf(FP_ERANGE, "select: K is too large for the MPI gather");
    AGREE();
    MPI_Gather(&n_mine, 1, MPI_INT, counts, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (R == 0) {
        long long n_all = 0;
        for (int r = 0; r < P; r++) {
            displs[r] = (int)n_all;
            n_all += counts[r];
            if (n_all > INT_MAX) break;
        }
        if (n_all > INT_MAX) rc = fp_errorf(FP_ERANGE, "select: P x K is too large for the MPI gather");
        else if (n_all && !(items = fp_malloc((size_t)n_all * sizeof *items))) rc = FP_ENOMEM;
        if (!rc) rc = fp_topk_init(&merged, (size_t)k);
    }
    AGREE();
    MPI_Gatherv(heap.items, n_mine, item_type, items, counts, displs, item_type, 0, MPI_COMM_WORLD);
    fp_topk_item worst = {0};
    if (R == 0) {
        long long n_all = (long long)displs[P - 1] + counts[P - 1];
        for (long long i = 0; i < n_all; i++) fp_topk_push(&merged, &items[i]);
        /* pass 2 on rank 0, exactly as in one process */
        rc = fp_select_emit(o, f, in_path, &merged, out, st, &worst);
    }
    AGREE();

    /* histogram: global [min, max], the worst kept item from rank 0, bins summed on rank 0 */
    if (o->bins) {
        struct {
            fp_topk_item worst;
            long n_kept;
        } wk = {worst, st->n_kept};
        MPI_Bcast(&wk, (int)sizeof wk, MPI_BYTE, 0, MPI_COMM_WORLD);
        l_all = fp_calloc(o->bins, sizeof *l_all);
        l_kept = fp_calloc(o->bins, sizeof *l_kept);
        if (!l_all || !l_kept) rc = FP_ENOMEM;
        if (!rc && R == 0) {
            st->bins = o->bins;
            st->hist_lo = st->n_scored ? st->min : 0;
            st->hist_hi = st->n_scored ? st->max : 0;
            st->hist_all = fp_calloc(o->bins, sizeof *st->hist_all);
            st->hist_kept = fp_calloc(o->bins, sizeof *st->hist_kept);
            if (!st->hist_all || !st->hist_kept) rc = FP_ENOMEM;
        }
        if (!rc) rc = fp_select_hist_spill(spill, o->bins, st->min, st->max, wk.n_kept ? &wk.worst : NULL, l_all, l_kept);
        AGREE();
        MPI_Reduce(l_all, st->hist_all, (int)o->bins, MPI_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
        MPI_Reduce(l_kept, st->hist_kept, (int)o->bins, MPI_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    }

done:
    if (item_type != MPI_DATATYPE_NULL) MPI_Type_free(&item_type);
    free(l_all);
    free(l_kept);
    free(items);
    free(counts);
    free(displs);
    free(ri);
    free(pi);
    fp_topk_free(&merged);
    fp_topk_free(&heap);
    if (spill) fclose(spill);
    if (f) fclose(f);
    if (rc) fp_select_stats_free(st);
    return rc;
}

#else /* !FP_WITH_MPI: one process; everything is the single-process path */

int fp_select_mpi_init(int *rank, int *size) {
    *rank = 0;
    *size = 1;
    return FP_OK;
}
void fp_select_mpi_finalize(void) {}
int fp_select_mpi_agree(int rc) { return rc; }
int fp_select_mpi_bcast_int(int v) { return v; }
int fp_select_mpi_max_int(int v) { return v; }
int fp_select_run_mpi(const fp_select_opts *o, const char *in_path, FILE *out, fp_select_stats *st) {
    return fp_select_run(o, in_path, out, st);
}
#endif
