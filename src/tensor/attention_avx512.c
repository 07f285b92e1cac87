/* AVX-512 (f32, bf16 dot products) and AMX-BF16 kernels behind fp_attention_forward_ex (dispatch in attention.c).
 * Compiled with -mavx512{f,bw,vl,dq,bf16,vnni} (see the Makefile); the AMX task carries its own
 * target("amx-tile,amx-bf16") attribute and only runs after cpu.c checked the CPU and got the OS permission.
 *
 * All three kernels are a flash-attention style online softmax over blocks of BK = 64 keys.  Per call, the keys
 * a query can see (min kstart .. max qpos) are packed once per KV head, in parallel, into a scratch buffer
 * shared by all query heads of the group and all query tiles; then OpenMP runs tasks, the latest tiles of
 * query rows (most keys) first: (query head, tile) for the exact kernel and for MHA; for the amx kernel with
 * GQA, (KV head, tile) running all the query heads of the KV head over the keys in chunks (ax_task).  The
 * softmax keeps, per query row, the running maximum m of the raw scores and works in base 2:
 * p = 2^(s c - m c) with c = log2(e) / sqrt(d), mc = m c rounded once and reused for the rescaling factor
 * 2^(mc_old - mc_new), so every weight of a row is shifted by the same exponent (which cancels in
 * o = sum p v / sum p).  Masks (causal, kstart) only on boundary blocks.
 *
 * exact (f32): K^T packed as [block][d][64] f32.  A task = 48 query rows; for each key block, micro-tiles of
 *   6 rows: S (6 x 64) in 24 zmm accumulators (x outer: 4 vector loads of K^T, 6 broadcasts of q, 24 FMAs),
 *   online softmax in registers, P (6 x 64 f32) to a small buffer, then P V over the block's keys into 24
 *   fresh zmm (6 rows x 64 head dims; d > 64 in chunks of 64, tails masked) and O = O * corr + PV.
 * dp (bf16 inputs, f32 accumulation; AVX512-BF16 without AMX): the exact kernel's tasks and micro-tiles with
 *   vdpbf16ps, two products per lane, on K and V packed as for the amx kernel (below): S over head-dim pairs (a
 *   Q pair broadcast against pair p of 16 keys, one VNNI row of a K tile), P V over key pairs (a pair of
 *   weights broadcast, rounded to bf16, against a row of key pairs of V); the softmax as in the exact kernel.
 * amx (bf16 inputs, f32 accumulation): K packed per 16 keys as the VNNI B operand [d/2][16][2] bf16, V per
 *   32 keys as [16 key pairs][d][2] bf16.  A task = 32 query rows (Q converted to bf16 rows).  Per block:
 *   S = Q K^T in 2 x 2 C tiles per 32 keys (tdpbf16ps, A = 2 Q tiles, B = 2 K tiles, over d/32), stored to
 *   a 32 x 64 f32 buffer; softmax on 16-wide rows in zmm, P written as bf16 rows (a ring of AX_PB blocks);
 *   P V accumulated straight into O, AX_PEND blocks at a time: 2 x 2 C tiles per 32 head dims loaded from
 *   O, += P V of each pending block (A = P tiles, B = V tiles), stored back.
 *   Lazy rescaling: a row's reference maximum m (the shift of its weights) only moves when a block would give
 *   it weights above 2^8.  The weights are first computed against the current m (no horizontal max); only
 *   when one of their 16 partial sums exceeds 2^8 (some weight > 2^6) does the row take the exact path: its
 *   block maximum, the new m, the weights again, L and O scaled by 2^(mc_old - mc_new) (O once the pending
 *   blocks before this one are in it).  So the weights of a row are 2^(s c - mc) <= 2^8 for one mc per
 *   stretch of blocks; o = sum p v / sum p cancels the shift exactly as before.  The first block of a task
 *   always takes the exact path.  exp: 2^t = p(t - floor t) 2^floor(t) (vreduceps, vscalefps), p the
 *   degree-3 minimax polynomial of 2^f on [0, 1) (relative error < 7.5e-5), under MXCSR.FTZ.
 *   Measured on this project's (SPR-class) cores: tile work and AVX-512 work do not overlap (interleaving
 *   them finely was slower than running them one after the other), so the kernel minimises each: no
 *   horizontal reductions, fewer tile stores (O every AX_PEND blocks), prefetched q / out rows. */
#include "tensor/kernels.h"
#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* Keeps a broadcast in a register: without it GCC folds it into every FMA as an embedded-broadcast memory
 * operand (24 loads per 24 FMAs instead of 6 + 4, which makes the micro-kernels load-bound). */
#define REG(x) __asm__("" : "+v"(x))

#define BK 64    /* keys per block */
#define EX_MR 6  /* exact: query rows per micro-tile */
#define EX_BQ 48 /* exact: query rows per task */
#define AX_BQ 32 /* amx: query rows per task (2 tiles of 16) */
/* Grouped amx tasks (ax_task, hn > 1): at most AX_MAX_HEADS query heads per task; a key chunk's packed K and V
 * take AX_GROUP_CHUNK_BYTES (a quarter of the 2 MiB L2, beside the heads' state and the P / S buffers). */
#define AX_MAX_HEADS 16
#define AX_GROUP_CHUNK_BYTES (512 * 1024)

typedef struct {
    float *out;
    const float *q, *k, *v;
    const int *qpos, *kstart;
    int nq, nh, nkv, d, dp; /* dp: d rounded up to 16 */
    int nblk;               /* key blocks 0 .. nblk-1 exist in the packed buffers (those below kb0 unpacked) */
    float c;                /* log2(e) / sqrt(d) */
    float *kt;              /* exact: [nkv][nblk][d][BK] f32 */
    uint16_t *kb, *vb;      /* amx, dp: [nkv][nblk][4][d/2][16][2] and [nkv][nblk][2][16][d][2] bf16 */
    uint16_t *otiles;       /* amx: output as bf16 A tiles (NULL: f32 rows in out); onkb tiles of 32 per 16 rows */
    int onkb;
} att_ctx;

/* 2^t for t <= ~0 (lanes below -126 clamp there; callers zero masked lanes): t = n + f, |f| <= 1/2,
 * 2^f by the degree-DEG Taylor polynomial of e^(f ln2), scalef for 2^n.  Truncation: DEG 7 < 6e-9 relative
 * (the exact kernel's weights and both kernels' rescaling factors). */
AI __m512 exp2_neg(__m512 t, const int DEG) {
    static const float cf[8] = {1.0f, 0.6931471805599453f, 0.2402265069591007f, 5.5504108664821576e-02f,
                                9.618129107628477e-03f, 1.3333558146428441e-03f, 1.5403530393381606e-04f,
                                1.5252733804059838e-05f};
    t = _mm512_max_ps(t, _mm512_set1_ps(-126.0f));
    __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(t, n);
    __m512 p = _mm512_set1_ps(cf[DEG]);
    for (int i = DEG - 1; i >= 0; i--) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(cf[i]));
    return _mm512_scalef_ps(p, n);
}

/* 2^t for the amx kernel's weights (t <= ~8): f = t - floor(t) in [0, 1) by vreduceps, p(f) ~ 2^f by the
 * degree-3 minimax polynomial for relative error (7.5e-5 = 2^-13.7, found by a Remez exchange; the weights are
 * rounded to bf16 right after, 2^-9, so degree 4 (2.6e-6) bought nothing but an FMA: the fast kernel was
 * 3-5 % faster without it, and test_attention's error/tolerance stayed at 0.43), then vscalefps multiplies by
 * 2^floor(t) itself.  No clamp: results below 2^-126 would be
 * subnormal (~40x slower through microcode assists), so ax_task runs with MXCSR.FTZ set and they flush to 0
 * (weights 2^-126 below the row's reference; masked lanes, t = -inf, are zeroed by the callers). */
AI __m512 ax_exp2(__m512 t) {
    __m512 f = _mm512_reduce_ps(t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(7.80245227e-02f), f, _mm512_set1_ps(2.26067155e-01f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.95833541e-01f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.99925219e-01f));
    return _mm512_scalef_ps(p, t);
}

static __mmask16 tail16(int n) { return n >= 16 ? (__mmask16)0xffff : n <= 0 ? 0 : (__mmask16)((1u << n) - 1); }

/* Valid keys kb + j of one row (ks <= kb + j <= p) as a 64-bit mask over j. */
static uint64_t row_mask(int kb, int p, int ks) {
    int lo = MAX(0, ks - kb), hi = MIN(BK - 1, p - kb);
    if (hi < lo) return 0;
    uint64_t m = hi - lo == 63 ? ~0ull : ((1ull << (hi - lo + 1)) - 1);
    return m << lo;
}

static void row_bf16(uint16_t *dst, const float *src, int n) {
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = tail16(n - i);
        __m256bh b = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i));
        _mm256_mask_storeu_epi16(dst + i, m, (__m256i)b);
    }
}

#define prefetch_row(p, d, hint)                                                                                   \
    do {                                                                                                           \
        const char *pr_ = (const char *)(p);                                                                       \
        for (int x_ = 0; x_ < 4 * (d); x_ += 64) _mm_prefetch(pr_ + x_, hint);                                     \
        _mm_prefetch(pr_ + 4 * (d) - 1, hint);                                                                     \
    } while (0)

/* ---------------------------------------------------------------- packing (one block of BK keys) */
static void pack_exact(const att_ctx *C, int kh, int b, int pmax) {
    const int d = C->d;
    const size_t kvs = (size_t)C->nkv * d;
    float *kt = C->kt + ((size_t)kh * C->nblk + b) * d * BK;
    for (int j = 0; j < BK; j++) {
        int key = b * BK + j;
        if (key > pmax) {
            for (int x = 0; x < d; x++) kt[(size_t)x * BK + j] = 0.0f;
            continue;
        }
        const float *kr = C->k + (size_t)key * kvs + (size_t)kh * d;
        for (int x = 0; x < d; x++) kt[(size_t)x * BK + j] = kr[x];
    }
}

/* One block of BK keys as bf16 for the amx and dp kernels: K per 16 keys as the VNNI B operand [d/2][16][2]
 * (the bf16 pair p of 16 keys in one 64-byte row), V as key pairs [BK/2][d][2]. */
static void pack_bf16(const att_ctx *C, int kh, int b, int pmax, uint16_t *tmp /* [2][d] */) {
    const int d = C->d;
    const size_t kvs = (size_t)C->nkv * d, blk = (size_t)BK * d;
    uint32_t *kd = (uint32_t *)(C->kb + ((size_t)kh * C->nblk + b) * blk); /* [4][d/2][16] dwords */
    uint16_t *vd = C->vb + ((size_t)kh * C->nblk + b) * blk;                /* [2][16][d][2] */
    for (int j = 0; j < BK; j += 2) {
        for (int e = 0; e < 2; e++) {
            int key = b * BK + j + e;
            if (key > pmax) {
                memset(tmp + (size_t)e * d, 0, sizeof(uint16_t) * d);
                continue;
            }
            row_bf16(tmp + (size_t)e * d, C->k + (size_t)key * kvs + (size_t)kh * d, d);
        }
        for (int e = 0; e < 2; e++) { /* K: key j+e of sub-block (j+e)/16, dword p = (k[2p], k[2p+1]) */
            int jj = j + e;
            uint32_t *dst = kd + (size_t)(jj / 16) * 8 * d + jj % 16;
            const uint32_t *src = (const uint32_t *)(tmp + (size_t)e * d);
            for (int p = 0; p < d / 2; p++) dst[(size_t)p * 16] = src[p];
        }
        for (int e = 0; e < 2; e++) {
            int key = b * BK + j + e;
            if (key > pmax) {
                memset(tmp + (size_t)e * d, 0, sizeof(uint16_t) * d);
                continue;
            }
            row_bf16(tmp + (size_t)e * d, C->v + (size_t)key * kvs + (size_t)kh * d, d);
        }
        /* V: key pair (j, j+1) = pair (j % 32) / 2 of sub-block j / 32: [x][2] interleaved */
        uint16_t *dst = vd + (size_t)(j / 32) * 32 * d + (size_t)((j % 32) / 2) * 2 * d;
        for (int x = 0; x < d; x++) {
            dst[2 * x] = tmp[x];
            dst[2 * x + 1] = tmp[d + x];
        }
    }
}

/* ---------------------------------------------------------------- micro-tiles of the exact and dp kernels */
/* Both kernels run the same micro-tiles; DP (a constant) picks the operands and the multiply:
 *   exact: K^T packed as [d][BK] f32, Q rows f32 (one element broadcast per step), P [MR][BK] f32, V the key
 *          rows of the block (kvs floats apart); S and P V by vfmadd, one product per lane;
 *   dp:    K and V packed as for the amx kernel (pack_bf16: K [4][d/2][16] dwords, the bf16 pair p of 16 keys
 *          in one vector; V [BK/2][d] dwords of key pairs), Q rows as bf16 pairs (one pair broadcast per
 *          step), P as bf16 pairs [MR][BK/2] dwords; vdpbf16ps, two products per lane, half the steps.
 * The softmax and its statistics are f32 in both (dp: L sums the weights before their rounding to bf16). */

/* acc + b c: one product per lane (exact) or the sum of two bf16 products (dp) */
AI __m512 mac(const int DP, __m512 acc, __m512 b, __m512 c) {
    return DP ? _mm512_dpbf16_ps(acc, (__m512bh)b, (__m512bh)c) : _mm512_fmadd_ps(b, c, acc);
}
/* broadcast of one f32 (exact) or of one bf16 pair (dp: the dword's bits as they are) */
AI __m512 bcast(const int DP, const float *p) {
    if (!DP) return _mm512_set1_ps(*p);
    uint32_t w;
    memcpy(&w, p, sizeof w);
    return _mm512_castsi512_ps(_mm512_set1_epi32((int)w));
}

/* P V for MR rows and NV vectors of head dims (the last masked with tm), steps j0..j1-1 of the block (keys;
 * dp: key pairs): O[r] = O[r] * cr[r] + sum_j P[r][j] v_j.  vb: V at the first head dim, rows vs apart; P: ps
 * per row. */
AI void ex_pv(const int MR, const int NV, const int DP, const float *P, int ps, const float *vb, size_t vs, int j0,
              int j1, __mmask16 tm, float *O, int dp, const float *cr) {
    __m512 a[EX_MR][4];
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
        for (int c = 0; c < NV; c++) a[r][c] = _mm512_setzero_ps();
    for (int j = j0; j < j1; j++) {
        const float *vj = vb + (size_t)j * vs;
        __m512 vv[4];
#pragma GCC unroll 4
        for (int c = 0; c < NV; c++)
            vv[c] = c == NV - 1 ? _mm512_maskz_loadu_ps(tm, vj + 16 * c) : _mm512_loadu_ps(vj + 16 * c);
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++) {
            __m512 pb = bcast(DP, P + r * ps + j);
            REG(pb);
#pragma GCC unroll 4
            for (int c = 0; c < NV; c++) a[r][c] = mac(DP, a[r][c], pb, vv[c]);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) {
        __m512 cb = _mm512_set1_ps(cr[r]);
        float *o = O + (size_t)r * dp;
#pragma GCC unroll 4
        for (int c = 0; c < NV; c++)
            _mm512_store_ps(o + 16 * c, _mm512_fmadd_ps(_mm512_load_ps(o + 16 * c), cb, a[r][c]));
    }
}

/* One micro-tile: MR query rows (q0, rows qs apart; dp: bf16 pairs) against one key block (kt: packed K, step x
 * of its 16-key vector c at x kstep + c kvec; vb: V rows vs apart, as above).  mask: per-row valid keys, or NULL (all 64 valid).  State per row: O (dp floats),
 * L (16 partial sums), M (raw max), MC (M * c).  P: EX_MR * BK floats of scratch. */
AI void ex_micro(const int MR, const int DP, const att_ctx *C, const float *q0, size_t qs, const float *kt,
                 const float *vb, size_t vs, const uint64_t *mask, int jlo, int jhi, float *O, float *L, float *M,
                 float *MC, float *P) {
    const int d = C->d, dp = C->dp, nx = DP ? d / 2 : d, ps = DP ? BK / 2 : BK;
    const size_t kstep = DP ? 16 : BK, kvec = DP ? (size_t)8 * d : 16;
    __m512 s[EX_MR][4];
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) s[r][c] = _mm512_setzero_ps();
    for (int x = 0; x < nx; x++) {
        const float *kx = kt + (size_t)x * kstep;
        __m512 k0 = _mm512_load_ps(kx), k1 = _mm512_load_ps(kx + kvec), k2 = _mm512_load_ps(kx + 2 * kvec),
               k3 = _mm512_load_ps(kx + 3 * kvec);
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++) {
            __m512 qb = bcast(DP, q0 + (size_t)r * qs + x);
            REG(qb);
            s[r][0] = mac(DP, s[r][0], qb, k0);
            s[r][1] = mac(DP, s[r][1], qb, k1);
            s[r][2] = mac(DP, s[r][2], qb, k2);
            s[r][3] = mac(DP, s[r][3], qb, k3);
        }
    }
    const __m512 cv = _mm512_set1_ps(C->c), ninf = _mm512_set1_ps(-INFINITY);
    float ci[16] __attribute__((aligned(64))) = {0}, cr[16] __attribute__((aligned(64)));
    __m512 ps_sum[EX_MR];
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) {
        if (mask)
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++) s[r][c] = _mm512_mask_blend_ps((__mmask16)(mask[r] >> (16 * c)), ninf, s[r][c]);
        float bm = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(s[r][0], s[r][1]), _mm512_max_ps(s[r][2], s[r][3])));
        float mn = bm > M[r] ? bm : M[r], mc = mn * C->c;
        ci[r] = MC[r] - mc;
        M[r] = mn;
        MC[r] = mc;
        __m512 mcv = _mm512_set1_ps(mc), sum = _mm512_setzero_ps(), e[4];
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            /* dp: degree 5 (< 4e-6 relative), well below the rounding of the weights to bf16 (2^-9) */
            e[c] = exp2_neg(_mm512_fmsub_ps(s[r][c], cv, mcv), DP ? 5 : 7);
            if (mask) e[c] = _mm512_maskz_mov_ps((__mmask16)(mask[r] >> (16 * c)), e[c]);
            if (!DP) _mm512_store_ps(P + r * BK + 16 * c, e[c]);
            sum = _mm512_add_ps(sum, e[c]);
        }
        if (DP) {
            _mm512_store_si512(P + r * ps, (__m512i)_mm512_cvtne2ps_pbh(e[1], e[0]));
            _mm512_store_si512(P + r * ps + 16, (__m512i)_mm512_cvtne2ps_pbh(e[3], e[2]));
        }
        ps_sum[r] = sum;
    }
    _mm512_store_ps(cr, exp2_neg(_mm512_load_ps(ci), 7));
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++)
        _mm512_store_ps(L + 16 * r, _mm512_fmadd_ps(_mm512_load_ps(L + 16 * r), _mm512_set1_ps(cr[r]), ps_sum[r]));
    /* dp: a pair's other key, if outside [jlo, jhi), has weight 0 */
    const int j0 = DP ? jlo / 2 : jlo, j1 = DP ? (jhi + 1) / 2 : jhi;
    for (int x0 = 0; x0 < d; x0 += 64) {
        int rem = d - x0, nv = rem >= 64 ? 4 : (rem + 15) / 16;
        __mmask16 tm = tail16(rem - 16 * (nv - 1));
        switch (nv) {
        case 4: ex_pv(MR, 4, DP, P, ps, vb + x0, vs, j0, j1, tm, O + x0, dp, cr); break;
        case 3: ex_pv(MR, 3, DP, P, ps, vb + x0, vs, j0, j1, tm, O + x0, dp, cr); break;
        case 2: ex_pv(MR, 2, DP, P, ps, vb + x0, vs, j0, j1, tm, O + x0, dp, cr); break;
        default: ex_pv(MR, 1, DP, P, ps, vb + x0, vs, j0, j1, tm, O + x0, dp, cr); break;
        }
    }
}

/* ---------------------------------------------------------------- tasks of the exact and dp kernels */
/* Per-thread scratch: O [EX_BQ][dp], L [EX_BQ][16], P [EX_MR][BK] (dp: its bf16 pairs), M, MC [EX_BQ], and for
 * dp the task's Q as bf16 pairs [EX_BQ][d/2] */
static size_t ex_scratch_floats(int dp, int d, int dpk) {
    return (size_t)EX_BQ * dp + EX_BQ * 16 + EX_MR * BK + 2 * EX_BQ + (dpk ? (size_t)EX_BQ * (d / 2) + 16 : 0) + 32;
}

#define EX_MICRO(MR) ex_micro(MR, DP, C, q0 + (size_t)r0 * qs0, qs0, kt, vb, vs, mp, jlo, jhi, o, l, m, mc, P)

/* Query rows [i0, i1) (at most EX_BQ) of head h; DP: the dp kernel, else the exact one. */
AI void ex_task_kind(const att_ctx *C, int i0, int i1, int h, float *scr, const int DP) {
    const int d = C->d, dp = C->dp, n = i1 - i0, kh = h / (C->nh / C->nkv);
    const size_t qs = (size_t)C->nh * d, kvs = (size_t)C->nkv * d;
    float *O = scr, *L = O + (size_t)EX_BQ * dp, *P = L + EX_BQ * 16, *M = P + EX_MR * BK, *MC = M + EX_BQ;
    uint32_t *qb = (uint32_t *)(MC + EX_BQ); /* dp only */
    int pos[EX_BQ], ks[EX_BQ];
    enum { NMT = (EX_BQ + EX_MR - 1) / EX_MR };
    int pmn[NMT], pmx[NMT], kmn[NMT], kmx[NMT];
    int tpmax = 0, tkmin = INT32_MAX;
    const float *qh = C->q + (size_t)i0 * qs + (size_t)h * d;
    for (int r = 0; r < n; r++) {
        pos[r] = C->qpos ? C->qpos[i0 + r] : i0 + r;
        ks[r] = C->kstart ? C->kstart[i0 + r] : 0;
        M[r] = -FLT_MAX;
        MC[r] = -FLT_MAX * C->c;
        for (int x = 0; x < dp; x++) O[(size_t)r * dp + x] = 0.0f;
        for (int x = 0; x < 16; x++) L[16 * r + x] = 0.0f;
        if (DP) row_bf16((uint16_t *)(qb + (size_t)r * (d / 2)), qh + (size_t)r * qs, d);
        int mt = r / EX_MR;
        if (r % EX_MR == 0) {
            pmn[mt] = kmn[mt] = INT32_MAX;
            pmx[mt] = kmx[mt] = INT32_MIN;
        }
        pmn[mt] = MIN(pmn[mt], pos[r]);
        pmx[mt] = MAX(pmx[mt], pos[r]);
        kmn[mt] = MIN(kmn[mt], ks[r]);
        kmx[mt] = MAX(kmx[mt], ks[r]);
        tpmax = MAX(tpmax, pos[r]);
        tkmin = MIN(tkmin, ks[r]);
    }
    /* the micro-tiles' operands: Q rows (dp: the task's bf16 pairs) qs0 apart, packed K, V rows vs apart */
    const float *q0 = DP ? (const float *)qb : qh;
    const size_t qs0 = DP ? (size_t)d / 2 : qs, vs = DP ? (size_t)d : kvs;
    for (int kb = tkmin / BK * BK; kb <= tpmax; kb += BK) {
        const size_t bi = (size_t)kh * C->nblk + kb / BK;
        const float *kt = DP ? (const float *)(C->kb + bi * BK * d) : C->kt + bi * d * BK;
        const float *vb = DP ? (const float *)(C->vb + bi * BK * d) : C->v + (size_t)kb * kvs + (size_t)kh * d;
        for (int r0 = 0; r0 < n; r0 += EX_MR) {
            int mt = r0 / EX_MR, mr = MIN(EX_MR, n - r0);
            if (kb > pmx[mt] || kb + BK <= kmn[mt]) continue;
            int bnd = kb + BK - 1 > pmn[mt] || kb < kmx[mt];
            uint64_t mk[EX_MR];
            if (bnd)
                for (int r = 0; r < mr; r++) mk[r] = row_mask(kb, pos[r0 + r], ks[r0 + r]);
            int jlo = MAX(0, kmn[mt] - kb), jhi = MIN(BK, pmx[mt] - kb + 1);
            const uint64_t *mp = bnd ? mk : NULL;
            float *o = O + (size_t)r0 * dp, *l = L + 16 * r0, *m = M + r0, *mc = MC + r0;
            switch (mr) {
            case 6: EX_MICRO(6); break;
            case 5: EX_MICRO(5); break;
            case 4: EX_MICRO(4); break;
            case 3: EX_MICRO(3); break;
            case 2: EX_MICRO(2); break;
            default: EX_MICRO(1); break;
            }
        }
    }
    for (int r = 0; r < n; r++) {
        __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(_mm512_load_ps(L + 16 * r)));
        float *o = C->out + (size_t)(i0 + r) * qs + (size_t)h * d;
        for (int x = 0; x < d; x += 16)
            _mm512_mask_storeu_ps(o + x, tail16(d - x), _mm512_mul_ps(_mm512_load_ps(O + (size_t)r * dp + x), inv));
    }
}

static void ex_task(const att_ctx *C, int i0, int i1, int h, float *scr) { ex_task_kind(C, i0, i1, h, scr, 0); }
static void dp_task(const att_ctx *C, int i0, int i1, int h, float *scr) { ex_task_kind(C, i0, i1, h, scr, 1); }

/* ---------------------------------------------------------------- AMX-BF16 kernel */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} att_tilecfg;
/* tmm0-3: C (16 rows x 16 f32), tmm4-5: A (16 rows x 32 bf16), tmm6-7: B (16 pairs x 16 x 2 bf16) */
static const att_tilecfg att_tcfg __attribute__((aligned(64))) = {
    1, 0, {0}, {64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0},
    {16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0}};

#define AX_PEND 3 /* blocks of P whose P V is deferred, then accumulated into O with one load / store of its tiles */
#define AX_PB (AX_PEND + 1) /* P buffers (a ring) */
/* Per-thread scratch of the amx kernel: the blocks' S and P buffers (S [2][32][64] f32, P ring [AX_PB][32][64]
 * bf16), then one state per query head of the task (hn heads: 1, or a KV group's in the grouped mode). */
static size_t ax_shared_floats(void) { return 2 * AX_BQ * BK + AX_PB * AX_BQ * BK / 2; }
/* One head: O [32][d] f32, L [32][16], M, MC, CR [32], Qb [32][d] bf16 (a multiple of 16 floats: d % 32 == 0) */
static size_t ax_head_floats(int d) { return (size_t)AX_BQ * d + AX_BQ * 16 + 3 * AX_BQ + (size_t)AX_BQ * d / 2; }
static size_t ax_scratch_floats(int d, int hn) { return ax_shared_floats() + (size_t)hn * ax_head_floats(d) + 32; }

#define MEMBAR() __asm__ volatile("" ::: "memory") /* the tile intrinsics are asm without memory operands */
#define AX_WMAX 256.0f /* lazy rescaling: a row's weights stay <= 2^8 (partial sums of 4 checked against it) */

/* C tiles 0-3 += sum over steps i < n of A (tiles 4, 5: a0[i], a1[i], rows sa bytes apart) x B (tiles 6, 7:
 * b0[i], b1[i], rows sb bytes apart), software-pipelined as the GEMMs' k loop (AMX_2X2_KLOOP in
 * matmul_avx512.c): tile registers are not renamed, so each load goes right after the last product that reads
 * the tile, ahead of its first use; every C tile still sums its products in step order. */
__attribute__((target("amx-tile,amx-bf16"))) AI void ax_2x2_chain(int n, const void *const *a0,
                                                                    const void *const *a1, size_t sa,
                                                                    const void *const *b0,
                                                                    const void *const *b1, size_t sb) {
    _tile_loadd(4, a0[0], sa);
    _tile_loadd(6, b0[0], sb);
    _tile_loadd(7, b1[0], sb);
    _tile_loadd(5, a1[0], sa);
    for (int i = 0; i + 1 < n; i++) {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(2, 5, 6);
        _tile_loadd(6, b0[i + 1], sb);
        _tile_dpbf16ps(1, 4, 7);
        _tile_loadd(4, a0[i + 1], sa);
        _tile_dpbf16ps(3, 5, 7);
        _tile_loadd(5, a1[i + 1], sa);
        _tile_loadd(7, b1[i + 1], sb);
    }
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(3, 5, 7);
}

/* AMX work units, each a few tdpbf16ps ending in tile stores.
 * S unit: S[32][64] (keys 32 hf .. 32 hf + 31 of the block) = Q (32 x d, bf16 rows) x K half-block. */
__attribute__((target("amx-tile,amx-bf16"))) static inline void ax_s_unit(const uint16_t *Qb, const uint16_t *Kb,
                                                                           int hf, int d, float *S) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    const uint16_t *kp = Kb + (size_t)(2 * hf) * 16 * d;
    const void *a0[FP_ATT_AMX_MAX_D / 32], *a1[FP_ATT_AMX_MAX_D / 32], *b0[FP_ATT_AMX_MAX_D / 32], *b1[FP_ATT_AMX_MAX_D / 32];
    for (int c = 0; c < d / 32; c++) {
        a0[c] = Qb + 32 * c;
        a1[c] = Qb + 16 * d + 32 * c;
        b0[c] = kp + 512 * c;
        b1[c] = kp + 16 * d + 512 * c;
    }
    ax_2x2_chain(d / 32, a0, a1, 2 * (size_t)d, b0, b1, 64);
    _tile_stored(0, S + 32 * hf, 4 * BK);
    _tile_stored(1, S + 32 * hf + 16, 4 * BK);
    _tile_stored(2, S + 16 * BK + 32 * hf, 4 * BK);
    _tile_stored(3, S + 16 * BK + 32 * hf + 16, 4 * BK);
}
/* Halves of 32 keys of block kb that some row of the task sees: [*h0, *h1). */
static void ax_halves(int kb, int tkmin, int tpmax, int *h0, int *h1) {
    *h0 = kb + 32 <= tkmin ? 1 : 0;
    *h1 = kb + 32 <= tpmax ? 2 : 1;
}

/* PV unit: O[32][x0 .. x0 + 32) += sum over the key blocks kb0, kb0 + BK, .. < kb1 of P (32 x 64 keys bf16, in
 * ring slot (kb - kfirst) / BK % AX_PB) x V block ([2][16 pairs][d][2]); halves no row sees are skipped. */
__attribute__((target("amx-tile,amx-bf16"))) static inline void ax_pv_unit(const uint16_t *Pb, const uint16_t *Vh,
                                                                            int kfirst, int kb0, int kb1, int tkmin,
                                                                            int tpmax, int x0, int d, float *O) {
    _tile_loadd(0, O + x0, 4 * d);
    _tile_loadd(1, O + x0 + 16, 4 * d);
    _tile_loadd(2, O + (size_t)16 * d + x0, 4 * d);
    _tile_loadd(3, O + (size_t)16 * d + x0 + 16, 4 * d);
    const void *a0[2 * AX_PB], *a1[2 * AX_PB], *b0[2 * AX_PB], *b1[2 * AX_PB];
    int n = 0;
    for (int kb = kb0; kb < kb1; kb += BK) {
        const uint16_t *P = Pb + (size_t)((kb - kfirst) / BK % AX_PB) * AX_BQ * BK;
        const uint16_t *Vb = Vh + (size_t)(kb / BK) * BK * d;
        int h0, h1;
        ax_halves(kb, tkmin, tpmax, &h0, &h1);
        for (int hf = h0; hf < h1; hf++, n++) {
            const uint16_t *vp = Vb + (size_t)hf * 32 * d + 2 * x0;
            a0[n] = P + 32 * hf;
            a1[n] = P + 16 * BK + 32 * hf;
            b0[n] = vp;
            b1[n] = vp + 32;
        }
    }
    if (n) ax_2x2_chain(n, a0, a1, 2 * BK, b0, b1, 4 * (size_t)d);
    _tile_stored(0, O + x0, 4 * d);
    _tile_stored(1, O + x0 + 16, 4 * d);
    _tile_stored(2, O + (size_t)16 * d + x0, 4 * d);
    _tile_stored(3, O + (size_t)16 * d + x0 + 16, 4 * d);
}

/* Online softmax of one row of S (64 keys; on a boundary block, mk: the valid ones) into P (bf16) and the
 * partial sums l.  spec: first try the row's current reference (m, mc); kept when no partial sum of 4 weights
 * exceeds AX_WMAX.  Otherwise (or !spec) the reference moves to the row maximum, l is rescaled and the
 * factor for O goes to *cr; returns 1 then. */
AI int ax_row(float *s, uint16_t *p, float *l, float *m, float *mcp, float *cr, float c, int bnd, uint64_t mk,
              int spec) {
    const __m512 cv = _mm512_set1_ps(c), ninf = _mm512_set1_ps(-INFINITY);
    __m512 sv[4], e[4], sum;
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        sv[j] = _mm512_load_ps(s + 16 * j);
        if (bnd) sv[j] = _mm512_mask_blend_ps((__mmask16)(mk >> (16 * j)), ninf, sv[j]);
    }
    if (spec) {
        __m512 mcv = _mm512_set1_ps(*mcp);
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
            e[j] = ax_exp2(_mm512_fmsub_ps(sv[j], cv, mcv));
            if (bnd) e[j] = _mm512_maskz_mov_ps((__mmask16)(mk >> (16 * j)), e[j]);
        }
        sum = _mm512_add_ps(_mm512_add_ps(e[0], e[1]), _mm512_add_ps(e[2], e[3]));
        if (__builtin_expect(!_mm512_cmp_ps_mask(sum, _mm512_set1_ps(AX_WMAX), _CMP_GT_OQ), 1)) {
            _mm512_store_ps(l, _mm512_add_ps(_mm512_load_ps(l), sum));
            _mm512_store_si512(p, (__m512i)_mm512_cvtne2ps_pbh(e[1], e[0]));
            _mm512_store_si512(p + 32, (__m512i)_mm512_cvtne2ps_pbh(e[3], e[2]));
            return 0;
        }
    }
    float bm = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(sv[0], sv[1]), _mm512_max_ps(sv[2], sv[3])));
    float mn = bm > *m ? bm : *m, mc = mn * c, ci = *mcp - mc;
    *m = mn;
    *mcp = mc;
    __m512 mcv = _mm512_set1_ps(mc);
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        e[j] = ax_exp2(_mm512_fmsub_ps(sv[j], cv, mcv));
        if (bnd) e[j] = _mm512_maskz_mov_ps((__mmask16)(mk >> (16 * j)), e[j]);
    }
    sum = _mm512_add_ps(_mm512_add_ps(e[0], e[1]), _mm512_add_ps(e[2], e[3]));
    __m512 crv = exp2_neg(_mm512_set1_ps(ci), 7);
    _mm512_store_ps(l, _mm512_fmadd_ps(_mm512_load_ps(l), crv, sum));
    _mm512_store_si512(p, (__m512i)_mm512_cvtne2ps_pbh(e[1], e[0]));
    _mm512_store_si512(p + 32, (__m512i)_mm512_cvtne2ps_pbh(e[3], e[2]));
    *cr = _mm512_cvtss_f32(crv);
    return 1;
}

/* The query rows of a task: count, positions, first visible keys and their extremes; kfirst: the first block. */
typedef struct {
    int n, tpmax, tpmin, tkmin, tkmax, kfirst;
    int pos[AX_BQ], ks[AX_BQ];
} ax_rows;
/* One query head's state over the key blocks: O (unnormalised output), L (16 partial sums of the weights per
 * row), M (running maximum), MC (the weights' reference, M c rounded), CR (rescaling factor), Qb (Q as bf16). */
typedef struct {
    float *O, *L, *M, *MC, *CR;
    uint16_t *Qb;
} ax_head;

static void ax_rows_init(const att_ctx *C, int i0, int i1, ax_rows *R) {
    R->n = i1 - i0;
    R->tpmax = R->tkmax = INT32_MIN;
    R->tpmin = R->tkmin = INT32_MAX;
    for (int r = 0; r < R->n; r++) {
        R->pos[r] = C->qpos ? C->qpos[i0 + r] : i0 + r;
        R->ks[r] = C->kstart ? C->kstart[i0 + r] : 0;
        R->tpmax = MAX(R->tpmax, R->pos[r]);
        R->tpmin = MIN(R->tpmin, R->pos[r]);
        R->tkmin = MIN(R->tkmin, R->ks[r]);
        R->tkmax = MAX(R->tkmax, R->ks[r]);
    }
    R->kfirst = R->tkmin / BK * BK;
}

/* Head h's state at base (ax_head_floats(d) floats), initialised for the rows of R (rows >= n: zero Q). */
static ax_head ax_head_init(const att_ctx *C, const ax_rows *R, int i0, int h, float *base) {
    const int d = C->d;
    const size_t qs = (size_t)C->nh * d;
    ax_head H;
    H.O = base;
    H.L = H.O + (size_t)AX_BQ * d;
    H.M = H.L + AX_BQ * 16;
    H.MC = H.M + AX_BQ;
    H.CR = H.MC + AX_BQ;
    H.Qb = (uint16_t *)(H.CR + AX_BQ);
    memset(H.O, 0, sizeof(float) * AX_BQ * d);
    memset(H.L, 0, sizeof(float) * AX_BQ * 16);
    for (int r = 0; r < AX_BQ; r++) {
        H.M[r] = -FLT_MAX;
        H.MC[r] = -FLT_MAX * C->c;
        H.CR[r] = 0.0f;
        if (r < R->n) row_bf16(H.Qb + (size_t)r * d, C->q + (size_t)(i0 + r) * qs + (size_t)h * d, d);
        else memset(H.Qb + (size_t)r * d, 0, sizeof(uint16_t) * d);
    }
    return H;
}

/* Key blocks kbeg, kbeg + BK, .. < kend (and <= R->tpmax) for one head of KV head kh, leaving their P V in H->O
 * (no block pending at the end).  kbeg: a multiple of BK >= R->kfirst.  Per block k: an AMX phase (O += P V of
 * the pending blocks when AX_PEND of them wait; S = Q K^T of block k+1 into S buffer (k+1) & 1: tile loads do
 * not forward from the store buffer, so S is stored a block ahead), then the softmax of block k (S buffer
 * k & 1 -> P ring slot), then, for rows whose reference maximum moved, the pending P V and O scaled.  Tiles
 * configured and MXCSR.FTZ set by the caller.  At the end: prefetch of the rows written next (out rows of
 * this head when last, nn q rows at qn). */
__attribute__((target("amx-tile,amx-bf16"))) static void ax_blocks(const att_ctx *C, const ax_rows *R, int kh,
                                                                    const ax_head *H, float *Sb, uint16_t *Pb,
                                                                    int kbeg, int kend, int i0, int h, int last,
                                                                    const float *qn, int nn) {
    const int d = C->d, n = R->n, tkmin = R->tkmin, tpmax = R->tpmax, tpmin = R->tpmin, tkmax = R->tkmax;
    const size_t qs = (size_t)C->nh * d;
    const int klast = MIN(kend - BK, tpmax / BK * BK); /* the last block */
    if (kbeg > klast) return;
    const uint16_t *Kh = C->kb + (size_t)kh * C->nblk * BK * d, *Vh = C->vb + (size_t)kh * C->nblk * BK * d;
    const size_t bstride = (size_t)BK * d; /* one block of packed K or V */
    const float c = C->c;
    float *O = H->O, *L = H->L, *M = H->M, *MC = H->MC, *CR = H->CR;
    const uint16_t *Qb = H->Qb;
    MEMBAR();
    { /* prologue: S of the first block */
        int h0, h1;
        ax_halves(kbeg, tkmin, tpmax, &h0, &h1);
        for (int hf = h0; hf < h1; hf++) ax_s_unit(Qb, Kh + (size_t)(kbeg / BK) * bstride, hf, d, Sb);
    }
    int kpend = kbeg; /* blocks kpend .. kb - 1: softmax done, P V not yet in O */
    for (int kb = kbeg, par = 0; kb <= klast; kb += BK, par ^= 1) {
        int nh0 = 0, nh1 = 0, knext = kb + BK <= klast;
        if (knext) ax_halves(kb + BK, tkmin, tpmax, &nh0, &nh1);
        const int spec = kb > R->kfirst, bnd = kb + BK - 1 > tpmin || kb < tkmax;
        float *S = Sb + (size_t)par * AX_BQ * BK;
        uint16_t *P = Pb + (size_t)((kb - kbeg) / BK % AX_PB) * AX_BQ * BK;
        /* AMX phase: O += P V of the pending blocks once AX_PEND of them wait (their ring slots are needed), S of
         * block k+1.  (The AMX and vector phases of a block do not overlap on the cores measured, and interleaving
         * them finely cost more than running them one after the other.) */
        MEMBAR();
        if (kb - kpend == AX_PEND * BK) {
            for (int x0 = 0; x0 < d; x0 += 32) ax_pv_unit(Pb, Vh, kbeg, kpend, kb, tkmin, tpmax, x0, d, O);
            kpend = kb;
        }
        for (int hf = nh0; hf < nh1; hf++)
            ax_s_unit(Qb, Kh + (size_t)(kb / BK + 1) * bstride, hf, d, Sb + (size_t)(par ^ 1) * AX_BQ * BK);
        MEMBAR();
        uint32_t moved = 0; /* rows whose reference maximum moved in this block */
        if (bnd)
            for (int r = 0; r < n; r++)
                moved |= (uint32_t)ax_row(S + r * BK, P + r * BK, L + 16 * r, M + r, MC + r, CR + r, c, 1,
                                          row_mask(kb, R->pos[r], R->ks[r]), spec) << r;
        else
            for (int r = 0; r < n; r++)
                moved |= (uint32_t)ax_row(S + r * BK, P + r * BK, L + 16 * r, M + r, MC + r, CR + r, c, 0, ~0ull, spec)
                         << r;
        if (spec && moved) { /* O and the pending blocks before this one are still zero after the first block */
            MEMBAR();
            if (kpend < kb)
                for (int x0 = 0; x0 < d; x0 += 32) ax_pv_unit(Pb, Vh, kbeg, kpend, kb, tkmin, tpmax, x0, d, O);
            kpend = kb;
            MEMBAR();
            while (moved) {
                int i = __builtin_ctz(moved);
                moved &= moved - 1;
                __m512 cb = _mm512_set1_ps(CR[i]);
                float *o = O + (size_t)i * d;
                for (int x = 0; x < d; x += 16) _mm512_store_ps(o + x, _mm512_mul_ps(_mm512_load_ps(o + x), cb));
            }
            MEMBAR();
        }
        if (!knext) { /* epilogue: P V of the pending blocks and this (last) one */
            /* into L1 now: the out rows written after the last block, the q rows (nn of them at qn) of the next task */
            if (last && !C->otiles)
                for (int i = 0; i < n; i++) prefetch_row(C->out + (size_t)(i0 + i) * qs + (size_t)h * d, d, _MM_HINT_T0);
            for (int i = 0; i < nn; i++) prefetch_row(qn + (size_t)i * qs, d, _MM_HINT_T0);
            MEMBAR();
            for (int x0 = 0; x0 < d; x0 += 32) ax_pv_unit(Pb, Vh, kbeg, kpend, kb + BK, tkmin, tpmax, x0, d, O);
            MEMBAR();
        }
    }
}

/* O / L of head h's rows into out (f32) or otiles (rounded to bf16 as the GEMMs round f32 input, in A-tile
 * layout). */
static void ax_head_finish(const att_ctx *C, const ax_rows *R, int i0, int h, const ax_head *H) {
    const int d = C->d;
    const size_t qs = (size_t)C->nh * d;
    for (int r = 0; r < R->n; r++) {
        __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(_mm512_load_ps(H->L + 16 * r)));
        const float *src = H->O + (size_t)r * d;
        int i = i0 + r;
        if (C->otiles) {
            uint16_t *o = C->otiles + ((size_t)(i / 16) * C->onkb + (size_t)h * d / 32) * 512 + 32 * (i % 16);
            for (int x = 0; x < d; x += 32)
                _mm512_store_si512(o + (size_t)x * 16,
                                   (__m512i)_mm512_cvtne2ps_pbh(_mm512_mul_ps(_mm512_load_ps(src + x + 16), inv),
                                                                _mm512_mul_ps(_mm512_load_ps(src + x), inv)));
        } else {
            float *o = C->out + (size_t)i * qs + (size_t)h * d;
            for (int x = 0; x < d; x += 16) _mm512_storeu_ps(o + x, _mm512_mul_ps(_mm512_load_ps(src + x), inv));
        }
    }
}

/* Query rows [i0, i1) (at most AX_BQ) of the hn query heads h0 .. h0 + hn - 1 (one KV head's).  hn == 1: the
 * head's key blocks in one run.  hn > 1 (grouped, the default with GQA): the keys in chunks of kc (a multiple
 * of BK), each chunk run for every head of the group in turn, so that the chunk's packed K and V (kc x d x 4
 * bytes) are read from memory once and from L2 by the other heads (a KV head's K and V for 16k keys, 4 MB at
 * d 64, no longer fit the 2 MB L2).  Each head's values are the same bits either way: a chunk ends with its
 * pending P V accumulated into O (a round trip of f32 tiles through memory), so every output element still
 * gets the same products in the same order.  qn, nn: the q rows of the thread's likely next task (prefetched
 * near the end). */
__attribute__((target("amx-tile,amx-bf16"))) static void ax_task(const att_ctx *C, int i0, int i1, int h0, int hn,
                                                                  int kc, float *scr, const float *qn, int nn) {
    ax_rows R;
    ax_rows_init(C, i0, i1, &R);
    const int kh = h0 / (C->nh / C->nkv);
    float *Sb = scr;
    uint16_t *Pb = (uint16_t *)(Sb + 2 * AX_BQ * BK); /* Pb: [AX_PB][32][64], rows >= n zero (the rows < n are */
    for (int r = R.n; r < AX_BQ; r++)                /* written in full by every block before a P V reads them) */
        for (int j = 0; j < AX_PB; j++) memset(Pb + (j * AX_BQ + r) * BK, 0, sizeof(uint16_t) * BK);
    ax_head H[AX_MAX_HEADS];
    for (int j = 0; j < hn; j++)
        H[j] = ax_head_init(C, &R, i0, h0 + j, scr + ax_shared_floats() + (size_t)j * ax_head_floats(C->d));
    if (hn == 1 || kc <= 0) kc = R.tpmax / BK * BK + BK - R.kfirst; /* one chunk: all the blocks */
    const unsigned csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8000); /* FTZ (see ax_exp2); restored below */
    MEMBAR();
    _tile_loadconfig(&att_tcfg);
    for (int kb0 = R.kfirst; kb0 <= R.tpmax; kb0 += kc) {
        int last = kb0 + kc > R.tpmax;
        for (int j = 0; j < hn; j++)
            ax_blocks(C, &R, kh, &H[j], Sb, Pb, kb0, kb0 + kc, i0, h0 + j, last, qn, last && j == hn - 1 ? nn : 0);
    }
    _tile_release();
    MEMBAR();
    for (int j = 0; j < hn; j++) ax_head_finish(C, &R, i0, h0 + j, &H[j]);
    _mm_setcsr(csr);
}

/* ---------------------------------------------------------------- driver */
/* Prefetch into L2 of rows [i0, i1) of head h of a [rows][nh][d] f32 array (the q rows of a task, read at its
 * start, and its out rows, written at its end: strided lines, ~5-10 % of the amx kernel's time as misses). */
static void prefetch_rows(const float *a, int i0, int i1, int nh, int h, int d) {
    for (int i = i0; i < i1; i++) prefetch_row(a + ((size_t)i * nh + h) * d, d, _MM_HINT_T1);
}

static int ax_group_keys; /* fp_attention_amx_group */

int fp_attention_amx_group(int chunk_keys) {
    int old = ax_group_keys;
    ax_group_keys = chunk_keys > (1 << 24) ? 1 << 24 : chunk_keys; /* (rounded up to BK without overflow) */
    return old;
}

int fp_attention_avx512(int kind, float *out, uint16_t *otiles, const float *q, const float *k, const float *v,
                        const int *qpos, const int *kstart, int nq, int nh, int nkv, int d) {
    const int amx = kind == FP_ATT_AMX, dpk = kind == FP_ATT_DP;
    int pmax = 0, kmin = INT32_MAX;
    for (int i = 0; i < nq; i++) {
        int p = qpos ? qpos[i] : i, s = kstart ? kstart[i] : 0;
        pmax = MAX(pmax, p);
        kmin = MIN(kmin, s);
    }
    kmin = MAX(0, MIN(kmin, pmax));
    att_ctx C = {out, q, k, v, qpos, kstart, nq, nh, nkv, d, (d + 15) & ~15, pmax / BK + 1,
                 (float)(1.4426950408889634 / sqrt((double)d)), NULL, NULL, NULL, amx ? otiles : NULL, nh * d / 32};
    const int bq = amx ? AX_BQ : EX_BQ, b0 = kmin / BK, nb = C.nblk - b0;
    int nth = omp_get_max_threads(), ntiles = (nq + bq - 1) / bq;
    /* amx tasks: hpt query heads of one KV head over key chunks of kc (grouped, hpt > 1: fewer tasks, split
     * into subgroups only so that each thread gets two or more), or one query head per task (hpt = 1) */
    int group = nh / nkv, hpt = 1, kc = 0;
    if (amx && group > 1 && ax_group_keys >= 0) {
        kc = ax_group_keys > 0 ? (ax_group_keys + BK - 1) / BK * BK : MAX(BK, AX_GROUP_CHUNK_BYTES / (4 * d) / BK * BK);
        int want = (2 * nth + nkv * ntiles - 1) / (nkv * ntiles); /* subgroups per KV head and tile */
        want = MAX(want, (group + AX_MAX_HEADS - 1) / AX_MAX_HEADS);
        hpt = (group + MIN(want, group) - 1) / MIN(want, group);
    }
    const int hsub = (group + hpt - 1) / hpt; /* tasks per KV head and tile */
    size_t packb = (size_t)nkv * C.nblk * BK * d * (amx || dpk ? 2 * sizeof(uint16_t) : sizeof(float));
    size_t per = sizeof(float) * (amx ? ax_scratch_floats(d, hpt) : ex_scratch_floats(C.dp, d, dpk));
    per = (per + 63) & ~(size_t)63;
    packb = (packb + 63) & ~(size_t)63;
    size_t total = packb + per * (size_t)nth;
    /* the calling thread's kernel scratch (shared with the GEMMs, which never run inside this call): no
     * allocation per call, and its pages stay mapped between the layers' calls */
    char *buf = fp_matmul_scratch(total);
    if (!buf) return -1;
    if (amx || dpk) {
        C.kb = (uint16_t *)buf;
        C.vb = C.kb + (size_t)nkv * C.nblk * BK * d;
    } else
        C.kt = (float *)buf;
    const int ntasks = hpt > 1 ? ntiles * nkv * hsub : ntiles * nh;
#pragma omp parallel num_threads(nth)
    {
        float *scr = (float *)(buf + packb + per * (size_t)omp_get_thread_num());
#pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < nkv * nb; t++) {
            if (amx || dpk) pack_bf16(&C, t / nb, b0 + t % nb, pmax, (uint16_t *)scr);
            else pack_exact(&C, t / nb, b0 + t % nb, pmax);
        }
#pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < ntasks; task++) {
            /* Largest tiles first: the last query tiles see the most keys. */
            if (hpt > 1) { /* (tile, KV head, subgroup of its query heads) */
                int tile = ntiles - 1 - task / (nkv * hsub), g = task % (nkv * hsub), kh = g / hsub, s0 = g % hsub;
                int h0 = kh * group + s0 * hpt, i0 = tile * bq;
                ax_task(&C, i0, MIN(i0 + bq, nq), h0, MIN(hpt, group - s0 * hpt), kc, scr, q, 0);
                continue;
            }
            int tile = ntiles - 1 - task / nh, h = task % nh;
            int i0 = tile * bq, i1 = MIN(i0 + bq, nq);
            if (amx) {
                int nt = task + nth, n2 = 0; /* this thread's likely next task */
                const float *q2 = q;
                if (nt < nh * ntiles) {
                    int t2 = ntiles - 1 - nt / nh;
                    n2 = MIN(t2 * bq + bq, nq) - t2 * bq;
                    q2 = q + ((size_t)t2 * bq * nh + nt % nh) * d;
                    prefetch_rows(q, t2 * bq, t2 * bq + n2, nh, nt % nh, d);
                }
                if (!C.otiles) prefetch_rows(out, i0, i1, nh, h, d);
                ax_task(&C, i0, i1, h, 1, 0, scr, q2, n2);
            } else if (dpk)
                dp_task(&C, i0, i1, h, scr);
            else
                ex_task(&C, i0, i1, h, scr);
        }
    }
    if (C.otiles) /* the padding rows up to a multiple of 32 (no padding columns: nh d is a multiple of 32) */
        for (int i = nq; i < ((nq + 31) & ~31); i++)
            for (int j = 0; j < C.onkb; j++) memset(C.otiles + ((size_t)(i / 16) * C.onkb + j) * 512 + 32 * (i % 16), 0, 64);
    return 0;
}
