//! Constrained decoding: a grammar (JSON Schema, JSON object, regular
//! expression, Lark grammar or a list of choices) decides which tokens may come
//! next, and the sampler sees every other token at `-inf`. llguidance compiles
//! the grammar and computes each step's token mask on the host; the engine runs
//! that while the device computes the step's forward (docs/sampling.md).
//!
//! [`Grammars`] is built once per tokenizer (the token trie); [`Grammars::compile`]
//! turns a [`Constraint`] into a [`ConstraintState`], one per generation, that
//! tracks the tokens generated so far.

use crate::mlx::Array;
use crate::text::{TokenBytes, Tokenizer};
use crate::{Error, Result};
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{InferenceCapabilities, TokEnv, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;

/// What the output must be. Serialized (options files, the C ABI's JSON) as
/// `{"json_schema": {...}}`, `"json_object"`, `{"regex": "..."}`,
/// `{"lark": "..."}` or `{"choice": ["a", "b"]}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Constraint {
    /// JSON that validates against this JSON Schema (draft 2020-12 keywords
    /// llguidance supports; any other is an error, never ignored).
    JsonSchema(Value),
    /// Any JSON object.
    JsonObject,
    /// Text matching this regular expression (Rust `regex` syntax), whole.
    Regex(String),
    /// Text in the language of this Lark grammar (llguidance's Lark dialect,
    /// which may embed JSON schemas with `%json { ... }`).
    Lark(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
}

/// JSON without optional whitespace: the output is compact (`", "` and `": "`
/// separators) and cannot run on with blanks. A schema's own `x-guidance` wins.
fn json_options(mut schema: Value) -> Value {
    if let Value::Object(m) = &mut schema {
        m.entry("x-guidance").or_insert_with(|| serde_json::json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}));
    }
    schema
}

impl Constraint {
    /// Checks what can be checked without a tokenizer; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::InvalidArgument(format!("constraint: {what}")));
        match self {
            Constraint::JsonSchema(s) if !s.is_object() && !s.is_boolean() => bad("json_schema must be a JSON object (a schema)"),
            Constraint::Regex(r) if r.is_empty() => bad("regex is empty"),
            Constraint::Lark(g) if g.trim().is_empty() => bad("lark grammar is empty"),
            Constraint::Choice(c) if c.is_empty() => bad("choice needs at least one option"),
            Constraint::Choice(c) if c.iter().any(String::is_empty) => bad("choice options must not be empty strings"),
            _ => Ok(()),
        }
    }

    /// The kind, as the options spell it.
    pub fn kind(&self) -> &'static str {
        match self {
            Constraint::JsonSchema(_) => "json_schema",
            Constraint::JsonObject => "json_object",
            Constraint::Regex(_) => "regex",
            Constraint::Lark(_) => "lark",
            Constraint::Choice(_) => "choice",
        }
    }

    fn grammar(&self) -> Result<TopLevelGrammar> {
        self.validate()?;
        Ok(match self {
            Constraint::JsonSchema(s) => TopLevelGrammar::from_json_schema(json_options(s.clone())),
            Constraint::JsonObject => TopLevelGrammar::from_json_schema(json_options(serde_json::json!({"type": "object"}))),
            Constraint::Regex(r) => TopLevelGrammar::from_regex(r),
            Constraint::Lark(g) => TopLevelGrammar::from_lark(g.clone()),
            Constraint::Choice(options) => {
                // Lark string literals are JSON strings.
                let alts: Vec<String> = options.iter().map(|o| serde_json::to_string(o).expect("a string serializes")).collect();
                TopLevelGrammar::from_lark(format!("start: {}", alts.join(" | ")))
            }
        })
    }
}

/// The tokenizer as llguidance sees it: a trie of token bytes.
struct Env {
    trie: TokTrie,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<u32> {
        self.trie.greedy_tokenize(s)
    }

    // Greedy is not the model's own tokenization, so llguidance never forces
    // tokens from it; masks are still exact.
    fn tokenize_is_canonical(&self) -> bool {
        false
    }
}

/// A tokenizer's compiled vocabulary, shared by every constrained generation of a model.
pub struct Grammars {
    factory: ParserFactory,
    vocab: usize,
    eos: Vec<u32>,
}

impl std::fmt::Debug for Grammars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammars").field("vocab", &self.vocab).field("eos", &self.eos).finish()
    }
}

impl Grammars {
    /// The vocabulary of `tokenizer` for logits with `vocab_size` entries.
    pub fn new(tokenizer: &Tokenizer, vocab_size: usize) -> Result<Grammars> {
        let words: Vec<Vec<u8>> = tokenizer
            .token_bytes(vocab_size.max(tokenizer.vocab_size()))
            .into_iter()
            .map(|t| match t {
                TokenBytes::Text(b) => b,
                // llguidance's spelling of a special token: a 0xFF marker (never in UTF-8) and its name.
                TokenBytes::Special(name) => [&[TokTrie::SPECIAL_TOKEN_MARKER][..], name.as_bytes()].concat(),
                TokenBytes::None => Vec::new(),
            })
            .collect();
        let eos: Vec<u32> = tokenizer.eos_ids().iter().copied().filter(|&e| (e as usize) < vocab_size).collect();
        let info = TokRxInfo::new(words.len() as u32, eos.first().copied().unwrap_or(u32::MAX));
        let built = crate::panics::catch(|| {
            let trie = TokTrie::from(&info, &words);
            let trie = if eos.is_empty() { trie } else { trie.with_eos_tokens(&eos) };
            let env: TokEnv = Arc::new(Env { trie });
            let mut factory = ParserFactory::new(&env, InferenceCapabilities::default(), &llguidance::earley::SlicedBiasComputer::general_slices())
                .map_err(|e| e.to_string())?;
            factory.quiet();
            Ok::<_, String>(factory)
        })
        .map_err(|p| Error::InvalidArgument(format!("constrained decoding: building the token trie failed ({p})")))?;
        let factory = built.map_err(|e| Error::InvalidArgument(format!("constrained decoding: {e}")))?;
        Ok(Grammars { factory, vocab: vocab_size, eos })
    }

    /// A new generation's state under `constraint`. An invalid grammar or a
    /// schema with keywords llguidance does not support is an error naming it.
    pub fn compile(&self, constraint: &Constraint) -> Result<ConstraintState> {
        let grammar = constraint.grammar()?;
        let kind = constraint.kind();
        let parser = crate::panics::catch(|| self.factory.create_parser(grammar))
            .map_err(|p| Error::InvalidArgument(format!("constraint {kind}: the grammar compiler failed ({p})")))?
            .map_err(|e| Error::InvalidArgument(format!("constraint {kind} is not supported: {e}")))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(Error::InvalidArgument(format!("constraint {kind} is not supported: {e}")));
        }
        Ok(ConstraintState { matcher, vocab: self.vocab, eos: self.eos.clone(), mask_s: 0.0, masks: 0, done: false })
    }
}

/// The tokens a constrained row may produce next (`allowed[id]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenMask {
    pub allowed: Vec<bool>,
}

/// One generation's position in its grammar.
pub struct ConstraintState {
    matcher: Matcher,
    vocab: usize,
    eos: Vec<u32>,
    /// Host seconds spent computing masks, and how many.
    pub mask_s: f64,
    pub masks: usize,
    done: bool,
}

impl std::fmt::Debug for ConstraintState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConstraintState").field("done", &self.done).field("masks", &self.masks).finish()
    }
}

impl ConstraintState {
    fn fail(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::Engine(format!("constrained decoding: {what}: {e}"))
    }

    /// Whether the grammar is complete: nothing but end-of-sequence may follow.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Records the token the model produced.
    pub fn advance(&mut self, token: u32) -> Result<()> {
        if self.done {
            return Ok(());
        }
        if self.eos.contains(&token) {
            self.done = true;
            return Ok(());
        }
        self.matcher.consume_token(token).map_err(|e| self.fail(&format!("token {token} does not fit the grammar"), e))?;
        if self.matcher.is_stopped() {
            self.done = true;
        }
        Ok(())
    }

    /// The tokens allowed next; None when the grammar is complete (the
    /// generation ends rather than emit an end-of-sequence token).
    pub fn mask(&mut self) -> Result<Option<TokenMask>> {
        if self.done {
            return Ok(None);
        }
        let t = Instant::now();
        let vob = self.matcher.compute_mask().map_err(|e| self.fail("no token can continue the output", e))?;
        let mut allowed = vec![false; self.vocab];
        let mut any_text = false;
        vob.iter_set_entries(|i| {
            if i < self.vocab {
                allowed[i] = true;
                any_text |= !self.eos.contains(&(i as u32));
            }
        });
        self.mask_s += t.elapsed().as_secs_f64();
        self.masks += 1;
        if !any_text {
            self.done = true;
            return Ok(None);
        }
        Ok(Some(TokenMask { allowed }))
    }
}

/// A `[1, V]` boolean row for [`super::Sampler::sample_masked`].
pub fn mask_array(mask: &TokenMask) -> Result<Array> {
    Array::from_slice(&mask.allowed, &[1, mask.allowed.len() as i32])
}
