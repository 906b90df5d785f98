//! The BLAS under MLX's CPU backend: on Linux it must be OpenBLAS (linked ahead
//! of the mlx-cpu wheel's bundled reference BLAS by build.rs), never the
//! reference one, which is ~30× slower for every float32 matmul.

use gomlx::mlx::{self, blas, random, Dtype, DeviceKind, Stream};
use std::time::Instant;

#[test]
fn mlx_is_not_bound_to_the_reference_blas() {
    let info = blas::info();
    eprintln!("blas: {}", info.summary());
    let path = info.library.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    assert!(
        !info.is_reference() && !path.contains("mlx_cpu.libs"),
        "\n\n*** MLX's cblas_sgemm resolves to the slow reference BLAS {path} ***\n\
         libgomlx must name libopenblas.so.0 ahead of libmlx's BLAS (build.rs, link_fast_blas);\n\
         was it built with GOMLX_BLAS=none, or without libopenblas0-pthread installed?\n"
    );
    if cfg!(target_os = "linux") && std::env::var("GOMLX_BLAS").map_or(true, |v| v.is_empty() || v == "openblas") {
        assert_eq!(info.kind, blas::BlasKind::OpenBlas, "expected OpenBLAS, got {path}");
        assert_eq!(info.lapack_library, info.library, "LAPACK should come from the same library");
        assert!(info.config.as_deref().unwrap_or("").contains("OpenBLAS"), "config: {:?}", info.config);
    }
}

#[test]
fn blas_threads_follow_the_core_count_or_the_override() {
    let Some(n) = blas::threads() else { return }; // not OpenBLAS
    match blas::default_threads() {
        Some(want) => assert_eq!(n, want, "OpenBLAS threads"),
        None => assert!(n >= 1),
    }
    assert!(n <= std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1).max(n));
}

/// A float32 512×512×512 matmul on the CPU: the reference BLAS manages ~7
/// GFLOP/s on a 2-core machine, OpenBLAS 100+; 25 separates them with room for
/// a busy shared machine.
#[test]
fn float32_matmul_is_fast_on_the_cpu() {
    mlx::stream::set_thread_stream(Stream::new(DeviceKind::Cpu).unwrap());
    let n = 512;
    let a = random::normal(&[n, n], Dtype::F32, 0.0, 1.0, None).unwrap();
    let b = random::normal(&[n, n], Dtype::F32, 0.0, 1.0, None).unwrap();
    mlx::eval(&[&a, &b]).unwrap();
    a.matmul(&b).unwrap().eval().unwrap(); // warm-up
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        a.matmul(&b).unwrap().eval().unwrap();
        best = best.min(t.elapsed().as_secs_f64());
    }
    let gflops = 2.0 * (n as f64).powi(3) / best / 1e9;
    eprintln!("float32 {n}³ matmul: {gflops:.1} GFLOP/s ({})", blas::library());
    assert!(gflops > 25.0, "float32 matmul at {gflops:.1} GFLOP/s: the reference BLAS? ({})", blas::library());
}
