//! Loading rules on synthetic model directories built around a real tokenizer.json:
//! EOS sets from every config file, template sources and their errors.

mod text_support;

use std::path::{Path, PathBuf};

use gomlx::text::{ChatFormat, ChatMessage, ChatOptions, SpecialTokens, Tokenizer};
use serde_json::json;
use text_support::*;

/// A fresh directory holding the given tokenizer's tokenizer.json plus `files`.
fn model_dir(test: &str, from: &str, files: &[(&str, String)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gomlx-text-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src = tokenizer_dir(from).join("tokenizer.json");
    assert!(src.is_file(), "{} is missing: run scripts/fetch-tokenizers before cargo test", src.display());
    std::fs::copy(&src, dir.join("tokenizer.json")).unwrap();
    for (name, body) in files {
        std::fs::write(dir.join(name), body).unwrap();
    }
    dir
}

fn cleanup(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn eos_ids_come_from_every_config() {
    let dir = model_dir(
        "eos",
        "llama3_1",
        &[
            ("tokenizer_config.json", json!({"eos_token": {"content": "<|eot_id|>", "special": true}, "bos_token": "<|begin_of_text|>"}).to_string()),
            ("generation_config.json", json!({"eos_token_id": [128001, 128008, 128009]}).to_string()),
            ("config.json", json!({"eos_token_id": 128001, "text_config": {"eos_token_id": [128006]}}).to_string()),
        ],
    );
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let eot = tok.token_to_id("<|eot_id|>").unwrap();
    assert_eq!(tok.eos_ids(), &[eot, 128001, 128008, 128006]);
    assert!(tok.is_eos(128008) && !tok.is_eos(128000));
    assert_eq!(tok.bos_id(), tok.token_to_id("<|begin_of_text|>"));
    cleanup(&dir);
}

#[test]
fn no_template_is_a_clear_error_and_plain_is_explicit() {
    let dir = model_dir("notemplate", "llama3", &[]);
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let msgs = [ChatMessage::user("hi")];
    let opts = ChatOptions { add_generation_prompt: true, ..Default::default() };
    let err = tok.apply_chat_template(&msgs, &opts, &ChatFormat::Model).unwrap_err().to_string();
    assert!(err.contains("no chat template"), "{err}");
    assert_eq!(tok.apply_chat_template(&msgs, &opts, &ChatFormat::Plain).unwrap(), "user: hi\nassistant:");
    cleanup(&dir);
}

#[test]
fn template_sources_and_names() {
    let list = json!({"chat_template": [
        {"name": "default", "template": "D{{ messages[0].content }}"},
        {"name": "tool_use", "template": "T{{ tools | length if tools else 0 }}"}
    ]});
    let dir = model_dir("named", "llama3", &[("tokenizer_config.json", list.to_string())]);
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let msgs = [ChatMessage::user("x")];
    let mut opts = ChatOptions::default();
    assert_eq!(tok.apply_chat_template(&msgs, &opts, &ChatFormat::Model).unwrap(), "Dx");
    assert_eq!(tok.apply_chat_template(&msgs, &opts, &ChatFormat::Named("tool_use".into())).unwrap(), "T0");
    opts.tools = Some(vec![json!({"name": "f"})]);
    assert_eq!(tok.apply_chat_template(&msgs, &opts, &ChatFormat::Model).unwrap(), "T1");
    let err = tok.apply_chat_template(&msgs, &opts, &ChatFormat::Named("nope".into())).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    cleanup(&dir);

    // chat_template.jinja wins over tokenizer_config.json, chat_template.json is read too.
    let dir = model_dir("jinja", "llama3", &[("tokenizer_config.json", list.to_string()), ("chat_template.jinja", "J{{ messages | length }}\n".into())]);
    let tok = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.apply_chat_template(&msgs, &ChatOptions::default(), &ChatFormat::Model).unwrap(), "J1");
    cleanup(&dir);
    let dir = model_dir("ctjson", "llama3", &[("chat_template.json", json!({"chat_template": "C"}).to_string())]);
    let tok = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.apply_chat_template(&msgs, &ChatOptions::default(), &ChatFormat::Model).unwrap(), "C");
    cleanup(&dir);
}

#[test]
fn bad_files_are_errors_that_name_the_problem() {
    let cases: [(&str, &str, &str); 4] = [
        ("badjson", "tokenizer_config.json", "{not json"),
        ("badtemplate", "tokenizer_config.json", r#"{"chat_template": "{% for %}"}"#),
        ("badeos", "generation_config.json", r#"{"eos_token_id": "two"}"#),
        ("badbos", "tokenizer_config.json", r#"{"bos_token": "<no such token>"}"#),
    ];
    let wants = ["tokenizer_config.json", "chat template", "eos_token_id", "bos_token"];
    for ((test, file, body), want) in cases.into_iter().zip(wants) {
        let dir = model_dir(test, "llama3", &[(file, body.to_string())]);
        let err = Tokenizer::from_dir(&dir).unwrap_err().to_string();
        assert!(err.contains(want), "{test}: {err}");
        cleanup(&dir);
    }
    let err = Tokenizer::from_dir("/nonexistent/model").unwrap_err().to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
}

#[test]
fn from_parts_builds_a_gguf_style_tokenizer() {
    let src = load("gemma3");
    let inner = src.inner().clone();
    let specials = SpecialTokens { bos: Some(2), eos: vec![1, 106], pad: Some(0), unk: Some(3), add_bos: true, add_eos: false };
    let template = src.chat_template().map(|t| t.source().to_string());
    let tok = Tokenizer::from_parts(inner, specials, template).unwrap();
    let fx = fixture("gemma3.json");
    let case = &fx["encode"][0];
    assert_eq!(tok.encode(&corpus()[0], true).unwrap(), ids(&case["ids"]));
    assert_eq!(tok.eos_ids(), &[1, 106]);
    let chat = fx["chat"].as_array().unwrap().iter().find(|c| c["case"] == "single/agp=True").unwrap();
    let msgs: Vec<ChatMessage> = chat["messages"].as_array().unwrap().iter().map(|m| ChatMessage::from_json(m.clone()).unwrap()).collect();
    let opts = ChatOptions { add_generation_prompt: true, ..Default::default() };
    assert_eq!(tok.apply_chat_template(&msgs, &opts, &ChatFormat::Model).unwrap(), chat["rendered"].as_str().unwrap());

    let bad = SpecialTokens { bos: Some(u32::MAX), ..Default::default() };
    assert!(Tokenizer::from_parts(src.inner().clone(), bad, None).is_err());
    let bad = SpecialTokens { add_bos: true, ..Default::default() };
    assert!(Tokenizer::from_parts(src.inner().clone(), bad, None).is_err());
}
