//! Models: load, close, info; and finding models on disk.

use super::handles::{self, Handle};
use super::options::{self, gm_load_options};
use super::{c_str, cstring, guard, guard_status, invalid, write_sized, SizedStruct};
use crate::engine::Engine;
use crate::Result;
use std::ffi::{c_char, c_void, CString};
use std::path::Path;
use std::sync::Arc;

/// A model handle's state: the engine (which owns the model's lifecycle) and
/// the strings `gm_model_info` hands out.
pub(crate) struct ModelState {
    pub engine: Engine,
    architecture: CString,
    dtype: CString,
    device: CString,
}

impl ModelState {
    /// The engine, unless the model is closed.
    pub(crate) fn engine(&self) -> Result<&Engine> {
        if self.engine.is_closed() {
            return Err(crate::Error::Engine("the model is closed".into()));
        }
        Ok(&self.engine)
    }
}

/// A loaded model (opaque). Created by `gm_model_load`, freed by `gm_model_close`.
pub struct gm_model {
    state: Arc<ModelState>,
}

impl Handle for gm_model {
    const KIND: &'static str = "gm_model";
    type State = ModelState;
    fn new(state: Arc<ModelState>) -> Self {
        gm_model { state }
    }
    fn state(&self) -> &Arc<ModelState> {
        &self.state
    }
}

/// Loads a model: a directory (config.json + *.safetensors, tokenizer files
/// optional) or a `.gguf` file, onto its own engine thread.
///
/// `path` must be a NUL-terminated UTF-8 string; `opts` may be NULL for the
/// defaults. Both are read during the call only.
///
/// Returns a new model handle owned by the caller, to be released with
/// `gm_model_close`; NULL on error (see `gm_last_error`: bad options, a
/// missing or malformed model, an unavailable device, ...).
///
/// Threads: a model may be used from any number of threads at once; requests
/// from all threads are served by its engine thread, generations
/// interleaving step by step.
#[no_mangle]
pub extern "C" fn gm_model_load(path: *const c_char, opts: *const gm_load_options) -> *mut gm_model {
    guard(std::ptr::null_mut(), || {
        let path = c_str(path, "path")?;
        let settings = options::load_settings(opts)?;
        settings.apply_process_wide()?;
        let engine = Engine::load(Path::new(path), &settings.engine)?;
        let info = engine.info();
        let state = ModelState { architecture: cstring(&info.architecture), dtype: cstring(&info.dtype), device: cstring(engine.device().name()), engine };
        Ok(handles::register::<gm_model>(Arc::new(state)))
    })
}

/// Closes a model: cancels its running generations, waits for a running
/// classify or batch call to end, stops its engine thread, frees the weights
/// and frees the handle.
///
/// Generations of this model that are still alive stay valid handles: they
/// hand out the tokens already made, then `gm_generate_next` returns -1 with
/// "the model was closed"; free them with `gm_generation_free` as usual.
/// Chat sessions likewise stay valid handles whose use fails.
///
/// NULL is a no-op. Closing a handle twice (or a pointer that is not a live
/// model) is detected where possible and reported through `gm_last_error`
/// without touching memory. The handle must not be used after this call.
#[no_mangle]
pub extern "C" fn gm_model_close(model: *mut gm_model) {
    guard((), || {
        if model.is_null() {
            return Ok(());
        }
        handles::take(model)?.engine.close();
        Ok(())
    })
}

/// Empties the model's prefix cache (`gm_load_options.prefix_cache_bytes`);
/// returns the bytes it held, or -1 (see `gm_last_error`) for a bad handle.
#[no_mangle]
pub extern "C" fn gm_model_clear_prefix_cache(model: *mut gm_model) -> i64 {
    guard(-1, || Ok(handles::get(model)?.engine()?.clear_prefix_cache()? as i64))
}

/// What `gm_model_info` reports. The caller owns the struct and sets
/// `struct_size = sizeof(gm_info)`; the strings in it are owned by the
/// model and stay valid until `gm_model_close`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct gm_info {
    pub struct_size: usize,
    /// "llama", "qwen2", "qwen3", "gemma3_text", "mistral", ...
    pub architecture: *const c_char,
    pub vocab_size: usize,
    pub num_layers: usize,
    pub hidden_size: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Longest sequence a request may reach (the load option, else the model's).
    pub context_length: usize,
    /// Sliding-window size of local-attention layers; 0 = none.
    pub sliding_window: usize,
    /// Compute dtype name ("float32", "bfloat16", ...).
    pub dtype: *const c_char,
    /// Quantisation bits and group size; 0 = not quantised.
    pub quant_bits: i32,
    pub quant_group_size: i32,
    pub parameters: u64,
    pub weight_bytes: u64,
    /// "cpu" or "gpu".
    pub device: *const c_char,
    /// Whether the model has a tokenizer (text prompts, chat and classify need one).
    pub has_tokenizer: bool,
}

impl SizedStruct for gm_info {
    const NAME: &'static str = "gm_info";
}

/// Describes a model. Returns 0 and fills `*out`; -1 (see `gm_last_error`)
/// when `model` is not a live model or `out` is NULL or its `struct_size` is
/// too small. Any thread.
#[no_mangle]
pub extern "C" fn gm_model_info(model: *const gm_model, out: *mut gm_info) -> i32 {
    guard_status(|| {
        let s = handles::get(model)?;
        let i = s.engine.info();
        write_sized(
            out,
            "out",
            gm_info {
                struct_size: 0,
                architecture: s.architecture.as_ptr(),
                vocab_size: i.vocab_size,
                num_layers: i.num_layers,
                hidden_size: i.hidden_size,
                num_heads: i.num_heads,
                num_kv_heads: i.num_kv_heads,
                head_dim: i.head_dim,
                context_length: s.engine.context_length(),
                sliding_window: i.sliding_window.unwrap_or(0),
                dtype: s.dtype.as_ptr(),
                quant_bits: i.quant_bits.unwrap_or(0),
                quant_group_size: i.quant_group_size.unwrap_or(0),
                parameters: i.parameters,
                weight_bytes: i.weight_bytes,
                device: s.device.as_ptr(),
                has_tokenizer: s.engine.tokenizer().is_some(),
            },
        )
    })
}

/// Models found by `gm_discover`, as parallel arrays of `n` entries. The
/// caller owns the struct (set `struct_size = sizeof(gm_discover_result)`);
/// the arrays and strings are owned by the library until
/// `gm_discover_result_free`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct gm_discover_result {
    pub struct_size: usize,
    pub n: usize,
    /// Model directories.
    pub paths: *const *const c_char,
    pub architectures: *const *const c_char,
    /// 0 when not quantised (or a GGUF file).
    pub quant_bits: *const i32,
    pub quant_group_sizes: *const i32,
    /// Internal; NULL after `gm_discover_result_free`.
    pub owner: *mut c_void,
    /// "safetensors" (a model directory) or "gguf" (a file).
    pub formats: *const *const c_char,
    /// Whether gomlx loads the architecture (GGUF files of others are listed too).
    pub supported: *const bool,
    /// Bytes of the weight files.
    pub size_bytes: *const u64,
}

impl SizedStruct for gm_discover_result {
    const NAME: &'static str = "gm_discover_result";
    // The first release ended after `owner`.
    const MIN_SIZE: usize = std::mem::offset_of!(gm_discover_result, formats);
}

struct DiscoverOwner {
    _strings: Vec<CString>,
    paths: Vec<*const c_char>,
    archs: Vec<*const c_char>,
    formats: Vec<*const c_char>,
    bits: Vec<i32>,
    groups: Vec<i32>,
    supported: Vec<bool>,
    sizes: Vec<u64>,
}

const DISCOVER_OWNER: &str = "gm_discover_result";

fn empty_discover() -> gm_discover_result {
    gm_discover_result {
        struct_size: 0,
        n: 0,
        paths: std::ptr::null(),
        architectures: std::ptr::null(),
        quant_bits: std::ptr::null(),
        quant_group_sizes: std::ptr::null(),
        owner: std::ptr::null_mut(),
        formats: std::ptr::null(),
        supported: std::ptr::null(),
        size_bytes: std::ptr::null(),
    }
}

/// Finds models at or below `dir`, sorted by path: directories (config.json
/// of a supported architecture plus safetensors weights) and `.gguf` files
/// (`supported` says whether gomlx loads their architecture), as `gomlx
/// discover` lists them. Returns 0 and fills
/// `*out` (possibly with n = 0); -1 (see `gm_last_error`) when `dir` is NULL,
/// not UTF-8 or not a directory, or `out` is bad; `*out` is then left empty
/// (safe to pass to `gm_discover_result_free`) when its struct_size was valid.
#[no_mangle]
pub extern "C" fn gm_discover(dir: *const c_char, out: *mut gm_discover_result) -> i32 {
    guard_status(|| {
        write_sized(out, "out", empty_discover())?;
        let dir = c_str(dir, "dir")?;
        let found = crate::models::discover(Path::new(dir))?;
        let mut strings = Vec::new();
        let mut paths = Vec::new();
        let mut archs = Vec::new();
        let mut formats = Vec::new();
        for m in &found {
            let p = cstring(&m.path.to_string_lossy());
            let a = cstring(&m.architecture);
            let f = cstring(m.format);
            paths.push(p.as_ptr());
            archs.push(a.as_ptr());
            formats.push(f.as_ptr());
            strings.extend([p, a, f]);
        }
        let owner = Box::new(DiscoverOwner {
            _strings: strings,
            paths,
            archs,
            formats,
            bits: found.iter().map(|m| m.quant_bits.unwrap_or(0)).collect(),
            groups: found.iter().map(|m| m.quant_group_size.unwrap_or(0)).collect(),
            supported: found.iter().map(|m| m.supported).collect(),
            sizes: found.iter().map(|m| m.size_bytes).collect(),
        });
        let r = gm_discover_result {
            struct_size: 0,
            n: found.len(),
            paths: owner.paths.as_ptr(),
            architectures: owner.archs.as_ptr(),
            quant_bits: owner.bits.as_ptr(),
            quant_group_sizes: owner.groups.as_ptr(),
            owner: std::ptr::null_mut(),
            formats: owner.formats.as_ptr(),
            supported: owner.supported.as_ptr(),
            size_bytes: owner.sizes.as_ptr(),
        };
        let owner = handles::register_owner(owner, DISCOVER_OWNER);
        write_sized(out, "out", gm_discover_result { owner, ..r })
    })
}

/// Frees the arrays of a `gm_discover` result and empties `*result` (so a
/// second call is a no-op). NULL, an empty result and an owner that is not
/// live (a copy freed twice) are no-ops (the last reported by `gm_last_error`).
#[no_mangle]
pub extern "C" fn gm_discover_result_free(result: *mut gm_discover_result) {
    guard((), || {
        if result.is_null() {
            return Ok(());
        }
        write_sized(result, "result", empty_discover_checked(result)?)
    })
}

fn empty_discover_checked(result: *mut gm_discover_result) -> Result<gm_discover_result> {
    super::read_opts(result)?;
    let owner = unsafe { (*result).owner };
    if !owner.is_null() && handles::take_owner::<DiscoverOwner>(owner, DISCOVER_OWNER).is_none() {
        return Err(invalid("gm_discover_result was already freed"));
    }
    Ok(empty_discover())
}
