//! The sparse Mixture-of-Experts layer: router, routing options (noisy gating among them),
//! experts (routed and shared), dispatch, and the block.

mod dispatch;
mod experts;
mod layer_routing;
mod noisy_gating;
mod router;
mod routing;
mod shared_experts;
mod sparse_moe;
mod topk;

pub use dispatch::DispatchPlan;
pub use experts::{Experts, ExpertsConfig};
pub use layer_routing::LayerRouting;
pub use noisy_gating::{importance_load, noise_std, ImportanceLoad, NOISE_FLOOR};
pub use router::{Router, RouterConfig, RouterOutput};
pub use routing::{expert_capacity, updated_expert_bias, RoutingConfig, Scoring};
pub use shared_experts::{SharedExperts, SharedExpertsConfig};
pub use sparse_moe::{MoeOutput, SparseMoe, SparseMoeConfig};
pub use topk::top_k_indices;
