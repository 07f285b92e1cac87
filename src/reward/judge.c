/* The expert-LLM judge (spec §2.1 quality r_qual_t, §2.2 trajectory templates) over the OpenAI client.
 * Prompts come from template files with {placeholder}s; see docs/reward.md for the file format. */
#include "base/base.h"
#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *system; /* NULL when the file has no [system] section */
    char *user;
} prompt_file;

struct fp_judge {
    fp_openai_client *client;
    fp_judge_opts o;
    char *model;
    prompt_file step, tmpl;
    int format; /* current format (AUTO means json_schema not yet rejected) */
};

void fp_judge_opts_default(fp_judge_opts *o) {
    memset(o, 0, sizeof *o);
    o->step_prompt_path = "prompts/judge_step.txt";
    o->template_prompt_path = "prompts/judge_template.txt";
    o->temperature = 0;
    o->max_tokens = 64;
    o->template_max_tokens = 1024;
    o->seed = 0;
    o->format = FP_JUDGE_FORMAT_AUTO;
}

void fp_judge_score_clear(fp_judge_score *s) {
    if (!s) return;
    free(s->error);
    s->error = NULL;
}

int fp_judge_format(const fp_judge *j) { return j->format; }

/* ------------------------------------------------------------------ prompt files */

/* A line that is exactly `tag` (trailing spaces/CR allowed). */
static const char *find_tag_line(const char *s, const char *tag) {
    size_t tl = strlen(tag);
    for (const char *p = s; p && *p;) {
        if (!strncmp(p, tag, tl)) {
            const char *q = p + tl;
            while (*q == ' ' || *q == '\t' || *q == '\r') q++;
            if (*q == '\n' || !*q) return p;
        }
        p = strchr(p, '\n');
        if (p) p++;
    }
    return NULL;
}

static char *trimmed_dup(const char *s, size_t n) {
    while (n && (*s == '\n' || *s == '\r')) { s++; n--; }
    while (n && isspace((unsigned char)s[n - 1])) n--;
    return fp_strndup(s, n);
}

/* File format: either the whole file is the user message, or it starts with a line "[system]" and has a line
 * "[user]" further down: the text between is the system message, the text after it the user message.
 * Leading/trailing blank lines of each part are dropped. */
static int load_prompt(prompt_file *pf, const char *path, const char *const *required, size_t n_required) {
    char *data;
    size_t len;
    int rc = fp_read_file(path, &data, &len);
    if (rc) return fp_error_prefix("judge prompt: ");
    const char *body = data;
    while (*body == '\n' || *body == '\r' || *body == ' ') body++;
    int has_system = find_tag_line(body, "[system]") == body;
    if (has_system) {
        const char *sys = strchr(body, '\n');
        const char *user = sys ? find_tag_line(sys + 1, "[user]") : NULL;
        if (!user) { free(data); return fp_errorf(FP_EPARSE, "%s: has [system] but no [user] line", path); }
        pf->system = trimmed_dup(sys + 1, (size_t)(user - sys - 1));
        const char *u = strchr(user, '\n');
        pf->user = trimmed_dup(u ? u + 1 : user + strlen(user), u ? strlen(u + 1) : 0);
    } else {
        pf->user = trimmed_dup(body, strlen(body));
    }
    free(data);
    if (!pf->user || (has_system && !pf->system)) return fp_errorf(FP_ENOMEM, "out of memory");
    if (!*pf->user) return fp_errorf(FP_EPARSE, "%s: the user message is empty", path);
    for (size_t i = 0; i < n_required; i++) {
        char ph[64];
        snprintf(ph, sizeof ph, "{%s}", required[i]);
        if (!strstr(pf->user, ph) && !(pf->system && strstr(pf->system, ph)))
            return fp_errorf(FP_EPARSE, "%s: placeholder %s is missing", path, ph);
    }
    return FP_OK;
}

int fp_prompt_render(const char *tmpl, const char *const *names, const char *const *values, size_t n,
                     char **out) {
    *out = NULL;
    fp_buf b = {0};
    const char *p = tmpl;
    while (*p) {
        const char *brace = strchr(p, '{');
        if (!brace) { if (fp_buf_append(&b, p, strlen(p))) goto nomem; break; }
        if (fp_buf_append(&b, p, (size_t)(brace - p))) goto nomem;
        size_t i;
        for (i = 0; i < n; i++) {
            size_t nl = strlen(names[i]);
            if (!strncmp(brace + 1, names[i], nl) && brace[1 + nl] == '}') break;
        }
        if (i < n) {
            const char *v = values[i] ? values[i] : "";
            if (fp_buf_append(&b, v, strlen(v))) goto nomem;
            p = brace + strlen(names[i]) + 2;
        } else {
            if (fp_buf_append(&b, "{", 1)) goto nomem;
            p = brace + 1;
        }
    }
    if (fp_buf_append(&b, "", 0)) goto nomem;
    *out = b.data;
    return FP_OK;
nomem:
    fp_buf_free(&b);
    return fp_errorf(FP_ENOMEM, "out of memory rendering a prompt");
}

static const char *const STEP_VARS[] = {"question", "previous_steps", "step", "step_number", "num_steps", "response"};
static const char *const STEP_REQUIRED[] = {"question", "step", "response"};
static const char *const TMPL_VARS[] = {"question", "steps", "response"};
static const char *const TMPL_REQUIRED[] = {"question", "response"};

int fp_judge_new(fp_judge **out, fp_openai_client *client, const fp_judge_opts *opts) {
    *out = NULL;
    fp_judge_opts d;
    if (!opts) { fp_judge_opts_default(&d); opts = &d; }
    if (!client) return fp_errorf(FP_EINVAL, "judge: no client");
    if (!opts->model || !*opts->model) return fp_errorf(FP_EINVAL, "judge: no model name");
    if (opts->format < FP_JUDGE_FORMAT_AUTO || opts->format > FP_JUDGE_FORMAT_TEXT)
        return fp_errorf(FP_EINVAL, "judge: unknown format %d", opts->format);
    fp_judge *j = fp_calloc(1, sizeof *j);
    if (!j) return FP_ENOMEM;
    j->client = client;
    j->o = *opts;
    j->format = opts->format;
    j->model = fp_strdup(opts->model);
    if (!j->model) { fp_judge_free(j); return FP_ENOMEM; }
    j->o.model = j->model;
    j->o.step_prompt_path = j->o.template_prompt_path = NULL;
    const char *sp = opts->step_prompt_path ? opts->step_prompt_path : "prompts/judge_step.txt";
    const char *tp = opts->template_prompt_path ? opts->template_prompt_path : "prompts/judge_template.txt";
    if (load_prompt(&j->step, sp, STEP_REQUIRED, 3) || load_prompt(&j->tmpl, tp, TMPL_REQUIRED, 2)) {
        int rc = fp_last_error_code();
        fp_judge_free(j);
        return rc ? rc : FP_ENOMEM;
    }
    *out = j;
    return FP_OK;
}

void fp_judge_free(fp_judge *j) {
    if (!j) return;
    free(j->step.system);
    free(j->step.user);
    free(j->tmpl.system);
    free(j->tmpl.user);
    free(j->model);
    free(j);
}

/* ------------------------------------------------------------------ score parsing */

int fp_judge_parse_score(const char *content, int allow_embedded, double *score) {
    *score = NAN;
    if (!content) return fp_errorf(FP_EPARSE, "judge reply is empty");
    const char *s = content, *e = content + strlen(content);
    while (s < e && isspace((unsigned char)*s)) s++;
    while (e > s && isspace((unsigned char)e[-1])) e--;
    if (s == e) return fp_errorf(FP_EPARSE, "judge reply is empty");
    if (allow_embedded) {
        const char *l = memchr(s, '{', (size_t)(e - s));
        const char *r = e;
        while (r > s && r[-1] != '}') r--;
        if (l && r > l) { s = l; e = r; }
    }
    json_error_t err;
    json_t *root = json_loadb(s, (size_t)(e - s), JSON_REJECT_DUPLICATES, &err);
    int shown = (int)(e - s < 80 ? e - s : 80);
    if (!root) return fp_errorf(FP_EPARSE, "judge reply is not JSON (%s): \"%.*s\"", err.text, shown, s);
    int rc = FP_OK;
    json_t *v = json_object_get(root, "score");
    if (!json_is_object(root)) rc = fp_errorf(FP_EPARSE, "judge reply is not a JSON object: \"%.*s\"", shown, s);
    else if (!v) rc = fp_errorf(FP_EPARSE, "judge reply has no \"score\": \"%.*s\"", shown, s);
    else if (!json_is_number(v)) rc = fp_errorf(FP_EPARSE, "judge \"score\" is not a number: \"%.*s\"", shown, s);
    else {
        double x = json_number_value(v);
        if (!isfinite(x) || x < 0 || x > 10) rc = fp_errorf(FP_ERANGE, "judge score %g is outside [0, 10]", x);
        else *score = x;
    }
    json_decref(root);
    return rc;
}

/* ------------------------------------------------------------------ requests */

static char *response_format_json(const fp_judge *j, int format) {
    if (format == FP_JUDGE_FORMAT_TEXT) return NULL;
    if (format == FP_JUDGE_FORMAT_JSON_OBJECT) return fp_strdup("{\"type\":\"json_object\"}");
    fp_buf b = {0};
    if (fp_buf_printf(&b,
                      "{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"step_score\",\"strict\":true,"
                      "\"schema\":{\"type\":\"object\",\"properties\":{\"score\":{\"type\":\"%s\",\"minimum\":0,"
                      "\"maximum\":10}},\"required\":[\"score\"],\"additionalProperties\":false}}}",
                      j->o.integer_scores ? "integer" : "number"))
        return NULL;
    return b.data;
}

static int join_steps(const fp_judge_traj *t, size_t upto, char **out) {
    fp_buf b = {0};
    for (size_t i = 0; i < upto; i++)
        if (fp_buf_printf(&b, "%sStep %zu: %s", i ? "\n\n" : "", i + 1, t->steps[i] ? t->steps[i] : "")) goto nomem;
    if (!upto && fp_buf_printf(&b, "(none)")) goto nomem;
    if (fp_buf_append(&b, "", 0)) goto nomem;
    *out = b.data;
    return FP_OK;
nomem:
    fp_buf_free(&b);
    return fp_errorf(FP_ENOMEM, "out of memory");
}

typedef struct {
    fp_chat_message msgs[2];
    char *user, *system;
} built_msg;

static void built_free(built_msg *m) {
    free(m->user);
    free(m->system);
}

static int build_messages(const prompt_file *pf, const char *const *names, const char *const *vals, size_t n,
                          built_msg *m, size_t *n_msgs) {
    memset(m, 0, sizeof *m);
    if (pf->system && fp_prompt_render(pf->system, names, vals, n, &m->system)) return FP_ENOMEM;
    if (fp_prompt_render(pf->user, names, vals, n, &m->user)) return FP_ENOMEM;
    size_t k = 0;
    if (m->system) m->msgs[k++] = (fp_chat_message){"system", m->system};
    m->msgs[k++] = (fp_chat_message){"user", m->user};
    *n_msgs = k;
    return FP_OK;
}

static int check_traj(const fp_judge_traj *t, size_t i) {
    if (!t->question || !t->response) return fp_errorf(FP_EINVAL, "trajectory %zu: question or response missing", i);
    if (t->n_steps && !t->steps) return fp_errorf(FP_EINVAL, "trajectory %zu: steps missing", i);
    return FP_OK;
}

int fp_judge_step_scores(fp_judge *j, const fp_judge_traj *trajs, size_t n, fp_judge_score *out) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        int rc = check_traj(&trajs[i], i);
        if (rc) return rc;
        total += trajs[i].n_steps;
    }
    for (size_t k = 0; k < total; k++) out[k] = (fp_judge_score){NAN, FP_ESTATE, NULL};
    if (!total) return FP_OK;
    built_msg *bm = fp_calloc(total, sizeof *bm);
    fp_chat_request *reqs = fp_calloc(total, sizeof *reqs);
    fp_chat_response *resp = fp_calloc(total, sizeof *resp);
    size_t *where_t = fp_calloc(total, sizeof *where_t), *where_s = fp_calloc(total, sizeof *where_s);
    size_t *todo = fp_calloc(total, sizeof *todo);
    fp_chat_request *sub = fp_calloc(total, sizeof *sub);
    fp_chat_response *subr = fp_calloc(total, sizeof *subr);
    int *used = fp_calloc(total, sizeof *used); /* the format each answer was requested in */
    int rc = FP_OK;
    if (!bm || !reqs || !resp || !where_t || !where_s || !todo || !sub || !subr || !used) { rc = FP_ENOMEM; goto done; }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const fp_judge_traj *t = &trajs[i];
        for (size_t s = 0; s < t->n_steps; s++, k++) {
            char *prev = NULL, num[32], tot[32];
            if ((rc = join_steps(t, s, &prev))) goto done;
            snprintf(num, sizeof num, "%zu", s + 1);
            snprintf(tot, sizeof tot, "%zu", t->n_steps);
            const char *vals[] = {t->question, prev, t->steps[s] ? t->steps[s] : "", num, tot, t->response};
            size_t nm;
            rc = build_messages(&j->step, STEP_VARS, vals, 6, &bm[k], &nm);
            free(prev);
            if (rc) goto done;
            fp_chat_request_init(&reqs[k]);
            reqs[k].model = j->o.model;
            reqs[k].messages = bm[k].msgs;
            reqs[k].n_messages = nm;
            reqs[k].temperature = j->o.temperature;
            reqs[k].max_tokens = j->o.max_tokens;
            reqs[k].seed = j->o.seed;
            where_t[k] = i;
            where_s[k] = s;
            todo[k] = k;
        }
    }
    /* Send; with AUTO, requests answered HTTP 400 are re-sent in the next weaker format.  The weaker format
     * sticks for later calls only when it got an answer (a 400 with another cause must not degrade the judge). */
    size_t ntodo = total;
    int format0 = j->format, weaker_worked = 0;
    for (;;) {
        int fmt = j->format == FP_JUDGE_FORMAT_AUTO ? FP_JUDGE_FORMAT_JSON_SCHEMA : j->format;
        char *rf = response_format_json(j, fmt);
        if (fmt != FP_JUDGE_FORMAT_TEXT && !rf) { rc = FP_ENOMEM; goto done; }
        for (size_t q = 0; q < ntodo; q++) {
            sub[q] = reqs[todo[q]];
            sub[q].response_format = rf;
        }
        fp_openai_chat_batch(j->client, sub, ntodo, subr);
        free(rf);
        size_t again = 0;
        int downgrade = j->o.format == FP_JUDGE_FORMAT_AUTO && fmt != FP_JUDGE_FORMAT_TEXT;
        for (size_t q = 0; q < ntodo; q++) {
            size_t x = todo[q];
            if (downgrade && subr[q].status != FP_OK && subr[q].http_status == 400) {
                fp_chat_response_clear(&subr[q]);
                todo[again++] = x;
                continue;
            }
            fp_chat_response_clear(&resp[x]);
            resp[x] = subr[q];
            memset(&subr[q], 0, sizeof subr[q]);
            used[x] = fmt;
            if (fmt != (format0 == FP_JUDGE_FORMAT_AUTO ? FP_JUDGE_FORMAT_JSON_SCHEMA : format0) && resp[x].status == FP_OK)
                weaker_worked = 1;
        }
        if (!again) break;
        j->format = fmt == FP_JUDGE_FORMAT_JSON_SCHEMA ? FP_JUDGE_FORMAT_JSON_OBJECT : FP_JUDGE_FORMAT_TEXT;
        ntodo = again;
    }
    if (!weaker_worked) j->format = format0;
    long first_bad = -1;
    for (k = 0; k < total; k++) {
        int fmt = used[k];
        double sc = NAN;
        int st;
        char msg[1200];
        if (resp[k].status != FP_OK) {
            st = resp[k].status;
            snprintf(msg, sizeof msg, "%s", resp[k].error ? resp[k].error : "request failed");
        } else if ((st = fp_judge_parse_score(resp[k].content, fmt == FP_JUDGE_FORMAT_TEXT, &sc)) != FP_OK) {
            snprintf(msg, sizeof msg, "%s", fp_last_error());
        }
        out[k].score = st == FP_OK ? sc : NAN;
        out[k].status = st;
        if (st != FP_OK) {
            fp_buf e = {0};
            fp_buf_printf(&e, "trajectory %zu step %zu: %s", where_t[k], where_s[k] + 1, msg);
            out[k].error = e.data;
            if (first_bad < 0) first_bad = (long)k;
        }
    }
    if (first_bad >= 0)
        rc = fp_errorf(out[first_bad].status, "%s", out[first_bad].error ? out[first_bad].error : "judge failed");
done:
    if (bm) for (size_t q = 0; q < total; q++) built_free(&bm[q]);
    if (resp) for (size_t q = 0; q < total; q++) fp_chat_response_clear(&resp[q]);
    if (subr) for (size_t q = 0; q < total; q++) fp_chat_response_clear(&subr[q]);
    free(bm); free(reqs); free(resp); free(where_t); free(where_s); free(todo); free(sub); free(subr); free(used);
    if (rc == FP_ENOMEM) {
        for (size_t q = 0; q < total; q++) if (out[q].status == FP_ESTATE) { out[q].status = FP_ENOMEM; out[q].score = NAN; }
        return fp_errorf(FP_ENOMEM, "judge: out of memory");
    }
    return rc;
}

int fp_judge_templates(fp_judge *j, const fp_judge_traj *trajs, size_t n, char **out, int *status) {
    for (size_t i = 0; i < n; i++) {
        out[i] = NULL;
        if (status) status[i] = FP_ESTATE;
    }
    for (size_t i = 0; i < n; i++) { int rc = check_traj(&trajs[i], i); if (rc) return rc; }
    if (!n) return FP_OK;
    built_msg *bm = fp_calloc(n, sizeof *bm);
    fp_chat_request *reqs = fp_calloc(n, sizeof *reqs);
    fp_chat_response *resp = fp_calloc(n, sizeof *resp);
    int rc = FP_OK;
    if (!bm || !reqs || !resp) { rc = fp_errorf(FP_ENOMEM, "judge: out of memory"); goto done; }
    for (size_t i = 0; i < n; i++) {
        char *steps = NULL;
        if ((rc = join_steps(&trajs[i], trajs[i].n_steps, &steps))) goto done;
        const char *vals[] = {trajs[i].question, steps, trajs[i].response};
        size_t nm;
        rc = build_messages(&j->tmpl, TMPL_VARS, vals, 3, &bm[i], &nm);
        free(steps);
        if (rc) goto done;
        fp_chat_request_init(&reqs[i]);
        reqs[i].model = j->o.model;
        reqs[i].messages = bm[i].msgs;
        reqs[i].n_messages = nm;
        reqs[i].temperature = j->o.temperature;
        reqs[i].max_tokens = j->o.template_max_tokens;
        reqs[i].seed = j->o.seed;
    }
    fp_openai_chat_batch(j->client, reqs, n, resp);
    for (size_t i = 0; i < n; i++) {
        int st = resp[i].status;
        char msg[1200];
        if (st != FP_OK) {
            snprintf(msg, sizeof msg, "trajectory %zu: template request failed: %s", i,
                     resp[i].error ? resp[i].error : "?");
        } else {
            const char *c = resp[i].content;
            size_t len = strlen(c);
            while (len && isspace((unsigned char)*c)) { c++; len--; }
            while (len && isspace((unsigned char)c[len - 1])) len--;
            if (!len) { st = FP_EPARSE; snprintf(msg, sizeof msg, "trajectory %zu: the judge returned an empty template", i); }
            else if (!(out[i] = fp_strndup(c, len))) { st = FP_ENOMEM; snprintf(msg, sizeof msg, "out of memory"); }
        }
        if (status) status[i] = st;
        if (st != FP_OK && rc == FP_OK) rc = fp_errorf(st, "%s", msg);
    }
done:
    if (bm) for (size_t i = 0; i < n; i++) built_free(&bm[i]);
    if (resp) for (size_t i = 0; i < n; i++) fp_chat_response_clear(&resp[i]);
    free(bm); free(reqs); free(resp);
    return rc;
}

/* ------------------------------------------------------------------ template-guided rollouts */

static const char *const ROLL_VARS[] = {"question", "template"};

void fp_rollout_opts_default(fp_rollout_opts *o) {
    memset(o, 0, sizeof *o);
    o->prompt_path = "prompts/rollout.txt";
    o->n = 4;
    o->temperature = 0.7;
    o->max_tokens = 2048;
    o->seed = 0;
}

int fp_template_rollouts(fp_openai_client *c, const fp_rollout_opts *o, const char *const *questions,
                         const char *const *templates, size_t n_questions, char **out, int *status) {
    if (!c || !o || (n_questions && (!questions || !templates || !out)))
        return fp_errorf(FP_EINVAL, "rollouts: NULL argument");
    if (!o->model || !*o->model) return fp_errorf(FP_EINVAL, "rollouts: no model name");
    if (o->n < 1) return fp_errorf(FP_EINVAL, "rollouts: n must be >= 1 (got %d)", o->n);
    if (o->seed < 0) return fp_errorf(FP_EINVAL, "rollouts: the seed must be >= 0");
    size_t total = n_questions * (size_t)o->n;
    for (size_t k = 0; k < total; k++) {
        out[k] = NULL;
        if (status) status[k] = FP_ESTATE;
    }
    if (!total) return FP_OK;
    prompt_file pf = {0};
    int rc = load_prompt(&pf, o->prompt_path ? o->prompt_path : "prompts/rollout.txt", ROLL_VARS, 2);
    if (rc) { free(pf.system); free(pf.user); return rc; }
    built_msg *bm = fp_calloc(n_questions, sizeof *bm);
    fp_chat_request *reqs = fp_calloc(total, sizeof *reqs);
    fp_chat_response *resp = fp_calloc(total, sizeof *resp);
    if (!bm || !reqs || !resp) { rc = fp_errorf(FP_ENOMEM, "rollouts: out of memory"); goto done; }
    for (size_t i = 0; i < n_questions; i++) {
        if (!questions[i] || !templates[i]) { rc = fp_errorf(FP_EINVAL, "rollouts: question %zu has no text or template", i); goto done; }
        const char *vals[] = {questions[i], templates[i]};
        size_t nm;
        if ((rc = build_messages(&pf, ROLL_VARS, vals, 2, &bm[i], &nm))) goto done;
        for (int r = 0; r < o->n; r++) {
            fp_chat_request *q = &reqs[i * (size_t)o->n + (size_t)r];
            fp_chat_request_init(q);
            q->model = o->model;
            q->messages = bm[i].msgs;
            q->n_messages = nm;
            q->temperature = o->temperature;
            q->max_tokens = o->max_tokens;
            q->seed = o->seed + r;
        }
    }
    fp_openai_chat_batch(c, reqs, total, resp);
    long first_bad = -1;
    for (size_t k = 0; k < total; k++) {
        int st = resp[k].status;
        if (st == FP_OK) {
            out[k] = resp[k].content;
            resp[k].content = NULL;
        }
        if (status) status[k] = st;
        if (st != FP_OK && first_bad < 0) first_bad = (long)k;
    }
    if (first_bad >= 0)
        rc = fp_errorf(resp[first_bad].status, "question %zu rollout %zu: %s", (size_t)first_bad / (size_t)o->n,
                       (size_t)first_bad % (size_t)o->n, resp[first_bad].error ? resp[first_bad].error : "failed");
done:
    if (bm) for (size_t i = 0; i < n_questions; i++) built_free(&bm[i]);
    if (resp) for (size_t k = 0; k < total; k++) fp_chat_response_clear(&resp[k]);
    free(bm); free(reqs); free(resp);
    free(pf.system); free(pf.user);
    return rc;
}
