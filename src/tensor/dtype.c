/* Storage dtypes: sizes and scalar/row conversions to f32. */
#include "tensor/tensor.h"
#include <math.h>
#include <string.h>

const char *fp_dtype_name(fp_dtype t) {
    switch (t) {
    case FP_F32: return "F32";
    case FP_F16: return "F16";
    case FP_BF16: return "BF16";
    case FP_Q8_0: return "Q8_0";
    case FP_Q4_0: return "Q4_0";
    }
    return "?";
}

size_t fp_dtype_row_bytes(fp_dtype t, int64_t n) {
    switch (t) {
    case FP_F32: return (size_t)n * 4;
    case FP_F16:
    case FP_BF16: return (size_t)n * 2;
    case FP_Q8_0: return (size_t)(n / 32) * 34;
    case FP_Q4_0: return (size_t)(n / 32) * 18;
    }
    return 0;
}

float fp_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t fp_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1);                                          /* round to nearest even */
    return (uint16_t)(u >> 16);
}

float fp_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, u;
    if (exp == 0) {
        if (mant == 0) u = sign;
        else { /* subnormal: value = mant * 2^-24 */
            float f = ldexpf((float)mant, -24);
            return sign ? -f : f;
        }
    } else if (exp == 31) u = sign | 0x7f800000u | (mant << 13);
    else u = sign | ((exp + 112) << 23) | (mant << 13);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t fp_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00);  /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* overflow to inf (>= 65520) */
    if (a < 0x38800000u) {                                  /* subnormal or zero: round(|f| * 2^24) */
        float af;
        memcpy(&af, &a, 4);
        return (uint16_t)(sign | (uint32_t)lrintf(af * 16777216.0f));
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1); /* round mantissa to 10 bits, nearest even */
    return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

void fp_row_to_f32(float *out, const void *row, fp_dtype t, int64_t n) {
    switch (t) {
    case FP_F32: memcpy(out, row, (size_t)n * 4); break;
    case FP_F16: {
        const uint16_t *h = row;
        for (int64_t i = 0; i < n; i++) out[i] = fp_f16_to_f32(h[i]);
        break;
    }
    case FP_BF16: {
        const uint16_t *h = row;
        for (int64_t i = 0; i < n; i++) out[i] = fp_bf16_to_f32(h[i]);
        break;
    }
    case FP_Q8_0: {
        const uint8_t *b = row;
        for (int64_t blk = 0; blk < n / 32; blk++, b += 34) {
            uint16_t d16;
            memcpy(&d16, b, 2);
            float d = fp_f16_to_f32(d16);
            for (int j = 0; j < 32; j++) out[blk * 32 + j] = d * (float)(int8_t)b[2 + j];
        }
        break;
    }
    case FP_Q4_0: {
        const uint8_t *b = row;
        for (int64_t blk = 0; blk < n / 32; blk++, b += 18) {
            uint16_t d16;
            memcpy(&d16, b, 2);
            float d = fp_f16_to_f32(d16);
            for (int j = 0; j < 16; j++) {
                out[blk * 32 + j] = d * (float)((b[2 + j] & 15) - 8);
                out[blk * 32 + j + 16] = d * (float)((b[2 + j] >> 4) - 8);
            }
        }
        break;
    }
    }
}
