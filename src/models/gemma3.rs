//! Gemma 3 (text): embeddings scaled by √hidden, (1 + w) RMSNorms before and
//! after attention and MLP, q/k norms, GELU-tanh MLP, sliding-window layers
//! with a local RoPE base, and optional final logit soft-capping.

use super::config::ModelConfig;
use super::layers::{Attention, Context, Embedding, Linear, Mlp, RmsNorm};
use super::weights::Weights;
use crate::cache::KvCache;
use crate::mlx::Array;
use crate::Result;

struct Block {
    input_norm: RmsNorm,
    attn: Attention,
    post_attn_norm: RmsNorm,
    pre_ff_norm: RmsNorm,
    mlp: Mlp,
    post_ff_norm: RmsNorm,
}

pub struct Gemma3 {
    embed: Embedding,
    layers: Vec<Block>,
    norm: RmsNorm,
    embed_scale: f32,
    softcap: Option<f32>,
}

impl Gemma3 {
    pub fn load(w: &mut Weights, cfg: &ModelConfig) -> Result<Gemma3> {
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
        Ok(Gemma3 {
            embed: Embedding::load(w, cfg, "model.embed_tokens")?,
            layers,
            norm: RmsNorm::load(w, "model.norm", h, eps, true)?,
            embed_scale: (h as f32).sqrt(),
            softcap: cfg.final_logit_softcapping,
        })
    }

    pub fn hidden(&self, tokens: &Array, caches: &mut [KvCache], ctx: &Context) -> Result<Array> {
        // The scale is applied in the activation dtype, as transformers does.
        let mut h = self.embed(tokens)?;
        for (i, cache) in caches.iter_mut().enumerate() {
            h = self.block(i, &h, Some(cache), ctx)?;
        }
        self.norm.forward(&h)
    }

    pub fn embed(&self, tokens: &Array) -> Result<Array> {
        self.embed.forward(tokens)?.mul_scalar(self.embed_scale)
    }

    /// Decoder block `i` on `h`.
    pub fn block(&self, i: usize, h: &Array, cache: Option<&mut KvCache>, ctx: &Context) -> Result<Array> {
        let layer = &self.layers[i];
        let r = layer.attn.forward(&layer.input_norm.forward(h)?, cache, ctx)?;
        let h = h.add(&layer.post_attn_norm.forward(&r)?)?;
        let r = layer.mlp.forward(&layer.pre_ff_norm.forward(&h)?)?;
        h.add(&layer.post_ff_norm.forward(&r)?)
    }

    pub fn final_norm(&self, h: &Array) -> Result<Array> {
        self.norm.forward(h)
    }

    /// The projections of block `i` by name within the block (`self_attn.q_proj`, `mlp.down_proj`, ...).
    pub fn block_linears(&self, i: usize) -> Vec<(String, &Linear)> {
        let l = &self.layers[i];
        let a = l.attn.linears().into_iter().map(|(n, x)| (format!("self_attn.{n}"), x));
        a.chain(l.mlp.linears().into_iter().map(|(n, x)| (format!("mlp.{n}"), x))).collect()
    }

    pub fn block_linears_mut(&mut self, i: usize) -> Vec<(String, &mut Linear)> {
        let l = &mut self.layers[i];
        let a = l.attn.linears_mut().into_iter().map(|(n, x)| (format!("self_attn.{n}"), x));
        a.chain(l.mlp.linears_mut().into_iter().map(|(n, x)| (format!("mlp.{n}"), x))).collect()
    }

    pub fn logits(&self, h: &Array) -> Result<Array> {
        let logits = self.embed.as_linear(h)?;
        match self.softcap {
            Some(cap) => logits.mul_scalar(1.0 / cap)?.tanh()?.mul_scalar(cap),
            None => Ok(logits),
        }
    }

    pub fn new_caches(&self) -> Vec<KvCache> {
        self.layers.iter().map(|l| l.attn.new_cache()).collect()
    }

    pub fn arrays(&self) -> Vec<&Array> {
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
