/* A minimal test framework for the C harness: CHECK records a failure and
 * goes on; gm_check_summary prints "N passed, N failed" and gives the exit code. */
#ifndef GOMLX_CHECK_H
#define GOMLX_CHECK_H

#include <stdio.h>

static int gm_checks_passed = 0;
static int gm_checks_failed = 0;

#define CHECK(cond, ...)                                                  \
  do {                                                                    \
    if (cond) {                                                           \
      gm_checks_passed++;                                                 \
    } else {                                                              \
      gm_checks_failed++;                                                 \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);     \
      fprintf(stderr, __VA_ARGS__);                                       \
      fputc('\n', stderr);                                                \
    }                                                                     \
  } while (0)

static int gm_check_summary(void) {
  printf("%d passed, %d failed\n", gm_checks_passed, gm_checks_failed);
  return gm_checks_failed == 0 ? 0 : 1;
}

#endif
