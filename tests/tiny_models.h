/* Model directories built from the tiny Qwen2 fixture of tests/ref/score (hidden 8, f32) by symlinks under
 * th_tmpdir(), with the real Qwen2 tokenizer from ../shared and, for the PRM, a tokenizer_config.json that
 * carries the Qwen2.5 chat template (whose default system prompt the tests use).  Include after harness.h. */
#ifndef FP_TEST_TINY_MODELS_H
#define FP_TEST_TINY_MODELS_H
#include "base/json.h"
#include <jansson.h>
#include <limits.h>

#define TINY_REF "tests/ref/score"

/* dir/name -> the absolute path of target: 0, or -1 (target missing, or the link cannot be made). */
__attribute__((unused)) static int th_link_to(const char *target, const char *dir, const char *name) {
    char src[PATH_MAX], dst[1024];
    if (!realpath(target, src)) return -1;
    snprintf(dst, sizeof dst, "%s/%s", dir, name);
    return symlink(src, dst);
}

/* Makes dir, a causal LM: the fixture's config_causal.json, its trunk as model.safetensors and tokjson as
 * tokenizer.json.  0, or -1 when a link cannot be made. */
__attribute__((unused)) static int th_tiny_lm_dir(const char *dir, const char *tokjson) {
    mkdir(dir, 0755);
    return th_link_to(TINY_REF "/config_causal.json", dir, "config.json") ||
                   th_link_to(TINY_REF "/trunk.safetensors", dir, "model.safetensors") ||
                   th_link_to(tokjson, dir, "tokenizer.json")
               ? -1
               : 0;
}

/* The shared Qwen2 tokenizer.json's path (copied into tokjson) and the Qwen2.5 chat template's text (*tpl_text,
 * malloc'd).  0; TH_SKIP when either file is absent from ../shared; -1 when the template cannot be read. */
__attribute__((unused)) static int th_tiny_qwen_files(char tokjson[PATH_MAX], char **tpl_text, size_t *tpl_len) {
    const char *tj = th_shared_file("tokenizer/qwen2/tokenizer.json"); /* static buffer: copy it now */
    if (!tj) return TH_SKIP;
    snprintf(tokjson, PATH_MAX, "%s", tj);
    const char *tpl = th_shared_file("templates/qwen2.5-instruct.jinja");
    if (!tpl) return TH_SKIP;
    return fp_read_file(tpl, tpl_text, tpl_len) ? -1 : 0;
}

/* Writes dir/tokenizer_config.json = {"chat_template": the template}: 0, or -1. */
__attribute__((unused)) static int th_tiny_chat_template(const char *dir, const char *tpl_text, size_t tpl_len) {
    json_t *cfg = json_pack("{s:s%}", "chat_template", tpl_text, tpl_len);
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    int rc = json_dump_file(cfg, path, 0);
    json_decref(cfg);
    return rc;
}

/* Builds, on the first call, <tmp>/prm: the sharded PRM checkpoint (config_prm.json, the safetensors index, trunk
 * and prm_head shards, the tokenizer and the chat template's tokenizer_config.json) and, when scalar_dir is not
 * NULL, <tmp>/scalar: the 1.5B-style scalar-head model (config_causal.json, the trunk as model.safetensors,
 * reward_head.pt, the tokenizer).  Later calls return the same directories at once (every call of one test
 * binary must pass scalar_dir alike).  0; TH_SKIP when ../shared lacks the tokenizer or the template; -1 when
 * the template cannot be read or a file cannot be made. */
__attribute__((unused)) static int th_tiny_prm_dirs(const char **prm_dir, const char **scalar_dir) {
    static char prm[512], scalar[512];
    *prm_dir = prm;
    if (scalar_dir) *scalar_dir = scalar;
    if (prm[0]) return scalar_dir && !scalar[0] ? -1 : 0;
    char tokjson[PATH_MAX], *tpl_text;
    size_t tpl_len;
    int s = th_tiny_qwen_files(tokjson, &tpl_text, &tpl_len);
    if (s) return s;
    snprintf(prm, sizeof prm, "%s/prm", th_tmpdir());
    mkdir(prm, 0755);
    if (scalar_dir) snprintf(scalar, sizeof scalar, "%s/scalar", th_tmpdir());
    int bad = th_link_to(TINY_REF "/config_prm.json", prm, "config.json") ||
              th_link_to(TINY_REF "/model.safetensors.index.json", prm, "model.safetensors.index.json") ||
              th_link_to(TINY_REF "/trunk.safetensors", prm, "trunk.safetensors") ||
              th_link_to(TINY_REF "/prm_head.safetensors", prm, "prm_head.safetensors") ||
              th_link_to(tokjson, prm, "tokenizer.json") ||
              (scalar_dir && (th_tiny_lm_dir(scalar, tokjson) ||
                              th_link_to(TINY_REF "/reward_head.pt", scalar, "reward_head.pt")));
    bad |= th_tiny_chat_template(prm, tpl_text, tpl_len);
    free(tpl_text);
    return bad ? -1 : 0;
}
#endif
