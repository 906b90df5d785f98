//! GGUF metadata → a Hugging Face style `config.json` (as `serde_json::Value`).

use serde_json::{json, Map, Value as Json};

use super::reader::GgufFile;
use crate::Result;

/// How one llama.cpp architecture (`general.architecture`) maps onto a Hugging
/// Face checkpoint; each family declares its own (`Family::gguf`).
pub struct GgufArch {
    pub name: &'static str,
    /// Hugging Face `model_type` and model class.
    pub model_type: &'static str,
    pub hf_class: &'static str,
    /// Block tensor names that differ from the common table (llama.cpp base name → module).
    pub block_names: &'static [(&'static str, &'static str)],
    /// q/k rows interleaved by llama.cpp's converter (Llama): undone at load.
    pub permuted_qk: bool,
    /// RMSNorm weights stored as `1 + w` (Gemma): 1 subtracted at load.
    pub norm_plus_one: bool,
    /// `attention_bias` from whether the file has q biases.
    pub attention_bias: bool,
    /// `rms_norm_eps` when the metadata lacks it (None: required).
    pub default_rms_norm_eps: Option<f64>,
    pub default_rope_theta: f64,
    /// Family-specific config keys from the metadata, after the common ones.
    pub config: fn(&GgufFile, &mut Map<String, Json>) -> Result<()>,
}

impl GgufArch {
    /// The architecture named `name`, among every registered family's.
    pub fn find(name: &str) -> Option<&'static GgufArch> {
        crate::models::families().iter().flat_map(|f| f.gguf()).find(|a| a.name == name)
    }

    /// Every architecture name gomlx reads.
    pub fn supported() -> Vec<&'static str> {
        crate::models::families().iter().flat_map(|f| f.gguf()).map(|a| a.name).collect()
    }

    /// The file's architecture, or an error listing the supported ones.
    pub fn of(file: &GgufFile) -> Result<&'static GgufArch> {
        let name = file.architecture()?;
        Self::find(name).ok_or_else(|| file.error(format!("unsupported architecture '{name}' (supported: {})", Self::supported().join(", "))))
    }
}

impl std::fmt::Debug for GgufArch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GgufArch({})", self.name)
    }
}

impl PartialEq for GgufArch {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

/// `hidden_act` of SwiGLU families (their `GgufArch::config`).
pub fn silu_config(_file: &GgufFile, c: &mut Map<String, Json>) -> Result<()> {
    c.insert("hidden_act".into(), json!("silu"));
    Ok(())
}

pub fn f32_json(v: f64) -> Json {
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
    let arch = GgufArch::of(file)?;
    let a = arch.name;
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
    let eps = match file.get_f64(&key("attention.layer_norm_rms_epsilon"))?.or(arch.default_rms_norm_eps) {
        Some(e) => e,
        None => return Err(file.error(format!("missing required metadata key '{}'", key("attention.layer_norm_rms_epsilon")))),
    };
    let rope_theta = file.get_f64(&key("rope.freq_base"))?.unwrap_or(arch.default_rope_theta);
    let ctx = file.require_u64(&key("context_length"))?;
    check_sizes(
        file,
        &key,
        &[
            (hidden, "embedding_length"),
            (layers, "block_count"),
            (heads, "attention.head_count"),
            (kv_heads, "attention.head_count_kv"),
            (ffn, "feed_forward_length"),
            (head_dim, "attention.key_length"),
            (ctx, "context_length"),
        ],
    )?;

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
    c.insert("model_type".into(), json!(arch.model_type));
    c.insert("architectures".into(), json!([arch.hf_class]));
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
    for (name, k) in
        [("bos_token_id", "tokenizer.ggml.bos_token_id"), ("eos_token_id", "tokenizer.ggml.eos_token_id"), ("pad_token_id", "tokenizer.ggml.padding_token_id")]
    {
        if let Some(v) = file.get_u64(k)? {
            c.insert(name.into(), json!(v));
        }
    }
    if arch.attention_bias {
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
            (k, _) => return Err(file.error(format!("unsupported rope scaling '{k}' in '{}'", key("rope.scaling.type")))),
        }
    }

    (arch.config)(file, &mut c)?;
    Ok(Json::Object(c))
}
