//! The correctness contract: tiny random-weight models of every architecture
//! against references made by scripts/oracle (transformers float32 logits at
//! every position; mlx-lm greedy tokens and, for MLX-quantised and bf16
//! checkpoints, mlx-lm logits).

use gomlx::engine::{Engine, EngineOptions, GenerateOptions};
use gomlx::mlx::{self, io, Array, DeviceKind, Dtype, Stream};
use gomlx::models::{Context, LoadOptions, Logits, Model};
use std::path::{Path, PathBuf};

/// The device under test: `GOMLX_TEST_DEVICE=cpu|gpu`, else MLX's default
/// (the GPU of a CUDA or Metal build, else the CPU).
fn device() -> DeviceKind {
    match std::env::var("GOMLX_TEST_DEVICE").as_deref() {
        Ok("cpu") => DeviceKind::Cpu,
        Ok("gpu") => DeviceKind::Gpu,
        _ => mlx::default_device(),
    }
}

/// Runs this test thread's MLX work on `device()`.
fn on_device() {
    mlx::stream::set_thread_stream(Stream::new(device()).unwrap());
}

/// Exclusive use of a CUDA GPU while this thread works with arrays directly
/// (tests run on parallel threads; engines take it themselves, so it must not
/// be held while waiting for one).
fn gpu() -> mlx::GpuGuard {
    mlx::gpu_guard()
}

/// The float32 bound against transformers. On the CPU float32 matmuls are
/// exact IEEE float32: 1e-4. MLX's CUDA backend runs float32 matmuls on
/// TensorFloat-32 tensor cores by default (inputs rounded to a 10-bit
/// mantissa, 2^-11 relative, float32 accumulation): on an H200 the float32
/// fixtures measured 1.0e-3 to 1.7e-3 (6e-7 to 1.2e-6 with TF32 off), so the
/// bound there is 3e-3; with `MLX_ENABLE_TF32=0` the GPU is held to 1e-4 too.
fn f32_tol() -> f32 {
    if tf32() {
        3e-3
    } else {
        1e-4
    }
}

/// Whether float32 matmuls run on TF32 tensor cores (MLX's CUDA default).
fn tf32() -> bool {
    let on = std::env::var("MLX_ENABLE_TF32").map_or(true, |v| v != "0");
    device() == DeviceKind::Gpu && mlx::backend() == "cuda" && on
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models")
}

struct Reference {
    inputs: Vec<u32>,
    logits: Vec<f32>,
    logits_f32: Option<Vec<f32>>,
    greedy: Vec<u32>,
}

fn reference(dir: &Path) -> Reference {
    let _gpu = gpu();
    let st = io::load_safetensors(&dir.join("reference.safetensors")).unwrap();
    let t = &st.tensors;
    let ids = |n: &str| t[n].to_vec::<i32>().unwrap().into_iter().map(|v| v as u32).collect::<Vec<_>>();
    Reference {
        inputs: ids("inputs"),
        logits: t["logits"].to_vec::<f32>().unwrap(),
        logits_f32: t.get("logits_f32").map(|a| a.to_vec::<f32>().unwrap()),
        greedy: ids("greedy"),
    }
}

/// max |a - b| / max |b|: the error relative to the logits' scale.
fn rel_error(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn logits_of(dir: &Path, dtype: Option<Dtype>, inputs: &[u32]) -> Vec<f32> {
    logits_with(dir, &LoadOptions { dtype, ..Default::default() }, inputs).0
}

/// Logits at every position, and the compute dtype and quantisation the model ran with.
fn logits_with(dir: &Path, opts: &LoadOptions, inputs: &[u32]) -> (Vec<f32>, String, Option<i32>) {
    let _gpu = gpu();
    let model = Model::load(dir, opts).unwrap();
    let (dtype, bits) = (model.info().dtype.clone(), model.info().quant_bits);
    let mut caches = model.new_caches();
    let x = Array::from_slice(inputs, &[1, inputs.len() as i32]).unwrap();
    (model.forward(&x, &mut caches, None, Logits::All).unwrap().to_vec::<f32>().unwrap(), dtype, bits)
}

/// The full forward over `inputs` and then `seq` but its last token: for each
/// token of `seq`, the logits that chose it, their best value and max |logit|.
fn fed_rows(dir: &Path, opts: &LoadOptions, inputs: &[u32], seq: &[u32]) -> Vec<(Vec<f32>, f32, f32)> {
    let fed = [inputs, &seq[..seq.len() - 1]].concat();
    let (all, _, _) = logits_with(dir, opts, &fed);
    let v = all.len() / fed.len();
    all.chunks(v)
        .skip(inputs.len() - 1)
        .map(|row| {
            let (best, scale) = row.iter().fold((f32::MIN, 0f32), |(b, m), &x| (b.max(x), m.max(x.abs())));
            (row.to_vec(), best, scale)
        })
        .collect()
}

fn greedy_of(dir: &Path, dtype: Option<Dtype>, inputs: &[u32], n: usize) -> Vec<u32> {
    let engine = Engine::load(dir, &EngineOptions { device: Some(device()), dtype, ..Default::default() }).unwrap();
    let opts = GenerateOptions { max_tokens: n, ignore_eos: true, ..Default::default() };
    let mut g = engine.generate_tokens(inputs.to_vec(), &opts).unwrap();
    let (_, ids) = g.collect_text().unwrap();
    ids
}

fn check_case(case: &str, tol: f32) {
    check_case_in(case, None, tol)
}

fn check_case_in(case: &str, dtype: Option<Dtype>, tol: f32) {
    on_device();
    let dir = fixtures().join(case);
    assert!(dir.join("config.json").is_file(), "missing fixture {}: run scripts/oracle/run", dir.display());
    let r = reference(&dir);
    let got = logits_of(&dir, dtype, &r.inputs);
    let err = rel_error(&got, &r.logits);
    eprintln!("{case} on {}: logits relative error {err:e} (bound {tol:e})", device().name());
    assert!(err < tol, "{case}: logits relative error {err:e} >= {tol:e}");
    let greedy = greedy_of(&dir, dtype, &r.inputs, r.greedy.len());
    if tf32() {
        // TF32's ~1e-3 error flips arg-maxes among these random models' near-tied
        // logits, and the sequences then part. So each sequence, mlx-lm's and the
        // engine's, is fed back whole: every token must be within TF32's error of
        // the best logit at its step under this arithmetic.
        for (who, seq) in [("mlx-lm", &r.greedy), ("the engine", &greedy)] {
            let rows = fed_rows(&dir, &LoadOptions { dtype, ..Default::default() }, &r.inputs, seq);
            for (i, (&t, &(ref row, best, scale))) in seq.iter().zip(&rows).enumerate() {
                let gap = (best - row[t as usize]) / scale;
                assert!(gap <= 2.0 * tol, "{case}: {who}'s token {i} ({t}) is {gap:e} below the best logit (bound {:e})", 2.0 * tol);
            }
        }
    } else {
        assert_eq!(greedy, r.greedy, "{case}: greedy tokens differ from mlx-lm");
    }
    if case.ends_with("_q4") || case.ends_with("_q8") {
        // Quantised: the CPU default above dequantises at load (the fixtures are
        // tiny); MLX's quantized_matmul path must match the same reference.
        let opts = LoadOptions { dtype, dequantize: Some(false), ..Default::default() };
        let (kept, _, bits) = logits_with(&dir, &opts, &r.inputs);
        assert!(bits.is_some(), "{case}: dequantize=false must keep the model quantised");
        let err = rel_error(&kept, &r.logits);
        assert!(err < tol, "{case} via quantized_matmul: logits relative error {err:e} >= {tol:e}");
    }
}

macro_rules! oracle_cases {
    ($($name:ident => $case:literal;)*) => { $(
        #[test]
        fn $name() { check_case($case, f32_tol()); }
    )* };
}

oracle_cases! {
    llama_llama3_rope => "llama_rope_llama3";
    llama_llama3_rope_tf5_dialect => "llama_rope_llama3_tf5";
    llama_tied => "llama_tied";
    mistral => "mistral";
    qwen2_bias => "qwen2_bias";
    qwen3_qknorm => "qwen3_qknorm";
    gemma3_sliding_window => "gemma3_text";
    gemma3_tf5_dialect => "gemma3_text_tf5";
    gemma3_softcap => "gemma3_text_softcap";
    phi3_fused => "phi3_fused";
    smollm3_nope => "smollm3_nope";
    ministral3_yarn => "ministral3_yarn";
    qwen3_moe => "qwen3_moe";
    mixtral => "mixtral";
    gpt_oss => "gpt_oss";
    gpt_oss_transformers_layout => "gpt_oss_tf5";
    qwen3_5_hybrid => "qwen3_5";
    qwen3_5_moe => "qwen3_5_moe";
    qwen3_5_moe_transformers_layout => "qwen3_5_moe_tf5";
    gemma4_per_layer_inputs_shared_kv => "gemma4";
    gemma4_transformers_layout => "gemma4_tf5";
    gemma4_moe_keys_as_values => "gemma4_moe";
    gemma4_moe_transformers_layout => "gemma4_moe_tf5";
    // MLX-quantised checkpoints against mlx-lm's own float32 logits.
    llama_q4 => "llama_tied_q4";
    llama_q8 => "llama_tied_q8";
    qwen3_q4 => "qwen3_qknorm_q4";
    gemma3_q4 => "gemma3_text_q4";
    gemma3_q8 => "gemma3_text_q8";
    phi3_q4 => "phi3_fused_q4";
    qwen3_moe_q4 => "qwen3_moe_q4";
    mixtral_q4 => "mixtral_q4";
    qwen3_moe_q8 => "qwen3_moe_q8";
    mixtral_q8 => "mixtral_q8";
    qwen3_5_q4 => "qwen3_5_q4";
    qwen3_5_moe_q4 => "qwen3_5_moe_q4";
    gemma4_q4 => "gemma4_q4";
    gemma4_moe_q4 => "gemma4_moe_q4";
    // OpenAI's MXFP4 layout (*_blocks / *_scales), through MLX's mxfp4 gather_qmm.
    gpt_oss_mxfp4 => "gpt_oss_mxfp4";
}

/// The engine's inference layers (q/k/v and gate/up fused into one matmul
/// each, the MLP activation compiled into one kernel; the GPU default) give the
/// oracle's logits too: dense, biased, QK-normed, quantised and GELU models.
#[test]
fn fused_and_compiled_layers_match_the_oracle() {
    on_device();
    for case in ["llama_tied", "qwen2_bias", "qwen3_qknorm", "qwen3_qknorm_q4", "gemma3_text", "gemma3_text_softcap", "gemma4", "gemma4_moe"] {
        let dir = fixtures().join(case);
        let r = reference(&dir);
        for (fuse, compile) in [(true, false), (false, true), (true, true)] {
            eprintln!("{case} fuse={fuse} compile={compile} on {}", device().name());
            let opts = LoadOptions { fuse_projections: Some(fuse), compile: Some(compile), dequantize: Some(false), ..Default::default() };
            let (got, _, _) = logits_with(&dir, &opts, &r.inputs);
            let err = rel_error(&got, &r.logits);
            let tol = f32_tol();
            assert!(err < tol, "{case} fuse={fuse} compile={compile}: logits relative error {err:e} >= {tol:e}");
        }
    }
}

/// Gemma 4's decode steps with fused projections (q/k/v, or q/k where keys
/// are values, split on the head axis; q alone on layers that share keys) and
/// the compiled activation, fed one token at a time, give the oracle's logits.
#[test]
fn gemma4_fused_decode_steps_match_the_oracle() {
    on_device();
    let _gpu = gpu();
    for case in ["gemma4", "gemma4_moe"] {
        let dir = fixtures().join(case);
        let r = reference(&dir);
        let opts = LoadOptions { fuse_projections: Some(true), compile: Some(true), ..Default::default() };
        let model = Model::load(&dir, &opts).unwrap();
        let mut caches = model.new_caches();
        let mut got = Vec::new();
        for &t in &r.inputs {
            let x = Array::from_slice(&[t], &[1, 1]).unwrap();
            got.extend(model.forward(&x, &mut caches, None, Logits::All).unwrap().to_vec::<f32>().unwrap());
        }
        let err = rel_error(&got, &r.logits);
        eprintln!("{case} fused decode steps: logits relative error {err:e}");
        assert!(err < f32_tol(), "{case} fused decode steps: {err:e}");
    }
}

/// bf16 compute (asked for: the CPU default is float32) against mlx-lm's bf16
/// logits and greedy tokens: bf16 rounding bounds the error.
#[test]
fn qwen3_bf16() {
    on_device();
    check_case_in("qwen3_qknorm_bf16", Some(Dtype::BF16), 2e-2);
    let dir = fixtures().join("qwen3_qknorm_bf16");
    let (_, dtype, _) = logits_with(&dir, &LoadOptions { dtype: Some(Dtype::BF16), ..Default::default() }, &reference(&dir).inputs);
    assert_eq!(dtype, "bfloat16");
}

/// The CPU default for a bf16 checkpoint is float32 compute with the weights
/// widened at load (it fits any budget here), matching the float32 reference;
/// over the budget the weights stay bf16 and are widened per use, with the
/// same logits.
#[test]
fn bf16_checkpoint_runs_in_float32_on_the_cpu_by_default() {
    // The CPU policy, whatever the device under test.
    mlx::stream::set_thread_stream(Stream::new(DeviceKind::Cpu).unwrap());
    let dir = fixtures().join("qwen3_qknorm_bf16");
    let r = reference(&dir);
    let widened = Model::load(&dir, &LoadOptions::default()).unwrap();
    assert_eq!((widened.info().dtype.as_str(), widened.info().weights_dtype.as_str()), ("float32", "float32"), "CPU default");
    let (got, _, _) = logits_with(&dir, &LoadOptions::default(), &r.inputs);
    let err = rel_error(&got, r.logits_f32.as_ref().unwrap());
    assert!(err < 1e-3, "relative error {err:e}");
    let over = LoadOptions { memory_budget: Some(1), ..Default::default() };
    let stored = Model::load(&dir, &over).unwrap();
    assert_eq!((stored.info().dtype.as_str(), stored.info().weights_dtype.as_str()), ("float32", "bfloat16"), "over the memory budget");
    assert!(stored.info().weight_bytes * 3 < widened.info().weight_bytes * 2, "stored bf16 weights take about half the bytes");
    let (kept, _, _) = logits_with(&dir, &over, &r.inputs);
    let err = rel_error(&kept, &got);
    assert!(err < 1e-5, "stored vs widened: relative error {err:e}");
}

/// Weights kept as stored (bf16 matrices, or 4/8-bit ones with their scales)
/// and widened per use give the logits of the widened model and the
/// reference's greedy tokens; quantised ones go through the per-piece
/// dequantisation for multi-row inputs and `quantized_matmul` for one row.
#[test]
fn stored_weights_match_widened_ones() {
    // The CPU policy, whatever the device under test.
    mlx::stream::set_thread_stream(Stream::new(DeviceKind::Cpu).unwrap());
    for case in ["qwen3_qknorm_bf16", "llama_tied_q4", "gemma3_text_q8", "qwen3_qknorm_q4"] {
        let dir = fixtures().join(case);
        let r = reference(&dir);
        let (widened, _, _) = logits_with(&dir, &LoadOptions { widen: Some(true), ..Default::default() }, &r.inputs);
        let stored_opts = LoadOptions { widen: Some(false), ..Default::default() };
        let (stored, dtype, bits) = logits_with(&dir, &stored_opts, &r.inputs);
        assert_eq!(dtype, "float32", "{case}: compute dtype");
        assert_eq!(bits.is_some(), case.ends_with("_q4") || case.ends_with("_q8"), "{case}: quantisation reported");
        let err = rel_error(&stored, &widened);
        assert!(err < 1e-4, "{case}: stored vs widened relative error {err:e}");
        let greedy = |widen| {
            let engine = Engine::load(&dir, &EngineOptions { device: Some(DeviceKind::Cpu), widen: Some(widen), ..Default::default() }).unwrap();
            let opts = GenerateOptions { max_tokens: r.greedy.len(), ignore_eos: true, ..Default::default() };
            engine.generate_tokens(r.inputs.clone(), &opts).unwrap().collect_text().unwrap().1
        };
        assert_eq!(greedy(false), greedy(true), "{case}: greedy tokens, stored vs widened weights");
    }
}

#[test]
fn bf16_checkpoint_in_float32_matches_transformers() {
    on_device();
    let dir = fixtures().join("qwen3_qknorm_bf16");
    let r = reference(&dir);
    let got = logits_of(&dir, Some(Dtype::F32), &r.inputs);
    let err = rel_error(&got, r.logits_f32.as_ref().unwrap());
    // mlx-lm in float32 on these weights shows the same 6.8e-4 against this
    // reference (transformers keeps part of a bf16 checkpoint's math in bf16),
    // so the bound here is 1e-3, not the 1e-4 of the float32 checkpoints.
    let tol = f32_tol().max(1e-3);
    assert!(err < tol, "relative error {err:e}");
}

#[test]
fn prefill_in_chunks_and_token_by_token_agree() {
    on_device();
    let _gpu = gpu();
    // Gemma's window is 8 and the prompt 24: chunks and single steps cross the
    // window, exercising the rotating cache and its masks; Qwen 3.5's chunks and
    // steps carry the recurrent and convolution states of its linear layers.
    for case in ["gemma3_text", "llama_rope_llama3", "ministral3_yarn", "smollm3_nope", "qwen3_5", "qwen3_5_moe", "gemma4", "gemma4_moe"] {
        let dir = fixtures().join(case);
        let r = reference(&dir);
        let model = Model::load(&dir, &LoadOptions::default()).unwrap();
        let full = {
            let mut c = model.new_caches();
            let x = Array::from_slice(&r.inputs, &[1, r.inputs.len() as i32]).unwrap();
            model.forward(&x, &mut c, None, Logits::All).unwrap().to_vec::<f32>().unwrap()
        };
        let v = model.config().vocab_size;
        for chunk in [1usize, 5, 11] {
            let mut c = model.new_caches();
            let mut got = Vec::new();
            for part in r.inputs.chunks(chunk) {
                let x = Array::from_slice(part, &[1, part.len() as i32]).unwrap();
                got.extend(model.forward(&x, &mut c, None, Logits::All).unwrap().to_vec::<f32>().unwrap());
            }
            assert_eq!(got.len(), r.inputs.len() * v);
            let err = rel_error(&got, &full);
            // TF32 rounds each matmul's inputs and chunking changes which kernels run:
            // both sides carry TF32's ~1e-3 error, so the oracle's TF32 bound applies.
            let tol = if tf32() { f32_tol() } else { 1e-5 };
            assert!(err < tol, "{case} chunk {chunk}: {err:e}");
        }
    }
}

/// A left-padded batch (`Context::valid`, per-row positions) gives each row
/// the logits it gets alone: padding reaches neither the KV caches' attention
/// nor Qwen 3.5's convolution and recurrent states.
#[test]
fn left_padded_rows_equal_their_solo_forwards() {
    on_device();
    let _gpu = gpu();
    for case in ["qwen3_5", "qwen3_5_moe", "llama_tied", "gemma4", "gemma4_moe"] {
        let dir = fixtures().join(case);
        let r = reference(&dir);
        let model = Model::load(&dir, &LoadOptions::default()).unwrap();
        let v = model.config().vocab_size;
        let (long, short) = (&r.inputs[..], &r.inputs[7..]);
        let pad = long.len() - short.len();
        let solo = |p: &[u32]| {
            let x = Array::from_slice(p, &[1, p.len() as i32]).unwrap();
            model.forward(&x, &mut model.new_caches(), None, Logits::All).unwrap().to_vec::<f32>().unwrap()
        };
        let (want_long, want_short) = (solo(long), solo(short));
        let mut tokens: Vec<u32> = vec![0; pad];
        tokens.extend(short);
        tokens.extend(long);
        let n = long.len() as i32;
        let x = Array::from_slice(&tokens, &[2, n]).unwrap();
        let valid: Vec<bool> = (0..2 * long.len()).map(|i| i >= pad).collect();
        let valid = Array::from_slice(&valid, &[2, n]).unwrap();
        let positions = Array::from_slice(&[-(pad as i32), 0], &[2]).unwrap();
        let ctx = Context { valid: Some(&valid), positions: Some(&positions) };
        let got = model.forward_ctx(&x, &mut model.new_caches(), &ctx, Logits::All).unwrap().to_vec::<f32>().unwrap();
        let row0 = &got[pad * v..long.len() * v];
        let row1 = &got[long.len() * v..];
        let (e0, e1) = (rel_error(row0, &want_short), rel_error(row1, &want_long));
        eprintln!("{case}: padded row {e0:e}, full row {e1:e}");
        assert!(e0 < f32_tol() && e1 < f32_tol(), "{case}: padded row {e0:e}, full row {e1:e}");
    }
}

#[test]
fn multimodal_gemma3_checkpoint_loads_its_text_model() {
    on_device();
    let _gpu = gpu();
    // The gemma3_text fixture repackaged as a multimodal `gemma3` checkpoint:
    // config under text_config, weights under language_model.model., plus a
    // vision tensor that must be skipped.
    let src = fixtures().join("gemma3_text");
    let dir = std::env::temp_dir().join(format!("gomlx-mm-gemma3-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text_cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let cfg = serde_json::json!({"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"], "text_config": text_cfg});
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let st = io::load_safetensors(&src.join("model.safetensors")).unwrap();
    let mut renamed: std::collections::BTreeMap<String, Array> =
        st.tensors.into_iter().map(|(k, v)| (k.replacen("model.", "language_model.model.", 1), v)).collect();
    renamed.insert("vision_tower.vision_model.embeddings.patch_embedding.weight".into(), Array::from_slice(&[0.0f32; 4], &[2, 2]).unwrap());
    io::save_safetensors(&dir.join("model.safetensors"), &renamed, &Default::default()).unwrap();
    let r = reference(&src);
    let err = rel_error(&logits_of(&dir, None, &r.inputs), &r.logits);
    assert!(err < f32_tol(), "relative error {err:e}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A multimodal Mistral 3 checkpoint (transformers 5 names: `model.language_model.*`,
/// `lm_head`, a vision tower to skip; the text model's config under `text_config`)
/// gives the logits of its Ministral 3 text model.
#[test]
fn multimodal_mistral3_checkpoint_loads_its_text_model() {
    on_device();
    let _gpu = gpu();
    let src = fixtures().join("ministral3_yarn");
    let dir = std::env::temp_dir().join(format!("gomlx-mm-mistral3-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text_cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let cfg = serde_json::json!({"model_type": "mistral3", "architectures": ["Mistral3ForConditionalGeneration"], "text_config": text_cfg});
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let st = io::load_safetensors(&src.join("model.safetensors")).unwrap();
    let mut renamed: std::collections::BTreeMap<String, Array> =
        st.tensors.into_iter().map(|(k, v)| (k.replacen("model.", "model.language_model.", 1), v)).collect();
    renamed.insert("model.vision_tower.transformer.layers.0.attention.q_proj.weight".into(), Array::from_slice(&[0.0f32; 4], &[2, 2]).unwrap());
    io::save_safetensors(&dir.join("model.safetensors"), &renamed, &Default::default()).unwrap();
    let r = reference(&src);
    let err = rel_error(&logits_of(&dir, None, &r.inputs), &r.logits);
    std::fs::remove_dir_all(&dir).ok();
    assert!(err < f32_tol(), "relative error {err:e}");
}

/// `dequantize_where` (the CUDA 8-bit workaround's load step) expands only the
/// matrices it is asked for, to the values `dequantize` gives, and leaves the
/// others packed; `stream::on_cpu` returns to the thread's own stream.
#[test]
fn dequantize_where_expands_only_the_picked_matrices() {
    use gomlx::models::weights::Weights;
    mlx::stream::set_thread_stream(Stream::new(DeviceKind::Cpu).unwrap());
    let dir = fixtures().join("llama_tied_q8");
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let quant = gomlx::models::ModelConfig::from_json_str(&text).unwrap().quantization;
    let mut w = Weights::load(&dir).unwrap();
    let packed = w.iter().filter(|(n, _)| n.ends_with(".scales")).count();
    assert!(packed > 0, "the fixture is quantised");
    let q = |m: &str| quant.for_module(m);
    assert!(w.dequantize_where(&q, Dtype::F32, &|q| q.bits == 4).unwrap().is_empty(), "no 4-bit matrix in an 8-bit fixture");
    assert_eq!(w.iter().filter(|(n, _)| n.ends_with(".scales")).count(), packed);
    let base = "model.layers.0.mlp.down_proj";
    let qd = q(base).unwrap();
    let get = |w: &Weights, n: &str| w.iter().find(|(k, _)| *k == n).map(|(_, a)| a.to_vec::<f32>().unwrap());
    let expect = {
        let [pw, ps, pb] = [".weight", ".scales", ".biases"].map(|s| w.iter().find(|(k, _)| *k == format!("{base}{s}")).unwrap().1.clone());
        mlx::dequantize(&pw, &ps, &pb, qd.group_size, qd.bits, Some(Dtype::F32)).unwrap().to_vec::<f32>().unwrap()
    };
    let picked = mlx::stream::on_cpu(|| w.dequantize_where(&q, Dtype::F32, &|q| q.bits == 8)).unwrap().unwrap();
    assert_eq!(mlx::stream::thread_device(), DeviceKind::Cpu);
    assert_eq!(picked.len(), packed);
    assert!(picked.iter().any(|m| m == base));
    assert_eq!(w.iter().filter(|(n, _)| n.ends_with(".scales") || n.ends_with(".biases")).count(), 0);
    assert_eq!(get(&w, &format!("{base}.weight")).unwrap(), expect);
}

/// The engine's greedy tokens and their log-probabilities are those of the
/// model's own full forward over the same sequence (prefill, KV cache, decode
/// steps and the engine's layer choices against one plain forward), and two
/// engines give the same tokens: on a GPU this tells a wrong engine path or a
/// race from the oracle's near-ties.
#[test]
fn engine_tokens_are_the_full_forwards() {
    on_device();
    let mut failures = Vec::new();
    for case in ["llama_tied", "llama_tied_q4", "llama_tied_q8", "qwen3_qknorm_q4", "gemma3_text", "gemma3_text_q4"] {
        let dir = fixtures().join(case);
        let r = reference(&dir);
        let run = || {
            let engine = Engine::load(&dir, &EngineOptions { device: Some(device()), ..Default::default() }).unwrap();
            let mut opts = GenerateOptions { max_tokens: 12, ignore_eos: true, ..Default::default() };
            opts.sampler.logprobs = true;
            engine.generate_tokens(r.inputs.clone(), &opts).unwrap().map(|t| t.unwrap()).map(|t| (t.id, t.logprob.unwrap())).collect::<Vec<_>>()
        };
        let got = run();
        assert_eq!(got.len(), 12);
        let ids: Vec<u32> = got.iter().map(|t| t.0).collect();
        let again: Vec<u32> = run().iter().map(|t| t.0).collect();
        if again != ids {
            failures.push(format!("{case}: two engines differ: {ids:?} then {again:?}"));
        }
        let rows = fed_rows(&dir, &LoadOptions::default(), &r.inputs, &ids);
        let tol = f32_tol();
        for (i, (&(t, lp), &(ref row, best, scale))) in got.iter().zip(&rows).enumerate() {
            let lse = best + row.iter().map(|x| (x - best).exp()).sum::<f32>().ln();
            let (gap, lp_err) = ((best - row[t as usize]) / scale, (lp - (row[t as usize] - lse)).abs() / scale);
            // Every step is printed and the failures gathered, so one GPU run shows the whole picture.
            eprintln!("{case} on {}: token {i} ({t}): {gap:e} below the best logit, log-probability off by {lp_err:e}", device().name());
            if !(gap <= 2.0 * tol && lp_err <= 4.0 * tol) {
                failures.push(format!("{case} token {i} ({t}): gap {gap:e}, log-probability error {lp_err:e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "the engine's tokens are not the full forward's (bounds {:e}, {:e} of the logits' scale): {failures:#?}",
        2.0 * f32_tol(),
        4.0 * f32_tol()
    );
}

/// Causality: the logits at the reference prompt's positions do not depend on
/// what follows them, so a forward over the prompt and a longer forward over
/// the prompt and its greedy continuation agree there. On a GPU the two run
/// different kernels (quantised products of ≥ 32 rows are dequantised first),
/// which this holds to the device's float32 bound.
#[test]
fn prefix_logits_do_not_depend_on_what_follows() {
    on_device();
    let mut failures = Vec::new();
    for case in ["llama_tied", "llama_tied_q4", "llama_tied_q8", "qwen3_qknorm_q4", "gemma3_text", "gemma3_text_q4", "gemma3_text_q8"] {
        let dir = fixtures().join(case);
        let r = reference(&dir);
        let n = r.inputs.len();
        let (short, _, _) = logits_with(&dir, &LoadOptions::default(), &r.inputs);
        let (long, _, _) = logits_with(&dir, &LoadOptions::default(), &[&r.inputs[..], &r.greedy[..]].concat());
        let err = rel_error(&long[..short.len()], &short);
        let ref_err = rel_error(&long[..short.len()], &r.logits);
        eprintln!(
            "{case} on {}: {n} positions alone vs within {}: relative error {err:e}; the longer forward against the reference {ref_err:e}",
            device().name(),
            n + r.greedy.len()
        );
        if !(err < f32_tol() && ref_err < f32_tol()) {
            failures.push(format!("{case}: {err:e} between the two forwards, {ref_err:e} against the reference"));
        }
    }
    assert!(failures.is_empty(), "bound {:e}: {failures:#?}", f32_tol());
}

/// A bf16 mixture of experts kept as stored on the CPU (float32 compute):
/// decode steps widen only the chosen experts, prefill the whole stack; both
/// give the logits of the model widened at load.
#[test]
fn stored_bf16_experts_match_widened_ones() {
    mlx::stream::set_thread_stream(Stream::new(DeviceKind::Cpu).unwrap());
    let src = fixtures().join("qwen3_moe");
    let dir = std::env::temp_dir().join(format!("gomlx-moe-bf16-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg["torch_dtype"] = "bfloat16".into();
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let st = io::load_safetensors(&src.join("model.safetensors")).unwrap();
    let bf16: std::collections::BTreeMap<String, Array> = st.tensors.into_iter().map(|(k, v)| (k, v.astype(Dtype::BF16).unwrap())).collect();
    io::save_safetensors(&dir.join("model.safetensors"), &bf16, &Default::default()).unwrap();
    let r = reference(&src);
    let run = |widen: bool, tokens: &[u32]| {
        let model = Model::load(&dir, &LoadOptions { widen: Some(widen), ..Default::default() }).unwrap();
        assert_eq!(model.info().dtype, "float32");
        let mut caches = model.new_caches();
        // The prompt (sorted by expert), then one-token steps (the chosen experts alone).
        let x = Array::from_slice(tokens, &[1, tokens.len() as i32]).unwrap();
        let mut out = model.forward(&x, &mut caches, None, Logits::Last).unwrap().to_vec::<f32>().unwrap();
        for &t in &r.greedy[..4] {
            let x = Array::from_slice(&[t], &[1, 1]).unwrap();
            out.extend(model.forward(&x, &mut caches, None, Logits::Last).unwrap().to_vec::<f32>().unwrap());
        }
        (out, model.info().weights_dtype.clone())
    };
    let ((widened, wd), (stored, sd)) = (run(true, &r.inputs), run(false, &r.inputs));
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!((wd.as_str(), sd.as_str()), ("float32", "bfloat16"));
    let err = rel_error(&stored, &widened);
    assert!(err < 1e-5, "stored vs widened bf16 experts: relative error {err:e}");
}

/// gpt-oss in mlx-lm's MXFP4 layout (what mlx-community publishes:
/// `experts.{gate,up,down}_proj.{weight,scales}`, `quantization.mode: mxfp4`),
/// made from the OpenAI-layout fixture, gives that fixture's mlx-lm logits:
/// dequantised at load (the CPU default for a small model) and kept quantised
/// (`gather_qmm` in mxfp4 mode).
#[test]
fn gpt_oss_mxfp4_in_mlx_layout() {
    mlx::stream::set_thread_stream(Stream::new(DeviceKind::Cpu).unwrap());
    let src = fixtures().join("gpt_oss_mxfp4");
    let dir = std::env::temp_dir().join(format!("gomlx-gpt-oss-mlx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("quantization_config");
    cfg["quantization"] = serde_json::json!({"group_size": 32, "bits": 4, "mode": "mxfp4"});
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let st = io::load_safetensors(&src.join("model.safetensors")).unwrap();
    let rows = |a: &Array, start: i32| {
        let shape = a.shape();
        let mut lo = vec![0; shape.len()];
        let mut strides = vec![1; shape.len()];
        lo[1] = start;
        strides[1] = 2;
        a.slice(&lo, &shape, &strides).unwrap().contiguous().unwrap()
    };
    let words = |a: &Array| a.view(Dtype::U32).unwrap().flatten(-2, -1).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for (k, v) in st.tensors {
        let Some((p, what)) = k.rsplit_once("experts.") else {
            out.insert(k, v);
            continue;
        };
        let p = format!("{p}experts.");
        match what {
            "gate_up_proj_blocks" => {
                out.insert(format!("{p}gate_proj.weight"), words(&rows(&v, 0)));
                out.insert(format!("{p}up_proj.weight"), words(&rows(&v, 1)));
            }
            "gate_up_proj_scales" => {
                out.insert(format!("{p}gate_proj.scales"), rows(&v, 0));
                out.insert(format!("{p}up_proj.scales"), rows(&v, 1));
            }
            "gate_up_proj_bias" => {
                let half = |s: i32| {
                    let shape = v.shape();
                    v.slice(&[0, s], &shape, &[1, 2]).unwrap().contiguous().unwrap()
                };
                out.insert(format!("{p}gate_proj.bias"), half(0));
                out.insert(format!("{p}up_proj.bias"), half(1));
            }
            "down_proj_blocks" => {
                out.insert(format!("{p}down_proj.weight"), words(&v));
            }
            "down_proj_scales" => {
                out.insert(format!("{p}down_proj.scales"), v);
            }
            "down_proj_bias" => {
                out.insert(format!("{p}down_proj.bias"), v);
            }
            other => panic!("unexpected expert tensor {other}"),
        }
    }
    io::save_safetensors(&dir.join("model.safetensors"), &out, &Default::default()).unwrap();
    let r = reference(&src);
    // The CPU default expands the mxfp4 experts at load (dequantize in mxfp4 mode).
    assert!(Model::load(&dir, &LoadOptions::default()).unwrap().info().dequantized);
    for dequantize in [None, Some(false)] {
        let (got, _, bits) = logits_with(&dir, &LoadOptions { dequantize, ..Default::default() }, &r.inputs);
        let err = rel_error(&got, &r.logits);
        eprintln!("gpt-oss mxfp4, mlx layout, dequantize {dequantize:?}: relative error {err:e}, bits {bits:?}");
        assert!(err < 1e-4, "dequantize {dequantize:?}: relative error {err:e}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
