/* Integration: the judge against a REAL OpenAI-compatible server, Debian's llama-server run inside pyref, serving
 * a tiny random-weight Qwen2 GGUF with the real Qwen2 tokenizer (written by tiny_gguf.h).  json_schema
 * response_format makes llama-server grammar-constrain the output, so even random weights answer
 * {"score": n}; the reply is parsed strictly.  Then the server is killed in the middle of a batch and
 * restarted: every request is answered, answers already received come from the cache, and no answer is paid
 * for twice.  A last run with the server down is served entirely from the cache.
 *
 * Skips (visibly) when pyref's llama-server or the shared Qwen2 tokenizer is absent.  Needs root (pyref uses
 * chroot/unshare).  Environment: PYREF_ROOT (default /var/cache/pyref-sid), FLUXPRM_PYREF (the pyref script;
 * default ../shared/tools/pyref). */
#include "fluxprm.h"
#include "harness.h"
#include "tiny_gguf.h"
#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static char pyref[4096], model_rel[512], log_path[512];
static char gguf_err[9000];
static int port;
static pid_t server_pid = -1;

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

/* Starts llama-server in its own process group (so the whole pyref chain can be killed at once). */
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

/* Polls GET /health until 200. */
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

static void show_log(void) {
    char cmd[700];
    snprintf(cmd, sizeof cmd, "tail -n 15 %s | sed 's/^/    server: /'", log_path);
    if (system(cmd)) {}
}

typedef struct {
    fp_judge *j;
    const fp_judge_traj *t;
    size_t n;
    fp_judge_score *out;
    int rc;
} batch_arg;

static void *run_batch(void *p) {
    batch_arg *a = p;
    a->rc = fp_judge_step_scores(a->j, a->t, a->n, a->out);
    return NULL;
}

static int scores_ok(const fp_judge_score *s, size_t n) {
    int ok = 1;
    for (size_t i = 0; i < n; i++) {
        CHECK_MSG(s[i].status == FP_OK && s[i].score >= 0 && s[i].score <= 10, "score %zu: %s", i,
                  s[i].error ? s[i].error : "?");
        if (s[i].status != FP_OK) ok = 0;
    }
    return ok;
}

static int test_llama_server(void) {
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
    static char tok[8192], tokcfg_copy[8192]; /* th_shared_file returns one static buffer */
    snprintf(tok, sizeof tok, "%s", tok_path);
    const char *tokcfg = th_shared_file("tokenizer/qwen2/tokenizer_config.json");
    snprintf(tokcfg_copy, sizeof tokcfg_copy, "%s", tokcfg ? tokcfg : "");

    /* the model must live under the repository (pyref mounts the cwd at /work): a relative path */
    snprintf(model_rel, sizeof model_rel, "%s/tiny-qwen2.gguf", th_tmpdir());
    snprintf(log_path, sizeof log_path, "%s/llama-server.log", th_tmpdir());
    double t0 = now_s();
    if (tiny_gguf_write(model_rel, tok, tokcfg_copy[0] ? tokcfg_copy : NULL, gguf_err, sizeof gguf_err)) {
        printf("  SKIP: cannot make a tiny GGUF: %s\n", gguf_err);
        return TH_SKIP;
    }
    port = free_port();
    CHECK(port > 0);
    server_start();
    if (!server_wait(120)) {
        CHECK_MSG(0, "llama-server did not become healthy on port %d", port);
        show_log();
        server_kill();
        return 0;
    }
    printf("  llama-server up on 127.0.0.1:%d after %.1f s\n", port, now_s() - t0);

    char url[64], cache[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    snprintf(cache, sizeof cache, "%s/judge-cache", th_tmpdir());
    fp_openai_opts o;
    fp_openai_opts_default(&o);
    o.base_url = url;
    o.cache_dir = cache;
    o.concurrency = 2;
    o.max_retries = 100;
    o.timeout_s = 60;
    o.connect_timeout_s = 2;
    o.backoff_base_s = 0.1;
    o.backoff_max_s = 0.5;
    o.api_key_env = "FLUXPRM_TEST_UNSET_KEY";
    fp_openai_client *c = NULL;
    CHECK_OK(fp_openai_client_new(&c, &o));
    fp_judge_opts jo;
    fp_judge_opts_default(&jo);
    jo.model = "tiny-qwen2";
    jo.integer_scores = 1;
    jo.max_tokens = 24;
    jo.template_max_tokens = 8;
    fp_judge *j = NULL;
    CHECK_OK(fp_judge_new(&j, c, &jo)); /* the shipped prompts/judge_step.txt and judge_template.txt */
    if (!j) { server_kill(); fp_openai_client_free(c); return 0; }

    /* Run A: two steps, json_schema accepted, strict parsing. */
    const char *sa[] = {"Add the numbers: 2 + 3.", "2 + 3 = 5, so the answer is 5."};
    fp_judge_traj ta = {"What is 2 + 3?", sa, 2, "The answer is 5."};
    fp_judge_score outa[2];
    double t1 = now_s();
    CHECK_OK(fp_judge_step_scores(j, &ta, 1, outa));
    scores_ok(outa, 2);
    CHECK(fp_judge_format(j) == FP_JUDGE_FORMAT_AUTO);
    fp_openai_stats s;
    fp_openai_client_stats(c, &s);
    CHECK_MSG(s.successes == 2 && s.retries == 0 && s.prompt_tokens > 100 && s.completion_tokens > 0,
              "ok %ld retries %ld tokens %ld/%ld", s.successes, s.retries, s.prompt_tokens, s.completion_tokens);
    printf("  run A: scores %g %g in %.1f s (%ld prompt + %ld completion tokens)\n", outa[0].score, outa[1].score,
           now_s() - t1, s.prompt_tokens, s.completion_tokens);
    /* a template request (free text, a few tokens): answered, or a clear "empty template" error */
    char *tmpl = NULL;
    int tst = -1;
    int trc = fp_judge_templates(j, &ta, 1, &tmpl, &tst);
    CHECK_MSG(trc == FP_OK || trc == FP_EPARSE, "template: %s", fp_last_error());
    CHECK(trc != FP_OK || (tmpl && *tmpl));
    free(tmpl);
    fp_openai_client_stats(c, &s);
    long paid_before_b = s.successes, hits_before_b = s.cache_hits;

    /* Run B: the two answered steps again + four new ones; the server is killed after the first new answer and
     * restarted a moment later. */
    const char *sb[] = {"Let x be the unknown.", "Then 2x = 10.", "Divide by 2: x = 5.", "Check: 2 * 5 = 10."};
    fp_judge_traj tb[2] = {ta, {"Solve 2x = 10.", sb, 4, "x = 5"}};
    fp_judge_score outb[6];
    batch_arg arg = {j, tb, 2, outb, -1};
    pthread_t th;
    t1 = now_s();
    pthread_create(&th, NULL, run_batch, &arg);
    while (now_s() - t1 < 120) {
        fp_openai_client_stats(c, &s);
        if (s.successes > paid_before_b) break;
        usleep(20000);
    }
    CHECK_MSG(s.successes - paid_before_b < 4, "the kill came late: %ld answers already", s.successes - paid_before_b);
    server_kill();
    printf("  run B: killed the server after the first new answer (%.1f s)\n", now_s() - t1);
    usleep(1500000);
    server_start();
    int up = server_wait(120);
    CHECK_MSG(up, "llama-server did not come back");
    if (!up) show_log();
    pthread_join(th, NULL);
    CHECK_MSG(arg.rc == FP_OK, "run B: %s", fp_last_error());
    scores_ok(outb, 6);
    for (int i = 0; i < 2; i++) CHECK(outb[i].score == outa[i].score); /* the cached answers */
    fp_openai_stats sb_stats;
    fp_openai_client_stats(c, &sb_stats);
    long paid = sb_stats.successes - paid_before_b;
    printf("  run B: done in %.1f s: %ld answers paid, %ld cache hits, %ld retries, %ld attempts\n", now_s() - t1,
           paid, sb_stats.cache_hits - hits_before_b, sb_stats.retries, sb_stats.attempts);
    CHECK_MSG(paid == 4, "run B paid %ld answers (expected 4: nothing twice)", paid);
    CHECK(sb_stats.cache_hits - hits_before_b == 2);
    CHECK_MSG(sb_stats.retries >= 1, "the kill caused no retry");
    CHECK(sb_stats.failures == 0);
    long total_paid = sb_stats.successes;

    /* Run C: server down, a fresh client on the same cache: everything from disk, no network. */
    server_kill();
    fp_judge_free(j);
    fp_openai_client_free(c);
    CHECK_OK(fp_openai_client_new(&c, &o));
    CHECK_OK(fp_judge_new(&j, c, &jo));
    fp_judge_score outc[6];
    CHECK_OK(fp_judge_step_scores(j, tb, 2, outc));
    for (int i = 0; i < 6; i++) CHECK(outc[i].status == FP_OK && outc[i].score == outb[i].score);
    fp_openai_client_stats(c, &s);
    CHECK(s.cache_hits == 6 && s.attempts == 0 && s.successes == 0);
    printf("  run C: server down, 6/6 from the cache; %ld answers paid in all for %d distinct requests\n", total_paid,
           2 + 1 + 4);
    CHECK(total_paid == 2 + 1 + 4); /* run A, the template, run B's new steps */
    for (int i = 0; i < 6; i++) { fp_judge_score_clear(&outb[i]); fp_judge_score_clear(&outc[i]); }
    for (int i = 0; i < 2; i++) fp_judge_score_clear(&outa[i]);
    fp_judge_free(j);
    fp_openai_client_free(c);
    unlink(model_rel); /* 45 MB */
    return 0;
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    RUN(test_llama_server);
    server_kill();
    return th_finish();
}
