/* Integration: `fluxprm curate` with a REAL OpenAI-compatible server as judge and policy — Debian's
 * llama-server inside pyref serving the tiny random-weight Qwen2 GGUF of tiny_gguf.h (real Qwen2 tokenizer).
 * The judge's json_schema (integer 0..10) is grammar-constrained, so every step gets a strictly parsed score.
 * Templates are free text, which this planted model ends at once (<|im_end|> is its favourite token): the
 * template comes back empty, so the record states "template failed" and has no final_target, and the exit
 * status is 1 (a final_target, when one comes, must lie in [0, 1] with N rollouts; the rollout path is
 * covered against the mocks in test_curate_cli.c).  Checks: every qual present, an integer in 0..10;
 * step_targets = the softmax mix of the written components; every record without final_target says why;
 * then the same run with the server killed is served wholly from the cache (0 paid), byte-identical.
 *
 * Skips (visibly) when pyref's llama-server, the pyref script or the shared Qwen2 tokenizer is absent, or when
 * not running as root.  Environment: PYREF_ROOT, FLUXPRM_PYREF as in test_llama_server.c. */
#include "base/base.h"
#include "harness.h"
#include "tiny_gguf.h"
#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>

static char pyref[4096], model_rel[512], log_path[512], gguf_err[9000];
static int port;
static pid_t server_pid = -1;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int free_port(void) {
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

static void server_start(void) {
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

static void server_kill(void) {
    if (server_pid <= 0) return;
    kill(-server_pid, SIGKILL);
    waitpid(server_pid, NULL, 0);
    server_pid = -1;
}

static size_t discard(char *p, size_t s, size_t n, void *u) { (void)p; (void)u; return s * n; }

static int server_wait(double timeout_s) {
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/health", port);
    CURL *e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 1000L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
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

static int link_to(const char *target, const char *dir, const char *name) {
    char src[PATH_MAX], dst[1024];
    if (!realpath(target, src)) return -1;
    snprintf(dst, sizeof dst, "%s/%s", dir, name);
    return symlink(src, dst);
}

static int run_curate(const char *encdir, const char *cache, const char *out) {
    char cmd[8192], in[512];
    snprintf(in, sizeof in, "%s/in.jsonl", th_tmpdir());
    FILE *f = fopen(in, "w");
    if (!f) return -1;
    fputs("{\"id\":1,\"question\":\"What is 2 + 3?\",\"thinking\":\"Add them.\\n\\n2 + 3 = 5.\\n\\nCheck: 5 - 3 = 2.\",\"response\":\"2 + 3 = 5.\\n\\n\\\\boxed{5}\",\"gold\":\"5\"}\n", f);
    fputs("{\"id\":2,\"question\":\"Solve 2x = 10.\",\"thinking\":\"Divide by 2.\\n\\nx = 5.\",\"response\":\"x = 10 / 2.\\n\\nx = 5.\"}\n", f);
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "%s curate --embed-model %s --judge-url http://127.0.0.1:%d --judge-model tiny --integer-scores "
             "--max-tokens 24 --template-max-tokens 8 --rollout-max-tokens 8 --rollouts 2 --negatives 2 "
             "--concurrency 2 --retries 1 --timeout 60 --api-key-env FLUXPRM_TEST_UNSET --cache %s --skip-bad "
             "-o %s %s 2>%s.err",
             th_bin(), encdir, port, cache, out, in, out);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int test_curate_llama_server(void) {
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
    static char tok[8192], tokcfg_copy[8192];
    snprintf(tok, sizeof tok, "%s", tok_path);
    const char *tokcfg = th_shared_file("tokenizer/qwen2/tokenizer_config.json");
    snprintf(tokcfg_copy, sizeof tokcfg_copy, "%s", tokcfg ? tokcfg : "");

    char encdir[512];
    snprintf(encdir, sizeof encdir, "%s/enc", th_tmpdir());
    mkdir(encdir, 0755);
    CHECK(!link_to("tests/ref/score/config_causal.json", encdir, "config.json") &&
          !link_to("tests/ref/score/trunk.safetensors", encdir, "model.safetensors") &&
          !link_to(tok, encdir, "tokenizer.json"));
    snprintf(model_rel, sizeof model_rel, "%s/tiny-qwen2.gguf", th_tmpdir());
    snprintf(log_path, sizeof log_path, "%s/llama-server.log", th_tmpdir());
    if (tiny_gguf_write(model_rel, tok, tokcfg_copy[0] ? tokcfg_copy : NULL, gguf_err, sizeof gguf_err)) {
        printf("  SKIP: cannot make a tiny GGUF: %s\n", gguf_err);
        return TH_SKIP;
    }
    port = free_port();
    CHECK(port > 0);
    double t0 = now_s();
    server_start();
    if (!server_wait(120)) {
        CHECK_MSG(0, "llama-server did not become healthy on port %d", port);
        server_kill();
        return 0;
    }
    printf("  llama-server up after %.1f s\n", now_s() - t0);
    char out[512], out2[512], cache[512];
    snprintf(out, sizeof out, "%s/targets.jsonl", th_tmpdir());
    snprintf(out2, sizeof out2, "%s/targets2.jsonl", th_tmpdir());
    snprintf(cache, sizeof cache, "%s/cache", th_tmpdir());
    t0 = now_s();
    int rc = run_curate(encdir, cache, out);
    printf("  curate against llama-server: exit %d in %.1f s\n", rc, now_s() - t0);
    CHECK(rc == 0 || rc == 1); /* 1 when a free-text template came back empty (noted per record) */
    fp_jsonl_reader *r;
    CHECK_OK(fp_jsonl_open(&r, out));
    const char *line;
    size_t len;
    int n = 0, finals = 0;
    while (r && fp_jsonl_next_line(r, &line, &len) == FP_OK) {
        json_t *o = json_loadb(line, len, 0, NULL);
        n++;
        if (json_object_get(o, "error")) { json_decref(o); continue; }
        json_t *comp = json_object_get(o, "step_components"), *tg = json_object_get(o, "step_targets");
        json_t *js = json_object_get(json_object_get(o, "step_raw"), "judge_score");
        for (size_t t = 0; t < json_array_size(tg); t++) {
            double q = json_number_value(json_array_get(js, t));
            CHECK_MSG(json_is_number(json_array_get(js, t)) && q >= 0 && q <= 10 && q == floor(q), "line %d step %zu", n, t);
            double c[3], z = 0, mix = 0;
            static const char *const names[3] = {"align", "coh", "qual"};
            for (int k = 0; k < 3; k++) {
                json_t *v = json_array_get(json_object_get(comp, names[k]), t);
                c[k] = json_is_number(v) ? json_number_value(v) : NAN;
            }
            for (int k = 0; k < 3; k++) if (!isnan(c[k])) z += exp(c[k]);
            for (int k = 0; k < 3; k++) if (!isnan(c[k])) mix += exp(c[k]) / z * c[k];
            CHECK_NEAR(json_number_value(json_array_get(tg, t)), mix, 1e-6);
        }
        json_t *fin = json_object_get(o, "final_target");
        if (fin) {
            finals++;
            CHECK(json_number_value(fin) >= 0 && json_number_value(fin) <= 1);
            CHECK(json_integer_value(json_object_get(json_object_get(o, "rollouts"), "n")) == 2);
        } else {
            json_t *notes = json_object_get(o, "curate_notes");
            CHECK(notes != NULL); /* says why */
            if (n == 1 && notes) {
                char *d = json_dumps(notes, 0);
                printf("  record 1 has no final_target: %s\n", d);
                free(d);
            }
        }
        json_decref(o);
    }
    fp_jsonl_close(r);
    CHECK(n == 2);
    printf("  %d records, %d with a final_target\n", n, finals);
    /* server down: the same run is answered from the cache, same bytes */
    server_kill();
    int rc2 = run_curate(encdir, cache, out2);
    CHECK(rc2 == rc);
    char *a = NULL, *b = NULL, *err = NULL;
    size_t la = 0, lb = 0, le = 0;
    CHECK_OK(fp_read_file(out, &a, &la));
    CHECK_OK(fp_read_file(out2, &b, &lb));
    CHECK(a && b && la == lb && !memcmp(a, b, la));
    char ep[600];
    snprintf(ep, sizeof ep, "%s.err", out2);
    if (fp_read_file(ep, &err, &le) == FP_OK) {
        const char *j = strstr(err, "curate: judge: requests");
        long req = 0, hits = -1, paid = -1;
        CHECK_MSG(j && sscanf(j, "curate: judge: requests %ld (cache hits %ld, paid %ld", &req, &hits, &paid) == 3 &&
                      paid == 0 && hits > 0,
                  "%s", err);
    }
    free(a);
    free(b);
    free(err);
    if (getenv("FLUXPRM_KEEP")) return 0;
    unlink(model_rel);
    return 0;
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    RUN(test_curate_llama_server);
    server_kill();
    return th_finish();
}
