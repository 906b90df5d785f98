//! Structured output and tool calls for both APIs: OpenAI's `response_format`
//! and Ollama's `format` become a constraint; `tools` reach the chat template and
//! `tool_choice` required or a named function forces a call through a grammar;
//! the model's tool-call text is parsed back into calls per choice, whole or as
//! it streams (docs/server.md).

use super::errors::{ApiError, ApiResult};
use super::params::{type_name, Fields};
use crate::engine::Engine;
use crate::sample::Constraint;
use crate::text::{ToolCall, ToolCallParser, ToolChoice, ToolFormat};
use serde_json::{json, Map, Value};

/// A constraint and the request field it came from (named when it cannot compile).
#[derive(Clone, Debug)]
pub struct Wanted {
    pub constraint: Constraint,
    pub param: &'static str,
}

/// OpenAI's `response_format`: `{"type": "text"}`, `{"type": "json_object"}` or
/// `{"type": "json_schema", "json_schema": {"name", "schema", "strict", "description"}}`.
/// `strict: false` is enforced all the same (the output always validates).
pub fn response_format(f: &Fields) -> ApiResult<Option<Wanted>> {
    let Some(o) = f.object("response_format")? else { return Ok(None) };
    let rf = Fields { obj: o, prefix: "response_format." };
    match rf.string("type")? {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Wanted { constraint: Constraint::JsonObject, param: "response_format" })),
        Some("json_schema") => {
            let js = rf.object("json_schema")?.ok_or_else(|| ApiError::field("response_format.json_schema", "is required with type json_schema"))?;
            let jf = Fields { obj: js, prefix: "response_format.json_schema." };
            let name = jf.string("name")?.ok_or_else(|| ApiError::field("response_format.json_schema.name", "is required"))?;
            check_name("response_format.json_schema.name", name)?;
            jf.string("description")?;
            jf.bool("strict")?;
            let schema = match jf.get("schema") {
                // No schema: any JSON value.
                None => json!({}),
                Some(s @ (Value::Object(_) | Value::Bool(_))) => s.clone(),
                Some(other) => {
                    return Err(ApiError::field("response_format.json_schema.schema", format!("expected a JSON Schema object, got {}", type_name(other))))
                }
            };
            Ok(Some(Wanted { constraint: Constraint::JsonSchema(schema), param: "response_format.json_schema.schema" }))
        }
        Some(other) => Err(ApiError::field("response_format.type", format!("'{other}' is not one of text, json_object, json_schema"))),
        None => Err(ApiError::field("response_format.type", "is required")),
    }
}

/// Ollama's `format`: `""` (none), `"json"` or a JSON Schema object.
pub fn ollama_format(f: &Fields) -> ApiResult<Option<Wanted>> {
    match f.get("format") {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(Wanted { constraint: Constraint::JsonObject, param: "format" })),
        Some(Value::String(s)) => Err(ApiError::field("format", format!("'{s}' is not \"json\" (give \"json\" or a JSON Schema object)"))),
        Some(s @ Value::Object(_)) => Ok(Some(Wanted { constraint: Constraint::JsonSchema(s.clone()), param: "format" })),
        Some(other) => Err(ApiError::field("format", format!("expected \"json\" or a JSON Schema object, got {}", type_name(other)))),
    }
}

/// Function names as OpenAI allows them (letters, digits, `_`, `-`; Ollama's `.` too), at most 64.
fn check_name(param: &str, name: &str) -> ApiResult<()> {
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
        return Err(ApiError::field(param, format!("{name:?} must be 1 to 64 letters, digits, '_', '-' or '.'")));
    }
    Ok(())
}

/// `tools`: function definitions `{"type": "function", "function": {"name",
/// "description", "parameters"}}`, passed to the template as given.
pub fn tools(f: &Fields) -> ApiResult<Vec<Value>> {
    let Some(list) = f.array("tools")? else { return Ok(Vec::new()) };
    let mut names: Vec<String> = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let at = format!("tools[{i}]");
        let o = t.as_object().ok_or_else(|| ApiError::field(&at, format!("expected an object, got {}", type_name(t))))?;
        let prefix = format!("{at}.");
        let tf = Fields { obj: o, prefix: &prefix };
        match tf.string("type")? {
            Some("function") | None => {}
            Some(other) => return Err(ApiError::field(&format!("{at}.type"), format!("'{other}' tools are not supported (function only)"))),
        }
        let func_at = format!("{at}.function");
        let func = tf.object("function")?.ok_or_else(|| ApiError::field(&func_at, "is required"))?;
        let name = match func.get("name") {
            Some(Value::String(n)) => n.as_str(),
            Some(other) => return Err(ApiError::field(&format!("{func_at}.name"), format!("expected a string, got {}", type_name(other)))),
            None => return Err(ApiError::field(&format!("{func_at}.name"), "is required")),
        };
        check_name(&format!("{func_at}.name"), name)?;
        if names.iter().any(|n| n == name) {
            return Err(ApiError::field(&format!("{func_at}.name"), format!("{name:?} is defined twice")));
        }
        names.push(name.to_string());
        match func.get("parameters") {
            None | Some(Value::Null) | Some(Value::Object(_)) => {}
            Some(other) => return Err(ApiError::field(&format!("{func_at}.parameters"), format!("expected a JSON Schema object, got {}", type_name(other)))),
        }
        if let Some(d) = func.get("description").filter(|d| !d.is_null() && !d.is_string()) {
            return Err(ApiError::field(&format!("{func_at}.description"), format!("expected a string, got {}", type_name(d))));
        }
    }
    Ok(list.clone())
}

fn function_name(t: &Value) -> &str {
    t["function"]["name"].as_str().unwrap_or_default()
}

/// `tool_choice`: `"none"`, `"auto"`, `"required"` or `{"type": "function",
/// "function": {"name": ...}}` naming one of `tools`. Absent: auto.
pub fn tool_choice(f: &Fields, tools: &[Value]) -> ApiResult<ToolChoice> {
    let at = f.name("tool_choice");
    let sub = |k: &str| format!("{at}.{k}");
    let choice = match f.get("tool_choice") {
        None => return Ok(ToolChoice::Auto),
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => return Err(ApiError::field(&at, format!("'{other}' is not one of none, auto, required or a function object"))),
        },
        Some(Value::Object(o)) => {
            let prefix = sub("");
            let cf = Fields { obj: o, prefix: &prefix };
            match cf.string("type")? {
                Some("function") | None => {}
                Some(other) => return Err(ApiError::field(&sub("type"), format!("'{other}' is not supported (function only)"))),
            }
            let func = cf.object("function")?.ok_or_else(|| ApiError::field(&sub("function"), "is required"))?;
            let fprefix = sub("function.");
            let name = Fields { obj: func, prefix: &fprefix }.string("name")?.ok_or_else(|| ApiError::field(&sub("function.name"), "is required"))?;
            if !tools.iter().any(|t| function_name(t) == name) {
                return Err(ApiError::field(&sub("function.name"), format!("{name:?} is not among the tools")));
            }
            ToolChoice::Function(name.to_string())
        }
        Some(other) => return Err(ApiError::field(&at, format!("expected a string or an object, got {}", type_name(other)))),
    };
    if tools.is_empty() && matches!(choice, ToolChoice::Required | ToolChoice::Function(_)) {
        return Err(ApiError::field(&at, "needs tools"));
    }
    Ok(choice)
}

/// An assistant message's `tool_calls` in the shape chat templates read:
/// `{"id", "type": "function", "function": {"name", "arguments": {...}}}`, the
/// arguments an object (OpenAI sends them as a JSON string, Ollama as an object).
pub fn message_tool_calls(v: &Value, at: &str) -> ApiResult<Value> {
    let list = v.as_array().ok_or_else(|| ApiError::field(at, format!("expected an array, got {}", type_name(v))))?;
    let mut out = Vec::with_capacity(list.len());
    for (j, c) in list.iter().enumerate() {
        let cat = format!("{at}[{j}]");
        let o = c.as_object().ok_or_else(|| ApiError::field(&cat, format!("expected an object, got {}", type_name(c))))?;
        let func = o.get("function").and_then(Value::as_object).ok_or_else(|| ApiError::field(&format!("{cat}.function"), "is required (an object)"))?;
        let name = func.get("name").and_then(Value::as_str).filter(|n| !n.is_empty());
        let name = name.ok_or_else(|| ApiError::field(&format!("{cat}.function.name"), "is required (a string)"))?;
        let args = match func.get("arguments") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(Value::String(s)) if s.trim().is_empty() => Value::Object(Map::new()),
            Some(Value::String(s)) => serde_json::from_str(s).map_err(|e| ApiError::field(&format!("{cat}.function.arguments"), format!("not JSON: {e}")))?,
            Some(a @ Value::Object(_)) => a.clone(),
            Some(other) => {
                return Err(ApiError::field(&format!("{cat}.function.arguments"), format!("expected a JSON string or an object, got {}", type_name(other))))
            }
        };
        let id = match o.get("id") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => format!("call_{j}"),
            Some(other) => return Err(ApiError::field(&format!("{cat}.id"), format!("expected a string, got {}", type_name(other)))),
        };
        out.push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}));
    }
    Ok(Value::Array(out))
}

/// What a chat request's tools and formats come to.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// The tools the template is shown (none for `tool_choice: none`).
    pub template_tools: Option<Vec<Value>>,
    /// What every choice's output must be.
    pub constraint: Option<Constraint>,
    /// The format replies write tool calls in, when they are parsed back.
    pub calls: Option<ToolFormat>,
}

/// Combines `tools`, `tool_choice` and a format for one model. `template` is the
/// source of the template the request renders with (tool formats are read from it).
/// The constraint is compiled here, so a schema the engine cannot support is a
/// 400 naming its field rather than a failure of every choice.
pub fn plan(engine: &Engine, template: Option<&str>, tools: Vec<Value>, choice: ToolChoice, wanted: Option<Wanted>) -> ApiResult<Plan> {
    let forced = matches!(choice, ToolChoice::Required | ToolChoice::Function(_));
    if forced && wanted.is_some() {
        return Err(ApiError::field("tool_choice", "a forced tool call cannot be combined with response_format/format"));
    }
    let shown = !tools.is_empty() && choice != ToolChoice::None;
    let format = if shown {
        Some(template.and_then(ToolFormat::from_template).ok_or_else(|| {
            ApiError::field(
                "tools",
                "this model's chat template writes no tool calls gomlx can parse (Qwen <tool_call>, Llama 3 JSON, Mistral [TOOL_CALLS], Gemma tool_code); \
                 serve it with --chat-template FILE",
            )
        })?)
    } else {
        None
    };
    let (constraint, param) = match (&choice, format) {
        (ToolChoice::Required, Some(f)) => {
            (Some(Constraint::Lark(f.forced_call_grammar(&tools, None).map_err(|e| ApiError::field("tool_choice", e.to_string()))?)), "tools")
        }
        (ToolChoice::Function(name), Some(f)) => {
            (Some(Constraint::Lark(f.forced_call_grammar(&tools, Some(name)).map_err(|e| ApiError::field("tool_choice", e.to_string()))?)), "tools")
        }
        _ => match wanted {
            Some(w) => (Some(w.constraint), w.param),
            None => (None, ""),
        },
    };
    if let Some(c) = &constraint {
        let grammars = engine.grammars().map_err(|e| ApiError::field(param, e.to_string()))?;
        grammars.compile(c).map_err(|e| ApiError::field(param, e.to_string().trim_start_matches("invalid argument: ").to_string()))?;
    }
    // A constrained reply is the format asked for, not a place to look for calls.
    let calls = if constraint.is_none() || forced { format } else { None };
    Ok(Plan { template_tools: shown.then_some(tools), constraint, calls })
}

/// One choice's reply, split into text and tool calls as it streams. A call the
/// model writes malformed is handed out as text (and parsing stops there).
pub struct Calls {
    parser: Option<ToolCallParser>,
    /// Unique per request: `call_<request>_<choice>_<n>`.
    id_prefix: String,
    /// Calls handed out so far.
    pub count: usize,
}

impl Calls {
    pub fn new(format: Option<ToolFormat>, request_id: &str, choice: usize) -> Calls {
        let tail = request_id.rsplit('-').next().unwrap_or(request_id);
        Calls { parser: format.map(ToolCallParser::new), id_prefix: format!("call_{tail}_{choice}"), count: 0 }
    }

    fn step(&mut self, piece: Option<&str>) -> (String, Vec<ToolCall>) {
        let Some(p) = &mut self.parser else { return (piece.unwrap_or_default().to_string(), Vec::new()) };
        let before = p.pending();
        let r = match piece {
            Some(s) => p.push(s),
            None => p.finish(),
        };
        match r {
            Ok(step) => {
                let mut calls = step.calls;
                for c in &mut calls {
                    c.id = format!("{}_{}", self.id_prefix, self.count);
                    self.count += 1;
                }
                (step.text, calls)
            }
            Err(_) => {
                self.parser = None;
                (before + piece.unwrap_or_default(), Vec::new())
            }
        }
    }

    /// Text for the user and the calls completed by one piece of the reply.
    pub fn push(&mut self, piece: &str) -> (String, Vec<ToolCall>) {
        self.step(Some(piece))
    }

    /// The end of the reply: held-back text and a call cut off by the end.
    pub fn finish(&mut self) -> (String, Vec<ToolCall>) {
        self.step(None)
    }

    /// A whole reply at once.
    pub fn whole(&mut self, text: &str) -> (String, Vec<ToolCall>) {
        let (mut t, mut calls) = self.push(text);
        let (t2, c2) = self.finish();
        t.push_str(&t2);
        calls.extend(c2);
        (t, calls)
    }
}

/// A call in OpenAI's response shape (the arguments a JSON string); `index` for stream deltas.
pub fn openai_call(c: &ToolCall, index: Option<usize>) -> Value {
    let mut v = json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments.to_string()}});
    if let Some(i) = index {
        v["index"] = json!(i);
    }
    v
}

/// A call in Ollama's shape (the arguments an object).
pub fn ollama_call(c: &ToolCall, index: usize) -> Value {
    json!({"id": c.id, "function": {"index": index, "name": c.name, "arguments": c.arguments}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::params::object;

    #[test]
    fn formats_and_tools_name_their_bad_fields() {
        let bad = |body: &str, f: fn(&Fields) -> ApiResult<Option<Wanted>>| {
            let m = object(body.as_bytes()).unwrap();
            f(&Fields::new(&m)).unwrap_err().param.unwrap()
        };
        assert_eq!(bad(r#"{"response_format": {"type": "xml"}}"#, response_format), "response_format.type");
        assert_eq!(bad(r#"{"response_format": {"type": "json_schema"}}"#, response_format), "response_format.json_schema");
        assert_eq!(bad(r#"{"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}"#, response_format), "response_format.json_schema.name");
        assert_eq!(
            bad(r#"{"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": 3}}}"#, response_format),
            "response_format.json_schema.schema"
        );
        assert_eq!(bad(r#"{"format": "yaml"}"#, ollama_format), "format");
        assert_eq!(bad(r#"{"format": 1}"#, ollama_format), "format");
        let m = object(br#"{"format": "json", "response_format": {"type": "text"}}"#).unwrap();
        assert_eq!(ollama_format(&Fields::new(&m)).unwrap().unwrap().constraint, Constraint::JsonObject);
        assert!(response_format(&Fields::new(&m)).unwrap().is_none());

        let tool = json!({"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}});
        let m = object(json!({"tools": [tool, {"type": "function", "function": {"name": "f"}}]}).to_string().as_bytes()).unwrap();
        assert_eq!(tools(&Fields::new(&m)).unwrap_err().param.unwrap(), "tools[1].function.name");
        let m = object(br#"{"tools": [{"type": "function", "function": {"name": "g", "parameters": "x"}}]}"#).unwrap();
        assert_eq!(tools(&Fields::new(&m)).unwrap_err().param.unwrap(), "tools[0].function.parameters");
        let m = object(br#"{"tool_choice": {"type": "function", "function": {"name": "nope"}}}"#).unwrap();
        assert_eq!(tool_choice(&Fields::new(&m), std::slice::from_ref(&tool)).unwrap_err().param.unwrap(), "tool_choice.function.name");
        let m = object(br#"{"tool_choice": "required"}"#).unwrap();
        assert_eq!(tool_choice(&Fields::new(&m), &[]).unwrap_err().param.unwrap(), "tool_choice");
        assert_eq!(tool_choice(&Fields::new(&m), std::slice::from_ref(&tool)).unwrap(), ToolChoice::Required);
    }

    #[test]
    fn message_calls_take_string_or_object_arguments() {
        let v =
            json!([{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}, {"function": {"name": "g", "arguments": {"y": 2}}}]);
        let out = message_tool_calls(&v, "messages[1].tool_calls").unwrap();
        assert_eq!(out[0]["function"]["arguments"], json!({"x": 1}));
        assert_eq!(out[1]["function"]["arguments"], json!({"y": 2}));
        let bad = json!([{"function": {"name": "f", "arguments": "{x"}}]);
        assert_eq!(message_tool_calls(&bad, "m.tool_calls").unwrap_err().param.unwrap(), "m.tool_calls[0].function.arguments");
    }

    #[test]
    fn malformed_calls_come_back_as_text_and_ids_are_unique() {
        let mut c = Calls::new(Some(ToolFormat::Hermes), "chatcmpl-abc", 0);
        let (t, calls) = c
            .whole("Hi <tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call><tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n</tool_call>");
        assert_eq!(t, "Hi ");
        assert_eq!(calls.len(), 2);
        assert_ne!(calls[0].id, calls[1].id);
        let mut c = Calls::new(Some(ToolFormat::Hermes), "chatcmpl-abc", 0);
        let mut text = String::new();
        for piece in ["ok <tool", "_call>{not json", "</tool_call> after"] {
            text.push_str(&c.push(piece).0);
        }
        text.push_str(&c.finish().0);
        assert_eq!(text, "ok <tool_call>{not json</tool_call> after");
    }
}
