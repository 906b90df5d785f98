//! Text-layer benchmark (not a test): encode throughput on ~1 MB of mixed text and
//! the streaming detokenizer's cost per token, for each fetched tokenizer.
//!
//!     scripts/fetch-tokenizers
//!     cargo run --release --example text_bench
//!
//! Prints Markdown table rows for BENCHMARKS.md.

use std::time::Instant;

use gomlx::text::{StreamDecoder, Tokenizer};

fn main() -> gomlx::Result<()> {
    let root = env!("CARGO_MANIFEST_DIR");
    let corpus: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/tests/fixtures/text/corpus.json")).map_err(|e| gomlx::Error::io("tests/fixtures/text/corpus.json", e))?,
    )
    .map_err(|e| gomlx::Error::InvalidArgument(format!("corpus.json: {e}")))?;
    let lines: Vec<&str> = corpus["lines"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();

    // About 1 MB of mixed text: the parity corpus (prose, code, CJK, emoji, whitespace) repeated.
    let mut text = String::new();
    let mut chunks: Vec<String> = Vec::new();
    while text.len() < 1 << 20 {
        for l in &lines {
            text.push_str(l);
            text.push('\n');
        }
        chunks.push(lines.join("\n"));
    }
    let mb = text.len() as f64 / 1e6;
    println!(
        "| tokenizer | input | encode MB/s (one call) | encode MB/s (batch of {}) | ids | detok ns/token | detok ns/token first 10% / last 10% |",
        chunks.len()
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for name in ["qwen3", "llama3", "llama3_1", "gemma3"] {
        let dir = format!("{root}/.cache/tokenizers/{name}");
        let tok = match Tokenizer::from_dir(&dir) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{name}: {e} (run scripts/fetch-tokenizers)");
                std::process::exit(1);
            }
        };
        let _ = tok.encode(&chunks[0], false)?; // warm caches
        let t = Instant::now();
        let ids = tok.encode(&text, false)?;
        let one = mb / t.elapsed().as_secs_f64();
        let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
        let t = Instant::now();
        let batch = tok.encode_batch(&refs, false)?;
        let batch_mbs = mb / t.elapsed().as_secs_f64();
        assert_eq!(batch.len(), chunks.len());

        let mut dec = StreamDecoder::new(true);
        let tenth = ids.len() / 10;
        let mut marks = Vec::with_capacity(ids.len() + 1);
        let t = Instant::now();
        let mut out_len = 0;
        for &id in &ids {
            marks.push(t.elapsed());
            out_len += dec.push(&tok, id)?.len();
        }
        out_len += dec.finish(&tok)?.len();
        let total = t.elapsed();
        marks.push(total);
        let per = total.as_nanos() as f64 / ids.len() as f64;
        let first = (marks[tenth] - marks[0]).as_nanos() as f64 / tenth as f64;
        let last = (marks[ids.len()] - marks[ids.len() - tenth]).as_nanos() as f64 / tenth as f64;
        assert!(out_len > 0);
        println!("| {name} | {mb:.2} MB | {one:.1} | {batch_mbs:.1} | {} | {per:.0} | {first:.0} / {last:.0} |", ids.len());
    }
    Ok(())
}
