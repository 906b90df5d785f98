//! Classification: the next token after each of N prompts, from batched
//! prefills with no decode (the go-i18n workload).
//!
//! Prompts are sorted by length and right-padded: under a causal mask no real
//! token attends to the padding after it, so each row equals its unbatched
//! forward exactly, and the logits are read at each row's last real position.
//! A token prefix shared by every prompt is evaluated once and its KV reused.

use super::metrics::{rate, since, BatchMetrics};
use super::worker::Worker;
use crate::cache::KvCache;
use crate::mlx::{self, memory, Array, Dtype};
use crate::models::Context;
use crate::sample::log_softmax;
use crate::text::Tokenizer;
use crate::{Error, Result};
use std::sync::mpsc::Sender;
use std::time::Instant;

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ClassifyOptions {
    /// Restrict the answer to these labels (each by its first token); their
    /// probabilities are renormalised over the set.
    pub labels: Option<Vec<String>>,
    /// Return the log-probability of the arg-max token.
    pub logprobs: bool,
    /// Return the full last-position logits (float32).
    pub return_logits: bool,
    /// At most this many prompts per batch; None sizes batches from the memory budget.
    pub batch_size: Option<usize>,
    /// Bytes a batch may use for activations and KV; None = 1 GiB (4 GiB on a GPU).
    pub memory_budget: Option<usize>,
    /// Evaluate every prompt in full even when they share a prefix.
    pub no_shared_prefix: bool,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ClassifyResult {
    /// The arg-max next token (over the labels' tokens when labels are given).
    pub token: u32,
    pub text: String,
    pub logprob: Option<f32>,
    /// The most probable label, when labels are given.
    pub label: Option<String>,
    /// Probability of each label (same order as given), summing to 1.
    pub label_probs: Option<Vec<f32>>,
    pub logits: Option<Vec<f32>>,
}

pub(crate) struct Request {
    pub prompts: Vec<Vec<u32>>,
    pub labels: Option<Vec<(String, u32)>>,
    pub opts: ClassifyOptions,
    pub reply: Sender<Result<(Vec<ClassifyResult>, BatchMetrics)>>,
}

/// Each label's first token; labels that share a first token are ambiguous.
pub(crate) fn label_tokens(tok: &Tokenizer, labels: &[String]) -> Result<Vec<(String, u32)>> {
    let mut out: Vec<(String, u32)> = Vec::new();
    for l in labels {
        let ids = tok.encode(l, false)?;
        let Some(&first) = ids.first() else {
            return Err(Error::InvalidArgument(format!("label {l:?} encodes to no tokens")));
        };
        if let Some((other, _)) = out.iter().find(|(_, id)| *id == first) {
            return Err(Error::InvalidArgument(format!("labels {other:?} and {l:?} start with the same token ({first})")));
        }
        out.push((l.clone(), first));
    }
    if out.is_empty() {
        return Err(Error::InvalidArgument("the label set is empty".into()));
    }
    Ok(out)
}

fn common_prefix(prompts: &[Vec<u32>]) -> usize {
    let first = &prompts[0];
    let mut n = first.len();
    for p in &prompts[1..] {
        n = n.min(first.iter().zip(p).take_while(|(a, b)| a == b).count());
    }
    n
}

/// Prompts per batch: explicit, or what fits the memory budget.
fn batch_rows(w: &Worker, opts: &ClassifyOptions, max_len: usize, total_len: usize) -> usize {
    if let Some(b) = opts.batch_size {
        return b.max(1);
    }
    let c = w.model.config();
    let bytes = c.dtype.size();
    let kv = 2 * (0..c.num_layers).map(|i| c.layer_kv(i)).map(|(heads, dim)| heads * dim).sum::<usize>() * bytes;
    let act = (4 * c.hidden_size + 3 * c.intermediate_size + c.num_heads * total_len) * bytes;
    let per_row = max_len * (kv + act) + c.vocab_size * 4;
    // A GPU keeps more rows busy per kernel launch; its memory is sized for it.
    let default = if mlx::stream::thread_device() == mlx::DeviceKind::Gpu { 4 << 30 } else { 1 << 30 };
    let budget = opts.memory_budget.unwrap_or(default);
    (budget / per_row.max(1)).clamp(1, 512)
}

pub(crate) fn run(w: &mut Worker, req: Request) -> Result<(Vec<ClassifyResult>, BatchMetrics)> {
    let start = Instant::now();
    memory::reset_peak()?;
    let n = req.prompts.len();
    let vocab = w.model.config().vocab_size;
    for p in &req.prompts {
        if let Some(&bad) = p.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::InvalidArgument(format!("token id {bad} is outside the vocabulary (size {vocab})")));
        }
        if p.len() >= w.context_length {
            return Err(Error::InvalidArgument(format!("a prompt has {} tokens; the context length is {}", p.len(), w.context_length)));
        }
    }
    let mut metrics = BatchMetrics { prompts: n, prompt_tokens: req.prompts.iter().map(Vec::len).sum(), ..Default::default() };
    if n == 0 {
        return Ok((Vec::new(), metrics));
    }
    // A shared prefix leaves at least one token of every prompt to evaluate.
    let min_len = req.prompts.iter().map(Vec::len).min().unwrap();
    let prefix_len = if n > 1 && !req.opts.no_shared_prefix { common_prefix(&req.prompts).min(min_len - 1) } else { 0 };
    let prefix_state = if prefix_len > 0 {
        let mut caches: Vec<KvCache> = w.model.new_caches().into_iter().map(KvCache::exact).collect();
        let x = Array::from_slice(&req.prompts[0][..prefix_len], &[1, prefix_len as i32])?;
        w.model.hidden(&x, &mut caches, &Context::default())?;
        let states = caches.iter().map(|c| c.state()).collect::<Result<Vec<_>>>()?;
        let states: Vec<(Array, Array)> = states.into_iter().map(|s| s.expect("prefix cache holds the prefix")).collect();
        let arrays: Vec<&Array> = states.iter().flat_map(|(k, v)| [k, v]).collect();
        mlx::eval(&arrays)?;
        Some(states)
    } else {
        None
    };
    metrics.shared_prefix_tokens = prefix_len;

    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| req.prompts[i].len());
    let mut results: Vec<Option<ClassifyResult>> = vec![None; n];
    let label_ids = req.labels.as_ref().map(|ls| ls.iter().map(|(_, id)| *id).collect::<Vec<u32>>());
    // Each batch is queued (`async_eval`) before the previous one is read back,
    // so the device computes batch k+1 while the host turns batch k into results.
    let mut pending: Option<(Vec<usize>, Queued)> = None;
    let mut i = 0;
    while i < n {
        let max_len = req.prompts[order[(i + 512).min(n) - 1]].len() - prefix_len;
        let rows = batch_rows(w, &req.opts, max_len, max_len + prefix_len).min(n - i);
        let batch = order[i..i + rows].to_vec();
        let lmax = batch.iter().map(|&j| req.prompts[j].len() - prefix_len).max().unwrap();
        let mut tokens = vec![0u32; rows * lmax];
        let mut last = Vec::with_capacity(rows);
        for (r, &j) in batch.iter().enumerate() {
            let suffix = &req.prompts[j][prefix_len..];
            tokens[r * lmax..r * lmax + suffix.len()].copy_from_slice(suffix);
            last.push(suffix.len() as i32 - 1);
        }
        // Exact caches: a one-shot prefill needs no spare positions.
        let mut caches: Vec<KvCache> = w.model.new_caches().into_iter().map(KvCache::exact).collect();
        if let Some(states) = &prefix_state {
            for (c, (k, v)) in caches.iter_mut().zip(states) {
                let bcast = |a: &Array| {
                    let mut s = a.shape();
                    s[0] = rows as i32;
                    a.broadcast_to(&s)
                };
                c.set_state(bcast(k)?, bcast(v)?, prefix_len)?;
            }
        }
        let x = Array::from_slice(&tokens, &[rows as i32, lmax as i32])?;
        let h = w.model.hidden(&x, &mut caches, &Context::default())?;
        // Only the graph needs the keys and values now: without other owners
        // MLX frees each layer's as soon as its attention has run, instead of
        // holding every layer's for the whole batch.
        drop(caches);
        let hidden = h.dim(2);
        let idx = Array::from_slice(&last, &[rows as i32, 1, 1])?.broadcast_to(&[rows as i32, 1, hidden])?;
        let logits = w.model.logits(&h.take_along_axis(&idx, 1)?)?.reshape(&[rows as i32, vocab as i32])?.astype(Dtype::F32)?;
        let queued = queue_batch(logits, label_ids.as_deref(), &req.opts)?;
        if let Some((prev, q)) = pending.replace((batch, queued)) {
            collect(w, &req, &prev, q, &mut results)?;
        }
        metrics.batches += 1;
        i += rows;
    }
    if let Some((prev, q)) = pending.take() {
        collect(w, &req, &prev, q, &mut results)?;
    }
    metrics.total_s = since(start);
    metrics.prompts_per_s = rate(n, metrics.total_s);
    metrics.prefill_tokens_per_s = rate(metrics.prompt_tokens - prefix_len * (n - 1), metrics.total_s);
    metrics.peak_memory_bytes = memory::peak()?;
    metrics.active_memory_bytes = memory::active()?;
    Ok((results.into_iter().map(|r| r.expect("every prompt classified")).collect(), metrics))
}

/// One batch's answers, queued on the device.
struct Queued {
    logits: Array,
    argmax: Array,
    chosen_lp: Option<Array>,
    label_probs: Option<Array>,
    labels: usize,
}

/// Builds what a batch must return (only what was asked for) and queues it.
fn queue_batch(logits: Array, labels: Option<&[u32]>, opts: &ClassifyOptions) -> Result<Queued> {
    let rows = logits.dim(0);
    let argmax = logits.argmax(-1, false)?;
    let chosen_lp = match opts.logprobs {
        true => Some(log_softmax(&logits)?.take_along_axis(&argmax.reshape(&[rows, 1])?, 1)?.reshape(&[rows])?),
        false => None,
    };
    let label_probs = match labels {
        Some(ids) => {
            let idx = Array::from_slice(ids, &[ids.len() as i32])?;
            Some(logits.take(&idx, 1)?.softmax(&[-1])?)
        }
        None => None,
    };
    let mut to_eval = vec![&argmax];
    to_eval.extend(chosen_lp.iter());
    to_eval.extend(label_probs.iter());
    if opts.return_logits {
        to_eval.push(&logits);
    }
    mlx::async_eval(&to_eval)?;
    Ok(Queued { logits, argmax, chosen_lp, label_probs, labels: labels.map_or(0, |l| l.len()) })
}

/// Reads a queued batch back and files each row's result under its prompt.
fn collect(w: &Worker, req: &Request, batch: &[usize], q: Queued, results: &mut [Option<ClassifyResult>]) -> Result<()> {
    let ids = q.argmax.to_vec::<u32>()?;
    let lps = q.chosen_lp.map(|a| a.to_vec::<f32>()).transpose()?;
    let probs = q.label_probs.map(|a| a.to_vec::<f32>()).transpose()?;
    let all = if req.opts.return_logits { Some(q.logits.to_vec::<f32>()?) } else { None };
    let (v, k) = (q.logits.dim(1) as usize, q.labels);
    for (r, &j) in batch.iter().enumerate() {
        let mut res = ClassifyResult {
            token: ids[r],
            text: String::new(),
            logprob: lps.as_ref().map(|l| l[r]),
            label: None,
            label_probs: probs.as_ref().map(|p| p[r * k..(r + 1) * k].to_vec()),
            logits: all.as_ref().map(|a| a[r * v..(r + 1) * v].to_vec()),
        };
        if let (Some(labels), Some(p)) = (&req.labels, &res.label_probs) {
            let best = p.iter().enumerate().fold(0, |b, (i, x)| if *x > p[b] { i } else { b });
            res.label = Some(labels[best].0.clone());
            res.token = labels[best].1;
        }
        if let Some(t) = &w.tokenizer {
            res.text = t.decode(&[res.token], false)?;
        }
        results[j] = Some(res);
    }
    Ok(())
}
