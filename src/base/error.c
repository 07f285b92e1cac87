/* Per-thread error state and small allocation/string helpers. */
#include "base/base.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static _Thread_local char err_msg[2048];
static _Thread_local int err_code;

const char *fp_last_error(void) { return err_msg; }
int fp_last_error_code(void) { return err_code; }
const char *fp_version(void) { return "0.1.0"; }

const char *fp_status_name(int status) {
    switch (status) {
    case FP_OK: return "ok";
    case FP_EINVAL: return "invalid input";
    case FP_EIO: return "I/O error";
    case FP_EPARSE: return "parse error";
    case FP_ENOMEM: return "out of memory";
    case FP_EUNSUPPORTED: return "unsupported";
    case FP_ERANGE: return "out of range";
    case FP_ESTATE: return "invalid state";
    default: return "unknown error";
    }
}

int fp_errorf(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_msg, sizeof err_msg, fmt, ap);
    va_end(ap);
    err_code = code;
    return code;
}

int fp_error_prefix(const char *fmt, ...) {
    char prefix[1024], old[sizeof err_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err_msg, sizeof old);
    size_t n = strlen(prefix);
    if (n >= sizeof err_msg) n = sizeof err_msg - 1;
    memcpy(err_msg, prefix, n);
    size_t rest = strnlen(old, sizeof old - 1);
    if (rest > sizeof err_msg - 1 - n) rest = sizeof err_msg - 1 - n;
    memcpy(err_msg + n, old, rest);
    err_msg[n + rest] = 0;
    return err_code;
}

void fp_error_clear(void) {
    err_msg[0] = 0;
    err_code = FP_OK;
}

void *fp_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) fp_errorf(FP_ENOMEM, "out of memory allocating %zu bytes", n);
    return p;
}

void *fp_calloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) fp_errorf(FP_ENOMEM, "out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

void *fp_realloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) fp_errorf(FP_ENOMEM, "out of memory reallocating %zu bytes", n);
    return q;
}

char *fp_strndup(const char *s, size_t n) {
    char *d = fp_malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

char *fp_strdup(const char *s) { return fp_strndup(s, strlen(s)); }

int fp_buf_append(fp_buf *b, const void *data, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1) cap *= 2;
        char *d = fp_realloc(b->data, cap);
        if (!d) return FP_ENOMEM;
        b->data = d;
        b->cap = cap;
    }
    if (n && data) memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = 0;
    return FP_OK;
}

int fp_buf_printf(fp_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return fp_errorf(FP_EINVAL, "bad format string");
    size_t old = b->len;
    if (fp_buf_append(b, NULL, (size_t)n)) return FP_ENOMEM; /* reserves n bytes + NUL */
    va_start(ap, fmt);
    vsnprintf(b->data + old, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return FP_OK;
}

void fp_buf_free(fp_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

long fp_utf8_invalid_offset(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t len;
        unsigned cp, min;
        if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; min = 0x80; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; min = 0x800; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; min = 0x10000; }
        else return (long)i;
        if (i + len > n) return (long)i;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return (long)i;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return (long)i;
        i += len;
    }
    return -1;
}

double fp_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
