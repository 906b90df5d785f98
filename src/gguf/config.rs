//! GGUF metadata → a Hugging Face style `config.json` (as `serde_json::Value`).

use serde_json::{json, Map, Value as Json};

use super::reader::GgufFile;
use crate::Result;

/// The architectures gomlx maps (`general.architecture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen3,
    Gemma3,
}

impl Arch {
    pub const SUPPORTED: [&'static str; 4] = ["llama", "qwen2", "qwen3", "gemma3"];

    pub fn from_gguf(name: &str) -> Option<Self> {
        Some(match name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "gemma3" => Arch::Gemma3,
            _ => return None,
        })
    }

    /// The file's architecture, or an error listing the supported ones.
    pub fn of(file: &GgufFile) -> Result<Self> {
        let name = file.architecture()?;
        Self::from_gguf(name).ok_or_else(|| {
            file.error(format!(
                "unsupported architecture '{name}' (supported: {})",
                Self::SUPPORTED.join(", ")
            ))
        })
    }

    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
        }
    }

    /// Hugging Face `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3_text",
        }
    }

    fn hf_class(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Qwen3 => "Qwen3ForCausalLM",
            Arch::Gemma3 => "Gemma3ForCausalLM",
        }
    }
}

/// Gemma 3 values GGUF does not store, at the architecture's standard settings
/// (documented in docs/gguf.md).
pub mod gemma3_defaults {
    /// Every 6th layer is global (full) attention, the rest use the sliding window.
    pub const SLIDING_WINDOW_PATTERN: u64 = 6;
    /// Rope base of the local (sliding-window) layers.
    pub const ROPE_LOCAL_BASE_FREQ: f64 = 10000.0;
    pub const HIDDEN_ACTIVATION: &str = "gelu_pytorch_tanh";
    pub const RMS_NORM_EPS: f64 = 1e-6;
    pub const ROPE_THETA: f64 = 1_000_000.0;
    pub const SLIDING_WINDOW: u64 = 4096;
    /// Gemma 3 27B (62 layers) scales queries by 1/sqrt(hidden/heads), not 1/sqrt(head_dim)
    /// (llama.cpp has the same special case).
    pub const LAYERS_27B: u64 = 62;
}

fn f32_json(v: f64) -> Json {
    // Metadata floats are f32: print them as the shortest f32 decimal (1e-6, not 9.99e-7).
    let f = v as f32;
    serde_json::from_str(&format!("{f:?}")).unwrap_or(json!(v))
}

/// The sizes a GGUF file states, against `crate::limits` (named by their GGUF
/// keys), before any of them sizes an allocation; the rest of the config is
/// checked where config.json's is (`ModelConfig::from_value`).
fn check_sizes(file: &GgufFile, key: &dyn Fn(&str) -> String, sizes: &[(u64, &str)]) -> Result<()> {
    use crate::limits::*;
    let source = file.path().display().to_string();
    for &(v, k) in sizes {
        let max = match k {
            "embedding_length" => MAX_HIDDEN,
            "block_count" => MAX_LAYERS,
            "attention.head_count" | "attention.head_count_kv" => MAX_HEADS,
            "feed_forward_length" => MAX_INTERMEDIATE,
            "attention.key_length" => MAX_HEAD_DIM,
            _ => MAX_POSITIONS,
        };
        check(&source, &key(k), v, 1, max)?;
    }
    Ok(())
}

/// Build the Hugging Face config for a GGUF file.
pub fn hf_config(file: &GgufFile) -> Result<Json> {
    let arch = Arch::of(file)?;
    let a = arch.gguf_name();
    let key = |k: &str| format!("{a}.{k}");

    let hidden = file.require_u64(&key("embedding_length"))?;
    let layers = file.require_u64(&key("block_count"))?;
    let heads = file.require_u64(&key("attention.head_count"))?;
    let kv_heads = file.get_u64(&key("attention.head_count_kv"))?.unwrap_or(heads);
    let ffn = file.require_u64(&key("feed_forward_length"))?;
    let head_dim = match file.get_u64(&key("attention.key_length"))? {
        Some(d) => d,
        None => {
            if heads == 0 {
                return Err(file.error(format!("metadata key '{}' is 0", key("attention.head_count"))));
            }
            hidden / heads
        }
    };
    let gemma = arch == Arch::Gemma3;
    let eps = match file.get_f64(&key("attention.layer_norm_rms_epsilon"))? {
        Some(e) => e,
        None if gemma => gemma3_defaults::RMS_NORM_EPS,
        None => return Err(file.error(format!("missing required metadata key '{}'", key("attention.layer_norm_rms_epsilon")))),
    };
    let rope_theta = match file.get_f64(&key("rope.freq_base"))? {
        Some(t) => t,
        None if gemma => gemma3_defaults::ROPE_THETA,
        None => 10000.0,
    };
    let ctx = file.require_u64(&key("context_length"))?;
    check_sizes(file, &key, &[(hidden, "embedding_length"), (layers, "block_count"), (heads, "attention.head_count"), (kv_heads, "attention.head_count_kv"), (ffn, "feed_forward_length"), (head_dim, "attention.key_length"), (ctx, "context_length")])?;

    let vocab = match file.tensor("token_embd.weight") {
        Some(t) if t.dims.len() == 2 => t.dims[1],
        _ => match file.get_u64(&key("vocab_size"))? {
            Some(v) => v,
            None => file.require_str_array("tokenizer.ggml.tokens")?.len() as u64,
        },
    };
    let tied = file.tensor("output.weight").is_none();
    crate::limits::check(&file.path().display().to_string(), "the vocabulary size", vocab, 1, crate::limits::MAX_VOCAB)?;

    let mut c = Map::new();
    c.insert("model_type".into(), json!(arch.model_type()));
    c.insert("architectures".into(), json!([arch.hf_class()]));
    c.insert("hidden_size".into(), json!(hidden));
    c.insert("num_hidden_layers".into(), json!(layers));
    c.insert("num_attention_heads".into(), json!(heads));
    c.insert("num_key_value_heads".into(), json!(kv_heads));
    c.insert("head_dim".into(), json!(head_dim));
    c.insert("intermediate_size".into(), json!(ffn));
    c.insert("rms_norm_eps".into(), f32_json(eps));
    c.insert("rope_theta".into(), f32_json(rope_theta));
    c.insert("max_position_embeddings".into(), json!(ctx));
    c.insert("vocab_size".into(), json!(vocab));
    c.insert("tie_word_embeddings".into(), json!(tied));
    for (name, k) in [
        ("bos_token_id", "tokenizer.ggml.bos_token_id"),
        ("eos_token_id", "tokenizer.ggml.eos_token_id"),
        ("pad_token_id", "tokenizer.ggml.padding_token_id"),
    ] {
        if let Some(v) = file.get_u64(k)? {
            c.insert(name.into(), json!(v));
        }
    }
    if arch != Arch::Gemma3 {
        // q/k/v biases (Qwen 2 has them; Llama and Qwen 3 usually not).
        c.insert("attention_bias".into(), json!(file.tensor("blk.0.attn_q.bias").is_some()));
    }

    // Rope scaling that GGUF records as metadata.
    if let Some(kind) = file.get_str(&key("rope.scaling.type"))? {
        let factor = file.get_f64(&key("rope.scaling.factor"))?;
        match (kind, factor) {
            ("none", _) => {}
            ("linear", Some(f)) => {
                c.insert("rope_scaling".into(), json!({"rope_type": "linear", "factor": f32_json(f)}));
            }
            ("yarn", Some(f)) => {
                let mut s = json!({"rope_type": "yarn", "factor": f32_json(f)});
                if let Some(o) = file.get_u64(&key("rope.scaling.original_context_length"))? {
                    s["original_max_position_embeddings"] = json!(o);
                }
                c.insert("rope_scaling".into(), s);
            }
            (k, _) => {
                return Err(file.error(format!("unsupported rope scaling '{k}' in '{}'", key("rope.scaling.type"))))
            }
        }
    }

    if gemma {
        use gemma3_defaults as d;
        let window = file.get_u64(&key("attention.sliding_window"))?.unwrap_or(d::SLIDING_WINDOW);
        c.insert("sliding_window".into(), json!(window));
        c.insert("sliding_window_pattern".into(), json!(d::SLIDING_WINDOW_PATTERN));
        c.insert("rope_local_base_freq".into(), f32_json(d::ROPE_LOCAL_BASE_FREQ));
        let scalar = match file.get_f64(&key("attention.query_pre_attn_scalar"))? {
            Some(s) if s.is_finite() && s > 0.0 => json!(s as u64),
            Some(s) => return Err(file.error(format!("metadata key '{}' is {s}, must be a positive number", key("attention.query_pre_attn_scalar")))),
            None if layers == d::LAYERS_27B => json!(hidden / heads),
            None => json!(head_dim),
        };
        c.insert("query_pre_attn_scalar".into(), scalar);
        if let Some(s) = file.get_f64(&key("final_logit_softcapping"))? {
            c.insert("final_logit_softcapping".into(), f32_json(s));
        }
        if let Some(s) = file.get_f64(&key("attn_logit_softcapping"))? {
            c.insert("attn_logit_softcapping".into(), f32_json(s));
        }
        c.insert("hidden_activation".into(), json!(d::HIDDEN_ACTIVATION));
    } else {
        c.insert("hidden_act".into(), json!("silu"));
    }
    Ok(Json::Object(c))
}
