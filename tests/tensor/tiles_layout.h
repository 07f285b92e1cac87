/* The bf16 A-tile layout of the AMX hand-offs (src/tensor/kernels.h): T x N values, rows padded to a multiple
 * of 32, columns to a multiple of 32, zeros in the padding; the 16 x 32 tile of rows 16i.. and columns 32j.. at
 * (i * Np/32 + j) * 512 elements, row r at + 32 r.  Shared by the tests of the kernels that write it. */
#ifndef FP_TESTS_TILES_LAYOUT_H
#define FP_TESTS_TILES_LAYOUT_H
#include "tensor/tensor.h"
#include <stdint.h>
#include <stdio.h>

/* Element [t][n] (t < Tp, n < Np) of tiles holding N columns. */
static inline uint16_t tile_elem(const uint16_t *tiles, int N, int t, int n) {
    int nkb = (N + 31) / 32;
    return tiles[((size_t)(t / 16) * nkb + n / 32) * 512 + 32 * (t % 16) + n % 32];
}

/* Number of elements of tiles (padding included) that differ from fp_f32_to_bf16 of ref [T][N] (row stride N),
 * zero in the padding; the first three go to stderr, prefixed by label. */
static int tiles_mismatches(const uint16_t *tiles, const float *ref, int T, int N, const char *label) {
    int Tp = (T + 31) & ~31, Np = (N + 31) & ~31, bad = 0;
    for (int t = 0; t < Tp; t++)
        for (int n = 0; n < Np; n++) {
            uint16_t v = tile_elem(tiles, N, t, n), want = t < T && n < N ? fp_f32_to_bf16(ref[(size_t)t * N + n]) : 0;
            if (v != want && bad++ < 3)
                fprintf(stderr, "  %s: tile element [%d,%d] %04x, want %04x\n", label, t, n, v, want);
        }
    return bad;
}
#endif
