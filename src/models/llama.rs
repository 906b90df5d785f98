//! The Llama family: Llama 3, Mistral, Qwen 2 (q/k/v bias) and Qwen 3 (q/k
//! norm). Pre-norm decoder blocks with GQA attention and a SwiGLU MLP; the
//! differences are config flags read by the shared layers. Its network
//! (`network`) is also the one of the families that differ from Llama only in
//! config and tensor names (Phi-3, SmolLM3, Ministral 3, the MoE families).

use super::config::ModelConfig;
use super::family::{Defaults, Family, Network};
use super::gguf::{config::silu_config, GgufArch, GgufFile};
use serde_json::{json, Map, Value};
use super::layers::{Attention, Context, Embedding, Linear, Mlp, MoeBlock, RmsNorm};
use super::weights::Weights;
use crate::cache::KvCache;
use crate::mlx::Array;
use crate::Result;

/// The family: Qwen 2 adds q/k/v biases, Qwen 3 q/k norms, Mistral a sliding window.
pub struct Llama;

/// llama.cpp stores Mixtral as `llama` with stacked experts: their names.
const MIXTRAL_NAMES: &[(&str, &str)] = &[
    ("ffn_gate_inp", "block_sparse_moe.gate"),
    ("ffn_gate_exps", "block_sparse_moe.switch_mlp.gate_proj"),
    ("ffn_up_exps", "block_sparse_moe.switch_mlp.up_proj"),
    ("ffn_down_exps", "block_sparse_moe.switch_mlp.down_proj"),
];

/// `llama` files with `llama.expert_count` are Mixtral.
fn llama_config(file: &GgufFile, c: &mut Map<String, Value>) -> Result<()> {
    silu_config(file, c)?;
    if let Some(experts) = file.get_u64("llama.expert_count")?.filter(|&n| n > 0) {
        c.insert("model_type".into(), json!("mixtral"));
        c.insert("architectures".into(), json!(["MixtralForCausalLM"]));
        c.insert("num_local_experts".into(), json!(experts));
        c.insert("num_experts_per_tok".into(), json!(file.require_u64("llama.expert_used_count")?));
    }
    Ok(())
}

const fn gguf(name: &'static str, model_type: &'static str, hf_class: &'static str, permuted_qk: bool) -> GgufArch {
    GgufArch {
        name,
        model_type,
        hf_class,
        block_names: if permuted_qk { MIXTRAL_NAMES } else { &[] },
        permuted_qk,
        norm_plus_one: false,
        attention_bias: true,
        default_rms_norm_eps: None,
        default_rope_theta: 10_000.0,
        config: if permuted_qk { llama_config } else { silu_config },
    }
}

impl Family for Llama {
    fn name(&self) -> &'static str {
        "llama"
    }

    fn model_types(&self) -> &'static [&'static str] {
        &["llama", "mistral", "qwen2", "qwen3"]
    }

    fn defaults(&self, model_type: &str) -> Defaults {
        let d = Defaults::LLAMA;
        match model_type {
            "qwen2" => Defaults { qkv_bias: true, ..d },
            "qwen3" => Defaults { qk_norm: true, ..d },
            "mistral" => Defaults { sliding_window: true, ..d },
            _ => d,
        }
    }

    fn gguf(&self) -> &'static [GgufArch] {
        const ARCHS: &[GgufArch] = &[
            gguf("llama", "llama", "LlamaForCausalLM", true),
            gguf("qwen2", "qwen2", "Qwen2ForCausalLM", false),
            gguf("qwen3", "qwen3", "Qwen3ForCausalLM", false),
        ];
        ARCHS
    }

    fn build(&self, w: &mut Weights, cfg: &ModelConfig) -> Result<Box<dyn Network>> {
        network(w, cfg)
    }
}

/// The Llama network over `cfg`: pre-norm blocks of attention and a dense or,
/// on the layers `cfg.moe` marks, a mixture-of-experts SwiGLU MLP.
pub(super) fn network(w: &mut Weights, cfg: &ModelConfig) -> Result<Box<dyn Network>> {
    Ok(Box::new(LlamaNet::load(w, cfg)?))
}

/// A block's MLP: dense, or sparse (mixture of experts).
enum FeedForward {
    Dense(Mlp),
    Sparse(MoeBlock),
}

impl FeedForward {
    fn forward(&self, x: &Array) -> Result<Array> {
        match self {
            FeedForward::Dense(m) => m.forward(x),
            FeedForward::Sparse(m) => m.forward(x),
        }
    }
}

struct Block {
    input_norm: RmsNorm,
    attn: Attention,
    post_norm: RmsNorm,
    mlp: FeedForward,
}

struct LlamaNet {
    embed: Embedding,
    layers: Vec<Block>,
    norm: RmsNorm,
    lm_head: Option<Linear>,
}

impl LlamaNet {
    fn load(w: &mut Weights, cfg: &ModelConfig) -> Result<LlamaNet> {
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        let layers = (0..cfg.num_layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                Ok(Block {
                    input_norm: RmsNorm::load(w, &format!("{p}.input_layernorm"), h, eps, false)?,
                    attn: Attention::load(w, cfg, i, false)?,
                    post_norm: RmsNorm::load(w, &format!("{p}.post_attention_layernorm"), h, eps, false)?,
                    mlp: match &cfg.moe {
                        Some(moe) if moe.layers[i] => FeedForward::Sparse(MoeBlock::load(w, cfg, i)?),
                        _ => FeedForward::Dense(Mlp::load(w, cfg, i, false)?),
                    },
                })
            })
            .collect::<Result<_>>()?;
        let lm_head = if cfg.tie_word_embeddings { None } else { Some(Linear::load(w, cfg, "lm_head", h, cfg.vocab_size, false)?) };
        Ok(LlamaNet {
            embed: Embedding::load(w, cfg, "model.embed_tokens")?,
            layers,
            norm: RmsNorm::load(w, "model.norm", h, eps, false)?,
            lm_head,
        })
    }

}

impl Network for LlamaNet {
    fn embed(&self, tokens: &Array) -> Result<Array> {
        self.embed.forward(tokens)
    }

    /// Decoder block `i` on `h`.
    fn block(&self, i: usize, h: &Array, cache: Option<&mut KvCache>, ctx: &Context) -> Result<Array> {
        let layer = &self.layers[i];
        let h = h.add(&layer.attn.forward(&layer.input_norm.forward(h)?, cache, ctx)?)?;
        h.add(&layer.mlp.forward(&layer.post_norm.forward(&h)?)?)
    }

    fn final_norm(&self, h: &Array) -> Result<Array> {
        self.norm.forward(h)
    }

    /// The projections of block `i` by name within the block (`self_attn.q_proj`, `mlp.down_proj`, ...).
    /// Sparse MLPs offer none: adapters attach to attention there.
    fn block_linears(&self, i: usize) -> Vec<(String, &Linear)> {
        let l = &self.layers[i];
        let mut v: Vec<(String, &Linear)> = l.attn.linears().into_iter().map(|(n, x)| (format!("self_attn.{n}"), x)).collect();
        if let FeedForward::Dense(m) = &l.mlp {
            v.extend(m.linears().into_iter().map(|(n, x)| (format!("mlp.{n}"), x)));
        }
        v
    }

    fn block_linears_mut(&mut self, i: usize) -> Vec<(String, &mut Linear)> {
        let l = &mut self.layers[i];
        let mut v: Vec<(String, &mut Linear)> = l.attn.linears_mut().into_iter().map(|(n, x)| (format!("self_attn.{n}"), x)).collect();
        if let FeedForward::Dense(m) = &mut l.mlp {
            v.extend(m.linears_mut().into_iter().map(|(n, x)| (format!("mlp.{n}"), x)));
        }
        v
    }

    fn logits(&self, h: &Array) -> Result<Array> {
        match &self.lm_head {
            Some(head) => head.forward(h),
            None => self.embed.as_linear(h),
        }
    }

    fn new_caches(&self) -> Vec<KvCache> {
        self.layers.iter().map(|l| l.attn.new_cache()).collect()
    }

    fn arrays(&self) -> Vec<&Array> {
        let mut v = self.embed.arrays();
        for l in &self.layers {
            v.push(l.input_norm.weight());
            v.extend(l.attn.arrays());
            v.push(l.post_norm.weight());
            v.extend(match &l.mlp {
                FeedForward::Dense(m) => m.arrays(),
                FeedForward::Sparse(m) => m.arrays(),
            });
        }
        v.push(self.norm.weight());
        if let Some(head) = &self.lm_head {
            v.extend(head.arrays());
        }
        v
    }
}
