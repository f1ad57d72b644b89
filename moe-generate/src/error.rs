//! What can go wrong while generating: bad inputs are reported, never panicked on.

use moe_core::MoeError;

/// Errors of generation and tokenization.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// From the model library (config, checkpoint files, the experts-per-token setting).
    #[error(transparent)]
    Model(#[from] MoeError),

    /// A token id is not below the vocabulary size.
    #[error("token id {id} is outside the vocabulary (0..{vocab_size})")]
    TokenOutOfVocab {
        /// The offending id.
        id: u32,
        /// The model's vocabulary size.
        vocab_size: usize,
    },

    /// A prompt has no tokens.
    #[error("the prompt is empty")]
    EmptyPrompt,

    /// The prompt plus the tokens to generate do not fit in the context.
    #[error("{needed} positions are needed but the model's context is {max} (max_position_embeddings)")]
    ContextOverflow {
        /// Prompt plus new tokens.
        needed: usize,
        /// The model's context length.
        max: usize,
    },

    /// A chat template does not compile, refuses the messages, or its file cannot be read.
    #[error("chat template: {reason}")]
    ChatTemplate {
        /// What went wrong (with the template's line where known).
        reason: String,
    },

    /// A tokenizer file cannot be read or used.
    #[error("tokenizer {path}: {reason}")]
    Tokenizer {
        /// The tokenizer file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Checks token ids against the vocabulary.
pub fn check_ids(ids: &[u32], vocab_size: usize) -> Result<(), GenerateError> {
    match ids.iter().find(|&&id| id as usize >= vocab_size) {
        Some(&id) => Err(GenerateError::TokenOutOfVocab { id, vocab_size }),
        None => Ok(()),
    }
}
