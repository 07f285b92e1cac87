/* Load client for `fluxprm serve`: N POST /get_reward requests, C in flight (libcurl multi), each a batch of
 * B OpenRLHF queries drawn from a small fixed set; prints throughput and latency percentiles.
 * usage: load URL [N=2000] [C=64] [B=2] */
#include <curl/curl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static size_t discard(char *p, size_t sz, size_t n, void *ud) {
    (void)p, (void)ud;
    return sz * n;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static const char *prompts[] = {"What is 2+2?", "Solve x^2 = 4 for x > 0.", "Compute 7*6.", "How many primes are below 10?"};
static const char *responses[] = {
    "2+2=4\\n\\nThe answer is \\\\boxed{4}", "We take square roots.\\n\\nSo x = 2.\\n\\n\\\\boxed{2}",
    "7*6 = 42\\n\\nSo the answer is \\\\boxed{42}", "2, 3, 5 and 7 are prime.\\n\\nThere are \\\\boxed{4}."};
static const char *labels[] = {"4", "2", "42", "4"};

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: load URL [N] [C] [B]\n"); return 2; }
    const char *url = argv[1];
    int N = argc > 2 ? atoi(argv[2]) : 2000, C = argc > 3 ? atoi(argv[3]) : 64, B = argc > 4 ? atoi(argv[4]) : 2;
    if (N < 1 || C < 1 || B < 1) { fprintf(stderr, "load: bad arguments\n"); return 2; }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    char **bodies = calloc((size_t)N, sizeof *bodies);
    double *start = calloc((size_t)N, sizeof *start), *lat = calloc((size_t)N, sizeof *lat);
    CURL **easy = calloc((size_t)N, sizeof *easy);
    for (int i = 0; i < N; i++) {
        size_t cap = 256 + (size_t)B * 512;
        char *b = malloc(cap);
        size_t n = (size_t)snprintf(b, cap, "{\"query\":[");
        for (int k = 0; k < B; k++) {
            int j = (i + k) % 4;
            n += (size_t)snprintf(b + n, cap - n, "%s\"%s%s\"", k ? "," : "", prompts[j], responses[j]);
        }
        n += (size_t)snprintf(b + n, cap - n, "],\"prompts\":[");
        for (int k = 0; k < B; k++) n += (size_t)snprintf(b + n, cap - n, "%s\"%s\"", k ? "," : "", prompts[(i + k) % 4]);
        n += (size_t)snprintf(b + n, cap - n, "],\"labels\":[");
        for (int k = 0; k < B; k++) n += (size_t)snprintf(b + n, cap - n, "%s\"%s\"", k ? "," : "", labels[(i + k) % 4]);
        snprintf(b + n, cap - n, "]}");
        bodies[i] = b;
    }
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)C);
    int next = 0, done = 0, failed = 0, running;
    double t0 = now();
    while (done < N) {
        while (next < N && next - done < C) {
            CURL *e = curl_easy_init();
            easy[next] = e;
            curl_easy_setopt(e, CURLOPT_URL, url);
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, bodies[next]);
            curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
            curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
            curl_easy_setopt(e, CURLOPT_TIMEOUT, 120L);
            curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)(intptr_t)next);
            start[next] = now();
            curl_multi_add_handle(m, e);
            next++;
        }
        curl_multi_perform(m, &running);
        curl_multi_poll(m, NULL, 0, 50, NULL);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            char *p;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &p);
            int i = (int)(intptr_t)p;
            long status = 0;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
            if (msg->data.result != CURLE_OK || status != 200) failed++;
            lat[done++] = now() - start[i];
            curl_multi_remove_handle(m, msg->easy_handle);
            curl_easy_cleanup(msg->easy_handle);
        }
    }
    double dt = now() - t0;
    qsort(lat, (size_t)N, sizeof *lat, cmp_double);
    printf("requests %d (batch %d queries), concurrency %d, failed %d\n", N, B, C, failed);
    printf("throughput %.1f req/s (%.1f queries/s)\n", N / dt, N * (double)B / dt);
    printf("latency p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", lat[N / 2] * 1e3, lat[(int)(N * 0.99)] * 1e3, lat[N - 1] * 1e3);
    curl_multi_cleanup(m);
    curl_slist_free_all(h);
    for (int i = 0; i < N; i++) free(bodies[i]);
    free(bodies);
    free(start);
    free(lat);
    free(easy);
    curl_global_cleanup();
    return failed ? 1 : 0;
}
