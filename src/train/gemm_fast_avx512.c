/* Blocked, packed AVX-512 f32 GEMM for the training ops (see gemm_fast.h), and the linear / attention ops built
 * on it.  Built with the AVX-512 flags (the Makefile's *_avx512.o rule); only called at the avx512 level.
 *
 * Kernel: B is packed per job into a panel of NR = 64 columns x KC rows ([KC][64] f32, zero padded; 64 KiB,
 * on the stack), then an MR = 6 row x 64 column micro-kernel (24 zmm accumulators, 4 panel loads and 6
 * broadcasts per k) walks the rows of the job.  Jobs = (64-column panel) x (block of up to MC rows), scheduled
 * dynamically over the OpenMP threads; every job owns its block of C, so there are no races and no reductions.
 * Ragged edges: the panel is zero padded, C is read and written with masks. */
#include "train/gemm_fast.h"
#include "train/train.h"
#include <immintrin.h>
#include <math.h>
#include <string.h>

#define MR 6
#define NR 64
#define KC 256
#define MC 384                 /* rows per job (multiple of MR) */
#define FPT_FAST_PAR_MIN 1048576L /* flops below which the GEMM stays on one thread */


/* panel[kk][c] = B(k0+kk, n0+c) for kk < kc, c < 64; zero for columns >= nvalid. */
static void pack_b(float *restrict panel, const fpt_gemm_args *g, int k0, int kc, int n0, int nvalid) {
    const float *B = g->B;
    if (g->b_c == 1) {
        for (int kk = 0; kk < kc; kk++) {
            const float *src = B + (ptrdiff_t)(k0 + kk) * g->b_k + n0;
            float *dst = panel + (size_t)kk * NR;
            if (nvalid == NR) {
                for (int j = 0; j < NR; j += 16) _mm512_store_ps(dst + j, _mm512_loadu_ps(src + j));
            } else {
                for (int j = 0; j < NR; j += 16) {
                    int left = nvalid - j;
                    __mmask16 m = left >= 16 ? 0xFFFF : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
                    _mm512_store_ps(dst + j, _mm512_maskz_loadu_ps(m, src + j));
                }
            }
        }
    } else if (g->b_k == 1) {
        /* transposed source: column c of the panel is a contiguous run of B */
        if (nvalid < NR) memset(panel, 0, sizeof(float) * (size_t)kc * NR);
        for (int c = 0; c < nvalid; c++) {
            const float *src = B + (ptrdiff_t)(n0 + c) * g->b_c + k0;
            for (int kk = 0; kk < kc; kk++) panel[(size_t)kk * NR + c] = src[kk];
        }
    } else {
        for (int kk = 0; kk < kc; kk++)
            for (int c = 0; c < NR; c++)
                panel[(size_t)kk * NR + c] =
                    c < nvalid ? B[(ptrdiff_t)(k0 + kk) * g->b_k + (ptrdiff_t)(n0 + c) * g->b_c] : 0.0f;
    }
}

/* C[mr rows, 64 cols (masked)] = (load_c ? C : bias or 0) + alpha * A[mr, kc] panel[kc, 64].  Always computes
 * MR rows (rows >= mr re-read row 0 and are not stored) so that the 24 accumulators stay in registers. */
static void ukernel(int mr, const float *A, ptrdiff_t a_r, ptrdiff_t a_k, const float *panel, int kc, float *C,
                    ptrdiff_t ldc, const __mmask16 *msk, int load_c, const float *bias, float alpha) {
    const float *ar[MR];
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) ar[r] = A + (r < mr ? r : 0) * a_r;
    __m512 acc[MR][4];
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) acc[r][j] = _mm512_setzero_ps();
    ptrdiff_t off = 0;
    for (int kk = 0; kk < kc; kk++, off += a_k) {
        const float *p = panel + (size_t)kk * NR;
        __m512 b0 = _mm512_load_ps(p), b1 = _mm512_load_ps(p + 16), b2 = _mm512_load_ps(p + 32),
               b3 = _mm512_load_ps(p + 48);
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++) {
            __m512 av = _mm512_set1_ps(ar[r][off]);
            acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
            acc[r][2] = _mm512_fmadd_ps(av, b2, acc[r][2]);
            acc[r][3] = _mm512_fmadd_ps(av, b3, acc[r][3]);
        }
    }
    __m512 al = _mm512_set1_ps(alpha);
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) {
        if (r >= mr) break;
        float *c = C + r * ldc;
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            if (!msk[j]) continue;
            __m512 base = load_c ? _mm512_maskz_loadu_ps(msk[j], c + 16 * j)
                          : bias ? _mm512_maskz_loadu_ps(msk[j], bias + 16 * j) : _mm512_setzero_ps();
            __m512 v = alpha == 1.0f ? _mm512_add_ps(base, acc[r][j]) : _mm512_fmadd_ps(al, acc[r][j], base);
            _mm512_mask_storeu_ps(c + 16 * j, msk[j], v);
        }
    }
}

/* One job: rows [i0, i1) x columns [n0, n0+64) of C, all of K. */
static void gemm_job(const fpt_gemm_args *g, int i0, int i1, int n0, float *panel) {
    int nvalid = g->N - n0 < NR ? g->N - n0 : NR;
    __mmask16 msk[4];
    for (int j = 0; j < 4; j++) {
        int left = nvalid - 16 * j;
        msk[j] = left >= 16 ? 0xFFFF : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
    }
    const float *bias = g->bias && !g->accumulate ? g->bias + n0 : NULL;
    if (g->K <= 0) { /* C = bias or 0 (or unchanged when accumulating) */
        if (g->accumulate) return;
        for (int i = i0; i < i1; i++)
            for (int j = 0; j < 4; j++)
                if (msk[j])
                    _mm512_mask_storeu_ps(g->C + i * g->ldc + n0 + 16 * j, msk[j],
                                          bias ? _mm512_maskz_loadu_ps(msk[j], bias + 16 * j) : _mm512_setzero_ps());
        return;
    }
    for (int k0 = 0; k0 < g->K; k0 += KC) {
        int kc = g->K - k0 < KC ? g->K - k0 : KC;
        pack_b(panel, g, k0, kc, n0, nvalid);
        int load_c = g->accumulate || k0 > 0;
        const float *bb = k0 == 0 ? bias : NULL;
        for (int i = i0; i < i1; i += MR) {
            const float *A = g->A + i * g->a_r + (ptrdiff_t)k0 * g->a_k;
            float *C = g->C + i * g->ldc + n0;
            ukernel(i1 - i < MR ? i1 - i : MR, A, g->a_r, g->a_k, panel, kc, C, g->ldc, msk, load_c, bb, g->alpha);
        }
    }
}

void fpt_gemm_avx512_st(const fpt_gemm_args *g) {
    if (g->M <= 0 || g->N <= 0) return;
    _Alignas(64) float panel[KC * NR];
    for (int i0 = 0; i0 < g->M; i0 += MC)
        for (int n0 = 0; n0 < g->N; n0 += NR) gemm_job(g, i0, i0 + MC < g->M ? i0 + MC : g->M, n0, panel);
}

void fpt_gemm_avx512(const fpt_gemm_args *g) {
    if (g->M <= 0 || g->N <= 0) return;
    int npan = (g->N + NR - 1) / NR;
    /* row blocks: at most MC rows, and enough jobs to keep the threads busy */
    int mc = MC;
    while (mc > 4 * MR && (long)npan * ((g->M + mc - 1) / mc) < 16) mc = (mc / 2 + MR - 1) / MR * MR;
    int nrb = (g->M + mc - 1) / mc;
    long njobs = (long)npan * nrb;
    long work = 2L * g->M * g->N * (g->K > 0 ? g->K : 1);
#pragma omp parallel if (work > FPT_FAST_PAR_MIN && njobs > 1)
    {
        _Alignas(64) float panel[KC * NR];
#pragma omp for schedule(dynamic, 1)
        for (long j = 0; j < njobs; j++) {
            int rb = (int)(j / npan), pn = (int)(j % npan);
            int i0 = rb * mc, i1 = i0 + mc < g->M ? i0 + mc : g->M;
            gemm_job(g, i0, i1, pn * NR, panel);
        }
    }
}

/* ---------------------------------------------------------------- linear */

void fpt_linear_forward_fast(float *out, const float *inp, const float *w, const float *b, int T, int K, int N) {
    // out[T,N] = inp[T,K] @ w[N,K]^T + b: B(k, n) = w[n*K + k]
    fpt_gemm_args g = {.A = inp, .a_r = K, .a_k = 1, .B = w, .b_k = 1, .b_c = K, .C = out, .ldc = N, .bias = b,
                       .M = T, .N = N, .K = K, .accumulate = 0, .alpha = 1.0f};
    fpt_gemm_avx512(&g);
}

void fpt_linear_backward_fast(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                              const float *w, int T, int K, int N) {
    if (dinp) { // dinp[T,K] += dout[T,N] @ w[N,K]
        fpt_gemm_args g = {.A = dout, .a_r = N, .a_k = 1, .B = w, .b_k = K, .b_c = 1, .C = dinp, .ldc = K,
                           .M = T, .N = K, .K = N, .accumulate = 1, .alpha = 1.0f};
        fpt_gemm_avx512(&g);
    }
    if (dw) { // dw[N,K] += dout^T[N,T] @ inp[T,K]: A(n, t) = dout[t*N + n]
        fpt_gemm_args g = {.A = dout, .a_r = 1, .a_k = N, .B = inp, .b_k = K, .b_c = 1, .C = dw, .ldc = K,
                           .M = N, .N = K, .K = T, .accumulate = 1, .alpha = 1.0f};
        fpt_gemm_avx512(&g);
    }
    if (db) { // db[N] += column sums of dout (t in order, like the plain loops)
        for (int n0 = 0; n0 < N; n0 += 16) {
            int left = N - n0;
            __mmask16 m = left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1);
            __m512 s = _mm512_setzero_ps();
            for (int t = 0; t < T; t++) s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(m, dout + (size_t)t * N + n0));
            _mm512_mask_storeu_ps(db + n0, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, db + n0), s));
        }
    }
}

/* ---------------------------------------------------------------- causal GQA attention */

#define AB 64 /* rows (queries) per attention job; the backward's key blocks use the same boundaries */

void fpt_attention_forward_fast(float *out, float *att, const float *q, const float *k, const float *v,
                                int T, int NH, int NKV, int D) {
    // per (head h, query block [t0,t1)): S = scale q k^T over keys s < t1; causal softmax; out = P v
    int group = NH / NKV, nb = (T + AB - 1) / AB;
    ptrdiff_t QD = (ptrdiff_t)NH * D, KD = (ptrdiff_t)NKV * D;
    float scale = 1.0f / sqrtf((float)D);
    long work = (long)NH * T * T * D;
#pragma omp parallel for schedule(dynamic, 1) if (work > 262144L)
    for (long j = 0; j < (long)NH * nb; j++) {
        int h = (int)(j % NH), b = nb - 1 - (int)(j / NH); /* big blocks first */
        int g = h / group, t0 = b * AB, t1 = t0 + AB < T ? t0 + AB : T;
        float *S = att + ((size_t)h * T + t0) * T;
        fpt_gemm_args s = {.A = q + t0 * QD + (ptrdiff_t)h * D, .a_r = QD, .a_k = 1, .B = k + (ptrdiff_t)g * D,
                           .b_k = 1, .b_c = KD, .C = S, .ldc = T, .M = t1 - t0, .N = t1, .K = D, .alpha = scale};
        fpt_gemm_avx512_st(&s);
        for (int t = t0; t < t1; t++) {
            float *row = att + ((size_t)h * T + t) * T;
            float mx = -INFINITY;
            for (int i = 0; i <= t; i++) if (row[i] > mx) mx = row[i];
            float sum = 0.0f;
            for (int i = 0; i <= t; i++) {
                row[i] = expf(row[i] - mx);
                sum += row[i];
            }
            float inv = 1.0f / sum;
            for (int i = 0; i <= t; i++) row[i] *= inv;
            for (int i = t + 1; i < T; i++) row[i] = 0.0f;
        }
        fpt_gemm_args o = {.A = S, .a_r = T, .a_k = 1, .B = v + (ptrdiff_t)g * D, .b_k = KD, .b_c = 1,
                           .C = out + t0 * QD + (ptrdiff_t)h * D, .ldc = QD, .M = t1 - t0, .N = D, .K = t1,
                           .alpha = 1.0f};
        fpt_gemm_avx512_st(&o);
    }
}

void fpt_attention_backward_fast(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                                 const float *att, const float *q, const float *k, const float *v,
                                 int T, int NH, int NKV, int D) {
    // pass 1, per (h, query block): dP = dy v^T; dS = scale * P * (dP - rowsum(P*dP)) into scratch (zero above
    //   the diagonal inside the block); dq += dS k.
    // pass 2, per (kv head g, key block [s0,s1)): dk += sum_h dS[t>=s0, s]^T q_t; dv += sum_h P[t>=s0, s]^T dy_t.
    int group = NH / NKV, nb = (T + AB - 1) / AB;
    ptrdiff_t QD = (ptrdiff_t)NH * D, KD = (ptrdiff_t)NKV * D;
    float scale = 1.0f / sqrtf((float)D);
    long work = (long)NH * T * T * D;
#pragma omp parallel for schedule(dynamic, 1) if (work > 262144L)
    for (long j = 0; j < (long)NH * nb; j++) {
        int h = (int)(j % NH), b = nb - 1 - (int)(j / NH);
        int g = h / group, t0 = b * AB, t1 = t0 + AB < T ? t0 + AB : T;
        float *dS = scratch + ((size_t)h * T + t0) * T;
        fpt_gemm_args s = {.A = dout + t0 * QD + (ptrdiff_t)h * D, .a_r = QD, .a_k = 1, .B = v + (ptrdiff_t)g * D,
                           .b_k = 1, .b_c = KD, .C = dS, .ldc = T, .M = t1 - t0, .N = t1, .K = D, .alpha = 1.0f};
        fpt_gemm_avx512_st(&s);
        for (int t = t0; t < t1; t++) {
            const float *P = att + ((size_t)h * T + t) * T;
            float *d = scratch + ((size_t)h * T + t) * T;
            float dot = 0.0f;
            for (int i = 0; i <= t; i++) dot += P[i] * d[i];
            for (int i = 0; i <= t; i++) d[i] = scale * P[i] * (d[i] - dot);
            for (int i = t + 1; i < t1; i++) d[i] = 0.0f;
        }
        if (dq) {
            fpt_gemm_args o = {.A = dS, .a_r = T, .a_k = 1, .B = k + (ptrdiff_t)g * D, .b_k = KD, .b_c = 1,
                               .C = dq + t0 * QD + (ptrdiff_t)h * D, .ldc = QD, .M = t1 - t0, .N = D, .K = t1,
                               .accumulate = 1, .alpha = 1.0f};
            fpt_gemm_avx512_st(&o);
        }
    }
    if (!dk && !dv) return;
#pragma omp parallel for schedule(dynamic, 1) if (work > 262144L)
    for (long j = 0; j < (long)NKV * nb; j++) {
        int g = (int)(j % NKV), b = (int)(j / NKV); /* early key blocks have the most queries: first */
        int s0 = b * AB, s1 = s0 + AB < T ? s0 + AB : T;
        for (int h = g * group; h < (g + 1) * group; h++) {
            if (dk) {
                fpt_gemm_args o = {.A = scratch + ((size_t)h * T + s0) * T + s0, .a_r = 1, .a_k = T,
                                   .B = q + s0 * QD + (ptrdiff_t)h * D, .b_k = QD, .b_c = 1,
                                   .C = dk + s0 * KD + (ptrdiff_t)g * D, .ldc = KD, .M = s1 - s0, .N = D,
                                   .K = T - s0, .accumulate = 1, .alpha = 1.0f};
                fpt_gemm_avx512_st(&o);
            }
            if (dv) {
                fpt_gemm_args o = {.A = att + ((size_t)h * T + s0) * T + s0, .a_r = 1, .a_k = T,
                                   .B = dout + s0 * QD + (ptrdiff_t)h * D, .b_k = QD, .b_c = 1,
                                   .C = dv + s0 * KD + (ptrdiff_t)g * D, .ldc = KD, .M = s1 - s0, .N = D,
                                   .K = T - s0, .accumulate = 1, .alpha = 1.0f};
                fpt_gemm_avx512_st(&o);
            }
        }
    }
}
