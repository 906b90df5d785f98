//! Batch generation's result type. N prompts are N rows of the continuous
//! batch (`scheduler`), submitted together and collected in order
//! (`Engine::batch_generate`), so they interleave with every other stream.

use super::FinishReason;

/// One prompt's result.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Output {
    pub text: String,
    pub tokens: Vec<u32>,
    pub finish_reason: FinishReason,
}
