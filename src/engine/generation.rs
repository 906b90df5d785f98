//! One generation's own state on the engine thread: its sampler, text stream,
//! limits, metrics and the tokens its cache holds. The scheduler owns the
//! caches (a prefill's own, then a row of the batch); this holds the rest.

use super::metrics::{rate, since, Metrics};
use super::worker::{GenerateRequest, Session};
use super::{Event, FinishReason, Token};
use crate::cache::KvCache;
use crate::mlx::{memory, Array};
use crate::models::Model;
use crate::sample::{ConstraintState, Sample, Sampler, TokenMask};
use crate::text::{TextStream, Tokenizer};
use crate::{Error, Result};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

pub(crate) struct GenState {
    pub req: Box<GenerateRequest>,
    /// Tokens whose keys and values are in this generation's cache, in order.
    pub cached: Vec<u32>,
    pub sampler: Sampler,
    /// The grammar the output must follow, when constrained.
    pub constraint: Option<ConstraintState>,
    text: Option<TextStream>,
    generated: usize,
    limit: usize,
    pub metrics: Metrics,
    start: Instant,
    prefill_start: Option<Instant>,
    decode_start: Option<Instant>,
}

fn lcp(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// What accepting a token left.
pub(crate) enum Accepted {
    Continue,
    Finished(FinishReason),
}

impl GenState {
    /// The request's state and the caches its prefill starts from (a session's,
    /// trimmed to the longest prefix it shares with the prompt, else fresh growing
    /// caches); returns the position its prefill starts at.
    pub fn new(
        mut req: Box<GenerateRequest>,
        model: &Model,
        tokenizer: Option<&Arc<Tokenizer>>,
        session: Option<Session>,
        context_length: usize,
    ) -> Result<(GenState, Vec<KvCache>, usize)> {
        let prompt_len = req.prompt.len();
        if prompt_len >= context_length {
            return Err(Error::InvalidArgument(format!("the prompt has {prompt_len} tokens; the context length is {context_length}")));
        }
        let mut sampler = Sampler::new(req.opts.sampler.clone(), model.config().vocab_size)?;
        let fresh = || (0..model.config().num_layers).map(|_| KvCache::growing()).collect::<Vec<_>>();
        // At least one prompt token is always evaluated so there are logits to sample from.
        let (caches, cached, start_pos) = match session {
            Some(mut s) => {
                let keep = lcp(&s.tokens, &req.prompt).min(prompt_len - 1);
                let drop = s.tokens.len() - keep;
                if s.caches.len() == model.config().num_layers && s.caches.iter().all(|c| c.can_trim(drop)) {
                    for c in s.caches.iter_mut() {
                        c.trim(drop)?;
                    }
                    s.tokens.truncate(keep);
                    (s.caches, s.tokens, keep)
                } else {
                    (fresh(), Vec::new(), 0)
                }
            }
            None => (fresh(), Vec::new(), 0),
        };
        if sampler.config().repetition_penalty != 1.0 || sampler.config().presence_penalty != 0.0 || sampler.config().frequency_penalty != 0.0 {
            sampler.observe_prompt(&Array::from_slice(&req.prompt, &[1, prompt_len as i32])?)?;
        }
        let text = match tokenizer {
            Some(t) => {
                let stream = TextStream::new(t.clone(), &req.opts.stop)?;
                Some(if req.opts.ignore_eos { stream.with_eos(Vec::new()) } else { stream })
            }
            None if !req.opts.stop.is_empty() => return Err(Error::InvalidArgument("stop strings need a model with a tokenizer".into())),
            None => None,
        };
        let limit = req.opts.max_tokens.min(context_length - prompt_len);
        let metrics = Metrics { prompt_tokens: prompt_len, prompt_tokens_evaluated: prompt_len - start_pos, ..Metrics::default() };
        let constraint = req.constraint.take();
        let g =
            GenState { req, cached, sampler, constraint, text, generated: 0, limit, metrics, start: Instant::now(), prefill_start: None, decode_start: None };
        Ok((g, caches, start_pos))
    }

    /// Feeds the token just produced to the grammar and computes the mask of
    /// the next one; None: unconstrained, or the grammar is complete (the row
    /// ends at its next `accept`).
    pub fn next_mask(&mut self, produced: Option<u32>) -> Result<Option<TokenMask>> {
        let Some(c) = &mut self.constraint else { return Ok(None) };
        if let Some(id) = produced {
            c.advance(id)?;
        }
        c.mask()
    }

    /// Whether the grammar is complete after the tokens fed to it.
    pub fn grammar_done(&self) -> bool {
        self.constraint.as_ref().is_some_and(|c| c.is_done())
    }

    /// Whether the caller asked to stop it.
    pub fn cancelled(&self) -> bool {
        self.req.cancel.load(Ordering::Relaxed)
    }

    pub fn session_id(&self) -> Option<u64> {
        self.req.session
    }

    pub fn prompt(&self) -> &[u32] {
        &self.req.prompt
    }

    pub fn prefill_chunk(&self) -> usize {
        self.req.opts.prefill_chunk.max(1)
    }

    pub fn prefill_started(&mut self) {
        self.prefill_start.get_or_insert_with(Instant::now);
    }

    /// Whether the token now being computed is the last this generation may make.
    pub fn at_limit(&self) -> bool {
        self.generated + 1 >= self.limit
    }

    /// Adds one decode step of `rows` rows and its host times (shared by every row).
    pub fn add_step(&mut self, rows: usize, build_s: f64, queue_s: f64, wait_s: f64) {
        self.metrics.batch_rows_max = self.metrics.batch_rows_max.max(rows);
        if self.decode_start.is_some() {
            self.metrics.decode_build_s += build_s;
            self.metrics.decode_queue_s += queue_s;
            self.metrics.decode_wait_s += wait_s;
        }
    }

    /// Hands out the token `id` (with its log-probabilities when asked for)
    /// and says whether the generation goes on. `fed` tells whether the token
    /// was already fed to the model (its keys are in the cache).
    pub fn accept(&mut self, id: u32, sample: Option<&Sample>, row: usize, fed: bool) -> Result<Accepted> {
        if fed {
            self.cached.push(id);
        }
        if self.generated == 0 {
            let prefill = self.prefill_start.map(since).unwrap_or(0.0);
            self.metrics.prefill_s = prefill;
            self.metrics.prefill_tokens_per_s = rate(self.metrics.prompt_tokens_evaluated, prefill);
            self.metrics.time_to_first_token_s = since(self.start);
            self.decode_start = Some(Instant::now());
        }
        self.generated += 1;
        let (mut logprob, mut top_logprobs) = (None, Vec::new());
        if let Some(s) = sample {
            let r = row as i32;
            if let Some(lp) = &s.logprobs {
                logprob = Some(lp.slice_axis(0, r, r + 1)?.item::<f32>()?);
            }
            if let (Some(ids), Some(lps)) = (&s.top_ids, &s.top_logprobs) {
                let ids = ids.slice_axis(0, r, r + 1)?.to_vec::<u32>()?;
                top_logprobs = ids.into_iter().zip(lps.slice_axis(0, r, r + 1)?.to_vec::<f32>()?).collect();
            }
        }
        let (piece, ended) = match &mut self.text {
            Some(t) => {
                let step = t.push(id)?;
                (step.text, step.finished.map(FinishReason::from))
            }
            None => (String::new(), None),
        };
        if ended != Some(FinishReason::Eos) && !self.send(Event::Token(Token { id, text: piece, logprob, top_logprobs })) {
            return Ok(Accepted::Finished(FinishReason::Cancelled));
        }
        Ok(match ended {
            Some(reason) => Accepted::Finished(reason),
            // The grammar allows nothing after this token: the output is complete.
            None if self.grammar_done() => Accepted::Finished(FinishReason::Stop),
            None if self.generated >= self.limit => Accepted::Finished(FinishReason::Length),
            None => Accepted::Continue,
        })
    }

    fn send(&self, e: Event) -> bool {
        self.req.events.send(e).is_ok() || self.req.lockstep
    }

    /// Ends the generation: releases held-back text and reports `reason` with the
    /// metrics. Call after its arrays left the batch, so memory is at its
    /// baseline when the caller sees the end.
    pub fn finish(mut self, reason: FinishReason) -> Result<()> {
        if let Some(t) = &mut self.text {
            let tail = t.finish()?;
            if !tail.is_empty() && reason != FinishReason::Cancelled {
                self.send(Event::Tail(tail));
            }
        }
        let m = &mut self.metrics;
        m.generated_tokens = self.generated;
        if let Some(c) = &self.constraint {
            m.constraint_mask_s = c.mask_s;
            m.constraint_masks = c.masks;
        }
        if let Some(d) = self.decode_start {
            m.decode_s = since(d);
            // The first token comes from prefill; decode made the rest.
            m.decode_tokens_per_s = rate(self.generated.saturating_sub(1), m.decode_s);
        }
        m.peak_memory_bytes = memory::peak()?;
        m.active_memory_bytes = memory::active()?;
        let metrics = std::mem::take(&mut self.metrics);
        self.send(Event::Done(reason, metrics));
        Ok(())
    }

    /// Reports an error to the consumer (the request ends).
    pub fn fail(&self, e: Error) {
        self.send(Event::Error(e));
    }
}
