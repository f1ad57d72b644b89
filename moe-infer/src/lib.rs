//! Inference for Mixtral-architecture checkpoints: KV-cached generation with HF-style sampling,
//! and scoring (NLL, perplexity, router losses), on any Burn backend.
//!
//! Load a model with [`moe_core::io::load_hub_checkpoint`] (or build one from a
//! [`moe_core::config::MixtralConfig`]), then [`generate()`] or [`score()`]. Text goes through
//! [`TextTokenizer`] (HF `tokenizers`), streamed with [`TextStream`] / [`TextCollector`].
//!
//! ```
//! use burn::backend::NdArray;
//! use moe_core::config::MixtralConfig;
//! use moe_infer::{generate, score, GenerationConfig, SamplingConfig};
//!
//! let device = Default::default();
//! let model = MixtralConfig::tiny().init::<NdArray>(&device); // random weights
//! let config = GenerationConfig {
//!     max_new_tokens: 4,
//!     sampling: SamplingConfig { temperature: 0.7, top_p: Some(0.9), seed: 1, ..Default::default() },
//!     stop_tokens: vec![],
//!     experts_per_token: None, // the model's top_k
//! };
//! let mut streamed = Vec::new();
//! let out = generate(&model, &[vec![1, 5, 9]], &config, |_, id| {
//!     streamed.push(id);
//!     true // keep going
//! })
//! .unwrap();
//! assert_eq!(out.sequences[0][3..], streamed[..]);
//!
//! let scored = score(&model, &out.sequences).unwrap();
//! assert!(scored.perplexity > 1.0);
//! ```
//!
//! # Cargo features
//! `ndarray`, `flex`, `wgpu` (all default) and `cuda` select the backends compiled into
//! [`moe_core::backend`] and the `moe-infer` binary; the library itself is generic over
//! `B: Backend` and needs none of them.

#![warn(missing_docs)]

/// What can go wrong: [`InferError`].
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
