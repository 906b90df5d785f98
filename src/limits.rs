//! Bounds on sizes that model files state, checked before anything is
//! allocated by them. Each is far above every released model (the largest
//! value known in brackets) and far below what would exhaust memory or wrap
//! the arithmetic that uses it (MLX shapes are `i32`, parameter counts `u64`).
//! A file past a bound is refused with an error naming the key, the value and
//! the bound (`check`).

use crate::{Error, Result};

/// Decoder layers (Llama 3.1 405B: 126).
pub const MAX_LAYERS: u64 = 4096;
/// Hidden size (Llama 3.1 405B: 16 384).
pub const MAX_HIDDEN: u64 = 1 << 17;
/// MLP width (Llama 3.1 405B: 53 248).
pub const MAX_INTERMEDIATE: u64 = 1 << 20;
/// Attention heads, query or key/value (Llama 3.1 405B: 128).
pub const MAX_HEADS: u64 = 4096;
/// Per-head width (Gemma 2: 256).
pub const MAX_HEAD_DIM: u64 = 4096;
/// Vocabulary entries (Gemma 3: 262 208).
pub const MAX_VOCAB: u64 = 1 << 24;
/// Positions (context length, sliding window; MLX indexes positions with i32).
pub const MAX_POSITIONS: u64 = i32::MAX as u64;
/// Bytes of one token's text in a GGUF vocabulary (byte-level BPE tokens of
/// real vocabularies stay below 256).
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Dimensions of one tensor each fit MLX's `i32` shapes.
pub const MAX_DIM: u64 = i32::MAX as u64;

/// Chat templates: instructions one render may execute (minijinja fuel). A
/// 1 000-message conversation through Qwen 3's template takes about 10^5.
pub const TEMPLATE_FUEL: u64 = 50_000_000;
/// Chat templates: bytes a render may write, beyond what it was given
/// (messages, tools, documents and extra variables, as JSON) times
/// `TEMPLATE_OUTPUT_FACTOR`.
pub const TEMPLATE_OUTPUT_BASE: usize = 16 << 20;
pub const TEMPLATE_OUTPUT_FACTOR: usize = 8;

/// `value` of `key` must be in `min..=max`; the error names `source` (a file
/// or "config.json"), the key, the value and the bound.
pub fn check(source: &str, key: &str, value: u64, min: u64, max: u64) -> Result<u64> {
    if value < min {
        return Err(Error::Model(format!("{source}: {key} is {value}, must be at least {min}")));
    }
    if value > max {
        return Err(Error::Model(format!("{source}: {key} {value} exceeds the limit of {max}")));
    }
    Ok(value)
}
