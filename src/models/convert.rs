//! GGUF file → a Hugging Face style directory that gomlx and mlx-lm both load
//! (`gomlx convert`, `gm_convert`):
//!
//! - `config.json`: `gguf::hf_config` plus `torch_dtype`, the eos ids and, when
//!   quantised, mlx-lm's `"quantization": {"group_size", "bits"}` (with
//!   per-module entries where modules differ: `{"group_size", "bits"}` or `false`).
//! - `model.safetensors`: each tensor decoded from its GGUF block layout (llama.cpp's
//!   conventions undone), then dequantised (`Mode::Dequantize`), re-quantised with
//!   MLX affine quantisation as `mlx_lm.convert -q` does (`Mode::Quantize`: 2-D
//!   Linear/embedding weights whose last axis divides by the group), or kept bit for
//!   bit where the GGUF blocks are MLX-representable (`Mode::Keep`: Q4_0/1, Q4_K,
//!   Q5_0/1, Q5_K, Q8_0), other tensors and scales/biases in the plan's dtype.
//! - `tokenizer.json` (`GgufTokenizer::json`) and `tokenizer_config.json`
//!   (bos/eos/pad/unk tokens, add_bos_token/add_eos_token, chat_template).

use super::gguf::{GgufModel, GgufTokenizer, TensorData};
use crate::mlx::{self, io, Array, Dtype};
use crate::{Error, Result};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// What happens to the tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Dequantize,
    Quantize { bits: i32, group: i32 },
    Keep,
}

/// A conversion: what happens to the tensors and the dtype of float tensors
/// and of scales/biases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub mode: Mode,
    pub dtype: Dtype,
}

impl Plan {
    /// `mode` with the default dtype: bf16 when dequantising; f32 when quantised,
    /// since MLX's CPU quantized matmul in bf16 is ~7× slower and accumulates
    /// visibly worse (a bf16 8-bit SmolLM2 no longer answers "Paris").
    pub fn new(mode: Mode, dtype: Option<Dtype>) -> Plan {
        let default = if mode == Mode::Dequantize { Dtype::BF16 } else { Dtype::F32 };
        Plan { mode, dtype: dtype.unwrap_or(default) }
    }
}

/// Is `name` the weight of a Linear or Embedding module (what mlx-lm quantises)?
fn quantisable(name: &str, shape: &[usize]) -> bool {
    shape.len() == 2 && name.ends_with(".weight") && (name.ends_with("_proj.weight") || name == "model.embed_tokens.weight" || name == "lm_head.weight")
}

struct Out {
    tensors: BTreeMap<String, Array>,
    /// Per-module quantisation (None: not quantised) of Linear/Embedding modules.
    quant: BTreeMap<String, Option<(i32, i32)>>,
}

fn convert_tensor(name: &str, data: TensorData, plan: Plan, o: &mut Out) -> Result<()> {
    let shape: Vec<usize> = data.shape().to_vec();
    let dims: Vec<i32> = shape.iter().map(|&d| d as i32).collect();
    let module = name.strip_suffix(".weight").unwrap_or(name).to_string();
    let linear = quantisable(name, &shape);
    // The tensor as float (f32) or as affine parts.
    let (float, affine) = match data {
        TensorData::Float { values, .. } => (Some(Array::from_slice(&values, &dims)?), None),
        TensorData::Affine { bits, group_size, weights, scales, biases, .. } => {
            let (rows, cols) = (dims[0], dims[1]);
            let groups = cols / group_size as i32;
            let w = Array::from_slice(&weights, &[rows, cols * bits as i32 / 32])?;
            let s = Array::from_slice(&scales, &[rows, groups])?;
            let b = Array::from_slice(&biases, &[rows, groups])?;
            (None, Some((w, s, b, group_size as i32, bits as i32)))
        }
    };
    let mut put = |k: String, a: Array| -> Result<()> {
        a.eval()?;
        o.tensors.insert(k, a);
        Ok(())
    };
    match (plan.mode, affine) {
        (Mode::Keep, Some((w, s, b, g, bits))) => {
            put(name.to_string(), w)?;
            put(format!("{module}.scales"), s.astype(plan.dtype)?)?;
            put(format!("{module}.biases"), b.astype(plan.dtype)?)?;
            o.quant.insert(module, Some((g, bits)));
            Ok(())
        }
        (_, Some((w, s, b, g, bits))) => {
            let f = mlx::dequantize(&w, &s, &b, g, bits, Some(Dtype::F32))?;
            finish_float(name, &module, linear, f, plan, &mut put, &mut o.quant)
        }
        (_, None) => finish_float(name, &module, linear, float.expect("float tensor"), plan, &mut put, &mut o.quant),
    }
}

fn finish_float(
    name: &str,
    module: &str,
    linear: bool,
    f: Array,
    plan: Plan,
    put: &mut impl FnMut(String, Array) -> Result<()>,
    quant: &mut BTreeMap<String, Option<(i32, i32)>>,
) -> Result<()> {
    if let Mode::Quantize { bits, group } = plan.mode {
        if linear && f.dim(-1) % group == 0 {
            // Quantise from the dtype the checkpoint holds (as mlx_lm.convert does).
            let (w, s, b) = mlx::quantize(&f.astype(plan.dtype)?, group, bits)?;
            put(name.to_string(), w)?;
            put(format!("{module}.scales"), s)?;
            put(format!("{module}.biases"), b)?;
            quant.insert(module.to_string(), Some((group, bits)));
            return Ok(());
        }
    }
    if linear {
        quant.insert(module.to_string(), None);
    }
    put(name.to_string(), f.astype(plan.dtype)?)
}

/// mlx-lm's `quantization` entry: the most common setting as the default, and
/// per-module entries for every module that differs from it.
fn quantization_json(quant: &BTreeMap<String, Option<(i32, i32)>>) -> Option<Value> {
    let mut counts: BTreeMap<(i32, i32), usize> = BTreeMap::new();
    for q in quant.values().flatten() {
        *counts.entry(*q).or_default() += 1;
    }
    let (&(group, bits), _) = counts.iter().max_by_key(|(_, n)| **n)?;
    let mut m = Map::new();
    m.insert("group_size".into(), json!(group));
    m.insert("bits".into(), json!(bits));
    for (module, q) in quant {
        match q {
            Some((g, b)) if (*g, *b) == (group, bits) => {}
            Some((g, b)) => {
                m.insert(module.clone(), json!({"group_size": g, "bits": b}));
            }
            None => {
                m.insert(module.clone(), json!(false));
            }
        }
    }
    Some(Value::Object(m))
}

fn token_json(tok: &GgufTokenizer, id: Option<u32>) -> Value {
    id.and_then(|i| tok.tokenizer.id_to_token(i)).map_or(Value::Null, Value::from)
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))
}

/// What a conversion wrote.
pub struct Converted {
    pub tensors: usize,
    pub bytes: u64,
    pub seconds: f64,
}

/// Converts `gguf` into the directory `outdir` (created; its files replaced).
/// `progress(done, total)` is called after each tensor and may stop the
/// conversion by returning false (an error then; files may be half written).
pub fn convert(gguf: &Path, outdir: &Path, plan: Plan, progress: &mut dyn FnMut(usize, usize) -> bool) -> Result<Converted> {
    let start = Instant::now();
    if let Mode::Quantize { bits, group } = plan.mode {
        if !matches!(bits, 2 | 3 | 4 | 5 | 6 | 8) || !matches!(group, 32 | 64 | 128) {
            return Err(Error::InvalidArgument(format!(
                "quantisation bits {bits} / group {group}: bits must be 2, 3, 4, 5, 6 or 8 and the group 32, 64 or 128"
            )));
        }
    }
    if !plan.dtype.is_float() {
        return Err(Error::InvalidArgument(format!("the converted dtype must be a float type, not {}", plan.dtype)));
    }
    if !gguf.is_file() {
        return Err(Error::InvalidArgument(format!("{}: no such file", gguf.display())));
    }
    if outdir.exists() && !outdir.is_dir() {
        return Err(Error::InvalidArgument(format!("{}: exists and is not a directory", outdir.display())));
    }
    let g = GgufModel::open(gguf)?;
    let tok = GgufTokenizer::from_gguf(&g.file)?;
    std::fs::create_dir_all(outdir).map_err(|e| Error::io(outdir, e))?;
    let names = g.names()?;
    let mut o = Out { tensors: BTreeMap::new(), quant: BTreeMap::new() };
    for (i, (name, info)) in names.iter().enumerate() {
        let data = g.load(info)?;
        convert_tensor(name, data, plan, &mut o)?;
        if !progress(i + 1, names.len()) {
            return Err(Error::InvalidArgument(format!("converting {}: stopped by the progress callback", gguf.display())));
        }
    }

    let mut config = g.config.clone();
    config["torch_dtype"] = json!(plan.dtype.name());
    if tok.eos.len() > 1 {
        config["eos_token_id"] = json!(tok.eos);
    } else if let Some(&e) = tok.eos.first() {
        config["eos_token_id"] = json!(e);
    }
    if let Some(q) = quantization_json(&o.quant) {
        config["quantization"] = q;
    }
    write_json(&outdir.join("config.json"), &config)?;

    let meta: BTreeMap<String, String> = [("format".to_string(), "mlx".to_string())].into();
    let st = outdir.join("model.safetensors");
    io::save_safetensors(&st, &o.tensors, &meta)?;
    // A previous conversion's shards would be read too.
    let _ = std::fs::remove_file(outdir.join("model.safetensors.index.json"));

    write_json(&outdir.join("tokenizer.json"), &tok.json)?;
    let mut tc = Map::new();
    tc.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
    tc.insert("bos_token".into(), token_json(&tok, tok.bos));
    tc.insert("eos_token".into(), token_json(&tok, tok.eos.first().copied()));
    tc.insert("pad_token".into(), token_json(&tok, tok.pad));
    tc.insert("unk_token".into(), token_json(&tok, tok.unk));
    tc.insert("add_bos_token".into(), json!(tok.add_bos));
    tc.insert("add_eos_token".into(), json!(tok.add_eos));
    tc.insert("clean_up_tokenization_spaces".into(), json!(false));
    if let Some(ctx) = config.get("max_position_embeddings") {
        tc.insert("model_max_length".into(), ctx.clone());
    }
    if let Some(t) = &tok.chat_template {
        tc.insert("chat_template".into(), json!(t));
    }
    write_json(&outdir.join("tokenizer_config.json"), &Value::Object(tc))?;
    let bytes = std::fs::metadata(&st).map(|m| m.len()).unwrap_or(0);
    Ok(Converted { tensors: o.tensors.len(), bytes, seconds: start.elapsed().as_secs_f64() })
}
