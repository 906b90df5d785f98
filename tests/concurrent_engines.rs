//! Several models in one process, each on its own engine thread, working at
//! the same time on the device under test (`GOMLX_TEST_DEVICE=cpu|gpu`, else
//! MLX's default). MLX's CUDA backend crashes when two threads evaluate at
//! once; gomlx orders GPU evaluations process-wide (mlx::transforms), so this
//! must give every model exactly its greedy tokens from mlx-lm.

use gomlx::engine::{ClassifyOptions, Engine, EngineOptions, GenerateOptions};
use gomlx::mlx::{self, io, DeviceKind};
use std::path::PathBuf;

fn device() -> DeviceKind {
    match std::env::var("GOMLX_TEST_DEVICE").as_deref() {
        Ok("cpu") => DeviceKind::Cpu,
        Ok("gpu") => DeviceKind::Gpu,
        _ => mlx::default_device(),
    }
}

fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(case)
}

/// The fixture's prompt and mlx-lm's greedy continuation of it.
fn reference(case: &str) -> (Vec<u32>, Vec<u32>) {
    // Arrays on a test thread: exclusive use of a CUDA GPU meanwhile (engines take it themselves).
    let _gpu = mlx::gpu_guard();
    let st = io::load_safetensors(&fixture(case).join("reference.safetensors")).unwrap();
    let ids = |n: &str| st.tensors[n].to_vec::<i32>().unwrap().into_iter().map(|v| v as u32).collect::<Vec<_>>();
    (ids("inputs"), ids("greedy"))
}

#[test]
fn models_on_separate_engine_threads_generate_and_classify_at_the_same_time() {
    let cases = ["llama_tied", "qwen3_qknorm", "gemma3_text", "qwen2_bias"];
    let opts = EngineOptions { device: Some(device()), ..Default::default() };
    let engines: Vec<Engine> = cases.iter().map(|c| Engine::load(&fixture(c), &opts).unwrap()).collect();
    let handles: Vec<_> = engines
        .iter()
        .zip(cases)
        .flat_map(|(e, case)| {
            // Two generations and one classify per model, all at once.
            (0..3).map(move |k| {
                let e = e.clone();
                std::thread::spawn(move || {
                    let (prompt, greedy) = reference(case);
                    for _ in 0..3 {
                        if k < 2 {
                            let g = GenerateOptions { max_tokens: greedy.len(), ignore_eos: true, ..Default::default() };
                            let (_, ids) = e.generate_tokens(prompt.clone(), &g).unwrap().collect_text().unwrap();
                            assert_eq!(ids, greedy, "{case}: greedy tokens under concurrency");
                        } else {
                            // The first greedy token is the arg-max after the prompt.
                            let prompts = vec![prompt.clone(), prompt[1..].to_vec(), prompt.clone()];
                            let (res, _) = e.classify_tokens(prompts, None, &ClassifyOptions::default()).unwrap();
                            assert_eq!(res[0].token, greedy[0], "{case}: classify under concurrency");
                            assert_eq!(res[2].token, greedy[0], "{case}: classify under concurrency");
                        }
                    }
                })
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a worker thread failed");
    }
    for e in engines {
        e.close();
    }
}
