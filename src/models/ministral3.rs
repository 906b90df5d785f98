//! Ministral 3 (`ministral3`, and the text model of a multimodal `mistral3`
//! checkpoint): the Llama network with YaRN rope and Llama 4's query
//! temperature, both read from `rope_parameters` (`llama_4_scaling_beta`,
//! `original_max_position_embeddings`). Mistral Small 3.x (`mistral3` with a
//! `mistral` text model) loads through the Llama family.

use super::config::{AttnTemperature, ModelConfig};
use super::family::{Defaults, Family, Network};
use super::weights::Weights;
use crate::{Error, Result};
use serde_json::{Map, Value};

pub struct Ministral3;

impl Family for Ministral3 {
    fn name(&self) -> &'static str {
        "ministral3"
    }

    fn model_types(&self) -> &'static [&'static str] {
        &["ministral3", "mistral3"]
    }

    fn defaults(&self, _model_type: &str) -> Defaults {
        Defaults { max_position_embeddings: 262_144, tie_word_embeddings: true, rope_theta: 1_000_000.0, sliding_window: true, ..Defaults::LLAMA }
    }

    fn configure(&self, config: &Map<String, Value>, cfg: &mut ModelConfig) -> Result<()> {
        let params = ["rope_parameters", "rope_scaling"].iter().find_map(|k| config.get(*k).and_then(Value::as_object));
        let Some(beta) = params.and_then(|p| p.get("llama_4_scaling_beta")).filter(|v| !v.is_null()) else { return Ok(()) };
        let beta = beta.as_f64().ok_or_else(|| Error::Model(format!("config.json: llama_4_scaling_beta must be a number, found {beta}")))? as f32;
        let original = params
            .and_then(|p| p.get("original_max_position_embeddings"))
            .and_then(Value::as_f64)
            .filter(|&o| o > 0.0)
            .ok_or_else(|| Error::Model("config.json: llama_4_scaling_beta without a positive original_max_position_embeddings".into()))?;
        if !beta.is_finite() {
            return Err(Error::Model(format!("config.json: llama_4_scaling_beta is {beta}")));
        }
        cfg.attn_temperature = Some(AttnTemperature { beta, original_max_position: original as f32 });
        Ok(())
    }

    fn sanitize(&self, w: &mut Weights, cfg: &ModelConfig) -> Result<()> {
        if cfg.tie_word_embeddings {
            w.take_optional("lm_head.weight");
        }
        Ok(())
    }

    fn build(&self, w: &mut Weights, cfg: &ModelConfig) -> Result<Box<dyn Network>> {
        super::llama::network(w, cfg)
    }
}
