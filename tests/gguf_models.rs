//! The two real GGUF models against references from transformers (scripts/gguf-oracle).
//! The model files come from `scripts/fetch-models`; without them these tests fail.

use std::path::PathBuf;

use gomlx::models::gguf::{GgufModel, GgufTokenizer};
use serde_json::Value;

const SMOL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const GEMMA: &str = "gemma-3-270m-q4_k_m.gguf";

fn model_path(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/models").join(name);
    assert!(p.exists(), "{} is missing: run scripts/fetch-models first", p.display());
    p
}

fn fixture(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf").join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn check_tokenizer(model: &str, fixture_name: &str) -> GgufTokenizer {
    let m = GgufModel::open(model_path(model)).unwrap();
    let t = GgufTokenizer::from_gguf(&m.file).unwrap();
    let r = fixture(fixture_name);
    assert_eq!(t.bos.map(|b| b as u64), r["bos_token_id"].as_u64());
    assert_eq!(t.eos.first().map(|&e| e as u64), r["eos_token_id"].as_u64());
    assert_eq!(t.pad.map(|p| p as u64), r["pad_token_id"].as_u64());
    let mut bad = Vec::new();
    for row in r["corpus"].as_array().unwrap() {
        let text = row["text"].as_str().unwrap();
        for (special, key) in [(true, "ids"), (false, "ids_no_special")] {
            let got = t.tokenizer.encode(text, special).unwrap().get_ids().to_vec();
            let want = ids(&row[key]);
            if got != want {
                bad.push(format!("{text:?} (special tokens {special}):\n  got  {got:?}\n  want {want:?}"));
            }
        }
    }
    assert!(bad.is_empty(), "{model}: {} mismatches:\n{}", bad.len(), bad.join("\n"));
    t
}

/// Dequantised, fixed-up tensors equal transformers' (sum, first values, values at indices).
fn check_tensors(model: &str, fixture_name: &str) {
    let m = GgufModel::open(model_path(model)).unwrap();
    let r = fixture(fixture_name);
    let mut bad = Vec::new();
    for (name, want) in r["tensors"].as_object().unwrap() {
        let t = m.tensor(name).unwrap();
        let v = t.data.dequantize();
        let shape: Vec<u64> = t.data.shape().iter().map(|&d| d as u64).collect();
        let want_shape: Vec<u64> = want["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
        if shape != want_shape {
            bad.push(format!("{name}: shape {shape:?} != {want_shape:?}"));
            continue;
        }
        let first: Vec<f32> = want["first8"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        if v[..first.len()] != first[..] {
            bad.push(format!("{name} ({}): first values {:?} != {first:?}", t.ty, &v[..first.len()]));
        }
        for (i, x) in want["at"].as_object().unwrap() {
            let i: usize = i.parse().unwrap();
            let x = x.as_f64().unwrap() as f32;
            if v[i] != x {
                bad.push(format!("{name} ({}): [{i}] = {} != {x}", t.ty, v[i]));
            }
        }
        let sum: f64 = v.iter().map(|&x| x as f64).sum();
        let want_sum = want["sum"].as_f64().unwrap();
        if (sum - want_sum).abs() > 1e-9 * want_sum.abs().max(1.0) {
            bad.push(format!("{name} ({}): sum {sum} != {want_sum}", t.ty));
        }
    }
    assert!(bad.is_empty(), "{model}:\n{}", bad.join("\n"));
}

fn check_config(model: &str, fixture_name: &str) {
    let m = GgufModel::open(model_path(model)).unwrap();
    let r = fixture(fixture_name);
    let want = &r["config"];
    for key in [
        "model_type",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "intermediate_size",
        "max_position_embeddings",
        "vocab_size",
        "tie_word_embeddings",
        "sliding_window",
        "query_pre_attn_scalar",
        "hidden_activation",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
    ] {
        if want.get(key).is_none() || want[key].is_null() {
            continue;
        }
        assert_eq!(m.config[key], want[key], "{model}: config key {key}");
    }
    for key in ["rms_norm_eps", "rope_theta"] {
        if let Some(w) = want.get(key).and_then(Value::as_f64) {
            let g = m.config[key].as_f64().unwrap();
            assert!((g - w).abs() <= 1e-6 * w.abs(), "{model}: {key} {g} != {w}");
        }
    }
}

#[test]
fn smollm2_tokenizer_matches_transformers() {
    let t = check_tokenizer(SMOL, "smollm2_tokenizer.json");
    assert!(!t.add_bos);
    assert!(t.chat_template.as_deref().unwrap_or("").contains("<|im_start|>"));
    // The chat prompt's ids.
    let r = fixture("smollm2_reference.json");
    let rendered = r["chat"]["rendered"].as_str().unwrap();
    let got = t.tokenizer.encode(rendered, false).unwrap().get_ids().to_vec();
    assert_eq!(got, ids(&r["chat"]["ids"]));
    // The reference answer decodes to its text and names Paris.
    let answer = t.tokenizer.decode(&ids(&r["chat"]["greedy_ids"]), true).unwrap();
    assert_eq!(answer, r["chat"]["greedy_text"].as_str().unwrap().replace("<|im_end|>", ""));
    assert!(answer.contains("Paris"), "{answer}");
}

#[test]
fn gemma3_tokenizer_matches_transformers() {
    let t = check_tokenizer(GEMMA, "gemma3_tokenizer.json");
    assert!(t.add_bos);
    assert_eq!(t.bos, Some(2));
    let r = fixture("gemma3_reference.json");
    let prompt = r["plain"]["prompt"].as_str().unwrap();
    assert_eq!(t.tokenizer.encode(prompt, true).unwrap().get_ids().to_vec(), ids(&r["plain"]["ids"]));
}

#[test]
fn smollm2_tensors_match_transformers() {
    check_tensors(SMOL, "smollm2_reference.json");
}

#[test]
fn gemma3_tensors_match_transformers() {
    check_tensors(GEMMA, "gemma3_reference.json");
}

#[test]
fn smollm2_config_matches_transformers() {
    check_config(SMOL, "smollm2_reference.json");
}

#[test]
fn gemma3_config_matches_transformers() {
    check_config(GEMMA, "gemma3_reference.json");
}

#[test]
fn every_tensor_decodes() {
    for name in [SMOL, GEMMA] {
        let m = GgufModel::open(model_path(name)).unwrap();
        let mut n = 0;
        for (hf, info) in m.names().unwrap() {
            let d = m.load(info).unwrap();
            assert_eq!(d.len() as u64, info.n_elements(), "{hf}");
            n += 1;
        }
        assert_eq!(n, m.file.tensors.len(), "{name}: every tensor maps to a parameter");
    }
}

/// A rank of a split model decodes only its part of each tensor: the bytes of
/// its rows (q/k/v/gate/up, embedding rows) or of its columns in each row
/// (o/down), the norms whole; counted per tensor against the shapes.
#[test]
fn a_rank_of_a_split_model_reads_only_its_bytes() {
    use gomlx::mlx::distributed::Group;
    use gomlx::models::gguf::{config, split_weights};
    use gomlx::models::shard::Shard;
    // (file, ranks, rank): SmolLM2's 9 heads and 3 kv heads in 3; Gemma 3's 4 heads in 2, its one kv head whole on each.
    for (name, size, rank) in [(SMOL, 3u64, 1usize), (GEMMA, 2, 0)] {
        let g = GgufModel::open(model_path(name)).unwrap();
        let c = config(&g).unwrap();
        let group = std::sync::Arc::new(Group::init("any", false).unwrap());
        let shard = Shard {
            group,
            rank,
            size: size as usize,
            heads: c.num_heads,
            kv_heads: c.num_kv_heads,
            vocab: c.vocab_size,
            experts: 0,
            moe: gomlx::models::shard::MoeSplit::Experts,
            experts_in_out: false,
            gemma4: None,
            linear: None,
            intermediate: c.intermediate_size,
        };
        let split = split_weights(&g, c.clone(), &shard).unwrap();
        let (mut read, mut whole) = (0u64, 0u64);
        for (hf, info) in g.names().unwrap() {
            let (block, bsize) = info.ty.block();
            let shape = info.shape();
            let row = |cols: usize| (cols / block * bsize) as u64;
            let want = match shape[..] {
                [_] => info.size,
                [_, cols] if hf.contains("k_proj") || hf.contains("v_proj") => {
                    if c.num_kv_heads < size as usize {
                        info.size
                    } else {
                        shape[0] as u64 / size * row(cols)
                    }
                }
                [_, cols] if hf.contains("o_proj") || hf.contains("down_proj") => shape[0] as u64 * row(cols / size as usize),
                [rows, cols] => rows as u64 / size * row(cols),
                _ => panic!("{hf}: shape {shape:?}"),
            };
            assert_eq!(split.read[&hf], want, "{name} {hf}");
            (read, whole) = (read + want, whole + info.size);
        }
        eprintln!("{name}: rank {rank} of {size} decodes {read} of {whole} bytes of tensor data ({:.1}%)", 100.0 * read as f64 / whole as f64);
        assert!(read * size <= whole + whole / 50, "{name}: {read} bytes of {whole}");
    }
}
