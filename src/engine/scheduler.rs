//! Continuous batching on the engine thread. Every decoding request is a row
//! of one batch that advances in ONE forward per step (`[B, 1]`); new requests
//! prefill alone, one chunk per step between decode steps, then join the batch
//! (`cache::BatchKv`); rows that finish, are cancelled or fail leave it at once.
//! Each step is queued with `async_eval` before the previous step's tokens are
//! read back, so the device computes while the host detokenizes and streams.
//! A row's tokens do not depend on its neighbours: each row has its own sampler
//! (and PRNG key), RoPE position and padding mask. docs/engine.md.

use super::generation::{Accepted, GenState};
use super::worker::Session;
use super::FinishReason;
use crate::cache::{BatchKv, KvCache};
use crate::mlx::{self, Array, Dtype};
use crate::models::{Context, Logits, Model};
use crate::sample::{mask_array, Sample};
use crate::{Error, Result};
use std::collections::VecDeque;
use std::time::Instant;

/// A request whose prompt is being evaluated, alone, into its own caches.
struct Prefill {
    gen: GenState,
    caches: Vec<KvCache>,
    pos: usize,
}

/// The next token of every row, queued on the device.
struct Pending {
    /// `[B]` uint32.
    tokens: Array,
    /// Each row's sample when it asked for log-probabilities.
    samples: Vec<Option<Sample>>,
}

/// A generation that left the scheduler: its session, if it had one, and the
/// cache state it ended with (kept for its session or the prefix cache).
pub(crate) struct Ended {
    pub session: Option<u64>,
    pub state: Option<Session>,
}

pub(crate) struct Scheduler {
    prefills: VecDeque<Prefill>,
    rows: Vec<GenState>,
    kv: BatchKv,
    pending: Option<Pending>,
    /// Most rows decoding at once; further requests wait as prefills.
    max_rows: usize,
    /// Whether rows without a session hand their cache back when they end (prefix cache).
    keep_states: bool,
}

/// Whether a row's next token is a bare arg-max (batched for every such row).
fn plain(g: &GenState) -> bool {
    let c = g.sampler.config();
    c.is_greedy() && !c.has_processors() && !c.logprobs && g.constraint.is_none()
}

impl Scheduler {
    pub fn new(layers: usize, max_rows: usize, keep_states: bool) -> Scheduler {
        Scheduler { prefills: VecDeque::new(), rows: Vec::new(), kv: BatchKv::new(layers), pending: None, max_rows: max_rows.max(1), keep_states }
    }

    /// Whether an ending row's cache is wanted (its session's, or the prefix cache's).
    fn wants_state(&self, g: &GenState) -> bool {
        g.session_id().is_some() || self.keep_states
    }

    pub fn is_idle(&self) -> bool {
        self.prefills.is_empty() && self.rows.is_empty()
    }

    /// Queues a request whose prefill starts at `pos` of its prompt with `caches`.
    pub fn admit(&mut self, gen: GenState, caches: Vec<KvCache>, pos: usize) {
        self.prefills.push_back(Prefill { gen, caches, pos });
    }

    /// Ends every request with the error `why` (cancelled ones as cancelled).
    pub fn end_all(&mut self, why: &str) -> Vec<Ended> {
        self.pending = None;
        self.kv = BatchKv::new(self.kv.layers.len());
        let gens: Vec<GenState> = self.rows.drain(..).chain(self.prefills.drain(..).map(|p| p.gen)).collect();
        gens.into_iter().map(|g| if g.cancelled() { finish(g, FinishReason::Cancelled, None) } else { fail(g, Error::Engine(why.into())) }).collect()
    }

    /// One unit of work: cancelled prefills leave, prefill chunks of up to one
    /// chunk's worth of tokens run (a request joining the batch when its prompt
    /// is done), then one decode step.
    pub fn tick(&mut self, model: &Model) -> Vec<Ended> {
        let mut ended = Vec::new();
        let mut i = 0;
        while i < self.prefills.len() {
            if self.prefills[i].gen.cancelled() {
                let p = self.prefills.remove(i).expect("index in range");
                ended.push(finish(p.gen, FinishReason::Cancelled, None));
            } else {
                i += 1;
            }
        }
        // Prefill chunks of waiting requests, up to one chunk's worth of tokens
        // per tick (several short prompts, or one chunk of a long one).
        let mut spent = 0;
        let mut joining = Vec::new();
        while let Some(p) = self.prefills.front() {
            let budget = p.gen.prefill_chunk();
            let need = (p.gen.prompt().len() - p.pos).min(budget);
            if self.rows.len() + joining.len() >= self.max_rows || (spent > 0 && spent + need > budget) {
                break;
            }
            spent += need;
            match self.prefill_step(model) {
                Ok(Some(done)) => joining.push(done),
                Ok(None) => {}
                Err(e) => {
                    let p = self.prefills.pop_front().expect("a prefill ran");
                    ended.push(fail(p.gen, e));
                }
            }
        }
        if !joining.is_empty() {
            ended.append(&mut self.join(joining));
        }
        if !self.rows.is_empty() {
            match self.decode_step(model) {
                Ok(mut e) => ended.append(&mut e),
                // The batch's forward failed: every row ends with the error.
                Err(e) => {
                    let msg = e.to_string();
                    self.pending = None;
                    self.kv = BatchKv::new(self.kv.layers.len());
                    ended.extend(self.rows.drain(..).map(|g| fail(g, Error::Engine(msg.clone()))));
                }
            }
        }
        ended
    }

    /// One chunk of the first waiting prompt; its last chunk samples the first
    /// token and hands the request back to join the batch.
    fn prefill_step(&mut self, model: &Model) -> Result<Option<(GenState, Vec<KvCache>, Sample)>> {
        let p = self.prefills.front_mut().expect("a waiting prefill");
        p.gen.prefill_started();
        let (pos, end, chunk) = (p.pos, p.gen.prompt().len(), p.gen.prefill_chunk());
        if end - pos > chunk {
            let tokens = p.gen.prompt()[pos..pos + chunk].to_vec();
            let x = Array::from_slice(&tokens, &[1, chunk as i32])?;
            let h = model.hidden(&x, &mut p.caches, &Context::default())?;
            let mut arrays: Vec<&Array> = p.caches.iter().flat_map(|c| c.arrays()).collect();
            arrays.push(&h);
            mlx::eval(&arrays)?;
            p.gen.cached.extend_from_slice(&tokens);
            p.pos += chunk;
            return Ok(None);
        }
        let tokens = p.gen.prompt()[pos..end].to_vec();
        let x = Array::from_slice(&tokens, &[1, tokens.len() as i32])?;
        let logits = model.forward(&x, &mut p.caches, None, Logits::Last)?;
        let v = logits.dim(-1);
        let logits = logits.reshape(&[1, v])?;
        let mask = if p.gen.constraint.is_some() {
            // The device runs the prompt while the host computes the first mask.
            mlx::async_eval(&[&logits])?;
            match p.gen.next_mask(None)? {
                Some(m) => Some(mask_array(&m)?),
                None => return Err(Error::InvalidArgument("the constraint allows only an empty output".into())),
            }
        } else {
            None
        };
        let s = p.gen.sampler.sample_masked(&logits, mask.as_ref())?;
        p.gen.cached.extend_from_slice(&tokens);
        let p = self.prefills.pop_front().expect("the prefill just run");
        Ok(Some((p.gen, p.caches, s)))
    }

    /// Moves prefilled requests into the batch, their first tokens pending;
    /// returns the requests that could not join (failed).
    fn join(&mut self, rows: Vec<(GenState, Vec<KvCache>, Sample)>) -> Vec<Ended> {
        let mut gens = Vec::with_capacity(rows.len());
        let mut caches = Vec::with_capacity(rows.len());
        let mut samples = Vec::with_capacity(rows.len());
        for (g, c, s) in rows {
            caches.push(c);
            samples.push(s);
            gens.push(g);
        }
        let joined = (|| -> Result<Pending> {
            let mut tokens: Vec<Array> = self.pending.as_ref().map(|q| q.tokens.clone()).into_iter().collect();
            for s in &samples {
                tokens.push(if s.tokens.dtype() == Dtype::U32 { s.tokens.clone() } else { s.tokens.astype(Dtype::U32)? });
            }
            let tokens = mlx::concatenate(&tokens.iter().collect::<Vec<_>>(), 0)?;
            self.kv.join(caches)?;
            let mut all = self.pending.take().map(|q| q.samples).unwrap_or_default();
            all.extend(gens.iter().zip(samples).map(|(g, s)| g.sampler.config().logprobs.then_some(s)));
            Ok(Pending { tokens, samples: all })
        })();
        match joined {
            Ok(p) => {
                self.pending = Some(p);
                self.rows.extend(gens);
                Vec::new()
            }
            Err(e) => {
                let msg = e.to_string();
                gens.into_iter().map(|g| fail(g, Error::Engine(msg.clone()))).collect()
            }
        }
    }

    /// The next token of every continuing row, queued; then this step's tokens
    /// read back and handed out; finished rows leave.
    fn decode_step(&mut self, model: &Model) -> Result<Vec<Ended>> {
        let pending = self.pending.take().ok_or_else(|| Error::Engine("a batch without pending tokens".into()))?;
        let rows = std::mem::take(&mut self.rows);
        // Rows whose pending token is their last (limit reached) or that were
        // cancelled leave before the next step is built.
        let stay: Vec<usize> = (0..rows.len()).filter(|&i| !rows[i].at_limit() && !rows[i].cancelled()).collect();
        let mut sessions: Vec<Option<Session>> = (0..rows.len()).map(|_| None).collect();
        for (i, g) in rows.iter().enumerate() {
            if !stay.contains(&i) && self.wants_state(g) && !g.cancelled() {
                sessions[i] = Some(Session { caches: self.kv.extract(i)?, tokens: g.cached.clone() });
            }
        }
        self.kv.keep(&stay)?;
        let mut slots: Vec<Option<GenState>> = rows.into_iter().map(Some).collect();
        let mut going: Vec<GenState> = stay.iter().map(|&i| slots[i].take().expect("a row kept once")).collect();
        let t0 = Instant::now();
        let (mut ids_early, mut wait_early) = (None, 0.0);
        let mut mask_errors: Vec<Option<Error>> = (0..going.len()).map(|_| None).collect();
        let next = if going.is_empty() {
            None
        } else {
            let idx = Array::from_slice(&stay.iter().map(|&i| i as i32).collect::<Vec<_>>(), &[stay.len() as i32])?;
            let input = if stay.len() == slots.len() { pending.tokens.clone() } else { pending.tokens.take(&idx, 0)? };
            let b = going.len() as i32;
            let positions = self.kv.positions(1)?;
            let ctx = Context { valid: positions.as_ref().map(|(_, v)| v), positions: positions.as_ref().map(|(p, _)| p) };
            let logits = model.forward_ctx(&input.reshape(&[b, 1])?, &mut self.kv.layers, &ctx, Logits::Last)?;
            let v = logits.dim(-1);
            let logits = logits.reshape(&[b, v])?;
            let mut masks: Vec<Option<Array>> = (0..going.len()).map(|_| None).collect();
            if going.iter().any(|g| g.constraint.is_some()) {
                // Constrained rows need this step's tokens on the host before
                // their next mask: the forward is queued first, and the masks
                // are computed while the device runs it.
                mlx::async_eval(&[&logits])?;
                let wait = Instant::now();
                let got = pending.tokens.to_vec::<u32>()?;
                wait_early = wait.elapsed().as_secs_f64();
                for (j, g) in going.iter_mut().enumerate() {
                    if g.constraint.is_none() {
                        continue;
                    }
                    match g.next_mask(Some(got[stay[j]])).and_then(|m| m.as_ref().map(mask_array).transpose()) {
                        Ok(m) => masks[j] = m,
                        Err(e) => mask_errors[j] = Some(e),
                    }
                }
                ids_early = Some(got);
            }
            let next = sample_rows(&mut going, &logits, &masks)?;
            let mut outs = vec![&next.tokens];
            for s in next.samples.iter().flatten() {
                outs.extend(s.logprobs.iter().chain(s.top_ids.iter()).chain(s.top_logprobs.iter()));
            }
            let t1 = Instant::now();
            mlx::async_eval(&outs)?;
            Some((next, (t1 - t0).as_secs_f64(), t1.elapsed().as_secs_f64()))
        };
        let wait = Instant::now();
        let ids = match ids_early {
            Some(ids) => ids,
            None => pending.tokens.to_vec::<u32>()?,
        };
        let wait_s = wait.elapsed().as_secs_f64() + wait_early;
        let mut ended = Vec::new();
        // The rows that left: their pending token is handed out, then they end.
        for (i, slot) in slots.iter_mut().enumerate() {
            let Some(mut g) = slot.take() else { continue };
            if g.cancelled() {
                ended.push(finish(g, FinishReason::Cancelled, None));
                continue;
            }
            let reason = match g.accept(ids[i], pending.samples[i].as_ref(), 0, false) {
                Ok(Accepted::Finished(r)) => r,
                Ok(Accepted::Continue) => FinishReason::Length,
                Err(e) => {
                    ended.push(fail(g, e));
                    continue;
                }
            };
            ended.push(finish(g, reason, sessions[i].take()));
        }
        let Some((next, build_s, queue_s)) = next else { return Ok(ended) };
        // The rows that went on: their token was fed to the step just queued.
        let mut keep = Vec::new();
        let mut done: Vec<(usize, GenState, Result<FinishReason>)> = Vec::new();
        let rows = going.len();
        for (j, (mut g, &i)) in going.drain(..).zip(&stay).enumerate() {
            g.add_step(rows, build_s, queue_s, wait_s);
            if let Some(e) = mask_errors[j].take() {
                done.push((j, g, Err(e)));
                continue;
            }
            match g.accept(ids[i], pending.samples[i].as_ref(), 0, true) {
                Ok(Accepted::Continue) => {
                    keep.push(j);
                    self.rows.push(g);
                }
                Ok(Accepted::Finished(r)) => done.push((j, g, Ok(r))),
                Err(e) => done.push((j, g, Err(e))),
            }
        }
        let mut left = Vec::new();
        for (j, g, r) in done {
            let session = match &r {
                Ok(reason) if *reason != FinishReason::Cancelled && self.wants_state(&g) => {
                    Some(Session { caches: self.kv.extract(j)?, tokens: g.cached.clone() })
                }
                _ => None,
            };
            left.push((g, r, session));
        }
        self.kv.keep(&keep)?;
        self.pending = if keep.is_empty() {
            None
        } else if keep.len() == stay.len() {
            Some(next)
        } else {
            let idx = Array::from_slice(&keep.iter().map(|&j| j as i32).collect::<Vec<_>>(), &[keep.len() as i32])?;
            let mut samples = next.samples;
            Some(Pending { tokens: next.tokens.take(&idx, 0)?, samples: keep.iter().map(|&j| samples[j].take()).collect() })
        };
        for (g, r, session) in left {
            ended.push(match r {
                Ok(reason) => finish(g, reason, session),
                Err(e) => fail(g, e),
            });
        }
        Ok(ended)
    }
}

/// Each row's next token from its own sampler; rows that only want the
/// arg-max share one.
fn sample_rows(rows: &mut [GenState], logits: &Array, masks: &[Option<Array>]) -> Result<Pending> {
    let b = rows.len();
    if rows.iter().all(plain) {
        let tokens = logits.argmax(-1, false)?;
        let tokens = if tokens.dtype() == Dtype::U32 { tokens } else { tokens.astype(Dtype::U32)? };
        return Ok(Pending { tokens, samples: (0..b).map(|_| None).collect() });
    }
    let argmax = if rows.iter().any(plain) { Some(logits.argmax(-1, false)?.astype(Dtype::U32)?) } else { None };
    let mut tokens = Vec::with_capacity(b);
    let mut samples = Vec::with_capacity(b);
    for (i, g) in rows.iter_mut().enumerate() {
        let r = i as i32;
        if plain(g) {
            tokens.push(argmax.as_ref().expect("an arg-max for plain rows").slice_axis(0, r, r + 1)?);
            samples.push(None);
        } else {
            let s = g.sampler.sample_masked(&logits.slice_axis(0, r, r + 1)?, masks[i].as_ref())?;
            tokens.push(if s.tokens.dtype() == Dtype::U32 { s.tokens.clone() } else { s.tokens.astype(Dtype::U32)? });
            samples.push(g.sampler.config().logprobs.then_some(s));
        }
    }
    Ok(Pending { tokens: mlx::concatenate(&tokens.iter().collect::<Vec<_>>(), 0)?, samples })
}

fn finish(g: GenState, reason: FinishReason, state: Option<Session>) -> Ended {
    let session = g.session_id();
    let _ = g.finish(reason);
    Ended { session, state }
}

fn fail(g: GenState, e: Error) -> Ended {
    g.fail(e);
    Ended { session: g.session_id(), state: None }
}
