//! Reads the tokenizer-related files of a Hugging Face model directory:
//! tokenizer_config.json, generation_config.json, config.json and the chat template
//! files. Only parsing lives here; `Tokenizer` turns the result into ids.

use std::path::Path;

use serde_json::Value as Json;

use crate::{Error, Result};

/// An added token declared in tokenizer_config.json's `added_tokens_decoder`.
#[derive(Debug, Clone)]
pub(crate) struct DeclaredToken {
    pub id: u32,
    pub content: String,
    pub special: bool,
}

/// Everything a model directory says about tokenization beyond tokenizer.json.
#[derive(Debug, Default)]
pub(crate) struct DirConfig {
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
    pub unk_token: Option<String>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub declared_tokens: Vec<DeclaredToken>,
    /// EOS ids from generation_config.json then config.json, in file order.
    pub extra_eos_ids: Vec<u32>,
    /// Named chat templates; the one named "default" is used unless another is asked for.
    pub templates: Vec<(String, String)>,
}

pub(crate) fn read_json(path: &Path) -> Result<Option<Json>> {
    // Regular files only (a FIFO would block), within a size limit.
    let Some(text) = crate::files::read_text_if_exists(path, crate::files::MAX_TEXT_FILE)? else { return Ok(None) };
    serde_json::from_str(&text).map(Some).map_err(|e| Error::Tokenizer(format!("{}: invalid JSON: {e}", path.display())))
}

fn read_text(path: &Path) -> Result<Option<String>> {
    crate::files::read_text_if_exists(path, crate::files::MAX_TEXT_FILE)
}

/// A special token is written either as a string or as an AddedToken-style object
/// (`{"content": "<s>", "__type": "AddedToken", ...}`); `null` means none.
fn token_string(cfg: &Json, key: &str, file: &str) -> Result<Option<String>> {
    match cfg.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(Json::Object(o)) => match o.get("content") {
            Some(Json::String(s)) => Ok(Some(s.clone())),
            _ => Err(Error::Tokenizer(format!("{file}: `{key}` object has no string `content`"))),
        },
        Some(other) => Err(Error::Tokenizer(format!("{file}: `{key}` must be a string or an object with `content`, got {other}"))),
    }
}

fn opt_bool(cfg: &Json, key: &str, file: &str) -> Result<Option<bool>> {
    match cfg.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(Error::Tokenizer(format!("{file}: `{key}` must be a boolean, got {other}"))),
    }
}

/// `eos_token_id` is a number or a list of numbers (or absent / null).
pub(crate) fn id_list(value: Option<&Json>, what: &str) -> Result<Vec<u32>> {
    let to_id = |v: &Json| v.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| Error::Tokenizer(format!("{what}: expected a token id, got {v}")));
    match value {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::Array(items)) => items.iter().map(to_id).collect(),
        Some(v) => Ok(vec![to_id(v)?]),
    }
}

/// `chat_template` is a string or a list of `{name, template}` objects.
fn templates_from(value: &Json, file: &str) -> Result<Vec<(String, String)>> {
    match value {
        Json::Null => Ok(Vec::new()),
        Json::String(s) => Ok(vec![("default".to_string(), s.clone())]),
        Json::Array(items) => items
            .iter()
            .map(|item| {
                let name = item.get("name").and_then(Json::as_str);
                let template = item.get("template").and_then(Json::as_str);
                match (name, template) {
                    (Some(n), Some(t)) => Ok((n.to_string(), t.to_string())),
                    _ => Err(Error::Tokenizer(format!("{file}: each chat_template entry needs string `name` and `template`"))),
                }
            })
            .collect(),
        other => Err(Error::Tokenizer(format!("{file}: `chat_template` must be a string or a list, got {}", kind_name(other)))),
    }
}

fn kind_name(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "an object",
    }
}

impl DirConfig {
    pub(crate) fn load(dir: &Path) -> Result<DirConfig> {
        let mut out = DirConfig::default();
        const TC: &str = "tokenizer_config.json";
        if let Some(cfg) = read_json(&dir.join(TC))? {
            out.bos_token = token_string(&cfg, "bos_token", TC)?;
            out.eos_token = token_string(&cfg, "eos_token", TC)?;
            out.pad_token = token_string(&cfg, "pad_token", TC)?;
            out.unk_token = token_string(&cfg, "unk_token", TC)?;
            out.add_bos = opt_bool(&cfg, "add_bos_token", TC)?;
            out.add_eos = opt_bool(&cfg, "add_eos_token", TC)?;
            if let Some(decl) = cfg.get("added_tokens_decoder").and_then(Json::as_object) {
                for (id, tok) in decl {
                    let id: u32 = id.parse().map_err(|_| Error::Tokenizer(format!("{TC}: added_tokens_decoder key `{id}` is not a token id")))?;
                    let content =
                        tok.get("content").and_then(Json::as_str).ok_or_else(|| Error::Tokenizer(format!("{TC}: added token {id} has no string `content`")))?;
                    let special = tok.get("special").and_then(Json::as_bool).unwrap_or(false);
                    out.declared_tokens.push(DeclaredToken { id, content: content.to_string(), special });
                }
                out.declared_tokens.sort_by_key(|t| t.id);
            }
            if let Some(t) = cfg.get("chat_template") {
                out.templates = templates_from(t, TC)?;
            }
        }

        // Newer exports ship the template beside the config; those files win, as in transformers.
        const CTJ: &str = "chat_template.json";
        if let Some(cfg) = read_json(&dir.join(CTJ))? {
            let t = cfg.get("chat_template").ok_or_else(|| Error::Tokenizer(format!("{CTJ}: no `chat_template` key")))?;
            out.templates = templates_from(t, CTJ)?;
        }
        if let Some(source) = read_text(&dir.join("chat_template.jinja"))? {
            out.templates.retain(|(name, _)| name != "default");
            out.templates.insert(0, ("default".to_string(), source));
        }
        let extra_dir = dir.join("additional_chat_templates");
        if extra_dir.is_dir() {
            let entries = std::fs::read_dir(&extra_dir).map_err(|e| Error::io(&extra_dir, e))?;
            let mut named = Vec::new();
            for entry in entries {
                let path = entry.map_err(|e| Error::io(&extra_dir, e))?.path();
                if path.extension().and_then(|e| e.to_str()) != Some("jinja") {
                    continue;
                }
                let Some(name) = path.file_stem().and_then(|s| s.to_str()) else { continue };
                let source = crate::files::read_text(&path, crate::files::MAX_TEXT_FILE)?;
                named.push((name.to_string(), source));
            }
            named.sort();
            for (name, source) in named {
                out.templates.retain(|(n, _)| *n != name);
                out.templates.push((name, source));
            }
        }

        for file in ["generation_config.json", "config.json"] {
            if let Some(cfg) = read_json(&dir.join(file))? {
                let what = format!("{file}: eos_token_id");
                out.extra_eos_ids.extend(id_list(cfg.get("eos_token_id"), &what)?);
                // Multimodal configs (Gemma 3) keep the text model's ids one level down.
                if let Some(text) = cfg.get("text_config") {
                    out.extra_eos_ids.extend(id_list(text.get("eos_token_id"), &what)?);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn token_strings_accept_both_forms() {
        let cfg = json!({"bos_token": "<s>", "eos_token": {"content": "</s>", "lstrip": false}, "pad_token": null});
        assert_eq!(token_string(&cfg, "bos_token", "t").unwrap().as_deref(), Some("<s>"));
        assert_eq!(token_string(&cfg, "eos_token", "t").unwrap().as_deref(), Some("</s>"));
        assert_eq!(token_string(&cfg, "pad_token", "t").unwrap(), None);
        assert_eq!(token_string(&cfg, "unk_token", "t").unwrap(), None);
        let bad = json!({"bos_token": 3});
        let err = token_string(&bad, "bos_token", "t").unwrap_err().to_string();
        assert!(err.contains("bos_token"), "{err}");
    }

    #[test]
    fn eos_id_lists() {
        assert_eq!(id_list(Some(&json!(7)), "x").unwrap(), vec![7]);
        assert_eq!(id_list(Some(&json!([1, 106])), "x").unwrap(), vec![1, 106]);
        assert!(id_list(None, "x").unwrap().is_empty());
        assert!(id_list(Some(&json!("2")), "x").is_err());
        assert!(id_list(Some(&json!(-1)), "x").is_err());
    }

    #[test]
    fn template_lists() {
        let t = json!([{"name": "default", "template": "a"}, {"name": "tool_use", "template": "b"}]);
        let v = templates_from(&t, "f").unwrap();
        assert_eq!(v, vec![("default".into(), "a".into()), ("tool_use".into(), "b".into())]);
        assert!(templates_from(&json!([{"name": "x"}]), "f").is_err());
        assert!(templates_from(&json!(3), "f").is_err());
    }
}
