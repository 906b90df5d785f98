//! Replicas (`EngineOptions::replicas`): N engines on the CPU answer as one engine does,
//! concurrent work reaches every replica, sessions stay on theirs, and closing frees them all.
//! MLX memory is process-wide, so the tests of this file run one at a time (`ONE`).

use gomlx::engine::{ClassifyOptions, Engine, EngineOptions, GenerateOptions};
use gomlx::mlx::{io, memory, DeviceKind};
use gomlx::sample::SamplerConfig;
use std::path::PathBuf;
use std::sync::Mutex;

static ONE: Mutex<()> = Mutex::new(());

fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(case)
}

fn inputs(case: &str) -> Vec<u32> {
    let st = io::load_safetensors(&fixture(case).join("reference.safetensors")).unwrap();
    st.tensors["inputs"].to_vec::<i32>().unwrap().into_iter().map(|v| v as u32).collect()
}

fn load(case: &str, replicas: usize) -> Engine {
    Engine::load(&fixture(case), &EngineOptions { device: Some(DeviceKind::Cpu), replicas: Some(replicas), ..Default::default() }).unwrap()
}

fn requests(e: &Engine) -> Vec<u64> {
    e.replica_stats().iter().map(|r| r.requests).collect()
}

#[test]
fn two_replicas_generate_what_one_engine_does() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    for case in ["llama_tied", "gemma3_text"] {
        let single = load(case, 1);
        let pair = load(case, 2);
        assert_eq!((single.replicas(), pair.replicas()), (1, 2));
        let base = inputs(case);
        let prompts: Vec<Vec<u32>> = vec![base.clone(), base[5..].to_vec(), base[..9].to_vec(), base[2..20].to_vec(), base[1..].to_vec(), base[..14].to_vec()];
        let greedy = GenerateOptions { max_tokens: 12, ignore_eos: true, ..Default::default() };
        let seeded = |i: u64| GenerateOptions { sampler: SamplerConfig { temperature: 1.0, seed: Some(40 + i), ..Default::default() }, ..greedy.clone() };
        for opts in [|_| None, |i| Some(i)].map(|f: fn(u64) -> Option<u64>| f) {
            let opts_for = |i: usize| opts(i as u64).map(seeded).unwrap_or_else(|| greedy.clone());
            // The reference: one engine, one request at a time.
            let want: Vec<Vec<u32>> =
                prompts.iter().enumerate().map(|(i, p)| single.generate_tokens(p.clone(), &opts_for(i)).unwrap().collect_text().unwrap().1).collect();
            // All at once on the pair: least outstanding work alternates them, three each.
            let before = requests(&pair);
            let mut gens: Vec<_> = prompts.iter().enumerate().map(|(i, p)| pair.generate_tokens(p.clone(), &opts_for(i)).unwrap()).collect();
            let during = pair.replica_stats();
            assert_eq!(during.iter().map(|r| r.outstanding).collect::<Vec<_>>(), vec![3, 3], "{case}: {during:?}");
            let got: Vec<Vec<u32>> = gens.iter_mut().map(|g| g.collect_text().unwrap().1).collect();
            assert_eq!(got, want, "{case}: the pair's tokens differ from one engine's");
            let after = requests(&pair);
            assert_eq!((after[0] - before[0], after[1] - before[1]), (3, 3), "{case}");
            assert!(pair.replica_stats().iter().all(|r| r.outstanding == 0));
        }
        // Batch generate spreads its rows the same way and answers the same.
        let (outs, _) = pair.batch_generate_tokens(prompts.clone(), &greedy).unwrap();
        for (o, p) in outs.iter().zip(&prompts) {
            assert_eq!(o.tokens, single.generate_tokens(p.clone(), &greedy).unwrap().collect_text().unwrap().1);
        }
    }
}

#[test]
fn two_replicas_classify_as_one_engine_does() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let case = "llama_rope_llama3";
    let single = load(case, 1);
    let pair = load(case, 2);
    let base = inputs(case);
    let prompts: Vec<Vec<u32>> = (0..8).map(|i| base[..10 + i * 2].iter().chain(&base[i..i + 1]).cloned().collect()).collect();
    // Prompt by prompt (batches of one, no shared prefix) the computation is the same: equal scores.
    let alone = ClassifyOptions { return_logits: true, logprobs: true, batch_size: Some(1), no_shared_prefix: true, ..Default::default() };
    let before = requests(&pair);
    let (a, m) = single.classify_tokens(prompts.clone(), None, &alone).unwrap();
    let (b, _) = pair.classify_tokens(prompts.clone(), None, &alone).unwrap();
    assert_eq!(m.prompts, 8);
    assert_eq!(a, b, "scores differ");
    // The call was split in two jobs of four, one per replica.
    let after = requests(&pair);
    assert_eq!((after[0] - before[0], after[1] - before[1]), (1, 1));
    // Batched (the pair's batches hold half the prompts each): the same tokens, logits within
    // float32 rounding of the batched matmul (as classify against unbatched forwards, engine.rs).
    let batched = ClassifyOptions { return_logits: true, logprobs: true, ..Default::default() };
    let (a, _) = single.classify_tokens(prompts.clone(), None, &batched).unwrap();
    let (b, _) = pair.classify_tokens(prompts, None, &batched).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.token, y.token);
        let (lx, ly) = (x.logits.as_ref().unwrap(), y.logits.as_ref().unwrap());
        let scale = lx.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = lx.iter().zip(ly).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(diff / scale < 1e-5, "relative logit difference {}", diff / scale);
    }
}

#[test]
fn sessions_stay_on_their_replica() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let case = "llama_tied";
    let single = load(case, 1);
    let pair = load(case, 2);
    let base = inputs(case);
    let opts = GenerateOptions { max_tokens: 6, ignore_eos: true, ..Default::default() };
    let (s1, s2) = (single.new_session().unwrap(), pair.new_session().unwrap());
    let mut turn = base[..12].to_vec();
    for i in 0..3 {
        let mut w = single.generate_in_session(turn.clone(), &opts, &s1).unwrap();
        let want = w.collect_text().unwrap().1;
        // Keep a replica busy so that least-loaded routing alone would move some turn.
        let busy = pair.generate_tokens(base.clone(), &GenerateOptions { max_tokens: 64, ignore_eos: true, ..Default::default() }).unwrap();
        let before = requests(&pair);
        let mut g = pair.generate_in_session(turn.clone(), &opts, &s2).unwrap();
        let got = g.collect_text().unwrap().1;
        let after = requests(&pair);
        drop(busy);
        assert_eq!(got, want);
        // Every turn went to the replica that opened the session (the first: both were idle),
        // and later turns reused its cache as one engine does.
        assert_eq!((after[0] - before[0], after[1] - before[1]), (1, 0), "turn {i}");
        assert_eq!(g.metrics().unwrap().prompt_tokens_evaluated, w.metrics().unwrap().prompt_tokens_evaluated, "turn {i}");
        if i > 0 {
            assert!(g.metrics().unwrap().prompt_tokens_evaluated < turn.len(), "turn {i} reused nothing");
        }
        turn.extend(&got);
        turn.extend(&base[20..24]);
    }
}

#[test]
fn closing_frees_every_replica_and_bad_counts_are_errors() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let err = Engine::load(&fixture("llama_tied"), &EngineOptions { device: Some(DeviceKind::Cpu), replicas: Some(0), ..Default::default() });
    assert!(err.err().unwrap().to_string().contains("replicas must be at least 1"));
    let before = memory::active().unwrap();
    let one = load("gemma3_text", 1);
    let weights = memory::active().unwrap() - before;
    one.close();
    let pair = load("gemma3_text", 2);
    // Two whole copies of the weights.
    let loaded = memory::active().unwrap() - before;
    assert!(loaded >= 2 * weights - weights / 10, "2 replicas hold {loaded} bytes, one {weights}");
    let base = inputs("gemma3_text");
    let gens: Vec<_> =
        (0..4).map(|_| pair.generate_tokens(base.clone(), &GenerateOptions { max_tokens: 4, ignore_eos: true, ..Default::default() }).unwrap()).collect();
    for mut g in gens {
        g.collect_text().unwrap();
    }
    assert!(requests(&pair).iter().all(|&n| n == 2), "{:?}", pair.replica_stats());
    pair.close();
    assert!(pair.is_closed());
    assert_eq!(memory::active().unwrap(), before, "memory after closing both replicas");
    let e = pair.generate_tokens(base, &GenerateOptions::default()).err().unwrap();
    assert!(e.to_string().contains("the model is closed"), "{e}");
}
