//! Sparse Mixture-of-Experts and Mixtral-architecture modules for [Burn](https://burn.dev).
//!
//! Everything is generic over `B: Backend`: the same model runs on CPU (`ndarray`), WGPU and
//! CUDA, and trains under `Autodiff<B>`. Checkpoints in the HuggingFace Hub layout load and save
//! with [`io`], and the model computes the same function as transformers' `MixtralForCausalLM`.
//!
//! # Shapes
//! One legend for every `# Shapes` section in this crate:
//!
//! | name | meaning |
//! |------|---------|
//! | `B`  | batch size |
//! | `S`  | sequence length |
//! | `T`  | tokens, `B*S` (batch-major) |
//! | `D`  | model width, `d_model` |
//! | `F`  | expert hidden width, `d_ff` |
//! | `E`  | experts, `n_experts` |
//! | `K`  | experts per token, `top_k` |
//! | `H`  | query heads, `n_heads` |
//! | `G`  | key/value heads, `n_kv_heads` |
//! | `Dh` | head size, `head_dim` |
//! | `V`  | vocabulary size |
//! | `L`  | layers |
//!
//! # Cargo features
//! The modules are generic over `B: Backend` and need no feature; the features only decide
//! which concrete backends [`backend`] names (and the binaries offer):
//! - `ndarray` (default): burn-ndarray on the CPU, `backend::Cpu`, f32.
//! - `flex` (default): burn-flex on the CPU, `backend::Flex`: `gemm` matmuls, f32/f16/bf16.
//! - `wgpu` (default): the WGPU backend (Vulkan, Metal, DX12, or Lavapipe on CPU-only machines).
//! - `cuda`: the CUDA backend (needs the CUDA runtime and NVRTC at run time).
//!
//! # Using it in your own model
//! [`moe::SparseMoe`] replaces a feed-forward block (its docs show build, forward, aux loss and
//! backward); [`loss`] has the load-balancing and z losses; [`prelude`] the common items.
//! The repository's `examples/custom_model` trains such a model with burn-train's `Learner`.

#![warn(missing_docs)]

pub mod alloc;
pub mod backend;
pub mod config;
pub mod convert;
mod draws;
pub mod error;
pub mod fs;
pub mod gguf;
pub mod io;
pub mod kernels;
pub mod loss;
pub mod model;
pub mod moe;
pub mod nn;
pub mod quant;

pub use error::{MoeError, Result};

/// The items most users need.
pub mod prelude {
    pub use crate::config::{HfMixtralConfig, MixtralConfig};
    pub use crate::error::{MoeError, Result};
    pub use crate::io::{load_hub_checkpoint, save_hub_checkpoint, WeightDtype};
    pub use crate::loss::{causal_lm_loss, load_balancing_loss, router_z_loss};
    pub use crate::model::{Mixtral, MixtralOutput};
    pub use crate::moe::{MoeOutput, SparseMoe, SparseMoeConfig};
}
