//! `gomlx lora` end to end (the command itself): JSONL data → trained adapters →
//! fused model, on llama_tied with the character tokenizer. Flag parsing has its
//! unit test in src/cli/lora.rs.

use gomlx::mlx::Dtype;
use gomlx::models::adapters;
use gomlx::models::{LoadOptions, Logits, Model};
use gomlx::train::{run, Control};
use std::path::{Path, PathBuf};

fn fixture(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(p)
}

/// llama_tied's weights and config with the character tokenizer beside them.
fn model_with_tokenizer(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("models/llama_tied").join(f), dir.join(f)).unwrap();
    }
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixture("lora/tokenizer").join(f), dir.join(f)).unwrap();
    }
}

/// Runs `gomlx lora ARGS`; panics with its stderr unless it succeeds.
fn lora_command(args: &[String]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gomlx")).arg("lora").args(args).output().unwrap();
    assert!(out.status.success(), "gomlx lora failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// `gomlx lora ARGS` fails with a usage error (exit 2, one line).
fn lora_usage_error(args: &[&str]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gomlx")).arg("lora").args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

fn data_dir(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut train = String::new();
    for i in 0..12 {
        let (p, c) = (format!("count {i}"), format!("{} {} {}", i + 1, i + 2, i + 3));
        train.push_str(&serde_json::json!({"prompt": p, "completion": c}).to_string());
        train.push('\n');
    }
    std::fs::write(dir.join("train.jsonl"), train).unwrap();
    std::fs::write(
        dir.join("valid.jsonl"),
        r#"{"messages": [{"role": "user", "content": "count 3"}, {"role": "assistant", "content": "4 5 6"}]}"#.to_string() + "\n",
    )
    .unwrap();
}

#[test]
fn lora_command_trains_saves_and_fuses() {
    let root = std::env::temp_dir().join(format!("gomlx-lora-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (model, data, ad, fused) = (root.join("model"), root.join("data"), root.join("adapters"), root.join("fused"));
    model_with_tokenizer(&model);
    data_dir(&data);
    let args: Vec<String> = [
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--iters",
        "12",
        "--batch-size",
        "4",
        "--lr",
        "1e-2",
        "--warmup",
        "2",
        "--cosine",
        "--rank",
        "4",
        "--alpha",
        "16",
        "--targets",
        "q_proj,v_proj,down_proj",
        "--mask-prompt",
        "--grad-checkpoint",
        "--grad-clip",
        "1.0",
        "--val-every",
        "6",
        "--adapter-path",
        ad.to_str().unwrap(),
        "--fuse",
        fused.to_str().unwrap(),
        "--seed",
        "3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    lora_command(&args);

    let cfg = adapters::read_config(&ad).unwrap();
    assert_eq!((cfg.rank, cfg.scale), (4, 4.0));
    assert_eq!(cfg.targets, vec!["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"]);
    // Adapted model and fused model agree.
    let load = |d: &Path| Model::load(d, &LoadOptions { dtype: Some(Dtype::F32), dequantize: Some(false), ..Default::default() }).unwrap();
    let mut adapted = load(&model);
    adapters::load_adapters(&mut adapted, &ad, None).unwrap();
    let fused_model = load(&fused);
    assert!(fused.join("tokenizer.json").is_file());
    let toks = gomlx::mlx::Array::from_slice(&[1i32, 40, 50, 60, 70], &[1, 5]).unwrap();
    let run_model = |m: &Model| m.forward(&toks, &mut m.new_caches(), None, Logits::All).unwrap().to_vec::<f32>().unwrap();
    let (a, b) = (run_model(&adapted), run_model(&fused_model));
    let base = run_model(&load(&model));
    let diff = |x: &[f32], y: &[f32]| x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
    assert!(diff(&a, &b) < 1e-4, "fused vs adapted {}", diff(&a, &b));
    assert!(diff(&a, &base) > 1e-3, "training changed nothing");

    // The run stops when the callback says so, and still saves.
    let mut o = run::RunOptions::new(&model, &data);
    o.train.iters = 12;
    o.train.lora.rank = 4;
    o.train.adapter_path = Some(root.join("stopped"));
    let report = run::run(&o, |p| if p.step == 2 { Control::Stop } else { Control::Continue }).unwrap();
    assert_eq!(report.steps, 2);
    assert!(root.join("stopped/adapters.safetensors").is_file());
    // Bad arguments are errors, not panics.
    lora_usage_error(&["--model"]);
    lora_usage_error(&["--model", "m", "--data", "d", "--rank", "x"]);
    if std::env::var_os("GOMLX_LORA_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&root);
    } else {
        eprintln!("kept {}", root.display());
    }
}

#[test]
fn progress_json_writes_one_line_per_step() {
    let root = std::env::temp_dir().join(format!("gomlx-lora-json-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (model, data, ad, log) = (root.join("model"), root.join("data"), root.join("adapters"), root.join("progress.jsonl"));
    model_with_tokenizer(&model);
    data_dir(&data);
    let args: Vec<String> = [
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--iters",
        "5",
        "--batch-size",
        "4",
        "--lr",
        "1e-2",
        "--rank",
        "4",
        "--val-every",
        "0",
        "--adapter-path",
        ad.to_str().unwrap(),
        "--progress-json",
        log.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    lora_command(&args);
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&log).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.iter().map(|r| r["step"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    let col = |k: &str| rows.iter().map(|r| r[k].as_f64().unwrap()).collect::<Vec<_>>();
    let (secs, toks) = (col("seconds"), col("trained_tokens"));
    assert!(secs.windows(2).all(|w| w[1] > w[0]) && toks.windows(2).all(|w| w[1] > w[0]), "{secs:?} {toks:?}");
    for r in &rows {
        let rate = r["trained_tokens"].as_f64().unwrap() / r["seconds"].as_f64().unwrap();
        assert!((rate / r["tokens_per_second"].as_f64().unwrap() - 1.0).abs() < 1e-9, "{r}");
        assert!(r["val_loss"].is_null() && r["loss"].as_f64().unwrap() > 0.0 && r["peak_memory"].as_u64().unwrap() > 0, "{r}");
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// LoRA trains on a GGUF file (its Q4_1 blocks stay quantised) and fuses into a
/// model directory that answers as the adapted file does.
#[test]
fn lora_trains_and_fuses_on_a_gguf_file() {
    let gguf = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let root = std::env::temp_dir().join(format!("gomlx-lora-gguf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (data, ad, fused) = (root.join("data"), root.join("adapters"), root.join("fused"));
    data_dir(&data);
    let mut o = run::RunOptions::new(&gguf, &data);
    o.train.iters = 3;
    o.train.batch_size = 2;
    o.train.lora.rank = 4;
    o.train.val_every = 0;
    o.train.set_schedule(1e-3, 0, false, 0.0);
    o.train.adapter_path = Some(ad.clone());
    o.fuse_to = Some(fused.clone());
    o.fuse_mode = gomlx::models::adapters::FuseMode::Dequantize;
    let report = run::run(&o, |_| Control::Continue).unwrap();
    assert_eq!(report.steps, 3);
    assert!(report.first_loss.is_finite() && report.last_loss.is_finite(), "{report:?}");
    assert!(fused.join("tokenizer.json").is_file() && fused.join("config.json").is_file());

    let opts = LoadOptions { dtype: Some(Dtype::F32), dequantize: Some(false), ..Default::default() };
    let adapted = Model::load(&gguf, &LoadOptions { adapter: Some(ad.clone()), ..opts.clone() }).unwrap();
    let plain = Model::load(&gguf, &opts).unwrap();
    let fused_model = Model::load(&fused, &opts).unwrap();
    let toks = gomlx::mlx::Array::from_slice(&[1i32, 504, 3458, 282, 4649, 314], &[1, 6]).unwrap();
    let run_model = |m: &Model| m.forward(&toks, &mut m.new_caches(), None, Logits::All).unwrap().to_vec::<f32>().unwrap();
    let (a, b, base) = (run_model(&adapted), run_model(&fused_model), run_model(&plain));
    let diff = |x: &[f32], y: &[f32]| x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(diff(&a, &b) < 1e-3 * scale, "fused vs adapted {} (logits up to {scale})", diff(&a, &b));
    assert!(diff(&a, &base) > 1e-4 * scale, "training changed nothing");
    let _ = std::fs::remove_dir_all(&root);
}
