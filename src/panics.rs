//! Panics inside gomlx become errors and print nothing.
//!
//! A library embedded in a Go service or a macOS app must not write to the
//! host's stderr, and Rust's default panic hook prints every panic (with a
//! backtrace note) on the thread where it happens, even when the panic is
//! caught a moment later. Dependencies panic on hostile input (Oniguruma's
//! "retry-limit-in-match over" inside a tokenizer's pre-tokenizer regex), so
//! gomlx both catches panics and keeps them quiet:
//!
//! - `catch(f)` runs `f` inside `catch_unwind` and turns a panic into its
//!   message; while it runs, the thread is marked quiet.
//! - A panic hook, installed once (`install`), stays silent for panics on a
//!   quiet thread or on a thread gomlx started (every such thread is named
//!   `gomlx-*`: engine threads, tokenizer and batch-encoding threads), and
//!   hands every other panic to the hook that was installed before it (a Rust
//!   host's own panics still print as they did).
//!
//! Every C ABI entry point (`ffi::guard`), every unit of engine work
//! (`engine::worker::guarded`) and every call into the tokenizer goes
//! through `catch`, so no panic text reaches stderr from any thread gomlx
//! runs code on. The `gomlx` command installs the same hook for the whole
//! process and reports a panic as one line, `gomlx: internal error (panic): ...`.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    static QUIET: Cell<u32> = const { Cell::new(0) };
}

/// Prefix of the names of the threads gomlx starts.
pub const THREAD_PREFIX: &str = "gomlx-";

/// Installs the quiet hook (once per process; later calls do nothing).
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !is_quiet() {
                previous(info);
            }
        }));
    });
}

/// Whether a panic on the current thread is kept quiet.
fn is_quiet() -> bool {
    if QUIET.try_with(|q| q.get() > 0).unwrap_or(true) {
        return true;
    }
    std::thread::current().name().is_some_and(|n| n.starts_with(THREAD_PREFIX))
}

/// The message of a panic payload.
pub fn message(payload: &(dyn std::any::Any + Send)) -> String {
    payload.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| payload.downcast_ref::<String>().cloned()).unwrap_or_else(|| "unknown panic".into())
}

/// Runs `f`; a panic inside it prints nothing and comes back as its message.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install();
    struct Quiet;
    impl Drop for Quiet {
        fn drop(&mut self) {
            let _ = QUIET.try_with(|q| q.set(q.get().saturating_sub(1)));
        }
    }
    let _ = QUIET.try_with(|q| q.set(q.get() + 1));
    let _quiet = Quiet;
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| message(&*p))
}

/// A thread builder named `gomlx-<name>`, so panics on it stay quiet.
pub fn thread(name: &str) -> std::thread::Builder {
    install();
    std::thread::Builder::new().name(format!("{THREAD_PREFIX}{name}"))
}
