/* Libraries only some commands need (libcurl: the judge client; libmicrohttpd: the reward server) are loaded
 * on first use rather than linked: every other command (score, select, train, bench) would otherwise map them
 * and their TLS stacks, ~7 MB of RSS and ~40 shared objects relocated at start-up. */
#include "base/base.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

int fp_dynlib_resolve(const char *soname, const char *user, const char *const *names, void **syms, int n) {
    void *h = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *why = dlerror();
        return fp_errorf(FP_EIO, "%s needs %s, which cannot be loaded (%s); install it (scripts/install-deps.sh)",
                         user, soname, why ? why : "not found");
    }
    for (int i = 0; i < n; i++) {
        (void)dlerror();
        syms[i] = dlsym(h, names[i]);
        if (!syms[i]) {
            const char *why = dlerror();
            for (int j = 0; j < n; j++) syms[j] = NULL;
            /* the message first: dlclose frees dlerror's string */
            int rc = fp_errorf(FP_EIO, "%s: %s has no symbol %s (%s)", user, soname, names[i], why ? why : "NULL");
            dlclose(h);
            return rc;
        }
    }
    return FP_OK; /* the handle stays open for the life of the process */
}

static pthread_mutex_t load_mu = PTHREAD_MUTEX_INITIALIZER;

int fp_dynlib_load(fp_dynlib *lib) {
    pthread_mutex_lock(&load_mu);
    if (!lib->tried) {
        lib->rc = fp_dynlib_resolve(lib->soname, lib->user, lib->names, lib->syms, lib->n);
        if (lib->rc) snprintf(lib->msg, sizeof lib->msg, "%s", fp_last_error());
        lib->tried = 1;
    }
    int rc = lib->rc;
    pthread_mutex_unlock(&load_mu);
    return rc ? fp_errorf(rc, "%s", lib->msg) : FP_OK; /* the first failure's message, in this thread */
}
