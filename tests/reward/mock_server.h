/* A tiny OpenAI-compatible chat server on 127.0.0.1 (ephemeral port) for the reward tests, on libmicrohttpd.
 * Its behaviour is driven by directives inside the request: when the body holds "STEP<<...>>" only the text
 * inside counts, else the whole body.  Directives (first match wins):
 *   @429        first attempt of this exact body: 429 with "Retry-After: 1"
 *   @500x2      first two attempts: 500
 *   @slow       first attempt: sleep 1.5 s before answering (client timeout shorter)
 *   @hold       sleep 0.3 s (lets concurrent requests overlap)
 *   @always500  always 500;   @400  always 400 with an error message;  @garbage200  200 with a non-JSON body
 *   @401echo    401 whose error message echoes the Authorization header (tests redaction)
 *   @auth       replies "auth-ok" when the Authorization header is "Bearer sk-test-secret-42", else "auth-missing"
 *   @noschema   400 when the request has a json_schema response_format
 *   @noformat   400 when the request has any response_format
 *   @reply=X    the assistant content (template first, then the order below): 7 -> {"score": 7}, 11 -> {"score": 11}, str -> {"score": "7"},
 *               bad -> not json, nokey -> {"grade": 5}, prose -> text with a ```json fence {"score": 6.5},
 *               template -> a two-line numbered list
 *   otherwise   {"score": 5}
 * Every answer carries usage {"prompt_tokens": 10, "completion_tokens": 3}. */
#ifndef FP_TEST_MOCK_SERVER_H
#define FP_TEST_MOCK_SERVER_H
#include "fluxprm.h"
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    struct MHD_Daemon *d;
    int port;
    atomic_int requests, inflight, max_inflight;
    pthread_mutex_t mu;
    char (*keys)[65];
    int *counts;
    int n_keys, cap_keys;
} mock_server;

typedef struct {
    char *data;
    size_t len;
} mock_conn;

static int mock_count_attempt(mock_server *m, const char *body, size_t len) {
    char key[65];
    fp_sha256_hex(body, len, key);
    pthread_mutex_lock(&m->mu);
    int i;
    for (i = 0; i < m->n_keys; i++) if (!strcmp(m->keys[i], key)) break;
    if (i == m->n_keys) {
        if (m->n_keys == m->cap_keys) {
            m->cap_keys = m->cap_keys ? 2 * m->cap_keys : 64;
            m->keys = realloc(m->keys, (size_t)m->cap_keys * sizeof *m->keys);
            m->counts = realloc(m->counts, (size_t)m->cap_keys * sizeof *m->counts);
        }
        memcpy(m->keys[i], key, 65);
        m->counts[i] = 0;
        m->n_keys++;
    }
    int c = ++m->counts[i];
    pthread_mutex_unlock(&m->mu);
    return c;
}

static enum MHD_Result mock_send(struct MHD_Connection *conn, unsigned code, const char *body, const char *retry_after) {
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", "application/json");
    if (retry_after) MHD_add_response_header(r, "Retry-After", retry_after);
    enum MHD_Result ret = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result mock_reply(struct MHD_Connection *conn, const char *content) {
    /* JSON-escape content */
    char esc[2048];
    size_t k = 0;
    for (const char *p = content; *p && k < sizeof esc - 8; p++) {
        if (*p == '"' || *p == '\\') { esc[k++] = '\\'; esc[k++] = *p; }
        else if (*p == '\n') { esc[k++] = '\\'; esc[k++] = 'n'; }
        else esc[k++] = *p;
    }
    esc[k] = 0;
    char body[4096];
    snprintf(body, sizeof body,
             "{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion\",\"created\":1730000000,\"model\":\"mock\","
             "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"%s\"},\"finish_reason\":\"stop\"}],"
             "\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":3,\"total_tokens\":13}}", esc);
    return mock_send(conn, 200, body, NULL);
}

/* Gathers the request body across libmicrohttpd's calls of a handler into the mock_conn at *con_cls: 1 while it is
 * still coming (the handler answers MHD_YES), 0 once it is whole. */
static int mock_receiving(void **con_cls, const char *upload, size_t *upload_size) {
    mock_conn *mc = *con_cls;
    if (!mc) {
        mc = calloc(1, sizeof *mc);
        *con_cls = mc;
        return 1;
    }
    if (*upload_size) {
        mc->data = realloc(mc->data, mc->len + *upload_size + 1);
        memcpy(mc->data + mc->len, upload, *upload_size);
        mc->len += *upload_size;
        mc->data[mc->len] = 0;
        *upload_size = 0;
        return 1;
    }
    return 0;
}

static enum MHD_Result mock_handle(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                   const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version;
    mock_server *m = cls;
    if (mock_receiving(con_cls, upload, upload_size)) return MHD_YES;
    mock_conn *mc = *con_cls;
    if (strcmp(method, "POST") || strcmp(url, "/v1/chat/completions"))
        return mock_send(conn, 404, "{\"error\":{\"message\":\"not found\",\"type\":\"invalid_request_error\"}}", NULL);
    const char *body = mc->data ? mc->data : "";
    atomic_fetch_add(&m->requests, 1);
    int now = atomic_fetch_add(&m->inflight, 1) + 1;
    int mx = atomic_load(&m->max_inflight);
    while (now > mx && !atomic_compare_exchange_weak(&m->max_inflight, &mx, now)) {}
    int attempt = mock_count_attempt(m, body, mc->len);
    /* the directive scope */
    char scope[1024];
    const char *st = strstr(body, "STEP<<"), *en = st ? strstr(st, ">>") : NULL;
    if (st && en) snprintf(scope, sizeof scope, "%.*s", (int)(en - st - 6), st + 6);
    else snprintf(scope, sizeof scope, "%s", body);
    const char *auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    enum MHD_Result ret;
    if (strstr(scope, "@hold")) usleep(300000);
    if (strstr(scope, "@429") && attempt == 1)
        ret = mock_send(conn, 429, "{\"error\":{\"message\":\"Rate limit reached\",\"type\":\"rate_limit_error\"}}", "1");
    else if (strstr(scope, "@500x2") && attempt <= 2)
        ret = mock_send(conn, 500, "{\"error\":{\"message\":\"internal error\",\"type\":\"server_error\"}}", NULL);
    else if (strstr(scope, "@always500"))
        ret = mock_send(conn, 500, "{\"error\":{\"message\":\"always failing\",\"type\":\"server_error\"}}", NULL);
    else if (strstr(scope, "@400"))
        ret = mock_send(conn, 400, "{\"error\":{\"message\":\"bad request: model not found\",\"type\":\"invalid_request_error\"}}", NULL);
    else if (strstr(scope, "@garbage200"))
        ret = mock_send(conn, 200, "<html>oops</html>", NULL);
    else if (strstr(scope, "@401echo")) {
        char b[512];
        snprintf(b, sizeof b, "{\"error\":{\"message\":\"Incorrect API key provided: %s\",\"type\":\"auth\"}}",
                 auth ? auth : "(none)");
        ret = mock_send(conn, 401, b, NULL);
    } else if (strstr(scope, "@noschema") && strstr(body, "\"json_schema\""))
        ret = mock_send(conn, 400, "{\"error\":{\"message\":\"response_format json_schema is not supported\"}}", NULL);
    else if (strstr(scope, "@noformat") && strstr(body, "\"response_format\""))
        ret = mock_send(conn, 400, "{\"error\":{\"message\":\"response_format is not supported\"}}", NULL);
    else {
        if (strstr(scope, "@slow") && attempt == 1) usleep(1500000);
        const char *content = "{\"score\": 5}";
        if (strstr(scope, "@auth")) content = auth && !strcmp(auth, "Bearer sk-test-secret-42") ? "auth-ok" : "auth-missing";
        else if (strstr(scope, "@reply=template")) content = "1. Set up the equation.\n2. Solve and check.";
        else if (strstr(scope, "@reply=7")) content = "{\"score\": 7}";
        else if (strstr(scope, "@reply=11")) content = "{\"score\": 11}";
        else if (strstr(scope, "@reply=str")) content = "{\"score\": \"7\"}";
        else if (strstr(scope, "@reply=bad")) content = "I think it is good";
        else if (strstr(scope, "@reply=nokey")) content = "{\"grade\": 5}";
        else if (strstr(scope, "@reply=prose")) content = "Sure.\n```json\n{\"score\": 6.5}\n```";
        ret = mock_reply(conn, content);
    }
    atomic_fetch_sub(&m->inflight, 1);
    return ret;
}

static void mock_done(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode t) {
    (void)cls; (void)conn; (void)t;
    mock_conn *mc = *con_cls;
    if (mc) { free(mc->data); free(mc); }
    *con_cls = NULL;
}

/* Starts a server whose requests go to handler (called with m): 0, or -1. */
static int mock_start_with(mock_server *m, MHD_AccessHandlerCallback handler) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = 0;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    m->d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0,
                            NULL, NULL, handler, m, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_NOTIFY_COMPLETED, mock_done, m, MHD_OPTION_END);
    if (!m->d) return -1;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(m->d, MHD_DAEMON_INFO_BIND_PORT);
    m->port = info ? info->port : 0;
    return m->port ? 0 : -1;
}

static int mock_start(mock_server *m) { return mock_start_with(m, mock_handle); }

static void mock_stop(mock_server *m) {
    if (m->d) MHD_stop_daemon(m->d);
    m->d = NULL;
    free(m->keys);
    free(m->counts);
    pthread_mutex_destroy(&m->mu);
}

static void mock_url(const mock_server *m, char *buf, size_t n) { snprintf(buf, n, "http://127.0.0.1:%d", m->port); }
#endif
