//! Chat with messages as JSON: the entry points for conversations `gm_message`
//! cannot carry (an assistant's `tool_calls`, `tool` results with their
//! `tool_call_id`), and the rendered prompt for checking a template.

use super::generation::{chat_start, gm_generation, gm_session, session_chat_start};
use super::model::gm_model;
use super::options::{self, gm_generate_options};
use super::{guard, handles, invalid};
use crate::text::{ChatFormat, ChatMessage};
use std::ffi::c_char;

/// Like `gm_chat_start` with the conversation as a NUL-terminated JSON array
/// of message objects in OpenAI's shape, each passed to the chat template as
/// it is: `{"role": "user", "content": "..."}`, an assistant's
/// `{"role": "assistant", "content": "", "tool_calls": [{"id": "call_1",
/// "type": "function", "function": {"name": "f", "arguments": {...}}}]}` (the
/// JSON `gm_token.tool_calls` hands out) and a tool's result
/// `{"role": "tool", "tool_call_id": "call_1", "name": "f", "content": "..."}`.
/// `messages_json` and `opts` are read during the call only. Returns a new
/// generation owned by the caller, or NULL on error (see `gm_last_error`).
#[no_mangle]
pub extern "C" fn gm_chat_start_json(model: *mut gm_model, messages_json: *const c_char, opts: *const gm_generate_options) -> *mut gm_generation {
    guard(std::ptr::null_mut(), || {
        let m = handles::get(model)?;
        let msgs = options::messages_json(messages_json)?;
        let s = options::generate_settings(opts)?;
        chat_start(&m, &msgs, &s)
    })
}

/// Like `gm_session_chat_start` with the conversation as JSON (see
/// `gm_chat_start_json`). NULL on error (see `gm_last_error`).
#[no_mangle]
pub extern "C" fn gm_session_chat_start_json(session: *mut gm_session, messages_json: *const c_char, opts: *const gm_generate_options) -> *mut gm_generation {
    guard(std::ptr::null_mut(), || {
        let ss = handles::get(session)?;
        let msgs = options::messages_json(messages_json)?;
        let s = options::generate_settings(opts)?;
        session_chat_start(&ss, &msgs, &s)
    })
}

/// Renders the prompt `gm_chat_start_json` would start from (the model's chat
/// template with `opts->tools`, `tool_choice` and `chat_template_args`, ending
/// with the assistant's header), snprintf-style: writes at most `cap` bytes
/// including a NUL into `buf` (which may be NULL when `cap` is 0) and returns
/// the rendered length in bytes without the NUL (call again with a larger
/// buffer when it is `>= cap`); -1 on error (see `gm_last_error`).
#[no_mangle]
pub extern "C" fn gm_chat_render_json(
    model: *mut gm_model,
    messages_json: *const c_char,
    opts: *const gm_generate_options,
    buf: *mut c_char,
    cap: usize,
) -> i64 {
    guard(-1, || {
        let m = handles::get(model)?;
        let msgs: Vec<ChatMessage> = options::messages_json(messages_json)?;
        let s = options::generate_settings(opts)?;
        let engine = m.engine()?;
        let (chat, _, _) = super::generation::chat_request(engine, &s)?;
        let tok = engine.tokenizer().ok_or_else(|| invalid("the model has no tokenizer (no chat template to render)"))?;
        let text = tok.apply_chat_template(&msgs, &chat, &ChatFormat::Model)?;
        if cap > 0 {
            if buf.is_null() {
                return Err(invalid(format!("buf is NULL but cap is {cap}")));
            }
            let n = text.len().min(cap - 1);
            unsafe {
                std::ptr::copy_nonoverlapping(text.as_ptr(), buf as *mut u8, n);
                *buf.add(n) = 0;
            }
        }
        Ok(text.len() as i64)
    })
}
