//! Mixtral (`mixtral`): Mistral attention over sparse SwiGLU MLPs in every
//! layer: `num_local_experts` experts of `intermediate_size`, the
//! `num_experts_per_tok` best per token weighted by a softmax over the chosen
//! ones. Per-expert checkpoint tensors (`block_sparse_moe.experts.{e}.w1/w3/w2`
//! = gate/up/down) are stacked at load into `block_sparse_moe.switch_mlp.*`,
//! the layout mlx-lm writes.

use super::config::{ModelConfig, Moe, MoeAct};
use super::family::{Defaults, Family, Network};
use super::qwen3_moe::count;
use super::weights::Weights;
use crate::{Error, Result};
use serde_json::{Map, Value};

pub struct Mixtral;

impl Family for Mixtral {
    fn name(&self) -> &'static str {
        "mixtral"
    }

    fn model_types(&self) -> &'static [&'static str] {
        &["mixtral"]
    }

    fn defaults(&self, _model_type: &str) -> Defaults {
        Defaults { max_position_embeddings: 131_072, rope_theta: 1_000_000.0, sliding_window: true, ..Defaults::LLAMA }
    }

    fn configure(&self, config: &Map<String, Value>, cfg: &mut ModelConfig) -> Result<()> {
        let experts = count(config, &["num_local_experts", "num_experts"])?;
        let top_k = count(config, &["num_experts_per_tok"])?;
        if top_k > experts {
            return Err(Error::Model(format!("config.json: num_experts_per_tok ({top_k}) exceeds num_local_experts ({experts})")));
        }
        // Softmax over the chosen experts' logits = the chosen probabilities renormalised.
        cfg.moe = Some(Moe {
            experts,
            top_k,
            intermediate_size: cfg.intermediate_size,
            norm_topk_prob: true,
            layers: vec![true; cfg.num_layers],
            path: "block_sparse_moe",
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
            let p = format!("model.layers.{l}.block_sparse_moe");
            for (from, to) in [("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj")] {
                w.stack_experts(&format!("{p}.experts"), from, moe.experts, &format!("{p}.switch_mlp.{to}"))?;
            }
        }
        Ok(())
    }

    fn build(&self, w: &mut Weights, cfg: &ModelConfig) -> Result<Box<dyn Network>> {
        super::llama::network(w, cfg)
    }
}
