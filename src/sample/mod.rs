//! Logits processors and samplers, all on the MLX device.
//!
//! A [`Sampler`] turns the last-position logits of a batch, `[B, V]`, into one
//! token per row, `[B]` (`uint32`), and — when asked — the chosen token's
//! log-probability `[B]` and the top-n alternatives (`[B, n]` ids and
//! log-probabilities). Nothing is copied to the host: the result is a set of
//! lazy MLX arrays the engine evaluates (or `async_eval`s) when it wants.
//!
//! The order follows mlx-lm 0.32.2 (`generate_step` + `sample_utils`):
//!
//! 1. logits processors, on float32 logits: logit bias, repetition penalty
//!    (over the last `repetition_context_size` observed tokens), presence and
//!    frequency penalties (over the generated tokens);
//! 2. `logprobs = logits - logsumexp(logits)` (what `logprobs` / `top_logprobs`
//!    report: processed, before filters and temperature);
//! 3. temperature 0: `argmax`; otherwise the filters top-p, min-p, top-k on the
//!    log-probabilities, then `categorical(logprobs / temperature)` with a key
//!    split from the sampler's PRNG key.
//!
//! The token history the penalties need lives on the device too: a `[B, W]`
//! window of the last `W <= repetition_context_size` tokens and a `[B, V]`
//! count of generated tokens, each kept only when its penalty is enabled.
//! [`Sampler::sample`] records the tokens it chooses; prompt tokens are fed
//! with [`Sampler::observe_prompt`] and tokens chosen elsewhere with
//! [`Sampler::observe`]. See docs/sampling.md.

mod constraint;

pub use constraint::{mask_array, Constraint, ConstraintState, Grammars, TokenMask};

use crate::mlx::{self, random, Array, Dtype};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// How the next token is chosen. `Default` is greedy with no processors.
///
/// Off values: `temperature` 0 (greedy), `top_k` 0, `top_p` 1.0, `min_p` 0,
/// `repetition_penalty` 1.0, `presence_penalty` / `frequency_penalty` 0,
/// empty `logit_bias`. With temperature 0 the filters (top-k/p, min-p) have
/// no effect, as in mlx-lm; the processors still apply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplerConfig {
    /// Softmax temperature; 0 chooses the arg-max (greedy).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 (or >= vocab) = off.
    pub top_k: usize,
    /// Nucleus sampling: keep the smallest set of most likely tokens whose
    /// mass reaches `top_p`; in (0, 1], 1.0 = off.
    pub top_p: f32,
    /// Keep tokens with probability >= `min_p` × the top token's; in [0, 1], 0 = off.
    pub min_p: f32,
    /// The min-p filter always keeps at least this many tokens (>= 1).
    pub min_tokens_to_keep: usize,
    /// CTRL-style penalty (> 0; 1.0 = off): at tokens in the window, positive
    /// logits are divided by it and negative ones multiplied.
    pub repetition_penalty: f32,
    /// How many of the most recent observed tokens (prompt and generated) the
    /// repetition penalty looks at (>= 1).
    pub repetition_context_size: usize,
    /// OpenAI `presence_penalty`: `logit -= presence_penalty` for every token
    /// generated at least once.
    pub presence_penalty: f32,
    /// OpenAI `frequency_penalty`: `logit -= frequency_penalty × count` over the
    /// generated tokens.
    pub frequency_penalty: f32,
    /// Added to the logits of the given token ids (duplicates add up);
    /// `-inf` bans a token.
    pub logit_bias: Vec<(u32, f32)>,
    /// PRNG seed; the same seed gives the same tokens. `None`: from the clock.
    pub seed: Option<u64>,
    /// Return the chosen token's log-probability.
    pub logprobs: bool,
    /// Also return this many most likely alternatives (requires `logprobs`).
    pub top_logprobs: usize,
    /// What the output must be (JSON Schema, regex, grammar, choices); the
    /// engine masks every other token to `-inf` before the processors. None: free text.
    pub constraint: Option<Constraint>,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            min_tokens_to_keep: 1,
            repetition_penalty: 1.0,
            repetition_context_size: 20,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: None,
            logprobs: false,
            top_logprobs: 0,
            constraint: None,
        }
    }
}

fn invalid(field: &str, what: &str, got: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("{field} {what} (got {got})"))
}

impl SamplerConfig {
    /// Greedy decoding (the default).
    pub fn greedy() -> Self {
        Self::default()
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        let t = self.temperature;
        if !t.is_finite() || t < 0.0 {
            return Err(invalid("temperature", "must be a finite number >= 0", t));
        }
        let p = self.top_p;
        if !(p > 0.0 && p <= 1.0) {
            return Err(invalid("top_p", "must be in (0, 1]", p));
        }
        let m = self.min_p;
        if !(0.0..=1.0).contains(&m) {
            return Err(invalid("min_p", "must be in [0, 1]", m));
        }
        if self.min_tokens_to_keep < 1 {
            return Err(invalid("min_tokens_to_keep", "must be >= 1", self.min_tokens_to_keep));
        }
        let r = self.repetition_penalty;
        if !r.is_finite() || r <= 0.0 {
            return Err(invalid("repetition_penalty", "must be a finite number > 0", r));
        }
        if self.repetition_context_size < 1 || self.repetition_context_size > i32::MAX as usize {
            return Err(invalid("repetition_context_size", "must be >= 1", self.repetition_context_size));
        }
        if !self.presence_penalty.is_finite() {
            return Err(invalid("presence_penalty", "must be finite", self.presence_penalty));
        }
        if !self.frequency_penalty.is_finite() {
            return Err(invalid("frequency_penalty", "must be finite", self.frequency_penalty));
        }
        for &(id, b) in &self.logit_bias {
            if b.is_nan() || b == f32::INFINITY {
                return Err(invalid("logit_bias", &format!("of token {id} must be finite or -inf"), b));
            }
        }
        if self.top_logprobs > 0 && !self.logprobs {
            return Err(invalid("top_logprobs", "requires logprobs = true", self.top_logprobs));
        }
        if let Some(c) = &self.constraint {
            c.validate()?;
        }
        Ok(())
    }

    /// Checks what depends on the vocabulary: every `logit_bias` id is in it,
    /// and the biases leave at least one token that can be chosen (a bias of
    /// -inf on every token is an error, not token 0).
    pub fn validate_for_vocab(&self, vocab_size: usize) -> Result<()> {
        self.validate()?;
        self.bias_row(vocab_size).map(|_| ())
    }

    /// The summed logit biases as a dense row, None without biases.
    fn bias_row(&self, vocab_size: usize) -> Result<Option<Vec<f32>>> {
        if self.logit_bias.is_empty() {
            return Ok(None);
        }
        let mut row = vec![0f32; vocab_size];
        for &(id, b) in &self.logit_bias {
            let slot = row.get_mut(id as usize).ok_or_else(|| invalid("logit_bias", &format!("token id must be < the vocabulary size {vocab_size}"), id))?;
            *slot += b;
        }
        if row.iter().all(|&b| b == f32::NEG_INFINITY) {
            return Err(Error::InvalidArgument(format!(
                "logit_bias bans every token of the vocabulary ({vocab_size} tokens at -inf): nothing could be generated"
            )));
        }
        Ok(Some(row))
    }

    /// Temperature 0, or one so small that `1 / temperature` overflows f32
    /// (below about 2.9e-39): the arg-max is chosen, since sampling at such
    /// a temperature is the arg-max in exact arithmetic and garbage in f32.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || !(1.0 / self.temperature).is_finite()
    }

    fn uses_window(&self) -> bool {
        self.repetition_penalty != 1.0
    }

    fn uses_counts(&self) -> bool {
        self.presence_penalty != 0.0 || self.frequency_penalty != 0.0
    }

    /// Whether any logits processor is enabled.
    pub fn has_processors(&self) -> bool {
        !self.logit_bias.is_empty() || self.uses_window() || self.uses_counts()
    }
}

/// What [`Sampler::sample`] returns: lazy device arrays.
#[derive(Debug)]
pub struct Sample {
    /// The chosen token of each row, `[B]` uint32.
    pub tokens: Array,
    /// Its log-probability under the processed logits, `[B]` float32
    /// (when `logprobs`).
    pub logprobs: Option<Array>,
    /// The `top_logprobs` most likely token ids, `[B, n]` uint32, sorted by
    /// log-probability descending (when `top_logprobs > 0`).
    pub top_ids: Option<Array>,
    /// Their log-probabilities, `[B, n]` float32.
    pub top_logprobs: Option<Array>,
}

/// A batched sampler with its PRNG key and per-row token history on the device.
pub struct Sampler {
    config: SamplerConfig,
    vocab: i32,
    /// PRNG key, split at every non-greedy draw.
    key: Option<Array>,
    /// Logit bias as a dense `[1, V]` float32 row.
    bias: Option<Array>,
    /// Last `W <= repetition_context_size` observed tokens, `[B, W]` uint32.
    window: Option<Array>,
    /// How often each token was generated, `[B, V]` float32.
    counts: Option<Array>,
}

fn neg_inf() -> Array {
    Array::scalar(f32::NEG_INFINITY)
}

/// `x - logsumexp(x)` along the last axis.
pub fn log_softmax(x: &Array) -> Result<Array> {
    x.subtract(&x.logsumexp(&[-1], true)?)
}

/// Sets all but the `k` largest log-probabilities of each row to `-inf`
/// (exactly `k` survive; ties broken arbitrarily). `k` 0 or >= V: unchanged.
pub fn apply_top_k(logprobs: &Array, k: usize) -> Result<Array> {
    let v = logprobs.dim(-1);
    if k == 0 || k >= v as usize {
        return Ok(logprobs.clone());
    }
    let k = k as i32;
    let drop = logprobs.negative()?.argpartition(k - 1, -1)?.slice_axis(-1, k, v)?;
    logprobs.put_along_axis(&drop, &neg_inf(), -1)
}

/// Nucleus filter: keeps a token when the probability mass of the tokens
/// ranked above it is below `top_p`. The top token always survives, also
/// when f32 rounding leaves the cumulative mass below `1 - top_p` for a tiny
/// `top_p` (it is kept explicitly). `top_p` >= 1: unchanged.
pub fn apply_top_p(logprobs: &Array, top_p: f32) -> Result<Array> {
    if top_p >= 1.0 {
        return Ok(logprobs.clone());
    }
    let order = logprobs.argsort(-1)?; // ascending
    let sorted_probs = logprobs.take_along_axis(&order, -1)?.exp()?;
    let cum = sorted_probs.cumsum(-1, false, true)?;
    let sorted_keep = cum.greater(&Array::scalar(1.0 - top_p))?;
    let keep = mlx::zeros(&logprobs.shape(), Dtype::Bool)?.put_along_axis(&order, &sorted_keep, -1)?;
    let top = logprobs.argmax(-1, true)?;
    let keep = keep.put_along_axis(&top, &Array::scalar(true), -1)?;
    mlx::where_(&keep, logprobs, &neg_inf())
}

/// Min-p filter: drops tokens whose probability is below `min_p` × the top
/// token's, keeping at least `min_tokens_to_keep` of the most likely.
/// `min_p` 0: unchanged.
pub fn apply_min_p(logprobs: &Array, min_p: f32, min_tokens_to_keep: usize) -> Result<Array> {
    if min_p <= 0.0 {
        return Ok(logprobs.clone());
    }
    let v = logprobs.dim(-1);
    let top = logprobs.max(&[-1], true)?;
    let threshold = top.add(&Array::scalar(min_p.ln()))?;
    let mut remove = logprobs.less(&threshold)?;
    let keep_n = min_tokens_to_keep.min(v as usize) as i32;
    if keep_n > 1 {
        let top_idx = logprobs.argpartition(v - keep_n, -1)?.slice_axis(-1, v - keep_n, v)?;
        remove = remove.put_along_axis(&top_idx, &Array::scalar(false), -1)?;
    }
    mlx::where_(&remove, &neg_inf(), logprobs)
}

/// A seed from the clock, for samplers without one.
fn clock_seed() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    d.as_secs().wrapping_mul(1_000_000_007) ^ d.subsec_nanos() as u64
}

/// `[T]` → `[1, T]`, `[B]` kept as `[B, 1]` by the caller; `[B, T]` as is.
fn as_rows(tokens: &Array, one_d_is_batch: bool) -> Result<Array> {
    match tokens.ndim() {
        1 if one_d_is_batch => tokens.reshape(&[tokens.dim(0), 1]),
        1 => tokens.reshape(&[1, tokens.dim(0)]),
        2 => Ok(tokens.clone()),
        _ => Err(Error::InvalidArgument(format!("tokens must be 1-D or 2-D, got shape {:?}", tokens.shape()))),
    }
}

impl Sampler {
    /// A sampler for logits with `vocab_size` entries per row. Validates the config.
    pub fn new(config: SamplerConfig, vocab_size: usize) -> Result<Sampler> {
        config.validate()?;
        if vocab_size == 0 || vocab_size > i32::MAX as usize {
            return Err(Error::InvalidArgument(format!("vocab_size must be in 1..2^31 (got {vocab_size})")));
        }
        if config.top_logprobs > vocab_size {
            return Err(invalid("top_logprobs", &format!("must be <= the vocabulary size {vocab_size}"), config.top_logprobs));
        }
        let bias = match config.bias_row(vocab_size)? {
            None => None,
            Some(row) => Some(Array::from_slice(&row, &[1, vocab_size as i32])?),
        };
        let key = if config.is_greedy() { None } else { Some(random::key(config.seed.unwrap_or_else(clock_seed))?) };
        Ok(Sampler { config, vocab: vocab_size as i32, key, bias, window: None, counts: None })
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab as usize
    }

    /// Tokens clamped into `[0, V)` as uint32 rows (ids >= V cannot come from
    /// the model; clamping keeps the device scatters in bounds).
    fn clamp_ids(&self, rows: &Array) -> Result<Array> {
        rows.astype(Dtype::U32)?.minimum(&Array::scalar(self.vocab as u32 - 1))
    }

    fn check_batch(&self, b: i32, what: &str) -> Result<()> {
        let have = self.window.as_ref().or(self.counts.as_ref()).map(|h| h.dim(0));
        match have {
            Some(h) if h != b => Err(Error::InvalidArgument(format!("{what} has {b} rows but the sampler's history has {h} (use select_rows or reset)"))),
            _ => Ok(()),
        }
    }

    fn push_window(&mut self, ids: &Array) -> Result<()> {
        let c = self.config.repetition_context_size as i32;
        let w = match &self.window {
            Some(w) => mlx::concatenate(&[w, ids], 1)?,
            None => ids.clone(),
        };
        let n = w.dim(1);
        self.window = Some(if n > c { w.slice_axis(1, n - c, n)? } else { w });
        Ok(())
    }

    /// Records prompt (or other context) tokens, `[T]` for one row or `[B, T]`:
    /// they enter the repetition-penalty window (as in mlx-lm) but not the
    /// presence/frequency counts, which cover generated tokens only.
    pub fn observe_prompt(&mut self, tokens: &Array) -> Result<()> {
        if !self.config.uses_window() {
            return Ok(());
        }
        let rows = as_rows(tokens, false)?;
        self.check_batch(rows.dim(0), "tokens")?;
        if rows.dim(1) == 0 {
            return Ok(());
        }
        let ids = self.clamp_ids(&rows)?;
        self.push_window(&ids)
    }

    /// Records generated tokens, `[B]` (one per row) or `[B, T]`, in the
    /// repetition window and the presence/frequency counts. [`Sampler::sample`]
    /// calls this itself for the tokens it chooses; call it for tokens chosen
    /// elsewhere (e.g. forced ones).
    pub fn observe(&mut self, tokens: &Array) -> Result<()> {
        if !self.config.uses_window() && !self.config.uses_counts() {
            return Ok(());
        }
        let rows = as_rows(tokens, true)?;
        let b = rows.dim(0);
        self.check_batch(b, "tokens")?;
        if rows.dim(1) == 0 {
            return Ok(());
        }
        let ids = self.clamp_ids(&rows)?;
        if self.config.uses_counts() {
            let counts = match self.counts.take() {
                Some(c) => c,
                None => mlx::zeros(&[b, self.vocab], Dtype::F32)?,
            };
            let ones = mlx::ones(&ids.shape(), Dtype::F32)?;
            self.counts = Some(counts.scatter_add_axis(&ids, &ones, 1)?);
        }
        if self.config.uses_window() {
            self.push_window(&ids)?;
        }
        Ok(())
    }

    /// Keeps only the history of the given rows (`[B']` integer indices), for
    /// a batch whose finished rows were dropped.
    pub fn select_rows(&mut self, rows: &Array) -> Result<()> {
        if let Some(w) = &self.window {
            self.window = Some(w.take(rows, 0)?);
        }
        if let Some(c) = &self.counts {
            self.counts = Some(c.take(rows, 0)?);
        }
        Ok(())
    }

    /// Forgets the token history (the PRNG key goes on).
    pub fn reset(&mut self) {
        self.window = None;
        self.counts = None;
    }

    /// The repetition window `[B, W]` uint32 and the generated-token counts
    /// `[B, V]` float32, where tracked.
    pub fn history(&self) -> (Option<&Array>, Option<&Array>) {
        (self.window.as_ref(), self.counts.as_ref())
    }

    fn check_logits(&self, logits: &Array) -> Result<()> {
        let shape = logits.shape();
        if shape.len() != 2 || shape[1] != self.vocab {
            return Err(Error::InvalidArgument(format!("logits must have shape [B, {}], got {shape:?}", self.vocab)));
        }
        if !logits.dtype().is_float() {
            return Err(Error::InvalidArgument(format!("logits must be floating point, got {}", logits.dtype())));
        }
        self.check_batch(shape[0], "logits")
    }

    /// The logits processors (bias, repetition, presence, frequency, in that
    /// order) applied to `[B, V]` logits, in float32. Returns the input
    /// unchanged (same dtype) when no processor is enabled.
    pub fn process_logits(&self, logits: &Array) -> Result<Array> {
        self.check_logits(logits)?;
        if !self.config.has_processors() {
            return Ok(logits.clone());
        }
        let mut x = if logits.dtype() == Dtype::F32 { logits.clone() } else { logits.astype(Dtype::F32)? };
        if let Some(bias) = &self.bias {
            x = x.add(bias)?;
        }
        if let Some(w) = &self.window {
            let p = self.config.repetition_penalty;
            let at = x.take_along_axis(w, 1)?;
            let penalised = mlx::where_(&at.less(&Array::scalar(0f32))?, &at.mul_scalar(p)?, &at.mul_scalar(1.0 / p)?)?;
            // Duplicate ids in the window write the same value.
            x = x.put_along_axis(w, &penalised, 1)?;
        }
        if let Some(c) = &self.counts {
            let (pres, freq) = (self.config.presence_penalty, self.config.frequency_penalty);
            let mut pen: Option<Array> = None;
            if pres != 0.0 {
                pen = Some(c.greater(&Array::scalar(0f32))?.astype(Dtype::F32)?.mul_scalar(pres)?);
            }
            if freq != 0.0 {
                let f = c.mul_scalar(freq)?;
                pen = Some(match pen {
                    Some(p) => p.add(&f)?,
                    None => f,
                });
            }
            if let Some(pen) = pen {
                x = x.subtract(&pen)?;
            }
        }
        Ok(x)
    }

    /// The filters (top-p, min-p, top-k, in mlx-lm's order) on log-probabilities.
    pub fn filter_logprobs(&self, logprobs: &Array) -> Result<Array> {
        let c = &self.config;
        let mut lp = apply_top_p(logprobs, c.top_p)?;
        lp = apply_min_p(&lp, c.min_p, c.min_tokens_to_keep)?;
        apply_top_k(&lp, c.top_k)
    }

    /// Chooses one token per row of `logits` (`[B, V]`, any float dtype) and
    /// records it in the history. Everything stays on the device.
    pub fn sample(&mut self, logits: &Array) -> Result<Sample> {
        self.sample_masked(logits, None)
    }

    /// [`Sampler::sample`] where only the tokens `mask` (`[B, V]` or `[1, V]`
    /// bool) allows may be chosen: the others are set to `-inf` before the
    /// processors, so every setting (greedy, temperature, filters, penalties)
    /// chooses among the allowed tokens, and log-probabilities are those of the
    /// masked distribution.
    pub fn sample_masked(&mut self, logits: &Array, mask: Option<&Array>) -> Result<Sample> {
        let masked;
        let logits = match mask {
            Some(m) => {
                self.check_logits(logits)?;
                masked = mlx::where_(m, &logits.astype(Dtype::F32)?, &neg_inf())?;
                &masked
            }
            None => logits,
        };
        let (greedy, want_lp, temperature) = (self.config.is_greedy(), self.config.logprobs, self.config.temperature);
        // Fast path: greedy with nothing else asked is a bare argmax.
        if greedy && !self.config.has_processors() && !want_lp {
            self.check_logits(logits)?;
            let tokens = logits.argmax(-1, false)?;
            return Ok(Sample { tokens, logprobs: None, top_ids: None, top_logprobs: None });
        }
        let x = self.process_logits(logits)?;
        let (tokens, logprobs) = if greedy {
            let tokens = x.argmax(-1, false)?;
            let lp = if want_lp { Some(log_softmax(&x.astype(Dtype::F32)?)?) } else { None };
            (tokens, lp)
        } else {
            let lp = log_softmax(&x.astype(Dtype::F32)?)?;
            let filtered = self.filter_logprobs(&lp)?;
            let key = self.key.as_ref().expect("a sampling sampler holds a key");
            let (next, sub) = random::split(key)?;
            // Shifted so the top token is 0 before scaling: a small temperature
            // (large 1/t) then sends the others to -inf, never the top one.
            let shifted = filtered.subtract(&filtered.max(&[-1], true)?)?;
            let scaled = shifted.mul_scalar(1.0 / temperature)?;
            let tokens = random::categorical(&scaled, -1, Some(&sub))?;
            self.key = Some(next);
            (tokens, Some(lp))
        };
        let tokens = if tokens.dtype() == Dtype::U32 { tokens } else { tokens.astype(Dtype::U32)? };
        let mut out = Sample { tokens, logprobs: None, top_ids: None, top_logprobs: None };
        if want_lp {
            let lp = logprobs.expect("log-probabilities computed when asked");
            let b = out.tokens.dim(0);
            out.logprobs = Some(lp.take_along_axis(&out.tokens.reshape(&[b, 1])?, 1)?.reshape(&[b])?);
            let n = self.config.top_logprobs as i32;
            if n > 0 {
                let idx = lp.negative()?.argpartition(n - 1, -1)?.slice_axis(-1, 0, n)?;
                let vals = lp.take_along_axis(&idx, -1)?;
                let order = vals.negative()?.argsort(-1)?;
                out.top_ids = Some(idx.take_along_axis(&order, -1)?.astype(Dtype::U32)?);
                out.top_logprobs = Some(vals.take_along_axis(&order, -1)?);
            }
        }
        self.observe(&out.tokens)?;
        Ok(out)
    }
}
