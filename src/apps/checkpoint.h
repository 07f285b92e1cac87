/* What the apps read from a checkpoint beside the weights: its tokenizer and its chat template's default
 * system prompt, whether the checkpoint is an HF directory or a GGUF file. */
#ifndef FP_APPS_CHECKPOINT_H
#define FP_APPS_CHECKPOINT_H
#include "base/base.h"

/* A ".gguf" path: the tokenizer in its metadata; otherwise tokenizer.json or a directory holding it. */
int fp_checkpoint_tokenizer(fp_tokenizer **tok, const char *path);
/* The default system prompt of the chat template: a directory's tokenizer_config.json, a .jinja file, or a
 * GGUF's tokenizer.chat_template.  *out = NULL when there is none (or for any other kind of path). */
int fp_checkpoint_default_system(const char *path, char **out);
#endif
