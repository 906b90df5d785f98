//! Evaluation of lazy arrays, and the process-wide order of GPU evaluations.

use super::array::Array;
use super::vector::VectorArray;
use super::{status, sys};
use crate::Result;
use std::cell::Cell;
use std::sync::{Condvar, Mutex, OnceLock};

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

/// A first-come, first-served lock: an engine thread that releases it between
/// steps and asks again at once must not starve the others.
struct FairLock {
    /// (next ticket, ticket being served)
    state: Mutex<(u64, u64)>,
    turn: Condvar,
}

impl FairLock {
    fn acquire(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let ticket = s.0;
        s.0 += 1;
        while s.1 != ticket {
            s = self.turn.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn release(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.1 += 1;
        self.turn.notify_all();
    }
}

static GPU: FairLock = FairLock { state: Mutex::new((0, 0)), turn: Condvar::new() };

thread_local! {
    /// How many `GpuGuard`s this thread holds (the lock is reentrant).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Exclusive use of MLX's CUDA backend by this thread while it lives.
///
/// MLX's CUDA backend records kernels into CUDA graphs by stream capture; a
/// CUDA call from another thread meanwhile (an allocation, a free, an
/// evaluation on another stream) breaks the capture and MLX aborts the
/// process ("cudaStreamEndCapture ... failed"). So on a CUDA build each engine
/// thread holds this while it does MLX work (one step of its requests at a
/// time, first come first served), and evaluations take it too. Reentrant;
/// a no-op on CPU-only and Metal builds. Not `Send`: it belongs to its thread.
pub struct GpuGuard {
    held: bool,
    _not_send: std::marker::PhantomData<*const ()>,
}

/// Takes the process-wide CUDA lock (see `GpuGuard`).
pub fn gpu_guard() -> GpuGuard {
    if backend() != "cuda" {
        return GpuGuard { held: false, _not_send: std::marker::PhantomData };
    }
    if DEPTH.with(|d| d.get()) == 0 {
        GPU.acquire();
    }
    DEPTH.with(|d| d.set(d.get() + 1));
    GpuGuard { held: true, _not_send: std::marker::PhantomData }
}

impl Drop for GpuGuard {
    fn drop(&mut self) {
        if self.held
            && DEPTH.with(|d| {
                let n = d.get() - 1;
                d.set(n);
                n == 0
            })
        {
            GPU.release();
        }
    }
}

/// Runs `f` (an evaluation) holding the CUDA lock.
pub(crate) fn serialized<R>(f: impl FnOnce() -> R) -> R {
    let _g = gpu_guard();
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
