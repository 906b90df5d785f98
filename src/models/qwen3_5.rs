//! Qwen 3.5 (`qwen3_5`, its text model `qwen3_5_text`): a hybrid of gated
//! delta linear-attention layers (`linear_attention::GatedDeltaNet`, their
//! state in a recurrent cache) and, every `full_attention_interval`-th layer
//! (or as `layer_types` says), gated full attention: q/k norms, partial RoPE
//! (`partial_rotary_factor`; the multimodal RoPE sections coincide for text),
//! heads scaled by σ of a second half of q_proj. Its RMSNorms scale by
//! `1 + w` in Hugging Face checkpoints (the weight is stored zero-centred);
//! mlx-lm's converted ones hold `1 + w` already, told apart as mlx-lm does by
//! the conv1d layout (`[C, 1, K]` vs `[C, K, 1]`). The network (`network`)
//! also serves `qwen3_5_moe`, whose MLPs are routed experts plus a shared one.

use super::config::{LinearAttention, ModelConfig};
use super::family::{Defaults, Family, Network};
use super::layers::{Attention, Context, Embedding, Linear, Mlp, MoeBlock, RmsNorm};
use super::linear_attention::{GatedDeltaNet, LinearDims};
use super::weights::Weights;
use crate::cache::KvCache;
use crate::mlx::Array;
use crate::{Error, Result};
use serde_json::{Map, Value};

pub struct Qwen35;

/// A setting of config.json or, where absent, its `rope_parameters`.
fn setting<'a>(config: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    config.get(key).filter(|v| !v.is_null()).or_else(|| config.get("rope_parameters").and_then(|p| p.get(key)).filter(|v| !v.is_null()))
}

/// What Qwen 3.5's text config adds to the common settings (shared with `qwen3_5_moe`).
pub(super) fn configure(config: &Map<String, Value>, cfg: &mut ModelConfig) -> Result<()> {
    let n = cfg.num_layers;
    let linear: Vec<bool> = match config.get("layer_types").and_then(Value::as_array) {
        Some(types) => types.iter().map(|t| t.as_str() == Some("linear_attention")).collect(),
        None => {
            let interval = config.get("full_attention_interval").and_then(Value::as_u64).unwrap_or(4);
            if interval == 0 {
                return Err(Error::Model("config.json: full_attention_interval must be at least 1".into()));
            }
            (0..n).map(|i| !(i as u64 + 1).is_multiple_of(interval)).collect()
        }
    };
    let size = |key: &str, default: u64| -> Result<usize> {
        match config.get(key).filter(|v| !v.is_null()) {
            None => Ok(default as usize),
            Some(v) => v
                .as_u64()
                .filter(|&x| (1..=crate::limits::MAX_HEAD_DIM * 16).contains(&x))
                .map(|x| x as usize)
                .ok_or_else(|| Error::Model(format!("config.json: '{key}' must be a positive integer, found {v}"))),
        }
    };
    let dims = LinearDims {
        k_heads: size("linear_num_key_heads", 16)?,
        v_heads: size("linear_num_value_heads", 32)?,
        k_dim: size("linear_key_head_dim", 128)?,
        v_dim: size("linear_value_head_dim", 128)?,
        conv_kernel: size("linear_conv_kernel_dim", 4)?,
    };
    if !dims.v_heads.is_multiple_of(dims.k_heads) {
        return Err(Error::Model(format!(
            "config.json: linear_num_value_heads ({}) must be a multiple of linear_num_key_heads ({})",
            dims.v_heads, dims.k_heads
        )));
    }
    cfg.linear_attention = Some(LinearAttention { layers: linear, dims });
    cfg.attn_output_gate = true;
    let factor = setting(config, "partial_rotary_factor").and_then(Value::as_f64).unwrap_or(0.25);
    let rope_dims = (cfg.head_dim as f64 * factor).round() as usize;
    if !(factor > 0.0 && factor <= 1.0) || rope_dims == 0 || !rope_dims.is_multiple_of(2) {
        return Err(Error::Model(format!("config.json: partial_rotary_factor {factor} gives {rope_dims} rotated dimensions of {}", cfg.head_dim)));
    }
    cfg.rope_dims = rope_dims;
    Ok(())
}

/// Drops the tied head, folds `1 + w` into Hugging Face norms (see the module
/// doc) and brings the conv taps to one layout.
pub(super) fn sanitize(w: &mut Weights, cfg: &ModelConfig) -> Result<()> {
    if cfg.tie_word_embeddings {
        w.take_optional("lm_head.weight");
    }
    let names: Vec<String> = w.iter().map(|(n, _)| n.to_string()).collect();
    let hf = names.iter().any(|n| n.ends_with("conv1d.weight") && w.iter().any(|(m, a)| m == n && a.ndim() == 3 && a.dim(2) != 1));
    if hf {
        const NORMS: [&str; 5] = [".input_layernorm.weight", ".post_attention_layernorm.weight", "model.norm.weight", ".q_norm.weight", ".k_norm.weight"];
        for n in names.iter().filter(|n| NORMS.iter().any(|s| n.ends_with(s))) {
            let a = w.take(n)?;
            w.insert(n.clone(), a.add_scalar(1.0)?);
        }
    }
    Ok(())
}

impl Family for Qwen35 {
    fn name(&self) -> &'static str {
        "qwen3_5"
    }

    fn model_types(&self) -> &'static [&'static str] {
        &["qwen3_5", "qwen3_5_text"]
    }

    fn defaults(&self, _model_type: &str) -> Defaults {
        Defaults { max_position_embeddings: 32768, rope_theta: 10_000_000.0, qk_norm: true, ..Defaults::LLAMA }
    }

    fn configure(&self, config: &Map<String, Value>, cfg: &mut ModelConfig) -> Result<()> {
        configure(config, cfg)
    }

    fn sanitize(&self, w: &mut Weights, cfg: &ModelConfig) -> Result<()> {
        sanitize(w, cfg)
    }

    fn build(&self, w: &mut Weights, cfg: &ModelConfig) -> Result<Box<dyn Network>> {
        network(w, cfg)
    }
}

/// The Qwen 3.5 network over `cfg` (dense, or with `cfg.moe` routed experts).
pub(super) fn network(w: &mut Weights, cfg: &ModelConfig) -> Result<Box<dyn Network>> {
    Ok(Box::new(Qwen35Net::load(w, cfg)?))
}

/// A block's token mixer (one per layer, built once: the size gap between variants costs nothing).
#[allow(clippy::large_enum_variant)]
enum Mixer {
    Linear(GatedDeltaNet),
    Full(Attention),
}

/// Routed experts plus a shared expert gated per token (Qwen 3.5 MoE).
struct SharedMoe {
    routed: MoeBlock,
    shared: Mlp,
    shared_gate: Linear,
    /// Split over ranks: the group summing both partial outputs at once.
    sum: Option<std::sync::Arc<crate::mlx::distributed::Group>>,
}

#[allow(clippy::large_enum_variant)]
enum FeedForward {
    Dense(Mlp),
    Sparse(SharedMoe),
}

impl FeedForward {
    fn forward(&self, x: &Array) -> Result<Array> {
        match self {
            FeedForward::Dense(m) => m.forward(x),
            // Split over ranks, the shared expert's output is a partial sum too (its
            // down_proj reads this rank's columns) and σ(gate), whole, scales every
            // part alike: one sum over ranks covers both.
            FeedForward::Sparse(m) => {
                let shared = m.shared.forward(x)?.multiply(&m.shared_gate.forward(x)?.sigmoid()?)?;
                let y = m.routed.forward(x)?.add(&shared)?;
                match &m.sum {
                    Some(g) => g.all_sum(&y),
                    None => Ok(y),
                }
            }
        }
    }

    fn arrays(&self) -> Vec<&Array> {
        match self {
            FeedForward::Dense(m) => m.arrays(),
            FeedForward::Sparse(m) => {
                let mut v = m.routed.arrays();
                v.extend(m.shared.arrays());
                v.extend(m.shared_gate.arrays());
                v
            }
        }
    }
}

struct Block {
    input_norm: RmsNorm,
    mixer: Mixer,
    post_norm: RmsNorm,
    mlp: FeedForward,
}

struct Qwen35Net {
    embed: Embedding,
    layers: Vec<Block>,
    norm: RmsNorm,
    lm_head: Option<Linear>,
}

impl Qwen35Net {
    fn load(w: &mut Weights, cfg: &ModelConfig) -> Result<Qwen35Net> {
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        let la = cfg.linear_attention.as_ref().ok_or_else(|| Error::Model("a Qwen 3.5 config without linear-attention settings".into()))?;
        let layers = (0..cfg.num_layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                Ok(Block {
                    input_norm: RmsNorm::load(w, &format!("{p}.input_layernorm"), h, eps, false)?,
                    mixer: if la.layers[i] { Mixer::Linear(GatedDeltaNet::load(w, cfg, &la.dims, i)?) } else { Mixer::Full(Attention::load(w, cfg, i, false)?) },
                    post_norm: RmsNorm::load(w, &format!("{p}.post_attention_layernorm"), h, eps, false)?,
                    mlp: match &cfg.moe {
                        Some(moe) if moe.layers[i] => {
                            let size = cfg.shared_expert_size.ok_or_else(|| Error::Model("config.json: missing 'shared_expert_intermediate_size'".into()))?;
                            let mut routed = MoeBlock::load(w, cfg, i)?;
                            // The shared expert's down_proj has no all_sum of its own (`shard`).
                            let sum = routed.defer_sum();
                            FeedForward::Sparse(SharedMoe {
                                routed,
                                shared: Mlp::load_at(w, cfg, &format!("{p}.mlp.shared_expert"), size, false)?,
                                shared_gate: Linear::load(w, cfg, &format!("{p}.mlp.shared_expert_gate"), h, 1, false)?,
                                sum,
                            })
                        }
                        _ => FeedForward::Dense(Mlp::load(w, cfg, i, false)?),
                    },
                })
            })
            .collect::<Result<_>>()?;
        let lm_head = if cfg.tie_word_embeddings { None } else { Some(Linear::load(w, cfg, "lm_head", h, cfg.vocab_size, false)?) };
        Ok(Qwen35Net { embed: Embedding::load(w, cfg, "model.embed_tokens")?, layers, norm: RmsNorm::load(w, "model.norm", h, eps, false)?, lm_head })
    }
}

impl Network for Qwen35Net {
    fn embed(&self, tokens: &Array) -> Result<Array> {
        self.embed.forward(tokens)
    }

    fn block(&self, i: usize, h: &Array, cache: Option<&mut KvCache>, ctx: &Context) -> Result<Array> {
        let layer = &self.layers[i];
        let x = layer.input_norm.forward(h)?;
        let mixed = match &layer.mixer {
            Mixer::Linear(m) => m.forward(&x, cache, ctx)?,
            Mixer::Full(a) => a.forward(&x, cache, ctx)?,
        };
        let h = h.add(&mixed)?;
        h.add(&layer.mlp.forward(&layer.post_norm.forward(&h)?)?)
    }

    fn final_norm(&self, h: &Array) -> Result<Array> {
        self.norm.forward(h)
    }

    fn logits(&self, h: &Array) -> Result<Array> {
        match &self.lm_head {
            Some(head) => head.forward(h),
            None => self.embed.as_linear(h),
        }
    }

    fn new_caches(&self) -> Vec<KvCache> {
        self.layers
            .iter()
            .map(|l| match &l.mixer {
                Mixer::Linear(_) => KvCache::recurrent(),
                Mixer::Full(a) => a.new_cache(),
            })
            .collect()
    }

    /// Projections by name within the block (`self_attn.q_proj`, `linear_attn.in_proj_qkv`, `mlp.down_proj`).
    fn block_linears(&self, i: usize) -> Vec<(String, &Linear)> {
        let l = &self.layers[i];
        let mut v: Vec<(String, &Linear)> = match &l.mixer {
            Mixer::Linear(m) => m.linears().into_iter().map(|(n, x)| (format!("linear_attn.{n}"), x)).collect(),
            Mixer::Full(a) => a.linears().into_iter().map(|(n, x)| (format!("self_attn.{n}"), x)).collect(),
        };
        if let FeedForward::Dense(m) = &l.mlp {
            v.extend(m.linears().into_iter().map(|(n, x)| (format!("mlp.{n}"), x)));
        }
        v
    }

    fn block_linears_mut(&mut self, i: usize) -> Vec<(String, &mut Linear)> {
        let l = &mut self.layers[i];
        let mut v: Vec<(String, &mut Linear)> = match &mut l.mixer {
            Mixer::Linear(m) => m.linears_mut().into_iter().map(|(n, x)| (format!("linear_attn.{n}"), x)).collect(),
            Mixer::Full(a) => a.linears_mut().into_iter().map(|(n, x)| (format!("self_attn.{n}"), x)).collect(),
        };
        if let FeedForward::Dense(m) = &mut l.mlp {
            v.extend(m.linears_mut().into_iter().map(|(n, x)| (format!("mlp.{n}"), x)));
        }
        v
    }

    fn arrays(&self) -> Vec<&Array> {
        let mut v = self.embed.arrays();
        for l in &self.layers {
            v.push(l.input_norm.weight());
            v.extend(match &l.mixer {
                Mixer::Linear(m) => m.arrays(),
                Mixer::Full(a) => a.arrays(),
            });
            v.push(l.post_norm.weight());
            v.extend(l.mlp.arrays());
        }
        v.push(self.norm.weight());
        if let Some(head) = &self.lm_head {
            v.extend(head.arrays());
        }
        v
    }
}
