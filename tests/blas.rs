//! The BLAS under MLX's CPU backend: on Linux it must be OpenBLAS (linked ahead
//! of the mlx-cpu wheel's bundled reference BLAS by build.rs), never the
//! reference one, which is ~30× slower for every float32 matmul.

use gomlx::mlx::{self, blas, random, DeviceKind, Dtype, Stream};
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

/// A float32 512×512×512 matmul on the CPU: the reference BLAS manages 4–7
/// GFLOP/s on a 2-core machine, OpenBLAS ~200 (30+ even with the cores shared
/// by several builds); 15, on the best of 10, separates them with room to spare.
#[test]
fn float32_matmul_is_fast_on_the_cpu() {
    mlx::stream::set_thread_stream(Stream::new(DeviceKind::Cpu).unwrap());
    let n = 512;
    let a = random::normal(&[n, n], Dtype::F32, 0.0, 1.0, None).unwrap();
    let b = random::normal(&[n, n], Dtype::F32, 0.0, 1.0, None).unwrap();
    mlx::eval(&[&a, &b]).unwrap();
    a.matmul(&b).unwrap().eval().unwrap(); // warm-up
    let mut best = f64::MAX;
    for _ in 0..10 {
        let t = Instant::now();
        a.matmul(&b).unwrap().eval().unwrap();
        best = best.min(t.elapsed().as_secs_f64());
    }
    let gflops = 2.0 * (n as f64).powi(3) / best / 1e9;
    eprintln!("float32 {n}³ matmul: {gflops:.1} GFLOP/s ({})", blas::library());
    assert!(gflops > 15.0, "float32 matmul at {gflops:.1} GFLOP/s: the reference BLAS? ({})", blas::library());
}

/// Naive row-major reference for C = alpha·op(A)·op(B) + beta·C.
#[allow(clippy::too_many_arguments)]
fn reference_gemm(
    ta: bool,
    tb: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f32;
            for p in 0..k {
                let av = if ta { a[p * lda + i] } else { a[i * lda + p] };
                let bv = if tb { b[j * ldb + p] } else { b[p * ldb + j] };
                s += av * bv;
            }
            c[i * ldc + j] = alpha * s + if beta == 0.0 { 0.0 } else { beta * c[i * ldc + j] };
        }
    }
}

/// gomlx's cblas_sgemm (single-row / single-column products through sgemv)
/// against a naive product, for every transpose combination, with alpha, beta,
/// padded leading dimensions and an output full of NaN where beta is 0.
#[cfg(target_os = "linux")]
#[test]
fn gemv_forwarding_matches_a_naive_gemm() {
    let vals = |n: usize, seed: usize| (0..n).map(|i| (((i * 37 + seed * 11) % 23) as f32 - 11.0) / 7.0).collect::<Vec<f32>>();
    for &(m, n, k) in &[(1usize, 300usize, 70usize), (300, 1, 70), (1, 1, 70), (1, 5, 3), (4, 1, 9)] {
        for ta in [false, true] {
            for tb in [false, true] {
                for &(alpha, beta) in &[(1.0f32, 0.0f32), (0.5, 2.0)] {
                    let (ar, ac) = if ta { (k, m) } else { (m, k) };
                    let (br, bc) = if tb { (n, k) } else { (k, n) };
                    let (lda, ldb, ldc) = (ac + 3, bc + 2, n + 1);
                    let a = vals(ar * lda, 1);
                    let b = vals(br * ldb, 2);
                    let init = if beta == 0.0 { f32::NAN } else { 0.25 };
                    let mut got = vec![init; m * ldc];
                    let mut want = got.clone();
                    reference_gemm(ta, tb, m, n, k, alpha, &a, lda, &b, ldb, beta, &mut want, ldc);
                    let t = |x: bool| if x { 112 } else { 111 };
                    unsafe {
                        blas::cblas_sgemm(
                            101,
                            t(ta),
                            t(tb),
                            m as i32,
                            n as i32,
                            k as i32,
                            alpha,
                            a.as_ptr(),
                            lda as i32,
                            b.as_ptr(),
                            ldb as i32,
                            beta,
                            got.as_mut_ptr(),
                            ldc as i32,
                        );
                    }
                    for i in 0..m {
                        for j in 0..n {
                            let (g, w) = (got[i * ldc + j], want[i * ldc + j]);
                            assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "m{m} n{n} k{k} ta{ta} tb{tb} a{alpha} b{beta} [{i},{j}]: {g} vs {w}");
                        }
                    }
                }
            }
        }
    }
}

/// Single-row matmuls through MLX (the decode shape) agree with the same rows
/// computed inside a many-row matmul (which takes the GEMM path).
#[test]
fn single_row_matmuls_agree_with_full_gemm() {
    mlx::stream::set_thread_stream(Stream::new(DeviceKind::Cpu).unwrap());
    let x = random::normal(&[8, 96], Dtype::F32, 0.0, 1.0, None).unwrap();
    let w = random::normal(&[200, 96], Dtype::F32, 0.0, 1.0, None).unwrap();
    let full = x.matmul(&w.transpose(&[]).unwrap()).unwrap().to_vec::<f32>().unwrap();
    let row = x.slice_axis(0, 3, 4).unwrap();
    let one = row.matmul(&w.transpose(&[]).unwrap()).unwrap().to_vec::<f32>().unwrap();
    let col = w.matmul(&row.transpose(&[]).unwrap()).unwrap().to_vec::<f32>().unwrap();
    for j in 0..200 {
        let want = full[3 * 200 + j];
        assert!((one[j] - want).abs() < 1e-4 * (1.0 + want.abs()), "row {j}: {} vs {want}", one[j]);
        assert!((col[j] - want).abs() < 1e-4 * (1.0 + want.abs()), "col {j}: {} vs {want}", col[j]);
    }
    if cfg!(target_os = "linux") {
        assert!(blas::gemv_forwarding(), "libmlx's cblas_sgemm should reach gomlx's forwarding");
    }
}
