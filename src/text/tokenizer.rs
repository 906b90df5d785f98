//! `Tokenizer`: the `tokenizers` crate's tokenizer plus the special tokens and chat
//! templates that a model directory (or a GGUF file) declares around it.

use std::path::Path;

use tokenizers::AddedToken;

use super::chat_template::{ChatFormat, ChatMessage, ChatOptions, ChatTemplate, TemplateTokens};
use super::config::DirConfig;
use crate::{Error, Result};

/// Special token ids and the flags that say where they go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: Option<u32>,
    /// Every id that ends generation; the first is the tokenizer's own `eos_token`.
    pub eos: Vec<u32>,
    pub pad: Option<u32>,
    pub unk: Option<u32>,
    /// Prepend `bos` when encoding with special tokens (if the post-processor did not).
    pub add_bos: bool,
    /// Append the first `eos` when encoding with special tokens (if the post-processor did not).
    pub add_eos: bool,
}

/// A loaded tokenizer. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    specials: SpecialTokens,
    /// Cached: `tokenizers` recounts the added vocabulary on every call.
    vocab_size: usize,
    /// Named chat templates; "default" (or the only one) is the model's template.
    templates: Vec<(String, ChatTemplate)>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("specials", &self.specials)
            .field("templates", &self.templates.iter().map(|(n, _)| n).collect::<Vec<_>>())
            .finish()
    }
}

fn tk_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(format!("{what}: {e}"))
}

/// Runs a call into the `tokenizers` crate, which panics on some inputs
/// (Oniguruma's "retry-limit-in-match over" when a pre-tokenizer regex
/// backtracks catastrophically): the panic becomes an error naming `what`
/// and prints nothing (`crate::panics`).
fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T> {
    crate::panics::catch(f).map_err(|p| Error::Tokenizer(format!("{what}: the tokenizer failed on this input ({p})")))
}

/// Texts per encoding thread below which `encode_batch` stays on the caller's thread.
const BATCH_CHUNK: usize = 16;

impl Tokenizer {
    /// Loads `tokenizer.json` and the configs beside it (see docs/text.md for the rules).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Tokenizer> {
        let dir = dir.as_ref();
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(Error::Tokenizer(format!("{}: no tokenizer.json", dir.display())));
        }
        // Read within a size limit (and never from a FIFO), parsed inside a panic guard.
        let text = crate::files::read_text(&path, crate::files::MAX_TEXT_FILE)?;
        let mut inner = guarded(&path.display().to_string(), || text.parse::<tokenizers::Tokenizer>())?.map_err(|e| tk_err(&path.display().to_string(), e))?;
        drop(text);
        let cfg = DirConfig::load(dir)?;

        // Tokens declared only in tokenizer_config.json must exist with the declared id.
        for tok in &cfg.declared_tokens {
            match inner.token_to_id(&tok.content) {
                Some(id) if id == tok.id => {}
                Some(id) => {
                    return Err(Error::Tokenizer(format!("added token {:?} is id {id} in tokenizer.json but {} in tokenizer_config.json", tok.content, tok.id)))
                }
                None => {
                    let added = AddedToken::from(tok.content.clone(), tok.special);
                    if tok.special { inner.add_special_tokens([added]) } else { inner.add_tokens([added]) }.map_err(|e| tk_err("adding declared token", e))?;
                    let got = inner.token_to_id(&tok.content);
                    if got != Some(tok.id) {
                        return Err(Error::Tokenizer(format!("added token {:?} declared as id {} but the vocabulary gives it {got:?}", tok.content, tok.id)));
                    }
                }
            }
        }

        let lookup = |token: &Option<String>, key: &str| -> Result<Option<u32>> {
            match token {
                None => Ok(None),
                Some(t) => {
                    inner.token_to_id(t).map(Some).ok_or_else(|| Error::Tokenizer(format!("tokenizer_config.json: {key} {t:?} is not in the vocabulary")))
                }
            }
        };
        let mut eos: Vec<u32> = lookup(&cfg.eos_token, "eos_token")?.into_iter().collect();
        for id in cfg.extra_eos_ids {
            if !eos.contains(&id) {
                eos.push(id);
            }
        }
        let specials = SpecialTokens {
            bos: lookup(&cfg.bos_token, "bos_token")?,
            eos,
            pad: lookup(&cfg.pad_token, "pad_token")?,
            unk: lookup(&cfg.unk_token, "unk_token")?,
            add_bos: cfg.add_bos.unwrap_or(false),
            add_eos: cfg.add_eos.unwrap_or(false),
        };
        Self::build(inner, specials, cfg.templates)
    }

    /// Builds a tokenizer from parts, for loaders that carry no Hugging Face files
    /// (GGUF). `chat_template` becomes the "default" template.
    pub fn from_parts(inner: tokenizers::Tokenizer, specials: SpecialTokens, chat_template: Option<String>) -> Result<Tokenizer> {
        let templates = chat_template.map(|t| vec![("default".to_string(), t)]).unwrap_or_default();
        Self::build(inner, specials, templates)
    }

    fn build(inner: tokenizers::Tokenizer, specials: SpecialTokens, templates: Vec<(String, String)>) -> Result<Tokenizer> {
        let vocab = inner.get_vocab_size(true);
        let all = specials.bos.iter().chain(&specials.eos).chain(&specials.pad).chain(&specials.unk);
        for &id in all {
            if inner.id_to_token(id).is_none() {
                return Err(Error::Tokenizer(format!("special token id {id} is outside the vocabulary ({vocab} tokens)")));
            }
        }
        if specials.add_bos && specials.bos.is_none() {
            return Err(Error::Tokenizer("add_bos is set but there is no bos token".into()));
        }
        if specials.add_eos && specials.eos.is_empty() {
            return Err(Error::Tokenizer("add_eos is set but there is no eos token".into()));
        }
        let templates = templates
            .into_iter()
            .map(|(name, source)| {
                let t = ChatTemplate::new(source).map_err(|e| Error::Template(format!("template {name:?}: {e}")))?;
                Ok((name, t))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tokenizer { inner, specials, vocab_size: vocab, templates })
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    pub fn specials(&self) -> &SpecialTokens {
        &self.specials
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.specials.bos
    }

    /// Every id that ends generation (tokenizer, generation and model configs together).
    pub fn eos_ids(&self) -> &[u32] {
        &self.specials.eos
    }

    pub fn is_eos(&self, id: u32) -> bool {
        self.specials.eos.contains(&id)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Encodes one text. With `add_special_tokens` the post-processor runs (BOS for
    /// Llama 3.1, Gemma) and `add_bos`/`add_eos` fill in what it did not add.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        self.encode_named(text, add_special_tokens, "encode")
    }

    fn encode_named(&self, text: &str, add_special_tokens: bool, what: &str) -> Result<Vec<u32>> {
        let enc = guarded(what, || self.inner.encode_fast(text, add_special_tokens))?.map_err(|e| tk_err(what, e))?;
        let mut ids = enc.get_ids().to_vec();
        if add_special_tokens {
            self.add_missing_specials(&mut ids);
        }
        Ok(ids)
    }

    /// Encodes many texts in parallel, on threads of gomlx's own (`gomlx-encode`,
    /// so a panic in the tokenizer stays quiet and becomes this call's error;
    /// the `tokenizers` rayon pool would print it on its worker thread).
    pub fn encode_batch(&self, texts: &[&str], add_special_tokens: bool) -> Result<Vec<Vec<u32>>> {
        let encode_range = |start: usize, chunk: &[&str]| -> Result<Vec<Vec<u32>>> {
            chunk.iter().enumerate().map(|(i, t)| self.encode_named(t, add_special_tokens, &format!("encode_batch: text {}", start + i))).collect()
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(texts.len().div_ceil(BATCH_CHUNK));
        if threads <= 1 {
            return encode_range(0, texts);
        }
        let per = texts.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = texts
                .chunks(per)
                .enumerate()
                .map(|(c, chunk)| {
                    let encode_range = &encode_range;
                    crate::panics::thread("encode").spawn_scoped(scope, move || encode_range(c * per, chunk))
                })
                .collect();
            let mut out = Vec::with_capacity(texts.len());
            for h in handles {
                let h = h.map_err(|e| Error::Tokenizer(format!("encode_batch: cannot start a thread: {e}")))?;
                let ids = h.join().map_err(|_| Error::Tokenizer("encode_batch: an encoding thread panicked".into()))??;
                out.extend(ids);
            }
            Ok(out)
        })
    }

    fn add_missing_specials(&self, ids: &mut Vec<u32>) {
        if let (true, Some(bos)) = (self.specials.add_bos, self.specials.bos) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        if let (true, Some(&eos)) = (self.specials.add_eos, self.specials.eos.first()) {
            if ids.last() != Some(&eos) {
                ids.push(eos);
            }
        }
    }

    /// Decodes ids to text. Invalid UTF-8 becomes U+FFFD; an id outside the
    /// vocabulary is an error.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        // `tokenizers` silently drops unknown ids; a caller passing one has a bug worth reporting.
        if let Some(bad) = ids.iter().find(|&&id| self.inner.id_to_token(id).is_none()) {
            let vocab = self.vocab_size;
            return Err(Error::Tokenizer(format!("decode: id {bad} is outside the vocabulary ({vocab} tokens)")));
        }
        guarded("decode", || self.inner.decode(ids, skip_special_tokens))?.map_err(|e| tk_err("decode", e))
    }

    /// The model's own chat template ("default", or the only one there is).
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.named_template("default").or_else(|| if self.templates.len() == 1 { Some(&self.templates[0].1) } else { None })
    }

    pub fn named_template(&self, name: &str) -> Option<&ChatTemplate> {
        self.templates.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    pub fn template_names(&self) -> impl Iterator<Item = &str> {
        self.templates.iter().map(|(n, _)| n.as_str())
    }

    /// The token strings a template sees as `bos_token`, `eos_token`, ...
    pub fn template_tokens(&self) -> TemplateTokens {
        let s = |id: Option<u32>| id.and_then(|i| self.inner.id_to_token(i));
        TemplateTokens {
            bos_token: s(self.specials.bos),
            eos_token: s(self.specials.eos.first().copied()),
            unk_token: s(self.specials.unk),
            pad_token: s(self.specials.pad),
        }
    }

    /// Renders a conversation with the model's template (or the format asked for).
    /// A model without a template is an error unless `ChatFormat::Plain` is asked for.
    pub fn apply_chat_template(&self, messages: &[ChatMessage], options: &ChatOptions, format: &ChatFormat) -> Result<String> {
        let tokens = self.template_tokens();
        match format {
            ChatFormat::Model => {
                // Like transformers: a "tool_use" template, when there is one, renders tool calls.
                let tool_template = if options.tools.is_some() { self.named_template("tool_use") } else { None };
                let template = tool_template.or_else(|| self.chat_template()).ok_or_else(|| {
                    Error::Template(
                        "this model has no chat template (tokenizer_config.json, chat_template.jinja or \
                         chat_template.json); pass a template or ask for ChatFormat::Plain"
                            .into(),
                    )
                })?;
                template.render(messages, options, &tokens)
            }
            ChatFormat::Named(name) => {
                let template = self.named_template(name).ok_or_else(|| {
                    let names: Vec<&str> = self.template_names().collect();
                    Error::Template(format!("no chat template named {name:?} (have {names:?})"))
                })?;
                template.render(messages, options, &tokens)
            }
            ChatFormat::Custom(template) => template.render(messages, options, &tokens),
            ChatFormat::Plain => ChatFormat::render_plain(messages, options),
        }
    }

    /// Renders and encodes a conversation the way transformers' `apply_chat_template`
    /// with `tokenize=True` does: the template writes the special tokens, so none are added.
    pub fn encode_chat(&self, messages: &[ChatMessage], options: &ChatOptions, format: &ChatFormat) -> Result<Vec<u32>> {
        let text = self.apply_chat_template(messages, options, format)?;
        // The plain format writes no special tokens, so the tokenizer adds its own.
        self.encode(&text, matches!(format, ChatFormat::Plain))
    }
}
