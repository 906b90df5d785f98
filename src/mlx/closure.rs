//! mlx-c closures and the transforms over them: `value_and_grad`, `checkpoint`.
//!
//! A `Closure` wraps a Rust function `&[Array] -> Result<Vec<Array>>` as an
//! `mlx_closure` through `mlx_closure_new_func_payload`. The trampoline that C++
//! calls never unwinds: a panic is caught, and it or an `Err` is stored in a
//! thread-local slot and reported by returning non-zero (mlx-c then throws
//! inside C++, and the outer mlx-c call returns non-zero to us). The wrapper
//! that saw the failure hands back the Rust error, not mlx-c's generic
//! "mlx_closure returned a non-zero value".
//!
//! Payload ownership: the payload is shared with C++ (which may keep the
//! closure alive inside a graph, e.g. a checkpoint's backward recomputation).
//! `Closure::new` needs a `'static` function. `scoped` lends a borrowed one for
//! the duration of a call: when the scope ends, the function is unhooked and
//! any later call from C++ fails with an error instead of touching freed memory.

use super::array::Array;
use super::vector::VectorArray;
use super::{status, sys};
use crate::{Error, Result};
use std::cell::RefCell;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

type DynFn<'a> = dyn Fn(&[Array]) -> Result<Vec<Array>> + 'a;

thread_local! {
    /// The error of the last failed Rust callback on this thread.
    static CALLBACK_ERROR: RefCell<Option<Error>> = const { RefCell::new(None) };
}

fn set_callback_error(e: Error) {
    let _ = CALLBACK_ERROR.try_with(|s| *s.borrow_mut() = Some(e));
}

fn take_callback_error() -> Option<Error> {
    CALLBACK_ERROR.try_with(|s| s.borrow_mut().take()).ok().flatten()
}

/// Turns the return code of an mlx-c call that may have run our callbacks into
/// a `Result`, preferring the callback's own error.
fn check_apply(rc: i32) -> Result<()> {
    if rc == 0 {
        return Ok(());
    }
    match take_callback_error() {
        Some(e) => {
            // Drop mlx-c's generic message so it cannot surface later.
            let _ = status::check(rc);
            Err(e)
        }
        None => status::check(rc),
    }
}

/// What C++ holds: the function, or None once its scope has ended.
struct Slot {
    func: Mutex<Option<Box<DynFn<'static>>>>,
}

unsafe extern "C" fn trampoline(res: *mut sys::mlx_vector_array, input: sys::mlx_vector_array, payload: *mut c_void) -> i32 {
    let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<()> {
        let slot = unsafe { &*(payload as *const Slot) };
        // Copy the input handles out (each owned by an Array).
        let n = unsafe { sys::mlx_vector_array_size(input) };
        let mut args = Vec::with_capacity(n);
        for i in 0..n {
            let mut raw = unsafe { sys::mlx_array_new() };
            let rc = unsafe { sys::mlx_vector_array_get(&mut raw, input, i) };
            let a = Array::from_raw(raw);
            status::check(rc)?;
            args.push(a);
        }
        let guard = slot.func.lock().map_err(|_| Error::Mlx("closure state poisoned by an earlier panic".into()))?;
        let f = guard.as_ref().ok_or_else(|| Error::Mlx("closure called after the scope that lent it ended".into()))?;
        let out = f(&args)?;
        drop(guard);
        let raws: Vec<sys::mlx_array> = out.iter().map(|a| a.raw()).collect();
        status::check(unsafe { sys::mlx_vector_array_set_data(res, raws.as_ptr(), raws.len()) })
    }));
    match outcome {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            set_callback_error(e);
            1
        }
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_callback_error(Error::Mlx(format!("panic in closure: {msg}")));
            1
        }
    }
}

unsafe extern "C" fn drop_slot(payload: *mut c_void) {
    // Never unwind into C++.
    let _ = catch_unwind(|| drop(unsafe { Arc::from_raw(payload as *const Slot) }));
}

/// An owned `mlx_closure`.
pub struct Closure {
    raw: sys::mlx_closure,
}

impl Drop for Closure {
    fn drop(&mut self) {
        unsafe { sys::mlx_closure_free(self.raw) };
    }
}

impl Closure {
    fn from_slot(slot: &Arc<Slot>) -> Result<Closure> {
        status::init();
        let payload = Arc::into_raw(slot.clone()) as *mut c_void;
        let raw = unsafe { sys::mlx_closure_new_func_payload(Some(trampoline), payload, Some(drop_slot)) };
        if raw.ctx.is_null() {
            // mlx-c failed (and released the payload through `drop_slot`).
            return Err(status::check(1).err().unwrap_or_else(|| Error::Mlx("mlx_closure_new_func_payload failed".into())));
        }
        Ok(Closure { raw })
    }

    /// A closure over an owned function.
    pub fn new(f: impl Fn(&[Array]) -> Result<Vec<Array>> + 'static) -> Result<Closure> {
        // Not Send/Sync: MLX runs a closure on the thread that applies the transform.
        #[allow(clippy::arc_with_non_send_sync)]
        let slot = Arc::new(Slot { func: Mutex::new(Some(Box::new(f))) });
        Closure::from_slot(&slot)
    }

    /// Calls the closure.
    pub fn apply(&self, args: &[&Array]) -> Result<Vec<Array>> {
        status::init();
        let input = VectorArray::from_arrays(args);
        let mut out = VectorArray::new();
        take_callback_error();
        check_apply(unsafe { sys::mlx_closure_apply(out.raw_mut(), self.raw, input.raw()) })?;
        out.into_vec()
    }

    /// `mlx_compile`: the returned closure traces this one on first use (per
    /// input shapes, or once for all shapes when `shapeless`, which only
    /// shape-agnostic graphs such as elementwise chains allow) and then replays
    /// the simplified graph, with elementwise runs fused into single kernels.
    pub fn compile(&self, shapeless: bool) -> Result<Closure> {
        status::init();
        let mut raw = unsafe { sys::mlx_closure_new() };
        let rc = unsafe { sys::mlx_compile(&mut raw, self.raw, shapeless) };
        let c = Closure { raw };
        status::check(rc)?;
        Ok(c)
    }

    /// Gradient checkpointing: the returned closure computes the same values
    /// but keeps no intermediates for the backward pass; they are recomputed by
    /// calling this closure again. Gradients flow to the closure's inputs only,
    /// so every parameter that needs one must be passed as an argument.
    pub fn checkpoint(&self) -> Result<Closure> {
        status::init();
        let mut raw = unsafe { sys::mlx_closure_new() };
        let rc = unsafe { sys::mlx_checkpoint(&mut raw, self.raw) };
        let c = Closure { raw };
        status::check(rc)?;
        Ok(c)
    }

    /// `value_and_grad` of this closure: gradients of its first output (a
    /// scalar) with respect to the arguments at `argnums`.
    pub fn value_and_grad(&self, argnums: &[i32]) -> Result<ValueAndGrad> {
        status::init();
        let mut raw = unsafe { sys::mlx_closure_value_and_grad_new() };
        let rc = unsafe { sys::mlx_value_and_grad(&mut raw, self.raw, argnums.as_ptr(), argnums.len()) };
        let v = ValueAndGrad { raw };
        status::check(rc)?;
        Ok(v)
    }
}

/// Lends borrowed functions to MLX as closures for the duration of `scope`'s body.
pub struct Scope<'env> {
    slots: Mutex<Vec<Arc<Slot>>>,
    _env: std::marker::PhantomData<&'env mut &'env ()>,
}

impl<'env> Scope<'env> {
    /// A closure over `f`, which may borrow from the environment of the scope.
    /// When the scope ends, the closure (and any copy C++ kept, e.g. inside a
    /// checkpoint) fails with an error when called.
    pub fn lend(&self, f: impl Fn(&[Array]) -> Result<Vec<Array>> + 'env) -> Result<Closure> {
        let boxed: Box<DynFn<'env>> = Box::new(f);
        // SAFETY: the box lives in the slot only until this scope is dropped
        // (see Drop below), which `scope` guarantees happens before 'env ends,
        // also on unwind; a scope cannot be leaked since `scope` owns it.
        let boxed: Box<DynFn<'static>> = unsafe { std::mem::transmute::<Box<DynFn<'env>>, Box<DynFn<'static>>>(boxed) };
        #[allow(clippy::arc_with_non_send_sync)]
        let slot = Arc::new(Slot { func: Mutex::new(Some(boxed)) });
        lock(&self.slots).push(slot.clone());
        Closure::from_slot(&slot)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Drop for Scope<'_> {
    fn drop(&mut self) {
        for slot in lock(&self.slots).drain(..) {
            *lock(&slot.func) = None;
        }
    }
}

/// Runs `body` with a `Scope` that lends borrowed functions to MLX; every
/// closure lent is unhooked when `body` returns.
pub fn scope<'env, R>(body: impl FnOnce(&Scope<'env>) -> R) -> R {
    let s = Scope { slots: Mutex::new(Vec::new()), _env: std::marker::PhantomData };
    body(&s)
}

/// Lends `f` to MLX as a closure for the duration of `body`.
pub fn scoped<'a, R>(f: &'a DynFn<'a>, body: impl FnOnce(&Closure) -> R) -> Result<R> {
    scope(|s| {
        let c = s.lend(f)?;
        Ok(body(&c))
    })
}

/// An owned `mlx_closure_value_and_grad`.
pub struct ValueAndGrad {
    raw: sys::mlx_closure_value_and_grad,
}

impl Drop for ValueAndGrad {
    fn drop(&mut self) {
        unsafe { sys::mlx_closure_value_and_grad_free(self.raw) };
    }
}

impl ValueAndGrad {
    /// The closure's outputs and the gradients of the first output with
    /// respect to each of the `argnums` arguments (in `argnums` order).
    pub fn apply(&self, args: &[&Array]) -> Result<(Vec<Array>, Vec<Array>)> {
        status::init();
        let input = VectorArray::from_arrays(args);
        let mut values = VectorArray::new();
        let mut grads = VectorArray::new();
        take_callback_error();
        check_apply(unsafe { sys::mlx_closure_value_and_grad_apply(values.raw_mut(), grads.raw_mut(), self.raw, input.raw()) })?;
        Ok((values.into_vec()?, grads.into_vec()?))
    }
}

/// Convenience: value and gradients of `f` (first output) at `args`, w.r.t. `argnums`.
pub fn value_and_grad(f: &DynFn<'_>, args: &[&Array], argnums: &[i32]) -> Result<(Vec<Array>, Vec<Array>)> {
    scoped(f, |c| c.value_and_grad(argnums)?.apply(args))?
}
