//! Models: config parsing, weight loading, and one file per architecture
//! family over shared layers. A model holds weights only; per-request state
//! (KV caches) is passed in by the caller.

pub mod config;
mod discover;
mod gemma3;
pub mod layers;
mod llama;
pub mod policy;
pub mod weights;

pub use config::{Build, Family, ModelConfig, Quant};
pub use discover::{discover, walk_dirs, DiscoveredModel};
pub use layers::Context;

use crate::cache::KvCache;
use crate::mlx::{self, Array, Dtype};
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use weights::Weights;

/// Options for loading a model.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Compute dtype for floating weights. None: the checkpoint's on the GPU;
    /// on the CPU float32 when the widened weights fit `memory_budget`
    /// (see `policy`), else the checkpoint's.
    pub dtype: Option<Dtype>,
    /// Expand MLX-quantised matrices to dense `dtype` at load. None: on the CPU
    /// when the float32 result fits `memory_budget`; never on the GPU.
    pub dequantize: Option<bool>,
    /// Bytes the weights may take once widened (CPU policy). None:
    /// `policy::default_memory_budget()` (`GOMLX_CPU_MEMORY_BUDGET`, else half the RAM).
    pub memory_budget: Option<u64>,
    /// Cast floating matrices to `dtype` at load (true), or keep them as the
    /// checkpoint stores them and let each op widen them as it runs (false:
    /// the checkpoint's memory, same results). None: on the CPU widened when
    /// that fits `memory_budget` (`GOMLX_CPU_WEIGHTS=widened|stored` forces
    /// either); on the GPU weights are used as stored. See `policy`.
    pub widen: Option<bool>,
    /// Fuse q/k/v into one matmul (inference only: fused projections cannot
    /// take LoRA adapters). See `policy::inference_build` for the engine's choice.
    pub fuse_projections: bool,
    /// Run the gated MLP activation as one compiled kernel (on the CPU MLX
    /// JIT-compiles C++ for it at run time).
    pub compile: bool,
}

/// What a loaded model is.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ModelInfo {
    pub architecture: String,
    pub vocab_size: usize,
    pub num_layers: usize,
    pub hidden_size: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub context_length: usize,
    pub sliding_window: Option<usize>,
    pub dtype: String,
    /// The checkpoint's quantisation (most common bits and group size).
    pub quant_bits: Option<i32>,
    pub quant_group_size: Option<i32>,
    /// Whether quantised weights were expanded to `dtype` at load (CPU policy).
    pub dequantized: bool,
    /// The dtype the floating matrices (or quantisation scales) are held in:
    /// `dtype` when widened at load, else the checkpoint's (CPU policy).
    pub weights_dtype: String,
    pub parameters: u64,
    pub weight_bytes: u64,
}

enum Arch {
    Llama(llama::Llama),
    Gemma3(gemma3::Gemma3),
}

pub struct Model {
    config: ModelConfig,
    arch: Arch,
    info: ModelInfo,
    path: PathBuf,
}

/// Which positions of the output to project to logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    All,
    Last,
}

impl Model {
    /// Loads a Hugging Face style directory (config.json + safetensors).
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Model> {
        if dir.as_os_str().is_empty() {
            return Err(Error::InvalidArgument("the model path is empty (expected a model directory or a .gguf file)".into()));
        }
        if !dir.is_dir() {
            return Err(Error::Model(format!("{}: not a directory", dir.display())));
        }
        let cfg_path = dir.join("config.json");
        let text = crate::files::read_text(&cfg_path, crate::files::MAX_TEXT_FILE)?;
        let config = ModelConfig::from_json_str(&text).map_err(|e| Error::Model(format!("{}: {e}", dir.display())))?;
        let weights = Weights::load(dir)?;
        Model::from_weights(config, weights, opts)
    }

    /// Builds a model from a parsed config and its tensors (HF names).
    pub fn from_weights(mut config: ModelConfig, mut weights: Weights, opts: &LoadOptions) -> Result<Model> {
        if let Some(d) = opts.dtype.filter(|d| !d.is_float()) {
            return Err(Error::InvalidArgument(format!("compute dtype must be a float type, not {d}")));
        }
        let quantised = weights.iter().any(|(name, _)| name.ends_with(".scales"));
        let quant = config.quantization.clone();
        let device = mlx::stream::thread_device();
        let plan = policy::plan(&weights, &|m| quant.for_module(m).map(|q| q.bits), quantised, config.dtype, device, opts);
        if plan.dequantize {
            weights.dequantize_all(&|m| quant.for_module(m), plan.dtype)?;
            config.quantization = Default::default();
        } else if quantised {
            let backend = mlx::backend();
            let pick = |q: &config::Quant| policy::dequantized_at_load(device, backend, q);
            for m in mlx::stream::on_cpu(|| weights.dequantize_where(&|m| quant.for_module(m), plan.dtype, &pick))?? {
                config.quantization.overrides.insert(m, None);
            }
        }
        weights.cast_floats(plan.dtype, plan.widen)?;
        config.dtype = plan.dtype;
        config.build = Build { fuse_projections: opts.fuse_projections, compile_activations: opts.compile };
        let arch = match config.family {
            Family::Llama => Arch::Llama(llama::Llama::load(&mut weights, &config)?),
            Family::Gemma3 => Arch::Gemma3(gemma3::Gemma3::load(&mut weights, &config)?),
        };
        let path = weights.source().to_path_buf();
        let mut info = info_of(&config, 0);
        // The checkpoint's quantisation, also when the CPU policy expanded it at load.
        // GGUF files have no default, only per-module entries: the most common one.
        let common = quant.default.or_else(|| {
            let mut counts: std::collections::BTreeMap<(i32, i32), usize> = Default::default();
            for q in quant.overrides.values().flatten() {
                *counts.entry((q.bits, q.group_size)).or_default() += 1;
            }
            counts.into_iter().max_by_key(|&(_, n)| n).map(|((bits, group_size), _)| config::Quant { bits, group_size })
        });
        info.quant_bits = common.map(|q| q.bits);
        info.quant_group_size = common.map(|q| q.group_size);
        info.dequantized = plan.dequantize;
        let mut model = Model { info, config, arch, path };
        // Read every weight now, once, so requests never pay for loading.
        let arrays = model.arrays();
        mlx::eval(&arrays)?;
        let bytes: usize = arrays.iter().map(|a| a.nbytes()).sum();
        let held = arrays.iter().filter(|a| a.ndim() >= 2 && a.dtype().is_float()).max_by_key(|a| a.nbytes()).map(|a| a.dtype().name().to_string());
        model.info.weight_bytes = bytes as u64;
        if let Some(d) = held {
            model.info.weights_dtype = d;
        }
        Ok(model)
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One fresh KV cache per layer (rotating on sliding-window layers).
    pub fn new_caches(&self) -> Vec<KvCache> {
        match &self.arch {
            Arch::Llama(m) => m.new_caches(),
            Arch::Gemma3(m) => m.new_caches(),
        }
    }

    /// Final-norm hidden states `[B, L, H]` for `tokens` `[B, L]`, appending to `caches`.
    pub fn hidden(&self, tokens: &Array, caches: &mut [KvCache], ctx: &Context) -> Result<Array> {
        if caches.len() != self.config.num_layers {
            return Err(Error::InvalidArgument(format!("{} caches for {} layers", caches.len(), self.config.num_layers)));
        }
        if tokens.ndim() != 2 {
            return Err(Error::InvalidArgument(format!("tokens must be [batch, length], got shape {:?}", tokens.shape())));
        }
        match &self.arch {
            Arch::Llama(m) => m.hidden(tokens, caches, ctx),
            Arch::Gemma3(m) => m.hidden(tokens, caches, ctx),
        }
    }

    /// Projects hidden states to logits `[.., V]`.
    pub fn logits(&self, h: &Array) -> Result<Array> {
        match &self.arch {
            Arch::Llama(m) => m.logits(h),
            Arch::Gemma3(m) => m.logits(h),
        }
    }

    /// Logits for `tokens` `[B, L]`: `[B, L, V]`, or `[B, 1, V]` with `Logits::Last`.
    pub fn forward(&self, tokens: &Array, caches: &mut [KvCache], valid: Option<&Array>, which: Logits) -> Result<Array> {
        let h = self.hidden(tokens, caches, &Context { valid })?;
        let h = match which {
            Logits::All => h,
            Logits::Last if h.dim(1) == 1 => h,
            Logits::Last => {
                let l = h.dim(1);
                h.slice_axis(1, l - 1, l)?
            }
        };
        self.logits(&h)
    }

    /// Token embeddings `[B, L, H]` (scaled, for Gemma), the input of block 0.
    pub fn embed(&self, tokens: &Array) -> Result<Array> {
        match &self.arch {
            Arch::Llama(m) => m.embed(tokens),
            Arch::Gemma3(m) => m.embed(tokens),
        }
    }

    /// Decoder block `i` on `h`; without a cache the block attends (causally,
    /// from position 0) over `h`'s own positions, as training does.
    pub fn block(&self, i: usize, h: &Array, cache: Option<&mut KvCache>, ctx: &Context) -> Result<Array> {
        if i >= self.config.num_layers {
            return Err(Error::InvalidArgument(format!("block {i} of a {}-layer model", self.config.num_layers)));
        }
        match &self.arch {
            Arch::Llama(m) => m.block(i, h, cache, ctx),
            Arch::Gemma3(m) => m.block(i, h, cache, ctx),
        }
    }

    /// The final norm after the last block.
    pub fn final_norm(&self, h: &Array) -> Result<Array> {
        match &self.arch {
            Arch::Llama(m) => m.final_norm(h),
            Arch::Gemma3(m) => m.final_norm(h),
        }
    }

    /// The linear projections of block `i`, named within the block
    /// (`self_attn.q_proj`, ..., `mlp.down_proj`); the full checkpoint name is
    /// `model.layers.{i}.{name}`.
    pub fn block_linears(&self, i: usize) -> Vec<(String, &layers::Linear)> {
        match &self.arch {
            Arch::Llama(m) => m.block_linears(i),
            Arch::Gemma3(m) => m.block_linears(i),
        }
    }

    pub fn block_linears_mut(&mut self, i: usize) -> Vec<(String, &mut layers::Linear)> {
        match &mut self.arch {
            Arch::Llama(m) => m.block_linears_mut(i),
            Arch::Gemma3(m) => m.block_linears_mut(i),
        }
    }

    fn arrays(&self) -> Vec<&Array> {
        match &self.arch {
            Arch::Llama(m) => m.arrays(),
            Arch::Gemma3(m) => m.arrays(),
        }
    }
}

/// ModelInfo from the config; parameters counted from the architecture's shapes.
fn info_of(c: &ModelConfig, weight_bytes: u64) -> ModelInfo {
    let (h, hd, nh, nkv, i) = (c.hidden_size as u64, c.head_dim as u64, c.num_heads as u64, c.num_kv_heads as u64, c.intermediate_size as u64);
    let attn = h * nh * hd * 2 + h * nkv * hd * 2 + if c.qkv_bias { (nh + 2 * nkv) * hd } else { 0 } + if c.qk_norm { 2 * hd } else { 0 };
    let norms = if c.family == Family::Gemma3 { 4 * h } else { 2 * h };
    let layer = attn + 3 * h * i + norms;
    let embed = c.vocab_size as u64 * h;
    let head = if c.tie_word_embeddings { 0 } else { embed };
    let q = c.quantization.default;
    ModelInfo {
        architecture: c.model_type.clone(),
        vocab_size: c.vocab_size,
        num_layers: c.num_layers,
        hidden_size: c.hidden_size,
        num_heads: c.num_heads,
        num_kv_heads: c.num_kv_heads,
        head_dim: c.head_dim,
        context_length: c.max_position_embeddings,
        sliding_window: if c.sliding.iter().any(|&s| s) { c.sliding_window } else { None },
        dtype: c.dtype.name().to_string(),
        quant_bits: q.map(|q| q.bits),
        quant_group_size: q.map(|q| q.group_size),
        dequantized: false,
        weights_dtype: c.dtype.name().to_string(),
        parameters: embed + head + layer * c.num_layers as u64 + h,
        weight_bytes,
    }
}
