//! Classification: the next token after each of N prompts (prefill only).

use super::handles;
use super::metrics::{check_batch_metrics, gm_batch_metrics, write_batch_metrics};
use super::model::gm_model;
use super::options::{self, gm_classify_options};
use super::{c_slice, c_strs, cstring, guard, guard_status, invalid, read_opts, write_sized, SizedStruct};
use crate::engine::ClassifyResult;
use crate::Result;
use std::ffi::{c_char, c_void, CString};

/// The answers of `gm_classify`, as parallel arrays of `n` entries (one per
/// prompt, in the order given). The caller owns the struct (set
/// `struct_size = sizeof(gm_classify_result)` before the call); the arrays
/// and strings are owned by the library until `gm_classify_result_free`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct gm_classify_result {
    pub struct_size: usize,
    pub n: usize,
    /// The arg-max next token (over the labels' first tokens when labels are given).
    pub tokens: *const u32,
    /// Each answer token's text (NUL-terminated UTF-8; empty without a tokenizer).
    pub texts: *const *const c_char,
    /// Each answer's log-probability over the vocabulary; NULL unless
    /// `gm_classify_options.logprobs`.
    pub logprobs: *const f32,
    /// With labels: the index of the most probable label for each prompt;
    /// NULL without labels.
    pub labels: *const i32,
    /// The number of labels (0 without).
    pub n_labels: usize,
    /// With labels: `n * n_labels` probabilities, row by row, each row summing to 1.
    pub label_probs: *const f32,
    /// With `gm_classify_options.logits`: the vocabulary size, and `n * n_logits`
    /// float32 logits row by row; else 0 and NULL.
    pub n_logits: usize,
    pub logits: *const f32,
    /// Internal; NULL after `gm_classify_result_free`.
    pub owner: *mut c_void,
}

impl SizedStruct for gm_classify_result {
    const NAME: &'static str = "gm_classify_result";
}

const OWNER: &str = "gm_classify_result";

#[derive(Default)]
struct Owner {
    tokens: Vec<u32>,
    _strings: Vec<CString>,
    texts: Vec<*const c_char>,
    logprobs: Vec<f32>,
    labels: Vec<i32>,
    label_probs: Vec<f32>,
    logits: Vec<f32>,
}

fn empty() -> gm_classify_result {
    gm_classify_result {
        struct_size: 0,
        n: 0,
        tokens: std::ptr::null(),
        texts: std::ptr::null(),
        logprobs: std::ptr::null(),
        labels: std::ptr::null(),
        n_labels: 0,
        label_probs: std::ptr::null(),
        n_logits: 0,
        logits: std::ptr::null(),
        owner: std::ptr::null_mut(),
    }
}

fn ptr_or_null<T>(v: &[T], present: bool) -> *const T {
    if present && !v.is_empty() {
        v.as_ptr()
    } else {
        std::ptr::null()
    }
}

fn write_result(out: *mut gm_classify_result, results: Vec<ClassifyResult>, label_names: Option<&[String]>, logprobs: bool, logits: bool) -> Result<()> {
    let n = results.len();
    let n_labels = label_names.map_or(0, |l| l.len());
    let mut o = Owner::default();
    let mut n_logits = 0;
    for r in &results {
        o.tokens.push(r.token);
        let c = cstring(&r.text);
        o.texts.push(c.as_ptr());
        o._strings.push(c);
        o.logprobs.push(r.logprob.unwrap_or(f32::NAN));
        if let (Some(names), Some(label)) = (label_names, &r.label) {
            o.labels.push(names.iter().position(|l| l == label).map_or(-1, |i| i as i32));
        }
        if let Some(p) = &r.label_probs {
            o.label_probs.extend_from_slice(p);
        }
        if let Some(l) = &r.logits {
            n_logits = l.len();
            o.logits.extend_from_slice(l);
        }
    }
    let o = Box::new(o);
    let r = gm_classify_result {
        struct_size: 0,
        n,
        tokens: ptr_or_null(&o.tokens, true),
        texts: ptr_or_null(&o.texts, true),
        logprobs: ptr_or_null(&o.logprobs, logprobs),
        labels: ptr_or_null(&o.labels, n_labels > 0),
        n_labels,
        label_probs: ptr_or_null(&o.label_probs, n_labels > 0),
        n_logits: if logits { n_logits } else { 0 },
        logits: ptr_or_null(&o.logits, logits),
        owner: std::ptr::null_mut(),
    };
    let owner = handles::register_owner(o, OWNER);
    write_sized(out, "out", gm_classify_result { owner, ..r })
}

/// Classifies `n` text prompts by their next token, in batched prefills (no
/// decode): the go-i18n workload. Prompts are encoded with the model's
/// tokenizer (special tokens added as it declares).
///
/// `prompts` (n NUL-terminated UTF-8 strings) and `opts` (NULL = defaults)
/// are read during the call only. On success returns 0, fills `*out` (which
/// must then be released with `gm_classify_result_free`) and, when `metrics`
/// is not NULL, `*metrics` (caller-owned, `struct_size` set). On error
/// returns -1 (see `gm_last_error`) and leaves `*out` empty (safe to free)
/// when its `struct_size` was valid. Blocks until done; any thread (calls on
/// one model are served one after another by its engine thread). Not
/// cancellable.
#[no_mangle]
pub extern "C" fn gm_classify(
    model: *mut gm_model,
    prompts: *const *const c_char,
    n: usize,
    opts: *const gm_classify_options,
    out: *mut gm_classify_result,
    metrics: *mut gm_batch_metrics,
) -> i32 {
    guard_status(|| {
        write_sized(out, "out", empty())?;
        check_batch_metrics(metrics)?;
        let m = handles::get(model)?;
        let prompts = c_strs(prompts, n, "prompts")?;
        let o = options::classify_settings(opts)?;
        let (results, bm) = m.engine()?.classify(&prompts, &o)?;
        write_result(out, results, o.labels.as_deref(), o.logprobs, o.return_logits)?;
        write_batch_metrics(metrics, &bm)
    })
}

/// Like `gm_classify` with prompts given as token ids: prompt `i` is
/// `prompts[i][0 .. lens[i]]`. Works for models without a tokenizer (then
/// `texts` are empty). Labels (`gm_classify_options.labels`) need a tokenizer.
#[no_mangle]
pub extern "C" fn gm_classify_tokens(
    model: *mut gm_model,
    prompts: *const *const u32,
    lens: *const usize,
    n: usize,
    opts: *const gm_classify_options,
    out: *mut gm_classify_result,
    metrics: *mut gm_batch_metrics,
) -> i32 {
    guard_status(|| {
        write_sized(out, "out", empty())?;
        check_batch_metrics(metrics)?;
        let m = handles::get(model)?;
        let prompts = token_prompts(prompts, lens, n)?;
        let o = options::classify_settings(opts)?;
        if o.labels.is_some() {
            return Err(invalid("gm_classify_tokens does not take labels (use gm_classify with text prompts)"));
        }
        let (results, bm) = m.engine()?.classify_tokens(prompts, None, &o)?;
        write_result(out, results, None, o.logprobs, o.return_logits)?;
        write_batch_metrics(metrics, &bm)
    })
}

/// Reads `n` token-id prompts given as pointers and lengths.
pub(crate) fn token_prompts(prompts: *const *const u32, lens: *const usize, n: usize) -> Result<Vec<Vec<u32>>> {
    let ptrs = c_slice(prompts, n, "prompts")?;
    let lens = c_slice(lens, n, "lens")?;
    ptrs.iter().zip(lens).enumerate().map(|(i, (&p, &l))| Ok(c_slice(p, l, &format!("prompts[{i}]"))?.to_vec())).collect()
}

/// Frees the arrays of a `gm_classify` result and empties `*result`, so a
/// second call is a no-op. NULL and an empty result are no-ops; freeing a
/// copy of an already freed result is detected where possible (reported by
/// `gm_last_error`).
#[no_mangle]
pub extern "C" fn gm_classify_result_free(result: *mut gm_classify_result) {
    guard((), || {
        if result.is_null() {
            return Ok(());
        }
        read_opts(result)?;
        let owner = unsafe { (*result).owner };
        if !owner.is_null() && handles::take_owner::<Owner>(owner, OWNER).is_none() {
            return Err(invalid("gm_classify_result was already freed"));
        }
        write_sized(result, "result", empty())
    })
}

/// Classifies `n` text prompts by generating one of `n_labels` labels under a
/// choice constraint (`{"choice": labels}`; rows of one batch, greedy unless
/// `opts` samples): unlike `gm_classify`, labels may share first tokens and
/// are chosen whole. Writes each prompt's label index to `out[0 .. n]`
/// (caller-owned) and, when not NULL, `*metrics`. `opts` (NULL = defaults)
/// must not carry a constraint or tools. Returns 0, or -1 (see
/// `gm_last_error`). Blocks until done.
#[no_mangle]
pub extern "C" fn gm_classify_choice(
    model: *mut gm_model,
    prompts: *const *const c_char,
    n: usize,
    labels: *const *const c_char,
    n_labels: usize,
    opts: *const super::options::gm_generate_options,
    out: *mut i32,
    metrics: *mut gm_batch_metrics,
) -> i32 {
    guard_status(|| {
        check_batch_metrics(metrics)?;
        let m = handles::get(model)?;
        let prompts = c_strs(prompts, n, "prompts")?;
        let labels: Vec<String> = c_strs(labels, n_labels, "labels")?.into_iter().map(String::from).collect();
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        let s = options::generate_settings(opts)?;
        s.without_tools("gm_classify_choice")?;
        let (picks, bm) = m.engine()?.classify_choice(&prompts, &labels, &s.opts)?;
        let out = unsafe { std::slice::from_raw_parts_mut(out, picks.len()) };
        for (o, p) in out.iter_mut().zip(picks) {
            *o = p as i32;
        }
        write_batch_metrics(metrics, &bm)
    })
}
