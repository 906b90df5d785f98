//! The one error type of gomlx. Every fallible call returns `gomlx::Result`.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error raised inside MLX (through mlx-c), with MLX's own message.
    #[error("mlx: {0}")]
    Mlx(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A model directory, config or weight file is not what it must be.
    #[error("model: {0}")]
    Model(String),
    /// A GGUF file is malformed or uses something unsupported.
    #[error("gguf: {0}")]
    Gguf(String),
    /// Tokenizer loading, encoding or decoding failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A chat template failed to parse or render.
    #[error("chat template: {0}")]
    Template(String),
    /// A caller passed an argument that cannot be used.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The request was cancelled by its caller.
    #[error("cancelled")]
    Cancelled,
    /// The engine thread of a model is gone (model closed or crashed).
    #[error("engine: {0}")]
    Engine(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
