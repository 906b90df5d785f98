/* Soak of the C ABI (issue 25): 1 000 mixed requests, then one 10 000-token
 * generation, on one model, sampling the process's resident memory (RSS, from
 * /proc/self/statm) and MLX's active memory (gm_memory_active). Prints a
 * sample line every 50 requests / 1 000 tokens and a summary; the figures of
 * record are in docs/fuzzing.md ("Soak"). A benchmark, not a test: run it
 * with scripts/soak/run.
 *
 *   soak MODEL [REQUESTS] [LONG_TOKENS] [LONG_REPEAT]
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gomlx.h"

static size_t rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f) return 0;
  unsigned long size = 0, resident = 0;
  if (fscanf(f, "%lu %lu", &size, &resident) != 2) resident = 0;
  fclose(f);
  return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void die(const char *what) {
  fprintf(stderr, "soak: %s: %s\n", what, gm_last_error() ? gm_last_error() : "(no error)");
  exit(1);
}

static gm_generate_options opts(size_t max_tokens) {
  gm_generate_options o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.max_tokens = max_tokens;
  return o;
}

/* Reads a generation to its end (or, with cancel_after > 0, cancels it then); returns tokens read. */
static int drain(gm_generation *g, int cancel_after) {
  gm_token t;
  memset(&t, 0, sizeof t);
  t.struct_size = sizeof t;
  int n = 0, rc;
  while ((rc = gm_generate_next(g, &t)) == 1) {
    if (t.id != GM_NO_TOKEN) n++;
    if (cancel_after > 0 && n == cancel_after) gm_generation_cancel(g);
  }
  if (rc < 0) die("gm_generate_next");
  gm_metrics m;
  memset(&m, 0, sizeof m);
  m.struct_size = sizeof m;
  if (gm_generation_metrics(g, &m) != GM_OK) die("gm_generation_metrics");
  gm_generation_free(g);
  return n;
}

static const char *prompts[] = {
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers.",
    "Translate 'good morning' into German.",
    "Why is the sky blue?",
    "Name a famous painter.",
    "How many legs does a spider have?",
    "Give me a word that rhymes with cat.",
};
#define N_PROMPTS (sizeof prompts / sizeof prompts[0])

/* One request of kind i % 10; returns the tokens it produced. */
static int request(gm_model *m, gm_session *s, int i) {
  const char *p = prompts[(size_t)i % N_PROMPTS];
  gm_message msgs[3] = {{"user", p}, {"assistant", "Let me think."}, {"user", prompts[((size_t)i + 3) % N_PROMPTS]}};
  gm_generate_options o = opts(8 + (size_t)(i % 9));
  gm_generation *g;
  switch (i % 10) {
    case 0: /* greedy chat */
      if (!(g = gm_chat_start(m, msgs, 1, &o))) die("gm_chat_start");
      return drain(g, 0);
    case 1: /* sampled chat, three messages */
      o.temperature = 0.8f;
      o.top_p = 0.9f;
      o.top_k = 40;
      o.has_seed = true;
      o.seed = (uint64_t)i;
      if (!(g = gm_chat_start(m, msgs, 3, &o))) die("gm_chat_start");
      return drain(g, 0);
    case 2: /* plain prompt with penalties and logprobs */
      o.repetition_penalty = 1.1f;
      o.presence_penalty = 0.2f;
      o.logprobs = true;
      o.top_logprobs = 3;
      if (!(g = gm_generate_start(m, p, &o))) die("gm_generate_start");
      return drain(g, 0);
    case 3: { /* token ids (inside any vocabulary of 100+ tokens) */
      uint32_t ids[4] = {1, 50, 23, 63};
      if (!(g = gm_generate_tokens_start(m, ids, 4, &o))) die("gm_generate_tokens_start");
      return drain(g, 0);
    }
    case 4: /* cancelled after 3 tokens */
      o.max_tokens = 64;
      if (!(g = gm_chat_start(m, msgs, 1, &o))) die("gm_chat_start");
      return drain(g, 3);
    case 5: /* a session turn */
      if (!(g = gm_session_chat_start(s, msgs, (i / 10) % 2 ? 3 : 1, &o))) die("gm_session_chat_start");
      return drain(g, 0);
    case 6: { /* classify 8 prompts over labels */
      const char *labels[] = {"Paris", "London", "Berlin"};
      gm_classify_options co;
      memset(&co, 0, sizeof co);
      co.struct_size = sizeof co;
      co.labels = labels;
      co.n_labels = 3;
      co.logprobs = true;
      gm_classify_result r;
      memset(&r, 0, sizeof r);
      r.struct_size = sizeof r;
      if (gm_classify(m, prompts, N_PROMPTS, &co, &r, NULL) != GM_OK) die("gm_classify");
      gm_classify_result_free(&r);
      return 0;
    }
    case 7: { /* batch of 4 */
      gm_batch_result r;
      memset(&r, 0, sizeof r);
      r.struct_size = sizeof r;
      if (gm_batch_generate(m, prompts + (i % 4), 4, &o, &r, NULL) != GM_OK) die("gm_batch_generate");
      int n = (int)r.token_offsets[r.n];
      gm_batch_result_free(&r);
      return n;
    }
    case 8: { /* requests that must fail: every token banned, a bad option */
      gm_logit_bias ban[1];
      o.n_logit_bias = 0;
      gm_info info;
      memset(&info, 0, sizeof info);
      info.struct_size = sizeof info;
      if (gm_model_info(m, &info) != GM_OK) die("gm_model_info");
      gm_logit_bias *all = malloc(info.vocab_size * sizeof *all);
      for (size_t t = 0; t < info.vocab_size; t++) all[t] = (gm_logit_bias){(uint32_t)t, -INFINITY};
      o.logit_bias = all;
      o.n_logit_bias = info.vocab_size;
      if (gm_chat_start(m, msgs, 1, &o) != NULL) die("all-banned chat started");
      free(all);
      (void)ban;
      o = opts(4);
      o.top_p = 2.0f;
      if (gm_generate_start(m, p, &o) != NULL) die("top_p 2 started");
      return 0;
    }
    default: { /* two concurrent generations, interleaved */
      gm_generation *a = gm_chat_start(m, msgs, 1, &o);
      gm_generation *b = gm_generate_start(m, p, &o);
      if (!a || !b) die("concurrent start");
      return drain(a, 0) + drain(b, 0);
    }
  }
}

typedef struct {
  size_t rss, active;
} sample;

static sample take(void) {
  sample s = {rss_bytes(), gm_memory_active()};
  return s;
}

static double mib(size_t b) { return (double)b / (1024.0 * 1024.0); }

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: soak MODEL [REQUESTS] [LONG_TOKENS] [LONG_REPEAT]\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  int requests = argc > 2 ? atoi(argv[2]) : 1000;
  int long_tokens = argc > 3 ? atoi(argv[3]) : 10000;
  int long_repeat = argc > 4 ? atoi(argv[4]) : 1;
  int warmup = requests / 10;

  gm_load_options lo;
  memset(&lo, 0, sizeof lo);
  lo.struct_size = sizeof lo;
  lo.device = GM_DEVICE_CPU;
  lo.context_length = (size_t)long_tokens + 256;
  double t0 = now();
  gm_model *m = gm_model_load(argv[1], &lo);
  if (!m) die("gm_model_load");
  gm_session *s = gm_session_new(m);
  if (!s) die("gm_session_new");
  sample loaded = take();
  printf("loaded %s in %.1f s: rss %.1f MiB, active %.1f MiB\n", argv[1], now() - t0, mib(loaded.rss), mib(loaded.active));

  /* Phase 1: mixed requests. Memory is sampled after each; every 50 requests
   * gm_clear_cache returns MLX's buffer cache and glibc's free pages, and the
   * sample taken then is a checkpoint: flatness is the spread of the
   * checkpoints after warm-up (between checkpoints RSS also holds freed heap
   * that glibc has not returned yet). */
  sample warm = {0, 0}, lo_s = {(size_t)-1, (size_t)-1}, hi_s = {0, 0}, last = {0, 0};
  sample c_lo = {(size_t)-1, (size_t)-1}, c_hi = {0, 0}, c_first = {0, 0};
  long tokens = 0;
  t0 = now();
  for (int i = 0; i < requests; i++) {
    tokens += request(m, s, i);
    if ((i + 1) % 50 == 0) gm_clear_cache();
    sample x = take();
    if (i + 1 == warmup) warm = x;
    if (i + 1 >= warmup) {
      if (x.rss < lo_s.rss) lo_s.rss = x.rss;
      if (x.rss > hi_s.rss) hi_s.rss = x.rss;
      if (x.active < lo_s.active) lo_s.active = x.active;
      if (x.active > hi_s.active) hi_s.active = x.active;
    }
    last = x;
    if ((i + 1) % 50 == 0) {
      printf("request %4d: rss %.1f MiB, active %.1f MiB, cache %.1f MiB\n", i + 1, mib(x.rss), mib(x.active), mib(gm_memory_cache()));
      if (i + 1 > warmup) {
        if (!c_first.rss) c_first = x;
        if (x.rss < c_lo.rss) c_lo.rss = x.rss;
        if (x.rss > c_hi.rss) c_hi.rss = x.rss;
        if (x.active < c_lo.active) c_lo.active = x.active;
        if (x.active > c_hi.active) c_hi.active = x.active;
      }
    }
  }
  double dt = now() - t0;
  printf("mixed: %d requests, %ld tokens in %.1f s\n", requests, tokens, dt);
  printf("mixed: after warm-up (%d requests) rss %.2f..%.2f MiB (%.2f%%), active %.2f..%.2f MiB (%.2f%%); last vs warm-up: rss %+.2f%%, active %+.2f%%\n",
         warmup, mib(lo_s.rss), mib(hi_s.rss), 100.0 * (double)(hi_s.rss - lo_s.rss) / (double)lo_s.rss, mib(lo_s.active),
         mib(hi_s.active), lo_s.active ? 100.0 * (double)(hi_s.active - lo_s.active) / (double)lo_s.active : 0.0,
         100.0 * ((double)last.rss - (double)warm.rss) / (double)warm.rss,
         warm.active ? 100.0 * ((double)last.active - (double)warm.active) / (double)warm.active : 0.0);

  if (c_first.rss)
    printf("mixed: checkpoints after warm-up: rss %.2f..%.2f MiB (spread %.2f%% of the first), active %.2f..%.2f MiB (spread %.2f%%)\n",
           mib(c_lo.rss), mib(c_hi.rss), 100.0 * (double)(c_hi.rss - c_lo.rss) / (double)c_first.rss, mib(c_lo.active), mib(c_hi.active),
           c_first.active ? 100.0 * (double)(c_hi.active - c_lo.active) / (double)c_first.active : 0.0);

  /* Phase 2: one long generation (LONG_REPEAT times); memory is sampled every
   * 1 000 tokens, then after it ends (the KV cache grows with the sequence,
   * then is freed). */
  for (int rep = 0; rep < long_repeat; rep++) {
  gm_clear_cache();
  sample before = take();
  gm_generate_options o = opts((size_t)long_tokens);
  o.ignore_eos = true;
  o.temperature = 0.7f;
  o.has_seed = true;
  o.seed = 25;
  gm_message msg = {"user", "Tell me a very long story about a lighthouse keeper."};
  gm_generation *g = gm_chat_start(m, &msg, 1, &o);
  if (!g) die("gm_chat_start (long)");
  gm_token t;
  memset(&t, 0, sizeof t);
  t.struct_size = sizeof t;
  int n = 0, rc;
  t0 = now();
  while ((rc = gm_generate_next(g, &t)) == 1) {
    if (t.id == GM_NO_TOKEN) continue;
    if (++n % 1000 == 0) {
      sample x = take();
      printf("token %5d: rss %.1f MiB, active %.1f MiB, %.1f tokens/s\n", n, mib(x.rss), mib(x.active), n / (now() - t0));
    }
  }
  if (rc < 0) die("long generation");
  gm_generation_free(g);
  dt = now() - t0;
  gm_clear_cache();
  sample after = take();
  printf("long: %d tokens in %.1f s (%.1f tokens/s)\n", n, dt, n / dt);
  printf("long: before rss %.2f MiB, active %.2f MiB; after rss %.2f MiB (%+.2f%%), active %.2f MiB (%+.2f%%)\n", mib(before.rss),
         mib(before.active), mib(after.rss), 100.0 * ((double)after.rss - (double)before.rss) / (double)before.rss, mib(after.active),
         before.active ? 100.0 * ((double)after.active - (double)before.active) / (double)before.active : 0.0);
  }

  gm_session_free(s);
  gm_model_close(m);
  gm_clear_cache();
  sample closed = take();
  printf("closed: rss %.1f MiB, active %.1f MiB\n", mib(closed.rss), mib(closed.active));
  return 0;
}
