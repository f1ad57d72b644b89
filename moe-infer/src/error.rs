use moe_core::MoeError;

/// Errors of the inference engine: bad inputs are reported, never panicked on.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(transparent)]
    Model(#[from] MoeError),

    #[error("token id {id} is outside the vocabulary (0..{vocab_size})")]
    TokenOutOfVocab { id: u32, vocab_size: usize },

    #[error("the prompt is empty")]
    EmptyPrompt,

    #[error("{needed} positions are needed but the model's context is {max} (max_position_embeddings)")]
    ContextOverflow { needed: usize, max: usize },

    #[error("sequences in one batch must have the same length (got {0:?})")]
    RaggedBatch(Vec<usize>),

    #[error("scoring needs at least 2 tokens per sequence")]
    TooShortToScore,

    #[error("experts per token must be in 1..={n_experts}, got {got}")]
    BadExpertsPerToken { got: usize, n_experts: usize },

    #[error("tokenizer {path}: {reason}")]
    Tokenizer { path: std::path::PathBuf, reason: String },
}

/// Checks token ids against the vocabulary.
pub(crate) fn check_ids(ids: &[u32], vocab_size: usize) -> Result<(), InferError> {
    match ids.iter().find(|&&id| id as usize >= vocab_size) {
        Some(&id) => Err(InferError::TokenOutOfVocab { id, vocab_size }),
        None => Ok(()),
    }
}
