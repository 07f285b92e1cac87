/* GGUF v3 (ggml docs/gguf.md): an internal view of a file's metadata and tensor infos, used by the weights
 * reader, the converter and the tokenizer (tokenizer.ggml.* arrays).  Everything points into the mapping. */
#ifndef FP_MODEL_GGUF_H
#define FP_MODEL_GGUF_H
#include "base/base.h"
#include "model/weights.h"

/* Metadata value types. */
enum {
    FP_GGUF_U8 = 0, FP_GGUF_I8, FP_GGUF_U16, FP_GGUF_I16, FP_GGUF_U32, FP_GGUF_I32, FP_GGUF_F32, FP_GGUF_BOOL,
    FP_GGUF_STRING, FP_GGUF_ARRAY, FP_GGUF_U64, FP_GGUF_I64, FP_GGUF_F64
};
/* ggml tensor types we read and write (others are listed by name in messages only). */
enum { FP_GGML_F32 = 0, FP_GGML_F16 = 1, FP_GGML_Q4_0 = 2, FP_GGML_Q8_0 = 8, FP_GGML_BF16 = 30 };
#define FP_GGUF_DEFAULT_ALIGNMENT 32

typedef struct fp_gguf fp_gguf;
/* A GGUF string: not NUL-terminated. */
typedef struct {
    const char *s;
    size_t len;
} fp_gguf_str;

typedef struct {
    fp_gguf_str name; /* GGUF (llama.cpp) name */
    int ndim;
    int64_t ne[FP_MAX_DIMS]; /* ne[0] innermost */
    uint32_t type;           /* ggml type */
    const void *data;        /* NULL when the type is not one we can size (see fp_gguf_type_name) */
    size_t nbytes;
} fp_gguf_tensor;

/* Parses the header, every KV pair and tensor info, with bounds checks on all of them. */
int fp_gguf_open(fp_gguf **out, const char *path);
/* The same over a caller-owned buffer that must outlive the handle. */
int fp_gguf_open_memory(fp_gguf **out, const void *data, size_t size, const char *name);
void fp_gguf_close(fp_gguf *g);

uint32_t fp_gguf_version(const fp_gguf *g);
size_t fp_gguf_alignment(const fp_gguf *g);
size_t fp_gguf_kv_count(const fp_gguf *g);
fp_gguf_str fp_gguf_kv_key(const fp_gguf *g, size_t i);
/* Index of key, or -1. */
long fp_gguf_find(const fp_gguf *g, const char *key);
/* Value type of entry i (FP_GGUF_*); for arrays also the element type and count (either may be NULL). */
int fp_gguf_kv_type(const fp_gguf *g, size_t i, int *elem_type, uint64_t *count);

/* Typed getters.  A missing key is FP_ERANGE (message names the key); a value of the wrong type FP_EPARSE.
 * Integers accept any integer type (and bool) whose value fits; floats also accept integers. */
int fp_gguf_get_string(const fp_gguf *g, const char *key, fp_gguf_str *out);
int fp_gguf_get_int(const fp_gguf *g, const char *key, int64_t *out);
int fp_gguf_get_float(const fp_gguf *g, const char *key, double *out);
int fp_gguf_get_bool(const fp_gguf *g, const char *key, int *out);
/* Arrays: *out is malloc'd (caller frees; string views point into the file). */
int fp_gguf_get_string_array(const fp_gguf *g, const char *key, fp_gguf_str **out, size_t *n);
int fp_gguf_get_int_array(const fp_gguf *g, const char *key, int64_t **out, size_t *n);
int fp_gguf_get_f32_array(const fp_gguf *g, const char *key, float **out, size_t *n);

size_t fp_gguf_tensor_count(const fp_gguf *g);
const fp_gguf_tensor *fp_gguf_tensor_at(const fp_gguf *g, size_t i);
/* "Q4_K", "F32", ... or "type N". */
const char *fp_gguf_type_name(uint32_t type);

/* Builds HF-named tensors (and, when cfg is not NULL, the hyper-parameters) from g's tensors; the tensors
 * point into g's buffer, so g must outlive *out unless its mapping is handed over (fp_weights_open_gguf). */
int fp_weights_from_gguf(fp_weights **out, fp_model_config *cfg, const fp_gguf *g);

/* Name translation between llama.cpp and Hugging Face conventions (see docs/formats.md).
 * prm2_head: the file has a two-layer PRM head (cls -> score.0, cls.output -> score.2; otherwise cls -> score).
 * Return 0 on success, -1 when the name has no translation (or does not fit n bytes). */
int fp_gguf_name_to_hf(const char *gguf_name, int prm2_head, char *out, size_t n);
int fp_gguf_name_from_hf(const char *hf_name, char *out, size_t n);

/* Tokenizer from tokenizer.ggml.* metadata (gguf_tokenizer.c): model "gpt2" only; pre-tokenizer regex from
 * fp_tokenizer_gguf_pre_regex(tokenizer.ggml.pre); token_type 3 (control) / 4 (user-defined) become added
 * tokens (special / not special), 5 (unused) ids are left empty; NFC normalisation when pre is "qwen2".
 * fp_tokenizer_load could dispatch "*.gguf" paths to fp_gguf_load_tokenizer. */
int fp_gguf_tokenizer(fp_tokenizer **out, const fp_gguf *g, const char *source);
int fp_gguf_load_tokenizer(fp_tokenizer **out, const char *path);

/* Writer (gguf_write.c) ------------------------------------------------------------------------------ */
typedef struct fp_gguf_writer fp_gguf_writer;
fp_gguf_writer *fp_gguf_writer_new(void);
void fp_gguf_writer_free(fp_gguf_writer *w);
/* Metadata in call order; keys must be unique (FP_EINVAL otherwise). */
int fp_gguf_set_string(fp_gguf_writer *w, const char *key, const char *val);
int fp_gguf_set_u32(fp_gguf_writer *w, const char *key, uint32_t val);
int fp_gguf_set_i32(fp_gguf_writer *w, const char *key, int32_t val);
int fp_gguf_set_f32(fp_gguf_writer *w, const char *key, float val);
int fp_gguf_set_bool(fp_gguf_writer *w, const char *key, int val);
int fp_gguf_set_string_array(fp_gguf_writer *w, const char *key, const char *const *vals, size_t n);
int fp_gguf_set_i32_array(fp_gguf_writer *w, const char *key, const int32_t *vals, size_t n);
/* A tensor in HF shape order (shape[0] outermost); data (nbytes, ggml type) is copied into the writer when
 * copy is set, else it must stay valid until fp_gguf_writer_write returns. */
int fp_gguf_add_tensor(fp_gguf_writer *w, const char *gguf_name, uint32_t ggml_type, int ndim, const int64_t *shape,
                       const void *data, size_t nbytes, int copy);
/* A tensor converted from src (any stored dtype) to target at write time, row by row (no copy is held);
 * src must stay valid until fp_gguf_writer_write returns. */
int fp_gguf_add_tensor_convert(fp_gguf_writer *w, const char *gguf_name, fp_dtype target, const fp_tensor *src);
/* Writes the file atomically (temp + rename) with general.alignment 32. */
int fp_gguf_writer_write(fp_gguf_writer *w, const char *path);

/* Converter (gguf_convert.c): an HF directory (config.json, model.safetensors[.index.json], optional
 * reward_head.pt / reward_head.safetensors, tokenizer.json, tokenizer_config.json) to a GGUF file: 2-D weights
 * in `type` (Q8_0/Q4_0 rows not a multiple of 32 fall back to F16), 1-D tensors F32. */
typedef struct {
    int tensors;   /* tensors written */
    int fallback;  /* 2-D tensors written as F16 instead of a q type */
    int tokenizer; /* tokenizer metadata written (tokenizer.json present) */
    int dropped;   /* head tensors left out (FP_GGUF_TRUNK_ONLY) */
} fp_gguf_convert_info;
/* FP_GGUF_TRUNK_ONLY: leave out every head tensor (cls*, fluxprm.reward_head.*): llama.cpp refuses files with
 * tensors its architecture does not define ("wrong number of tensors"), so use it for llama.cpp. */
enum { FP_GGUF_TRUNK_ONLY = 1 };
int fp_gguf_convert_hf(const char *hf_dir, const char *out_path, fp_dtype type, int flags, fp_gguf_convert_info *info);

/* Quantisation (quant.c) ----------------------------------------------------------------------------- */
/* One row of n f32 values (n a multiple of 32 for the q types) into dst in dtype t, following llama.cpp's
 * reference rules (docs/formats.md). */
void fp_quantize_row(void *dst, const float *src, fp_dtype t, int64_t n);
uint32_t fp_dtype_to_ggml(fp_dtype t);
/* -1 when the ggml type is not one of ours. */
int fp_dtype_from_ggml(uint32_t ggml_type);
#endif
