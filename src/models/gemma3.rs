//! Gemma 3 (text): embeddings scaled by √hidden, (1 + w) RMSNorms before and
//! after attention and MLP, q/k norms, GELU-tanh MLP, sliding-window layers
//! with a local RoPE base, and optional final logit soft-capping.

use super::config::ModelConfig;
use super::family::{Defaults, Family, Network};
use super::gguf::config::f32_json;
use super::gguf::{GgufArch, GgufFile};
use super::layers::{Attention, Context, Embedding, Linear, Mlp, RmsNorm};
use super::weights::Weights;
use crate::cache::KvCache;
use crate::mlx::Array;
use crate::Result;
use serde_json::{json, Map, Value};

pub struct Gemma3;

/// Gemma 3 values GGUF does not store, at the architecture's standard settings
/// (documented in docs/gguf.md).
pub mod gguf_defaults {
    /// Every 6th layer is global (full) attention, the rest use the sliding window.
    pub const SLIDING_WINDOW_PATTERN: u64 = 6;
    /// Rope base of the local (sliding-window) layers.
    pub const ROPE_LOCAL_BASE_FREQ: f64 = 10000.0;
    pub const HIDDEN_ACTIVATION: &str = "gelu_pytorch_tanh";
    pub const SLIDING_WINDOW: u64 = 4096;
    /// Gemma 3 27B (62 layers) scales queries by 1/sqrt(hidden/heads), not 1/sqrt(head_dim)
    /// (llama.cpp has the same special case).
    pub const LAYERS_27B: u64 = 62;
}

/// The Gemma keys of a GGUF file's config.
fn gguf_config(file: &GgufFile, c: &mut Map<String, Value>) -> Result<()> {
    use gguf_defaults as d;
    let key = |k: &str| format!("gemma3.{k}");
    let num = |k: &str| c.get(k).and_then(Value::as_u64).unwrap_or(0);
    let (hidden, heads, layers, head_dim) = (num("hidden_size"), num("num_attention_heads").max(1), num("num_hidden_layers"), num("head_dim"));
    let window = file.get_u64(&key("attention.sliding_window"))?.unwrap_or(d::SLIDING_WINDOW);
    c.insert("sliding_window".into(), json!(window));
    c.insert("sliding_window_pattern".into(), json!(d::SLIDING_WINDOW_PATTERN));
    c.insert("rope_local_base_freq".into(), f32_json(d::ROPE_LOCAL_BASE_FREQ));
    let scalar = match file.get_f64(&key("attention.query_pre_attn_scalar"))? {
        Some(s) => json!(s as u64),
        None if layers == d::LAYERS_27B => json!(hidden / heads),
        None => json!(head_dim),
    };
    c.insert("query_pre_attn_scalar".into(), scalar);
    if let Some(s) = file.get_f64(&key("final_logit_softcapping"))? {
        c.insert("final_logit_softcapping".into(), f32_json(s));
    }
    if let Some(s) = file.get_f64(&key("attn_logit_softcapping"))? {
        c.insert("attn_logit_softcapping".into(), f32_json(s));
    }
    c.insert("hidden_activation".into(), json!(d::HIDDEN_ACTIVATION));
    Ok(())
}

impl Family for Gemma3 {
    fn name(&self) -> &'static str {
        "gemma3"
    }

    fn model_types(&self) -> &'static [&'static str] {
        &["gemma3_text", "gemma3"]
    }

    fn defaults(&self, _model_type: &str) -> Defaults {
        Defaults {
            max_position_embeddings: 131072,
            tie_word_embeddings: true,
            rope_theta: 1_000_000.0,
            local_rope_theta: Some(10_000.0),
            sliding_window_pattern: Some(6),
            sliding_window: true,
            query_pre_attn_scalar: true,
            qk_norm: true,
            qkv_bias: false,
        }
    }

    fn gguf(&self) -> &'static [GgufArch] {
        const ARCHS: &[GgufArch] = &[GgufArch {
            name: "gemma3",
            model_type: "gemma3_text",
            hf_class: "Gemma3ForCausalLM",
            // Four norms per block: ffn_norm is the pre-MLP one, post_attention_norm and
            // post_ffw_norm are applied to the attention and MLP outputs.
            block_names: &[
                ("ffn_norm", "pre_feedforward_layernorm"),
                ("post_attention_norm", "post_attention_layernorm"),
                ("post_ffw_norm", "post_feedforward_layernorm"),
            ],
            permuted_qk: false,
            norm_plus_one: true,
            attention_bias: false,
            default_rms_norm_eps: Some(1e-6),
            default_rope_theta: 1_000_000.0,
            config: gguf_config,
        }];
        ARCHS
    }

    fn norms_per_block(&self) -> u64 {
        4
    }

    fn build(&self, w: &mut Weights, cfg: &ModelConfig) -> Result<Box<dyn Network>> {
        Ok(Box::new(Gemma3Net::load(w, cfg)?))
    }
}

struct Block {
    input_norm: RmsNorm,
    attn: Attention,
    post_attn_norm: RmsNorm,
    pre_ff_norm: RmsNorm,
    mlp: Mlp,
    post_ff_norm: RmsNorm,
}

struct Gemma3Net {
    embed: Embedding,
    layers: Vec<Block>,
    norm: RmsNorm,
    embed_scale: f32,
    softcap: Option<f32>,
}

impl Gemma3Net {
    fn load(w: &mut Weights, cfg: &ModelConfig) -> Result<Gemma3Net> {
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        let layers = (0..cfg.num_layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                let norm = |w: &mut Weights, name: &str| RmsNorm::load(w, &format!("{p}.{name}"), h, eps, true);
                Ok(Block {
                    input_norm: norm(w, "input_layernorm")?,
                    attn: Attention::load(w, cfg, i, true)?,
                    post_attn_norm: norm(w, "post_attention_layernorm")?,
                    pre_ff_norm: norm(w, "pre_feedforward_layernorm")?,
                    mlp: Mlp::load(w, cfg, i, true)?,
                    post_ff_norm: norm(w, "post_feedforward_layernorm")?,
                })
            })
            .collect::<Result<_>>()?;
        // Gemma always ties the output projection to the embeddings.
        w.take_optional("lm_head.weight");
        Ok(Gemma3Net {
            embed: Embedding::load(w, cfg, "model.embed_tokens")?,
            layers,
            norm: RmsNorm::load(w, "model.norm", h, eps, true)?,
            embed_scale: (h as f32).sqrt(),
            softcap: cfg.final_logit_softcapping,
        })
    }

}

impl Network for Gemma3Net {
    fn embed(&self, tokens: &Array) -> Result<Array> {
        self.embed.forward(tokens)?.mul_scalar(self.embed_scale)
    }

    /// Decoder block `i` on `h`.
    fn block(&self, i: usize, h: &Array, cache: Option<&mut KvCache>, ctx: &Context) -> Result<Array> {
        let layer = &self.layers[i];
        let r = layer.attn.forward(&layer.input_norm.forward(h)?, cache, ctx)?;
        let h = h.add(&layer.post_attn_norm.forward(&r)?)?;
        let r = layer.mlp.forward(&layer.pre_ff_norm.forward(&h)?)?;
        h.add(&layer.post_ff_norm.forward(&r)?)
    }

    fn final_norm(&self, h: &Array) -> Result<Array> {
        self.norm.forward(h)
    }

    /// The projections of block `i` by name within the block (`self_attn.q_proj`, `mlp.down_proj`, ...).
    fn block_linears(&self, i: usize) -> Vec<(String, &Linear)> {
        let l = &self.layers[i];
        let a = l.attn.linears().into_iter().map(|(n, x)| (format!("self_attn.{n}"), x));
        a.chain(l.mlp.linears().into_iter().map(|(n, x)| (format!("mlp.{n}"), x))).collect()
    }

    fn block_linears_mut(&mut self, i: usize) -> Vec<(String, &mut Linear)> {
        let l = &mut self.layers[i];
        let a = l.attn.linears_mut().into_iter().map(|(n, x)| (format!("self_attn.{n}"), x));
        a.chain(l.mlp.linears_mut().into_iter().map(|(n, x)| (format!("mlp.{n}"), x))).collect()
    }

    fn logits(&self, h: &Array) -> Result<Array> {
        let logits = self.embed.as_linear(h)?;
        match self.softcap {
            Some(cap) => logits.mul_scalar(1.0 / cap)?.tanh()?.mul_scalar(cap),
            None => Ok(logits),
        }
    }

    fn new_caches(&self) -> Vec<KvCache> {
        self.layers.iter().map(|l| l.attn.new_cache()).collect()
    }

    fn arrays(&self) -> Vec<&Array> {
        let mut v = self.embed.arrays();
        for l in &self.layers {
            for n in [&l.input_norm, &l.post_attn_norm, &l.pre_ff_norm, &l.post_ff_norm] {
                v.push(n.weight());
            }
            v.extend(l.attn.arrays());
            v.extend(l.mlp.arrays());
        }
        v.push(self.norm.weight());
        v
    }
}
