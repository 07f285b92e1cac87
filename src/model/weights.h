/* Named tensors from a checkpoint (safetensors directory, GGUF file, torch zip), memory-mapped and kept in
 * their stored dtype, plus the model hyper-parameters.  Names and shapes always use the Hugging Face
 * convention (e.g. "model.layers.0.self_attn.q_proj.weight", shape [out, in], shape[0] outermost), whatever
 * the file format: the GGUF reader translates names and reverses its ne[] order. */
#ifndef FP_WEIGHTS_H
#define FP_WEIGHTS_H
#include "tensor/tensor.h"
#include <stddef.h>
#include <stdint.h>

#define FP_MAX_DIMS 4

typedef struct {
    char *name;
    fp_dtype dtype;
    int ndim;
    int64_t shape[FP_MAX_DIMS];
    const void *data; /* points into a mapping owned by the fp_weights (or into owned memory) */
    size_t nbytes;
} fp_tensor;

typedef struct fp_weights fp_weights;

/* A directory with model.safetensors or model.safetensors.index.json (sharded), or one .safetensors file. */
int fp_weights_open_safetensors(fp_weights **out, const char *path);
/* Looks a tensor up by its HF name; NULL when absent (no error recorded). */
const fp_tensor *fp_weights_get(const fp_weights *w, const char *name);
size_t fp_weights_count(const fp_weights *w);
const fp_tensor *fp_weights_at(const fp_weights *w, size_t i);
void fp_weights_free(fp_weights *w);

/* Building an fp_weights (every reader uses these; the struct, get/count/at/free live in
 * src/model/weights_store.c).  fp_weights_add copies name and shape; data must stay valid for the life of w
 * (point into an adopted mapping or buffer).  Duplicate names are an FP_EPARSE error. */
#include "base/base.h"
fp_weights *fp_weights_new(void);
int fp_weights_add(fp_weights *w, const char *name, fp_dtype dt, int ndim, const int64_t *shape,
                   const void *data, size_t nbytes);
/* w takes ownership: the mapping is closed (and *m zeroed) / the malloc'd buffer freed by fp_weights_free. */
int fp_weights_adopt_mmap(fp_weights *w, fp_mmap *m);
int fp_weights_adopt_buffer(fp_weights *w, void *buf);
/* When [p, p + n) lies inside one of w's file mappings: its file descriptor and offset, returns 1; else 0. */
int fp_weights_file_span(const fp_weights *w, const void *p, size_t n, int *fd, uint64_t *offset);

/* A torch.save(state_dict) file (zip + pickle), e.g. ReasonFlux-PRM-1.5B reward_head.pt ("weight", "bias"),
 * or a legacy pytorch_model.bin.  Tensors keep their stored dtype (F32, F16 or BF16; others FP_EUNSUPPORTED);
 * nested dicts give dotted names.  The file is mapped (tensors point into it, or into copies when misaligned). */
int fp_torchzip_load_state_dict(fp_weights **out, const char *path);
/* The same from a buffer (name used in messages); tensor data is copied, the buffer need not outlive *out. */
int fp_torchzip_load_memory(fp_weights **out, const void *data, size_t size, const char *name);

/* Hyper-parameters: everything the forward pass needs, read from config.json (or GGUF metadata). */
typedef struct {
    char architecture[64]; /* e.g. Qwen2ForProcessRewardModel, Qwen2ForCausalLM, Qwen3ForCausalLM */
    char model_type[32];   /* qwen2 | qwen3 */
    int hidden_size, intermediate_size, num_layers, num_heads, num_kv_heads, head_dim;
    int vocab_size, max_position_embeddings;
    double rope_theta, rms_norm_eps;
    int tie_word_embeddings;
    int attention_bias; /* q/k/v bias (true for Qwen2, false for Qwen3 by default) */
    int qk_norm;        /* Qwen3: per-head RMSNorm on q and k */
    int num_labels;     /* classification heads */
    fp_dtype torch_dtype;
    int bos_token_id, eos_token_id, pad_token_id; /* -1 when absent */
} fp_model_config;

/* Parses config.json (a path to the file or its directory). */
int fp_model_config_load(fp_model_config *cfg, const char *path);

/* A GGUF (v3) file, memory-mapped: tensors F32/F16/BF16/Q8_0/Q4_0 (others FP_EUNSUPPORTED naming the tensor),
 * llama.cpp names translated to HF names and shapes reversed to HF order; cfg (may be NULL) is filled from the
 * qwen2.* / qwen3.* keys.  Tokenizer metadata and the writer: src/model/gguf.h; names: docs/formats.md. */
int fp_weights_open_gguf(fp_weights **out, fp_model_config *cfg, const char *path);

#endif
