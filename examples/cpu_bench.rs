//! One gomlx measurement for the CPU benchmark (scripts/cpu-bench/run): loads a
//! model on the CPU, runs a warm-up, then a fixed prompt of `--prompt` token ids
//! and `--gen` greedy tokens (end-of-sequence ignored), `--runs` times, and
//! prints one JSON line with the best prefill and decode rates.
//!
//!     cargo run --release --example cpu_bench -- MODEL [--prompt 128] [--gen 32] [--runs 2] [--dtype f32|bf16|f16]
//!
//! Prefill tok/s = prompt tokens / time to the first token (the engine's
//! `prefill_tokens_per_s`); decode tok/s = (generated - 1) / time after it.
//! `GOMLX_CPU_DEQUANTIZE=0|1` picks quantized_matmul or dequantise-at-load.

use gomlx::engine::{Engine, EngineOptions, GenerateOptions};
use gomlx::mlx::{blas, DeviceKind, Dtype};
use std::path::PathBuf;

/// The prompt both engines get: the same deterministic ids (scripts/cpu-bench/mlx_lm_bench.py).
fn prompt(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 13) % (vocab.min(32000) - 100) + 100) as u32).collect()
}

fn main() -> gomlx::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut model = None;
    let (mut n_prompt, mut n_gen, mut runs, mut dtype) = (128usize, 32usize, 2usize, None);
    let mut i = 0;
    while i < args.len() {
        let val = || args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--prompt" => n_prompt = val().parse().expect("--prompt N"),
            "--gen" => n_gen = val().parse().expect("--gen N"),
            "--runs" => runs = val().parse().expect("--runs N"),
            "--dtype" => {
                dtype = Some(match val().as_str() {
                    "f32" | "float32" => Dtype::F32,
                    "bf16" | "bfloat16" => Dtype::BF16,
                    "f16" | "float16" => Dtype::F16,
                    other => panic!("--dtype {other}"),
                })
            }
            path => {
                model = Some(PathBuf::from(path));
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    let model = model.expect("usage: cpu_bench MODEL [--prompt N] [--gen N] [--runs N] [--dtype f32|bf16]");
    let engine = Engine::load(&model, &EngineOptions { device: Some(DeviceKind::Cpu), dtype, ..Default::default() })?;
    let info = engine.info().clone();
    let opts = |n| GenerateOptions { max_tokens: n, ignore_eos: true, ..Default::default() };
    // Warm-up: first-use allocations and kernel set-up.
    engine.generate_tokens(prompt(16, info.vocab_size), &opts(4))?.collect_text()?;
    let (mut prefill, mut decode, mut first) = (0f64, 0f64, Vec::new());
    for _ in 0..runs {
        let mut g = engine.generate_tokens(prompt(n_prompt, info.vocab_size), &opts(n_gen))?;
        let (_, ids) = g.collect_text()?;
        assert_eq!(ids.len(), n_gen);
        first = ids[..ids.len().min(8)].to_vec();
        let m = g.metrics().expect("metrics after the end");
        prefill = prefill.max(m.prefill_tokens_per_s);
        decode = decode.max(m.decode_tokens_per_s);
    }
    let out = serde_json::json!({
        "engine": "gomlx",
        "model": model.display().to_string(),
        "dtype": info.dtype,
        "quant_bits": info.quant_bits,
        "weight_bytes": info.weight_bytes,
        "prompt": n_prompt,
        "gen": n_gen,
        "prefill_tps": prefill,
        "decode_tps": decode,
        "first_ids": first,
        "blas": blas::library(),
        "blas_threads": blas::threads(),
    });
    println!("{out}");
    Ok(())
}
