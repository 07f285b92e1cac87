/* libFuzzer target: torch.save ZIP + pickle reader (in memory), touching every tensor byte.  fuzz/run.sh. */
#include "model/weights.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fp_weights *w = NULL;
    if (fp_torchzip_load_memory(&w, data, size, "fuzz") != FP_OK) return 0;
    unsigned sum = 0;
    for (size_t i = 0; i < fp_weights_count(w); i++) {
        const fp_tensor *t = fp_weights_at(w, i);
        for (size_t k = 0; k < t->nbytes; k++) sum += ((const uint8_t *)t->data)[k];
    }
    (void)sum;
    fp_weights_free(w);
    return 0;
}
