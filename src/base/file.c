/* Files: whole reads, read-only maps, and atomic (temp + rename) output. */
#include "base/base.h"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int fp_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int fp_is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int fp_read_file(const char *path, char **data, size_t *len) {
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return fp_errorf(FP_EIO, "%s: cannot open: %s", path, strerror(errno));
    fp_buf b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (fp_buf_append(&b, chunk, n)) { fclose(f); fp_buf_free(&b); return FP_ENOMEM; }
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { fp_buf_free(&b); return fp_errorf(FP_EIO, "%s: read error", path); }
    if (fp_buf_append(&b, "", 0)) return FP_ENOMEM;
    *data = b.data;
    *len = b.len;
    return FP_OK;
}

int fp_mmap_open(fp_mmap *m, const char *path) {
    m->data = NULL;
    m->size = 0;
    m->fd = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fp_errorf(FP_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) { close(fd); return fp_errorf(FP_EIO, "%s: cannot stat: %s", path, strerror(errno)); }
    if (!S_ISREG(st.st_mode)) { close(fd); return fp_errorf(FP_EIO, "%s: not a regular file", path); }
    m->size = (size_t)st.st_size;
    if (m->size == 0) { close(fd); return FP_OK; }
    void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
        close(fd);
        m->size = 0;
        return fp_errorf(FP_EIO, "%s: mmap failed: %s", path, strerror(errno));
    }
    m->data = p;
    m->fd = fd;
    return FP_OK;
}

void fp_mmap_drop_prefix(const fp_mmap *m, size_t len) {
    if (!m->data || len > m->size) return;
    long page = sysconf(_SC_PAGESIZE);
    len -= page > 0 ? len % (size_t)page : 0; /* whole pages only: the rest shares a page with data in use */
    if (len) (void)madvise(m->data, len, MADV_DONTNEED); /* advisory: a refusal only costs RSS */
}

void *fp_arena_take(fp_arena *a, size_t n) {
    size_t at = a->used;
    a->used += (n + 63) & ~(size_t)63;
    if (!a->base) return NULL;
    if (a->used > a->size) {
        fp_errorf(FP_EINVAL, "scratch arena: %zu bytes asked beyond its %zu", a->used, a->size);
        return NULL;
    }
    return a->base + at;
}

int fp_arena_map(fp_arena *a) {
    size_t n = a->used ? a->used : 64;
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) {
        a->base = NULL;
        return fp_errorf(FP_ENOMEM, "out of memory mapping %zu bytes of scratch", n);
    }
    a->base = p;
    a->size = n;
    a->used = 0;
    return FP_OK;
}

void fp_arena_unmap(fp_arena *a) {
    if (a->base) munmap(a->base, a->size);
    a->base = NULL;
    a->size = a->used = 0;
}

void fp_mmap_close(fp_mmap *m) {
    if (m->data) {
        munmap(m->data, m->size);
        if (m->fd >= 0) close(m->fd);
    }
    m->fd = -1;
    m->data = NULL;
    m->size = 0;
}

struct fp_outfile {
    FILE *f;
    char *path, *tmp;
    long resumed_lines;
};

/* Keeps the complete lines of an existing file (a torn last line from a killed run is cut off) and counts them. */
static int keep_complete_lines(FILE *f, const char *name, long *lines) {
    *lines = 0;
    char buf[65536];
    size_t n;
    off_t pos = 0, good = 0;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        for (size_t i = 0; i < n; i++)
            if (buf[i] == '\n') { (*lines)++; good = pos + (off_t)i + 1; }
        pos += (off_t)n;
    }
    if (ferror(f)) return fp_errorf(FP_EIO, "%s: read error", name);
    if (fflush(f) != 0 || ftruncate(fileno(f), good) != 0 || fseeko(f, good, SEEK_SET) != 0)
        return fp_errorf(FP_EIO, "%s: cannot truncate: %s", name, strerror(errno));
    return FP_OK;
}

int fp_outfile_open(fp_outfile **out, const char *path, int resume) {
    *out = NULL;
    fp_outfile *o = fp_calloc(1, sizeof *o);
    if (!o) return FP_ENOMEM;
    if (!path || !strcmp(path, "-")) {
        if (resume) { free(o); return fp_errorf(FP_EINVAL, "resuming needs an output file, not stdout"); }
        o->f = stdout;
        *out = o;
        return FP_OK;
    }
    o->path = fp_strdup(path);
    size_t n = strlen(path) + 16;
    o->tmp = fp_malloc(n);
    int rc = FP_ENOMEM;
    if (!o->path || !o->tmp) goto fail;
    snprintf(o->tmp, n, "%s.partial", path);
    if (resume && access(o->tmp, F_OK) != 0 && access(path, F_OK) == 0) {
        /* a finished earlier run: continue from its output (usually nothing is left to do) */
        char *data;
        size_t len;
        if ((rc = fp_read_file(path, &data, &len))) goto fail;
        FILE *t = fopen(o->tmp, "wb");
        int bad = !t || fwrite(data, 1, len, t) != len;
        if (t && fclose(t) != 0) bad = 1;
        free(data);
        if (bad) { rc = fp_errorf(FP_EIO, "%s: cannot write: %s", o->tmp, strerror(errno)); goto fail; }
    }
    int fd = open(o->tmp, O_RDWR | O_CREAT | O_CLOEXEC | (resume ? 0 : O_TRUNC), 0644);
    if (fd < 0) { rc = fp_errorf(FP_EIO, "%s: cannot create: %s", o->tmp, strerror(errno)); goto fail; }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        rc = fp_errorf(FP_EIO, "%s: in use by another fluxprm process", o->tmp);
        goto fail;
    }
    if (!resume && ftruncate(fd, 0) != 0) { close(fd); rc = fp_errorf(FP_EIO, "%s: cannot truncate", o->tmp); goto fail; }
    o->f = fdopen(fd, "r+b");
    if (!o->f) { close(fd); rc = fp_errorf(FP_EIO, "%s: cannot open: %s", o->tmp, strerror(errno)); goto fail; }
    if (resume && (rc = keep_complete_lines(o->f, o->tmp, &o->resumed_lines))) { fclose(o->f); goto fail; }
    *out = o;
    return FP_OK;
fail:
    free(o->path);
    free(o->tmp);
    free(o);
    return rc;
}

FILE *fp_outfile_stream(fp_outfile *o) { return o->f; }
long fp_outfile_resumed_lines(const fp_outfile *o) { return o->resumed_lines; }

int fp_outfile_commit(fp_outfile *o) {
    int rc = FP_OK;
    if (!o->path) {
        if (fflush(o->f) != 0) rc = fp_errorf(FP_EIO, "stdout: write failed: %s", strerror(errno));
        free(o);
        return rc;
    }
    if (fflush(o->f) != 0 || fsync(fileno(o->f)) != 0)
        rc = fp_errorf(FP_EIO, "%s: write failed: %s", o->tmp, strerror(errno));
    if (rc == FP_OK && rename(o->tmp, o->path) != 0)
        rc = fp_errorf(FP_EIO, "%s: cannot rename into place: %s", o->path, strerror(errno));
    if (fclose(o->f) != 0 && rc == FP_OK) rc = fp_errorf(FP_EIO, "%s: close failed: %s", o->path, strerror(errno));
    free(o->path);
    free(o->tmp);
    free(o);
    return rc;
}

void fp_outfile_abort(fp_outfile *o) {
    if (!o) return;
    if (o->path) {
        fclose(o->f);
        unlink(o->tmp);
    } else {
        fflush(o->f);
    }
    free(o->path);
    free(o->tmp);
    free(o);
}

void fp_outfile_keep_partial(fp_outfile *o) {
    if (!o) return;
    if (o->path) fclose(o->f); /* "<path>.partial" stays for --resume */
    else fflush(o->f);
    free(o->path);
    free(o->tmp);
    free(o);
}
