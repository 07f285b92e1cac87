/* f32 -> F16 / BF16 / Q8_0 / Q4_0 rows for writing GGUF files.  The Q8_0 and Q4_0 rules are llama.cpp's
 * reference quantisers (ggml-quants.c, quantize_row_q8_0_ref / quantize_row_q4_0_ref), in float32:
 *   Q8_0: d = max|x| / 127, q = roundf(x * (1/d))                      (d = 0 gives q = 0)
 *   Q4_0: m = the x of largest |x| (first one on ties), d = m / -8,
 *         q = min(15, (int8_t)(x * (1/d) + 8.5f)), byte j = q[j] | q[j+16] << 4
 * and the block scale stored as fp16(d). */
#include "model/gguf.h"
#include <math.h>
#include <string.h>

static void q8_0_block(uint8_t *dst, const float *x) {
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) {
        float a = fabsf(x[j]);
        if (a > amax) amax = a;
    }
    float d = amax / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint16_t h = fp_f32_to_f16(d);
    memcpy(dst, &h, 2);
    for (int j = 0; j < 32; j++) dst[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
}

static void q4_0_block(uint8_t *dst, const float *x) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; j++) {
        float a = fabsf(x[j]);
        if (a > amax) { amax = a; max = x[j]; }
    }
    float d = max / -8.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint16_t h = fp_f32_to_f16(d);
    memcpy(dst, &h, 2);
    for (int j = 0; j < 16; j++) {
        int8_t a = (int8_t)(x[j] * id + 8.5f), b = (int8_t)(x[j + 16] * id + 8.5f);
        uint8_t qa = (uint8_t)(a < 15 ? a : 15), qb = (uint8_t)(b < 15 ? b : 15);
        dst[2 + j] = (uint8_t)(qa | qb << 4);
    }
}

void fp_quantize_row(void *dst, const float *src, fp_dtype t, int64_t n) {
    switch (t) {
    case FP_F32: memcpy(dst, src, (size_t)n * 4); break;
    case FP_F16: {
        uint16_t *h = dst;
        for (int64_t i = 0; i < n; i++) h[i] = fp_f32_to_f16(src[i]);
        break;
    }
    case FP_BF16: {
        uint16_t *h = dst;
        for (int64_t i = 0; i < n; i++) h[i] = fp_f32_to_bf16(src[i]);
        break;
    }
    case FP_Q8_0:
        for (int64_t b = 0; b < n / 32; b++) q8_0_block((uint8_t *)dst + b * 34, src + b * 32);
        break;
    case FP_Q4_0:
        for (int64_t b = 0; b < n / 32; b++) q4_0_block((uint8_t *)dst + b * 18, src + b * 32);
        break;
    }
}
