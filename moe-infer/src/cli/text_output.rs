//! Generated text on the terminal: streamed as it comes and collected per sequence.

use std::io::Write;

use anyhow::Result;
use moe_infer::{GenerateError, TextCollector, TextTokenizer};

/// What `generate` and `chat` hand to [`moe_infer::generate`] as its per-token callback: it
/// prints the first sequence's text as it is produced (when streaming), collects every
/// sequence's text (ending one at a stop string), and keeps a tokenizer failure for after the
/// call, since the callback itself cannot return an error.
pub struct TextOutput<'a> {
    /// One per sequence; `None` when there is no tokenizer (ids are printed instead).
    collectors: Option<Vec<TextCollector<'a>>>,
    stream: bool,
    failure: Option<GenerateError>,
}

impl<'a> TextOutput<'a> {
    /// Starts after `prompts`; with `stream`, prints the first prompt now and its continuation
    /// as it comes.
    pub fn new(
        tokenizer: Option<&'a TextTokenizer>,
        prompts: &[Vec<u32>],
        stops: &'a [String],
        stream: bool,
    ) -> Result<Self> {
        let collectors = match tokenizer {
            Some(t) => Some(prompts.iter().map(|p| TextCollector::new(t, p, stops)).collect::<Result<Vec<_>, _>>()?),
            None => None,
        };
        Ok(Self { collectors, stream, failure: None })
    }

    /// The callback: takes sequence `i`'s next token; returns whether that sequence goes on.
    pub fn on_token(&mut self, i: usize, token: u32) -> bool {
        let Some(collectors) = self.collectors.as_mut() else {
            if self.stream {
                show(&format!(" {token}"));
            }
            return true;
        };
        match collectors[i].push(token) {
            Ok((piece, go_on)) => {
                if self.stream && i == 0 {
                    show(&piece);
                }
                go_on
            }
            Err(e) => {
                self.failure = Some(e);
                false
            }
        }
    }

    /// Prints what was held back (a partial stop string that never completed) and returns
    /// each sequence's text (`None` without a tokenizer), or the tokenizer failure.
    pub fn finish(mut self) -> Result<Vec<Option<String>>> {
        if let Some(e) = self.failure.take() {
            return Err(e.into());
        }
        let Some(collectors) = self.collectors.as_mut() else {
            return Ok(Vec::new());
        };
        let mut texts = Vec::with_capacity(collectors.len());
        for (i, c) in collectors.iter_mut().enumerate() {
            let rest = c.finish();
            if self.stream && i == 0 {
                show(&rest);
            }
            texts.push(Some(c.text().to_string()));
        }
        Ok(texts)
    }
}

/// Writes to stdout at once (a closed pipe is not worth stopping generation for).
pub fn show(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{text}");
    let _ = out.flush();
}
