/* Seeded random numbers for the kernel tests: xorshift64, the same stream on every run.  A test that wants
 * another stream defines TH_RNG_SEED before including this header. */
#ifndef FP_TEST_RAND_H
#define FP_TEST_RAND_H
#include <stdint.h>

#ifndef TH_RNG_SEED
#define TH_RNG_SEED 0x2545f4914f6cdd1dull
#endif
static uint64_t rng_state = TH_RNG_SEED;
static inline uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}
/* uniform in [-1, 1) */
static inline float frand(void) { return (float)((rnd() >> 8) * (1.0 / 16777216.0) * 2.0 - 1.0); }
#endif
