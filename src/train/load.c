/* Loading the training model from an fp_weights (kept apart so the trainer links without the model layer). */
#include "train/train.h"

static const fp_tensor *get_from_weights(void *ctx, const char *name) {
    return fp_weights_get((const fp_weights *)ctx, name);
}

int fpt_model_load_weights(fpt_model *m, const fp_weights *w) {
    return fpt_model_load(m, get_from_weights, (void *)w);
}
