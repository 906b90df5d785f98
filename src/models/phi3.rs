//! Phi-3 and Phi-4 (`phi3`): the Llama network over checkpoints that store
//! q/k/v as one `qkv_proj` and gate/up as one `gate_up_proj`; they are split
//! into the usual projections at load (`LoadOptions::fuse_projections` joins
//! q/k/v again for inference). Partial rotary embeddings
//! (`partial_rotary_factor`) and Phi-3's `sliding_window` are config data.

use super::config::ModelConfig;
use super::family::{Defaults, Family, Network};
use super::weights::Weights;
use crate::{Error, Result};
use serde_json::{Map, Value};

pub struct Phi3;

impl Family for Phi3 {
    fn name(&self) -> &'static str {
        "phi3"
    }

    fn model_types(&self) -> &'static [&'static str] {
        &["phi3"]
    }

    fn defaults(&self, _model_type: &str) -> Defaults {
        Defaults { sliding_window: true, ..Defaults::LLAMA }
    }

    fn configure(&self, config: &Map<String, Value>, cfg: &mut ModelConfig) -> Result<()> {
        let factor = config
            .get("partial_rotary_factor")
            .or_else(|| config.get("rope_parameters").and_then(|p| p.get("partial_rotary_factor")))
            .and_then(Value::as_f64)
            .unwrap_or(1.0);
        if !(factor > 0.0 && factor <= 1.0) {
            return Err(Error::Model(format!("config.json: partial_rotary_factor {factor} must be in (0, 1]")));
        }
        let dims = (cfg.head_dim as f64 * factor) as usize;
        if dims == 0 || !dims.is_multiple_of(2) {
            return Err(Error::Model(format!("config.json: partial_rotary_factor {factor} rotates {dims} of {} dimensions (must be even and > 0)", cfg.head_dim)));
        }
        cfg.rope_dims = dims;
        Ok(())
    }

    fn sanitize(&self, w: &mut Weights, cfg: &ModelConfig) -> Result<()> {
        let (q, kv, i) = (cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim, cfg.intermediate_size);
        for l in 0..cfg.num_layers {
            let a = format!("model.layers.{l}.self_attn");
            if w.contains(&format!("{a}.qkv_proj.weight")) {
                let parts = [(format!("{a}.q_proj"), q), (format!("{a}.k_proj"), kv), (format!("{a}.v_proj"), kv)];
                w.split_rows(&format!("{a}.qkv_proj"), &parts.iter().map(|(n, r)| (n.as_str(), *r)).collect::<Vec<_>>())?;
            }
            let m = format!("model.layers.{l}.mlp");
            if w.contains(&format!("{m}.gate_up_proj.weight")) {
                let parts = [(format!("{m}.gate_proj"), i), (format!("{m}.up_proj"), i)];
                w.split_rows(&format!("{m}.gate_up_proj"), &parts.iter().map(|(n, r)| (n.as_str(), *r)).collect::<Vec<_>>())?;
            }
        }
        if cfg.tie_word_embeddings {
            w.take_optional("lm_head.weight");
        }
        Ok(())
    }

    fn build(&self, w: &mut Weights, cfg: &ModelConfig) -> Result<Box<dyn Network>> {
        super::llama::network(w, cfg)
    }
}
