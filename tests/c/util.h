/* Shared helpers of the C harness. */
#ifndef GOMLX_UTIL_H
#define GOMLX_UTIL_H

#include "gomlx.h"
#include "check.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The repository root (tests/c/run exports GOMLX_ROOT). */
static inline const char *gm_root(void) {
  const char *r = getenv("GOMLX_ROOT");
  return r ? r : ".";
}

static inline const char *gm_path(char *buf, size_t n, const char *rel) {
  snprintf(buf, n, "%s/%s", gm_root(), rel);
  return buf;
}

static inline const char *gm_err(void) {
  const char *e = gm_last_error();
  return e ? e : "(no error)";
}

/* True when the last error exists and contains `part`. */
static inline int gm_err_has(const char *part) {
  const char *e = gm_last_error();
  return e != NULL && strstr(e, part) != NULL;
}

#define CHECK_ERR(part) CHECK(gm_err_has(part), "expected an error containing '%s', got: %s", part, gm_err())

static inline gm_generate_options gm_gen_opts(size_t max_tokens) {
  gm_generate_options o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.max_tokens = max_tokens;
  return o;
}

static inline gm_token gm_tok(void) {
  gm_token t;
  memset(&t, 0, sizeof t);
  t.struct_size = sizeof t;
  return t;
}

/* Drains a generation: ids (up to cap) and concatenated text (up to tcap);
 * returns the count of real tokens, or -1 when next failed. */
static inline int gm_drain(gm_generation *g, uint32_t *ids, size_t cap, char *text, size_t tcap) {
  gm_token t = gm_tok();
  int n = 0, rc;
  if (text && tcap) text[0] = 0;
  while ((rc = gm_generate_next(g, &t)) == 1) {
    if (t.id != GM_NO_TOKEN) {
      if (ids && (size_t)n < cap) ids[n] = t.id;
      n++;
    }
    if (text && strlen(text) + t.text_len < tcap) strcat(text, t.text);
  }
  return rc == 0 ? n : -1;
}

#endif
