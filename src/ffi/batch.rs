//! Batch generation: several prompts decoded together.

use super::classify::token_prompts;
use super::handles;
use super::metrics::{check_batch_metrics, finish_code, gm_batch_metrics, write_batch_metrics};
use super::model::gm_model;
use super::options::{self, gm_generate_options};
use super::{c_strs, cstring, guard, guard_status, invalid, read_opts, write_sized, SizedStruct};
use crate::engine::BatchOutput;
use crate::Result;
use std::ffi::{c_char, c_void, CString};

/// The outputs of `gm_batch_generate`, as parallel arrays of `n` entries
/// (one per prompt, in the order given). The caller owns the struct (set
/// `struct_size = sizeof(gm_batch_result)` before the call); the arrays and
/// strings are owned by the library until `gm_batch_result_free`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct gm_batch_result {
    pub struct_size: usize,
    pub n: usize,
    /// Each output's text (NUL-terminated UTF-8; empty without a tokenizer).
    pub texts: *const *const c_char,
    /// Output `i`'s token ids are `tokens[token_offsets[i] .. token_offsets[i+1]]`
    /// (`token_offsets` has n + 1 entries).
    pub tokens: *const u32,
    pub token_offsets: *const usize,
    /// Each output's `GM_FINISH_*`.
    pub finish_reasons: *const i32,
    /// Internal; NULL after `gm_batch_result_free`.
    pub owner: *mut c_void,
}

impl SizedStruct for gm_batch_result {
    const NAME: &'static str = "gm_batch_result";
}

const OWNER: &str = "gm_batch_result";

struct Owner {
    _strings: Vec<CString>,
    texts: Vec<*const c_char>,
    tokens: Vec<u32>,
    offsets: Vec<usize>,
    reasons: Vec<i32>,
}

fn empty() -> gm_batch_result {
    gm_batch_result {
        struct_size: 0,
        n: 0,
        texts: std::ptr::null(),
        tokens: std::ptr::null(),
        token_offsets: std::ptr::null(),
        finish_reasons: std::ptr::null(),
        owner: std::ptr::null_mut(),
    }
}

fn write_result(out: *mut gm_batch_result, outputs: Vec<BatchOutput>) -> Result<()> {
    let mut o = Owner { _strings: Vec::new(), texts: Vec::new(), tokens: Vec::new(), offsets: vec![0], reasons: Vec::new() };
    for r in &outputs {
        let c = cstring(&r.text);
        o.texts.push(c.as_ptr());
        o._strings.push(c);
        o.tokens.extend_from_slice(&r.tokens);
        o.offsets.push(o.tokens.len());
        o.reasons.push(finish_code(r.finish_reason));
    }
    let o = Box::new(o);
    let r = gm_batch_result {
        struct_size: 0,
        n: outputs.len(),
        texts: o.texts.as_ptr(),
        tokens: if o.tokens.is_empty() { std::ptr::null() } else { o.tokens.as_ptr() },
        token_offsets: o.offsets.as_ptr(),
        finish_reasons: o.reasons.as_ptr(),
        owner: std::ptr::null_mut(),
    };
    let owner = handles::register_owner(o, OWNER);
    write_sized(out, "out", gm_batch_result { owner, ..r })
}

/// Generates for `n` text prompts together (left-padded batch; rows leave as
/// they finish). Same options as `gm_generate_start` (NULL = defaults; a
/// sampler seed gives one PRNG for the whole batch).
///
/// `prompts` and `opts` are read during the call only. On success returns
/// 0, fills `*out` (release with `gm_batch_result_free`) and `*metrics` when
/// not NULL. On error returns -1 (see `gm_last_error`), `*out` left empty.
/// Blocks until every row has finished; any thread; not cancellable.
#[no_mangle]
pub extern "C" fn gm_batch_generate(
    model: *mut gm_model,
    prompts: *const *const c_char,
    n: usize,
    opts: *const gm_generate_options,
    out: *mut gm_batch_result,
    metrics: *mut gm_batch_metrics,
) -> i32 {
    guard_status(|| {
        write_sized(out, "out", empty())?;
        check_batch_metrics(metrics)?;
        let m = handles::get(model)?;
        let prompts = c_strs(prompts, n, "prompts")?;
        let s = options::generate_settings(opts)?;
        s.without_tools("gm_batch_generate")?;
        let (outputs, bm) = m.engine()?.batch_generate(&prompts, &s.opts)?;
        write_result(out, outputs)?;
        write_batch_metrics(metrics, &bm)
    })
}

/// Like `gm_batch_generate` with prompts given as token ids: prompt `i` is
/// `prompts[i][0 .. lens[i]]`. Works for models without a tokenizer.
#[no_mangle]
pub extern "C" fn gm_batch_generate_tokens(
    model: *mut gm_model,
    prompts: *const *const u32,
    lens: *const usize,
    n: usize,
    opts: *const gm_generate_options,
    out: *mut gm_batch_result,
    metrics: *mut gm_batch_metrics,
) -> i32 {
    guard_status(|| {
        write_sized(out, "out", empty())?;
        check_batch_metrics(metrics)?;
        let m = handles::get(model)?;
        let prompts = token_prompts(prompts, lens, n)?;
        let s = options::generate_settings(opts)?;
        s.without_tools("gm_batch_generate_tokens")?;
        let (outputs, bm) = m.engine()?.batch_generate_tokens(prompts, &s.opts)?;
        write_result(out, outputs)?;
        write_batch_metrics(metrics, &bm)
    })
}

/// Frees the arrays of a `gm_batch_generate` result and empties `*result`,
/// so a second call is a no-op. NULL and an empty result are no-ops.
#[no_mangle]
pub extern "C" fn gm_batch_result_free(result: *mut gm_batch_result) {
    guard((), || {
        if result.is_null() {
            return Ok(());
        }
        read_opts(result)?;
        let owner = unsafe { (*result).owner };
        if !owner.is_null() && handles::take_owner::<Owner>(owner, OWNER).is_none() {
            return Err(invalid("gm_batch_result was already freed"));
        }
        write_sized(result, "result", empty())
    })
}
