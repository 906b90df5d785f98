/* The BLAS that libmlx binds to, seen from a C program that links only
 * libgomlx: it must be OpenBLAS (linked by libgomlx.so's own dependency list),
 * never the reference BLAS the mlx-cpu wheel bundles in mlx_cpu.libs/. */
#include "gomlx.h"
#include "check.h"

#include <string.h>

int main(void) {
  const char *lib = gm_blas_library();
  CHECK(lib != NULL, "gm_blas_library returned NULL");
  if (lib != NULL) {
    printf("blas: %s\n", lib);
    CHECK(strstr(lib, "mlx_cpu.libs") == NULL && strstr(lib, "/libblas") == NULL,
          "MLX is bound to the slow reference BLAS %s: libgomlx.so must name libopenblas.so.0 (build.rs)", lib);
#ifdef __linux__
    CHECK(strstr(lib, "openblas") != NULL, "expected OpenBLAS, got %s", lib);
#endif
    CHECK(gm_blas_library() == lib, "gm_blas_library must return the same static string");
  }
  return gm_check_summary();
}
