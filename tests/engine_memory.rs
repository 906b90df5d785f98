//! Engine memory: process-wide numbers, so this file holds a single test and
//! nothing else allocates concurrently.

use gomlx::engine::{ClassifyOptions, Engine, EngineOptions, FinishReason, GenerateOptions};
use gomlx::mlx::{io, memory, DeviceKind};
use gomlx::sample::SamplerConfig;
use std::path::PathBuf;
use std::time::Duration;

fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(case)
}

fn run(engine: &Engine, prompt: &[u32], opts: &GenerateOptions) -> (Vec<u32>, FinishReason) {
    let mut g = engine.generate_tokens(prompt.to_vec(), opts).unwrap();
    let (_, ids) = g.collect_text().unwrap();
    (ids, g.finish_reason().unwrap())
}

fn inputs(case: &str) -> (Vec<u32>, Vec<u32>) {
    let st = io::load_safetensors(&fixture(case).join("reference.safetensors")).unwrap();
    let ids = |n: &str| st.tensors[n].to_vec::<i32>().unwrap().into_iter().map(|v| v as u32).collect::<Vec<_>>();
    (ids("inputs"), ids("greedy"))
}

fn cpu() -> EngineOptions {
    EngineOptions { device: Some(DeviceKind::Cpu), ..Default::default() }
}

#[test]
fn memory_returns_to_baseline_after_mixed_requests_and_close() {
    let before_load = memory::active().unwrap();
    let engine = Engine::load(&fixture("gemma3_text"), &cpu()).unwrap();
    let (prompt, _) = inputs("gemma3_text");
    // Warm-up so lazily created buffers (kernels, caches) exist.
    run(&engine, &prompt, &GenerateOptions { max_tokens: 4, ignore_eos: true, ..Default::default() });
    std::thread::sleep(Duration::from_millis(50));
    let baseline = memory::active().unwrap();
    for i in 0..20 {
        let sampler = if i % 2 == 0 {
            SamplerConfig::default()
        } else {
            SamplerConfig { temperature: 0.8, top_p: 0.9, seed: Some(i), repetition_penalty: 1.1, ..Default::default() }
        };
        let opts = GenerateOptions { max_tokens: 8 + i as usize, ignore_eos: true, sampler, ..Default::default() };
        match i % 4 {
            0 => drop(run(&engine, &prompt, &opts)),
            1 => {
                // Dropped halfway.
                let mut g = engine.generate_tokens(prompt.clone(), &opts).unwrap();
                g.next();
                drop(g);
            }
            2 => drop(engine.classify_tokens(vec![prompt.clone(), prompt[3..].to_vec()], None, &ClassifyOptions::default()).unwrap()),
            _ => drop(engine.batch_generate_tokens(vec![prompt.clone(), prompt[4..].to_vec()], &opts).unwrap()),
        }
    }
    // A request runs once more so dropped ones are surely retired by the engine thread.
    run(&engine, &prompt, &GenerateOptions { max_tokens: 2, ignore_eos: true, ..Default::default() });
    let after = memory::active().unwrap();
    let diff = after.abs_diff(baseline) as f64;
    assert!(diff <= 0.01 * baseline as f64, "active memory {after} vs baseline {baseline}");
    engine.close();
    assert_eq!(memory::active().unwrap(), before_load, "weights freed on close");
}
