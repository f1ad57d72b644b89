//! What one MoE layer's router decided, for losses and statistics: the one record that
//! [`super::SparseMoe::forward`] returns and a model's output keeps per layer.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use super::ImportanceLoad;

/// A MoE layer's routing decisions.
#[derive(Debug, Clone)]
pub struct LayerRouting<B: Backend> {
    /// Raw router logits in f32, `[T, E]`, for the load-balancing and z losses.
    pub router_logits: Tensor<B, 2>,
    /// Chosen experts per token, `[T, K]`: for load statistics. Under expert choice (while
    /// training) `[T, E]`: `e` where expert `e` took the token, -1 elsewhere.
    pub experts: Tensor<B, 2, Int>,
    /// Assignments (of `T · K`) dropped because their expert was full; 0 without a capacity
    /// (see [`super::RoutingConfig::capacity_factor`]).
    pub dropped: usize,
    /// Assignments routed to each expert, `[E]` (dropped ones included): the load that
    /// auxiliary-loss-free balancing evens out.
    pub counts: Vec<usize>,
    /// Importance and load for noisy gating's balancing losses; `None` without noisy gating.
    pub importance_load: Option<ImportanceLoad<B>>,
}
