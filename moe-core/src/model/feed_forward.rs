use burn::module::Module;
use burn::tensor::backend::Backend;

use crate::config::MixtralConfig;
use crate::moe::{SparseMoe, SparseMoeConfig};
use crate::nn::{SwiGlu, SwiGluConfig};

/// The feed-forward half of a decoder layer: the sparse MoE block, or the one SwiGLU of a dense
/// model (Mistral, Llama) or of a sparse model's dense layer (Qwen-MoE), chosen by
/// [`MixtralConfig::is_dense_layer`].
// One per layer: the bytes a dense layer wastes next to a sparse one do not matter, and a
// `Box` would hide the module from Burn's derive.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum FeedForward<B: Backend> {
    /// The checkpoint's `block_sparse_moe`: router and experts.
    Sparse(SparseMoe<B>),
    /// The checkpoint's `mlp` (`gate_proj`, `up_proj`, `down_proj`).
    Dense(SwiGlu<B>),
}

impl<B: Backend> FeedForward<B> {
    /// The block layer `n` of `config` has, freshly initialised.
    pub fn init(config: &MixtralConfig, n: usize, device: &B::Device) -> Self {
        match config.is_dense_layer(n) {
            true => Self::Dense(SwiGluConfig::new(config.d_model, config.dense_width()).init(device)),
            false => Self::Sparse(
                SparseMoeConfig::new(config.d_model, config.d_ff, config.n_experts)
                    .with_top_k(config.top_k)
                    .with_routing(config.routing.clone())
                    .init(device),
            ),
        }
    }

    /// The MoE block, unless the layer is dense.
    pub fn moe(&self) -> Option<&SparseMoe<B>> {
        match self {
            Self::Sparse(moe) => Some(moe),
            Self::Dense(_) => None,
        }
    }

    /// [`Self::moe`], mutably.
    pub fn moe_mut(&mut self) -> Option<&mut SparseMoe<B>> {
        match self {
            Self::Sparse(moe) => Some(moe),
            Self::Dense(_) => None,
        }
    }

    /// The dense FFN, if the layer is dense.
    pub fn mlp(&self) -> Option<&SwiGlu<B>> {
        match self {
            Self::Dense(mlp) => Some(mlp),
            Self::Sparse(_) => None,
        }
    }

    /// [`Self::mlp`], mutably.
    pub fn mlp_mut(&mut self) -> Option<&mut SwiGlu<B>> {
        match self {
            Self::Dense(mlp) => Some(mlp),
            Self::Sparse(_) => None,
        }
    }
}
