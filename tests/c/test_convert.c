/* GGUF conversion, discovery of GGUF files, tuning knobs in gm_load_options,
 * and option/result structs of the first release's size. */
#include "util.h"

#include <stddef.h>
#include <stdio.h>
#include <unistd.h>

static int32_t count_progress(size_t done, size_t total, void *user) {
  size_t *seen = user;
  seen[0]++;
  seen[1] = done;
  seen[2] = total;
  return 0;
}

static int32_t stop_at_three(size_t done, size_t total, void *user) {
  (void)total;
  (void)user;
  return done >= 3;
}

static void greedy_chat(gm_model *m, char *text, size_t cap) {
  gm_message msg = {"user", "What is the capital of France?"};
  gm_generate_options o = gm_gen_opts(10);
  gm_generation *g = gm_chat_start(m, &msg, 1, &o);
  CHECK(g != NULL, "chat start: %s", gm_err());
  if (g) {
    CHECK(gm_drain(g, NULL, 0, text, cap) > 0, "chat: %s", gm_err());
    gm_generation_free(g);
  }
}

static void test_convert(void) {
  char gguf[1024], out[1024];
  gm_path(gguf, sizeof gguf, ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf");
  snprintf(out, sizeof out, "%s/tests/c/build/smollm2-converted-%d", gm_root(), (int)getpid());
  gm_convert_options o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.mode = GM_CONVERT_KEEP;
  size_t seen[3] = {0, 0, 0};
  CHECK(gm_convert(gguf, out, &o, count_progress, seen) == GM_OK, "convert: %s", gm_err());
  CHECK(seen[2] > 100 && seen[0] == seen[2] && seen[1] == seen[2], "progress %zu calls, %zu of %zu", seen[0], seen[1], seen[2]);

  /* The directory answers as the file does. */
  gm_model *file = gm_model_load(gguf, NULL);
  gm_model *dir = gm_model_load(out, NULL);
  CHECK(file && dir, "load: %s", gm_err());
  if (file && dir) {
    char a[512], b[512];
    greedy_chat(file, a, sizeof a);
    greedy_chat(dir, b, sizeof b);
    CHECK(strcmp(a, b) == 0 && strstr(a, "Paris") != NULL, "file '%s' vs directory '%s'", a, b);
  }
  gm_model_close(file);
  gm_model_close(dir);

  CHECK(gm_convert(gguf, out, &o, stop_at_three, NULL) == GM_ERROR, "a stopped conversion succeeded");
  CHECK_ERR("stopped by the progress callback");
  CHECK(gm_convert("/nonexistent.gguf", out, NULL, NULL, NULL) == GM_ERROR, "missing file");
  CHECK_ERR("/nonexistent.gguf");
  o.mode = 9;
  CHECK(gm_convert(gguf, out, &o, NULL, NULL) == GM_ERROR, "mode 9");
  CHECK_ERR("gm_convert_options.mode is 9");
  o.mode = GM_CONVERT_QUANTIZE;
  o.bits = 7;
  CHECK(gm_convert(gguf, out, &o, NULL, NULL) == GM_ERROR, "7 bits");
  CHECK_ERR("bits 7");
  CHECK(gm_convert(NULL, out, NULL, NULL, NULL) == GM_ERROR, "NULL path");
  CHECK_ERR("gguf_path is NULL");
}

static void test_discover_gguf(void) {
  char dir[1024];
  gm_path(dir, sizeof dir, ".cache/models");
  gm_discover_result d;
  memset(&d, 0, sizeof d);
  d.struct_size = sizeof d;
  CHECK(gm_discover(dir, &d) == GM_OK, "discover: %s", gm_err());
  int found = 0;
  for (size_t i = 0; i < d.n; i++) {
    if (strstr(d.paths[i], "SmolLM2-135M-Instruct.Q4_1.gguf")) {
      found = 1;
      CHECK(strcmp(d.formats[i], "gguf") == 0 && strcmp(d.architectures[i], "llama") == 0 && d.supported[i] && d.size_bytes[i] > 50000000,
            "%s %s %d %llu", d.formats[i], d.architectures[i], (int)d.supported[i], (unsigned long long)d.size_bytes[i]);
    }
  }
  CHECK(found, "SmolLM2's GGUF file not discovered");
  gm_discover_result_free(&d);

  /* A caller built against the first release's struct: its fields are filled, no more. */
  gm_discover_result old;
  memset(&old, 0xAB, sizeof old);
  old.struct_size = offsetof(gm_discover_result, formats);
  CHECK(gm_discover(dir, &old) == GM_OK && old.n >= 1, "old-size discover: %s", gm_err());
  CHECK(old.struct_size == offsetof(gm_discover_result, formats), "struct_size kept");
  unsigned char *tail = (unsigned char *)&old.formats;
  CHECK(tail[0] == 0xAB, "a field past the caller's struct_size was written");
  old.struct_size = offsetof(gm_discover_result, formats);
  gm_discover_result_free(&old);
  CHECK(gm_last_error() == NULL, "free of an old-size result: %s", gm_err());
}

static void test_load_options(void) {
  char fixture[1024];
  gm_path(fixture, sizeof fixture, "tests/fixtures/models/llama_tied");
  /* The first release's gm_load_options (up to adapter_path) still loads. */
  gm_load_options o;
  memset(&o, 0, sizeof o);
  o.struct_size = offsetof(gm_load_options, widen);
  o.device = GM_DEVICE_CPU;
  gm_model *m = gm_model_load(fixture, &o);
  CHECK(m != NULL, "old-size options: %s", gm_err());
  gm_model_close(m);
  o.struct_size = offsetof(gm_load_options, widen) - 1;
  CHECK(gm_model_load(fixture, &o) == NULL, "a struct smaller than the first release");
  CHECK_ERR("gm_load_options.struct_size");

  /* Knobs: valid values load and answer alike; a bad switch names its field. */
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.device = GM_DEVICE_CPU;
  o.compile = GM_OFF;
  o.fuse_projections = GM_ON;
  o.cpu_dense_qmm_rows = -1;
  o.gpu_dense_qmm_rows = 64;
  o.cpu_split_out = -1;
  o.memory_budget = 1;
  o.blas_gemv = GM_ON;
  m = gm_model_load(fixture, &o);
  CHECK(m != NULL, "knobs: %s", gm_err());
  gm_model_close(m);
  o.widen = 5;
  CHECK(gm_model_load(fixture, &o) == NULL, "widen 5 accepted");
  CHECK_ERR("gm_load_options.widen is 5");

  /* Replicas: two engines answer two generations at once as one engine does, and
   * closing frees both (memory back to its value before the load). */
  size_t before = gm_memory_active();
  uint32_t want[2][8], got[2][8];
  const uint32_t prompt[6] = {1, 5, 9, 13, 17, 21};
  for (size_t replicas = 1; replicas <= 2; replicas++) {
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.device = GM_DEVICE_CPU;
    o.replicas = replicas;
    m = gm_model_load(fixture, &o);
    CHECK(m != NULL, "replicas %zu: %s", replicas, gm_err());
    if (!m) continue;
    gm_generate_options go = gm_gen_opts(8);
    go.ignore_eos = true;
    gm_generation *g[2];
    for (int i = 0; i < 2; i++) g[i] = gm_generate_tokens_start(m, prompt + i, 6 - i, &go);
    for (int i = 0; i < 2; i++) {
      CHECK(g[i] && gm_drain(g[i], replicas == 1 ? want[i] : got[i], 8, NULL, 0) == 8, "replicas %zu: %s", replicas, gm_err());
      gm_generation_free(g[i]);
    }
    gm_model_close(m);
  }
  CHECK(memcmp(want, got, sizeof want) == 0, "two replicas answered differently from one engine");
  CHECK(gm_memory_active() == before, "memory after closing two replicas: %zu, before %zu", gm_memory_active(), before);
}

int main(void) {
  test_load_options();
  test_discover_gguf();
  test_convert();
  return gm_check_summary();
}
