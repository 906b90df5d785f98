//! A `tokenizers::Tokenizer` built in memory from GGUF tokenizer metadata.
//!
//! The result matches the tokenizer transformers builds from the same file (`gguf_file=`):
//! - `tokenizer.ggml.model == "gpt2"`: byte-level BPE from `tokens` + `merges`; the split regex
//!   comes from `tokenizer.ggml.pre` (llama-bpe / qwen2 / ...; others get GPT-2's own regex).
//! - `tokenizer.ggml.model == "llama"` (SentencePiece): BPE with byte fallback (`<0xXX>`)
//!   whose merges are rebuilt from the vocabulary, ranked by `scores`; `▁` for spaces with a
//!   prefix `▁` when `add_space_prefix` (default true). Gemma files rank merges by token
//!   order instead (their scores do not follow the merge order), spell all-blank tokens
//!   with `▁`, and replace spaces without a prefix.
//!
//! Control tokens (type 3) and the bos/eos/unk/pad tokens become special added tokens,
//! user-defined ones (type 4) plain added tokens, so they are matched whole.
//! The tokenizer is described as `tokenizer.json` first (`GgufTokenizer::json`, which
//! `gomlx convert` writes out) and parsed by the `tokenizers` crate.

use std::collections::HashMap;

use serde_json::{json, Map, Value as Json};

use super::reader::GgufFile;
use crate::{Error, Result};

/// SentencePiece token types (`tokenizer.ggml.token_type`).
pub mod token_type {
    pub const NORMAL: i64 = 1;
    pub const UNKNOWN: i64 = 2;
    pub const CONTROL: i64 = 3;
    pub const USER_DEFINED: i64 = 4;
    pub const UNUSED: i64 = 5;
    pub const BYTE: i64 = 6;
}

/// The tokenizer of a GGUF file and the settings the text layer needs around it.
pub struct GgufTokenizer {
    pub tokenizer: tokenizers::Tokenizer,
    /// The same tokenizer as `tokenizer.json` text.
    pub json: Json,
    pub bos: Option<u32>,
    /// End-of-sequence ids: `tokenizer.ggml.eos_token_id`, then `eot_token_id` / `eom_token_id`
    /// when present and different.
    pub eos: Vec<u32>,
    pub pad: Option<u32>,
    pub unk: Option<u32>,
    /// Whether encoding with special tokens prepends `bos` (the post-processor does it).
    pub add_bos: bool,
    pub add_eos: bool,
    pub chat_template: Option<String>,
}

impl std::fmt::Debug for GgufTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufTokenizer")
            .field("vocab", &self.tokenizer.get_vocab_size(true))
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("pad", &self.pad)
            .field("add_bos", &self.add_bos)
            .field("chat_template", &self.chat_template.as_ref().map(|t| t.len()))
            .finish()
    }
}

/// GPT-2's byte → printable-character table used by byte-level BPE vocabularies.
pub fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable = (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).unwrap()
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap()
        };
    }
    table
}

// Split regexes of the byte-level pre-tokenizers named by `tokenizer.ggml.pre` (the
// published patterns of each model family's tokenizer).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The split regex for a `tokenizer.ggml.pre` value; `None` means GPT-2's own byte-level
/// regex (e.g. `gpt2`, `default`, `smollm`).
pub fn pre_split_regex(pre: &str) -> Option<&'static str> {
    Some(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2" | "dbrx" | "smaug-bpe" => LLAMA3_SPLIT,
        "qwen2" | "deepseek-r1-qwen" | "megrez" => QWEN2_SPLIT,
        "qwen35" => QWEN35_SPLIT,
        "tekken" => TEKKEN_SPLIT,
        "gpt-4o" | "llama4" => GPT4O_SPLIT,
        _ => return None,
    })
}

/// SentencePiece merges recovered from a vocabulary: every split of a token into two
/// vocabulary pieces is a merge; merges are ranked by the token's score (higher first), then
/// by longer left piece, then longer right piece; ties keep token order, and the splits of one
/// token are ordered by the ids of (left, right). Lengths count characters.
pub fn merges_from_vocab(tokens: &[String], score: &dyn Fn(usize) -> f64) -> Vec<(String, String)> {
    // Python dict semantics: a repeated token keeps its first position, takes its last id/score.
    let mut ids: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    let mut order: Vec<&str> = Vec::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        if ids.insert(t.as_str(), i).is_none() {
            order.push(t.as_str());
        }
    }
    struct M<'a> {
        l: &'a str,
        r: &'a str,
        score: f64,
        ll: usize,
        rl: usize,
    }
    let mut merges: Vec<M> = Vec::new();
    let mut local: Vec<(usize, usize, M)> = Vec::new();
    for &tok in &order {
        let s = score(ids[tok]);
        local.clear();
        for (cut, _) in tok.char_indices().skip(1) {
            let (l, r) = tok.split_at(cut);
            if let (Some(&li), Some(&ri)) = (ids.get(l), ids.get(r)) {
                local.push((li, ri, M { l, r, score: s, ll: l.chars().count(), rl: r.chars().count() }));
            }
        }
        local.sort_by_key(|(li, ri, _)| (*li, *ri));
        merges.extend(local.drain(..).map(|(_, _, m)| m));
    }
    // Stable sort, descending on (score, len(left), len(right)).
    // A total order (a NaN score made partial_cmp's order inconsistent and the sort
    // panic; found by fuzzing); + 0.0 keeps -0.0 and 0.0 equal, as partial_cmp did.
    merges.sort_by(|a, b| (b.score + 0.0).total_cmp(&(a.score + 0.0)).then(b.ll.cmp(&a.ll)).then(b.rl.cmp(&a.rl)));
    merges.into_iter().map(|m| (m.l.to_string(), m.r.to_string())).collect()
}

fn tok_err(file: &GgufFile, msg: impl std::fmt::Display) -> Error {
    Error::Tokenizer(format!("{}: {msg}", file.path().display()))
}

/// Bounds on the vocabulary before anything is built from it: the token
/// count, each token's length, and the work of recovering SentencePiece
/// merges (quadratic in a token's length).
fn check_vocabulary(file: &GgufFile, tokens: &[String]) -> Result<()> {
    use crate::limits::{MAX_TOKEN_BYTES, MAX_VOCAB};
    if tokens.is_empty() || tokens.len() as u64 > MAX_VOCAB {
        return Err(tok_err(file, format!("tokenizer.ggml.tokens has {} entries (1 to {MAX_VOCAB} allowed)", tokens.len())));
    }
    let mut work = 0u64;
    for (i, t) in tokens.iter().enumerate() {
        if t.len() > MAX_TOKEN_BYTES {
            return Err(tok_err(file, format!("tokenizer.ggml.tokens[{i}] is {} bytes long, more than the limit of {MAX_TOKEN_BYTES}", t.len())));
        }
        work += (t.len() as u64).pow(2);
    }
    if work > MERGE_WORK {
        return Err(tok_err(
            file,
            format!("tokenizer.ggml.tokens is too large to derive merges from (sum of squared token lengths {work}, limit {MERGE_WORK})"),
        ));
    }
    Ok(())
}

/// Bound on the sum of squared token lengths (bytes): `merges_from_vocab`
/// looks up every split of every token. Gemma 3's 262k vocabulary: about 10^7.
const MERGE_WORK: u64 = 1 << 31;

/// An error of the `tokenizers` crate on the tokenizer.json gomlx built from
/// the metadata, without the line and column of that internal JSON, naming
/// the metadata the failing part came from.
fn build_error(file: &GgufFile, j: &Json, e: impl std::fmt::Display) -> Error {
    let strip = |m: String| match m.rfind(" at line ") {
        Some(i) if m[i..].contains(" column ") => m[..i].to_string(),
        _ => m,
    };
    let msg = strip(e.to_string());
    // Which part fails on its own decides what the message blames.
    let model_fails = serde_json::from_value::<tokenizers::ModelWrapper>(j["model"].clone()).is_err();
    let what = if model_fails {
        "the tokenizer's model from tokenizer.ggml.tokens, tokenizer.ggml.merges and tokenizer.ggml.scores"
    } else {
        "the tokenizer from tokenizer.ggml.* (special or added tokens, types)"
    };
    tok_err(file, format!("building {what}: {msg}"))
}

fn added(id: usize, content: &str, special: bool) -> Json {
    json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
           "normalized": false, "special": special})
}

impl GgufTokenizer {
    /// Build the tokenizer described by a GGUF file's metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let model = file.require_str("tokenizer.ggml.model")?;
        let tokens: Vec<String> = file.require_str_array("tokenizer.ggml.tokens")?.into_iter().map(str::to_owned).collect();
        check_vocabulary(file, &tokens)?;
        let types = file.get_i64_array("tokenizer.ggml.token_type")?;
        if let Some(t) = &types {
            if t.len() != tokens.len() {
                return Err(tok_err(file, format!("{} token types for {} tokens", t.len(), tokens.len())));
            }
        }
        let id = |k: &str| -> Result<Option<u32>> {
            match file.get_u64(k)? {
                Some(v) if (v as usize) < tokens.len() => Ok(Some(v as u32)),
                Some(v) => Err(tok_err(file, format!("{k} = {v} is outside the vocabulary of {}", tokens.len()))),
                None => Ok(None),
            }
        };
        let bos = id("tokenizer.ggml.bos_token_id")?;
        let eos_id = id("tokenizer.ggml.eos_token_id")?;
        let unk = id("tokenizer.ggml.unknown_token_id")?;
        let pad = id("tokenizer.ggml.padding_token_id")?;
        let mut eos: Vec<u32> = eos_id.into_iter().collect();
        for k in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            if let Some(e) = id(k)? {
                if !eos.contains(&e) {
                    eos.push(e);
                }
            }
        }
        let arch = file.architecture()?;
        let spm = match model {
            "gpt2" => false,
            "llama" => true,
            m => return Err(tok_err(file, format!("unsupported tokenizer.ggml.model '{m}' (supported: gpt2, llama)"))),
        };
        // llama.cpp and transformers add BOS to SentencePiece vocabularies unless told otherwise.
        let add_bos = file.get_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(spm);
        let add_eos = file.get_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        let chat_template = file.get_str("tokenizer.chat_template")?.map(str::to_owned);

        let mut j = if spm {
            let gemma = arch.starts_with("gemma");
            Self::spm_json(file, &tokens, unk, gemma)?
        } else {
            Self::bpe_json(file, &tokens)?
        };

        // Added tokens: control and the named specials as special, user-defined as plain.
        let byte_alphabet: std::collections::HashSet<char> = bytes_to_unicode().into_iter().collect();
        let named: Vec<u32> = [bos, eos_id, unk, pad].into_iter().flatten().collect();
        let mut added_tokens = Vec::new();
        for (i, t) in tokens.iter().enumerate() {
            let ty = types.as_ref().map(|v| v[i]).unwrap_or(token_type::NORMAL);
            let spelled = spm || t.chars().all(|c| byte_alphabet.contains(&c));
            if (ty == token_type::CONTROL && spelled) || named.contains(&(i as u32)) {
                added_tokens.push(added(i, t, true));
            } else if ty == token_type::USER_DEFINED && j["model"]["vocab"].get(t.as_str()).is_some() {
                // Only as spelled in the vocabulary: Gemma's all-blank user-defined tokens are
                // respelled with ▁ in the model and must not come back as new ids.
                added_tokens.push(added(i, t, false));
            }
        }
        j["added_tokens"] = Json::Array(added_tokens);

        // Post-processor: BOS (and EOS) around single sequences, as transformers does.
        let special = |i: u32| tokens[i as usize].clone();
        let mut single = Vec::new();
        let mut pair = Vec::new();
        let mut specials = Map::new();
        let bos_tok = if add_bos { bos.map(special) } else { None };
        let eos_tok = if add_eos { eos_id.map(special) } else { None };
        for (seq, type_id) in [("A", 0), ("B", 1)] {
            let out = if seq == "A" { &mut single } else { &mut pair };
            if let Some(b) = &bos_tok {
                out.push(json!({"SpecialToken": {"id": b, "type_id": type_id}}));
            }
            out.push(json!({"Sequence": {"id": seq, "type_id": type_id}}));
            if let Some(e) = &eos_tok {
                out.push(json!({"SpecialToken": {"id": e, "type_id": type_id}}));
            }
        }
        let pair: Vec<Json> = single.iter().cloned().chain(pair).collect();
        for (t, i) in [(&bos_tok, bos), (&eos_tok, eos_id)] {
            if let (Some(t), Some(i)) = (t, i) {
                specials.insert(t.clone(), json!({"id": t, "ids": [i], "tokens": [t]}));
            }
        }
        j["post_processor"] = json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials});

        let text = serde_json::to_string(&j).map_err(|e| tok_err(file, e))?;
        let tokenizer: tokenizers::Tokenizer = text.parse().map_err(|e| build_error(file, &j, e))?;
        Ok(GgufTokenizer { tokenizer, json: j, bos, eos, pad, unk, add_bos, add_eos, chat_template })
    }

    fn bpe_json(file: &GgufFile, tokens: &[String]) -> Result<Json> {
        let table = bytes_to_unicode();
        let alphabet: std::collections::HashSet<char> = table.iter().copied().collect();
        let mut vocab = Map::new();
        for (i, t) in tokens.iter().enumerate() {
            // Tokens already in the byte alphabet stay; others are respelled byte by byte.
            let key = if t.chars().all(|c| alphabet.contains(&c)) { t.clone() } else { t.bytes().map(|b| table[b as usize]).collect() };
            vocab.insert(key, json!(i));
        }
        let merges: Vec<Json> = match file.get_str_array("tokenizer.ggml.merges")? {
            Some(m) => m
                .iter()
                .map(|m| {
                    let (l, r) = m.split_once(' ').ok_or_else(|| tok_err(file, format!("malformed merge '{m}'")))?;
                    Ok(json!([l, r]))
                })
                .collect::<Result<_>>()?,
            None => return Err(file.error("missing required metadata key 'tokenizer.ggml.merges'")),
        };
        let pre = file.get_str("tokenizer.ggml.pre")?.unwrap_or("default");
        let pre_tokenizer = match pre_split_regex(pre) {
            Some(re) => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}),
            None => json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}),
        };
        Ok(json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                      "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,
                      "ignore_merges": false, "vocab": vocab, "merges": merges}
        }))
    }

    fn spm_json(file: &GgufFile, tokens: &[String], unk: Option<u32>, gemma: bool) -> Result<Json> {
        let (tokens, merges) = if gemma {
            // All-blank tokens are stored with real spaces; the model spells them with ▁.
            let respelled: Vec<String> = tokens
                .iter()
                .map(|t| if t.contains(' ') && t.chars().all(char::is_whitespace) { "\u{2581}".repeat(t.chars().count()) } else { t.clone() })
                .collect();
            let merges = merges_from_vocab(&respelled, &|i| -(i as f64));
            (respelled, merges)
        } else {
            let scores = file.get_f64_array("tokenizer.ggml.scores")?.ok_or_else(|| file.error("missing required metadata key 'tokenizer.ggml.scores'"))?;
            if scores.len() != tokens.len() {
                return Err(tok_err(file, format!("{} scores for {} tokens", scores.len(), tokens.len())));
            }
            // A NaN score has no rank (found by fuzzing: the merge sort panicked).
            if let Some(i) = scores.iter().position(|s| s.is_nan()) {
                return Err(tok_err(file, format!("tokenizer.ggml.scores[{i}] is NaN")));
            }
            let merges = match file.get_str_array("tokenizer.ggml.merges")? {
                Some(m) => m
                    .iter()
                    .map(|m| m.split_once(' ').map(|(l, r)| (l.to_string(), r.to_string())).ok_or_else(|| tok_err(file, format!("malformed merge '{m}'"))))
                    .collect::<Result<_>>()?,
                None => merges_from_vocab(tokens, &|i| scores[i]),
            };
            (tokens.to_vec(), merges)
        };
        let mut vocab = Map::new();
        for (i, t) in tokens.iter().enumerate() {
            vocab.insert(t.clone(), json!(i));
        }
        let merges: Vec<Json> = merges.into_iter().map(|(l, r)| json!([l, r])).collect();
        let unk_token = unk.map(|u| tokens[u as usize].clone());
        let model = json!({"type": "BPE", "dropout": null, "unk_token": unk_token,
            "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": true,
            "byte_fallback": true, "ignore_merges": false, "vocab": vocab, "merges": merges});
        let mut decoders =
            vec![json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}), json!({"type": "ByteFallback"}), json!({"type": "Fuse"})];
        let (normalizer, pre_tokenizer) = if gemma {
            (
                json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}),
                json!({"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false}),
            )
        } else {
            let prefix = file.get_bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
            if prefix {
                decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
            }
            (
                Json::Null,
                json!({"type": "Metaspace", "replacement": "\u{2581}",
                       "prepend_scheme": if prefix { "first" } else { "never" }, "split": false}),
            )
        };
        Ok(json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": normalizer, "pre_tokenizer": pre_tokenizer, "post_processor": null,
            "decoder": {"type": "Sequence", "decoders": decoders}, "model": model
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table() {
        let t = bytes_to_unicode();
        assert_eq!(t[b'a' as usize], 'a');
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[0], 'Ā');
    }

    #[test]
    fn merges_rank_by_score_then_length() {
        let toks: Vec<String> = ["a", "b", "c", "ab", "bc", "abc"].iter().map(|s| s.to_string()).collect();
        // Scores: abc best, then bc, then ab.
        let scores = [0.0, 0.0, 0.0, -3.0, -2.0, -1.0];
        let m = merges_from_vocab(&toks, &|i| scores[i]);
        let m: Vec<(&str, &str)> = m.iter().map(|(l, r)| (l.as_str(), r.as_str())).collect();
        // "abc" splits as (ab, c) and (a, bc); longer left piece first.
        assert_eq!(m, vec![("ab", "c"), ("a", "bc"), ("b", "c"), ("a", "b")]);
    }
}
