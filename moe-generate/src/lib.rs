//! Text generation for Mixtral-architecture models: KV-cached batched decoding with HF-style
//! sampling, tokenizers, and text streamed as it is produced, on any Burn backend.
//!
//! Shared by the inference engine (`moe-infer`) and the trainer (`moe-train`, for its samples),
//! so that neither depends on the other. Load a model with
//! [`moe_core::io::load_hub_checkpoint`] (or build one from a
//! [`moe_core::config::MixtralConfig`]), then [`generate()`]. Text goes through
//! [`TextTokenizer`] (HF `tokenizers`), streamed with [`TextStream`] / [`TextCollector`].
//!
//! `moe-infer`'s crate docs run a complete example (it re-exports these items): this crate has
//! no doc tests of its own, since each would build the model's generics once more.

#![warn(missing_docs)]

pub mod chat_template;
pub mod error;
pub mod generate;
mod gguf_tokenizer;
pub mod mixtral_chat;
pub mod sampling;
pub mod text;
pub mod tokenizer;

pub use chat_template::{ChatMessage, ChatTemplate};
pub use error::{check_ids, GenerateError};
pub use generate::{generate, GenerationConfig, GenerationOutput};
pub use mixtral_chat::{mixtral_chat_prompt, Turn};
pub use sampling::{Sampler, SamplingConfig};
pub use text::TextCollector;
pub use tokenizer::{TextStream, TextTokenizer};
