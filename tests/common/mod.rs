//! Helpers shared by integration tests: tiny random models written on the fly,
//! and `f32` arrays built and compared.
#![allow(dead_code)]

use gomlx::mlx::{io, random, Array, Dtype};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gomlx-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub const TINY_LLAMA: &str = r#"{
  "model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2,
  "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 64,
  "vocab_size": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
  "max_position_embeddings": 256, "tie_word_embeddings": false, "torch_dtype": "float32"
}"#;

/// The tensors of TINY_LLAMA with random values.
pub fn tiny_llama_tensors() -> BTreeMap<String, Array> {
    let (h, i, v, hd, nh, nkv) = (32, 64, 64, 8, 4, 2);
    let key = random::key(1).unwrap();
    let mut n = 0u64;
    let mut rnd = |shape: &[i32]| {
        n += 1;
        let (k, _) = random::split(&random::split(&key).unwrap().0.add(&Array::scalar(n as u32)).unwrap()).unwrap();
        random::normal(shape, Dtype::F32, 0.0, 0.1, Some(&k)).unwrap()
    };
    let mut t = BTreeMap::new();
    t.insert("model.embed_tokens.weight".to_string(), rnd(&[v, h]));
    t.insert("lm_head.weight".to_string(), rnd(&[v, h]));
    t.insert("model.norm.weight".to_string(), rnd(&[h]).add_scalar(1.0).unwrap());
    for l in 0..2 {
        let p = format!("model.layers.{l}");
        t.insert(format!("{p}.self_attn.q_proj.weight"), rnd(&[nh * hd, h]));
        t.insert(format!("{p}.self_attn.k_proj.weight"), rnd(&[nkv * hd, h]));
        t.insert(format!("{p}.self_attn.v_proj.weight"), rnd(&[nkv * hd, h]));
        t.insert(format!("{p}.self_attn.o_proj.weight"), rnd(&[h, nh * hd]));
        t.insert(format!("{p}.mlp.gate_proj.weight"), rnd(&[i, h]));
        t.insert(format!("{p}.mlp.up_proj.weight"), rnd(&[i, h]));
        t.insert(format!("{p}.mlp.down_proj.weight"), rnd(&[h, i]));
        t.insert(format!("{p}.input_layernorm.weight"), rnd(&[h]).add_scalar(1.0).unwrap());
        t.insert(format!("{p}.post_attention_layernorm.weight"), rnd(&[h]).add_scalar(1.0).unwrap());
    }
    t
}

pub fn write_model(dir: &Path, config: &str, tensors: &BTreeMap<String, Array>) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config).unwrap();
    io::save_safetensors(&dir.join("model.safetensors"), tensors, &BTreeMap::new()).unwrap();
}

pub fn arr(v: &[f32], shape: &[i32]) -> Array {
    Array::from_slice(v, shape).unwrap()
}

/// Deterministic pseudo-random values in [-1, 1).
pub fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Asserts a and b agree elementwise within tol, relative to b.
pub fn close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "index {i}: {x} vs {y}");
    }
}
