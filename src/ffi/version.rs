//! Library and ABI versions, and the device query.

use super::{c_str, guard_status, write_out};
use crate::mlx;
use crate::Error;
use std::ffi::c_char;

/// The ABI version of this header; bumped on any incompatible change.
pub const GM_ABI_VERSION: u32 = 1;

/// The ABI version the library was built with. Compare with `GM_ABI_VERSION`.
#[no_mangle]
pub extern "C" fn gm_abi_version() -> u32 {
    GM_ABI_VERSION
}

/// The gomlx version as a static NUL-terminated string (never freed).
#[no_mangle]
pub extern "C" fn gm_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

/// Whether the device named `name` ("cpu" or "gpu") is available to MLX.
///
/// Writes 1 or 0 to `*available` and returns 0; returns -1 (see
/// `gm_last_error`) when `name` is NULL, not UTF-8 or not a device name, or
/// when `available` is NULL.
#[no_mangle]
pub extern "C" fn gm_device_available(name: *const c_char, available: *mut i32) -> i32 {
    guard_status(|| {
        let name = c_str(name, "name")?;
        let avail = match name {
            "cpu" => true,
            "gpu" => mlx::gpu_available(),
            other => return Err(Error::InvalidArgument(format!("unknown device '{other}' (expected \"cpu\" or \"gpu\")"))),
        };
        write_out(available, "available", avail as i32)
    })
}
