/* fp_attention_forward / fp_attention_forward_ex on every kernel this CPU has (generic-f32 = ref level,
 * avx2-f32, avx512-f32, amx-bf16, avx512-bf16dp; the fast path forced off the bf16 kernels, forced onto the dp
 * kernel, and at the lower levels, where it falls back to
 * the exact kernels), 1 and 2 threads, against fp_attention_forward_ref (double, two-pass softmax) and a
 * local double reference that also gives the error scales below.
 *
 * Tolerances, per output o[i][h][x], with u = 2^-24 and, over the keys j row i sees (p_j its softmax weight):
 *   W    = sum_j p_j |v_jx| / sum_j p_j      (the size of the terms that make up o; |o| <= W),
 *   Smax = max_j sum_x |q_x k_jx| / sqrt(d),   smax = max_j |q.k_j| / sqrt(d).
 *  - exact paths (f32 all the way): each score carries an f32 accumulation error of at most ~sqrt(d) u Smax
 *    for random data (8 sigma of margin: 8 sqrt(d) u Smax; the worst case would be d u Smax); the base-2
 *    exponent t = s log2(e)/sqrt(d) - m log2(e)/sqrt(d) adds a few u (|smax| + 1), the exp polynomial and
 *    scalef a few ulps (4e-7 covers them).  A relative error delta in every weight moves o by at most
 *    2 delta W (numerator and normaliser); P V and the normaliser are summed in f32 in blocks of 64 keys then
 *    across blocks: (128 + T/16) u W.  So
 *        tol_exact = (4 delta + (128 + T/16) u) W,   delta = 8 sqrt(d) u Smax + 4 u (smax + 1) + 4e-7.
 *    For values of magnitude ~1 and d = 64 this is ~3e-5 W (the errors seen are ~100x smaller).
 *  - amx-bf16: Q, K, V are rounded to bf16 (round to nearest even, unit roundoff 2^-8), as in PyTorch bf16
 *    sdpa; against the reference run on the same rounded q~, k~, v~ (products of bf16 values are exact in
 *    f32) the errors are the f32 ones above (scales from q~, k~, v~) plus the rounding of the weights P to
 *    bf16 for P V (the normaliser keeps the f32 weights): |p~ - p| <= 2^-8 p, which moves o by at most
 *    2^-8 W; its exp polynomial is of degree 3 (minimax on [0, 1), < 7.5e-5 relative, so delta takes 8e-5
 *    instead of 4e-7).  Its weights are shifted by a per-row reference
 *    that may lag the running maximum (lazy rescaling, weights up to 2^8): the shift cancels in o like the
 *    maximum's does, and the relative errors above do not depend on it.  P V accumulates over all keys in
 *    f32 in the tile accumulators (not per block of 64): <= T u W, below the 2^-8 W of P for T < 65536
 *    (~sqrt(T) u W in practice).  Bound:
 *        tol_fast = 2^-7 W + tol_exact       (2x margin on the P rounding term).
 *    Against the f32 reference (unrounded inputs) the score error from rounding q and k is at most
 *    ds = 2^-7 Smax (two roundings of 2^-8), the normalised weights move by a factor within e^(+-2 ds), V by
 *    2^-8 and P by 2^-8:
 *        tol_fast_f32 = (expm1(2 ds) + 2^-7) W + tol_exact
 *    (checked too; loose by construction for the large-score cases, where bf16 inputs really do change the
 *    softmax a lot - which is why the tight check is against the rounded-input reference).
 *  - avx512-bf16dp: the same roundings of Q, K, V and P and the same f32 normaliser, so the same two bounds; its
 *    exp polynomial is of degree 5 (< 4e-6 relative, inside the 8e-5 above), and P V is summed per block of 64
 *    keys then across blocks, as in the exact kernel. */
#include "harness.h"
#include "fluxprm.h"
#include "tensor/kernels.h"
#include "tensor/ops.h"
#include "tensor/tensor.h"
#include <omp.h>
#include <stdint.h>

#include "test_rand.h"
#include "tiles_layout.h"
static float bf16r(float x) { return fp_bf16_to_f32(fp_f32_to_bf16(x)); }

/* Double reference with the error scales: o, W per output; Smax, smax per (row, head). */
static void ref_scales(double *o, double *W, double *Smax, double *smax, const float *q, const float *k,
                       const float *v, const int *qpos, const int *kstart, int nq, int T, int nh, int nkv,
                       int d) {
    int group = nh / nkv;
    size_t qs = (size_t)nh * d, kvs = (size_t)nkv * d;
    double scale = 1.0 / sqrt((double)d);
    double *w = malloc(sizeof(double) * T), *acc = malloc(sizeof(double) * d), *aw = malloc(sizeof(double) * d);
    for (int i = 0; i < nq; i++) {
        int p = qpos ? qpos[i] : i, ks = kstart ? kstart[i] : 0;
        for (int h = 0; h < nh; h++) {
            const float *qi = q + (size_t)i * qs + (size_t)h * d;
            double mx = -INFINITY, sum = 0, sa = 0, sm = 0;
            for (int j = ks; j <= p; j++) {
                const float *kj = k + (size_t)j * kvs + (size_t)(h / group) * d;
                double s = 0, a = 0;
                for (int x = 0; x < d; x++) s += (double)qi[x] * kj[x], a += fabs((double)qi[x] * kj[x]);
                w[j] = s * scale;
                if (w[j] > mx) mx = w[j];
                if (a * scale > sa) sa = a * scale;
                if (fabs(w[j]) > sm) sm = fabs(w[j]);
            }
            for (int x = 0; x < d; x++) acc[x] = aw[x] = 0;
            for (int j = ks; j <= p; j++) {
                double e = exp(w[j] - mx);
                sum += e;
                const float *vj = v + (size_t)j * kvs + (size_t)(h / group) * d;
                for (int x = 0; x < d; x++) acc[x] += e * vj[x], aw[x] += e * fabs(vj[x]);
            }
            for (int x = 0; x < d; x++) {
                o[(size_t)i * qs + (size_t)h * d + x] = acc[x] / sum;
                W[(size_t)i * qs + (size_t)h * d + x] = aw[x] / sum;
            }
            Smax[(size_t)i * nh + h] = sa;
            smax[(size_t)i * nh + h] = sm;
        }
    }
    free(w); free(acc); free(aw);
}

typedef struct { int level, exact, amx; } variant; /* amx: the fast argument (FP_ATT_FAST_*) */
static const variant variants[] = {
    {FP_KERN_REF, 1, 0}, {FP_KERN_AVX2, 1, 0}, {FP_KERN_AVX512, 1, 0}, /* exact */
    {FP_KERN_AVX512, 0, FP_ATT_FAST_AUTO}, {FP_KERN_AVX512, 0, FP_ATT_FAST_F32}, {FP_KERN_AVX512, 0, FP_ATT_FAST_DP},
    {FP_KERN_AVX2, 0, FP_ATT_FAST_AUTO}, {FP_KERN_REF, 0, FP_ATT_FAST_AUTO}, /* fast */
};
#define NVAR ((int)(sizeof variants / sizeof variants[0]))

typedef struct {
    const char *name;
    int T, nq, nh, nkv, d;
    float qk_amp; /* q, k uniform in [-qk_amp, qk_amp); < 0: a ramp, q, k in [0, |qk_amp|) and k_j scaled by
                   * 1 + 3 j / T: scores grow along the keys, so the running maximum keeps moving (the amx
                   * kernel's lazy rescaling moves its reference every few blocks) */
    int qmode;    /* 0: all rows (qpos NULL), 1: sorted subset, 2: unsorted subset (repeats allowed), 3: last row */
    int packed;   /* kstart: packed sequences */
} tcase;

static double worst_ratio[NVAR][2]; /* max err/tol seen per variant (exact-style / bf16 check) */

static int run_case(const tcase *c) {
    const int T = c->T, nh = c->nh, nkv = c->nkv, d = c->d;
    int nq = c->qmode == 0 ? T : c->nq;
    size_t qs = (size_t)nh * d, kvs = (size_t)nkv * d, no = (size_t)nq * qs;
    float *q = malloc(sizeof(float) * no), *k = malloc(sizeof(float) * T * kvs), *v = malloc(sizeof(float) * T * kvs);
    float *qr = malloc(sizeof(float) * no), *kr = malloc(sizeof(float) * T * kvs), *vr = malloc(sizeof(float) * T * kvs);
    float *out = malloc(sizeof(float) * no), *oref = malloc(sizeof(float) * no), *first = malloc(sizeof(float) * no);
    double *o = malloc(sizeof(double) * no), *W = malloc(sizeof(double) * no), *ob = malloc(sizeof(double) * no),
           *Wb = malloc(sizeof(double) * no), *Sm = malloc(sizeof(double) * nq * nh), *sm = malloc(sizeof(double) * nq * nh),
           *Smb = malloc(sizeof(double) * nq * nh), *smb = malloc(sizeof(double) * nq * nh);
    int *qpos = NULL, *kst = NULL;
    for (size_t i = 0; i < no; i++) q[i] = frand() * c->qk_amp;
    for (size_t i = 0; i < (size_t)T * kvs; i++) k[i] = frand() * c->qk_amp, v[i] = frand();
    if (c->qk_amp < 0) {
        for (size_t i = 0; i < no; i++) q[i] = fabsf(q[i]);
        for (size_t i = 0; i < (size_t)T * kvs; i++) k[i] = fabsf(k[i]) * (1.0f + 3.0f * (float)(i / kvs) / T);
    }
    if (c->qmode) {
        qpos = malloc(sizeof(int) * nq);
        for (int i = 0; i < nq; i++) {
            if (c->qmode == 1) qpos[i] = (int)((long)i * T / nq + rnd() % (unsigned)(T / nq > 0 ? T / nq : 1));
            else if (c->qmode == 2) qpos[i] = (int)(rnd() % (unsigned)T);
            else qpos[i] = T - 1 - i;
            if (qpos[i] >= T) qpos[i] = T - 1;
        }
        if (c->qmode == 2) qpos[nq / 2] = T - 1, qpos[0] = 0; /* the extremes, out of order */
    }
    if (c->packed) { /* sequences of lengths 1, 63, 64, 65, 2, 200, ... then the rest */
        static const int lens[] = {1, 63, 64, 65, 2, 200, 17, 130};
        kst = malloc(sizeof(int) * nq);
        for (int i = 0; i < nq; i++) {
            int p = qpos ? qpos[i] : i, start = 0, s = 0;
            for (int n = 0; start <= p; n++) {
                s = start;
                start += n < 8 ? lens[n] : T;
            }
            kst[i] = s;
        }
    }
    for (size_t i = 0; i < no; i++) qr[i] = bf16r(q[i]);
    for (size_t i = 0; i < (size_t)T * kvs; i++) kr[i] = bf16r(k[i]), vr[i] = bf16r(v[i]);
    fp_attention_forward_ref(oref, q, k, v, qpos, kst, nq, T, nh, nkv, d);
    ref_scales(o, W, Sm, sm, q, k, v, qpos, kst, nq, T, nh, nkv, d);
    ref_scales(ob, Wb, Smb, smb, qr, kr, vr, qpos, kst, nq, T, nh, nkv, d);
    const double u = 1.0 / 16777216.0;
    for (size_t e = 0; e < no; e++) CHECK_NEAR(oref[e], o[e], 1e-6 * W[e] + 1e-30); /* the two references agree */
    for (int th = 1; th <= 2; th++) {
        omp_set_num_threads(th);
        for (int vi = 0; vi < NVAR; vi++) {
            const variant *va = &variants[vi];
            if (va->level > fp_cpu_max_kernel()) continue;
            const char *name = fp_attention_kernel_name(va->level, va->exact, va->amx, d);
            int bf = !strcmp(name, "amx-bf16") || !strcmp(name, "avx512-bf16dp");
            for (size_t e = 0; e < no; e++) out[e] = NAN;
            CHECK_OK(fp_attention_forward_level(va->level, va->exact, va->amx, out, q, k, v, qpos, kst, nq, T, nh,
                                                nkv, d));
            if (th == 1 && vi == 0) memcpy(first, out, sizeof(float) * no);
            int bad = 0;
            double wr = 0, wr2 = 0;
            for (int i = 0; i < nq; i++)
                for (int h = 0; h < nh; h++) {
                    size_t r = (size_t)i * nh + h;
                    const double *O = bf ? ob : o, *WW = bf ? Wb : W, *S = bf ? Smb : Sm, *s = bf ? smb : sm;
                    double delta = 8 * sqrt((double)d) * u * S[r] + 4 * u * (s[r] + 1) + (bf ? 8e-5 : 4e-7);
                    double ds = ldexp(Sm[r], -7);
                    for (int x = 0; x < d; x++) {
                        size_t e = r * d + x;
                        double tol = (4 * delta + (128 + T / 16.0) * u) * WW[e] + 1e-30;
                        if (bf) tol += ldexp(WW[e], -7);
                        double err = fabs(out[e] - O[e]);
                        if (!(err <= tol)) {
                            if (bad++ < 3)
                                fprintf(stderr, "  %s T=%d nq=%d nh=%d/%d d=%d %s th=%d: row %d head %d x %d: %.9g vs %.9g "
                                        "(err %.3g tol %.3g)\n", c->name, T, nq, nh, nkv, d, name, th, i, h, x, out[e],
                                        O[e], err, tol);
                        }
                        if (err / tol > wr) wr = err / tol;
                        if (bf) { /* loose check against the f32 reference */
                            double tol2 = (expm1(2 * ds) + ldexp(1.0, -7)) * W[e] +
                                          (4 * delta + (128 + T / 16.0) * u) * W[e] + 1e-30;
                            double err2 = fabs(out[e] - o[e]);
                            if (!(err2 <= tol2) && bad++ < 3)
                                fprintf(stderr, "  %s %s th=%d: vs f32 ref row %d head %d x %d: %.9g vs %.9g (tol %.3g)\n",
                                        c->name, name, th, i, h, x, out[e], o[e], tol2);
                            if (err2 / tol2 > wr2) wr2 = err2 / tol2;
                        }
                    }
                }
            CHECK_MSG(bad == 0, "%s %s th=%d: %d outputs out of tolerance", c->name, name, th, bad);
            if (wr > worst_ratio[vi][0]) worst_ratio[vi][0] = wr;
            if (wr2 > worst_ratio[vi][1]) worst_ratio[vi][1] = wr2;
            /* a path run twice (other thread count, or the fast path falling back) gives the same bits */
            if (!bf && !strcmp(name, fp_attention_kernel_name(variants[0].level, 1, 0, d)) && (th > 1 || vi > 0))
                CHECK(!memcmp(out, first, sizeof(float) * no));
        }
    }
    omp_set_num_threads(2);
    free(q); free(k); free(v); free(qr); free(kr); free(vr); free(out); free(oref); free(first);
    free(o); free(W); free(ob); free(Wb); free(Sm); free(sm); free(Smb); free(smb); free(qpos); free(kst);
    return 0;
}

static int run_cases(const tcase *cs, int n) {
    for (int i = 0; i < n; i++) run_case(&cs[i]);
    return 0;
}

/* values of magnitude ~1: every T of interest, the Qwen2.5 0.5B (14/2, d 64) and 1.5B (12/2, d 128) shapes */
static int test_shapes_d64(void) {
    static const int Ts[] = {1, 2, 15, 16, 17, 31, 33, 100, 257, 1000};
    tcase cs[10];
    for (int i = 0; i < 10; i++) cs[i] = (tcase){"d64", Ts[i], 0, 14, 2, 64, 1.0f, 0, 0};
    return run_cases(cs, 10);
}
static int test_shapes_d128(void) {
    static const int Ts[] = {1, 16, 17, 33, 100, 257, 1000};
    tcase cs[7];
    for (int i = 0; i < 7; i++) cs[i] = (tcase){"d128", Ts[i], 0, 12, 2, 128, 1.0f, 0, 0};
    return run_cases(cs, 7);
}
/* other head counts and head dims: d = 40 (not a multiple of 16 or 32: masked tails, no AMX), 96 (3 AMX
 * chunks, a 64 + 32 split in the f32 kernel), 32; MHA (4/4) and MQA (8/1) */
static int test_odd_dims(void) {
    const tcase cs[] = {
        {"d40", 17, 0, 4, 4, 40, 1.0f, 0, 0},  {"d40", 257, 0, 4, 4, 40, 1.0f, 0, 0},
        {"d96", 33, 0, 8, 1, 96, 1.0f, 0, 0},  {"d96", 257, 0, 8, 1, 96, 1.0f, 0, 0},
        {"d32", 100, 0, 8, 1, 32, 1.0f, 0, 0}, {"d8", 31, 0, 4, 2, 8, 1.0f, 0, 0},
        {"d64-mha", 100, 0, 4, 4, 64, 1.0f, 0, 0}, {"d64-mqa", 257, 0, 8, 1, 64, 1.0f, 0, 0},
    };
    return run_cases(cs, (int)(sizeof cs / sizeof cs[0]));
}
/* query subsets (qpos), sorted and unsorted, decode-like single rows, packed sequences (kstart) */
static int test_subsets_packed(void) {
    const tcase cs[] = {
        {"qpos-sorted", 257, 40, 14, 2, 64, 1.0f, 1, 0},  {"qpos-unsorted", 1000, 50, 12, 2, 128, 1.0f, 2, 0},
        {"qpos-unsorted", 300, 77, 8, 1, 40, 1.0f, 2, 0}, {"decode", 1000, 1, 14, 2, 64, 1.0f, 3, 0},
        {"decode3", 257, 3, 12, 2, 128, 1.0f, 3, 0},      {"packed", 300, 0, 14, 2, 64, 1.0f, 0, 1},
        {"packed", 600, 0, 12, 2, 128, 1.0f, 0, 1},       {"packed-qpos", 1000, 70, 14, 2, 64, 1.0f, 2, 1},
        {"packed-d40", 200, 0, 4, 4, 40, 1.0f, 0, 1},
    };
    return run_cases(cs, (int)(sizeof cs / sizeof cs[0]));
}
/* large scores (|q.k|/sqrt(d) up to ~50-60): the running maximum changes a lot, exercising the rescaling;
 * ramps: scores growing along the keys (by ~2 per block of 64 keys at amplitude 2, T = 1000) */
static int test_large_scores(void) {
    const tcase cs[] = {
        {"large", 1000, 0, 14, 2, 64, 7.7f, 0, 0}, {"large", 257, 0, 12, 2, 128, 9.0f, 0, 0},
        {"large-packed", 300, 0, 14, 2, 64, 7.7f, 0, 1},
        {"ramp", 1000, 0, 14, 2, 64, -2.0f, 0, 0},       {"ramp", 600, 0, 12, 2, 128, -2.0f, 0, 0},
        {"ramp-packed", 600, 0, 14, 2, 64, -2.0f, 0, 1}, {"ramp-qpos", 1000, 60, 8, 1, 64, -3.0f, 2, 0},
    };
    return run_cases(cs, (int)(sizeof cs / sizeof cs[0]));
}
static int test_long(void) {
    const tcase cs[] = {{"long", 2048, 0, 7, 1, 64, 1.0f, 0, 0} /* one KV group of the 0.5B shape */};
    return run_cases(cs, 1);
}

/* fp_attention_forward is fp_attention_forward_ex(1, ...) at fp_kernel_level(); names of the kernels. */
static int test_dispatch(void) {
    int T = 70, nh = 4, nkv = 2, d = 64;
    size_t nq = T * (size_t)nh * d, nk = T * (size_t)nkv * d;
    float *q = malloc(sizeof(float) * nq), *k = malloc(sizeof(float) * nk), *v = malloc(sizeof(float) * nk),
          *o1 = malloc(sizeof(float) * nq), *o2 = malloc(sizeof(float) * nq);
    for (size_t i = 0; i < nq; i++) q[i] = frand();
    for (size_t i = 0; i < nk; i++) k[i] = frand(), v[i] = frand();
    CHECK_OK(fp_attention_forward(o1, q, k, v, NULL, NULL, T, T, nh, nkv, d));
    CHECK_OK(fp_attention_forward_ex(1, o2, q, k, v, NULL, NULL, T, T, nh, nkv, d));
    CHECK(!memcmp(o1, o2, sizeof(float) * nq));
    CHECK_OK(fp_attention_forward_level(fp_kernel_level(), 1, 0, o2, q, k, v, NULL, NULL, T, T, nh, nkv, d));
    CHECK(!memcmp(o1, o2, sizeof(float) * nq));
    CHECK(!strcmp(fp_attention_kernel_name(FP_KERN_REF, 0, 1, 64), "generic-f32"));
    const int bf16 = fp_cpu_max_kernel() >= FP_KERN_AVX512 && fp_cpu_has_avx512bf16();
    const char *dp_or_f32 = bf16 && fp_cpu_prefer_bf16_dp() ? "avx512-bf16dp" : "avx512-f32";
    CHECK(!strcmp(fp_attention_kernel_name(FP_KERN_AVX512, 0, 1, 40),
                  fp_cpu_max_kernel() >= FP_KERN_AVX512 ? "avx512-f32" : fp_cpu_max_kernel() ? "avx2-f32" : "generic-f32"));
    if (fp_cpu_max_kernel() >= FP_KERN_AVX512) {
        CHECK(!strcmp(fp_attention_kernel_name(FP_KERN_AVX512, 1, 1, 64), "avx512-f32"));
        CHECK(!strcmp(fp_attention_kernel_name(FP_KERN_AVX512, 0, 1, 64),
                      fp_cpu_has_amx_bf16() && bf16 ? "amx-bf16" : dp_or_f32));
        /* forced: the dp kernel wherever AVX512-BF16 is (d % 32 == 0), never for exact or other d; off: f32 */
        CHECK(!strcmp(fp_attention_kernel_name(FP_KERN_AVX512, 0, FP_ATT_FAST_DP, 64), bf16 ? "avx512-bf16dp" : "avx512-f32"));
        CHECK(!strcmp(fp_attention_kernel_name(FP_KERN_AVX512, 0, FP_ATT_FAST_DP, 96), bf16 ? "avx512-bf16dp" : "avx512-f32"));
        CHECK(!strcmp(fp_attention_kernel_name(FP_KERN_AVX512, 0, FP_ATT_FAST_DP, 40), "avx512-f32"));
        CHECK(!strcmp(fp_attention_kernel_name(FP_KERN_AVX512, 1, FP_ATT_FAST_DP, 64), "avx512-f32"));
        CHECK(!strcmp(fp_attention_kernel_name(FP_KERN_AVX512, 0, FP_ATT_FAST_F32, 64), "avx512-f32"));
    }
    CHECK(!strcmp(fp_attention_kernel_name(FP_KERN_AVX2, 0, FP_ATT_FAST_DP, 64),
                  fp_cpu_max_kernel() >= FP_KERN_AVX2 ? "avx2-f32" : "generic-f32"));
    printf("  level %s: exact -> %s, fast (d=64) -> %s, fast (d=40) -> %s%s\n", fp_kernel_level_name(fp_kernel_level()),
           fp_attention_kernel_name(fp_kernel_level(), 1, 1, 64), fp_attention_kernel_name(fp_kernel_level(), 0, 1, 64),
           fp_attention_kernel_name(fp_kernel_level(), 0, 1, 40), fp_cpu_has_amx_bf16() ? "" : " (no AMX here)");
    /* nq = 0 and nh = 0 are no-ops */
    CHECK_OK(fp_attention_forward_ex(0, o2, q, k, v, NULL, NULL, 0, T, nh, nkv, d));
    free(q); free(k); free(v); free(o1); free(o2);
    return 0;
}

/* A NaN in one value row (key j) reaches every output that sees key j, in that head dimension only; rows
 * before j's block of 64 keys never see it.  (Rows of the same block that do not see j may get the NaN too in
 * the blocked kernels: masked weights are exact zeros and 0 * NaN = NaN; see ops.h.) */
static int test_nan(void) {
    int T = 130, nh = 2, nkv = 1, d = 64, bad_key = 70;
    size_t nq = T * (size_t)nh * d, nk = T * (size_t)nkv * d;
    float *q = malloc(sizeof(float) * nq), *k = malloc(sizeof(float) * nk), *v = malloc(sizeof(float) * nk),
          *o = malloc(sizeof(float) * nq);
    for (size_t i = 0; i < nq; i++) q[i] = frand();
    for (size_t i = 0; i < nk; i++) k[i] = frand(), v[i] = frand();
    v[(size_t)bad_key * nkv * d + 3] = NAN;
    for (int vi = 0; vi < NVAR; vi++) {
        if (variants[vi].level > fp_cpu_max_kernel()) continue;
        CHECK_OK(fp_attention_forward_level(variants[vi].level, variants[vi].exact, variants[vi].amx, o, q, k, v,
                                            NULL, NULL, T, T, nh, nkv, d));
        int wrong = 0;
        for (int i = 0; i < T; i++)
            for (int h = 0; h < nh; h++)
                for (int x = 0; x < d; x++) {
                    int nan = isnan(o[((size_t)i * nh + h) * d + x]) != 0;
                    if (i >= bad_key) wrong += nan != (x == 3);
                    else if (i < bad_key / 64 * 64 || x != 3) wrong += nan;
                }
        CHECK_MSG(wrong == 0, "%s: %d outputs with wrong NaN-ness",
                  fp_attention_kernel_name(variants[vi].level, variants[vi].exact, variants[vi].amx, d), wrong);
    }
    free(q); free(k); free(v); free(o);
    return 0;
}

/* fp_attention_forward_tiles (the fast model's attention -> o_proj hand-off): where the AMX kernel runs, every
 * tile element is fp_f32_to_bf16 of what fp_attention_forward_ex(0, ...) writes for it (the o_proj GEMM rounds
 * f32 input that way), padding rows zero (the buffer starts as all-ones NaN patterns); plain, requested
 * positions (qpos, repeated and unsorted), packed sequences (kstart), d = 64 / 128, GQA and MHA, ragged nq; 1
 * and 2 threads.  Where another kernel runs (d % 32 != 0, the level below avx512) it returns 1 and writes
 * nothing. */
static int test_tiles_out(void) {
    static const int cs[][6] = { /* T, nq (0: all rows), nh, nkv, d, kstart */
        {70, 0, 4, 2, 64, 0}, {300, 0, 14, 2, 64, 1}, {257, 40, 12, 2, 128, 0}, {1000, 5, 8, 8, 64, 0},
        {130, 33, 2, 1, 128, 1}, {64, 0, 2, 2, 32, 0},
    };
    /* the level in use (FLUXPRM_KERNEL may cap it below what the CPU has) */
    int nmax = omp_get_max_threads(), amx = fp_kernel_level() >= FP_KERN_AVX512 && fp_cpu_has_amx_bf16() &&
                                            fp_cpu_has_avx512bf16();
    int ncases = 0;
    for (int nth = 1; nth <= 2; nth++) {
        omp_set_num_threads(nth);
        for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
            int T = cs[c][0], nq = cs[c][1] ? cs[c][1] : T, nh = cs[c][2], nkv = cs[c][3], d = cs[c][4];
            int qd = nh * d;
            float *q = malloc(sizeof(float) * (size_t)nq * qd), *k = malloc(sizeof(float) * (size_t)T * nkv * d),
                  *v = malloc(sizeof(float) * (size_t)T * nkv * d), *o = malloc(sizeof(float) * (size_t)nq * qd);
            int *qpos = NULL, *kst = NULL;
            for (size_t i = 0; i < (size_t)nq * qd; i++) q[i] = frand();
            for (size_t i = 0; i < (size_t)T * nkv * d; i++) k[i] = frand(), v[i] = frand();
            if (cs[c][1]) { /* requested rows: unsorted, one repeated */
                qpos = malloc(sizeof(int) * nq);
                for (int i = 0; i < nq; i++) qpos[i] = (int)((i * 7919L + 13) % T);
                if (nq > 2) qpos[nq - 1] = qpos[0];
            }
            if (cs[c][5]) { /* packed sequences of ~T/3 rows */
                kst = malloc(sizeof(int) * nq);
                for (int i = 0; i < nq; i++) {
                    int p = qpos ? qpos[i] : i;
                    kst[i] = p / (T / 3 + 1) * (T / 3 + 1);
                }
            }
            size_t tb = fp_matmul_tiles_bytes(nq, qd);
            uint16_t *tiles = aligned_alloc(64, (tb + 63) & ~(size_t)63);
            memset(tiles, 0xff, tb);
            int rc = fp_attention_forward_tiles(tiles, q, k, v, qpos, kst, nq, T, nh, nkv, d);
            if (!amx) {
                CHECK(rc == 1);
            } else {
                CHECK(rc == 0);
                CHECK_OK(fp_attention_forward_ex(0, o, q, k, v, qpos, kst, nq, T, nh, nkv, d));
                char label[80];
                snprintf(label, sizeof label, "T=%d nq=%d nh=%d d=%d", T, nq, nh, d);
                int bad = tiles_mismatches(tiles, o, nq, qd, label);
                CHECK_MSG(bad == 0, "T=%d nq=%d nh=%d nkv=%d d=%d, %d thread(s): %d tile elements differ", T, nq, nh,
                          nkv, d, nth, bad);
            }
            ncases++;
            free(q); free(k); free(v); free(o); free(qpos); free(kst); free(tiles);
        }
    }
    omp_set_num_threads(nmax);
    /* not handled: d % 32 != 0, or forced below avx512 (the f32 kernels) */
    {
        int T = 40, nh = 2, d = 40;
        float *q = calloc((size_t)T * nh * d, sizeof(float)), *k = calloc((size_t)T * d, sizeof(float));
        uint16_t *tiles = aligned_alloc(64, fp_matmul_tiles_bytes(T, 64 * nh));
        CHECK(fp_attention_forward_tiles(tiles, q, k, k, NULL, NULL, T, T, nh, 1, d) == 1);
        fp_kernel_force(FP_KERN_AVX2);
        CHECK(fp_attention_forward_tiles(tiles, q, k, k, NULL, NULL, T, T, 1, 1, 64) == 1);
        fp_kernel_force(-1);
        free(q); free(k); free(tiles);
    }
    printf("  %d cases%s\n", ncases, amx ? "" : " (no AMX here: not handled, checked)");
    return 0;
}

/* The amx kernel's grouped tasks (all query heads of a KV head over key chunks; the default wherever a KV head
 * has 2+ query heads) against per-head tasks: the same bits, f32 rows and bf16 tiles, for chunks of one block
 * up to longer than T, subgroups (32 heads on one KV head: tasks of at most 16), query subsets, packed
 * sequences, and scores that move the rows' reference maximum within and across chunks. */
static int test_grouped(void) {
    int amx = fp_kernel_level() >= FP_KERN_AVX512 && fp_cpu_has_amx_bf16() && fp_cpu_has_avx512bf16();
    if (!amx) return TH_SKIP; /* no AMX here (or FLUXPRM_KERNEL caps the level): the f32 kernels have no grouped tasks */
    static const struct { int T, nq, nh, nkv, d, packed; float amp; } cs[] = {
        {2100, 0, 14, 2, 64, 0, 1.0f},  {1000, 50, 12, 2, 128, 1, 1.0f}, {700, 0, 32, 1, 64, 0, 1.0f},
        {1, 0, 8, 1, 64, 0, 1.0f},      {257, 3, 14, 2, 64, 0, 1.0f},    {1500, 0, 14, 2, 64, 0, -2.0f},
        {600, 0, 12, 2, 128, 1, 7.7f},  {300, 0, 6, 3, 96, 0, 1.0f},
    };
    static const int chunks[] = {64, 200, 1024, 100000, 0};
    int nmax = omp_get_max_threads(), ncmp = 0;
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        int T = cs[c].T, nq = cs[c].nq ? cs[c].nq : T, nh = cs[c].nh, nkv = cs[c].nkv, d = cs[c].d;
        size_t no = (size_t)nq * nh * d, nk = (size_t)T * nkv * d, tb = fp_matmul_tiles_bytes(nq, nh * d);
        float *q = malloc(sizeof(float) * no), *k = malloc(sizeof(float) * nk), *v = malloc(sizeof(float) * nk);
        float *o1 = malloc(sizeof(float) * no), *o2 = malloc(sizeof(float) * no);
        uint16_t *t1 = aligned_alloc(64, (tb + 63) & ~(size_t)63), *t2 = aligned_alloc(64, (tb + 63) & ~(size_t)63);
        int *qpos = NULL, *kst = NULL;
        float amp = fabsf(cs[c].amp);
        for (size_t i = 0; i < no; i++) q[i] = frand() * amp;
        for (size_t i = 0; i < nk; i++) k[i] = frand() * amp, v[i] = frand();
        if (cs[c].amp < 0) { /* a ramp: scores grow along the keys, the reference maximum keeps moving */
            for (size_t i = 0; i < no; i++) q[i] = fabsf(q[i]);
            for (size_t i = 0; i < nk; i++) k[i] = fabsf(k[i]) * (1.0f + 3.0f * (float)(i / ((size_t)nkv * d)) / T);
        }
        if (cs[c].nq) { /* the last rows, unsorted, one repeated */
            qpos = malloc(sizeof(int) * nq);
            for (int i = 0; i < nq; i++) qpos[i] = T - 1 - (int)((i * 7919L) % (T < 97 ? T : 97));
            if (nq > 2) qpos[nq - 1] = qpos[0];
        }
        if (cs[c].packed) {
            kst = malloc(sizeof(int) * nq);
            for (int i = 0; i < nq; i++) {
                int p = qpos ? qpos[i] : i;
                kst[i] = p / (T / 3 + 1) * (T / 3 + 1);
            }
        }
        for (int nth = 1; nth <= 2; nth++) {
            omp_set_num_threads(nth);
            int old = fp_attention_amx_group(-1); /* per-head tasks */
            memset(t1, 0xff, tb);
            CHECK_OK(fp_attention_forward_ex(0, o1, q, k, v, qpos, kst, nq, T, nh, nkv, d));
            CHECK(fp_attention_forward_tiles(t1, q, k, v, qpos, kst, nq, T, nh, nkv, d) == 0);
            for (size_t j = 0; j < sizeof chunks / sizeof chunks[0]; j++) {
                fp_attention_amx_group(chunks[j]);
                for (size_t i = 0; i < no; i++) o2[i] = NAN;
                memset(t2, 0xff, tb);
                CHECK_OK(fp_attention_forward_ex(0, o2, q, k, v, qpos, kst, nq, T, nh, nkv, d));
                CHECK(fp_attention_forward_tiles(t2, q, k, v, qpos, kst, nq, T, nh, nkv, d) == 0);
                size_t bad = 0;
                for (size_t i = 0; i < no; i++) bad += memcmp(&o1[i], &o2[i], sizeof(float)) != 0;
                CHECK_MSG(bad == 0 && !memcmp(t1, t2, tb),
                          "T=%d nq=%d nh=%d/%d d=%d chunk %d, %d thread(s): %zu of %zu outputs differ%s", T, nq, nh,
                          nkv, d, chunks[j], nth, bad, no, memcmp(t1, t2, tb) ? ", tiles differ" : "");
                ncmp++;
            }
            fp_attention_amx_group(old);
        }
        omp_set_num_threads(nmax);
        free(q); free(k); free(v); free(o1); free(o2); free(t1); free(t2); free(qpos); free(kst);
    }
    printf("  %d comparisons\n", ncmp);
    return 0;
}

int main(void) {
    RUN(test_dispatch);
    RUN(test_shapes_d64);
    RUN(test_shapes_d128);
    RUN(test_odd_dims);
    RUN(test_subsets_packed);
    RUN(test_large_scores);
    RUN(test_long);
    RUN(test_nan);
    RUN(test_tiles_out);
    RUN(test_grouped);
    for (int vi = 0; vi < NVAR; vi++) {
        if (variants[vi].level > fp_cpu_max_kernel()) continue;
        printf("  %-11s (level %s, %s): max err/tol %.3g", fp_attention_kernel_name(variants[vi].level, variants[vi].exact,
               variants[vi].amx, 64), fp_kernel_level_name(variants[vi].level),
               variants[vi].exact                         ? "exact"
               : variants[vi].amx == FP_ATT_FAST_AUTO     ? "fast"
               : variants[vi].amx == FP_ATT_FAST_DP       ? "fast, dp forced"
                                                          : "fast, bf16 kernels off",
               worst_ratio[vi][0]);
        if (worst_ratio[vi][1] > 0) printf(", vs the f32 reference %.3g", worst_ratio[vi][1]);
        printf("\n");
    }
    return th_finish();
}
