/* Memory-bandwidth floor for decode: read-only streaming over a buffer much
 * larger than the caches, with one thread per core (as decode's matrix-vector
 * products read every weight once per token). Prints the best GB/s of a few
 * passes. Built and run by scripts/cpu-bench/run. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static float *buf;
static size_t n_per;
static double sums[64];

static void *reader(void *arg) {
  long t = (long)arg;
  const float *p = buf + (size_t)t * n_per;
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
  for (size_t i = 0; i + 8 <= n_per; i += 8) {
    s0 += p[i]; s1 += p[i + 1]; s2 += p[i + 2]; s3 += p[i + 3];
    s4 += p[i + 4]; s5 += p[i + 5]; s6 += p[i + 6]; s7 += p[i + 7];
  }
  sums[t] = s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
  return NULL;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  long threads = argc > 1 ? atol(argv[1]) : sysconf(_SC_NPROCESSORS_ONLN);
  size_t bytes = (size_t)1 << 30;
  if (threads < 1) threads = 1;
  if (threads > 64) threads = 64;
  buf = aligned_alloc(64, bytes);
  memset(buf, 1, bytes);
  n_per = bytes / sizeof(float) / threads;
  double best = 0;
  for (int pass = 0; pass < 5; pass++) {
    pthread_t th[64];
    double t0 = now();
    for (long t = 0; t < threads; t++) pthread_create(&th[t], NULL, reader, (void *)t);
    for (long t = 0; t < threads; t++) pthread_join(th[t], NULL);
    double gbs = bytes / (now() - t0) / 1e9;
    if (gbs > best) best = gbs;
  }
  double s = 0;
  for (long t = 0; t < threads; t++) s += sums[t];
  printf("{\"threads\": %ld, \"read_gb_per_s\": %.2f, \"checksum\": %g}\n", threads, best, s);
  return 0;
}
