/* `fluxprm serve` as a subprocess for the CLI tests: start it on --port 0, read the port it prints, stop it. */
#ifndef FP_TEST_SERVE_PROC_H
#define FP_TEST_SERVE_PROC_H
#include <signal.h>
#include <sys/wait.h>

/* Runs argv (argv[0] = the fluxprm binary) with stderr in errf and waits up to 20 s for its
 * "listening on http://127.0.0.1:PORT" line.  Returns the pid (-1 when the process already exited) and sets
 * *port (0 when no port was printed). */
__attribute__((unused)) static pid_t serve_spawn(const char *errf, char *const argv[], int *port) {
    static const char marker[] = "listening on http://127.0.0.1:";
    *port = 0;
    pid_t pid = fork();
    if (pid == 0) {
        FILE *e = freopen(errf, "w", stderr);
        (void)e;
        execv(argv[0], argv);
        _exit(127);
    }
    for (double t0 = fp_now(); !*port && fp_now() - t0 < 20; usleep(50000)) {
        char *txt;
        size_t len;
        if (fp_read_file(errf, &txt, &len) == FP_OK) {
            const char *p = strstr(txt, marker);
            if (p) *port = atoi(p + strlen(marker));
            free(txt);
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) return -1;
    }
    return pid;
}

/* SIGTERM, up to 15 s for a clean exit (then SIGKILL).  1 when the server exited with status 0. */
__attribute__((unused)) static int serve_stop(pid_t pid) {
    kill(pid, SIGTERM);
    int st = -1, got = 0;
    for (double t0 = fp_now(); !got && fp_now() - t0 < 15; usleep(20000)) got = waitpid(pid, &st, WNOHANG) == pid;
    if (!got) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
    }
    return got && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}
#endif
