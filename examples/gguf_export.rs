//! Writes a GGUF model as a Hugging Face directory (config.json +
//! model.safetensors, every matrix dequantised, `--dtype` bf16 by default), so
//! that mlx-lm and gomlx can run the same real weights (scripts/cpu-bench/run).
//!
//!     cargo run --release --example gguf_export -- MODEL.gguf OUT_DIR [--dtype bf16|f32]

use gomlx::mlx::{io, Dtype};
use gomlx::models::gguf::{self, GgufModel, Reader};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn main() -> gomlx::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(src), Some(out)) = (args.first(), args.get(1)) else {
        eprintln!("usage: gguf_export MODEL.gguf OUT_DIR [--dtype bf16|f32]");
        std::process::exit(2);
    };
    let dtype = match args.iter().position(|a| a == "--dtype").and_then(|i| args.get(i + 1)).map(String::as_str) {
        Some("f32") => Dtype::F32,
        _ => Dtype::BF16,
    };
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out).map_err(|e| gomlx::Error::io(&out, e))?;
    let g = GgufModel::open(src)?;
    let mut hf = gguf::hf_config(&g.file)?;
    let (config, mut weights) = gguf::config_and_weights(&g, Reader::Gomlx)?;
    let quant = config.quantization.clone();
    weights.dequantize_all(&|m| quant.for_module(m), dtype)?;
    weights.cast_floats(dtype, true)?;
    let names: Vec<String> = weights.remaining().iter().map(|s| s.to_string()).collect();
    let mut tensors = BTreeMap::new();
    for n in names {
        tensors.insert(n.clone(), weights.take(&n)?);
    }
    if let Some(obj) = hf.as_object_mut() {
        obj.remove("quantization");
        obj.remove("quantization_config");
        obj.insert("torch_dtype".into(), dtype.name().into());
    }
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    io::save_safetensors(&out.join("model.safetensors"), &tensors, &meta)?;
    std::fs::write(out.join("config.json"), serde_json::to_string_pretty(&hf).unwrap()).map_err(|e| gomlx::Error::io(&out, e))?;
    eprintln!("{}: {} tensors, {dtype:?}", out.display(), tensors.len());
    Ok(())
}
