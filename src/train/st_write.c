/* safetensors writer: 8-byte little-endian header length, JSON header (padded with spaces to a multiple of 8),
 * then the raw little-endian tensor bytes in header order.  Written atomically through fp_outfile. */
#include "base/base.h"
#include "train/train.h"
#include <stdlib.h>
#include <string.h>

static int json_str(fp_buf *b, const char *s) {
    int rc = fp_buf_append(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p && !rc; p++) {
        if (*p == '"' || *p == '\\') rc = fp_buf_printf(b, "\\%c", *p);
        else if (*p < 0x20) rc = fp_buf_printf(b, "\\u%04x", *p);
        else rc = fp_buf_append(b, p, 1);
    }
    return rc ? rc : fp_buf_append(b, "\"", 1);
}

static const char *st_dtype(fp_dtype t, size_t *esize) {
    switch (t) {
    case FP_F32: *esize = 4; return "F32";
    case FP_F16: *esize = 2; return "F16";
    case FP_BF16: *esize = 2; return "BF16";
    default: return NULL;
    }
}

int fpt_st_write(const char *path, const fpt_st_tensor *t, int n, const char *const *metadata) {
    if (!path || !strcmp(path, "-")) return fp_errorf(FP_EINVAL, "safetensors: a file path is required");
    fp_buf h = {0};
    int rc = fp_buf_append(&h, "{", 1);
    int first = 1;
    if (metadata && metadata[0]) {
        rc |= fp_buf_append(&h, "\"__metadata__\":{", 16);
        for (int i = 0; metadata[i] && metadata[i + 1]; i += 2) {
            if (i) rc |= fp_buf_append(&h, ",", 1);
            rc |= json_str(&h, metadata[i]);
            rc |= fp_buf_append(&h, ":", 1);
            rc |= json_str(&h, metadata[i + 1]);
        }
        rc |= fp_buf_append(&h, "}", 1);
        first = 0;
    }
    size_t off = 0;
    for (int i = 0; i < n && !rc; i++) {
        size_t es;
        const char *dt = st_dtype(t[i].dtype, &es);
        const char *bad = NULL;
        if (!dt) bad = "dtype not writable (F32, F16, BF16)";
        else if (t[i].ndim < 0 || t[i].ndim > FP_MAX_DIMS) bad = "bad ndim";
        size_t numel = 1;
        for (int d = 0; !bad && d < t[i].ndim; d++) {
            if (t[i].shape[d] < 0) bad = "negative dimension";
            numel *= (size_t)t[i].shape[d];
        }
        for (int j = 0; !bad && j < i; j++)
            if (!strcmp(t[j].name, t[i].name)) bad = "duplicate tensor name";
        if (bad) {
            fp_buf_free(&h);
            return fp_errorf(dt ? FP_EINVAL : FP_EUNSUPPORTED, "safetensors: %s: %s", t[i].name, bad);
        }
        if (!first) rc |= fp_buf_append(&h, ",", 1);
        first = 0;
        rc |= json_str(&h, t[i].name);
        rc |= fp_buf_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", dt);
        for (int d = 0; d < t[i].ndim; d++) rc |= fp_buf_printf(&h, "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
        rc |= fp_buf_printf(&h, "],\"data_offsets\":[%zu,%zu]}", off, off + numel * es);
        off += numel * es;
    }
    rc |= fp_buf_append(&h, "}", 1);
    while (!rc && h.len % 8) rc |= fp_buf_append(&h, " ", 1);
    if (rc) { fp_buf_free(&h); return FP_ENOMEM; }

    fp_outfile *o;
    if ((rc = fp_outfile_open(&o, path, 0))) { fp_buf_free(&h); return rc; }
    FILE *f = fp_outfile_stream(o);
    unsigned char len8[8];
    uint64_t hl = h.len;
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(hl >> (8 * i)); /* little-endian */
    int bad = fwrite(len8, 1, 8, f) != 8 || fwrite(h.data, 1, h.len, f) != h.len;
    fp_buf_free(&h);
    for (int i = 0; i < n && !bad; i++) {
        size_t es = 0, numel = 1;
        st_dtype(t[i].dtype, &es);
        for (int d = 0; d < t[i].ndim; d++) numel *= (size_t)t[i].shape[d];
        if (numel && fwrite(t[i].data, es, numel, f) != numel) bad = 1; /* host is little-endian (x86/arm) */
    }
    if (bad) { fp_outfile_abort(o); return fp_errorf(FP_EIO, "%s: write failed", path); }
    return fp_outfile_commit(o);
}
