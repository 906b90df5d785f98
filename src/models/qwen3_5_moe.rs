//! Qwen 3.5 MoE (`qwen3_5_moe`, its text model `qwen3_5_moe_text`): the Qwen
//! 3.5 hybrid network (`qwen3_5::network`) whose MLPs are `num_experts`
//! routed experts of `moe_intermediate_size` (top `num_experts_per_tok` of a
//! softmax router, always renormalised) plus a shared expert of
//! `shared_expert_intermediate_size` scaled by σ(`shared_expert_gate`).
//! transformers stores the experts fused (`experts.gate_up_proj` `[E, 2I, H]`,
//! gate rows first; `experts.down_proj` `[E, H, I]`); they are split at load
//! into mlx-lm's `switch_mlp.{gate,up,down}_proj` (which mlx-lm's converted
//! checkpoints hold already), per-expert tensors are stacked.

use super::config::{ModelConfig, Moe, MoeAct};
use super::family::{Defaults, Family, Network};
use super::qwen3_moe::count;
use super::weights::Weights;
use crate::{Error, Result};
use serde_json::{Map, Value};

pub struct Qwen35Moe;

impl Family for Qwen35Moe {
    fn name(&self) -> &'static str {
        "qwen3_5_moe"
    }

    fn model_types(&self) -> &'static [&'static str] {
        &["qwen3_5_moe", "qwen3_5_moe_text"]
    }

    fn defaults(&self, _model_type: &str) -> Defaults {
        Defaults { max_position_embeddings: 32768, rope_theta: 10_000_000.0, qk_norm: true, ..Defaults::LLAMA }
    }

    fn configure(&self, config: &Map<String, Value>, cfg: &mut ModelConfig) -> Result<()> {
        super::qwen3_5::configure(config, cfg)?;
        let experts = count(config, &["num_experts"])?;
        let top_k = count(config, &["num_experts_per_tok"])?;
        if top_k > experts {
            return Err(Error::Model(format!("config.json: num_experts_per_tok ({top_k}) exceeds num_experts ({experts})")));
        }
        cfg.moe = Some(Moe {
            experts,
            top_k,
            intermediate_size: count(config, &["moe_intermediate_size"])?,
            norm_topk_prob: config.get("norm_topk_prob").and_then(Value::as_bool).unwrap_or(true),
            layers: vec![true; cfg.num_layers],
            path: "mlp",
            router: "gate",
            experts_path: "switch_mlp",
            bias: false,
            act: MoeAct::Silu,
        });
        cfg.shared_expert_size = Some(count(config, &["shared_expert_intermediate_size"])?);
        Ok(())
    }

    fn sanitize(&self, w: &mut Weights, cfg: &ModelConfig) -> Result<()> {
        super::qwen3_5::sanitize(w, cfg)?;
        let Some(moe) = &cfg.moe else { return Ok(()) };
        for l in 0..cfg.num_layers {
            let p = format!("model.layers.{l}.mlp");
            if let Some(gate_up) = w.take_optional(&format!("{p}.experts.gate_up_proj")) {
                let i = moe.intermediate_size as i32;
                if gate_up.ndim() != 3 || gate_up.dim(1) != 2 * i {
                    return Err(Error::Model(format!("'{p}.experts.gate_up_proj' has shape {:?}, expected [E, {}, H]", gate_up.shape(), 2 * i)));
                }
                w.insert(format!("{p}.switch_mlp.gate_proj.weight"), gate_up.slice_axis(1, 0, i)?);
                w.insert(format!("{p}.switch_mlp.up_proj.weight"), gate_up.slice_axis(1, i, 2 * i)?);
                let down = w.take(&format!("{p}.experts.down_proj"))?;
                w.insert(format!("{p}.switch_mlp.down_proj.weight"), down);
            }
            for n in ["gate_proj", "up_proj", "down_proj"] {
                w.stack_experts(&format!("{p}.experts"), n, moe.experts, &format!("{p}.switch_mlp.{n}"))?;
            }
        }
        Ok(())
    }

    fn build(&self, w: &mut Weights, cfg: &ModelConfig) -> Result<Box<dyn Network>> {
        super::qwen3_5::network(w, cfg)
    }
}
