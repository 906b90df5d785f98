//! The compute dtype and quantisation a model runs with, per device.
//!
//! On the GPU a checkpoint runs as stored (bf16/f16 stay, quantised stays
//! quantised, except what `dequantized_at_load` names). On the CPU MLX's fast
//! path is float32 through the BLAS: its bf16
//! and f16 matmuls are MLX's own single-threaded kernels (~7 GFLOP/s on a
//! 2-core x86 machine against ~200 for OpenBLAS sgemm), and its 4/8-bit
//! `quantized_matmul` is single-threaded too. So on the CPU the compute dtype
//! is float32 unless the caller names one, and the weights are either
//! *widened* at load (bf16 matrices cast to float32, quantised ones
//! dequantised: the fastest decode, 2× or ~7× the memory) or kept *stored*
//! as the checkpoint has them and widened at each use (the checkpoint's
//! memory; MLX casts a bf16 matrix in a fraction of the matmul's time, and
//! quantised layers dequantise per call for multi-row inputs). Both give the
//! same numbers (the bf16 → float32 cast is exact). Widened when the widened
//! weights fit the memory budget, stored otherwise. docs/cpu.md has the numbers.

use super::config::Quant;
use super::weights::Weights;
use super::LoadOptions;
use crate::mlx::{DeviceKind, Dtype};

/// What `plan` decided, and why (shown by `gomlx info`-style tools and logs).
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Dtype floating weights are cast to.
    pub dtype: Dtype,
    /// Whether quantised matrices are expanded to dense `dtype` at load.
    pub dequantize: bool,
    /// Whether floating matrices (and quantisation scales) are cast to `dtype`
    /// at load. When false they keep the checkpoint's dtype unless it is wider
    /// than `dtype`; only vectors (norms, biases) are cast, and MLX widens a
    /// matrix where an op meets it.
    pub widen: bool,
    /// Bytes the weights take under this plan (estimated before loading).
    pub weight_bytes: u64,
    pub reason: String,
}

/// Physical memory, capped by a cgroup v2/v1 limit where one is set.
pub fn usable_memory() -> u64 {
    let mut total = physical_memory();
    for f in ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"] {
        if let Some(limit) = std::fs::read_to_string(f).ok().and_then(|s| s.trim().parse::<u64>().ok()) {
            total = total.min(limit);
        }
    }
    total
}

fn physical_memory() -> u64 {
    extern "C" {
        fn sysconf(name: i32) -> i64;
    }
    // _SC_PHYS_PAGES / _SC_PAGESIZE
    #[cfg(target_os = "linux")]
    let (pages, page) = (85, 30);
    #[cfg(target_os = "macos")]
    let (pages, page) = (200, 29);
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    return 8 << 30;
    #[allow(unreachable_code)]
    {
        let (n, p) = unsafe { (sysconf(pages), sysconf(page)) };
        if n > 0 && p > 0 {
            n as u64 * p as u64
        } else {
            8 << 30
        }
    }
}

/// Whether a floating tensor of `shape`d `from` dtype is cast to the compute
/// `dtype` at load: always when widening; otherwise vectors, and anything
/// wider than the compute dtype (a float32 checkpoint asked to run in bf16).
pub fn casts(ndim: usize, from: Dtype, dtype: Dtype, widen: bool) -> bool {
    from != dtype && (widen || ndim < 2 || from.size() > dtype.size())
}

/// Quantisations the device's kernels get wrong, to be expanded to dense
/// weights at load on the CPU: 8-bit affine on MLX 0.32.2's CUDA backend
/// (wrong logits, no error raised, on an H200; 4-bit is right; docs/gpu.md).
pub fn dequantized_at_load(device: DeviceKind, backend: &str, q: &Quant) -> bool {
    device == DeviceKind::Gpu && backend == "cuda" && q.bits == 8
}

/// Bytes of `weights` once floats are cast as `casts` says and, with
/// `dequantize`, quantised matrices are dense `dtype` (a packed `uint32` word
/// holds `32 / bits` values).
fn bytes_under(weights: &Weights, quant_bits: &dyn Fn(&str) -> Option<i32>, dtype: Dtype, dequantize: bool, widen: bool) -> u64 {
    let mut total = 0u64;
    for (name, a) in weights.iter() {
        let n = a.size() as u64;
        let quantised = name.strip_suffix(".weight").and_then(|base| weights.contains(&format!("{base}.scales")).then(|| quant_bits(base)).flatten());
        total += match quantised {
            Some(bits) if dequantize => n * (32 / bits as u64) * dtype.size() as u64,
            Some(_) => n * 4,
            None if a.dtype().is_float() && casts(a.ndim(), a.dtype(), dtype, widen) => n * dtype.size() as u64,
            None => n * a.dtype().size() as u64,
        };
    }
    total
}

/// Decides dtype, dequantisation and widening for `weights` stored as `checkpoint` on `device`.
pub fn plan(weights: &Weights, quant_bits: &dyn Fn(&str) -> Option<i32>, quantised: bool, checkpoint: Dtype, device: DeviceKind, opts: &LoadOptions) -> Plan {
    let bytes = |dtype, deq, widen| bytes_under(weights, quant_bits, dtype, deq, widen);
    if device != DeviceKind::Cpu {
        let dtype = opts.dtype.unwrap_or(checkpoint);
        let deq = quantised && opts.dequantize == Some(true);
        return Plan {
            dtype,
            dequantize: deq,
            widen: true,
            weight_bytes: bytes(dtype, deq, true),
            reason: format!("{} device: checkpoint as stored unless asked", device.name()),
        };
    }
    let budget = super::tuning::memory_budget(opts);
    // Float32 compute unless asked; the weights widened when that fits.
    let dtype = opts.dtype.unwrap_or(if checkpoint == Dtype::F64 { checkpoint } else { Dtype::F32 });
    let widened = bytes(dtype, quantised, true);
    let fits = widened <= budget;
    let asked = super::tuning::widen(opts);
    let widen = asked.unwrap_or(fits);
    let dequantize = quantised && super::tuning::dequantize(opts).unwrap_or(widen);
    let stored = dtype_name(checkpoint, quantised);
    let why = match (asked, opts.dtype) {
        (Some(_), _) => "asked for".to_string(),
        (None, Some(_)) if fits => "dtype asked for".to_string(),
        _ if fits => format!("cpu: widened weights ({} MiB) fit the budget ({} MiB)", widened >> 20, budget >> 20),
        _ => format!("cpu: widened weights ({} MiB) would exceed the budget ({} MiB)", widened >> 20, budget >> 20),
    };
    let what = match (widen || checkpoint == dtype, dequantize || !quantised) {
        (true, true) => format!("{} weights", dtype.name()),
        (false, true) => format!("{stored} weights kept, widened to {} per use", dtype.name()),
        (w, false) => format!("quantised matrices kept ({} scales), {} compute", if w { dtype.name() } else { checkpoint.name() }, dtype.name()),
    };
    Plan { dtype, dequantize, widen, weight_bytes: bytes(dtype, dequantize, widen), reason: format!("{what}: {why}") }
}

fn dtype_name(d: Dtype, quantised: bool) -> String {
    if quantised {
        format!("quantised ({})", d.name())
    } else {
        d.name().to_string()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_cuda_gpus_expand_8_bit_matrices_at_load() {
        use super::{dequantized_at_load, DeviceKind, Quant};
        let (q4, q8) = (Quant::affine(64, 4), Quant::affine(64, 8));
        assert!(dequantized_at_load(DeviceKind::Gpu, "cuda", &q8));
        assert!(!dequantized_at_load(DeviceKind::Gpu, "cuda", &q4));
        assert!(!dequantized_at_load(DeviceKind::Gpu, "metal", &q8));
        assert!(!dequantized_at_load(DeviceKind::Cpu, "cuda", &q8));
    }
}
