/* CPU feature detection and kernel-level selection for the tensor kernels. */
#include "tensor/kernels.h"
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

static int detect_max(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("fma") && __builtin_cpu_supports("avx2"))
        return FP_KERN_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return FP_KERN_AVX2;
#endif
    return FP_KERN_REF;
}

int fp_cpu_max_kernel(void) {
    static int cached = -1;
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v < 0) {
        v = detect_max();
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v;
}

int fp_cpu_has_avx512bf16(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return fp_cpu_max_kernel() >= FP_KERN_AVX512 && __builtin_cpu_supports("avx512bf16");
#else
    return 0;
#endif
}

int fp_cpu_has_avx512vnni(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return fp_cpu_max_kernel() >= FP_KERN_AVX512 && __builtin_cpu_supports("avx512vnni");
#else
    return 0;
#endif
}

/* Whether vdpbf16ps beats f32 FMA on bf16 weights.  On AMD Zen 4 a zmm vdpbf16ps (32 MACs) issues
 * as fast as a zmm FMA (16 MACs); on the Intel cores measured (Sapphire Rapids class) it runs at
 * under half the FMA rate, so widening bf16 weights to f32 while packing is faster there.
 * FLUXPRM_BF16=dp|fma overrides (read once). */
int fp_cpu_prefer_bf16_dp(void) {
    static int cached = -1;
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v < 0) {
        const char *e = getenv("FLUXPRM_BF16");
        if (e && !strcmp(e, "dp")) v = 1;
        else if (e && !strcmp(e, "fma")) v = 0;
        else {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_cpu_init();
            v = __builtin_cpu_is("amd") ? 1 : 0;
#else
            v = 0;
#endif
        }
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v && fp_cpu_has_avx512bf16();
}

/* AMX-BF16 (tdpbf16ps) usable: CPUID says AMX-TILE + AMX-BF16, the OS enabled the tile state in XCR0,
 * and Linux granted this process permission for the tile data (arch_prctl ARCH_REQ_XCOMP_PERM, asked once
 * here: the only side effect, a larger signal frame).  FLUXPRM_AMX=0 disables. */
static int detect_amx(void) {
#if defined(__x86_64__) && defined(__linux__)
    const char *e = getenv("FLUXPRM_AMX");
    if (e && !strcmp(e, "0")) return 0;
    if (fp_cpu_max_kernel() < FP_KERN_AVX512) return 0;
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    if (!(d & (1u << 24)) || !(d & (1u << 22))) return 0; /* AMX-TILE, AMX-BF16 */
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0; /* OSXSAVE */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & (3u << 17)) != (3u << 17)) return 0; /* XTILECFG, XTILEDATA */
    if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) != 0) return 0;
    return 1;
#else
    return 0;
#endif
}

int fp_cpu_has_amx_bf16(void) {
    static int cached = -1;
    int v = __atomic_load_n(&cached, __ATOMIC_ACQUIRE);
    if (v < 0) {
        v = detect_amx();
        __atomic_store_n(&cached, v, __ATOMIC_RELEASE);
    }
    return v;
}

int fp_cpu_bf16_kernel(void) {
    if (fp_cpu_has_amx_bf16()) return FP_BF16_AMX;
    if (fp_cpu_prefer_bf16_dp()) return FP_BF16_DP;
    return FP_BF16_FMA;
}

static int forced = -1; /* set by fp_kernel_force */

static int env_level(void) {
    static int cached = -2; /* -2: not read yet, -1: auto */
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v == -2) {
        const char *e = getenv("FLUXPRM_KERNEL");
        v = -1;
        if (e) {
            if (!strcmp(e, "ref") || !strcmp(e, "scalar")) v = FP_KERN_REF;
            else if (!strcmp(e, "avx2")) v = FP_KERN_AVX2;
            else if (!strcmp(e, "avx512")) v = FP_KERN_AVX512;
        }
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v;
}

int fp_kernel_level(void) {
    int max = fp_cpu_max_kernel();
    int want = __atomic_load_n(&forced, __ATOMIC_RELAXED);
    if (want < 0) want = env_level();
    if (want < 0 || want > max) want = max;
    return want;
}

void fp_kernel_force(int level) {
    __atomic_store_n(&forced, level < 0 ? -1 : level, __ATOMIC_RELAXED);
}

const char *fp_kernel_level_name(int level) {
    switch (level) {
    case FP_KERN_REF: return "ref";
    case FP_KERN_AVX2: return "avx2";
    case FP_KERN_AVX512: return "avx512";
    }
    return "?";
}
