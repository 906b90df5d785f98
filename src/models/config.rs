//! `config.json` → `ModelConfig`: one struct for every supported architecture.
//!
//! Two dialects load: hub style (`rope_theta`, `rope_scaling`,
//! `sliding_window_pattern`, `torch_dtype`) and the style transformers 5 writes
//! (`rope_parameters`, `layer_types`, `dtype`). Multimodal Gemma 3 checkpoints
//! nest the text model under `text_config`.

use super::family::{Defaults, Family};
use crate::mlx::Dtype;
use crate::{Error, Result};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Every `model_type` a registered family loads.
pub fn supported() -> Vec<&'static str> {
    super::families().iter().flat_map(|f| f.model_types().iter().copied()).collect()
}

/// The family that loads `model_type`.
pub fn family_of(model_type: &str) -> Result<&'static dyn Family> {
    super::families()
        .iter()
        .copied()
        .find(|f| f.model_types().contains(&model_type))
        .ok_or_else(|| Error::Model(format!("unsupported model_type '{model_type}' (supported: {})", supported().join(", "))))
}

/// How positions are encoded on one kind of layer.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor` (scale 1/factor).
    Linear {
        factor: f32,
    },
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position: f32,
    },
    /// YaRN (Ministral 3, Qwen long context): frequencies blended between
    /// interpolated and original by a ramp over `[beta_slow, beta_fast]`
    /// rotations; q and k are scaled by `attention_factor`.
    Yarn {
        factor: f32,
        original_max_position: f32,
        beta_fast: f32,
        beta_slow: f32,
        attention_factor: f32,
        truncate: bool,
    },
    /// Gemma 4's global layers: the first `rotated` of the head's `head_dim / 2`
    /// frequency pairs turn at `base^(2i / head_dim)` (periods × `factor`), the
    /// rest not at all: rotate-half pairs (i, i + head_dim/2) for i < rotated.
    Proportional {
        factor: f32,
        /// `partial_rotary_factor`: the fraction of the head's dimensions rotated.
        fraction: f32,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rope {
    pub theta: f32,
    pub scaling: RopeScaling,
}

/// Quantisation of one linear or embedding module (MLX affine format).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quant {
    pub group_size: i32,
    pub bits: i32,
    pub mode: QuantMode,
}

/// MLX's quantisation modes: `affine` (scales and biases per group) and
/// `mxfp4` (4-bit floats with a shared power-of-two scale per 32, no biases;
/// gpt-oss's experts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QuantMode {
    #[default]
    Affine,
    Mxfp4,
}

impl QuantMode {
    /// The name MLX's quantisation functions take.
    pub fn name(self) -> &'static std::ffi::CStr {
        match self {
            QuantMode::Affine => c"affine",
            QuantMode::Mxfp4 => c"mxfp4",
        }
    }
}

impl Quant {
    pub const fn affine(group_size: i32, bits: i32) -> Quant {
        Quant { group_size, bits, mode: QuantMode::Affine }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Quantization {
    pub default: Option<Quant>,
    /// Per-module overrides by module path (e.g. `model.layers.0.mlp.down_proj`);
    /// `None` means that module is not quantised.
    pub overrides: BTreeMap<String, Option<Quant>>,
}

impl Quantization {
    /// The quantisation of the module at `path` (no `.weight` suffix).
    pub fn for_module(&self, path: &str) -> Option<Quant> {
        match self.overrides.get(path) {
            Some(q) => *q,
            None => self.default,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub model_type: String,
    /// The name of the family that loads it (`Family::name`).
    pub family: &'static str,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    pub rms_norm_eps: f32,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v projections (Qwen 2, or `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the output projection (`attention_bias` of Llama).
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// RMSNorm on queries and keys per head (Qwen 3, Gemma 3).
    pub qk_norm: bool,
    /// RoPE of global (full-attention) layers.
    pub rope: Rope,
    /// RoPE of sliding-window layers (Gemma 3's local base), if any.
    pub rope_local: Option<Rope>,
    /// Sliding window size, for layers where `sliding[i]` is true.
    pub sliding_window: Option<usize>,
    pub sliding: Vec<bool>,
    /// Attention score scale (1/sqrt(head_dim), or Gemma's query_pre_attn_scalar).
    pub attn_scale: f32,
    pub final_logit_softcapping: Option<f32>,
    /// Layers that apply no RoPE at all (SmolLM3's NoPE layers); all false by default.
    pub no_rope: Vec<bool>,
    /// Leading dimensions of each head that RoPE rotates (`partial_rotary_factor` × head_dim).
    pub rope_dims: usize,
    /// Query temperature of Llama 4 / Ministral 3: q · (1 + beta · ln(1 + ⌊pos / original_max⌋)).
    pub attn_temperature: Option<AttnTemperature>,
    /// Mixture-of-experts MLPs, when the family has them.
    pub moe: Option<Moe>,
    /// A learned attention sink per head (`self_attn.sinks`, gpt-oss).
    pub attn_sinks: bool,
    /// Attention heads scaled by σ(gate) from a second half of q_proj (Qwen 3.5).
    pub attn_output_gate: bool,
    /// Linear-attention (gated delta) layers and their sizes (Qwen 3.5).
    pub linear_attention: Option<LinearAttention>,
    /// A shared expert beside the routed ones, of this width, scaled by
    /// σ(`shared_expert_gate`) (Qwen 3.5 MoE).
    pub shared_expert_size: Option<usize>,
    /// Gemma 4's per-layer shapes, shared keys/values and per-layer inputs.
    pub gemma4: Option<Gemma4Layout>,
    /// Checkpoint dtype of the weights.
    pub dtype: Dtype,
    pub quantization: Quantization,
    /// How to build the layers (not from config.json; set from `LoadOptions`).
    pub build: Build,
}

/// Which layers are linear attention (the rest full attention) and their sizes.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearAttention {
    pub layers: Vec<bool>,
    pub dims: super::linear_attention::LinearDims,
}

/// What Gemma 4 adds to the common settings (read by `gemma4.rs`).
#[derive(Clone, Debug, PartialEq)]
pub struct Gemma4Layout {
    /// Head size and KV heads per layer: global layers have their own
    /// (`global_head_dim`, `num_global_key_value_heads`, or `per_layer_config`).
    pub head_dims: Vec<usize>,
    pub kv_heads: Vec<usize>,
    /// Global layers take their values from the key projection (`attention_k_eq_v`).
    pub values_from_keys: bool,
    /// The last this many layers reuse the keys and values of the last earlier
    /// layer of their kind (`num_kv_shared_layers`).
    pub kv_shared_layers: usize,
    /// Width of each layer's slice of the per-layer input embeddings
    /// (`hidden_size_per_layer_input`; 0: none) and their vocabulary.
    pub per_layer_input: usize,
    pub per_layer_vocab: usize,
    /// The KV-sharing layers' MLPs are twice `intermediate_size` wide (`use_double_wide_mlp`).
    pub double_wide_mlp: bool,
}

/// Llama 4's position-dependent query scaling (`llama_4_scaling_beta`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnTemperature {
    pub beta: f32,
    pub original_max_position: f32,
}

/// A sparse MLP: a router picks `top_k` of `experts` SwiGLU experts per token.
#[derive(Clone, Debug, PartialEq)]
pub struct Moe {
    pub experts: usize,
    pub top_k: usize,
    /// Hidden size of one expert.
    pub intermediate_size: usize,
    /// Renormalise the chosen experts' router probabilities to sum to 1.
    pub norm_topk_prob: bool,
    /// Which layers are sparse (the rest keep a dense MLP of `intermediate_size`).
    pub layers: Vec<bool>,
    /// The block's name in the checkpoint (`mlp`, Mixtral's `block_sparse_moe`).
    pub path: &'static str,
    /// The router's name within the block (`gate`; gpt-oss: `router`).
    pub router: &'static str,
    /// The stacked experts' name within the block (`switch_mlp`; gpt-oss: `experts`).
    pub experts_path: &'static str,
    /// Biases on the router and the experts (gpt-oss).
    pub bias: bool,
    /// The experts' activation.
    pub act: MoeAct,
}

/// `act(gate, up)` of an expert.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MoeAct {
    /// SiLU(gate) · up.
    Silu,
    /// GELU-tanh(gate) · up (Gemma 4).
    GeluTanh,
    /// gpt-oss: gate clipped above at `limit`, up clipped to ±`limit`,
    /// gate · σ(`alpha` · gate) · (up + 1).
    SwigluClamped { alpha: f32, limit: f32 },
}

/// Inference-only layer construction choices (see `LoadOptions`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Build {
    /// One matmul for q/k/v (weights concatenated at load; gate/up stay apart).
    pub fuse_projections: bool,
    /// The gated MLP activation as one compiled, fused kernel.
    pub compile_activations: bool,
    /// How products run on the device.
    pub products: super::strategy::Products,
    /// This rank's part of a tensor-parallel group (`shard`); None: the whole model.
    pub shard: Option<super::shard::Shard>,
}

fn get<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn usize_field(obj: &Map<String, Value>, key: &str) -> Result<Option<usize>> {
    match get(obj, key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| Error::Model(format!("config.json: '{key}' must be a non-negative integer, found {v}"))),
    }
}

fn require(obj: &Map<String, Value>, key: &str) -> Result<usize> {
    usize_field(obj, key)?.ok_or_else(|| Error::Model(format!("config.json: missing required key '{key}'")))
}

fn f32_field(obj: &Map<String, Value>, key: &str) -> Result<Option<f32>> {
    match get(obj, key) {
        None => Ok(None),
        Some(v) => v.as_f64().map(|n| Some(n as f32)).ok_or_else(|| Error::Model(format!("config.json: '{key}' must be a number, found {v}"))),
    }
}

fn bool_field(obj: &Map<String, Value>, key: &str) -> Option<bool> {
    get(obj, key).and_then(Value::as_bool)
}

impl ModelConfig {
    /// Parses the text of a config.json.
    pub fn from_json_str(text: &str) -> Result<ModelConfig> {
        let value: Value = serde_json::from_str(text).map_err(|e| Error::Model(format!("config.json is not valid JSON: {e}")))?;
        ModelConfig::from_value(&value)
    }

    /// KV heads and head size of layer `i`'s cache (Gemma 4's global layers differ).
    pub fn layer_kv(&self, i: usize) -> (usize, usize) {
        match &self.gemma4 {
            Some(g) => (g.kv_heads[i], g.head_dims[i]),
            None => (self.num_kv_heads, self.head_dim),
        }
    }

    pub fn from_value(value: &Value) -> Result<ModelConfig> {
        let top = value.as_object().ok_or_else(|| Error::Model("config.json must hold a JSON object".into()))?;
        // Multimodal Gemma 3 keeps the text model's settings under text_config.
        let (obj, outer_type) = match get(top, "text_config").and_then(Value::as_object) {
            Some(text) => (text, get(top, "model_type").and_then(Value::as_str)),
            None => (top, None),
        };
        let model_type =
            get(obj, "model_type").and_then(Value::as_str).or(outer_type).ok_or_else(|| Error::Model("config.json: missing 'model_type'".into()))?.to_string();
        let family = family_of(&model_type)?;
        let d = family.defaults(&model_type);

        let hidden_size = require(obj, "hidden_size")?;
        let num_layers = require(obj, "num_hidden_layers")?;
        let num_heads = require(obj, "num_attention_heads")?;
        let num_kv_heads = usize_field(obj, "num_key_value_heads")?.unwrap_or(num_heads);
        if num_heads == 0 || num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(Error::Model(format!(
                "config.json: num_attention_heads ({num_heads}) must be a positive multiple of num_key_value_heads ({num_kv_heads})"
            )));
        }
        let explicit_head_dim = usize_field(obj, "head_dim")?;
        let head_dim = explicit_head_dim.unwrap_or(hidden_size / num_heads);
        let vocab_size = require(obj, "vocab_size")?;
        let intermediate_size = require(obj, "intermediate_size")?;
        // Sizes are bounded before any of them sizes an allocation (sliding_layers below).
        check_sizes(hidden_size, num_layers, num_heads, num_kv_heads, explicit_head_dim, head_dim, vocab_size, intermediate_size)?;
        let rms_norm_eps = f32_field(obj, "rms_norm_eps")?.unwrap_or(1e-6);
        let max_position_embeddings = usize_field(obj, "max_position_embeddings")?.unwrap_or(d.max_position_embeddings);
        let tie_word_embeddings = bool_field(obj, "tie_word_embeddings").or_else(|| bool_field(top, "tie_word_embeddings")).unwrap_or(d.tie_word_embeddings);

        let attention_bias = bool_field(obj, "attention_bias").unwrap_or(false);
        let qkv_bias = d.qkv_bias || attention_bias;
        let o_bias = attention_bias && !d.qkv_bias;
        let mlp_bias = bool_field(obj, "mlp_bias").unwrap_or(false);
        let qk_norm = d.qk_norm;

        let (rope, rope_local) = parse_rope(obj, &d)?;

        let sliding_window = if d.sliding_window { usize_field(obj, "sliding_window")? } else { None };
        let sliding = sliding_layers(obj, num_layers, d.sliding_window_pattern, sliding_window)?;

        let attn_scale = if d.query_pre_attn_scalar {
            let q = f32_field(obj, "query_pre_attn_scalar")?.unwrap_or(head_dim as f32);
            positive("query_pre_attn_scalar", q)?;
            1.0 / q.sqrt()
        } else {
            1.0 / (head_dim as f32).sqrt()
        };
        let final_logit_softcapping = f32_field(obj, "final_logit_softcapping")?;

        let dtype_name = get(obj, "torch_dtype")
            .or_else(|| get(obj, "dtype"))
            .or_else(|| get(top, "torch_dtype"))
            .or_else(|| get(top, "dtype"))
            .and_then(Value::as_str)
            .unwrap_or("float32");
        let dtype = Dtype::parse(dtype_name).map_err(|_| Error::Model(format!("config.json: unsupported dtype '{dtype_name}'")))?;

        let quantization = parse_quantization(get(top, "quantization").or_else(|| get(top, "quantization_config")))?;

        let mut cfg = ModelConfig {
            model_type,
            family: family.name(),
            vocab_size,
            hidden_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            intermediate_size,
            rms_norm_eps,
            max_position_embeddings,
            tie_word_embeddings,
            qkv_bias,
            o_bias,
            mlp_bias,
            qk_norm,
            rope,
            rope_local,
            sliding_window,
            sliding,
            attn_scale,
            final_logit_softcapping,
            no_rope: vec![false; num_layers],
            rope_dims: head_dim,
            attn_temperature: None,
            moe: None,
            attn_sinks: false,
            attn_output_gate: false,
            linear_attention: None,
            shared_expert_size: None,
            gemma4: None,
            dtype,
            quantization,
            build: Build::default(),
        };
        family.configure(obj, &mut cfg)?;
        check_values(&cfg, obj)?;
        Ok(cfg)
    }
}

/// config.json's sizes against `crate::limits`, and the head arithmetic.
#[allow(clippy::too_many_arguments)]
fn check_sizes(
    hidden: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    explicit_head_dim: Option<usize>,
    head_dim: usize,
    vocab: usize,
    intermediate: usize,
) -> Result<()> {
    use crate::limits::*;
    const CFG: &str = "config.json";
    check(CFG, "hidden_size", hidden as u64, 1, MAX_HIDDEN)?;
    check(CFG, "num_hidden_layers", layers as u64, 1, MAX_LAYERS)?;
    check(CFG, "num_attention_heads", heads as u64, 1, MAX_HEADS)?;
    check(CFG, "num_key_value_heads", kv_heads as u64, 1, MAX_HEADS)?;
    check(CFG, "vocab_size", vocab as u64, 1, MAX_VOCAB)?;
    check(CFG, "intermediate_size", intermediate as u64, 1, MAX_INTERMEDIATE)?;
    if explicit_head_dim.is_none() && !hidden.is_multiple_of(heads) {
        return Err(Error::Model(format!("config.json: hidden_size ({hidden}) is not a multiple of num_attention_heads ({heads}) and there is no head_dim")));
    }
    check(CFG, "head_dim", head_dim as u64, 1, MAX_HEAD_DIM)?;
    if !head_dim.is_multiple_of(2) {
        return Err(Error::Model(format!("config.json: head_dim {head_dim} must be even (RoPE rotates pairs of dimensions)")));
    }
    Ok(())
}

/// A float setting that must be finite and positive.
fn positive(key: &str, v: f32) -> Result<()> {
    if !(v.is_finite() && v > 0.0) {
        return Err(Error::Model(format!("config.json: {key} is {v}, must be a finite number > 0")));
    }
    Ok(())
}

/// The values no model can run with: a non-positive norm epsilon or rope base
/// gives NaN logits, a zero sliding window divides by zero in the rotating
/// cache, a zero softcap divides by zero.
fn check_values(c: &ModelConfig, obj: &Map<String, Value>) -> Result<()> {
    use crate::limits::*;
    positive("rms_norm_eps", c.rms_norm_eps)?;
    check("config.json", "max_position_embeddings", c.max_position_embeddings as u64, 1, MAX_POSITIONS)?;
    for (rope, which) in [(Some(&c.rope), "rope_theta"), (c.rope_local.as_ref(), "rope_local_base_freq")] {
        let Some(rope) = rope else { continue };
        positive(which, rope.theta)?;
        match rope.scaling {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => positive("rope_scaling.factor", factor)?,
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position } => {
                positive("rope_scaling.factor", factor)?;
                positive("rope_scaling.low_freq_factor", low_freq_factor)?;
                positive("rope_scaling.high_freq_factor", high_freq_factor)?;
                positive("rope_scaling.original_max_position_embeddings", original_max_position)?;
                if high_freq_factor <= low_freq_factor {
                    return Err(Error::Model(format!(
                        "config.json: rope_scaling.high_freq_factor ({high_freq_factor}) must be greater than low_freq_factor ({low_freq_factor})"
                    )));
                }
            }
            RopeScaling::Yarn { original_max_position, beta_fast, beta_slow, attention_factor, .. } => {
                positive("rope_scaling.original_max_position_embeddings", original_max_position)?;
                positive("rope_scaling.beta_fast", beta_fast)?;
                positive("rope_scaling.beta_slow", beta_slow)?;
                positive("rope_scaling.attention_factor", attention_factor)?;
            }
            RopeScaling::Proportional { factor, fraction } => {
                positive("rope_parameters.factor", factor)?;
                if !(0.0..=1.0).contains(&fraction) {
                    return Err(Error::Model(format!("config.json: partial_rotary_factor {fraction} must be within [0, 1]")));
                }
            }
        }
    }
    if let Some(w) = c.sliding_window {
        check("config.json", "sliding_window", w as u64, 1, MAX_POSITIONS)?;
    }
    if let Some(p) = usize_field(obj, "sliding_window_pattern")? {
        check("config.json", "sliding_window_pattern", p as u64, 1, MAX_LAYERS)?;
    }
    if let Some(cap) = c.final_logit_softcapping {
        positive("final_logit_softcapping", cap)?;
    }
    Ok(())
}

/// Global and local RoPE settings from either dialect.
fn parse_rope(obj: &Map<String, Value>, d: &Defaults) -> Result<(Rope, Option<Rope>)> {
    let default_theta = d.rope_theta;
    let local_theta = d.local_rope_theta;
    let params = get(obj, "rope_parameters").and_then(Value::as_object);
    // transformers 5 Gemma 3: {"full_attention": {...}, "sliding_attention": {...}}.
    if let Some(p) = params {
        if let Some(full) = get(p, "full_attention").and_then(Value::as_object) {
            let global = rope_from(full, default_theta)?;
            let local = match get(p, "sliding_attention").and_then(Value::as_object) {
                Some(s) => Some(rope_from(s, 10_000.0)?),
                None => None,
            };
            return Ok((global, local.or(local_theta.map(|theta| Rope { theta, scaling: RopeScaling::None }))));
        }
    }
    let theta = match f32_field(obj, "rope_theta")? {
        Some(t) => t,
        None => match params {
            Some(p) => f32_field(p, "rope_theta")?.unwrap_or(default_theta),
            None => default_theta,
        },
    };
    let scaling_obj = get(obj, "rope_scaling").and_then(Value::as_object).or(params);
    let scaling = match scaling_obj {
        Some(s) => scaling_from(s)?,
        None => RopeScaling::None,
    };
    let local = match local_theta {
        Some(t) => Some(Rope { theta: f32_field(obj, "rope_local_base_freq")?.unwrap_or(t), scaling: RopeScaling::None }),
        None => None,
    };
    Ok((Rope { theta, scaling }, local))
}

fn rope_from(p: &Map<String, Value>, default_theta: f32) -> Result<Rope> {
    Ok(Rope { theta: f32_field(p, "rope_theta")?.unwrap_or(default_theta), scaling: scaling_from(p)? })
}

fn scaling_from(s: &Map<String, Value>) -> Result<RopeScaling> {
    let kind = get(s, "rope_type").or_else(|| get(s, "type")).and_then(Value::as_str).unwrap_or("default");
    let factor = f32_field(s, "factor")?;
    Ok(match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor: factor.unwrap_or(1.0) },
        "llama3" => RopeScaling::Llama3 {
            factor: factor.ok_or_else(|| Error::Model("config.json: llama3 rope scaling without 'factor'".into()))?,
            low_freq_factor: f32_field(s, "low_freq_factor")?.unwrap_or(1.0),
            high_freq_factor: f32_field(s, "high_freq_factor")?.unwrap_or(4.0),
            original_max_position: f32_field(s, "original_max_position_embeddings")?.unwrap_or(8192.0),
        },
        "yarn" => {
            let factor = factor.ok_or_else(|| Error::Model("config.json: yarn rope scaling without 'factor'".into()))?;
            positive("rope_scaling.factor", factor)?;
            let mscale = |scale: f32, m: f32| if scale <= 1.0 { 1.0 } else { 0.1 * m * scale.ln() + 1.0 };
            let attention_factor = match (f32_field(s, "attention_factor")?, f32_field(s, "mscale")?, f32_field(s, "mscale_all_dim")?) {
                (Some(a), _, _) => a,
                (None, Some(m), Some(all)) if m != 0.0 && all != 0.0 => mscale(factor, m) / mscale(factor, all),
                _ => mscale(factor, 1.0),
            };
            let or = |v: Option<f32>, d: f32| v.filter(|&x| x != 0.0).unwrap_or(d);
            RopeScaling::Yarn {
                factor,
                original_max_position: f32_field(s, "original_max_position_embeddings")?
                    .ok_or_else(|| Error::Model("config.json: yarn rope scaling without 'original_max_position_embeddings'".into()))?,
                beta_fast: or(f32_field(s, "beta_fast")?, 32.0),
                beta_slow: or(f32_field(s, "beta_slow")?, 1.0),
                attention_factor,
                truncate: bool_field(s, "truncate").unwrap_or(true),
            }
        }
        "proportional" => RopeScaling::Proportional { factor: factor.unwrap_or(1.0), fraction: f32_field(s, "partial_rotary_factor")?.unwrap_or(1.0) },
        other => return Err(Error::Model(format!("config.json: unsupported rope_type '{other}' (supported: default, linear, llama3, yarn, proportional)"))),
    })
}

/// Which layers use sliding-window attention.
fn sliding_layers(obj: &Map<String, Value>, n: usize, pattern: Option<usize>, window: Option<usize>) -> Result<Vec<bool>> {
    if let Some(types) = get(obj, "layer_types").and_then(Value::as_array) {
        if types.len() != n {
            return Err(Error::Model(format!("config.json: layer_types has {} entries for {n} layers", types.len())));
        }
        return types
            .iter()
            .map(|t| match t.as_str() {
                Some("sliding_attention") => Ok(window.is_some()),
                // Qwen 3.5's gated delta layers: the family reads them (`linear_attention`).
                Some("full_attention") | Some("linear_attention") => Ok(false),
                _ => Err(Error::Model(format!("config.json: unknown layer type {t}"))),
            })
            .collect();
    }
    if let (Some(default), Some(_)) = (pattern, window) {
        let pattern = usize_field(obj, "sliding_window_pattern")?.unwrap_or(default).max(1);
        return Ok((0..n).map(|i| (i + 1) % pattern != 0).collect());
    }
    // Mistral-style: a window on every layer when configured.
    Ok(vec![window.is_some(); n])
}

fn parse_quant(v: &Map<String, Value>) -> Result<Quant> {
    let group_size = usize_field(v, "group_size")?.unwrap_or(64) as i32;
    let bits = usize_field(v, "bits")?.ok_or_else(|| Error::Model("config.json: quantization without 'bits'".into()))? as i32;
    match get(v, "mode").and_then(Value::as_str).unwrap_or("affine") {
        "affine" => {}
        "mxfp4" if bits == 4 && group_size == 32 => return Ok(Quant { group_size, bits, mode: QuantMode::Mxfp4 }),
        "mxfp4" => return Err(Error::Model(format!("config.json: mxfp4 quantization needs bits=4 group_size=32, found bits={bits} group_size={group_size}"))),
        other => return Err(Error::Model(format!("config.json: unsupported quantization mode '{other}' (supported: affine, mxfp4)"))),
    }
    if !matches!(bits, 2 | 3 | 4 | 5 | 6 | 8) || !matches!(group_size, 32 | 64 | 128) {
        return Err(Error::Model(format!("config.json: unsupported quantization bits={bits} group_size={group_size}")));
    }
    Ok(Quant::affine(group_size, bits))
}

fn parse_quantization(v: Option<&Value>) -> Result<Quantization> {
    let Some(obj) = v.and_then(Value::as_object) else { return Ok(Quantization::default()) };
    if let Some(method) = get(obj, "quant_method").and_then(Value::as_str) {
        // gpt-oss's own MXFP4 experts (`*_blocks` / `*_scales`): the family names the modules (gpt_oss.rs).
        if method == "mxfp4" {
            return Ok(Quantization::default());
        }
        return Err(Error::Model(format!("config.json: quantization method '{method}' is not supported (MLX affine or mxfp4 quantisation only)")));
    }
    let default = if get(obj, "bits").is_some() { Some(parse_quant(obj)?) } else { None };
    let mut overrides = BTreeMap::new();
    for (k, val) in obj {
        match val {
            // Module paths as the tensors are named after `weights::normalise`
            // (mlx-lm writes `language_model.model.layers...` for Qwen 3.5).
            Value::Object(o) => {
                overrides.insert(super::weights::normalise(k).unwrap_or_else(|| k.clone()), Some(parse_quant(o)?));
            }
            Value::Bool(false) => {
                overrides.insert(super::weights::normalise(k).unwrap_or_else(|| k.clone()), None);
            }
            _ => {}
        }
    }
    Ok(Quantization { default, overrides })
}
