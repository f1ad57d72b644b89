//! Text <-> token ids through the `tokenizers` crate, with the special ids a model needs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokenizers::Tokenizer;

use crate::chat_template::{ChatMessage, ChatTemplate};
use crate::error::GenerateError;
use crate::mixtral_chat::{mixtral_chat_prompt, Turn};

/// Names special tokens go by in common tokenizers, most likely first.
const BOS_NAMES: &[&str] = &["<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>"];
const EOS_NAMES: &[&str] = &["</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>", "<|eot_id|>"];

/// A `tokenizer.json` with its BOS/EOS ids resolved, and the model's chat template if it has one.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    chat_template: Option<Arc<ChatTemplate>>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("chat_template", &self.chat_template.is_some())
            .finish()
    }
}

impl TextTokenizer {
    /// Reads a `tokenizer.json` (HF fast-tokenizer format).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, GenerateError> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(GenerateError::Tokenizer {
                path: path.into(),
                reason: "no such file (a Hub model folder has tokenizer.json next to config.json)".into(),
            });
        }
        let inner = Tokenizer::from_file(path)
            .map_err(|e| GenerateError::Tokenizer { path: path.into(), reason: e.to_string() })?;
        Ok(Self::new(inner))
    }

    /// `model_dir/tokenizer.json`, if the folder has one, with the folder's chat template
    /// (`chat_template.jinja` or `tokenizer_config.json`'s `chat_template`; see
    /// [`ChatTemplate::from_model_dir`]).
    pub fn from_model_dir(model_dir: impl AsRef<Path>) -> Result<Option<Self>, GenerateError> {
        let path = model_dir.as_ref().join("tokenizer.json");
        if !path.is_file() {
            return Ok(None);
        }
        let tokenizer = Self::from_file(path)?;
        Ok(Some(match ChatTemplate::from_model_dir(model_dir)? {
            Some(template) => tokenizer.with_chat_template(template),
            None => tokenizer,
        }))
    }

    /// Uses `template` for [`Self::chat_prompt`].
    pub fn with_chat_template(mut self, template: ChatTemplate) -> Self {
        self.chat_template = Some(Arc::new(template));
        self
    }

    /// The model's chat template, if it came with one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_deref()
    }

    /// The prompt text of a chat, ready for the assistant's answer: the model's own template,
    /// or Mixtral-Instruct's (system messages before the first user message, then user and
    /// assistant alternating, ending with the user's; an error naming the message otherwise).
    /// The text starts with its BOS token where the template writes one: encode it without
    /// special tokens.
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<String, GenerateError> {
        if let Some(template) = &self.chat_template {
            return template.render(messages, true);
        }
        let mut system: Vec<&str> = Vec::new();
        let mut turns: Vec<Turn> = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let expecting_user = turns.last().is_none_or(|t| t.assistant.is_some());
            match m.role.as_str() {
                "system" if turns.is_empty() => system.push(&m.content),
                "user" if expecting_user => turns.push(Turn { user: m.content.clone(), assistant: None }),
                "assistant" if !expecting_user => {
                    turns.last_mut().expect("a user turn").assistant = Some(m.content.clone())
                }
                role => {
                    return Err(GenerateError::ChatTemplate {
                        reason: format!(
                            "message {i} ({role}): the Mixtral-Instruct template takes system messages first, then \
                             user and assistant messages alternating"
                        ),
                    })
                }
            }
        }
        if turns.last().is_none_or(|t| t.assistant.is_some()) {
            return Err(GenerateError::ChatTemplate { reason: "the last message must be the user's".into() });
        }
        let system = system.join("\n\n");
        Ok(mixtral_chat_prompt((!system.is_empty()).then_some(system.as_str()), &turns))
    }

    /// Wraps a tokenizer, finding BOS/EOS among its special tokens by their usual names.
    pub fn new(inner: Tokenizer) -> Self {
        let find = |names: &[&str]| names.iter().find_map(|n| inner.token_to_id(n));
        let bos = find(BOS_NAMES);
        let eos = find(EOS_NAMES);
        Self { inner, bos, eos, chat_template: None }
    }

    /// Overrides the special ids (e.g. with the model config's `bos_token_id` / `eos_token_id`).
    pub fn with_special_ids(mut self, bos: Option<u32>, eos: Option<u32>) -> Self {
        self.bos = bos.or(self.bos);
        self.eos = eos.or(self.eos);
        self
    }

    /// Token ids of `text`. With `add_special_tokens` the tokenizer's post-processor runs (for
    /// Mistral/Mixtral tokenizers: a leading `<s>`), as HF's `tokenizer(text)` does.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, GenerateError> {
        let encoding = self.inner.encode(text, add_special_tokens).map_err(|e| self.error(e))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`; `skip_special_tokens` drops `<s>`, `</s>` and the like.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, GenerateError> {
        self.inner.decode(ids, skip_special_tokens).map_err(|e| self.error(e))
    }

    /// Incremental decoder for streaming the continuation of `prefix` (e.g. the prompt): feed
    /// ids one at a time, get text as soon as it is whole (a multi-byte character split over
    /// byte-fallback tokens comes out once complete). The prefix keeps word-initial spaces right.
    pub fn stream(&self, prefix: &[u32], skip_special_tokens: bool) -> Result<TextStream<'_>, GenerateError> {
        let emitted = self.decode(prefix, skip_special_tokens)?.len();
        Ok(TextStream { tokenizer: self, ids: prefix.to_vec(), emitted, skip_special_tokens })
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The beginning-of-sequence id, if known.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// The end-of-sequence id, if known.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// The id of a token string (`"</s>"`), if in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The wrapped `tokenizers::Tokenizer`.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Writes `tokenizer.json`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), GenerateError> {
        let path = path.as_ref();
        self.inner.save(path, false).map_err(|e| GenerateError::Tokenizer { path: path.into(), reason: e.to_string() })
    }

    fn error(&self, e: tokenizers::Error) -> GenerateError {
        GenerateError::Tokenizer { path: PathBuf::from("tokenizer.json"), reason: e.to_string() }
    }
}

/// Text of a growing id sequence, handed out piece by piece (see [`TextTokenizer::stream`]).
///
/// Decodes the whole sequence each step and emits what was added, holding back a trailing
/// U+FFFD (an incomplete UTF-8 character) until the next token completes it. Quadratic in the
/// sequence length, which is negligible next to a model step.
pub struct TextStream<'a> {
    tokenizer: &'a TextTokenizer,
    ids: Vec<u32>,
    emitted: usize,
    skip_special_tokens: bool,
}

impl TextStream<'_> {
    /// Adds one token; returns the new text it completes, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>, GenerateError> {
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids, self.skip_special_tokens)?;
        if text.ends_with('\u{FFFD}') || text.len() <= self.emitted || !text.is_char_boundary(self.emitted) {
            return Ok(None);
        }
        let piece = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(Some(piece))
    }
}
