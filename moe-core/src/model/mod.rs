//! The decoder: layers (with a sparse MoE or a dense feed-forward block) and the causal-LM
//! model.

mod decoder_layer;
mod feed_forward;
mod mixtral;
mod parameters;
mod seeded_init;

pub use decoder_layer::{DecoderLayer, DecoderLayerOutput};
pub use feed_forward::FeedForward;
pub use mixtral::{Mixtral, MixtralOutput};
pub use parameters::{AnyTensor, AttentionProj, ExpertProj, ParamId, ParamMut, ParamRef};
