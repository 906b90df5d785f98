//! Request errors: one type, rendered in the error shape of the API that was called
//! (OpenAI's `{"error": {message, type, param, code}}`, Ollama's `{"error": message}`).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Which API's error shape a response uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Ollama,
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The request field at fault (OpenAI's `param`), when one is.
    pub param: Option<String>,
    /// OpenAI's `code`, e.g. `model_not_found`.
    pub code: Option<&'static str>,
    /// Seconds a client should wait before retrying (429/503).
    pub retry_after: Option<u64>,
    pub dialect: Dialect,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), param: None, code: None, retry_after: None, dialect: Dialect::OpenAi }
    }

    /// 400 naming the field.
    pub fn field(param: &str, message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(StatusCode::BAD_REQUEST, format!("{param}: {}", message.into()));
        e.param = Some(param.to_string());
        e
    }

    pub fn code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after = Some(seconds);
        self
    }

    pub fn dialect(mut self, d: Dialect) -> ApiError {
        self.dialect = d;
        self
    }

    /// An engine error: the caller's fault (400) for invalid arguments, else 500.
    pub fn engine(e: crate::Error) -> ApiError {
        match e {
            crate::Error::InvalidArgument(m) => {
                // The sampler's messages start with the field they concern.
                let param = m.split_whitespace().next().filter(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '_')).map(str::to_string);
                let mut e = ApiError::new(StatusCode::BAD_REQUEST, m);
                e.param = param;
                e
            }
            crate::Error::Template(m) => ApiError::field("messages", format!("the chat template failed: {m}")),
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            404 => "not_found_error",
            413 | 400 | 422 => "invalid_request_error",
            429 => "rate_limit_error",
            503 => "overloaded_error",
            _ => "server_error",
        }
    }

    /// The JSON body alone (also sent as a stream's last event).
    pub fn body(&self) -> serde_json::Value {
        match self.dialect {
            Dialect::OpenAi => json!({"error": {"message": self.message, "type": self.kind(), "param": self.param, "code": self.code}}),
            Dialect::Ollama => json!({"error": self.message}),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut().insert("retry-after", HeaderValue::from(s));
        }
        r
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
