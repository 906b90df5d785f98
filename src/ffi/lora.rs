//! `gm_lora_train`: LoRA fine-tuning through the C ABI (see docs/training.md).
#![allow(non_camel_case_types)]

use super::{c_str, guard_status, read_opts, write_sized, SizedStruct};
use crate::mlx::Dtype;
use crate::train::run::{run, RunOptions};
use crate::train::{Control, FuseMode};
use crate::Result;
use std::ffi::{c_char, c_void};
use std::path::PathBuf;

/// Options of `gm_lora_train`. Zero-initialise, set `struct_size = sizeof(gm_lora_options)`,
/// then set what you need: a zero field takes the default given beside it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct gm_lora_options {
    /// `sizeof(gm_lora_options)`, so the struct can grow.
    pub struct_size: usize,
    /// Directory for adapters.safetensors + adapter_config.json (required unless `fuse_path`).
    pub adapter_path: *const c_char,
    /// When set, the fused model directory written after training.
    pub fuse_path: *const c_char,
    /// When set, adapters to continue training from.
    pub resume_path: *const c_char,
    /// Comma-separated projections (q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj); NULL: q_proj,v_proj.
    pub targets: *const c_char,
    /// Training steps (100).
    pub iters: u32,
    /// Examples per step (4).
    pub batch_size: u32,
    /// LoRA rank (8).
    pub rank: u32,
    /// Adapt the last N blocks (0: all).
    pub num_layers: u32,
    /// Peak learning rate (1e-5).
    pub learning_rate: f32,
    /// LoRA scale (20); ignored when `alpha` > 0.
    pub scale: f32,
    /// scale = alpha / rank when > 0.
    pub alpha: f32,
    /// LoRA dropout (0).
    pub dropout: f32,
    /// AdamW weight decay (0.01 when 0; use a tiny value for none).
    pub weight_decay: f32,
    /// Clip gradients to this global norm (0: no clipping).
    pub grad_clip: f32,
    /// Linear warm-up steps (0).
    pub warmup: u32,
    /// Non-zero: cosine decay to `min_lr` after warm-up.
    pub cosine: i32,
    pub min_lr: f32,
    /// Maximum tokens per example (2048).
    pub max_seq_length: u32,
    /// Non-zero: recompute activations per block in the backward pass.
    pub grad_checkpoint: i32,
    /// Non-zero: train on completions only.
    pub mask_prompt: i32,
    /// Non-zero: LoRA weights in bfloat16 (else float32).
    pub lora_bf16: i32,
    /// Non-zero: fuse quantised projections into dense weights.
    pub fuse_dequantize: i32,
    /// Validate every N steps when a valid.jsonl exists (0: 200).
    pub val_every: u32,
    /// Save adapters every N steps (0: 100).
    pub save_every: u32,
    pub seed: u64,
}

impl SizedStruct for gm_lora_options {
    const NAME: &'static str = "gm_lora_options";
}

/// What the progress callback receives after each step (owned by the
/// library, valid during the callback only).
#[repr(C)]
pub struct gm_lora_progress {
    /// `sizeof(gm_lora_progress)` as this library fills it; a caller built
    /// with a newer header reads only the fields that lie below it.
    pub struct_size: usize,
    pub step: u32,
    pub iters: u32,
    pub loss: f32,
    /// NaN when no validation ran this step.
    pub val_loss: f32,
    pub learning_rate: f32,
    pub grad_norm: f32,
    pub tokens_per_second: f64,
    pub trained_tokens: u64,
    pub peak_memory: u64,
    pub active_memory: u64,
}

/// Called after every step with `user_data`; return non-zero to stop training
/// (adapters are still saved). Runs on the thread that called `gm_lora_train`.
pub type gm_lora_progress_fn = Option<unsafe extern "C" fn(progress: *const gm_lora_progress, user_data: *mut c_void) -> i32>;

/// The outcome of `gm_lora_train`. The caller owns the struct and sets
/// `struct_size = sizeof(gm_lora_result)`.
#[repr(C)]
pub struct gm_lora_result {
    pub struct_size: usize,
    pub steps: u32,
    /// Non-zero when the callback stopped training early.
    pub stopped_early: i32,
    pub first_loss: f32,
    pub last_loss: f32,
    /// NaN without validation data.
    pub last_val_loss: f32,
    pub trained_tokens: u64,
    pub seconds: f64,
    pub peak_memory: u64,
}

fn opt_path(p: *const c_char, what: &str) -> Result<Option<PathBuf>> {
    if p.is_null() {
        Ok(None)
    } else {
        Ok(Some(PathBuf::from(c_str(p, what)?)))
    }
}

/// Sets `field` to `v` unless `v` is zero (the C options' "default").
fn set<T: PartialEq + Default>(field: &mut T, v: T) {
    if v != T::default() {
        *field = v;
    }
}

impl SizedStruct for gm_lora_result {
    const NAME: &'static str = "gm_lora_result";
}

fn options(model: &str, data: &str, o: &gm_lora_options) -> Result<RunOptions> {
    let mut r = RunOptions::new(model, data);
    r.train.adapter_path = opt_path(o.adapter_path, "adapter_path")?;
    r.fuse_to = opt_path(o.fuse_path, "fuse_path")?;
    r.resume_adapter = opt_path(o.resume_path, "resume_path")?;
    if !o.targets.is_null() {
        r.train.lora.targets = c_str(o.targets, "targets")?.split(',').map(|s| s.trim().to_string()).collect();
    }
    // Zero fields keep the library's defaults (`TrainConfig`, `LoraConfig`).
    let t = &mut r.train;
    set(&mut t.iters, o.iters as usize);
    set(&mut t.batch_size, o.batch_size as usize);
    set(&mut t.lora.rank, o.rank as i32);
    let l = &mut t.lora;
    l.num_layers = if o.num_layers == 0 { None } else { Some(o.num_layers as usize) };
    if o.alpha > 0.0 {
        l.scale = o.alpha / l.rank as f32;
    } else {
        set(&mut l.scale, o.scale);
    }
    l.dropout = o.dropout;
    l.dtype = if o.lora_bf16 != 0 { Dtype::BF16 } else { Dtype::F32 };
    l.seed = o.seed;
    set(&mut t.adamw.weight_decay, o.weight_decay);
    t.grad_clip = if o.grad_clip > 0.0 { Some(o.grad_clip) } else { None };
    let lr = if o.learning_rate != 0.0 { o.learning_rate } else { t.schedule.lr };
    t.set_schedule(lr, o.warmup as usize, o.cosine != 0, o.min_lr);
    set(&mut t.max_seq_length, o.max_seq_length as usize);
    t.grad_checkpoint = o.grad_checkpoint != 0;
    r.data_options.mask_prompt = o.mask_prompt != 0;
    r.fuse_mode = if o.fuse_dequantize != 0 { FuseMode::Dequantize } else { FuseMode::Requantize };
    set(&mut r.train.val_every, o.val_every as usize);
    set(&mut r.train.save_every, o.save_every as usize);
    r.train.seed = o.seed;
    Ok(r)
}

/// Fine-tunes LoRA adapters of the model in `model_dir` (config.json,
/// safetensors, tokenizer.json) on `data_path` (a directory with train.jsonl and
/// optionally valid.jsonl, or one JSONL file in mlx-lm's text,
/// prompt/completion or messages format), saving them in mlx-lm's adapter
/// format to `opts->adapter_path` and, with `opts->fuse_path`, a fused model.
///
/// `opts` may be NULL for the defaults (which have nowhere to save, so it
/// fails); its strings are read during the call only. `progress` (may be
/// NULL) is called after each step with `user_data`; returning non-zero stops
/// after that step (adapters are still saved, `stopped_early` is set).
/// `out` (may be NULL; else its `struct_size` set) receives the summary.
/// Returns 0, or -1 with `gm_last_error()` set (bad options, a missing model
/// or data file, a loss that is not finite, ...). Blocks the calling thread
/// for the whole run and does its MLX work on it.
///
/// # Safety
/// Strings must be NUL-terminated; `opts`, when not NULL, must point to a
/// `gm_lora_options` whose `struct_size` is set; `out`, when not NULL, must
/// be writable.
#[no_mangle]
pub unsafe extern "C" fn gm_lora_train(
    model_dir: *const c_char,
    data_path: *const c_char,
    opts: *const gm_lora_options,
    progress: gm_lora_progress_fn,
    user_data: *mut c_void,
    out: *mut gm_lora_result,
) -> i32 {
    guard_status(|| {
        let model = c_str(model_dir, "model_dir")?;
        let data = c_str(data_path, "data_path")?;
        let o = read_opts(opts)?.unwrap_or_else(default_options);
        let o = options(model, data, &o)?;
        if !out.is_null() {
            // A bad struct_size is an error before hours of training, not after.
            super::check_size(out as *const gm_lora_result)?;
        }
        let report = run(&o, |p| {
            let Some(cb) = progress else { return Control::Continue };
            let c = gm_lora_progress {
                struct_size: std::mem::size_of::<gm_lora_progress>(),
                step: p.step as u32,
                iters: p.iters as u32,
                loss: p.loss,
                val_loss: p.val_loss.unwrap_or(f32::NAN),
                learning_rate: p.learning_rate,
                grad_norm: p.grad_norm,
                tokens_per_second: p.tokens_per_second,
                trained_tokens: p.trained_tokens as u64,
                peak_memory: p.peak_memory as u64,
                active_memory: p.active_memory as u64,
            };
            if unsafe { cb(&c, user_data) } != 0 {
                Control::Stop
            } else {
                Control::Continue
            }
        })?;
        if !out.is_null() {
            write_sized(
                out,
                "out",
                gm_lora_result {
                    struct_size: 0,
                    steps: report.steps as u32,
                    stopped_early: report.stopped_early as i32,
                    first_loss: report.first_loss,
                    last_loss: report.last_loss,
                    last_val_loss: report.last_val_loss.unwrap_or(f32::NAN),
                    trained_tokens: report.trained_tokens as u64,
                    seconds: report.seconds,
                    peak_memory: report.peak_memory as u64,
                },
            )?;
        }
        Ok(())
    })
}

/// The all-zero options (every field its default), as a NULL `opts` means.
fn default_options() -> gm_lora_options {
    gm_lora_options {
        struct_size: std::mem::size_of::<gm_lora_options>(),
        adapter_path: std::ptr::null(),
        fuse_path: std::ptr::null(),
        resume_path: std::ptr::null(),
        targets: std::ptr::null(),
        iters: 0,
        batch_size: 0,
        rank: 0,
        num_layers: 0,
        learning_rate: 0.0,
        scale: 0.0,
        alpha: 0.0,
        dropout: 0.0,
        weight_decay: 0.0,
        grad_clip: 0.0,
        warmup: 0,
        cosine: 0,
        min_lr: 0.0,
        max_seq_length: 0,
        grad_checkpoint: 0,
        mask_prompt: 0,
        lora_bf16: 0,
        fuse_dequantize: 0,
        val_every: 0,
        save_every: 0,
        seed: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_error() -> String {
        unsafe { std::ffi::CStr::from_ptr(crate::ffi::gm_last_error()) }.to_string_lossy().into_owned()
    }

    #[test]
    fn bad_arguments_are_errors() {
        let opts = gm_lora_options { adapter_path: c"/nonexistent/adapters".as_ptr(), ..default_options() };
        let rc = unsafe { gm_lora_train(std::ptr::null(), c"x".as_ptr(), &opts, None, std::ptr::null_mut(), std::ptr::null_mut()) };
        assert_eq!(rc, -1);
        assert!(last_error().contains("model_dir is NULL"), "{}", last_error());
        let small = gm_lora_options { struct_size: 8, ..opts };
        let rc = unsafe { gm_lora_train(c"/nonexistent".as_ptr(), c"x".as_ptr(), &small, None, std::ptr::null_mut(), std::ptr::null_mut()) };
        assert_eq!(rc, -1);
        assert!(last_error().contains("gm_lora_options.struct_size is 8"), "{}", last_error());
        let rc = unsafe { gm_lora_train(c"/nonexistent".as_ptr(), c"x".as_ptr(), &opts, None, std::ptr::null_mut(), std::ptr::null_mut()) };
        assert_eq!(rc, -1);
        assert!(last_error().contains("/nonexistent"), "{}", last_error());
        // NULL options are the defaults, which have nowhere to save.
        let rc = unsafe { gm_lora_train(c"/nonexistent".as_ptr(), c"x".as_ptr(), std::ptr::null(), None, std::ptr::null_mut(), std::ptr::null_mut()) };
        assert_eq!(rc, -1);
        assert!(last_error().contains("nowhere to save"), "{}", last_error());
        let mut small_out = std::mem::MaybeUninit::<gm_lora_result>::zeroed();
        unsafe { (*small_out.as_mut_ptr()).struct_size = 4 };
        let rc = unsafe { gm_lora_train(c"/nonexistent".as_ptr(), c"x".as_ptr(), &opts, None, std::ptr::null_mut(), small_out.as_mut_ptr()) };
        assert_eq!(rc, -1);
        assert!(last_error().contains("gm_lora_result.struct_size is 4"), "{}", last_error());
        let o = options("m", "d", &opts).unwrap();
        assert_eq!((o.train.iters, o.train.batch_size, o.train.lora.rank, o.train.lora.scale), (100, 4, 8, 20.0));
    }
}
