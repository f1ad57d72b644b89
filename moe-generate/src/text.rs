//! Generated text as it streams: incremental decoding, stop strings, and the Mixtral-Instruct
//! chat template.

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

/// One exchange of a chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// What the user said.
    pub user: String,
    /// `None` for the turn being answered.
    pub assistant: Option<String>,
}

/// The Mixtral-Instruct chat template (`mistralai/Mixtral-8x7B-Instruct-v0.1`):
/// `<s>[INST] user [/INST] answer</s>[INST] user [/INST]`. A system prompt, which the template
/// lacks, goes before the first user message as HF's later Mistral templates do.
pub fn mixtral_chat_prompt(system: Option<&str>, turns: &[Turn]) -> String {
    let mut prompt = String::from("<s>");
    for (i, turn) in turns.iter().enumerate() {
        let user = match (i, system) {
            (0, Some(system)) if !system.is_empty() => format!("{system}\n\n{}", turn.user),
            _ => turn.user.clone(),
        };
        prompt.push_str(&format!("[INST] {} [/INST]", user.trim()));
        if let Some(answer) = &turn.assistant {
            prompt.push_str(&format!(" {}</s>", answer.trim()));
        }
    }
    prompt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_template_matches_mixtral_instruct() {
        let turns = [
            Turn { user: "Hi".into(), assistant: Some("Hello!".into()) },
            Turn { user: "2+2?".into(), assistant: None },
        ];
        assert_eq!(mixtral_chat_prompt(None, &turns), "<s>[INST] Hi [/INST] Hello!</s>[INST] 2+2? [/INST]");
        assert_eq!(mixtral_chat_prompt(Some("Be brief."), &turns[1..]), "<s>[INST] Be brief.\n\n2+2? [/INST]");
    }
}
