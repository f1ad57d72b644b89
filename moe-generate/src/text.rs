//! Generated text as it streams: incremental decoding and stop strings.

use crate::error::GenerateError;
use crate::tokenizer::{TextStream, TextTokenizer};

/// Collects one sequence's generated text, ending it at the first stop string.
///
/// Text that could still turn out to be the start of a stop string is held back, so a caller
/// printing [`TextCollector::push`]'s pieces never shows (part of) a stop string. The stop string
/// itself is left out of the text, as llama.cpp and the OpenAI API do.
pub struct TextCollector<'a> {
    stream: TextStream<'a>,
    stops: Vec<String>,
    text: String,
    shown: usize,
    stopped: bool,
}

impl<'a> TextCollector<'a> {
    /// Collects the continuation of `prompt` (its text is not part of the output).
    pub fn new(tokenizer: &'a TextTokenizer, prompt: &[u32], stops: &[String]) -> Result<Self, GenerateError> {
        Ok(Self {
            stream: tokenizer.stream(prompt, true)?,
            stops: stops.to_vec(),
            text: String::new(),
            shown: 0,
            stopped: false,
        })
    }

    /// Adds a token; returns the text that is now safe to show and whether generation goes on.
    pub fn push(&mut self, id: u32) -> Result<(String, bool), GenerateError> {
        if self.stopped {
            return Ok((String::new(), false));
        }
        if let Some(piece) = self.stream.push(id)? {
            self.text.push_str(&piece);
        }
        if let Some(at) = self.stops.iter().filter(|s| !s.is_empty()).filter_map(|s| self.text.find(s.as_str())).min() {
            self.text.truncate(at);
            self.stopped = true;
        }
        let hold = if self.stopped { 0 } else { self.partial_stop_suffix() };
        let upto = self.text.len() - hold;
        let piece = self.text[self.shown.min(upto)..upto].to_string();
        self.shown = self.shown.max(upto);
        Ok((piece, !self.stopped))
    }

    /// Whatever was held back (call once generation is over).
    pub fn finish(&mut self) -> String {
        let rest = self.text[self.shown..].to_string();
        self.shown = self.text.len();
        rest
    }

    /// The text so far (without a stop string).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether a stop string ended the text.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Length of the longest end of the text that is a proper prefix of a stop string.
    fn partial_stop_suffix(&self) -> usize {
        self.stops
            .iter()
            .flat_map(|s| s.char_indices().skip(1).map(move |(i, _)| &s[..i]))
            .filter(|prefix| self.text.ends_with(prefix))
            .map(str::len)
            .max()
            .unwrap_or(0)
    }
}
