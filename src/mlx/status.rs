//! Turns mlx-c's error reporting into `gomlx::Error`.
//!
//! mlx-c reports failures by calling one process-global handler and returning a
//! non-zero code. The handler copies MLX's message into per-thread storage (the
//! pointer is only valid during the callback) and the wrapper that saw the code
//! takes it from there. MLX's default handler, which exits the process, is
//! replaced before any other mlx-c call.

use super::sys;
use crate::{Error, Result};
use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr};
use std::sync::Once;

thread_local! {
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
}

unsafe extern "C" fn handler(msg: *const c_char, _data: *mut c_void) {
    let text = if msg.is_null() { "unknown MLX error".to_string() } else { CStr::from_ptr(msg).to_string_lossy().into_owned() };
    // Never unwind into C++: with_borrow_mut cannot panic here as nothing else borrows.
    let _ = LAST.try_with(|l| *l.borrow_mut() = Some(without_location(&text).to_string()));
}

/// MLX's message without the " at /path/to/mlx-c/.../ops.cpp:123" that mlx-c
/// appends: a source location of the C wrapper tells a user nothing; gomlx's
/// callers name the tensor or file instead.
pub(crate) fn without_location(msg: &str) -> &str {
    match msg.rfind(" at ") {
        Some(i) => {
            let loc = &msg[i + 4..];
            let is_location = loc.rsplit_once(':').is_some_and(|(file, line)| {
                !line.is_empty() && line.bytes().all(|b| b.is_ascii_digit()) && (file.ends_with(".cpp") || file.ends_with(".h") || file.ends_with(".c"))
            });
            if is_location {
                &msg[..i]
            } else {
                msg
            }
        }
        None => msg,
    }
}

/// Installs the handler once per process. Called by every entry into `mlx`.
pub(crate) fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        unsafe { sys::mlx_set_error_handler(Some(handler), std::ptr::null_mut(), None) };
        super::blas::configure_threads();
        cuda_defaults();
    });
}

/// MLX's CUDA backend batches kernels into CUDA graphs of at most
/// `MLX_MAX_OPS_PER_BUFFER` nodes (default 20); each graph costs a launch and
/// an instantiate-or-update on the host, which dominates a small model's
/// decode step. gomlx defaults it higher unless the user set it. Read by MLX
/// when its GPU device is first created, which happens after this.
fn cuda_defaults() {
    // Linux only (Metal reads the same variable for its command buffers); set
    // before any GPU work and before gomlx starts threads of its own.
    if cfg!(target_os = "linux") && std::env::var_os("MLX_MAX_OPS_PER_BUFFER").is_none() {
        std::env::set_var("MLX_MAX_OPS_PER_BUFFER", CUDA_OPS_PER_GRAPH);
        OPS_PER_GRAPH_SET.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

static OPS_PER_GRAPH_SET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether `MLX_MAX_OPS_PER_BUFFER` in this process's environment is gomlx's
/// default rather than the user's (child processes such as the mlx-lm side of
/// `gomlx bench` should then not inherit it).
pub fn ops_per_graph_is_gomlx_default() -> bool {
    OPS_PER_GRAPH_SET.load(std::sync::atomic::Ordering::Relaxed)
}

/// gomlx's default for `MLX_MAX_OPS_PER_BUFFER` on CUDA (measured: BENCHMARKS.md, GPU section).
pub const CUDA_OPS_PER_GRAPH: &str = "100";

/// Converts an mlx-c return code into a `Result`, taking MLX's message.
pub(crate) fn check(rc: i32) -> Result<()> {
    if rc == 0 {
        return Ok(());
    }
    let msg = LAST.with(|l| l.borrow_mut().take());
    Err(Error::Mlx(msg.unwrap_or_else(|| format!("mlx-c call failed with code {rc}"))))
}

#[cfg(test)]
mod tests {
    #[test]
    fn locations_are_dropped() {
        use super::without_location as w;
        assert_eq!(
            w("[reshape] Cannot reshape array of size 6 into shape (4). at /root/src/mlx-c/mlx/c/ops.cpp:2175"),
            "[reshape] Cannot reshape array of size 6 into shape (4)."
        );
        assert_eq!(w("look at this"), "look at this");
        assert_eq!(w("x at y:12"), "x at y:12");
    }
}
