//! Reading request bodies field by field, so that every bad value is a 400 that
//! names its field (serde's derive errors name a line and column instead).

use super::errors::{ApiError, ApiResult};
use serde_json::{Map, Value};

/// Parses a body that must be one JSON object.
pub fn object(body: &[u8]) -> ApiResult<Map<String, Value>> {
    if body.is_empty() {
        return Err(ApiError::field("body", "the request body is empty (expected a JSON object)"));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(ApiError::field("body", format!("expected a JSON object, got {}", type_name(&other)))),
        Err(e) => Err(ApiError::field("body", format!("malformed JSON: {e}"))),
    }
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Typed access to the fields of one JSON object; `prefix` names nested objects
/// in errors (`options.temperature`).
pub struct Fields<'a> {
    pub obj: &'a Map<String, Value>,
    pub prefix: &'a str,
}

impl<'a> Fields<'a> {
    pub fn new(obj: &'a Map<String, Value>) -> Fields<'a> {
        Fields { obj, prefix: "" }
    }

    pub fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The value, None when absent or null (OpenAI clients send nulls for unset fields).
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn wrong(&self, key: &str, want: &str, v: &Value) -> ApiError {
        ApiError::field(&self.name(key), format!("expected {want}, got {}", type_name(v)))
    }

    pub fn string(&self, key: &str) -> ApiResult<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong(key, "a string", v)),
        }
    }

    pub fn bool(&self, key: &str) -> ApiResult<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.wrong(key, "a boolean", v)),
        }
    }

    /// A number within [lo, hi].
    pub fn number(&self, key: &str, lo: f64, hi: f64) -> ApiResult<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                if !(lo..=hi).contains(&x) {
                    return Err(ApiError::field(&self.name(key), format!("must be between {lo} and {hi} (got {n})")));
                }
                Ok(Some(x))
            }
            Some(v) => Err(self.wrong(key, "a number", v)),
        }
    }

    /// An integer within [lo, hi] (a float with no fraction counts, as JSON numbers go).
    pub fn integer(&self, key: &str, lo: i64, hi: i64) -> ApiResult<Option<i64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                let x = n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18).map(|f| f as i64));
                match x {
                    Some(x) if (lo..=hi).contains(&x) => Ok(Some(x)),
                    Some(_) => Err(ApiError::field(&self.name(key), format!("must be between {lo} and {hi} (got {n})"))),
                    None => Err(ApiError::field(&self.name(key), format!("expected an integer, got {n}"))),
                }
            }
            Some(v) => Err(self.wrong(key, "an integer", v)),
        }
    }

    pub fn object(&self, key: &str) -> ApiResult<Option<&'a Map<String, Value>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(v) => Err(self.wrong(key, "an object", v)),
        }
    }

    pub fn array(&self, key: &str) -> ApiResult<Option<&'a Vec<Value>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(self.wrong(key, "an array", v)),
        }
    }

    /// `stop`: one string or an array of at most `max` strings; empty strings are refused.
    pub fn stop(&self, key: &str, max: usize) -> ApiResult<Vec<String>> {
        let list: Vec<String> = match self.get(key) {
            None => return Ok(Vec::new()),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => {
                let mut out = Vec::new();
                for (i, v) in a.iter().enumerate() {
                    match v {
                        Value::String(s) => out.push(s.clone()),
                        other => return Err(ApiError::field(&format!("{}[{i}]", self.name(key)), format!("expected a string, got {}", type_name(other)))),
                    }
                }
                out
            }
            Some(v) => return Err(self.wrong(key, "a string or an array of strings", v)),
        };
        if list.len() > max {
            return Err(ApiError::field(&self.name(key), format!("at most {max} stop strings (got {})", list.len())));
        }
        if list.iter().any(|s| s.is_empty()) {
            return Err(ApiError::field(&self.name(key), "a stop string is empty"));
        }
        Ok(list)
    }
}

/// Constant-time equality of two secrets: the time depends on their lengths only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() != b.len()) as u8;
    let n = a.len().max(b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_secrets() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn fields_name_the_bad_field() {
        let m = object(br#"{"temperature": "hot", "n": 1.5, "top_p": 3, "stop": ["a", 1]}"#).unwrap();
        let f = Fields::new(&m);
        assert_eq!(f.number("temperature", 0.0, 2.0).unwrap_err().param.as_deref(), Some("temperature"));
        assert!(f.integer("n", 1, 8).unwrap_err().message.starts_with("n: expected an integer"));
        assert!(f.number("top_p", 0.0, 1.0).unwrap_err().message.contains("between 0 and 1"));
        assert_eq!(f.stop("stop", 4).unwrap_err().param.as_deref(), Some("stop[1]"));
        assert!(object(b"[1]").unwrap_err().message.contains("expected a JSON object"));
        assert!(object(b"{").unwrap_err().message.contains("malformed JSON"));
    }
}
