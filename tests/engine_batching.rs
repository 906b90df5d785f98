//! Continuous batching never changes answers: a generation's tokens are the
//! ones it gets alone, whichever requests share its batch, join or leave it
//! mid-way, or are cancelled (float32 fixtures: exact greedy and seeded tokens).

use gomlx::engine::{Engine, EngineOptions, FinishReason, GenerateOptions, Generation};
use gomlx::mlx::{io, DeviceKind};
use gomlx::sample::SamplerConfig;
use std::path::PathBuf;

fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(case)
}

fn load(case: &str, max_batch: usize) -> Engine {
    Engine::load(&fixture(case), &EngineOptions { device: Some(DeviceKind::Cpu), max_batch: Some(max_batch), ..Default::default() }).unwrap()
}

fn inputs(case: &str) -> Vec<u32> {
    let st = io::load_safetensors(&fixture(case).join("reference.safetensors")).unwrap();
    st.tensors["inputs"].to_vec::<i32>().unwrap().into_iter().map(|v| v as u32).collect()
}

/// Prompts of different lengths from the fixture's inputs (rotated so they differ).
fn prompts(case: &str, n: usize) -> Vec<Vec<u32>> {
    let base = inputs(case);
    (0..n)
        .map(|i| {
            let len = 3 + (i * 5) % (base.len().max(4) * 2);
            (0..len).map(|j| base[(i * 7 + j) % base.len()]).collect()
        })
        .collect()
}

fn opts(i: usize, sampled: bool) -> GenerateOptions {
    let sampler =
        if sampled { SamplerConfig { temperature: 0.9, top_p: 0.95, seed: Some(100 + i as u64), ..Default::default() } } else { SamplerConfig::default() };
    GenerateOptions { max_tokens: 6 + (i * 3) % 11, ignore_eos: true, sampler, ..Default::default() }
}

fn drain(g: &mut Generation) -> (Vec<u32>, FinishReason) {
    let (_, ids) = g.collect_text().unwrap();
    (ids, g.finish_reason().unwrap())
}

/// Each prompt alone, one after another.
fn solo(engine: &Engine, prompts: &[Vec<u32>], sampled: bool) -> Vec<Vec<u32>> {
    prompts.iter().enumerate().map(|(i, p)| drain(&mut engine.generate_tokens(p.clone(), &opts(i, sampled)).unwrap()).0).collect()
}

/// The prompts as rows of one batch, joining while earlier rows decode: each
/// request starts after the previous one has handed out a token.
fn staggered(engine: &Engine, prompts: &[Vec<u32>], sampled: bool) -> Vec<Vec<u32>> {
    let mut gens: Vec<(Generation, Vec<u32>)> = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        let mut g = engine.generate_tokens(p.clone(), &opts(i, sampled)).unwrap();
        let first = g.next().unwrap().unwrap().id;
        gens.push((g, vec![first]));
    }
    let n = gens.len();
    gens.into_iter()
        .enumerate()
        .map(|(i, (mut g, mut ids))| {
            ids.extend(drain(&mut g).0);
            // Every later row joined while this one decoded, up to the longest.
            if i == 0 && n > 1 {
                assert!(g.metrics().unwrap().batch_rows_max >= 2, "rows never shared a step: {:?}", g.metrics());
            }
            ids
        })
        .collect()
}

fn check(case: &str, sampled: bool) {
    let ps = prompts(case, 6);
    let alone = solo(&load(case, 1), &ps, sampled);
    let engine = load(case, 8);
    let together = staggered(&engine, &ps, sampled);
    for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a, b, "{case} row {i} (prompt of {} tokens, sampled {sampled}): alone vs batched", ps[i].len());
    }
    // All at once too (every row prefills before any decodes).
    let gens: Vec<Generation> = ps.iter().enumerate().map(|(i, p)| engine.generate_tokens(p.clone(), &opts(i, sampled)).unwrap()).collect();
    for (i, mut g) in gens.into_iter().enumerate() {
        assert_eq!(drain(&mut g).0, alone[i], "{case} row {i} submitted together");
    }
}

#[test]
fn greedy_rows_equal_their_solo_runs() {
    for case in ["llama_tied", "qwen2_bias", "qwen3_qknorm", "mistral", "llama_rope_llama3"] {
        check(case, false);
    }
}

#[test]
fn seeded_rows_equal_their_solo_runs() {
    for case in ["llama_tied", "qwen3_qknorm"] {
        check(case, true);
    }
}

/// The 2026 families batch exactly too: a mixture of experts (tokens of
/// different rows routed to different experts, sorted by expert once a step has
/// 64 token-expert pairs), its 4-bit copy through `gather_qmm`, NoPE layers,
/// Ministral 3's per-position query temperature with per-row positions, and
/// Gemma 4's per-layer inputs and shared keys carried beside each row's hidden state.
#[test]
fn new_families_batch_exactly() {
    for case in ["qwen3_moe", "mixtral", "gpt_oss", "gpt_oss_mxfp4", "smollm3_nope", "ministral3_yarn", "phi3_fused", "gemma4", "gemma4_moe"] {
        eprintln!("{case}");
        check(case, false);
    }
    check("qwen3_moe_q4", true);
    // Kept quantised (gather_qmm): the CPU default dequantises a fixture this small.
    let ps = prompts("qwen3_moe_q4", 6);
    let opts_q = |max_batch| EngineOptions { device: Some(DeviceKind::Cpu), max_batch: Some(max_batch), dequantize: Some(false), ..Default::default() };
    let alone = solo(&Engine::load(&fixture("qwen3_moe_q4"), &opts_q(1)).unwrap(), &ps, false);
    let together = staggered(&Engine::load(&fixture("qwen3_moe_q4"), &opts_q(8)).unwrap(), &ps, false);
    assert_eq!(alone, together, "qwen3_moe_q4 kept quantised: alone vs batched");
}

/// Qwen 3.5's linear-attention layers keep one recurrent state per row: rows
/// joining, leaving and prefilling beside each other never mix them (greedy and
/// seeded, dense and mixture of experts).
#[test]
fn hybrid_recurrent_models_batch_exactly() {
    check("qwen3_5", false);
    check("qwen3_5", true);
    check("qwen3_5_moe", false);
    // batch_generate: every row prefilled, then all decode together.
    let ps = prompts("qwen3_5", 5);
    let engine = load("qwen3_5", 8);
    let o = opts(2, false);
    let alone: Vec<Vec<u32>> = ps.iter().map(|p| drain(&mut engine.generate_tokens(p.clone(), &o).unwrap()).0).collect();
    let (out, _) = engine.batch_generate_tokens(ps.clone(), &o).unwrap();
    assert_eq!(out.iter().map(|r| r.tokens.clone()).collect::<Vec<_>>(), alone);
}

/// A prefix-cache test's set-up: the case's prompts, greedy options, and the
/// case loaded without and with a 64 MiB prefix cache.
fn prefix_cache_setup(case: &str) -> (Vec<Vec<u32>>, GenerateOptions, Engine, Engine) {
    let base = prompts(case, 3);
    let o = opts(1, false);
    let plain = load(case, 8);
    let cached =
        Engine::load(&fixture(case), &EngineOptions { device: Some(DeviceKind::Cpu), prefix_cache_bytes: Some(64 << 20), ..Default::default() }).unwrap();
    (base, o, plain, cached)
}

/// Runs p with the prefix cache and without, checks the tokens agree, and
/// returns the cached run (its metrics tell what was reused) and its tokens.
fn cached_matches_plain(cached: &Engine, plain: &Engine, p: &[u32], o: &GenerateOptions) -> (Generation, Vec<u32>) {
    let mut g = cached.generate_tokens(p.to_vec(), o).unwrap();
    let (ids, _) = drain(&mut g);
    assert_eq!(ids, drain(&mut plain.generate_tokens(p.to_vec(), o).unwrap()).0);
    (g, ids)
}

/// A recurrent state exists only at the position it was saved at: the prefix
/// cache lends a Qwen 3.5 entry to a prompt that extends all of its tokens
/// (the next chat turn), and to no prompt that shares only part of them;
/// a session's next turn reuses its state the same way. Tokens never change.
#[test]
fn recurrent_states_are_reused_only_whole() {
    let case = "qwen3_5";
    let (base, o, plain, cached) = prefix_cache_setup(case);
    let first = base[2].clone();
    let (_first_run, ids) = cached_matches_plain(&cached, &plain, &first, &o);
    // The next turn: the first prompt, all it generated, then more.
    let mut next = first.clone();
    next.extend(&ids);
    next.extend(&base[1]);
    let (g, _) = cached_matches_plain(&cached, &plain, &next, &o);
    let evaluated = g.metrics().unwrap().prompt_tokens_evaluated;
    assert!(evaluated <= base[1].len() + 1, "{evaluated} of {} evaluated: the whole entry was not reused", next.len());
    // Sharing only part of an entry (the first prompt, then something else): nothing is lent.
    let mut other = first[..first.len() - 1].to_vec();
    other.extend(&base[0]);
    let (g, _) = cached_matches_plain(&cached, &plain, &other, &o);
    assert_eq!(g.metrics().unwrap().prompt_tokens_evaluated, other.len(), "a recurrent state was cut to a shorter prefix");
    // Sessions: the next turn continues from the saved state; an edited history starts over.
    let s = plain.new_session().unwrap();
    let (ids1, _) = drain(&mut plain.generate_in_session(first.clone(), &o, &s).unwrap());
    let mut turn2 = first.clone();
    turn2.extend(&ids1);
    turn2.extend(&base[0]);
    let mut t2 = plain.generate_in_session(turn2.clone(), &o, &s).unwrap();
    let ids2 = drain(&mut t2).0;
    assert!(t2.metrics().unwrap().prompt_tokens_evaluated <= base[0].len() + 1, "the session's state was not reused");
    assert_eq!(ids2, drain(&mut load(case, 1).generate_tokens(turn2.clone(), &o).unwrap()).0);
    let edited: Vec<u32> = turn2[..first.len()].iter().chain(&base[1]).copied().collect();
    let mut t3 = plain.generate_in_session(edited.clone(), &o, &s).unwrap();
    let ids3 = drain(&mut t3).0;
    assert_eq!(t3.metrics().unwrap().prompt_tokens_evaluated, edited.len());
    assert_eq!(ids3, drain(&mut load(case, 1).generate_tokens(edited, &o).unwrap()).0);
}

/// Gemma 4's layers differ in KV heads and head size (the global ones are
/// wider): a saved session loads back layer by layer, and its next turn gives
/// the tokens the whole conversation gets without a session.
#[test]
fn gemma4_sessions_save_and_load_with_per_layer_shapes() {
    for case in ["gemma4", "gemma4_moe"] {
        let engine = load(case, 4);
        let base = inputs(case);
        let o = GenerateOptions { max_tokens: 2, ignore_eos: true, ..Default::default() };
        let s = engine.new_session().unwrap();
        // Under the window of 8: the rotating caches still hold every position.
        let first = base[..4].to_vec();
        let (ids, _) = drain(&mut engine.generate_in_session(first.clone(), &o, &s).unwrap());
        let path = std::env::temp_dir().join(format!("gomlx-{case}-session-{}.safetensors", std::process::id()));
        engine.save_session(&s, &path).unwrap();
        let loaded = engine.load_session(&path);
        std::fs::remove_file(&path).ok();
        let loaded = loaded.unwrap();
        let mut next = first.clone();
        next.extend(&ids);
        next.extend(&base[4..7]);
        let o = GenerateOptions { max_tokens: 8, ignore_eos: true, ..Default::default() };
        let mut g = engine.generate_in_session(next.clone(), &o, &loaded).unwrap();
        let got = drain(&mut g).0;
        assert!(g.metrics().unwrap().prompt_tokens_evaluated < next.len(), "{case}: the loaded session was not reused");
        assert_eq!(got, drain(&mut load(case, 1).generate_tokens(next, &o).unwrap()).0, "{case}: loaded session vs no session");
    }
}

#[test]
fn a_sliding_window_model_batches_exactly() {
    // gemma3_text slides over 8 positions: prompts and outputs run past the window.
    check("gemma3_text", false);
    check("gemma3_text_softcap", true);
}

#[test]
fn cancelled_and_finished_rows_leave_without_disturbing_the_rest() {
    let case = "qwen3_qknorm";
    let ps = prompts(case, 5);
    let alone = solo(&load(case, 1), &ps, false);
    let engine = load(case, 8);
    // Row 2 would run on and on; it is cancelled after its first token, while
    // the others run to their own lengths.
    let endless = |i: usize| if i == 2 { GenerateOptions { max_tokens: 1_000_000, ..opts(i, false) } } else { opts(i, false) };
    let mut gens: Vec<Generation> = ps.iter().enumerate().map(|(i, p)| engine.generate_tokens(p.clone(), &endless(i)).unwrap()).collect();
    let first = gens[2].next().unwrap().unwrap().id;
    assert_eq!(first, alone[2][0]);
    gens[2].cancel();
    for (i, g) in gens.iter_mut().enumerate() {
        let (ids, reason) = drain(g);
        if i == 2 {
            assert_eq!(reason, FinishReason::Cancelled);
            // Until the cancel it made the tokens it makes alone.
            let n = ids.len().min(alone[2].len() - 1);
            assert_eq!(ids[..n], alone[2][1..1 + n], "row 2 before its cancel");
        } else {
            assert_eq!((ids, reason), (alone[i].clone(), FinishReason::Length), "row {i}");
        }
    }
}

#[test]
fn requests_beyond_max_batch_wait_and_still_match() {
    let case = "llama_tied";
    let ps = prompts(case, 7);
    let alone = solo(&load(case, 1), &ps, false);
    let engine = load(case, 2);
    // The last request would run on and on: it is cancelled while queued (or just started).
    let endless = |i: usize| if i == 6 { GenerateOptions { max_tokens: 1_000_000, ..opts(i, false) } } else { opts(i, false) };
    let gens: Vec<Generation> = ps.iter().enumerate().map(|(i, p)| engine.generate_tokens(p.clone(), &endless(i)).unwrap()).collect();
    let mut gens: Vec<Option<Generation>> = gens.into_iter().map(Some).collect();
    let queued = gens[6].take().unwrap();
    queued.cancel();
    let mut queued = queued;
    assert_eq!(drain(&mut queued).1, FinishReason::Cancelled);
    for (i, g) in gens.into_iter().enumerate() {
        if let Some(mut g) = g {
            assert_eq!(drain(&mut g).0, alone[i], "row {i}");
        }
    }
}

#[test]
fn batch_generate_and_sessions_run_as_rows() {
    let case = "mistral";
    let ps = prompts(case, 4);
    let engine = load(case, 8);
    let o = opts(0, false);
    let alone: Vec<Vec<u32>> = ps.iter().map(|p| drain(&mut engine.generate_tokens(p.clone(), &o).unwrap()).0).collect();
    // A stream runs while batch_generate's rows join and leave.
    let mut stream = engine.generate_tokens(ps[0].clone(), &GenerateOptions { max_tokens: 40, ..o.clone() }).unwrap();
    stream.next().unwrap().unwrap();
    let (out, m) = engine.batch_generate_tokens(ps.clone(), &o).unwrap();
    assert_eq!(out.iter().map(|r| r.tokens.clone()).collect::<Vec<_>>(), alone);
    assert!(out.iter().all(|r| r.finish_reason == FinishReason::Length));
    assert_eq!((m.prompts, m.generated_tokens), (4, alone.iter().map(Vec::len).sum()));
    assert_eq!(drain(&mut stream).1, FinishReason::Length);
    // A session's second turn reuses its cache inside the batch.
    let s = engine.new_session().unwrap();
    let mut t1 = engine.generate_in_session(ps[3].clone(), &o, &s).unwrap();
    let (ids1, _) = drain(&mut t1);
    let mut turn2: Vec<u32> = ps[3].clone();
    turn2.extend(&ids1);
    turn2.extend(&ps[1]);
    let mut t2 = engine.generate_in_session(turn2.clone(), &o, &s).unwrap();
    let (ids2, _) = drain(&mut t2);
    assert!(t2.metrics().unwrap().prompt_tokens_evaluated < turn2.len(), "the session's cache was not reused");
    assert_eq!(ids2, drain(&mut engine.generate_tokens(turn2, &o).unwrap()).0);
}

#[test]
fn the_prefix_cache_skips_a_shared_prefix_and_changes_nothing() {
    let case = "qwen3_qknorm";
    let (base, o, plain, cached) = prefix_cache_setup(case);
    let first = base[2].clone();
    let mut longer = first.clone();
    longer.extend(&base[1]);
    for p in [&first, &longer] {
        let (g, _) = cached_matches_plain(&cached, &plain, p, &o);
        let m = g.metrics().unwrap();
        if p.len() == longer.len() {
            // The first request's prompt (and what it generated) was not evaluated again.
            assert!(m.prompt_tokens_evaluated <= longer.len() - first.len(), "{} of {} evaluated", m.prompt_tokens_evaluated, longer.len());
        } else {
            assert_eq!(m.prompt_tokens_evaluated, first.len());
        }
    }
    assert!(cached.clear_prefix_cache().unwrap() > 0);
    assert_eq!(cached.clear_prefix_cache().unwrap(), 0);
    let mut g = cached.generate_tokens(longer.clone(), &o).unwrap();
    drain(&mut g);
    assert_eq!(g.metrics().unwrap().prompt_tokens_evaluated, longer.len(), "a cleared cache lends nothing");
}

/// The bound where exactness is not promised: in bfloat16, and on a GPU whose
/// kernels pick their tiling by batch size, a batched step may round apart from
/// a batch-1 step. While a row's tokens equal its solo run's, every token's
/// log-probability is within `LOGPROB_BOUND` (nats) of the solo run's; where
/// they first differ, the solo run ranked the batched token within twice that
/// of its own choice (a near tie). `GOMLX_TEST_DEVICE=gpu` runs it on a GPU.
const LOGPROB_BOUND: f32 = 0.1;

fn test_device() -> DeviceKind {
    match std::env::var("GOMLX_TEST_DEVICE").as_deref() {
        Ok("gpu") => DeviceKind::Gpu,
        _ => DeviceKind::Cpu,
    }
}

fn bf16_tokens(g: &mut Generation) -> Vec<gomlx::engine::Token> {
    let mut out = Vec::new();
    for t in g.by_ref() {
        out.push(t.unwrap());
    }
    out
}

#[test]
fn bf16_rows_stay_within_the_stated_bound() {
    let load16 = |case: &str, max_batch: usize| {
        let o = EngineOptions { device: Some(test_device()), dtype: Some(gomlx::mlx::Dtype::BF16), max_batch: Some(max_batch), ..Default::default() };
        Engine::load(&fixture(case), &o).unwrap()
    };
    let o = |i: usize| GenerateOptions {
        sampler: SamplerConfig { logprobs: true, top_logprobs: 8, ..Default::default() },
        max_tokens: 12 + i % 5,
        ..opts(i, false)
    };
    let (mut compared, mut worst) = (0, 0f32);
    for case in ["llama_tied", "qwen3_qknorm", "gemma3_text"] {
        let ps = prompts(case, 8);
        let one = load16(case, 1);
        let alone: Vec<_> = ps.iter().enumerate().map(|(i, p)| bf16_tokens(&mut one.generate_tokens(p.clone(), &o(i)).unwrap())).collect();
        let engine = load16(case, 8);
        let gens: Vec<Generation> = ps.iter().enumerate().map(|(i, p)| engine.generate_tokens(p.clone(), &o(i)).unwrap()).collect();
        for (i, mut g) in gens.into_iter().enumerate() {
            let batched = bf16_tokens(&mut g);
            assert_eq!(batched.len(), alone[i].len(), "{case} row {i}: length");
            for (step, (a, b)) in alone[i].iter().zip(&batched).enumerate() {
                let (la, lb) = (a.logprob.unwrap(), b.logprob.unwrap());
                if a.id != b.id {
                    let rank = a.top_logprobs.iter().find(|(id, _)| *id == b.id);
                    let gap = rank.map_or(f32::INFINITY, |(_, l)| la - l);
                    assert!(gap <= 2.0 * LOGPROB_BOUND, "{case} row {i} step {step}: batched token {} is {gap} nats below solo's {}", b.id, a.id);
                    break;
                }
                worst = worst.max((la - lb).abs());
                compared += 1;
                assert!((la - lb).abs() <= LOGPROB_BOUND, "{case} row {i} step {step}: log-probability {lb} batched vs {la} alone");
            }
        }
    }
    assert!(compared >= 40, "only {compared} tokens agreed before a near tie");
    eprintln!("bf16 batched vs solo on {:?}: {compared} tokens compared, worst log-probability difference {worst}", test_device());
}
