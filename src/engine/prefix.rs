//! The prefix cache: KV caches of finished requests kept under a byte budget,
//! least recently used first out, so a new request whose prompt starts with
//! one (a repeated system prompt, the next chat turn from any caller) prefills
//! only the rest. Entries are matched on token ids; the longest shared prefix
//! wins. Off unless `EngineOptions::prefix_cache_bytes` is set. A model with
//! linear-attention layers (recurrent states, Qwen 3.5) reuses an entry only
//! when the prompt extends all of its tokens: a recurrent state exists only
//! at the position it was saved at (docs/engine.md).

use super::worker::Session;
use crate::cache::KvCache;
use crate::Result;

struct Entry {
    tokens: Vec<u32>,
    caches: Vec<KvCache>,
    bytes: usize,
    used: u64,
}

pub(crate) struct PrefixStore {
    entries: Vec<Entry>,
    budget: usize,
    bytes: usize,
    clock: u64,
}

fn lcp(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl PrefixStore {
    pub fn new(budget: usize) -> PrefixStore {
        PrefixStore { entries: Vec::new(), budget, bytes: 0, clock: 0 }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The cached state sharing the longest prefix with `prompt` (at least one
    /// token, leaving at least one to evaluate), as a session to start from;
    /// only whole entries where a cache cannot be cut (`KvCache::has_prefix`).
    pub fn lookup(&mut self, prompt: &[u32]) -> Result<Option<Session>> {
        let usable = |e: &Entry| {
            let n = lcp(&e.tokens, prompt).min(prompt.len().saturating_sub(1));
            if e.caches.iter().all(|c| c.has_prefix(n)) {
                n
            } else {
                0
            }
        };
        let best = self.entries.iter().enumerate().map(|(i, e)| (i, usable(e))).max_by_key(|&(_, n)| n);
        let Some((i, n)) = best.filter(|&(_, n)| n > 0) else { return Ok(None) };
        self.clock += 1;
        let e = &mut self.entries[i];
        e.used = self.clock;
        let caches = e.caches.iter().map(|c| c.prefix(n)).collect::<Result<Vec<_>>>()?;
        Ok(Some(Session { caches, tokens: e.tokens[..n].to_vec() }))
    }

    /// Keeps `s` (evicting the least recently used entries to fit the budget);
    /// an entry that another one extends, or that extends another, replaces it
    /// (with recurrent states the shorter one then serves no prompt the longer
    /// one does not: a trade of reuse for memory).
    pub fn insert(&mut self, s: Session) {
        let bytes: usize = s.caches.iter().map(KvCache::nbytes).sum();
        if self.budget == 0 || bytes > self.budget || s.tokens.is_empty() {
            return;
        }
        if self.entries.iter().any(|e| e.tokens.len() >= s.tokens.len() && e.tokens.starts_with(&s.tokens)) {
            return;
        }
        let mut kept = Vec::with_capacity(self.entries.len());
        for e in self.entries.drain(..) {
            if s.tokens.starts_with(&e.tokens) {
                self.bytes -= e.bytes;
            } else {
                kept.push(e);
            }
        }
        self.entries = kept;
        while self.bytes + bytes > self.budget {
            let Some(oldest) = self.entries.iter().enumerate().min_by_key(|(_, e)| e.used).map(|(i, _)| i) else { break };
            self.bytes -= self.entries.swap_remove(oldest).bytes;
        }
        self.clock += 1;
        self.bytes += bytes;
        self.entries.push(Entry { tokens: s.tokens, caches: s.caches, bytes, used: self.clock });
    }
}
