//! `gm_convert`: a GGUF file → a Hugging Face style model directory that
//! gomlx and mlx-lm load (`models::convert`).

use super::{c_str, guard_status, invalid, opt_c_str, read_opts, SizedStruct};
use crate::mlx::Dtype;
use crate::models::convert::{convert, Mode, Plan};
use std::ffi::{c_char, c_void};
use std::path::Path;

/// `gm_convert_options.mode`: dequantise every tensor (the default).
pub const GM_CONVERT_DEQUANTIZE: i32 = 0;
/// `gm_convert_options.mode`: re-quantise Linear/embedding weights with MLX
/// affine quantisation (`bits`, `group_size`), as `mlx_lm.convert -q` does.
pub const GM_CONVERT_QUANTIZE: i32 = 1;
/// `gm_convert_options.mode`: keep MLX-representable quantised blocks bit for bit.
pub const GM_CONVERT_KEEP: i32 = 2;

/// How to convert (`gm_convert`). Zero-initialise, set `struct_size =
/// sizeof(gm_convert_options)`, then set what you need.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct gm_convert_options {
    pub struct_size: usize,
    /// `GM_CONVERT_DEQUANTIZE` (0), `GM_CONVERT_QUANTIZE` or `GM_CONVERT_KEEP`.
    pub mode: i32,
    /// Dtype of float tensors and scales/biases ("bfloat16", "float16",
    /// "float32"); NULL: bfloat16 when dequantising, float32 otherwise.
    pub dtype: *const c_char,
    /// `GM_CONVERT_QUANTIZE`: bits (2, 3, 4, 5, 6, 8; 0 = 4) and group size (32, 64, 128; 0 = 64).
    pub bits: i32,
    pub group_size: i32,
}

impl SizedStruct for gm_convert_options {
    const NAME: &'static str = "gm_convert_options";
}

/// Called after each tensor with (tensors done, tensors in all, user_data);
/// returning non-zero stops the conversion (`gm_convert` then fails).
pub type gm_convert_progress_fn = Option<unsafe extern "C" fn(done: usize, total: usize, user_data: *mut c_void) -> i32>;

/// Converts the GGUF file `gguf_path` into the directory `out_dir` (created;
/// its files replaced): config.json, model.safetensors, tokenizer.json and
/// tokenizer_config.json. `opts` may be NULL for the defaults; `progress` may
/// be NULL. Strings are read during the call only. Returns 0, or -1 with
/// `gm_last_error()` set (a missing or malformed file, an unsupported
/// architecture, bad options, stopped by `progress`). Blocks the calling
/// thread and does its MLX work on it.
///
/// # Safety
/// Strings must be NUL-terminated; `opts`, when not NULL, must point to a
/// `gm_convert_options` whose `struct_size` is set.
#[no_mangle]
pub unsafe extern "C" fn gm_convert(
    gguf_path: *const c_char,
    out_dir: *const c_char,
    opts: *const gm_convert_options,
    progress: gm_convert_progress_fn,
    user_data: *mut c_void,
) -> i32 {
    guard_status(|| {
        let gguf = c_str(gguf_path, "gguf_path")?;
        let out = c_str(out_dir, "out_dir")?;
        let o = read_opts(opts)?;
        let (mode, dtype) = match o {
            None => (Mode::Dequantize, None),
            Some(o) => {
                let mode = match o.mode {
                    GM_CONVERT_DEQUANTIZE => Mode::Dequantize,
                    GM_CONVERT_QUANTIZE => {
                        Mode::Quantize { bits: if o.bits == 0 { 4 } else { o.bits }, group: if o.group_size == 0 { 64 } else { o.group_size } }
                    }
                    GM_CONVERT_KEEP => Mode::Keep,
                    other => {
                        return Err(invalid(format!(
                            "gm_convert_options.mode is {other} (expected GM_CONVERT_DEQUANTIZE, GM_CONVERT_QUANTIZE or GM_CONVERT_KEEP)"
                        )))
                    }
                };
                (mode, opt_c_str(o.dtype, "gm_convert_options.dtype")?.map(Dtype::parse).transpose()?)
            }
        };
        let _gpu = crate::mlx::gpu_guard();
        let mut report = |done: usize, total: usize| keep_going(progress, done, total, user_data);
        convert(Path::new(gguf), Path::new(out), Plan::new(mode, dtype), &mut report).map(|_| ())
    })
}

/// Calls the caller's progress callback, if any: whether to go on.
fn keep_going(progress: gm_convert_progress_fn, done: usize, total: usize, user_data: *mut c_void) -> bool {
    match progress {
        // SAFETY: the caller's function, called as documented with its own user_data.
        Some(cb) => unsafe { cb(done, total, user_data) == 0 },
        None => true,
    }
}
