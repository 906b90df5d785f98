/* The oracle fixture models through the C ABI: greedy ids equal mlx-lm's
 * (tests/c/expected.txt), classify's arg-max is the first greedy token,
 * batch generate matches, metrics add up, memory returns to its baseline. */
#include "util.h"
#include "expected.h"

static gm_case cases[GM_MAX_CASES];

static void test_case(const gm_case *c) {
  char dir[1024], rel[256];
  snprintf(rel, sizeof rel, "tests/fixtures/models/%s", c->name);
  gm_path(dir, sizeof dir, rel);
  size_t baseline = gm_memory_active();

  gm_load_options lo;
  memset(&lo, 0, sizeof lo);
  lo.struct_size = sizeof lo;
  lo.device = GM_DEVICE_CPU;
  gm_model *m = gm_model_load(dir, &lo);
  CHECK(m != NULL, "%s: load: %s", c->name, gm_err());
  if (!m) return;

  gm_info info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  CHECK(gm_model_info(m, &info) == GM_OK, "%s: info: %s", c->name, gm_err());
  CHECK(info.vocab_size > 0 && info.num_layers > 0 && info.hidden_size > 0, "%s: info sizes", c->name);
  CHECK(!info.has_tokenizer, "%s: fixtures have no tokenizer", c->name);
  CHECK(info.device && strcmp(info.device, "cpu") == 0, "%s: device %s", c->name, info.device);
  CHECK(info.architecture && strlen(info.architecture) > 0, "%s: architecture", c->name);
  CHECK(gm_memory_active() > baseline, "%s: weights not in memory", c->name);

  /* Greedy generation equals mlx-lm's. */
  gm_generate_options go = gm_gen_opts(c->n_greedy);
  go.ignore_eos = true;
  gm_generation *g = gm_generate_tokens_start(m, c->inputs, c->n_inputs, &go);
  CHECK(g != NULL, "%s: start: %s", c->name, gm_err());
  if (g) {
    uint32_t ids[GM_MAX_IDS];
    int n = gm_drain(g, ids, GM_MAX_IDS, NULL, 0);
    CHECK(n == (int)c->n_greedy, "%s: %d tokens, want %zu (%s)", c->name, n, c->n_greedy, gm_err());
    int same = n == (int)c->n_greedy && memcmp(ids, c->greedy, c->n_greedy * sizeof(uint32_t)) == 0;
    CHECK(same, "%s: greedy ids differ from mlx-lm", c->name);
    gm_token t = gm_tok();
    CHECK(gm_generate_next(g, &t) == 0, "%s: next after the end must return 0 again", c->name);
    gm_metrics mt;
    memset(&mt, 0, sizeof mt);
    mt.struct_size = sizeof mt;
    CHECK(gm_generation_metrics(g, &mt) == GM_OK, "%s: metrics: %s", c->name, gm_err());
    CHECK(mt.finish_reason == GM_FINISH_LENGTH, "%s: finish %d", c->name, mt.finish_reason);
    CHECK(gm_generation_finish_reason(g) == GM_FINISH_LENGTH, "%s: finish_reason()", c->name);
    CHECK(mt.prompt_tokens == c->n_inputs && mt.prompt_tokens_evaluated == c->n_inputs, "%s: prompt tokens %zu", c->name, mt.prompt_tokens);
    CHECK(mt.generated_tokens == c->n_greedy, "%s: generated %zu", c->name, mt.generated_tokens);
    CHECK(mt.prefill_tokens_per_s > 0 && mt.decode_tokens_per_s > 0 && mt.time_to_first_token_s > 0, "%s: rates", c->name);
    CHECK(mt.peak_memory_bytes >= mt.active_memory_bytes && mt.active_memory_bytes > 0, "%s: memory metrics", c->name);
    gm_generation_free(g);
  }

  /* Classify: the arg-max next token is the first greedy token. */
  const uint32_t *prompts[2] = {c->inputs, c->inputs};
  size_t lens[2] = {c->n_inputs, c->n_inputs - 1};
  gm_classify_options co;
  memset(&co, 0, sizeof co);
  co.struct_size = sizeof co;
  co.logprobs = true;
  co.logits = true;
  gm_classify_result cr;
  memset(&cr, 0, sizeof cr);
  cr.struct_size = sizeof cr;
  gm_batch_metrics bm;
  memset(&bm, 0, sizeof bm);
  bm.struct_size = sizeof bm;
  CHECK(gm_classify_tokens(m, prompts, lens, 2, &co, &cr, &bm) == GM_OK, "%s: classify: %s", c->name, gm_err());
  CHECK(cr.n == 2 && cr.tokens && cr.tokens[0] == c->greedy[0], "%s: classify token %u, want %u", c->name, cr.n ? cr.tokens[0] : 0, c->greedy[0]);
  CHECK(cr.logprobs && cr.logprobs[0] <= 0 && !isnan(cr.logprobs[0]), "%s: classify logprob", c->name);
  CHECK(cr.labels == NULL && cr.n_labels == 0, "%s: no labels", c->name);
  CHECK(cr.n_logits == info.vocab_size && cr.logits, "%s: n_logits %zu", c->name, cr.n_logits);
  if (cr.logits && cr.n_logits == info.vocab_size) {
    size_t best = 0;
    for (size_t i = 1; i < cr.n_logits; i++)
      if (cr.logits[i] > cr.logits[best]) best = i;
    CHECK(best == c->greedy[0], "%s: arg-max of logits %zu", c->name, best);
  }
  CHECK(bm.prompts == 2 && bm.prompt_tokens == 2 * c->n_inputs - 1 && bm.prompts_per_s > 0, "%s: classify metrics", c->name);
  gm_classify_result_free(&cr);
  CHECK(cr.owner == NULL && cr.n == 0 && cr.tokens == NULL, "%s: free empties the result", c->name);
  gm_classify_result_free(&cr); /* a no-op */

  /* Batch generate: two equal rows give the greedy ids each. */
  gm_batch_result br;
  memset(&br, 0, sizeof br);
  br.struct_size = sizeof br;
  size_t full[2] = {c->n_inputs, c->n_inputs};
  CHECK(gm_batch_generate_tokens(m, prompts, full, 2, &go, &br, &bm) == GM_OK, "%s: batch: %s", c->name, gm_err());
  CHECK(br.n == 2, "%s: batch n %zu", c->name, br.n);
  for (size_t r = 0; r < br.n; r++) {
    size_t a = br.token_offsets[r], b = br.token_offsets[r + 1];
    CHECK(b - a == c->n_greedy, "%s: batch row %zu has %zu tokens", c->name, r, b - a);
    if (b - a == c->n_greedy) {
      /* Batched matmuls may round apart from single-row ones: require a long common prefix. */
      size_t same = 0;
      while (same < c->n_greedy && br.tokens[a + same] == c->greedy[same]) same++;
      CHECK(same >= 8, "%s: batch row %zu agrees for %zu tokens", c->name, r, same);
    }
    CHECK(br.finish_reasons[r] == GM_FINISH_LENGTH, "%s: batch finish %d", c->name, br.finish_reasons[r]);
  }
  CHECK(bm.generated_tokens == 2 * c->n_greedy, "%s: batch generated %zu", c->name, bm.generated_tokens);
  gm_batch_result_free(&br);
  gm_batch_result_free(&br);

  gm_model_close(m);
  CHECK(gm_last_error() == NULL, "%s: close: %s", c->name, gm_err());
  gm_clear_cache();
  CHECK(gm_memory_active() == baseline, "%s: memory after close %zu, baseline %zu", c->name, gm_memory_active(), baseline);
}

int main(void) {
  char path[1024];
  int n = gm_read_expected(gm_path(path, sizeof path, "tests/c/expected.txt"), cases, GM_MAX_CASES);
  CHECK(n > 1, "cannot read %s", path);
  int models = 0;
  for (int i = 0; i < n; i++) {
    if (strcmp(cases[i].name, "smollm2_chat") == 0) continue;
    test_case(&cases[i]);
    models++;
  }
  CHECK(models >= 10, "only %d fixture models", models);

  gm_discover_result d;
  memset(&d, 0, sizeof d);
  d.struct_size = sizeof d;
  CHECK(gm_discover(gm_path(path, sizeof path, "tests/fixtures/models"), &d) == GM_OK, "discover: %s", gm_err());
  CHECK(d.n == (size_t)models, "discover found %zu of %d", d.n, models);
  for (size_t i = 0; i < d.n; i++) {
    CHECK(strstr(d.paths[i], "tests/fixtures/models/") != NULL && strlen(d.architectures[i]) > 0, "discover entry %zu", i);
    CHECK((strstr(d.paths[i], "_q4") != NULL) == (d.quant_bits[i] == 4), "discover bits of %s: %d", d.paths[i], d.quant_bits[i]);
  }
  gm_discover_result_free(&d);
  gm_discover_result_free(&d);
  return gm_check_summary();
}
