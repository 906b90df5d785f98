//! The GGUF reader on small files built here: values, alignment, offsets, and every error.

use std::path::PathBuf;

use gomlx::models::gguf::{hf_config, GgmlType, GgufFile, GgufModel, TensorData, Value};

/// A minimal GGUF writer for tests.
struct W {
    version: u32,
    kv: Vec<(String, u32, Vec<u8>)>,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
    alignment: u64,
}

fn s(x: &str) -> Vec<u8> {
    let mut v = (x.len() as u64).to_le_bytes().to_vec();
    v.extend(x.as_bytes());
    v
}

impl W {
    fn new() -> Self {
        W { version: 3, kv: vec![], tensors: vec![], alignment: 32 }
    }
    fn kv(mut self, k: &str, ty: u32, v: Vec<u8>) -> Self {
        self.kv.push((k.into(), ty, v));
        self
    }
    fn str(self, k: &str, v: &str) -> Self {
        self.kv(k, 8, s(v))
    }
    fn u32(self, k: &str, v: u32) -> Self {
        self.kv(k, 4, v.to_le_bytes().to_vec())
    }
    fn f32(self, k: &str, v: f32) -> Self {
        self.kv(k, 6, v.to_le_bytes().to_vec())
    }
    fn tensor(mut self, name: &str, dims: &[u64], ty: u32, data: Vec<u8>) -> Self {
        self.tensors.push((name.into(), dims.to_vec(), ty, data));
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(self.version.to_le_bytes());
        b.extend((self.tensors.len() as u64).to_le_bytes());
        b.extend((self.kv.len() as u64).to_le_bytes());
        for (k, ty, v) in &self.kv {
            b.extend(s(k));
            b.extend(ty.to_le_bytes());
            b.extend(v);
        }
        let a = self.alignment as usize;
        let mut offset = 0usize;
        let mut offsets = vec![];
        for (_, _, _, data) in &self.tensors {
            offsets.push(offset);
            offset = (offset + data.len()).div_ceil(a) * a;
        }
        for ((name, dims, ty, _), off) in self.tensors.iter().zip(&offsets) {
            b.extend(s(name));
            b.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(ty.to_le_bytes());
            b.extend((*off as u64).to_le_bytes());
        }
        let start = b.len().div_ceil(a) * a;
        b.resize(start, 0);
        for ((_, _, _, data), off) in self.tensors.iter().zip(&offsets) {
            b.resize(start + off, 0);
            b.extend(data);
        }
        b
    }
}

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gomlx-gguf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    // Written aside then renamed: tests running at once may write the same file, and
    // one must never read another's half-written copy.
    let tmp = dir.join(format!("{name}.{:?}", std::thread::current().id()));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, &p).unwrap();
    p
}

fn open_err(name: &str, bytes: &[u8]) -> String {
    GgufFile::open(write(name, bytes)).unwrap_err().to_string()
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A tiny llama model: 2 heads of dim 4, 1 KV head, hidden 8, vocab 4.
fn tiny_llama() -> W {
    let q: Vec<f32> = (0..64).map(|i| i as f32).collect();
    let k: Vec<f32> = (0..32).map(|i| 100.0 + i as f32).collect();
    W::new()
        .str("general.architecture", "llama")
        .u32("llama.block_count", 1)
        .u32("llama.context_length", 128)
        .u32("llama.embedding_length", 8)
        .u32("llama.feed_forward_length", 16)
        .u32("llama.attention.head_count", 2)
        .u32("llama.attention.head_count_kv", 1)
        .f32("llama.rope.freq_base", 10000.0)
        .f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        .tensor("token_embd.weight", &[8, 4], 0, f32s(&[0.5; 32]))
        .tensor("blk.0.attn_q.weight", &[8, 8], 0, f32s(&q))
        .tensor("blk.0.attn_k.weight", &[8, 4], 0, f32s(&k))
}

#[test]
fn reads_metadata_tensors_and_alignment() {
    let mut strings = 8u32.to_le_bytes().to_vec(); // array of strings
    strings.extend(3u64.to_le_bytes());
    for t in ["a", "βγ", ""] {
        strings.extend(s(t));
    }
    let mut nested = 9u32.to_le_bytes().to_vec(); // array of arrays of i16
    nested.extend(1u64.to_le_bytes());
    nested.extend(3u32.to_le_bytes());
    nested.extend(2u64.to_le_bytes());
    nested.extend((-5i16).to_le_bytes());
    nested.extend(7i16.to_le_bytes());
    let mut w = W::new()
        .u32("general.alignment", 64)
        .kv("u8", 0, vec![200])
        .kv("i8", 1, vec![0xFF])
        .kv("u64", 10, u64::MAX.to_le_bytes().to_vec())
        .kv("i64", 11, (-3i64).to_le_bytes().to_vec())
        .kv("f64", 12, 0.1f64.to_le_bytes().to_vec())
        .kv("bool", 7, vec![1])
        .str("name", "tiny")
        .kv("strings", 9, strings)
        .kv("nested", 9, nested)
        .tensor("a", &[32, 2], 8, vec![0u8; 2 * 34])
        .tensor("b", &[3], 0, f32s(&[1.0, 2.0, 3.0]));
    w.alignment = 64;
    let f = GgufFile::open(write("ok.gguf", &w.bytes())).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, 64);
    assert_eq!(f.data_offset % 64, 0);
    assert_eq!(f.get("u8"), Some(&Value::U8(200)));
    assert_eq!(f.get("i8"), Some(&Value::I8(-1)));
    assert_eq!(f.get("u64"), Some(&Value::U64(u64::MAX)));
    assert_eq!(f.get("i64"), Some(&Value::I64(-3)));
    assert_eq!(f.get("f64"), Some(&Value::F64(0.1)));
    assert_eq!(f.get_bool("bool").unwrap(), Some(true));
    assert_eq!(f.get_str("name").unwrap(), Some("tiny"));
    assert_eq!(f.require_str_array("strings").unwrap(), vec!["a", "βγ", ""]);
    assert_eq!(f.get("nested"), Some(&Value::Array(vec![Value::Array(vec![Value::I16(-5), Value::I16(7)])])));
    let a = f.tensor("a").unwrap();
    assert_eq!((a.ty, a.dims.clone(), a.shape(), a.offset, a.size), (GgmlType::Q8_0, vec![32, 2], vec![2, 32], 0, 68));
    let b = f.tensor("b").unwrap();
    assert_eq!(b.offset, 128); // 68 bytes rounded up to the 64-byte alignment
    assert_eq!(f.tensor_bytes(b), &f32s(&[1.0, 2.0, 3.0])[..]);
    let e = f.require_u64("name").unwrap_err().to_string();
    assert!(e.contains("'name'") && e.contains("string"), "{e}");
    let e = f.require("absent.key").unwrap_err().to_string();
    assert!(e.contains("missing required metadata key 'absent.key'"), "{e}");
}

#[test]
fn bad_magic() {
    let mut b = tiny_llama().bytes();
    b[..4].copy_from_slice(b"GGML");
    let e = open_err("magic.gguf", &b);
    assert!(e.contains("not a GGUF file") && e.contains("bad magic"), "{e}");
    let e = open_err("empty.gguf", b"");
    assert!(e.contains("bad magic"), "{e}");
}

#[test]
fn unsupported_versions() {
    for (v, what) in [(1u32, "version 1"), (4, "version 4"), (3u32.swap_bytes(), "big-endian")] {
        let mut w = tiny_llama();
        w.version = v;
        let e = open_err("version.gguf", &w.bytes());
        assert!(e.contains("unsupported") && e.contains(what), "{v}: {e}");
    }
    let mut w = tiny_llama();
    w.version = 2;
    assert_eq!(GgufFile::open(write("v2.gguf", &w.bytes())).unwrap().version, 2);
}

#[test]
fn truncated_metadata_and_data() {
    let b = tiny_llama().bytes();
    // Cut inside the metadata (in the value of llama.block_count's neighbourhood).
    let key = b.windows(17).position(|w| w == b"llama.block_count").unwrap();
    let e = open_err("trunc-meta.gguf", &b[..key + 10]);
    assert!(e.contains("truncated file") && e.contains("metadata key"), "{e}");
    // Cut inside the tensor infos.
    let info = b.windows(17).rposition(|w| w == b"blk.0.attn_k.weig").unwrap();
    let e = open_err("trunc-info.gguf", &b[..info + 20]);
    assert!(e.contains("truncated file") && e.contains("blk.0.attn_k.weight"), "{e}");
    // Cut inside the last tensor's data.
    let e = open_err("trunc-data.gguf", &b[..b.len() - 5]);
    assert!(e.contains("truncated file") && e.contains("'blk.0.attn_k.weight'") && e.contains("past the end"), "{e}");
    // A string whose length runs past the end.
    let w = W::new().kv("huge", 8, u64::MAX.to_le_bytes().to_vec());
    let e = open_err("trunc-str.gguf", &w.bytes());
    assert!(e.contains("truncated file") && e.contains("'huge'"), "{e}");
    // An array count larger than the file.
    let mut arr = 4u32.to_le_bytes().to_vec();
    arr.extend((1u64 << 40).to_le_bytes());
    let e = open_err("trunc-arr.gguf", &W::new().kv("arr", 9, arr).bytes());
    assert!(e.contains("truncated file") && e.contains("'arr'"), "{e}");
}

#[test]
fn unknown_tensor_type_is_named() {
    let w = W::new().tensor("blk.0.odd.weight", &[32], 31, vec![0; 32]);
    let e = open_err("type.gguf", &w.bytes());
    assert!(e.contains("'blk.0.odd.weight'") && e.contains("unknown ggml tensor type id 31"), "{e}");
}

#[test]
fn unsupported_tensor_type_is_named_when_decoded() {
    // IQ3_S (id 21) is a known type gomlx does not decode.
    let w = tiny_llama().tensor("blk.0.attn_v.weight", &[256, 4], 21, vec![0; 4 * 110]);
    let m = GgufModel::open(write("iq3.gguf", &w.bytes())).unwrap();
    let e = m.tensor("model.layers.0.self_attn.v_proj.weight").unwrap_err().to_string();
    assert!(e.contains("blk.0.attn_v.weight") && e.contains("IQ3_S") && e.contains("not supported"), "{e}");
}

/// llama.cpp's converter (convert_hf_to_gguf.py, LlamaModel) for a Llama 3.x config: the factor
/// of each rotated pair, as it writes them into `rope_freqs.weight`.
fn converter_rope_factors(theta: f64, dim: usize, factor: f64, low: f64, high: f64, old_ctx: f64) -> Vec<f32> {
    (0..dim / 2)
        .map(|i| {
            let freq = 1.0 / theta.powf((2 * i) as f64 / dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            let f = if wavelen < old_ctx / high {
                1.0
            } else if wavelen > old_ctx / low {
                factor
            } else {
                let smooth = (old_ctx / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            f as f32
        })
        .collect()
}

/// tiny_llama with Llama 3's rope base and head dimension (in the config only) and `factors` as `rope_freqs.weight`.
fn with_rope_freqs(dim: u32, theta: f32, factors: &[f32]) -> W {
    let mut w = tiny_llama();
    w.kv.retain(|(k, _, _)| k != "llama.rope.freq_base");
    w.u32("llama.attention.key_length", dim).f32("llama.rope.freq_base", theta).tensor("rope_freqs.weight", &[factors.len() as u64], 0, f32s(factors))
}

#[test]
fn rope_freqs_become_llama3_scaling() {
    // Llama 3.2 1B (head_dim 64, theta 500000, factor 32) and Llama 3.1 8B (head_dim 128, factor 8).
    for (dim, theta, factor, file) in [(64u32, 500000f32, 32.0, "rf32.gguf"), (128, 500000.0, 8.0, "rf8.gguf")] {
        let factors = converter_rope_factors(theta as f64, dim as usize, factor, 1.0, 4.0, 8192.0);
        assert!(factors.iter().any(|f| *f > 1.0 && (*f as f64) < factor), "a blended band");
        let w = with_rope_freqs(dim, theta, &factors);
        let c = hf_config(&GgufFile::open(write(file, &w.bytes())).unwrap()).unwrap();
        let r = &c["rope_scaling"];
        assert_eq!(r["rope_type"], "llama3", "{c}");
        assert_eq!((r["factor"].as_f64(), r["low_freq_factor"].as_f64(), r["high_freq_factor"].as_f64()), (Some(factor), Some(1.0), Some(4.0)), "{r}");
        assert_eq!(r["original_max_position_embeddings"], 8192);
    }
    // All ones: no scaling.
    let w = with_rope_freqs(4, 10000.0, &[1.0, 1.0]);
    let c = hf_config(&GgufFile::open(write("rf1.gguf", &w.bytes())).unwrap()).unwrap();
    assert!(c.get("rope_scaling").is_none(), "{c}");
    // Factors no Llama 3 band produces, and the wrong count, are refused by name.
    let mut bad = converter_rope_factors(500000.0, 64, 32.0, 1.0, 4.0, 8192.0);
    bad[3] = 5.0;
    for (factors, want) in [(bad, "do not follow Llama 3"), (vec![1.0, 8.0, 8.0], "3 factors for head dimension 64")] {
        let w = with_rope_freqs(64, 500000.0, &factors);
        let e = hf_config(&GgufFile::open(write("rfbad.gguf", &w.bytes())).unwrap()).unwrap_err().to_string();
        assert!(e.contains("rope_freqs.weight") && e.contains(want), "{e}");
    }
}

#[test]
fn missing_key_and_unknown_architecture() {
    let mut w = tiny_llama();
    w.kv.retain(|(k, _, _)| k != "llama.block_count");
    let f = GgufFile::open(write("nokey.gguf", &w.bytes())).unwrap();
    let e = hf_config(&f).unwrap_err().to_string();
    assert!(e.contains("missing required metadata key 'llama.block_count'"), "{e}");

    let mut w = tiny_llama();
    w.kv.retain(|(k, _, _)| k != "general.architecture");
    let f = GgufFile::open(write("noarch.gguf", &w.bytes())).unwrap();
    let e = hf_config(&f).unwrap_err().to_string();
    assert!(e.contains("'general.architecture'"), "{e}");

    let w = tiny_llama().str("general.architecture", "mamba");
    let f = GgufFile::open(write("mamba.gguf", &w.bytes())).unwrap();
    let e = hf_config(&f).unwrap_err().to_string();
    assert!(e.contains("unsupported architecture 'mamba'") && e.contains("llama, qwen2, qwen3, gemma3"), "{e}");
}

#[test]
fn tiny_llama_config_and_unpermuted_rows() {
    let m = GgufModel::open(write("tiny.gguf", &tiny_llama().bytes())).unwrap();
    let c = &m.config;
    assert_eq!(c["model_type"], "llama");
    assert_eq!(c["head_dim"], 4);
    assert_eq!(c["num_key_value_heads"], 1);
    assert_eq!(c["tie_word_embeddings"], true);
    assert_eq!(c["vocab_size"], 4);
    // q: 8 rows of 8 (row r holds 8r..8r+8); per head of 4 rows GGUF order [0, 2, 1, 3] is HF
    // order [0, 1, 2, 3] -> HF rows come from GGUF rows [0, 2, 1, 3, 4, 6, 5, 7].
    let q = m.tensor("model.layers.0.self_attn.q_proj.weight").unwrap();
    let TensorData::Float { shape, values } = q.data else { panic!() };
    assert_eq!(shape, vec![8, 8]);
    let rows: Vec<f32> = values.chunks(8).map(|r| r[0] / 8.0).collect();
    assert_eq!(rows, vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
    // k: one KV head of 4 rows.
    let k = m.tensor("model.layers.0.self_attn.k_proj.weight").unwrap().data.dequantize();
    let rows: Vec<f32> = k.chunks(8).map(|r| (r[0] - 100.0) / 8.0).collect();
    assert_eq!(rows, vec![0.0, 2.0, 1.0, 3.0]);
}

/// The oracle's MoE fixtures written as llama.cpp writes those architectures
/// (stacked experts `ffn_*_exps` with GGUF's reversed dims, the router
/// `ffn_gate_inp`, the expert counts in metadata; Mixtral as `llama` with its
/// q/k rows permuted): loaded from the GGUF, they give transformers' logits.
mod moe_gguf {
    use super::{f32s, write, W};
    use gomlx::mlx::{io, Array};
    use gomlx::models::{LoadOptions, Logits, Model};
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    fn fixture(case: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(case)
    }

    fn tensors(case: &str) -> BTreeMap<String, (Vec<u64>, Vec<f32>)> {
        let st = io::load_safetensors(&fixture(case).join("model.safetensors")).unwrap();
        st.tensors.into_iter().map(|(k, v)| (k, (v.shape().iter().map(|&d| d as u64).collect(), v.to_vec::<f32>().unwrap()))).collect()
    }

    /// llama.cpp's q/k row permutation (rotary halves interleaved per head).
    fn permute(rows: &[f32], n_rows: usize, cols: usize, heads: usize) -> Vec<f32> {
        let hd = n_rows / heads;
        let mut out = Vec::with_capacity(rows.len());
        for h in 0..heads {
            for i in 0..hd / 2 {
                for half in 0..2 {
                    let r = h * hd + half * hd / 2 + i;
                    out.extend_from_slice(&rows[r * cols..(r + 1) * cols]);
                }
            }
        }
        out
    }

    fn reference(case: &str) -> (Vec<u32>, Vec<f32>) {
        let st = io::load_safetensors(&fixture(case).join("reference.safetensors")).unwrap();
        (st.tensors["inputs"].to_vec::<i32>().unwrap().into_iter().map(|v| v as u32).collect(), st.tensors["logits"].to_vec::<f32>().unwrap())
    }

    fn check(case: &str, file: W) {
        let path = write(&format!("{case}.gguf"), &file.bytes());
        let model = Model::load(&path, &LoadOptions::default()).unwrap();
        let (inputs, want) = reference(case);
        let mut caches = model.new_caches();
        let x = Array::from_slice(&inputs, &[1, inputs.len() as i32]).unwrap();
        let got = model.forward(&x, &mut caches, None, Logits::All).unwrap().to_vec::<f32>().unwrap();
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
        assert!(err < 1e-4, "{case} from GGUF: relative error {err:e}");
    }

    /// A GGUF of `case`: `name` maps block-relative HF names to llama.cpp's; experts stacked.
    fn to_gguf(case: &str, arch: &str, meta: &[(&str, u32)], experts: usize, moe: &str, expert_names: [&str; 3], permute_qk: Option<(usize, usize)>) -> W {
        let t = tensors(case);
        let mut w = W::new().str("general.architecture", arch);
        for &(k, v) in meta {
            w = w.u32(&format!("{arch}.{k}"), v);
        }
        w = w.f32(&format!("{arch}.rope.freq_base"), 1_000_000.0).f32(&format!("{arch}.attention.layer_norm_rms_epsilon"), 1e-6);
        let rev = |d: &[u64]| d.iter().rev().copied().collect::<Vec<u64>>();
        let layers = meta.iter().find(|(k, _)| *k == "block_count").unwrap().1 as usize;
        for (hf, gg) in [("model.embed_tokens.weight", "token_embd.weight"), ("model.norm.weight", "output_norm.weight"), ("lm_head.weight", "output.weight")] {
            let (d, v) = &t[hf];
            w = w.tensor(gg, &rev(d), 0, f32s(v));
        }
        for l in 0..layers {
            let p = format!("model.layers.{l}");
            let plain = [
                ("self_attn.q_proj", "attn_q"),
                ("self_attn.k_proj", "attn_k"),
                ("self_attn.v_proj", "attn_v"),
                ("self_attn.o_proj", "attn_output"),
                ("self_attn.q_norm", "attn_q_norm"),
                ("self_attn.k_norm", "attn_k_norm"),
                ("input_layernorm", "attn_norm"),
                ("post_attention_layernorm", "ffn_norm"),
                ("mlp.gate_proj", "ffn_gate"),
                ("mlp.up_proj", "ffn_up"),
                ("mlp.down_proj", "ffn_down"),
                (&format!("{moe}.gate") as &str, "ffn_gate_inp"),
            ];
            for (hf, gg) in plain {
                let Some((d, v)) = t.get(&format!("{p}.{hf}.weight")) else { continue };
                let v = match (permute_qk, gg) {
                    (Some((h, _)), "attn_q") => permute(v, d[0] as usize, d[1] as usize, h),
                    (Some((_, kv)), "attn_k") => permute(v, d[0] as usize, d[1] as usize, kv),
                    _ => v.clone(),
                };
                w = w.tensor(&format!("blk.{l}.{gg}.weight"), &rev(d), 0, f32s(&v));
            }
            for (name, gg) in expert_names.iter().zip(["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"]) {
                let first = format!("{p}.{moe}.experts.0.{name}.weight");
                let Some((d, _)) = t.get(&first) else { continue };
                let mut all = Vec::new();
                for e in 0..experts {
                    all.extend_from_slice(&t[&format!("{p}.{moe}.experts.{e}.{name}.weight")].1);
                }
                w = w.tensor(&format!("blk.{l}.{gg}.weight"), &[d[1], d[0], experts as u64], 0, f32s(&all));
            }
        }
        w
    }

    #[test]
    fn qwen3_moe_from_gguf_matches_transformers() {
        let meta = [
            ("block_count", 2),
            ("context_length", 1024),
            ("embedding_length", 64),
            ("feed_forward_length", 128),
            ("attention.head_count", 4),
            ("attention.head_count_kv", 2),
            ("attention.key_length", 16),
            ("attention.value_length", 16),
            ("expert_count", 8),
            ("expert_used_count", 4),
            ("expert_feed_forward_length", 32),
        ];
        let file = to_gguf("qwen3_moe", "qwen3moe", &meta, 8, "mlp", ["gate_proj", "up_proj", "down_proj"], None);
        check("qwen3_moe", file);
    }

    #[test]
    fn mixtral_from_gguf_matches_transformers() {
        let meta = [
            ("block_count", 2),
            ("context_length", 1024),
            ("embedding_length", 64),
            ("feed_forward_length", 64),
            ("attention.head_count", 4),
            ("attention.head_count_kv", 2),
            ("expert_count", 4),
            ("expert_used_count", 2),
        ];
        let file = to_gguf("mixtral", "llama", &meta, 4, "block_sparse_moe", ["w1", "w3", "w2"], Some((4, 2)));
        check("mixtral", file);
    }
}

/// A rank's part of a tensor (tensor parallel) decoded from only its bytes
/// equals the whole tensor decoded and then cut, for every decodable type.
mod split {
    use super::{f32s, write, W};
    use gomlx::mlx::distributed::Group;
    use gomlx::models::gguf::{config, split_weights, GgmlType, GgufModel, TensorData};
    use gomlx::models::shard::Shard;
    use std::sync::Arc;

    /// A xorshift stream: reproducible bytes without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn unit(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
    }

    /// Offsets of each block's f16 scale fields (set to finite values; the rest is random).
    fn half_fields(ty: GgmlType) -> &'static [usize] {
        use GgmlType::*;
        match ty {
            Q4_0 | Q5_0 | Q8_0 | IQ4_NL | IQ4_XS => &[0],
            Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
            Q6_K => &[208],
            Q2_K => &[80, 82],
            Q3_K => &[108],
            _ => &[],
        }
    }

    /// `n` values of `ty` as the file stores them.
    fn data(ty: GgmlType, n: usize, rng: &mut Rng) -> Vec<u8> {
        match ty {
            GgmlType::F32 => return f32s(&(0..n).map(|_| rng.unit()).collect::<Vec<_>>()),
            GgmlType::F16 => return (0..n).flat_map(|_| half::f16::from_f32(rng.unit()).to_le_bytes()).collect(),
            GgmlType::BF16 => return (0..n).flat_map(|_| half::bf16::from_f32(rng.unit()).to_le_bytes()).collect(),
            _ => {}
        }
        let (block, size) = ty.block();
        let mut out = Vec::new();
        for _ in 0..n / block {
            let mut b: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
            for &at in half_fields(ty) {
                b[at..at + 2].copy_from_slice(&half::f16::from_f32(rng.unit() / 8.0).to_le_bytes());
            }
            if ty == GgmlType::MXFP4 {
                b[0] = 100 + b[0] % 40; // a moderate power of two
            }
            out.extend(b);
        }
        out
    }

    /// Entries `start..start + len` of `axis` of a decoded matrix, rows zero-padded to `pad_to`:
    /// the cut the loader made before, written out on the decoded values.
    fn cut(d: &TensorData, axis: usize, start: usize, len: usize, pad_to: usize) -> TensorData {
        let (rows, cols) = (d.shape()[0], d.shape()[1]);
        // `per_row` entries of `v` per row; columns `from..from + n` of each (in `v`'s units).
        fn take<T: Copy + Default>(
            v: &[T],
            rows: usize,
            per_row: usize,
            axis: usize,
            (start, len, pad_to): (usize, usize, usize),
            from: usize,
            n: usize,
        ) -> Vec<T> {
            match axis {
                0 => v[start * per_row..(start + len) * per_row].iter().copied().chain(std::iter::repeat_n(T::default(), (pad_to - len) * per_row)).collect(),
                _ => (0..rows).flat_map(|r| v[r * per_row + from..r * per_row + from + n].to_vec()).collect(),
            }
        }
        let p = (start, len, pad_to);
        let shape = if axis == 0 { vec![pad_to, cols] } else { vec![rows, len] };
        match d {
            TensorData::Float { values, .. } => TensorData::Float { shape, values: take(values, rows, cols, axis, p, start, len) },
            TensorData::Affine { bits, group_size, weights, scales, biases, .. } => {
                let (b, g) = (*bits as usize, *group_size);
                TensorData::Affine {
                    shape,
                    bits: *bits,
                    group_size: g,
                    weights: take(weights, rows, cols * b / 32, axis, p, start * b / 32, len * b / 32),
                    scales: take(scales, rows, cols / g, axis, p, start / g, len / g),
                    biases: take(biases, rows, cols / g, axis, p, start / g, len / g),
                }
            }
        }
    }

    const HIDDEN: u64 = 512;

    /// A llama file with one `ffn_down` of 6 x 512 per decodable type (layer i: type i),
    /// a Q8_0 q (4 heads of 128 rows, permuted by llama.cpp), a Q4_K k (2 kv heads) and
    /// 4 stacked experts' down projections (Mixtral's `[E, rows, cols]`).
    fn file() -> GgufModel {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let types = GgmlType::DECODABLE;
        let mut w = W::new()
            .str("general.architecture", "llama")
            .u32("llama.block_count", types.len() as u32)
            .u32("llama.context_length", 128)
            .u32("llama.embedding_length", HIDDEN as u32)
            .u32("llama.feed_forward_length", 512)
            .u32("llama.attention.head_count", 4)
            .u32("llama.attention.head_count_kv", 2)
            .f32("llama.rope.freq_base", 10000.0)
            .f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
            .tensor("token_embd.weight", &[HIDDEN, 6], 0, data(GgmlType::F32, 6 * 512, &mut rng))
            .tensor("blk.0.attn_q.weight", &[HIDDEN, 512], 8, data(GgmlType::Q8_0, 512 * 512, &mut rng))
            .tensor("blk.0.attn_k.weight", &[HIDDEN, 256], 12, data(GgmlType::Q4_K, 512 * 256, &mut rng))
            .tensor("blk.0.ffn_down_exps.weight", &[8, 6, 4], 0, data(GgmlType::F32, 4 * 6 * 8, &mut rng));
        for (i, ty) in types.iter().enumerate() {
            w = w.tensor(&format!("blk.{i}.ffn_down.weight"), &[HIDDEN, 6], ty.id(), data(*ty, 6 * 512, &mut rng));
        }
        GgufModel::open(write("split.gguf", &w.bytes())).unwrap()
    }

    /// (part, bytes read), checked against the whole tensor cut.
    fn check(g: &GgufModel, name: &str, axis: usize, start: usize, len: usize, pad_to: usize) -> usize {
        let info = g.file.tensor(name).unwrap();
        let (part, read) = g.load_slice(info, axis, start, len, pad_to).unwrap();
        let want = cut(&g.load(info).unwrap(), axis, start, len, pad_to);
        // Not assert_eq: the values would fill the screen.
        assert!(part == want, "{name} ({}) axis {axis} {start}..{}: the part differs from the whole tensor cut", info.ty, start + len);
        read
    }

    #[test]
    fn rows_and_columns_of_every_type_equal_the_whole_tensor_cut() {
        let g = file();
        for (i, ty) in GgmlType::DECODABLE.iter().enumerate() {
            let name = format!("blk.{i}.ffn_down.weight");
            let (block, size) = ty.block();
            let row = 512 / block * size;
            // Rows 2..5 padded to 5 (a vocabulary's last rank), then the second half of each row.
            assert_eq!(check(&g, &name, 0, 2, 3, 5), 3 * row, "{ty}");
            assert_eq!(check(&g, &name, 1, 256, 256, 256), 6 * row / 2, "{ty}");
            if block == 32 {
                assert_eq!(check(&g, &name, 1, 32, 64, 64), 6 * 2 * size, "{ty}");
            } else if block > 1 {
                let info = g.file.tensor(&name).unwrap();
                let e = g.load_slice(info, 1, 128, 128, 128).unwrap_err().to_string();
                assert!(e.contains(&name) && e.contains(&format!("{ty} blocks of {block}")), "{e}");
            }
        }
    }

    #[test]
    fn q_and_k_rows_of_whole_heads_are_unpermuted_per_head() {
        let g = file();
        // q: heads 1 and 2 of 4 (rows 128..384); k: kv head 1 of 2 (rows 128..256).
        assert_eq!(check(&g, "blk.0.attn_q.weight", 0, 128, 256, 256), 256 * 16 * 34);
        assert_eq!(check(&g, "blk.0.attn_k.weight", 0, 128, 128, 128), 128 * 2 * 144);
        let e = g.load_slice(g.file.tensor("blk.0.attn_q.weight").unwrap(), 0, 64, 128, 128).unwrap_err().to_string();
        assert!(e.contains("attn_q") && e.contains("whole heads of 128 rows"), "{e}");
    }

    #[test]
    fn a_stack_of_experts_is_cut_by_whole_experts() {
        let g = file();
        let info = g.file.tensor("blk.0.ffn_down_exps.weight").unwrap();
        let (part, read) = g.load_slice(info, 0, 2, 2, 2).unwrap();
        let TensorData::Float { values, .. } = g.load(info).unwrap() else { panic!() };
        assert_eq!(part, TensorData::Float { shape: vec![2, 6, 8], values: values[2 * 48..4 * 48].to_vec() });
        assert_eq!(read, 2 * 48 * 4);
    }

    fn shard(rank: usize, size: usize, heads: usize, kv_heads: usize, vocab: usize) -> Shard {
        // A one-process group: `split_weights` reads the shard's numbers only.
        let group = Arc::new(Group::init("any", false).unwrap());
        Shard {
            group,
            rank,
            size,
            heads,
            kv_heads,
            vocab,
            experts: 0,
            moe: gomlx::models::shard::MoeSplit::Experts,
            experts_in_out: false,
            gemma4: None,
            linear: None,
            intermediate: 0,
        }
    }

    #[test]
    fn a_rank_reads_only_its_bytes() {
        let g = file();
        let split = split_weights(&g, config(&g).unwrap(), &shard(1, 2, 4, 2, 6)).unwrap();
        let size = |n: &str| g.file.tensor(n).unwrap().size;
        // Every tensor of this file is split in 2: rank 1 reads exactly half of each.
        let mut want = vec![("model.embed_tokens.weight".to_string(), size("token_embd.weight") / 2)];
        want.push(("model.layers.0.self_attn.q_proj.weight".into(), size("blk.0.attn_q.weight") / 2));
        want.push(("model.layers.0.self_attn.k_proj.weight".into(), size("blk.0.attn_k.weight") / 2));
        want.push(("model.layers.0.block_sparse_moe.switch_mlp.down_proj.weight".into(), size("blk.0.ffn_down_exps.weight") / 2));
        for i in 0..GgmlType::DECODABLE.len() {
            want.push((format!("model.layers.{i}.mlp.down_proj.weight"), size(&format!("blk.{i}.ffn_down.weight")) / 2));
        }
        want.sort();
        assert_eq!(split.read.into_iter().collect::<Vec<_>>(), want);
        // Shapes of this rank's arrays; quantised modules keep their bits.
        let shapes: std::collections::BTreeMap<&str, Vec<i32>> = split.weights.iter().map(|(n, a)| (n, a.shape())).collect();
        assert_eq!(shapes["model.embed_tokens.weight"], vec![3, 512]);
        assert_eq!(shapes["model.layers.0.self_attn.q_proj.weight"], vec![256, 512 * 8 / 32]);
        assert_eq!(shapes["model.layers.0.self_attn.k_proj.scales"], vec![128, 512 / 32]);
        assert_eq!(shapes["model.layers.2.mlp.down_proj.weight"], vec![6, 256]); // BF16
        assert_eq!(shapes["model.layers.8.mlp.down_proj.weight"], vec![6, 256 * 4 / 32]); // Q4_K
        assert_eq!(shapes["model.layers.0.block_sparse_moe.switch_mlp.down_proj.weight"], vec![2, 6, 8]);
        let q = split.config.quantization.for_module("model.layers.0.self_attn.q_proj").unwrap();
        assert_eq!((q.bits, q.group_size), (8, 32));
    }

    #[test]
    fn a_column_split_through_a_block_is_refused_by_name() {
        // o_proj's 256 inputs are one Q4_K block per row: 2 ranks would get half a block each.
        let mut rng = Rng(7);
        let w = W::new()
            .str("general.architecture", "llama")
            .u32("llama.block_count", 1)
            .u32("llama.context_length", 128)
            .u32("llama.embedding_length", 256)
            .u32("llama.feed_forward_length", 512)
            .u32("llama.attention.head_count", 2)
            .u32("llama.attention.head_count_kv", 2)
            .f32("llama.rope.freq_base", 10000.0)
            .f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
            .tensor("token_embd.weight", &[256, 4], 0, data(GgmlType::F32, 4 * 256, &mut rng))
            .tensor("blk.0.attn_output.weight", &[256, 256], 12, data(GgmlType::Q4_K, 256 * 256, &mut rng));
        let g = GgufModel::open(write("split-refused.gguf", &w.bytes())).unwrap();
        let e = split_weights(&g, config(&g).unwrap(), &shard(0, 2, 2, 2, 4)).err().unwrap().to_string();
        assert_eq!(
            e,
            "invalid argument: cannot split tensor 'model.layers.0.self_attn.o_proj.weight' (Q4_K) of shape [256, 256] over 2 ranks: \
             columns 0..128 would cut its Q4_K blocks of 256 values"
        );
    }
}
