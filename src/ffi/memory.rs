//! MLX memory statistics and limits, process-wide, in bytes.

use super::guard;
use crate::mlx::memory;

/// Bytes held by live MLX arrays in this process (0 if unavailable).
#[no_mangle]
pub extern "C" fn gm_memory_active() -> usize {
    guard(0, memory::active)
}

/// Highest `gm_memory_active` since start or the last `gm_memory_reset_peak`.
#[no_mangle]
pub extern "C" fn gm_memory_peak() -> usize {
    guard(0, memory::peak)
}

/// Restarts peak tracking from the current active memory.
#[no_mangle]
pub extern "C" fn gm_memory_reset_peak() {
    guard((), memory::reset_peak)
}

/// Bytes kept in MLX's buffer cache for reuse.
#[no_mangle]
pub extern "C" fn gm_memory_cache() -> usize {
    guard(0, memory::cache)
}

/// Sets the memory limit in bytes; returns the previous limit.
#[no_mangle]
pub extern "C" fn gm_set_memory_limit(limit: usize) -> usize {
    guard(0, || memory::set_memory_limit(limit))
}

/// Sets the buffer-cache limit in bytes; returns the previous limit.
#[no_mangle]
pub extern "C" fn gm_set_cache_limit(limit: usize) -> usize {
    guard(0, || memory::set_cache_limit(limit))
}

/// Returns MLX's cached buffers to the system; on Linux with glibc also
/// returns the C heap's free pages (`malloc_trim(0)`), which glibc otherwise
/// keeps after a model is closed.
#[no_mangle]
pub extern "C" fn gm_clear_cache() {
    guard((), || {
        memory::clear_cache()?;
        trim_heap();
        Ok(())
    })
}

/// glibc keeps freed memory in its arenas; `malloc_trim` gives the free pages back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: malloc_trim takes no pointers and is thread-safe in glibc.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}
