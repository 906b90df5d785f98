//! What an architecture family is to the loader: which `model_type`s and GGUF
//! architectures it reads, the config defaults that tell it apart (data, not
//! code), and how it builds its network from the weights. A family is one file
//! implementing `Family`, registered with one line in `models/mod.rs`.

use super::config::ModelConfig;
use super::gguf::GgufArch;
use super::layers::{Context, Linear};
use super::weights::Weights;
use crate::cache::KvCache;
use crate::mlx::Array;
use crate::Result;
use serde_json::{Map, Value};

/// Settings a `model_type` implies where config.json leaves them out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Defaults {
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub rope_theta: f32,
    /// Sliding-window layers have their own RoPE base (`rope_local_base_freq`), this by default.
    pub local_rope_theta: Option<f32>,
    /// Every this-many-th layer is global when `sliding_window` is set and
    /// `layer_types` is absent (`sliding_window_pattern`); None: all layers slide.
    pub sliding_window_pattern: Option<usize>,
    /// Whether `sliding_window` is read at all (Mistral, Gemma).
    pub sliding_window: bool,
    /// Attention scale from `query_pre_attn_scalar` instead of `head_dim`.
    pub query_pre_attn_scalar: bool,
    /// RMSNorm on queries and keys per head.
    pub qk_norm: bool,
    /// Bias on q/k/v (and not on o) without `attention_bias`.
    pub qkv_bias: bool,
}

impl Defaults {
    /// Llama's: the defaults of transformers' LlamaConfig.
    pub const LLAMA: Defaults = Defaults {
        max_position_embeddings: 4096,
        tie_word_embeddings: false,
        rope_theta: 10_000.0,
        local_rope_theta: None,
        sliding_window_pattern: None,
        sliding_window: false,
        query_pre_attn_scalar: false,
        qk_norm: false,
        qkv_bias: false,
    };
}

/// One architecture family.
pub trait Family: Sync {
    /// The family's name (its file's name).
    fn name(&self) -> &'static str;
    /// The config.json `model_type` values it loads.
    fn model_types(&self) -> &'static [&'static str];
    /// The defaults `model_type` implies (one of `model_types`).
    fn defaults(&self, model_type: &str) -> Defaults;
    /// Settings beyond the common ones, read from config.json's (text) object.
    fn configure(&self, _config: &Map<String, Value>, _cfg: &mut ModelConfig) -> Result<()> {
        Ok(())
    }
    /// The GGUF architectures (`general.architecture`) it reads.
    fn gguf(&self) -> &'static [GgufArch] {
        &[]
    }
    /// Renames, drops or restacks checkpoint tensors before `build`.
    fn sanitize(&self, _weights: &mut Weights, _cfg: &ModelConfig) -> Result<()> {
        Ok(())
    }
    /// RMSNorm weight vectors per block (for parameter counts).
    fn norms_per_block(&self) -> u64 {
        2
    }
    /// Takes the weights and builds the network.
    fn build(&self, weights: &mut Weights, cfg: &ModelConfig) -> Result<Box<dyn Network>>;
}

/// A built network: weights only; caches and request state are passed in.
pub trait Network: Send {
    /// Token embeddings `[B, L, H]` (scaled where the family scales them), the input of block 0.
    fn embed(&self, tokens: &Array) -> Result<Array>;
    /// Decoder block `i` on `h`; without a cache it attends causally over `h` alone (training).
    fn block(&self, i: usize, h: &Array, cache: Option<&mut KvCache>, ctx: &Context) -> Result<Array>;
    /// The final norm after the last block.
    fn final_norm(&self, h: &Array) -> Result<Array>;
    /// Hidden states to logits `[.., V]`.
    fn logits(&self, h: &Array) -> Result<Array>;
    /// One fresh cache per layer.
    fn new_caches(&self) -> Vec<KvCache>;
    /// The projections of block `i`, named within the block (`self_attn.q_proj`, `mlp.down_proj`).
    fn block_linears(&self, i: usize) -> Vec<(String, &Linear)>;
    fn block_linears_mut(&mut self, i: usize) -> Vec<(String, &mut Linear)>;
    /// Every weight array.
    fn arrays(&self) -> Vec<&Array>;
}
