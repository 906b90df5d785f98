//! `gomlx serve` over loopback with a real HTTP client (ureq): the OpenAI and
//! Ollama APIs on SmolLM2-135M-Instruct (GGUF) and a tiny fixture model, the
//! bad-input table, streaming, usage counts, stop, n, seeds, cancellation, the
//! queue bound, the API key, keep-alive unloading and the SIGTERM drain;
//! `response_format`/`format` outputs validated against their schemas, forced tool
//! calls (streamed and not) and tool results reaching the template.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn smollm() -> PathBuf {
    let p = root().join(".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "{} is missing: run scripts/fetch-models", p.display());
    p
}

/// A models directory: `tiny` (llama_tied with the character tokenizer) and SmolLM2 (a link).
fn models_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("gomlx-server-models-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let tiny = d.join("tiny");
        std::fs::create_dir_all(&tiny).unwrap();
        for (dir, f) in [
            ("models/llama_tied", "config.json"),
            ("models/llama_tied", "model.safetensors"),
            ("lora/tokenizer", "tokenizer.json"),
            ("lora/tokenizer", "tokenizer_config.json"),
        ] {
            std::fs::copy(root().join("tests/fixtures").join(dir).join(f), tiny.join(f)).unwrap();
        }
        std::os::unix::fs::symlink(smollm(), d.join("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
        d
    })
    .clone()
}

const SMOL: &str = "SmolLM2-135M-Instruct.Q4_1";

struct Server {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gomlx"));
        // stdin is a pipe this process holds: the shared server (a static, never dropped)
        // stops when the test process ends and the pipe closes.
        cmd.arg("serve")
            .args(["--port", "0", "--stop-on-stdin-eof"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env_remove("GOMLX_API_KEY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["event"] == "listening" {
                        let _ = tx.send(v["address"].as_str().unwrap().to_string());
                    }
                }
                log2.lock().unwrap().push(line);
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(b) => b,
            Err(_) => {
                let _ = child.kill();
                panic!("the server did not start: {:?}", log.lock().unwrap());
            }
        };
        Server { child, base, log }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM, then the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(t.elapsed() < Duration::from_secs(120), "the server did not stop after SIGTERM: {:?}", self.log_lines());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server most tests share: both models, small caps for the bad-input table.
fn shared() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        let dir = models_dir();
        Server::start(&["--models-dir", dir.to_str().unwrap(), "--max-loaded-models", "2", "--max-tokens", "512", "--max-body-bytes", "65536"], &[])
    })
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(300))).build().into()
}

/// POSTs JSON text; (status, headers' retry-after, body).
fn post_raw(url: &str, body: &str, key: Option<&str>) -> (u16, Option<String>, String) {
    let mut r = agent().post(url).header("content-type", "application/json");
    if let Some(k) = key {
        r = r.header("authorization", &format!("Bearer {k}"));
    }
    let mut resp = r.send(body).unwrap();
    let status = resp.status().as_u16();
    let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    (status, retry, resp.body_mut().read_to_string().unwrap())
}

fn post(url: &str, body: &Value) -> (u16, Value) {
    let (s, _, text) = post_raw(url, &body.to_string(), None);
    (s, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
}

fn get(url: &str) -> (u16, String) {
    let mut resp = agent().get(url).call().unwrap();
    (resp.status().as_u16(), resp.body_mut().read_to_string().unwrap())
}

/// The `data:` payloads of a server-sent event stream.
fn sse_events(text: &str) -> Vec<String> {
    text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).map(str::to_string).collect()
}

fn chat_body(content: &str, extra: Value) -> Value {
    let mut b = json!({"model": SMOL, "messages": [{"role": "user", "content": content}], "temperature": 0, "max_tokens": 24});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

#[test]
fn bad_input_gets_a_4xx_naming_the_field_and_the_server_keeps_serving() {
    let s = shared();
    let chat = s.url("/v1/chat/completions");
    let good = json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        b[k] = v;
        b.to_string()
    };
    let big = format!("{{\"model\": \"tiny\", \"messages\": [{{\"role\": \"user\", \"content\": \"{}\"}}]}}", "a".repeat(70_000));
    let long_prompt = json!({"model": "tiny", "messages": [{"role": "user", "content": "ab ".repeat(700)}]}).to_string();
    // (path, body, status, the field the error names)
    let table: Vec<(&str, String, u16, &str)> = vec![
        ("/v1/chat/completions", "{".into(), 400, "body"),
        ("/v1/chat/completions", "[1, 2]".into(), 400, "body"),
        ("/v1/chat/completions", "".into(), 400, "body"),
        ("/v1/chat/completions", big, 413, "body"),
        ("/v1/chat/completions", with("model", json!("no-such-model")), 404, "model"),
        ("/v1/chat/completions", with("model", json!(7)), 400, "model"),
        ("/v1/chat/completions", with("messages", json!([])), 400, "messages"),
        ("/v1/chat/completions", with("messages", json!("hi")), 400, "messages"),
        ("/v1/chat/completions", with("messages", json!([{"content": "hi"}])), 400, "messages[0].role"),
        ("/v1/chat/completions", with("messages", json!([{"role": "wizard", "content": "hi"}])), 400, "messages[0].role"),
        ("/v1/chat/completions", with("messages", json!([{"role": "user", "content": 5}])), 400, "messages[0].content"),
        ("/v1/chat/completions", with("messages", json!([{"role": "user", "content": [{"type": "image_url"}]}])), 400, "messages[0].content[0].type"),
        ("/v1/chat/completions", with("temperature", json!("hot")), 400, "temperature"),
        ("/v1/chat/completions", with("temperature", json!(3)), 400, "temperature"),
        ("/v1/chat/completions", with("top_p", json!(0)), 400, "top_p"),
        ("/v1/chat/completions", with("top_p", json!(1.5)), 400, "top_p"),
        ("/v1/chat/completions", with("max_tokens", json!(0)), 400, "max_tokens"),
        ("/v1/chat/completions", with("max_tokens", json!(100000)), 400, "max_tokens"),
        ("/v1/chat/completions", with("max_tokens", json!(1.5)), 400, "max_tokens"),
        ("/v1/chat/completions", with("max_completion_tokens", json!(-3)), 400, "max_completion_tokens"),
        ("/v1/chat/completions", with("n", json!(0)), 400, "n"),
        ("/v1/chat/completions", with("n", json!(1000)), 400, "n"),
        ("/v1/chat/completions", with("presence_penalty", json!(5)), 400, "presence_penalty"),
        ("/v1/chat/completions", with("frequency_penalty", json!([1])), 400, "frequency_penalty"),
        ("/v1/chat/completions", with("seed", json!("x")), 400, "seed"),
        ("/v1/chat/completions", with("logit_bias", json!({"abc": 1})), 400, "logit_bias.abc"),
        ("/v1/chat/completions", with("logit_bias", json!({"5": 1000})), 400, "logit_bias.5"),
        ("/v1/chat/completions", with("logit_bias", json!({"99999": 1})), 400, "logit_bias"),
        ("/v1/chat/completions", with("top_logprobs", json!(3)), 400, "top_logprobs"),
        ("/v1/chat/completions", with("top_logprobs", json!(50)), 400, "top_logprobs"),
        ("/v1/chat/completions", with("stop", json!([1])), 400, "stop[0]"),
        ("/v1/chat/completions", with("stop", json!("")), 400, "stop"),
        ("/v1/chat/completions", with("stream", json!("yes")), 400, "stream"),
        ("/v1/chat/completions", with("stream_options", json!({"include_usage": 1})), 400, "stream_options.include_usage"),
        ("/v1/chat/completions", long_prompt, 400, "messages"),
        ("/v1/completions", json!({"model": "tiny"}).to_string(), 400, "prompt"),
        ("/v1/completions", json!({"model": "tiny", "prompt": 5}).to_string(), 400, "prompt"),
        ("/v1/completions", json!({"model": "tiny", "prompt": "hi", "logprobs": 9}).to_string(), 400, "logprobs"),
    ];
    for (path, body, status, field) in &table {
        let (got, _, text) = post_raw(&s.url(path), body, None);
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path} {body:.80}: not JSON: {text}"));
        assert_eq!(got, *status, "{path} {body:.100}: {text}");
        let err = &v["error"];
        assert!(err["type"].is_string(), "{text}");
        let msg = err["message"].as_str().unwrap();
        assert!(msg.starts_with(&format!("{field}:")) || err["param"] == *field, "{body:.100}: expected the field {field}: {text}");
    }
    // Ollama's routes answer in Ollama's error shape, naming the field too.
    for (body, status, field) in [
        (json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "options": {"temperature": "x"}}), 400, "options.temperature"),
        (json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}), 404, "model"),
        (json!({"messages": [{"role": "user", "content": "hi"}]}), 400, "model"),
        (json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "options": {"num_predict": 0}}), 400, "options.num_predict"),
    ] {
        let (got, v) = post(&s.url("/api/chat"), &body);
        assert_eq!(got, status, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().starts_with(&format!("{field}:")), "{v}");
    }
    let (st, body) = get(&s.url("/v1/nope"));
    assert_eq!(st, 404, "{body}");
    // Still serving: a valid request is answered.
    let mut ok = good.clone();
    ok["model"] = json!(SMOL);
    let (st, v) = post(&chat, &ok);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 2, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
}

#[test]
fn chat_answers_greedy_and_counts_usage() {
    let s = shared();
    let (st, v) = post(&s.url("/v1/chat/completions"), &chat_body("What is the capital of France?", json!({})));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], SMOL);
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.contains("Paris"), "{text}");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    let u = &v["usage"];
    // The prompt's tokens, counted independently: the completions endpoint with the
    // rendered prompt must report the same count (both >= the words of the question).
    let prompt_tokens = u["prompt_tokens"].as_u64().unwrap();
    assert!(prompt_tokens > 7, "{u}");
    assert_eq!(u["total_tokens"].as_u64().unwrap(), prompt_tokens + u["completion_tokens"].as_u64().unwrap());
    // logprobs: one entry per generated token, so completion_tokens is the count of tokens.
    let (_, v) = post(&s.url("/v1/chat/completions"), &chat_body("What is the capital of France?", json!({"logprobs": true, "top_logprobs": 2})));
    let lp = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(lp.len() as u64, v["usage"]["completion_tokens"].as_u64().unwrap());
    assert_eq!(lp[0]["top_logprobs"].as_array().unwrap().len(), 2);
    // Greedy: the chosen token is the most likely alternative.
    assert_eq!(lp[0]["token"], lp[0]["top_logprobs"][0]["token"]);
    assert!(lp[0]["logprob"].as_f64().unwrap() <= 0.0);
    let joined: String = lp.iter().map(|e| e["token"].as_str().unwrap()).collect();
    assert_eq!(joined, v["choices"][0]["message"]["content"].as_str().unwrap());
}

#[test]
fn streaming_matches_non_streaming_and_reports_usage() {
    let s = shared();
    let body = chat_body("Name three colors.", json!({}));
    let (_, full) = post(&s.url("/v1/chat/completions"), &body);
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    sb["stream_options"] = json!({"include_usage": true});
    let (st, _, text) = post_raw(&s.url("/v1/chat/completions"), &sb.to_string(), None);
    assert_eq!(st, 200);
    let events = sse_events(&text);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks.iter().filter_map(|c| c["choices"].get(0).and_then(|ch| ch["delta"]["content"].as_str())).collect();
    assert_eq!(streamed, full["choices"][0]["message"]["content"].as_str().unwrap());
    let fin: Vec<&Value> = chunks.iter().filter(|c| c["choices"].get(0).is_some_and(|ch| !ch["finish_reason"].is_null())).collect();
    assert_eq!(fin.len(), 1);
    assert_eq!(fin[0]["choices"][0]["finish_reason"], full["choices"][0]["finish_reason"]);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], full["usage"]);
    assert!(chunks.iter().all(|c| c["id"] == chunks[0]["id"] && c["object"] == "chat.completion.chunk"));
}

#[test]
fn stop_strings_end_the_reply_before_them() {
    let s = shared();
    let (_, full) = post(&s.url("/v1/chat/completions"), &chat_body("What is the capital of France?", json!({})));
    let text = full["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    let at = text.find("Paris").expect("Paris in the greedy answer");
    let (_, v) = post(&s.url("/v1/chat/completions"), &chat_body("What is the capital of France?", json!({"stop": ["Paris"]})));
    assert_eq!(v["choices"][0]["message"]["content"].as_str().unwrap(), &text[..at]);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

#[test]
fn n_choices_and_seeds() {
    let s = shared();
    let body = chat_body("Write a word.", json!({"temperature": 1.0, "seed": 1234, "n": 3, "max_tokens": 12}));
    let (st, a) = post(&s.url("/v1/chat/completions"), &body);
    assert_eq!(st, 200, "{a}");
    let choices = a["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
    }
    // The same seed gives the same choices; usage sums the choices' tokens.
    let (_, b) = post(&s.url("/v1/chat/completions"), &body);
    assert_eq!(a["choices"], b["choices"]);
    let sum: u64 = (0..3)
        .map(|i| {
            let (_, one) = post(&s.url("/v1/chat/completions"), &chat_body("Write a word.", json!({"temperature": 1.0, "seed": 1234 + i, "max_tokens": 12})));
            // Choice i of a seeded request is the single request with seed + i.
            assert_eq!(one["choices"][0]["message"], a["choices"][i as usize]["message"]);
            one["usage"]["completion_tokens"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(a["usage"]["completion_tokens"].as_u64().unwrap(), sum);
    // Streaming n: every index ends once.
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    let (_, _, text) = post_raw(&s.url("/v1/chat/completions"), &sb.to_string(), None);
    let mut texts = vec![String::new(); 3];
    let mut ends = 0;
    for e in sse_events(&text).iter().filter(|e| *e != "[DONE]") {
        let c: Value = serde_json::from_str(e).unwrap();
        for ch in c["choices"].as_array().unwrap() {
            let i = ch["index"].as_u64().unwrap() as usize;
            texts[i].push_str(ch["delta"]["content"].as_str().unwrap_or(""));
            ends += !ch["finish_reason"].is_null() as usize;
        }
    }
    assert_eq!(ends, 3);
    for i in 0..3 {
        assert_eq!(texts[i], a["choices"][i]["message"]["content"].as_str().unwrap());
    }
}

#[test]
fn text_completions_stream_and_not() {
    let s = shared();
    let body = json!({"model": SMOL, "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0, "logprobs": 1});
    let (st, v) = post(&s.url("/v1/completions"), &body);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    let text = v["choices"][0]["text"].as_str().unwrap();
    assert!(text.contains("Paris"), "{text}");
    assert_eq!(v["choices"][0]["logprobs"]["tokens"].as_array().unwrap().len() as u64, v["usage"]["completion_tokens"].as_u64().unwrap());
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    let (_, _, t) = post_raw(&s.url("/v1/completions"), &sb.to_string(), None);
    let streamed: String = sse_events(&t)
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(streamed, text);
}

#[test]
fn models_and_ollama_listing_endpoints() {
    let s = shared();
    let (st, t) = get(&s.url("/v1/models"));
    assert_eq!(st, 200);
    let v: Value = serde_json::from_str(&t).unwrap();
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![SMOL, "tiny"]);
    let (_, t) = get(&s.url("/api/tags"));
    let v: Value = serde_json::from_str(&t).unwrap();
    let smol = v["models"].as_array().unwrap().iter().find(|m| m["name"] == SMOL).unwrap();
    assert_eq!(smol["details"]["format"], "gguf");
    assert_eq!(smol["size"].as_u64().unwrap(), std::fs::metadata(smollm()).unwrap().len());
    let (_, t) = get(&s.url("/api/version"));
    assert!(serde_json::from_str::<Value>(&t).unwrap()["version"].is_string());
    let (st, v) = post(&s.url("/api/show"), &json!({"model": SMOL}));
    assert_eq!(st, 200, "{v}");
    assert!(v["template"].as_str().unwrap().contains("im_start"), "{v}");
    assert_eq!(v["model_info"]["general.architecture"], "llama");
    let (_, t) = get(&s.url("/api/ps"));
    let v: Value = serde_json::from_str(&t).unwrap();
    assert!(v["models"].as_array().unwrap().iter().any(|m| m["name"] == SMOL), "{v}");
}

#[test]
fn ollama_chat_and_generate_stream_ndjson() {
    let s = shared();
    let body =
        json!({"model": SMOL, "messages": [{"role": "user", "content": "What is the capital of France?"}], "options": {"temperature": 0, "num_predict": 24}});
    let (st, _, text) = post_raw(&s.url("/api/chat"), &body.to_string(), None);
    assert_eq!(st, 200);
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let last = lines.last().unwrap();
    assert_eq!(last["done"], true);
    assert!(lines[..lines.len() - 1].iter().all(|l| l["done"] == false && l["message"]["role"] == "assistant"));
    let streamed: String = lines.iter().map(|l| l["message"]["content"].as_str().unwrap()).collect();
    let (_, oa) = post(&s.url("/v1/chat/completions"), &chat_body("What is the capital of France?", json!({})));
    assert_eq!(streamed, oa["choices"][0]["message"]["content"].as_str().unwrap());
    assert_eq!(last["eval_count"], oa["usage"]["completion_tokens"]);
    assert_eq!(last["prompt_eval_count"], oa["usage"]["prompt_tokens"]);
    assert!(chrono_like(last["created_at"].as_str().unwrap()));
    // Not streaming: one object with the whole reply.
    let mut nb = body.clone();
    nb["stream"] = json!(false);
    let (_, v) = post(&s.url("/api/chat"), &nb);
    assert_eq!(v["message"]["content"].as_str().unwrap(), streamed);
    assert_eq!(v["done"], true);
    // /api/generate (the prompt as a user turn of the template).
    let g = json!({"model": SMOL, "prompt": "What is the capital of France?", "stream": false, "options": {"temperature": 0, "num_predict": 24}});
    let (_, v) = post(&s.url("/api/generate"), &g);
    assert_eq!(v["response"].as_str().unwrap(), streamed);
}

fn chrono_like(s: &str) -> bool {
    s.len() >= 20 && s.as_bytes()[4] == b'-' && s.contains('T') && s.ends_with('Z')
}

/// A streaming request whose client goes away is cancelled: its generation stops.
#[test]
fn a_client_that_disconnects_cancels_its_generation() {
    let s = shared();
    let body = chat_body("Count from one to one thousand in words.", json!({"stream": true, "max_tokens": 400}));
    let before = metric(s, "gomlx_cancelled_total");
    let resp = agent().post(&s.url("/v1/chat/completions")).header("content-type", "application/json").send(body.to_string()).unwrap();
    let mut reader = resp.into_body().into_reader();
    let mut buf = [0u8; 256];
    let mut got = 0;
    while got < 3 {
        let n = reader.read(&mut buf).unwrap();
        assert!(n > 0);
        got += 1;
    }
    drop(reader);
    let t = Instant::now();
    loop {
        if metric(s, "gomlx_cancelled_total") > before {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "the generation was not cancelled");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The request log names it.
    let t = Instant::now();
    while !s.log_lines().iter().any(|l| l.contains("\"finish\":\"client_gone\"")) {
        assert!(t.elapsed() < Duration::from_secs(10), "no log line for the cancelled request");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metric(s: &Server, name: &str) -> f64 {
    let (_, t) = get(&s.url("/metrics"));
    t.lines().find_map(|l| l.strip_prefix(&format!("{name} ")).map(|v| v.parse().unwrap())).unwrap_or_else(|| panic!("no {name} in {t}"))
}

#[test]
fn metrics_and_health() {
    let s = shared();
    let (_, v) = post(&s.url("/v1/chat/completions"), &chat_body("Hi", json!({"max_tokens": 4})));
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() >= 1);
    let (st, t) = get(&s.url("/metrics"));
    assert_eq!(st, 200);
    for m in [
        "gomlx_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"}",
        "gomlx_generated_tokens_total",
        "gomlx_queue_depth",
        "gomlx_time_to_first_token_seconds_bucket{le=\"+Inf\"}",
        "gomlx_inter_token_seconds_count",
        "gomlx_memory_active_bytes",
        "gomlx_process_resident_bytes",
    ] {
        assert!(t.contains(m), "no {m} in /metrics");
    }
    assert!(metric(s, "gomlx_generated_tokens_total") >= 1.0);
    let (st, t) = get(&s.url("/health"));
    assert_eq!(st, 200);
    assert_eq!(serde_json::from_str::<Value>(&t).unwrap()["status"], "ok");
    // One structured log line per request.
    assert!(s.log_lines().iter().any(|l| l.contains("\"endpoint\":\"/v1/chat/completions\"") && l.contains("\"completion_tokens\"")));
    assert!(s.log_lines().iter().any(|l| l.contains("\"path\":\"/health\"")));
}

#[test]
fn the_api_key_is_required_on_the_api_routes() {
    let s = Server::start(&["--model", smollm().to_str().unwrap()], &[("GOMLX_API_KEY", "s3cret")]);
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).to_string();
    let (st, _, t) = post_raw(&s.url("/v1/chat/completions"), &body, None);
    assert_eq!(st, 401, "{t}");
    let (st, _, _) = post_raw(&s.url("/v1/chat/completions"), &body, Some("s3cre"));
    assert_eq!(st, 401);
    let (st, _, t) = post_raw(&s.url("/v1/chat/completions"), &body, Some("s3cret"));
    assert_eq!(st, 200, "{t}");
    let (st, _, t) = post_raw(&s.url("/api/chat"), &json!({"model": SMOL, "messages": []}).to_string(), None);
    assert_eq!(st, 401);
    assert!(serde_json::from_str::<Value>(&t).unwrap()["error"].is_string());
    assert_eq!(get(&s.url("/health")).0, 200);
    assert_eq!(get(&s.url("/")).0, 200);
}

/// A full queue answers 429 with Retry-After; SIGTERM lets the running stream finish.
#[test]
fn queue_bound_and_sigterm_drain() {
    // A drain deadline no loaded CI machine reaches: the stream must finish, not be cut.
    let mut s = Server::start(&["--model", smollm().to_str().unwrap(), "--max-queue", "1", "--preload", "--drain-timeout", "600"], &[]);
    let body = json!({"messages": [{"role": "user", "content": "Count from one to fifty."}], "max_tokens": 48, "temperature": 0, "stream": true});
    let url = s.url("/v1/chat/completions");
    let b2 = body.to_string();
    let running = std::thread::spawn(move || post_raw(&url, &b2, None));
    // Wait until it runs, then a second request finds the queue full.
    let t = Instant::now();
    while metric(&s, "gomlx_requests_in_flight") < 1.0 {
        assert!(t.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(20));
    }
    let (st, retry, t) = post_raw(&s.url("/v1/chat/completions"), &body.to_string(), None);
    assert_eq!(st, 429, "{t}");
    assert_eq!(retry.as_deref(), Some("1"));
    // SIGTERM while the first streams: it completes with every token and [DONE].
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
    let (st, _, text) = running.join().unwrap();
    assert_eq!(st, 200);
    let events = sse_events(&text);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let fin = events.iter().rev().nth(1).unwrap();
    assert!(fin.contains("\"finish_reason\":\"length\"") || fin.contains("\"finish_reason\":\"stop\""), "{fin}");
    let log = s.log_lines();
    assert!(log.iter().any(|l| l.contains("\"event\":\"draining\"")));
    assert!(log.iter().any(|l| l.contains("\"event\":\"stopped\"")));
}

/// A drain deadline that passes with a stream still running: the model is closed under it
/// (the stream ends early) and the process exits cleanly, not by an abort of a live engine thread.
#[test]
fn drain_deadline_closes_running_streams_and_exits_cleanly() {
    let mut s = Server::start(&["--model", smollm().to_str().unwrap(), "--preload", "--drain-timeout", "1"], &[]);
    let body = json!({"messages": [{"role": "user", "content": "Count from one to five hundred."}], "max_tokens": 1500, "temperature": 0, "stream": true});
    let addr = s.url("").trim_start_matches("http://").trim_end_matches('/').to_string();
    let running = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        let b = body.to_string();
        write!(
            c,
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
            b.len()
        )
        .unwrap();
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    });
    let t = Instant::now();
    while metric(&s, "gomlx_generated_tokens_total") < 2.0 {
        assert!(t.elapsed() < Duration::from_secs(60), "no tokens streamed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = s.terminate();
    assert!(status.success(), "{status:?}: {:?}", s.log_lines());
    let text = running.join().unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // Cut before its 1500 tokens, with an error event that says why.
    assert!(text.matches("\"content\"").count() < 1500, "{text}");
    assert!(text.contains("\"error\"") && text.contains("closed while this generation was running"), "{text}");
    let log = s.log_lines();
    assert!(log.iter().any(|l| l.contains("\"event\":\"drain_timeout\"")), "{log:?}");
    assert!(log.iter().any(|l| l.contains("\"model_unloaded\"") && l.contains("shutdown")), "{log:?}");
    assert!(log.iter().any(|l| l.contains("\"event\":\"stopped\"")), "{log:?}");
}

/// Loaded while in use, unloaded once idle for the keep-alive (never before it),
/// loaded again when used. Whether the model is loaded is checked while a stream
/// holds it, so a slow machine cannot make the check race the expiry.
#[test]
fn idle_models_unload_after_keep_alive() {
    let s = Server::start(&["--model", smollm().to_str().unwrap(), "--keep-alive", "1s"], &[]);
    let ps_count = || {
        let (_, t) = get(&s.url("/api/ps"));
        serde_json::from_str::<Value>(&t).unwrap()["models"].as_array().unwrap().len()
    };
    // EOS banned: the stream runs until this test lets it go.
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 400, "stream": true, "logit_bias": {"0": -100, "2": -100}});
    let resp = agent().post(&s.url("/v1/chat/completions")).header("content-type", "application/json").send(body.to_string()).unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut reader = resp.into_body().into_reader();
    let mut buf = [0u8; 512];
    for _ in 0..3 {
        assert!(reader.read(&mut buf).unwrap() > 0);
    }
    // In use for longer than the keep-alive: still loaded.
    std::thread::sleep(Duration::from_millis(1600));
    assert_eq!(ps_count(), 1, "unloaded while in use");
    drop(reader);
    let t0 = Instant::now();
    while ps_count() > 0 {
        assert!(t0.elapsed() < Duration::from_secs(30), "still loaded 30 s after its last use");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Logged once the engine has closed, just after /api/ps stops listing it.
    let line = loop {
        if let Some(l) = s.log_lines().into_iter().find(|l| l.contains("model_unloaded")) {
            break l;
        }
        assert!(t0.elapsed() < Duration::from_secs(40), "no model_unloaded log line");
        std::thread::sleep(Duration::from_millis(50));
    };
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["reason"], "keep-alive expired", "{line}");
    assert!(v["idle_s"].as_f64().unwrap() >= 1.0, "unloaded before its keep-alive: {line}");
    // Used again: loaded again.
    let (st, v) = post(&s.url("/v1/chat/completions"), &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(s.log_lines().iter().filter(|l| l.contains("\"event\":\"model_loaded\"")).count(), 2);
}

#[test]
fn the_chat_page_is_served_from_the_binary_and_loads_nothing_from_elsewhere() {
    let s = shared();
    let resp = agent().get(&s.url("/")).call().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers().get("content-type").unwrap().to_str().unwrap().starts_with("text/html"));
    assert!(resp.headers().get("content-security-policy").unwrap().to_str().unwrap().contains("default-src 'self'"));
    let page = resp.into_body().read_to_string().unwrap();
    assert!(page.contains("/v1/chat/completions") && page.contains("/v1/models"));
    for outside in ["<script src", "<link", "@import", "url(", "src=\"http", "src='http"] {
        assert!(!page.contains(outside), "the page loads something from elsewhere: {outside}");
    }
}

// ---------------------------------------------------------------------------
// Structured output and tool calls (issue 22).

/// Schemas whose every string is bounded, so a sampled reply completes within max_tokens.
fn schemas() -> Vec<Value> {
    vec![
        json!({"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
               "required": ["name", "age"], "additionalProperties": false}),
        json!({"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}, "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
               "score": {"type": "number", "minimum": -1, "maximum": 1}, "note": {"type": "string", "maxLength": 10}},
               "required": ["color", "tags", "score"], "additionalProperties": false}),
        json!({"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}, "inner": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": false}},
               "required": ["code", "inner"], "additionalProperties": false}),
    ]
}

fn validates(schema: &Value, text: &str) {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    let validator = jsonschema::validator_for(schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{text} does not validate against {schema}: {errors:?}");
}

#[test]
fn response_format_json_schema_output_parses_and_validates() {
    let s = shared();
    for (i, schema) in schemas().into_iter().enumerate() {
        let rf = json!({"type": "json_schema", "json_schema": {"name": format!("s{i}"), "schema": schema, "strict": true}});
        // Sampled (temperature 1, a seed per schema), not greedy: a 135M model's free output would not be this JSON.
        let body = chat_body("Describe something.", json!({"response_format": rf, "temperature": 1.0, "seed": 7 + i, "max_tokens": 200}));
        let (st, v) = post(&s.url("/v1/chat/completions"), &body);
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["choices"][0]["finish_reason"], "stop", "the grammar's end stops the reply: {v}");
        validates(&schema, v["choices"][0]["message"]["content"].as_str().unwrap());
        // Streamed: the deltas join into a reply that validates too (the same seed: the same reply).
        let mut sb = body.clone();
        sb["stream"] = json!(true);
        let (_, _, text) = post_raw(&s.url("/v1/chat/completions"), &sb.to_string(), None);
        let streamed: String = sse_events(&text)
            .iter()
            .filter(|e| *e != "[DONE]")
            .filter_map(|e| serde_json::from_str::<Value>(e).unwrap()["choices"][0]["delta"]["content"].as_str().map(str::to_string))
            .collect();
        assert_eq!(streamed, v["choices"][0]["message"]["content"].as_str().unwrap());
    }
    // json_object: one JSON object.
    let (_, v) = post(
        &s.url("/v1/chat/completions"),
        &chat_body("Hi", json!({"response_format": {"type": "json_object"}, "temperature": 1.0, "seed": 3, "max_tokens": 200})),
    );
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    if v["choices"][0]["finish_reason"] == "stop" {
        assert!(serde_json::from_str::<Value>(content).unwrap_or_else(|e| panic!("{e}: {content}")).is_object(), "{content}");
    } else {
        assert!(content.starts_with('{'), "{content}");
    }
    // Ollama's format: a schema, and "json".
    let schema = &schemas()[0];
    let b = json!({"model": SMOL, "messages": [{"role": "user", "content": "Describe a person."}], "format": schema, "stream": false, "options": {"seed": 5, "num_predict": 200}});
    let (st, v) = post(&s.url("/api/chat"), &b);
    assert_eq!(st, 200, "{v}");
    validates(schema, v["message"]["content"].as_str().unwrap());
    let g = json!({"model": SMOL, "prompt": "Describe a person.", "format": schema, "stream": false, "options": {"seed": 6, "num_predict": 200}});
    let (_, v) = post(&s.url("/api/generate"), &g);
    validates(schema, v["response"].as_str().unwrap());
    // A schema the engine cannot enforce is a 400 naming it, not an unconstrained answer.
    let bad = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "format": "no-such-format"}}});
    let (st, v) = post(&s.url("/v1/chat/completions"), &chat_body("Hi", json!({"response_format": bad})));
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"]["param"], "response_format.json_schema.schema", "{v}");
    let (st, v) = post(
        &s.url("/api/chat"),
        &json!({"model": SMOL, "messages": [{"role": "user", "content": "hi"}], "format": {"type": "string", "format": "no-such-format"}}),
    );
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].as_str().unwrap().starts_with("format:"), "{v}");
}

/// Qwen 3's chat template (it renders tools, tool calls and tool results), from the
/// fetched Qwen 3 tokenizer: SmolLM2's own template has no tools, and both speak ChatML.
fn tools_template() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let cfg = root().join(".cache/tokenizers/qwen3/tokenizer_config.json");
        let text = std::fs::read_to_string(&cfg).unwrap_or_else(|e| panic!("{}: {e} (run scripts/fetch-tokenizers)", cfg.display()));
        let v: Value = serde_json::from_str(&text).unwrap();
        let p = std::env::temp_dir().join(format!("gomlx-server-qwen3-{}.jinja", std::process::id()));
        std::fs::write(&p, v["chat_template"].as_str().unwrap()).unwrap();
        p
    })
    .clone()
}

/// SmolLM2 served with the Qwen 3 template (`--chat-template`).
fn tools_server() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| Server::start(&["--model", smollm().to_str().unwrap(), "--chat-template", tools_template().to_str().unwrap()], &[]))
}

fn weather_tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city", "parameters": {"type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}, "days": {"type": "integer", "minimum": 1, "maximum": 7}}, "required": ["city"], "additionalProperties": false}}},
        {"type": "function", "function": {"name": "get_time", "description": "The time in a time zone", "parameters": {"type": "object",
            "properties": {"zone": {"enum": ["UTC", "CET", "PST"]}}, "required": ["zone"], "additionalProperties": false}}}
    ])
}

fn params_of(name: &str) -> Value {
    weather_tools().as_array().unwrap().iter().find(|t| t["function"]["name"] == name).unwrap()["function"]["parameters"].clone()
}

#[test]
fn forced_tool_calls_come_back_structured_streaming_and_not() {
    let s = tools_server();
    let url = s.url("/v1/chat/completions");
    let ask = |choice: Value, seed: u64, stream: bool| {
        json!({"messages": [{"role": "user", "content": "What is the weather in Paris?"}], "tools": weather_tools(), "tool_choice": choice,
               "temperature": 1.0, "seed": seed, "max_tokens": 120, "stream": stream})
    };
    for (choice, want) in [(json!("required"), None), (json!({"type": "function", "function": {"name": "get_time"}}), Some("get_time"))] {
        for seed in [1u64, 2] {
            let (st, v) = post(&url, &ask(choice.clone(), seed, false));
            assert_eq!(st, 200, "{v}");
            let c = &v["choices"][0];
            assert_eq!(c["finish_reason"], "tool_calls", "{v}");
            assert!(c["message"]["content"].is_null(), "{v}");
            let calls = c["message"]["tool_calls"].as_array().unwrap();
            assert_eq!(calls.len(), 1, "{v}");
            assert_eq!(calls[0]["type"], "function");
            assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
            let name = calls[0]["function"]["name"].as_str().unwrap();
            if let Some(w) = want {
                assert_eq!(name, w);
            }
            validates(&params_of(name), calls[0]["function"]["arguments"].as_str().unwrap());

            // Streamed: deltas accumulated by index as OpenAI's clients do give the same call.
            let (st, _, text) = post_raw(&url, &ask(choice.clone(), seed, true).to_string(), None);
            assert_eq!(st, 200);
            let (mut id, mut fname, mut args, mut finishes) = (String::new(), String::new(), String::new(), Vec::new());
            for e in sse_events(&text).iter().filter(|e| *e != "[DONE]") {
                let ch = &serde_json::from_str::<Value>(e).unwrap()["choices"][0];
                for d in ch["delta"]["tool_calls"].as_array().into_iter().flatten() {
                    assert_eq!(d["index"], 0, "{d}");
                    id.push_str(d["id"].as_str().unwrap_or(""));
                    fname.push_str(d["function"]["name"].as_str().unwrap_or(""));
                    args.push_str(d["function"]["arguments"].as_str().unwrap_or(""));
                }
                assert!(ch["delta"]["content"].as_str().unwrap_or("").is_empty(), "no text around a forced call: {e}");
                if !ch["finish_reason"].is_null() {
                    finishes.push(ch["finish_reason"].clone());
                }
            }
            assert_eq!(finishes, vec![json!("tool_calls")]);
            assert_eq!((fname.as_str(), args.as_str()), (name, calls[0]["function"]["arguments"].as_str().unwrap()), "{text}");
            assert!(id.starts_with("call_"));
        }
    }
}

#[test]
fn tool_messages_reach_the_template_and_the_model_answers() {
    let s = tools_server();
    let call_args = json!({"city": "Paris"});
    let msgs = json!([
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": call_args.to_string()}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 24 C"}
    ]);
    let body = json!({"messages": msgs, "tools": weather_tools(), "tool_choice": "none", "temperature": 0, "max_tokens": 16});
    let (st, v) = post(&s.url("/v1/chat/completions"), &body);
    assert_eq!(st, 200, "{v}");
    assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
    assert!(v["choices"][0]["message"].get("tool_calls").is_none(), "{v}");
    // The prompt the server evaluated is the template's rendering of the call and its
    // result (rendered here from the same template and tokenizer, arguments as an object).
    let tok = gomlx::models::gguf::tokenizer(&gomlx::models::gguf::GgufModel::open(smollm()).unwrap()).unwrap();
    let tmpl = gomlx::text::ChatTemplate::new(std::fs::read_to_string(tools_template()).unwrap()).unwrap();
    let mut conv: Vec<gomlx::text::ChatMessage> = Vec::new();
    conv.push(gomlx::text::ChatMessage::user("What is the weather in Paris?"));
    conv.push(
        gomlx::text::ChatMessage::new("assistant", "")
            .with("tool_calls", json!([{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": call_args}}])),
    );
    conv.push(gomlx::text::ChatMessage::new("tool", "Sunny, 24 C").with("tool_call_id", "call_1"));
    // tool_choice none: the tools are not shown.
    let opts = gomlx::text::ChatOptions { add_generation_prompt: true, ..Default::default() };
    let text = tmpl.render(&conv, &opts, &tok.template_tokens()).unwrap();
    assert!(text.contains("<tool_call>") && text.contains("Sunny, 24 C") && text.contains("\"city\": \"Paris\""), "{text}");
    assert_eq!(v["usage"]["prompt_tokens"].as_u64().unwrap() as usize, tok.encode(&text, false).unwrap().len());
    // With the tools shown (auto), the prompt grows by the tools section.
    let mut auto = body.clone();
    auto["tool_choice"] = json!("auto");
    let (_, a) = post(&s.url("/v1/chat/completions"), &auto);
    let opts = gomlx::text::ChatOptions { add_generation_prompt: true, tools: Some(weather_tools().as_array().unwrap().clone()), ..Default::default() };
    let with_tools = tmpl.render(&conv, &opts, &tok.template_tokens()).unwrap();
    assert!(with_tools.contains("get_time"));
    assert_eq!(a["usage"]["prompt_tokens"].as_u64().unwrap() as usize, tok.encode(&with_tools, false).unwrap().len());
}

#[test]
fn ollama_tools_and_tool_results() {
    let s = tools_server();
    let base = json!({"model": SMOL, "tools": weather_tools(), "stream": false, "options": {"temperature": 0, "num_predict": 40}});
    let mut b = base.clone();
    b["messages"] = json!([{"role": "user", "content": "What is the weather in Paris?"}]);
    let (st, v) = post(&s.url("/api/chat"), &b);
    assert_eq!(st, 200, "{v}");
    // The model decides (Ollama has no tool_choice); a call it makes comes back structured.
    for c in v["message"]["tool_calls"].as_array().into_iter().flatten() {
        let name = c["function"]["name"].as_str().unwrap();
        assert!(c["function"]["arguments"].is_object(), "{c}");
        assert!(name == "get_weather" || name == "get_time", "{c}");
    }
    // Ollama's shape of a past call (arguments an object) and a tool result by name.
    b["messages"] = json!([
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "tool_name": "get_weather", "content": "Sunny, 24 C"}
    ]);
    let (st, v) = post(&s.url("/api/chat"), &b);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["done"], true);
    let (st, v) = post(&s.url("/api/show"), &json!({"model": SMOL}));
    assert_eq!(st, 200);
    assert!(v["capabilities"].as_array().unwrap().contains(&json!("tools")), "{v}");
}

#[test]
fn bad_structured_output_and_tool_fields_get_a_400_naming_the_field() {
    let s = tools_server();
    let good = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "tools": weather_tools()});
    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        b[k] = v;
        b
    };
    let bad_call = json!([{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": "{city"}}]}]);
    let table = [
        (with("response_format", json!({"type": "xml"})), "response_format.type"),
        (with("response_format", json!("json")), "response_format"),
        (with("response_format", json!({"type": "json_schema", "json_schema": {"name": "a", "schema": 5}})), "response_format.json_schema.schema"),
        (with("response_format", json!({"type": "json_schema", "json_schema": {"schema": {}}})), "response_format.json_schema.name"),
        (with("tools", json!("get_weather")), "tools"),
        (with("tools", json!([{"type": "function", "function": {}}])), "tools[0].function.name"),
        (with("tools", json!([{"type": "retrieval"}])), "tools[0].type"),
        (with("tools", json!([{"type": "function", "function": {"name": "f", "parameters": [1]}}])), "tools[0].function.parameters"),
        (with("tool_choice", json!("sometimes")), "tool_choice"),
        (with("tool_choice", json!(3)), "tool_choice"),
        (with("tool_choice", json!({"type": "function", "function": {"name": "nope"}})), "tool_choice.function.name"),
        (with("tools", json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "string", "format": "no-such"}}}}}]))
            .as_object()
            .map(|o| {
                let mut o = o.clone();
                o.insert("tool_choice".into(), json!("required"));
                Value::Object(o)
            })
            .unwrap(), "tools"),
        (with("messages", bad_call), "messages[1].tool_calls[0].function.arguments"),
        (with("messages", json!([{"role": "user", "content": "hi", "tool_calls": []}])), "messages[0].tool_calls"),
        (with("parallel_tool_calls", json!("yes")), "parallel_tool_calls"),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "tools": weather_tools(), "tool_choice": "required", "response_format": {"type": "json_object"}}),
            "tool_choice",
        ),
        (json!({"messages": [{"role": "user", "content": "hi"}], "tool_choice": "required"}), "tool_choice"),
    ];
    for (body, field) in &table {
        let (st, v) = post(&s.url("/v1/chat/completions"), body);
        assert_eq!(st, 400, "{body}: {v}");
        assert_eq!(v["error"]["param"], *field, "{body}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().starts_with(&format!("{field}:")), "{v}");
    }
    // A model whose template writes no tool calls gomlx can parse: `tools` is refused rather than ignored.
    let (st, v) =
        post(&shared().url("/v1/chat/completions"), &json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "tools": weather_tools()}));
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"]["param"], "tools");
    let (st, v) = post(&s.url("/api/chat"), &json!({"model": SMOL, "messages": [{"role": "user", "content": "hi"}], "format": "yaml"}));
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].as_str().unwrap().starts_with("format:"), "{v}");
    // Still serving.
    let (st, _) = post(&s.url("/v1/chat/completions"), &good);
    assert_eq!(st, 200);
}

/// A client that sends a non-streaming request and closes its connection: the
/// generation is cancelled at once and generates nothing more (its own server, so
/// the counters are this request's alone).
#[test]
fn a_client_that_disconnects_during_a_non_streaming_request_cancels_it() {
    let s = Server::start(&["--model", smollm().to_str().unwrap(), "--preload"], &[]);
    // EOS and end-of-text banned: left alone it would run to max_tokens.
    let body =
        json!({"messages": [{"role": "user", "content": "Write a long story."}], "max_tokens": 400, "temperature": 0, "logit_bias": {"0": -100, "2": -100}})
            .to_string();
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    std::io::Write::write_all(
        &mut conn,
        format!("POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
            .as_bytes(),
    )
    .unwrap();
    // Decoding has started.
    let t = Instant::now();
    while metric(&s, "gomlx_generated_tokens_total") < 3.0 {
        assert!(t.elapsed() < Duration::from_secs(60), "no tokens generated: {:?}", s.log_lines());
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(conn);
    let t = Instant::now();
    while metric(&s, "gomlx_cancelled_total") < 1.0 {
        assert!(t.elapsed() < Duration::from_secs(5), "the generation was not cancelled when its client went away");
        std::thread::sleep(Duration::from_millis(10));
    }
    let at_cancel = metric(&s, "gomlx_generated_tokens_total");
    // Nothing more is generated: at most the token of the step running when the flag was set.
    std::thread::sleep(Duration::from_millis(1500));
    let after = metric(&s, "gomlx_generated_tokens_total");
    assert!(after <= at_cancel + 1.0, "{at_cancel} tokens at cancellation, {after} later");
    assert_eq!(metric(&s, "gomlx_requests_in_flight"), 0.0);
    let line = s.log_lines().into_iter().find(|l| l.contains("\"finish\":\"client_gone\"")).expect("a client_gone log line");
    let v: Value = serde_json::from_str(&line).unwrap();
    assert!(v["completion_tokens"].as_u64().unwrap() < 400, "{line}");
}
