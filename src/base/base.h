/* Internal helpers shared by every subsystem. */
#ifndef FP_BASE_H
#define FP_BASE_H
#include "fluxprm.h"
#include <stdarg.h>
#include <stdbool.h>

/* Records an error (printf-style) for fp_last_error() and returns code, so callers write
 *   return fp_errorf(FP_EPARSE, "%s: bad header", path); */
int fp_errorf(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefixes the current error message with a context string ("file.json: " + old message). */
int fp_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fp_error_clear(void);

/* Allocation that records FP_ENOMEM on failure (returns NULL). */
void *fp_malloc(size_t n);
void *fp_calloc(size_t n, size_t size);
void *fp_realloc(void *p, size_t n);
char *fp_strdup(const char *s);
char *fp_strndup(const char *s, size_t n);

/* Whole-file read (NUL-terminated; *len excludes the NUL). */
int fp_read_file(const char *path, char **data, size_t *len);

/* Whether path names an existing directory / regular file (symlinks followed). */
int fp_is_dir(const char *path);
int fp_is_file(const char *path);

/* Read-only memory map of a file.  fd stays open while mapped (valid when data != NULL): readers that touch
 * a few scattered rows (the embedding gather) pread them instead, so that the kernel's fault-around does not
 * map 64 KiB of neighbours per row into the process. */
typedef struct {
    void *data;
    size_t size;
    int fd;
} fp_mmap;
int fp_mmap_open(fp_mmap *m, const char *path);
void fp_mmap_close(fp_mmap *m);
/* Drops the resident pages of bytes [0, len) of a read-only map from this process (they are read again from
 * the file if touched later): for header bytes that were parsed once, so that they do not count in the RSS. */
void fp_mmap_drop_prefix(const fp_mmap *m, size_t len);

/* Per-call scratch in one anonymous mapping: a planning pass of fp_arena_take calls on an unmapped arena
 * (base NULL) only adds up the sizes, fp_arena_map maps that many bytes (prefaulted) and rewinds, and the
 * same fp_arena_take calls then hand out 64-byte aligned pieces.  fp_arena_unmap returns every page to the
 * system at once: buffers of a few MB each that malloc would keep in the heap between calls (and fragment
 * across sequence lengths) do not stay in the process's RSS. */
typedef struct {
    unsigned char *base;
    size_t size, used;
} fp_arena;
/* n bytes from the arena (NULL while planning, or when the plan was smaller: a bug, recorded as FP_EINVAL) */
void *fp_arena_take(fp_arena *a, size_t n);
int fp_arena_map(fp_arena *a); /* FP_OK or FP_ENOMEM (message set) */
void fp_arena_unmap(fp_arena *a);

/* Loads shared library soname (dlopen; kept loaded) and resolves names[0..n) into syms (dynlib.c): for the
 * dependencies only some commands use.  FP_OK, or FP_EIO with a message naming user, the library and what
 * failed (syms all NULL then). */
int fp_dynlib_resolve(const char *soname, const char *user, const char *const *names, void **syms, int n);
/* The same once per process (thread-safe): the first fp_dynlib_load resolves; later calls return its result,
 * with its message recorded again for the calling thread.  Set soname, user, names, syms and n (static). */
typedef struct {
    const char *soname, *user;
    const char *const *names;
    void **syms;
    int n;
    int tried, rc;
    char msg[512];
} fp_dynlib;
int fp_dynlib_load(fp_dynlib *lib);
/* A table of pointers to the functions FUNCS names, for fp_dynlib: FUNCS(X, p) lists X(p, name) for each
 * function p##name; FP_DYNLIB_TABLE(var, names, FUNCS, p) declares the pointers var.name (typed from the
 * headers' declarations: var.name(...) calls p##name), var.sym (the same pointers as fp_dynlib's syms),
 * names[] (the symbol names) and var##_n (their count). */
#define FP_DYNLIB_COUNT_(p, f) +1
#define FP_DYNLIB_FIELD_(p, f) __typeof__(p##f) *f;
#define FP_DYNLIB_NAME_(p, f) #p #f,
#define FP_DYNLIB_TABLE(var, names, FUNCS, p)                                                                  \
    enum { var##_n = 0 FUNCS(FP_DYNLIB_COUNT_, p) };                                                          \
    static union {                                                                                            \
        struct {                                                                                              \
            FUNCS(FP_DYNLIB_FIELD_, p)                                                                        \
        };                                                                                                    \
        void *sym[var##_n];                                                                                   \
    } var;                                                                                                    \
    static const char *const names[] = {FUNCS(FP_DYNLIB_NAME_, p)};                                           \
    _Static_assert(sizeof var == sizeof names && sizeof var.sym == sizeof var, "one pointer per function")

/* Growable byte buffer. */
typedef struct {
    char *data;
    size_t len, cap;
} fp_buf;
int fp_buf_append(fp_buf *b, const void *data, size_t n);
int fp_buf_printf(fp_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void fp_buf_free(fp_buf *b);

/* UTF-8 validation: returns the byte offset of the first invalid sequence, or -1 if valid. */
long fp_utf8_invalid_offset(const char *s, size_t n);

/* Monotonic clock in seconds. */
double fp_now(void);

#endif
