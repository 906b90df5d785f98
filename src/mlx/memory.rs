//! MLX allocator statistics and limits (bytes).

use super::{status, sys};
use crate::Result;

fn read(f: unsafe extern "C" fn(*mut usize) -> i32) -> Result<usize> {
    status::init();
    let mut v = 0usize;
    status::check(unsafe { f(&mut v) })?;
    Ok(v)
}

/// Bytes held by live arrays.
pub fn active() -> Result<usize> {
    read(sys::mlx_get_active_memory)
}

/// Highest `active()` since start or the last `reset_peak()`.
pub fn peak() -> Result<usize> {
    read(sys::mlx_get_peak_memory)
}

pub fn reset_peak() -> Result<()> {
    status::init();
    status::check(unsafe { sys::mlx_reset_peak_memory() })
}

/// Bytes kept in MLX's buffer cache for reuse.
pub fn cache() -> Result<usize> {
    read(sys::mlx_get_cache_memory)
}

pub fn memory_limit() -> Result<usize> {
    read(sys::mlx_get_memory_limit)
}

/// Sets the memory limit; returns the previous one.
pub fn set_memory_limit(limit: usize) -> Result<usize> {
    status::init();
    let mut prev = 0usize;
    status::check(unsafe { sys::mlx_set_memory_limit(&mut prev, limit) })?;
    Ok(prev)
}

/// Sets the buffer-cache limit; returns the previous one.
pub fn set_cache_limit(limit: usize) -> Result<usize> {
    status::init();
    let mut prev = 0usize;
    status::check(unsafe { sys::mlx_set_cache_limit(&mut prev, limit) })?;
    Ok(prev)
}

/// Returns cached buffers to the system.
pub fn clear_cache() -> Result<()> {
    status::init();
    status::check(unsafe { sys::mlx_clear_cache() })
}
