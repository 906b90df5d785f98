//! `gm_last_error`: the message of the calling thread's last failed call.

use std::cell::RefCell;
use std::ffi::{c_char, CString};

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

pub(crate) fn set(msg: &str) {
    // Interior NULs would truncate the C string; replace them.
    let c = CString::new(msg.replace('\0', "\\0")).expect("no NUL after replace");
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(c));
}

pub(crate) fn clear() {
    LAST_ERROR.with(|e| *e.borrow_mut() = None);
}

/// The message of the calling thread's most recent failed gomlx call, or NULL
/// if the most recent call succeeded.
///
/// The string is owned by gomlx and stays valid until the next gomlx call on
/// the same thread; copy it to keep it. Each thread has its own last error.
#[no_mangle]
pub extern "C" fn gm_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ref().map_or(std::ptr::null(), |c| c.as_ptr()))
}
