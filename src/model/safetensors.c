/* safetensors reader: a single file or a sharded checkpoint (model.safetensors.index.json), memory-mapped,
 * tensors kept in their stored dtype.
 *
 * File layout: u64 little-endian header length N, N bytes of JSON header
 *   {"__metadata__": {...}, "<name>": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, ...}
 * then the data section; offsets are relative to its start (byte 8 + N). */
#include "base/base.h"
#include "model/weights.h"
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define ST_MAX_HEADER (256u << 20) /* sanity bound on the JSON header */

typedef struct {
    size_t begin, end;
    const char *name;
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : 0;
}

/* Maps a safetensors dtype string; returns 0 ok, 1 known-but-unsupported, -1 unknown. */
static int st_dtype(const char *s, fp_dtype *dt, size_t *esize) {
    if (!strcmp(s, "F32")) { *dt = FP_F32; *esize = 4; return 0; }
    if (!strcmp(s, "BF16")) { *dt = FP_BF16; *esize = 2; return 0; }
    if (!strcmp(s, "F16")) { *dt = FP_F16; *esize = 2; return 0; }
    static const char *known[] = {"F64", "I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL",
                                  "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64"};
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (!strcmp(s, known[i])) return 1;
    return -1;
}

/* Parses one safetensors file into w (which adopts the mapping).  When index_map is not NULL (a sharded
 * checkpoint), each tensor must be listed there with this file's name (shard_name). */
static int st_parse_file(fp_weights *w, const char *path, json_t *index_map, const char *shard_name) {
    fp_mmap m;
    int rc = fp_mmap_open(&m, path);
    if (rc) return rc;
    const unsigned char *p = m.data;
    if (m.size < 8) {
        size_t sz = m.size;
        fp_mmap_close(&m);
        return fp_errorf(FP_EPARSE, "%s: truncated safetensors file (%zu bytes, the header length alone takes 8)",
                         path, sz);
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | p[i];
    if (hlen > m.size - 8) {
        size_t sz = m.size;
        fp_mmap_close(&m);
        return fp_errorf(FP_EPARSE, "%s: header length %llu exceeds the file size %zu (truncated or not safetensors)",
                         path, (unsigned long long)hlen, sz);
    }
    if (hlen > ST_MAX_HEADER || hlen < 2) {
        fp_mmap_close(&m);
        return fp_errorf(FP_EPARSE, "%s: implausible header length %llu", path, (unsigned long long)hlen);
    }
    json_error_t jerr;
    json_t *hdr = json_loadb((const char *)p + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!hdr) {
        fp_mmap_close(&m);
        return fp_errorf(FP_EPARSE, "%s: header is not valid JSON (column %d: %s)", path, jerr.column, jerr.text);
    }
    if (!json_is_object(hdr)) {
        json_decref(hdr);
        fp_mmap_close(&m);
        return fp_errorf(FP_EPARSE, "%s: header is not a JSON object", path);
    }
    const unsigned char *base = p + 8 + hlen;
    size_t dsize = m.size - 8 - (size_t)hlen;
    size_t nt = json_object_size(hdr);
    span *spans = fp_calloc(nt ? nt : 1, sizeof *spans);
    if (!spans) { json_decref(hdr); fp_mmap_close(&m); return FP_ENOMEM; }
    size_t ns = 0;
    /* The mapping is adopted up front so that tensors added below stay valid and w frees it on any error. */
    if ((rc = fp_weights_adopt_mmap(w, &m))) { free(spans); json_decref(hdr); fp_mmap_close(&m); return rc; }

    const char *name;
    json_t *v;
    json_object_foreach(hdr, name, v) {
        if (!strcmp(name, "__metadata__")) continue;
        if (!json_is_object(v)) { rc = fp_errorf(FP_EPARSE, "%s: tensor %s: entry is not an object", path, name); break; }
        json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
               *jo = json_object_get(v, "data_offsets");
        if (!json_is_string(jd)) { rc = fp_errorf(FP_EPARSE, "%s: tensor %s: missing dtype", path, name); break; }
        fp_dtype dt;
        size_t esize;
        int k = st_dtype(json_string_value(jd), &dt, &esize);
        if (k) {
            rc = fp_errorf(k > 0 ? FP_EUNSUPPORTED : FP_EPARSE, "%s: tensor %s: %s dtype %s", path, name,
                           k > 0 ? "unsupported" : "unknown", json_string_value(jd));
            break;
        }
        if (!json_is_array(js)) { rc = fp_errorf(FP_EPARSE, "%s: tensor %s: missing shape", path, name); break; }
        int ndim = (int)json_array_size(js);
        if (ndim > FP_MAX_DIMS) {
            rc = fp_errorf(FP_EUNSUPPORTED, "%s: tensor %s: %d dimensions (at most %d)", path, name, ndim, FP_MAX_DIMS);
            break;
        }
        int64_t shape[FP_MAX_DIMS];
        size_t numel = 1;
        int overflow = 0;
        for (int i = 0; i < ndim && !rc; i++) {
            json_t *d = json_array_get(js, (size_t)i);
            if (!json_is_integer(d) || json_integer_value(d) < 0) {
                rc = fp_errorf(FP_EPARSE, "%s: tensor %s: shape[%d] is not a non-negative integer", path, name, i);
                break;
            }
            shape[i] = json_integer_value(d);
            if (shape[i] && numel > SIZE_MAX / (size_t)shape[i]) overflow = 1;
            else numel *= (size_t)shape[i];
        }
        if (rc) break;
        if (overflow || numel > SIZE_MAX / esize) {
            rc = fp_errorf(FP_EPARSE, "%s: tensor %s: shape too large", path, name);
            break;
        }
        if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_is_integer(json_array_get(jo, 0)) ||
            !json_is_integer(json_array_get(jo, 1))) {
            rc = fp_errorf(FP_EPARSE, "%s: tensor %s: data_offsets must be [begin, end]", path, name);
            break;
        }
        json_int_t b = json_integer_value(json_array_get(jo, 0)), e = json_integer_value(json_array_get(jo, 1));
        if (b < 0 || e < b || (uint64_t)e > dsize) {
            rc = fp_errorf(FP_EPARSE, "%s: tensor %s: data_offsets [%lld, %lld] out of range (data section is %zu bytes)",
                           path, name, (long long)b, (long long)e, dsize);
            break;
        }
        size_t nbytes = (size_t)(e - b);
        if (nbytes != numel * esize) {
            rc = fp_errorf(FP_EPARSE, "%s: tensor %s: data_offsets span %zu bytes but %s x %zu elements need %zu", path,
                           name, nbytes, json_string_value(jd), numel, numel * esize);
            break;
        }
        const void *data = base + b;
        if ((uintptr_t)data % esize) { /* misaligned: keep an aligned private copy */
            void *copy = fp_malloc(nbytes ? nbytes : 1);
            if (!copy) { rc = FP_ENOMEM; break; }
            memcpy(copy, data, nbytes);
            if ((rc = fp_weights_adopt_buffer(w, copy))) { free(copy); break; }
            data = copy;
        }
        if (index_map) {
            json_t *f = json_object_get(index_map, name);
            if (!json_is_string(f) || strcmp(json_string_value(f), shard_name)) {
                rc = fp_errorf(FP_EPARSE, "%s: tensor %s is not mapped to this shard in model.safetensors.index.json",
                               path, name);
                break;
            }
        }
        if ((rc = fp_weights_add(w, name, dt, ndim, shape, data, nbytes))) {
            fp_error_prefix("%s: ", path);
            break;
        }
        if (nbytes) spans[ns++] = (span){(size_t)b, (size_t)e, fp_weights_at(w, fp_weights_count(w) - 1)->name};
    }
    if (!rc && ns > 1) {
        qsort(spans, ns, sizeof *spans, span_cmp);
        for (size_t i = 1; i < ns; i++)
            if (spans[i].begin < spans[i - 1].end) {
                rc = fp_errorf(FP_EPARSE, "%s: tensors %s and %s have overlapping data_offsets", path, spans[i - 1].name,
                               spans[i].name);
                break;
            }
    }
    free(spans);
    json_decref(hdr);
    return rc;
}


static int st_open_index(fp_weights *w, const char *dir, const char *index_path) {
    char *text;
    size_t len;
    int rc = fp_read_file(index_path, &text, &len);
    if (rc) return rc;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root) return fp_errorf(FP_EPARSE, "%s:%d: JSON error: %s", index_path, jerr.line, jerr.text);
    json_t *map = json_object_get(root, "weight_map");
    if (!json_is_object(map)) {
        json_decref(root);
        return fp_errorf(FP_EPARSE, "%s: no \"weight_map\" object", index_path);
    }
    /* Distinct shard files, in first-seen order. */
    json_t *done = json_object();
    const char *name;
    json_t *v;
    json_object_foreach(map, name, v) {
        if (!json_is_string(v)) { rc = fp_errorf(FP_EPARSE, "%s: weight_map[%s] is not a file name", index_path, name); break; }
        const char *shard = json_string_value(v);
        if (strchr(shard, '/') || !strcmp(shard, "..")) {
            rc = fp_errorf(FP_EPARSE, "%s: weight_map[%s] = \"%s\" is not a plain file name", index_path, name, shard);
            break;
        }
        if (json_object_get(done, shard)) continue;
        json_object_set_new(done, shard, json_true());
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, shard);
        if ((rc = st_parse_file(w, path, map, shard))) break;
    }
    if (!rc) json_object_foreach(map, name, v) {
            if (!fp_weights_get(w, name)) {
                rc = fp_errorf(FP_EPARSE, "%s: tensor %s listed in the index is missing from shard %s", index_path, name,
                               json_string_value(v));
                break;
            }
        }
    json_decref(done);
    json_decref(root);
    return rc;
}

int fp_weights_open_safetensors(fp_weights **out, const char *path) {
    if (!out || !path) return fp_errorf(FP_EINVAL, "fp_weights_open_safetensors: NULL argument");
    *out = NULL;
    fp_weights *w = fp_weights_new();
    if (!w) return FP_ENOMEM;
    int rc;
    if (fp_is_dir(path)) {
        char p[4096];
        snprintf(p, sizeof p, "%s/model.safetensors.index.json", path);
        if (fp_is_file(p)) rc = st_open_index(w, path, p);
        else {
            snprintf(p, sizeof p, "%s/model.safetensors", path);
            if (fp_is_file(p)) rc = st_parse_file(w, p, NULL, NULL);
            else rc = fp_errorf(FP_EIO, "%s: no model.safetensors or model.safetensors.index.json", path);
        }
    } else {
        size_t n = strlen(path);
        if (n >= 5 && !strcmp(path + n - 5, ".json")) {
            char dir[4096];
            snprintf(dir, sizeof dir, "%s", path);
            char *slash = strrchr(dir, '/');
            if (slash) *slash = 0;
            else snprintf(dir, sizeof dir, ".");
            rc = st_open_index(w, dir, path);
        } else rc = st_parse_file(w, path, NULL, NULL);
    }
    if (rc) { fp_weights_free(w); return rc; }
    *out = w;
    return FP_OK;
}
