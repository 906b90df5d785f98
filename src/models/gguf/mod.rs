//! GGUF models (llama.cpp / Ollama files): reader, block decoders with MLX affine repacking,
//! config and tensor-name mapping, and the tokenizer from metadata. `load` turns a file into
//! MLX arrays under Hugging Face names (`models::load` makes the `Model`). See docs/gguf.md.

pub mod config;
mod load;
pub mod names;
pub mod quants;
pub mod reader;
pub mod tokenizer;
pub mod types;
pub mod weights;

pub use config::{hf_config, GgufArch};
pub use load::{config, config_and_weights, is_native, split_weights, tokenizer, Reader, Split};
pub use quants::{decode, dequantize, TensorData};
pub use reader::{GgufFile, TensorInfo, Value};
pub use tokenizer::GgufTokenizer;
pub use types::GgmlType;
pub use weights::{GgufModel, HfTensor};
