//! Training state never leaks: active memory is flat across 100 LoRA steps.
//! Its own test binary, since MLX's memory counters are process-wide and other
//! tests running in parallel threads would move them.

use gomlx::mlx::{memory, Dtype};
use gomlx::models::{LoadOptions, Model};
use gomlx::train::{self, lora, LoraConfig, TrainConfig};
use std::path::PathBuf;

fn load(case: &str) -> Model {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(case);
    Model::load(&dir, &LoadOptions { dtype: Some(Dtype::F32), dequantize: Some(false), ..Default::default() }).unwrap()
}

fn tiny_dataset() -> Vec<train::Example> {
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
fn no_memory_growth_over_a_hundred_steps() {
    let mut model = load("llama_tied");
    lora::apply_lora(&mut model, &LoraConfig { rank: 4, ..Default::default() }).unwrap();
    let data = tiny_dataset();
    let cfg = TrainConfig { batch_size: 4, grad_checkpoint: true, schedule: train::Schedule::constant(1e-3), ..Default::default() };
    let mut t = train::Trainer::new(&model, cfg.clone()).unwrap();
    let mut batches = train::Batches::new(&data, 4, 64, 0, true).unwrap();
    let mut active = Vec::new();
    for _ in 0..100 {
        let b = batches.next_batch().unwrap();
        t.step(&b).unwrap();
        // The batch's own arrays vary with its length; only what outlives it counts.
        drop(b);
        gomlx::mlx::stream::synchronize().unwrap();
        active.push(memory::active().unwrap());
    }
    // What is left after a step varies by a few 768-byte buffers that MLX's
    // worker releases just after synchronize returns (with or without changes
    // to the step), but most steps read the same floor. A leak raises the floor:
    // between these windows by 40 times what it keeps per step.
    let floor = |v: &[usize]| *v.iter().min().unwrap();
    let (early, late) = (floor(&active[1..31]), floor(&active[70..]));
    assert!(late <= early, "active memory grew: the floor went from {early} to {late} bytes: {active:?}");
    let params: usize = lora::parameters(&model).iter().map(|(_, a)| a.nbytes()).sum();
    // Parameters, two AdamW moments, and the model: nothing else stays alive.
    assert!(active[99] < model.info().weight_bytes as usize + 3 * params + 16 * 1024, "{} bytes active", active[99]);
}
