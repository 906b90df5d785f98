//! The fuzz targets (`gomlx::fuzz`, docs/fuzzing.md) without libFuzzer: every
//! seed of `fuzz/corpus/<target>` and every input of `fuzz/regressions/<target>`
//! (the crashes fuzzing found, each fixed) replayed, then a few seconds of
//! seeded random mutations of the seeds. A target must return on every input:
//! a panic fails the test, an abort or a hang fails the run. The
//! coverage-guided runs are `scripts/fuzz` (its smoke runs in `scripts/test`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn dir(kind: &str, target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(kind).join(target)
}

fn inputs(d: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(d) else { return Vec::new() };
    let mut v: Vec<(String, Vec<u8>)> =
        entries.flatten().filter(|e| e.path().is_file()).map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())).collect();
    v.sort();
    v
}

/// xorshift64*: a fixed sequence of mutations, the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Values that break sizes and counts when written over a length field.
const INTERESTING: [u64; 10] = [0, 1, 0x7F, 0xFF, 0x7FFF_FFFF, 0xFFFF_FFFF, 1 << 36, 1 << 62, i64::MAX as u64, u64::MAX];

fn mutate(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = rng.next() as u8;
            }
            2 if data.len() >= 8 => {
                let i = rng.below(data.len() - 7);
                let v = INTERESTING[rng.below(INTERESTING.len())];
                let width = [1usize, 2, 4, 8][rng.below(4)];
                data[i..i + width].copy_from_slice(&v.to_le_bytes()[..width]);
            }
            3 if !data.is_empty() => {
                let i = rng.below(data.len());
                let n = rng.below(data.len() - i + 1).min(64);
                data.drain(i..i + n);
            }
            4 if !other.is_empty() => {
                let i = rng.below(data.len() + 1);
                let j = rng.below(other.len());
                let n = rng.below(other.len() - j + 1).min(256);
                let piece = other[j..j + n].to_vec();
                data.splice(i..i, piece);
            }
            _ => data.truncate(rng.below(data.len() + 1)),
        }
    }
}

#[test]
fn every_target_returns_on_its_corpus_regressions_and_mutations() {
    let budget = Duration::from_millis(std::env::var("GOMLX_FUZZ_SMOKE_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(1500));
    for (name, target) in gomlx::fuzz::TARGETS {
        let seeds = inputs(&dir("corpus", name));
        assert!(!seeds.is_empty(), "no seeds in fuzz/corpus/{name}");
        let regressions = inputs(&dir("regressions", name));
        for (file, data) in seeds.iter().chain(&regressions) {
            let r = gomlx::panics::catch(|| target(data));
            assert!(r.is_ok(), "{name}: {file} panicked: {}", r.unwrap_err());
        }
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ name.len() as u64);
        let start = Instant::now();
        let mut runs = 0u64;
        while start.elapsed() < budget {
            let (_, seed) = &seeds[rng.below(seeds.len())];
            let (_, other) = &seeds[rng.below(seeds.len())];
            let mut data = seed.clone();
            mutate(&mut rng, &mut data, other);
            let r = gomlx::panics::catch(|| target(&data));
            if let Err(p) = r {
                let out = std::env::temp_dir().join(format!("gomlx-fuzz-smoke-{name}-{runs}"));
                std::fs::write(&out, &data).unwrap();
                panic!("{name}: mutation {runs} panicked ({p}); input saved to {}", out.display());
            }
            runs += 1;
        }
        println!("{name}: {} seeds, {} regressions, {runs} mutations in {:?}", seeds.len(), regressions.len(), start.elapsed());
    }
}
