//! Device strategy: which path a product takes on which device. MLX's CPU
//! `quantized_matmul` is single-threaded scalar code and its bf16 matmul an
//! MLX kernel, while float32 goes to the BLAS; on a GPU quantised products of
//! many rows are faster dequantised onto the tensor cores. The thresholds are
//! `Products`, set per model from its load options (docs/tuning.md has every
//! knob; docs/cpu.md and docs/gpu.md the measurements behind the defaults).

use super::config::Quant;
use crate::mlx::{self, Array, DeviceKind};
use crate::Result;

/// Thresholds of the product paths (a model's `LoadOptions` set them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Products {
    /// Input rows from which a quantised product on the CPU is dequantised and
    /// multiplied through the BLAS instead of `quantized_matmul`.
    pub cpu_dense_rows: i64,
    /// The same on a GPU (i64::MAX: never).
    pub gpu_dense_rows: i64,
    /// Output rows from which a few-row quantised product on the CPU is split in
    /// two halves, the second on the thread's helper CPU stream (two cores);
    /// i32::MAX: never.
    pub cpu_split_out: i32,
}

impl Default for Products {
    fn default() -> Self {
        Products { cpu_dense_rows: 8, gpu_dense_rows: 32, cpu_split_out: 256 }
    }
}

/// Float32 bytes of one piece when a narrower matrix is widened for a product:
/// MLX's CPU backend allocates each op's output ~50 ops ahead of its worker, so
/// widening whole matrices held several float32 copies at once.
const CAST_PIECE_BYTES: i64 = 2 << 20;

/// The same for dequantising (a chain of elementwise ops, each output queued ahead).
const DEQUANT_PIECE_BYTES: i64 = 4 << 20;

/// Whether widening the `[out, inner]` matrix for `x` goes in pieces: when the
/// float32 matrix is at least 4× the product (few rows: decode, classify's
/// vocabulary projection); with many rows the pieces' products cost more than they save.
fn split(x: &Array, inner: i32) -> bool {
    inner as i64 >= 4 * rows_of(x)
}

fn rows_of(x: &Array) -> i64 {
    let d = x.dim(-1).max(1) as i64;
    x.size() as i64 / d
}

/// `x Wᵀ` for a `[out, in]` matrix that must be widened to x's dtype first,
/// in pieces of output rows (`split`): `piece(start, end)` gives `x W[start..end]ᵀ`.
fn in_pieces(x: &Array, out: i32, inner: i32, piece_bytes: i64, piece: impl Fn(i32, i32) -> Result<Array>) -> Result<Array> {
    let rows = (piece_bytes / (inner.max(1) as i64 * x.dtype().size() as i64)).max(16) as i32;
    if rows >= out || !split(x, inner) {
        return piece(0, out);
    }
    let mut parts = Vec::with_capacity((out / rows + 1) as usize);
    let mut start = 0;
    while start < out {
        let end = (start + rows).min(out);
        parts.push(piece(start, end)?);
        start = end;
    }
    mlx::concatenate(&parts.iter().collect::<Vec<_>>(), -1)
}

/// `x Wᵀ` for a dense `[out, in]` matrix `w`: one product when the dtypes
/// match, else widened in pieces (`in_pieces`).
pub fn dense_product(x: &Array, w: &Array) -> Result<Array> {
    if w.dtype() == x.dtype() {
        return x.matmul(&w.transpose(&[])?);
    }
    in_pieces(x, w.dim(0), w.dim(1), CAST_PIECE_BYTES, |s, e| x.matmul(&w.slice_axis(0, s, e)?.transpose(&[])?))
}

fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// `x Wᵀ` for a quantised `[out, in]` matrix: MLX's `quantized_matmul` (split
/// over two CPU streams for wide outputs), or for many rows dequantised to
/// x's dtype (on the CPU in pieces) and multiplied densely.
pub fn quantized_product(x: &Array, w: &Array, scales: &Array, biases: &Array, q: &Quant, p: &Products) -> Result<Array> {
    let device = mlx::stream::thread_device();
    let dense = rows_of(x) >= if device == DeviceKind::Gpu { p.gpu_dense_rows } else { p.cpu_dense_rows };
    if !dense {
        let out = w.dim(0);
        if out >= p.cpu_split_out && cores() >= 2 {
            let half = |s: i32, e: i32| {
                mlx::quantized_matmul(x, &w.slice_axis(0, s, e)?, &scales.slice_axis(0, s, e)?, &biases.slice_axis(0, s, e)?, true, q.group_size, q.bits)
            };
            let h = out / 2;
            // None off the CPU: the helper stream exists only there.
            if let Some(second) = mlx::stream::on_helper(|| half(h, out)).transpose()? {
                let first = half(0, h)?;
                return mlx::concatenate(&[&first, &second], -1);
            }
        }
        return mlx::quantized_matmul(x, w, scales, biases, true, q.group_size, q.bits);
    }
    if device == DeviceKind::Gpu {
        return x.matmul(&mlx::dequantize(w, scales, biases, q.group_size, q.bits, Some(x.dtype()))?.transpose(&[])?);
    }
    let inner = w.dim(1) * 32 / q.bits;
    in_pieces(x, w.dim(0), inner, DEQUANT_PIECE_BYTES, |s, e| {
        let (w, sc, b) = (w.slice_axis(0, s, e)?, scales.slice_axis(0, s, e)?, biases.slice_axis(0, s, e)?);
        x.matmul(&mlx::dequantize(&w, &sc, &b, q.group_size, q.bits, Some(x.dtype()))?.transpose(&[])?)
    })
}

/// Runs `join` where weights are joined at load: on a CUDA GPU on the CPU
/// stream (a fused model that was a process's first GPU work gave wrong logits
/// on H100/H200; docs/gpu.md), elsewhere on the thread's stream.
pub fn join_at_load<T>(join: impl FnOnce() -> Result<T>) -> Result<T> {
    if mlx::backend() == "cuda" {
        mlx::stream::on_cpu(join)?
    } else {
        join()
    }
}
