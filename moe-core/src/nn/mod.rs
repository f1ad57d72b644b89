//! Dense building blocks of the decoder: normalisation, rotary embeddings, attention, SwiGLU,
//! and the projection they are made of (whose weight may stay quantized).

mod attention;
mod attention_options;
pub mod functional;
mod kv_cache;
mod mask;
mod projection;
mod rms_norm;
mod rope;
mod swiglu;
mod token_embedding;

pub use attention::{Attention, AttentionConfig};
pub use attention_options::{AttentionOptions, QkNorm};
pub use functional::{log_softmax, logsumexp, positive_reciprocal, softmax};
pub use kv_cache::{CacheStep, KvCache, LayerKvCache};
pub use mask::attention_mask;
pub use projection::Projection;
pub use rms_norm::{RmsNorm, RmsNormConfig};
pub use rope::{RopeTable, RotaryEmbedding};
pub use swiglu::{SwiGlu, SwiGluConfig};
pub use token_embedding::TokenEmbedding;
