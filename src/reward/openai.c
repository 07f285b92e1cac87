/* OpenAI-compatible chat client (spec §2e): POST {base_url}/v1/chat/completions through the curl multi
 * interface, N requests in flight, retries with exponential backoff + seeded jitter on 429/408/5xx/connection
 * errors/timeouts (Retry-After honoured), and an on-disk response cache keyed by the SHA-256 of the canonical
 * request JSON.  The API key is read from the environment variable named in the options and only ever placed
 * in the Authorization header: it never enters a message, a cache file or a log. */
#include "base/base.h"
#define CURL_DISABLE_TYPECHECK /* the calls go through the pointers of `cu` below */
#include <curl/curl.h>
#include <stdio.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct fp_openai_client {
    fp_openai_opts o;
    char *base_url, *url, *cache_dir, *auth;
    CURLM *multi;
    atomic_long requests, cache_hits, attempts, retries, successes, failures, prompt_tokens, completion_tokens;
};

void fp_openai_opts_default(fp_openai_opts *o) {
    memset(o, 0, sizeof *o);
    o->base_url = "http://127.0.0.1:8080";
    o->api_key_env = "OPENAI_API_KEY";
    o->concurrency = 4;
    o->max_retries = 6;
    o->timeout_s = 120;
    o->connect_timeout_s = 10;
    o->backoff_base_s = 1;
    o->backoff_max_s = 60;
    o->retry_after_max_s = 300;
}

void fp_chat_request_init(fp_chat_request *r) {
    memset(r, 0, sizeof *r);
    r->temperature = 0;
    r->max_tokens = 512;
    r->seed = 0;
}

void fp_chat_response_clear(fp_chat_response *r) {
    if (!r) return;
    free(r->content);
    free(r->finish_reason);
    free(r->error);
    memset(r, 0, sizeof *r);
}

/* libcurl, loaded on first use (fp_dynlib_load): cu.easy_init(...) calls curl_easy_init */
#define CURL_FUNCS(X, p)                                                                                      \
    X(p, global_init) X(p, easy_init) X(p, easy_reset) X(p, easy_setopt) X(p, easy_getinfo) X(p, easy_strerror) \
    X(p, easy_cleanup) X(p, multi_init) X(p, multi_setopt) X(p, multi_cleanup) X(p, multi_add_handle)          \
    X(p, multi_remove_handle) X(p, multi_perform) X(p, multi_info_read) X(p, multi_poll) X(p, slist_append)   \
    X(p, slist_free_all)
FP_DYNLIB_TABLE(cu, cu_names, CURL_FUNCS, curl_);

static fp_dynlib curl_lib = {
    .soname = "libcurl.so.4", .user = "the OpenAI-compatible client", .names = cu_names, .syms = cu.sym, .n = cu_n};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static int curl_init_rc;
static void curl_init(void) { curl_init_rc = cu.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK; }

static int mkdir_p(const char *dir) {
    char *p = fp_strdup(dir);
    if (!p) return FP_ENOMEM;
    for (char *s = p + 1;; s++) {
        if (*s == '/' || !*s) {
            char c = *s;
            *s = 0;
            if (mkdir(p, 0777) != 0 && errno != EEXIST) {
                int e = fp_errorf(FP_EIO, "%s: cannot create directory: %s", p, strerror(errno));
                free(p);
                return e;
            }
            *s = c;
            if (!c) break;
        }
    }
    free(p);
    return FP_OK;
}

int fp_openai_client_new(fp_openai_client **out, const fp_openai_opts *opts) {
    *out = NULL;
    fp_openai_opts d;
    if (!opts) { fp_openai_opts_default(&d); opts = &d; }
    if (!opts->base_url || !*opts->base_url) return fp_errorf(FP_EINVAL, "openai: base URL is empty");
    if (opts->concurrency < 1) return fp_errorf(FP_EINVAL, "openai: concurrency must be >= 1 (got %d)", opts->concurrency);
    if (opts->max_retries < 0) return fp_errorf(FP_EINVAL, "openai: max retries must be >= 0");
    if (!(opts->timeout_s > 0) || !(opts->connect_timeout_s > 0))
        return fp_errorf(FP_EINVAL, "openai: timeouts must be > 0");
    if (opts->backoff_base_s < 0 || opts->backoff_max_s < 0 || opts->retry_after_max_s < 0)
        return fp_errorf(FP_EINVAL, "openai: backoff values must be >= 0");
    int lrc = fp_dynlib_load(&curl_lib);
    if (lrc) return lrc;
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc) return fp_errorf(FP_EIO, "openai: libcurl initialisation failed");
    fp_openai_client *c = fp_calloc(1, sizeof *c);
    if (!c) return FP_ENOMEM;
    c->o = *opts;
    size_t bl = strlen(opts->base_url);
    while (bl && opts->base_url[bl - 1] == '/') bl--;
    c->base_url = fp_strndup(opts->base_url, bl);
    fp_buf u = {0};
    if (!c->base_url || fp_buf_printf(&u, "%s/v1/chat/completions", c->base_url)) goto nomem;
    c->url = u.data;
    const char *envname = opts->api_key_env ? opts->api_key_env : "OPENAI_API_KEY";
    const char *key = *envname ? getenv(envname) : NULL;
    if (key && *key) {
        fp_buf a = {0};
        if (fp_buf_printf(&a, "Authorization: Bearer %s", key)) goto nomem;
        c->auth = a.data;
    }
    if (opts->cache_dir && *opts->cache_dir) {
        c->cache_dir = fp_strdup(opts->cache_dir);
        if (!c->cache_dir) goto nomem;
        int rc = mkdir_p(c->cache_dir);
        if (rc) { fp_openai_client_free(c); return fp_error_prefix("openai cache: "); }
    }
    c->multi = cu.multi_init();
    if (!c->multi) { fp_openai_client_free(c); return fp_errorf(FP_EIO, "openai: curl_multi_init failed"); }
    cu.multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)opts->concurrency);
    *out = c;
    return FP_OK;
nomem:
    fp_openai_client_free(c);
    return fp_errorf(FP_ENOMEM, "openai: out of memory");
}

void fp_openai_client_free(fp_openai_client *c) {
    if (!c) return;
    if (c->multi) cu.multi_cleanup(c->multi);
    if (c->auth) { memset(c->auth, 0, strlen(c->auth)); free(c->auth); }
    free(c->base_url);
    free(c->url);
    free(c->cache_dir);
    free(c);
}

void fp_openai_client_stats(const fp_openai_client *c, fp_openai_stats *s) {
    fp_openai_client *m = (fp_openai_client *)c;
    s->requests = atomic_load(&m->requests);
    s->cache_hits = atomic_load(&m->cache_hits);
    s->attempts = atomic_load(&m->attempts);
    s->retries = atomic_load(&m->retries);
    s->successes = atomic_load(&m->successes);
    s->failures = atomic_load(&m->failures);
    s->prompt_tokens = atomic_load(&m->prompt_tokens);
    s->completion_tokens = atomic_load(&m->completion_tokens);
}

/* ------------------------------------------------------------------ request JSON and cache key */

static json_t *request_json(const fp_chat_request *r) {
    if (!r->model || !*r->model) { fp_errorf(FP_EINVAL, "request has no model"); return NULL; }
    if (!r->messages || !r->n_messages) { fp_errorf(FP_EINVAL, "request has no messages"); return NULL; }
    json_t *o = json_object(), *msgs = json_array();
    if (!o || !msgs) goto nomem;
    if (json_object_set_new(o, "model", json_string(r->model))) goto nomem;
    for (size_t i = 0; i < r->n_messages; i++) {
        const fp_chat_message *m = &r->messages[i];
        if (!m->role || !m->content) { fp_errorf(FP_EINVAL, "message %zu has no role or content", i); goto fail; }
        json_t *jm = json_object();
        json_t *role = json_string(m->role), *content = json_string(m->content);
        if (!role || !content) {
            json_decref(jm); json_decref(role); json_decref(content);
            fp_errorf(FP_EINVAL, "message %zu is not valid UTF-8", i);
            goto fail;
        }
        if (!jm || json_object_set_new(jm, "role", role) || json_object_set_new(jm, "content", content) ||
            json_array_append_new(msgs, jm)) goto nomem;
    }
    if (json_object_set_new(o, "messages", msgs)) { msgs = NULL; goto nomem; }
    msgs = NULL;
    if (r->temperature >= 0 && json_object_set_new(o, "temperature", json_real(r->temperature))) goto nomem;
    if (r->max_tokens > 0 && json_object_set_new(o, "max_tokens", json_integer(r->max_tokens))) goto nomem;
    if (r->seed >= 0 && json_object_set_new(o, "seed", json_integer(r->seed))) goto nomem;
    if (r->response_format) {
        json_error_t err;
        json_t *rf = json_loads(r->response_format, 0, &err);
        if (!rf || !json_is_object(rf)) {
            json_decref(rf);
            fp_errorf(FP_EINVAL, "response_format is not a JSON object: %s", err.text);
            goto fail;
        }
        if (json_object_set_new(o, "response_format", rf)) goto nomem;
    }
    if (json_object_set_new(o, "stream", json_false())) goto nomem;
    return o;
nomem:
    fp_errorf(FP_ENOMEM, "out of memory building request");
fail:
    json_decref(msgs);
    json_decref(o);
    return NULL;
}

int fp_chat_request_canonical(const fp_chat_request *r, char **json) {
    *json = NULL;
    json_t *o = request_json(r);
    if (!o) return fp_last_error_code();
    *json = json_dumps(o, JSON_SORT_KEYS | JSON_COMPACT);
    json_decref(o);
    return *json ? FP_OK : fp_errorf(FP_ENOMEM, "cannot serialise request");
}

int fp_chat_request_key(const fp_chat_request *r, char hex[65]) {
    char *s;
    int rc = fp_chat_request_canonical(r, &s);
    if (rc) return rc;
    fp_sha256_hex(s, strlen(s), hex);
    free(s);
    return FP_OK;
}

/* ------------------------------------------------------------------ response parsing and cache files */

/* Fills content/finish_reason/usage from a 2xx body.  Returns FP_OK or FP_EPARSE (message set). */
static int parse_response(json_t *root, fp_chat_response *out) {
    json_t *choices = json_object_get(root, "choices");
    json_t *ch0 = json_is_array(choices) ? json_array_get(choices, 0) : NULL;
    json_t *msg = ch0 ? json_object_get(ch0, "message") : NULL;
    json_t *content = msg ? json_object_get(msg, "content") : NULL;
    if (!json_is_string(content))
        return fp_errorf(FP_EPARSE, "response has no choices[0].message.content string");
    free(out->content);
    out->content = fp_strndup(json_string_value(content), json_string_length(content));
    json_t *fr = json_object_get(ch0, "finish_reason");
    free(out->finish_reason);
    out->finish_reason = json_is_string(fr) ? fp_strdup(json_string_value(fr)) : NULL;
    json_t *usage = json_object_get(root, "usage");
    out->prompt_tokens = (long)json_integer_value(json_object_get(usage, "prompt_tokens"));
    out->completion_tokens = (long)json_integer_value(json_object_get(usage, "completion_tokens"));
    return out->content ? FP_OK : FP_ENOMEM;
}

static char *cache_path(const fp_openai_client *c, const char *key, int with_dir_only) {
    fp_buf b = {0};
    int bad = with_dir_only ? fp_buf_printf(&b, "%s/%.2s", c->cache_dir, key)
                            : fp_buf_printf(&b, "%s/%.2s/%s.json", c->cache_dir, key, key);
    return bad ? NULL : b.data;
}

/* A cache hit fills out and returns 1; a miss (or an unreadable entry, treated as a miss) returns 0. */
static int cache_lookup(const fp_openai_client *c, const char *key, fp_chat_response *out) {
    if (!c->cache_dir) return 0;
    char *path = cache_path(c, key, 0);
    if (!path) return 0;
    json_t *root = json_load_file(path, 0, NULL);
    free(path);
    if (!root) return 0;
    json_t *resp = json_object_get(root, "response");
    const char *k = json_string_value(json_object_get(root, "key"));
    int ok = resp && k && !strcmp(k, key) && parse_response(resp, out) == FP_OK;
    json_decref(root);
    if (!ok) { fp_chat_response_clear(out); fp_error_clear(); }
    return ok;
}

static atomic_ulong cache_tmp_counter;

/* Writes {"key", "request", "response"} to <dir>/<k[0:2]>/<key>.json via a temporary file + fsync + rename. */
static int cache_store(const fp_openai_client *c, const char *key, const char *canonical, json_t *response) {
    if (!c->cache_dir) return FP_OK;
    char *dir = cache_path(c, key, 1), *path = cache_path(c, key, 0);
    fp_buf tmp = {0};
    int rc = FP_OK;
    json_t *req = json_loads(canonical, 0, NULL);
    json_t *rec = json_pack("{s:s, s:o, s:O}", "key", key, "request", req ? req : json_null(), "response", response);
    if (!dir || !path || !rec ||
        fp_buf_printf(&tmp, "%s.tmp.%ld.%lu", path, (long)getpid(), atomic_fetch_add(&cache_tmp_counter, 1))) {
        rc = fp_errorf(FP_ENOMEM, "out of memory writing the cache");
        goto done;
    }
    if ((rc = mkdir_p(dir))) goto done;
    FILE *f = fopen(tmp.data, "wb");
    if (!f) { rc = fp_errorf(FP_EIO, "%s: cannot create: %s", tmp.data, strerror(errno)); goto done; }
    int bad = json_dumpf(rec, f, JSON_COMPACT) != 0 || fputc('\n', f) == EOF || fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp.data, path) != 0) {
        rc = fp_errorf(FP_EIO, "%s: cannot write cache entry: %s", path, strerror(errno));
        unlink(tmp.data);
    }
done:
    json_decref(rec);
    free(dir);
    free(path);
    fp_buf_free(&tmp);
    return rc;
}

/* ------------------------------------------------------------------ the batch engine */

enum { JOB_NEW, JOB_RUNNING, JOB_WAIT, JOB_DONE };

typedef struct {
    size_t idx;
    char key[65];
    char *body;
    int state;
    int alias;              /* index of an earlier identical request, or -1 */
    double not_before;
    CURL *easy;
    fp_buf resp;
    char errbuf[CURL_ERROR_SIZE];
} job;

static size_t on_body(char *p, size_t sz, size_t n, void *ud) {
    job *j = ud;
    return fp_buf_append(&j->resp, p, sz * n) ? 0 : sz * n;
}

static int set_error(fp_chat_response *r, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int set_error(fp_chat_response *r, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char tmp[1024];
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    free(r->error);
    r->error = fp_strdup(tmp);
    r->status = code;
    return code;
}

/* The server's error.message (or the raw body start), for a non-2xx reply, with the API key (should a server
 * echo it) replaced by "***". */
static void server_message(const fp_openai_client *c, const fp_buf *body, char *out, size_t cap) {
    out[0] = 0;
    if (!body->len) return;
    json_t *root = json_loadb(body->data, body->len, 0, NULL);
    json_t *err = root ? json_object_get(root, "error") : NULL;
    const char *m = json_is_object(err) ? json_string_value(json_object_get(err, "message"))
                    : json_is_string(err) ? json_string_value(err) : NULL;
    if (m) snprintf(out, cap, "%s", m);
    else snprintf(out, cap, "%.*s", (int)(body->len < 200 ? body->len : 200), body->data);
    json_decref(root);
    for (char *s = out; *s; s++) if (*s == '\n' || *s == '\r') *s = ' ';
    const char *key = c->auth ? c->auth + strlen("Authorization: Bearer ") : NULL;
    size_t kl = key ? strlen(key) : 0;
    char *hit;
    while (kl && (hit = strstr(out, key))) {
        memcpy(hit, "***", 3);
        memmove(hit + 3, hit + kl, strlen(hit + kl) + 1);
    }
}

static int start_job(fp_openai_client *c, job *j, struct curl_slist *headers, fp_chat_response *r) {
    if (!j->easy) {
        j->easy = cu.easy_init();
        if (!j->easy) return set_error(r, FP_ENOMEM, "curl_easy_init failed");
    } else {
        cu.easy_reset(j->easy);
    }
    j->resp.len = 0;
    j->errbuf[0] = 0;
    CURL *e = j->easy;
    cu.easy_setopt(e, CURLOPT_URL, c->url);
    cu.easy_setopt(e, CURLOPT_POST, 1L);
    cu.easy_setopt(e, CURLOPT_POSTFIELDS, j->body);
    cu.easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(j->body));
    cu.easy_setopt(e, CURLOPT_HTTPHEADER, headers);
    cu.easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    cu.easy_setopt(e, CURLOPT_WRITEDATA, j);
    cu.easy_setopt(e, CURLOPT_ERRORBUFFER, j->errbuf);
    cu.easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(c->o.timeout_s * 1000));
    cu.easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(c->o.connect_timeout_s * 1000));
    cu.easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    cu.easy_setopt(e, CURLOPT_PRIVATE, j);
    cu.easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    if (cu.multi_add_handle(c->multi, e) != CURLM_OK) return set_error(r, FP_EIO, "curl_multi_add_handle failed");
    j->state = JOB_RUNNING;
    r->attempts++;
    atomic_fetch_add(&c->attempts, 1);
    return FP_OK;
}

static double backoff_delay(const fp_openai_client *c, size_t idx, int retry_no, double retry_after) {
    double d = c->o.backoff_base_s * ldexp(1.0, retry_no - 1);
    if (d > c->o.backoff_max_s) d = c->o.backoff_max_s;
    fp_rng rng;
    fp_rng_seed(&rng, c->o.jitter_seed, idx, (uint64_t)retry_no);
    double u = (double)(fp_rng_next(&rng) >> 11) / 9007199254740992.0;
    d *= 0.5 + 0.5 * u; /* "equal jitter": uniform in [d/2, d) */
    if (retry_after > 0) {
        double ra = retry_after < c->o.retry_after_max_s ? retry_after : c->o.retry_after_max_s;
        if (ra > d) d = ra;
    }
    return d;
}

static int is_fatal_curl(CURLcode cc) {
    return cc == CURLE_UNSUPPORTED_PROTOCOL || cc == CURLE_URL_MALFORMAT || cc == CURLE_OUT_OF_MEMORY ||
           cc == CURLE_BAD_FUNCTION_ARGUMENT || cc == CURLE_WRITE_ERROR;
}

/* Handles one finished transfer: success, scheduled retry, or final failure.  Returns 1 when the job is done. */
static int finish_job(fp_openai_client *c, job *j, CURLcode cc, fp_chat_response *r) {
    long code = 0;
    curl_off_t retry_after = -1;
    cu.easy_getinfo(j->easy, CURLINFO_RESPONSE_CODE, &code);
    cu.easy_getinfo(j->easy, CURLINFO_RETRY_AFTER, &retry_after);
    cu.multi_remove_handle(c->multi, j->easy);
    r->http_status = code;
    char why[600];
    int retryable = 0;
    if (cc != CURLE_OK) {
        snprintf(why, sizeof why, "%s%s%s", cu.easy_strerror(cc), j->errbuf[0] ? ": " : "", j->errbuf);
        retryable = !is_fatal_curl(cc);
        r->http_status = 0;
    } else if (code >= 200 && code < 300) {
        json_error_t err;
        json_t *root = json_loadb(j->resp.data ? j->resp.data : "", j->resp.len, 0, &err);
        int rc = root ? parse_response(root, r) : fp_errorf(FP_EPARSE, "malformed JSON at column %d: %s", err.column, err.text);
        if (rc == FP_OK) {
            atomic_fetch_add(&c->successes, 1);
            atomic_fetch_add(&c->prompt_tokens, r->prompt_tokens);
            atomic_fetch_add(&c->completion_tokens, r->completion_tokens);
            rc = cache_store(c, j->key, j->body, root);
            if (rc) set_error(r, rc, "answer received but not cached: %s", fp_last_error());
            else r->status = FP_OK;
        } else {
            set_error(r, rc, "HTTP %ld: %s", code, fp_last_error());
        }
        json_decref(root);
        if (r->status != FP_OK) atomic_fetch_add(&c->failures, 1);
        j->state = JOB_DONE;
        return 1;
    } else {
        char msg[400];
        server_message(c, &j->resp, msg, sizeof msg);
        snprintf(why, sizeof why, "HTTP %ld%s%s", code, msg[0] ? ": " : "", msg);
        retryable = code == 408 || code == 409 || code == 429 || code >= 500;
    }
    int retry_no = r->attempts; /* attempts made so far = number of this retry */
    if (retryable && retry_no <= c->o.max_retries) {
        atomic_fetch_add(&c->retries, 1);
        j->state = JOB_WAIT;
        j->not_before = fp_now() + backoff_delay(c, j->idx, retry_no, (double)retry_after);
        return 0;
    }
    set_error(r, cc != CURLE_OK ? FP_EIO : (code >= 400 && code < 500 && code != 429 && code != 408) ? FP_EINVAL : FP_EIO,
              "%s%s", why, retryable ? " (retries exhausted)" : "");
    atomic_fetch_add(&c->failures, 1);
    j->state = JOB_DONE;
    return 1;
}

static int cmp_key(const void *a, const void *b) {
    const job *x = *(const job *const *)a, *y = *(const job *const *)b;
    int d = strcmp(x->key, y->key);
    return d ? d : (x->idx > y->idx) - (x->idx < y->idx);
}

int fp_openai_chat_batch(fp_openai_client *c, const fp_chat_request *reqs, size_t n, fp_chat_response *out) {
    if (!c || (n && (!reqs || !out))) return fp_errorf(FP_EINVAL, "openai batch: NULL argument");
    for (size_t i = 0; i < n; i++) memset(&out[i], 0, sizeof out[i]);
    if (!n) return FP_OK;
    job *jobs = fp_calloc(n, sizeof *jobs);
    job **order = fp_calloc(n, sizeof *order);
    struct curl_slist *headers = NULL;
    int rc = FP_OK;
    if (!jobs || !order) { rc = FP_ENOMEM; goto done; }
    atomic_fetch_add(&c->requests, (long)n);
    /* Build bodies and keys; requests that cannot be built fail individually. */
    for (size_t i = 0; i < n; i++) {
        job *j = &jobs[i];
        j->idx = i;
        j->alias = -1;
        order[i] = j;
        if (fp_chat_request_canonical(&reqs[i], &j->body)) {
            set_error(&out[i], fp_last_error_code(), "%s", fp_last_error());
            atomic_fetch_add(&c->failures, 1);
            j->state = JOB_DONE;
            j->key[0] = 0;
            continue;
        }
        fp_sha256_hex(j->body, strlen(j->body), j->key);
    }
    /* Identical requests in one batch are sent once. */
    qsort(order, n, sizeof *order, cmp_key);
    for (size_t i = 1; i < n; i++)
        if (order[i]->key[0] && !strcmp(order[i]->key, order[i - 1]->key))
            order[i]->alias = order[i - 1]->alias >= 0 ? order[i - 1]->alias : (int)order[i - 1]->idx;
    size_t todo = 0;
    for (size_t i = 0; i < n; i++) {
        job *j = &jobs[i];
        if (j->state == JOB_DONE || j->alias >= 0) continue;
        if (cache_lookup(c, j->key, &out[i])) {
            out[i].from_cache = 1;
            atomic_fetch_add(&c->cache_hits, 1);
            j->state = JOB_DONE;
        } else {
            todo++;
        }
    }
    headers = cu.slist_append(headers, "Content-Type: application/json");
    headers = cu.slist_append(headers, "Expect:");
    if (c->auth) headers = cu.slist_append(headers, c->auth);
    if (!headers) { rc = fp_errorf(FP_ENOMEM, "out of memory"); goto done; }

    size_t next_new = 0, running = 0;
    while (todo) {
        double now = fp_now(), next_wake = now + 1.0;
        /* Start retries that are due, then new requests, up to the concurrency limit. */
        for (size_t i = 0; i < n && running < (size_t)c->o.concurrency; i++) {
            job *j = &jobs[i];
            if (j->state != JOB_WAIT) continue;
            if (j->not_before <= now) {
                if (start_job(c, j, headers, &out[i]) == FP_OK) running++;
                else { j->state = JOB_DONE; todo--; atomic_fetch_add(&c->failures, 1); }
            } else if (j->not_before < next_wake) {
                next_wake = j->not_before;
            }
        }
        while (running < (size_t)c->o.concurrency && next_new < n) {
            job *j = &jobs[next_new++];
            if (j->state != JOB_NEW || j->alias >= 0) continue;
            if (start_job(c, j, headers, &out[j->idx]) == FP_OK) running++;
            else { j->state = JOB_DONE; todo--; atomic_fetch_add(&c->failures, 1); }
        }
        int still = 0;
        if (cu.multi_perform(c->multi, &still) != CURLM_OK) { rc = fp_errorf(FP_EIO, "curl_multi_perform failed"); goto done; }
        CURLMsg *m;
        int left;
        while ((m = cu.multi_info_read(c->multi, &left))) {
            if (m->msg != CURLMSG_DONE) continue;
            job *j = NULL;
            cu.easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&j);
            CURLcode cc = m->data.result;
            running--;
            if (finish_job(c, j, cc, &out[j->idx])) todo--;
        }
        if (!todo) break;
        if (running < (size_t)c->o.concurrency && next_new < n) continue; /* more to start right away */
        for (size_t i = 0; i < n; i++)
            if (jobs[i].state == JOB_WAIT && jobs[i].not_before < next_wake) next_wake = jobs[i].not_before;
        int wait_ms = running ? 100 : (int)((next_wake - fp_now()) * 1000) + 1;
        if (wait_ms < 0) wait_ms = 0;
        if (wait_ms > 1000) wait_ms = 1000;
        if (running) cu.multi_poll(c->multi, NULL, 0, wait_ms, NULL);
        else if (wait_ms) usleep((useconds_t)wait_ms * 1000);
    }
done:
    if (jobs) {
        for (size_t i = 0; i < n; i++) {
            if (jobs[i].easy) {
                if (jobs[i].state == JOB_RUNNING) cu.multi_remove_handle(c->multi, jobs[i].easy);
                cu.easy_cleanup(jobs[i].easy);
            }
            fp_buf_free(&jobs[i].resp);
        }
        /* Copy the answers of duplicates from their first occurrence. */
        for (size_t i = 0; i < n; i++) {
            if (jobs[i].alias < 0 || rc) continue;
            fp_chat_response *src = &out[jobs[i].alias], *dst = &out[i];
            dst->status = src->status;
            dst->http_status = src->http_status;
            dst->content = src->content ? fp_strdup(src->content) : NULL;
            dst->finish_reason = src->finish_reason ? fp_strdup(src->finish_reason) : NULL;
            dst->error = src->error ? fp_strdup(src->error) : NULL;
            dst->prompt_tokens = src->prompt_tokens;
            dst->completion_tokens = src->completion_tokens;
            dst->from_cache = 1;
            if (dst->status == FP_OK) atomic_fetch_add(&c->cache_hits, 1);
        }
        for (size_t i = 0; i < n; i++) free(jobs[i].body);
    }
    cu.slist_free_all(headers);
    free(jobs);
    free(order);
    if (rc) return rc;
    for (size_t i = 0; i < n; i++)
        if (out[i].status != FP_OK)
            return fp_errorf(out[i].status, "request %zu: %s", i, out[i].error ? out[i].error : "failed");
    return FP_OK;
}
