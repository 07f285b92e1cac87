/* fluxprm serve: the reward server for online RL (docs/serve.md). */
#include "apps/serve.h"
#include "cli/cli.h"
#include "cli/prm_opts.h"
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

static void serve_help(FILE *f) {
    fprintf(f,
"usage: fluxprm serve --model DIR|FILE.gguf [--policy-model DIR|FILE.gguf] [options]\n"
"       fluxprm serve --policy-model DIR|FILE.gguf [options]\n"
"\n"
"HTTP server for online RL with a PRM (--model), a policy LM (--policy-model) or both.  One inference thread\n"
"owns each model and drains its queue; connection threads only parse and serialise.  Endpoints (JSON; errors\n"
"are {\"error\":{\"message\",\"type\",...}} with 4xx/5xx; an endpoint whose model is not loaded answers 404):\n"
"  POST /get_reward          OpenRLHF remote RM {query, prompts?, labels?} -> {rewards, scores, extra_logs}\n"
"                            reward = (1-beta)*rule + beta*PRM (rule = verifier vs label; PRM alone when the\n"
"                            label is null or absent)\n"
"  POST /pooling             vLLM PRM pooling {input | messages} -> [p_neg, p_pos] at every step token\n"
"  POST /v1/rerank           {query, documents, top_n?} -> results sorted by the PRM score\n"
"  POST /v1/grpo/advantages  {rewards, group_size} | {groups} -> (r - mean) / (std + 1e-6)\n"
"  POST /v1/chat/completions OpenAI chat {messages, max_tokens?, temperature?, top_p?, top_k?, seed?, n?, stop?}\n"
"                            -> choices[i].message.content (policy; non-streaming: \"stream\": true gets 400)\n"
"  POST /v1/completions      OpenAI text completions {prompt, ...} -> choices[i].text (policy)\n"
"  GET  /health, GET /v1/models (both models)\n"
"Responses are split into steps on \"\\n\\n\" (see --whole-response).  Stops cleanly on SIGINT/SIGTERM.\n"
"\n"
"options:\n"
CLI_PRM_HELP
"  --host H             listen address (default 127.0.0.1)\n"
"  --port N             listen port (default 8000; 0 = a free port, printed on stderr)\n"
"  --beta B             PRM weight in /get_reward, in [0,1] (default 0.75)\n"
"  --aggregate A        step aggregation of the PRM score: mean | min | last | prod (default mean)\n"
"  --alpha A            weight of the final reward in the PRM score (default 1.0)\n"
"  --whole-response     score each response as ONE step (the released verl code) instead of splitting it\n"
"  --model-name NAME    the PRM's id in /v1/models (default: the model directory's name)\n"
"  --policy-model P     causal LM (HF directory or GGUF, lm_head or tied embeddings) for the completions\n"
"  --policy-tokenizer P its tokenizer.json or directory (default: the policy model's directory)\n"
"  --policy-name NAME   the policy's id in /v1/models (default: the policy directory's name)\n"
"  --policy-system TEXT default system turn of chats without one (default: the policy template's)\n"
"  --policy-no-system   no default system turn\n"
"  --max-new-tokens N   most tokens a completion may ask for, and the default (default 1024)\n"
"  --gen-batch N        sequences (prompts x n) the generation thread decodes together (default 16)\n"
"  --max-body BYTES     larger request bodies get 413 (default 8388608)\n"
"  --timeout S          drop connections idle for S seconds (slowloris protection; default 60, 0 = never)\n"
"  --max-batch-tokens N tokens the worker takes from the queue per batch (default 16384)\n"
"  --max-connections N  concurrent connections, one thread each (default 512)\n"
"  -q, --quiet          no startup or shutdown lines\n"
"  -h, --help           this help\n"
"\n"
"Exit status: 0 after a clean shutdown, 1 runtime error (model, address in use), 2 usage.\n");
}

enum { OPT_HOST = 256, OPT_PORT, OPT_BETA, OPT_AGG, OPT_ALPHA, OPT_WHOLE, OPT_NAME, OPT_MAX_BODY, OPT_TIMEOUT,
       OPT_MAX_BATCH, OPT_MAX_CONN, OPT_POLICY, OPT_POLICY_TOK, OPT_POLICY_NAME, OPT_POLICY_SYSTEM,
       OPT_POLICY_NO_SYSTEM, OPT_MAX_NEW, OPT_GEN_BATCH };

int cmd_serve(int argc, char **argv) {
    static const struct option lopts[] = {
        CLI_PRM_LONG_OPTIONS, {"host", required_argument, 0, OPT_HOST}, {"port", required_argument, 0, OPT_PORT},
        {"beta", required_argument, 0, OPT_BETA}, {"aggregate", required_argument, 0, OPT_AGG},
        {"alpha", required_argument, 0, OPT_ALPHA}, {"whole-response", no_argument, 0, OPT_WHOLE},
        {"model-name", required_argument, 0, OPT_NAME}, {"max-body", required_argument, 0, OPT_MAX_BODY},
        {"timeout", required_argument, 0, OPT_TIMEOUT}, {"max-batch-tokens", required_argument, 0, OPT_MAX_BATCH},
        {"max-connections", required_argument, 0, OPT_MAX_CONN}, {"policy-model", required_argument, 0, OPT_POLICY},
        {"policy-tokenizer", required_argument, 0, OPT_POLICY_TOK}, {"policy-name", required_argument, 0, OPT_POLICY_NAME},
        {"policy-system", required_argument, 0, OPT_POLICY_SYSTEM}, {"policy-no-system", no_argument, 0, OPT_POLICY_NO_SYSTEM},
        {"max-new-tokens", required_argument, 0, OPT_MAX_NEW}, {"gen-batch", required_argument, 0, OPT_GEN_BATCH},
        {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    fp_prm_opts po;
    fp_prm_opts_default(&po);
    fp_serve_opts so;
    fp_serve_opts_default(&so);
    int quiet = 0, c;
    long v;
    double d;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":qh", lopts, NULL)) != -1) {
        int handled = cli_prm_option("serve", c, optarg, &po);
        if (handled < 0) return EXIT_USAGE;
        if (handled) continue;
        switch (c) {
        case OPT_HOST:
            if (!*optarg) return cli_usage_error("serve", "--host needs an address");
            so.host = optarg;
            break;
        case OPT_PORT:
            if (cli_parse_long(optarg, &v) || v < 0 || v > 65535) return cli_usage_error("serve", "--port needs 0..65535, got '%s'", optarg);
            so.port = (int)v;
            break;
        case OPT_BETA:
            if (cli_parse_double(optarg, &d) || !(d >= 0 && d <= 1)) return cli_usage_error("serve", "--beta needs a number in [0,1], got '%s'", optarg);
            so.beta = d;
            break;
        case OPT_AGG:
            if ((c = fp_aggregate_parse(optarg)) < 0) return cli_usage_error("serve", "--aggregate must be mean, min, last or prod, got '%s'", optarg);
            po.aggregate = (fp_aggregate)c;
            break;
        case OPT_ALPHA:
            if (cli_parse_double(optarg, &d) || !isfinite(d)) return cli_usage_error("serve", "--alpha needs a number, got '%s'", optarg);
            po.alpha = d;
            break;
        case OPT_WHOLE: so.whole_response = 1; break;
        case OPT_NAME:
            if (!*optarg) return cli_usage_error("serve", "--model-name needs a name");
            so.model_id = optarg;
            break;
        case OPT_MAX_BODY:
            if (cli_parse_long(optarg, &v) || v < 1) return cli_usage_error("serve", "--max-body needs a positive byte count, got '%s'", optarg);
            so.max_body = (size_t)v;
            break;
        case OPT_TIMEOUT:
            if (cli_parse_long(optarg, &v) || v < 0 || v > 86400) return cli_usage_error("serve", "--timeout needs seconds in 0..86400, got '%s'", optarg);
            so.timeout_s = (unsigned)v;
            break;
        case OPT_MAX_BATCH:
            if (cli_parse_long(optarg, &v) || v < 1) return cli_usage_error("serve", "--max-batch-tokens needs a positive integer, got '%s'", optarg);
            so.max_batch_tokens = v;
            break;
        case OPT_MAX_CONN:
            if (cli_parse_long(optarg, &v) || v < 1 || v > 65536) return cli_usage_error("serve", "--max-connections needs 1..65536, got '%s'", optarg);
            so.max_connections = (unsigned)v;
            break;
        case OPT_POLICY:
            if (!*optarg) return cli_usage_error("serve", "--policy-model needs a path");
            so.policy.model_path = optarg;
            break;
        case OPT_POLICY_TOK:
            if (!*optarg) return cli_usage_error("serve", "--policy-tokenizer needs a path");
            so.policy.tokenizer_path = optarg;
            break;
        case OPT_POLICY_NAME:
            if (!*optarg) return cli_usage_error("serve", "--policy-name needs a name");
            so.policy_id = optarg;
            break;
        case OPT_POLICY_SYSTEM:
            so.policy.system_mode = FP_SYSTEM_TEXT;
            so.policy.system = optarg;
            break;
        case OPT_POLICY_NO_SYSTEM: so.policy.system_mode = FP_SYSTEM_NONE; break;
        case OPT_MAX_NEW:
            if (cli_parse_long(optarg, &v) || v < 1 || v > 1000000) return cli_usage_error("serve", "--max-new-tokens needs 1..1000000, got '%s'", optarg);
            so.max_new_tokens = (int)v;
            break;
        case OPT_GEN_BATCH:
            if (cli_parse_long(optarg, &v) || v < 1 || v > 4096) return cli_usage_error("serve", "--gen-batch needs 1..4096, got '%s'", optarg);
            so.gen_batch = (int)v;
            break;
        case 'q': quiet = 1; break;
        case 'h': serve_help(stdout); return EXIT_OK;
        case ':': return cli_usage_error("serve", "option '%s' needs a value", argv[optind - 1]);
        default: return cli_usage_error("serve", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (!po.model_path && !so.policy.model_path) return cli_usage_error("serve", "--model (a PRM) or --policy-model (a policy LM) is required");
    if (!po.model_path && so.model_id) return cli_usage_error("serve", "--model-name names the PRM, and there is no --model (use --policy-name)");
    if (!so.policy.model_path && (so.policy.tokenizer_path || so.policy_id || so.policy.system_mode != FP_SYSTEM_TEMPLATE))
        return cli_usage_error("serve", "--policy-tokenizer, --policy-name and --policy-system need --policy-model");
    so.policy.threads = po.threads;
    if (optind < argc) return cli_usage_error("serve", "unexpected argument '%s'", argv[optind]);

    /* Every thread inherits this mask, so SIGINT/SIGTERM reach only the sigwait below. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    fp_serve *s = NULL;
    if (fp_serve_new(&s, &po, &so)) return cli_fail("serve"); /* po without a model_path: no PRM */
    if (fp_serve_listen(s)) {
        fp_serve_free(s);
        return cli_fail("serve");
    }
    const char *host = so.host;
    int v6 = strchr(host, ':') != NULL;
    /* always printed (tests and scripts read the port from it, --quiet or not) */
    fprintf(stderr, "fluxprm serve: listening on http://%s%s%s:%d\n", v6 ? "[" : "", host, v6 ? "]" : "", fp_serve_port(s));
    fflush(stderr);
    int sig = 0;
    sigwait(&set, &sig);
    if (!quiet) fprintf(stderr, "fluxprm serve: %s received, finishing in-flight requests\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    fp_serve_stats st;
    fp_serve_get_stats(s, &st);
    fp_serve_free(s);
    if (!quiet)
        fprintf(stderr, "fluxprm serve: stopped after %ld requests (%ld errors), %ld sequences in %ld batches, "
                "%ld completions (%ld tokens)\n", st.requests, st.errors, st.sequences, st.batches, st.gen_requests,
                st.gen_tokens);
    return EXIT_OK;
}
