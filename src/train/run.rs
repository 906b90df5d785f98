//! A whole fine-tuning run from paths: load the model and tokenizer, read the
//! JSONL data, add (or resume) adapters, train, save, optionally fuse. Shared
//! by the `gomlx lora` command (`cli`) and the C ABI (`gm_lora_train`).

use super::{adapters, data, lora, Control, DataOptions, FuseMode, Progress, TrainConfig, TrainReport};
use crate::models::{LoadOptions, Model};
use crate::text::Tokenizer;
use crate::{Error, Result};
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub model: PathBuf,
    /// A directory with train.jsonl (and valid.jsonl), or one JSONL file.
    pub data: PathBuf,
    pub train: TrainConfig,
    pub data_options: DataOptions,
    /// Continue from adapters saved earlier (their config wins over `train.lora`).
    pub resume_adapter: Option<PathBuf>,
    /// After training, merge the adapters and write a model directory here.
    pub fuse_to: Option<PathBuf>,
    pub fuse_mode: FuseMode,
    /// Compute dtype of the base model (None: the checkpoint's).
    pub dtype: Option<crate::mlx::Dtype>,
}

impl RunOptions {
    pub fn new(model: impl Into<PathBuf>, data: impl Into<PathBuf>) -> RunOptions {
        RunOptions {
            model: model.into(),
            data: data.into(),
            train: TrainConfig::default(),
            data_options: DataOptions::default(),
            resume_adapter: None,
            fuse_to: None,
            fuse_mode: FuseMode::default(),
            dtype: None,
        }
    }
}

/// Runs training end to end; `progress` may stop it early (adapters are still saved).
pub fn run(opts: &RunOptions, progress: impl FnMut(&Progress) -> Control) -> Result<TrainReport> {
    if opts.train.adapter_path.is_none() && opts.fuse_to.is_none() {
        return Err(Error::InvalidArgument("nowhere to save the result: give an adapter path or a fuse directory".into()));
    }
    // QLoRA: a quantised base stays quantised (and frozen) whatever the device policy.
    let mut model = Model::load(&opts.model, &LoadOptions { dtype: opts.dtype, dequantize: Some(false), ..Default::default() })?;
    let tok = Tokenizer::from_dir(&opts.model)?;
    let (train_set, valid_set) = data::load_data(&opts.data, &tok, &opts.data_options)?;
    if let Some(dir) = &opts.resume_adapter {
        adapters::load_adapters(&mut model, dir, Some(opts.train.lora.dtype))?;
    } else {
        lora::apply_lora(&mut model, &opts.train.lora)?;
    }
    let cfg = &opts.train;
    let report = super::train(&mut model, &train_set, valid_set.as_deref(), cfg, progress)?;
    if let Some(out) = &opts.fuse_to {
        adapters::fuse(&model, &opts.model, out, opts.fuse_mode)?;
    }
    Ok(report)
}
