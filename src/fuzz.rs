//! Entry points of the fuzz targets (`fuzz/`, docs/fuzzing.md) and of the
//! fuzz smoke in the test suite (`tests/fuzz_smoke.rs`). Each takes arbitrary
//! bytes, runs one parser that model files reach, exactly as loading does,
//! and returns normally whatever the bytes are: an `Err` is the expected
//! answer to bad input, while a panic, an abort, a hang or a runaway
//! allocation is a bug. None calls into MLX.

use crate::models::gguf::{GgufFile, GgufModel, GgufTokenizer};
use crate::text::{ChatMessage, ChatOptions, ChatTemplate, TemplateTokens, Tokenizer};
use std::path::Path;

/// The GGUF reader on a whole file, then what loading does with a file it
/// accepts: the Hugging Face config and `ModelConfig` from the metadata, the
/// tensor-name mapping and the block decoders of every tensor.
pub fn gguf(data: &[u8]) {
    let Ok(file) = GgufFile::from_bytes("fuzz.gguf", data) else { return };
    let Ok(model) = GgufModel::new(file) else { return };
    let _ = crate::models::ModelConfig::from_value(&model.config);
    let Ok(names) = model.names() else { return };
    for (_, info) in names {
        let _ = model.load(info);
    }
}

/// The tokenizer built from GGUF metadata, then a few encodes and a decode.
pub fn gguf_tokenizer(data: &[u8]) {
    let Ok(file) = GgufFile::from_bytes("fuzz.gguf", data) else { return };
    let Ok(t) = GgufTokenizer::from_gguf(&file) else { return };
    let specials = crate::text::SpecialTokens { bos: t.bos, eos: t.eos, pad: t.pad, unk: t.unk, add_bos: t.add_bos, add_eos: t.add_eos };
    let Ok(tok) = Tokenizer::from_parts(t.tokenizer, specials, None) else { return };
    for text in ["Hello, world!", " 12345 héllo 世界 🙂\n\n", ""] {
        if let Ok(ids) = tok.encode(text, true) {
            let _ = tok.decode(&ids, false);
        }
    }
}

/// The safetensors header check that runs before MLX reads a file.
pub fn safetensors(data: &[u8]) {
    let _ = crate::mlx::safetensors_header::parse(data);
}

/// config.json parsing and validation.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::models::ModelConfig::from_json_str(text);
    }
}

/// Instructions a chat-template render may run while fuzzing: a template
/// that loops runs out within milliseconds (the engine's own bound,
/// `limits::TEMPLATE_FUEL`, is larger; the code path is the same).
pub const TEMPLATE_FUZZ_FUEL: u64 = 200_000;

/// A chat template compiled and rendered with one message. The input is the
/// template, then optionally a NUL byte and the message's content.
pub fn chat_template(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (source, content) = text.split_once('\0').unwrap_or((text, "What is the capital of France?"));
    let Ok(t) = ChatTemplate::with_fuel(source, TEMPLATE_FUZZ_FUEL) else { return };
    let messages = [ChatMessage::system("You are helpful."), ChatMessage::user(content), ChatMessage::assistant("Paris.")];
    let opts = ChatOptions {
        add_generation_prompt: true,
        now: chrono::NaiveDate::from_ymd_opt(2026, 1, 2).and_then(|d| d.and_hms_opt(3, 4, 5)),
        ..Default::default()
    };
    let tokens = TemplateTokens { bos_token: Some("<s>".into()), eos_token: Some("</s>".into()), ..Default::default() };
    let _ = t.render(&messages, &opts, &tokens);
}

/// The adapter loader's checks: `adapter_config.json` and the header of
/// `adapters.safetensors` against it. The input is a little-endian u32
/// length, that many bytes of config JSON, then the safetensors file.
pub fn adapter(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let n = u32::from_le_bytes(data[..4].try_into().expect("4 bytes")) as usize;
    let rest = &data[4..];
    let (cfg, st) = rest.split_at(n.min(rest.len()));
    let Ok(cfg) = std::str::from_utf8(cfg) else { return };
    let Ok(cfg) = crate::models::adapters::parse_config(cfg, Path::new("adapter_config.json")) else { return };
    let Ok(header) = crate::mlx::safetensors_header::parse(st) else { return };
    let _ = crate::models::adapters::check_header(&cfg, &header, Path::new("adapters.safetensors"));
}

/// A fuzz target: arbitrary bytes in, returns whatever they are.
pub type Target = fn(&[u8]);

/// Every target by name, for the smoke test and the corpus tools.
pub const TARGETS: [(&str, Target); 6] = [
    ("gguf", gguf),
    ("gguf_tokenizer", gguf_tokenizer),
    ("safetensors", safetensors),
    ("config", config),
    ("chat_template", chat_template),
    ("adapter", adapter),
];
