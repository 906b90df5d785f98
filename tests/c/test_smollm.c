/* SmolLM2-135M-Instruct (GGUF) through the C ABI: chat ("Paris", expected
 * ids), logprobs, stop strings, sessions, text classify with labels, batch
 * generate, cancel from a second thread, close with a live generation,
 * concurrent generations, memory back at baseline. */
#define _POSIX_C_SOURCE 200809L
#include "util.h"
#include "expected.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

static gm_case cases[GM_MAX_CASES];
static const gm_case *want;
static gm_model *model;

static const gm_message question[] = {{"user", "What is the capital of France?"}};

static void test_info(void) {
  gm_info info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  CHECK(gm_model_info(model, &info) == GM_OK, "info: %s", gm_err());
  CHECK(strcmp(info.architecture, "llama") == 0, "architecture %s", info.architecture);
  CHECK(info.num_layers == 30 && info.hidden_size == 576 && info.vocab_size == 49152, "sizes %zu %zu %zu", info.num_layers, info.hidden_size, info.vocab_size);
  CHECK(info.has_tokenizer, "SmolLM2 has a tokenizer");
  CHECK(info.context_length == 2048, "context length option: %zu", info.context_length);
  CHECK(info.parameters > 100000000 && info.weight_bytes > 0, "parameters %llu", (unsigned long long)info.parameters);
  CHECK(info.dtype && strlen(info.dtype) > 0, "dtype");
}

static void test_chat(void) {
  gm_generate_options o = gm_gen_opts(32);
  o.logprobs = true;
  o.top_logprobs = 3;
  gm_generation *g = gm_chat_start(model, question, 1, &o);
  CHECK(g != NULL, "chat: %s", gm_err());
  if (!g) return;
  uint32_t ids[64];
  char text[1024] = "";
  gm_token t = gm_tok();
  int n = 0, rc;
  while ((rc = gm_generate_next(g, &t)) == 1) {
    CHECK(t.id != GM_NO_TOKEN, "no held-back text expected here");
    CHECK(!isnan(t.logprob) && t.logprob <= 0, "logprob %f", t.logprob);
    CHECK(t.n_top_logprobs == 3 && t.top_logprobs && t.top_logprobs[0].id == t.id, "top logprobs of greedy token");
    CHECK(t.text_len == strlen(t.text), "text_len");
    if (n < 64) ids[n] = t.id;
    n++;
    strncat(text, t.text, sizeof text - strlen(text) - 1);
  }
  CHECK(rc == 0, "next: %s", gm_err());
  CHECK(strcmp(text, "The capital of France is Paris.") == 0, "chat text '%s'", text);
  CHECK(n == (int)want->n_greedy && memcmp(ids, want->greedy, want->n_greedy * sizeof(uint32_t)) == 0, "chat ids differ (%d tokens)", n);
  gm_metrics m;
  memset(&m, 0, sizeof m);
  m.struct_size = sizeof m;
  CHECK(gm_generation_metrics(g, &m) == GM_OK, "metrics: %s", gm_err());
  CHECK(m.finish_reason == GM_FINISH_EOS, "finish %d", m.finish_reason);
  CHECK(m.prompt_tokens == want->n_inputs, "prompt tokens %zu, want %zu", m.prompt_tokens, want->n_inputs);
  CHECK(m.generated_tokens == (size_t)n + 1, "generated %zu counts the EOS", m.generated_tokens);
  CHECK(m.prefill_tokens_per_s > 0 && m.decode_tokens_per_s > 0 && m.decode_s > 0 && m.prefill_s > 0, "rates");
  gm_generation_free(g);
}

static void test_generate_text_and_stop(void) {
  gm_generate_options o = gm_gen_opts(32);
  const char *stop[] = {"Paris"};
  o.stop = stop;
  o.n_stop = 1;
  gm_generation *g = gm_chat_start(model, question, 1, &o);
  CHECK(g != NULL, "chat with stop: %s", gm_err());
  char text[1024];
  int n = gm_drain(g, NULL, 0, text, sizeof text);
  CHECK(n > 0, "stop run: %s", gm_err());
  CHECK(strcmp(text, "The capital of France is ") == 0, "text before the stop string: '%s'", text);
  CHECK(gm_generation_finish_reason(g) == GM_FINISH_STOP, "finish %d", gm_generation_finish_reason(g));
  gm_generation_free(g);

  gm_generate_options p = gm_gen_opts(5);
  g = gm_generate_start(model, "The capital of France is", &p);
  CHECK(g != NULL, "generate: %s", gm_err());
  n = gm_drain(g, NULL, 0, text, sizeof text);
  CHECK(n == 5 && strlen(text) > 0, "plain generate: %d tokens '%s'", n, text);
  CHECK(gm_generation_finish_reason(g) == GM_FINISH_LENGTH, "finish %d", gm_generation_finish_reason(g));
  gm_generation_free(g);

  /* Sampling with a seed is reproducible. */
  gm_generate_options s = gm_gen_opts(12);
  s.temperature = 0.9f;
  s.top_p = 0.95f;
  s.top_k = 40;
  s.has_seed = true;
  s.seed = 7;
  char a[1024], b[1024];
  g = gm_generate_start(model, "Once upon a time", &s);
  gm_drain(g, NULL, 0, a, sizeof a);
  gm_generation_free(g);
  g = gm_generate_start(model, "Once upon a time", &s);
  gm_drain(g, NULL, 0, b, sizeof b);
  gm_generation_free(g);
  CHECK(strlen(a) > 0 && strcmp(a, b) == 0, "seeded sampling differs: '%s' vs '%s'", a, b);
}

static void test_session(void) {
  gm_session *s = gm_session_new(model);
  CHECK(s != NULL, "session: %s", gm_err());
  gm_generate_options o = gm_gen_opts(32);
  gm_generation *g = gm_session_chat_start(s, question, 1, &o);
  char reply[1024];
  CHECK(gm_drain(g, NULL, 0, reply, sizeof reply) > 0, "turn 1: %s", gm_err());
  gm_generation_free(g);
  gm_message turn2[] = {question[0], {"assistant", reply}, {"user", "And of Italy?"}};
  g = gm_session_chat_start(s, turn2, 3, &o);
  char text[1024];
  CHECK(gm_drain(g, NULL, 0, text, sizeof text) > 0, "turn 2: %s", gm_err());
  CHECK(strstr(text, "Rome") != NULL, "turn 2 text '%s'", text);
  gm_metrics m;
  memset(&m, 0, sizeof m);
  m.struct_size = sizeof m;
  CHECK(gm_generation_metrics(g, &m) == GM_OK, "metrics");
  CHECK(m.prompt_tokens_evaluated < m.prompt_tokens, "the session reused its cache: %zu of %zu evaluated", m.prompt_tokens_evaluated, m.prompt_tokens);
  gm_generation_free(g);
  gm_session_free(s);
  gm_session_free(s);
  CHECK_ERR("not a live handle");
}

static void test_classify(void) {
  const char *prompts[] = {"The capital of France is", "The capital of England is", "The capital of Italy is"};
  const char *labels[] = {" Paris", " London", " Rome"};
  gm_classify_options co;
  memset(&co, 0, sizeof co);
  co.struct_size = sizeof co;
  co.labels = labels;
  co.n_labels = 3;
  co.logprobs = true;
  gm_classify_result r;
  memset(&r, 0, sizeof r);
  r.struct_size = sizeof r;
  gm_batch_metrics bm;
  memset(&bm, 0, sizeof bm);
  bm.struct_size = sizeof bm;
  CHECK(gm_classify(model, prompts, 3, &co, &r, &bm) == GM_OK, "classify: %s", gm_err());
  CHECK(r.n == 3 && r.n_labels == 3 && r.labels && r.label_probs, "classify shape");
  for (size_t i = 0; i < r.n && r.labels; i++) {
    CHECK(r.labels[i] == (int32_t)i, "prompt %zu labelled %d", i, r.labels[i]);
    float sum = 0;
    for (size_t k = 0; k < r.n_labels; k++) sum += r.label_probs[i * r.n_labels + k];
    CHECK(fabsf(sum - 1.0f) < 1e-4f, "label probs sum %f", sum);
    CHECK(strcmp(r.texts[i], labels[i]) == 0, "text '%s'", r.texts[i]);
  }
  CHECK(bm.prompts == 3 && bm.batches >= 1 && bm.prompts_per_s > 0 && bm.shared_prefix_tokens > 0, "classify metrics (shared prefix %zu)", bm.shared_prefix_tokens);
  gm_classify_result_free(&r);

  /* No labels: the whole vocabulary. */
  CHECK(gm_classify(model, prompts, 1, NULL, &r, NULL) == GM_OK, "classify: %s", gm_err());
  CHECK(r.n == 1 && strcmp(r.texts[0], " Paris") == 0 && r.logprobs == NULL && r.logits == NULL, "free classify '%s'", r.n ? r.texts[0] : "");
  gm_classify_result_free(&r);
}

static void test_batch(void) {
  const char *prompts[] = {"The capital of France is", "One, two, three,"};
  gm_generate_options o = gm_gen_opts(6);
  gm_batch_result br;
  memset(&br, 0, sizeof br);
  br.struct_size = sizeof br;
  gm_batch_metrics bm;
  memset(&bm, 0, sizeof bm);
  bm.struct_size = sizeof bm;
  CHECK(gm_batch_generate(model, prompts, 2, &o, &br, &bm) == GM_OK, "batch: %s", gm_err());
  CHECK(br.n == 2, "batch n");
  for (size_t i = 0; i < br.n; i++) {
    /* Each row equals its own greedy generation. */
    gm_generation *g = gm_generate_start(model, prompts[i], &o);
    uint32_t ids[16];
    char text[512];
    int n = gm_drain(g, ids, 16, text, sizeof text);
    gm_generation_free(g);
    size_t a = br.token_offsets[i], b = br.token_offsets[i + 1];
    CHECK((size_t)n == b - a && memcmp(ids, br.tokens + a, (size_t)n * sizeof(uint32_t)) == 0, "batch row %zu differs from its generation", i);
    CHECK(strcmp(text, br.texts[i]) == 0, "batch text '%s' vs '%s'", br.texts[i], text);
    CHECK(br.finish_reasons[i] == GM_FINISH_LENGTH, "finish %d", br.finish_reasons[i]);
  }
  CHECK(bm.prompts == 2 && bm.generated_tokens == 12, "batch metrics: %zu generated", bm.generated_tokens);
  gm_batch_result_free(&br);
}

static atomic_int seen;

static void *canceller(void *arg) {
  while (atomic_load(&seen) < 3) {
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  gm_generation_cancel((gm_generation *)arg);
  return NULL;
}

static void test_cancel(void) {
  gm_generate_options o = gm_gen_opts(1500);
  o.ignore_eos = true;
  gm_generation *g = gm_chat_start(model, question, 1, &o);
  CHECK(g != NULL, "start: %s", gm_err());
  atomic_store(&seen, 0);
  pthread_t th;
  pthread_create(&th, NULL, canceller, g);
  gm_token t = gm_tok();
  int rc, n = 0;
  while ((rc = gm_generate_next(g, &t)) == 1) {
    n++;
    atomic_store(&seen, n);
  }
  pthread_join(th, NULL);
  CHECK(rc == 0, "cancelled run ends normally: %s", gm_err());
  CHECK(n >= 3 && n < 100, "%d tokens before the cancel took effect", n);
  CHECK(gm_generation_finish_reason(g) == GM_FINISH_CANCELLED, "finish %d", gm_generation_finish_reason(g));
  gm_metrics m;
  memset(&m, 0, sizeof m);
  m.struct_size = sizeof m;
  CHECK(gm_generation_metrics(g, &m) == GM_OK && m.finish_reason == GM_FINISH_CANCELLED, "cancel metrics");
  gm_generation_cancel(g); /* after the end: no-op */
  CHECK(gm_last_error() == NULL, "cancel after the end: %s", gm_err());
  gm_generation_free(g);

  /* Free while running cancels it; cancel before the first next works too. */
  g = gm_chat_start(model, question, 1, &o);
  gm_generation_cancel(g);
  n = gm_drain(g, NULL, 0, NULL, 0);
  CHECK(n >= 0 && n < 100 && gm_generation_finish_reason(g) == GM_FINISH_CANCELLED, "cancel before next: %d", n);
  gm_generation_free(g);
  g = gm_chat_start(model, question, 1, &o);
  gm_generation_free(g);
}

#define THREADS 4

static void *chat_worker(void *arg) {
  (void)arg;
  gm_generate_options o = gm_gen_opts(32);
  gm_generation *g = gm_chat_start(model, question, 1, &o);
  char text[1024];
  int n = gm_drain(g, NULL, 0, text, sizeof text);
  gm_generation_free(g);
  return (void *)(intptr_t)(n > 0 && strcmp(text, "The capital of France is Paris.") == 0);
}

static void test_threads(void) {
  pthread_t th[THREADS];
  for (int i = 0; i < THREADS; i++) pthread_create(&th[i], NULL, chat_worker, NULL);
  int ok = 0;
  for (int i = 0; i < THREADS; i++) {
    void *r;
    pthread_join(th[i], &r);
    ok += (int)(intptr_t)r;
  }
  CHECK(ok == THREADS, "%d of %d concurrent chats answered Paris", ok, THREADS);
}

/* Different prompts on 8 threads: each thread's text is the one it gets alone,
 * and the streams shared decode steps (continuous batching). */
#define BATCH_THREADS 8

struct batch_job {
  char prompt[128];
  char text[1024];
  size_t rows;
  int n;
};

static void run_job(struct batch_job *j) {
  gm_message m = {"user", j->prompt};
  gm_generate_options o = gm_gen_opts(10 + strlen(j->prompt) % 7);
  gm_generation *g = gm_chat_start(model, &m, 1, &o);
  j->n = g ? gm_drain(g, NULL, 0, j->text, sizeof j->text) : -1;
  gm_metrics mt;
  memset(&mt, 0, sizeof mt);
  mt.struct_size = sizeof mt;
  j->rows = (g && gm_generation_metrics(g, &mt) == GM_OK) ? mt.batch_rows_max : 0;
  gm_generation_free(g);
}

static void *batch_worker(void *arg) {
  run_job(arg);
  return NULL;
}

static void test_threads_match_solo(void) {
  static const char *topics[BATCH_THREADS] = {"France", "Japan", "a volcano", "the moon", "Peru", "bread", "rivers", "Norway"};
  struct batch_job alone[BATCH_THREADS], together[BATCH_THREADS];
  for (int i = 0; i < BATCH_THREADS; i++) {
    snprintf(alone[i].prompt, sizeof alone[i].prompt, i % 2 ? "Tell me one fact about %s." : "What is %s known for?", topics[i]);
    together[i] = alone[i];
    run_job(&alone[i]);
  }
  pthread_t th[BATCH_THREADS];
  for (int i = 0; i < BATCH_THREADS; i++) pthread_create(&th[i], NULL, batch_worker, &together[i]);
  size_t shared = 0;
  for (int i = 0; i < BATCH_THREADS; i++) {
    pthread_join(th[i], NULL);
    CHECK(together[i].n > 0 && strcmp(together[i].text, alone[i].text) == 0, "thread %d: '%s' vs alone '%s'", i, together[i].text, alone[i].text);
    if (together[i].rows > shared) shared = together[i].rows;
  }
  CHECK(shared >= 2, "at most %zu streams shared a step", shared);
}

static void test_close_with_live_generation(const char *path, size_t baseline) {
  gm_model *m = gm_model_load(path, NULL);
  CHECK(m != NULL, "load: %s", gm_err());
  gm_generate_options o = gm_gen_opts(1500);
  o.ignore_eos = true;
  gm_generation *g = gm_chat_start(m, question, 1, &o);
  gm_session *s = gm_session_new(m);
  gm_token t = gm_tok();
  CHECK(gm_generate_next(g, &t) == 1, "first token: %s", gm_err());
  gm_model_close(m);
  int rc, n = 0;
  while ((rc = gm_generate_next(g, &t)) == 1) n++;
  CHECK(rc == -1 && gm_err_has("the model was closed"), "after close: rc %d, %s", rc, gm_err());
  CHECK(n < 100, "%d tokens after close", n);
  CHECK(gm_generate_next(g, &t) == 0, "next after the error returns 0");
  CHECK(gm_generation_finish_reason(g) == GM_FINISH_ERROR, "finish %d", gm_generation_finish_reason(g));
  CHECK(gm_session_chat_start(s, question, 1, &o) == NULL && gm_err_has("closed"), "session of a closed model: %s", gm_err());
  gm_generation_free(g);
  gm_session_free(s);
  CHECK(gm_model_info(m, NULL) == GM_ERROR && gm_err_has("not a live handle"), "closed model: %s", gm_err());
  gm_clear_cache();
  CHECK(gm_memory_active() == baseline, "memory after close %zu, baseline %zu", gm_memory_active(), baseline);
}

int main(void) {
  char path[1024], model_path[1024];
  int n = gm_read_expected(gm_path(path, sizeof path, "tests/c/expected.txt"), cases, GM_MAX_CASES);
  want = gm_find_case(cases, n, "smollm2_chat");
  CHECK(want != NULL, "no smollm2_chat in %s", path);
  if (!want) return gm_check_summary();
  gm_path(model_path, sizeof model_path, ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf");
  size_t baseline = gm_memory_active();
  gm_load_options lo;
  memset(&lo, 0, sizeof lo);
  lo.struct_size = sizeof lo;
  lo.context_length = 2048;
  lo.cache_limit = (size_t)1 << 30;
  model = gm_model_load(model_path, &lo);
  CHECK(model != NULL, "load %s: %s", model_path, gm_err());
  if (!model) return gm_check_summary();
  test_info();
  test_chat();
  test_generate_text_and_stop();
  test_session();
  test_classify();
  test_batch();
  test_cancel();
  test_threads();
  test_threads_match_solo();
  gm_model_close(model);
  gm_clear_cache();
  CHECK(gm_memory_active() == baseline, "memory after close %zu, baseline %zu", gm_memory_active(), baseline);
  test_close_with_live_generation(model_path, baseline);
  return gm_check_summary();
}
