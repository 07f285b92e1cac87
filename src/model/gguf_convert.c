/* Hugging Face directory (config.json + safetensors [+ reward_head.pt] [+ tokenizer.json]) -> GGUF v3 that
 * llama.cpp loads (general.architecture qwen2/qwen3), plus fluxprm.* keys and head tensors so our reader
 * round-trips PRMs.  Key and tensor names: docs/formats.md. */
#include "model/gguf.h"
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    char **tokens;
    int32_t *types;
    size_t n;
    char **merges;
    size_t nmerges;
} tokdata;

static void tokdata_free(tokdata *t) {
    for (size_t i = 0; i < t->n; i++) free(t->tokens[i]);
    for (size_t i = 0; i < t->nmerges; i++) free(t->merges[i]);
    free(t->tokens);
    free(t->types);
    free(t->merges);
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Token id of a tokenizer_config.json special-token entry (a string or {"content": ...}); -1 if none. */
static long token_id_of(const tokdata *t, json_t *v) {
    if (json_is_object(v)) v = json_object_get(v, "content");
    if (!json_is_string(v)) return -1;
    const char *s = json_string_value(v);
    for (size_t i = 0; i < t->n; i++)
        if (t->tokens[i] && !strcmp(t->tokens[i], s)) return (long)i;
    return -1;
}

static int load_tokenizer(tokdata *t, const char *dir, long vocab_size, const char **errpath) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    *errpath = NULL;
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) return fp_errorf(FP_EPARSE, "%s:%d: %s", path, jerr.line, jerr.text);
    int rc = FP_OK;
    json_t *model = json_object_get(root, "model"), *vocab = json_object_get(model, "vocab");
    json_t *merges = json_object_get(model, "merges"), *added = json_object_get(root, "added_tokens");
    const char *type = json_string_value(json_object_get(model, "type"));
    if (!type || strcmp(type, "BPE") || !json_is_object(vocab) || !json_is_array(merges)) {
        rc = fp_errorf(FP_EUNSUPPORTED, "%s: only BPE tokenizers (model.vocab + model.merges) are supported", path);
        goto done;
    }
    long maxid = -1;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) > 100000000) {
            rc = fp_errorf(FP_EPARSE, "%s: vocab entry \"%s\" has a bad id", path, key);
            goto done;
        }
        if (json_integer_value(val) > maxid) maxid = (long)json_integer_value(val);
    }
    size_t i;
    json_array_foreach(added, i, val) {
        json_t *id = json_object_get(val, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) > 100000000 ||
            !json_is_string(json_object_get(val, "content"))) {
            rc = fp_errorf(FP_EPARSE, "%s: added_tokens[%zu] lacks an id or content", path, i);
            goto done;
        }
        if (json_integer_value(id) > maxid) maxid = (long)json_integer_value(id);
    }
    if (vocab_size > 0 && maxid >= vocab_size) {
        rc = fp_errorf(FP_EPARSE, "%s: token id %ld is not below the model's vocab_size %ld", path, maxid, vocab_size);
        goto done;
    }
    t->n = (size_t)(vocab_size > maxid + 1 ? vocab_size : maxid + 1);
    t->tokens = fp_calloc(t->n, sizeof *t->tokens);
    t->types = fp_calloc(t->n, sizeof *t->types);
    if (!t->tokens || !t->types) { rc = FP_ENOMEM; goto done; }
    json_object_foreach(vocab, key, val) {
        size_t id = (size_t)json_integer_value(val);
        free(t->tokens[id]);
        if (!(t->tokens[id] = fp_strdup(key))) { rc = FP_ENOMEM; goto done; }
        t->types[id] = 1; /* normal */
    }
    json_array_foreach(added, i, val) {
        size_t id = (size_t)json_integer_value(json_object_get(val, "id"));
        free(t->tokens[id]);
        if (!(t->tokens[id] = fp_strdup(json_string_value(json_object_get(val, "content"))))) { rc = FP_ENOMEM; goto done; }
        t->types[id] = json_is_true(json_object_get(val, "special")) ? 3 : 4; /* control : user-defined */
    }
    for (size_t id = 0; id < t->n; id++)
        if (!t->tokens[id]) {
            char pad[32];
            snprintf(pad, sizeof pad, "[PAD%zu]", id);
            if (!(t->tokens[id] = fp_strdup(pad))) { rc = FP_ENOMEM; goto done; }
            t->types[id] = 5; /* unused */
        }
    t->merges = fp_calloc(json_array_size(merges) + 1, sizeof *t->merges);
    if (!t->merges) { rc = FP_ENOMEM; goto done; }
    json_array_foreach(merges, i, val) {
        char *m = NULL;
        if (json_is_string(val)) m = fp_strdup(json_string_value(val));
        else if (json_is_array(val) && json_array_size(val) == 2 && json_is_string(json_array_get(val, 0)) &&
                 json_is_string(json_array_get(val, 1))) {
            const char *a = json_string_value(json_array_get(val, 0)), *b = json_string_value(json_array_get(val, 1));
            size_t n = strlen(a) + strlen(b) + 2;
            if ((m = fp_malloc(n))) snprintf(m, n, "%s %s", a, b);
        } else {
            rc = fp_errorf(FP_EPARSE, "%s: model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", path, i);
            goto done;
        }
        if (!m) { rc = FP_ENOMEM; goto done; }
        t->merges[t->nmerges++] = m;
    }
done:
    json_decref(root);
    return rc;
}

static int set_tokenizer(fp_gguf_writer *w, const char *dir, const fp_model_config *cfg, int *have_tokenizer) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    *have_tokenizer = file_exists(path);
    if (!*have_tokenizer) return FP_OK;
    tokdata t = {0};
    const char *ep;
    int rc = load_tokenizer(&t, dir, cfg->vocab_size, &ep);
    if (rc) { tokdata_free(&t); return rc; }
    json_t *tc = NULL;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (file_exists(path)) {
        json_error_t jerr;
        tc = json_load_file(path, 0, &jerr);
        if (!tc) { tokdata_free(&t); return fp_errorf(FP_EPARSE, "%s:%d: %s", path, jerr.line, jerr.text); }
    }
    long eos = token_id_of(&t, json_object_get(tc, "eos_token")), pad = token_id_of(&t, json_object_get(tc, "pad_token"));
    long bos = cfg->bos_token_id >= 0 ? cfg->bos_token_id : token_id_of(&t, json_object_get(tc, "bos_token"));
    if (eos < 0) eos = cfg->eos_token_id;
    if (pad < 0) pad = cfg->pad_token_id;
    if ((rc = fp_gguf_set_string(w, "tokenizer.ggml.model", "gpt2")) ||
        (rc = fp_gguf_set_string(w, "tokenizer.ggml.pre", "qwen2")) ||
        (rc = fp_gguf_set_string_array(w, "tokenizer.ggml.tokens", (const char *const *)t.tokens, t.n)) ||
        (rc = fp_gguf_set_i32_array(w, "tokenizer.ggml.token_type", t.types, t.n)) ||
        (rc = fp_gguf_set_string_array(w, "tokenizer.ggml.merges", (const char *const *)t.merges, t.nmerges)))
        goto done;
    if (eos >= 0 && (rc = fp_gguf_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eos))) goto done;
    if (bos >= 0 && (rc = fp_gguf_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos))) goto done;
    if (pad >= 0 && (rc = fp_gguf_set_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)pad))) goto done;
    json_t *abos = json_object_get(tc, "add_bos_token");
    if ((rc = fp_gguf_set_bool(w, "tokenizer.ggml.add_bos_token", json_is_true(abos)))) goto done;
    json_t *tmpl = json_object_get(tc, "chat_template");
    if (json_is_string(tmpl) && (rc = fp_gguf_set_string(w, "tokenizer.chat_template", json_string_value(tmpl)))) goto done;
done:
    json_decref(tc);
    tokdata_free(&t);
    return rc;
}

static uint32_t file_type(fp_dtype t) { /* llama_ftype: ALL_F32, MOSTLY_F16, MOSTLY_Q4_0, MOSTLY_Q8_0, MOSTLY_BF16 */
    switch (t) {
    case FP_F32: return 0;
    case FP_F16: return 1;
    case FP_Q4_0: return 2;
    case FP_Q8_0: return 7;
    case FP_BF16: return 32;
    }
    return 0;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

int fp_gguf_convert_hf(const char *dir, const char *out_path, fp_dtype type, int flags, fp_gguf_convert_info *info) {
    fp_gguf_convert_info dummy;
    if (!info) info = &dummy;
    memset(info, 0, sizeof *info);
    fp_model_config cfg;
    fp_weights *w = NULL, *head = NULL;
    fp_gguf_writer *gw = NULL;
    int rc = fp_model_config_load(&cfg, dir);
    if (rc) return rc;
    const char *arch = cfg.model_type;
    if (strcmp(arch, "qwen2") && strcmp(arch, "qwen3"))
        return fp_errorf(FP_EUNSUPPORTED, "%s: model_type \"%s\" (qwen2 and qwen3 are supported)", dir, arch);
    if ((rc = fp_weights_open_safetensors(&w, dir))) goto done;
    char p[4096];
    /* a separate scalar head (ReasonFlux-PRM-1.5B) only when the checkpoint has no score head (as fp_model_load) */
    int has_score = fp_weights_get(w, "score.0.weight") || fp_weights_get(w, "score.weight");
    snprintf(p, sizeof p, "%s/reward_head.safetensors", dir);
    if (!has_score && file_exists(p) && (rc = fp_weights_open_safetensors(&head, p))) goto done;
    snprintf(p, sizeof p, "%s/reward_head.pt", dir);
    if (!has_score && !head && file_exists(p) && (rc = fp_torchzip_load_state_dict(&head, p))) goto done;
    gw = fp_gguf_writer_new();
    if (!gw) { rc = FP_ENOMEM; goto done; }
    char name[256];
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dl--;
    size_t ds = dl;
    while (ds > 0 && dir[ds - 1] != '/') ds--;
    snprintf(name, sizeof name, "%.*s", (int)(dl - ds), dir + ds);
    int prm2 = fp_weights_get(w, "score.0.weight") != NULL, lin = !prm2 && fp_weights_get(w, "score.weight") != NULL;
    int trunk = (flags & FP_GGUF_TRUNK_ONLY) != 0;
    const char *head_kind = trunk ? "none" : prm2 ? "prm2" : lin ? "linear" : head ? "reward_head" : "none";
    char k[128];
#define KEY(s) (snprintf(k, sizeof k, "%s.%s", arch, s), k)
    if ((rc = fp_gguf_set_string(gw, "general.architecture", arch)) ||
        (rc = fp_gguf_set_string(gw, "general.name", name)) ||
        (rc = fp_gguf_set_u32(gw, "general.file_type", file_type(type))) ||
        (rc = fp_gguf_set_u32(gw, "general.quantization_version", 2)) ||
        (rc = fp_gguf_set_u32(gw, KEY("context_length"), (uint32_t)cfg.max_position_embeddings)) ||
        (rc = fp_gguf_set_u32(gw, KEY("embedding_length"), (uint32_t)cfg.hidden_size)) ||
        (rc = fp_gguf_set_u32(gw, KEY("block_count"), (uint32_t)cfg.num_layers)) ||
        (rc = fp_gguf_set_u32(gw, KEY("feed_forward_length"), (uint32_t)cfg.intermediate_size)) ||
        (rc = fp_gguf_set_u32(gw, KEY("attention.head_count"), (uint32_t)cfg.num_heads)) ||
        (rc = fp_gguf_set_u32(gw, KEY("attention.head_count_kv"), (uint32_t)cfg.num_kv_heads)) ||
        (rc = fp_gguf_set_f32(gw, KEY("attention.layer_norm_rms_epsilon"), (float)cfg.rms_norm_eps)) ||
        (rc = fp_gguf_set_f32(gw, KEY("rope.freq_base"), (float)cfg.rope_theta)))
        goto done;
    if ((!strcmp(arch, "qwen3") || cfg.head_dim * cfg.num_heads != cfg.hidden_size) &&
        ((rc = fp_gguf_set_u32(gw, KEY("attention.key_length"), (uint32_t)cfg.head_dim)) ||
         (rc = fp_gguf_set_u32(gw, KEY("attention.value_length"), (uint32_t)cfg.head_dim))))
        goto done;
#undef KEY
    if ((rc = fp_gguf_set_string(gw, "fluxprm.hf_architecture", cfg.architecture)) ||
        (rc = fp_gguf_set_string(gw, "fluxprm.head", head_kind)) ||
        (rc = fp_gguf_set_bool(gw, "fluxprm.tie_word_embeddings", cfg.tie_word_embeddings)) ||
        ((prm2 || lin) && !trunk && (rc = fp_gguf_set_u32(gw, "fluxprm.num_labels", (uint32_t)cfg.num_labels))))
        goto done;
    if ((rc = set_tokenizer(gw, dir, &cfg, &info->tokenizer))) goto done;
    /* tensors */
    for (size_t i = 0; i < fp_weights_count(w); i++) {
        const fp_tensor *t = fp_weights_at(w, i);
        char gname[256];
        if (ends_with(t->name, "rotary_emb.inv_freq")) continue; /* recomputed from rope.freq_base */
        if (!strcmp(t->name, "lm_head.weight") && cfg.tie_word_embeddings) continue;
        if (trunk && !strncmp(t->name, "score.", 6)) { info->dropped++; continue; }
        if (fp_gguf_name_from_hf(t->name, gname, sizeof gname)) {
            rc = fp_errorf(FP_EUNSUPPORTED, "%s: tensor %s has no GGUF name (see docs/formats.md)", dir, t->name);
            goto done;
        }
        fp_dtype target = t->ndim >= 2 ? type : FP_F32;
        int64_t ne0 = t->ndim ? t->shape[t->ndim - 1] : 1;
        if ((target == FP_Q8_0 || target == FP_Q4_0) && ne0 % 32) { target = FP_F16; info->fallback++; }
        if ((rc = fp_gguf_add_tensor_convert(gw, gname, target, t))) { fp_error_prefix("%s: ", dir); goto done; }
        info->tensors++;
    }
    if (head && trunk) info->dropped += (int)fp_weights_count(head);
    for (size_t i = 0; head && !trunk && i < fp_weights_count(head); i++) {
        const fp_tensor *t = fp_weights_at(head, i);
        const char *n = !strcmp(t->name, "weight") || !strcmp(t->name, "reward_head.weight") ? "fluxprm.reward_head.weight"
                      : !strcmp(t->name, "bias") || !strcmp(t->name, "reward_head.bias") ? "fluxprm.reward_head.bias" : NULL;
        if (!n) { rc = fp_errorf(FP_EUNSUPPORTED, "%s/reward_head: unexpected tensor %s (weight, bias)", dir, t->name); goto done; }
        if ((rc = fp_gguf_add_tensor_convert(gw, n, FP_F32, t))) goto done;
        info->tensors++;
    }
    rc = fp_gguf_writer_write(gw, out_path);
done:
    fp_gguf_writer_free(gw);
    fp_weights_free(w);
    fp_weights_free(head);
    return rc;
}
