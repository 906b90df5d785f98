/* Structured output and tool calls through the C ABI (issue 22), on the
 * qwen3_qknorm random-weight fixture with a byte-level tokenizer and Qwen 3's
 * chat template (tests/fixtures/tools/qwen3_bytes, made by
 * scripts/text-oracle/make_tool_fixture.py): constraints (JSON Schema, regex,
 * choice) hold on sampled output, an unsupported schema is an error, a forced
 * tool call comes back parsed, and the conversation carrying it and the tool's
 * result renders exactly as transformers' apply_chat_template does. */
#include "util.h"

#include <stddef.h>
#include <stdio.h>

static gm_model *model;

static char *read_file(const char *rel) {
  char path[1024];
  FILE *f = fopen(gm_path(path, sizeof path, rel), "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  size_t got = fread(buf, 1, (size_t)n, f);
  buf[got] = 0;
  fclose(f);
  return buf;
}

/* Generates from text prompt `prompt` under `constraint` with sampling; the whole text. */
static int constrained(const char *constraint, uint64_t seed, char *text, size_t cap) {
  gm_generate_options o = gm_gen_opts(96);
  o.temperature = 1.0f;
  o.seed = seed;
  o.has_seed = true;
  o.constraint = constraint;
  gm_generation *g = gm_generate_start(model, "Answer: ", &o);
  if (!g) return -1;
  int n = gm_drain(g, NULL, 0, text, cap);
  gm_generation_free(g);
  return n;
}

static void test_json_schema(void) {
  const char *schema = "{\"json_schema\": {\"type\": \"object\", \"properties\": {\"n\": {\"type\": \"integer\", \"minimum\": 1, \"maximum\": 9},"
                       " \"ok\": {\"type\": \"boolean\"}}, \"required\": [\"n\", \"ok\"], \"additionalProperties\": false}}";
  for (uint64_t seed = 1; seed <= 20; seed++) {
    char text[512], ok[8], again[512];
    int n = -1;
    CHECK(constrained(schema, seed, text, sizeof text) > 0, "json_schema: %s", gm_err());
    /* The compact JSON the schema allows: {"n": D, "ok": true|false}. */
    int fields = sscanf(text, "{\"n\": %d, \"ok\": %5[a-z]}", &n, ok);
    snprintf(again, sizeof again, "{\"n\": %d, \"ok\": %s}", n, ok);
    CHECK(fields == 2 && n >= 1 && n <= 9 && (strcmp(ok, "true") == 0 || strcmp(ok, "false") == 0) && strcmp(text, again) == 0,
          "seed %llu: '%s' does not validate", (unsigned long long)seed, text);
  }
  /* Unconstrained, the same model writes no such JSON (so the check above can fail). */
  gm_generate_options o = gm_gen_opts(24);
  o.temperature = 1.0f;
  o.has_seed = true;
  o.seed = 1;
  gm_generation *g = gm_generate_start(model, "Answer: ", &o);
  char text[512];
  gm_drain(g, NULL, 0, text, sizeof text);
  gm_generation_free(g);
  CHECK(strncmp(text, "{\"n\": ", 6) != 0, "unconstrained output '%s'", text);
}

static void test_regex_and_choice(void) {
  for (uint64_t seed = 1; seed <= 10; seed++) {
    char text[256];
    CHECK(constrained("{\"regex\": \"[a-c]{2}-[0-9]{3}\"}", seed, text, sizeof text) == 6, "regex: %s", gm_err());
    CHECK(strlen(text) == 6 && strchr("abc", text[0]) && strchr("abc", text[1]) && text[2] == '-' && text[3] >= '0' && text[3] <= '9' &&
              text[4] >= '0' && text[4] <= '9' && text[5] >= '0' && text[5] <= '9',
          "regex output '%s'", text);
    CHECK(constrained("{\"choice\": [\"positive\", \"negative\", \"neutral\"]}", seed, text, sizeof text) > 0, "choice: %s", gm_err());
    CHECK(strcmp(text, "positive") == 0 || strcmp(text, "negative") == 0 || strcmp(text, "neutral") == 0, "choice output '%s'", text);
  }
}

static void test_constraint_errors(void) {
  char text[64];
  CHECK(constrained("{\"json_schema\": {\"type\": \"strnig\"}}", 1, text, sizeof text) == -1, "an unsupported schema is refused");
  CHECK_ERR("constraint");
  CHECK(constrained("{\"regex\": \"\"}", 1, text, sizeof text) == -1, "an empty regex is refused");
  CHECK_ERR("gm_generate_options.constraint: regex is empty");
  CHECK(constrained("{\"xml\": 1}", 1, text, sizeof text) == -1, "an unknown kind is refused");
  CHECK_ERR("gm_generate_options.constraint is not a constraint");
  CHECK(constrained("not json", 1, text, sizeof text) == -1, "not JSON");
  CHECK_ERR("gm_generate_options.constraint");
  /* A caller built before the new fields (struct_size ends at chat_template_args) still works. */
  gm_generate_options o = gm_gen_opts(4);
  o.struct_size = offsetof(gm_generate_options, constraint);
  o.constraint = "{\"regex\": \"zzzz\"}"; /* past the caller's struct: never read */
  gm_generation *g = gm_generate_start(model, "Answer: ", &o);
  CHECK(g != NULL, "old struct_size: %s", gm_err());
  gm_token t = gm_tok();
  t.struct_size = offsetof(gm_token, tool_calls);
  t.tool_calls = (const char *)&t; /* never written for this caller */
  int rc = gm_generate_next(g, &t);
  CHECK(rc == 1 && t.tool_calls == (const char *)&t, "old gm_token: rc %d %s", rc, gm_err());
  gm_generation_free(g);
  o.struct_size = offsetof(gm_generate_options, constraint) - 8;
  CHECK(gm_generate_start(model, "x", &o) == NULL, "too small");
  CHECK_ERR("gm_generate_options.struct_size");
}

static const char *TOOLS =
    "[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Get the weather for a city.\", \"parameters\": "
    "{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"enum\": [\"Paris\"]}}, \"required\": [\"city\"], "
    "\"additionalProperties\": false}}}]";
static const char *FIRST = "[{\"role\": \"user\", \"content\": \"Weather in Paris?\"}]";
static const char *CALLS = "[{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}}]";

static char *render(const char *messages, const gm_generate_options *o) {
  int64_t n = gm_chat_render_json(model, messages, o, NULL, 0);
  if (n < 0) return NULL;
  char *buf = malloc((size_t)n + 1);
  int64_t again = gm_chat_render_json(model, messages, o, buf, (size_t)n + 1);
  if (again != n || strlen(buf) != (size_t)n) {
    free(buf);
    return NULL;
  }
  return buf;
}

static void test_tool_round_trip(void) {
  gm_generate_options o = gm_gen_opts(200);
  o.tools = TOOLS;
  char *want_first = read_file("tests/fixtures/tools/qwen3_bytes/first_rendered.txt");
  char *want_round = read_file("tests/fixtures/tools/qwen3_bytes/round_trip_rendered.txt");
  CHECK(want_first && want_round, "fixture renders");
  if (!want_first || !want_round) return;
  char *first = render(FIRST, &o);
  CHECK(first && strcmp(first, want_first) == 0, "first prompt differs from transformers' render: %s", first ? first : gm_err());
  /* A truncated buffer still gets a NUL and the full length back. */
  char small[8];
  CHECK(gm_chat_render_json(model, FIRST, &o, small, sizeof small) == (int64_t)strlen(want_first) && strcmp(small, "<|im_st") == 0, "snprintf-style");

  for (int named = 0; named < 2; named++) {
    o.tool_choice = named ? "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\"}}" : "required";
    o.temperature = 1.0f;
    o.has_seed = true;
    o.seed = 7;
    gm_generation *g = gm_chat_start_json(model, FIRST, &o);
    CHECK(g != NULL, "chat with tools: %s", gm_err());
    if (!g) continue;
    gm_token t = gm_tok();
    char text[1024] = "";
    char calls[1024] = "";
    int rc, n_calls = 0;
    while ((rc = gm_generate_next(g, &t)) == 1) {
      strncat(text, t.text, sizeof text - strlen(text) - 1);
      if (t.tool_calls) {
        n_calls++;
        snprintf(calls, sizeof calls, "%s", t.tool_calls);
      }
    }
    CHECK(rc == 0, "next: %s", gm_err());
    CHECK(n_calls == 1 && strcmp(calls, CALLS) == 0, "tool calls %d: %s", n_calls, calls);
    CHECK(strcmp(text, "") == 0, "no text outside the call: '%s'", text);
    CHECK(gm_generation_finish_reason(g) == GM_FINISH_STOP || gm_generation_finish_reason(g) == GM_FINISH_EOS, "finish %d",
          gm_generation_finish_reason(g));
    gm_generation_free(g);
  }

  /* The call and the tool's result go back through the template. */
  char round[2048];
  snprintf(round, sizeof round,
           "[{\"role\": \"user\", \"content\": \"Weather in Paris?\"}, {\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": %s},"
           " {\"role\": \"tool\", \"tool_call_id\": \"call_1\", \"name\": \"get_weather\", \"content\": \"{\\\"temperature\\\": 21.5}\"}]",
           CALLS);
  o.tool_choice = NULL;
  char *got = render(round, &o);
  CHECK(got && strcmp(got, want_round) == 0, "round trip differs from transformers' render:\n%s", got ? got : gm_err());
  free(got);
  /* OpenAI's string arguments become the object templates read. */
  snprintf(round, sizeof round,
           "[{\"role\": \"user\", \"content\": \"Weather in Paris?\"}, {\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": "
           "[{\"id\": \"call_1\", \"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Paris\\\"}\"}}]},"
           " {\"role\": \"tool\", \"tool_call_id\": \"call_1\", \"name\": \"get_weather\", \"content\": \"{\\\"temperature\\\": 21.5}\"}]");
  got = render(round, &o);
  CHECK(got && strcmp(got, want_round) == 0, "string arguments:\n%s", got ? got : gm_err());
  char bad_args[512];
  snprintf(bad_args, sizeof bad_args,
           "[{\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": [{\"function\": {\"name\": \"f\", \"arguments\": \"{oops\"}}]}]");
  CHECK(gm_chat_render_json(model, bad_args, &o, NULL, 0) == -1, "string arguments that are not JSON");
  CHECK_ERR("messages_json[0].tool_calls[0].function.arguments");
  o.max_tokens = 4;
  gm_generation *g = gm_chat_start_json(model, round, &o);
  CHECK(g != NULL && gm_drain(g, NULL, 0, NULL, 0) >= 0, "the round trip generates: %s", gm_err());
  gm_generation_free(g);
  /* A session takes the same JSON. */
  gm_session *s = gm_session_new(model);
  g = gm_session_chat_start_json(s, round, &o);
  CHECK(g != NULL && gm_drain(g, NULL, 0, NULL, 0) >= 0, "session round trip: %s", gm_err());
  gm_generation_free(g);
  gm_session_free(s);

  /* Errors name the field. */
  o.tool_choice = "{\"type\": \"function\", \"function\": {\"name\": \"nope\"}}";
  CHECK(gm_chat_start_json(model, FIRST, &o) == NULL, "unknown function");
  CHECK_ERR("nope");
  o.tool_choice = "sometimes";
  CHECK(gm_chat_start_json(model, FIRST, &o) == NULL, "bad tool_choice");
  CHECK_ERR("gm_generate_options.tool_choice");
  o.tool_choice = "required";
  o.constraint = "\"json_object\"";
  CHECK(gm_chat_start_json(model, FIRST, &o) == NULL, "constraint and forced call");
  CHECK_ERR("cannot be used together");
  o.constraint = NULL;
  CHECK(gm_generate_start(model, "x", &o) == NULL, "tools without a chat");
  CHECK_ERR("need a chat");
  o.tools = "{\"not\": \"an array\"}";
  CHECK(gm_chat_start_json(model, FIRST, &o) == NULL, "tools not an array");
  CHECK_ERR("gm_generate_options.tools must be a JSON array");
  CHECK(gm_chat_start_json(model, "[{\"content\": \"x\"}]", NULL) == NULL, "message without role");
  CHECK_ERR("messages_json[0] has no \"role\"");
  CHECK(gm_chat_start_json(model, "{}", NULL) == NULL, "messages not an array");
  CHECK_ERR("messages_json must be a JSON array");
  CHECK(gm_chat_start_json(model, NULL, NULL) == NULL, "NULL messages");
  CHECK_ERR("messages_json is NULL");
  free(first);
  free(got);
  free(want_first);
  free(want_round);
}

/* Classify with a label set as a choice constraint: labels that share first tokens. */
static void test_classify_choice(void) {
  const char *prompts[] = {"Is it raining? ", "Did you eat? ", "Answer: "};
  const char *labels[] = {"yes", "yesterday", "no"};
  int32_t picks[3] = {-1, -1, -1};
  CHECK(gm_classify_choice(model, prompts, 3, labels, 3, NULL, picks, NULL) == GM_OK, "classify choice: %s", gm_err());
  for (int i = 0; i < 3; i++) {
    CHECK(picks[i] >= 0 && picks[i] < 3, "pick %d", picks[i]);
    /* The same as one greedy generation under {"choice": labels}. */
    gm_generate_options o = gm_gen_opts(32);
    o.constraint = "{\"choice\": [\"yes\", \"yesterday\", \"no\"]}";
    gm_generation *g = gm_generate_start(model, prompts[i], &o);
    char text[64];
    CHECK(g && gm_drain(g, NULL, 0, text, sizeof text) > 0, "generate: %s", gm_err());
    gm_generation_free(g);
    CHECK(picks[i] >= 0 && picks[i] < 3 && strcmp(text, labels[picks[i]]) == 0, "prompt %d: pick %d, generation '%s'", i, picks[i], text);
  }
  /* First-token classify cannot tell these labels apart. */
  gm_classify_options co;
  memset(&co, 0, sizeof co);
  co.struct_size = sizeof co;
  co.labels = labels;
  co.n_labels = 3;
  gm_classify_result r;
  memset(&r, 0, sizeof r);
  r.struct_size = sizeof r;
  CHECK(gm_classify(model, prompts, 3, &co, &r, NULL) == GM_ERROR, "first-token classify refuses shared first tokens");
  gm_classify_result_free(&r);
  CHECK(gm_classify_choice(model, prompts, 3, labels, 0, NULL, picks, NULL) == GM_ERROR, "empty label set");
  CHECK_ERR("label set is empty");
  CHECK(gm_classify_choice(model, prompts, 3, labels, 3, NULL, NULL, NULL) == GM_ERROR, "NULL out");
  CHECK_ERR("out is NULL");
}

int main(void) {
  char path[1024];
  gm_load_options lo;
  memset(&lo, 0, sizeof lo);
  lo.struct_size = sizeof lo;
  lo.device = GM_DEVICE_CPU;
  model = gm_model_load(gm_path(path, sizeof path, "tests/fixtures/tools/qwen3_bytes"), &lo);
  CHECK(model != NULL, "load: %s", gm_err());
  if (!model) return gm_check_summary();
  test_json_schema();
  test_regex_and_choice();
  test_constraint_errors();
  test_tool_round_trip();
  test_classify_choice();
  gm_model_close(model);
  return gm_check_summary();
}
