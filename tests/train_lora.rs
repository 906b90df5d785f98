//! LoRA training against mlx-lm (references from scripts/lora-oracle) and
//! against mathematics: adapters mlx-lm wrote give mlx-lm's logits, first-step
//! loss and gradients equal mlx-lm's, gradients equal central finite
//! differences, checkpointed gradients equal plain ones, save → load is exact,
//! fuse gives the adapted model's logits, loss falls, memory stays flat.

use gomlx::mlx::{io, Array, Dtype};
use gomlx::models::{LoadOptions, Logits, Model};
use gomlx::train::{self, adapters, lora, step, Batch, Control, LoraConfig, TrainConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const CASES: &[&str] = &["llama_tied", "qwen3_qknorm_q4", "gemma3_text"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model_dir(case: &str) -> PathBuf {
    root().join("tests/fixtures/models").join(case)
}

fn lora_dir(case: &str) -> PathBuf {
    root().join("tests/fixtures/lora").join(case)
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gomlx-lora-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn load(case: &str) -> Model {
    Model::load(&model_dir(case), &LoadOptions { dtype: Some(Dtype::F32), dequantize: Some(false), ..Default::default() }).unwrap()
}

fn reference(case: &str) -> BTreeMap<String, Array> {
    io::load_safetensors(&lora_dir(case).join("reference.safetensors")).unwrap().tensors
}

fn f32s(a: &Array) -> Vec<f32> {
    a.to_vec::<f32>().unwrap()
}

/// max |a - b| / max |b|
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// The reference batch as a gomlx `Batch`.
fn reference_batch(r: &BTreeMap<String, Array>) -> Batch {
    let tokens = &r["tokens"];
    let (b, w) = (tokens.dim(0) as usize, tokens.dim(1) as usize);
    let flat = tokens.to_vec::<i32>().unwrap();
    let lengths = r["lengths"].to_vec::<i32>().unwrap();
    let offsets = r["offsets"].to_vec::<i32>().unwrap();
    let rows = (0..b).map(|i| flat[i * w..i * w + lengths[i] as usize].iter().map(|&t| t as u32).collect()).collect();
    Batch::new(rows, offsets.iter().map(|&o| o as usize).collect()).unwrap()
}

fn logits_of(model: &Model, tokens: &Array) -> Vec<f32> {
    let mut caches = model.new_caches();
    f32s(&model.forward(tokens, &mut caches, None, Logits::All).unwrap())
}

#[test]
fn mlx_lm_adapters_load_and_give_mlx_lm_logits() {
    for case in CASES {
        let mut model = load(case);
        let r = reference(case);
        let cfg = adapters::load_adapters(&mut model, &lora_dir(case).join("adapter"), None).unwrap();
        assert!(cfg.rank >= 2);
        let got = logits_of(&model, &r["tokens"]);
        let err = rel_err(&got, &f32s(&r["logits"]));
        assert!(err < 1e-4, "{case}: logits relative error {err}");
        // Without the adapter the logits differ (the adapter does something).
        lora::remove_lora(&mut model);
        assert!(rel_err(&logits_of(&model, &r["tokens"]), &f32s(&r["logits"])) > 1e-3, "{case}");
    }
}

#[test]
fn first_step_loss_and_gradients_match_mlx_lm() {
    for case in CASES {
        let mut model = load(case);
        let r = reference(case);
        adapters::load_adapters(&mut model, &lora_dir(case).join("adapter"), None).unwrap();
        let batch = reference_batch(&r);
        let out = step::loss_and_grad(&model, &batch, false, None).unwrap();
        let loss = out.loss.item::<f32>().unwrap();
        let want = r["loss"].item::<f32>().unwrap();
        assert!(((loss - want) / want).abs() < 1e-4, "{case}: loss {loss} vs mlx-lm {want}");
        assert_eq!(out.ntoks.item::<f32>().unwrap(), r["ntoks"].item::<f32>().unwrap());
        assert_eq!(batch.loss_tokens() as f32, r["ntoks"].item::<f32>().unwrap());
        let names: Vec<String> = lora::parameters(&model).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), r.keys().filter(|k| k.starts_with("grad.")).count(), "{case}");
        for (name, g) in names.iter().zip(&out.grads) {
            let want = &r[&format!("grad.{name}")];
            assert_eq!(g.shape(), want.shape(), "{case} {name}");
            let err = rel_err(&f32s(g), &f32s(want));
            assert!(err < 1e-4, "{case} {name}: gradient relative error {err}");
        }
    }
}

#[test]
fn checkpointed_gradients_equal_plain_ones() {
    for case in CASES {
        let mut model = load(case);
        let r = reference(case);
        adapters::load_adapters(&mut model, &lora_dir(case).join("adapter"), None).unwrap();
        let batch = reference_batch(&r);
        let plain = step::loss_and_grad(&model, &batch, false, None).unwrap();
        let ckpt = step::loss_and_grad(&model, &batch, true, None).unwrap();
        assert_eq!(plain.loss.item::<f32>().unwrap(), ckpt.loss.item::<f32>().unwrap(), "{case}");
        for (a, b) in plain.grads.iter().zip(&ckpt.grads) {
            let err = rel_err(&f32s(b), &f32s(a));
            assert!(err < 1e-6, "{case}: checkpointed gradient differs by {err}");
        }
        // The adapters hold their real values again afterwards.
        let again = step::loss(&model, &batch).unwrap().0.item::<f32>().unwrap();
        assert_eq!(again, plain.loss.item::<f32>().unwrap());
    }
}

#[test]
fn gradients_match_central_finite_differences() {
    let mut model = load("llama_tied");
    let r = reference("llama_tied");
    adapters::load_adapters(&mut model, &lora_dir("llama_tied").join("adapter"), None).unwrap();
    let batch = reference_batch(&r);
    let out = step::loss_and_grad(&model, &batch, false, None).unwrap();
    let named = lora::adapters(&model);
    let loras: Vec<_> = named.iter().map(|(_, l)| *l).collect();
    let params: Vec<Array> = lora::parameters(&model).into_iter().map(|(_, a)| a).collect();
    let loss_at = |params: &[Array]| -> f64 {
        lora::set_parameters(&loras, params).unwrap();
        step::loss(&model, &batch).unwrap().0.item::<f32>().unwrap() as f64
    };
    let eps = 1e-2f32;
    let mut checked = 0;
    for (pi, g) in out.grads.iter().enumerate() {
        let gv = f32s(g);
        let gmax = gv.iter().fold(0f32, |m, x| m.max(x.abs()));
        // The three largest entries of each parameter, and one small one.
        let mut idx: Vec<usize> = (0..gv.len()).collect();
        idx.sort_by(|&a, &b| gv[b].abs().partial_cmp(&gv[a].abs()).unwrap());
        let mut pick = idx[..3].to_vec();
        pick.push(idx[idx.len() / 2]);
        for &i in &pick {
            let base = f32s(&params[pi]);
            let shape = params[pi].shape();
            let shifted = |d: f32| {
                let mut v = base.clone();
                v[i] += d;
                let mut p = params.clone();
                p[pi] = Array::from_slice(&v, &shape).unwrap();
                loss_at(&p)
            };
            let fd = ((shifted(eps) - shifted(-eps)) / (2.0 * eps as f64)) as f32;
            assert!((fd - gv[i]).abs() <= 2e-3 * gmax + 2e-4, "param {pi} entry {i}: finite difference {fd} vs gradient {}", gv[i]);
            checked += 1;
        }
    }
    lora::set_parameters(&loras, &params).unwrap();
    assert_eq!(checked, 4 * 12);
}

#[test]
fn save_then_load_gives_identical_logits_and_mlx_lm_layout() {
    for case in CASES {
        let mut model = load(case);
        let r = reference(case);
        adapters::load_adapters(&mut model, &lora_dir(case).join("adapter"), None).unwrap();
        let before = logits_of(&model, &r["tokens"]);
        let dir = temp_dir(&format!("save-{case}"));
        adapters::save_adapters(&model, &dir, None).unwrap();
        // Same tensor names and shapes as mlx-lm's own adapter file.
        let ours = io::load_safetensors(&dir.join("adapters.safetensors")).unwrap().tensors;
        let theirs = io::load_safetensors(&lora_dir(case).join("adapter/adapters.safetensors")).unwrap().tensors;
        assert_eq!(ours.keys().collect::<Vec<_>>(), theirs.keys().collect::<Vec<_>>());
        for (k, v) in &ours {
            assert_eq!(v.shape(), theirs[k].shape(), "{k}");
            assert_eq!(f32s(v), f32s(&theirs[k]), "{k}");
        }
        let a = adapters::read_config(&dir).unwrap();
        let b = adapters::read_config(&lora_dir(case).join("adapter")).unwrap();
        assert_eq!((a.rank, a.scale, a.num_layers, a.normalised_targets().unwrap()), (b.rank, b.scale, b.num_layers, b.normalised_targets().unwrap()));
        let mut fresh = load(case);
        adapters::load_adapters(&mut fresh, &dir, None).unwrap();
        assert_eq!(logits_of(&fresh, &r["tokens"]), before, "{case}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn adapters_with_wrong_shapes_or_names_are_refused() {
    let mut model = load("llama_tied");
    // gemma3's adapter is for 3 of 4 layers; llama_tied has 2.
    let e = adapters::load_adapters(&mut model, &lora_dir("gemma3_text").join("adapter"), None).unwrap_err();
    assert!(e.to_string().contains("layers"), "{e}");
    // A config whose rank disagrees with the tensors.
    let dir = temp_dir("badrank");
    let src = lora_dir("llama_tied").join("adapter");
    std::fs::copy(src.join("adapters.safetensors"), dir.join("adapters.safetensors")).unwrap();
    let cfg = std::fs::read_to_string(src.join("adapter_config.json")).unwrap().replace("\"rank\": 4", "\"rank\": 3");
    std::fs::write(dir.join("adapter_config.json"), cfg).unwrap();
    let e = adapters::load_adapters(&mut model, &dir, None).unwrap_err();
    assert!(e.to_string().contains("shape"), "{e}");
    // Targets the file has no tensors for.
    let cfg = std::fs::read_to_string(src.join("adapter_config.json")).unwrap().replace("\"mlp.down_proj\"", "\"mlp.up_proj\"");
    std::fs::write(dir.join("adapter_config.json"), cfg).unwrap();
    let e = adapters::load_adapters(&mut model, &dir, None).unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
    assert!(lora::adapters(&model).is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// gomlx → mlx-lm: an adapter gomlx trained and saved, which the oracle script
/// loaded with mlx-lm's `load_adapters` (tests/fixtures/lora/<case>/gomlx_adapter).
/// `GOMLX_BLESS=1` rewrites the adapter; rerun the oracle script afterwards.
#[test]
fn gomlx_adapters_give_the_same_logits_in_mlx_lm() {
    for case in CASES {
        let dir = lora_dir(case).join("gomlx_adapter");
        if std::env::var_os("GOMLX_BLESS").is_some() {
            let mut model = load(case);
            let r = reference(case);
            let cfg = adapters::read_config(&lora_dir(case).join("adapter")).unwrap();
            lora::apply_lora(&mut model, &LoraConfig { seed: 7, ..cfg }).unwrap();
            let batch = reference_batch(&r);
            let mut t = train::Trainer::new(&model, TrainConfig { schedule: train::Schedule::constant(5e-2), ..Default::default() }).unwrap();
            for _ in 0..3 {
                t.step(&batch).unwrap();
            }
            adapters::save_adapters(&model, &dir, None).unwrap();
            continue;
        }
        let r = reference(case);
        let want = r.get("gomlx_logits").unwrap_or_else(|| panic!("{case}: reference lacks gomlx_logits; run the oracle script"));
        let mut model = load(case);
        adapters::load_adapters(&mut model, &dir, None).unwrap();
        let err = rel_err(&logits_of(&model, &r["tokens"]), &f32s(want));
        assert!(err < 1e-4, "{case}: gomlx adapter in mlx-lm vs gomlx: {err}");
    }
}

#[test]
fn fused_model_gives_the_adapted_logits() {
    for case in ["llama_tied", "gemma3_text", "qwen3_qknorm_q4"] {
        let mut model = load(case);
        let r = reference(case);
        adapters::load_adapters(&mut model, &lora_dir(case).join("adapter"), None).unwrap();
        let want = logits_of(&model, &r["tokens"]);
        let quantised = case.ends_with("q4");
        let mode = if quantised { adapters::FuseMode::Dequantize } else { adapters::FuseMode::Requantize };
        let out = temp_dir(&format!("fuse-{case}"));
        adapters::fuse(&model, &model_dir(case), &out, mode).unwrap();
        let fused = load_from(&out);
        let err = rel_err(&logits_of(&fused, &r["tokens"]), &want);
        assert!(err < 1e-4, "{case}: fused logits error {err}");
        if quantised {
            // Re-quantised fusing stays quantised and close.
            let out2 = temp_dir(&format!("fuseq-{case}"));
            adapters::fuse(&model, &model_dir(case), &out2, adapters::FuseMode::Requantize).unwrap();
            let fused = load_from(&out2);
            assert_eq!(fused.info().quant_bits, Some(4));
            let err = rel_err(&logits_of(&fused, &r["tokens"]), &want);
            assert!(err < 0.2, "{case}: re-quantised fused logits error {err}");
            let _ = std::fs::remove_dir_all(&out2);
        }
        let _ = std::fs::remove_dir_all(&out);
    }
}

fn load_from(dir: &Path) -> Model {
    Model::load(dir, &LoadOptions { dtype: Some(Dtype::F32), dequantize: Some(false), ..Default::default() }).unwrap()
}

fn tiny_dataset() -> Vec<train::Example> {
    // Short repeated patterns a 2-layer model can fit in a few steps.
    let rows: [&[u32]; 8] = [
        &[1, 10, 11, 12, 13, 14, 15, 16, 2],
        &[1, 20, 21, 22, 23, 24, 25, 2],
        &[1, 10, 11, 12, 13, 14, 15, 16, 17, 2],
        &[1, 30, 31, 32, 33, 34, 2],
        &[1, 20, 21, 22, 23, 24, 25, 26, 2],
        &[1, 30, 31, 32, 33, 34, 35, 2],
        &[1, 40, 41, 42, 43, 44, 45, 46, 47, 2],
        &[1, 40, 41, 42, 43, 44, 45, 2],
    ];
    rows.iter().map(|r| train::Example { tokens: r.to_vec(), offset: 0 }).collect()
}

#[test]
fn loss_falls_over_twenty_steps() {
    for (case, ckpt, dtype) in [("llama_tied", false, Dtype::F32), ("qwen3_qknorm_q4", true, Dtype::BF16)] {
        let mut model = load(case);
        let data = tiny_dataset();
        let cfg = TrainConfig {
            lora: LoraConfig { rank: 8, scale: 2.0, dtype, targets: lora::ALL_TARGETS.iter().map(|s| s.to_string()).collect(), ..Default::default() },
            iters: 20,
            batch_size: 4,
            schedule: train::Schedule { lr: 2e-2, warmup: 2, warmup_init: 0.0, decay_steps: Some(17), min_lr: 1e-3 },
            grad_clip: Some(1.0),
            grad_checkpoint: ckpt,
            val_every: 10,
            ..Default::default()
        };
        let mut seen = Vec::new();
        let report = train::train(&mut model, &data, Some(&data[..4]), &cfg, |p| {
            seen.push(p.clone());
            Control::Continue
        })
        .unwrap();
        assert_eq!(report.steps, 20);
        assert_eq!(seen.len(), 20);
        assert_eq!(seen[0].learning_rate, 0.0);
        assert!((seen[2].learning_rate - 2e-2).abs() < 1e-7);
        assert!(seen.iter().all(|p| p.grad_norm.is_finite() && p.tokens_per_second > 0.0));
        let first: f32 = seen[..4].iter().map(|p| p.loss).sum::<f32>() / 4.0;
        let last: f32 = seen[16..].iter().map(|p| p.loss).sum::<f32>() / 4.0;
        assert!(last < 0.7 * first, "{case}: loss {first} -> {last}");
        let vals: Vec<f32> = seen.iter().filter_map(|p| p.val_loss).collect();
        assert_eq!(vals.len(), 3);
        assert!(vals[2] < vals[0], "{case}: validation loss {vals:?}");
        // bf16 adapters stay bf16.
        assert_eq!(lora::parameters(&model)[0].1.dtype(), dtype);
    }
}

#[test]
fn the_callback_can_stop_training() {
    let mut model = load("llama_tied");
    let data = tiny_dataset();
    let dir = temp_dir("stop");
    let cfg = TrainConfig { iters: 50, batch_size: 2, adapter_path: Some(dir.clone()), ..Default::default() };
    let report = train::train(&mut model, &data, None, &cfg, |p| if p.step == 3 { Control::Stop } else { Control::Continue }).unwrap();
    assert_eq!(report.steps, 3);
    assert!(report.stopped_early);
    assert!(dir.join("adapters.safetensors").is_file() && dir.join("adapter_config.json").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}
