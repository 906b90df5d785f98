//! Gemma 4 (`gemma4_text`, and the text model of a multimodal `gemma4`):
//! Gemma 3's block (RMSNorms before and after attention and MLP, GELU-tanh
//! MLP, embeddings × √hidden, soft-capped logits) with plain `w` RMSNorms,
//! attention scale 1, values RMS-normed without a weight, and a learned scalar
//! per layer. Global layers have their own head size (`global_head_dim`) and
//! proportional partial RoPE, and may take values from the key projection
//! (`attention_k_eq_v`, with `num_global_key_value_heads`). E2B/E4B add
//! per-layer input embeddings (a slice per layer, gated into the residual
//! after the MLP) and let the last `num_kv_shared_layers` layers reuse the
//! keys and values of the last earlier layer of their kind. 26B-A4B adds a
//! mixture of experts beside each dense MLP: a router on the RMS-normed
//! residual (scaled per feature, softmax, top k renormalised, scaled per
//! expert) picks GELU-tanh experts fed by their own pre-norm, and the two
//! outputs, each post-normed, are summed.
//!
//! `Network::block` sees one layer and its own cache, so what a layer needs
//! from outside travels with the hidden state: `embed` appends the per-layer
//! inputs after the hidden columns, a layer whose keys are shared appends its
//! step's keys and values, and `final_norm` drops the extra columns. A sharing
//! layer keeps those keys in a cache of its own (the same kind as its source's),
//! so caches, batching and training see one cache per layer as usual.
//!
//! Split over ranks (`shard`), each layer holds its rank's heads of its own
//! size (so do the carried keys of sharing layers), the MLPs their columns,
//! the experts whole experts, and the per-layer embedding table its
//! vocabulary rows; the dense MLP and the experts, which are post-normed
//! apart, are summed over the ranks in one all_sum before those norms.

use super::config::{Gemma4Layout, ModelConfig, Moe, MoeAct, Rope, RopeScaling};
use super::family::{Defaults, Family, Network};
use super::layers::{gelu_tanh, AttnShape, Attention, Context, Embedding, Linear, Mlp, MoeBlock, RmsNorm};
use super::weights::Weights;
use crate::cache::KvCache;
use crate::mlx::{self, fast, Array, Dtype};
use crate::{Error, Result};
use serde_json::{Map, Value};

pub struct Gemma4;

fn get<'a>(config: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    config.get(key).filter(|v| !v.is_null())
}

/// A size setting: absent gives `default`.
fn size(config: &Map<String, Value>, key: &str, default: usize, max: u64) -> Result<usize> {
    match get(config, key) {
        None => Ok(default),
        Some(v) => v
            .as_u64()
            .filter(|&x| x <= max)
            .map(|x| x as usize)
            .ok_or_else(|| Error::Model(format!("config.json: '{key}' must be an integer from 0 to {max}, found {v}"))),
    }
}

fn flag(config: &Map<String, Value>, key: &str) -> Result<bool> {
    match get(config, key) {
        None => Ok(false),
        Some(v) => v.as_bool().ok_or_else(|| Error::Model(format!("config.json: '{key}' must be true or false, found {v}"))),
    }
}

impl Family for Gemma4 {
    fn name(&self) -> &'static str {
        "gemma4"
    }

    fn model_types(&self) -> &'static [&'static str] {
        &["gemma4_text", "gemma4"]
    }

    fn defaults(&self, _model_type: &str) -> Defaults {
        Defaults {
            max_position_embeddings: 131_072,
            tie_word_embeddings: true,
            rope_theta: 1_000_000.0,
            local_rope_theta: Some(10_000.0),
            sliding_window_pattern: Some(6),
            sliding_window: true,
            query_pre_attn_scalar: false,
            qk_norm: true,
            qkv_bias: false,
        }
    }

    /// transformers 5.20.2's `Gemma4TextConfig` defaults where config.json is silent.
    fn configure(&self, config: &Map<String, Value>, cfg: &mut ModelConfig) -> Result<()> {
        use crate::limits::{MAX_HEAD_DIM, MAX_HEADS, MAX_HIDDEN, MAX_VOCAB};
        let n = cfg.num_layers;
        if let Some(b) = get(config, "use_bidirectional_attention").and_then(Value::as_str).filter(|&b| b == "all") {
            return Err(Error::Model(format!("config.json: use_bidirectional_attention '{b}' (an encoder) is not a causal language model")));
        }
        if let Some(act) = get(config, "hidden_activation").and_then(Value::as_str).filter(|&a| a != "gelu_pytorch_tanh") {
            return Err(Error::Model(format!("config.json: hidden_activation '{act}' (Gemma 4 uses gelu_pytorch_tanh)")));
        }
        if flag(config, "enable_moe_block")? {
            use crate::limits::MAX_INTERMEDIATE;
            let need = |key: &str, max: u64| -> Result<usize> {
                match size(config, key, 0, max)? {
                    0 => Err(Error::Model(format!("config.json: enable_moe_block needs a positive '{key}'"))),
                    v => Ok(v),
                }
            };
            let (experts, top_k) = (need("num_experts", MAX_HEADS)?, need("top_k_experts", MAX_HEADS)?);
            if top_k > experts {
                return Err(Error::Model(format!("config.json: top_k_experts ({top_k}) exceeds num_experts ({experts})")));
            }
            cfg.moe = Some(Moe {
                experts,
                top_k,
                intermediate_size: need("moe_intermediate_size", MAX_INTERMEDIATE)?,
                norm_topk_prob: true,
                layers: vec![true; n],
                path: "experts",
                router: "router.proj",
                experts_path: "experts.switch_glu",
                bias: false,
                act: MoeAct::GeluTanh,
            });
        }
        // Sliding layers: `layer_types`, else 5 of every 6; the last layer is always global.
        let window = cfg.sliding_window.unwrap_or(512);
        cfg.sliding_window = Some(window);
        let mut sliding: Vec<bool> = match get(config, "layer_types").and_then(Value::as_array) {
            Some(types) => types.iter().map(|t| t.as_str() == Some("sliding_attention")).collect(),
            None => (0..n).map(|i| (i + 1) % 6 != 0).collect(),
        };
        sliding[n - 1] = false;
        cfg.sliding = sliding;
        cfg.attn_scale = 1.0;
        // Without rope_parameters: transformers' defaults (proportional RoPE on a quarter of global heads).
        if get(config, "rope_parameters").is_none() {
            cfg.rope = Rope { theta: 1_000_000.0, scaling: RopeScaling::Proportional { factor: 1.0, fraction: 0.25 } };
            cfg.rope_local = Some(Rope { theta: 10_000.0, scaling: RopeScaling::None });
        }

        let values_from_keys = flag(config, "attention_k_eq_v")?;
        let global_head_dim = size(config, "global_head_dim", 512, MAX_HEAD_DIM)?;
        // Global KV heads apply where keys are values (as transformers and mlx-lm read them).
        let global_kv = match size(config, "num_global_key_value_heads", 0, MAX_HEADS)? {
            k if k > 0 && values_from_keys => k,
            _ => cfg.num_kv_heads,
        };
        let mut head_dims: Vec<usize> = cfg.sliding.iter().map(|&s| if s { cfg.head_dim } else { global_head_dim }).collect();
        let mut kv_heads: Vec<usize> = cfg.sliding.iter().map(|&s| if s { cfg.num_kv_heads } else { global_kv }).collect();
        // transformers 5.20.2 writes the per-layer values instead: {"3": {"head_dim": 512}, ...}.
        if let Some(table) = get(config, "per_layer_config").and_then(Value::as_object) {
            head_dims = vec![cfg.head_dim; n];
            kv_heads = vec![cfg.num_kv_heads; n];
            for (key, o) in table {
                let i = key.parse::<usize>().ok().filter(|&i| i < n).ok_or_else(|| Error::Model(format!("config.json: per_layer_config has layer '{key}' of {n}")))?;
                let o = o.as_object().ok_or_else(|| Error::Model(format!("config.json: per_layer_config.{key} must be an object")))?;
                for (k, _) in o {
                    match k.as_str() {
                        "head_dim" => head_dims[i] = size(o, k, cfg.head_dim, MAX_HEAD_DIM)?,
                        "num_key_value_heads" => kv_heads[i] = size(o, k, cfg.num_kv_heads, MAX_HEADS)?,
                        other => return Err(Error::Model(format!("config.json: per_layer_config.{key}.{other} is not supported"))),
                    }
                }
            }
        }
        for (i, (&d, &k)) in head_dims.iter().zip(&kv_heads).enumerate() {
            if d == 0 || !d.is_multiple_of(2) || k == 0 || !cfg.num_heads.is_multiple_of(k) {
                return Err(Error::Model(format!("config.json: layer {i} has head_dim {d} and {k} KV heads for {} attention heads", cfg.num_heads)));
            }
        }
        let kv_shared_layers = size(config, "num_kv_shared_layers", 0, n as u64)?;
        let first_shared = n - kv_shared_layers;
        for i in first_shared..n {
            let Some(src) = (0..first_shared).rev().find(|&j| cfg.sliding[j] == cfg.sliding[i]) else {
                return Err(Error::Model(format!("config.json: layer {i} shares keys and values but no earlier layer is of its kind")));
            };
            if (head_dims[src], kv_heads[src]) != (head_dims[i], kv_heads[i]) {
                return Err(Error::Model(format!("config.json: layer {i} shares the keys of layer {src}, whose heads differ")));
            }
        }
        cfg.gemma4 = Some(Gemma4Layout {
            head_dims,
            kv_heads,
            values_from_keys,
            kv_shared_layers,
            per_layer_input: size(config, "hidden_size_per_layer_input", 256, MAX_HIDDEN)?,
            per_layer_vocab: size(config, "vocab_size_per_layer_input", 262_144, MAX_VOCAB)?,
            double_wide_mlp: flag(config, "use_double_wide_mlp")?,
        });
        Ok(())
    }

    fn sanitize(&self, w: &mut Weights, cfg: &ModelConfig) -> Result<()> {
        if cfg.tie_word_embeddings {
            w.take_optional("lm_head.weight");
        }
        // transformers' experts: gate and up fused ([E, 2I, H], gate rows first).
        for i in 0..cfg.num_layers {
            let p = format!("model.layers.{i}.experts");
            if let Some(gate_up) = w.take_optional(&format!("{p}.gate_up_proj")) {
                let halves = gate_up.split(2, 1)?;
                w.insert(format!("{p}.switch_glu.gate_proj.weight"), halves[0].clone());
                w.insert(format!("{p}.switch_glu.up_proj.weight"), halves[1].clone());
            }
            if let Some(down) = w.take_optional(&format!("{p}.down_proj")) {
                w.insert(format!("{p}.switch_glu.down_proj.weight"), down);
            }
        }
        // Hub checkpoints may still hold the sharing layers' unused projections.
        let g = layout(cfg)?;
        for i in cfg.num_layers - g.kv_shared_layers..cfg.num_layers {
            for name in ["k_proj", "v_proj", "k_norm", "v_norm"] {
                for suffix in ["weight", "scales", "biases"] {
                    w.take_optional(&format!("model.layers.{i}.self_attn.{name}.{suffix}"));
                }
            }
        }
        Ok(())
    }

    fn norms_per_block(&self) -> u64 {
        4
    }

    fn build(&self, w: &mut Weights, cfg: &ModelConfig) -> Result<Box<dyn Network>> {
        Ok(Box::new(Gemma4Net::load(w, cfg)?))
    }
}

fn layout(cfg: &ModelConfig) -> Result<&Gemma4Layout> {
    cfg.gemma4.as_ref().ok_or_else(|| Error::Model("gemma4: configuration without its layer layout".into()))
}

/// How a layer's keys and values relate to other layers'.
#[derive(Clone, Copy)]
enum Kv {
    Own,
    /// Its step's keys and values are appended to the carried columns (sources run in layer order).
    Source,
    /// It attends with the keys and values carried at this offset.
    Shared(usize),
}

/// Gemma 4's per-layer input: `norm(proj(gelu(gate(h)) · input))` added to the residual.
struct PerLayerGate {
    gate: Linear,
    proj: Linear,
    norm: RmsNorm,
}

/// 26B-A4B's experts beside the dense MLP.
struct Experts {
    moe: MoeBlock,
    /// The router's feature scale times 1/√hidden (folded at load) and its per-expert scale.
    router_scale: Array,
    per_expert_scale: Array,
    top_k: i32,
    eps: f32,
    /// Before the experts; after the dense MLP and after the experts.
    pre_norm: RmsNorm,
    post_dense_norm: RmsNorm,
    post_experts_norm: RmsNorm,
    /// Split: the group that sums the dense MLP's and the experts' partial outputs together.
    sum: Option<std::sync::Arc<mlx::distributed::Group>>,
}

impl Experts {
    /// The experts of `layer` beside its dense `mlp`, whose all_sum (when split) they take over.
    fn load(w: &mut Weights, cfg: &ModelConfig, layer: usize, mlp: &mut Mlp) -> Result<Option<Experts>> {
        let Some(moe) = &cfg.moe else { return Ok(None) };
        let (p, h, eps) = (format!("model.layers.{layer}"), cfg.hidden_size, cfg.rms_norm_eps);
        let norm = |w: &mut Weights, name: &str| RmsNorm::load(w, &format!("{p}.{name}"), h, eps, false);
        let scale = w.take_shaped(&format!("{p}.router.scale"), &[h])?.mul_scalar(1.0 / (h as f32).sqrt())?;
        let mut experts = MoeBlock::load_at(w, cfg, &format!("{p}.{}", moe.router), &format!("{p}.{}", moe.experts_path))?;
        // A whole dense MLP (not split, or kept whole) leaves the experts to sum their own.
        let sum = match mlp.defer_sum() {
            Some(g) => {
                experts.defer_sum().ok_or_else(|| Error::Model(format!("gemma4: layer {layer}'s MLP is split but not its experts")))?;
                Some(g)
            }
            None => None,
        };
        Ok(Some(Experts {
            moe: experts,
            router_scale: scale,
            // Indexed by the router's choice among all experts, split or not.
            per_expert_scale: w.take_shaped(&format!("{p}.router.per_expert_scale"), &[cfg.build.shard.as_ref().map_or(moe.experts, |s| s.experts)])?,
            top_k: moe.top_k as i32,
            eps,
            pre_norm: norm(w, "pre_feedforward_layernorm_2")?,
            post_dense_norm: norm(w, "post_feedforward_layernorm_1")?,
            post_experts_norm: norm(w, "post_feedforward_layernorm_2")?,
            sum,
        }))
    }

    /// The dense MLP's output `dense` joined with the experts' on the residual `h`
    /// (split: both partial, summed over the ranks here before their norms).
    fn forward(&self, h: &Array, dense: &Array) -> Result<Array> {
        let k = self.top_k;
        let routed = fast::rms_norm(h, Some(&self.router_scale), self.eps)?;
        let probs = self.moe.router().forward(&routed)?.astype(Dtype::F32)?.softmax(&[-1])?;
        let idx = probs.negative()?.argpartition(k - 1, -1)?.slice_axis(2, 0, k)?;
        let scores = probs.take_along_axis(&idx, -1)?;
        let scores = scores.divide(&scores.sum(&[-1], true)?)?.multiply(&self.per_expert_scale.take(&idx, 0)?.astype(Dtype::F32)?)?;
        let y = self.moe.forward_routed(&self.pre_norm.forward(h)?, &idx, &scores)?;
        let (dense, y) = match &self.sum {
            Some(g) => {
                let both = g.all_sum(&mlx::concatenate(&[dense, &y], -1)?)?;
                let mut halves = both.split(2, -1)?;
                let y = halves.pop().expect("two halves");
                (halves.pop().expect("two halves"), y)
            }
            None => (dense.clone(), y),
        };
        self.post_dense_norm.forward(&dense)?.add(&self.post_experts_norm.forward(&y)?)
    }

    fn arrays(&self) -> Vec<&Array> {
        let mut v = self.moe.arrays();
        v.extend([&self.router_scale, &self.per_expert_scale]);
        for n in [&self.pre_norm, &self.post_dense_norm, &self.post_experts_norm] {
            v.push(n.weight());
        }
        v
    }
}

struct Block {
    input_norm: RmsNorm,
    attn: Attention,
    post_attn_norm: RmsNorm,
    pre_ff_norm: RmsNorm,
    mlp: Mlp,
    post_ff_norm: RmsNorm,
    experts: Option<Experts>,
    per_layer: Option<PerLayerGate>,
    scalar: Array,
    kv: Kv,
}

/// The per-layer input embeddings: a token's row holds every layer's slice,
/// combined with a projection of the scaled embedding.
struct PerLayerInputs {
    embed: Embedding,
    projection: Linear,
    norm: RmsNorm,
    width: usize,
}

struct Gemma4Net {
    embed: Embedding,
    lm_head: Option<Linear>,
    layers: Vec<Block>,
    norm: RmsNorm,
    per_layer: Option<PerLayerInputs>,
    hidden: usize,
    embed_scale: f32,
    softcap: Option<f32>,
}

impl Gemma4Net {
    fn load(w: &mut Weights, cfg: &ModelConfig) -> Result<Gemma4Net> {
        let g = layout(cfg)?;
        let (h, eps, n, p) = (cfg.hidden_size, cfg.rms_norm_eps, cfg.num_layers, g.per_layer_input);
        let first_shared = n - g.kv_shared_layers;
        // Sources: the last layer of each kind before the sharing ones, where a sharing layer needs it.
        let mut offsets: Vec<Option<usize>> = vec![None; n];
        let mut at = n * p;
        for (i, offset) in offsets.iter_mut().enumerate().take(first_shared) {
            let needed = (first_shared..n).any(|j| cfg.sliding[j] == cfg.sliding[i]);
            let last = !(i + 1..first_shared).any(|j| cfg.sliding[j] == cfg.sliding[i]);
            if needed && last {
                *offset = Some(at);
                at += 2 * g.kv_heads[i] * g.head_dims[i];
            }
        }
        let layers = (0..n)
            .map(|i| {
                let pre = format!("model.layers.{i}");
                let norm = |w: &mut Weights, name: &str| RmsNorm::load(w, &format!("{pre}.{name}"), h, eps, false);
                let shared = i >= first_shared;
                let kv = match (shared, offsets[i]) {
                    (true, _) => Kv::Shared(
                        (0..first_shared).rev().find(|&j| cfg.sliding[j] == cfg.sliding[i]).and_then(|j| offsets[j]).expect("checked in configure"),
                    ),
                    (false, Some(_)) => Kv::Source,
                    (false, None) => Kv::Own,
                };
                let global = !cfg.sliding[i];
                let shape = AttnShape {
                    head_dim: g.head_dims[i],
                    kv_heads: g.kv_heads[i],
                    rope_dims: g.head_dims[i],
                    values_from_keys: g.values_from_keys && global,
                    value_norm: true,
                    shared_kv: shared,
                };
                let wide = if g.double_wide_mlp && shared && first_shared > 0 { 2 } else { 1 };
                // Split, a dense MLP whose columns would cut quantisation groups stays whole (`shard`).
                let whole_cfg;
                let (mlp_cfg, width) = match &cfg.build.shard {
                    Some(s) if s.gemma4.as_ref().is_some_and(|g| g.whole_mlp[i]) => {
                        let mut c = cfg.clone();
                        c.build.shard = None;
                        whole_cfg = c;
                        (&whole_cfg, cfg.intermediate_size * s.size * wide)
                    }
                    _ => (cfg, cfg.intermediate_size * wide),
                };
                let per_layer = if p > 0 {
                    Some(PerLayerGate {
                        gate: Linear::load(w, cfg, &format!("{pre}.per_layer_input_gate"), h, p, false)?,
                        proj: Linear::load(w, cfg, &format!("{pre}.per_layer_projection"), p, h, false)?,
                        norm: norm(w, "post_per_layer_input_norm")?,
                    })
                } else {
                    None
                };
                let mut mlp = Mlp::load_at(w, mlp_cfg, &format!("{pre}.mlp"), width, true)?;
                let experts = Experts::load(w, cfg, i, &mut mlp)?;
                Ok(Block {
                    input_norm: norm(w, "input_layernorm")?,
                    attn: Attention::load_shaped(w, cfg, i, false, shape)?,
                    post_attn_norm: norm(w, "post_attention_layernorm")?,
                    pre_ff_norm: norm(w, "pre_feedforward_layernorm")?,
                    mlp,
                    post_ff_norm: norm(w, "post_feedforward_layernorm")?,
                    experts,
                    per_layer,
                    scalar: w.take_shaped(&format!("{pre}.layer_scalar"), &[1])?,
                    kv,
                })
            })
            .collect::<Result<_>>()?;
        let per_layer = if p > 0 {
            Some(PerLayerInputs {
                embed: Embedding::load_vocab(w, cfg, "model.embed_tokens_per_layer", g.per_layer_vocab, n * p)?,
                projection: Linear::load(w, cfg, "model.per_layer_model_projection", h, n * p, false)?,
                norm: RmsNorm::load(w, "model.per_layer_projection_norm", p, eps, false)?,
                width: p,
            })
        } else {
            None
        };
        Ok(Gemma4Net {
            embed: Embedding::load(w, cfg, "model.embed_tokens")?,
            lm_head: if cfg.tie_word_embeddings { None } else { Some(Linear::load(w, cfg, "lm_head", h, cfg.vocab_size, false)?) },
            layers,
            norm: RmsNorm::load(w, "model.norm", h, eps, false)?,
            per_layer,
            hidden: h,
            embed_scale: (h as f32).sqrt(),
            softcap: cfg.final_logit_softcapping,
        })
    }
}

/// `[B, heads, L, D]` → `[B, L, heads·D]` (carried columns) and back.
fn flatten_heads(x: &Array) -> Result<Array> {
    let (b, n, l, d) = (x.dim(0), x.dim(1), x.dim(2), x.dim(3));
    if l == 1 {
        x.reshape(&[b, 1, n * d])
    } else {
        x.transpose(&[0, 2, 1, 3])?.reshape(&[b, l, n * d])
    }
}

fn unflatten_heads(x: &Array, heads: usize) -> Result<Array> {
    let (b, l, w, n) = (x.dim(0), x.dim(1), x.dim(2), heads as i32);
    if l == 1 {
        x.reshape(&[b, n, 1, w / n])
    } else {
        x.reshape(&[b, l, n, w / n])?.transpose(&[0, 2, 1, 3])
    }
}

impl Network for Gemma4Net {
    /// The scaled embeddings, followed by every layer's per-layer input when the model has them.
    fn embed(&self, tokens: &Array) -> Result<Array> {
        let h = self.embed.forward(tokens)?.mul_scalar(self.embed_scale)?;
        let Some(p) = &self.per_layer else { return Ok(h) };
        let (b, l, n, w) = (h.dim(0), h.dim(1), self.layers.len() as i32, p.width as i32);
        let own = p.embed.forward(tokens)?.mul_scalar((p.width as f32).sqrt())?;
        let projected = p.projection.forward(&h)?.mul_scalar(1.0 / self.embed_scale)?;
        let projected = p.norm.forward(&projected.reshape(&[b, l, n, w])?)?.reshape(&[b, l, n * w])?;
        let inputs = projected.add(&own)?.mul_scalar(std::f32::consts::FRAC_1_SQRT_2)?;
        mlx::concatenate(&[&h, &inputs.astype(h.dtype())?], -1)
    }

    fn block(&self, i: usize, x: &Array, cache: Option<&mut KvCache>, ctx: &Context) -> Result<Array> {
        let layer = &self.layers[i];
        let (hd, width) = (self.hidden as i32, x.dim(2));
        let (h, carried) = if width == hd { (x.clone(), None) } else { (x.slice_axis(2, 0, hd)?, Some(x.slice_axis(2, hd, width)?)) };
        let carried_cols = |from: usize, cols: usize| -> Result<Array> {
            let c = carried.as_ref().ok_or_else(|| Error::Model(format!("gemma4: block {i} needs the columns embed() appends")))?;
            c.slice_axis(2, from as i32, (from + cols) as i32)
        };
        let kv_cols = layer.attn.kv_heads() * layer.attn.head_dim();
        let shared = match layer.kv {
            Kv::Shared(at) => Some((unflatten_heads(&carried_cols(at, kv_cols)?, layer.attn.kv_heads())?, unflatten_heads(&carried_cols(at + kv_cols, kv_cols)?, layer.attn.kv_heads())?)),
            _ => None,
        };
        let (r, (k, v)) = layer.attn.forward_kv(&layer.input_norm.forward(&h)?, shared, cache, ctx)?;
        let h = h.add(&layer.post_attn_norm.forward(&r)?)?;
        let r = layer.mlp.forward(&layer.pre_ff_norm.forward(&h)?)?;
        let r = match &layer.experts {
            Some(e) => e.forward(&h, &r)?,
            None => r,
        };
        let mut h = h.add(&layer.post_ff_norm.forward(&r)?)?;
        if let (Some(g), Some(p)) = (&layer.per_layer, &self.per_layer) {
            let input = carried_cols(i * p.width, p.width)?;
            let y = gelu_tanh(&g.gate.forward(&h)?)?.multiply(&input)?;
            h = h.add(&g.norm.forward(&g.proj.forward(&y)?)?)?;
        }
        let h = h.multiply(&layer.scalar)?;
        let mut parts = vec![h];
        parts.extend(carried);
        if let Kv::Source = layer.kv {
            parts.push(flatten_heads(&k)?.astype(parts[0].dtype())?);
            parts.push(flatten_heads(&v)?.astype(parts[0].dtype())?);
        }
        if parts.len() == 1 {
            return Ok(parts.pop().expect("one part"));
        }
        mlx::concatenate(&parts.iter().collect::<Vec<_>>(), -1)
    }

    fn final_norm(&self, x: &Array) -> Result<Array> {
        let hd = self.hidden as i32;
        let h = if x.dim(2) == hd { x.clone() } else { x.slice_axis(2, 0, hd)? };
        self.norm.forward(&h)
    }

    fn logits(&self, h: &Array) -> Result<Array> {
        let logits = match &self.lm_head {
            Some(head) => head.forward(h)?,
            None => self.embed.as_linear(h)?,
        };
        match self.softcap {
            Some(cap) => logits.mul_scalar(1.0 / cap)?.tanh()?.mul_scalar(cap),
            None => Ok(logits),
        }
    }

    fn new_caches(&self) -> Vec<KvCache> {
        self.layers.iter().map(|l| l.attn.new_cache()).collect()
    }

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

    fn arrays(&self) -> Vec<&Array> {
        let mut v = self.embed.arrays();
        if let Some(head) = &self.lm_head {
            v.extend(head.arrays());
        }
        for l in &self.layers {
            for n in [&l.input_norm, &l.post_attn_norm, &l.pre_ff_norm, &l.post_ff_norm] {
                v.push(n.weight());
            }
            v.extend(l.attn.arrays());
            v.extend(l.mlp.arrays());
            if let Some(e) = &l.experts {
                v.extend(e.arrays());
            }
            if let Some(g) = &l.per_layer {
                v.extend(g.gate.arrays());
                v.extend(g.proj.arrays());
                v.push(g.norm.weight());
            }
            v.push(&l.scalar);
        }
        if let Some(p) = &self.per_layer {
            v.extend(p.embed.arrays());
            v.extend(p.projection.arrays());
            v.push(p.norm.weight());
        }
        v.push(self.norm.weight());
        v
    }
}
