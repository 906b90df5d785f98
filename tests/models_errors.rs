//! Bad model directories give clear errors naming what is wrong.

mod common;

use common::*;
use gomlx::mlx::Array;
use gomlx::models::{discover, LoadOptions, Model};

fn load_err(dir: &std::path::Path) -> String {
    match Model::load(dir, &LoadOptions::default()) {
        Ok(_) => panic!("{} loaded but must not", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_valid_tiny_model_loads_and_runs() {
    let dir = temp_dir("valid");
    write_model(&dir, TINY_LLAMA, &tiny_llama_tensors());
    let m = Model::load(&dir, &LoadOptions::default()).unwrap();
    let info = m.info();
    assert_eq!((info.architecture.as_str(), info.num_layers, info.head_dim), ("llama", 2, 8));
    // embed + head + 2 × (attn 32·32·2 + 32·16·2, mlp 3·32·64, 2 norms) + final norm
    assert_eq!(info.parameters, 64 * 32 * 2 + 2 * (2048 + 1024 + 6144 + 64) + 32);
    assert_eq!(info.weight_bytes, info.parameters * 4);
    let mut caches = m.new_caches();
    let tokens = Array::from_slice(&[1i32, 5, 9], &[1, 3]).unwrap();
    let logits = m.forward(&tokens, &mut caches, None, gomlx::models::Logits::All).unwrap();
    assert_eq!(logits.shape(), vec![1, 3, 64]);
    assert_eq!(caches[0].offset(), 3);
}

#[test]
fn missing_directory_and_empty_directory() {
    let err = load_err(std::path::Path::new("/nonexistent/gomlx-model"));
    assert!(err.contains("not a directory"), "{err}");
    let dir = temp_dir("empty");
    let err = load_err(&dir);
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn invalid_or_incomplete_config() {
    let dir = temp_dir("badcfg");
    write_model(&dir, "{ not json", &tiny_llama_tensors());
    let err = load_err(&dir);
    assert!(err.contains("not valid JSON"), "{err}");
    write_model(&dir, &TINY_LLAMA.replace("\"hidden_size\": 32,", ""), &tiny_llama_tensors());
    let err = load_err(&dir);
    assert!(err.contains("missing required key 'hidden_size'"), "{err}");
}

#[test]
fn unknown_model_type_lists_supported() {
    let dir = temp_dir("arch");
    write_model(&dir, &TINY_LLAMA.replace("\"llama\"", "\"falcon\""), &tiny_llama_tensors());
    let err = load_err(&dir);
    assert!(err.contains("unsupported model_type 'falcon'"), "{err}");
    assert!(err.contains("llama, mistral, qwen2, qwen3, gemma3_text, gemma3"), "{err}");
}

#[test]
fn missing_tensor_is_named() {
    let dir = temp_dir("missing");
    let mut t = tiny_llama_tensors();
    t.remove("model.layers.1.mlp.up_proj.weight");
    write_model(&dir, TINY_LLAMA, &t);
    let err = load_err(&dir);
    assert!(err.contains("missing tensor 'model.layers.1.mlp.up_proj.weight'"), "{err}");
}

#[test]
fn wrong_shape_names_tensor_and_shapes() {
    let dir = temp_dir("shape");
    let mut t = tiny_llama_tensors();
    t.insert("model.layers.0.self_attn.k_proj.weight".into(), Array::from_slice(&[0.0f32; 32 * 8], &[8, 32]).unwrap());
    write_model(&dir, TINY_LLAMA, &t);
    let err = load_err(&dir);
    assert!(err.contains("'model.layers.0.self_attn.k_proj.weight' has shape [8, 32], expected [16, 32]"), "{err}");
}

#[test]
fn corrupt_or_truncated_safetensors() {
    let dir = temp_dir("corrupt");
    write_model(&dir, TINY_LLAMA, &tiny_llama_tensors());
    let file = dir.join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("model.safetensors") || err.contains("mlx"), "{err}");
    std::fs::write(&file, b"garbage").unwrap();
    let err = load_err(&dir);
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn quantised_tensor_without_quantization_config() {
    let dir = temp_dir("noq");
    let mut t = tiny_llama_tensors();
    t.insert("model.layers.0.mlp.up_proj.scales".into(), Array::from_slice(&[0.0f32; 64], &[64, 1]).unwrap());
    write_model(&dir, TINY_LLAMA, &t);
    let err = load_err(&dir);
    assert!(err.contains("'model.layers.0.mlp.up_proj' is quantised but config.json has no 'quantization'"), "{err}");
}

#[test]
fn discover_finds_model_directories() {
    let base = temp_dir("discover");
    write_model(&base.join("a/llama"), TINY_LLAMA, &tiny_llama_tensors());
    write_model(&base.join("b/deeper/qwen"), &TINY_LLAMA.replace("\"llama\"", "\"qwen3\""), &tiny_llama_tensors());
    std::fs::create_dir_all(base.join("c/not-a-model")).unwrap();
    std::fs::write(base.join("c/not-a-model/config.json"), TINY_LLAMA).unwrap();
    let found = discover(&base).unwrap();
    let names: Vec<_> = found.iter().map(|m| (m.path.strip_prefix(&base).unwrap().to_string_lossy().into_owned(), m.architecture.clone())).collect();
    assert_eq!(names, vec![("a/llama".to_string(), "llama".to_string()), ("b/deeper/qwen".to_string(), "qwen3".to_string())]);
    assert!(discover(&base.join("nope")).is_err());
}
