//! Qwen3-MoE (`qwen3_moe`): Qwen 3 attention (q/k norms) over sparse SwiGLU
//! MLPs: `num_experts` experts of `moe_intermediate_size`, `num_experts_per_tok`
//! chosen per token by a softmax router, renormalised with `norm_topk_prob`;
//! layers in `mlp_only_layers` or off the `decoder_sparse_step` keep a dense MLP.
//! Per-expert checkpoint tensors (`mlp.experts.{e}.{gate,up,down}_proj`) are
//! stacked at load into `mlp.switch_mlp.*`, the layout mlx-lm writes.

use super::config::{ModelConfig, Moe, MoeAct};
use super::family::{Defaults, Family, Network};
use super::gguf::{GgufArch, GgufFile};
use super::weights::Weights;
use crate::{Error, Result};
use serde_json::{json, Map, Value};

pub struct Qwen3Moe;

/// llama.cpp's names of a sparse block: the router and the experts, stored stacked.
pub(super) const GGUF_MOE_NAMES: [(&str, &str); 4] = [
    ("ffn_gate_inp", "mlp.gate"),
    ("ffn_gate_exps", "mlp.switch_mlp.gate_proj"),
    ("ffn_up_exps", "mlp.switch_mlp.up_proj"),
    ("ffn_down_exps", "mlp.switch_mlp.down_proj"),
];

/// The expert settings of a GGUF file (`{arch}.expert_count`, `.expert_used_count`,
/// `.expert_feed_forward_length`); layers without a router are dense (`mlp_only_layers`).
fn gguf_config(file: &GgufFile, c: &mut Map<String, Value>) -> Result<()> {
    let key = |k: &str| format!("qwen3moe.{k}");
    c.insert("num_experts".into(), json!(file.require_u64(&key("expert_count"))?));
    c.insert("num_experts_per_tok".into(), json!(file.require_u64(&key("expert_used_count"))?));
    let ffn = match file.get_u64(&key("expert_feed_forward_length"))? {
        Some(n) => n,
        None => c.get("intermediate_size").and_then(Value::as_u64).unwrap_or(0),
    };
    c.insert("moe_intermediate_size".into(), json!(ffn));
    // llama.cpp's qwen3moe graph renormalises the chosen experts' weights.
    c.insert("norm_topk_prob".into(), json!(true));
    let layers = c.get("num_hidden_layers").and_then(Value::as_u64).unwrap_or(0);
    let dense: Vec<u64> = (0..layers).filter(|i| file.tensor(&format!("blk.{i}.ffn_gate_inp.weight")).is_none()).collect();
    c.insert("mlp_only_layers".into(), json!(dense));
    c.insert("hidden_act".into(), json!("silu"));
    Ok(())
}

/// A required positive integer of config.json.
pub(super) fn count(config: &Map<String, Value>, keys: &[&str]) -> Result<usize> {
    keys.iter()
        .find_map(|k| config.get(*k).and_then(Value::as_u64))
        .filter(|&n| n > 0 && n <= 4096)
        .map(|n| n as usize)
        .ok_or_else(|| Error::Model(format!("config.json: '{}' must be an integer in 1..=4096", keys[0])))
}

impl Family for Qwen3Moe {
    fn name(&self) -> &'static str {
        "qwen3_moe"
    }

    fn model_types(&self) -> &'static [&'static str] {
        &["qwen3_moe"]
    }

    fn defaults(&self, _model_type: &str) -> Defaults {
        Defaults { qk_norm: true, ..Defaults::LLAMA }
    }

    fn gguf(&self) -> &'static [GgufArch] {
        const ARCHS: &[GgufArch] = &[GgufArch {
            name: "qwen3moe",
            model_type: "qwen3_moe",
            hf_class: "Qwen3MoeForCausalLM",
            block_names: &GGUF_MOE_NAMES,
            permuted_qk: false,
            norm_plus_one: false,
            attention_bias: false,
            default_rms_norm_eps: None,
            default_rope_theta: 1_000_000.0,
            config: gguf_config,
        }];
        ARCHS
    }

    fn configure(&self, config: &Map<String, Value>, cfg: &mut ModelConfig) -> Result<()> {
        let experts = count(config, &["num_experts", "num_local_experts"])?;
        let top_k = count(config, &["num_experts_per_tok"])?;
        if top_k > experts {
            return Err(Error::Model(format!("config.json: num_experts_per_tok ({top_k}) exceeds num_experts ({experts})")));
        }
        let step = config.get("decoder_sparse_step").and_then(Value::as_u64).unwrap_or(1).max(1) as usize;
        let dense: Vec<u64> = config.get("mlp_only_layers").and_then(Value::as_array).map(|v| v.iter().filter_map(Value::as_u64).collect()).unwrap_or_default();
        cfg.moe = Some(Moe {
            experts,
            top_k,
            intermediate_size: count(config, &["moe_intermediate_size"])?,
            norm_topk_prob: config.get("norm_topk_prob").and_then(Value::as_bool).unwrap_or(false),
            layers: (0..cfg.num_layers).map(|i| !dense.contains(&(i as u64)) && (i + 1) % step == 0).collect(),
            path: "mlp",
            router: "gate",
            experts_path: "switch_mlp",
            bias: false,
            act: MoeAct::Silu,
        });
        Ok(())
    }

    fn sanitize(&self, w: &mut Weights, cfg: &ModelConfig) -> Result<()> {
        if cfg.tie_word_embeddings {
            w.take_optional("lm_head.weight");
        }
        let Some(moe) = &cfg.moe else { return Ok(()) };
        for l in 0..cfg.num_layers {
            let p = format!("model.layers.{l}.mlp");
            for n in ["gate_proj", "up_proj", "down_proj"] {
                w.stack_experts(&format!("{p}.experts"), n, moe.experts, &format!("{p}.switch_mlp.{n}"))?;
            }
        }
        Ok(())
    }

    fn build(&self, w: &mut Weights, cfg: &ModelConfig) -> Result<Box<dyn Network>> {
        super::llama::network(w, cfg)
    }
}
