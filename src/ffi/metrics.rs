//! Finish reasons and the caller-owned metrics structs.

use super::{write_sized, SizedStruct};
use crate::engine::{BatchMetrics, FinishReason, Metrics};
use crate::Result;

/// The generation has not finished yet.
pub const GM_FINISH_NONE: i32 = 0;
/// An end-of-sequence token was generated (it is not handed out).
pub const GM_FINISH_EOS: i32 = 1;
/// `max_tokens` (or the context length) was reached.
pub const GM_FINISH_LENGTH: i32 = 2;
/// A stop string was generated (it is not part of the text).
pub const GM_FINISH_STOP: i32 = 3;
/// `gm_generation_cancel` was called (or the handle freed).
pub const GM_FINISH_CANCELLED: i32 = 4;
/// The generation ended with an error (`gm_generate_next` returned -1).
pub const GM_FINISH_ERROR: i32 = 5;

pub(crate) fn finish_code(r: FinishReason) -> i32 {
    match r {
        FinishReason::Eos => GM_FINISH_EOS,
        FinishReason::Length => GM_FINISH_LENGTH,
        FinishReason::Stop => GM_FINISH_STOP,
        FinishReason::Cancelled => GM_FINISH_CANCELLED,
    }
}

/// How one generation went (`gm_generation_metrics`). The caller owns it and
/// sets `struct_size = sizeof(gm_metrics)` before the call.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct gm_metrics {
    pub struct_size: usize,
    /// One of `GM_FINISH_*`.
    pub finish_reason: i32,
    pub prompt_tokens: usize,
    /// Prompt tokens actually evaluated (fewer when a session's cache was reused).
    pub prompt_tokens_evaluated: usize,
    /// Tokens generated, counting an end-of-sequence token that ended the
    /// generation (which `gm_generate_next` does not hand out).
    pub generated_tokens: usize,
    pub time_to_first_token_s: f64,
    pub prefill_s: f64,
    pub prefill_tokens_per_s: f64,
    pub decode_s: f64,
    pub decode_tokens_per_s: f64,
    /// MLX peak and active memory (process-wide) when the generation ended.
    pub peak_memory_bytes: usize,
    pub active_memory_bytes: usize,
}

impl SizedStruct for gm_metrics {
    const NAME: &'static str = "gm_metrics";
}

pub(crate) fn write_metrics(out: *mut gm_metrics, reason: i32, m: &Metrics) -> Result<()> {
    write_sized(
        out,
        "metrics",
        gm_metrics {
            struct_size: 0,
            finish_reason: reason,
            prompt_tokens: m.prompt_tokens,
            prompt_tokens_evaluated: m.prompt_tokens_evaluated,
            generated_tokens: m.generated_tokens,
            time_to_first_token_s: m.time_to_first_token_s,
            prefill_s: m.prefill_s,
            prefill_tokens_per_s: m.prefill_tokens_per_s,
            decode_s: m.decode_s,
            decode_tokens_per_s: m.decode_tokens_per_s,
            peak_memory_bytes: m.peak_memory_bytes,
            active_memory_bytes: m.active_memory_bytes,
        },
    )
}

/// How one classify or batch-generate call went. The caller owns it and sets
/// `struct_size = sizeof(gm_batch_metrics)` before the call.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct gm_batch_metrics {
    pub struct_size: usize,
    pub prompts: usize,
    pub prompt_tokens: usize,
    /// Tokens shared by every prompt and evaluated once (classify).
    pub shared_prefix_tokens: usize,
    pub generated_tokens: usize,
    pub batches: usize,
    pub total_s: f64,
    pub prompts_per_s: f64,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    pub peak_memory_bytes: usize,
    pub active_memory_bytes: usize,
}

impl SizedStruct for gm_batch_metrics {
    const NAME: &'static str = "gm_batch_metrics";
}

/// Checks an optional metrics out-pointer before the work starts.
pub(crate) fn check_batch_metrics(out: *mut gm_batch_metrics) -> Result<()> {
    if out.is_null() {
        return Ok(());
    }
    write_sized(out, "metrics", gm_batch_metrics::default())
}

pub(crate) fn write_batch_metrics(out: *mut gm_batch_metrics, m: &BatchMetrics) -> Result<()> {
    if out.is_null() {
        return Ok(());
    }
    write_sized(
        out,
        "metrics",
        gm_batch_metrics {
            struct_size: 0,
            prompts: m.prompts,
            prompt_tokens: m.prompt_tokens,
            shared_prefix_tokens: m.shared_prefix_tokens,
            generated_tokens: m.generated_tokens,
            batches: m.batches,
            total_s: m.total_s,
            prompts_per_s: m.prompts_per_s,
            prefill_tokens_per_s: m.prefill_tokens_per_s,
            decode_tokens_per_s: m.decode_tokens_per_s,
            peak_memory_bytes: m.peak_memory_bytes,
            active_memory_bytes: m.active_memory_bytes,
        },
    )
}
