/* fluxprm inspect <model-dir|file.gguf> [--tensors] [--bench T]: what a checkpoint is (config, head, dtypes),
 * whether it validates, and optionally its raw tensor list and a prefill timing. */
#include "cli/cli.h"
#include "base/base.h"
#include "model/weights.h"
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage(FILE *f) {
    fputs("Usage: fluxprm inspect <model-dir|file.gguf> [--tensors] [--bench T] [--threads N]\n"
          "\n"
          "Loads a Qwen2/Qwen3 checkpoint (config.json + safetensors, sharded or not, or a GGUF file), validates\n"
          "every tensor against the config and prints the hyper-parameters and the detected head\n"
          "(prm: score.0/score.2 two-class step head; scalar: reward_head; classification; none).\n"
          "\n"
          "  --tensors    also list the stored tensors (name, dtype, shape), even when validation fails\n"
          "  --bench T    time one prefill of T tokens (ids 0..vocab-1 cycling) and print tokens/s\n"
          "  --threads N  threads for --bench (default: all)\n", f);
}

static void print_tensors(const char *path) {
    fp_weights *w = NULL;
    size_t n = strlen(path);
    int rc = n > 5 && !strcmp(path + n - 5, ".gguf") ? fp_weights_open_gguf(&w, NULL, path)
                                                      : fp_weights_open_safetensors(&w, path);
    if (rc) { cli_fail("inspect: reading tensors"); return; }
    printf("tensors: %zu\n", fp_weights_count(w));
    for (size_t i = 0; i < fp_weights_count(w); i++) {
        const fp_tensor *t = fp_weights_at(w, i);
        printf("  %-56s %-5s [", t->name, fp_dtype_name(t->dtype));
        for (int k = 0; k < t->ndim; k++) printf("%s%lld", k ? ", " : "", (long long)t->shape[k]);
        printf("]\n");
    }
    fp_weights_free(w);
}

int cmd_inspect(int argc, char **argv) {
    const char *path = NULL;
    int tensors = 0;
    long bench = 0, threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage(stdout); return EXIT_OK; }
        else if (!strcmp(argv[i], "--tensors")) tensors = 1;
        else if (!strcmp(argv[i], "--bench") || !strcmp(argv[i], "--threads")) {
            long *dst = argv[i][2] == 'b' ? &bench : &threads;
            if (i + 1 >= argc || cli_parse_long(argv[i + 1], dst) || *dst <= 0)
                return cli_usage_error("inspect", "%s needs a positive number", argv[i]);
            i++;
        } else if (argv[i][0] == '-' && argv[i][1]) return cli_usage_error("inspect", "unknown option %s", argv[i]);
        else if (!path) path = argv[i];
        else return cli_usage_error("inspect", "unexpected argument %s", argv[i]);
    }
    if (!path) return cli_usage_error("inspect", "expected a model directory or .gguf file");
    if (tensors) print_tensors(path);
    fp_model *m = NULL;
    if (fp_model_load(&m, path)) return cli_fail("inspect");
    fp_model_info i;
    fp_model_get_info(m, &i);
    printf("path: %s\narchitecture: %s\nmodel_type: %s\nhead: %s", path, i.architecture[0] ? i.architecture : "?",
           i.model_type, fp_head_name(i.head));
    if (i.head) printf(" (%d output%s)", i.num_labels, i.num_labels == 1 ? "" : "s");
    printf("\nweights: %s\nhidden_size: %d\nintermediate_size: %d\nlayers: %d\nheads: %d (kv %d, head_dim %d)\n",
           i.weight_dtype, i.hidden_size, i.intermediate_size, i.num_layers, i.num_heads, i.num_kv_heads, i.head_dim);
    printf("vocab_size: %d\nrope_theta: %g\nrms_norm_eps: %g\nmax_position_embeddings: %d (not a limit)\n",
           i.vocab_size, i.rope_theta, i.rms_norm_eps, i.max_position_embeddings);
    printf("tie_word_embeddings: %s\nlm_head: %s\nbos/eos/pad: %d/%d/%d\n", i.tie_word_embeddings ? "true" : "false",
           i.has_lm_head ? "yes (generation only; never used for scoring)" : "no", i.bos_token_id, i.eos_token_id,
           i.pad_token_id);
    int rc = EXIT_OK;
    if (bench > 0) {
        if (bench > 1 << 20) { fp_model_free(m); return cli_usage_error("inspect", "--bench: at most 1048576 tokens"); }
        int T = (int)bench;
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)T);
        float *h = malloc(sizeof(float) * (size_t)i.hidden_size);
        if (!ids || !h) { free(ids); free(h); fp_model_free(m); cli_error("out of memory"); return EXIT_RUNTIME; }
        for (int t = 0; t < T; t++) ids[t] = (int32_t)((t * 7919L) % i.vocab_size);
        fp_model_set_threads(m, (int)threads);
        int last = T - 1;
        double t0 = fp_now();
        if (fp_model_hidden_states(m, ids, T, &last, 1, h)) rc = cli_fail("inspect: forward");
        else {
            double dt = fp_now() - t0;
            printf("prefill: %d tokens in %.3f s (%.1f tokens/s)\n", T, dt, T / dt);
        }
        free(ids);
        free(h);
    }
    fp_model_free(m);
    return rc;
}
