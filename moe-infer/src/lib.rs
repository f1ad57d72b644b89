//! Inference for Mixtral-architecture checkpoints: KV-cached generation with HF-style sampling,
//! and scoring (NLL, perplexity, router losses), on any Burn backend.

pub mod error;
pub mod generate;
pub mod sampling;
pub mod score;
pub mod text;
pub mod tokenizer;

pub use error::InferError;
pub use generate::{generate, GenerationConfig, GenerationOutput};
pub use sampling::{Sampler, SamplingConfig};
pub use score::{score, ScoreOutput};
pub use text::{mixtral_chat_prompt, TextCollector, Turn};
pub use tokenizer::{TextStream, TextTokenizer};
