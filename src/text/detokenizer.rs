//! Streaming detokenizer: turns generated ids into text pieces as they arrive.
//!
//! The rule (docs/text.md): keep two offsets into the ids, `prefix` and `read`. For a
//! new id, decode the window `ids[prefix..]` and the already emitted part
//! `ids[prefix..read]`; the piece is what the first adds to the second. Both decodes
//! start at the same token, so left-edge effects of the decoder (a stripped leading
//! space in SentencePiece, a byte sequence cut in half) cancel out. When the window's
//! text ends in U+FFFD the last bytes may still be an incomplete character, so
//! nothing is emitted and the window grows; otherwise the piece is emitted,
//! `prefix` moves to `read` and `read` to the end. Each step decodes a few tokens
//! only, so the cost per token does not grow with the length of the output.

use super::tokenizer::Tokenizer;
use crate::Result;

/// Longest run of tokens held back for a trailing U+FFFD. A UTF-8 character is at
/// most 4 bytes, so a longer run is a real U+FFFD (or invalid bytes) and is emitted.
const MAX_HOLD: usize = 8;
/// Drop consumed ids once this many pile up in front of the window.
const COMPACT_AT: usize = 256;

/// Incremental decoder for one generated sequence.
#[derive(Debug, Clone)]
pub struct StreamDecoder {
    skip_special_tokens: bool,
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
    held: usize,
    /// `decode(ids[prefix..read])`, kept while the offsets do not move.
    prefix_text: Option<String>,
}

impl StreamDecoder {
    /// `skip_special_tokens` as in `Tokenizer::decode`; the concatenated pieces equal
    /// `decode(all ids, skip_special_tokens)`.
    pub fn new(skip_special_tokens: bool) -> StreamDecoder {
        StreamDecoder { skip_special_tokens, ids: Vec::new(), prefix: 0, read: 0, held: 0, prefix_text: Some(String::new()) }
    }

    /// Adds one id; returns the text it completes (often empty while a multi-byte
    /// character is still arriving).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = tokenizer.decode(&self.ids[self.prefix..], self.skip_special_tokens)?;
        let settled = text.starts_with(self.prefix_text(tokenizer)?) && !text.ends_with('\u{FFFD}');
        if !settled && self.held < MAX_HOLD {
            self.held += 1;
            return Ok(String::new());
        }
        let piece = new_suffix(self.prefix_text(tokenizer)?, &text);
        self.commit();
        Ok(piece)
    }

    /// Ends the sequence: returns whatever was held back (possibly ending in U+FFFD,
    /// exactly as `decode` of all ids does) and resets the decoder.
    pub fn finish(&mut self, tokenizer: &Tokenizer) -> Result<String> {
        let piece = if self.read < self.ids.len() {
            let text = tokenizer.decode(&self.ids[self.prefix..], self.skip_special_tokens)?;
            new_suffix(self.prefix_text(tokenizer)?, &text)
        } else {
            String::new()
        };
        self.reset();
        Ok(piece)
    }

    /// Forgets all ids, ready for a new sequence.
    pub fn reset(&mut self) {
        *self = StreamDecoder::new(self.skip_special_tokens);
    }

    /// Number of ids currently kept (bounded, whatever the output length).
    pub fn window_len(&self) -> usize {
        self.ids.len()
    }

    fn prefix_text(&mut self, tokenizer: &Tokenizer) -> Result<&str> {
        if self.prefix_text.is_none() {
            let t = tokenizer.decode(&self.ids[self.prefix..self.read], self.skip_special_tokens)?;
            self.prefix_text = Some(t);
        }
        Ok(self.prefix_text.as_deref().unwrap_or_default())
    }

    fn commit(&mut self) {
        self.prefix = self.read;
        self.read = self.ids.len();
        self.held = 0;
        self.prefix_text = None;
        if self.prefix >= COMPACT_AT {
            self.ids.drain(..self.prefix);
            self.read -= self.prefix;
            self.prefix = 0;
        }
    }
}

/// The part of `text` after `prefix`; when a decoder rewrote the prefix (never seen
/// with the supported tokenizers), the part after their longest common prefix.
fn new_suffix(prefix: &str, text: &str) -> String {
    if let Some(rest) = text.strip_prefix(prefix) {
        return rest.to_string();
    }
    let mut common = 0;
    for ((i, a), b) in text.char_indices().zip(prefix.chars()) {
        if a != b {
            break;
        }
        common = i + a.len_utf8();
    }
    text[common..].to_string()
}
