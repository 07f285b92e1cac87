/* Internal: CPU feature dispatch and the ISA-specific GEMM kernels behind fp_matmul_forward.
 * Not part of the public API; tests include it to force a given path. */
#ifndef FP_TENSOR_KERNELS_H
#define FP_TENSOR_KERNELS_H
#include "tensor/tensor.h"
#include <stddef.h>

/* Kernel levels, in increasing order of requirements. */
enum { FP_KERN_REF = 0, FP_KERN_AVX2 = 1, FP_KERN_AVX512 = 2 };

/* ---- cpu.c */
/* Best level this CPU (and OS) supports: AVX2 needs avx2+fma+f16c, AVX512 needs avx512 f/bw/vl/dq. */
int fp_cpu_max_kernel(void);
int fp_cpu_has_avx512bf16(void); /* vdpbf16ps / vcvtne2ps2bf16 */
int fp_cpu_has_avx512vnni(void); /* vpdpbusd */
/* Use the vdpbf16ps kernel for BF16 weights (else: widen to f32 + FMA).  See cpu.c. */
int fp_cpu_prefer_bf16_dp(void);
/* AMX tiles with bf16 usable by this process (asks Linux for permission once).  See cpu.c. */
int fp_cpu_has_amx_bf16(void);
/* Kernel for BF16 weights at the AVX512 level. */
enum { FP_BF16_FMA = 0, FP_BF16_DP = 1, FP_BF16_AMX = 2 };
int fp_cpu_bf16_kernel(void);
/* Level used by fp_matmul_forward: the environment variable FLUXPRM_KERNEL=ref|avx2|avx512|auto
 * (read once), or the value set with fp_kernel_force, clamped to fp_cpu_max_kernel(). */
int fp_kernel_level(void);
/* Forces a level for this process (tests, benchmarks); -1 returns to FLUXPRM_KERNEL / auto. */
void fp_kernel_force(int level);
const char *fp_kernel_level_name(int level);

/* ---- matmul.c */
/* Grow-only scratch buffer owned by the calling thread (64-byte aligned); NULL when out of memory.
 * Its size stays at the largest request seen; fp_matmul_scratch_release() frees it.  The GEMMs and the
 * AVX-512 attention use it (never nested). */
void *fp_matmul_scratch(size_t bytes);

/* ---- matmul_avx512.c / matmul_avx2.c
 * Same contract as fp_matmul_forward.  Return 0, or -1 when scratch memory could not be had (out is then
 * untouched and the caller falls back to the reference).  bf16_kernel (FP_BF16_*) picks the kernel for
 * BF16 weights (the caller checked the CPU has it); use_vnni says whether AVX512-VNNI may be used for
 * Q8_0/Q4_0. */
/* fp_matmul_avx512 / fp_matmul_avx2 run T <= FP_GEMV_MAX_T rows through a GEMV-style kernel
 * ("avx512-gemv" / "avx2-gemv": f32 activations, weights widened to f32, whatever the dtype). */
#define FP_GEMV_MAX_T 4
int fp_matmul_avx512(float *out, const float *inp, const void *w, fp_dtype wt, const float *bias, int T, int K,
                     int N, int bf16_kernel, int use_vnni);
const char *fp_matmul_avx512_name(fp_dtype wt, int bf16_kernel, int use_vnni);
/* The SwiGLU pair on the kernel fp_matmul_avx512(..., bf16_kernel, use_vnni) picks when it is not AMX (f32 FMA,
 * vdpbf16ps, VNNI): out[T,N] = silu(inp Wg^T) * (inp Wu^T), with no [T,N] up buffer.  Each job computes its
 * columns of both GEMMs (the same panels, sums and order as fp_matmul_avx512 on wg and on wu) into per-thread
 * blocks, then applies the SwiGLU of fp_swiglu_forward (swiglu_exact) or fp_swiglu_forward_fast: out has the
 * bits of the two GEMMs followed by that SwiGLU.  0 done; 1 not handled (an AMX kind, T <= FP_GEMV_MAX_T, K
 * not a multiple of 32 for Q8_0/Q4_0); -1 no scratch. */
int fp_matmul_avx512_swiglu_pair(float *out, const float *inp, const void *wg, const void *wu, fp_dtype wt, int T,
                                 int K, int N, int bf16_kernel, int use_vnni, int swiglu_exact);
/* Activation rows per pass over the weights of the kernel fp_matmul_avx512 picks (the f32 FMA and VNNI kernels
 * pack each panel for blocks of at most this many rows, so a taller call reads the weights once per block);
 * 0 for the AMX and vdpbf16ps kernels, which read them once per call. */
int fp_matmul_avx512_rows_per_pass(fp_dtype wt, int bf16_kernel, int use_vnni);
int fp_matmul_avx2(float *out, const float *inp, const void *w, fp_dtype wt, const float *bias, int T, int K,
                   int N);
/* Rows per activation block of fp_matmul_avx2 (it packs each panel once per block). */
#define FP_AVX2_ACT_BLOCK_ROWS 256
/* The SwiGLU pair on the AVX2 kernel (as fp_matmul_avx512_swiglu_pair): out[T,N] = silu(inp Wg^T) * (inp Wu^T)
 * with the bits of two fp_matmul_avx2 calls followed by fp_swiglu_forward at the AVX2 level (which
 * fp_swiglu_forward_fast runs there too), without a [T,N] up buffer.  0 done; 1 not handled (T <=
 * FP_GEMV_MAX_T, K not a multiple of 32 for Q8_0/Q4_0); -1 no scratch. */
int fp_matmul_avx2_swiglu_pair(float *out, const float *inp, const void *wg, const void *wu, fp_dtype wt, int T, int K,
                               int N);

/* Several GEMMs over the same activations in one pass (q/k/v): out[s][T,N[s]] = inp[T,K] w[s]^T + bias[s]
 * (bias NULL or bias[s] NULL: none) for s < nseg <= FP_MATMUL_MAX_SEGS, all weights in dtype wt; on AMX
 * the activations are converted once and the segments' columns share the jobs (every N[s] but the last a
 * multiple of 32), with the same sums, in the same order, as one fp_matmul_avx512 call per segment.
 * 0 done; 1 not handled (no AMX kind for wt, T <= FP_GEMV_MAX_T, shapes): the caller runs one GEMM per
 * segment; -1 no scratch.  Caller checked AMX-BF16.  fp_matmul_forward_multi (matmul_multi.c) dispatches.
 * tiles != NULL: the activations already as bf16 tiles (the layout below; inp unused), e.g. fp_rmsnorm_tiles. */
#define FP_MATMUL_MAX_SEGS 4
int fp_matmul_avx512_multi(int nseg, float *const out[], const void *const w[], const float *const bias[],
                           const int N[], fp_dtype wt, const float *inp, const uint16_t *tiles, int T, int K);
void fp_matmul_forward_multi(int exact, int nseg, float *const out[], const void *const w[],
                             const float *const bias[], const int N[], fp_dtype wt, const float *inp, int T, int K);

/* Fused gate/up GEMM + SwiGLU on AMX (fp_matmul_swiglu_forward_ex's fast path): out[T,N] = silu(inp Wg^T) *
 * (inp Wu^T).  0 done; 1 not handled (wt not BF16/Q8_0/Q4_0, T <= FP_GEMV_MAX_T, K rounded up to 32 above
 * the AMX kernel's single k chunk of FP_AMX_SWIGLU_MAX_K); -1 no scratch.  Caller checked AMX-BF16. */
#define FP_AMX_SWIGLU_MAX_K 4096
int fp_matmul_avx512_swiglu(float *out, const float *inp, const void *wg, const void *wu, fp_dtype wt, int T, int K,
                            int N);
/* Hand-off of the SwiGLU output to the down projection in bf16 AMX tiles (fast precision), which skips the
 * f32 [T,N] round trip and the down GEMM's activation conversion; the values are bit for bit those of the
 * f32 path (the same f32 results, rounded to nearest even as the GEMM rounds its f32 input).  Tiles: rows
 * padded to Tp = T rounded up to 32, columns to Np = N rounded up to 32, zeros in the padding; the 16 x 32 bf16
 * tile of rows 16i.. and columns 32j.. at (i * Np/32 + j) * 512 elements, row r at + 32 r
 * (fp_matmul_tiles_bytes(T, N) bytes, 64-byte aligned).
 * fp_matmul_avx512_swiglu_tiles: as fp_matmul_avx512_swiglu, into tiles; its input from inp (f32 rows) or, when
 * itiles != NULL, from bf16 tiles [T,K] in the same layout (inp unused).  fp_matmul_avx512_tiles: out[T,N] =
 * tiles[T,K] W^T + bias on AMX.  0 done; 1 not handled (same conditions as the f32 entry points; the caller
 * runs the f32 path); -1 no scratch.  Caller checked AMX-BF16.
 * fp_rmsnorm_tiles: fp_rmsnorm_forward of T rows of K straight into such tiles (RMSNorm fused with the
 * activations' conversion: no f32 [T,K] round trip), the bf16 rounding of fp_rmsnorm_forward's f32 values as
 * the GEMMs round f32 input, so the GEMMs' results are bit for bit those of norm, then GEMM from f32 rows;
 * padding rows and columns zero.  0 done; -1 out of memory (a row buffer per thread; tiles incomplete). */
int fp_rmsnorm_tiles(uint16_t *tiles, const float *inp, const float *weight, float eps, int T, int K);
int fp_matmul_avx512_swiglu_tiles(uint16_t *tiles, const float *inp, const uint16_t *itiles, const void *wg,
                                  const void *wu, fp_dtype wt, int T, int K, int N);
int fp_matmul_avx512_tiles(float *out, const uint16_t *tiles, const void *w, fp_dtype wt, const float *bias, int T,
                           int K, int N);
size_t fp_matmul_tiles_bytes(int T, int N);
/* 1 when the fast-precision MLP hands gate/up -> down over bf16 tiles at the current kernel level: both weight
 * dtypes AMX-able, the fused kernel available for (T, K, N), T > FP_GEMV_MAX_T. */
int fp_matmul_swiglu_tiles_ok(int exact, fp_dtype gate_wt, fp_dtype down_wt, int T, int K, int N);
/* 1 when a GEMM with T rows, K columns of activations and weights of dtype wt runs on AMX at the current kernel
 * level in this precision (fast only): where bf16 tiles (fp_rmsnorm_tiles, ..._tiles entry points) can be its
 * input. */
int fp_matmul_amx_ok(int exact, fp_dtype wt, int T, int K);
/* 1 when fp_matmul_swiglu_forward_ex(exact, ...) at the current kernel level runs the fused AMX kernel for
 * this shape ("amx-bf16-swiglu"), 0 when it runs gate GEMM + up GEMM + fp_swiglu_forward(_fast) (as the
 * SwiGLU pair of fp_matmul_avx512_swiglu_pair or as three calls). */
int fp_matmul_swiglu_fused(int exact, fp_dtype wt, int T, int K, int N);
/* 1 when fp_matmul_swiglu_forward_buf(exact, ...) at the current kernel level needs its [T,N] up scratch (the
 * three-call path), 0 when a fused AMX kernel or the SwiGLU pair runs it without. */
int fp_matmul_swiglu_needs_up(int exact, fp_dtype wt, int T, int K, int N);
/* Activation rows per pass over the weights of fp_matmul_forward_ex(exact, ...) for weights of dtype wt at the
 * current kernel level: a caller that splits its rows into calls of at least this height reads the weights no
 * more often than one tall call would.  0 when the kernel reads them once per call (AMX, vdpbf16ps, the
 * reference; F32 weights with OpenBLAS in use). */
int fp_matmul_rows_per_weight_pass(int exact, fp_dtype wt);

/* Runs fp_matmul_forward's algorithm at the given level (clamped to what the CPU supports). */
void fp_matmul_forward_level(int level, float *out, const float *inp, const void *w, fp_dtype wt,
                             const float *bias, int T, int K, int N);
const char *fp_matmul_kernel_name_level(int level, fp_dtype wt);
/* The kernel used for a call with T rows (the small-T kernel differs). */
const char *fp_matmul_kernel_name_shape(int level, fp_dtype wt, int T);

/* ---- OpenBLAS path for F32 weights (matmul.c, matmul_blas.c; only in `make BLAS=1` builds, which define
 * FP_WITH_OPENBLAS).  fp_matmul_forward* hand F32-weight calls to cblas_sgemm ("openblas-sgemm") at the avx2
 * and avx512 levels when fp_matmul_blas_use says so; f32 activations either way (F32 weights never take the
 * bf16/int8 kernels), so exact and fast precision behave alike.  The rule (measured, docs/architecture.md):
 * fp_matmul_blas_rule(T, K, N): T > FP_GEMV_MAX_T and K*N >= 2^22, or T >= 64 and K*N >= 2^21, or T >= 512
 * and K*N >= 2^19.  FLUXPRM_BLAS=0 (read once) turns the path off. */
enum { FP_BLAS_AUTO = -1, FP_BLAS_OFF = 0, FP_BLAS_ON = 1, FP_BLAS_ALWAYS = 2 };
/* 1 in a BLAS=1 build. */
int fp_matmul_blas_available(void);
/* The mode in force: FP_BLAS_OFF (no OpenBLAS in this build, FLUXPRM_BLAS=0 or forced off), FP_BLAS_ON (the
 * measured rule) or FP_BLAS_ALWAYS (every F32 call with T > FP_GEMV_MAX_T at avx2/avx512: tests, benchmarks). */
int fp_matmul_blas_mode(void);
/* Forces a mode for this process (FP_BLAS_OFF / ON / ALWAYS); FP_BLAS_AUTO returns to FLUXPRM_BLAS / the rule.
 * No effect in a build without OpenBLAS. */
void fp_matmul_blas_force(int mode);
/* The measured shape rule alone (where OpenBLAS beat avx512-f32fma), whatever the build and mode; 0 for
 * T <= FP_GEMV_MAX_T. */
int fp_matmul_blas_rule(int T, int K, int N);
/* 1 when fp_matmul_forward_level(level, ...) with these weights and shape runs cblas_sgemm: a BLAS build,
 * mode not off, wt == FP_F32, level (clamped to the CPU) >= avx2, T > FP_GEMV_MAX_T, the rule (or ALWAYS),
 * and not inside an OpenMP parallel region (nested calls keep our kernels, which run them on one thread). */
int fp_matmul_blas_use(int level, fp_dtype wt, int T, int K, int N);
/* The kernel fp_matmul_forward_level(level, ...) runs for this exact call (GEMV, OpenBLAS or the level's). */
const char *fp_matmul_kernel_name_gemm(int level, fp_dtype wt, int T, int K, int N);
/* matmul_blas.c: cblas_sgemm(RowMajor, NoTrans, Trans) with the bias preloaded into out (beta = 1); the columns
 * are split over omp_get_max_threads() OpenMP threads, each running a single-threaded cblas_sgemm.  Returns 0
 * (-1 in a build without OpenBLAS, where it is never called). */
int fp_matmul_blas(float *out, const float *inp, const float *w, const float *bias, int T, int K, int N);

/* ---- attention.c / attention_avx512.c */
/* fp_attention_forward_ex at a given kernel level (clamped to the CPU).  fast selects the kernel of the fast path
 * (exact = 0): FP_ATT_FAST_AUTO the best this CPU has, FP_ATT_FAST_F32 none of the bf16 kernels (the exact
 * kernel of the level), FP_ATT_FAST_DP the vdpbf16ps kernel wherever AVX512-BF16 exists (tests, benchmarks).
 * Level >= avx512 runs fp_attention_avx512: exact "avx512-f32"; fast with AVX512-BF16 and d % 32 == 0, d <=
 * FP_ATT_AMX_MAX_D and AMX-BF16 usable (AUTO): "amx-bf16"; else fast with AVX512-BF16 and d % 32 == 0 (the
 * shapes the AMX kernel takes, so that fast precision rounds attention on the same models everywhere) where bf16
 * dot products are preferred (fp_cpu_prefer_bf16_dp: AMD; AUTO) or forced (DP): "avx512-bf16dp"; else
 * "avx512-f32".
 * avx2 "avx2-f32", ref "generic-f32" (both the one-row f32 kernel).  exact == 2 runs the one-row f32 kernel at
 * the level (avx512: "avx512-f32-rows", the kernel before register blocking; benchmarks). */
#define FP_ATT_AMX_MAX_D 256
enum { FP_ATT_FAST_F32 = 0, FP_ATT_FAST_AUTO = 1, FP_ATT_FAST_DP = 2 };
int fp_attention_forward_level(int level, int exact, int fast, float *out, const float *q, const float *k,
                               const float *v, const int *qpos, const int *kstart, int nq, int T, int nh,
                               int nkv, int d);
const char *fp_attention_kernel_name(int level, int exact, int fast, int d);
/* attention_avx512.c: kind FP_ATT_AMX is the bf16 AMX kernel (caller checked AMX-BF16, AVX512-BF16, d % 32 ==
 * 0), FP_ATT_DP the vdpbf16ps kernel (caller checked AVX512-BF16, d % 32 == 0: the shapes dispatch gives it and
 * the tests run), FP_ATT_F32 the f32 AVX-512 kernel (any d).  otiles (amx only; else NULL): the output as bf16 A tiles for the o_proj GEMM (fp_matmul_tiles_bytes(nq, nh d), the
 * layout of fp_matmul_avx512_swiglu_tiles, padding rows zeroed; out unused), each value the f32 output rounded
 * to bf16 as the GEMMs round f32 input.  0, or -1 when scratch cannot be allocated. */
enum { FP_ATT_F32 = 0, FP_ATT_AMX = 1, FP_ATT_DP = 2 };
int fp_attention_avx512(int kind, float *out, uint16_t *otiles, const float *q, const float *k, const float *v,
                        const int *qpos, const int *kstart, int nq, int nh, int nkv, int d);
/* The amx kernel's grouped tasks (all query heads of a KV head over key chunks; the default with GQA, the same
 * bits as per-head tasks): chunk_keys > 0 forces them with chunks of that many keys (rounded up to 64), 0 (the
 * default) leaves the choice to the kernel, < 0 turns them off.  Returns the previous setting.  For tests and
 * benchmarks; not thread-safe against concurrent attention calls. */
int fp_attention_amx_group(int chunk_keys);
/* fp_attention_forward_ex(exact = 0) into bf16 tiles as above, when it would run the AMX kernel at the current
 * level; 0 done, 1 not handled (another kernel: nothing written), -1 no scratch. */
int fp_attention_forward_tiles(uint16_t *otiles, const float *q, const float *k, const float *v, const int *qpos,
                               const int *kstart, int nq, int T, int nh, int nkv, int d);

#endif
