//! The table of live handles and result owners.
//!
//! A handle is a `Box` holding an `Arc` to its state. Its address is recorded
//! here with its kind from creation until it is freed; every entry point looks
//! the pointer up before touching it, so NULL, freed, double-freed and foreign
//! pointers are reported as errors. (An address the allocator hands out again
//! for a new handle of the same kind is indistinguishable from the old one —
//! that is the limit of "detectable".)

use super::invalid;
use crate::Result;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

static LIVE: Mutex<BTreeMap<usize, &'static str>> = Mutex::new(BTreeMap::new());

fn live() -> std::sync::MutexGuard<'static, BTreeMap<usize, &'static str>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// A heap handle type: a box around an `Arc` of its state.
pub(crate) trait Handle: Sized {
    const KIND: &'static str;
    type State;
    fn new(state: Arc<Self::State>) -> Self;
    fn state(&self) -> &Arc<Self::State>;
}

/// Boxes a new handle, records it and returns the pointer handed to C.
pub(crate) fn register<H: Handle>(state: Arc<H::State>) -> *mut H {
    let ptr = Box::into_raw(Box::new(H::new(state)));
    live().insert(ptr as usize, H::KIND);
    ptr
}

fn missing(kind: &str, ptr: usize) -> crate::Error {
    if ptr == 0 {
        invalid(format!("{kind} is NULL"))
    } else {
        invalid(format!("{kind} {ptr:#x} is not a live handle (already freed or closed, or not a {kind})"))
    }
}

/// The state behind a live handle.
pub(crate) fn get<H: Handle>(ptr: *const H) -> Result<Arc<H::State>> {
    let table = live();
    match table.get(&(ptr as usize)) {
        Some(&k) if k == H::KIND => Ok(unsafe { &*ptr }.state().clone()),
        _ => Err(missing(H::KIND, ptr as usize)),
    }
}

/// Unregisters and frees a handle, returning its state. Errors (and touches
/// nothing) when the pointer is not live.
pub(crate) fn take<H: Handle>(ptr: *mut H) -> Result<Arc<H::State>> {
    let mut table = live();
    match table.get(&(ptr as usize)) {
        Some(&k) if k == H::KIND => {
            table.remove(&(ptr as usize));
            drop(table);
            let b = unsafe { Box::from_raw(ptr) };
            Ok(b.state().clone())
        }
        _ => Err(missing(H::KIND, ptr as usize)),
    }
}

/// Records an owner of result arrays (a raw pointer handed to C inside a result struct).
pub(crate) fn register_owner<T>(owner: Box<T>, kind: &'static str) -> *mut std::ffi::c_void {
    let ptr = Box::into_raw(owner);
    live().insert(ptr as usize, kind);
    ptr as *mut std::ffi::c_void
}

/// Frees an owner registered with `register_owner`; false when it is not live.
pub(crate) fn take_owner<T>(ptr: *mut std::ffi::c_void, kind: &'static str) -> Option<Box<T>> {
    let mut table = live();
    match table.get(&(ptr as usize)) {
        Some(&k) if k == kind => {
            table.remove(&(ptr as usize));
            drop(table);
            Some(unsafe { Box::from_raw(ptr as *mut T) })
        }
        _ => None,
    }
}

// Handle states are shared between threads through the table.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<super::model::ModelState>();
    shared::<super::generation::GenerationState>();
    shared::<super::generation::SessionState>();
};
