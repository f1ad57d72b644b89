//! The sparse Mixture-of-Experts layer: router, experts, dispatch, and the block.

mod dispatch;
mod experts;
mod router;
mod routing;
mod sparse_moe;
mod topk;

pub use dispatch::DispatchPlan;
pub use experts::{Experts, ExpertsConfig};
pub use router::{Router, RouterConfig, RouterOutput};
pub use routing::{expert_capacity, RoutingConfig};
pub use sparse_moe::{MoeOutput, SparseMoe, SparseMoeConfig};
pub use topk::top_k_indices;
