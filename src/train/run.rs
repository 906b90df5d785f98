//! A whole fine-tuning run from paths: load the model and tokenizer (a model
//! directory or a `.gguf` file), read the JSONL data, add (or resume) adapters,
//! train, save, optionally fuse. Shared by the `gomlx lora` command and the C
//! ABI (`gm_lora_train`).

use super::{data, Control, DataOptions, FuseMode, Progress, TrainConfig, TrainReport};
use crate::models::{adapters, lora, LoadOptions};
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
    let loaded = crate::models::load(&opts.model, &LoadOptions { dtype: opts.dtype, dequantize: Some(false), ..Default::default() })?;
    let mut model = loaded.model;
    let tok = loaded.tokenizer.ok_or_else(|| Error::Tokenizer(format!("{}: training needs the model's tokenizer (tokenizer.json)", opts.model.display())))?;
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
