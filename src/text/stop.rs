//! Stop strings over streamed text. A stop string may span several tokens, so text
//! that could be the start of one is held back until it is ruled out; on a match only
//! the text before the stop string is released, never the stop string itself.

use crate::{Error, Result};

/// What one `StopStrings::push` releases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopMatch {
    /// Text that is safe to hand to the caller now.
    pub text: String,
    /// The stop string that matched; the stream is over when this is set.
    pub stop: Option<String>,
}

/// Watches streamed text for any of a set of stop strings.
#[derive(Debug, Clone, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    pending: String,
    stopped: bool,
}

impl StopStrings {
    /// Empty stop strings are rejected: they would match before any text.
    pub fn new<S: AsRef<str>>(stops: &[S]) -> Result<StopStrings> {
        let stops: Vec<String> = stops.iter().map(|s| s.as_ref().to_string()).collect();
        if stops.iter().any(String::is_empty) {
            return Err(Error::InvalidArgument("stop strings must not be empty".into()));
        }
        Ok(StopStrings { stops, pending: String::new(), stopped: false })
    }

    pub fn is_empty(&self) -> bool {
        self.stops.is_empty()
    }

    /// Adds streamed text; returns what can be released and whether a stop matched.
    /// After a match every further push releases nothing.
    pub fn push(&mut self, piece: &str) -> StopMatch {
        if self.stopped {
            return StopMatch::default();
        }
        if self.stops.is_empty() {
            return StopMatch { text: piece.to_string(), stop: None };
        }
        self.pending.push_str(piece);
        // The earliest match wins; at the same position the longer stop string does.
        let mut best: Option<(usize, &String)> = None;
        for s in &self.stops {
            if let Some(pos) = self.pending.find(s.as_str()) {
                let better = match best {
                    None => true,
                    Some((bp, bs)) => pos < bp || (pos == bp && s.len() > bs.len()),
                };
                if better {
                    best = Some((pos, s));
                }
            }
        }
        if let Some((pos, s)) = best {
            let stop = s.clone();
            let text = self.pending[..pos].to_string();
            self.pending.clear();
            self.stopped = true;
            return StopMatch { text, stop: Some(stop) };
        }
        let hold = self.partial_match_len();
        let cut = self.pending.len() - hold;
        let text = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        StopMatch { text, stop: None }
    }

    /// The stream ended without a match (EOS, length): releases the held-back tail.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Length of the longest tail of `pending` that is a proper prefix of a stop string.
    fn partial_match_len(&self) -> usize {
        let mut hold = 0;
        for s in &self.stops {
            for k in (hold + 1..s.len()).rev() {
                if s.is_char_boundary(k) && self.pending.ends_with(&s[..k]) {
                    hold = k;
                    break;
                }
            }
        }
        hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, Option<String>) {
        let mut s = StopStrings::new(stops).unwrap();
        let mut out = String::new();
        for p in pieces {
            let m = s.push(p);
            out.push_str(&m.text);
            if m.stop.is_some() {
                return (out, m.stop);
            }
        }
        out.push_str(&s.flush());
        (out, None)
    }

    #[test]
    fn stop_spanning_pieces_is_not_emitted() {
        let (out, stop) = run(&["</answer>"], &["The answer is 4", "</ans", "wer>", " trailing"]);
        assert_eq!(out, "The answer is 4");
        assert_eq!(stop.as_deref(), Some("</answer>"));
    }

    #[test]
    fn false_start_is_released() {
        let (out, stop) = run(&["STOP"], &["ST", "OR", "Y ST", "OP!"]);
        assert_eq!(out, "STORY ");
        assert_eq!(stop.as_deref(), Some("STOP"));
        let (out, stop) = run(&["STOP"], &["a ST", "b"]);
        assert_eq!(out, "a STb");
        assert_eq!(stop, None);
    }

    #[test]
    fn held_tail_is_flushed_at_the_end() {
        let (out, stop) = run(&["\n\nUser:"], &["done", "\n\nUs"]);
        assert_eq!(out, "done\n\nUs");
        assert_eq!(stop, None);
    }

    #[test]
    fn earliest_of_several_wins() {
        let (out, stop) = run(&["bc", "abcd"], &["xab", "cd"]);
        assert_eq!(out, "x");
        assert_eq!(stop.as_deref(), Some("abcd"));
        let (out, stop) = run(&["cd", "abc"], &["xab", "cd"]);
        assert_eq!(out, "x");
        assert_eq!(stop.as_deref(), Some("abc"));
    }

    #[test]
    fn multibyte_stop_strings() {
        let (out, stop) = run(&["。終"], &["日本語", "。", "終わり"]);
        assert_eq!(out, "日本語");
        assert_eq!(stop.as_deref(), Some("。終"));
    }

    #[test]
    fn empty_stop_is_rejected() {
        assert!(StopStrings::new(&[""]).is_err());
    }
}
