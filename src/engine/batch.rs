//! Batch generation: N prompts decoded together, left-padded with a mask that
//! hides the padding; rows leave the batch as they finish, so finished
//! sequences stop costing compute.

use super::metrics::{rate, since, BatchMetrics};
use super::worker::Worker;
use super::{FinishReason, GenerateOptions};
use crate::mlx::{self, memory, Array};
use crate::models::{Context, Logits};
use crate::sample::Sampler;
use crate::text::TextStream;
use crate::{Error, Result};
use std::sync::mpsc::Sender;
use std::time::Instant;

/// One prompt's result.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Output {
    pub text: String,
    pub tokens: Vec<u32>,
    pub finish_reason: FinishReason,
}

pub(crate) struct Request {
    pub prompts: Vec<Vec<u32>>,
    pub opts: GenerateOptions,
    pub reply: Sender<Result<(Vec<Output>, BatchMetrics)>>,
}

struct Row {
    prompt: usize,
    text: Option<TextStream>,
    out: String,
    tokens: Vec<u32>,
}

pub(crate) fn run(w: &mut Worker, req: Request) -> Result<(Vec<Output>, BatchMetrics)> {
    let start = Instant::now();
    memory::reset_peak()?;
    let n = req.prompts.len();
    let vocab = w.model.config().vocab_size;
    let lmax = req.prompts.iter().map(Vec::len).max().unwrap();
    if let Some(bad) = req.prompts.iter().flatten().find(|&&t| t as usize >= vocab) {
        return Err(Error::InvalidArgument(format!("token id {bad} is outside the vocabulary (size {vocab})")));
    }
    if lmax >= w.context_length {
        return Err(Error::InvalidArgument(format!("a prompt has {lmax} tokens; the context length is {}", w.context_length)));
    }
    let limit = req.opts.max_tokens.min(w.context_length - lmax);
    let mut tokens = vec![0u32; n * lmax];
    let mut valid = vec![false; n * lmax];
    for (r, p) in req.prompts.iter().enumerate() {
        let pad = lmax - p.len();
        tokens[r * lmax + pad..(r + 1) * lmax].copy_from_slice(p);
        valid[r * lmax + pad..(r + 1) * lmax].iter_mut().for_each(|v| *v = true);
    }
    let padded = valid.iter().any(|v| !v);
    let mut valid = Array::from_slice(&valid, &[n as i32, lmax as i32])?;
    let mut rows: Vec<Row> = (0..n)
        .map(|i| {
            let text = match &w.tokenizer {
                Some(t) => {
                    let s = TextStream::new(t.clone(), &req.opts.stop)?;
                    Some(if req.opts.ignore_eos { s.with_eos(Vec::new()) } else { s })
                }
                None => None,
            };
            Ok(Row { prompt: i, text, out: String::new(), tokens: Vec::new() })
        })
        .collect::<Result<_>>()?;
    let mut outputs: Vec<Option<Output>> = vec![None; n];
    let mut sampler = Sampler::new(req.opts.sampler.clone(), vocab)?;
    let mut caches = w.model.new_caches();

    // Prefill in chunks; the last chunk gives the first tokens.
    let chunk = req.opts.prefill_chunk.max(1);
    let all = Array::from_slice(&tokens, &[n as i32, lmax as i32])?;
    let mut pos = 0;
    let mut next = loop {
        let end = (pos + chunk).min(lmax);
        let x = all.slice_axis(1, pos as i32, end as i32)?;
        let v = if padded { Some(valid.slice_axis(1, 0, end as i32)?) } else { None };
        if end < lmax {
            w.model.hidden(&x, &mut caches, &Context { valid: v.as_ref() })?;
            let arrays: Vec<&Array> = caches.iter().flat_map(|c| c.arrays()).collect();
            mlx::eval(&arrays)?;
            pos = end;
            continue;
        }
        let logits = w.model.forward(&x, &mut caches, v.as_ref(), Logits::Last)?;
        break sampler.sample(&logits.reshape(&[n as i32, vocab as i32])?)?.tokens;
    };
    let prefill_s = since(start);
    let decode_start = Instant::now();
    let mut generated = 0usize;
    let mut step = 0usize;
    loop {
        let ids = next.to_vec::<u32>()?;
        step += 1;
        let mut keep = Vec::new();
        for (r, row) in rows.iter_mut().enumerate() {
            let id = ids[r];
            generated += 1;
            let mut ended = None;
            match &mut row.text {
                Some(t) => {
                    let s = t.push(id)?;
                    row.out.push_str(&s.text);
                    ended = s.finished.map(FinishReason::from);
                    if ended != Some(FinishReason::Eos) {
                        row.tokens.push(id);
                    }
                }
                None => row.tokens.push(id),
            }
            if ended.is_none() && step >= limit {
                ended = Some(FinishReason::Length);
            }
            match ended {
                Some(reason) => {
                    if let Some(t) = &mut row.text {
                        row.out.push_str(&t.finish()?);
                    }
                    outputs[row.prompt] = Some(Output { text: std::mem::take(&mut row.out), tokens: std::mem::take(&mut row.tokens), finish_reason: reason });
                }
                None => keep.push(r as i32),
            }
        }
        if keep.is_empty() {
            break;
        }
        let b = keep.len() as i32;
        let mut cur = next;
        if keep.len() < rows.len() {
            let idx = Array::from_slice(&keep, &[b])?;
            for c in caches.iter_mut() {
                c.select_rows(&idx)?;
            }
            sampler.select_rows(&idx)?;
            valid = valid.take(&idx, 0)?;
            cur = cur.take(&idx, 0)?;
            let mut i = 0;
            rows.retain(|_| {
                let k = keep.contains(&i);
                i += 1;
                k
            });
        }
        let v = if padded {
            valid = mlx::concatenate(&[&valid, &mlx::ones(&[b, 1], mlx::Dtype::Bool)?], 1)?;
            Some(&valid)
        } else {
            None
        };
        let logits = w.model.forward(&cur.reshape(&[b, 1])?, &mut caches, v, Logits::Last)?;
        next = sampler.sample(&logits.reshape(&[b, vocab as i32])?)?.tokens;
    }
    let total = since(start);
    let decode_s = since(decode_start);
    let metrics = BatchMetrics {
        prompts: n,
        prompt_tokens: req.prompts.iter().map(Vec::len).sum(),
        shared_prefix_tokens: 0,
        generated_tokens: generated,
        batches: 1,
        total_s: total,
        prompts_per_s: rate(n, total),
        prefill_tokens_per_s: rate(n * lmax, prefill_s),
        decode_tokens_per_s: rate(generated.saturating_sub(n), decode_s),
        peak_memory_bytes: memory::peak()?,
        active_memory_bytes: memory::active()?,
    };
    Ok((outputs.into_iter().map(|o| o.expect("every row finished")).collect(), metrics))
}
