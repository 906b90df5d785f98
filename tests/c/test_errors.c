/* Every bad input through the C ABI gives an error code and a message, never
 * a crash or a leak: NULLs, invalid UTF-8, wrong struct_size, freed and
 * foreign handles, double frees, next after the end, bad options. */
#include "util.h"

#include <stddef.h>

static const char bad_utf8[] = {'a', (char)0xff, 'b', 0};
static const gm_message question[] = {{"user", "What is the capital of France?"}};

static void test_load_errors(const char *fixture) {
  CHECK(gm_model_load(NULL, NULL) == NULL, "NULL path");
  CHECK_ERR("path is NULL");
  CHECK(gm_model_load(bad_utf8, NULL) == NULL, "bad UTF-8 path");
  CHECK_ERR("UTF-8");
  CHECK(gm_model_load("/nonexistent/model", NULL) == NULL, "missing model");
  CHECK(gm_last_error() != NULL && strlen(gm_last_error()) > 0, "missing model has a message");

  gm_load_options lo;
  memset(&lo, 0, sizeof lo);
  lo.struct_size = 8;
  CHECK(gm_model_load(fixture, &lo) == NULL, "struct_size too small");
  CHECK_ERR("gm_load_options.struct_size is 8");
  lo.struct_size = sizeof lo;
  lo.adapter_path = "/nonexistent/adapters";
  CHECK(gm_model_load(fixture, &lo) == NULL, "missing adapter path");
  CHECK_ERR("adapter path /nonexistent/adapters: no such directory");
  lo.adapter_path = bad_utf8;
  CHECK(gm_model_load(fixture, &lo) == NULL, "adapter path UTF-8");
  CHECK_ERR("gm_load_options.adapter_path is not valid UTF-8");
  lo.adapter_path = NULL;
  lo.device = 7;
  CHECK(gm_model_load(fixture, &lo) == NULL, "device 7");
  CHECK_ERR("gm_load_options.device is 7");
  lo.device = GM_DEVICE_CPU;
  lo.dtype = "int4";
  CHECK(gm_model_load(fixture, &lo) == NULL, "dtype int4");
  CHECK_ERR("unknown dtype");
  lo.dtype = bad_utf8;
  CHECK(gm_model_load(fixture, &lo) == NULL, "dtype UTF-8");
  CHECK_ERR("gm_load_options.dtype is not valid UTF-8");
  int32_t gpu = 0;
  gm_device_available("gpu", &gpu);
  if (!gpu) {
    lo.dtype = NULL;
    lo.device = GM_DEVICE_GPU;
    CHECK(gm_model_load(fixture, &lo) == NULL, "gpu without a gpu");
    CHECK_ERR("no GPU");
  }

  /* A newer caller's larger struct is accepted; only known fields are read. */
  struct {
    gm_load_options o;
    char future[64];
  } big;
  memset(&big, 0xab, sizeof big);
  memset(&big.o, 0, sizeof big.o);
  big.o.struct_size = sizeof big;
  big.o.device = GM_DEVICE_CPU;
  big.o.dtype = "float32";
  gm_model *m = gm_model_load(fixture, &big.o);
  CHECK(m != NULL, "larger struct_size: %s", gm_err());
  struct {
    gm_info i;
    char future[32];
  } info;
  memset(&info, 0x5a, sizeof info);
  info.i.struct_size = sizeof info;
  CHECK(gm_model_info(m, &info.i) == GM_OK, "larger info: %s", gm_err());
  CHECK(info.i.struct_size == sizeof info && info.future[0] == 0x5a && info.future[31] == 0x5a, "only known fields written");
  CHECK(strcmp(info.i.dtype, "float32") == 0, "dtype override: %s", info.i.dtype);
  gm_model_close(m);
}

static void test_handle_errors(void) {
  gm_info info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  CHECK(gm_model_info(NULL, &info) == GM_ERROR, "info NULL");
  CHECK_ERR("gm_model is NULL");
  int not_a_model = 0;
  CHECK(gm_model_info((gm_model *)&not_a_model, &info) == GM_ERROR, "foreign pointer");
  CHECK_ERR("not a live handle");
  gm_model_close(NULL);
  CHECK(gm_last_error() == NULL, "close(NULL) is a no-op");
  gm_model_close((gm_model *)&not_a_model);
  CHECK_ERR("not a live handle");
  gm_generation_free(NULL);
  gm_generation_cancel(NULL);
  gm_session_free(NULL);
  gm_classify_result_free(NULL);
  gm_batch_result_free(NULL);
  gm_discover_result_free(NULL);
  CHECK(gm_last_error() == NULL, "NULL frees are no-ops");
  gm_token t = gm_tok();
  CHECK(gm_generate_next(NULL, &t) == GM_ERROR, "next(NULL)");
  CHECK_ERR("gm_generation is NULL");
  CHECK(gm_generation_finish_reason(NULL) == GM_ERROR, "finish_reason(NULL)");
  gm_metrics mt;
  memset(&mt, 0, sizeof mt);
  mt.struct_size = sizeof mt;
  CHECK(gm_generation_metrics(NULL, &mt) == GM_ERROR, "metrics(NULL)");
  gm_generation_free((gm_generation *)&not_a_model);
  CHECK_ERR("not a live handle");
  CHECK(gm_session_new(NULL) == NULL, "session_new(NULL)");
  CHECK(gm_generate_start(NULL, "x", NULL) == NULL, "start on NULL model");
  CHECK_ERR("gm_model is NULL");

  gm_discover_result d;
  memset(&d, 0, sizeof d);
  d.struct_size = sizeof d;
  CHECK(gm_discover(NULL, &d) == GM_ERROR, "discover(NULL)");
  CHECK_ERR("dir is NULL");
  CHECK(gm_discover("/nonexistent", &d) == GM_ERROR && d.n == 0 && d.owner == NULL, "discover missing dir");
  CHECK_ERR("not a directory");
  CHECK(gm_discover(bad_utf8, &d) == GM_ERROR, "discover UTF-8");
  CHECK(gm_discover("/tmp", NULL) == GM_ERROR, "discover out NULL");
  CHECK_ERR("out is NULL");
  d.struct_size = 1;
  CHECK(gm_discover("/tmp", &d) == GM_ERROR, "discover struct_size");
  CHECK_ERR("gm_discover_result.struct_size");
  gm_discover_result_free(&d);
  CHECK_ERR("gm_discover_result.struct_size");
}

static void test_generation_errors(gm_model *fixture, gm_model *chat) {
  uint32_t ids[] = {1, 2, 3};
  gm_generate_options o = gm_gen_opts(4);

  /* No tokenizer on the fixture model. */
  CHECK(gm_generate_start(fixture, "hello", &o) == NULL, "text prompt without a tokenizer");
  CHECK_ERR("no tokenizer");
  CHECK(gm_chat_start(fixture, question, 1, &o) == NULL, "chat without a tokenizer");
  CHECK_ERR("no tokenizer");

  /* Prompt arguments. */
  CHECK(gm_generate_start(chat, NULL, &o) == NULL, "NULL prompt");
  CHECK_ERR("prompt is NULL");
  CHECK(gm_generate_start(chat, bad_utf8, &o) == NULL, "UTF-8 prompt");
  CHECK_ERR("prompt is not valid UTF-8");
  CHECK(gm_generate_tokens_start(fixture, NULL, 3, &o) == NULL, "NULL ids");
  CHECK_ERR("ids is NULL");
  CHECK(gm_generate_tokens_start(fixture, ids, 0, &o) == NULL, "empty ids");
  CHECK_ERR("empty");
  uint32_t big[] = {1, 4000000};
  CHECK(gm_generate_tokens_start(fixture, big, 2, &o) == NULL, "id outside the vocabulary");
  CHECK_ERR("outside the vocabulary");
  CHECK(gm_chat_start(chat, question, 0, &o) == NULL, "no messages");
  CHECK_ERR("at least one message");
  CHECK(gm_chat_start(chat, NULL, 2, &o) == NULL, "NULL messages");
  CHECK_ERR("messages is NULL");
  gm_message bad[] = {{NULL, "x"}};
  CHECK(gm_chat_start(chat, bad, 1, &o) == NULL, "NULL role");
  CHECK_ERR("messages[0].role is NULL");
  gm_message bad2[] = {{"user", bad_utf8}};
  CHECK(gm_chat_start(chat, bad2, 1, &o) == NULL, "UTF-8 content");
  CHECK_ERR("messages[0].content is not valid UTF-8");

  /* Options. */
  gm_generate_options b = o;
  /* Smaller than the first release's struct (which ended at chat_template_args). */
  b.struct_size = offsetof(gm_generate_options, constraint) - 1;
  CHECK(gm_generate_tokens_start(fixture, ids, 3, &b) == NULL, "small struct_size");
  CHECK_ERR("gm_generate_options.struct_size");
  b = o;
  b.temperature = -1;
  CHECK(gm_generate_tokens_start(fixture, ids, 3, &b) == NULL, "temperature -1");
  CHECK_ERR("temperature");
  b = o;
  b.top_p = 2;
  CHECK(gm_generate_tokens_start(fixture, ids, 3, &b) == NULL, "top_p 2");
  CHECK_ERR("top_p");
  b = o;
  b.top_logprobs = 3;
  CHECK(gm_generate_tokens_start(fixture, ids, 3, &b) == NULL, "top_logprobs without logprobs");
  CHECK(gm_last_error() != NULL, "top_logprobs without logprobs: error");
  b = o;
  b.n_stop = 2;
  CHECK(gm_generate_start(chat, "x", &b) == NULL, "NULL stop list");
  CHECK_ERR("gm_generate_options.stop is NULL");
  const char *stops[] = {"ok", bad_utf8};
  b.stop = stops;
  CHECK(gm_generate_start(chat, "x", &b) == NULL, "UTF-8 stop");
  CHECK_ERR("gm_generate_options.stop[1] is not valid UTF-8");
  b = o;
  b.n_logit_bias = 1;
  CHECK(gm_generate_start(chat, "x", &b) == NULL, "NULL logit bias");
  CHECK_ERR("logit_bias is NULL");
  b = o;
  b.chat_template_args = "not json";
  CHECK(gm_chat_start(chat, question, 1, &b) == NULL, "template args not JSON");
  CHECK_ERR("not JSON");
  b.chat_template_args = "[1]";
  CHECK(gm_chat_start(chat, question, 1, &b) == NULL, "template args not an object");
  CHECK_ERR("JSON object");
  gm_generation *d = gm_generate_tokens_start(fixture, ids, 3, NULL);
  CHECK(d != NULL, "NULL options are the defaults: %s", gm_err());
  gm_generation_free(d);

  /* A generation's life: bad out struct, next after the end, double free. */
  gm_generation *g = gm_generate_tokens_start(fixture, ids, 3, &o);
  CHECK(g != NULL, "start: %s", gm_err());
  gm_token t = gm_tok();
  CHECK(gm_generate_next(g, NULL) == GM_ERROR, "next out NULL");
  CHECK_ERR("out is NULL");
  t.struct_size = 4;
  CHECK(gm_generate_next(g, &t) == GM_ERROR, "token struct_size");
  CHECK_ERR("gm_token.struct_size is 4");
  t.struct_size = sizeof t;
  gm_metrics m;
  memset(&m, 0, sizeof m);
  m.struct_size = sizeof m;
  CHECK(gm_generation_metrics(g, &m) == GM_ERROR, "metrics before the end");
  CHECK_ERR("has not finished");
  CHECK(gm_generation_finish_reason(g) == GM_FINISH_NONE, "running");
  int n = 0;
  while (gm_generate_next(g, &t) == 1) n++;
  CHECK(n == 4, "%d tokens", n);
  for (int i = 0; i < 3; i++) CHECK(gm_generate_next(g, &t) == 0, "next after the end returns 0");
  m.struct_size = 0;
  CHECK(gm_generation_metrics(g, &m) == GM_ERROR, "metrics struct_size 0");
  CHECK_ERR("gm_metrics.struct_size is 0");
  CHECK(gm_generation_metrics(g, NULL) == GM_ERROR, "metrics NULL");
  gm_generation_free(g);
  CHECK(gm_last_error() == NULL, "free: %s", gm_err());
  gm_generation_free(g);
  CHECK_ERR("not a live handle");
  CHECK(gm_generate_next(g, &t) == GM_ERROR, "next on a freed generation");
  CHECK_ERR("not a live handle");
  gm_generation_cancel(g);
  CHECK_ERR("not a live handle");

  /* Sessions: one generation at a time. */
  gm_session *s = gm_session_new(chat);
  gm_generate_options lo = gm_gen_opts(200);
  lo.ignore_eos = true;
  gm_generation *g1 = gm_session_chat_start(s, question, 1, &lo);
  gm_generation *g2 = gm_session_chat_start(s, question, 1, &lo);
  CHECK(g1 && g2, "both start (the engine reports the conflict): %s", gm_err());
  CHECK(gm_generate_next(g2, &t) == GM_ERROR, "second generation in a session");
  CHECK_ERR("already has a generation running");
  gm_generation_free(g1);
  gm_generation_free(g2);
  gm_session_free(s);
  CHECK(gm_session_chat_start(s, question, 1, &lo) == NULL, "freed session");
  CHECK_ERR("not a live handle");
}

static void test_batch_errors(gm_model *fixture, gm_model *chat) {
  gm_classify_result r;
  memset(&r, 0, sizeof r);
  r.struct_size = sizeof r;
  gm_batch_metrics bm;
  memset(&bm, 0, sizeof bm);
  bm.struct_size = sizeof bm;
  const char *prompts[] = {"a", "b"};
  CHECK(gm_classify(chat, NULL, 2, NULL, &r, NULL) == GM_ERROR, "classify NULL prompts");
  CHECK_ERR("prompts is NULL");
  const char *badp[] = {"a", bad_utf8};
  CHECK(gm_classify(chat, badp, 2, NULL, &r, NULL) == GM_ERROR, "classify UTF-8");
  CHECK_ERR("prompts[1] is not valid UTF-8");
  CHECK(gm_classify(chat, prompts, 2, NULL, NULL, NULL) == GM_ERROR, "classify out NULL");
  CHECK_ERR("out is NULL");
  r.struct_size = 3;
  CHECK(gm_classify(chat, prompts, 2, NULL, &r, NULL) == GM_ERROR, "classify result struct_size");
  CHECK_ERR("gm_classify_result.struct_size is 3");
  r.struct_size = sizeof r;
  bm.struct_size = 0;
  CHECK(gm_classify(chat, prompts, 2, NULL, &r, &bm) == GM_ERROR, "classify metrics struct_size");
  CHECK_ERR("gm_batch_metrics.struct_size is 0");
  bm.struct_size = sizeof bm;
  gm_classify_options co;
  memset(&co, 0, sizeof co);
  co.struct_size = sizeof co;
  const char *same[] = {" Paris", " Paris is"};
  co.labels = same;
  co.n_labels = 2;
  CHECK(gm_classify(chat, prompts, 2, &co, &r, &bm) == GM_ERROR, "labels with one first token");
  CHECK_ERR("start with the same token");
  co.n_labels = 0;
  CHECK(gm_classify(chat, prompts, 2, &co, &r, &bm) == GM_ERROR, "labels with n_labels 0");
  CHECK_ERR("n_labels is 0");
  co.labels = NULL;
  co.n_labels = 1;
  CHECK(gm_classify(chat, prompts, 2, &co, &r, &bm) == GM_ERROR, "NULL labels");
  CHECK_ERR("gm_classify_options.labels is NULL");
  CHECK(gm_classify(fixture, prompts, 2, NULL, &r, NULL) == GM_ERROR, "classify text without a tokenizer");
  CHECK_ERR("no tokenizer");
  co.labels = same;
  uint32_t ids[] = {1, 2};
  const uint32_t *tp[] = {ids};
  size_t lens[] = {2};
  CHECK(gm_classify_tokens(fixture, tp, lens, 1, &co, &r, NULL) == GM_ERROR, "token classify with labels");
  CHECK_ERR("does not take labels");
  CHECK(gm_classify_tokens(fixture, tp, NULL, 1, NULL, &r, NULL) == GM_ERROR, "NULL lens");
  CHECK_ERR("lens is NULL");
  size_t zero[] = {0};
  CHECK(gm_classify_tokens(fixture, tp, zero, 1, NULL, &r, NULL) == GM_ERROR, "empty token prompt");
  CHECK_ERR("empty");
  CHECK(r.owner == NULL && r.n == 0, "failed classify leaves the result empty");
  gm_classify_result_free(&r);
  CHECK(gm_last_error() == NULL, "free of an empty result");

  /* Double free through a copy is detected. */
  CHECK(gm_classify_tokens(fixture, tp, lens, 1, NULL, &r, NULL) == GM_OK, "classify: %s", gm_err());
  gm_classify_result copy = r;
  gm_classify_result_free(&r);
  gm_classify_result_free(&copy);
  CHECK_ERR("already freed");

  gm_batch_result br;
  memset(&br, 0, sizeof br);
  br.struct_size = sizeof br;
  CHECK(gm_batch_generate(chat, prompts, 0, NULL, &br, NULL) == GM_ERROR, "batch of none");
  CHECK_ERR("at least one");
  CHECK(gm_batch_generate(chat, NULL, 1, NULL, &br, NULL) == GM_ERROR, "batch NULL prompts");
  gm_generate_options o = gm_gen_opts(2);
  o.temperature = NAN;
  CHECK(gm_batch_generate(chat, prompts, 2, &o, &br, NULL) == GM_ERROR, "batch NaN temperature");
  CHECK_ERR("temperature");
  o.temperature = 0;
  CHECK(gm_batch_generate_tokens(fixture, tp, lens, 1, &o, &br, &bm) == GM_OK, "batch: %s", gm_err());
  gm_batch_result bcopy = br;
  gm_batch_result_free(&br);
  gm_batch_result_free(&br);
  CHECK(gm_last_error() == NULL, "second free of the same struct is a no-op");
  gm_batch_result_free(&bcopy);
  CHECK_ERR("already freed");
}

int main(void) {
  char fixture_path[1024], chat_path[1024];
  gm_path(fixture_path, sizeof fixture_path, "tests/fixtures/models/llama_tied");
  gm_path(chat_path, sizeof chat_path, ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf");
  size_t baseline = gm_memory_active();
  test_load_errors(fixture_path);
  test_handle_errors();
  gm_model *fixture = gm_model_load(fixture_path, NULL);
  gm_model *chat = gm_model_load(chat_path, NULL);
  CHECK(fixture && chat, "load: %s", gm_err());
  if (fixture && chat) {
    test_generation_errors(fixture, chat);
    test_batch_errors(fixture, chat);
  }
  gm_model_close(fixture);
  gm_model_close(chat);
  gm_model_close(chat);
  CHECK_ERR("not a live handle");
  gm_clear_cache();
  CHECK(gm_memory_active() == baseline, "memory after close %zu, baseline %zu", gm_memory_active(), baseline);
  return gm_check_summary();
}
