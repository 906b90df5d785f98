/* The C harness: drives libgomlx through include/gomlx.h alone. */
#include "gomlx.h"
#include "check.h"

#include <string.h>

static void test_versions(void) {
  CHECK(gm_abi_version() == GM_ABI_VERSION, "abi %u != header %d", gm_abi_version(), GM_ABI_VERSION);
  const char *v = gm_version();
  CHECK(v != NULL && strlen(v) >= 5 && strchr(v, '.') != NULL, "version '%s'", v ? v : "(null)");
}

static void test_device_query(void) {
  int32_t avail = -1;
  CHECK(gm_device_available("cpu", &avail) == GM_OK, "cpu query failed: %s", gm_last_error());
  CHECK(avail == 1, "cpu must be available, got %d", avail);
  CHECK(gm_last_error() == NULL, "last error after success: %s", gm_last_error());

  CHECK(gm_device_available("tpu", &avail) == GM_ERROR, "unknown device accepted");
  const char *err = gm_last_error();
  CHECK(err != NULL && strstr(err, "unknown device 'tpu'") != NULL, "error text: %s", err ? err : "(null)");

  CHECK(gm_device_available(NULL, &avail) == GM_ERROR, "NULL name accepted");
  err = gm_last_error();
  CHECK(err != NULL && strstr(err, "name is NULL") != NULL, "error text: %s", err ? err : "(null)");

  CHECK(gm_device_available("cpu", NULL) == GM_ERROR, "NULL out-pointer accepted");
  const char bad_utf8[] = {'c', (char)0xff, 'u', 0};
  CHECK(gm_device_available(bad_utf8, &avail) == GM_ERROR, "invalid UTF-8 accepted");
  err = gm_last_error();
  CHECK(err != NULL && strstr(err, "UTF-8") != NULL, "error text: %s", err ? err : "(null)");
}

static void test_memory(void) {
  size_t prev = gm_set_cache_limit((size_t)1 << 30);
  size_t again = gm_set_cache_limit(prev);
  CHECK(again == (size_t)1 << 30, "cache limit round trip: %zu", again);
  gm_clear_cache();
  CHECK(gm_memory_cache() == 0, "cache after clear: %zu", gm_memory_cache());
  gm_memory_reset_peak();
  CHECK(gm_memory_peak() >= gm_memory_active(), "peak %zu < active %zu", gm_memory_peak(), gm_memory_active());
}

int main(void) {
  test_versions();
  test_device_query();
  test_memory();
  return gm_check_summary();
}
