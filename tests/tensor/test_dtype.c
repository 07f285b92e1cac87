/* fp_row_to_f32 and the scalar f32->bf16/f16 conversions against an independent decoding
 * (torch for BF16/F16, numpy + the GGUF formula for Q8_0/Q4_0): tests/ref/tensor/dtype_fixture.bin,
 * written by tests/ref/tensor/make_dtype_fixture.py. */
#include "harness.h"
#include "fluxprm.h"
#include "tensor/tensor.h"
#include <stdint.h>

#define FIXTURE "tests/ref/tensor/dtype_fixture.bin"

static int same_f32(float a, float b) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    uint32_t ua, ub;
    memcpy(&ua, &a, 4);
    memcpy(&ub, &b, 4);
    return ua == ub;
}

static int read_all(FILE *f, void *p, size_t n) { return fread(p, 1, n, f) == n; }

static int test_fixture(void) {
    FILE *f = fopen(FIXTURE, "rb");
    CHECK_MSG(f != NULL, "cannot open %s (run from the repository root)", FIXTURE);
    if (!f) return 0;
    char magic[4];
    uint32_t ncase = 0;
    CHECK(read_all(f, magic, 4) && !memcmp(magic, "FPDT", 4));
    CHECK(read_all(f, &ncase, 4) && ncase >= 4);
    int seen[5] = {0};
    for (uint32_t c = 0; c < ncase; c++) {
        uint32_t hdr[3];
        if (!read_all(f, hdr, sizeof hdr)) { CHECK(0); break; }
        fp_dtype dt = (fp_dtype)hdr[0];
        uint32_t n = hdr[1], nbytes = hdr[2];
        CHECK(dt >= FP_F16 && dt <= FP_Q4_0);
        CHECK(nbytes == fp_dtype_row_bytes(dt, n));
        float *src = malloc(4 * (size_t)n), *exp = malloc(4 * (size_t)n), *got = malloc(4 * (size_t)n);
        uint8_t *raw = malloc(nbytes);
        CHECK(read_all(f, src, 4 * (size_t)n) && read_all(f, raw, nbytes) && read_all(f, exp, 4 * (size_t)n));
        fp_row_to_f32(got, raw, dt, n);
        int bad = 0;
        for (uint32_t i = 0; i < n; i++) {
            if (!same_f32(got[i], exp[i]) && bad++ < 5)
                fprintf(stderr, "  case %u (%s) [%u]: decoded %.9g, reference %.9g\n", c, fp_dtype_name(dt), i,
                        got[i], exp[i]);
            if ((dt == FP_BF16 || dt == FP_F16) && !isnan(exp[i])) { /* f32 -> 16-bit must match torch */
                uint16_t code, mine = dt == FP_BF16 ? fp_f32_to_bf16(src[i]) : fp_f32_to_f16(src[i]);
                memcpy(&code, raw + 2 * i, 2);
                if (mine != code && bad++ < 5)
                    fprintf(stderr, "  case %u (%s) [%u]: %.9g (0x%08x) -> 0x%04x, torch 0x%04x\n", c,
                            fp_dtype_name(dt), i, src[i], *(uint32_t *)&src[i], mine, code);
            }
        }
        CHECK_MSG(bad == 0, "case %u (%s): %d mismatches", c, fp_dtype_name(dt), bad);
        seen[dt] = 1;
        free(src);
        free(exp);
        free(got);
        free(raw);
    }
    CHECK(seen[FP_F16] && seen[FP_BF16] && seen[FP_Q8_0] && seen[FP_Q4_0]);
    fclose(f);
    return 0;
}

int main(void) {
    RUN(test_fixture);
    return th_finish();
}
