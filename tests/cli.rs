//! The `gomlx` command, run as a process: exit codes, error lines, JSON shapes,
//! generation / chat / classify on SmolLM2, and `convert` round trips (gomlx and,
//! mlx-lm (installed by scripts/setup) load the converted directory).

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const PARIS: &str = "What is the capital of France?";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn smollm2() -> PathBuf {
    let p = root().join(".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "{} is missing: run scripts/fetch-models", p.display());
    p
}

fn gomlx(args: &[&str]) -> Output {
    gomlx_stdin(args, None)
}

fn gomlx_stdin(args: &[&str], input: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gomlx"))
        .args(args)
        .current_dir(root())
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run gomlx");
    if let Some(text) = input {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn ok(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
    stdout(o)
}

/// A fresh scratch directory under target/ (removed first).
fn scratch(name: &str) -> PathBuf {
    let d = root().join("target/cli-tests").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    for args in [&["--bogus"][..], &["generate"], &["generate", "--model", "x", "--temp", "abc"], &["frobnicate"], &["convert", "--gguf", "a"]] {
        let o = gomlx(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("gomlx: "), "{err}");
    }
    // No command at all prints the help and is a usage error too.
    assert_eq!(gomlx(&[]).status.code(), Some(2));
    // A sampling value out of range is caught before the model loads.
    let o = gomlx(&["generate", "--model", "/nonexistent", "--prompt", "x", "--top-p", "2"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("top_p"), "{}", stderr(&o));
    assert!(ok(&gomlx(&["--help"])).contains("generate"));
}

#[test]
fn bad_model_path_is_a_runtime_error() {
    let o = gomlx(&["generate", "--model", "/nonexistent/model.gguf", "--prompt", "hi"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "gomlx: /nonexistent/model.gguf: no such model (expected a model directory or a .gguf file)\n");
    let o = gomlx(&["info", "--model", "Cargo.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("gomlx: Cargo.toml: not a model"), "{}", stderr(&o));
    // A .gguf that is not one: the reader's message, still one line.
    let d = scratch("bad_gguf");
    let f = d.join("broken.gguf");
    std::fs::write(&f, b"GGUF\x03\0\0\0").unwrap();
    let o = gomlx(&["info", "--model", s(&f)]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).starts_with("gomlx: gguf: "), "{}", stderr(&o));
}

#[test]
fn info_without_model_prints_versions_and_a_computed_value() {
    let text = ok(&gomlx(&["info"]));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("gomlx "));
    assert_eq!(lines[1], "mlx 0.32.2");
    assert!(lines[2].starts_with("device "));
    assert!(lines[3].starts_with("blas "), "{}", lines[3]);
    assert_eq!(lines[4], "softmax([1,2,3])·[1,2,3] = 2.575210");
    let j: Value = serde_json::from_str(&ok(&gomlx(&["info", "--json"]))).unwrap();
    assert_eq!(j["mlx"], "0.32.2");
}

#[test]
fn info_and_discover_json_shapes() {
    let j: Value = serde_json::from_str(&ok(&gomlx(&["info", "--model", "tests/fixtures/models/llama_tied"]))).unwrap();
    assert_eq!(j["format"], "safetensors");
    assert_eq!(j["model"]["architecture"], "llama");
    assert_eq!(j["model"]["num_layers"], 2);
    assert!(j["load_s"].as_f64().unwrap() >= 0.0);
    assert!(j["tokenizer"].is_null());

    let j: Value = serde_json::from_str(&ok(&gomlx(&["info", "--model", s(&smollm2())]))).unwrap();
    assert_eq!(j["format"], "gguf");
    assert_eq!(j["model"]["vocab_size"], 49152);
    assert_eq!(j["tokenizer"]["chat_template"], true);
    assert_eq!(j["tokenizer"]["eos"][0], "<|im_end|>");

    let j: Value = serde_json::from_str(&ok(&gomlx(&["discover", "tests/fixtures/models"]))).unwrap();
    let found = j.as_array().unwrap();
    assert!(found.len() >= 10, "{j}");
    let q4 = found.iter().find(|m| m["path"].as_str().unwrap().ends_with("qwen3_qknorm_q4")).unwrap();
    assert_eq!((q4["architecture"].as_str(), q4["quant_bits"].as_i64(), q4["format"].as_str()), (Some("qwen3"), Some(4), Some("safetensors")));
    let j: Value = serde_json::from_str(&ok(&gomlx(&["discover", ".cache/models"]))).unwrap();
    let smol = j.as_array().unwrap().iter().find(|m| m["path"].as_str().unwrap().ends_with("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    assert_eq!((smol["format"].as_str(), smol["architecture"].as_str(), smol["tensor_types"]["q4_1"].as_u64()), (Some("gguf"), Some("llama"), Some(210)));
    assert_eq!(gomlx(&["discover", "/nonexistent"]).status.code(), Some(1));
}

#[test]
fn generate_answers_paris_and_reports_metrics() {
    let m = smollm2();
    let o = gomlx(&["generate", "--model", s(&m), "--prompt", PARIS, "--verbose"]);
    assert_eq!(ok(&o), "The capital of France is Paris.\n");
    let err = stderr(&o);
    for want in ["Prompt: 37 tokens", "Generation: 8 tokens", "tokens-per-sec", "Peak memory:", "Finish reason: eos"] {
        assert!(err.contains(want), "{want:?} missing in {err}");
    }
    // The prompt from stdin, and --max-tokens.
    let o = gomlx_stdin(&["generate", "--model", s(&m), "--max-tokens", "3"], Some(PARIS));
    assert_eq!(ok(&o), "The capital of\n");
    // Without the chat template the model just continues the text.
    let o = gomlx(&["generate", "--model", s(&m), "--prompt", "The capital of France is", "--ignore-chat-template", "-m", "4"]);
    assert!(!ok(&o).trim().is_empty());
}

#[test]
fn chat_keeps_the_cache_across_turns_and_resets() {
    let m = smollm2();
    let input = format!("{PARIS}\nAnd of Germany?\n/reset\n{PARIS}\n/exit\nignored after exit\n");
    let o = gomlx_stdin(&["chat", "--model", s(&m), "--max-tokens", "24", "--verbose"], Some(&input));
    let text = ok(&o);
    let replies: Vec<&str> = text.lines().collect();
    assert_eq!(replies.len(), 3, "{text}");
    assert_eq!(replies[0], "The capital of France is Paris.");
    assert!(replies[1].contains("Berlin"), "{text}");
    assert_eq!(replies[2], replies[0]);
    let err = stderr(&o);
    let prompts: Vec<&str> = err.lines().filter(|l| l.starts_with("Prompt:")).collect();
    assert_eq!(prompts.len(), 3, "{err}");
    // The second turn reuses the first turn's cache; after /reset nothing is reused.
    assert!(!prompts[0].contains("reused"), "{err}");
    assert!(prompts[1].contains("reused from the cache"), "{err}");
    assert!(!prompts[2].contains("reused"), "{err}");
}

#[test]
fn classify_writes_jsonl() {
    let m = smollm2();
    let d = scratch("classify");
    let f = d.join("prompts.txt");
    std::fs::write(&f, "Is Paris in France? Answer yes or no:\n\nIs Paris in Japan? Answer yes or no:\nThe capital of France is\n").unwrap();
    let text = ok(&gomlx(&["classify", "--model", s(&m), "--file", s(&f), "--logprobs"]));
    let rows: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows.iter().map(|r| r["line"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 3, 4]);
    for r in &rows {
        assert!(r["token"].is_u64() && r["text"].is_string() && r["logprob"].as_f64().unwrap() <= 0.0, "{r}");
    }
    assert_eq!(rows[2]["prompt"], "The capital of France is");
    // With labels: every row names one, probabilities sum to 1.
    let text = ok(&gomlx_stdin(&["classify", "--model", s(&m), "--labels", " Paris, London"], Some("The capital of France is\nThe capital of England is\n")));
    let rows: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["label"], "Paris");
    assert_eq!(rows[1]["label"], "London");
    let p = &rows[0]["label_probs"];
    assert!((p["Paris"].as_f64().unwrap() + p["London"].as_f64().unwrap() - 1.0).abs() < 1e-4, "{p}");
    // An empty input is a usage error.
    assert_eq!(gomlx_stdin(&["classify", "--model", s(&m)], Some("\n\n")).status.code(), Some(2));
}

/// Greedy ids of the Paris chat through the library, for a model path.
fn paris_ids(model: &Path, max_tokens: usize) -> (String, Vec<u32>) {
    use gomlx::engine::{Engine, EngineOptions, GenerateOptions};
    use gomlx::text::{ChatMessage, ChatOptions};
    let e = Engine::load(model, &EngineOptions::default()).unwrap();
    let mut g = e.chat(&[ChatMessage::user(PARIS)], &GenerateOptions { max_tokens, ..Default::default() }, &ChatOptions::default(), None).unwrap();
    g.collect_text().unwrap()
}

/// The GGUF's greedy answer, from the transformers reference (tests/gguf_generate.rs
/// checks that gomlx on the .gguf gives exactly these ids), EOS dropped.
fn gguf_paris_ids() -> Vec<u32> {
    let text = std::fs::read_to_string(root().join("tests/fixtures/gguf/smollm2_reference.json")).unwrap();
    let r: Value = serde_json::from_str(&text).unwrap();
    let ids: Vec<u32> = r["chat"]["greedy_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    ids[..ids.len() - 1].to_vec()
}

fn convert(gguf: &Path, out: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["convert", "--gguf", s(gguf), "--out", s(out)];
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(&gomlx(&args))).unwrap()
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Converts SmolLM2 with `extra` flags and checks the directory answers like the .gguf.
fn round_trip(name: &str, extra: &[&str]) -> PathBuf {
    let out = scratch(&format!("convert_{name}"));
    let j = convert(&smollm2(), &out, extra);
    assert!(j["tensors"].as_u64().unwrap() >= 272, "{j}");
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        assert!(out.join(f).is_file(), "{name}: {f}");
    }
    let (text, ids) = paris_ids(&out, 32);
    assert_eq!((name, text.as_str(), ids), (name, "The capital of France is Paris.", gguf_paris_ids()));
    out
}

#[test]
fn convert_f32_answers_like_the_gguf() {
    let out = round_trip("f32", &["--dtype", "f32"]);
    let cfg = read_json(&out.join("config.json"));
    assert_eq!(cfg["torch_dtype"], "float32");
    assert!(cfg.get("quantization").is_none());
}

#[test]
fn convert_bf16_answers_like_the_gguf() {
    let out = round_trip("bf16", &["--dtype", "bf16"]);
    assert_eq!(read_json(&out.join("config.json"))["torch_dtype"], "bfloat16");
}

#[test]
fn convert_keep_quant_is_lossless() {
    let out = round_trip("keep", &["--keep-quant"]);
    let cfg = read_json(&out.join("config.json"));
    // Q4_1 matrices kept as 4-bit groups of 32, the Q8_0 embedding as 8 bits.
    assert_eq!(cfg["quantization"]["bits"], 4);
    assert_eq!(cfg["quantization"]["group_size"], 32);
    assert_eq!(cfg["quantization"]["model.embed_tokens"]["bits"], 8);
    let tc = read_json(&out.join("tokenizer_config.json"));
    assert_eq!(tc["eos_token"], "<|im_end|>");
    assert_eq!(tc["add_bos_token"], false);
    assert!(tc["chat_template"].as_str().unwrap().contains("<|im_start|>"));
}

#[test]
fn convert_requantises_and_rejects_bad_flags() {
    let m = smollm2();
    let d = scratch("convert_q");
    // Every Linear and the embedding re-quantised (8 bits keeps the answer).
    let out = d.join("q8");
    convert(&m, &out, &["--q-bits", "8", "--q-group", "32"]);
    let cfg = read_json(&out.join("config.json"));
    assert_eq!(cfg["quantization"], serde_json::json!({"group_size": 32, "bits": 8}));
    assert_eq!(cfg["torch_dtype"], "float32");
    let (text, _) = paris_ids(&out, 10);
    assert!(text.contains("Paris"), "{text}");
    // 4 bits, groups of 64: loads and runs (a second 4-bit rounding of a 135M model
    // changes its answers, so only the shape is checked).
    let out = d.join("q4");
    convert(&m, &out, &["--q-bits", "4"]);
    let info: Value = serde_json::from_str(&ok(&gomlx(&["info", "--model", s(&out)]))).unwrap();
    assert_eq!((info["model"]["quant_bits"].as_i64(), info["model"]["quant_group_size"].as_i64()), (Some(4), Some(64)));
    let (_, ids) = paris_ids(&out, 3);
    assert_eq!(ids.len(), 3);
    // Errors: a missing input (runtime), conflicting or bad flags (usage).
    assert_eq!(gomlx(&["convert", "--gguf", "/nonexistent.gguf", "--out", s(&d.join("x"))]).status.code(), Some(1));
    assert_eq!(gomlx(&["convert", "--gguf", s(&m), "--out", s(&d.join("x")), "--keep-quant", "--q-bits", "4"]).status.code(), Some(2));
    assert_eq!(gomlx(&["convert", "--gguf", s(&m), "--out", s(&d.join("x")), "--q-bits", "7"]).status.code(), Some(2));
}

/// mlx-lm (the project venv's) loads a converted directory and answers the same.
#[test]
fn convert_output_loads_in_mlx_lm() {
    // The project venv: $GOMLX_VENV (as scripts/setup and build.rs use it), else .venv.
    let py = std::env::var_os("GOMLX_VENV").map(PathBuf::from).unwrap_or_else(|| root().join(".venv")).join("bin/python");
    let has_mlx_lm = py.is_file() && Command::new(&py).args(["-c", "import mlx_lm"]).status().is_ok_and(|s| s.success());
    assert!(has_mlx_lm, ".venv has no mlx_lm: run scripts/setup, which installs it");
    let m = smollm2();
    let out = scratch("convert_mlx_lm");
    convert(&m, &out, &["--keep-quant"]);
    {
        let script = format!(
            "from mlx_lm import load, generate\n\
             m, t = load({:?})\n\
             p = t.apply_chat_template([{{'role': 'user', 'content': {:?}}}], add_generation_prompt=True)\n\
             print(generate(m, t, p, max_tokens=32))",
            s(&out),
            PARIS
        );
        let o = Command::new(&py).args(["-c", &script]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "The capital of France is Paris.");
    }
}

/// llama_tied's weights with the character tokenizer beside them (a model the
/// text commands accept), for the `--adapter-path` tests.
fn llama_with_tokenizer(d: &Path) -> PathBuf {
    let m = d.join("model");
    std::fs::create_dir_all(&m).unwrap();
    for (dir, f) in [
        ("models/llama_tied", "config.json"),
        ("models/llama_tied", "model.safetensors"),
        ("lora/tokenizer", "tokenizer.json"),
        ("lora/tokenizer", "tokenizer_config.json"),
    ] {
        std::fs::copy(root().join("tests/fixtures").join(dir).join(f), m.join(f)).unwrap();
    }
    m
}

#[test]
fn adapter_path_applies_mlx_lm_adapters() {
    use gomlx::engine::{ClassifyOptions, Engine, EngineOptions};
    let d = scratch("adapter");
    let m = llama_with_tokenizer(&d);
    // mlx-lm wrote this adapter; tests/engine_adapter.rs checks it gives mlx-lm's logits.
    let adapter = root().join("tests/fixtures/lora/llama_tied/adapter");
    let engine = |adapter: Option<&Path>| Engine::load(&m, &EngineOptions { adapter: adapter.map(Path::to_path_buf), ..Default::default() }).unwrap();
    // Labels keep the answers inside the character tokenizer's 102 tokens (the model has 256).
    let labels: Vec<String> = ["a", "e", "o", "1", "5"].iter().map(|l| l.to_string()).collect();
    let copts = ClassifyOptions { labels: Some(labels.clone()), ..Default::default() };
    let prompts = "count 3 4 5\nthe cat sat\n";
    let lib = |e: &Engine| -> Vec<Vec<f32>> {
        let (r, _) = e.classify(&["count 3 4 5", "the cat sat"], &copts).unwrap();
        r.into_iter().map(|r| r.label_probs.unwrap()).collect()
    };
    let (want, plain) = (lib(&engine(Some(&adapter))), lib(&engine(None)));
    let cli = |extra: &[&str]| -> Vec<Vec<f32>> {
        let args = [&["classify", "--model", s(&m), "--labels", "a,e,o,1,5"][..], extra].concat();
        ok(&gomlx_stdin(&args, Some(prompts)))
            .lines()
            .map(|l| {
                let row: Value = serde_json::from_str(l).unwrap();
                labels.iter().map(|k| row["label_probs"][k].as_f64().unwrap() as f32).collect()
            })
            .collect()
    };
    let close = |a: &[Vec<f32>], b: &[Vec<f32>]| {
        assert!(a.len() == 2 && b.len() == 2 && a.iter().chain(b).all(|r| r.len() == 5), "{a:?} {b:?}");
        a.iter().flatten().zip(b.iter().flatten()).all(|(x, y)| (x - y).abs() < 1e-5)
    };
    let (got, got_plain) = (cli(&["--adapter-path", s(&adapter)]), cli(&[]));
    assert!(close(&got, &want), "classify --adapter-path {got:?}, library with the adapter {want:?}");
    assert!(close(&got_plain, &plain), "{got_plain:?} vs {plain:?}");
    assert!(!close(&want, &plain), "the adapter changes nothing on these prompts");

    // A bad adapter path is a runtime error naming it, before the model loads.
    let o = gomlx(&["generate", "--model", s(&m), "--prompt", "x", "--adapter-path", "/nonexistent/adapter"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("adapter path /nonexistent/adapter: no such directory"), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    // An adapter of another model names the mismatch.
    let o = gomlx_stdin(&["chat", "--model", s(&m), "--adapter-path", s(&root().join("tests/fixtures/lora/gemma3_text/adapter"))], Some("hi\n"));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("does not fit the model"), "{}", stderr(&o));
    for cmd in ["generate", "chat", "classify", "bench"] {
        assert!(ok(&gomlx(&[cmd, "--help"])).contains("--adapter-path"), "{cmd} --help");
    }
}

/// `gomlx bench --compare mlx-lm` (issue 8's front door) runs both engines on
/// the same file, tiny sizes: every metric has both sides and their ratio, the
/// greedy tokens are compared, and the warmed-up prefill keeps the first
/// request's time apart on both sides.
#[test]
fn bench_compares_with_mlx_lm() {
    let m = smollm2();
    let o = gomlx(&[
        "bench",
        "--model",
        s(&m),
        "--compare",
        "mlx-lm",
        "--reps",
        "1",
        "--prefill-tokens",
        "16",
        "--decode-tokens",
        "4",
        "--classify-prompts",
        "2",
        "--prompt-tokens",
        "8",
        "--prefix-tokens",
        "8",
        "--json",
    ]);
    let r: Value = serde_json::from_str(&ok(&o)).unwrap();
    for key in ["load_s", "ttft_s", "prefill_tok_s", "decode_tok_s", "classify_prompts_s", "classify_prefixed_prompts_s", "peak_memory_bytes"] {
        let x = &r["metrics"][key];
        let (g, l, ratio) = (x["gomlx"].as_f64().unwrap(), x["mlx_lm"].as_f64().unwrap(), x["ratio"].as_f64().unwrap());
        assert!(g > 0.0 && l > 0.0, "{key}: {x}");
        assert!((ratio - g / l).abs() <= 1e-9 * ratio.abs().max(1.0), "{key}: ratio {ratio} is not {g} / {l}");
    }
    assert_eq!(r["greedy_agreement"]["decode"]["of"].as_u64(), Some(4), "{}", r["greedy_agreement"]);
    assert_eq!(r["greedy_agreement"]["classify"]["of"].as_u64(), Some(2), "{}", r["greedy_agreement"]);
    let ours = r["runs"]["gomlx"].as_object().unwrap().values().next().unwrap()[0].clone();
    for (who, run) in [("gomlx", &ours), ("mlx-lm", &r["runs"]["mlx_lm"][0])] {
        assert!(run["ttft_cold_s"].as_f64().is_some_and(|t| t > 0.0), "{who}: no first-request time in {run}");
    }
}

/// A classify-only bench row names the steps it skipped with a dash, not NaN.
#[test]
fn bench_classify_only_markdown_row() {
    let m = smollm2();
    let md = std::env::temp_dir().join(format!("gomlx-bench-row-{}.md", std::process::id()));
    let _ = std::fs::remove_file(&md);
    let o = gomlx(&[
        "bench",
        "--model",
        s(&m),
        "--reps",
        "1",
        "--classify-only",
        "--classify-prompts",
        "2",
        "--prompt-tokens",
        "8",
        "--prefix-tokens",
        "8",
        "--markdown",
        s(&md),
    ]);
    ok(&o);
    let text = std::fs::read_to_string(&md).unwrap();
    std::fs::remove_file(&md).ok();
    let row = text.lines().last().unwrap();
    assert!(!row.contains("NaN"), "{row}");
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    // date, machine, backend, model, gomlx, mlx-lm, workload, reps, then load, TTFT, prefill, decode, classify ×2, peak.
    assert_eq!(&cells[10..13], &["–", "–", "–"], "{row}");
    assert!(cells[9].parse::<f64>().is_ok_and(|v| v > 0.0), "load: {row}");
    assert!(cells[13].parse::<f64>().is_ok_and(|v| v > 0.0), "classify: {row}");
}

#[test]
fn generate_with_constraints() {
    let m = smollm2();
    let schema = r#"{"type": "object", "properties": {"city": {"type": "string", "maxLength": 16}, "population": {"type": "integer", "minimum": 0, "maximum": 99999999}}, "required": ["city", "population"], "additionalProperties": false}"#;
    let dir = scratch("constraints");
    std::fs::write(dir.join("schema.json"), schema).unwrap();
    std::fs::write(dir.join("yesno.lark"), "start: \"yes\" | \"no\"\n").unwrap();
    let text = |args: &[&str]| {
        ok(&gomlx(&[&["generate", "--model", s(&m), "--prompt", "The largest city of France", "-m", "48"][..], args].concat())).trim_end().to_string()
    };
    for arg in [schema, s(&dir.join("schema.json"))] {
        let out = text(&["--json-schema", arg]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out:?}"));
        assert!(v["city"].is_string() && v["population"].as_u64().is_some() && v.as_object().unwrap().len() == 2, "{out}");
    }
    assert!(serde_json::from_str::<serde_json::Value>(&text(&["--json-object"])).unwrap().is_object());
    let out = text(&["--choice", "Paris,Lyon,Marseille", "--temp", "1", "--seed", "3"]);
    assert!(["Paris", "Lyon", "Marseille"].contains(&out.as_str()), "{out:?}");
    let out = text(&["--regex", "[A-Z][a-z]{2,8} [0-9]{4}"]);
    assert!(out.len() >= 8 && out.chars().next().unwrap().is_ascii_uppercase() && out[out.len() - 4..].chars().all(|c| c.is_ascii_digit()), "{out:?}");
    assert!(["yes", "no"].contains(&text(&["--grammar", s(&dir.join("yesno.lark"))]).as_str()));
    // Two constraints, or a bad one: usage and clear errors, never free text.
    let o = gomlx(&["generate", "--model", s(&m), "--prompt", "x", "--regex", "a", "--choice", "b"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = gomlx(&["generate", "--model", s(&m), "--prompt", "x", "--json-schema", r#"{"type": "nonsense"}"#]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("json_schema") && stdout(&o).is_empty(), "{}", stderr(&o));
}
