//! MLX distributed over the ring backend on loopback: ranks are processes this
//! test starts (a test re-runs its own binary with `GOMLX_TEST_RANK` set and
//! plays the rank), with a host file it writes, as `mlx.launch` would.

use gomlx::mlx::distributed::Group;
use gomlx::mlx::{Array, Dtype};
use gomlx::models::shard::MoeSplit;
use std::ffi::c_char;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Each rank's whole run, start-up included, must end by then (a hung ring is a failure).
const RANK_TIMEOUT: Duration = Duration::from_secs(120);

/// `n` ports that were free a moment ago on 127.0.0.1.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// A ring host file for `n` ranks on loopback (mlx.launch's format: one list of "ip:port" per rank).
fn hostfile(tag: &str, n: usize) -> PathBuf {
    let hosts: Vec<Vec<String>> = free_ports(n).into_iter().map(|p| vec![format!("127.0.0.1:{p}")]).collect();
    let path = std::env::temp_dir().join(format!("gomlx-ring-{tag}-{}.json", std::process::id()));
    std::fs::write(&path, serde_json::to_string(&hosts).unwrap()).unwrap();
    path
}

/// Runs `test` of this binary as `n` ranks; returns each rank's stdout, in rank order.
fn run_ranks(test: &str, n: usize) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    run_commands(test, n, |rank| {
        let mut c = Command::new(&exe);
        c.args([test, "--exact", "--nocapture", "--test-threads=1", "-q"])
            .env("GOMLX_TEST_RANK", rank.to_string())
            .env("GOMLX_TEST_PARENT", std::process::id().to_string());
        c
    })
}

/// Where rank `rank` of `test` leaves its logits (little-endian f32): a
/// vocabulary of 262k at every position is too much for a stdout line.
fn logits_file(test: &str, rank: usize) -> PathBuf {
    let parent = std::env::var("GOMLX_TEST_PARENT").unwrap_or_else(|_| std::process::id().to_string());
    std::env::temp_dir().join(format!("gomlx-split-{test}-{parent}-{rank}.f32"))
}

/// Runs `command(rank)` as rank 0..n of a ring group on loopback (MLX_RANK and a
/// host file, as mlx.launch sets them); each must succeed; their stdouts in rank order.
fn run_commands(tag: &str, n: usize, command: impl Fn(usize) -> Command) -> Vec<String> {
    let hosts = hostfile(tag, n);
    let mut children: Vec<Child> = (0..n)
        .map(|rank| {
            command(rank)
                .env("MLX_RANK", rank.to_string())
                .env("MLX_HOSTFILE", &hosts)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Drained while the ranks run: a full pipe would block a rank writing its logits.
    let readers: Vec<_> = children
        .iter_mut()
        .map(|c| {
            let (mut out, mut err) = (c.stdout.take().unwrap(), c.stderr.take().unwrap());
            std::thread::spawn(move || {
                let (mut o, mut e) = (String::new(), String::new());
                let t = std::thread::spawn(move || {
                    let _ = std::io::Read::read_to_string(&mut err, &mut e);
                    e
                });
                let _ = std::io::Read::read_to_string(&mut out, &mut o);
                (o, t.join().unwrap())
            })
        })
        .collect();
    let start = Instant::now();
    let mut done = vec![None; n];
    while done.iter().any(Option::is_none) {
        for (i, c) in children.iter_mut().enumerate() {
            if done[i].is_none() {
                done[i] = c.try_wait().unwrap();
            }
        }
        if start.elapsed() > RANK_TIMEOUT {
            for c in &mut children {
                let _ = c.kill();
            }
            panic!("ranks of {tag} still running after {RANK_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_file(&hosts);
    readers
        .into_iter()
        .zip(done)
        .enumerate()
        .map(|(rank, (r, status))| {
            let (stdout, stderr) = r.join().unwrap();
            let status = status.unwrap();
            assert!(status.success(), "rank {rank} of {tag} failed: {status}\n{stdout}\n{stderr}");
            stdout
        })
        .collect()
}

/// This process's rank when a test runs it as one.
fn as_rank() -> Option<usize> {
    std::env::var("GOMLX_TEST_RANK").ok().map(|r| r.parse().unwrap())
}

/// The values a rank prints on its `result:` line.
fn result_of(stdout: &str) -> Vec<f32> {
    let line = stdout.lines().find_map(|l| l.strip_prefix("result: ")).unwrap_or_else(|| panic!("no result line in:\n{stdout}"));
    serde_json::from_str(line).unwrap()
}

#[test]
fn two_ranks_all_sum_and_gather() {
    if let Some(rank) = as_rank() {
        let g = Group::init("ring", true).unwrap();
        assert_eq!((g.rank(), g.size()), (rank, 2));
        let r = rank as f32;
        let x = Array::from_slice(&[1.0 + r, 10.0 * (r + 1.0), -0.5 * r], &[3]).unwrap();
        let sum = g.all_sum(&x).unwrap().to_vec::<f32>().unwrap();
        let gathered = g.all_gather(&x.reshape(&[1, 3]).unwrap()).unwrap();
        assert_eq!(gathered.shape(), vec![2, 3]);
        // Point to point: rank 0 sends, rank 1 receives.
        let p2p = if rank == 0 {
            g.send(&Array::from_slice(&[7.0f32, 8.0], &[2]).unwrap(), 1).unwrap().to_vec::<f32>().unwrap()
        } else {
            g.recv(&[2], Dtype::F32, 0).unwrap().to_vec::<f32>().unwrap()
        };
        let mut all = sum;
        all.extend(gathered.to_vec::<f32>().unwrap());
        all.extend(p2p);
        println!("result: {}", serde_json::to_string(&all).unwrap());
        return;
    }
    let outs = run_ranks("two_ranks_all_sum_and_gather", 2);
    // Rank 0 holds [1, 10, 0], rank 1 [2, 20, -0.5].
    let expected = [3.0, 30.0, -0.5, 1.0, 10.0, 0.0, 2.0, 20.0, -0.5, 7.0, 8.0];
    for (rank, out) in outs.iter().enumerate() {
        assert_eq!(result_of(out), expected, "rank {rank}");
    }
}

#[test]
fn a_missing_host_file_is_a_clear_error() {
    // The check runs in a child with a clean environment: MLX keeps a started backend per process.
    if std::env::var_os("GOMLX_TEST_STRICT").is_some() {
        let e = Group::init("ring", true).unwrap_err().to_string();
        assert!(e.contains("ring") && e.contains("MLX_HOSTFILE"), "{e}");
        println!("result: []");
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["a_missing_host_file_is_a_clear_error", "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env("GOMLX_TEST_STRICT", "1")
        .env_remove("MLX_HOSTFILE")
        .env_remove("MLX_RANK")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("result: []"), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
}

// ---- Tensor parallel: a split model against the whole one ----

/// 40 tokens: with 2 experts per token, 80 (token, expert) pairs take the
/// sorted mixture-of-experts path (`MOE_SORT_AT`); decode takes the other.
const PROMPT: [u32; 40] = {
    let mut p = [0u32; 40];
    let mut i = 0;
    while i < 40 {
        p[i] = (i as u32 * 37 + 1) % 256;
        i += 1;
    }
    p
};
const GREEDY: usize = 6;

/// A model to split and how to compare it with the whole one.
struct Case<'a> {
    path: PathBuf,
    prompt: &'a [u32],
    /// Greedy tokens after the prompt.
    greedy: usize,
    dtype: Dtype,
    dequantize: Option<bool>,
    /// The largest |split - whole| / (1 + |whole|) allowed per logit.
    tolerance: f64,
    /// The mixture-of-experts split asked for (None: the default) and the one
    /// each rank's load must report choosing (`ModelInfo::moe_split`).
    moe: Option<MoeSplit>,
    moe_chosen: Option<&'a str>,
}

impl Case<'_> {
    /// A fixture of tests/fixtures/models: `PROMPT`, float32, `LOGIT_TOLERANCE`.
    fn fixture(name: &str, dequantize: Option<bool>) -> Case<'static> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(name);
        Case { path, prompt: &PROMPT, greedy: GREEDY, dtype: Dtype::F32, dequantize, tolerance: LOGIT_TOLERANCE, moe: None, moe_chosen: None }
    }
}

/// Logits of the prompt (all positions, flattened) and the greedy tokens after
/// it, on the CPU; split over the ring group when `distributed`.
fn run_model(case: &Case, distributed: bool) -> gomlx::Result<(Vec<f64>, Vec<u32>)> {
    use gomlx::models::{LoadOptions, Logits, Model};
    gomlx::mlx::stream::set_thread_stream(gomlx::mlx::Stream::new(gomlx::mlx::DeviceKind::Cpu)?);
    let backend = distributed.then(|| "ring".to_string());
    let opts = LoadOptions { dtype: Some(case.dtype), dequantize: case.dequantize, distributed: backend, moe_split: case.moe, ..Default::default() };
    let model = Model::load(&case.path, &opts)?;
    if distributed {
        // Really split: this rank holds part of the weights.
        let info = model.info();
        assert!(info.ranks > 1 && info.rank == as_rank().unwrap(), "rank {} of {}", info.rank, info.ranks);
        if let Some(chosen) = case.moe_chosen {
            assert_eq!(info.moe_split.as_deref(), Some(chosen), "mixture-of-experts split of {}", case.path.display());
        }
    }
    let mut caches = model.new_caches();
    let tokens = Array::from_slice(case.prompt, &[1, case.prompt.len() as i32])?;
    let logits = model.forward(&tokens, &mut caches, None, Logits::All)?;
    let v = logits.dim(-1) as usize;
    let all = logits.astype(Dtype::F64)?.to_vec::<f64>()?;
    let argmax = |row: &[f64]| row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32).unwrap();
    let mut next = argmax(&all[all.len() - v..]);
    let mut greedy = vec![next];
    while greedy.len() < case.greedy {
        let l = model.forward(&Array::from_slice(&[next], &[1, 1])?, &mut caches, None, Logits::Last)?.astype(Dtype::F64)?.to_vec::<f64>()?;
        next = argmax(&l);
        greedy.push(next);
    }
    Ok((all, greedy))
}

/// A copy of the quantised Qwen 3.5 fixture `name` whose linear-attention
/// `out_proj`s are dequantised (marked unquantised in config.json): their 32
/// inputs are one quantisation group of 32, which no split over ranks can cut;
/// every other quantised tensor stays packed. Written by the test process (named
/// after it), found by its ranks.
fn dense_linear_out(name: &str) -> gomlx::Result<PathBuf> {
    let parent = if as_rank().is_some() { std::os::unix::process::parent_id() } else { std::process::id() };
    let dir = std::env::temp_dir().join(format!("gomlx-{name}-dense-out-{parent}"));
    if as_rank().is_some() {
        return Ok(dir);
    }
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(name);
    gomlx::mlx::stream::set_thread_stream(gomlx::mlx::Stream::new(gomlx::mlx::DeviceKind::Cpu)?);
    std::fs::create_dir_all(&dir).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let (group, bits) = (config["quantization"]["group_size"].as_i64().unwrap() as i32, config["quantization"]["bits"].as_i64().unwrap() as i32);
    let mut tensors = gomlx::mlx::io::load_safetensors(&src.join("model.safetensors"))?.tensors;
    let outs: Vec<String> =
        tensors.keys().filter_map(|k| k.strip_suffix(".linear_attn.out_proj.scales")).map(|p| format!("{p}.linear_attn.out_proj")).collect();
    assert!(!outs.is_empty(), "{}: no quantised linear_attn.out_proj", src.display());
    for p in &outs {
        let (w, s, b) =
            (tensors.remove(&format!("{p}.weight")).unwrap(), tensors.remove(&format!("{p}.scales")).unwrap(), tensors.remove(&format!("{p}.biases")).unwrap());
        tensors.insert(format!("{p}.weight"), gomlx::mlx::dequantize(&w, &s, &b, group, bits, Some(Dtype::F32))?);
        for key in ["quantization", "quantization_config"] {
            config[key][p.as_str()] = serde_json::Value::Bool(false);
        }
    }
    gomlx::mlx::io::save_safetensors(&dir.join("model.safetensors"), &tensors, &Default::default())?;
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    Ok(dir)
}

/// Runs `test` as `ranks` ranks splitting `fixture` and checks every rank
/// against the whole model: the same greedy tokens, and logits within
/// `LOGIT_TOLERANCE` (float32 sums taken in another order: per rank, then across ranks).
fn check_split(test: &str, fixture: &str, ranks: usize, dequantize: Option<bool>) {
    check_split_within(test, fixture, ranks, dequantize, LOGIT_TOLERANCE)
}

/// `check_split` with the bound `tolerance` instead of `LOGIT_TOLERANCE`.
fn check_split_within(test: &str, fixture: &str, ranks: usize, dequantize: Option<bool>, tolerance: f64) {
    check_split_of(test, &Case { tolerance, ..Case::fixture(fixture, dequantize) }, ranks);
}

/// `check_split` of any case.
fn check_split_of(test: &str, case: &Case, ranks: usize) {
    let what = case.path.file_name().unwrap().to_string_lossy();
    if let Some(rank) = as_rank() {
        let (logits, tokens) = run_model(case, true).unwrap();
        std::fs::write(logits_file(test, rank), logits.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
        println!("tokens: {}", serde_json::to_string(&tokens).unwrap());
        return;
    }
    let (whole, want) = run_model(case, false).unwrap();
    // The whole model's buffers go back before the ranks load theirs.
    gomlx::mlx::memory::clear_cache().unwrap();
    let outs = run_ranks(test, ranks);
    for (rank, out) in outs.iter().enumerate() {
        let file = logits_file(test, rank);
        let bytes = std::fs::read(&file).unwrap();
        let _ = std::fs::remove_file(&file);
        let got: Vec<f64> = bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(got.len(), whole.len(), "{what} rank {rank}: logits count");
        // A NaN would slip through the largest-difference fold below.
        assert!(got.iter().chain(&whole).all(|v| v.is_finite()), "{what} rank {rank}: logits not finite");
        let worst = got.iter().zip(&whole).map(|(a, b)| (a - b).abs() / (1.0 + b.abs())).fold(0f64, f64::max);
        eprintln!("{what} over {ranks} ranks in {}, rank {rank}: largest logit difference {worst:e} (relative to 1 + |logit|)", case.dtype.name());
        assert!(worst <= case.tolerance, "{what} over {ranks} ranks, rank {rank}: logits differ by {worst:e} (bound {:e})", case.tolerance);
        let tokens: Vec<u32> = serde_json::from_str(out.lines().find_map(|l| l.strip_prefix("tokens: ")).unwrap()).unwrap();
        assert_eq!(tokens, want, "{what} over {ranks} ranks, rank {rank}: greedy tokens");
    }
}

/// |split - whole| / (1 + |whole|) for each logit. The products of a rank sum
/// fewer terms and the ranks' partial sums are added after: float32 rounding
/// of sums of ~100 terms of these models (measured: docs/distributed.md).
const LOGIT_TOLERANCE: f64 = 3e-5;

/// Gemma 4's fixtures move more under float32 rounding (attention scale 1 on
/// normed queries and keys): on the dense one mlx-lm and transformers differ by
/// 4.6e-5, and the whole model here is 2.6e-5 from transformers (the split 1.9e-5),
/// by this measure; split against whole measured 3.5e-5 at most (docs/distributed.md).
const GEMMA4_TOLERANCE: f64 = 1e-4;

#[test]
fn dense_llama_tied_over_2_ranks() {
    check_split("dense_llama_tied_over_2_ranks", "llama_tied", 2, None);
}

#[test]
fn dense_llama_tied_over_4_ranks() {
    check_split("dense_llama_tied_over_4_ranks", "llama_tied", 4, None);
}

#[test]
fn gqa_qwen3_over_2_ranks() {
    check_split("gqa_qwen3_over_2_ranks", "qwen3_qknorm", 2, None);
}

#[test]
fn gqa_qwen3_over_4_ranks() {
    // 2 kv heads over 4 ranks: each pair of ranks holds the kv head its query heads read.
    check_split("gqa_qwen3_over_4_ranks", "qwen3_qknorm", 4, None);
}

/// A mixture-of-experts fixture split the default way, which must choose `expect`.
fn check_moe(test: &str, fixture: &str, ranks: usize, dequantize: Option<bool>, expect: &str) {
    check_split_of(test, &Case { moe_chosen: Some(expect), ..Case::fixture(fixture, dequantize) }, ranks);
}

#[test]
fn moe_mixtral_over_2_ranks() {
    // Per-expert w1/w3 rows and w2 columns of every expert.
    check_moe("moe_mixtral_over_2_ranks", "mixtral", 2, None, "columns");
}

#[test]
fn moe_qwen3_moe_over_4_ranks() {
    check_moe("moe_qwen3_moe_over_4_ranks", "qwen3_moe", 4, None, "columns");
}

#[test]
fn moe_qwen3_moe_by_experts_over_4_ranks() {
    // Expert parallel on request: 2 whole experts per rank.
    let test = "moe_qwen3_moe_by_experts_over_4_ranks";
    check_split_of(test, &Case { moe: Some(MoeSplit::Experts), moe_chosen: Some("experts"), ..Case::fixture("qwen3_moe", None) }, 4);
}

#[test]
fn gpt_oss_sinks_and_biased_experts_over_2_ranks() {
    // The experts' down_proj bias is added once (rank 0), gate/up biases split with their rows.
    check_moe("gpt_oss_sinks_and_biased_experts_over_2_ranks", "gpt_oss", 2, None, "columns");
}

#[test]
fn gpt_oss_mxfp4_experts_over_2_ranks() {
    // 32-wide experts over 2 ranks would cut MXFP4's groups of 32: whole experts instead.
    check_moe("gpt_oss_mxfp4_experts_over_2_ranks", "gpt_oss_mxfp4", 2, None, "experts");
}

#[test]
fn gpt_oss_mxfp4_wide_experts_by_columns_over_2_ranks() {
    // gpt_oss_mxfp4 with each expert twice as wide (OpenAI's blocks, scales and biases
    // repeated along the width: gate/up stay interleaved pairs): each rank's 32 down_proj
    // columns are one MXFP4 group, its gate/up rows one contiguous run of the fused tensor.
    let parent = if as_rank().is_some() { std::os::unix::process::parent_id() } else { std::process::id() };
    let dir = std::env::temp_dir().join(format!("gomlx-gpt-oss-wide-{parent}"));
    if as_rank().is_none() {
        gomlx::mlx::stream::set_thread_stream(gomlx::mlx::Stream::new(gomlx::mlx::DeviceKind::Cpu).unwrap());
        let from = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/gpt_oss_mxfp4");
        let mut tensors = gomlx::mlx::io::load_safetensors(&from.join("model.safetensors")).unwrap().tensors;
        let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(from.join("config.json")).unwrap()).unwrap();
        for l in 0..config["num_hidden_layers"].as_u64().unwrap() {
            let p = format!("model.layers.{l}.mlp.experts");
            for (n, axis) in
                [("gate_up_proj_blocks", 1), ("gate_up_proj_scales", 1), ("gate_up_proj_bias", 1), ("down_proj_blocks", 2), ("down_proj_scales", 2)]
            {
                let name = format!("{p}.{n}");
                let w = tensors.remove(&name).unwrap();
                tensors.insert(name, gomlx::mlx::concatenate(&[&w, &w], axis).unwrap());
            }
        }
        std::fs::create_dir_all(&dir).unwrap();
        gomlx::mlx::io::save_safetensors(&dir.join("model.safetensors"), &tensors, &Default::default()).unwrap();
        config["intermediate_size"] = serde_json::json!(2 * config["intermediate_size"].as_u64().unwrap());
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    }
    check_moe("gpt_oss_mxfp4_wide_experts_by_columns_over_2_ranks", dir.to_str().unwrap(), 2, None, "columns");
    if as_rank().is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn quantized_qwen3_moe_q4_over_2_ranks() {
    // Kept quantised (not expanded at load): 16 columns per rank would cut the groups
    // of 32, so the experts split whole (packed weights, scales and biases by expert).
    check_moe("quantized_qwen3_moe_q4_over_2_ranks", "qwen3_moe_q4", 2, Some(false), "experts");
}

#[test]
fn quantized_wide_qwen3_moe_by_columns_over_2_ranks() {
    // qwen3_moe with each expert twice as wide (its rows twice, down_proj halved, twice),
    // stacked and quantised 4-bit in groups of 32: each rank's 32 down_proj columns are one group.
    let parent = if as_rank().is_some() { std::os::unix::process::parent_id() } else { std::process::id() };
    let dir = std::env::temp_dir().join(format!("gomlx-qwen3-moe-wide-{parent}"));
    if as_rank().is_none() {
        gomlx::mlx::stream::set_thread_stream(gomlx::mlx::Stream::new(gomlx::mlx::DeviceKind::Cpu).unwrap());
        let from = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/qwen3_moe");
        let mut tensors = gomlx::mlx::io::load_safetensors(&from.join("model.safetensors")).unwrap().tensors;
        let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(from.join("config.json")).unwrap()).unwrap();
        let experts = config["num_experts"].as_u64().unwrap();
        for l in 0..config["num_hidden_layers"].as_u64().unwrap() {
            let p = format!("model.layers.{l}.mlp");
            if !tensors.contains_key(&format!("{p}.experts.0.down_proj.weight")) {
                continue;
            }
            for n in ["gate_proj", "up_proj", "down_proj"] {
                let parts: Vec<Array> = (0..experts).map(|e| tensors.remove(&format!("{p}.experts.{e}.{n}.weight")).unwrap()).collect();
                let w = gomlx::mlx::stack(&parts.iter().collect::<Vec<_>>(), 0).unwrap();
                let wide = match n {
                    "down_proj" => {
                        let half = w.mul_scalar(0.5).unwrap();
                        gomlx::mlx::concatenate(&[&half, &half], 2).unwrap()
                    }
                    _ => gomlx::mlx::concatenate(&[&w, &w], 1).unwrap(),
                };
                let (q, scales, biases) = gomlx::mlx::quantize(&wide, 32, 4).unwrap();
                let name = format!("{p}.switch_mlp.{n}");
                tensors.extend([(format!("{name}.weight"), q), (format!("{name}.scales"), scales), (format!("{name}.biases"), biases)]);
            }
        }
        std::fs::create_dir_all(&dir).unwrap();
        gomlx::mlx::io::save_safetensors(&dir.join("model.safetensors"), &tensors, &Default::default()).unwrap();
        config["moe_intermediate_size"] = serde_json::json!(64);
        config["quantization"] = serde_json::json!({"group_size": 32, "bits": 4});
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    }
    check_moe("quantized_wide_qwen3_moe_by_columns_over_2_ranks", dir.to_str().unwrap(), 2, Some(false), "columns");
    if as_rank().is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn qwen3_5_gated_delta_and_gated_attention_over_2_ranks() {
    // 2 key heads with 2 value heads each, 4 query heads with their gates, 2 kv heads: one of each per rank.
    check_split("qwen3_5_gated_delta_and_gated_attention_over_2_ranks", "qwen3_5", 2, None);
}

#[test]
fn qwen3_5_moe_shared_expert_over_2_ranks() {
    // transformers' fused experts [E, 2I, H]: each rank reads its rows of both halves.
    // By columns the float32 logits move by up to 4.3e-5 on this fixture (by experts
    // 1.5e-5; gather_mm has no float64 to tell rounding apart): bounded like Gemma 4's.
    let case = Case { tolerance: GEMMA4_TOLERANCE, moe_chosen: Some("columns"), ..Case::fixture("qwen3_5_moe", None) };
    check_split_of("qwen3_5_moe_shared_expert_over_2_ranks", &case, 2);
}

#[test]
fn qwen3_5_moe_per_expert_checkpoint_over_2_ranks() {
    // transformers 5's layout: experts stored one by one, read by the rank that holds them.
    let case = Case { moe: Some(MoeSplit::Experts), moe_chosen: Some("experts"), ..Case::fixture("qwen3_5_moe_tf5", None) };
    check_split_of("qwen3_5_moe_per_expert_checkpoint_over_2_ranks", &case, 2);
}

#[test]
fn quantized_qwen3_5_moe_q4_over_2_ranks() {
    // Packed in_proj_qkv read as 3 row ranges, q_proj with its gates, experts and the
    // shared expert split; out_proj expanded, as its one quantisation group cannot be.
    let test = "quantized_qwen3_5_moe_q4_over_2_ranks";
    let path = dense_linear_out("qwen3_5_moe_q4").unwrap();
    // 16 expert columns per rank would cut the groups of 32: whole experts.
    let case = Case { path: path.clone(), moe_chosen: Some("experts"), ..Case::fixture("qwen3_5_moe_q4", Some(false)) };
    check_split_of(test, &case, 2);
    if as_rank().is_none() {
        let _ = std::fs::remove_dir_all(&path);
    }
}

#[test]
fn phi3_fused_qkv_and_gate_up_over_2_ranks() {
    // qkv_proj read as 3 row ranges (q, k, v heads), gate_up_proj as 2.
    check_split("phi3_fused_qkv_and_gate_up_over_2_ranks", "phi3_fused", 2, None);
}

#[test]
fn quantized_phi3_fused_q4_over_2_ranks() {
    check_split("quantized_phi3_fused_q4_over_2_ranks", "phi3_fused_q4", 2, Some(false));
}

#[test]
fn gemma3_over_2_ranks() {
    check_split("gemma3_over_2_ranks", "gemma3_text", 2, None);
}

#[test]
fn gemma4_per_layer_inputs_and_shared_kv_over_2_ranks() {
    // Sliding layers of 16-wide heads, global ones of 32, the last 2 layers reading
    // earlier layers' keys (double-wide MLPs), a per-layer embedding table split by vocabulary.
    check_split_within("gemma4_per_layer_inputs_and_shared_kv_over_2_ranks", "gemma4", 2, None, GEMMA4_TOLERANCE);
}

#[test]
fn gemma4_over_4_ranks() {
    // One query head per rank: each pair of ranks holds one of the 2 kv heads, and carries it to the sharing layers.
    check_split_within("gemma4_over_4_ranks", "gemma4", 4, None, GEMMA4_TOLERANCE);
}

#[test]
fn gemma4_moe_over_2_ranks() {
    // Global layers have 1 kv head (values are the keys): both ranks hold it. The
    // fused gate_up_proj [E, 2I, H] gives each rank its rows of both halves.
    let case = Case { tolerance: GEMMA4_TOLERANCE, moe_chosen: Some("columns"), ..Case::fixture("gemma4_moe", None) };
    check_split_of("gemma4_moe_over_2_ranks", &case, 2);
}

#[test]
fn gemma4_q4_over_2_ranks() {
    // Kept 4-bit: the quantised per-layer embedding table is split by rows too.
    check_split_within("gemma4_q4_over_2_ranks", "gemma4_q4", 2, Some(false), GEMMA4_TOLERANCE);
}

#[test]
fn gemma4_moe_q4_over_2_ranks() {
    check_split_within("gemma4_moe_q4_over_2_ranks", "gemma4_moe_q4", 2, Some(false), GEMMA4_TOLERANCE);
}

#[test]
fn gemma4_moe_dense_mlp_kept_whole_over_2_ranks() {
    // gemma4_moe with each dense down_proj quantised in one group of 128 columns: 2 ranks
    // would cut the group, so the dense MLPs stay whole on both ranks (the rest splits).
    let parent = if as_rank().is_some() { std::os::unix::process::parent_id() } else { std::process::id() };
    let dir = std::env::temp_dir().join(format!("gomlx-gemma4-whole-mlp-{parent}"));
    if as_rank().is_none() {
        gomlx::mlx::stream::set_thread_stream(gomlx::mlx::Stream::new(gomlx::mlx::DeviceKind::Cpu).unwrap());
        let from = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/gemma4_moe");
        let mut tensors = gomlx::mlx::io::load_safetensors(&from.join("model.safetensors")).unwrap().tensors;
        for i in 0..4 {
            let name = format!("model.language_model.layers.{i}.mlp.down_proj");
            let w = tensors.remove(&format!("{name}.weight")).unwrap();
            let (q, scales, biases) = gomlx::mlx::quantize(&w, 128, 4).unwrap();
            tensors.extend([(format!("{name}.weight"), q), (format!("{name}.scales"), scales), (format!("{name}.biases"), biases)]);
        }
        std::fs::create_dir_all(&dir).unwrap();
        gomlx::mlx::io::save_safetensors(&dir.join("model.safetensors"), &tensors, &Default::default()).unwrap();
        let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(from.join("config.json")).unwrap()).unwrap();
        config["quantization"] = serde_json::json!({"group_size": 128, "bits": 4});
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    }
    let test = "gemma4_moe_dense_mlp_kept_whole_over_2_ranks";
    check_split_within(test, dir.to_str().unwrap(), 2, Some(false), GEMMA4_TOLERANCE);
    if as_rank().is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// What each rank of `test` reports when loading `fixture` split over the ring group fails.
fn split_error(test: &str, fixture: &str, ranks: usize) -> Option<Vec<String>> {
    if as_rank().is_some() {
        let e = run_model(&Case::fixture(fixture, Some(false)), true).map(|_| ()).unwrap_err().to_string();
        println!("result: []");
        println!("error: {e}");
        return None;
    }
    let outs = run_ranks(test, ranks);
    Some(outs.iter().map(|o| o.lines().find_map(|l| l.strip_prefix("error: ")).unwrap().to_string()).collect())
}

#[test]
fn heads_that_do_not_divide_are_refused() {
    let Some(errors) = split_error("heads_that_do_not_divide_are_refused", "llama_tied", 3) else { return };
    for e in errors {
        assert!(e.contains("4 attention heads do not divide by 3"), "{e}");
    }
}

#[test]
fn linear_attention_key_heads_that_do_not_divide_are_refused() {
    // qwen3_5's 4 query and 2 kv heads would split over 4 ranks; its 2 gated delta key heads do not.
    let Some(errors) = split_error("linear_attention_key_heads_that_do_not_divide_are_refused", "qwen3_5", 4) else { return };
    for e in errors {
        assert!(e.contains("2 linear-attention key heads (linear_num_key_heads) do not divide by 4"), "{e}");
    }
}

#[test]
fn a_split_through_a_quantisation_group_is_refused() {
    // o_proj's 64 inputs in groups of 32: 4 ranks would get half a group each.
    let Some(errors) = split_error("a_split_through_a_quantisation_group_is_refused", "llama_tied_q4", 4) else { return };
    for e in errors {
        assert!(e.contains("o_proj") && e.contains("quantisation group"), "{e}");
    }
}

#[test]
fn a_gated_delta_out_proj_in_one_quantisation_group_is_refused() {
    // qwen3_5_q4's linear-attention out_proj has 32 inputs in one group of 32.
    let Some(errors) = split_error("a_gated_delta_out_proj_in_one_quantisation_group_is_refused", "qwen3_5_q4", 2) else { return };
    for e in errors {
        assert!(e.contains("linear_attn.out_proj") && e.contains("quantisation group"), "{e}");
    }
}

// ---- GGUF files: each rank decodes only its part of each tensor ----

/// 8 ordinary tokens of both vocabularies, and 4 greedy ones after them: Gemma 3's
/// 262k-entry vocabulary makes every position's logits 1 MiB.
const GGUF_PROMPT: [u32; 8] = [1000, 1613, 2226, 2839, 3452, 4065, 4678, 5291];

fn gguf(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/models").join(name);
    assert!(p.is_file(), "{} is missing: run scripts/fetch-models", p.display());
    p
}

#[test]
fn gguf_smollm2_q4_1_over_3_ranks() {
    // 9 heads, 3 kv heads: q/k rows unpermuted per head on each rank; the whole
    // model loads through MLX's reader, the ranks through gomlx's decoders.
    let case =
        Case { path: smollm2(), prompt: &GGUF_PROMPT, greedy: 4, dtype: Dtype::F32, dequantize: None, tolerance: LOGIT_TOLERANCE, moe: None, moe_chosen: None };
    check_split_of("gguf_smollm2_q4_1_over_3_ranks", &case, 3);
}

#[test]
fn gguf_gemma3_q4_k_m_over_2_ranks() {
    // 4 heads, 1 kv head (whole on both ranks); o/down columns in whole Q4_K/Q6_K
    // blocks of 256. In float64: Gemma's large residual values put float32's
    // reordered sums 9.5e-5 apart (docs/distributed.md), float64's agree to 1e-12.
    let case = Case {
        path: gguf("gemma-3-270m-q4_k_m.gguf"),
        prompt: &GGUF_PROMPT,
        greedy: 4,
        dtype: Dtype::F64,
        dequantize: None,
        tolerance: 1e-12,
        moe: None,
        moe_chosen: None,
    };
    check_split_of("gguf_gemma3_q4_k_m_over_2_ranks", &case, 2);
}

// ---- The command line, SPMD: every rank runs the same command, rank 0 prints ----

fn smollm2() -> PathBuf {
    gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// `gomlx ARGS` alone, then as 3 ranks with `--distributed ring` (SmolLM2's 9
/// heads and 3 kv heads split in 3); (whole stdout, each rank's stdout).
fn gomlx_split(tag: &str, args: &[&str]) -> (String, Vec<String>) {
    let gomlx = env!("CARGO_BIN_EXE_gomlx");
    let whole = Command::new(gomlx).args(args).args(["--device", "cpu"]).output().unwrap();
    assert!(whole.status.success(), "{}", String::from_utf8_lossy(&whole.stderr));
    let outs = run_commands(tag, 3, |_| {
        let mut c = Command::new(gomlx);
        c.args(args).args(["--device", "cpu", "--distributed", "ring"]);
        c
    });
    (String::from_utf8(whole.stdout).unwrap(), outs)
}

#[test]
fn generate_split_over_3_ranks_prints_the_same_text_once() {
    let m = smollm2();
    let args = ["generate", "--model", m.to_str().unwrap(), "--prompt", "What is the capital of France?", "--max-tokens", "16", "--temp", "0"];
    let (whole, outs) = gomlx_split("generate", &args);
    assert!(!whole.trim().is_empty());
    assert_eq!(outs[0], whole, "rank 0 prints what the whole model prints");
    assert!(outs[1].is_empty() && outs[2].is_empty(), "followers print nothing: {outs:?}");
}

#[test]
fn classify_split_over_3_ranks_gives_the_same_tokens() {
    let m = smollm2();
    let d = std::env::temp_dir().join(format!("gomlx-split-classify-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let f = d.join("prompts.txt");
    std::fs::write(&f, "Is Paris in France? Answer yes or no:\nThe capital of France is\n2 + 2 =\n").unwrap();
    let args = ["classify", "--model", m.to_str().unwrap(), "--file", f.to_str().unwrap(), "--logprobs"];
    let (whole, outs) = gomlx_split("classify", &args);
    let rows = |t: &str| t.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).collect::<Vec<_>>();
    let (a, b) = (rows(&whole), rows(&outs[0]));
    assert_eq!(a.len(), 3);
    assert_eq!(b.len(), 3);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x["token"], y["token"], "{x} vs {y}");
        let (lx, ly) = (x["logprob"].as_f64().unwrap(), y["logprob"].as_f64().unwrap());
        assert!((lx - ly).abs() <= 1e-4 * (1.0 + lx.abs()), "{x} vs {y}");
    }
    assert!(outs[1].is_empty() && outs[2].is_empty(), "followers print nothing: {outs:?}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn bench_split_over_3_ranks_measures_the_same_tokens() {
    // Every rank runs the bench and its worker processes in step; rank 0's workers lead,
    // the others' follow, and rank 0 alone reports.
    let m = smollm2();
    let small = ["--reps", "1", "--prefill-tokens", "16", "--decode-tokens", "4", "--classify-prompts", "2", "--no-warmup", "--json"];
    let args: Vec<&str> = ["bench", "--model", m.to_str().unwrap()].into_iter().chain(small).collect();
    let (whole, outs) = gomlx_split("bench", &args);
    let report = |t: &str| serde_json::from_str::<serde_json::Value>(t.trim()).unwrap_or_else(|e| panic!("{e}: {t}"));
    let (a, b) = (report(&whole), report(&outs[0]));
    assert_eq!((a["gomlx"][0]["ranks"].as_u64(), b["gomlx"][0]["ranks"].as_u64()), (Some(1), Some(3)));
    let (ra, rb) = (&a["runs"]["gomlx"]["auto"][0], &b["runs"]["gomlx"]["auto"][0]);
    for k in ["decode_ids", "classify_ids", "classify_prefixed_ids"] {
        assert!(ra[k].as_array().is_some_and(|v| !v.is_empty()), "{k}: {ra}");
        assert_eq!(ra[k], rb[k], "{k}");
    }
    assert!(outs[1].is_empty() && outs[2].is_empty(), "followers print nothing: {outs:?}");
}

// ---- A C host as ranks: rank 0 loads and serves, the others gm_follow ----

/// SmolLM2 (9 heads, 3 kv heads) split over the ring as `distributed` says, on the CPU.
fn c_load_options(distributed: &std::ffi::CStr) -> gomlx::ffi::gm_load_options {
    let mut o: gomlx::ffi::gm_load_options = unsafe { std::mem::zeroed() };
    o.struct_size = std::mem::size_of::<gomlx::ffi::gm_load_options>();
    o.device = gomlx::ffi::GM_DEVICE_CPU;
    o.distributed = distributed.as_ptr();
    o
}

fn c_last_error() -> String {
    unsafe { std::ffi::CStr::from_ptr(gomlx::ffi::gm_last_error()) }.to_string_lossy().into_owned()
}

/// Greedy texts of two prompts through `gm_batch_generate` on a model loaded with `opts`.
fn c_generate(path: &std::ffi::CStr, opts: &gomlx::ffi::gm_load_options) -> Vec<String> {
    use gomlx::ffi::*;
    let m = gm_model_load(path.as_ptr(), opts);
    assert!(!m.is_null(), "load: {}", c_last_error());
    let prompts = [c"The capital of France is", c"One, two, three,"];
    let ptrs: Vec<*const c_char> = prompts.iter().map(|p| p.as_ptr()).collect();
    let mut g: gm_generate_options = unsafe { std::mem::zeroed() };
    g.struct_size = std::mem::size_of::<gm_generate_options>();
    g.max_tokens = 8;
    g.ignore_eos = true;
    let mut out: gm_batch_result = unsafe { std::mem::zeroed() };
    out.struct_size = std::mem::size_of::<gm_batch_result>();
    assert_eq!(gm_batch_generate(m, ptrs.as_ptr(), ptrs.len(), &g, &mut out, std::ptr::null_mut()), GM_OK, "{}", c_last_error());
    let texts = (0..out.n).map(|i| unsafe { std::ffi::CStr::from_ptr(*out.texts.add(i)) }.to_string_lossy().into_owned()).collect();
    gm_batch_result_free(&mut out);
    gm_model_close(m);
    texts
}

#[test]
fn c_host_rank_0_serves_and_the_others_follow() {
    use gomlx::ffi::*;
    let path = std::ffi::CString::new(smollm2().to_str().unwrap()).unwrap();
    if let Some(rank) = as_rank() {
        let opts = c_load_options(c"ring");
        let mut r = -2i64;
        assert_eq!(gm_distributed_rank(&opts, &mut r), GM_OK, "{}", c_last_error());
        assert_eq!(r, rank as i64);
        if rank == 0 {
            println!("texts: {}", serde_json::to_string(&c_generate(&path, &opts)).unwrap());
        } else {
            let mut steps = 0u64;
            assert_eq!(gm_follow(path.as_ptr(), &opts, &mut steps), GM_OK, "{}", c_last_error());
            println!("steps: {steps}");
        }
        return;
    }
    // Not under a launcher: not split, and a follower's call is refused by name.
    let (off, bad) = (c_load_options(c"off"), c_load_options(c"tcp"));
    let mut r = 0i64;
    assert_eq!(gm_distributed_rank(&off, &mut r), GM_OK);
    assert_eq!(r, -1);
    assert_eq!(gm_distributed_rank(&bad, &mut r), GM_ERROR);
    assert!(c_last_error().contains("gm_load_options.distributed is 'tcp'"), "{}", c_last_error());
    assert_eq!(gm_follow(path.as_ptr(), &off, std::ptr::null_mut()), GM_ERROR);
    assert!(c_last_error().contains("not a follower rank"), "{}", c_last_error());
    let whole = c_generate(&path, &off);
    assert_eq!(whole.len(), 2);
    let outs = run_ranks("c_host_rank_0_serves_and_the_others_follow", 3);
    let texts: Vec<String> = serde_json::from_str(outs[0].lines().find_map(|l| l.strip_prefix("texts: ")).unwrap()).unwrap();
    assert_eq!(texts, whole, "rank 0 of a split SmolLM2 generates what the whole model does");
    for (rank, out) in outs.iter().enumerate().skip(1) {
        let steps: u64 = out.lines().find_map(|l| l.strip_prefix("steps: ")).unwrap().parse().unwrap();
        assert!(steps >= 8, "rank {rank} followed {steps} turns");
    }
}
