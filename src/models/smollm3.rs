//! SmolLM3 (`smollm3`): the Llama network with some layers that apply no
//! positional encoding at all (NoPE). `no_rope_layers[i]` is 1 where layer i
//! uses RoPE, 0 where it does not; without the list every
//! `no_rope_layer_interval`-th layer (default 4) goes without.

use super::config::ModelConfig;
use super::family::{Defaults, Family, Network};
use super::weights::Weights;
use crate::{Error, Result};
use serde_json::{Map, Value};

pub struct SmolLm3;

impl Family for SmolLm3 {
    fn name(&self) -> &'static str {
        "smollm3"
    }

    fn model_types(&self) -> &'static [&'static str] {
        &["smollm3"]
    }

    fn defaults(&self, _model_type: &str) -> Defaults {
        Defaults { max_position_embeddings: 32768, tie_word_embeddings: true, rope_theta: 2_000_000.0, ..Defaults::LLAMA }
    }

    fn configure(&self, config: &Map<String, Value>, cfg: &mut ModelConfig) -> Result<()> {
        let n = cfg.num_layers;
        let uses_rope: Vec<bool> = match config.get("no_rope_layers").filter(|v| !v.is_null()) {
            Some(Value::Array(flags)) if flags.len() == n => flags
                .iter()
                .map(|f| f.as_u64().filter(|&x| x <= 1).map(|x| x == 1).ok_or_else(|| Error::Model(format!("config.json: no_rope_layers entry {f} is not 0 or 1"))))
                .collect::<Result<_>>()?,
            Some(v) => return Err(Error::Model(format!("config.json: no_rope_layers must be a list of {n} 0/1 flags, found {v}"))),
            None => {
                let interval = config.get("no_rope_layer_interval").and_then(Value::as_u64).unwrap_or(4).max(1) as usize;
                (0..n).map(|i| (i + 1) % interval != 0).collect()
            }
        };
        cfg.no_rope = uses_rope.iter().map(|&r| !r).collect();
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
