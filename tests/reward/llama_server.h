/* A REAL OpenAI-compatible server for the integration tests: Debian's llama-server run inside pyref, serving the
 * tiny random-weight Qwen2 GGUF of tiny_gguf.h (with the real Qwen2 tokenizer) on a free port of 127.0.0.1.
 *
 * llama_setup() skips (visibly) when pyref's llama-server, the pyref script or the shared Qwen2 tokenizer is
 * absent, or when not running as root (pyref uses chroot/unshare).  Environment: PYREF_ROOT (default
 * /var/cache/pyref-sid), FLUXPRM_PYREF (the pyref script; default ../shared/tools/pyref).  Include after
 * harness.h. */
#ifndef FP_TEST_LLAMA_SERVER_H
#define FP_TEST_LLAMA_SERVER_H
#include "tiny_gguf.h"
#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char pyref[4096], model_rel[512], log_path[512], gguf_err[9000];
static char llama_tok[8192], llama_tokcfg[8192]; /* the shared tokenizer.json, tokenizer_config.json ("" if absent) */
static int port;
static pid_t server_pid = -1;

__attribute__((unused)) static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Checks what the server needs and finds the shared Qwen2 tokenizer files: 0, or TH_SKIP (said why). */
__attribute__((unused)) static int llama_setup(void) {
    const char *root = getenv("PYREF_ROOT") ? getenv("PYREF_ROOT") : "/var/cache/pyref-sid";
    char bin[4096];
    snprintf(bin, sizeof bin, "%s/usr/bin/llama-server", root);
    const char *shared = th_shared();
    snprintf(pyref, sizeof pyref, "%s", getenv("FLUXPRM_PYREF") ? getenv("FLUXPRM_PYREF") : "");
    if (!pyref[0] && shared) snprintf(pyref, sizeof pyref, "%s/tools/pyref", shared);
    if (access(bin, X_OK) != 0) { printf("  SKIP: no llama-server at %s (run: pyref setup)\n", bin); return TH_SKIP; }
    if (!pyref[0] || access(pyref, R_OK) != 0) { printf("  SKIP: no pyref script (set FLUXPRM_PYREF)\n"); return TH_SKIP; }
    if (geteuid() != 0) { printf("  SKIP: pyref needs root (chroot/unshare)\n"); return TH_SKIP; }
    REQUIRE_SHARED(tok_path, "tokenizer/qwen2/tokenizer.json");
    snprintf(llama_tok, sizeof llama_tok, "%s", tok_path); /* th_shared_file returns one static buffer */
    const char *tokcfg = th_shared_file("tokenizer/qwen2/tokenizer_config.json");
    snprintf(llama_tokcfg, sizeof llama_tokcfg, "%s", tokcfg ? tokcfg : "");
    return 0;
}

/* Writes the tiny GGUF (model_rel) and names the server's log: 0, or TH_SKIP (said why). */
__attribute__((unused)) static int llama_write_model(void) {
    /* the model must live under the repository (pyref mounts the cwd at /work): a relative path */
    snprintf(model_rel, sizeof model_rel, "%s/tiny-qwen2.gguf", th_tmpdir());
    snprintf(log_path, sizeof log_path, "%s/llama-server.log", th_tmpdir());
    if (tiny_gguf_write(model_rel, llama_tok, llama_tokcfg[0] ? llama_tokcfg : NULL, gguf_err, sizeof gguf_err)) {
        printf("  SKIP: cannot make a tiny GGUF: %s\n", gguf_err);
        return TH_SKIP;
    }
    return 0;
}

__attribute__((unused)) static int free_port(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (s < 0 || bind(s, (struct sockaddr *)&sa, sizeof sa) || getsockname(s, (struct sockaddr *)&sa, &len)) {
        if (s >= 0) close(s);
        return 0;
    }
    close(s);
    return ntohs(sa.sin_port);
}

/* Starts llama-server on port in its own process group (so the whole pyref chain can be killed at once). */
__attribute__((unused)) static void server_start(void) {
    char portbuf[16];
    snprintf(portbuf, sizeof portbuf, "%d", port);
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) { dup2(fd, 1); dup2(fd, 2); close(fd); }
        execl("/bin/sh", "sh", pyref, "exec", "llama-server", "-m", model_rel, "--host", "127.0.0.1", "--port", portbuf,
              "-c", "4096", "-np", "2", "-t", "2", "--no-webui", "--reasoning", "off", (char *)NULL);
        _exit(127);
    }
    setpgid(pid, pid);
    server_pid = pid;
}

__attribute__((unused)) static void server_kill(void) {
    if (server_pid <= 0) return;
    kill(-server_pid, SIGKILL);
    waitpid(server_pid, NULL, 0);
    server_pid = -1;
}

static size_t llama_discard(char *p, size_t s, size_t n, void *u) { (void)p; (void)u; return s * n; }

/* Polls GET /health until 200: 1, or 0 after timeout_s or when the server exits. */
__attribute__((unused)) static int server_wait(double timeout_s) {
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/health", port);
    CURL *e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 1000L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, llama_discard);
    double t0 = now_s();
    int ok = 0;
    while (now_s() - t0 < timeout_s) {
        long code = 0;
        if (curl_easy_perform(e) == CURLE_OK) curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
        if (code == 200) { ok = 1; break; }
        if (server_pid > 0 && waitpid(server_pid, NULL, WNOHANG) == server_pid) { server_pid = -1; break; }
        usleep(200000);
    }
    curl_easy_cleanup(e);
    return ok;
}

/* Picks a free port (CHECKed) and starts the server there: server_wait(timeout_s)'s answer. */
__attribute__((unused)) static int server_launch(double timeout_s) {
    port = free_port();
    CHECK(port > 0);
    server_start();
    return server_wait(timeout_s);
}

/* The last lines of the server's log, indented, on stdout. */
__attribute__((unused)) static void show_log(void) {
    char cmd[700];
    snprintf(cmd, sizeof cmd, "tail -n 15 %s | sed 's/^/    server: /'", log_path);
    if (system(cmd)) {}
}
#endif
