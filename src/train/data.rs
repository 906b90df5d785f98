//! Training data: JSONL in mlx-lm's three formats, tokenised into examples,
//! and batches grouped by length with a seeded shuffle.
//!
//! - `{"text": ...}`: encoded with the tokenizer's special tokens (BOS), EOS appended
//!   when missing.
//! - `{"prompt": ..., "completion": ...}`: rendered as a user/assistant conversation
//!   with the model's chat template.
//! - `{"messages": [...]}` (optionally `"tools"`): rendered with the chat template.
//!
//! With `mask_prompt`, the loss skips everything before the last assistant turn
//! (the prompt rendered with a generation prompt), as mlx-lm does.

use super::step::Batch;
use crate::text::{ChatFormat, ChatMessage, ChatOptions, Tokenizer};
use crate::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// One tokenised example and the first position whose prediction counts.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub tokens: Vec<u32>,
    pub offset: usize,
}

#[derive(Clone, Debug, Default)]
pub struct DataOptions {
    /// Train on completions only (prompt / messages formats).
    pub mask_prompt: bool,
}

fn render(tok: &Tokenizer, messages: &[ChatMessage], tools: Option<&Value>, generation_prompt: bool) -> Result<Vec<u32>> {
    let opts = ChatOptions { add_generation_prompt: generation_prompt, tools: tools.and_then(|t| t.as_array().cloned()), ..Default::default() };
    let text = tok.apply_chat_template(messages, &opts, &ChatFormat::Model)?;
    tok.encode(&text, false)
}

/// Tokenises one JSON record.
pub fn example_from_json(tok: &Tokenizer, v: &Value, opts: &DataOptions) -> Result<Example> {
    let obj = v.as_object().ok_or_else(|| Error::InvalidArgument("a JSONL record must be an object".into()))?;
    let tools = obj.get("tools");
    if let (Some(p), Some(c)) = (obj.get("prompt"), obj.get("completion")) {
        let (p, c) = (p.as_str().unwrap_or_default(), c.as_str().unwrap_or_default());
        let msgs = vec![ChatMessage::user(p), ChatMessage::assistant(c)];
        let tokens = render(tok, &msgs, tools, false)?;
        let offset = if opts.mask_prompt { render(tok, &msgs[..1], tools, true)?.len() } else { 0 };
        return Ok(Example { tokens, offset });
    }
    if let Some(m) = obj.get("messages") {
        let arr = m.as_array().ok_or_else(|| Error::InvalidArgument("'messages' must be an array".into()))?;
        let msgs = arr.iter().cloned().map(ChatMessage::from_json).collect::<Result<Vec<_>>>()?;
        let tokens = render(tok, &msgs, tools, false)?;
        let offset = if opts.mask_prompt && msgs.len() > 1 {
            let gen = msgs.last().and_then(|m| m.role()) == Some("assistant");
            render(tok, &msgs[..msgs.len() - 1], tools, gen)?.len()
        } else {
            0
        };
        return Ok(Example { tokens, offset });
    }
    if let Some(t) = obj.get("text") {
        if opts.mask_prompt {
            return Err(Error::InvalidArgument("prompt masking needs prompt/completion or messages records, not text".into()));
        }
        let t = t.as_str().ok_or_else(|| Error::InvalidArgument("'text' must be a string".into()))?;
        let mut tokens = tok.encode(t, true)?;
        if let Some(&eos) = tok.eos_ids().first() {
            if tokens.last() != Some(&eos) {
                tokens.push(eos);
            }
        }
        return Ok(Example { tokens, offset: 0 });
    }
    Err(Error::InvalidArgument("a record needs 'text', 'prompt' and 'completion', or 'messages'".into()))
}

/// Reads a JSONL file (blank lines skipped); errors name the line.
pub fn load_jsonl(path: &Path, tok: &Tokenizer, opts: &DataOptions) -> Result<Vec<Example>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|e| Error::InvalidArgument(format!("{}:{}: invalid JSON: {e}", path.display(), i + 1)))?;
        let ex = example_from_json(tok, &v, opts).map_err(|e| Error::InvalidArgument(format!("{}:{}: {e}", path.display(), i + 1)))?;
        out.push(ex);
    }
    if out.is_empty() {
        return Err(Error::InvalidArgument(format!("{}: no records", path.display())));
    }
    Ok(out)
}

/// `train.jsonl` and, when present, `valid.jsonl` of a data directory (or a
/// single JSONL file as the training set).
pub fn load_data(path: &Path, tok: &Tokenizer, opts: &DataOptions) -> Result<(Vec<Example>, Option<Vec<Example>>)> {
    if path.is_file() {
        return Ok((load_jsonl(path, tok, opts)?, None));
    }
    let train = load_jsonl(&path.join("train.jsonl"), tok, opts)?;
    let valid = path.join("valid.jsonl");
    let valid = if valid.is_file() { Some(load_jsonl(&valid, tok, opts)?) } else { None };
    Ok((train, valid))
}

/// A small deterministic PRNG (SplitMix64) for shuffling.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// Batches of examples of similar length (sorted by length, cut into groups
/// of `batch_size`, group order shuffled every epoch), truncated to
/// `max_seq_length` tokens. Like mlx-lm, a tail smaller than a batch is left out.
pub struct Batches<'a> {
    examples: &'a [Example],
    groups: Vec<Vec<usize>>,
    order: Vec<usize>,
    pos: usize,
    rng: Rng,
    max_seq_length: usize,
    shuffle: bool,
    /// Examples cut to `max_seq_length` so far.
    pub truncated: usize,
    pub epoch: usize,
}

impl<'a> Batches<'a> {
    pub fn new(examples: &'a [Example], batch_size: usize, max_seq_length: usize, seed: u64, shuffle: bool) -> Result<Batches<'a>> {
        if batch_size == 0 || examples.len() < batch_size {
            return Err(Error::InvalidArgument(format!("{} examples cannot fill a batch of {batch_size}", examples.len())));
        }
        if max_seq_length < 2 {
            return Err(Error::InvalidArgument("max sequence length must be at least 2".into()));
        }
        let mut idx: Vec<usize> = (0..examples.len()).collect();
        idx.sort_by_key(|&i| examples[i].tokens.len());
        let groups: Vec<Vec<usize>> = idx.chunks_exact(batch_size).map(|c| c.to_vec()).collect();
        let order: Vec<usize> = (0..groups.len()).collect();
        let mut b = Batches { examples, groups, order, pos: 0, rng: Rng::new(seed), max_seq_length, shuffle, truncated: 0, epoch: 0 };
        b.reshuffle();
        Ok(b)
    }

    fn reshuffle(&mut self) {
        if self.shuffle {
            let mut order = std::mem::take(&mut self.order);
            self.rng.shuffle(&mut order);
            self.order = order;
        }
    }

    /// Batches per epoch.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The next batch, starting a new (reshuffled) epoch when one ends.
    pub fn next_batch(&mut self) -> Result<Batch> {
        if self.pos == self.order.len() {
            self.pos = 0;
            self.epoch += 1;
            self.reshuffle();
        }
        let group = &self.groups[self.order[self.pos]];
        self.pos += 1;
        let mut rows = Vec::with_capacity(group.len());
        let mut offsets = Vec::with_capacity(group.len());
        for &i in group {
            let ex = &self.examples[i];
            let mut t = ex.tokens.clone();
            if t.len() > self.max_seq_length {
                t.truncate(self.max_seq_length);
                self.truncated += 1;
            }
            offsets.push(ex.offset.min(t.len()));
            rows.push(t);
        }
        Batch::new(rows, offsets)
    }
}
