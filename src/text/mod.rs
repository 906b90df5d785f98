//! Text layer: tokenizer loading, streaming detokenization, chat templates and stop
//! conditions. Needs no MLX; see docs/text.md for the rules each part follows.

mod chat_template;
mod config;
mod detokenizer;
mod pyfmt;
mod stop;
mod stream;
mod tokenizer;
mod tools;
mod vocab;

pub use chat_template::{ChatFormat, ChatMessage, ChatOptions, ChatTemplate, TemplateTokens};
pub use detokenizer::StreamDecoder;
pub use stop::{StopMatch, StopStrings};
pub use stream::{StreamEnd, StreamStep, TextStream};
pub use tokenizer::{SpecialTokens, Tokenizer};
pub use tools::{parse_python_call, ToolCall, ToolCallParser, ToolChoice, ToolFormat, ToolStep};
pub use vocab::TokenBytes;
