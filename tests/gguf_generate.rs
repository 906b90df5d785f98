//! The two real GGUF models load and generate through the engine; greedy
//! output is compared with transformers loading the same file (dequantised,
//! float32), references in tests/fixtures/gguf/ made by scripts/gguf-oracle.

use gomlx::engine::{Engine, EngineOptions, FinishReason, GenerateOptions};
use gomlx::text::{ChatMessage, ChatOptions};
use serde_json::Value;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model(file: &str) -> PathBuf {
    let p = root().join(".cache/models").join(file);
    assert!(p.is_file(), "{} is missing: run scripts/fetch-models", p.display());
    p
}

fn reference(name: &str) -> Value {
    let text = std::fs::read_to_string(root().join("tests/fixtures/gguf").join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn smollm2_answers_paris_like_transformers() {
    let r = reference("smollm2_reference.json");
    let chat = &r["chat"];
    let engine = Engine::load(&model("SmolLM2-135M-Instruct.Q4_1.gguf"), &EngineOptions::default()).unwrap();
    let info = engine.info();
    assert_eq!((info.architecture.as_str(), info.num_layers, info.hidden_size, info.vocab_size), ("llama", 30, 576, 49152));
    let tok = engine.tokenizer().unwrap();
    let messages = vec![ChatMessage::user("What is the capital of France?")];
    let opts = ChatOptions { add_generation_prompt: true, ..Default::default() };
    let rendered = tok.apply_chat_template(&messages, &opts, &Default::default()).unwrap();
    assert_eq!(rendered, chat["rendered"].as_str().unwrap());
    let mut g = engine.chat(&messages, &GenerateOptions { max_tokens: 32, ..Default::default() }, &ChatOptions::default(), None).unwrap();
    let (text, got) = g.collect_text().unwrap();
    let want = ids(&chat["greedy_ids"]);
    // The reference ends with <|im_end|> (EOS), which ends our stream and is not emitted.
    assert_eq!(got, want[..want.len() - 1]);
    assert_eq!(text, "The capital of France is Paris.");
    assert_eq!(g.finish_reason(), Some(FinishReason::Eos));
    let m = g.metrics().unwrap();
    assert_eq!(m.prompt_tokens, ids(&chat["ids"]).len());
    assert_eq!(m.generated_tokens, want.len());
    assert!(m.prefill_tokens_per_s > 0.0 && m.decode_tokens_per_s > 0.0);
}

#[test]
fn gemma3_270m_continues_like_transformers() {
    let r = reference("gemma3_reference.json");
    let plain = &r["plain"];
    let engine = Engine::load(&model("gemma-3-270m-q4_k_m.gguf"), &EngineOptions::default()).unwrap();
    let info = engine.info();
    assert_eq!((info.architecture.as_str(), info.num_layers, info.head_dim, info.sliding_window), ("gemma3_text", 18, 256, Some(512)));
    let prompt_ids = engine.tokenizer().unwrap().encode(plain["prompt"].as_str().unwrap(), true).unwrap();
    assert_eq!(prompt_ids, ids(&plain["ids"]));
    let want = ids(&plain["greedy_ids"]);
    let mut g = engine.generate_tokens(prompt_ids, &GenerateOptions { max_tokens: want.len(), ..Default::default() }).unwrap();
    let (text, got) = g.collect_text().unwrap();
    // Quantised matmuls and the float32 dequantised reference may round apart:
    // report the first divergence, and require a long common prefix.
    let same = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
    if same < want.len() {
        eprintln!("gemma3 270m: first divergence at token {same}: got {:?}, reference {:?}", &got[same..], &want[same..]);
    }
    assert!(same >= 16, "only {same} tokens agree: {text:?}");
    assert!(text.starts_with(" the capital of the country of France."), "{text:?}");
}

#[test]
fn mlx_reader_and_gomlx_decoders_give_the_same_weights() {
    use gomlx::mlx::dequantize;
    use gomlx::models::gguf::{config_and_weights, is_native, GgufModel, Reader};
    let g = GgufModel::open(model("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    assert!(is_native(&g).unwrap(), "SmolLM2 is Q4_1 + Q8_0: MLX's reader loads it");
    let (ca, _) = config_and_weights(&g, Reader::Mlx).unwrap();
    let (cb, _) = config_and_weights(&g, Reader::Gomlx).unwrap();
    assert_eq!(ca.quantization, cb.quantization);
    // Compare a few modules tensor by tensor, dequantised (q/k carry the un-permutation).
    let mut wa = config_and_weights(&g, Reader::Mlx).unwrap().1;
    let mut wb = config_and_weights(&g, Reader::Gomlx).unwrap().1;
    for m in ["model.layers.0.self_attn.q_proj", "model.layers.3.self_attn.k_proj", "model.layers.7.mlp.down_proj", "model.embed_tokens"] {
        let q = ca.quantization.for_module(m).expect("quantised module");
        let deq = |w: &mut gomlx::models::weights::Weights| {
            let (wt, s, b) = (w.take(&format!("{m}.weight")).unwrap(), w.take(&format!("{m}.scales")).unwrap(), w.take(&format!("{m}.biases")).unwrap());
            let f = gomlx::mlx::Dtype::F32;
            dequantize(&wt, &s.astype(f).unwrap(), &b.astype(f).unwrap(), q.group_size, q.bits, Some(f)).unwrap().to_vec::<f32>().unwrap()
        };
        assert_eq!(deq(&mut wa), deq(&mut wb), "{m}");
    }
    let na = wa.take("model.norm.weight").unwrap().to_vec::<f32>().unwrap();
    assert_eq!(na, wb.take("model.norm.weight").unwrap().to_vec::<f32>().unwrap());
    // A file with other types is refused by the MLX path, by name.
    let gemma = GgufModel::open(model("gemma-3-270m-q4_k_m.gguf")).unwrap();
    assert!(!is_native(&gemma).unwrap());
    let err = config_and_weights(&gemma, Reader::Mlx).err().unwrap().to_string();
    assert!(err.contains("Q4_0, Q4_1 and Q8_0"), "{err}");
}
