//! The C ABI (`include/gomlx.h`, generated from this module by cbindgen).
//!
//! Rules every entry point follows: arguments are checked for NULL and UTF-8;
//! the body runs inside `catch_unwind` so no panic crosses into C; failures
//! return an error code (or NULL) and set the thread's last error.
//!
//! Handles (`gm_model`, `gm_generation`, `gm_session`) and result owners are
//! registered in a process-wide table while they are alive: a pointer is only
//! dereferenced after it was found in the table, so a freed, closed or foreign
//! pointer gives an error instead of a use-after-free. Each handle holds an
//! `Arc` to its state; a call clones the `Arc` under the table's lock, so a
//! handle freed by one thread while another thread uses it stays valid for
//! that call.
//!
//! Option and result structs start with `struct_size` (the caller's
//! `sizeof`): a struct that grew keeps accepting the size of its first
//! release (`SizedStruct::MIN_SIZE`; the fields such a caller lacks take their
//! zero defaults and are not written); smaller is an error naming the struct;
//! larger is accepted and only the fields known here are read or written.

#![allow(non_camel_case_types)]
// C entry points take raw pointers by design; each is checked (NULL, the
// handle table, struct_size) before it is dereferenced.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod batch;
mod blas;
mod chat_json;
mod classify;
mod convert;
mod distributed;
mod error;
mod generation;
mod handles;
mod lora;
mod memory;
mod metrics;
mod model;
mod options;
mod version;

pub use batch::*;
pub use blas::*;
pub use chat_json::*;
pub use classify::*;
pub use convert::*;
pub use distributed::*;
pub use error::*;
pub use generation::*;
pub use lora::*;
pub use memory::*;
pub use metrics::*;
pub use model::*;
pub use options::*;
pub use version::*;

use crate::{Error, Result};
use std::ffi::{c_char, CStr, CString};

/// Return code of a successful call.
pub const GM_OK: i32 = 0;
/// Return code of a failed call; `gm_last_error()` says why.
pub const GM_ERROR: i32 = -1;

/// Runs `f`, turning an `Err` or a panic into `on_error` and the thread's last error.
/// A panic prints nothing (`crate::panics`): the host's stderr is not ours.
pub(crate) fn guard<T>(on_error: T, f: impl FnOnce() -> Result<T>) -> T {
    match crate::panics::catch(f) {
        Ok(Ok(v)) => {
            error::clear();
            v
        }
        Ok(Err(e)) => {
            error::set(&e.to_string());
            on_error
        }
        Err(what) => {
            error::set(&format!("internal error (panic): {what}"));
            on_error
        }
    }
}

/// Like `guard` for calls that return a status code.
pub(crate) fn guard_status(f: impl FnOnce() -> Result<()>) -> i32 {
    guard(GM_ERROR, || f().map(|_| GM_OK))
}

pub(crate) fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}

/// Borrows a C string argument as UTF-8.
pub(crate) fn c_str<'a>(ptr: *const c_char, what: &str) -> Result<&'a str> {
    if ptr.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    unsafe { CStr::from_ptr(ptr) }.to_str().map_err(|_| invalid(format!("{what} is not valid UTF-8")))
}

/// Borrows an optional C string (NULL = None).
pub(crate) fn opt_c_str<'a>(ptr: *const c_char, what: &str) -> Result<Option<&'a str>> {
    if ptr.is_null() {
        Ok(None)
    } else {
        c_str(ptr, what).map(Some)
    }
}

/// Borrows an array argument of `n` elements; NULL is allowed only when `n` is 0.
pub(crate) fn c_slice<'a, T>(ptr: *const T, n: usize, what: &str) -> Result<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(invalid(format!("{what} is NULL but its count is {n}")));
    }
    if n > isize::MAX as usize / std::mem::size_of::<T>().max(1) {
        return Err(invalid(format!("{what}: count {n} is too large")));
    }
    Ok(unsafe { std::slice::from_raw_parts(ptr, n) })
}

/// Borrows an array of `n` C strings as UTF-8.
pub(crate) fn c_strs<'a>(ptr: *const *const c_char, n: usize, what: &str) -> Result<Vec<&'a str>> {
    c_slice(ptr, n, what)?.iter().enumerate().map(|(i, &p)| c_str(p, &format!("{what}[{i}]"))).collect()
}

/// An owned C string; interior NULs (never produced by a tokenizer for text)
/// are replaced so the string is never cut short silently.
pub(crate) fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "\u{FFFD}")).expect("no NUL after replace")
}

/// Writes through an out-pointer argument after checking it.
pub(crate) fn write_out<T>(ptr: *mut T, what: &str, value: T) -> Result<()> {
    if ptr.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    unsafe { ptr.write(value) };
    Ok(())
}

/// A struct that starts with `size_t struct_size`, made of integers, floats
/// and pointers only (all-zero bytes are a valid value: the defaults).
pub(crate) trait SizedStruct: Sized {
    const NAME: &'static str;
    /// The size of the struct's first release; callers compiled against it stay valid.
    const MIN_SIZE: usize = std::mem::size_of::<Self>();
}

/// Checks the `struct_size` of a caller's struct at `ptr` (not NULL); returns
/// how many of its bytes this library may read or write.
pub(crate) fn check_size<T: SizedStruct>(ptr: *const T) -> Result<usize> {
    let size = unsafe { (ptr as *const usize).read_unaligned() };
    let need = T::MIN_SIZE;
    if size < need {
        return Err(invalid(format!("{}.struct_size is {size}; this library needs at least {need} (sizeof({}))", T::NAME, T::NAME)));
    }
    Ok(size.min(std::mem::size_of::<T>()))
}

/// Reads a caller's options struct: NULL gives `None` (defaults); fields past
/// an older caller's `struct_size` are zero.
pub(crate) fn read_opts<T: SizedStruct + Copy>(ptr: *const T) -> Result<Option<T>> {
    if ptr.is_null() {
        return Ok(None);
    }
    let n = check_size(ptr)?;
    let mut v = std::mem::MaybeUninit::<T>::zeroed();
    // SAFETY: T is plain data (SizedStruct), all-zero is valid, and n ≤ both sizes.
    unsafe {
        std::ptr::copy_nonoverlapping(ptr as *const u8, v.as_mut_ptr() as *mut u8, n);
        Ok(Some(v.assume_init()))
    }
}

/// Writes a result struct into the caller's (whose `struct_size` is kept);
/// only the fields this library knows and the caller's struct has are written.
pub(crate) fn write_sized<T: SizedStruct>(ptr: *mut T, what: &str, value: T) -> Result<()> {
    if ptr.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    let n = check_size(ptr)?;
    let size = unsafe { (ptr as *const usize).read_unaligned() };
    let value = std::mem::ManuallyDrop::new(value);
    unsafe {
        std::ptr::copy_nonoverlapping(&*value as *const T as *const u8, ptr as *mut u8, n);
        (ptr as *mut usize).write_unaligned(size);
    }
    Ok(())
}
