//! Constrained decoding (issue 22): random-weight models, which emit garbage
//! when free, produce output that parses and validates under a JSON Schema
//! (checked by an independent validator, the `jsonschema` crate), matches a
//! regular expression, or is one of the choices, for every sampler setting,
//! per row of a batch; generation ends when the grammar is complete; a schema
//! the engine cannot support is an error, never a free answer.

use gomlx::engine::{Engine, EngineOptions, FinishReason, GenerateOptions, Generation};
use gomlx::mlx::DeviceKind;
use gomlx::sample::{Constraint, Grammars, SamplerConfig};
use gomlx::text::{TokenBytes, Tokenizer};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const OUTPUTS: usize = 200;

fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(case)
}

/// GPT-2's byte-level alphabet, written out here independently of the engine's.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        return char::from(b);
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + rank).unwrap()
}

/// A model directory: a random-weight fixture (vocabulary 256) with a byte-level
/// tokenizer whose ids 0..255 are the bytes 0x00..0xFE and id 255 is `<|eos|>`
/// (0xFF never occurs in UTF-8).
fn byte_model(case: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gomlx-structured-{case}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture(case).join(f), dir.join(f)).unwrap();
    }
    let vocab: serde_json::Map<String, Value> = (0..255u8).map(|b| (byte_char(b).to_string(), json!(b as u32))).collect();
    let tok = json!({
        "version": "1.0",
        "truncation": null, "padding": null,
        "added_tokens": [{"id": 255, "content": "<|eos|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": []}
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), json!({"eos_token": "<|eos|>"}).to_string()).unwrap();
    dir
}

fn engine(dir: &Path, max_batch: usize) -> Engine {
    Engine::load(dir, &EngineOptions { device: Some(DeviceKind::Cpu), max_batch: Some(max_batch), ..Default::default() }).unwrap()
}

/// Sampler settings the rows cycle through: every processor and filter.
fn sampler(i: usize, constraint: Constraint) -> SamplerConfig {
    let seed = Some(1000 + i as u64);
    let base = SamplerConfig { constraint: Some(constraint), seed, ..Default::default() };
    match i % 7 {
        0 => SamplerConfig { temperature: 1.0, ..base },
        1 => SamplerConfig { temperature: 1.5, top_k: 5, ..base },
        2 => SamplerConfig { temperature: 0.8, top_p: 0.9, ..base },
        3 => SamplerConfig { temperature: 1.2, min_p: 0.05, repetition_penalty: 1.3, ..base },
        4 => SamplerConfig { temperature: 1.0, presence_penalty: 0.5, frequency_penalty: 0.5, logprobs: true, top_logprobs: 3, ..base },
        5 => SamplerConfig { temperature: 2.0, logit_bias: vec![(b'"' as u32, -5.0), (b'a' as u32, 3.0)], ..base },
        _ => SamplerConfig { ..base }, // greedy
    }
}

fn prompt(i: usize) -> Vec<u32> {
    (0..3 + i % 5).map(|j| ((i * 31 + j * 7) % 250) as u32).collect()
}

/// `n` constrained generations started together (rows of one batch), drained in order.
fn outputs(engine: &Engine, constraint: &Constraint, n: usize, max_tokens: usize) -> Vec<(String, FinishReason, usize)> {
    let gens: Vec<Generation> = (0..n)
        .map(|i| engine.generate_tokens(prompt(i), &GenerateOptions { max_tokens, sampler: sampler(i, constraint.clone()), ..Default::default() }).unwrap())
        .collect();
    gens.into_iter()
        .map(|mut g| {
            let (text, ids) = g.collect_text().unwrap();
            (text, g.finish_reason().unwrap(), ids.len())
        })
        .collect()
}

fn schemas() -> Vec<(&'static str, Value)> {
    vec![
        (
            "nested objects",
            json!({"type": "object", "properties": {
                "name": {"type": "string", "maxLength": 8},
                "address": {"type": "object", "properties": {
                    "city": {"type": "string", "minLength": 1, "maxLength": 6},
                    "zip": {"type": "integer", "minimum": 0, "maximum": 99999}},
                  "required": ["city", "zip"], "additionalProperties": false}},
              "required": ["name", "address"], "additionalProperties": false}),
        ),
        (
            "arrays",
            json!({"type": "object", "properties": {
                "xs": {"type": "array", "items": {"type": "integer", "minimum": -5, "maximum": 5}, "minItems": 1, "maxItems": 4},
                "pairs": {"type": "array", "items": {"type": "array", "items": {"type": "boolean"}, "minItems": 2, "maxItems": 2}, "maxItems": 2}},
              "required": ["xs", "pairs"], "additionalProperties": false}),
        ),
        (
            "enums",
            json!({"type": "object", "properties": {
                "color": {"enum": ["red", "green", "blue"]},
                "size": {"type": "string", "enum": ["S", "M", "L", "XL"]},
                "level": {"enum": [1, 2, 3, null]}},
              "required": ["color", "size", "level"], "additionalProperties": false}),
        ),
        (
            "bounded numbers",
            json!({"type": "object", "properties": {
                "t": {"type": "number", "minimum": -10.5, "maximum": 10.5, "multipleOf": 0.25},
                "n": {"type": "integer", "exclusiveMinimum": 0, "maximum": 1000},
                "k": {"type": "integer", "minimum": 10, "maximum": 20}},
              "required": ["t", "n", "k"], "additionalProperties": false}),
        ),
        (
            "string patterns",
            json!({"type": "object", "properties": {
                "code": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"},
                "tag": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
                "date": {"type": "string", "pattern": "^20[0-9]{2}-(0[1-9]|1[0-2])$"}},
              "required": ["code", "tag", "date"], "additionalProperties": false}),
        ),
        (
            "optional fields",
            json!({"type": "object", "properties": {
                "id": {"type": "integer", "minimum": 1, "maximum": 9},
                "note": {"type": "string", "maxLength": 4},
                "ok": {"type": "boolean"},
                "extra": {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 3}}, "additionalProperties": false}},
              "required": ["id"], "additionalProperties": false}),
        ),
    ]
}

#[test]
fn schema_table_outputs_parse_and_validate() {
    let dir = byte_model("qwen3_qknorm");
    let engine = engine(&dir, 32);
    for (name, schema) in schemas() {
        let validator = jsonschema::validator_for(&schema).unwrap();
        let outs = outputs(&engine, &Constraint::JsonSchema(schema.clone()), OUTPUTS, 400);
        let mut distinct = std::collections::HashSet::new();
        for (i, (text, reason, n)) in outs.iter().enumerate() {
            assert_eq!(*reason, FinishReason::Stop, "{name} row {i}: ended by {reason:?} after {n} tokens: {text:?}");
            let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{name} row {i}: not JSON ({e}): {text:?}"));
            if let Err(e) = validator.validate(&v) {
                panic!("{name} row {i}: {text} does not validate: {e}");
            }
            distinct.insert(text.clone());
        }
        // Garbage models sampled with 200 seeds: the outputs differ (the constraint did not pin one answer).
        assert!(distinct.len() >= 10, "{name}: only {} distinct outputs", distinct.len());
    }
}

#[test]
fn json_object_regex_lark_and_choice() {
    let dir = byte_model("llama_tied");
    let engine = engine(&dir, 32);

    let email = r"[a-z]{2,5}@[a-z]{1,4}\.(com|org)";
    let whole = regex::Regex::new(&format!("^(?:{email})$")).unwrap();
    for (i, (text, reason, _)) in outputs(&engine, &Constraint::Regex(email.into()), OUTPUTS, 64).iter().enumerate() {
        assert!(whole.is_match(text), "regex row {i}: {text:?} ({reason:?})");
        assert_eq!(*reason, FinishReason::Stop, "regex row {i}: {text:?}");
    }

    let choices = vec!["yes".to_string(), "no".to_string(), "maybe so".to_string(), "\"quoted\" \\ choice".to_string()];
    let outs = outputs(&engine, &Constraint::Choice(choices.clone()), OUTPUTS, 32);
    for (i, (text, reason, _)) in outs.iter().enumerate() {
        assert!(choices.contains(text), "choice row {i}: {text:?}");
        assert_eq!(*reason, FinishReason::Stop);
    }
    let seen: std::collections::HashSet<_> = outs.iter().map(|o| o.0.clone()).collect();
    assert!(seen.len() >= 3, "choices seen: {seen:?}");

    let lark = "start: greeting \" \" NAME \"!\"\ngreeting: \"hello\" | \"hi\" | \"hey there\"\nNAME: /[A-Z][a-z]{0,5}/\n";
    let lark_re = regex::Regex::new(r"^(hello|hi|hey there) [A-Z][a-z]{0,5}!$").unwrap();
    for (i, (text, reason, _)) in outputs(&engine, &Constraint::Lark(lark.into()), OUTPUTS, 64).iter().enumerate() {
        assert!(lark_re.is_match(text), "lark row {i}: {text:?} ({reason:?})");
    }

    // Any JSON object: unbounded, so some rows may run to the token limit; every one that ended is an object.
    let outs = outputs(&engine, &Constraint::JsonObject, 60, 300);
    let mut ended = 0;
    for (i, (text, reason, _)) in outs.iter().enumerate() {
        if *reason == FinishReason::Stop {
            ended += 1;
            match serde_json::from_str::<Value>(text) {
                Ok(v) => assert!(v.is_object(), "json_object row {i}: {text}"),
                // JSON allows any exponent; serde_json's f64 does not (e.g. 5699e111999).
                Err(e) if e.to_string().starts_with("number out of range") => assert!(text.starts_with('{') && text.ends_with('}'), "{text}"),
                Err(e) => panic!("json_object row {i}: {e}: {text:?}"),
            }
        } else {
            assert_eq!(*reason, FinishReason::Length, "json_object row {i}");
            assert!(text.starts_with('{'), "json_object row {i}: {text:?}");
        }
    }
    assert!(ended > 0, "no json_object row completed");
}

#[test]
fn unconstrained_output_is_garbage_so_the_tests_can_fail() {
    let dir = byte_model("qwen3_qknorm");
    let engine = engine(&dir, 8);
    let mut parsed = 0;
    for i in 0..20 {
        let opts = GenerateOptions { max_tokens: 40, sampler: SamplerConfig { temperature: 1.0, seed: Some(i), ..Default::default() }, ..Default::default() };
        let (text, _) = engine.generate_tokens(prompt(i as usize), &opts).unwrap().collect_text().unwrap();
        parsed += serde_json::from_str::<Value>(&text).is_ok() as usize;
    }
    assert_eq!(parsed, 0, "free output of the random model parsed as JSON");
}

#[test]
fn rows_with_different_constraints_share_a_batch() {
    let dir = byte_model("qwen3_qknorm");
    let engine = engine(&dir, 16);
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 50}, "b": {"type": "string", "maxLength": 3}}, "required": ["a", "b"], "additionalProperties": false});
    let validator = jsonschema::validator_for(&schema).unwrap();
    let digits = regex::Regex::new(r"^[0-9]{3,6}$").unwrap();
    let kinds: Vec<Option<Constraint>> = vec![
        Some(Constraint::JsonSchema(schema.clone())),
        Some(Constraint::Regex("[0-9]{3,6}".into())),
        None,
        Some(Constraint::Choice(vec!["left".into(), "right".into()])),
    ];
    let mut gens = Vec::new();
    for i in 0..24 {
        let k = kinds[i % kinds.len()].clone();
        let mut s = sampler(i, Constraint::JsonObject);
        s.constraint = k.clone();
        let opts = GenerateOptions { max_tokens: 60, ignore_eos: k.is_none(), sampler: s, ..Default::default() };
        gens.push((k, engine.generate_tokens(prompt(i), &opts).unwrap()));
    }
    let mut shared = false;
    for (i, (k, mut g)) in gens.into_iter().enumerate() {
        let (text, ids) = g.collect_text().unwrap();
        shared |= g.metrics().unwrap().batch_rows_max > 1;
        match &k {
            Some(Constraint::JsonSchema(_)) => assert!(validator.is_valid(&serde_json::from_str::<Value>(&text).unwrap()), "row {i}: {text}"),
            Some(Constraint::Regex(_)) => assert!(digits.is_match(&text), "row {i}: {text:?}"),
            Some(Constraint::Choice(c)) => assert!(c.contains(&text), "row {i}: {text:?}"),
            None => assert_eq!(ids.len(), 60, "row {i}: the free row ran to its limit"),
            _ => unreachable!(),
        }
        let m = g.metrics().unwrap();
        if k.is_some() {
            assert!(m.constraint_masks > 0 && m.constraint_mask_s > 0.0, "row {i}: {m:?}");
        } else {
            assert_eq!(m.constraint_masks, 0);
        }
    }
    assert!(shared, "rows never shared a decode step");
}

#[test]
fn generation_stops_when_the_grammar_is_complete() {
    let dir = byte_model("qwen3_qknorm");
    let engine = engine(&dir, 4);
    // Greedy, no EOS in sight: the output is exactly one of the choices, then it ends.
    let opts = GenerateOptions {
        max_tokens: 100,
        sampler: SamplerConfig { constraint: Some(Constraint::Choice(vec!["abc".into()])), ..Default::default() },
        ..Default::default()
    };
    let mut g = engine.generate_tokens(vec![1, 2, 3], &opts).unwrap();
    let (text, ids) = g.collect_text().unwrap();
    assert_eq!((text.as_str(), ids.len(), g.finish_reason()), ("abc", 3, Some(FinishReason::Stop)));
    // Also with ignore_eos.
    let mut g = engine.generate_tokens(vec![4, 5], &GenerateOptions { ignore_eos: true, ..opts.clone() }).unwrap();
    assert_eq!(g.collect_text().unwrap().0, "abc");
    // A token limit inside the grammar ends the output there (length), cut short.
    let mut g = engine.generate_tokens(vec![1, 2, 3], &GenerateOptions { max_tokens: 2, ..opts }).unwrap();
    assert_eq!((g.collect_text().unwrap().0.as_str(), g.finish_reason()), ("ab", Some(FinishReason::Length)));
}

#[test]
fn unsupported_or_invalid_constraints_are_errors() {
    let dir = byte_model("qwen3_qknorm");
    let engine = engine(&dir, 4);
    let bad = [
        Constraint::JsonSchema(json!({"type": "object", "properties": {"a": {"type": "string", "format": "no-such-format"}}})),
        Constraint::JsonSchema(json!({"type": "strnig"})),
        Constraint::JsonSchema(json!({"type": "integer", "minimum": 5, "maximum": 1})),
        Constraint::JsonSchema(json!(["not", "a", "schema"])),
        Constraint::Regex("(unclosed".into()),
        Constraint::Regex(String::new()),
        Constraint::Lark("start: undefined_rule".into()),
        Constraint::Choice(vec![]),
    ];
    for c in bad {
        let opts = GenerateOptions { max_tokens: 8, sampler: SamplerConfig { constraint: Some(c.clone()), ..Default::default() }, ..Default::default() };
        match engine.generate_tokens(vec![1, 2], &opts) {
            Ok(mut g) => panic!("{c:?} was accepted: {:?}", g.collect_text()),
            Err(e) => assert!(e.to_string().contains("constraint"), "{c:?}: {e}"),
        }
    }
}

#[test]
fn token_bytes_of_real_tokenizers() {
    let tok = |name: &str| Tokenizer::from_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/tokenizers").join(name)).unwrap();
    // Byte-level (Qwen 3, Llama 3): decoding a token's bytes gives the tokenizer's own decoding.
    for name in ["qwen3", "llama3"] {
        let t = tok(name);
        let bytes = t.token_bytes(t.vocab_size());
        for text in ["Hello, world!", " {\"a\": [1, 2.5e-3]}", "naïve café – 東京", "\n\t  x"] {
            let ids = t.encode(text, false).unwrap();
            let mut got = Vec::new();
            for &id in &ids {
                match &bytes[id as usize] {
                    TokenBytes::Text(b) => got.extend_from_slice(b),
                    other => panic!("{name}: token {id} is {other:?}"),
                }
            }
            assert_eq!(String::from_utf8(got).unwrap(), t.decode(&ids, false).unwrap(), "{name}: {text:?}");
        }
        for &e in t.eos_ids() {
            assert!(matches!(bytes[e as usize], TokenBytes::Special(_)), "{name}: eos {e}");
        }
    }
    // SentencePiece with byte fallback (Gemma 3): ▁ is a space, <0xHH> a byte.
    let t = tok("gemma3");
    let bytes = t.token_bytes(t.vocab_size());
    for text in ["Hello, world!", "a  b", "東京 ☃"] {
        let ids = t.encode(text, false).unwrap();
        let got: Vec<u8> = ids.iter().flat_map(|&id| if let TokenBytes::Text(b) = &bytes[id as usize] { b.clone() } else { panic!("{id}") }).collect();
        assert_eq!(String::from_utf8(got).unwrap(), t.decode(&ids, false).unwrap(), "gemma3: {text:?}");
    }
    // A padded model vocabulary: ids past the tokenizer's are no token.
    assert_eq!(t.token_bytes(t.vocab_size() + 3)[t.vocab_size() + 2], TokenBytes::None);
    // The compiled vocabulary of a real tokenizer masks to the schema's first bytes.
    let qwen = tok("qwen3");
    let g = Grammars::new(&qwen, qwen.vocab_size() + 64).unwrap();
    let mut s = g.compile(&Constraint::Choice(vec!["{\"x\": 1}".into()])).unwrap();
    let mask = s.mask().unwrap().unwrap();
    assert_eq!(mask.allowed.len(), qwen.vocab_size() + 64);
    let allowed: Vec<usize> = (0..mask.allowed.len()).filter(|&i| mask.allowed[i]).collect();
    let qb = qwen.token_bytes(qwen.vocab_size());
    for &i in &allowed {
        let TokenBytes::Text(b) = &qb[i] else { panic!("{i}") };
        assert!(b"{\"x\": 1}".starts_with(b), "token {i} {:?} is not a prefix", String::from_utf8_lossy(b));
    }
    assert!(allowed.len() >= 2, "{allowed:?}");
}

#[test]
fn gguf_tokenizer_constrains_a_real_model() {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "{} is missing: run scripts/fetch-models", p.display());
    let engine = Engine::load(&p, &EngineOptions { device: Some(DeviceKind::Cpu), ..Default::default() }).unwrap();
    let schema = json!({"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}, "country": {"type": "string", "maxLength": 20}}, "required": ["city", "country"], "additionalProperties": false});
    let opts = GenerateOptions {
        max_tokens: 40,
        sampler: SamplerConfig { constraint: Some(Constraint::JsonSchema(schema.clone())), ..Default::default() },
        ..Default::default()
    };
    let mut g = engine.generate("The capital of France, as JSON:", &opts).unwrap();
    let (text, _) = g.collect_text().unwrap();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    assert!(jsonschema::is_valid(&schema, &v), "{text}");
    assert_eq!(g.finish_reason(), Some(FinishReason::Stop), "{text}");
}
