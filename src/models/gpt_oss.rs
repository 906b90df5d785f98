//! gpt-oss (`gpt_oss`): the Llama network with biased q/k/v/o projections, a
//! learned attention sink per head, alternating sliding-window and full layers,
//! YaRN rope, and a mixture of experts in every layer: a biased router picks
//! `num_experts_per_tok` of `num_local_experts` biased experts whose activation
//! is the clamped SwiGLU (`swiglu_alpha`, `swiglu_limit`).
//!
//! Checkpoint layouts read: transformers' (`experts.gate_up_proj` `[E, H, 2I]`
//! with gate and up interleaved column by column, `experts.down_proj`
//! `[E, I, H]`, `*_bias`), OpenAI's MXFP4 release (`*_blocks` bytes and
//! `*_scales` exponents, rows interleaved; `quantization_config.quant_method`
//! `mxfp4`), and mlx-lm's (`experts.{gate,up,down}_proj.*`, dense, affine- or
//! `mxfp4`-quantised). MXFP4 experts run through MLX's `mxfp4` mode.

use super::config::{Moe, MoeAct, ModelConfig, Quant, QuantMode};
use super::family::{Defaults, Family, Network};
use super::qwen3_moe::count;
use super::weights::Weights;
use crate::mlx::{Array, Dtype};
use crate::{Error, Result};
use serde_json::{Map, Value};

pub struct GptOss;

const MXFP4: Quant = Quant { group_size: 32, bits: 4, mode: QuantMode::Mxfp4 };

impl Family for GptOss {
    fn name(&self) -> &'static str {
        "gpt_oss"
    }

    fn model_types(&self) -> &'static [&'static str] {
        &["gpt_oss"]
    }

    fn defaults(&self, _model_type: &str) -> Defaults {
        Defaults { max_position_embeddings: 131_072, rope_theta: 150_000.0, sliding_window: true, ..Defaults::LLAMA }
    }

    fn configure(&self, config: &Map<String, Value>, cfg: &mut ModelConfig) -> Result<()> {
        let experts = count(config, &["num_local_experts", "num_experts"])?;
        let top_k = count(config, &["num_experts_per_tok", "experts_per_token"])?;
        if top_k > experts {
            return Err(Error::Model(format!("config.json: num_experts_per_tok ({top_k}) exceeds num_local_experts ({experts})")));
        }
        let num = |k: &str, d: f64| config.get(k).and_then(Value::as_f64).unwrap_or(d) as f32;
        let (alpha, limit) = (num("swiglu_alpha", 1.702), num("swiglu_limit", 7.0));
        if !(alpha.is_finite() && limit.is_finite() && limit > 0.0) {
            return Err(Error::Model(format!("config.json: swiglu_alpha {alpha} / swiglu_limit {limit} must be finite, the limit > 0")));
        }
        cfg.moe = Some(Moe {
            experts,
            top_k,
            intermediate_size: cfg.intermediate_size,
            // A softmax over the chosen experts' logits = their probabilities renormalised.
            norm_topk_prob: true,
            layers: vec![true; cfg.num_layers],
            path: "mlp",
            router: "router",
            experts_path: "experts",
            bias: true,
            act: MoeAct::SwigluClamped { alpha, limit },
        });
        cfg.attn_sinks = true;
        cfg.qkv_bias = true;
        cfg.o_bias = true;
        // Without layer_types: sliding, full, sliding, full, ...
        if config.get("layer_types").is_none_or(Value::is_null) && cfg.sliding_window.is_some() {
            cfg.sliding = (0..cfg.num_layers).map(|i| i % 2 == 0).collect();
        }
        let method = config.get("quantization_config").and_then(|q| q.get("quant_method")).and_then(Value::as_str);
        if method == Some("mxfp4") {
            for l in 0..cfg.num_layers {
                for n in ["gate_proj", "up_proj", "down_proj"] {
                    cfg.quantization.overrides.insert(format!("model.layers.{l}.mlp.experts.{n}"), Some(MXFP4));
                }
            }
        }
        Ok(())
    }

    fn sanitize(&self, w: &mut Weights, cfg: &ModelConfig) -> Result<()> {
        for l in 0..cfg.num_layers {
            let p = format!("model.layers.{l}.mlp.experts");
            // transformers: [E, in, out] matrices, gate/up interleaved along out.
            if let Some(gu) = w.take_optional(&format!("{p}.gate_up_proj")) {
                let [g, u] = interleaved(&gu, 2)?;
                w.insert(format!("{p}.gate_proj.weight"), g.swapaxes(1, 2)?);
                w.insert(format!("{p}.up_proj.weight"), u.swapaxes(1, 2)?);
                let down = w.take(&format!("{p}.down_proj"))?;
                w.insert(format!("{p}.down_proj.weight"), down.swapaxes(1, 2)?);
            }
            // OpenAI's MXFP4: [E, out, in/32, 16] bytes, gate/up interleaved along out.
            if let Some(blocks) = w.take_optional(&format!("{p}.gate_up_proj_blocks")) {
                let [g, u] = interleaved(&packed(&blocks)?, 1)?;
                let [gs, us] = interleaved(&w.take(&format!("{p}.gate_up_proj_scales"))?, 1)?;
                w.insert(format!("{p}.gate_proj.weight"), g);
                w.insert(format!("{p}.up_proj.weight"), u);
                w.insert(format!("{p}.gate_proj.scales"), gs);
                w.insert(format!("{p}.up_proj.scales"), us);
                let down = packed(&w.take(&format!("{p}.down_proj_blocks"))?)?;
                w.insert(format!("{p}.down_proj.weight"), down);
                let ds = w.take(&format!("{p}.down_proj_scales"))?;
                w.insert(format!("{p}.down_proj.scales"), ds);
            }
            if let Some(b) = w.take_optional(&format!("{p}.gate_up_proj_bias")) {
                let [g, u] = interleaved(&b, 1)?;
                w.insert(format!("{p}.gate_proj.bias"), g);
                w.insert(format!("{p}.up_proj.bias"), u);
            }
            if let Some(b) = w.take_optional(&format!("{p}.down_proj_bias")) {
                w.insert(format!("{p}.down_proj.bias"), b);
            }
        }
        Ok(())
    }

    fn build(&self, w: &mut Weights, cfg: &ModelConfig) -> Result<Box<dyn Network>> {
        super::llama::network(w, cfg)
    }
}

/// The even and odd entries of `axis` (gate and up of a fused projection).
fn interleaved(a: &Array, axis: usize) -> Result<[Array; 2]> {
    let shape = a.shape();
    if shape.len() <= axis || shape[axis] % 2 != 0 {
        return Err(Error::Model(format!("gpt-oss fused gate/up tensor of shape {shape:?}: axis {axis} is not even")));
    }
    let part = |start: i32| {
        let mut lo = vec![0; shape.len()];
        let mut strides = vec![1; shape.len()];
        lo[axis] = start;
        strides[axis] = 2;
        a.slice(&lo, &shape, &strides)?.contiguous()
    };
    Ok([part(0)?, part(1)?])
}

/// MXFP4 blocks `[.., in/32, 16]` bytes as MLX's packing `[.., in/8]` uint32 (the same nibbles).
fn packed(blocks: &Array) -> Result<Array> {
    if blocks.dtype() != Dtype::U8 || blocks.ndim() != 4 || blocks.dim(3) != 16 {
        return Err(Error::Model(format!("gpt-oss MXFP4 blocks must be uint8 [experts, rows, groups, 16], found {} {:?}", blocks.dtype(), blocks.shape())));
    }
    blocks.view(Dtype::U32)?.flatten(-2, -1)
}
