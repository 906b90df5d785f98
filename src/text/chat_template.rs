//! Chat templates: the model's own Jinja template rendered with minijinja, set up to
//! behave like transformers' `apply_chat_template` (Jinja2 sandbox with
//! `trim_blocks`, `lstrip_blocks`, loop controls, `raise_exception`, `strftime_now`
//! and a `tojson` that is Python's `json.dumps`).

use std::sync::Arc;

use chrono::format::{Item, StrftimeItems};
use chrono::NaiveDateTime;
use minijinja::value::{Kwargs, Serde, ValueKind};
use minijinja::{Environment, ErrorKind, State, Value};
use serde_json::{Map, Value as Json};

use super::pyfmt::{json_dumps, py_str, JsonStyle};
use crate::{Error, Result};

const TEMPLATE_NAME: &str = "chat_template";
/// Context key that carries the render's clock to `strftime_now`.
const NOW_KEY: &str = "__gomlx_now";
const NOW_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.f";

/// One chat message: a JSON object with at least `role` and usually `content`
/// (a string, or a list of parts); any other keys reach the template unchanged.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ChatMessage(pub Map<String, Json>);

impl ChatMessage {
    pub fn new(role: &str, content: impl Into<Json>) -> ChatMessage {
        let mut m = Map::new();
        m.insert("role".into(), Json::from(role));
        m.insert("content".into(), content.into());
        ChatMessage(m)
    }
    pub fn system(content: &str) -> ChatMessage {
        Self::new("system", content)
    }
    pub fn user(content: &str) -> ChatMessage {
        Self::new("user", content)
    }
    pub fn assistant(content: &str) -> ChatMessage {
        Self::new("assistant", content)
    }
    /// Adds or replaces a key (e.g. `name`, `tool_calls`, `reasoning_content`).
    pub fn with(mut self, key: &str, value: impl Into<Json>) -> ChatMessage {
        self.0.insert(key.into(), value.into());
        self
    }
    pub fn role(&self) -> Option<&str> {
        self.0.get("role").and_then(Json::as_str)
    }
    /// Builds a message from a JSON object, as a C or Go caller hands it over.
    pub fn from_json(value: Json) -> Result<ChatMessage> {
        match value {
            Json::Object(m) => Ok(ChatMessage(m)),
            other => Err(Error::InvalidArgument(format!("a chat message must be a JSON object, got {other}"))),
        }
    }
}

/// What a render needs besides the messages.
#[derive(Debug, Clone, Default)]
pub struct ChatOptions {
    /// End with the header that opens the assistant's turn.
    pub add_generation_prompt: bool,
    /// Tool schemas (JSON objects), passed to the template as `tools`.
    pub tools: Option<Vec<Json>>,
    /// Documents for retrieval templates, passed as `documents`.
    pub documents: Option<Vec<Json>>,
    /// Extra template variables, e.g. `enable_thinking: false` for Qwen 3.
    pub extra: Map<String, Json>,
    /// The clock `strftime_now` reads; `None` is the local time now. Tests pin it.
    pub now: Option<NaiveDateTime>,
}

/// Special token strings a template sees as `bos_token`, `eos_token`, ...
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateTokens {
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub unk_token: Option<String>,
    pub pad_token: Option<String>,
}

/// Which prompt format to render a conversation with.
#[derive(Debug, Clone, Default)]
pub enum ChatFormat {
    /// The model's own template; an error when the model has none.
    #[default]
    Model,
    /// One of the model's named templates (tokenizer_config.json list form).
    Named(String),
    /// A template supplied by the caller.
    Custom(ChatTemplate),
    /// No template: `role: content` lines, then `assistant:` for a generation prompt.
    Plain,
}

impl ChatFormat {
    pub(crate) fn render_plain(messages: &[ChatMessage], options: &ChatOptions) -> Result<String> {
        check_messages(messages)?;
        let mut out = String::new();
        for m in messages {
            let role = m.role().unwrap_or("user");
            out.push_str(role);
            out.push_str(": ");
            match m.0.get("content") {
                Some(Json::String(s)) => out.push_str(s),
                Some(Json::Array(parts)) => {
                    for p in parts {
                        if let Some(t) = p.get("text").and_then(Json::as_str) {
                            out.push_str(t);
                        }
                    }
                }
                _ => {}
            }
            out.push('\n');
        }
        if options.add_generation_prompt {
            out.push_str("assistant:");
        }
        Ok(out)
    }
}

/// A compiled chat template. Clones share the compiled form.
#[derive(Clone)]
pub struct ChatTemplate {
    source: String,
    env: Arc<Environment<'static>>,
    /// Instructions one render may run (`crate::limits::TEMPLATE_FUEL`).
    fuel: u64,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("source_len", &self.source.len()).finish()
    }
}

fn template_err(e: minijinja::Error) -> Error {
    let mut msg = e.to_string();
    // Jinja errors chain their causes (e.g. an error inside an included macro).
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    Error::Template(msg)
}

fn check_messages(messages: &[ChatMessage]) -> Result<()> {
    if messages.is_empty() {
        return Err(Error::Template("cannot apply a chat template to an empty conversation".into()));
    }
    Ok(())
}

impl ChatTemplate {
    /// Compiles a template; syntax errors are reported here, not at render time.
    pub fn new(source: impl Into<String>) -> Result<ChatTemplate> {
        Self::with_fuel(source, crate::limits::TEMPLATE_FUEL)
    }

    /// `new` with another bound on the instructions of one render (the fuzz
    /// targets use a small one).
    pub fn with_fuel(source: impl Into<String>, fuel: u64) -> Result<ChatTemplate> {
        let source = source.into();
        let mut env = Environment::new();
        env.set_syntax(minijinja::syntax::SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build().map_err(template_err)?);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(|out, _state, value| {
            let mut s = String::new();
            py_str(value, &mut s);
            out.write_str(&s).map_err(|_| minijinja::Error::from(ErrorKind::WriteFailure))
        });
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        // Bounded: a template that never ends runs out of fuel, and macro
        // recursion stops early (every limit is in `crate::limits`).
        env.set_fuel(Some(fuel));
        env.set_recursion_limit(TEMPLATE_RECURSION);
        env.add_template_owned(TEMPLATE_NAME, strip_generation_tags(&source)).map_err(template_err)?;
        Ok(ChatTemplate { source, env: Arc::new(env), fuel })
    }

    /// The template text as the model ships it.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders a conversation; see docs/text.md for the variables a template sees.
    pub fn render(&self, messages: &[ChatMessage], options: &ChatOptions, tokens: &TemplateTokens) -> Result<String> {
        check_messages(messages)?;
        let mut ctx = Map::new();
        let specials = [("bos_token", &tokens.bos_token), ("eos_token", &tokens.eos_token), ("unk_token", &tokens.unk_token), ("pad_token", &tokens.pad_token)];
        for (key, value) in specials {
            if let Some(v) = value {
                ctx.insert(key.into(), Json::from(v.as_str()));
            }
        }
        for (k, v) in &options.extra {
            ctx.insert(k.clone(), v.clone());
        }
        let messages: Vec<Json> = messages.iter().map(prepare_message).collect();
        ctx.insert("messages".into(), Json::Array(messages));
        ctx.insert("tools".into(), options.tools.clone().map(Json::Array).unwrap_or(Json::Null));
        ctx.insert("documents".into(), options.documents.clone().map(Json::Array).unwrap_or(Json::Null));
        ctx.insert("add_generation_prompt".into(), Json::Bool(options.add_generation_prompt));
        let now = options.now.unwrap_or_else(|| chrono::Local::now().naive_local());
        ctx.insert(NOW_KEY.into(), Json::from(now.format(NOW_FORMAT).to_string()));

        let limit = crate::limits::TEMPLATE_OUTPUT_BASE.saturating_add(crate::limits::TEMPLATE_OUTPUT_FACTOR.saturating_mul(json_text_bytes(&ctx)));
        let ctx = Value::from(Serde(&Json::Object(ctx)));
        // On a thread of its own with a large stack: values a template nests
        // deeply (within its fuel) are printed, compared and dropped recursively
        // by minijinja, and the caller's thread (a Go or Swift thread calling
        // the C ABI) may have a small stack. A panic there prints nothing.
        std::thread::scope(|scope| {
            crate::panics::thread("template")
                .stack_size(TEMPLATE_STACK)
                .spawn_scoped(scope, || crate::panics::catch(|| self.render_bounded(ctx, limit)))
                .map_err(|e| Error::Template(format!("cannot start the rendering thread: {e}")))?
                .join()
                .map_err(|_| Error::Template("the rendering thread panicked".into()))?
                .map_err(|what| Error::Template(format!("internal error (panic): {what}")))?
        })
    }

    /// Renders within `crate::limits::TEMPLATE_FUEL` instructions and `limit`
    /// bytes of output; either limit is an error naming it.
    fn render_bounded(&self, ctx: Value, limit: usize) -> Result<String> {
        let template = self.env.get_template(TEMPLATE_NAME).map_err(template_err)?;
        let mut out = Bounded { buf: Vec::new(), limit, over: false };
        match template.render_captured_to(ctx, &mut out).map(drop) {
            Ok(_) => {}
            Err(_) if out.over => {
                return Err(Error::Template(format!("the rendered prompt exceeds the limit of {limit} bytes")));
            }
            Err(e) if e.kind() == ErrorKind::OutOfFuel => {
                return Err(Error::Template(format!("rendering ran past the limit of {} template instructions (a loop that does not end?)", self.fuel)));
            }
            Err(e) => return Err(template_err(e)),
        }
        String::from_utf8(out.buf).map_err(|_| Error::Template("the rendered prompt is not valid UTF-8".into()))
    }
}

/// Macro calls a render may nest (chat templates use two or three).
const TEMPLATE_RECURSION: usize = 64;
/// Stack of the rendering thread: reserved address space, touched only as deep as a render goes.
const TEMPLATE_STACK: usize = 256 << 20;

/// A writer that refuses to grow past `limit` bytes.
struct Bounded {
    buf: Vec<u8>,
    limit: usize,
    over: bool,
}

impl std::io::Write for Bounded {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > self.limit {
            self.over = true;
            return Err(std::io::Error::other("output limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Bytes of text in a render's inputs (strings and keys), which bound what a
/// sane template writes.
fn json_text_bytes(m: &Map<String, Json>) -> usize {
    fn walk(v: &Json) -> usize {
        match v {
            Json::String(s) => s.len(),
            Json::Array(a) => a.iter().map(walk).fold(0, usize::saturating_add),
            Json::Object(o) => o.iter().map(|(k, v)| k.len().saturating_add(walk(v))).fold(0, usize::saturating_add),
            _ => 8,
        }
    }
    m.iter().map(|(k, v)| k.len().saturating_add(walk(v))).fold(0, usize::saturating_add)
}

/// transformers drops keys whose value is null, then mirrors the reasoning text under
/// `thinking` and `reasoning_content` (templates read one or the other).
fn prepare_message(m: &ChatMessage) -> Json {
    let mut msg: Map<String, Json> = m.0.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), v.clone())).collect();
    let reasoning = ["reasoning_content", "thinking", "reasoning"].iter().find_map(|k| msg.get(*k).cloned());
    if let Some(r) = reasoning {
        let mut aliased = Map::new();
        aliased.insert("thinking".into(), r.clone());
        for (k, v) in msg {
            aliased.insert(k, v);
        }
        aliased.insert("reasoning_content".into(), r);
        msg = aliased;
    }
    Json::Object(msg)
}

/// `{% generation %}` marks assistant spans for transformers' masks; rendering it is a no-op.
fn strip_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(pos) = rest.find("{%") {
        out.push_str(&rest[..pos]);
        let tag = &rest[pos..];
        // The closing "%}" after the opening "{%" ("{%}" has none: found by fuzzing).
        let Some(end) = tag[2..].find("%}").map(|e| e + 2) else {
            out.push_str(tag);
            return out;
        };
        let inner = &tag[2..end];
        let (open, body) = match inner.strip_prefix(['-', '+']) {
            Some(b) => (&inner[..1], b),
            None => ("", inner),
        };
        let (body, close) = match body.strip_suffix(['-', '+']) {
            Some(b) => (b, &body[body.len() - 1..]),
            None => (body, ""),
        };
        let replacement = match body.trim() {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(r) => out.push_str(&format!("{{%{open} {r} {close}%}}")),
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

fn strftime_now(state: &State, format: String) -> std::result::Result<String, minijinja::Error> {
    let items: Vec<Item> = StrftimeItems::new(&format).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err(minijinja::Error::new(ErrorKind::InvalidOperation, format!("strftime_now: unsupported format {format:?}")));
    }
    let now = state
        .lookup(NOW_KEY)
        .and_then(|v| v.as_str().and_then(|s| NaiveDateTime::parse_from_str(s, NOW_FORMAT).ok()))
        .unwrap_or_else(|| chrono::Local::now().naive_local());
    Ok(now.format_with_items(items.into_iter()).to_string())
}

/// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
fn tojson(value: &Value, ensure_ascii: Option<Value>, kwargs: Kwargs) -> std::result::Result<String, minijinja::Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) if v.kind() == ValueKind::Number => {
            let n = v.as_i64().unwrap_or(0).max(0) as usize;
            Some(" ".repeat(n))
        }
        Some(v) if v.kind() == ValueKind::String => Some(v.as_str().unwrap_or_default().to_string()),
        Some(v) => return Err(minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: indent must be an int or a string, got {}", v.kind()))),
    };
    let mut style = JsonStyle::new(indent);
    let ensure_ascii = match ensure_ascii {
        Some(v) => Some(v),
        None => kwargs.get::<Option<Value>>("ensure_ascii")?,
    };
    style.ensure_ascii = ensure_ascii.map(|v| v.is_true()).unwrap_or(false);
    style.sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    if let Some(seps) = kwargs.get::<Option<Value>>("separators")? {
        if !seps.is_none() {
            let parts: Vec<Value> = seps.try_iter()?.collect();
            match parts.as_slice() {
                [a, b] if a.as_str().is_some() && b.as_str().is_some() => {
                    style.item_sep = a.as_str().unwrap_or_default().to_string();
                    style.key_sep = b.as_str().unwrap_or_default().to_string();
                }
                _ => return Err(minijinja::Error::new(ErrorKind::InvalidOperation, "tojson: separators must be a pair of strings")),
            }
        }
    }
    kwargs.assert_all_used()?;
    let mut out = String::new();
    json_dumps(value, &style, 0, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str, msgs: &[ChatMessage]) -> Result<String> {
        ChatTemplate::new(src)?.render(msgs, &ChatOptions::default(), &TemplateTokens::default())
    }

    #[test]
    fn syntax_error_names_the_problem() {
        let err = ChatTemplate::new("{% for m in messages %}{{ m.content }}").unwrap_err();
        assert!(matches!(err, Error::Template(_)), "{err}");
    }

    #[test]
    fn raise_exception_message_reaches_the_caller() {
        let err = render("{{ raise_exception('Roles must alternate') }}", &[ChatMessage::user("x")]).unwrap_err();
        assert!(err.to_string().contains("Roles must alternate"), "{err}");
    }

    #[test]
    fn empty_conversation_is_an_error() {
        let err = render("{{ messages }}", &[]).unwrap_err();
        assert!(err.to_string().contains("empty conversation"), "{err}");
    }

    #[test]
    fn bad_strftime_format_is_an_error() {
        let err = render("{{ strftime_now('%Q') }}", &[ChatMessage::user("x")]).unwrap_err();
        assert!(err.to_string().contains("strftime_now"), "{err}");
    }

    #[test]
    fn generation_tags_are_transparent() {
        let src = "{% for m in messages %}{% generation %}{{ m.content }}{%- endgeneration %}{% endfor %}";
        assert_eq!(render(src, &[ChatMessage::user("a"), ChatMessage::assistant("b")]).unwrap(), "ab");
    }

    #[test]
    fn an_unclosed_tag_is_a_syntax_error_not_a_panic() {
        assert_eq!(strip_generation_tags("{%}"), "{%}");
        assert_eq!(strip_generation_tags("a{%-%}b"), "a{%-%}b");
        assert!(ChatTemplate::new("{%}").is_err());
    }

    #[test]
    fn plain_format_needs_no_template() {
        let opts = ChatOptions { add_generation_prompt: true, ..Default::default() };
        let out = ChatFormat::render_plain(&[ChatMessage::system("s"), ChatMessage::user("u")], &opts).unwrap();
        assert_eq!(out, "system: s\nuser: u\nassistant:");
    }
}
