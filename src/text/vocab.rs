//! The bytes each token id stands for, for grammars that work on bytes
//! (constrained decoding). Read from the tokenizer itself, so a tokenizer built
//! from GGUF metadata answers like a `tokenizer.json` one.
//!
//! Three vocabulary spellings exist: byte-level BPE (GPT-2's printable stand-in
//! characters for the 256 bytes), SentencePiece-style (`▁` for a space and
//! `<0xHH>` byte-fallback pieces) and plain text (word/char level). The decoder
//! tells which; added tokens are their literal text.

use super::Tokenizer;
use serde_json::Value;

/// What a token id is, in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenBytes {
    /// An ordinary token: the bytes it adds to the text.
    Text(Vec<u8>),
    /// A special (control) token, such as `<|im_end|>`: its name, never text a grammar may produce.
    Special(String),
    /// An id with no token (holes in the vocabulary).
    None,
}

#[derive(Default)]
struct Spelling {
    byte_level: bool,
    byte_fallback: bool,
    /// The character that stands for a space (`▁` in SentencePiece vocabularies).
    space: Option<char>,
}

fn read_decoder(d: &Value, s: &mut Spelling) {
    match d["type"].as_str() {
        Some("ByteLevel") => s.byte_level = true,
        Some("ByteFallback") => s.byte_fallback = true,
        Some("Metaspace") => s.space = Some(d["replacement"].as_str().and_then(|r| r.chars().next()).unwrap_or('▁')),
        Some("Replace") if d["content"].as_str() == Some(" ") => {
            if let Some(p) = d["pattern"]["String"].as_str() {
                let mut chars = p.chars();
                if let (Some(c), None) = (chars.next(), chars.next()) {
                    s.space = Some(c);
                }
            }
        }
        Some("Sequence") => {
            for d in d["decoders"].as_array().into_iter().flatten() {
                read_decoder(d, s);
            }
        }
        _ => {}
    }
}

/// GPT-2's byte-level alphabet, reversed: the stand-in character of each byte → the byte.
fn byte_level_table() -> std::collections::HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 256u32;
    let mut map = std::collections::HashMap::with_capacity(256);
    for b in 0..=255u8 {
        let c = if printable(b) {
            char::from(b)
        } else {
            let c = char::from_u32(next).expect("below the surrogates");
            next += 1;
            c
        };
        map.insert(c, b);
    }
    map
}

/// `<0xHH>` → the byte.
fn fallback_byte(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

impl Tokenizer {
    /// The bytes of every token id below `vocab_size` (which may exceed the
    /// tokenizer's own size: a model's embedding is often padded).
    pub fn token_bytes(&self, vocab_size: usize) -> Vec<TokenBytes> {
        let inner = self.inner();
        let mut spelling = Spelling::default();
        if let Some(d) = inner.get_decoder() {
            if let Ok(v) = serde_json::to_value(d) {
                read_decoder(&v, &mut spelling);
            }
        }
        let table = spelling.byte_level.then(byte_level_table);
        let added = inner.get_added_tokens_decoder();
        (0..vocab_size as u32)
            .map(|id| {
                if let Some(t) = added.get(&id) {
                    return match (t.special, spelling.space) {
                        (true, _) => TokenBytes::Special(t.content.clone()),
                        // SentencePiece vocabularies add runs of `▁` as tokens of their own.
                        (false, Some(c)) if table.is_none() => TokenBytes::Text(t.content.replace(c, " ").into_bytes()),
                        (false, _) => TokenBytes::Text(t.content.clone().into_bytes()),
                    };
                }
                let Some(piece) = inner.id_to_token(id) else { return TokenBytes::None };
                if let Some(table) = &table {
                    // A piece outside the alphabet cannot come from the byte-level encoder: keep its UTF-8.
                    let bytes: Option<Vec<u8>> = piece.chars().map(|c| table.get(&c).copied()).collect();
                    return TokenBytes::Text(bytes.unwrap_or_else(|| piece.into_bytes()));
                }
                if spelling.byte_fallback {
                    if let Some(b) = fallback_byte(&piece) {
                        return TokenBytes::Text(vec![b]);
                    }
                }
                match spelling.space {
                    Some(c) => TokenBytes::Text(piece.replace(c, " ").into_bytes()),
                    None => TokenBytes::Text(piece.into_bytes()),
                }
            })
            .collect()
    }
}
