//! Which BLAS MLX's CPU backend is bound to (see `crate::mlx::blas`).

use crate::mlx::blas;
use std::ffi::{c_char, CString};
use std::sync::OnceLock;

/// The path of the shared library that MLX's BLAS (`cblas_sgemm`) resolves to
/// in this process, e.g. "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblasp-r0.3.21.so",
/// or "not found". A static NUL-terminated string (never freed). On Linux a
/// path under `mlx_cpu.libs/` (`libblas-*.so`) means the slow reference BLAS.
#[no_mangle]
pub extern "C" fn gm_blas_library() -> *const c_char {
    static PATH: OnceLock<CString> = OnceLock::new();
    let path = PATH.get_or_init(|| {
        let s = std::panic::catch_unwind(blas::library).unwrap_or_else(|_| "not found".into());
        CString::new(s).unwrap_or_default()
    });
    path.as_ptr()
}
