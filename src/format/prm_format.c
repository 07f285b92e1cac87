/* Records → PRM input text (ChatML + step tokens), step splitting, thinking↔response alignment. */
#include "format/format.h"
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

void fp_free_strings(char **v, size_t n) {
    if (!v) return;
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

static int push_string(char ***v, size_t *n, size_t *cap, const char *s, size_t len) {
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        char **nv = fp_realloc(*v, nc * sizeof *nv);
        if (!nv) return FP_ENOMEM;
        *v = nv;
        *cap = nc;
    }
    char *d = fp_strndup(s, len);
    if (!d) return FP_ENOMEM;
    (*v)[(*n)++] = d;
    return FP_OK;
}

static int only_space(const char *s, size_t len) {
    for (size_t i = 0; i < len; i++)
        if (!isspace((unsigned char)s[i])) return 0;
    return 1;
}

int fp_split_steps(const char *text, char ***steps, size_t *n) {
    *steps = NULL;
    *n = 0;
    size_t cap = 0;
    const char *p = text;
    for (;;) {
        const char *q = strstr(p, "\n\n");
        size_t len = q ? (size_t)(q - p) : strlen(p);
        if (!only_space(p, len) && push_string(steps, n, &cap, p, len)) {
            fp_free_strings(*steps, *n);
            *steps = NULL;
            *n = 0;
            return FP_ENOMEM;
        }
        if (!q) break;
        p = q + 2;
    }
    return FP_OK;
}

void fp_record_free(fp_record *rec) {
    if (!rec) return;
    free(rec->system);
    free(rec->question);
    free(rec->response);
    fp_free_strings(rec->steps, rec->n_steps);
    memset(rec, 0, sizeof *rec);
}

/* A string field, or NULL when absent; FP_EINVAL when present with another type. */
static int get_string(const json_t *obj, const char *field, const char **out) {
    *out = NULL;
    json_t *v = json_object_get(obj, field);
    if (!v || json_is_null(v)) return FP_OK;
    if (!json_is_string(v)) return fp_errorf(FP_EINVAL, "field \"%s\" must be a string", field);
    if (strlen(json_string_value(v)) != json_string_length(v))
        return fp_errorf(FP_EINVAL, "field \"%s\" contains a NUL character", field);
    *out = json_string_value(v);
    return FP_OK;
}

/* An array of strings (copied), or *n = SIZE_MAX when absent. */
static int get_string_array(const json_t *obj, const char *field, char ***out, size_t *n) {
    *out = NULL;
    *n = (size_t)-1;
    json_t *v = json_object_get(obj, field);
    if (!v || json_is_null(v)) return FP_OK;
    if (!json_is_array(v)) return fp_errorf(FP_EINVAL, "field \"%s\" must be an array of strings", field);
    size_t cap = 0, count = 0;
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *s = json_array_get(v, i);
        if (!json_is_string(s)) {
            fp_free_strings(*out, count);
            *out = NULL;
            return fp_errorf(FP_EINVAL, "field \"%s\"[%zu] must be a string", field, i);
        }
        if (strlen(json_string_value(s)) != json_string_length(s)) {
            fp_free_strings(*out, count);
            *out = NULL;
            return fp_errorf(FP_EINVAL, "field \"%s\"[%zu] contains a NUL character", field, i);
        }
        if (push_string(out, &count, &cap, json_string_value(s), json_string_length(s))) {
            fp_free_strings(*out, count);
            *out = NULL;
            return FP_ENOMEM;
        }
    }
    *n = count;
    return FP_OK;
}

static int append_steps(fp_record *rec, char **add, size_t n) {
    char **v = fp_realloc(rec->steps, (rec->n_steps + n + 1) * sizeof *v);
    if (!v) return FP_ENOMEM;
    rec->steps = v;
    if (n) memcpy(v + rec->n_steps, add, n * sizeof *v);
    rec->n_steps += n;
    return FP_OK;
}

/* Adds thinking and response steps per opts->steps_from; takes ownership of both arrays. */
static int add_thinking_response(fp_record *rec, const fp_format_opts *opts, char **th, size_t nth, char **re,
                                 size_t nre) {
    int rc = FP_OK;
    fp_steps_from from = opts ? opts->steps_from : FP_STEPS_BOTH;
    if (from != FP_STEPS_RESPONSE) {
        rc = append_steps(rec, th, nth);
        if (rc == FP_OK) { rec->n_thinking = nth; free(th); th = NULL; nth = 0; }
    }
    if (rc == FP_OK && from != FP_STEPS_THINKING) {
        rc = append_steps(rec, re, nre);
        if (rc == FP_OK) { free(re); re = NULL; nre = 0; }
    }
    fp_free_strings(th, nth);
    fp_free_strings(re, nre);
    return rc;
}

/* Splits "<think>T</think>R" (the opening tag optional) into thinking T and response R. */
static int split_think_tags(const char *text, char **thinking, char **response) {
    *thinking = *response = NULL;
    const char *close = strstr(text, "</think>");
    if (!close) return FP_OK;
    const char *open = strstr(text, "<think>");
    const char *t0 = (open && open < close) ? open + 7 : text;
    *thinking = fp_strndup(t0, (size_t)(close - t0));
    *response = fp_strdup(close + 8);
    if (!*thinking || !*response) { free(*thinking); free(*response); *thinking = *response = NULL; return FP_ENOMEM; }
    return FP_OK;
}

static char *join_strings(char **v, size_t n, const char *sep) {
    fp_buf b = {0};
    for (size_t i = 0; i < n; i++) {
        if ((i && fp_buf_append(&b, sep, strlen(sep))) || fp_buf_append(&b, v[i], strlen(v[i]))) {
            fp_buf_free(&b);
            return NULL;
        }
    }
    if (!b.data && fp_buf_append(&b, "", 0)) return NULL;
    return b.data;
}

static int parse_body(fp_record *rec, const json_t *obj, const fp_format_opts *opts) {
    int rc;
    const char *q = NULL;
    static const char *qfields[] = {"question", "problem", "prompt", "instruction"};
    if (opts && opts->question_field) {
        if ((rc = get_string(obj, opts->question_field, &q))) return rc;
        if (!q) return fp_errorf(FP_EINVAL, "missing string field \"%s\"", opts->question_field);
    } else {
        for (size_t i = 0; i < 4 && !q; i++)
            if ((rc = get_string(obj, qfields[i], &q))) return rc;
        if (!q) return fp_errorf(FP_EINVAL, "missing question: none of the fields \"question\", \"problem\", \"prompt\", \"instruction\"");
    }
    if (!(rec->question = fp_strdup(q))) return FP_ENOMEM;

    const char *sys = NULL;
    if ((rc = get_string(obj, "system", &sys))) return rc;
    if (!sys && opts) sys = opts->system;
    if (sys && !(rec->system = fp_strdup(sys))) return FP_ENOMEM;

    char **arr;
    size_t n;
    /* An explicit steps field, or the record shapes in order. */
    if (opts && opts->steps_field) {
        if ((rc = get_string_array(obj, opts->steps_field, &arr, &n))) return rc;
        if (n == (size_t)-1) {
            const char *text;
            if ((rc = get_string(obj, opts->steps_field, &text))) return rc;
            if (!text) return fp_errorf(FP_EINVAL, "missing field \"%s\"", opts->steps_field);
            if ((rc = fp_split_steps(text, &arr, &n))) return rc;
        }
        rc = append_steps(rec, arr, n);
        if (rc) fp_free_strings(arr, n); else free(arr);
        return rc;
    }
    static const char *step_arrays[] = {"steps", "completions"};
    for (size_t i = 0; i < 2; i++) {
        if ((rc = get_string_array(obj, step_arrays[i], &arr, &n))) return rc;
        if (n != (size_t)-1) {
            rc = append_steps(rec, arr, n);
            if (rc) fp_free_strings(arr, n); else free(arr);
            return rc;
        }
    }
    /* thinking (s1K list or string, or "thinking") + response ("attempt" or "response") */
    char *thinking = NULL;
    if ((rc = get_string_array(obj, "thinking_trajectories", &arr, &n))) return rc;
    if (n != (size_t)-1) {
        thinking = join_strings(arr, n, "\n\n");
        fp_free_strings(arr, n);
        if (!thinking) return FP_ENOMEM;
    } else {
        const char *t;
        if ((rc = get_string(obj, "thinking_trajectories", &t))) {
            /* it was neither array nor string: report it as such */
            return fp_errorf(FP_EINVAL, "field \"thinking_trajectories\" must be a string or an array of strings");
        }
        if (!t && (rc = get_string(obj, "thinking", &t))) return rc;
        if (t && !(thinking = fp_strdup(t))) return FP_ENOMEM;
    }
    const char *resp = NULL;
    if ((rc = get_string(obj, "attempt", &resp))) { free(thinking); return rc; }
    if (!resp && (rc = get_string(obj, "response", &resp))) { free(thinking); return rc; }
    if (!resp && (rc = get_string(obj, "completion", &resp))) { free(thinking); return rc; }
    if (!resp) {
        free(thinking);
        return fp_errorf(FP_EINVAL, "missing steps: none of the fields \"steps\", \"completions\", \"response\", \"attempt\", \"completion\"");
    }
    char *response = NULL;
    if (!thinking) {
        if ((rc = split_think_tags(resp, &thinking, &response))) return rc;
    }
    if (!response && !(response = fp_strdup(resp))) { free(thinking); return FP_ENOMEM; }
    rec->response = response;
    char **th = NULL, **re = NULL;
    size_t nth = 0, nre = 0;
    if (thinking) {
        rc = fp_split_steps(thinking, &th, &nth);
        free(thinking);
        if (rc) return rc;
    }
    if ((rc = fp_split_steps(response, &re, &nre))) { fp_free_strings(th, nth); return rc; }
    return add_thinking_response(rec, opts, th, nth, re, nre);
}

int fp_record_parse(fp_record *rec, const json_t *obj, const fp_format_opts *opts) {
    memset(rec, 0, sizeof *rec);
    if (!json_is_object(obj)) return fp_errorf(FP_EINVAL, "record is not a JSON object");
    int rc = parse_body(rec, obj, opts);
    if (rc == FP_OK && rec->n_steps == 0) rc = fp_errorf(FP_EINVAL, "record has no steps (all step texts are empty)");
    if (rc) fp_record_free(rec);
    return rc;
}

int fp_render_prm_chatml(const fp_record *rec, const char *step_token, fp_buf *out) {
    int rc = FP_OK;
#define PUT(s) do { if ((rc = fp_buf_append(out, (s), strlen(s)))) return rc; } while (0)
    if (rec->system) {
        PUT("<|im_start|>system\n");
        PUT(rec->system);
        PUT("<|im_end|>\n");
    }
    PUT("<|im_start|>user\n");
    PUT(rec->question);
    PUT("<|im_end|>\n<|im_start|>assistant\n");
    for (size_t i = 0; i < rec->n_steps; i++) {
        PUT(rec->steps[i]);
        PUT(step_token);
    }
    PUT("<|im_end|>\n");
#undef PUT
    return rc;
}

int fp_render_plain(const fp_record *rec, fp_buf *out) {
    int rc = fp_buf_append(out, rec->question, strlen(rec->question));
    if (rc) return rc;
    if (rec->response) return fp_buf_append(out, rec->response, strlen(rec->response));
    for (size_t i = 0; i < rec->n_steps && rc == FP_OK; i++) {
        if (i) rc = fp_buf_append(out, "\n\n", 2);
        if (rc == FP_OK) rc = fp_buf_append(out, rec->steps[i], strlen(rec->steps[i]));
    }
    return rc;
}

/* Decodes a Jinja string literal body (between quotes) into out. */
static int jinja_unescape(const char *s, size_t n, fp_buf *out) {
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '\\' && i + 1 < n) {
            char e = s[++i];
            c = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e;
        }
        if (fp_buf_append(out, &c, 1)) return FP_ENOMEM;
    }
    return FP_OK;
}

int fp_template_default_system(const char *tpl, char **out) {
    *out = NULL;
    static const char head[] = "<|im_start|>system\\n";
    for (const char *p = strstr(tpl, head); p; p = strstr(p + 1, head)) {
        if (p == tpl) continue;
        char quote = p[-1];
        if (quote != '\'' && quote != '"') continue;
        const char *body = p + strlen(head);
        /* the literal must run to <|im_end|> inside the same quoted string */
        const char *end = strstr(body, "<|im_end|>");
        if (!end) continue;
        int literal = 1;
        for (const char *c = body; c < end; c++) {
            if (*c == '\\') { c++; continue; }
            if (*c == quote) { literal = 0; break; }
        }
        if (!literal || end == body) continue;
        fp_buf b = {0};
        if (jinja_unescape(body, (size_t)(end - body), &b)) return FP_ENOMEM;
        *out = b.data;
        return FP_OK;
    }
    return FP_OK;
}

int fp_model_default_system(const char *path, char **out) {
    *out = NULL;
    size_t plen = strlen(path);
    char *data;
    size_t len;
    int rc;
    if (plen > 6 && !strcmp(path + plen - 6, ".jinja")) {
        if ((rc = fp_read_file(path, &data, &len))) return rc;
        rc = fp_template_default_system(data, out);
        free(data);
        return rc;
    }
    fp_buf p = {0};
    if (fp_buf_printf(&p, "%s/tokenizer_config.json", path)) return FP_ENOMEM;
    FILE *f = fopen(p.data, "rb");
    if (!f) { fp_buf_free(&p); return FP_OK; } /* no config: no template, no default system */
    fclose(f);
    json_error_t err;
    json_t *cfg = json_load_file(p.data, 0, &err);
    if (!cfg) {
        rc = fp_errorf(FP_EPARSE, "%s:%d: %s", p.data, err.line, err.text);
        fp_buf_free(&p);
        return rc;
    }
    json_t *t = json_object_get(cfg, "chat_template");
    rc = FP_OK;
    if (json_is_string(t)) rc = fp_template_default_system(json_string_value(t), out);
    else if (t && !json_is_null(t) && !json_is_array(t))
        rc = fp_errorf(FP_EPARSE, "%s: \"chat_template\" must be a string", p.data);
    json_decref(cfg);
    fp_buf_free(&p);
    return rc;
}

/* ---------------------------------------------------------------- alignment */

static int word_set(const char *s, char ***words, size_t *n) {
    *words = NULL;
    *n = 0;
    size_t cap = 0;
    while (*s) {
        while (*s && !isalnum((unsigned char)*s)) s++;
        const char *w = s;
        while (*s && isalnum((unsigned char)*s)) s++;
        if (s > w) {
            if (push_string(words, n, &cap, w, (size_t)(s - w))) return FP_ENOMEM;
            for (char *c = (*words)[*n - 1]; *c; c++) *c = (char)tolower((unsigned char)*c);
        }
    }
    return FP_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static size_t dedup(char **v, size_t n) {
    qsort(v, n, sizeof *v, cmp_str);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k && !strcmp(v[k - 1], v[i])) { free(v[i]); continue; }
        v[k++] = v[i];
    }
    return k;
}

double fp_lexical_similarity(const char *a, const char *b, void *ctx) {
    (void)ctx;
    char **wa, **wb;
    size_t na, nb;
    if (word_set(a, &wa, &na) || word_set(b, &wb, &nb)) return 0;
    na = dedup(wa, na);
    nb = dedup(wb, nb);
    size_t i = 0, j = 0, inter = 0;
    while (i < na && j < nb) {
        int c = strcmp(wa[i], wb[j]);
        if (c == 0) { inter++; i++; j++; }
        else if (c < 0) i++;
        else j++;
    }
    size_t uni = na + nb - inter;
    fp_free_strings(wa, na);
    fp_free_strings(wb, nb);
    return uni ? (double)inter / (double)uni : 0.0;
}

int fp_align_thinking(char **thinking, size_t T, char **response, size_t M, fp_similarity_fn sim, void *ctx,
                      char ***merged, size_t *n_merged, size_t **group_start) {
    if (!sim) sim = fp_lexical_similarity;
    *merged = NULL;
    *group_start = NULL;
    *n_merged = 0;
    char **cur = fp_calloc(T + 1, sizeof *cur);
    size_t *start = fp_calloc(T + 1, sizeof *start);
    double *A = fp_calloc(T + 1, sizeof *A), *B = fp_calloc(T + 1, sizeof *B);
    if (!cur || !start || !A || !B) goto nomem;
    for (size_t i = 0; i < T; i++) {
        if (!(cur[i] = fp_strdup(thinking[i]))) goto nomem;
        start[i] = i;
    }
    size_t n = T;
    while (n > M && n > 1) {
        /* A[j] = sim(s_j, a_j); B[j] = sim(s_{j+1}, a_j): the score when everything after a merge shifts */
        for (size_t j = 0; j < M; j++) {
            A[j] = sim(cur[j], response[j], ctx);
            B[j] = j + 1 < n ? sim(cur[j + 1], response[j], ctx) : 0;
        }
        double prefix = 0, best = -1e300;
        size_t best_i = 0;
        double suffixB_total = 0;
        for (size_t j = 0; j < M; j++) suffixB_total += B[j];
        double suffixB = suffixB_total; /* Σ_{j>i} B[j], maintained as i advances */
        for (size_t i = 0; i + 1 < n; i++) {
            if (i < M) suffixB -= B[i];
            double score = prefix;
            if (i < M) {
                fp_buf m = {0};
                if (fp_buf_printf(&m, "%s\n\n%s", cur[i], cur[i + 1])) goto nomem;
                score += sim(m.data, response[i], ctx) + suffixB;
                fp_buf_free(&m);
            }
            if (score >= best) { best = score; best_i = i; }
            if (i < M) prefix += A[i];
        }
        fp_buf m = {0};
        if (fp_buf_printf(&m, "%s\n\n%s", cur[best_i], cur[best_i + 1])) goto nomem;
        free(cur[best_i]);
        free(cur[best_i + 1]);
        cur[best_i] = m.data;
        memmove(cur + best_i + 1, cur + best_i + 2, (n - best_i - 2) * sizeof *cur);
        memmove(start + best_i + 1, start + best_i + 2, (n - best_i - 2) * sizeof *start);
        cur[n - 1] = NULL;
        n--;
    }
    free(A);
    free(B);
    *merged = cur;
    *n_merged = n;
    *group_start = start;
    return FP_OK;
nomem:
    if (cur) fp_free_strings(cur, T);
    free(start);
    free(A);
    free(B);
    return FP_ENOMEM;
}
