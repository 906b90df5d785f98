//! `gomlx info` and `gomlx discover`.

use super::{load_engine, out, CliResult, EngineArgs, ModelArgs};
use gomlx::mlx::{self, Array};
use serde_json::{json, Value};
use std::path::PathBuf;

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
    let margs = ModelArgs {
        model,
        engine: EngineArgs { device: a.device, dtype: a.dtype, context_length: None, weights: a.weights, adapter_path: None, replicas: None, tune: Vec::new() },
    };
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

pub fn run_discover(a: DiscoverArgs) -> CliResult {
    let found: Vec<Value> = gomlx::models::discover(&a.dir)?
        .into_iter()
        .map(|m| {
            let mut v = json!({"path": m.path, "format": m.format, "architecture": m.architecture, "supported": m.supported});
            if m.format == "gguf" {
                v["tensor_types"] = json!(m.tensor_types);
                v["size_bytes"] = json!(m.size_bytes);
            } else {
                v["quant_bits"] = json!(m.quant_bits);
                v["quant_group_size"] = json!(m.quant_group_size);
            }
            v
        })
        .collect();
    out(&format!("{}\n", serde_json::to_string_pretty(&Value::Array(found)).unwrap()))
}
