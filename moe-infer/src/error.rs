use moe_core::MoeError;
use moe_generate::GenerateError;

/// Errors of the inference engine: bad inputs are reported, never panicked on.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// From generation or the tokenizer (token ids, prompts, context length).
    #[error(transparent)]
    Generate(#[from] GenerateError),

    /// From the model library (config, checkpoint files).
    #[error(transparent)]
    Model(#[from] MoeError),

    /// Sequences of different lengths were given as one batch (lengths listed).
    #[error("sequences in one batch must have the same length (got {0:?})")]
    RaggedBatch(Vec<usize>),

    /// A sequence to score has fewer than two tokens.
    #[error("scoring needs at least 2 tokens per sequence")]
    TooShortToScore,
}
