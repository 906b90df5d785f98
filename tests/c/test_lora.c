/* LoRA through the C ABI. gm_load_options.adapter_path: a fixture model
 * loaded with the adapter mlx-lm wrote gives mlx-lm's logits
 * (tests/c/expected_lora.txt, from scripts/lora-oracle); without it they
 * differ; adapters that do not fit fail the load with a message; memory
 * returns to its baseline. gm_lora_train on llama_tied with the character
 * tokenizer: the loss falls, the callback sees every step and can stop the run
 * early, the saved adapter loads back through adapter_path. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include "util.h"
#include "expected.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static gm_lora_case cases[GM_MAX_LORA];

/* max |a - b| / max |b| */
static float rel_err(const float *a, const float *b, size_t n) {
  float scale = 1e-12f, worst = 0;
  for (size_t i = 0; i < n; i++) {
    if (fabsf(b[i]) > scale) scale = fabsf(b[i]);
    if (fabsf(a[i] - b[i]) > worst) worst = fabsf(a[i] - b[i]);
  }
  return worst / scale;
}

static gm_model *load(const char *rel_model, const char *rel_adapter) {
  char model[1024], adapter[1024];
  gm_load_options lo;
  memset(&lo, 0, sizeof lo);
  lo.struct_size = sizeof lo;
  lo.device = GM_DEVICE_CPU;
  if (rel_adapter) lo.adapter_path = gm_path(adapter, sizeof adapter, rel_adapter);
  return gm_model_load(gm_path(model, sizeof model, rel_model), &lo);
}

/* The last-position logits of one prompt into out (n_vocab floats); 0 on success. */
static int logits_of(gm_model *m, const gm_lora_case *c, float *out) {
  gm_classify_options co;
  memset(&co, 0, sizeof co);
  co.struct_size = sizeof co;
  co.logits = true;
  gm_classify_result r;
  memset(&r, 0, sizeof r);
  r.struct_size = sizeof r;
  const uint32_t *prompts[1] = {c->ids};
  size_t lens[1] = {c->n_ids};
  if (gm_classify_tokens(m, prompts, lens, 1, &co, &r, NULL) != GM_OK) return -1;
  int ok = r.n == 1 && r.n_logits == c->n_logits;
  if (ok) memcpy(out, r.logits, c->n_logits * sizeof(float));
  gm_classify_result_free(&r);
  return ok ? 0 : -1;
}

static void test_adapter_logits(int n) {
  size_t baseline = gm_memory_active();
  for (int i = 0; i < n; i++) {
    const gm_lora_case *c = &cases[i];
    static float got[GM_MAX_VOCAB];
    gm_model *m = load(c->model, c->adapter);
    CHECK(m != NULL, "%s: load with adapter: %s", c->name, gm_err());
    if (!m) continue;
    CHECK(logits_of(m, c, got) == 0, "%s: classify: %s", c->name, gm_err());
    float err = rel_err(got, c->logits, c->n_logits);
    CHECK(err < 1e-4f, "%s (%zu ids): logits relative error %g against mlx-lm", c->name, c->n_ids, err);
    gm_model_close(m);

    /* Without the adapter the same prompt is far from mlx-lm's adapted logits. */
    m = load(c->model, NULL);
    CHECK(m != NULL, "%s: load: %s", c->name, gm_err());
    if (!m) continue;
    CHECK(logits_of(m, c, got) == 0, "%s: classify: %s", c->name, gm_err());
    err = rel_err(got, c->logits, c->n_logits);
    CHECK(err > 1e-3f, "%s: without the adapter the logits are within %g", c->name, err);
    gm_model_close(m);
  }
  gm_clear_cache();
  CHECK(gm_memory_active() == baseline, "memory %zu after closing, baseline %zu", gm_memory_active(), baseline);
}

static void test_adapter_errors(void) {
  /* Gemma 3's adapter (three layers) on the two-layer llama. */
  CHECK(load("tests/fixtures/models/llama_tied", "tests/fixtures/lora/gemma3_text/adapter") == NULL, "gemma3 adapter on llama");
  CHECK_ERR("does not fit the model");
  CHECK_ERR("3 LoRA layers requested but the model has 2");
  /* Same layer count, other shapes. */
  CHECK(load("tests/fixtures/models/qwen3_qknorm", "tests/fixtures/lora/llama_tied/adapter") == NULL, "llama adapter on qwen3");
  CHECK_ERR("has shape [4, 64], the model needs [4, 128]");
  /* A model directory is not an adapter directory. */
  CHECK(load("tests/fixtures/models/llama_tied", "tests/fixtures/models/llama_tied") == NULL, "model dir as adapter");
  CHECK_ERR("no adapter_config.json in it");
}

static int copy_file(const char *from, const char *to) {
  FILE *in = fopen(from, "rb");
  if (!in) return -1;
  FILE *out = fopen(to, "wb");
  if (!out) { fclose(in); return -1; }
  char buf[65536];
  size_t k;
  int rc = 0;
  while ((k = fread(buf, 1, sizeof buf, in)) > 0)
    if (fwrite(buf, 1, k, out) != k) { rc = -1; break; }
  fclose(in);
  if (fclose(out) != 0) rc = -1;
  return rc;
}

typedef struct {
  int calls, stop_at;
  uint32_t last_step;
  int steps_in_order;
  float first_loss;
} progress_log;

static int32_t on_progress(const gm_lora_progress *p, void *user_data) {
  progress_log *log = user_data;
  log->calls++;
  if (p->step != log->last_step + 1 || p->struct_size < sizeof *p) log->steps_in_order = 0;
  log->last_step = p->step;
  if (p->step == 1) log->first_loss = p->loss;
  return log->stop_at != 0 && (int)p->step == log->stop_at;
}

static void test_train(void) {
  char dir[] = "/tmp/gomlx-c-lora-XXXXXX";
  CHECK(mkdtemp(dir) != NULL, "mkdtemp");
  char src[1024], dst[1200], model[1100], data[1100], adapters[1100], stopped[1100];
  snprintf(model, sizeof model, "%s/model", dir);
  snprintf(data, sizeof data, "%s/train.jsonl", dir);
  snprintf(adapters, sizeof adapters, "%s/adapters", dir);
  snprintf(stopped, sizeof stopped, "%s/stopped", dir);
  CHECK(mkdir(model, 0700) == 0, "mkdir %s", model);
  const char *files[][2] = {
      {"tests/fixtures/models/llama_tied/config.json", "config.json"},
      {"tests/fixtures/models/llama_tied/model.safetensors", "model.safetensors"},
      {"tests/fixtures/lora/tokenizer/tokenizer.json", "tokenizer.json"},
      {"tests/fixtures/lora/tokenizer/tokenizer_config.json", "tokenizer_config.json"},
  };
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    snprintf(dst, sizeof dst, "%s/%s", model, files[i][1]);
    CHECK(copy_file(gm_path(src, sizeof src, files[i][0]), dst) == 0, "copy %s", files[i][0]);
  }
  FILE *f = fopen(data, "w");
  CHECK(f != NULL, "write %s", data);
  if (!f) return;
  for (int i = 0; i < 12; i++)
    fprintf(f, "{\"prompt\": \"count %d\", \"completion\": \"%d %d %d\"}\n", i, i + 1, i + 2, i + 3);
  fclose(f);

  gm_lora_options o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.adapter_path = adapters;
  o.targets = "q_proj,v_proj,down_proj";
  o.iters = 12;
  o.batch_size = 4;
  o.rank = 4;
  o.learning_rate = 1e-2f;
  o.seed = 3;
  gm_lora_result r;
  memset(&r, 0, sizeof r);
  r.struct_size = sizeof r;
  progress_log log = {0, 0, 0, 1, 0};
  int rc = gm_lora_train(model, data, &o, on_progress, &log, &r);
  CHECK(rc == GM_OK, "train: %s", gm_err());
  CHECK(r.steps == 12 && !r.stopped_early, "steps %u, stopped early %d", r.steps, r.stopped_early);
  CHECK(log.calls == 12 && log.steps_in_order && log.last_step == 12, "progress calls %d, in order %d", log.calls, log.steps_in_order);
  CHECK(r.first_loss == log.first_loss, "first loss %g vs the callback's %g", r.first_loss, log.first_loss);
  CHECK(isfinite(r.first_loss) && r.last_loss < 0.8f * r.first_loss, "loss %g -> %g did not fall", r.first_loss, r.last_loss);
  CHECK(isnan(r.last_val_loss), "no validation data, yet val loss %g", r.last_val_loss);
  CHECK(r.trained_tokens > 0 && r.seconds > 0 && r.peak_memory > 0, "result counters");
  CHECK(r.struct_size == sizeof r, "struct_size kept");

  /* The adapter it saved loads back and changes the model's logits. */
  gm_lora_case c;
  memset(&c, 0, sizeof c);
  c.n_ids = 4;
  c.n_logits = 256;
  for (size_t i = 0; i < c.n_ids; i++) c.ids[i] = (uint32_t)(40 + 10 * i);
  static float base[256], adapted[256];
  gm_model *m = load("tests/fixtures/models/llama_tied", NULL);
  CHECK(m != NULL && logits_of(m, &c, base) == 0, "base logits: %s", gm_err());
  gm_model_close(m);
  gm_load_options lo;
  memset(&lo, 0, sizeof lo);
  lo.struct_size = sizeof lo;
  lo.device = GM_DEVICE_CPU;
  lo.adapter_path = adapters;
  m = gm_model_load(model, &lo);
  CHECK(m != NULL, "load the trained adapter: %s", gm_err());
  if (m) {
    CHECK(logits_of(m, &c, adapted) == 0, "adapted logits: %s", gm_err());
    CHECK(rel_err(adapted, base, 256) > 1e-3f, "training changed nothing");
    gm_model_close(m);
  }

  /* The callback stops the run after step 3; the adapters are still saved. */
  o.adapter_path = stopped;
  progress_log stop = {0, 3, 0, 1, 0};
  memset(&r, 0, sizeof r);
  r.struct_size = sizeof r;
  rc = gm_lora_train(model, data, &o, on_progress, &stop, &r);
  CHECK(rc == GM_OK, "stopped train: %s", gm_err());
  CHECK(r.steps == 3 && r.stopped_early == 1 && stop.calls == 3, "steps %u, stopped early %d, calls %d", r.steps, r.stopped_early, stop.calls);
  snprintf(dst, sizeof dst, "%s/adapters.safetensors", stopped);
  CHECK(access(dst, R_OK) == 0, "stopped run saved no adapters");

  /* Errors name what is wrong. */
  CHECK(gm_lora_train(model, "/nonexistent/data.jsonl", &o, NULL, NULL, NULL) == GM_ERROR, "missing data");
  CHECK_ERR("/nonexistent/data.jsonl");
  o.targets = "q_proj,nose";
  CHECK(gm_lora_train(model, data, &o, NULL, NULL, NULL) == GM_ERROR, "bad target");
  CHECK_ERR("unknown LoRA target 'nose'");

  char cmd[1200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  CHECK(system(cmd) == 0, "%s", cmd);
}

int main(void) {
  char path[1024];
  int n = gm_read_expected_lora(gm_path(path, sizeof path, "tests/c/expected_lora.txt"), cases, GM_MAX_LORA);
  CHECK(n >= 6, "cannot read %s (%d lines)", path, n);
  test_adapter_logits(n);
  test_adapter_errors();
  test_train();
  return gm_check_summary();
}
