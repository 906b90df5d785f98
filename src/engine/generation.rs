//! One streaming generation on the engine thread: chunked prefill, then
//! decode pipelined with `async_eval` (step n+1 is queued before token n is
//! read back), stop conditions, metrics.

use super::metrics::{rate, since, Metrics};
use super::worker::{GenerateRequest, Session};
use super::{Event, FinishReason, Token};
use crate::cache::KvCache;
use crate::mlx::{self, memory, Array};
use crate::models::{Logits, Model};
use crate::sample::{Sample, Sampler};
use crate::text::{TextStream, Tokenizer};
use crate::{Error, Result};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

enum Phase {
    Prefill { pos: usize },
    Decode,
}

pub(crate) struct GenState {
    req: Box<GenerateRequest>,
    caches: Vec<KvCache>,
    /// Tokens whose keys and values are in `caches`, in order.
    cached: Vec<u32>,
    /// None once the request has finished (its arrays released).
    sampler: Option<Sampler>,
    text: Option<TextStream>,
    phase: Phase,
    /// The next token to hand out, still being computed.
    pending: Option<Sample>,
    generated: usize,
    limit: usize,
    metrics: Metrics,
    start: Instant,
    prefill_start: Option<Instant>,
    decode_start: Option<Instant>,
}

/// What a step left behind.
pub(crate) enum Step {
    Continue,
    /// Finished; the session state to keep, if the request had a session.
    Done(Option<(u64, Session)>),
}

fn lcp(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl GenState {
    pub fn new(
        req: Box<GenerateRequest>,
        model: &Model,
        tokenizer: Option<&Arc<Tokenizer>>,
        session: Option<Session>,
        context_length: usize,
    ) -> Result<GenState> {
        let prompt_len = req.prompt.len();
        if prompt_len >= context_length {
            return Err(Error::InvalidArgument(format!("the prompt has {prompt_len} tokens; the context length is {context_length}")));
        }
        let mut sampler = Sampler::new(req.opts.sampler.clone(), model.config().vocab_size)?;
        // Reuse the longest prefix of the session's cache; at least one prompt
        // token is always evaluated so there are logits to sample from.
        let (caches, cached, start_pos) = match session {
            Some(mut s) => {
                let keep = lcp(&s.tokens, &req.prompt).min(prompt_len - 1);
                let drop = s.tokens.len() - keep;
                if s.caches.iter().all(|c| c.can_trim(drop)) {
                    for c in s.caches.iter_mut() {
                        c.trim(drop)?;
                    }
                    s.tokens.truncate(keep);
                    (s.caches, s.tokens, keep)
                } else {
                    (model.new_caches(), Vec::new(), 0)
                }
            }
            None => (model.new_caches(), Vec::new(), 0),
        };
        if sampler.config().repetition_penalty != 1.0 {
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
        Ok(GenState {
            req,
            caches,
            cached,
            sampler: Some(sampler),
            text,
            phase: Phase::Prefill { pos: start_pos },
            pending: None,
            generated: 0,
            limit,
            metrics,
            start: Instant::now(),
            prefill_start: None,
            decode_start: None,
        })
    }

    /// Evaluates `tokens` (one row) into the caches; returns the sample of the
    /// last position when `sample` is set.
    fn feed(&mut self, model: &Model, tokens: &[u32], sample: bool) -> Result<Option<Sample>> {
        let x = Array::from_slice(tokens, &[1, tokens.len() as i32])?;
        self.cached.extend_from_slice(tokens);
        if !sample {
            let h = model.hidden(&x, &mut self.caches, &crate::models::Context { valid: None })?;
            let mut arrays: Vec<&Array> = self.caches.iter().flat_map(|c| c.arrays()).collect();
            arrays.push(&h);
            mlx::eval(&arrays)?;
            return Ok(None);
        }
        self.queue_next(model, &x).map(Some)
    }

    /// Builds the forward pass over `x` (`[1, L]`) and the sampling of the
    /// next token, and queues it on the device without waiting.
    fn queue_next(&mut self, model: &Model, x: &Array) -> Result<Sample> {
        let t0 = Instant::now();
        let logits = model.forward(x, &mut self.caches, None, Logits::Last)?;
        let v = logits.dim(-1);
        let s = self.sampler()?.sample(&logits.reshape(&[1, v])?)?;
        let mut outs = vec![&s.tokens];
        outs.extend(s.logprobs.iter());
        outs.extend(s.top_ids.iter());
        outs.extend(s.top_logprobs.iter());
        let t1 = Instant::now();
        mlx::async_eval(&outs)?;
        if self.decode_start.is_some() {
            self.metrics.decode_build_s += (t1 - t0).as_secs_f64();
            self.metrics.decode_queue_s += t1.elapsed().as_secs_f64();
        }
        Ok(s)
    }

    /// One unit of work: a prefill chunk, or handing out one token.
    pub fn step(&mut self, model: &Model) -> Result<Step> {
        if self.req.cancel.load(Ordering::Relaxed) {
            return self.finish(FinishReason::Cancelled);
        }
        match self.phase {
            Phase::Prefill { pos } => {
                self.prefill_start.get_or_insert_with(Instant::now);
                let chunk = self.req.opts.prefill_chunk.max(1);
                let end = self.req.prompt.len();
                if end - pos > chunk {
                    let tokens = self.req.prompt[pos..pos + chunk].to_vec();
                    self.feed(model, &tokens, false)?;
                    self.phase = Phase::Prefill { pos: pos + chunk };
                } else {
                    let tokens = self.req.prompt[pos..end].to_vec();
                    self.pending = self.feed(model, &tokens, true)?;
                    self.phase = Phase::Decode;
                }
                Ok(Step::Continue)
            }
            Phase::Decode => self.decode(model),
        }
    }

    fn decode(&mut self, model: &Model) -> Result<Step> {
        let current = self.pending.take().expect("a pending token in decode");
        // Queue the next step before reading this token back.
        let next = if self.generated + 1 < self.limit { Some(self.queue_next(model, &current.tokens.reshape(&[1, 1])?)?) } else { None };
        let wait = Instant::now();
        let id = current.tokens.item::<u32>()?;
        if self.decode_start.is_some() {
            self.metrics.decode_wait_s += wait.elapsed().as_secs_f64();
        }
        if next.is_some() {
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
        let logprob = match &current.logprobs {
            Some(lp) => Some(lp.item::<f32>()?),
            None => None,
        };
        let top_logprobs = match (&current.top_ids, &current.top_logprobs) {
            (Some(ids), Some(lps)) => ids.to_vec::<u32>()?.into_iter().zip(lps.to_vec::<f32>()?).collect(),
            _ => Vec::new(),
        };
        let (piece, ended) = match &mut self.text {
            Some(t) => {
                let step = t.push(id)?;
                let reason = step.finished.map(FinishReason::from);
                (step.text, reason)
            }
            None => (String::new(), None),
        };
        if ended != Some(FinishReason::Eos) && !self.send(Event::Token(Token { id, text: piece, logprob, top_logprobs })) {
            return self.finish(FinishReason::Cancelled);
        }
        if let Some(reason) = ended {
            return self.finish(reason);
        }
        match next {
            Some(s) => {
                self.pending = Some(s);
                Ok(Step::Continue)
            }
            None => self.finish(FinishReason::Length),
        }
    }

    fn sampler(&mut self) -> Result<&mut Sampler> {
        self.sampler.as_mut().ok_or_else(|| Error::Engine("the generation has finished".into()))
    }

    fn send(&self, e: Event) -> bool {
        self.req.events.send(e).is_ok()
    }

    fn finish(&mut self, reason: FinishReason) -> Result<Step> {
        // A queued token that will not be handed out; its input is already in `cached`.
        self.pending = None;
        if let Some(t) = &mut self.text {
            let tail = t.finish()?;
            if !tail.is_empty() && reason != FinishReason::Cancelled {
                self.send(Event::Tail(tail));
            }
        }
        // Release this request's arrays before reporting the end, so memory
        // is back at its baseline when the caller sees Done.
        let session = match self.req.session {
            Some(id) => Some((id, Session { caches: std::mem::take(&mut self.caches), tokens: std::mem::take(&mut self.cached) })),
            None => {
                self.caches.clear();
                None
            }
        };
        self.sampler = None;
        let m = &mut self.metrics;
        m.generated_tokens = self.generated;
        if let Some(d) = self.decode_start {
            m.decode_s = since(d);
            // The first token comes from prefill; decode made the rest.
            m.decode_tokens_per_s = rate(self.generated.saturating_sub(1), m.decode_s);
        }
        m.peak_memory_bytes = memory::peak()?;
        m.active_memory_bytes = memory::active()?;
        self.send(Event::Done(reason, self.metrics.clone()));
        Ok(Step::Done(session))
    }

    /// Whether the caller asked to stop it.
    pub fn cancelled(&self) -> bool {
        self.req.cancel.load(Ordering::Relaxed)
    }

    pub fn session_id(&self) -> Option<u64> {
        self.req.session
    }

    /// Reports an error to the consumer (the request ends).
    pub fn fail(&self, e: Error) {
        self.send(Event::Error(e));
    }
}
