//! Per-request and per-batch measurements.

use serde::Serialize;
use std::time::Instant;

/// How one generation went.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Metrics {
    pub prompt_tokens: usize,
    /// Prompt tokens actually evaluated (fewer when a session's cache was reused).
    pub prompt_tokens_evaluated: usize,
    pub generated_tokens: usize,
    /// From the request reaching the engine to the first token handed out.
    pub time_to_first_token_s: f64,
    pub prefill_s: f64,
    pub prefill_tokens_per_s: f64,
    pub decode_s: f64,
    pub decode_tokens_per_s: f64,
    /// Where decode time went, summed over the decode steps (profiling): building
    /// each step's graph on the host (model and sampler ops through mlx-c), queuing
    /// it (`async_eval`: MLX's scheduling and kernel encoding on the host), and
    /// waiting for each token's value (device compute not yet hidden behind the
    /// host work). The rest of `decode_s` is detokenizing and handing tokens over.
    pub decode_build_s: f64,
    pub decode_queue_s: f64,
    pub decode_wait_s: f64,
    /// Constrained decoding: host seconds spent computing token masks, and how
    /// many were computed (one per generated token but the last).
    pub constraint_mask_s: f64,
    pub constraint_masks: usize,
    /// The most generations that decoded in one step with this one (continuous batching).
    pub batch_rows_max: usize,
    pub peak_memory_bytes: usize,
    pub active_memory_bytes: usize,
}

/// How one classify or batch-generate call went.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BatchMetrics {
    pub prompts: usize,
    pub prompt_tokens: usize,
    /// Tokens shared by every prompt and evaluated once.
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

impl BatchMetrics {
    /// Adds the counts of a part of the same call (a classify job).
    pub(crate) fn merge(&mut self, part: &BatchMetrics) {
        self.prompts += part.prompts;
        self.prompt_tokens += part.prompt_tokens;
        self.shared_prefix_tokens = self.shared_prefix_tokens.max(part.shared_prefix_tokens);
        self.generated_tokens += part.generated_tokens;
        self.batches += part.batches;
        self.peak_memory_bytes = self.peak_memory_bytes.max(part.peak_memory_bytes);
        self.active_memory_bytes = part.active_memory_bytes;
    }

    /// Sets the wall time of the whole call and the rates over it.
    pub(crate) fn finish(&mut self, total_s: f64) {
        self.total_s = total_s;
        self.prompts_per_s = rate(self.prompts, total_s);
        self.prefill_tokens_per_s = rate(self.prompt_tokens, total_s);
        self.decode_tokens_per_s = rate(self.generated_tokens, total_s);
    }
}

pub(crate) fn rate(n: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}

pub(crate) fn since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}
