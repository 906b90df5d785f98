//! Every device-strategy knob of a model in one place. Each is a `LoadOptions`
//! field (and so an `EngineOptions`, C, Go and Swift option); a field left
//! unset takes the `GOMLX_*` environment variable named beside it, else the
//! default. docs/tuning.md has the table.

use super::shard::MoeSplit;
use super::strategy::Products;
use super::LoadOptions;
use crate::mlx::DeviceKind;

/// An on/off setting: 1/0, true/false, yes/no, on/off.
pub fn parse_flag(v: &str) -> Option<bool> {
    match v.trim() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// An on/off environment setting; None when unset or unreadable.
pub fn env_flag(name: &str) -> Option<bool> {
    parse_flag(&std::env::var(name).ok()?)
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// Bytes, or with a K/M/G/T suffix.
pub fn parse_bytes(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, mult) = match v.chars().last()?.to_ascii_uppercase() {
        'K' => (&v[..v.len() - 1], 1u64 << 10),
        'M' => (&v[..v.len() - 1], 1 << 20),
        'G' => (&v[..v.len() - 1], 1 << 30),
        'T' => (&v[..v.len() - 1], 1 << 40),
        _ => (v, 1),
    };
    num.trim().parse::<f64>().ok().filter(|n| *n >= 0.0).map(|n| (n * mult as f64) as u64)
}

/// `memory_budget`, `GOMLX_CPU_MEMORY_BUDGET`: bytes the weights may take once
/// widened on the CPU; default half the memory this process may use.
pub fn memory_budget(o: &LoadOptions) -> u64 {
    o.memory_budget
        .or_else(|| std::env::var("GOMLX_CPU_MEMORY_BUDGET").ok().and_then(|v| parse_bytes(&v)))
        .unwrap_or_else(|| super::policy::usable_memory() / 2)
}

/// `widen`, `GOMLX_CPU_WEIGHTS=widened|stored`: widen floating matrices at load
/// on the CPU; default: when that fits the memory budget.
pub fn widen(o: &LoadOptions) -> Option<bool> {
    o.widen.or_else(|| match std::env::var("GOMLX_CPU_WEIGHTS").ok()?.trim() {
        "widened" | "widen" => Some(true),
        "stored" | "store" => Some(false),
        _ => None,
    })
}

/// `dequantize`, `GOMLX_CPU_DEQUANTIZE=1|0`: expand quantised matrices at load
/// on the CPU; default: as `widen`.
pub fn dequantize(o: &LoadOptions) -> Option<bool> {
    o.dequantize.or_else(|| env_flag("GOMLX_CPU_DEQUANTIZE"))
}

/// `fuse_projections`, `GOMLX_FUSE_PROJECTIONS=1|0`: one matmul for q/k/v;
/// default off (an open GPU oracle failure, docs/gpu.md).
pub fn fuse_projections(o: &LoadOptions) -> bool {
    o.fuse_projections.or_else(|| env_flag("GOMLX_FUSE_PROJECTIONS")).unwrap_or(false)
}

/// `compile`, `GOMLX_COMPILE=1|0`: the gated MLP activation as one compiled
/// kernel; default on GPUs (fewer graph nodes per step), off on the CPU (MLX
/// would JIT-compile C++ at run time).
pub fn compile(o: &LoadOptions, device: DeviceKind) -> bool {
    o.compile.or_else(|| env_flag("GOMLX_COMPILE")).unwrap_or(device == DeviceKind::Gpu)
}

/// `distributed`, `GOMLX_DISTRIBUTED=ring|nccl|mpi|jaccl|any`: split the
/// model over the MLX distributed group of that backend (tensor parallel,
/// docs/distributed.md); default off (also `off`, `none`, `0` or empty).
pub fn distributed(o: &LoadOptions) -> Option<String> {
    let v = o.distributed.clone().or_else(|| std::env::var("GOMLX_DISTRIBUTED").ok())?;
    let v = v.trim();
    (!matches!(v, "" | "off" | "none" | "0")).then(|| v.to_string())
}

/// `moe_split`, `GOMLX_MOE_SPLIT=columns|experts`: how a split model's
/// mixture-of-experts blocks divide over ranks (docs/distributed.md); default
/// columns, which fall back to whole experts where the expert width does not
/// divide (`shard::Shard::new_with`).
pub fn moe_split(o: &LoadOptions) -> MoeSplit {
    o.moe_split.or_else(|| MoeSplit::parse(&std::env::var("GOMLX_MOE_SPLIT").ok()?)).unwrap_or(MoeSplit::Columns)
}

/// `cpu_dense_qmm_rows`, `GOMLX_CPU_DENSE_QMM_ROWS`; `gpu_dense_qmm_rows`,
/// `GOMLX_GPU_DENSE_QMM_ROWS`; `cpu_split_out`, `GOMLX_CPU_SPLIT_OUT`: the
/// product thresholds (`strategy::Products`; 0 = never).
pub fn products(o: &LoadOptions) -> Products {
    let d = Products::default();
    let rows = |v: Option<usize>, env: &str, default: i64| match v.or_else(|| env_usize(env)) {
        Some(0) => i64::MAX,
        Some(n) => n as i64,
        None => default,
    };
    Products {
        cpu_dense_rows: rows(o.cpu_dense_qmm_rows, "GOMLX_CPU_DENSE_QMM_ROWS", d.cpu_dense_rows),
        gpu_dense_rows: rows(o.gpu_dense_qmm_rows, "GOMLX_GPU_DENSE_QMM_ROWS", d.gpu_dense_rows),
        cpu_split_out: rows(o.cpu_split_out, "GOMLX_CPU_SPLIT_OUT", d.cpu_split_out as i64).min(i32::MAX as i64) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_win_and_zero_means_never() {
        let o = LoadOptions { cpu_dense_qmm_rows: Some(0), gpu_dense_qmm_rows: Some(5), cpu_split_out: Some(64), compile: Some(false), ..Default::default() };
        assert_eq!(products(&o), Products { cpu_dense_rows: i64::MAX, gpu_dense_rows: 5, cpu_split_out: 64 });
        assert!(!compile(&o, DeviceKind::Gpu));
        assert_eq!(memory_budget(&LoadOptions { memory_budget: Some(7), ..Default::default() }), 7);
    }

    #[test]
    fn parses_budgets() {
        assert_eq!(parse_bytes("1024"), Some(1024));
        assert_eq!(parse_bytes("2G"), Some(2 << 30));
        assert_eq!(parse_bytes("1.5g"), Some(3 << 29));
        assert_eq!(parse_bytes("x"), None);
        assert_eq!(parse_bytes("-1"), None);
    }
}
