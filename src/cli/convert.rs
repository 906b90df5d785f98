//! `gomlx convert`: a GGUF file → a Hugging Face style directory that gomlx and
//! mlx-lm both load (`models::convert`, which documents the layout). `--dtype`
//! defaults to bf16 when dequantising and to f32 when quantised (`--q-bits`,
//! `--keep-quant`).

use super::{bar, out, usage, CliResult, DtypeArg};
use clap::builder::TypedValueParser as _;
use gomlx::models::convert::{convert, Mode, Plan};
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The GGUF file to convert.
    #[arg(long, value_name = "FILE")]
    pub gguf: PathBuf,
    /// Output directory (created; files in it are replaced).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Dtype of the float tensors and of scales/biases (default: bf16 when dequantising,
    /// f32 with --q-bits or --keep-quant).
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeArg>,
    /// Re-quantise every Linear and the embedding to this many bits (MLX affine).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["2", "3", "4", "5", "6", "8"]).map(|s| s.parse::<i32>().unwrap()))]
    pub q_bits: Option<i32>,
    /// Group size of --q-bits.
    #[arg(long, default_value_t = 64, value_parser = clap::builder::PossibleValuesParser::new(["32", "64", "128"]).map(|s| s.parse::<i32>().unwrap()))]
    pub q_group: i32,
    /// Keep the file's quantised blocks as MLX affine arrays (lossless) instead of dequantising.
    #[arg(long, conflicts_with = "q_bits")]
    pub keep_quant: bool,
}

pub fn plan_of(a: &Args) -> CliResult<Plan> {
    let mode = match (a.q_bits, a.keep_quant) {
        (Some(bits), false) => Mode::Quantize { bits, group: a.q_group },
        (None, true) => Mode::Keep,
        (None, false) => Mode::Dequantize,
        (Some(_), true) => return Err(usage("--keep-quant and --q-bits exclude each other")),
    };
    Ok(Plan::new(mode, a.dtype.map(DtypeArg::dtype)))
}

pub fn run(a: Args) -> CliResult {
    let plan = plan_of(&a)?;
    let mut pb = None;
    let name = a.gguf.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let c = convert(&a.gguf, &a.out, plan, &mut |done, total| {
        let pb = pb.get_or_insert_with(|| bar(total as u64, format!("converting {name}")));
        if let Some(pb) = pb {
            pb.set_position(done as u64);
            if done == total {
                pb.finish_and_clear();
            }
        }
        true
    })?;
    let mode = match plan.mode {
        Mode::Dequantize => "dequantize".to_string(),
        Mode::Keep => "keep".to_string(),
        Mode::Quantize { bits, group } => format!("q{bits}g{group}"),
    };
    out(&format!("{}\n", json!({"out": a.out, "tensors": c.tensors, "model_bytes": c.bytes, "seconds": c.seconds, "dtype": plan.dtype.name(), "mode": mode})))
}
