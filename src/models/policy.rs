//! The compute dtype and quantisation a model runs with, per device.
//!
//! On the GPU a checkpoint runs as stored (bf16/f16 stay, quantised stays
//! quantised). On the CPU MLX's fast path is float32 through the BLAS: its bf16
//! and f16 matmuls are MLX's own single-threaded kernels (~7 GFLOP/s on a
//! 2-core x86 machine against ~200 for OpenBLAS sgemm), and its 4/8-bit
//! `quantized_matmul` is single-threaded too. So on the CPU, unless the caller
//! names a dtype (or `dequantize`), a model is widened to float32, and a
//! quantised one dequantised to float32, when the widened weights fit the
//! memory budget; otherwise it stays as stored. docs/cpu.md has the numbers.

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
    /// Bytes the weights take under this plan (estimated before loading).
    pub weight_bytes: u64,
    pub reason: String,
}

/// The default memory budget for widened weights: `GOMLX_CPU_MEMORY_BUDGET`
/// (bytes, or with a K/M/G suffix) when set, else half the memory this process
/// may use (physical RAM, or the cgroup limit when lower).
pub fn default_memory_budget() -> u64 {
    if let Some(b) = std::env::var("GOMLX_CPU_MEMORY_BUDGET").ok().and_then(|v| parse_bytes(&v)) {
        return b;
    }
    usable_memory() / 2
}

fn parse_bytes(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, mult) = match v.chars().last()?.to_ascii_uppercase() {
        'K' => (&v[..v.len() - 1], 1u64 << 10),
        'M' => (&v[..v.len() - 1], 1 << 20),
        'G' => (&v[..v.len() - 1], 1 << 30),
        'T' => (&v[..v.len() - 1], 1 << 40),
        _ => (v, 1),
    };
    num.trim().parse::<f64>().ok().map(|n| (n * mult as f64) as u64)
}

/// Physical memory, capped by a cgroup v2/v1 limit where one is set.
fn usable_memory() -> u64 {
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

/// `GOMLX_CPU_DEQUANTIZE=1|0` forces (or forbids) dequantising at load on the CPU.
fn env_dequantize() -> Option<bool> {
    env_flag("GOMLX_CPU_DEQUANTIZE")
}

/// An on/off environment setting (1/0, true/false, yes/no, on/off); None when unset or unreadable.
pub fn env_flag(name: &str) -> Option<bool> {
    match std::env::var(name).ok()?.trim() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// The engine's inference-only layer choices: fused q/k/v matmuls and a
/// compiled MLP activation. Both cut graph nodes per decode step (each costs
/// host time in MLX's CUDA backend), yet on an H200 neither was faster in the
/// form first measured (BENCHMARKS.md, GPU), so both are off until measured
/// again; `GOMLX_FUSE_PROJECTIONS=1` and `GOMLX_COMPILE=1` turn them on.
pub fn inference_build(_device: DeviceKind) -> (bool, bool) {
    (env_flag("GOMLX_FUSE_PROJECTIONS").unwrap_or(false), env_flag("GOMLX_COMPILE").unwrap_or(false))
}

/// Bytes of `weights` once floats are `dtype` and, with `dequantize`, quantised
/// matrices are dense `dtype` (a packed `uint32` word holds `32 / bits` values).
fn bytes_under(weights: &Weights, quant_bits: &dyn Fn(&str) -> Option<i32>, dtype: Dtype, dequantize: bool) -> u64 {
    let mut total = 0u64;
    for (name, a) in weights.iter() {
        let n = a.size() as u64;
        let quantised = name.strip_suffix(".weight").and_then(|base| {
            weights.contains(&format!("{base}.scales")).then(|| quant_bits(base)).flatten()
        });
        total += match quantised {
            Some(bits) if dequantize => n * (32 / bits as u64) * dtype.size() as u64,
            Some(_) => n * 4,
            None if a.dtype().is_float() => n * dtype.size() as u64,
            None => n * a.dtype().size() as u64,
        };
    }
    total
}

/// Decides dtype and dequantisation for `weights` stored as `checkpoint` on `device`.
pub fn plan(weights: &Weights, quant_bits: &dyn Fn(&str) -> Option<i32>, quantised: bool, checkpoint: Dtype, device: DeviceKind, opts: &LoadOptions) -> Plan {
    let bytes = |dtype, deq| bytes_under(weights, quant_bits, dtype, deq);
    if device != DeviceKind::Cpu {
        let dtype = opts.dtype.unwrap_or(checkpoint);
        let deq = quantised && opts.dequantize == Some(true);
        return Plan { dtype, dequantize: deq, weight_bytes: bytes(dtype, deq), reason: format!("{} device: checkpoint as stored unless asked", device.name()) };
    }
    let budget = opts.memory_budget.unwrap_or_else(default_memory_budget);
    // Quantisation first: explicit, else float32 when it fits.
    let f32_dense = bytes(Dtype::F32, quantised);
    let fits = f32_dense <= budget;
    let dequantize = quantised && opts.dequantize.or_else(env_dequantize).unwrap_or(fits);
    let (dtype, why) = match opts.dtype {
        Some(d) => (d, "dtype asked for".to_string()),
        None if checkpoint == Dtype::F32 || checkpoint == Dtype::F64 => (checkpoint, "checkpoint is already float32".into()),
        None if quantised && !dequantize => (Dtype::F32, "quantised and kept quantised: float32 scales and activations".into()),
        None if bytes(Dtype::F32, dequantize) <= budget => {
            (Dtype::F32, format!("cpu: float32 weights ({} MiB) fit the budget ({} MiB)", bytes(Dtype::F32, dequantize) >> 20, budget >> 20))
        }
        None => (checkpoint, format!("cpu: float32 weights would exceed the budget ({} MiB): kept {}", budget >> 20, checkpoint.name())),
    };
    let reason = if quantised {
        format!("{why}; quantised matrices {}", if dequantize { "dequantised at load" } else { "kept (quantized_matmul)" })
    } else {
        why
    };
    Plan { dtype, dequantize, weight_bytes: bytes(dtype, dequantize), reason }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_budgets() {
        assert_eq!(super::parse_bytes("1024"), Some(1024));
        assert_eq!(super::parse_bytes("2G"), Some(2 << 30));
        assert_eq!(super::parse_bytes("1.5g"), Some(3 << 29));
        assert_eq!(super::parse_bytes("x"), None);
    }
}
