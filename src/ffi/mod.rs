//! The C ABI (`include/gomlx.h`, generated from this module by cbindgen).
//!
//! Rules every entry point follows: arguments are checked for NULL and UTF-8;
//! the body runs inside `catch_unwind` so no panic crosses into C; failures
//! return an error code (or NULL) and set the thread's last error.

mod blas;
mod error;
mod lora;
mod memory;
mod version;

pub use blas::*;
pub use error::*;
pub use lora::*;
pub use memory::*;
pub use version::*;

use crate::{Error, Result};
use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Return code of a successful call.
pub const GM_OK: i32 = 0;
/// Return code of a failed call; `gm_last_error()` says why.
pub const GM_ERROR: i32 = -1;

/// Runs `f`, turning an `Err` or a panic into `on_error` and the thread's last error.
pub(crate) fn guard<T>(on_error: T, f: impl FnOnce() -> Result<T>) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => {
            error::clear();
            v
        }
        Ok(Err(e)) => {
            error::set(&e.to_string());
            on_error
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            error::set(&format!("internal error (panic): {what}"));
            on_error
        }
    }
}

/// Like `guard` for calls that return a status code.
pub(crate) fn guard_status(f: impl FnOnce() -> Result<()>) -> i32 {
    guard(GM_ERROR, || f().map(|_| GM_OK))
}

/// Borrows a C string argument as UTF-8.
pub(crate) fn c_str<'a>(ptr: *const c_char, what: &str) -> Result<&'a str> {
    if ptr.is_null() {
        return Err(Error::InvalidArgument(format!("{what} is NULL")));
    }
    unsafe { CStr::from_ptr(ptr) }
        .to_str()
        .map_err(|_| Error::InvalidArgument(format!("{what} is not valid UTF-8")))
}

/// Writes through an out-pointer argument after checking it.
pub(crate) fn write_out<T>(ptr: *mut T, what: &str, value: T) -> Result<()> {
    if ptr.is_null() {
        return Err(Error::InvalidArgument(format!("{what} is NULL")));
    }
    unsafe { ptr.write(value) };
    Ok(())
}
