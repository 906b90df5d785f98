//! Parity with the Python oracle (tests/fixtures/text, written by
//! scripts/text-oracle/make_references.py): identical ids, identical decodes and
//! byte-identical chat renders for the four real tokenizers.

mod text_support;

use chrono::NaiveDateTime;
use gomlx::text::{ChatFormat, ChatMessage, ChatOptions, ChatTemplate};
use serde_json::Value;
use text_support::*;

#[test]
fn encode_and_decode_match_python_tokenizers() {
    let corpus = corpus();
    for name in NAMES {
        let tok = load(name);
        let fx = fixture(&format!("{name}.json"));
        let cases = fx["encode"].as_array().unwrap();
        assert_eq!(cases.len(), corpus.len(), "{name}: fixture and corpus disagree");
        for case in cases {
            let line = case["line"].as_u64().unwrap() as usize;
            let text = &corpus[line];
            let want = ids(&case["ids"]);
            assert_eq!(tok.encode(text, true).unwrap(), want, "{name} line {line} {text:?}");
            let want_plain = ids(&case["ids_no_special"]);
            assert_eq!(tok.encode(text, false).unwrap(), want_plain, "{name} line {line} (no special)");
            assert_eq!(tok.decode(&want, true).unwrap(), case["decode"].as_str().unwrap(), "{name} line {line} decode");
            assert_eq!(tok.decode(&want, false).unwrap(), case["decode_keep_special"].as_str().unwrap(), "{name} line {line} decode keeping specials");
        }
        let texts: Vec<&str> = corpus.iter().map(String::as_str).collect();
        let batch = tok.encode_batch(&texts, true).unwrap();
        for (case, got) in cases.iter().zip(batch) {
            assert_eq!(got, ids(&case["ids"]), "{name} batch line {}", case["line"]);
        }
    }
}

#[test]
fn special_tokens_match_transformers() {
    for name in NAMES {
        let tok = load(name);
        let sp = &fixture(&format!("{name}.json"))["specials"];
        let id = |v: &Value| v.as_u64().map(|x| x as u32);
        assert_eq!(tok.bos_id(), id(&sp["bos_id"]), "{name} bos");
        assert_eq!(tok.eos_ids().first().copied(), id(&sp["eos_id"]), "{name} eos");
        assert_eq!(tok.specials().pad, id(&sp["pad_id"]), "{name} pad");
        assert_eq!(tok.vocab_size() as u64, sp["vocab_size"].as_u64().unwrap(), "{name} vocab");
        let tt = tok.template_tokens();
        assert_eq!(tt.bos_token.as_deref(), sp["bos_token"].as_str(), "{name} bos_token");
        assert_eq!(tt.eos_token.as_deref(), sp["eos_token"].as_str(), "{name} eos_token");
        if let Some(bos) = tok.bos_id() {
            assert_eq!(tok.id_to_token(bos).as_deref(), sp["bos_token"].as_str());
            assert_eq!(tok.token_to_id(sp["bos_token"].as_str().unwrap()), Some(bos));
        }
    }
}

fn options(case: &Value, pinned_now: NaiveDateTime) -> ChatOptions {
    let mut opts = ChatOptions { add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap(), now: Some(pinned_now), ..Default::default() };
    for (k, v) in case["kwargs"].as_object().unwrap() {
        if k == "tools" {
            opts.tools = Some(v.as_array().unwrap().clone());
        } else {
            opts.extra.insert(k.clone(), v.clone());
        }
    }
    opts
}

#[test]
fn chat_templates_render_like_transformers() {
    let corpus = fixture("corpus.json");
    let pinned_now = NaiveDateTime::parse_from_str(corpus["pinned_now"].as_str().unwrap(), "%Y-%m-%dT%H:%M:%S").expect("pinned_now");
    let mut checked = 0;
    for name in NAMES {
        let tok = load(name);
        let fx = fixture(&format!("{name}.json"));
        for case in fx["chat"].as_array().unwrap() {
            let label = format!("{name} {}", case["case"].as_str().unwrap());
            let messages: Vec<ChatMessage> = case["messages"].as_array().unwrap().iter().map(|m| ChatMessage::from_json(m.clone()).unwrap()).collect();
            let format = match case["template"].as_str() {
                None => ChatFormat::Model,
                Some(key) => {
                    let src = corpus["templates"][key].as_str().unwrap();
                    ChatFormat::Custom(ChatTemplate::new(src).unwrap_or_else(|e| panic!("{label}: {e}")))
                }
            };
            let opts = options(case, pinned_now);
            let got = tok.apply_chat_template(&messages, &opts, &format);
            match (case["rendered"].as_str(), case["error"].as_str()) {
                (Some(want), _) => {
                    let got = got.unwrap_or_else(|e| panic!("{label}: {e}"));
                    assert_eq!(got, want, "{label}: render differs");
                    let want_ids = ids(&case["ids"]);
                    assert_eq!(tok.encode_chat(&messages, &opts, &format).unwrap(), want_ids, "{label}: ids");
                }
                (None, Some(err)) => {
                    let e = got.expect_err(&label).to_string();
                    assert!(e.contains(err), "{label}: error {e:?} should contain {err:?}");
                }
                _ => panic!("{label}: fixture has neither rendered nor error"),
            }
            checked += 1;
        }
    }
    assert!(checked >= 60, "only {checked} chat cases");
}
