use moe_core::MoeError;

/// Errors of the inference engine: bad inputs are reported, never panicked on.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// From the model library (config, checkpoint files).
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

    /// Sequences of different lengths were given as one batch (lengths listed).
    #[error("sequences in one batch must have the same length (got {0:?})")]
    RaggedBatch(Vec<usize>),

    /// A sequence to score has fewer than two tokens.
    #[error("scoring needs at least 2 tokens per sequence")]
    TooShortToScore,

    /// An experts-per-token override outside `1..=n_experts`.
    #[error("experts per token must be in 1..={n_experts}, got {got}")]
    BadExpertsPerToken {
        /// The number asked for.
        got: usize,
        /// Experts per layer.
        n_experts: usize,
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
pub(crate) fn check_ids(ids: &[u32], vocab_size: usize) -> Result<(), InferError> {
    match ids.iter().find(|&&id| id as usize >= vocab_size) {
        Some(&id) => Err(InferError::TokenOutOfVocab { id, vocab_size }),
        None => Ok(()),
    }
}
