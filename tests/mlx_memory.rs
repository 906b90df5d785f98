//! Memory accounting. Process-wide numbers: this file holds one test so no
//! other test allocates concurrently.

use gomlx::mlx::{self, memory, Array, Dtype};

#[test]
fn memory_returns_to_baseline_and_limits_round_trip() {
    dropping_arrays_returns_memory_to_baseline();
    memory_limits_round_trip();
}

fn dropping_arrays_returns_memory_to_baseline() {
    let warm = Array::from_slice(&[1.0f32; 1024], &[1024]).unwrap().mul_scalar(2.0).unwrap();
    warm.eval().unwrap();
    drop(warm);
    let baseline = memory::active().unwrap();
    for i in 0..100_000 {
        let a = Array::from_slice(&[i as f32; 16], &[16]).unwrap();
        let b = a.mul_scalar(3.0).unwrap();
        if i % 10_000 == 0 {
            b.eval().unwrap();
        }
    }
    assert_eq!(memory::active().unwrap(), baseline);
    memory::clear_cache().unwrap();
    assert_eq!(memory::cache().unwrap(), 0);
}

fn memory_limits_round_trip() {
    let prev = memory::set_cache_limit(1 << 28).unwrap();
    assert_eq!(memory::set_cache_limit(prev).unwrap(), 1 << 28);
    memory::reset_peak().unwrap();
    let big = mlx::zeros(&[1024, 1024], Dtype::F32).unwrap();
    big.eval().unwrap();
    assert!(memory::peak().unwrap() >= 4 * 1024 * 1024);
}
