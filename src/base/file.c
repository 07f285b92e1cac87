/* Files: whole reads, read-only maps, and atomic (temp + rename) output. */
#include "base/base.h"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

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
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fp_errorf(FP_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) { close(fd); return fp_errorf(FP_EIO, "%s: cannot stat: %s", path, strerror(errno)); }
    if (!S_ISREG(st.st_mode)) { close(fd); return fp_errorf(FP_EIO, "%s: not a regular file", path); }
    m->size = (size_t)st.st_size;
    if (m->size == 0) { close(fd); return FP_OK; }
    void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) { m->size = 0; return fp_errorf(FP_EIO, "%s: mmap failed: %s", path, strerror(errno)); }
    m->data = p;
    return FP_OK;
}

void fp_mmap_close(fp_mmap *m) {
    if (m->data) munmap(m->data, m->size);
    m->data = NULL;
    m->size = 0;
}

struct fp_outfile {
    FILE *f;
    char *path, *tmp;
};

int fp_outfile_open(fp_outfile **out, const char *path, int append_from_existing) {
    *out = NULL;
    fp_outfile *o = fp_calloc(1, sizeof *o);
    if (!o) return FP_ENOMEM;
    if (!path || !strcmp(path, "-")) {
        o->f = stdout;
        *out = o;
        return FP_OK;
    }
    o->path = fp_strdup(path);
    size_t n = strlen(path) + 32;
    o->tmp = fp_malloc(n);
    if (!o->path || !o->tmp) { free(o->path); free(o->tmp); free(o); return FP_ENOMEM; }
    snprintf(o->tmp, n, "%s.tmp.%ld", path, (long)getpid());
    o->f = fopen(o->tmp, "wb");
    if (!o->f) {
        int e = fp_errorf(FP_EIO, "%s: cannot create: %s", o->tmp, strerror(errno));
        free(o->path); free(o->tmp); free(o);
        return e;
    }
    if (append_from_existing) {
        /* Resume: start the new file with the complete lines of the old one (a torn last line is dropped). */
        FILE *old = fopen(path, "rb");
        if (old) {
            char *line = NULL;
            size_t cap = 0;
            ssize_t len;
            while ((len = getline(&line, &cap, old)) > 0) {
                if (line[len - 1] != '\n') break;
                fwrite(line, 1, (size_t)len, o->f);
            }
            free(line);
            fclose(old);
        }
    }
    *out = o;
    return FP_OK;
}

FILE *fp_outfile_stream(fp_outfile *o) { return o->f; }

int fp_outfile_commit(fp_outfile *o) {
    int rc = FP_OK;
    if (!o->path) {
        if (fflush(o->f) != 0) rc = fp_errorf(FP_EIO, "stdout: write failed: %s", strerror(errno));
        free(o);
        return rc;
    }
    if (fflush(o->f) != 0 || fsync(fileno(o->f)) != 0)
        rc = fp_errorf(FP_EIO, "%s: write failed: %s", o->tmp, strerror(errno));
    if (fclose(o->f) != 0 && rc == FP_OK) rc = fp_errorf(FP_EIO, "%s: close failed: %s", o->tmp, strerror(errno));
    if (rc == FP_OK && rename(o->tmp, o->path) != 0)
        rc = fp_errorf(FP_EIO, "%s: cannot rename into place: %s", o->path, strerror(errno));
    if (rc != FP_OK) unlink(o->tmp);
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
