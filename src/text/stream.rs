//! `TextStream`: one generated sequence from ids to caller-visible text, with the
//! streaming detokenizer, EOS ids and stop strings together.

use std::sync::Arc;

use super::detokenizer::StreamDecoder;
use super::stop::StopStrings;
use super::tokenizer::Tokenizer;
use crate::{Error, Result};

/// What ended a stream's text (the engine's `FinishReason` says why a generation ended).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// The model produced one of the EOS ids (not part of the text).
    Eos(u32),
    /// A stop string appeared in the text (not part of the text).
    Stop(String),
}

/// What one token adds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamStep {
    pub text: String,
    pub finished: Option<StreamEnd>,
}

/// Text of one generation, token by token.
pub struct TextStream {
    tokenizer: Arc<Tokenizer>,
    decoder: StreamDecoder,
    stops: StopStrings,
    eos: Vec<u32>,
    finished: bool,
}

impl TextStream {
    /// EOS ids are the tokenizer's (all config files); special tokens are left out of the text.
    pub fn new<S: AsRef<str>>(tokenizer: Arc<Tokenizer>, stop_strings: &[S]) -> Result<TextStream> {
        let eos = tokenizer.eos_ids().to_vec();
        Ok(TextStream { tokenizer, decoder: StreamDecoder::new(true), stops: StopStrings::new(stop_strings)?, eos, finished: false })
    }

    /// Replaces the EOS set (e.g. `ignore_eos` passes an empty one).
    pub fn with_eos(mut self, eos: Vec<u32>) -> TextStream {
        self.eos = eos;
        self
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Feeds one generated id.
    pub fn push(&mut self, id: u32) -> Result<StreamStep> {
        if self.finished {
            return Err(Error::InvalidArgument("token pushed after the stream finished".into()));
        }
        if self.eos.contains(&id) {
            let text = self.end_text()?;
            return Ok(StreamStep { text, finished: Some(StreamEnd::Eos(id)) });
        }
        let piece = self.decoder.push(&self.tokenizer, id)?;
        let m = self.stops.push(&piece);
        let finished = m.stop.map(|s| {
            self.finished = true;
            StreamEnd::Stop(s)
        });
        Ok(StreamStep { text: m.text, finished })
    }

    /// Ends the stream for another reason (length limit, cancellation): the held-back
    /// text, if any. Returns nothing if a stop string or EOS already ended it.
    pub fn finish(&mut self) -> Result<String> {
        if self.finished {
            return Ok(String::new());
        }
        self.end_text()
    }

    fn end_text(&mut self) -> Result<String> {
        self.finished = true;
        let tail = self.decoder.finish(&self.tokenizer)?;
        let m = self.stops.push(&tail);
        let mut text = m.text;
        if m.stop.is_none() {
            text.push_str(&self.stops.flush());
        }
        Ok(text)
    }
}
