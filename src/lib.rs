//! gomlx: an LLM engine on Apple's MLX, driven through mlx-c.
//!
//! Layers (each calls only the one below): `ffi` → `engine` → `text`, `sample`,
//! `cache` → `models` → `mlx`. See docs/architecture.md.

pub mod cache;
pub mod engine;
pub mod error;
pub mod ffi;
pub mod files;
#[doc(hidden)]
pub mod fuzz;
pub mod limits;
pub mod mlx;
pub mod models;
pub mod panics;
pub mod sample;
pub mod server;
pub mod text;
pub mod train;

pub use error::{Error, Result};
