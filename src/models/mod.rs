//! Models: config parsing, weight loading, and one file per architecture
//! family over shared layers. A model holds weights only; per-request state
//! (KV caches) is passed in by the caller.

pub mod adapters;
pub mod config;
pub mod convert;
mod discover;
pub mod family;
pub mod gguf;
pub mod layers;
pub mod linear_attention;
mod load;
pub mod lora;
pub mod policy;
pub mod shard;
pub mod strategy;
pub mod tuning;
pub mod weights;

/// The architecture families: one file each, registered here with one line.
macro_rules! families {
    ($($family:ident: $value:expr,)*) => {
        $(mod $family;)*
        /// Every registered family, in registration order.
        pub fn families() -> &'static [&'static dyn Family] {
            &[$(&$value),*]
        }
    };
}

families! {
    llama: llama::Llama,
    gemma3: gemma3::Gemma3,
    phi3: phi3::Phi3,
    smollm3: smollm3::SmolLm3,
    ministral3: ministral3::Ministral3,
    qwen3_moe: qwen3_moe::Qwen3Moe,
    mixtral: mixtral::Mixtral,
    gpt_oss: gpt_oss::GptOss,
    qwen3_5: qwen3_5::Qwen35,
    qwen3_5_moe: qwen3_5_moe::Qwen35Moe,
    gemma4: gemma4::Gemma4,
}

pub use config::{Build, ModelConfig, Quant};
pub use discover::{discover, DiscoveredModel};
pub use family::{Family, Network};
pub use layers::Context;
pub use load::{is_gguf, load, Loaded};

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
    /// `GOMLX_CPU_MEMORY_BUDGET`, else half the RAM (`tuning`).
    pub memory_budget: Option<u64>,
    /// Cast floating matrices to `dtype` at load (true), or keep them as the
    /// checkpoint stores them and let each op widen them as it runs (false:
    /// the checkpoint's memory, same results). None: on the CPU widened when
    /// that fits `memory_budget` (`GOMLX_CPU_WEIGHTS=widened|stored` forces
    /// either); on the GPU weights are used as stored. See `policy`.
    pub widen: Option<bool>,
    /// Fuse q/k/v into one matmul (inference only: not with an adapter).
    /// None: `GOMLX_FUSE_PROJECTIONS`, else off (`tuning::fuse_projections`).
    pub fuse_projections: Option<bool>,
    /// Run the gated MLP activation as one compiled kernel. None:
    /// `GOMLX_COMPILE`, else on GPUs only (`tuning::compile`).
    pub compile: Option<bool>,
    /// Product thresholds (`strategy::Products`; 0 = never); None: the
    /// `GOMLX_CPU_DENSE_QMM_ROWS` / `GOMLX_GPU_DENSE_QMM_ROWS` /
    /// `GOMLX_CPU_SPLIT_OUT` variables, else the defaults (`tuning::products`).
    pub cpu_dense_qmm_rows: Option<usize>,
    pub gpu_dense_qmm_rows: Option<usize>,
    pub cpu_split_out: Option<usize>,
    /// A LoRA adapter directory in mlx-lm's layout (`adapters.safetensors` +
    /// `adapter_config.json`, as `gomlx lora` and `mlx_lm.lora` write) applied
    /// after the weights; projections then stay unfused.
    pub adapter: Option<PathBuf>,
    /// Split the model over the MLX distributed group of this backend
    /// (`ring`, `nccl`, `mpi`, `jaccl`, `any`): tensor parallel, every rank
    /// loading only its part. None: `GOMLX_DISTRIBUTED`, else off
    /// (`tuning::distributed`, docs/distributed.md).
    pub distributed: Option<String>,
    /// Split mixture-of-experts blocks by columns of every expert or by whole
    /// experts. None: `GOMLX_MOE_SPLIT`, else columns where they divide
    /// (`tuning::moe_split`, docs/distributed.md).
    pub moe_split: Option<shard::MoeSplit>,
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
    /// Bytes of the weights this process holds (its part when split).
    pub weight_bytes: u64,
    /// This process's rank and the group's size when the model is split
    /// over ranks (tensor parallel, docs/distributed.md); 0 and 1 otherwise.
    pub rank: usize,
    pub ranks: usize,
    /// How this rank's mixture-of-experts blocks are split (`columns` or
    /// `experts`) when the model has them and is split; None otherwise.
    pub moe_split: Option<String>,
}

pub struct Model {
    config: ModelConfig,
    net: Box<dyn Network>,
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
    /// Loads a model directory (config.json + safetensors) or a `.gguf` file,
    /// without its tokenizer (`models::load` gives both).
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Model> {
        load::load_parts(path, opts, false).map(|l| l.model)
    }

    /// A Hugging Face style directory (config.json + safetensors); with a
    /// group, this rank's part of it.
    fn load_dir(dir: &Path, opts: &LoadOptions, group: Option<std::sync::Arc<mlx::distributed::Group>>) -> Result<Model> {
        if !dir.is_dir() {
            return Err(Error::Model(format!("{}: not a directory", dir.display())));
        }
        let cfg_path = dir.join("config.json");
        let text = crate::files::read_text(&cfg_path, crate::files::MAX_TEXT_FILE)?;
        let config = ModelConfig::from_json_str(&text).map_err(|e| Error::Model(format!("{}: {e}", dir.display())))?;
        match group {
            Some(g) => {
                let shard = shard::Shard::new_with(g, &config, tuning::moe_split(opts))?;
                let weights = Weights::load_sharded(dir, &shard)?;
                Model::build(config, weights, opts, Some(shard))
            }
            None => Model::from_weights(config, Weights::load(dir)?, opts),
        }
    }

    /// Builds a model from a parsed config and its tensors (HF names).
    pub fn from_weights(config: ModelConfig, weights: Weights, opts: &LoadOptions) -> Result<Model> {
        Model::build(config, weights, opts, None)
    }

    /// `from_weights`; with a shard, `weights` are this rank's part (`shard`).
    pub(crate) fn build(mut config: ModelConfig, mut weights: Weights, opts: &LoadOptions, shard: Option<shard::Shard>) -> Result<Model> {
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
        config.build = Build {
            fuse_projections: tuning::fuse_projections(opts),
            compile_activations: tuning::compile(opts, device),
            products: tuning::products(opts),
            shard: None,
        };
        let family = config::family_of(&config.model_type)?;
        // The whole model's description, also on a rank that holds part of it.
        let mut info = info_of(&config, family.norms_per_block());
        if let Some(s) = &shard {
            s.apply(&mut config);
        }
        family.sanitize(&mut weights, &config)?;
        let net = family.build(&mut weights, &config)?;
        let path = weights.source().to_path_buf();
        // The checkpoint's quantisation, also when the CPU policy expanded it at load.
        // GGUF files have no default, only per-module entries: the most common one.
        let common = quant.default.or_else(|| {
            let mut counts: std::collections::BTreeMap<(i32, i32), usize> = Default::default();
            for q in quant.overrides.values().flatten() {
                *counts.entry((q.bits, q.group_size)).or_default() += 1;
            }
            counts.into_iter().max_by_key(|&(_, n)| n).map(|((bits, group_size), _)| config::Quant::affine(group_size, bits))
        });
        info.quant_bits = common.map(|q| q.bits);
        info.quant_group_size = common.map(|q| q.group_size);
        info.dequantized = plan.dequantize;
        if let Some(s) = &config.build.shard {
            (info.rank, info.ranks) = (s.rank, s.size);
            info.moe_split = config.moe.is_some().then(|| s.moe.name().to_string());
        }
        let mut model = Model { info, config, net, path };
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

    /// This process's (rank, ranks) when the model is split over a group, else (0, 1).
    pub fn rank(&self) -> (usize, usize) {
        self.config.build.shard.as_ref().map_or((0, 1), |s| (s.rank, s.size))
    }

    /// One fresh KV cache per layer (rotating on sliding-window layers).
    pub fn new_caches(&self) -> Vec<KvCache> {
        self.net.new_caches()
    }

    /// Final-norm hidden states `[B, L, H]` for `tokens` `[B, L]`, appending to `caches`.
    pub fn hidden(&self, tokens: &Array, caches: &mut [KvCache], ctx: &Context) -> Result<Array> {
        if caches.len() != self.config.num_layers {
            return Err(Error::InvalidArgument(format!("{} caches for {} layers", caches.len(), self.config.num_layers)));
        }
        if tokens.ndim() != 2 {
            return Err(Error::InvalidArgument(format!("tokens must be [batch, length], got shape {:?}", tokens.shape())));
        }
        let mut h = self.net.embed(tokens)?;
        for (i, cache) in caches.iter_mut().enumerate() {
            h = self.net.block(i, &h, Some(cache), ctx)?;
        }
        self.net.final_norm(&h)
    }

    /// Projects hidden states to logits `[.., V]`.
    pub fn logits(&self, h: &Array) -> Result<Array> {
        self.net.logits(h)
    }

    /// Logits for `tokens` `[B, L]`: `[B, L, V]`, or `[B, 1, V]` with `Logits::Last`.
    pub fn forward(&self, tokens: &Array, caches: &mut [KvCache], valid: Option<&Array>, which: Logits) -> Result<Array> {
        self.forward_ctx(tokens, caches, &Context { valid, positions: None }, which)
    }

    /// `forward` with a batch's per-row positions and padding (`Context`).
    pub fn forward_ctx(&self, tokens: &Array, caches: &mut [KvCache], ctx: &Context, which: Logits) -> Result<Array> {
        let h = self.hidden(tokens, caches, ctx)?;
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
        self.net.embed(tokens)
    }

    /// Decoder block `i` on `h`; without a cache the block attends (causally,
    /// from position 0) over `h`'s own positions, as training does.
    pub fn block(&self, i: usize, h: &Array, cache: Option<&mut KvCache>, ctx: &Context) -> Result<Array> {
        if i >= self.config.num_layers {
            return Err(Error::InvalidArgument(format!("block {i} of a {}-layer model", self.config.num_layers)));
        }
        self.net.block(i, h, cache, ctx)
    }

    /// The final norm after the last block.
    pub fn final_norm(&self, h: &Array) -> Result<Array> {
        self.net.final_norm(h)
    }

    /// The linear projections of block `i`, named within the block
    /// (`self_attn.q_proj`, ..., `mlp.down_proj`); the full checkpoint name is
    /// `model.layers.{i}.{name}`.
    pub fn block_linears(&self, i: usize) -> Vec<(String, &layers::Linear)> {
        self.net.block_linears(i)
    }

    pub fn block_linears_mut(&mut self, i: usize) -> Vec<(String, &mut layers::Linear)> {
        self.net.block_linears_mut(i)
    }

    fn arrays(&self) -> Vec<&Array> {
        self.net.arrays()
    }
}

/// ModelInfo from the config; parameters counted from the architecture's shapes.
fn info_of(c: &ModelConfig, norms_per_block: u64) -> ModelInfo {
    let (h, hd, nh, nkv, i) = (c.hidden_size as u64, c.head_dim as u64, c.num_heads as u64, c.num_kv_heads as u64, c.intermediate_size as u64);
    let attn = h * nh * hd * 2 + h * nkv * hd * 2 + if c.qkv_bias { (nh + 2 * nkv) * hd } else { 0 } + if c.qk_norm { 2 * hd } else { 0 };
    let norms = norms_per_block * h;
    // Sparse layers: the router and every expert.
    let sparse = c.moe.as_ref().map_or(0, |m| m.layers.iter().filter(|&&s| s).count() as u64);
    let expert_mlp = c.moe.as_ref().map_or(0, |m| h * m.experts as u64 + 3 * h * (m.intermediate_size * m.experts) as u64);
    let dense = c.num_layers as u64 - sparse;
    let layers = (attn + norms) * c.num_layers as u64 + 3 * h * i * dense + expert_mlp * sparse;
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
        parameters: embed + head + layers + h,
        weight_bytes: 0,
        rank: 0,
        ranks: 1,
        moe_split: None,
    }
}
