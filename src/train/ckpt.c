/* Optimizer-state checkpoints (AdamW moments + step) as safetensors, for resuming training. */
#include "base/base.h"
#include "train/train.h"
#include <stdlib.h>
#include <string.h>

int fpt_adamw_save(const fpt_adamw *o, const fpt_model *m, const char *path) {
    int np = fpt_model_param_count(m);
    if (o->n != fpt_model_num_params(m)) return fp_errorf(FP_ESTATE, "adamw: state does not match the model");
    fpt_st_tensor *t = fp_calloc((size_t)(2 * np + 1), sizeof *t);
    char (*names)[140] = fp_calloc((size_t)(2 * np), sizeof *names);
    if (!t || !names) { free(t); free(names); return FP_ENOMEM; }
    float step = (float)o->step;
    t[0] = (fpt_st_tensor){.name = "step", .dtype = FP_F32, .ndim = 1, .shape = {1}, .data = &step};
    for (int i = 0; i < np; i++) {
        const fpt_param *p = fpt_model_param(m, i);
        for (int k = 0; k < 2; k++) {
            snprintf(names[2 * i + k], sizeof names[0], "%s.%s", k ? "exp_avg_sq" : "exp_avg", p->name);
            t[1 + 2 * i + k] = (fpt_st_tensor){.name = names[2 * i + k], .dtype = FP_F32, .ndim = p->ndim,
                                               .shape = {p->shape[0], p->shape[1]},
                                               .data = (k ? o->v : o->m) + p->offset};
        }
    }
    const char *meta[] = {"format", "fluxprm-adamw", NULL};
    int rc = fpt_st_write(path, t, 2 * np + 1, meta);
    free(t);
    free(names);
    return rc;
}

int fpt_adamw_load(fpt_adamw *o, const fpt_model *m, const char *path) {
    if (o->n != fpt_model_num_params(m)) return fp_errorf(FP_ESTATE, "adamw: state does not match the model");
    fp_weights *w;
    int rc = fp_weights_open_safetensors(&w, path);
    if (rc) return rc;
    const fp_tensor *st = fp_weights_get(w, "step");
    if (!st || st->dtype != FP_F32 || st->nbytes != 4) {
        fp_weights_free(w);
        return fp_errorf(FP_EPARSE, "%s: no F32 \"step\" tensor", path);
    }
    float step;
    memcpy(&step, st->data, 4);
    char name[140];
    for (int i = 0; i < fpt_model_param_count(m); i++) {
        const fpt_param *p = fpt_model_param(m, i);
        for (int k = 0; k < 2; k++) {
            snprintf(name, sizeof name, "%s.%s", k ? "exp_avg_sq" : "exp_avg", p->name);
            const fp_tensor *t = fp_weights_get(w, name);
            if (!t || t->dtype != FP_F32 || t->nbytes != p->numel * sizeof(float)) {
                fp_weights_free(w);
                return fp_errorf(FP_EPARSE, "%s: missing or mis-shaped %s", path, name);
            }
            memcpy((k ? o->v : o->m) + p->offset, t->data, t->nbytes);
        }
    }
    o->step = (long)step;
    fp_weights_free(w);
    return FP_OK;
}
