/* Streams a chat reply through the gomlx C ABI:
 *   chat MODEL "What is the capital of France?"
 * Build: cc -std=c11 -Iinclude examples/c/chat.c -Ltarget/release -lgomlx \
 *          -Wl,-rpath,$PWD/target/release -o chat */
#include "gomlx.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s MODEL QUESTION\n", argv[0]);
    return 2;
  }
  gm_model *model = gm_model_load(argv[1], NULL); /* NULL options: defaults */
  if (!model) {
    fprintf(stderr, "load: %s\n", gm_last_error());
    return 1;
  }
  gm_message msgs[] = {{"user", argv[2]}};
  gm_generate_options opts;
  memset(&opts, 0, sizeof opts); /* every 0 field means its default */
  opts.struct_size = sizeof opts;
  opts.max_tokens = 256;
  gm_generation *gen = gm_chat_start(model, msgs, 1, &opts);
  if (!gen) {
    fprintf(stderr, "chat: %s\n", gm_last_error());
    gm_model_close(model);
    return 1;
  }
  gm_token tok;
  memset(&tok, 0, sizeof tok);
  tok.struct_size = sizeof tok;
  int rc;
  while ((rc = gm_generate_next(gen, &tok)) == 1) {
    fputs(tok.text, stdout); /* valid until the next gm_generate_next */
    fflush(stdout);
  }
  putchar('\n');
  if (rc < 0) fprintf(stderr, "error: %s\n", gm_last_error());
  gm_metrics m;
  memset(&m, 0, sizeof m);
  m.struct_size = sizeof m;
  if (gm_generation_metrics(gen, &m) == GM_OK)
    fprintf(stderr, "%zu prompt tokens, %zu generated, %.1f tokens/s\n", m.prompt_tokens, m.generated_tokens, m.decode_tokens_per_s);
  gm_generation_free(gen);
  gm_model_close(model);
  return rc < 0;
}
