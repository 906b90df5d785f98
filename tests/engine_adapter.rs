//! The engine's `adapter` load option: a model loaded with an adapter that
//! mlx-lm wrote (tests/fixtures/lora, scripts/lora-oracle) gives mlx-lm's
//! logits at every position of the reference batch, through the same classify
//! path the C ABI and the bindings use; bad adapter paths and adapters that do
//! not fit the model fail the load with messages that say what is wrong.

use gomlx::engine::{ClassifyOptions, Engine, EngineOptions};
use gomlx::mlx::{io, DeviceKind};
use std::path::{Path, PathBuf};

const CASES: &[&str] = &["llama_tied", "qwen3_qknorm_q4", "gemma3_text"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model_dir(case: &str) -> PathBuf {
    root().join("tests/fixtures/models").join(case)
}

fn adapter_dir(case: &str) -> PathBuf {
    root().join("tests/fixtures/lora").join(case).join("adapter")
}

fn cpu(adapter: Option<&Path>) -> EngineOptions {
    EngineOptions { device: Some(DeviceKind::Cpu), adapter: adapter.map(Path::to_path_buf), ..Default::default() }
}

/// Every prefix of every reference row, and mlx-lm's logits after its last token.
fn prefixes_and_logits(case: &str) -> (Vec<Vec<u32>>, Vec<Vec<f32>>) {
    let r = io::load_safetensors(&root().join("tests/fixtures/lora").join(case).join("reference.safetensors")).unwrap().tensors;
    let tokens = &r["tokens"];
    let (b, w) = (tokens.dim(0) as usize, tokens.dim(1) as usize);
    let flat = tokens.to_vec::<i32>().unwrap();
    let lengths = r["lengths"].to_vec::<i32>().unwrap();
    let logits = r["logits"].to_vec::<f32>().unwrap();
    let v = r["logits"].dim(2) as usize;
    let (mut prompts, mut want) = (Vec::new(), Vec::new());
    for row in 0..b {
        for len in 1..=lengths[row] as usize {
            prompts.push(flat[row * w..row * w + len].iter().map(|&t| t as u32).collect());
            let at = (row * w + len - 1) * v;
            want.push(logits[at..at + v].to_vec());
        }
    }
    (prompts, want)
}

/// max |a - b| / max |b|
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn last_logits(engine: &Engine, prompts: &[Vec<u32>]) -> Vec<Vec<f32>> {
    let opts = ClassifyOptions { return_logits: true, ..Default::default() };
    let (res, _) = engine.classify_tokens(prompts.to_vec(), None, &opts).unwrap();
    res.into_iter().map(|r| r.logits.unwrap()).collect()
}

#[test]
fn engine_with_mlx_lm_adapter_gives_mlx_lm_logits() {
    for case in CASES {
        let (prompts, want) = prefixes_and_logits(case);
        let engine = Engine::load(&model_dir(case), &cpu(Some(&adapter_dir(case)))).unwrap();
        let got = last_logits(&engine, &prompts);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let err = rel_err(g, w);
            assert!(err < 1e-4, "{case} prompt {i} (length {}): logits relative error {err}", prompts[i].len());
        }
        engine.close();
        // The same model without the adapter is far from those logits: the option took effect.
        let plain = Engine::load(&model_dir(case), &cpu(None)).unwrap();
        let worst = last_logits(&plain, &prompts).iter().zip(&want).map(|(g, w)| rel_err(g, w)).fold(0f32, f32::max);
        assert!(worst > 1e-3, "{case}: without the adapter the logits are within {worst} of the adapted ones");
    }
}

fn load_err(model: &Path, adapter: &Path) -> String {
    match Engine::load(model, &cpu(Some(adapter))) {
        Ok(_) => panic!("loading {} with adapter {} succeeded", model.display(), adapter.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_adapter_paths_and_mismatched_adapters_are_clear_errors() {
    let tmp = std::env::temp_dir().join(format!("gomlx-engine-adapter-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let llama = model_dir("llama_tied");

    let missing = tmp.join("nope");
    let e = load_err(&llama, &missing);
    assert!(e.contains(&missing.display().to_string()) && e.contains("no such directory"), "{e}");

    let file = tmp.join("adapters.safetensors");
    std::fs::copy(adapter_dir("llama_tied").join("adapters.safetensors"), &file).unwrap();
    let e = load_err(&llama, &file);
    assert!(e.contains("not a directory"), "{e}");

    let only_config = tmp.join("only-config");
    std::fs::create_dir_all(&only_config).unwrap();
    std::fs::copy(adapter_dir("llama_tied").join("adapter_config.json"), only_config.join("adapter_config.json")).unwrap();
    let e = load_err(&llama, &only_config);
    assert!(e.contains("no adapters.safetensors"), "{e}");

    // Gemma 3's adapter (other targets, other shapes, three layers) on the two-layer llama.
    let e = load_err(&llama, &adapter_dir("gemma3_text"));
    assert!(e.contains("does not fit the model") && e.contains(&llama.display().to_string()), "{e}");
    assert!(e.contains("3 LoRA layers requested but the model has 2"), "{e}");

    // Same layer count, different shapes: the tensor and both shapes are named.
    let e = load_err(&model_dir("qwen3_qknorm"), &adapter_dir("llama_tied"));
    assert!(e.contains("does not fit the model") && e.contains("has shape"), "{e}");

    // A config that is not JSON names the file.
    let bad_json = tmp.join("bad-json");
    std::fs::create_dir_all(&bad_json).unwrap();
    std::fs::copy(adapter_dir("llama_tied").join("adapters.safetensors"), bad_json.join("adapters.safetensors")).unwrap();
    std::fs::write(bad_json.join("adapter_config.json"), "{ not json").unwrap();
    let e = load_err(&llama, &bad_json);
    assert!(e.contains(&bad_json.join("adapter_config.json").display().to_string()) && e.contains("invalid JSON"), "{e}");
    assert!(!e.contains("does not fit"), "{e}");
    let _ = std::fs::remove_dir_all(&tmp);
}
