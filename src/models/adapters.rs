//! Adapter files in mlx-lm's layout: `adapters.safetensors` (tensors named
//! `model.layers.{i}.{module}.lora_a` `[in, r]` and `.lora_b` `[r, out]`) and
//! `adapter_config.json` (`fine_tune_type`, `num_layers`, `lora_parameters`
//! with `rank`, `scale`, `dropout`, `keys`), so mlx-lm loads gomlx adapters
//! and gomlx loads mlx-lm's. `fuse` merges adapters into the weights and
//! writes a model directory.

use super::layers::LinearBase;
use super::lora::Lora;
use super::lora::{self, LoraConfig, ALL_TARGETS};
use crate::mlx::{self, io, Array, Dtype};
use crate::models::Model;
use crate::{Error, Result};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

pub const ADAPTER_FILE: &str = "adapters.safetensors";
/// The largest LoRA rank an adapter file may declare (real adapters: 4 to 256).
pub const MAX_RANK: i64 = 1 << 16;
pub const CONFIG_FILE: &str = "adapter_config.json";

/// The adapter configuration of a model as it stands (from its adapters).
fn current_config(model: &Model) -> Result<(LoraConfig, usize)> {
    let named = lora::adapters(model);
    let (first_name, first) = named.first().ok_or_else(|| Error::InvalidArgument("the model has no LoRA adapters".into()))?;
    let layer_of = |n: &str| n.strip_prefix("model.layers.").and_then(|r| r.split('.').next()).and_then(|i| i.parse::<usize>().ok());
    let min_layer = named.iter().filter_map(|(n, _)| layer_of(n)).min().unwrap_or(0);
    let _ = first_name;
    let mut keys: Vec<String> = Vec::new();
    for (n, _) in &named {
        let key = n.splitn(4, '.').nth(3).unwrap_or_default().to_string();
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys.sort_by_key(|k| ALL_TARGETS.iter().position(|t| t == k));
    let (a, _) = first.params();
    let cfg = LoraConfig {
        rank: first.rank(),
        scale: first.scale,
        dropout: first.dropout,
        targets: keys,
        num_layers: Some(model.config().num_layers - min_layer),
        dtype: a.dtype(),
        seed: 0,
    };
    Ok((cfg, model.config().num_layers - min_layer))
}

/// Writes `adapters.safetensors` and `adapter_config.json` into `dir`.
/// `extra` fields (e.g. training arguments) are added to the config.
pub fn save_adapters(model: &Model, dir: &Path, extra: Option<&Map<String, Value>>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let (cfg, num_layers) = current_config(model)?;
    let tensors: BTreeMap<String, Array> = lora::parameters(model).into_iter().collect();
    let refs: Vec<&Array> = tensors.values().collect();
    mlx::eval(&refs)?;
    io::save_safetensors(&dir.join(ADAPTER_FILE), &tensors, &BTreeMap::from([("format".to_string(), "mlx".to_string())]))?;
    let mut config = Map::new();
    if let Some(extra) = extra {
        config.extend(extra.clone());
    }
    config.insert("fine_tune_type".into(), json!("lora"));
    config.insert("num_layers".into(), json!(num_layers));
    config.insert("lora_parameters".into(), json!({ "rank": cfg.rank, "scale": cfg.scale, "dropout": cfg.dropout, "keys": cfg.targets }));
    let path = dir.join(CONFIG_FILE);
    let text = serde_json::to_string_pretty(&Value::Object(config)).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    std::fs::write(&path, text + "\n").map_err(|e| Error::io(&path, e))
}

/// Reads `adapter_config.json` into a `LoraConfig` (the keys mlx-lm writes).
pub fn read_config(dir: &Path) -> Result<LoraConfig> {
    let path = dir.join(CONFIG_FILE);
    let text = crate::files::read_text(&path, crate::files::MAX_TEXT_FILE)?;
    parse_config(&text, &path)
}

/// Parses the text of an `adapter_config.json` (`path` names it in errors); fuzzed (docs/fuzzing.md).
pub fn parse_config(text: &str, path: &Path) -> Result<LoraConfig> {
    let v: Value = serde_json::from_str(text).map_err(|e| Error::Model(format!("{}: invalid JSON: {e}", path.display())))?;
    let bad = |what: &str| Error::Model(format!("{}: {what}", path.display()));
    let kind = v.get("fine_tune_type").and_then(Value::as_str).unwrap_or("lora");
    if kind != "lora" {
        return Err(bad(&format!("fine_tune_type '{kind}' is not supported (only 'lora')")));
    }
    let p = v.get("lora_parameters").and_then(Value::as_object).ok_or_else(|| bad("no 'lora_parameters' object"))?;
    let rank = p.get("rank").and_then(Value::as_i64).ok_or_else(|| bad("lora_parameters.rank missing"))?;
    if !(1..=MAX_RANK).contains(&rank) {
        return Err(bad(&format!("lora_parameters.rank is {rank}, must be in 1..={MAX_RANK}")));
    }
    let rank = rank as i32;
    let scale = p.get("scale").and_then(Value::as_f64).ok_or_else(|| bad("lora_parameters.scale missing"))? as f32;
    if !scale.is_finite() {
        return Err(bad(&format!("lora_parameters.scale is {scale}, must be a finite number")));
    }
    let dropout = p.get("dropout").and_then(Value::as_f64).unwrap_or(0.0) as f32;
    if !(0.0..1.0).contains(&dropout) {
        return Err(bad(&format!("lora_parameters.dropout is {dropout}, must be in [0, 1)")));
    }
    let targets = match p.get("keys").filter(|k| !k.is_null()) {
        Some(k) => k
            .as_array()
            .ok_or_else(|| bad("lora_parameters.keys must be a list"))?
            .iter()
            .map(|s| s.as_str().map(str::to_string).ok_or_else(|| bad("lora_parameters.keys must hold strings")))
            .collect::<Result<Vec<_>>>()?,
        // mlx-lm adapts every linear layer of the block when no keys are given.
        None => ALL_TARGETS.iter().map(|s| s.to_string()).collect(),
    };
    // mlx-lm: layers[-max(num_layers, 0):], so 0 or negative means all of them.
    let num_layers = match v.get("num_layers").and_then(Value::as_i64) {
        Some(n) if n > 0 => Some(n as usize),
        _ => None,
    };
    Ok(LoraConfig { rank, scale, dropout, targets, num_layers, dtype: Dtype::F32, seed: 0 })
}

/// Attaches the adapters saved in `dir` (by gomlx or mlx-lm) to `model`,
/// replacing any it had. Every tensor must name an adapter parameter of the
/// configured modules with the right shape. Tensors keep their stored dtype
/// unless `dtype` is given.
pub fn load_adapters(model: &mut Model, dir: &Path, dtype: Option<Dtype>) -> Result<LoraConfig> {
    let cfg = read_config(dir)?;
    let file = dir.join(ADAPTER_FILE);
    check_header(&cfg, &crate::mlx::safetensors_header::read(&file)?, &file)?;
    let mut tensors = io::load_safetensors(&file)?.tensors;
    let targets = cfg.normalised_targets()?;
    let first = lora::first_layer(model, cfg.num_layers)?;
    lora::remove_lora(model);
    let result = attach_loaded(model, &cfg, &targets, first, &mut tensors, &file, dtype);
    if result.is_err() {
        lora::remove_lora(model);
    }
    result?;
    if seen_none(model) {
        return Err(Error::Model(format!("{}: no adapted modules", dir.display())));
    }
    Ok(cfg)
}

/// Checks that `dir` is an adapter directory (both files present), naming
/// what is missing; cheap, so callers run it before loading a model.
pub fn check_adapter_dir(dir: &Path) -> Result<()> {
    let what = "an adapter is a directory holding adapters.safetensors and adapter_config.json, as gomlx lora and mlx_lm.lora write";
    if !dir.exists() {
        return Err(Error::InvalidArgument(format!("adapter path {}: no such directory ({what})", dir.display())));
    }
    if !dir.is_dir() {
        return Err(Error::InvalidArgument(format!("adapter path {}: not a directory ({what})", dir.display())));
    }
    for f in [CONFIG_FILE, ADAPTER_FILE] {
        if !dir.join(f).is_file() {
            return Err(Error::InvalidArgument(format!("adapter path {}: no {f} in it ({what})", dir.display())));
        }
    }
    Ok(())
}

/// Loads the adapter in `dir` onto `model` (loaded from `model_path`) for
/// inference, keeping the adapter's stored dtype as mlx-lm does. Errors name
/// the adapter, the model and what does not fit.
pub fn apply_adapter_dir(model: &mut Model, dir: &Path, model_path: &Path) -> Result<LoraConfig> {
    check_adapter_dir(dir)?;
    // A malformed config or tensor file is the adapter's fault, not a
    // mismatch: their own errors name the file.
    let cfg = read_config(dir)?;
    let file = dir.join(ADAPTER_FILE);
    check_header(&cfg, &crate::mlx::safetensors_header::read(&file)?, &file)?;
    let context = format!("the adapter in {} does not fit the model {}: ", dir.display(), model_path.display());
    load_adapters(model, dir, None).map_err(|e| match e {
        Error::Model(m) => Error::Model(context + &m),
        Error::InvalidArgument(m) => Error::InvalidArgument(context + &m),
        other => other,
    })
}

/// What an adapter file must be whatever the model: every tensor named
/// `model.layers.{i}.{module}.lora_a` / `.lora_b` is a floating-point
/// matrix, `lora_a` `[in, rank]` and `lora_b` `[rank, out]` with the
/// config's rank, and each module has both. Checked on the header, before
/// MLX reads the tensors; which modules and layers the model has is checked
/// when they attach. Fuzzed (docs/fuzzing.md).
pub fn check_header(cfg: &LoraConfig, header: &crate::mlx::safetensors_header::Header, file: &Path) -> Result<()> {
    let bad = |msg: String| Error::Model(format!("{}: {msg}", file.display()));
    let rank = cfg.rank as u64;
    let mut parts: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
    for t in &header.tensors {
        let name = t.name.as_str();
        let Some((module, part)) = name.rsplit_once('.').filter(|(_, p)| *p == "lora_a" || *p == "lora_b") else { continue };
        if !matches!(t.dtype.as_str(), "F32" | "F16" | "BF16") {
            return Err(bad(format!("'{name}' is {}, not a floating-point tensor (F32, F16, BF16)", t.dtype)));
        }
        let ok = match (part, t.shape.as_slice()) {
            ("lora_a", [i, r]) => *r == rank && *i > 0,
            ("lora_b", [r, o]) => *r == rank && *o > 0,
            _ => false,
        };
        if !ok {
            let want = if part == "lora_a" { "[in, rank]" } else { "[rank, out]" };
            return Err(bad(format!("'{name}' has shape {:?}; {part} must be {want} with the config's rank {rank}", t.shape)));
        }
        let e = parts.entry(module).or_default();
        if part == "lora_a" {
            e.0 = true
        } else {
            e.1 = true
        }
    }
    if let Some((module, &(a, _))) = parts.iter().find(|(_, &(a, b))| !(a && b)) {
        let (has, lacks) = if a { ("lora_a", "lora_b") } else { ("lora_b", "lora_a") };
        return Err(bad(format!("missing tensor '{module}.{lacks}' (the file has '{module}.{has}')")));
    }
    Ok(())
}

fn seen_none(model: &Model) -> bool {
    lora::adapters(model).is_empty()
}

fn attach_loaded(
    model: &mut Model,
    cfg: &LoraConfig,
    targets: &[String],
    first: usize,
    tensors: &mut BTreeMap<String, Array>,
    file: &Path,
    dtype: Option<Dtype>,
) -> Result<()> {
    for i in first..model.config().num_layers {
        for (name, lin) in model.block_linears_mut(i) {
            if !targets.contains(&name) {
                continue;
            }
            let base = format!("model.layers.{i}.{name}");
            let (input, output) = lin.dims();
            let mut take = |suffix: &str, shape: [i32; 2]| -> Result<Array> {
                let key = format!("{base}.{suffix}");
                let a = tensors.remove(&key).ok_or_else(|| Error::Model(format!("{}: missing tensor '{key}'", file.display())))?;
                if a.shape() != shape {
                    return Err(Error::Model(format!("{}: '{key}' has shape {:?}, the model needs {shape:?}", file.display(), a.shape())));
                }
                match dtype {
                    Some(d) => a.astype(d),
                    None => Ok(a),
                }
            };
            let a = take("lora_a", [input, cfg.rank])?;
            let b = take("lora_b", [cfg.rank, output])?;
            mlx::eval(&[&a, &b])?;
            lin.lora = Some(Lora::new(a, b, cfg.scale, cfg.dropout)?);
        }
    }
    if let Some(extra) = tensors.keys().next() {
        return Err(Error::Model(format!("{}: '{extra}' is not an adapter parameter of this model", file.display())));
    }
    Ok(())
}

/// How `fuse` writes merged projections of a quantised model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FuseMode {
    /// Re-quantise with the module's group size and bits (mlx-lm's default).
    #[default]
    Requantize,
    /// Store merged projections dense (in the checkpoint's float dtype).
    Dequantize,
}

/// The merged tensors of every adapted projection, by checkpoint name
/// (`{module}.weight`, and `.scales`/`.biases` when re-quantised), each in
/// `float_dtype` when dense.
pub fn fused_tensors(model: &Model, mode: FuseMode, float_dtype: Dtype) -> Result<(BTreeMap<String, Array>, Vec<String>)> {
    let mut out = BTreeMap::new();
    let mut dequantised = Vec::new();
    for i in 0..model.config().num_layers {
        for (name, lin) in model.block_linears(i) {
            let Some(l) = &lin.lora else { continue };
            let path = format!("model.layers.{i}.{name}");
            let w = lin.dense_weight()?.astype(Dtype::F32)?.add(&l.delta()?)?;
            match (&lin.base, mode) {
                (LinearBase::Quantized { q, .. }, FuseMode::Requantize) => {
                    let w = w.astype(float_dtype)?;
                    let (packed, scales, biases) = mlx::quantize(&w, q.group_size, q.bits)?;
                    out.insert(format!("{path}.weight"), packed);
                    out.insert(format!("{path}.scales"), scales);
                    out.insert(format!("{path}.biases"), biases);
                }
                (LinearBase::Quantized { .. }, FuseMode::Dequantize) => {
                    out.insert(format!("{path}.weight"), w.astype(float_dtype)?);
                    dequantised.push(path);
                }
                (LinearBase::Dense { .. }, _) => {
                    out.insert(format!("{path}.weight"), w.astype(float_dtype)?);
                }
            }
        }
    }
    if out.is_empty() {
        return Err(Error::InvalidArgument("the model has no LoRA adapters to fuse".into()));
    }
    Ok((out, dequantised))
}

/// Merges the model's adapters into its weights and writes a model directory
/// at `out`: the source directory's tensors with the adapted projections
/// replaced (one `model.safetensors`), its config (with per-module
/// quantisation overrides for dequantised projections) and every other file
/// (tokenizer, chat template). A `.gguf` source is first converted with its
/// quantised blocks kept (`convert::Mode::Keep`). The fused model loads in
/// gomlx and mlx-lm.
pub fn fuse(model: &Model, source: &Path, out: &Path, mode: FuseMode) -> Result<()> {
    if source == out {
        return Err(Error::InvalidArgument("fuse must write to a new directory".into()));
    }
    if !super::is_gguf(source) {
        return fuse_dir(model, source, out, mode);
    }
    let tmp = out.with_extension(format!("gguf-{}.tmp", std::process::id()));
    let plan = super::convert::Plan::new(super::convert::Mode::Keep, Some(model.config().dtype));
    let result = super::convert::convert(source, &tmp, plan, &mut |_, _| true).and_then(|_| fuse_dir(model, &tmp, out, mode));
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn fuse_dir(model: &Model, source_dir: &Path, out: &Path, mode: FuseMode) -> Result<()> {
    let mut tensors = BTreeMap::new();
    for f in crate::models::weights::weight_files(source_dir)? {
        tensors.extend(io::load_safetensors(&f)?.tensors);
    }
    let float_dtype = tensors.iter().find(|(k, a)| k.ends_with("norm.weight") && a.dtype().is_float()).map(|(_, a)| a.dtype()).unwrap_or(Dtype::F32);
    let (fused, dequantised) = fused_tensors(model, mode, float_dtype)?;
    for (k, a) in fused {
        // Checkpoints of multimodal models prefix names; keep the source's naming.
        let key = if tensors.contains_key(&k) {
            k
        } else if let Some(found) = tensors.keys().find(|n| n.ends_with(&k[k.find('.').map_or(0, |p| p + 1)..])).cloned() {
            found
        } else {
            k
        };
        tensors.insert(key, a);
    }
    for path in &dequantised {
        tensors.remove(&format!("{path}.scales"));
        tensors.remove(&format!("{path}.biases"));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let refs: Vec<&Array> = tensors.values().collect();
    mlx::eval(&refs)?;
    io::save_safetensors(&out.join("model.safetensors"), &tensors, &BTreeMap::from([("format".to_string(), "mlx".to_string())]))?;
    // Every other file of the source directory, config.json adjusted.
    for entry in std::fs::read_dir(source_dir).map_err(|e| Error::io(source_dir, e))?.flatten() {
        let p = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !p.is_file() || name.ends_with(".safetensors") || name == "model.safetensors.index.json" {
            continue;
        }
        let dest = out.join(&name);
        if name == "config.json" && !dequantised.is_empty() {
            let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
            let mut v: Value = serde_json::from_str(&text).map_err(|e| Error::Model(format!("{}: {e}", p.display())))?;
            for key in ["quantization", "quantization_config"] {
                if let Some(q) = v.get_mut(key).and_then(Value::as_object_mut) {
                    for path in &dequantised {
                        q.insert(path.clone(), Value::Bool(false));
                    }
                }
            }
            let text = serde_json::to_string_pretty(&v).map_err(|e| Error::Model(e.to_string()))?;
            std::fs::write(&dest, text + "\n").map_err(|e| Error::io(&dest, e))?;
        } else {
            std::fs::copy(&p, &dest).map_err(|e| Error::io(&dest, e))?;
        }
    }
    Ok(())
}
