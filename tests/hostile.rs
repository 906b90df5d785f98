//! The hostile-input table (issue 25): each class of bad model file, template,
//! tokenizer or option, through the C ABI (the process survives, the call
//! fails with one named error in `gm_last_error`, nothing is printed) and
//! through the `gomlx` command (exit 1, one line on stderr, no backtrace).
//!
//! | class | case |
//! | --- | --- |
//! | allocation sized by a file | config.json `num_hidden_layers` 2^36; GGUF `block_count` 2^36; GGUF array count past the file |
//! | GGUF size arithmetic | tensor dims whose element count × block bytes wraps u64; a zero dimension; a 1-D quantised tensor |
//! | templates | a template that never ends; one that writes gigabytes; close while a slow render runs |
//! | tokenizer panics | a catastrophic pre-tokenizer regex (Oniguruma's retry limit), on the caller's and on encoding threads |
//! | invalid configs | sliding_window 0, rms_norm_eps < 0, rope_theta 0, head_dim odd, llama3 rope factors |
//! | sampling edges | temperature 1e-40 = greedy, top_p 1e-9 keeps the top token, a bias that bans every token |
//! | files and paths | a FIFO named x.gguf or config.json, a symlink loop under discover, an empty path, context_length 1 |

use gomlx::ffi::*;
use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gomlx-hostile-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn last_error() -> String {
    let p = gm_last_error();
    assert!(!p.is_null(), "a failed call left no gm_last_error");
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

/// Loads through the C ABI; the model or the error.
fn load(path: &Path, context_length: usize) -> Result<*mut gm_model, String> {
    let p = c(path.to_str().unwrap());
    let mut o: gm_load_options = unsafe { std::mem::zeroed() };
    o.struct_size = std::mem::size_of::<gm_load_options>();
    o.device = GM_DEVICE_CPU;
    o.context_length = context_length;
    let m = gm_model_load(p.as_ptr(), &o);
    if m.is_null() {
        Err(last_error())
    } else {
        Ok(m)
    }
}

/// A load that must fail; the error must name every one of `needles`.
fn load_fails(path: &Path, needles: &[&str]) -> String {
    let t = Instant::now();
    let e = match load(path, 0) {
        Ok(m) => {
            gm_model_close(m);
            panic!("{} loaded but must not", path.display())
        }
        Err(e) => e,
    };
    for n in needles {
        assert!(e.contains(n), "error {e:?} does not name {n:?}");
    }
    assert!(!e.contains('\n'), "one line: {e:?}");
    assert!(t.elapsed() < Duration::from_secs(20), "took {:?}", t.elapsed());
    e
}

// ---------------------------------------------------------------------------
// Model directories

/// llama_tied's weights, the character tokenizer (102 tokens) and `config`
/// edits applied to its config.json.
fn model_dir(tag: &str, edit: impl Fn(&mut serde_json::Value)) -> PathBuf {
    let d = scratch(tag);
    let fx = root().join("tests/fixtures");
    for (dir, f) in [("models/llama_tied", "model.safetensors"), ("lora/tokenizer", "tokenizer.json"), ("lora/tokenizer", "tokenizer_config.json")] {
        std::fs::copy(fx.join(dir).join(f), d.join(f)).unwrap();
    }
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fx.join("models/llama_tied/config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(d.join("config.json"), cfg.to_string()).unwrap();
    d
}

fn set_template(dir: &Path, template: &str) {
    let p = dir.join("tokenizer_config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v["chat_template"] = template.into();
    std::fs::write(&p, v.to_string()).unwrap();
}

/// The character tokenizer with a pre-tokenizer regex that backtracks
/// catastrophically on `a`×60 + `!` (Oniguruma gives up with a panic).
fn catastrophic_tokenizer(dir: &Path) {
    let p = dir.join("tokenizer.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v["pre_tokenizer"] = serde_json::json!({"type": "Split", "pattern": {"Regex": "(a|aa)+$"}, "behavior": "Isolated", "invert": false});
    std::fs::write(&p, v.to_string()).unwrap();
}

const CATASTROPHIC: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!";

#[test]
fn config_sizes_are_bounded_before_allocation() {
    let d = model_dir("layers", |c| c["num_hidden_layers"] = (1u64 << 36).into());
    load_fails(&d, &["config.json", "num_hidden_layers 68719476736 exceeds the limit"]);
    for (key, value, needle) in [
        ("hidden_size", 1u64 << 40, "hidden_size 1099511627776 exceeds"),
        ("vocab_size", 1 << 40, "vocab_size 1099511627776 exceeds"),
        ("intermediate_size", 1 << 40, "intermediate_size 1099511627776 exceeds"),
        ("num_attention_heads", 1 << 40, "num_attention_heads"),
        ("max_position_embeddings", 1 << 40, "max_position_embeddings 1099511627776 exceeds"),
    ] {
        let d = model_dir("size", |c| c[key] = value.into());
        load_fails(&d, &["config.json", needle]);
    }
}

#[test]
fn invalid_config_values_are_named() {
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "mistral window 0",
            Box::new(|c| {
                c["model_type"] = "mistral".into();
                c["sliding_window"] = 0.into();
            }),
            "sliding_window is 0, must be at least 1",
        ),
        ("eps < 0", Box::new(|c| c["rms_norm_eps"] = (-1e-6).into()), "rms_norm_eps is -0.000001, must be a finite number > 0"),
        ("theta 0", Box::new(|c| c["rope_theta"] = 0.0.into()), "rope_theta is 0, must be a finite number > 0"),
        ("odd head_dim", Box::new(|c| c["head_dim"] = 15.into()), "head_dim 15 must be even"),
        ("hidden % heads", Box::new(|c| c["num_attention_heads"] = 3.into()), "num_attention_heads"),
        (
            "llama3 factors",
            Box::new(|c| {
                c["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 4.0});
            }),
            "high_freq_factor (4) must be greater than low_freq_factor (4)",
        ),
        ("softcap 0", Box::new(|c| c["final_logit_softcapping"] = 0.0.into()), "final_logit_softcapping is 0"),
    ];
    for (what, edit, needle) in cases {
        let d = model_dir("values", &edit);
        let e = load_fails(&d, &["config.json"]);
        assert!(e.contains(needle), "{what}: {e}");
    }
    // Gemma's window too, and its attention scalar.
    let gemma = root().join("tests/fixtures/models/gemma3_text");
    for (key, value, needle) in
        [("sliding_window", serde_json::json!(0), "sliding_window is 0"), ("query_pre_attn_scalar", serde_json::json!(0.0), "query_pre_attn_scalar is 0")]
    {
        let d = scratch("gemma");
        std::fs::copy(gemma.join("model.safetensors"), d.join("model.safetensors")).unwrap();
        let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(gemma.join("config.json")).unwrap()).unwrap();
        cfg[key] = value;
        std::fs::write(d.join("config.json"), cfg.to_string()).unwrap();
        load_fails(&d, &[needle]);
    }
}

#[test]
fn hostile_safetensors_headers_are_named() {
    let d = model_dir("st", |_| {});
    let st = d.join("model.safetensors");
    let good = std::fs::read(&st).unwrap();
    let n = u64::from_le_bytes(good[..8].try_into().unwrap());
    // A header length past the end of the file.
    let mut b = good.clone();
    b[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    std::fs::write(&st, &b).unwrap();
    load_fails(&d, &["model.safetensors", "more than the limit"]);
    // A shape that disagrees with its byte range (MLX would read out of bounds).
    let header = String::from_utf8(good[8..8 + n as usize].to_vec()).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&header).unwrap();
    let name = v.as_object().unwrap().keys().find(|k| *k != "__metadata__").unwrap().clone();
    v[&name]["shape"] = serde_json::json!([1u64 << 20, 1u64 << 20]);
    let mut text = v.to_string();
    while text.len() < n as usize {
        text.push(' ');
    }
    let mut b = (text.len() as u64).to_le_bytes().to_vec();
    b.extend(text.as_bytes());
    b.extend(&good[8 + n as usize..]);
    std::fs::write(&st, &b).unwrap();
    load_fails(&d, &["model.safetensors", &name, "needs"]);
}

// ---------------------------------------------------------------------------
// GGUF files

/// A minimal GGUF writer.
#[derive(Default)]
struct Gguf {
    kv: Vec<(String, u32, Vec<u8>)>,
    tensors: Vec<(String, Vec<u64>, u32, usize)>,
}

fn gs(x: &str) -> Vec<u8> {
    let mut v = (x.len() as u64).to_le_bytes().to_vec();
    v.extend(x.as_bytes());
    v
}

impl Gguf {
    /// llama metadata with a tiny, consistent set of sizes (no tokenizer).
    fn llama() -> Gguf {
        Gguf::default()
            .kv("general.architecture", 8, gs("llama"))
            .kv("llama.embedding_length", 4, 64u32.to_le_bytes().to_vec())
            .kv("llama.block_count", 4, 2u32.to_le_bytes().to_vec())
            .kv("llama.attention.head_count", 4, 4u32.to_le_bytes().to_vec())
            .kv("llama.feed_forward_length", 4, 128u32.to_le_bytes().to_vec())
            .kv("llama.context_length", 4, 1024u32.to_le_bytes().to_vec())
            .kv("llama.vocab_size", 4, 256u32.to_le_bytes().to_vec())
            .kv("llama.attention.layer_norm_rms_epsilon", 6, 1e-6f32.to_le_bytes().to_vec())
    }
    fn kv(mut self, k: &str, ty: u32, v: Vec<u8>) -> Self {
        self.kv.retain(|(key, _, _)| key != k);
        self.kv.push((k.into(), ty, v));
        self
    }
    fn u64(self, k: &str, v: u64) -> Self {
        self.kv(k, 10, v.to_le_bytes().to_vec())
    }
    /// A tensor with `bytes` bytes of data (whatever its dims claim).
    fn tensor(mut self, name: &str, dims: &[u64], ty: u32, bytes: usize) -> Self {
        self.tensors.push((name.into(), dims.to_vec(), ty, bytes));
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend((self.tensors.len() as u64).to_le_bytes());
        b.extend((self.kv.len() as u64).to_le_bytes());
        for (k, ty, v) in &self.kv {
            b.extend(gs(k));
            b.extend(ty.to_le_bytes());
            b.extend(v);
        }
        let mut offset = 0u64;
        for (name, dims, ty, bytes) in &self.tensors {
            b.extend(gs(name));
            b.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(ty.to_le_bytes());
            b.extend(offset.to_le_bytes());
            offset += (*bytes as u64).div_ceil(32) * 32;
        }
        b.resize(b.len().div_ceil(32) * 32, 0);
        b.resize(b.len() + offset as usize, 0);
        b
    }
    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, self.bytes()).unwrap();
        p
    }
}

#[test]
fn gguf_sizes_are_bounded_and_checked() {
    let d = scratch("gguf");
    let f = Gguf::llama().u64("llama.block_count", 1 << 36).write(&d, "layers.gguf");
    load_fails(&f, &["layers.gguf", "llama.block_count 68719476736 exceeds the limit"]);
    let f = Gguf::llama().u64("llama.embedding_length", 1 << 40).write(&d, "hidden.gguf");
    load_fails(&f, &["llama.embedding_length 1099511627776 exceeds"]);
    // Element count × block bytes past u64: dims near 2^62 of F64 (8 bytes each).
    let f = Gguf::llama().tensor("token_embd.weight", &[1 << 31, 1 << 31, 1 << 2], 28, 64).write(&d, "wrap.gguf");
    load_fails(&f, &["wrap.gguf", "token_embd.weight", "not in 1..="]);
    let f = Gguf::llama().tensor("token_embd.weight", &[1 << 30, 1 << 30, 1 << 3], 28, 64).write(&d, "wrap2.gguf");
    load_fails(&f, &["wrap2.gguf", "token_embd.weight", "overflows"]);
    // A zero dimension, and a quantised vector (MLX's messages named neither).
    let f = Gguf::llama().tensor("output_norm.weight", &[0], 0, 0).write(&d, "zero.gguf");
    load_fails(&f, &["zero.gguf", "output_norm.weight", "0 is not in 1..="]);
    let f = Gguf::llama().tensor("output_norm.weight", &[64], 2, 36).write(&d, "qvec.gguf");
    load_fails(&f, &["qvec.gguf", "output_norm.weight", "quantised tensors must be matrices"]);
    // An array whose count runs past the file (capacity overflow before).
    let mut arr = 8u32.to_le_bytes().to_vec();
    arr.extend((1u64 << 61).to_le_bytes());
    let f = Gguf::llama().kv("tokenizer.ggml.tokens", 9, arr).write(&d, "array.gguf");
    load_fails(&f, &["array.gguf", "tokenizer.ggml.tokens", "truncated file"]);
}

// ---------------------------------------------------------------------------
// Files and paths

fn mkfifo(p: &Path) {
    let ok = Command::new("mkfifo").arg(p).status().unwrap().success();
    assert!(ok, "mkfifo {}", p.display());
}

#[test]
fn fifos_empty_paths_and_short_contexts_are_errors() {
    let d = scratch("fifo");
    let f = d.join("x.gguf");
    mkfifo(&f);
    load_fails(&f, &["x.gguf", "not a regular file (a FIFO)"]);
    let m = model_dir("fifo-config", |_| {});
    std::fs::remove_file(m.join("config.json")).unwrap();
    mkfifo(&m.join("config.json"));
    load_fails(&m, &["config.json", "not a regular file (a FIFO)"]);
    let m = model_dir("fifo-tokenizer", |_| {});
    std::fs::remove_file(m.join("tokenizer_config.json")).unwrap();
    mkfifo(&m.join("tokenizer_config.json"));
    load_fails(&m, &["tokenizer_config.json", "not a regular file (a FIFO)"]);

    load_fails(Path::new(""), &["the model path is empty"]);

    let m = model_dir("ctx", |_| {});
    let e = load(&m, 1).expect_err("context_length 1 must fail");
    assert!(e.contains("context_length 1 is too short"), "{e}");
    load_fails(&model_dir("ctx-model", |c| c["max_position_embeddings"] = 1.into()), &["context length 1 is too short"]);
    let ok = load(&m, 2).expect("context_length 2 loads");
    gm_model_close(ok);
}

#[test]
fn discover_ends_on_symlink_loops_and_skips_fifos() {
    let d = scratch("discover");
    let m = d.join("models/a");
    std::fs::create_dir_all(&m).unwrap();
    let fx = root().join("tests/fixtures/models/llama_tied");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fx.join(f), m.join(f)).unwrap();
    }
    std::os::unix::fs::symlink(&d, d.join("models/loop")).unwrap();
    std::os::unix::fs::symlink(d.join("models"), m.join("up")).unwrap();
    let fifo_dir = d.join("models/fifo");
    std::fs::create_dir_all(&fifo_dir).unwrap();
    std::fs::copy(fx.join("model.safetensors"), fifo_dir.join("model.safetensors")).unwrap();
    mkfifo(&fifo_dir.join("config.json"));
    mkfifo(&d.join("models/x.gguf"));
    let t = Instant::now();
    let found = gomlx::models::discover(&d).unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "discover took {:?}", t.elapsed());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].path.ends_with("models/a"), "{found:?}");

    let dir = c(d.to_str().unwrap());
    let mut out: gm_discover_result = unsafe { std::mem::zeroed() };
    out.struct_size = std::mem::size_of::<gm_discover_result>();
    assert_eq!(gm_discover(dir.as_ptr(), &mut out), GM_OK, "{}", last_error());
    assert_eq!(out.n, 1);
    gm_discover_result_free(&mut out);
    let empty = c("");
    assert_eq!(gm_discover(empty.as_ptr(), &mut out), GM_ERROR);
    assert!(last_error().contains("empty"), "{}", last_error());
}

// ---------------------------------------------------------------------------
// Templates, tokenization, sampling: through a loaded model

fn gen_opts(max_tokens: usize) -> gm_generate_options {
    let mut o: gm_generate_options = unsafe { std::mem::zeroed() };
    o.struct_size = std::mem::size_of::<gm_generate_options>();
    o.max_tokens = max_tokens;
    o.ignore_eos = true;
    o
}

fn chat_start(m: *mut gm_model, content: &str, o: &gm_generate_options) -> Result<*mut gm_generation, String> {
    let (role, content) = (c("user"), c(content));
    let msg = gm_message { role: role.as_ptr(), content: content.as_ptr() };
    let g = gm_chat_start(m, &msg, 1, o);
    if g.is_null() {
        Err(last_error())
    } else {
        Ok(g)
    }
}

/// Every token id of a generation.
fn drain(g: *mut gm_generation) -> Result<Vec<u32>, String> {
    let mut ids = Vec::new();
    loop {
        let mut t: gm_token = unsafe { std::mem::zeroed() };
        t.struct_size = std::mem::size_of::<gm_token>();
        match gm_generate_next(g, &mut t) {
            1 if t.id != GM_NO_TOKEN => ids.push(t.id),
            1 => {}
            0 => break,
            _ => {
                let e = last_error();
                gm_generation_free(g);
                return Err(e);
            }
        }
    }
    gm_generation_free(g);
    Ok(ids)
}

fn tokens_start(m: *mut gm_model, ids: &[u32], o: &gm_generate_options) -> Result<Vec<u32>, String> {
    let g = gm_generate_tokens_start(m, ids.as_ptr(), ids.len(), o);
    if g.is_null() {
        return Err(last_error());
    }
    drain(g)
}

#[test]
fn templates_are_bounded_and_never_hold_up_close() {
    let d = model_dir("template", |_| {});
    set_template(&d, "{% for i in range(100000) %}{% for j in range(100000) %}{% for k in range(100000) %}x{% endfor %}{% endfor %}{% endfor %}");
    let m = load(&d, 0).unwrap();
    let t = Instant::now();
    let e = chat_start(m, "hi", &gen_opts(4)).expect_err("a template that never ends must fail");
    assert!(e.contains("chat template") && e.contains("limit of") && e.contains("instructions"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(60), "the fuel ran for {:?}", t.elapsed());
    gm_model_close(m);

    let d = model_dir("template-big", |_| {});
    set_template(&d, "{% for i in range(100) %}{{ 'x' * 10000000 }}{% endfor %}");
    let m = load(&d, 0).unwrap();
    let e = chat_start(m, "hi", &gen_opts(4)).expect_err("a template that writes a gigabyte must fail");
    assert!(e.contains("the rendered prompt exceeds the limit of"), "{e}");
    gm_model_close(m);

    // A render that takes a while does not hold the lock close takes.
    let d = model_dir("template-slow", |_| {});
    set_template(&d, "{% for i in range(2000) %}{% for j in range(2000) %}{% endfor %}{% endfor %}{{ messages[0]['content'] }}");
    let m = load(&d, 0).unwrap();
    let t0 = Instant::now();
    assert!(chat_start(m, "hi", &gen_opts(1)).map(drain).is_ok());
    let render = t0.elapsed();
    let addr = m as usize;
    let starter = std::thread::spawn(move || chat_start(addr as *mut gm_model, "hi", &gen_opts(1)).map(|g| g as usize));
    std::thread::sleep(render / 4);
    let t = Instant::now();
    gm_model_close(m);
    let close = t.elapsed();
    let started = starter.join().unwrap();
    assert!(close < render / 2, "close took {close:?} while a {render:?} render ran");
    // The start that raced close failed cleanly (or, rendered first, got a generation the close ended).
    match started {
        Err(e) => assert!(e.contains("closed"), "{e}"),
        Ok(g) => assert!(drain(g as *mut gm_generation).is_err()),
    }
}

#[test]
fn tokenizer_panics_are_errors_on_every_thread() {
    // Run in a child process so its stderr can be checked for silence.
    if std::env::var_os("GOMLX_HOSTILE_CHILD").is_some() {
        return tokenizer_panics_child();
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "tokenizer_panics_are_errors_on_every_thread", "--nocapture", "--test-threads=1"])
        .env("GOMLX_HOSTILE_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {stdout}\n{stderr}");
    assert!(stdout.contains("child: ok"), "{stdout}");
    assert!(!stderr.contains("panicked") && !stderr.contains("retry-limit") && !stderr.contains("backtrace"), "panic text on stderr: {stderr}");
}

fn tokenizer_panics_child() {
    let d = model_dir("regex", |_| {});
    catastrophic_tokenizer(&d);
    let m = load(&d, 0).unwrap();
    let p = c(CATASTROPHIC);
    let g = gm_generate_start(m, p.as_ptr(), &gen_opts(2));
    assert!(g.is_null());
    let e = last_error();
    assert!(e.contains("tokenizer") && e.contains("retry-limit"), "{e}");
    // The chat path (rendered, then encoded) and batched encoding on gomlx's threads.
    let e = chat_start(m, CATASTROPHIC, &gen_opts(2)).expect_err("chat must fail");
    assert!(e.contains("retry-limit"), "{e}");
    let prompts: Vec<CString> = (0..64).map(|i| c(if i == 40 { CATASTROPHIC } else { "abc" })).collect();
    let ptrs: Vec<*const c_char> = prompts.iter().map(|p| p.as_ptr()).collect();
    let mut r: gm_classify_result = unsafe { std::mem::zeroed() };
    r.struct_size = std::mem::size_of::<gm_classify_result>();
    assert_eq!(gm_classify(m, ptrs.as_ptr(), ptrs.len(), std::ptr::null(), &mut r, std::ptr::null_mut()), GM_ERROR);
    let e = last_error();
    assert!(e.contains("text 40") && e.contains("retry-limit"), "{e}");
    // The model still serves.
    let ok = c("abc");
    let g = gm_generate_start(m, ok.as_ptr(), &gen_opts(2));
    assert_eq!(drain(g).unwrap().len(), 2);
    gm_model_close(m);
    println!("child: ok");
}

#[test]
fn sampling_edges() {
    // Without a tokenizer: the ids are the model's 256, not the character tokenizer's 102.
    let d = model_dir("sampling", |_| {});
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::remove_file(d.join(f)).unwrap();
    }
    let m = load(&d, 0).unwrap();
    let prompt = [1u32, 5, 9, 13];
    let greedy = tokens_start(m, &prompt, &gen_opts(12)).unwrap();
    // 1/t overflows f32: the arg-max, not random tokens.
    let mut o = gen_opts(12);
    o.temperature = 1e-40;
    o.has_seed = true;
    assert_eq!(tokens_start(m, &prompt, &o).unwrap(), greedy, "temperature 1e-40");
    o.temperature = 1e-30;
    assert_eq!(tokens_start(m, &prompt, &o).unwrap(), greedy, "temperature 1e-30");
    // A tiny top_p keeps exactly the top token.
    let mut o = gen_opts(12);
    o.temperature = 1.0;
    o.top_p = 1e-9;
    o.has_seed = true;
    o.seed = 3;
    assert_eq!(tokens_start(m, &prompt, &o).unwrap(), greedy, "top_p 1e-9");
    // Banning every token is an error, at start.
    let bans: Vec<gm_logit_bias> = (0..256).map(|t| gm_logit_bias { token: t, bias: f32::NEG_INFINITY }).collect();
    let mut o = gen_opts(4);
    o.logit_bias = bans.as_ptr();
    o.n_logit_bias = bans.len();
    let e = tokens_start(m, &prompt, &o).expect_err("all banned must fail");
    assert!(e.contains("bans every token"), "{e}");
    // Banning all but one gives that one.
    let mut o2 = o;
    o2.n_logit_bias = 255;
    assert_eq!(tokens_start(m, &prompt, &o2).unwrap(), vec![255; 4]);
    gm_model_close(m);
}

#[test]
fn clear_cache_trims_and_survives() {
    gm_clear_cache();
    gm_clear_cache();
}

// ---------------------------------------------------------------------------
// The command: exit 1, one line on stderr, no backtrace

fn gomlx(args: &[&str]) -> (i32, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_gomlx")).args(args).output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn runtime_error(args: &[&str], needle: &str) {
    let (code, err) = gomlx(args);
    assert_eq!(code, 1, "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
    assert!(err.starts_with("gomlx: ") && err.contains(needle), "{args:?}: {err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{args:?}: {err}");
}

#[test]
fn the_command_reports_each_class_in_one_line() {
    let d = scratch("cli");
    let layers = Gguf::llama().u64("llama.block_count", 1 << 36).write(&d, "layers.gguf");
    runtime_error(&["generate", "--model", layers.to_str().unwrap(), "--prompt", "hi"], "block_count 68719476736 exceeds");
    let cfg = model_dir("cli-layers", |c| c["num_hidden_layers"] = (1u64 << 36).into());
    runtime_error(&["generate", "--model", cfg.to_str().unwrap(), "--prompt", "hi"], "num_hidden_layers 68719476736 exceeds");
    let window = model_dir("cli-window", |c| {
        c["model_type"] = "mistral".into();
        c["sliding_window"] = 0.into();
    });
    runtime_error(&["generate", "--model", window.to_str().unwrap(), "--prompt", "hi"], "sliding_window is 0");
    let fifo = d.join("x.gguf");
    mkfifo(&fifo);
    runtime_error(&["info", "--model", fifo.to_str().unwrap()], "not a regular file (a FIFO)");
    // An empty --model is a usage error (clap: a value is required).
    let (code, err) = gomlx(&["generate", "--model", "", "--prompt", "hi"]);
    assert_eq!((code, err.lines().count()), (2, 1), "{err}");
    let regex = model_dir("cli-regex", |_| {});
    catastrophic_tokenizer(&regex);
    runtime_error(&["generate", "--model", regex.to_str().unwrap(), "--ignore-chat-template", "--prompt", CATASTROPHIC], "retry-limit");
    let template = model_dir("cli-template", |_| {});
    set_template(&template, "{% for i in range(100000) %}{% for j in range(100000) %}{% for k in range(100000) %}x{% endfor %}{% endfor %}{% endfor %}");
    runtime_error(&["generate", "--model", template.to_str().unwrap(), "--prompt", "hi"], "instructions");
    let ctx = model_dir("cli-ctx", |_| {});
    runtime_error(&["generate", "--model", ctx.to_str().unwrap(), "--context-length", "1", "--prompt", "hi"], "context_length 1 is too short");
    // discover ends on a loop.
    std::os::unix::fs::symlink(&d, d.join("loop")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_gomlx")).args(["discover", d.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn gguf_tokenizer_errors_name_the_metadata_not_internal_json() {
    let strs = |v: &[&str]| {
        let mut b = 8u32.to_le_bytes().to_vec();
        b.extend((v.len() as u64).to_le_bytes());
        for s in v {
            b.extend(gs(s));
        }
        b
    };
    let g = Gguf::default()
        .kv("general.architecture", 8, gs("llama"))
        .kv("tokenizer.ggml.model", 8, gs("gpt2"))
        .kv("tokenizer.ggml.tokens", 9, strs(&["a", "b", "ab"]))
        .kv("tokenizer.ggml.merges", 9, strs(&["a c"]));
    let file = gomlx::models::gguf::GgufFile::from_bytes("merges.gguf", &g.bytes()).unwrap();
    let e = gomlx::models::gguf::GgufTokenizer::from_gguf(&file).expect_err("a merge of unknown tokens must fail").to_string();
    assert!(e.contains("merges.gguf") && e.contains("tokenizer.ggml.merges"), "{e}");
    assert!(!e.contains("column"), "{e}");
    // A token longer than any vocabulary has.
    let long = "x".repeat(5000);
    let g = Gguf::default()
        .kv("general.architecture", 8, gs("llama"))
        .kv("tokenizer.ggml.model", 8, gs("gpt2"))
        .kv("tokenizer.ggml.tokens", 9, strs(&["a", &long]))
        .kv("tokenizer.ggml.merges", 9, strs(&[]));
    let file = gomlx::models::gguf::GgufFile::from_bytes("long.gguf", &g.bytes()).unwrap();
    let e = gomlx::models::gguf::GgufTokenizer::from_gguf(&file).expect_err("a 5000-byte token must fail").to_string();
    assert!(e.contains("tokenizer.ggml.tokens[1] is 5000 bytes long"), "{e}");
    // A NaN score (SentencePiece): the merge ranking panicked on it (found by fuzzing).
    let mut scores = 6u32.to_le_bytes().to_vec();
    scores.extend(3u64.to_le_bytes());
    for v in [0.0f32, f32::NAN, -1.0] {
        scores.extend(v.to_le_bytes());
    }
    let g = Gguf::default()
        .kv("general.architecture", 8, gs("llama"))
        .kv("tokenizer.ggml.model", 8, gs("llama"))
        .kv("tokenizer.ggml.tokens", 9, strs(&["a", "b", "ab"]))
        .kv("tokenizer.ggml.scores", 9, scores);
    let file = gomlx::models::gguf::GgufFile::from_bytes("nan.gguf", &g.bytes()).unwrap();
    let e = gomlx::models::gguf::GgufTokenizer::from_gguf(&file).expect_err("a NaN score must fail").to_string();
    assert!(e.contains("tokenizer.ggml.scores[1] is NaN"), "{e}");
}

#[test]
fn template_fuel_leaves_room_for_long_conversations() {
    // The real templates (scripts/fetch-tokenizers) render 1 000 messages within a tenth of
    // the fuel every render gets.
    let dir = root().join(".cache/tokenizers");
    let mut messages = Vec::new();
    for i in 0..500 {
        messages.push(gomlx::text::ChatMessage::user(&format!("question {i}")));
        messages.push(gomlx::text::ChatMessage::assistant(&format!("answer {i}")));
    }
    let opts = gomlx::text::ChatOptions { add_generation_prompt: true, ..Default::default() };
    let tokens = gomlx::text::TemplateTokens { bos_token: Some("<s>".into()), eos_token: Some("</s>".into()), ..Default::default() };
    for name in ["qwen3", "llama3_1", "gemma3"] {
        let cfg = dir.join(name).join("tokenizer_config.json");
        let text = std::fs::read_to_string(&cfg).unwrap_or_else(|e| panic!("{}: {e} (run scripts/fetch-tokenizers)", cfg.display()));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let src = v["chat_template"].as_str().unwrap();
        let t = gomlx::text::ChatTemplate::with_fuel(src, gomlx::limits::TEMPLATE_FUEL / 10).unwrap();
        let out = t.render(&messages, &opts, &tokens).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(out.contains("question 499") && out.contains("answer 499"), "{name}");
    }
}
