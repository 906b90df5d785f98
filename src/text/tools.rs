//! Tool calls in model output: one parser per format, chosen from the model's
//! chat template, turning the text a model writes when it calls a function into
//! structured calls while the text streams; and, for `tool_choice` required or
//! a named function, the Lark grammar that forces a call in that format.
//!
//! Formats: Hermes-style `<tool_call>{json}</tool_call>` blocks (Qwen 2.5/3),
//! a bare JSON object `{"name", "parameters"}` optionally after `<|python_tag|>`
//! (Llama 3.1-3.3), `[TOOL_CALLS][{...}]` or `[TOOL_CALLS]name[ARGS]{...}`
//! (Mistral), and ```` ```tool_code ```` blocks holding a Python call (Gemma).

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// How a model family writes tool calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolFormat {
    /// `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>` (Qwen).
    Hermes,
    /// `{"name": ..., "parameters": {...}}`, the whole reply (Llama 3.x).
    Llama3Json,
    /// `[TOOL_CALLS][{"name": ..., "arguments": {...}}]` or `[TOOL_CALLS]name[ARGS]{...}` (Mistral).
    Mistral,
    /// ```` ```tool_code\nname(key=value)\n``` ```` (Gemma); a JSON object as Llama's is read too.
    Gemma,
}

impl ToolFormat {
    /// The format a chat template's tool section asks for; None when it has none.
    pub fn from_template(source: &str) -> Option<ToolFormat> {
        if source.contains("<tool_call>") {
            Some(ToolFormat::Hermes)
        } else if source.contains("[TOOL_CALLS]") {
            Some(ToolFormat::Mistral)
        } else if source.contains("<|python_tag|>") || source.contains("ipython") {
            Some(ToolFormat::Llama3Json)
        } else if source.contains("tool_code") || (source.contains("<start_of_turn>") && source.contains("tools")) {
            Some(ToolFormat::Gemma)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ToolFormat::Hermes => "hermes",
            ToolFormat::Llama3Json => "llama3_json",
            ToolFormat::Mistral => "mistral",
            ToolFormat::Gemma => "gemma",
        }
    }

    /// A Lark grammar (llguidance's dialect) whose sentences are exactly one call
    /// of one of `tools` (OpenAI-style `{"type": "function", "function": {...}}`
    /// or bare function objects) in this format; with `only`, of that function.
    pub fn forced_call_grammar(self, tools: &[Value], only: Option<&str>) -> Result<String> {
        let args_key = match self {
            ToolFormat::Llama3Json | ToolFormat::Gemma => "parameters",
            ToolFormat::Hermes | ToolFormat::Mistral => "arguments",
        };
        let mut alts = Vec::new();
        for t in tools {
            let f = function_of(t)?;
            let name = f["name"].as_str().unwrap_or_default();
            if only.is_some_and(|o| o != name) {
                continue;
            }
            let params = match &f["parameters"] {
                Value::Null => json!({"type": "object"}),
                p => p.clone(),
            };
            alts.push(json!({"type": "object", "properties": {"name": {"const": name}, args_key: params}, "required": ["name", args_key], "additionalProperties": false}));
        }
        if alts.is_empty() {
            return Err(Error::InvalidArgument(match only {
                Some(o) => format!("tool_choice names the function {o:?}, which is not among the tools"),
                None => "tool_choice required needs at least one tool".into(),
            }));
        }
        let call = json!({"anyOf": alts, "x-guidance": {"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}});
        Ok(match self {
            ToolFormat::Hermes => format!("start: \"<tool_call>\\n\" call \"\\n</tool_call>\"\ncall: %json {call}\n"),
            ToolFormat::Mistral => {
                let arr = json!({"type": "array", "items": {"anyOf": call["anyOf"]}, "minItems": 1, "maxItems": 1, "x-guidance": call["x-guidance"]});
                format!("start: %json {arr}\n")
            }
            ToolFormat::Llama3Json | ToolFormat::Gemma => format!("start: %json {call}\n"),
        })
    }
}

/// The function object of a tool definition; checks it has a name.
fn function_of(t: &Value) -> Result<&Value> {
    let f = if t.get("function").is_some() { &t["function"] } else { t };
    match f.get("name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => Ok(f),
        _ => Err(Error::InvalidArgument(format!("tools: a tool has no function name: {t}"))),
    }
}

/// Which tool, if any, the model must call.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides (the template shows it the tools).
    #[default]
    Auto,
    /// No call: the tools are not shown.
    None,
    /// At least one call, forced by a grammar.
    Required,
    /// A call of this function, forced by a grammar.
    Function(String),
}

/// One function call the model made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// `call_<n>`, unique within a reply (models do not write ids).
    pub id: String,
    pub name: String,
    /// The arguments, a JSON object.
    pub arguments: Value,
}

impl ToolCall {
    /// The call as an assistant message's `tool_calls` entry (OpenAI's shape,
    /// which chat templates read; `arguments` stays an object).
    pub fn to_message_json(&self) -> Value {
        json!({"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}})
    }
}

/// What a piece of streamed output turned into.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ToolStep {
    /// Text for the user (outside any call).
    pub text: String,
    /// Calls completed by this piece.
    pub calls: Vec<ToolCall>,
}

/// Parses a reply's tool calls as it streams: text outside calls passes
/// through (held back only while it may be the start of a call marker).
#[derive(Debug)]
pub struct ToolCallParser {
    format: ToolFormat,
    /// Text not yet handed out: a possible marker prefix, or a call being written.
    buf: String,
    /// Inside a block call (after its opening marker).
    in_call: bool,
    /// The reply so far is only whitespace (whole-reply formats decide on what comes next).
    at_start: bool,
    /// The whole reply is a call (Llama, Mistral, Gemma's JSON form).
    whole: bool,
    count: usize,
}

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
const GEMMA_OPEN: &str = "```tool_code";
const GEMMA_CLOSE: &str = "```";

/// Length of the longest suffix of `s` that is a proper prefix of `marker`.
fn partial_suffix(s: &str, marker: &str) -> usize {
    (1..marker.len().min(s.len() + 1)).rev().find(|&n| s.is_char_boundary(s.len() - n) && marker.starts_with(&s[s.len() - n..])).unwrap_or(0)
}

impl ToolCallParser {
    pub fn new(format: ToolFormat) -> ToolCallParser {
        ToolCallParser { format, buf: String::new(), in_call: false, at_start: true, whole: false, count: 0 }
    }

    pub fn format(&self) -> ToolFormat {
        self.format
    }

    /// The reply text taken in but not yet handed out (a possible marker, or a
    /// call being written with its opening marker): what a caller shows as
    /// text when a call turns out malformed (`push` and `finish` then fail).
    pub fn pending(&self) -> String {
        match (self.in_call, self.format) {
            (true, ToolFormat::Hermes) => format!("{HERMES_OPEN}{}", self.buf),
            (true, _) => format!("{GEMMA_OPEN}{}", self.buf),
            (false, _) => self.buf.clone(),
        }
    }

    fn call(&mut self, name: &str, arguments: Value) -> Result<ToolCall> {
        if name.is_empty() {
            return Err(Error::InvalidArgument("tool call without a function name".into()));
        }
        let arguments = match arguments {
            Value::Null => Value::Object(Map::new()),
            // Some models write the arguments as a JSON string.
            Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
            v => v,
        };
        self.count += 1;
        Ok(ToolCall { id: format!("call_{}", self.count), name: name.to_string(), arguments })
    }

    /// `{"name": ..., "arguments"|"parameters": ...}` → a call.
    fn json_call(&mut self, v: &Value) -> Result<ToolCall> {
        let name = v["name"].as_str().ok_or_else(|| Error::InvalidArgument(format!("tool call without a \"name\": {v}")))?;
        let args = v.get("arguments").or_else(|| v.get("parameters")).cloned().unwrap_or(Value::Null);
        self.call(name, args)
    }

    /// Hands out `piece` of the model's reply.
    pub fn push(&mut self, piece: &str) -> Result<ToolStep> {
        self.buf.push_str(piece);
        match self.format {
            ToolFormat::Hermes => self.blocks(HERMES_OPEN, HERMES_CLOSE, false),
            _ if self.at_start || self.whole => self.whole_reply(),
            _ => self.blocks(GEMMA_OPEN, GEMMA_CLOSE, false),
        }
    }

    /// Formats whose call is the whole reply: decided at its first visible
    /// characters (Gemma's JSON calls too; its code blocks may come anywhere).
    fn whole_reply(&mut self) -> Result<ToolStep> {
        if self.whole {
            return Ok(ToolStep::default());
        }
        let t = self.buf.trim_start();
        if t.is_empty() {
            return Ok(ToolStep::default());
        }
        let markers: &[&str] = match self.format {
            ToolFormat::Mistral => &["[TOOL_CALLS]", "[{"],
            _ => &["<|python_tag|>", "{"],
        };
        if markers.iter().any(|m| t.starts_with(m)) {
            self.whole = true;
            return Ok(ToolStep::default());
        }
        if markers.iter().any(|m| m.starts_with(t)) {
            return Ok(ToolStep::default()); // may still become a marker
        }
        self.at_start = false;
        if self.format == ToolFormat::Gemma {
            return self.blocks(GEMMA_OPEN, GEMMA_CLOSE, false);
        }
        Ok(ToolStep { text: std::mem::take(&mut self.buf), calls: Vec::new() })
    }

    /// Text with calls inside `open` … `close` blocks.
    fn blocks(&mut self, open: &str, close: &str, at_end: bool) -> Result<ToolStep> {
        let mut step = ToolStep::default();
        loop {
            if self.in_call {
                let Some(end) = self.buf.find(close) else {
                    if at_end {
                        // A call cut off by the end of the reply (EOS instead of the closing tag).
                        let body = std::mem::take(&mut self.buf);
                        self.in_call = false;
                        step.calls.push(self.block_call(&body)?);
                    }
                    return Ok(step);
                };
                let body = self.buf[..end].to_string();
                self.buf.drain(..end + close.len());
                self.in_call = false;
                step.calls.push(self.block_call(&body)?);
            } else if let Some(start) = self.buf.find(open) {
                step.text.push_str(&self.buf[..start]);
                self.buf.drain(..start + open.len());
                self.in_call = true;
            } else {
                let keep = if at_end { 0 } else { partial_suffix(&self.buf, open) };
                let cut = self.buf.len() - keep;
                step.text.push_str(&self.buf[..cut]);
                self.buf.drain(..cut);
                return Ok(step);
            }
        }
    }

    fn block_call(&mut self, body: &str) -> Result<ToolCall> {
        let body = body.trim();
        match self.format {
            ToolFormat::Gemma if !body.starts_with('{') => {
                let (name, args) = parse_python_call(body)?;
                self.call(&name, args)
            }
            _ => {
                let v: Value = serde_json::from_str(body).map_err(|e| Error::InvalidArgument(format!("tool call is not JSON ({e}): {body}")))?;
                self.json_call(&v)
            }
        }
    }

    /// The end of the reply: releases held-back text and completes a pending call.
    pub fn finish(&mut self) -> Result<ToolStep> {
        if self.whole {
            let text = std::mem::take(&mut self.buf);
            self.whole = false;
            return self.whole_calls(text.trim());
        }
        match self.format {
            ToolFormat::Hermes => self.blocks(HERMES_OPEN, HERMES_CLOSE, true),
            ToolFormat::Gemma => self.blocks(GEMMA_OPEN, GEMMA_CLOSE, true),
            _ => Ok(ToolStep { text: std::mem::take(&mut self.buf), calls: Vec::new() }),
        }
    }

    /// Llama's `{...}` (or several separated by `;`), Mistral's `[{...}]` or `name[ARGS]{...}`.
    fn whole_calls(&mut self, text: &str) -> Result<ToolStep> {
        let text = text.trim_start_matches("<|python_tag|>").trim_start_matches("[TOOL_CALLS]").trim();
        let bad = |e: &dyn std::fmt::Display| Error::InvalidArgument(format!("tool call is not valid ({e}): {text}"));
        let mut calls = Vec::new();
        if text.starts_with('[') {
            let v: Value = serde_json::from_str(text).map_err(|e| bad(&e))?;
            for c in v.as_array().into_iter().flatten() {
                calls.push(self.json_call(c)?);
            }
        } else if text.starts_with('{') {
            let mut rest = text;
            while !rest.is_empty() {
                let mut de = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
                match de.next() {
                    Some(Ok(v)) => calls.push(self.json_call(&v)?),
                    Some(Err(e)) => return Err(bad(&e)),
                    None => break,
                }
                // `;` between Llama's parallel calls.
                rest = rest[de.byte_offset()..].trim_start_matches(|c: char| c == ';' || c.is_whitespace());
            }
        } else if let Some((name, args)) = text.split_once("[ARGS]") {
            let v: Value = serde_json::from_str(args.trim()).map_err(|e| bad(&e))?;
            calls.push(self.call(name.trim(), v)?);
        } else {
            return Err(bad(&"no call found"));
        }
        Ok(ToolStep { text: String::new(), calls })
    }
}

/// `name(key=value, ...)` with Python literal values → (name, JSON object).
pub fn parse_python_call(src: &str) -> Result<(String, Value)> {
    let bad = |what: &str| Error::InvalidArgument(format!("tool call {src:?}: {what}"));
    let open = src.find('(').ok_or_else(|| bad("no '('"))?;
    let name = src[..open].trim().to_string();
    if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '.') {
        return Err(bad("not a function name"));
    }
    let mut p = PyLit { s: &src.as_bytes()[open + 1..], i: 0 };
    let mut args = Map::new();
    loop {
        p.ws();
        if p.eat(b')') {
            break;
        }
        let start = p.i;
        while p.i < p.s.len() && (p.s[p.i].is_ascii_alphanumeric() || p.s[p.i] == b'_') {
            p.i += 1;
        }
        let key = std::str::from_utf8(&p.s[start..p.i]).map_err(|_| bad("bad key"))?.to_string();
        p.ws();
        if key.is_empty() || !p.eat(b'=') {
            return Err(bad("arguments must be key=value"));
        }
        let v = p.value().ok_or_else(|| bad("bad value"))?;
        args.insert(key, v);
        p.ws();
        if !p.eat(b',') {
            p.ws();
            if !p.eat(b')') {
                return Err(bad("expected ',' or ')'"));
            }
            break;
        }
    }
    Ok((name, Value::Object(args)))
}

/// Python literals: strings, numbers, True/False/None, lists, tuples, dicts.
struct PyLit<'a> {
    s: &'a [u8],
    i: usize,
}

impl PyLit<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn word(&mut self, w: &str) -> bool {
        if self.s[self.i..].starts_with(w.as_bytes()) {
            self.i += w.len();
            true
        } else {
            false
        }
    }
    fn seq(&mut self, close: u8) -> Option<Vec<Value>> {
        let mut out = Vec::new();
        loop {
            self.ws();
            if self.eat(close) {
                return Some(out);
            }
            out.push(self.value()?);
            self.ws();
            if !self.eat(b',') {
                self.ws();
                return self.eat(close).then_some(out);
            }
        }
    }
    fn value(&mut self) -> Option<Value> {
        self.ws();
        let c = *self.s.get(self.i)?;
        match c {
            b'"' | b'\'' => {
                self.i += 1;
                let mut out = Vec::new();
                while let Some(&b) = self.s.get(self.i) {
                    self.i += 1;
                    if b == c {
                        return Some(Value::String(String::from_utf8(out).ok()?));
                    }
                    if b == b'\\' {
                        let e = *self.s.get(self.i)?;
                        self.i += 1;
                        out.push(match e {
                            b'n' => b'\n',
                            b't' => b'\t',
                            other => other,
                        });
                    } else {
                        out.push(b);
                    }
                }
                None
            }
            b'[' => {
                self.i += 1;
                self.seq(b']').map(Value::Array)
            }
            b'(' => {
                self.i += 1;
                self.seq(b')').map(Value::Array)
            }
            b'{' => {
                self.i += 1;
                let mut m = Map::new();
                loop {
                    self.ws();
                    if self.eat(b'}') {
                        return Some(Value::Object(m));
                    }
                    let k = match self.value()? {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    self.ws();
                    if !self.eat(b':') {
                        return None;
                    }
                    m.insert(k, self.value()?);
                    self.ws();
                    if !self.eat(b',') {
                        self.ws();
                        return self.eat(b'}').then_some(Value::Object(m));
                    }
                }
            }
            _ if self.word("True") => Some(Value::Bool(true)),
            _ if self.word("False") => Some(Value::Bool(false)),
            _ if self.word("None") => Some(Value::Null),
            _ => {
                let start = self.i;
                while self.i < self.s.len() && matches!(self.s[self.i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                    self.i += 1;
                }
                let n = std::str::from_utf8(&self.s[start..self.i]).ok()?;
                serde_json::from_str::<serde_json::Number>(n)
                    .ok()
                    .map(Value::Number)
                    .or_else(|| n.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(Value::Number))
            }
        }
    }
}
