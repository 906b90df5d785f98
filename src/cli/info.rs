//! `gomlx info` and `gomlx discover`.

use super::{load_engine, out, runtime, CliResult, ModelArgs};
use gomlx::mlx::{self, Array};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// Model to describe (directory or .gguf); without it, the MLX build is described.
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub device: Option<super::DeviceArg>,
    #[arg(long, value_enum)]
    pub dtype: Option<super::DtypeArg>,
    /// CPU: widen the weights at load or keep them as stored (as for `generate`).
    #[arg(long, value_enum)]
    pub weights: Option<super::WeightsArg>,
    /// JSON also without a model.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct DiscoverArgs {
    /// Directory to search (default: the current directory).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
}

/// softmax([1, 2, 3]) · [1, 2, 3], through the whole stack.
fn check_value() -> gomlx::Result<f32> {
    let x = Array::from_slice(&[1.0f32, 2.0, 3.0], &[3])?;
    x.softmax(&[0])?.multiply(&x)?.sum(&[], false)?.item::<f32>()
}

pub fn run_info(a: InfoArgs) -> CliResult {
    let Some(model) = a.model else {
        let device = mlx::stream::thread_device();
        let v = check_value()?;
        if a.json {
            let j = json!({"gomlx": env!("CARGO_PKG_VERSION"), "mlx": mlx::version(), "device": device.name(), "blas": mlx::blas::info().summary(), "check": {"softmax([1,2,3])·[1,2,3]": v}});
            return out(&format!("{}\n", serde_json::to_string_pretty(&j).unwrap()));
        }
        return out(&format!(
            "gomlx {}\nmlx {}\ndevice {}\nblas {}\nsoftmax([1,2,3])·[1,2,3] = {v:.6}\n",
            env!("CARGO_PKG_VERSION"),
            mlx::version(),
            device.name(),
            mlx::blas::info().summary()
        ));
    };
    let margs = ModelArgs { model, device: a.device, dtype: a.dtype, context_length: None, weights: a.weights, adapter_path: None };
    let (engine, load_s) = load_engine(&margs)?;
    let tokenizer = engine.tokenizer().map(|t| {
        json!({
            "vocab_size": t.vocab_size(),
            "bos": t.bos_id().and_then(|id| t.id_to_token(id)),
            "eos": t.eos_ids().iter().filter_map(|&id| t.id_to_token(id)).collect::<Vec<_>>(),
            "chat_template": t.chat_template().is_some(),
        })
    });
    let format = if margs.model.is_file() { "gguf" } else { "safetensors" };
    let j = json!({
        "path": margs.model,
        "format": format,
        "gomlx": env!("CARGO_PKG_VERSION"),
        "mlx": mlx::version(),
        "device": engine.device().name(),
        "load_s": load_s,
        "model": engine.info(),
        "tokenizer": tokenizer,
        "peak_memory_bytes": mlx::memory::peak()?,
    });
    out(&format!("{}\n", serde_json::to_string_pretty(&j).unwrap()))
}

fn gguf_entry(path: &Path) -> Option<Value> {
    let f = gomlx::gguf::GgufFile::open(path).ok()?;
    let arch = f.architecture().ok()?.to_string();
    // The tensor types by count, e.g. {"q4_1": 211, "f32": 61}.
    let mut types: BTreeMap<String, usize> = BTreeMap::new();
    for t in &f.tensors {
        *types.entry(t.ty.name().to_lowercase()).or_default() += 1;
    }
    let supported = gomlx::gguf::Arch::from_gguf(&arch).is_some();
    Some(json!({
        "path": path,
        "format": "gguf",
        "architecture": arch,
        "supported": supported,
        "tensor_types": types,
        "size_bytes": std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
    }))
}

fn walk_gguf(dir: &Path, depth: usize, found: &mut Vec<Value>, seen: &mut std::collections::HashSet<PathBuf>) {
    // Each directory once (by its canonical path): symlink loops end.
    let Ok(canonical) = std::fs::canonicalize(dir) else { return };
    if !seen.insert(canonical) {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        let Ok(meta) = std::fs::metadata(&p) else { continue };
        if meta.is_dir() {
            if depth < 6 && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.') && depth > 0) {
                walk_gguf(&p, depth + 1, found, seen);
            }
        } else if meta.is_file() && p.extension().is_some_and(|e| e == "gguf") {
            // Regular files only: a FIFO named x.gguf is skipped, not opened.
            if let Some(e) = gguf_entry(&p) {
                found.push(e);
            }
        }
    }
}

pub fn run_discover(a: DiscoverArgs) -> CliResult {
    if a.dir.as_os_str().is_empty() {
        return Err(runtime("the directory to search is empty (pass a path)"));
    }
    if !a.dir.is_dir() {
        return Err(runtime(format!("{}: not a directory", a.dir.display())));
    }
    let mut found: Vec<Value> = gomlx::models::discover(&a.dir)?
        .into_iter()
        .map(|m| {
            json!({
                "path": m.path,
                "format": "safetensors",
                "architecture": m.architecture,
                "supported": true,
                "quant_bits": m.quant_bits,
                "quant_group_size": m.quant_group_size,
            })
        })
        .collect();
    walk_gguf(&a.dir, 0, &mut found, &mut Default::default());
    out(&format!("{}\n", serde_json::to_string_pretty(&Value::Array(found)).unwrap()))
}
