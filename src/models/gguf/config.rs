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

    // Llama 3.1+ files keep their rope scaling as per-frequency factors (`rope_freqs.weight`).
    if let Some(t) = file.tensor("rope_freqs.weight").filter(|_| !c.contains_key("rope_scaling")) {
        let factors = super::quants::dequantize(t.ty, file.tensor_bytes(t), t.n_elements() as usize)?;
        let orig = file.get_u64(&key("rope.scaling.original_context_length"))?.unwrap_or(8192) as f64;
        if let Some(s) =
            llama3_scaling_from_factors(&factors, rope_theta, head_dim as usize, orig).map_err(|e| file.error(format!("'rope_freqs.weight': {e}")))?
        {
            c.insert("rope_scaling".into(), s);
        }
    }

    (arch.config)(file, &mut c)?;
    Ok(Json::Object(c))
}

/// Llama 3's rope factor of rotated pair `i`: 1 for short wavelengths, `factor` for long ones,
/// a smooth blend between (what llama.cpp's converter stores in `rope_freqs.weight`).
pub fn llama3_rope_factor(i: usize, theta: f64, dims: usize, factor: f64, low: f64, high: f64, orig: f64) -> f64 {
    let wavelen = 2.0 * std::f64::consts::PI * theta.powf(2.0 * i as f64 / dims as f64);
    if wavelen < orig / high {
        1.0
    } else if wavelen > orig / low {
        factor
    } else {
        let smooth = (orig / wavelen - low) / (high - low);
        1.0 / ((1.0 - smooth) / factor + smooth)
    }
}

/// The `rope_scaling` (llama3) whose factors are `factors` (one per rotated pair), or None when
/// every factor is 1. The band edges come from a line fitted through the blended factors (the
/// formula depends on `low / orig` and `high / orig` only, so `orig` is taken as given); the
/// result must reproduce every factor, or the tensor is refused.
pub fn llama3_scaling_from_factors(factors: &[f32], theta: f64, head_dim: usize, orig: f64) -> std::result::Result<Option<Json>, String> {
    if factors.len() * 2 != head_dim {
        return Err(format!("{} factors for head dimension {head_dim} (expected {})", factors.len(), head_dim / 2));
    }
    if factors.iter().any(|f| !f.is_finite() || *f <= 0.0) {
        return Err("factors must be finite and positive".into());
    }
    let factor = factors.iter().fold(0f32, |a, &b| a.max(b)) as f64;
    if (factor - 1.0).abs() < 1e-6 {
        return Ok(None);
    }
    // Blended pairs: s = (1/f - 1/factor) / (1 - 1/factor) is linear in 1/wavelength.
    let pts: Vec<(f64, f64)> = factors
        .iter()
        .enumerate()
        .filter(|(_, &f)| (f as f64) > 1.0 + 1e-6 && (f as f64) < factor * (1.0 - 1e-6))
        .map(|(i, &f)| {
            let x = 1.0 / (2.0 * std::f64::consts::PI * theta.powf(2.0 * i as f64 / head_dim as f64));
            (x, (1.0 / f as f64 - 1.0 / factor) / (1.0 - 1.0 / factor))
        })
        .collect();
    let (low, high) = if pts.len() >= 2 {
        let n = pts.len() as f64;
        let (mx, my) = (pts.iter().map(|p| p.0).sum::<f64>() / n, pts.iter().map(|p| p.1).sum::<f64>() / n);
        let a = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>() / pts.iter().map(|p| (p.0 - mx).powi(2)).sum::<f64>();
        let b = my - a * mx;
        let low = -b * orig / a;
        let round = |v: f64| (v * 1e4).round() / 1e4;
        (round(low), round(low + orig / a))
    } else {
        // Fewer than two blended pairs do not fix the band: Llama 3.1's own edges.
        (1.0, 4.0)
    };
    let ok = low > 0.0
        && high > low
        && factors.iter().enumerate().all(|(i, &f)| {
            let want = llama3_rope_factor(i, theta, head_dim, factor, low, high, orig);
            ((f as f64) - want).abs() <= 1e-3 * want
        });
    if !ok {
        return Err(format!("the factors do not follow Llama 3's rope scaling (factor {factor}, fitted band {low}..{high} of {orig})"));
    }
    Ok(Some(json!({
        "rope_type": "llama3",
        "factor": f32_json(factor),
        "low_freq_factor": f32_json(low),
        "high_freq_factor": f32_json(high),
        "original_max_position_embeddings": orig as u64,
    })))
}
