//! Evaluation of lazy arrays, and the process-wide order of GPU evaluations.

use super::array::Array;
use super::stream::{thread_device, DeviceKind};
use super::vector::VectorArray;
use super::{status, sys};
use crate::Result;
use std::cell::Cell;
use std::sync::{Mutex, OnceLock};

/// The MLX backend of the libmlx this process loaded: "cuda" or "metal" when
/// it has a usable GPU backend, else "cpu".
pub fn backend() -> &'static str {
    static BACKEND: OnceLock<&'static str> = OnceLock::new();
    BACKEND.get_or_init(|| {
        status::init();
        let (mut cuda, mut metal) = (false, false);
        unsafe {
            sys::mlx_cuda_is_available(&mut cuda);
            sys::mlx_metal_is_available(&mut metal);
        }
        if cuda {
            "cuda"
        } else if metal {
            "metal"
        } else {
            "cpu"
        }
    })
}

static GPU_EVAL: Mutex<()> = Mutex::new(());

thread_local! {
    /// Nesting depth of `serialized` on this thread (an eval may run closures that eval).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Runs `f` (an evaluation) while no other thread evaluates on the GPU.
///
/// MLX's CUDA backend crashes when two threads evaluate GPU work at the same
/// time, even on streams of their own (its command encoders and graph caches
/// are shared); building graphs concurrently is fine. So on a CUDA build every
/// GPU evaluation of this process takes one lock; the GPU still runs the
/// queued kernels of all streams while the host moves on. CPU work and Metal
/// (whose streams are thread-safe) never wait here.
pub(crate) fn serialized<R>(f: impl FnOnce() -> R) -> R {
    if backend() != "cuda" || DEPTH.with(|d| d.get()) > 0 || thread_device() != DeviceKind::Gpu {
        return f();
    }
    let _guard = GPU_EVAL.lock().unwrap_or_else(|p| p.into_inner());
    DEPTH.with(|d| d.set(1));
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            DEPTH.with(|d| d.set(0));
        }
    }
    let _reset = Reset;
    f()
}

/// Computes all `arrays` (sharing common subgraphs) and waits.
pub fn eval(arrays: &[&Array]) -> Result<()> {
    status::init();
    let v = VectorArray::from_arrays(arrays);
    serialized(|| status::check(unsafe { sys::mlx_eval(v.raw()) }))
}

/// Queues the computation of `arrays` and returns at once; reading them later
/// waits for the result. Lets step n+1 be built while step n computes.
pub fn async_eval(arrays: &[&Array]) -> Result<()> {
    status::init();
    let v = VectorArray::from_arrays(arrays);
    serialized(|| status::check(unsafe { sys::mlx_async_eval(v.raw()) }))
}
