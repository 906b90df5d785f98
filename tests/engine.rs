//! The engine on the oracle fixtures and the real SmolLM2: sampling through
//! the engine, stop strings, cancellation, sessions, classify, batch
//! generate, concurrency and memory.

use gomlx::engine::{ClassifyOptions, Engine, EngineOptions, FinishReason, GenerateOptions};
use gomlx::mlx::{io, Array, DeviceKind};
use gomlx::models::{LoadOptions, Logits, Model};
use gomlx::sample::SamplerConfig;
use gomlx::text::{ChatMessage, ChatOptions};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(case)
}

fn smollm2() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "{} is missing: run scripts/fetch-models", p.display());
    p
}

fn cpu() -> EngineOptions {
    EngineOptions { device: Some(DeviceKind::Cpu), ..Default::default() }
}

fn inputs(case: &str) -> (Vec<u32>, Vec<u32>) {
    let st = io::load_safetensors(&fixture(case).join("reference.safetensors")).unwrap();
    let ids = |n: &str| st.tensors[n].to_vec::<i32>().unwrap().into_iter().map(|v| v as u32).collect::<Vec<_>>();
    (ids("inputs"), ids("greedy"))
}

fn run(engine: &Engine, prompt: &[u32], opts: &GenerateOptions) -> (Vec<u32>, FinishReason) {
    let mut g = engine.generate_tokens(prompt.to_vec(), opts).unwrap();
    let (_, ids) = g.collect_text().unwrap();
    (ids, g.finish_reason().unwrap())
}

#[test]
fn seeded_sampling_is_reproducible_and_top_k_1_is_greedy() {
    let engine = Engine::load(&fixture("qwen3_qknorm"), &cpu()).unwrap();
    let (prompt, greedy) = inputs("qwen3_qknorm");
    let sampled = |seed| GenerateOptions {
        max_tokens: 24,
        ignore_eos: true,
        sampler: SamplerConfig { temperature: 1.5, seed: Some(seed), ..Default::default() },
        ..Default::default()
    };
    let a = run(&engine, &prompt, &sampled(7)).0;
    let b = run(&engine, &prompt, &sampled(7)).0;
    let c = run(&engine, &prompt, &sampled(8)).0;
    assert_eq!(a, b);
    assert_ne!(a, c);
    let top1 = GenerateOptions {
        max_tokens: 32,
        ignore_eos: true,
        sampler: SamplerConfig { temperature: 1.0, top_k: 1, seed: Some(3), ..Default::default() },
        ..Default::default()
    };
    assert_eq!(run(&engine, &prompt, &top1).0, greedy);
    let (ids, reason) = run(&engine, &prompt, &GenerateOptions { max_tokens: 5, ignore_eos: true, ..Default::default() });
    assert_eq!((ids.as_slice(), reason), (&greedy[..5], FinishReason::Length));
}

#[test]
fn chunked_prefill_gives_the_same_stream() {
    let engine = Engine::load(&fixture("gemma3_text"), &cpu()).unwrap();
    let (prompt, greedy) = inputs("gemma3_text");
    for chunk in [1, 7, 512] {
        let opts = GenerateOptions { max_tokens: 32, ignore_eos: true, prefill_chunk: chunk, ..Default::default() };
        assert_eq!(run(&engine, &prompt, &opts).0, greedy, "prefill chunk {chunk}");
    }
}

#[test]
fn bad_requests_are_errors() {
    let engine = Engine::load(&fixture("llama_tied"), &cpu()).unwrap();
    let err = |r: gomlx::Result<gomlx::engine::Generation>| r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err(engine.generate_tokens(vec![], &GenerateOptions::default())).contains("empty"));
    assert!(err(engine.generate_tokens(vec![99999], &GenerateOptions::default())).contains("outside the vocabulary"));
    let bad = GenerateOptions { sampler: SamplerConfig { temperature: -1.0, ..Default::default() }, ..Default::default() };
    assert!(err(engine.generate_tokens(vec![1], &bad)).contains("temperature"));
    assert!(err(engine.generate("hello", &GenerateOptions::default())).contains("no tokenizer"));
    let long = vec![1u32; 2000];
    let mut g = engine.generate_tokens(long, &GenerateOptions::default()).unwrap();
    let e = g.next().unwrap().unwrap_err().to_string();
    assert!(e.contains("context length"), "{e}");
    // The engine keeps serving after errors.
    assert_eq!(run(&engine, &[1, 2, 3], &GenerateOptions { max_tokens: 2, ignore_eos: true, ..Default::default() }).0.len(), 2);
    engine.close();
    assert!(err(engine.generate_tokens(vec![1], &GenerateOptions::default())).contains("closed"));
}

#[test]
fn cancel_from_another_thread_ends_within_a_step() {
    // A real model: its steps (tens of ms) are far longer than this thread's
    // wake-ups, so tokens do not pile up in the channel unread.
    let engine = Engine::load(&smollm2(), &cpu()).unwrap();
    let opts = GenerateOptions { max_tokens: 100_000, ignore_eos: true, ..Default::default() };
    let mut g = engine.generate_tokens(vec![1, 2, 3], &opts).unwrap();
    let flag = g.canceller();
    let mut n = 0;
    let mut cancelled_at = None;
    loop {
        let asked = Instant::now();
        let Some(t) = g.next() else { break };
        t.unwrap();
        n += 1;
        // Cancel once this thread has caught up with the engine (it had to wait
        // for the token), so no tokens made before the flag sit in the channel:
        // on a loaded machine the engine can run many tokens ahead of the reader.
        let waited = asked.elapsed() >= std::time::Duration::from_millis(1);
        if cancelled_at.is_none() && n >= 10 && (waited || n == 5_000) {
            let f = flag.clone();
            std::thread::spawn(move || f.store(true, Ordering::Relaxed)).join().unwrap();
            cancelled_at = Some(n);
        }
    }
    assert_eq!(g.finish_reason(), Some(FinishReason::Cancelled));
    // At most the token already in flight arrives after the flag is set.
    let at = cancelled_at.unwrap();
    assert!(n <= at + 2, "{} tokens after the flag (set at token {at})", n - at);
}

#[test]
fn concurrent_generations_interleave_and_match_sequential_runs() {
    let engine = Engine::load(&fixture("qwen2_bias"), &cpu()).unwrap();
    let (prompt, greedy) = inputs("qwen2_bias");
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let e = engine.clone();
            let p = prompt[i..].to_vec();
            std::thread::spawn(move || {
                let opts = GenerateOptions { max_tokens: 32, ignore_eos: true, ..Default::default() };
                let mut g = e.generate_tokens(p, &opts).unwrap();
                let mut stamps = Vec::new();
                let mut ids = Vec::new();
                for t in g.by_ref() {
                    ids.push(t.unwrap().id);
                    stamps.push(Instant::now());
                }
                (ids, stamps)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results[0].0, greedy);
    for (i, (ids, _)) in results.iter().enumerate() {
        let want = run(&engine, &prompt[i..], &GenerateOptions { max_tokens: 32, ignore_eos: true, ..Default::default() }).0;
        assert_eq!(ids, &want, "request {i}");
    }
    // Fair interleaving: no request finished before every other one had started streaming.
    let last_first = results.iter().map(|(_, s)| s[0]).max().unwrap();
    let first_last = results.iter().map(|(_, s)| *s.last().unwrap()).min().unwrap();
    assert!(last_first < first_last, "a request ran to completion before another started");
}

fn unbatched_last_logits(model: &Model, prompt: &[u32]) -> Vec<f32> {
    let mut c = model.new_caches();
    let x = Array::from_slice(prompt, &[1, prompt.len() as i32]).unwrap();
    model.forward(&x, &mut c, None, Logits::Last).unwrap().to_vec::<f32>().unwrap()
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn classify_equals_unbatched_forward_with_and_without_shared_prefix() {
    // Qwen 3.5: the shared prefix's recurrent states broadcast to every row, rows right-padded.
    for case in ["llama_rope_llama3", "gemma3_text", "qwen3_5"] {
        let engine = Engine::load(&fixture(case), &cpu()).unwrap();
        let model = Model::load(&fixture(case), &LoadOptions::default()).unwrap();
        let (base, _) = inputs(case);
        // Different lengths; the first 10 tokens are shared (Gemma's window is 8).
        let prompts: Vec<Vec<u32>> = (0..7).map(|i| base[..10 + i * 2].iter().chain(&base[i..i + 1]).cloned().collect()).collect();
        for no_shared_prefix in [false, true] {
            for batch_size in [None, Some(3)] {
                let opts = ClassifyOptions { return_logits: true, logprobs: true, no_shared_prefix, batch_size, ..Default::default() };
                let (res, m) = engine.classify_tokens(prompts.clone(), None, &opts).unwrap();
                assert_eq!(m.shared_prefix_tokens, if no_shared_prefix { 0 } else { 10 });
                for (p, r) in prompts.iter().zip(&res) {
                    let want = unbatched_last_logits(&model, p);
                    let got = r.logits.as_ref().unwrap();
                    assert!(max_rel(got, &want) < 1e-5, "{case}: batched logits differ: {}", max_rel(got, &want));
                    let argmax = want.iter().enumerate().fold(0, |b, (i, v)| if *v > want[b] { i } else { b });
                    assert_eq!(r.token as usize, argmax);
                    assert!(r.logprob.unwrap() <= 0.0);
                }
            }
        }
    }
}

#[test]
fn classify_with_labels_on_smollm2() {
    let engine = Engine::load(&smollm2(), &cpu()).unwrap();
    let tok = engine.tokenizer().unwrap().clone();
    let prompts: Vec<String> = ["Paris is in France.", "Berlin is in Germany.", "The sky is green."]
        .iter()
        .map(|s| {
            let m = vec![ChatMessage::user(&format!("Answer yes or no. Is this statement true? {s}"))];
            tok.apply_chat_template(&m, &ChatOptions { add_generation_prompt: true, ..Default::default() }, &Default::default()).unwrap()
        })
        .collect();
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let labels = vec!["Yes".to_string(), "No".to_string()];
    let (res, m) = engine.classify(&refs, &ClassifyOptions { labels: Some(labels.clone()), ..Default::default() }).unwrap();
    assert_eq!(m.prompts, 3);
    assert!(m.shared_prefix_tokens > 10, "the instruction is shared: {}", m.shared_prefix_tokens);
    for r in &res {
        let p = r.label_probs.as_ref().unwrap();
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(labels.contains(r.label.as_ref().unwrap()));
        assert_eq!(r.text, tok.decode(&[r.token], false).unwrap());
    }
    let bad = ClassifyOptions { labels: Some(vec!["Yes".into(), "Yes please".into()]), ..Default::default() };
    assert!(engine.classify(&refs, &bad).unwrap_err().to_string().contains("start with the same token"));
}

#[test]
fn batch_generate_equals_individual_greedy_runs() {
    for case in ["llama_tied", "gemma3_text"] {
        let engine = Engine::load(&fixture(case), &cpu()).unwrap();
        let (base, _) = inputs(case);
        let prompts: Vec<Vec<u32>> = vec![base.clone(), base[5..].to_vec(), base[..9].to_vec(), base[2..20].to_vec()];
        let lengths = [12usize, 20, 5, 16];
        for (i, max) in lengths.iter().enumerate() {
            let opts = GenerateOptions { max_tokens: *max, ignore_eos: true, ..Default::default() };
            let (out, m) = engine.batch_generate_tokens(vec![prompts[i].clone()], &opts).unwrap();
            assert_eq!(out[0].tokens, run(&engine, &prompts[i], &opts).0, "{case}: single-row batch {i}");
            assert_eq!(m.generated_tokens, *max);
        }
        let opts = GenerateOptions { max_tokens: 20, ignore_eos: true, ..Default::default() };
        let (out, m) = engine.batch_generate_tokens(prompts.clone(), &opts).unwrap();
        assert_eq!(m.prompts, 4);
        for (i, p) in prompts.iter().enumerate() {
            assert_eq!(out[i].tokens, run(&engine, p, &opts).0, "{case}: row {i}");
            assert_eq!(out[i].finish_reason, FinishReason::Length);
        }
    }
}

#[test]
fn stop_strings_spanning_tokens_are_caught_and_not_emitted() {
    let engine = Engine::load(&smollm2(), &cpu()).unwrap();
    let msgs = vec![ChatMessage::user("What is the capital of France?")];
    let opts = GenerateOptions { max_tokens: 32, stop: vec!["France is P".into()], ..Default::default() };
    let mut g = engine.chat(&msgs, &opts, &ChatOptions::default(), None).unwrap();
    let (text, ids) = g.collect_text().unwrap();
    assert_eq!(g.finish_reason(), Some(FinishReason::Stop));
    assert_eq!(text, "The capital of ");
    // "France is P" spans the tokens " France", " is" and " Paris".
    assert!(ids.len() >= 6, "{ids:?}");
}

#[test]
fn second_chat_turn_encodes_only_new_tokens() {
    let engine = Engine::load(&smollm2(), &cpu()).unwrap();
    let session = engine.new_session().unwrap();
    let opts = GenerateOptions { max_tokens: 24, ..Default::default() };
    let mut history = vec![ChatMessage::user("What is the capital of France?")];
    let mut g = engine.chat(&history, &opts, &ChatOptions::default(), Some(&session)).unwrap();
    let (answer, _) = g.collect_text().unwrap();
    assert_eq!(answer, "The capital of France is Paris.");
    let first = g.metrics().unwrap().clone();
    assert_eq!(first.prompt_tokens_evaluated, first.prompt_tokens);
    history.push(ChatMessage::assistant(&answer));
    history.push(ChatMessage::user("And of Germany?"));
    let mut g2 = engine.chat(&history, &opts, &ChatOptions::default(), Some(&session)).unwrap();
    let (second, ids2) = g2.collect_text().unwrap();
    let m2 = g2.metrics().unwrap().clone();
    let tok = engine.tokenizer().unwrap();
    let full = tok.encode_chat(&history, &ChatOptions { add_generation_prompt: true, ..Default::default() }, &Default::default()).unwrap();
    assert_eq!(m2.prompt_tokens, full.len());
    // Only what follows the cached first turn is evaluated: the new user turn
    // and at most the end-of-turn tokens after the cached answer.
    let new_turn = tok.encode("<|im_start|>user\nAnd of Germany?<|im_end|>\n<|im_start|>assistant\n", false).unwrap().len();
    assert!(
        m2.prompt_tokens_evaluated <= new_turn + 3 && m2.prompt_tokens_evaluated >= new_turn,
        "{} evaluated, new turn {new_turn}",
        m2.prompt_tokens_evaluated
    );
    // Same tokens as encoding the whole history without a session.
    let mut g3 = engine.chat(&history, &opts, &ChatOptions::default(), None).unwrap();
    let (third, ids3) = g3.collect_text().unwrap();
    assert_eq!(ids2, ids3);
    assert_eq!(second, third);
}
