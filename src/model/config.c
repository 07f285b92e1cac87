/* config.json -> fp_model_config.  Every hyper-parameter comes from the file; absent optional fields take the
 * Hugging Face defaults of the model_type (Qwen2Config / Qwen3Config). */
#include "base/base.h"
#include "model/weights.h"
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Reads an integer field; *present = 0 when absent or null.  Non-integers are an error. */
static int get_int(json_t *o, const char *path, const char *key, int *out, int *present) {
    json_t *v = json_object_get(o, key);
    *present = 0;
    if (!v || json_is_null(v)) return FP_OK;
    if (json_is_real(v) && floor(json_real_value(v)) == json_real_value(v)) {
        *out = (int)json_real_value(v);
    } else if (!json_is_integer(v)) {
        return fp_errorf(FP_EPARSE, "%s: field \"%s\" is not an integer", path, key);
    } else {
        json_int_t x = json_integer_value(v);
        if (x < -2147483647LL || x > 2147483647LL)
            return fp_errorf(FP_EPARSE, "%s: field \"%s\" = %lld out of range", path, key, (long long)x);
        *out = (int)x;
    }
    *present = 1;
    return FP_OK;
}

static int get_num(json_t *o, const char *path, const char *key, double *out, int *present) {
    json_t *v = json_object_get(o, key);
    *present = 0;
    if (!v || json_is_null(v)) return FP_OK;
    if (!json_is_number(v)) return fp_errorf(FP_EPARSE, "%s: field \"%s\" is not a number", path, key);
    *out = json_number_value(v);
    *present = 1;
    return FP_OK;
}

/* Token id fields may be an integer or a list of integers (first one taken). */
static int get_token_id(json_t *o, const char *path, const char *key, int *out) {
    json_t *v = json_object_get(o, key);
    *out = -1;
    if (!v || json_is_null(v)) return FP_OK;
    if (json_is_array(v)) v = json_array_size(v) ? json_array_get(v, 0) : NULL;
    if (!v) return FP_OK;
    if (!json_is_integer(v)) return fp_errorf(FP_EPARSE, "%s: field \"%s\" is not a token id", path, key);
    *out = (int)json_integer_value(v);
    return FP_OK;
}

static int need_positive(const char *path, const char *key, int present, int v) {
    if (!present) return fp_errorf(FP_EPARSE, "%s: required field \"%s\" missing", path, key);
    if (v <= 0) return fp_errorf(FP_EPARSE, "%s: field \"%s\" = %d must be positive", path, key, v);
    return FP_OK;
}

static int parse_dtype(const char *s, fp_dtype *dt) {
    if (!strcmp(s, "float32") || !strcmp(s, "float")) *dt = FP_F32;
    else if (!strcmp(s, "bfloat16")) *dt = FP_BF16;
    else if (!strcmp(s, "float16") || !strcmp(s, "half")) *dt = FP_F16;
    else return -1;
    return 0;
}

static int config_from_json(fp_model_config *c, json_t *root, const char *path) {
    int rc, p;
    memset(c, 0, sizeof *c);
    if (!json_is_object(root)) return fp_errorf(FP_EPARSE, "%s: not a JSON object", path);

    json_t *mt = json_object_get(root, "model_type");
    if (!json_is_string(mt)) return fp_errorf(FP_EPARSE, "%s: required field \"model_type\" missing", path);
    snprintf(c->model_type, sizeof c->model_type, "%s", json_string_value(mt));
    int qwen3 = !strcmp(c->model_type, "qwen3");
    if (!qwen3 && strcmp(c->model_type, "qwen2"))
        return fp_errorf(FP_EUNSUPPORTED, "%s: model_type \"%s\" is not supported (qwen2, qwen3)", path,
                         c->model_type);

    json_t *arch = json_object_get(root, "architectures");
    if (json_is_array(arch) && json_array_size(arch) > 0 && json_is_string(json_array_get(arch, 0)))
        snprintf(c->architecture, sizeof c->architecture, "%s", json_string_value(json_array_get(arch, 0)));

    if ((rc = get_int(root, path, "hidden_size", &c->hidden_size, &p)) ||
        (rc = need_positive(path, "hidden_size", p, c->hidden_size)))
        return rc;
    if ((rc = get_int(root, path, "intermediate_size", &c->intermediate_size, &p)) ||
        (rc = need_positive(path, "intermediate_size", p, c->intermediate_size)))
        return rc;
    if ((rc = get_int(root, path, "num_hidden_layers", &c->num_layers, &p)) ||
        (rc = need_positive(path, "num_hidden_layers", p, c->num_layers)))
        return rc;
    if ((rc = get_int(root, path, "num_attention_heads", &c->num_heads, &p)) ||
        (rc = need_positive(path, "num_attention_heads", p, c->num_heads)))
        return rc;
    if ((rc = get_int(root, path, "vocab_size", &c->vocab_size, &p)) ||
        (rc = need_positive(path, "vocab_size", p, c->vocab_size)))
        return rc;
    if ((rc = get_int(root, path, "num_key_value_heads", &c->num_kv_heads, &p))) return rc;
    if (!p) c->num_kv_heads = c->num_heads;
    if (c->num_kv_heads <= 0 || c->num_heads % c->num_kv_heads)
        return fp_errorf(FP_EPARSE, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", path,
                         c->num_heads, c->num_kv_heads);
    if ((rc = get_int(root, path, "head_dim", &c->head_dim, &p))) return rc;
    if (!p) {
        if (c->hidden_size % c->num_heads)
            return fp_errorf(FP_EPARSE, "%s: hidden_size %d is not a multiple of num_attention_heads %d", path,
                             c->hidden_size, c->num_heads);
        c->head_dim = c->hidden_size / c->num_heads;
    }
    if (c->head_dim <= 0 || c->head_dim % 2)
        return fp_errorf(FP_EPARSE, "%s: head_dim %d must be positive and even (rotary embedding)", path, c->head_dim);
    if ((rc = get_int(root, path, "max_position_embeddings", &c->max_position_embeddings, &p))) return rc;
    if (!p) c->max_position_embeddings = 32768;

    /* rope_theta: top level (transformers 4.x) or rope_parameters.rope_theta (5.x). */
    c->rope_theta = 10000.0;
    if ((rc = get_num(root, path, "rope_theta", &c->rope_theta, &p))) return rc;
    json_t *rp = json_object_get(root, "rope_parameters");
    if (json_is_object(rp)) {
        int p2;
        if ((rc = get_num(rp, path, "rope_theta", &c->rope_theta, &p2))) return rc;
        json_t *ty = json_object_get(rp, "rope_type");
        if (json_is_string(ty) && strcmp(json_string_value(ty), "default"))
            return fp_errorf(FP_EUNSUPPORTED, "%s: rope_parameters.rope_type \"%s\" is not supported (default only)",
                             path, json_string_value(ty));
    }
    json_t *rs = json_object_get(root, "rope_scaling");
    if (rs && !json_is_null(rs)) {
        json_t *ty = json_object_get(rs, "rope_type");
        if (!ty) ty = json_object_get(rs, "type");
        if (!json_is_string(ty) || strcmp(json_string_value(ty), "default"))
            return fp_errorf(FP_EUNSUPPORTED, "%s: rope_scaling \"%s\" is not supported", path,
                             json_is_string(ty) ? json_string_value(ty) : "?");
    }
    if (!(c->rope_theta > 0)) return fp_errorf(FP_EPARSE, "%s: rope_theta must be positive", path);

    c->rms_norm_eps = 1e-6;
    if ((rc = get_num(root, path, "rms_norm_eps", &c->rms_norm_eps, &p))) return rc;
    if (!(c->rms_norm_eps >= 0)) return fp_errorf(FP_EPARSE, "%s: rms_norm_eps must be >= 0", path);

    json_t *tie = json_object_get(root, "tie_word_embeddings");
    c->tie_word_embeddings = tie ? json_is_true(tie) : 0; /* Qwen2Config / Qwen3Config default: false */
    json_t *ab = json_object_get(root, "attention_bias");
    c->attention_bias = qwen3 ? (ab && json_is_true(ab)) : 1; /* Qwen2 q/k/v always carry a bias */
    c->qk_norm = qwen3;

    json_t *sw = json_object_get(root, "use_sliding_window");
    if (sw && json_is_true(sw))
        return fp_errorf(FP_EUNSUPPORTED, "%s: use_sliding_window=true is not supported", path);
    json_t *act = json_object_get(root, "hidden_act");
    if (json_is_string(act) && strcmp(json_string_value(act), "silu"))
        return fp_errorf(FP_EUNSUPPORTED, "%s: hidden_act \"%s\" is not supported (silu)", path,
                         json_string_value(act));

    c->num_labels = 2;
    json_t *id2label = json_object_get(root, "id2label");
    if (json_is_object(id2label) && json_object_size(id2label) > 0) c->num_labels = (int)json_object_size(id2label);
    if ((rc = get_int(root, path, "num_labels", &c->num_labels, &p))) return rc;

    c->torch_dtype = FP_F32;
    json_t *dt = json_object_get(root, "torch_dtype");
    if (!json_is_string(dt)) dt = json_object_get(root, "dtype");
    if (json_is_string(dt) && parse_dtype(json_string_value(dt), &c->torch_dtype))
        return fp_errorf(FP_EUNSUPPORTED, "%s: torch_dtype \"%s\" is not supported", path, json_string_value(dt));

    if ((rc = get_token_id(root, path, "bos_token_id", &c->bos_token_id)) ||
        (rc = get_token_id(root, path, "eos_token_id", &c->eos_token_id)) ||
        (rc = get_token_id(root, path, "pad_token_id", &c->pad_token_id)))
        return rc;
    return FP_OK;
}

int fp_model_config_load(fp_model_config *cfg, const char *path) {
    if (!cfg || !path) return fp_errorf(FP_EINVAL, "fp_model_config_load: NULL argument");
    char file[4096];
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) snprintf(file, sizeof file, "%s/config.json", path);
    else snprintf(file, sizeof file, "%s", path);
    char *text;
    size_t len;
    int rc = fp_read_file(file, &text, &len);
    if (rc) return rc;
    json_error_t err;
    json_t *root = json_loadb(text, len, 0, &err);
    free(text);
    if (!root) return fp_errorf(FP_EPARSE, "%s:%d: JSON error: %s", file, err.line, err.text);
    rc = config_from_json(cfg, root, file);
    json_decref(root);
    return rc;
}
