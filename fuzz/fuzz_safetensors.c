/* libFuzzer target: the safetensors reader.  Its API takes a path, so the input goes into a memfd opened
 * through /proc/self/fd.  fuzz/run.sh. */
#include "model/weights.h"
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("fuzz.safetensors", 0);
        if (fd < 0) return 0;
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) || pwrite(fd, data, size, 0) != (ssize_t)size) return 0;
    fp_weights *w = NULL;
    if (fp_weights_open_safetensors(&w, path) != FP_OK) return 0;
    unsigned sum = 0;
    for (size_t i = 0; i < fp_weights_count(w); i++) {
        const fp_tensor *t = fp_weights_at(w, i);
        for (size_t k = 0; k < t->nbytes; k++) sum += ((const uint8_t *)t->data)[k];
    }
    (void)sum;
    fp_weights_free(w);
    return 0;
}
