/* LoRA helpers: target parsing, PEFT-default initialisation, PEFT-format adapter saving. */
#include "base/base.h"
#include "train/train.h"
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *const target_name[7] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                           "down_proj"};

int fpt_lora_parse_targets(const char *list, unsigned *mask) {
    *mask = 0;
    if (!list) return fp_errorf(FP_EINVAL, "lora: empty target list");
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        while (n && *p == ' ') { p++; n--; }
        while (n && p[n - 1] == ' ') n--;
        int found = 0;
        if (n == 3 && !strncmp(p, "all", 3)) { *mask |= FPT_LORA_ALL; found = 1; }
        for (int i = 0; i < 7 && !found; i++) {
            size_t sl = strchr(target_name[i], '_') - target_name[i]; /* "q" of "q_proj" */
            size_t fl = strlen(target_name[i]);
            if ((n == sl && !strncmp(p, target_name[i], sl)) || (n == fl && !strncmp(p, target_name[i], n))) {
                *mask |= 1u << i;
                found = 1;
            }
        }
        if (!found)
            return fp_errorf(FP_EINVAL, "lora: unknown target \"%.*s\" (q,k,v,o,gate,up,down or all)", (int)n, p);
        if (!e) break;
        p = e + 1;
    }
    if (!*mask) return fp_errorf(FP_EINVAL, "lora: empty target list");
    return FP_OK;
}

static uint64_t sm64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void fpt_lora_init(fpt_model *m, uint64_t seed) {
    uint64_t s = seed;
    float *P = fpt_model_params(m);
    for (int i = 0; i < fpt_model_param_count(m); i++) {
        const fpt_param *p = fpt_model_param(m, i);
        if (!p->is_lora) continue;
        float *d = P + p->offset;
        if (strstr(p->name, ".lora_B.")) { memset(d, 0, p->numel * sizeof(float)); continue; }
        /* kaiming_uniform_(a=sqrt(5)): gain sqrt(2/(1+5)), bound gain*sqrt(3/fan_in) = 1/sqrt(fan_in) */
        double bound = 1.0 / sqrt((double)p->shape[1]);
        for (size_t j = 0; j < p->numel; j++)
            d[j] = (float)(bound * (2.0 * ((sm64(&s) >> 11) * (1.0 / 9007199254740992.0)) - 1.0));
    }
}

static int mkdir_p(const char *dir) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0777) && errno != EEXIST)
            return fp_errorf(FP_EIO, "%s: cannot create: %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0777) && errno != EEXIST) return fp_errorf(FP_EIO, "%s: cannot create: %s", tmp, strerror(errno));
    return FP_OK;
}

int fpt_lora_save(const fpt_model *m, const char *dir, const char *base_model) {
    const fpt_config *c = fpt_model_config(m);
    if (c->lora_rank <= 0) return fp_errorf(FP_ESTATE, "lora: the model has no LoRA adapters");
    int rc = mkdir_p(dir);
    if (rc) return rc;
    int np = fpt_model_param_count(m), nt = 0, heads = 0;
    fpt_st_tensor *t = fp_calloc((size_t)np, sizeof *t);
    char (*names)[128] = fp_calloc((size_t)np, sizeof *names);
    if (!t || !names) { free(t); free(names); return FP_ENOMEM; }
    const float *P = fpt_model_params((fpt_model *)m);
    for (int i = 0; i < np; i++) {
        const fpt_param *p = fpt_model_param(m, i);
        int head = !strncmp(p->name, "score.", 6) || !strncmp(p->name, "reward_head.", 12);
        if (!p->is_lora && !(head && p->trainable)) continue;
        /* PEFT strips the adapter name and "modules_to_save." from saved keys: score.0.weight is saved as
         * base_model.model.score.0.weight */
        if (p->is_lora) snprintf(names[nt], sizeof names[nt], "%s", p->name);
        else {
            snprintf(names[nt], sizeof names[nt], "base_model.model.%s", p->name);
            heads |= p->name[0] == 's' ? 1 : 2;
        }
        t[nt] = (fpt_st_tensor){.name = names[nt], .dtype = FP_F32, .ndim = p->ndim,
                                .shape = {p->shape[0], p->shape[1]}, .data = P + p->offset};
        nt++;
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    const char *meta[] = {"format", "pt", NULL};
    rc = fpt_st_write(path, t, nt, meta);
    free(t);
    free(names);
    if (rc) return rc;

    json_t *j = json_object(), *tm = json_array(), *ms = heads ? json_array() : json_null();
    for (int i = 0; i < 7; i++)
        if (c->lora_targets & (1u << i)) json_array_append_new(tm, json_string(target_name[i]));
    if (heads & 1) json_array_append_new(ms, json_string("score"));
    if (heads & 2) json_array_append_new(ms, json_string("reward_head"));
    json_object_set_new(j, "peft_type", json_string("LORA"));
    json_object_set_new(j, "task_type", json_string("TOKEN_CLS"));
    json_object_set_new(j, "base_model_name_or_path", base_model ? json_string(base_model) : json_null());
    json_object_set_new(j, "r", json_integer(c->lora_rank));
    json_object_set_new(j, "lora_alpha", json_real(c->lora_alpha));
    json_object_set_new(j, "lora_dropout", json_real(0.0));
    json_object_set_new(j, "target_modules", tm);
    json_object_set_new(j, "modules_to_save", ms);
    json_object_set_new(j, "bias", json_string("none"));
    json_object_set_new(j, "fan_in_fan_out", json_false());
    json_object_set_new(j, "inference_mode", json_true());
    json_object_set_new(j, "init_lora_weights", json_true());
    json_object_set_new(j, "use_rslora", json_false());
    json_object_set_new(j, "use_dora", json_false());
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(j);
    if (!text) return fp_errorf(FP_ENOMEM, "lora: cannot format adapter_config.json");
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    fp_outfile *o;
    if ((rc = fp_outfile_open(&o, path, 0))) { free(text); return rc; }
    int bad = fputs(text, fp_outfile_stream(o)) < 0 || fputc('\n', fp_outfile_stream(o)) == EOF;
    free(text);
    if (bad) { fp_outfile_abort(o); return fp_errorf(FP_EIO, "%s: write failed", path); }
    return fp_outfile_commit(o);
}
