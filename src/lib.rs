//! gomlx: an LLM engine on Apple's MLX, driven through mlx-c.
//!
//! Layers (each calls only the one below): `ffi` → `engine` → `text`, `sample`,
//! `cache` → `models` → `mlx`. See docs/architecture.md.

pub mod error;
pub mod gguf;

pub use error::{Error, Result};
