//! Inference for Mixtral-architecture checkpoints: KV-cached generation with HF-style sampling,
//! and scoring (NLL, perplexity, router losses), on any Burn backend; the `moe-infer` CLI.
//!
//! Generation, sampling and tokenizers live in [`moe_generate`] (shared with the trainer) and
//! are re-exported here. Load a model with [`moe_core::io::load_hub_checkpoint`] (or build one
//! from a [`moe_core::config::MixtralConfig`]), then [`generate()`] or [`score()`].
//!
//! ```
//! use burn::backend::NdArray;
//! use moe_core::config::MixtralConfig;
//! use moe_infer::{generate, score, GenerationConfig, SamplingConfig};
//!
//! let device = Default::default();
//! let mut model = MixtralConfig::tiny().init::<NdArray>(&device); // random weights
//! model.set_experts_per_token(1).unwrap(); // optional: fewer experts than the config's top_k
//! let config = GenerationConfig {
//!     max_new_tokens: 4,
//!     sampling: SamplingConfig { temperature: 0.7, top_p: Some(0.9), seed: 1, ..Default::default() },
//!     stop_tokens: vec![],
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
pub mod score;
pub mod serve;

pub use error::InferError;
pub use moe_generate::{
    generate, mixtral_chat_prompt, ChatMessage, ChatTemplate, GenerateError, GenerationConfig, GenerationOutput,
    Sampler, SamplingConfig, TextCollector, TextStream, TextTokenizer, Turn,
};
pub use score::{score, ScoreOutput};
