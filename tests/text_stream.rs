//! Streaming detokenizer, stop strings and EOS handling on the real tokenizers.

mod text_support;

use gomlx::text::{StreamDecoder, StreamEnd, TextStream, Tokenizer};
use text_support::*;

/// Streams `ids` and returns the pieces, one per id plus the final flush.
fn stream(tok: &Tokenizer, ids: &[u32], skip: bool) -> Vec<String> {
    let mut dec = StreamDecoder::new(skip);
    let mut pieces: Vec<String> = ids.iter().map(|&id| dec.push(tok, id).unwrap()).collect();
    pieces.push(dec.finish(tok).unwrap());
    pieces
}

#[test]
fn pieces_concatenate_to_decode_on_every_line() {
    let corpus = corpus();
    for name in NAMES {
        let tok = load(name);
        let fx = fixture(&format!("{name}.json"));
        for case in fx["encode"].as_array().unwrap() {
            let line = case["line"].as_u64().unwrap() as usize;
            let ids = ids(&case["ids"]);
            for (skip, key) in [(true, "decode"), (false, "decode_keep_special")] {
                let want = case[key].as_str().unwrap();
                let pieces = stream(&tok, &ids, skip);
                assert_eq!(pieces.concat(), want, "{name} line {line} {:?} skip={skip}", corpus[line]);
                if !want.contains('\u{FFFD}') {
                    for p in &pieces {
                        assert!(!p.contains('\u{FFFD}'), "{name} line {line}: piece {p:?} has U+FFFD");
                    }
                }
            }
        }
    }
}

/// Characters split over several tokens are held back, then emitted whole.
#[test]
fn split_characters_are_held_then_emitted_whole() {
    let corpus = corpus();
    let rare = corpus.iter().position(|l| l.starts_with("Rare:")).unwrap();
    let zwj = corpus.iter().position(|l| l.starts_with("ZWJ family")).unwrap();
    let cases = [("gemma3", rare), ("qwen3", zwj), ("llama3", zwj), ("llama3_1", rare)];
    for (name, line) in cases {
        let tok = load(name);
        let ids = tok.encode(&corpus[line], false).unwrap();
        let pieces = stream(&tok, &ids, true);
        let held = pieces[..ids.len()].iter().filter(|p| p.is_empty()).count();
        assert!(held > 0, "{name}: expected tokens that end mid-character on line {line}");
        if name == "gemma3" {
            // SentencePiece byte fallback: the CJK extension B characters are <0x..> tokens.
            let bytes = ids.iter().filter(|&&i| tok.id_to_token(i).is_some_and(|t| t.starts_with("<0x"))).count();
            assert!(bytes >= 4, "{name}: expected byte-fallback tokens, got {bytes}");
        }
        assert_eq!(pieces.concat(), tok.decode(&ids, true).unwrap());
    }
}

/// The decoder keeps a bounded window, so cost per token does not grow with length.
#[test]
fn window_is_bounded_on_long_output() {
    let text = corpus().join("\n").repeat(10);
    for name in NAMES {
        let tok = load(name);
        let ids = tok.encode(&text, false).unwrap();
        assert!(ids.len() > 5000, "{name}: {} ids", ids.len());
        let mut dec = StreamDecoder::new(true);
        let mut out = String::new();
        let mut max_window = 0;
        for &id in &ids {
            out.push_str(&dec.push(&tok, id).unwrap());
            max_window = max_window.max(dec.window_len());
        }
        out.push_str(&dec.finish(&tok).unwrap());
        assert_eq!(out, tok.decode(&ids, true).unwrap(), "{name}");
        assert!(max_window <= 300, "{name}: window grew to {max_window}");
    }
}

#[test]
fn stop_string_spanning_tokens_is_not_emitted() {
    let corpus = corpus();
    let line = corpus.iter().position(|l| l.starts_with("The quick brown fox")).unwrap();
    let stop = "lazy dog";
    for name in NAMES {
        let tok = load(name);
        let fx = fixture(&format!("{name}.json"));
        let case = &fx["encode"][line];
        let ids = ids(&case["ids_no_special"]);
        let decoded = tok.decode(&ids, true).unwrap();
        let spanning = ids.iter().all(|&i| !tok.decode(&[i], true).unwrap().contains(stop));
        assert!(spanning, "{name}: the stop string should span tokens");
        let mut ts = TextStream::new(tok.clone(), &[stop]).unwrap();
        let mut out = String::new();
        let mut reason = None;
        for &id in &ids {
            let step = ts.push(id).unwrap();
            out.push_str(&step.text);
            if step.finished.is_some() {
                reason = step.finished;
                break;
            }
        }
        assert_eq!(reason, Some(StreamEnd::Stop(stop.to_string())), "{name}");
        assert_eq!(out, decoded[..decoded.find(stop).unwrap()], "{name}");
        assert!(ts.push(ids[0]).is_err(), "{name}: pushing after the end is an error");
    }
}

#[test]
fn eos_ends_the_stream_without_text() {
    for name in NAMES {
        let tok = load(name);
        let ids = tok.encode("Hello there, general Kenobi \u{1F600}", false).unwrap();
        let eos = tok.eos_ids()[0];
        let mut ts = TextStream::new(tok.clone(), &["never"]).unwrap();
        let mut out = String::new();
        for &id in &ids {
            let step = ts.push(id).unwrap();
            assert!(step.finished.is_none());
            out.push_str(&step.text);
        }
        let step = ts.push(eos).unwrap();
        out.push_str(&step.text);
        assert_eq!(step.finished, Some(StreamEnd::Eos(eos)), "{name}");
        assert_eq!(out, tok.decode(&ids, true).unwrap(), "{name}");
    }
}

#[test]
fn out_of_vocabulary_ids_are_errors() {
    let tok = load("qwen3");
    let bad = tok.vocab_size() as u32 + 10;
    assert!(tok.decode(&[1, bad], true).unwrap_err().to_string().contains("outside the vocabulary"));
    let mut dec = StreamDecoder::new(true);
    assert!(dec.push(&tok, bad).is_err());
}
