/* fluxprm convert <hf-dir> <out.gguf> [--type T]: Hugging Face checkpoint -> GGUF v3. */
#include "cli/cli.h"
#include "model/gguf.h"
#include <string.h>
#include <strings.h>

static void usage(FILE *f) {
    fputs("Usage: fluxprm convert <hf-dir> <out.gguf> [--type f32|f16|bf16|q8_0|q4_0] [--trunk-only] [--quiet]\n"
          "\n"
          "Writes a GGUF v3 file from a Hugging Face Qwen2/Qwen3 directory (config.json, model.safetensors or\n"
          "model.safetensors.index.json, optional reward_head.pt, tokenizer.json, tokenizer_config.json).\n"
          "PRM heads are kept as cls / cls.output and fluxprm.reward_head.* tensors (see docs/formats.md), which\n"
          "fluxprm reads back; llama.cpp refuses tensors it does not know, so give --trunk-only for llama.cpp.\n"
          "\n"
          "  --type T      storage type of 2-D weights (default f16); norms and biases are always F32; q8_0/q4_0\n"
          "                rows whose length is not a multiple of 32 are stored as F16\n"
          "  --trunk-only  leave the head tensors out (a file llama.cpp loads: general.architecture qwen2/qwen3)\n"
          "  --quiet       no summary line\n", f);
}

int cmd_convert(int argc, char **argv) {
    const char *pos[2] = {NULL, NULL}, *type_s = "f16";
    int npos = 0, quiet = 0, flags = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage(stdout); return EXIT_OK; }
        else if (!strcmp(argv[i], "--type")) {
            if (++i >= argc) return cli_usage_error("convert", "--type needs a value");
            type_s = argv[i];
        } else if (!strncmp(argv[i], "--type=", 7)) type_s = argv[i] + 7;
        else if (!strcmp(argv[i], "--quiet") || !strcmp(argv[i], "-q")) quiet = 1;
        else if (!strcmp(argv[i], "--trunk-only")) flags |= FP_GGUF_TRUNK_ONLY;
        else if (argv[i][0] == '-' && argv[i][1]) return cli_usage_error("convert", "unknown option %s", argv[i]);
        else if (npos < 2) pos[npos++] = argv[i];
        else return cli_usage_error("convert", "unexpected argument %s", argv[i]);
    }
    if (npos != 2) return cli_usage_error("convert", "expected <hf-dir> and <out.gguf>");
    static const struct { const char *name; fp_dtype t; } types[] = {
        {"f32", FP_F32}, {"f16", FP_F16}, {"bf16", FP_BF16}, {"q8_0", FP_Q8_0}, {"q4_0", FP_Q4_0}};
    int found = -1;
    for (int i = 0; i < 5; i++)
        if (!strcasecmp(type_s, types[i].name)) found = i;
    if (found < 0) return cli_usage_error("convert", "--type %s: expected f32, f16, bf16, q8_0 or q4_0", type_s);
    fp_gguf_convert_info info;
    if (fp_gguf_convert_hf(pos[0], pos[1], types[found].t, flags, &info)) return cli_fail("convert");
    if (!quiet) {
        fprintf(stderr, "fluxprm: wrote %s: %d tensors (%s)%s%s", pos[1], info.tensors, types[found].name,
                info.tokenizer ? ", tokenizer metadata" : ", no tokenizer.json: no tokenizer metadata",
                info.fallback ? ", some rows not a multiple of 32 stored as F16" : "");
        if (info.dropped) fprintf(stderr, ", %d head tensors left out", info.dropped);
        fputc('\n', stderr);
    }
    return EXIT_OK;
}
