/* AVX-512 (and AMX) GEMM kernels for fp_matmul_forward: out[T,N] = inp[T,K] @ W[N,K]^T (+ bias).
 * Compiled with -mavx512{f,bw,vl,dq,bf16,vnni} (see the Makefile); the AMX job carries its own
 * target("amx-tile,amx-bf16") attribute.  Only called after cpu.c has checked the CPU (and, for AMX, got
 * the OS permission).  Four kernels share one scheme:
 *   - activations are converted once per call into the calling thread's scratch (bf16 pairs for the
 *     vdpbf16ps kernel, bf16 1 KiB tiles for AMX, int8 blocks of 32 with a scale for VNNI; the f32 kernel
 *     reads inp directly);
 *   - work is split into jobs = (panel of NR weight rows) x (block of T rows), run by OpenMP;
 *   - a job walks K in chunks of KC: it packs the chunk of its NR weight rows into a small per-thread
 *     panel (transposed so that one vector or tile load gives 16 output columns), then runs an MR x NR
 *     micro-kernel over its T rows, adding into out (the first chunk adds the bias instead).
 * Kernels:
 *   T <= 4 rows, any dtype -> GEMV-style f32 FMA straight from the weight rows (no packing, no scratch)
 *   BF16, Q8_0, Q4_0 with AMX -> tdpbf16ps, 32 x 32 per 4 C tiles, jobs of up to 512 columns whose panel
 *                                (<= 768 KiB) is packed as 1 KiB tiles [16 pairs][16 cols] (Q weights
 *                                dequantised to bf16 while packing); see amx_plan
 *   BF16 (AMD, no AMX)  -> vdpbf16ps, tile 6 x 64, panel [KC/2 pairs][64 cols][2 bf16]
 *   F32/F16 (and BF16/Q without the above) -> f32 FMA, tile 6 x 64, panel [KC][64] f32
 *   Q8_0 / Q4_0 (VNNI, no AMX) -> vpdpbusd, tile 6 x 32, per block of 32 k: [8 quads][32 cols][4 u8] + 32 scales
 * plus fp_matmul_avx512_swiglu: the AMX kernel for silu(x Wg^T) * (x Wu^T) with gate and up tiles side by
 * side in the panel and SwiGLU applied to the C tiles (amx_swiglu_job), and fp_matmul_avx512_swiglu_pair: the
 * same for the other three kernels, each job running its gate and up columns into per-thread blocks with the
 * SwiGLU as epilogue (swiglu_pair_store).
 */
#include "tensor/kernels.h"
#include "tensor/ops.h"
#include "tensor/swiglu16.h"
#include "tensor/swiglu16_fast.h"
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))
#define MIN(a, b) ((a) < (b) ? (a) : (b))

static size_t round64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Splits T into tb blocks (multiples of mr rows) so that there are enough jobs for nth threads and, when
 * mc > 0, no block has more than about mc rows (jobs are ordered block-major, so the threads sweep the
 * panels of one block of activations while it is in cache; each block re-packs the weights). */
static int t_blocks(int T, int npanels, int mr, int nth, int mc) {
    int tb = 1;
    while (npanels * tb < 4 * nth && T / (tb * 2) >= 4 * mr) tb *= 2;
    if (mc > 0 && (T + tb - 1) / tb > mc) tb = (T + mc - 1) / mc;
    return tb;
}
/* Rows per activation block of the f32 FMA and VNNI kernels (t_blocks' mc): their f32 / int8 rows would be
 * re-streamed per panel otherwise. */
#define ACT_BLOCK_ROWS 256
static void t_range(int T, int tb, int mr, int j, int *t0, int *t1) {
    int rows = (T + tb - 1) / tb;
    rows = (rows + mr - 1) / mr * mr;
    *t0 = MIN(T, j * rows);
    *t1 = MIN(T, *t0 + rows);
}

static __mmask16 col_mask(int nvalid, int v) {
    int c = nvalid - 16 * v;
    if (c <= 0) return 0;
    if (c >= 16) return 0xffff;
    return (__mmask16)((1u << c) - 1);
}

/* In-place transpose of 16 vectors of 16 dwords: r[i] lane j becomes r[j] lane i. */
AI void transpose16(__m512i r[16]) {
    __m512i t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    /* u[4g+e]: 128-bit lane L holds rows 4g..4g+3 at column 4L+e */
    for (int g = 0; g < 4; g++) {
        u[4 * g + 0] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
        u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
    }
    for (int e = 0; e < 4; e++) {
        __m512i x0 = _mm512_shuffle_i32x4(u[e], u[4 + e], 0x44);
        __m512i x1 = _mm512_shuffle_i32x4(u[e], u[4 + e], 0xee);
        __m512i x2 = _mm512_shuffle_i32x4(u[8 + e], u[12 + e], 0x44);
        __m512i x3 = _mm512_shuffle_i32x4(u[8 + e], u[12 + e], 0xee);
        r[0 + e] = _mm512_shuffle_i32x4(x0, x2, 0x88);
        r[4 + e] = _mm512_shuffle_i32x4(x0, x2, 0xdd);
        r[8 + e] = _mm512_shuffle_i32x4(x1, x3, 0x88);
        r[12 + e] = _mm512_shuffle_i32x4(x1, x3, 0xdd);
    }
}

static float h2f(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* 16 elements of row `row` (dtype wt, K elements) from k (a multiple of 16), zero past K. */
AI __m512 load16_f32(const void *w, fp_dtype wt, size_t row_bytes, int row, int K, int k) {
    const uint8_t *r = (const uint8_t *)w + (size_t)row * row_bytes;
    int rem = K - k;
    __mmask16 m = rem >= 16 ? 0xffff : rem <= 0 ? 0 : (__mmask16)((1u << rem) - 1);
    switch (wt) {
    case FP_F32: return _mm512_maskz_loadu_ps(m, (const float *)r + k);
    case FP_F16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)r + k));
    case FP_BF16:
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, (const uint16_t *)r + k)), 16));
    case FP_Q8_0: { /* K % 32 == 0 here */
        const uint8_t *b = r + (size_t)(k / 32) * 34;
        __m512 q = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 2 + (k & 16)))));
        return _mm512_mul_ps(q, _mm512_set1_ps(h2f(b)));
    }
    case FP_Q4_0: {
        const uint8_t *b = r + (size_t)(k / 32) * 18;
        __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b + 2)));
        q = (k & 16) ? _mm512_srli_epi32(q, 4) : _mm512_and_si512(q, _mm512_set1_epi32(15));
        q = _mm512_sub_epi32(q, _mm512_set1_epi32(8));
        return _mm512_mul_ps(_mm512_cvtepi32_ps(q), _mm512_set1_ps(h2f(b)));
    }
    }
    return _mm512_setzero_ps();
}

/* ================================================================ BF16 x BF16 (vdpbf16ps) */
#define BF_MR 6
#define BF_NR 64
#define BF_KC 256 /* elements of k per chunk (128 pairs): panel = 128 * 64 * 4 B = 32 KiB */

/* Activations f32 [T][K] -> bf16 [T][Kp] (Kp = K rounded up to even; pad is 0), round to nearest even. */
static void act_to_bf16(uint16_t *dst, const float *inp, int T, int K, int Kp) {
#pragma omp for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *x = inp + (size_t)t * K;
        uint16_t *y = dst + (size_t)t * Kp;
        int k = 0;
        for (; k + 32 <= K; k += 32) {
            __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + k + 16), _mm512_loadu_ps(x + k));
            _mm512_storeu_si512(y + k, (__m512i)v);
        }
        if (k < Kp) {
            int rem = K - k; /* 0..31 */
            __mmask16 m0 = (__mmask16)(rem >= 16 ? 0xffff : (1u << rem) - 1);
            __mmask16 m1 = (__mmask16)(rem <= 16 ? 0 : (1u << (rem - 16)) - 1);
            __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, x + k + 16), _mm512_maskz_loadu_ps(m0, x + k));
            int n = Kp - k;
            _mm512_mask_storeu_epi16(y + k, (__mmask32)(n >= 32 ? 0xffffffffu : (1u << n) - 1), (__m512i)v);
        }
    }
}

/* 32 elements of row `row` from k as bf16 (zero past K): BF16 weights as stored; Q8_0/Q4_0 dequantised
 * (d*q exact in f32) then rounded to nearest even bf16 (K % 32 == 0 and k % 32 == 0 for those). */
AI __m512i load32_bf16(const void *w, fp_dtype wt, size_t row_bytes, int row, int K, int k) {
    if (wt == FP_BF16) {
        int rem = K - k;
        __mmask32 m = rem >= 32 ? 0xffffffffu : rem <= 0 ? 0 : (__mmask32)((1u << rem) - 1);
        return _mm512_maskz_loadu_epi16(m, (const uint8_t *)w + (size_t)row * row_bytes + 2 * (size_t)k);
    }
    if (wt == FP_Q8_0) { /* one whole block (k % 32 == 0, K % 32 == 0): its scale converted once */
        if (k >= K) return _mm512_setzero_si512();
        const uint8_t *b = (const uint8_t *)w + (size_t)row * row_bytes + (size_t)(k / 32) * 34;
        __m512 d = _mm512_set1_ps(h2f(b));
        __m256i q = _mm256_loadu_si256((const __m256i *)(b + 2));
        __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(q)));
        __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(q, 1)));
        return (__m512i)_mm512_cvtne2ps_pbh(_mm512_mul_ps(hi, d), _mm512_mul_ps(lo, d));
    }
    return (__m512i)_mm512_cvtne2ps_pbh(load16_f32(w, wt, row_bytes, row, K, k + 16),
                                        load16_f32(w, wt, row_bytes, row, K, k));
}

/* Packs W rows [n0, n0+nvalid) x k [k0, k0+kc) (kc even) as bf16 pairs, 64 columns (zero for c >= nvalid
 * or k >= K): panel[p][c] = dword (w[c][k0+2p], w[c][k0+2p+1]).  (AMX tiles: pack_amx.) */
static void pack_bf16(uint32_t *panel, const void *w, fp_dtype wt, size_t row_bytes, int K, int n0, int nvalid,
                      int k0, int kc) {
    int np = kc / 2;
    for (int c0 = 0; c0 < BF_NR; c0 += 16) {
        for (int p0 = 0; p0 < np; p0 += 16) {
            __m512i r[16];
            for (int i = 0; i < 16; i++) {
                int c = c0 + i;
                r[i] = c < nvalid ? load32_bf16(w, wt, row_bytes, n0 + c, K, k0 + 2 * p0) : _mm512_setzero_si512();
            }
            transpose16(r);
            int cnt = MIN(16, np - p0);
            for (int i = 0; i < cnt; i++) _mm512_store_si512(panel + (size_t)(p0 + i) * BF_NR + c0, r[i]);
        }
    }
}

AI void bf16_tile(const int MR, const uint32_t *A, size_t lda, const uint32_t *B, int np, float *C, size_t ldc,
                  const __mmask16 cm[4], int accumulate, const float *bias) {
    __m512 acc[BF_MR][4];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) acc[i][v] = _mm512_setzero_ps();
    for (int p = 0; p < np; p++) {
        const uint32_t *b = B + (size_t)p * BF_NR;
        __m512bh b0 = (__m512bh)_mm512_load_si512(b), b1 = (__m512bh)_mm512_load_si512(b + 16);
        __m512bh b2 = (__m512bh)_mm512_load_si512(b + 32), b3 = (__m512bh)_mm512_load_si512(b + 48);
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            __m512bh a = (__m512bh)_mm512_set1_epi32((int)A[i * lda + p]);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], a, b0);
            acc[i][1] = _mm512_dpbf16_ps(acc[i][1], a, b1);
            acc[i][2] = _mm512_dpbf16_ps(acc[i][2], a, b2);
            acc[i][3] = _mm512_dpbf16_ps(acc[i][3], a, b3);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
        float *c = C + i * ldc;
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) {
            __m512 add = accumulate ? _mm512_maskz_loadu_ps(cm[v], c + 16 * v)
                         : bias     ? _mm512_maskz_loadu_ps(cm[v], bias + 16 * v)
                                    : _mm512_setzero_ps();
            _mm512_mask_storeu_ps(c + 16 * v, cm[v], _mm512_add_ps(acc[i][v], add));
        }
    }
}

/* Output segments of the AMX GEMM (fp_matmul_avx512_multi): virtual weight rows (output columns)
 * [n0[s], n0[s] + N[s]) come from w[s] and go to out[s] ([T, N[s]], bias[s]); every n0[s] is a multiple
 * of 32, so no 32-column block or 16-row tile column straddles two segments.  One segment for a plain GEMM. */
typedef struct {
    int n;
    int n0[FP_MATMUL_MAX_SEGS];
    int N[FP_MATMUL_MAX_SEGS];
    const void *w[FP_MATMUL_MAX_SEGS];
    float *out[FP_MATMUL_MAX_SEGS];
    const float *bias[FP_MATMUL_MAX_SEGS];
} amx_segs;
AI int seg_of(const amx_segs *g, int col) {
    int s = 0;
    while (s + 1 < g->n && col >= g->n0[s + 1]) s++;
    return s;
}

typedef struct {
    float *out;
    const float *inp;
    const void *w;
    fp_dtype wt;
    const float *bias;
    int T, K, N;
    const void *act; /* converted activations */
    size_t lda;      /* row stride of act, in its unit (dwords for bf16, bytes for int8) */
    const float *ad; /* q8: per-block activation scales [T][K/32] */
    const int32_t *ac; /* q8: per-block corrections -128*sum(q) [T][K/32] */
    const amx_segs *segs; /* AMX: the output segments (out, w, bias, N above: the first / only one) */
} job_args;

/* The jobs of the vdpbf16ps, f32 FMA and VNNI kernels: columns [n0, n0 + NR) of out (weight rows of w) for
 * rows [t0, t1); C0: the output of row t0, column n0, rows ldc floats apart (out itself, or a per-thread block
 * for the SwiGLU pair jobs). */
static void bf16_job(const job_args *a, const void *w, int n0, int t0, int t1, uint32_t *panel, float *C0,
                     size_t ldc) {
    int nvalid = MIN(BF_NR, a->N - n0), Kp = (a->K + 1) & ~1;
    __mmask16 cm[4];
    for (int v = 0; v < 4; v++) cm[v] = col_mask(nvalid, v);
    const uint32_t *A = a->act;
    const float *bias = a->bias ? a->bias + n0 : NULL;
    for (int k0 = 0; k0 < Kp; k0 += BF_KC) {
        int kc = MIN(BF_KC, Kp - k0), np = kc / 2;
        pack_bf16(panel, w, a->wt, fp_dtype_row_bytes(a->wt, a->K), a->K, n0, nvalid, k0, kc);
        for (int t = t0; t < t1; t += BF_MR) {
            const uint32_t *At = A + (size_t)t * a->lda + k0 / 2;
            float *C = C0 + (size_t)(t - t0) * ldc;
            switch (MIN(BF_MR, t1 - t)) {
            case 6: bf16_tile(6, At, a->lda, panel, np, C, ldc, cm, k0 > 0, bias); break;
            case 5: bf16_tile(5, At, a->lda, panel, np, C, ldc, cm, k0 > 0, bias); break;
            case 4: bf16_tile(4, At, a->lda, panel, np, C, ldc, cm, k0 > 0, bias); break;
            case 3: bf16_tile(3, At, a->lda, panel, np, C, ldc, cm, k0 > 0, bias); break;
            case 2: bf16_tile(2, At, a->lda, panel, np, C, ldc, cm, k0 > 0, bias); break;
            default: bf16_tile(1, At, a->lda, panel, np, C, ldc, cm, k0 > 0, bias); break;
            }
        }
    }
}


/* ================================================================ BF16 x BF16 on AMX tiles (tdpbf16ps) */
/* One 64-byte row of a bf16 A tile: the 32 f32 at x, or the first rem of them (rem < 32) and zeros after,
 * rounded to nearest even. */
AI __m512i bf16_tile_row(const float *x, int rem) {
    if (rem >= 32) return (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + 16), _mm512_loadu_ps(x));
    __mmask16 m0 = (__mmask16)(rem >= 16 ? 0xffff : (1u << rem) - 1);
    __mmask16 m1 = (__mmask16)(rem <= 16 ? 0 : (1u << (rem - 16)) - 1);
    return (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, x + 16), _mm512_maskz_loadu_ps(m0, x));
}

/* Activations f32 [T][K] -> bf16 A tiles: rows padded to Tp (multiple of 16), k to Kp (multiple of 32),
 * zeros; the tile of rows 16i.. and k 32j.. is 1 KiB at (i * Kp/32 + j) * 512 elements, row r at +32 r.
 * Written one tile at a time (16 row segments in, 1 KiB contiguous out): writing row by row scatters each
 * row over Kp/32 tiles and was ~4x slower for activations larger than L2. */
static void act_to_bf16_tiles(uint16_t *dst, const float *inp, int T, int K, int Kp, int Tp) {
    int nkb = Kp / 32, nrb = Tp / 16;
#pragma omp for schedule(static)
    for (int i = 0; i < nrb; i++) {
        uint16_t *y = dst + (size_t)i * nkb * 512;
        int rows = MIN(16, T - 16 * i); /* >= 1: Tp < T + 16 */
        const float *x = inp + (size_t)16 * i * K;
        for (int j = 0; j < nkb; j++) { /* the last one ragged when K % 32 != 0 */
            uint16_t *yt = y + (size_t)j * 512;
            int r = 0;
            for (; r < rows; r++) _mm512_store_si512(yt + 32 * r, bf16_tile_row(x + (size_t)r * K + 32 * j, K - 32 * j));
            for (; r < 16; r++) _mm512_store_si512(yt + 32 * r, _mm512_setzero_si512());
        }
    }
}

/* One f32 row (K values) as row r of its 16-row group of bf16 A tiles (y: the group's first tile, nkb tiles),
 * rounded as act_to_bf16_tiles rounds; the ragged k tail zero-padded. */
static void row_to_bf16_tiles(uint16_t *y, int r, const float *xr, int K, int nkb) {
    for (int j = 0; j < nkb; j++) _mm512_store_si512(y + (size_t)j * 512 + 32 * r, bf16_tile_row(xr + 32 * j, K - 32 * j));
}

/* (kernels.h) Row by row within one 16-row group: its tiles (16 x Kp bf16) stay in L1/L2 while its rows are
 * written, unlike the whole-matrix row order act_to_bf16_tiles avoids. */
int fp_rmsnorm_tiles(uint16_t *tiles, const float *inp, const float *weight, float eps, int T, int K) {
    if (T <= 0 || K <= 0) return 0;
    int nkb = (K + 31) / 32, nrb = (T + 31) / 32 * 2; /* row groups of 16, padded to 32 rows */
    int bad = 0;
#pragma omp parallel
    {
        float *row = aligned_alloc(64, ((size_t)K * sizeof(float) + 63) & ~(size_t)63);
        if (!row) {
#pragma omp atomic write
            bad = 1;
        }
#pragma omp for schedule(static)
        for (int i = 0; i < nrb; i++) {
            uint16_t *y = tiles + (size_t)i * nkb * 512;
            for (int r = 0; r < 16; r++) {
                int t = 16 * i + r;
                if (t < T && row) {
                    fp_rmsnorm_rows(row, inp + (size_t)t * K, weight, eps, 1, K);
                    row_to_bf16_tiles(y, r, row, K, nkb);
                } else
                    for (int j = 0; j < nkb; j++) _mm512_store_si512(y + (size_t)j * 512 + 32 * r, _mm512_setzero_si512());
            }
        }
        free(row);
    }
    return bad ? -1 : 0;
}

/* Tiles: tmm0-3 = C (2 x 2 blocks of 16 rows x 16 f32), tmm4-5 = A (16 rows x 32 bf16), tmm6-7 = B
 * (16 k-pairs x 16 cols x 2 bf16), all loaded from contiguous 1 KiB tiles (row stride 64 bytes): the
 * activations in act_to_bf16_tiles' layout (padded to 32 rows and 32 k), the panel in pack_amx's layout.
 *
 * Blocking (see amx_plan): a job is (group of nc <= AMX_NC_MAX weight rows = output columns) x (block of
 * rows).  The job packs the group's weights for one chunk of k (the whole K when Kp <= AMX_KMAX, else
 * equal chunks of <= AMX_KMAX) into a per-thread panel of <= AMX_PANEL_BYTES (L2), then, for each 32-row
 * block of activations, sweeps all the 32-column groups of the panel: the activation rows (32 x kc) are
 * read from L3/memory once per group of nc columns and reused from L2/L1 for the other nc/32 - 1 column
 * groups, the panel stays in L2 for all rows.  Within a chunk, each 32-row block walks k in sub-chunks of
 * <= 448 (amx_nsub): its 28 KiB of activations stay in L1 while all the column groups use them, so only the
 * B tiles stream from L2 (with A from L2 too, L2 bandwidth held the loop at ~1.5 TFLOP/s per core; 1.9-2.0
 * with A in L1, in a microbenchmark of the tile loop alone).  The C tiles are parked in an L2 buffer between
 * sub-chunks; shorter sub-chunks lose more to those stores than they gain (128-256 k: slower).  B is loaded
 * with tileloaddt1 (streamed: it should not evict A from L1). */
/* The k loop of a 2 x 2 block over k blocks [kb0, kb1) (kb1 > kb0, 32 k each): C tiles 0-3 += A tiles 4, 5
 * (rows 0-15, 16-31 of A0 / A1, 1 KiB tiles) x B tiles 6, 7 (columns 0-15, 16-31 of the panel at Bp, bstep
 * dwords per k block), software-pipelined: tile registers are not renamed, so a load into a tile waits for
 * the products that read its previous contents, and a product for its loads.  Each load is issued right after
 * the last product that reads the tile, two products (~32 cycles) ahead of its first use for B (from L2) and
 * one for A (from L1): +11 % in a microbenchmark of the loop (1.6 -> 1.8 TFLOP/s per core), against loads
 * just before their use.  The products of each C tile run in k order, as in a plain loop.  EXTRA runs once
 * per k block (the fused SwiGLU's epilogue).  A macro: the intrinsics need the caller's AMX target attribute. */
#define AMX_2X2_KLOOP(A0, A1, Bp, kb0, kb1, bstep, EXTRA)                           \
    do {                                                                            \
        int kb_ = (kb0);                                                            \
        const uint32_t *b_ = (Bp) + (size_t)kb_ * (bstep);                          \
        _tile_loadd(4, (A0) + (size_t)kb_ * 512, 64);                               \
        _tile_stream_loadd(6, b_, 64);                                              \
        _tile_stream_loadd(7, b_ + 256, 64);                                        \
        _tile_loadd(5, (A1) + (size_t)kb_ * 512, 64);                               \
        for (; kb_ + 1 < (kb1); kb_++) {                                            \
            b_ += (bstep);                                                          \
            _tile_dpbf16ps(0, 4, 6);                                                \
            _tile_dpbf16ps(2, 5, 6);                                                \
            _tile_stream_loadd(6, b_, 64);                                          \
            _tile_dpbf16ps(1, 4, 7);                                                \
            _tile_loadd(4, (A0) + (size_t)(kb_ + 1) * 512, 64);                     \
            _tile_dpbf16ps(3, 5, 7);                                                \
            _tile_loadd(5, (A1) + (size_t)(kb_ + 1) * 512, 64);                     \
            _tile_stream_loadd(7, b_ + 256, 64);                                    \
            EXTRA;                                                                  \
        }                                                                           \
        _tile_dpbf16ps(0, 4, 6);                                                    \
        _tile_dpbf16ps(2, 5, 6);                                                    \
        _tile_dpbf16ps(1, 4, 7);                                                    \
        _tile_dpbf16ps(3, 5, 7);                                                    \
        EXTRA;                                                                      \
    } while (0)
#define AMX_MR 32
#define AMX_KMAX 4096                  /* longest k chunk (= FP_AMX_SWIGLU_MAX_K) */
_Static_assert(AMX_KMAX == FP_AMX_SWIGLU_MAX_K, "kernels.h states the fused kernel's K limit");
#define AMX_PANEL_BYTES (768 * 1024)  /* packed weights per job (L2 is 2 MiB per core) */
#define AMX_NC_MAX 512                 /* columns per job */
#define AMX_PF_K 128                   /* packing prefetches bf16 weights this many k ahead */
#define AMX_SUB_KB 14                  /* k blocks of 32 per L1 sub-chunk: 32 rows x 448 k = 28 KiB of A */

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_cfg;
static const amx_cfg amx_config __attribute__((aligned(64))) = {
    1, 0, {0}, {64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0},
    {16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0}};

typedef struct {
    int kc;      /* k per chunk (multiple of 32) */
    int nc;      /* columns of the widest group (multiple of 32) */
    int units;   /* 32-column units: ceil(N / 32) */
    int ngroups; /* column groups: group g is units [g units / ngroups, (g + 1) units / ngroups) */
    int tb;      /* row blocks */
} amx_plan;

/* Groups as wide as the panel budget allows (the activations are read once per group), their number rounded
 * up to a multiple of the threads and their widths equal to within 32 columns, so that every thread gets the
 * same work (7 groups of 128 columns for a 896-wide output left one of 2 threads idle an eighth of the time).
 * K over one chunk (AMX_KMAX; the down projections): the fewest groups of <= AMX_NC_MAX columns instead, and
 * as many k chunks as their panel needs to fit AMX_PANEL_WIDE_BYTES.  The activations of such a GEMM are the
 * largest (0.5B, 2048 rows: 20 MB of bf16 tiles), so each group's pass over them costs more than the extra
 * round trips of the f32 outputs between k chunks: the 0.5B shape's down projection after the gate/up GEMM
 * (as in the model) went from 8 groups x 2 chunks to 2 x 5, 9.4-9.7 -> 8.0-8.4 ms at 2048 rows, 2.6 -> 2.4 ms
 * at 512.  The sums are the same bits whatever the chunks (a C tile's products run in k order, and its round
 * trip through out between chunks is exact). */
#define AMX_PANEL_WIDE_BYTES (900 * 1024)
static void amx_plan_make(amx_plan *p, int T, int K, int N, int nth) {
    int Kp = (K + 31) & ~31;
    int nch = (Kp + AMX_KMAX - 1) / AMX_KMAX;
    p->units = (N + 31) / 32;
    int maxu = AMX_NC_MAX / 32; /* units per group: one k chunk, as many as fit the panel budget */
    if (nch == 1) maxu = MIN(maxu, AMX_PANEL_BYTES / (Kp * 2) / 32);
    if (maxu < 1) maxu = 1;
    int g = (p->units + maxu - 1) / maxu;
    if (nth > 1) g = (g + nth - 1) / nth * nth;
    if (g > p->units) g = p->units;
    if (nch > 1) { /* k chunks as short as the group's panel needs (kc stays ~900 or more: nc <= AMX_NC_MAX) */
        size_t panel = (size_t)(p->units + g - 1) / g * 32 * Kp * 2; /* all of K */
        int nw = (int)((panel + AMX_PANEL_WIDE_BYTES - 1) / AMX_PANEL_WIDE_BYTES);
        if (nw > nch) nch = nw;
    }
    p->kc = ((Kp + nch - 1) / nch + 31) & ~31;
    p->ngroups = g;
    p->nc = (p->units + g - 1) / g * 32;
    int tb = 1; /* more row blocks only when there are fewer groups than threads (each row block re-packs) */
    while (nth > 1 && p->ngroups * tb < nth && T / (tb * 2) >= 64) tb *= 2;
    p->tb = tb;
}
/* Group g's units [*u0, *u1). */
static void amx_group(const amx_plan *p, int g, int *u0, int *u1) {
    *u0 = (int)((long)g * p->units / p->ngroups);
    *u1 = (int)((long)(g + 1) * p->units / p->ngroups);
}
static size_t amx_panel_bytes(const amx_plan *p) { return (size_t)p->nc * p->kc * 2; }

/* Packs W rows [n0, n0+nvalid) x k [k0, k0+kc) (kc a multiple of 32) as bf16 pairs in AMX B tiles of 16
 * pairs x 16 columns: ntc = ceil(nvalid/32)*2 tile columns, tile (p/16, c/16) at ((p/16)*ntc + c/16) * 256
 * dwords; columns >= nvalid and k >= K are zero.
 * wu != NULL (the fused SwiGLU GEMM): tile column 2j holds rows [n0+16j, +16) of w (the gate weights) and
 * tile column 2j+1 the same rows of wu (the up weights), so ntc = ceil(nvalid/16)*2 and each 32-column
 * group of the panel gives gate and up for the same 16 output columns. */
static void pack_amx(uint32_t *panel, const void *w, const void *wu, fp_dtype wt, size_t row_bytes, int K, int n0,
                     int nvalid, int k0, int kc, const amx_segs *segs) {
    int np = kc / 2, ntc = wu ? (nvalid + 15) / 16 * 2 : (nvalid + 31) / 32 * 2;
    /* prefetch distance: ~256 bytes of each row ahead whatever the dtype (q8_0 / q4_0 rows are 34 / 18 bytes
     * per 32 k), k a multiple of 32 for the quantised types */
    int pf_k = wt == FP_BF16 ? AMX_PF_K : wt == FP_Q8_0 ? 2 * AMX_PF_K : 4 * AMX_PF_K;
    for (int tc = 0; tc < ntc; tc++) {
        const void *src = wu && (tc & 1) ? wu : w;
        int c0 = wu ? 16 * (tc >> 1) : 16 * tc; /* first row (output column) of this tile column */
        int rbase = n0; /* row of src for c = 0 */
        if (segs && c0 < nvalid) { /* the segment holding these 16 rows */
            int sg = seg_of(segs, n0 + c0);
            src = segs->w[sg];
            rbase = n0 - segs->n0[sg];
        }
        /* the next tile column's rows: its first lines are prefetched while this one ends */
        const void *nsrc = NULL;
        int nbase = 0, ncnt = 0;
        if (tc + 1 < ntc) {
            int tn = tc + 1, cn = wu ? 16 * (tn >> 1) : 16 * tn;
            nsrc = wu && (tn & 1) ? wu : w;
            nbase = n0 + cn;
            ncnt = MIN(16, nvalid - cn);
            if (segs && cn < nvalid) {
                int sg = seg_of(segs, n0 + cn);
                nsrc = segs->w[sg];
                nbase = n0 + cn - segs->n0[sg];
            }
        }
        for (int p0 = 0; p0 < np; p0 += 16) {
            __m512i r[16];
            for (int i = 0; i < 16; i++) {
                int c = c0 + i;
                r[i] = c < nvalid ? load32_bf16(src, wt, row_bytes, rbase + c, K, k0 + 2 * p0) : _mm512_setzero_si512();
            }
            int kpf = 2 * p0 + pf_k; /* relative to k0 */
            if (kpf < kc && k0 + kpf < K) { /* the weights mostly come from memory */
                const char *pa = (const char *)src + (size_t)(rbase + c0) * row_bytes + fp_dtype_row_bytes(wt, k0 + kpf);
                for (int i = 0; i < 16 && c0 + i < nvalid; i++) _mm_prefetch(pa + (size_t)i * row_bytes, _MM_HINT_T0);
            } else if (kpf - kc < kc && k0 + kpf - kc < K) { /* past this chunk: the next tile column's start */
                const char *pa = (const char *)nsrc + (size_t)nbase * row_bytes + fp_dtype_row_bytes(wt, k0 + kpf - kc);
                for (int i = 0; i < ncnt; i++) _mm_prefetch(pa + (size_t)i * row_bytes, _MM_HINT_T0);
            }
            transpose16(r);
            uint32_t *dst = panel + ((size_t)(p0 / 16) * ntc + tc) * 256;
            for (int i = 0; i < 16; i++) _mm512_store_si512(dst + 16 * i, r[i]);
        }
    }
}

/* Sub-chunks of a k chunk of nkb blocks of 32 k: nsub near-equal ranges of at most AMX_SUB_KB blocks, so that
 * the 32 x (sub-chunk) activations of a row block stay in L1 while every column group of the panel uses them
 * (A and B both streamed from L2 ran at ~1.5 TFLOP/s per core, A from L1 ~1.9-2.3).  The C tiles of each
 * 32 x 32 block are parked in a per-thread buffer between sub-chunks (f32 stores and loads: the sums are
 * those of one uninterrupted k loop, bit for bit). */
static int amx_nsub(int nkb) { return (nkb + AMX_SUB_KB - 1) / AMX_SUB_KB; }
#define AMX_SUB_RANGE(s, nsub, nkb, kb0, kb1) \
    do {                                        \
        (kb0) = (s) * (nkb) / (nsub);           \
        (kb1) = ((s) + 1) * (nkb) / (nsub);     \
    } while (0)
/* Software prefetch of the activations a job reads next: the next L1 sub-chunk of this row block, else the
 * first sub-chunk of the next row block, both 16-row halves.  A job reads A from L3 (the activations of all
 * rows exceed L2 at 2048 rows), and the first column block of a sub-chunk waited for it.  Prefetched into L1,
 * an equal share per column block of the current sub-chunk: in the 0.5B MLP sequence (24 layers' weights,
 * 2048 rows) the down projection ran 8-10 % faster and the fused gate/up ~3 %; 512 rows level; into L2
 * (prefetcht1) slightly less. */
typedef struct {
    const char *p; /* first line of the upper half; the lower half is half bytes further */
    size_t half, lines, per, done; /* lines per half, issued per column block, issued so far */
} amx_apf;
/* A0: the current row block's first tile of the k chunk; nkb_all: k blocks of a whole row (the tile row
 * stride); nkbc: those of the chunk; sub of nsub: the current sub-chunk; more_rows: a row block follows in
 * this job; nblocks: column blocks per sub-chunk. */
static void amx_apf_init(amx_apf *f, const uint16_t *A0, int nkb_all, int sub, int nsub, int nkbc, int more_rows,
                         int nblocks) {
    int b0 = 0, b1 = 0;
    if (sub + 1 < nsub) {
        AMX_SUB_RANGE(sub + 1, nsub, nkbc, b0, b1);
    } else if (more_rows) {
        AMX_SUB_RANGE(0, nsub, nkbc, b0, b1);
        A0 += (size_t)2 * nkb_all * 512;
    }
    f->p = (const char *)(A0 + (size_t)b0 * 512);
    f->half = (size_t)nkb_all * 1024;
    f->lines = (size_t)(b1 - b0) * 16;
    f->per = (f->lines + nblocks - 1) / nblocks;
    f->done = 0;
}
/* Issues one column block's share. */
AI void amx_apf_step(amx_apf *f) {
    for (size_t q = 0; q < f->per && f->done < f->lines; q++, f->done++) {
        _mm_prefetch(f->p + 64 * f->done, _MM_HINT_T0);
        _mm_prefetch(f->p + f->half + 64 * f->done, _MM_HINT_T0);
    }
}
/* Bytes of the C parking buffer for nc panel columns: one contiguous [32][32] f32 block per 32 columns. */
static size_t amx_cpark_bytes(int nc) { return (size_t)nc * 32 * 4; }
/* The 2 x 2 C tiles of a 32 x 32 f32 block at buf with rows ld floats apart (32 for ctmp and the parking
 * buffer, N for out): OP is _tile_stored or _tile_loadd. */
#define AMX_C_TILES(OP, buf, ld)                                                    \
    do {                                                                            \
        OP(0, (buf), (size_t)(ld) * 4);                                             \
        OP(1, (buf) + 16, (size_t)(ld) * 4);                                        \
        OP(2, (buf) + (size_t)16 * (ld), (size_t)(ld) * 4);                         \
        OP(3, (buf) + (size_t)16 * (ld) + 16, (size_t)(ld) * 4);                    \
    } while (0)
#define AMX_C_STORE(buf) AMX_C_TILES(_tile_stored, buf, 32)
#define AMX_C_LOAD(buf) AMX_C_TILES(_tile_loadd, buf, 32)

/* One job: output columns [n0, n0+nvalid) (nvalid <= nc), rows [t0, t1) (t0 a multiple of 32).
 * work: panel (amx_panel_bytes), then ctmp [32][32] f32, brep [16][nc] f32 and cpark (amx_cpark_bytes). */
__attribute__((target("amx-tile,amx-bf16"))) static void amx_job(const job_args *a, const amx_plan *pl, int n0,
                                                                   int nvalid, int t0, int t1, uint32_t *panel,
                                                                   float *ctmp, float *brep, float *cpark) {
    int Kp = (a->K + 31) & ~31, nc = pl->nc;
    int ntc = (nvalid + 31) / 32 * 2;
    const uint16_t *A = a->act;
    int nkb = Kp / 32;
    const amx_segs *sg = a->segs;
    int any_bias = 0;
    for (int s = 0; s < sg->n; s++) any_bias |= sg->bias[s] != NULL;
    if (any_bias) /* the bias of this job's columns replicated in 16 rows: the initial C tiles (0: no bias) */
        for (int c = 0; c < ntc * 16; c += 16) {
            int s = seg_of(sg, n0 + c);
            const float *bs = sg->bias[s];
            int left = MIN(nvalid - c, sg->n0[s] + sg->N[s] - (n0 + c)); /* valid columns of this segment */
            __m512 b = bs ? _mm512_maskz_loadu_ps(col_mask(left, 0), bs + (n0 + c - sg->n0[s])) : _mm512_setzero_ps();
            for (int r = 0; r < 16; r++) _mm512_store_ps(brep + (size_t)nc * r + c, b);
        }
    size_t rb = fp_dtype_row_bytes(a->wt, a->K);
    __asm__ volatile("" ::: "memory");
    _tile_loadconfig(&amx_config);
    for (int k0 = 0; k0 < Kp; k0 += pl->kc) {
        int kc = MIN(pl->kc, Kp - k0), nsub = amx_nsub(kc / 32);
        int from_out = k0 > 0; /* C starts from out: the partial sums of the earlier k chunks */
        pack_amx(panel, a->w, NULL, a->wt, rb, a->K, n0, nvalid, k0, kc, sg);
        __asm__ volatile("" ::: "memory"); /* the tile loads below are asm without a memory operand */
        size_t bstep = (size_t)ntc * 256;  /* dwords per 32 k in the panel */
        for (int t = t0; t < t1; t += AMX_MR) {
            const uint16_t *A0 = A + ((size_t)(t / 16) * nkb + k0 / 32) * 512, *A1 = A0 + (size_t)nkb * 512;
            for (int sub = 0; sub < nsub; sub++) {
                int kb0, kb1;
                AMX_SUB_RANGE(sub, nsub, kc / 32, kb0, kb1);
                amx_apf apf;
                amx_apf_init(&apf, A0, nkb, sub, nsub, kc / 32, t + AMX_MR < t1, ntc / 2);
                for (int cg = 0; cg < nvalid; cg += 32) {
                    const uint32_t *Bp = panel + (cg / 16) * 256;
                    float *park = cpark + (size_t)(cg / 32) * 32 * 32;
                    amx_apf_step(&apf);
                    /* full 32 x 32 block: the C tiles start from out (later chunks) or the replicated bias and
                     * are stored straight into out; ragged blocks start from the same values staged in ctmp and
                     * are stored through it */
                    int s = seg_of(sg, n0 + cg), N = sg->N[s], col = n0 + cg - sg->n0[s]; /* in segment s */
                    int cvalid = MIN(nvalid - cg, N - col);
                    int full = t + 32 <= t1 && cvalid >= 32;
                    float *cb = sg->out[s] + (size_t)t * N + col;
                    int rows = MIN(32, t1 - t);
                    __mmask16 m0 = col_mask(cvalid, 0), m1 = col_mask(cvalid, 1);
                    const float *bias = sg->bias[s] ? sg->bias[s] + col : NULL;
                    if (sub > 0)
                        AMX_C_LOAD(park);
                    else if (full && from_out)
                        AMX_C_TILES(_tile_loadd, cb, N);
                    else if (full && any_bias) {
                        _tile_loadd(0, brep + cg, (size_t)nc * 4);
                        _tile_loadd(1, brep + cg + 16, (size_t)nc * 4);
                        _tile_loadd(2, brep + cg, (size_t)nc * 4);
                        _tile_loadd(3, brep + cg + 16, (size_t)nc * 4);
                    } else if (from_out || bias) {
                        /* a ragged block starts from out / the bias as well, staged in ctmp (zeros outside), so
                         * every element is the same sum in the same order whatever block it falls in: results
                         * do not depend on how the rows were chunked */
                        for (int i = 0; i < 32; i++) {
                            __m512 v0 = _mm512_setzero_ps(), v1 = _mm512_setzero_ps();
                            if (i < rows) {
                                const float *src = from_out ? cb + (size_t)i * N : bias;
                                v0 = _mm512_maskz_loadu_ps(m0, src);
                                v1 = _mm512_maskz_loadu_ps(m1, src + 16);
                            }
                            _mm512_store_ps(ctmp + 32 * i, v0);
                            _mm512_store_ps(ctmp + 32 * i + 16, v1);
                        }
                        __asm__ volatile("" ::: "memory");
                        AMX_C_LOAD(ctmp);
                    } else {
                        _tile_zero(0);
                        _tile_zero(1);
                        _tile_zero(2);
                        _tile_zero(3);
                    }
                    AMX_2X2_KLOOP(A0, A1, Bp, kb0, kb1, bstep, (void)0);
                    if (sub + 1 < nsub) {
                        AMX_C_STORE(park);
                        continue;
                    }
                    if (full) {
                        AMX_C_TILES(_tile_stored, cb, N);
                        continue;
                    }
                    AMX_C_STORE(ctmp); /* ctmp is [32 rows][32 cols] f32 */
                    __asm__ volatile("" ::: "memory");
                    for (int i = 0; i < rows; i++) {
                        float *c = cb + (size_t)i * N;
                        const float *r = ctmp + 32 * i;
                        _mm512_mask_storeu_ps(c, m0, _mm512_load_ps(r));
                        _mm512_mask_storeu_ps(c + 16, m1, _mm512_load_ps(r + 16));
                    }
                    __asm__ volatile("" ::: "memory");
                }
            }
        }
    }
    _tile_release();
}

/* ---------------------------------------------------------------- fused SwiGLU GEMM on AMX tiles */
/* out[T,N] = silu(inp Wg^T) * (inp Wu^T) for K <= AMX_KMAX (one k chunk, so C never leaves the tiles).
 * The panel interleaves gate and up tile columns (pack_amx with wu), so the 2 x 2 C tiles of one 32 x 32
 * block hold gate (tiles 0, 2) and up (tiles 1, 3) for 32 rows x the same 16 output columns; the tile loop
 * is amx_job's, so every gate/up value is the f32 sum the unfused AMX GEMM computes, in the same order.
 * The block is stored to the thread's C parking buffer (one [32][32] f32 block per 32 panel columns) and the
 * epilogue writes silu(g) * u for its 16 columns with the fast-precision SwiGLU (tensor/swiglu16_fast.h, the
 * code of fp_swiglu_forward_fast), so the result is bit for bit that of gate GEMM + up GEMM +
 * fp_swiglu_forward_fast at the AVX-512 level.  The epilogue of a block is spread over the k loop of the next
 * one (a few rows per k step), so that it runs while the tile unit works. */
/* One row of a stored block: c[0..15] gate, c[16..31] up (64-byte aligned) -> o[0..15] under mask m, by the
 * same code as fp_swiglu_forward_fast (tensor/swiglu16_fast.h). */
AI void swiglu_row16(float *o, const float *c, __mmask16 m) {
    float res[16] __attribute__((aligned(64)));
    fp_swiglu16_fast(res, c, c + 16);
    _mm512_mask_storeu_ps(o, m, _mm512_load_ps(res));
}

/* The same row as bf16 (round to nearest even, as act_to_bf16_tiles rounds f32 activations) into 16 elements
 * of an AMX A tile row; masked-off columns are written as zeros (the tiles' padding). */
AI void swiglu_row16_bf16(uint16_t *o, const float *c, __mmask16 m) {
    float res[16] __attribute__((aligned(64)));
    fp_swiglu16_fast(res, c, c + 16);
    _mm256_storeu_si256((__m256i *)o, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_load_ps(m, res)));
}

/* A stored block whose epilogue is pending: buffer, first output element (f32 rows, or bf16 A-tile rows when
 * ot is set: row i at ot + (i / 16) * otstep + 32 * (i % 16)), rows done / valid, column mask. */
typedef struct {
    const float *c;
    float *o;
    uint16_t *ot;
    size_t otstep;
    int done, rows;
    __mmask16 m;
} swi_pending;

AI void swiglu_rows(swi_pending *p, int upto, size_t ldo) {
    if (upto > p->rows) upto = p->rows;
    if (p->ot)
        for (; p->done < upto; p->done++)
            swiglu_row16_bf16(p->ot + (size_t)(p->done / 16) * p->otstep + 32 * (p->done % 16), p->c + 32 * p->done, p->m);
    else
        for (; p->done < upto; p->done++) swiglu_row16(p->o + (size_t)p->done * ldo, p->c + 32 * p->done, p->m);
}

/* One job: output columns [n0, n0+nvalid), rows [t0, t1) (t0 a multiple of 32); wu the up weights (a->w the
 * gate weights).  work: panel (nc x Kp bf16, nc = 2 x the job's columns), then cpark (amx_cpark_bytes(nc)):
 * a 32 x 32 block's C tiles between k sub-chunks (amx_nsub), and its final gate/up values for the epilogue. */
__attribute__((target("amx-tile,amx-bf16"))) static void amx_swiglu_job(const job_args *a, const void *wu, int n0,
                                                                          int nvalid, int t0, int t1,
                                                                          uint32_t *panel, float *cpark,
                                                                          uint16_t *otiles) {
    int Kp = (a->K + 31) & ~31, N = a->N, nkb = Kp / 32, nsub = amx_nsub(nkb);
    int ntc = (nvalid + 15) / 16 * 2;
    const uint16_t *A = a->act;
    size_t rb = fp_dtype_row_bytes(a->wt, a->K);
    pack_amx(panel, a->w, wu, a->wt, rb, a->K, n0, nvalid, 0, Kp, NULL);
    __asm__ volatile("" ::: "memory"); /* the tile loads below are asm without a memory operand */
    _tile_loadconfig(&amx_config);
    size_t bstep = (size_t)ntc * 256;      /* dwords per 32 k in the panel */
    int subkb = nkb / nsub;                /* shortest sub-chunk */
    int step = (32 + subkb - 1) / subkb;   /* pending epilogue rows per k step */
    swi_pending pend = {NULL, NULL, NULL, 0, 0, 0, 0};
    int onkb = (N + 31) / 32; /* k blocks of the output tiles (otiles: [Tp/16][onkb] tiles of 16 x 32 bf16) */
    for (int t = t0; t < t1; t += AMX_MR) {
        const uint16_t *A0 = A + (size_t)(t / 16) * nkb * 512, *A1 = A0 + (size_t)nkb * 512;
        int rows = MIN(32, t1 - t);
        for (int sub = 0; sub < nsub; sub++) {
            int kb0, kb1;
            AMX_SUB_RANGE(sub, nsub, nkb, kb0, kb1);
            amx_apf apf;
            amx_apf_init(&apf, A0, nkb, sub, nsub, nkb, t + AMX_MR < t1, ntc / 2);
            for (int cg = 0; cg < ntc * 16; cg += 32) {
                const uint32_t *Bp = panel + (cg / 16) * 256;
                float *park = cpark + (size_t)(cg / 32) * 32 * 32;
                amx_apf_step(&apf);
                if (sub > 0)
                    AMX_C_LOAD(park);
                else {
                    _tile_zero(0);
                    _tile_zero(1);
                    _tile_zero(2);
                    _tile_zero(3);
                }
                AMX_2X2_KLOOP(A0, A1, Bp, kb0, kb1, bstep,
                              if (pend.done < pend.rows) swiglu_rows(&pend, pend.done + step, (size_t)N));
                /* the pending block is done before any store below (it may be this very park) */
                swiglu_rows(&pend, 32, (size_t)N);
                __asm__ volatile("" ::: "memory"); /* its reads of cpark before the stores */
                AMX_C_STORE(park);
                __asm__ volatile("" ::: "memory"); /* the stores before the reads of park */
                if (sub + 1 < nsub) continue;
                int oc = cg / 2; /* output column offset of this block */
                pend.c = park;
                if (otiles) {
                    int col = n0 + oc; /* 16 columns: one half of the output k block col / 32 */
                    pend.ot = otiles + ((size_t)(t / 16) * onkb + col / 32) * 512 + (col % 32);
                    pend.otstep = (size_t)onkb * 512;
                } else
                    pend.o = a->out + (size_t)t * N + n0 + oc;
                pend.done = 0;
                pend.rows = rows;
                pend.m = col_mask(nvalid - oc, 0);
            }
        }
    }
    _tile_release();
    swiglu_rows(&pend, 32, (size_t)N);
}

/* ================================================================ f32 FMA (F32, F16, and fallbacks) */
#define F_MR 6
#define F_NR 64
#define F_KC 128 /* panel = 128 * 64 * 4 B = 32 KiB */

/* panel[k][c] = W[n0+c][k0+k] as f32, k < kc, c < 64 (zero for c >= nvalid or k >= K). */
static void pack_f32(float *panel, const void *w, fp_dtype wt, size_t row_bytes, int K, int n0, int nvalid, int k0,
                     int kc) {
    for (int c0 = 0; c0 < F_NR; c0 += 16) {
        for (int kk = 0; kk < kc; kk += 16) {
            __m512i r[16];
            for (int i = 0; i < 16; i++) {
                int c = c0 + i;
                r[i] = c < nvalid ? _mm512_castps_si512(load16_f32(w, wt, row_bytes, n0 + c, K, k0 + kk))
                                  : _mm512_setzero_si512();
            }
            transpose16(r);
            int cnt = MIN(16, kc - kk);
            for (int i = 0; i < cnt; i++) _mm512_store_si512(panel + (size_t)(kk + i) * F_NR + c0, r[i]);
        }
    }
}

AI void f32_tile(const int MR, const float *A, size_t lda, const float *B, int kc, float *C, size_t ldc,
                 const __mmask16 cm[4], int accumulate, const float *bias) {
    __m512 acc[F_MR][4];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) acc[i][v] = _mm512_setzero_ps();
    for (int k = 0; k < kc; k++) {
        const float *b = B + (size_t)k * F_NR;
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16), b2 = _mm512_load_ps(b + 32),
               b3 = _mm512_load_ps(b + 48);
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            __m512 x = _mm512_set1_ps(A[i * lda + k]);
            acc[i][0] = _mm512_fmadd_ps(x, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(x, b1, acc[i][1]);
            acc[i][2] = _mm512_fmadd_ps(x, b2, acc[i][2]);
            acc[i][3] = _mm512_fmadd_ps(x, b3, acc[i][3]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
        float *c = C + i * ldc;
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++) {
            __m512 add = accumulate ? _mm512_maskz_loadu_ps(cm[v], c + 16 * v)
                         : bias     ? _mm512_maskz_loadu_ps(cm[v], bias + 16 * v)
                                    : _mm512_setzero_ps();
            _mm512_mask_storeu_ps(c + 16 * v, cm[v], _mm512_add_ps(acc[i][v], add));
        }
    }
}

static void f32_job(const job_args *a, const void *w, int n0, int t0, int t1, float *panel, float *C0, size_t ldc) {
    int nvalid = MIN(F_NR, a->N - n0), K = a->K;
    size_t rb = fp_dtype_row_bytes(a->wt, K);
    __mmask16 cm[4];
    for (int v = 0; v < 4; v++) cm[v] = col_mask(nvalid, v);
    const float *bias = a->bias ? a->bias + n0 : NULL;
    for (int k0 = 0; k0 < K; k0 += F_KC) {
        int kc = MIN(F_KC, K - k0);
        pack_f32(panel, w, a->wt, rb, K, n0, nvalid, k0, kc);
        for (int t = t0; t < t1; t += F_MR) {
            const float *At = a->inp + (size_t)t * K + k0;
            float *C = C0 + (size_t)(t - t0) * ldc;
            switch (MIN(F_MR, t1 - t)) {
            case 6: f32_tile(6, At, K, panel, kc, C, ldc, cm, k0 > 0, bias); break;
            case 5: f32_tile(5, At, K, panel, kc, C, ldc, cm, k0 > 0, bias); break;
            case 4: f32_tile(4, At, K, panel, kc, C, ldc, cm, k0 > 0, bias); break;
            case 3: f32_tile(3, At, K, panel, kc, C, ldc, cm, k0 > 0, bias); break;
            case 2: f32_tile(2, At, K, panel, kc, C, ldc, cm, k0 > 0, bias); break;
            default: f32_tile(1, At, K, panel, kc, C, ldc, cm, k0 > 0, bias); break;
            }
        }
    }
}

/* ================================================================ Q8_0 / Q4_0 x Q8 (vpdpbusd) */
#define Q_MR 6
#define Q_NR 32
#define Q_KC 512                          /* 16 blocks of 32 */
#define Q_BLK (8 * Q_NR * 4 + Q_NR * 4)   /* packed bytes per block of 32 k: 1024 quads + 128 scales */

/* Activations -> int8 per block of 32: d = amax/127, q = round_even(x * 127/amax); corr = -128 * sum(q). */
static void act_to_q8(int8_t *q, float *d, int32_t *corr, const float *inp, int T, int K) {
    int nb = K / 32;
#pragma omp for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *x = inp + (size_t)t * K;
        for (int b = 0; b < nb; b++) {
            __m512 x0 = _mm512_loadu_ps(x + 32 * b), x1 = _mm512_loadu_ps(x + 32 * b + 16);
            float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x0), _mm512_abs_ps(x1)));
            if (_mm512_cmp_ps_mask(x0, x0, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(x1, x1, _CMP_UNORD_Q))
                amax = NAN; /* a NaN activation makes the block scale NaN, so the outputs are NaN */
            float id = amax > 0.0f ? 127.0f / amax : 0.0f;
            __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(x0, _mm512_set1_ps(id)));
            __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(x1, _mm512_set1_ps(id)));
            /* guard against x*id rounding above 127 */
            __m512i lim = _mm512_set1_epi32(127);
            q0 = _mm512_max_epi32(_mm512_min_epi32(q0, lim), _mm512_set1_epi32(-127));
            q1 = _mm512_max_epi32(_mm512_min_epi32(q1, lim), _mm512_set1_epi32(-127));
            int8_t *qb = q + (size_t)t * K + 32 * b;
            _mm_storeu_si128((__m128i *)qb, _mm512_cvtepi32_epi8(q0));
            _mm_storeu_si128((__m128i *)(qb + 16), _mm512_cvtepi32_epi8(q1));
            d[(size_t)t * nb + b] = amax / 127.0f;
            corr[(size_t)t * nb + b] = -128 * _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        }
    }
}

/* Packs blocks [b0, b0+nblk) of rows [n0, n0+nvalid): per block, quad j of row c at j*128 + c*4 holds
 * (w + 128) as u8 (w the signed weight integer), then 32 f32 scales. */
static void pack_q(uint8_t *panel, const void *w, fp_dtype wt, size_t row_bytes, int n0, int nvalid, int b0,
                   int nblk) {
    for (int b = 0; b < nblk; b++) {
        uint8_t *pb = panel + (size_t)b * Q_BLK;
        float *sc = (float *)(pb + 8 * Q_NR * 4);
        for (int c = 0; c < Q_NR; c++) {
            uint32_t *dst = (uint32_t *)pb + c;
            if (c >= nvalid) {
                for (int j = 0; j < 8; j++) dst[j * Q_NR] = 0x80808080u;
                sc[c] = 0.0f;
                continue;
            }
            const uint8_t *src = (const uint8_t *)w + (size_t)(n0 + c) * row_bytes;
            if (wt == FP_Q8_0) {
                src += (size_t)(b0 + b) * 34;
                sc[c] = h2f(src);
                for (int j = 0; j < 8; j++) {
                    uint32_t u;
                    memcpy(&u, src + 2 + 4 * j, 4);
                    dst[j * Q_NR] = u ^ 0x80808080u;
                }
            } else { /* Q4_0: element j = lo nibble of qs[j], j+16 = hi nibble; value q-8, stored q-8+128 */
                src += (size_t)(b0 + b) * 18;
                sc[c] = h2f(src);
                for (int j = 0; j < 4; j++) {
                    uint32_t u;
                    memcpy(&u, src + 2 + 4 * j, 4);
                    dst[j * Q_NR] = (u & 0x0f0f0f0fu) + 0x78787878u;
                    dst[(j + 4) * Q_NR] = ((u >> 4) & 0x0f0f0f0fu) + 0x78787878u;
                }
            }
        }
    }
}

AI void q_tile(const int MR, const int8_t *A, size_t lda, const float *ad, const int32_t *ac, size_t ldb,
               const uint8_t *B, int nblk, float *C, size_t ldc, const __mmask16 cm[2], int accumulate,
               const float *bias) {
    __m512 acc[Q_MR][2];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (int b = 0; b < nblk; b++) {
        const uint8_t *pb = B + (size_t)b * Q_BLK;
        __m512i s[Q_MR][2];
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) s[i][0] = s[i][1] = _mm512_set1_epi32(ac[i * ldb + b]);
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            __m512i w0 = _mm512_load_si512(pb + j * 128), w1 = _mm512_load_si512(pb + j * 128 + 64);
#pragma GCC unroll 8
            for (int i = 0; i < MR; i++) {
                int32_t q4;
                memcpy(&q4, A + i * lda + 32 * b + 4 * j, 4);
                __m512i x = _mm512_set1_epi32(q4);
                s[i][0] = _mm512_dpbusd_epi32(s[i][0], w0, x);
                s[i][1] = _mm512_dpbusd_epi32(s[i][1], w1, x);
            }
        }
        __m512 sw0 = _mm512_load_ps((const float *)(pb + 1024)), sw1 = _mm512_load_ps((const float *)(pb + 1088));
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            __m512 da = _mm512_set1_ps(ad[i * ldb + b]);
            acc[i][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[i][0]), _mm512_mul_ps(sw0, da), acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[i][1]), _mm512_mul_ps(sw1, da), acc[i][1]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
        float *c = C + i * ldc;
#pragma GCC unroll 2
        for (int v = 0; v < 2; v++) {
            __m512 add = accumulate ? _mm512_maskz_loadu_ps(cm[v], c + 16 * v)
                         : bias     ? _mm512_maskz_loadu_ps(cm[v], bias + 16 * v)
                                    : _mm512_setzero_ps();
            _mm512_mask_storeu_ps(c + 16 * v, cm[v], _mm512_add_ps(acc[i][v], add));
        }
    }
}

static void q_job(const job_args *a, const void *w, int n0, int t0, int t1, uint8_t *panel, float *C0, size_t ldc) {
    int nvalid = MIN(Q_NR, a->N - n0), K = a->K, nb = K / 32;
    size_t rb = fp_dtype_row_bytes(a->wt, K);
    __mmask16 cm[2] = {col_mask(nvalid, 0), col_mask(nvalid, 1)};
    const float *bias = a->bias ? a->bias + n0 : NULL;
    const int8_t *A = a->act;
    for (int b0 = 0; b0 < nb; b0 += Q_KC / 32) {
        int nblk = MIN(Q_KC / 32, nb - b0);
        pack_q(panel, w, a->wt, rb, n0, nvalid, b0, nblk);
        for (int t = t0; t < t1; t += Q_MR) {
            const int8_t *At = A + (size_t)t * K + 32 * b0;
            const float *ad = a->ad + (size_t)t * nb + b0;
            const int32_t *ac = a->ac + (size_t)t * nb + b0;
            float *C = C0 + (size_t)(t - t0) * ldc;
            switch (MIN(Q_MR, t1 - t)) {
            case 6: q_tile(6, At, K, ad, ac, nb, panel, nblk, C, ldc, cm, b0 > 0, bias); break;
            case 5: q_tile(5, At, K, ad, ac, nb, panel, nblk, C, ldc, cm, b0 > 0, bias); break;
            case 4: q_tile(4, At, K, ad, ac, nb, panel, nblk, C, ldc, cm, b0 > 0, bias); break;
            case 3: q_tile(3, At, K, ad, ac, nb, panel, nblk, C, ldc, cm, b0 > 0, bias); break;
            case 2: q_tile(2, At, K, ad, ac, nb, panel, nblk, C, ldc, cm, b0 > 0, bias); break;
            default: q_tile(1, At, K, ad, ac, nb, panel, nblk, C, ldc, cm, b0 > 0, bias); break;
            }
        }
    }
}

/* ================================================================ small T (GEMV-like): T <= FP_GEMV_MAX_T */
/* Decode steps and tiny batches: no packing and no activation rounding; each thread takes groups of 4
 * weight rows, widens them to f32 16 elements at a time (any dtype) and keeps T x 4 zmm dot products;
 * bound by reading the weights once. */
AI void gemv_rows(const int TT, const job_args *a, int n, int nr) {
    __m512 acc[FP_GEMV_MAX_T][4];
    size_t rb = fp_dtype_row_bytes(a->wt, a->K);
    int K = a->K;
#pragma GCC unroll 4
    for (int t = 0; t < TT; t++)
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) acc[t][r] = _mm512_setzero_ps();
    for (int k = 0; k < K; k += 16) {
        int rem = K - k;
        __mmask16 m = rem >= 16 ? 0xffff : (__mmask16)((1u << rem) - 1);
        __m512 w[4];
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) w[r] = r < nr ? load16_f32(a->w, a->wt, rb, n + r, K, k) : _mm512_setzero_ps();
#pragma GCC unroll 4
        for (int t = 0; t < TT; t++) {
            __m512 x = _mm512_maskz_loadu_ps(m, a->inp + (size_t)t * K + k);
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) acc[t][r] = _mm512_fmadd_ps(x, w[r], acc[t][r]);
        }
    }
    for (int t = 0; t < TT; t++)
        for (int r = 0; r < nr; r++)
            a->out[(size_t)t * a->N + n + r] = _mm512_reduce_add_ps(acc[t][r]) + (a->bias ? a->bias[n + r] : 0.0f);
}

static void gemv(const job_args *a) {
    int ngroups = (a->N + 3) / 4;
#pragma omp parallel for schedule(static) if ((long long)a->N * a->K > 65536)
    for (int g = 0; g < ngroups; g++) {
        int n = 4 * g, nr = MIN(4, a->N - n);
        switch (a->T) {
        case 1: gemv_rows(1, a, n, nr); break;
        case 2: gemv_rows(2, a, n, nr); break;
        case 3: gemv_rows(3, a, n, nr); break;
        default: gemv_rows(4, a, n, nr); break;
        }
    }
}

/* ================================================================ entry */
enum { K_BF16, K_F32, K_Q, K_AMX };

static int pick(fp_dtype wt, int bf16_kernel, int use_vnni) {
    if ((wt == FP_BF16 || wt == FP_Q8_0 || wt == FP_Q4_0) && bf16_kernel == FP_BF16_AMX) return K_AMX;
    if (wt == FP_BF16 && bf16_kernel == FP_BF16_DP) return K_BF16;
    if ((wt == FP_Q8_0 || wt == FP_Q4_0) && use_vnni) return K_Q;
    return K_F32;
}

static void run_job(int kind, const job_args *a, const void *w, int n0, int t0, int t1, void *panel, float *C0,
                    size_t ldc) {
    if (kind == K_BF16) bf16_job(a, w, n0, t0, t1, panel, C0, ldc);
    else if (kind == K_Q) q_job(a, w, n0, t0, t1, panel, C0, ldc);
    else f32_job(a, w, n0, t0, t1, panel, C0, ldc);
}
/* out rows (ldo floats apart) = silu(g) * u over nvalid columns of `rows` rows of the [rows][nr] blocks cg,
 * cu: fp_swiglu_forward's 16-value code (exact) or fp_swiglu_forward_fast's, a ragged last group zero padded
 * as theirs, so every value has the bits of the unfused SwiGLU. */
static void swiglu_pair_store(float *out, size_t ldo, const float *cg, const float *cu, int nr, int rows, int nvalid,
                              int exact) {
    for (int r = 0; r < rows; r++) {
        const float *g = cg + (size_t)r * nr, *u = cu + (size_t)r * nr;
        float *o = out + (size_t)r * ldo;
        for (int c = 0; c < nvalid; c += 16) {
            if (c + 16 <= nvalid) {
                if (exact) fp_swiglu16(o + c, g + c, u + c);
                else fp_swiglu16_fast(o + c, g + c, u + c);
                continue;
            }
            __mmask16 m = col_mask(nvalid - c, 0);
            float gb[16] __attribute__((aligned(64))), ub[16] __attribute__((aligned(64))), ob[16] __attribute__((aligned(64)));
            _mm512_store_ps(gb, _mm512_maskz_loadu_ps(m, g + c));
            _mm512_store_ps(ub, _mm512_maskz_loadu_ps(m, u + c));
            if (exact) fp_swiglu16(ob, gb, ub);
            else fp_swiglu16_fast(ob, gb, ub);
            _mm512_mask_storeu_ps(o + c, m, _mm512_load_ps(ob));
        }
    }
}
int fp_matmul_avx512_rows_per_pass(fp_dtype wt, int bf16_kernel, int use_vnni) {
    int kind = pick(wt, bf16_kernel, use_vnni);
    return kind == K_F32 || kind == K_Q ? ACT_BLOCK_ROWS : 0;
}

const char *fp_matmul_avx512_name(fp_dtype wt, int bf16_kernel, int use_vnni) {
    switch (pick(wt, bf16_kernel, use_vnni)) {
    case K_AMX: return wt == FP_Q8_0 ? "amx-bf16-q8" : wt == FP_Q4_0 ? "amx-bf16-q4" : "amx-bf16";
    case K_BF16: return "avx512-bf16dp";
    case K_Q: return wt == FP_Q8_0 ? "avx512-vnni-q8" : "avx512-vnni-q4";
    default: return "avx512-f32fma";
    }
}

/* wu != NULL: the SwiGLU pair (fp_matmul_avx512_swiglu_pair), swiglu_exact its SwiGLU */
typedef struct {
    const void *wu;
    int swiglu_exact;
} pair_args;
static int matmul_run(float *out, const float *inp, const uint16_t *tiles, const void *w, fp_dtype wt,
                      const float *bias, int T, int K, int N, int bf16_kernel, int use_vnni, const amx_segs *segs,
                      const pair_args *pair);
int fp_matmul_avx512(float *out, const float *inp, const void *w, fp_dtype wt, const float *bias, int T, int K,
                     int N, int bf16_kernel, int use_vnni) {
    return matmul_run(out, inp, NULL, w, wt, bias, T, K, N, bf16_kernel, use_vnni, NULL, NULL);
}
int fp_matmul_avx512_swiglu_pair(float *out, const float *inp, const void *wg, const void *wu, fp_dtype wt, int T,
                                 int K, int N, int bf16_kernel, int use_vnni, int swiglu_exact) {
    if (T <= FP_GEMV_MAX_T || K <= 0 || N <= 0 || pick(wt, bf16_kernel, use_vnni) == K_AMX ||
        ((wt == FP_Q8_0 || wt == FP_Q4_0) && K % 32))
        return 1;
    pair_args pa = {wu, swiglu_exact};
    return matmul_run(out, inp, NULL, wg, wt, NULL, T, K, N, bf16_kernel, use_vnni, NULL, &pa);
}
int fp_matmul_avx512_tiles(float *out, const uint16_t *tiles, const void *w, fp_dtype wt, const float *bias, int T,
                           int K, int N) {
    if (T <= FP_GEMV_MAX_T || K <= 0 || N <= 0 || pick(wt, FP_BF16_AMX, 0) != K_AMX) return 1;
    return matmul_run(out, NULL, tiles, w, wt, bias, T, K, N, FP_BF16_AMX, 0, NULL, NULL);
}
int fp_matmul_avx512_multi(int nseg, float *const out[], const void *const w[], const float *const bias[],
                           const int N[], fp_dtype wt, const float *inp, const uint16_t *tiles, int T, int K) {
    if (T <= FP_GEMV_MAX_T || K <= 0 || nseg < 1 || nseg > FP_MATMUL_MAX_SEGS || pick(wt, FP_BF16_AMX, 0) != K_AMX ||
        ((wt == FP_Q8_0 || wt == FP_Q4_0) && K % 32))
        return 1;
    amx_segs g = {.n = nseg};
    int ntot = 0;
    for (int s = 0; s < nseg; s++) {
        if (N[s] <= 0 || (s + 1 < nseg && N[s] % 32)) return 1;
        g.n0[s] = ntot;
        g.N[s] = N[s];
        g.w[s] = w[s];
        g.out[s] = out[s];
        g.bias[s] = bias ? bias[s] : NULL;
        ntot += N[s];
    }
    return matmul_run(out[0], inp, tiles, w[0], wt, g.bias[0], T, K, ntot, FP_BF16_AMX, 0, &g, NULL);
}
/* tiles: the activations already in act_to_bf16_tiles' layout (AMX only; inp unused); segs: AMX output
 * segments (NULL: one, out / w / bias / N); pair: the SwiGLU pair (not AMX, T > FP_GEMV_MAX_T, no bias): each
 * job runs its columns of w (the gate) and of pair->wu (up) into two per-thread [rows][NR] blocks, with the
 * same panels, sums and order as two plain calls, then writes silu(gate) * up to out. */
static int matmul_run(float *out, const float *inp, const uint16_t *tiles, const void *w, fp_dtype wt,
                      const float *bias, int T, int K, int N, int bf16_kernel, int use_vnni, const amx_segs *segs,
                      const pair_args *pair) {
    if (T <= FP_GEMV_MAX_T) {
        job_args g = {out, inp, w, wt, bias, T, K, N, NULL, 0, NULL, NULL, NULL};
        gemv(&g);
        return 0;
    }
    int kind = pick(wt, bf16_kernel, use_vnni);
    int nr = kind == K_Q ? Q_NR : kind == K_BF16 || kind == K_AMX ? BF_NR : F_NR;
    int mr = kind == K_Q ? Q_MR : kind == K_BF16 ? BF_MR : kind == K_AMX ? AMX_MR : F_MR;
    size_t panel_bytes = kind == K_Q      ? (size_t)(Q_KC / 32) * Q_BLK
                         : kind == K_BF16 ? (size_t)(BF_KC / 2) * BF_NR * 4
                         : kind == K_AMX  ? 0 /* below */
                                          : (size_t)F_KC * F_NR * 4;
    int Kp = kind == K_AMX ? (K + 31) & ~31 : (K + 1) & ~1, nb = K / 32;
    int Tp = kind == K_AMX ? (T + 31) & ~31 : T;
    size_t act_bytes = 0, ad_off = 0, ac_off = 0;
    if (kind == K_BF16 || (kind == K_AMX && !tiles)) act_bytes = round64((size_t)Tp * Kp * 2);
    if (kind == K_Q) {
        ad_off = round64((size_t)T * K);
        ac_off = ad_off + round64((size_t)T * nb * 4);
        act_bytes = ac_off + round64((size_t)T * nb * 4);
    }
    int nth = omp_get_max_threads();
    if (nth < 1) nth = 1;
    amx_plan pl = {0, 0, 0, 0, 0};
    if (kind == K_AMX) {
        amx_plan_make(&pl, T, K, N, nth);
        panel_bytes = amx_panel_bytes(&pl) + 32 * 32 * 4 + (size_t)16 * pl.nc * 4 + amx_cpark_bytes(pl.nc);
    }
    int npanels = kind == K_AMX ? pl.ngroups : (N + nr - 1) / nr;
    /* activation blocks of ~256 rows for the f32 and VNNI kernels (f32/int8 rows re-streamed per panel
     * otherwise); none for AMX and vdpbf16ps, whose packing per block would cost more than it saves */
    int tb = kind == K_AMX ? pl.tb : t_blocks(T, npanels, mr, nth, kind == K_F32 || kind == K_Q ? ACT_BLOCK_ROWS : 0);
    size_t pair_off = 0, pair_bytes = 0; /* the pair's two output blocks, each pair_bytes, after the panel */
    if (pair) {
        int t0, t1;
        t_range(T, tb, mr, 0, &t0, &t1); /* the first block is the tallest */
        pair_off = round64(panel_bytes);
        pair_bytes = round64(sizeof(float) * (size_t)(t1 - t0) * nr);
        panel_bytes = pair_off + 2 * pair_bytes;
    }
    uint8_t *scratch = fp_matmul_scratch(act_bytes + (size_t)nth * panel_bytes);
    if (!scratch) return -1;

    amx_segs one = {.n = 1, .n0 = {0}, .N = {N}, .w = {w}, .out = {out}, .bias = {bias}};
    job_args a = {out, inp, w, wt, bias, T, K, N, tiles ? (const void *)tiles : scratch, 0, NULL, NULL,
                  segs ? segs : &one};
    if (kind == K_BF16 || kind == K_AMX) a.lda = (size_t)Kp / 2;
    if (kind == K_Q) {
        a.lda = (size_t)K;
        a.ad = (const float *)(scratch + ad_off);
        a.ac = (const int32_t *)(scratch + ac_off);
    }
    if (kind == K_AMX) nr = pl.nc;
    int njobs = npanels * tb;
#pragma omp parallel num_threads(nth)
    {
        if (kind == K_BF16) act_to_bf16((uint16_t *)scratch, inp, T, K, Kp);
        else if (kind == K_AMX && !tiles) act_to_bf16_tiles((uint16_t *)scratch, inp, T, K, Kp, Tp);
        else if (kind == K_Q) act_to_q8((int8_t *)scratch, (float *)(scratch + ad_off), (int32_t *)(scratch + ac_off),
                                        inp, T, K);
        /* (the omp for above ends with a barrier) */
        void *panel = scratch + act_bytes + (size_t)omp_get_thread_num() * panel_bytes;
#pragma omp for schedule(dynamic, 1)
        for (int j = 0; j < njobs; j++) {
            int n0 = (j % npanels) * nr, t0, t1;
            t_range(T, tb, mr, j / npanels, &t0, &t1);
            if (t0 >= t1) continue;
            if (kind == K_AMX) {
                int u0, u1;
                amx_group(&pl, j % npanels, &u0, &u1);
                float *ctmp = (float *)((uint8_t *)panel + amx_panel_bytes(&pl));
                amx_job(&a, &pl, 32 * u0, MIN(32 * u1, N) - 32 * u0, t0, t1, panel, ctmp, ctmp + 32 * 32,
                        ctmp + 32 * 32 + (size_t)16 * pl.nc);
            }
            else if (pair) {
                float *cg = (float *)((uint8_t *)panel + pair_off), *cu = (float *)((uint8_t *)panel + pair_off + pair_bytes);
                run_job(kind, &a, w, n0, t0, t1, panel, cg, (size_t)nr);
                run_job(kind, &a, pair->wu, n0, t0, t1, panel, cu, (size_t)nr);
                swiglu_pair_store(out + (size_t)t0 * N + n0, (size_t)N, cg, cu, nr, t1 - t0, MIN(nr, N - n0),
                                  pair->swiglu_exact);
            } else run_job(kind, &a, w, n0, t0, t1, panel, out + (size_t)t0 * N + n0, (size_t)N);
        }
    }
    return 0;
}

/* Fused gate/up GEMM + SwiGLU on AMX: out[T,N] = silu(inp Wg^T) * (inp Wu^T), Wg and Wu [N,K] in dtype wt.
 * 0 done; 1 not handled here (wt not BF16/Q8_0/Q4_0, T <= FP_GEMV_MAX_T, K > AMX_KMAX): the caller runs the
 * unfused computation; -1 no scratch memory (out untouched).  The caller checked AMX-BF16 (FP_BF16_AMX). */
static int amx_swiglu_run(float *out, uint16_t *otiles, const float *inp, const uint16_t *itiles, const void *wg,
                          const void *wu, fp_dtype wt, int T, int K, int N);
int fp_matmul_avx512_swiglu(float *out, const float *inp, const void *wg, const void *wu, fp_dtype wt, int T, int K,
                            int N) {
    return amx_swiglu_run(out, NULL, inp, NULL, wg, wu, wt, T, K, N);
}
int fp_matmul_avx512_swiglu_tiles(uint16_t *tiles, const float *inp, const uint16_t *itiles, const void *wg,
                                  const void *wu, fp_dtype wt, int T, int K, int N) {
    return amx_swiglu_run(NULL, tiles, inp, itiles, wg, wu, wt, T, K, N);
}
/* Zeroes the padding of bf16 A tiles for T x N values (rows [T, Tp), columns [N, Np)), which no block writes. */
static void zero_tile_padding(uint16_t *tiles, int T, int N) {
    int Tp = (T + 31) & ~31, nkb = (N + 31) / 32;
    for (int r = T; r < Tp; r++)
        for (int j = 0; j < nkb; j++) memset(tiles + ((size_t)(r / 16) * nkb + j) * 512 + 32 * (r % 16), 0, 64);
    if (N % 32)
        for (int r = 0; r < T; r++)
            memset(tiles + ((size_t)(r / 16) * nkb + nkb - 1) * 512 + 32 * (r % 16) + N % 32, 0, 2 * (32 - N % 32));
}
static int amx_swiglu_run(float *out, uint16_t *otiles, const float *inp, const uint16_t *itiles, const void *wg,
                          const void *wu, fp_dtype wt, int T, int K, int N) {
    if (pick(wt, FP_BF16_AMX, 0) != K_AMX || T <= FP_GEMV_MAX_T || K <= 0 || N <= 0) return 1;
    int Kp = (K + 31) & ~31, Tp = (T + 31) & ~31;
    if (Kp > AMX_KMAX) return 1;
    int nth = omp_get_max_threads();
    if (nth < 1) nth = 1;
    /* plan on the 2N interleaved columns: nc (multiple of 64) panel columns = nc / 2 output columns a job;
     * one k chunk (kc = Kp) since Kp <= AMX_KMAX */
    amx_plan pl;
    amx_plan_make(&pl, T, K, 2 * N, nth);
    int ngroups = pl.ngroups, tb = pl.tb;
    size_t act_bytes = itiles ? 0 : round64((size_t)Tp * Kp * 2);
    size_t panel_bytes = (size_t)pl.nc * Kp * 2 + amx_cpark_bytes(pl.nc);
    uint8_t *scratch = fp_matmul_scratch(act_bytes + (size_t)nth * panel_bytes);
    if (!scratch) return -1;
    job_args a = {out, inp, wg, wt, NULL, T, K, N, itiles ? (const void *)itiles : scratch, (size_t)Kp / 2, NULL, NULL,
                  NULL};
    int njobs = ngroups * tb;
#pragma omp parallel num_threads(nth)
    {
        if (!itiles) act_to_bf16_tiles((uint16_t *)scratch, inp, T, K, Kp, Tp); /* (ends with a barrier) */
        uint8_t *panel = scratch + act_bytes + (size_t)omp_get_thread_num() * panel_bytes;
#pragma omp for schedule(dynamic, 1)
        for (int j = 0; j < njobs; j++) {
            int u0, u1, t0, t1; /* units of 32 panel columns = 16 output columns */
            amx_group(&pl, j % ngroups, &u0, &u1);
            t_range(T, tb, AMX_MR, j / ngroups, &t0, &t1);
            if (t0 >= t1 || 16 * u0 >= N) continue;
            amx_swiglu_job(&a, wu, 16 * u0, MIN(16 * u1, N) - 16 * u0, t0, t1, (uint32_t *)panel,
                           (float *)(panel + (size_t)pl.nc * Kp * 2), otiles);
        }
    }
    if (otiles) zero_tile_padding(otiles, T, N);
    return 0;
}
