//! Safe Rust over mlx-c. Every call returns `Result`; every `Array` frees its
//! handle on drop. Ops run on the calling thread's current stream (`stream`).

mod array;
pub mod blas;
pub mod closure;
pub mod distributed;
pub mod fast;
pub mod io;
pub mod memory;
mod ops;
pub mod random;
pub mod safetensors_header;
mod status;
pub mod stream;
mod sys;
mod transforms;
mod vector;

pub use array::{Array, Dtype, Element};
pub use closure::{value_and_grad, Closure, ValueAndGrad};
pub use ops::{arange, concatenate, dequantize, dequantize_mode, full, gather_mm, gather_qmm, ones, quantize, quantized_matmul, stack, where_, zeros};
pub use status::ops_per_graph_is_gomlx_default;
pub use stream::{default_device, device_count, gpu_available, DeviceKind, Stream};
pub use transforms::{async_eval, backend, eval, gpu_guard, GpuGuard};

use std::ffi::CStr;

/// The MLX library version, e.g. "0.32.2".
pub fn version() -> String {
    status::init();
    let mut s = unsafe { sys::mlx_string_new() };
    unsafe { sys::mlx_version(&mut s) };
    let v = unsafe { CStr::from_ptr(sys::mlx_string_data(s)) }.to_string_lossy().into_owned();
    unsafe { sys::mlx_string_free(s) };
    v
}

/// Seeds MLX's global PRNG (used where no explicit key is passed).
pub fn seed(seed: u64) {
    status::init();
    unsafe { sys::mlx_random_seed(seed) };
}
