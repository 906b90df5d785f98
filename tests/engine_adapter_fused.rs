//! Where the engine fuses q/k/v into one matmul (the GPU default; forced here
//! with GOMLX_FUSE_PROJECTIONS=1), a model loaded with an adapter keeps its
//! projections separate so the adapter attaches, and still gives mlx-lm's
//! logits. Its own test binary: the variable is process-wide.

use gomlx::engine::{ClassifyOptions, Engine, EngineOptions};
use gomlx::mlx::{io, DeviceKind};
use std::path::PathBuf;

#[test]
fn adapter_loads_where_projections_would_be_fused() {
    std::env::set_var("GOMLX_FUSE_PROJECTIONS", "1");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let case = root.join("tests/fixtures/lora/llama_tied");
    let r = io::load_safetensors(&case.join("reference.safetensors")).unwrap().tensors;
    let (w, v) = (r["tokens"].dim(1) as usize, r["logits"].dim(2) as usize);
    let tokens = r["tokens"].to_vec::<i32>().unwrap();
    let want = r["logits"].to_vec::<f32>().unwrap();
    let prompt: Vec<u32> = tokens[..w].iter().map(|&t| t as u32).collect();
    let opts = EngineOptions { device: Some(DeviceKind::Cpu), adapter: Some(case.join("adapter")), ..Default::default() };
    let engine = Engine::load(&root.join("tests/fixtures/models/llama_tied"), &opts).unwrap();
    let (res, _) = engine.classify_tokens(vec![prompt], None, &ClassifyOptions { return_logits: true, ..Default::default() }).unwrap();
    let got = res[0].logits.as_ref().unwrap();
    let last = &want[(w - 1) * v..w * v];
    let scale = last.iter().fold(0f32, |m, x| m.max(x.abs()));
    let err = got.iter().zip(last).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
    assert!(err < 1e-4, "logits relative error {err} against mlx-lm");
}
