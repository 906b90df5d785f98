//! Tool-call parsers (issue 22) on real chat templates' renderings: the calls an
//! assistant message carries, rendered by the model's own template, parse back
//! to the same calls, whole or streamed a character at a time.

use gomlx::sample::{Constraint, Grammars};
use gomlx::text::{ChatFormat, ChatMessage, ChatOptions, ChatTemplate, TemplateTokens, Tokenizer, ToolCall, ToolCallParser, ToolFormat};
use serde_json::{json, Value};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 7}}, "required": ["city"]}}})
}

/// Parses `reply` whole and one character at a time; both must agree.
fn parse(format: ToolFormat, reply: &str) -> (String, Vec<ToolCall>) {
    let mut p = ToolCallParser::new(format);
    let mut whole = p.push(reply).unwrap();
    let end = p.finish().unwrap();
    whole.text.push_str(&end.text);
    whole.calls.extend(end.calls);
    let mut p = ToolCallParser::new(format);
    let (mut text, mut calls) = (String::new(), Vec::new());
    for c in reply.chars() {
        let s = p.push(&c.to_string()).unwrap();
        text.push_str(&s.text);
        calls.extend(s.calls);
    }
    let s = p.finish().unwrap();
    text.push_str(&s.text);
    calls.extend(s.calls);
    assert_eq!((&text, &calls), (&whole.text, &whole.calls), "{format:?}: streamed vs whole");
    (text, calls)
}

/// The assistant turn the template renders for `calls`: the text between the prompt with and without it.
fn rendered_reply(tok: &Tokenizer, calls: &[Value], end: &str) -> String {
    let base = vec![ChatMessage::user("Weather in Paris and Lyon?")];
    let mut with = base.clone();
    with.push(ChatMessage::new("assistant", "").with("tool_calls", Value::Array(calls.to_vec())));
    let opts = ChatOptions { tools: Some(vec![weather_tool()]), ..Default::default() };
    let prompt = tok.apply_chat_template(&base, &ChatOptions { add_generation_prompt: true, ..opts.clone() }, &ChatFormat::Model).unwrap();
    let full = tok.apply_chat_template(&with, &opts, &ChatFormat::Model).unwrap();
    let reply = full.strip_prefix(&prompt).unwrap_or_else(|| panic!("the reply does not extend the prompt:\n{prompt}\n---\n{full}"));
    reply.split(end).next().unwrap().to_string()
}

fn calls() -> Vec<Value> {
    vec![
        json!({"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}),
        json!({"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Lyon"}}}),
    ]
}

fn check_calls(got: &[ToolCall], want: &[Value]) {
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.name, w["function"]["name"]);
        assert_eq!(g.arguments, w["function"]["arguments"]);
    }
    let ids: std::collections::HashSet<_> = got.iter().map(|c| &c.id).collect();
    assert_eq!(ids.len(), got.len(), "ids are unique");
}

#[test]
fn qwen3_template_renderings_parse_back() {
    let tok = Tokenizer::from_dir(root().join(".cache/tokenizers/qwen3")).unwrap();
    let format = ToolFormat::from_template(tok.chat_template().unwrap().source()).unwrap();
    assert_eq!(format, ToolFormat::Hermes);
    let reply = rendered_reply(&tok, &calls(), "<|im_end|>");
    assert!(reply.contains("<tool_call>"), "{reply}");
    let (text, got) = parse(format, &reply);
    check_calls(&got, &calls());
    assert!(!text.contains("tool_call"), "{text:?}");
    // Text before a call streams as text; a call cut off by EOS still parses.
    let (text, got) = parse(format, "Let me check. <tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}");
    assert_eq!(text, "Let me check. ");
    assert_eq!(got[0].arguments, json!({"city": "Paris"}));
    // Text that only looks like the start of a marker is handed out at the end.
    assert_eq!(parse(format, "a <tool").0, "a <tool");
    assert_eq!(parse(format, "no calls here").1, vec![]);
}

#[test]
fn llama32_template_rendering_parses_back() {
    let corpus: Value = serde_json::from_str(&std::fs::read_to_string(root().join("tests/fixtures/text/corpus.json")).unwrap()).unwrap();
    let source = corpus["templates"]["llama32"].as_str().unwrap();
    let format = ToolFormat::from_template(source).unwrap();
    assert_eq!(format, ToolFormat::Llama3Json);
    let tmpl = ChatTemplate::new(source.to_string()).unwrap();
    let tokens = TemplateTokens { bos_token: Some("<|begin_of_text|>".into()), eos_token: Some("<|eot_id|>".into()), ..Default::default() };
    let one = &calls()[..1];
    let base = vec![ChatMessage::user("Weather in Paris?")];
    let mut with = base.clone();
    with.push(ChatMessage::new("assistant", "").with("tool_calls", Value::Array(one.to_vec())));
    let opts = ChatOptions {
        tools: Some(vec![weather_tool()]),
        now: Some(chrono::NaiveDate::from_ymd_opt(2024, 7, 26).unwrap().and_hms_opt(0, 0, 0).unwrap()),
        ..Default::default()
    };
    let prompt = tmpl.render(&base, &ChatOptions { add_generation_prompt: true, ..opts.clone() }, &tokens).unwrap();
    let full = tmpl.render(&with, &opts, &tokens).unwrap();
    let reply = full.strip_prefix(&prompt).unwrap().split("<|eot_id|>").next().unwrap();
    assert!(reply.starts_with("{\"name\""), "{reply}");
    let (text, got) = parse(format, reply);
    assert_eq!(text, "");
    check_calls(&got, one);
    // python_tag and parallel calls separated by ';'.
    let (_, got) = parse(format, "<|python_tag|>{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"parameters\": {\"x\": 1}}");
    assert_eq!((got[0].name.as_str(), got[1].name.as_str(), &got[1].arguments), ("a", "b", &json!({"x": 1})));
    assert_eq!(parse(format, "  Paris is sunny.").0, "  Paris is sunny.");
}

#[test]
fn mistral_and_gemma_formats() {
    assert_eq!(ToolFormat::from_template("{% if tools %}[AVAILABLE_TOOLS]{% endif %}[TOOL_CALLS]"), Some(ToolFormat::Mistral));
    let (_, got) = parse(ToolFormat::Mistral, "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 2}}, {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Lyon\"}}]");
    check_calls(&got, &calls());
    let (_, got) = parse(ToolFormat::Mistral, "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Lyon\"}");
    check_calls(&got, &calls()[1..]);
    assert_eq!(parse(ToolFormat::Mistral, "Bonjour!").0, "Bonjour!");

    let (text, got) =
        parse(ToolFormat::Gemma, "Checking.\n```tool_code\nget_weather(city=\"Paris\", days=2)\n```\n```tool_code\nget_weather(city='Lyon')\n```");
    assert_eq!(text, "Checking.\n\n");
    check_calls(&got, &calls());
    let (_, got) = parse(ToolFormat::Gemma, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Lyon\"}}");
    check_calls(&got, &calls()[1..]);
    let (n, a) = gomlx::text::parse_python_call("f(a=[1, 2.5, 'x'], b={'k': True}, c=None, d=(1,))").unwrap();
    assert_eq!((n.as_str(), a), ("f", json!({"a": [1, 2.5, "x"], "b": {"k": true}, "c": null, "d": [1]})));
    assert!(gomlx::text::parse_python_call("f(1, 2)").is_err());
}

#[test]
fn forced_call_grammars_compile_for_every_format() {
    let tok = Tokenizer::from_dir(root().join(".cache/tokenizers/qwen3")).unwrap();
    let g = Grammars::new(&tok, tok.vocab_size()).unwrap();
    for f in [ToolFormat::Hermes, ToolFormat::Llama3Json, ToolFormat::Mistral, ToolFormat::Gemma] {
        for only in [None, Some("get_weather")] {
            let lark = f.forced_call_grammar(&[weather_tool()], only).unwrap();
            let mut s = g.compile(&Constraint::Lark(lark.clone())).unwrap_or_else(|e| panic!("{f:?}: {e}\n{lark}"));
            assert!(s.mask().unwrap().is_some());
        }
        assert!(f.forced_call_grammar(&[weather_tool()], Some("nope")).is_err());
    }
}
