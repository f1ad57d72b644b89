//! The Mixtral decoder: layers and the causal-LM model.

mod decoder_layer;
mod mixtral;

pub use decoder_layer::{DecoderLayer, DecoderLayerOutput};
pub use mixtral::{Mixtral, MixtralOutput};
