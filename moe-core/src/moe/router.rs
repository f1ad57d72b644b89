use crate::nn::functional::{positive_reciprocal, softmax};
use crate::nn::Projection;
use burn::config::Config;
use burn::module::Module;
use burn::nn::LinearConfig;
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Int, Tensor};

use super::top_k_indices;

/// Configuration of [`Router`].
#[derive(Config, Debug)]
pub struct RouterConfig {
    /// Model width `D`.
    pub d_model: usize,
    /// Experts `E`.
    pub n_experts: usize,
    /// Experts chosen per token.
    pub top_k: usize,
    /// Rescale the chosen experts' probabilities to sum to 1 (see
    /// [`RoutingConfig::normalize_top_k`](super::RoutingConfig::normalize_top_k)).
    #[config(default = true)]
    pub normalize_top_k: bool,
}

impl RouterConfig {
    /// A router with a freshly initialised gate.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Router<B> {
        Router {
            gate: LinearConfig::new(self.d_model, self.n_experts).with_bias(false).init(device).into(),
            top_k: self.top_k,
            normalize_top_k: self.normalize_top_k,
        }
    }
}

/// Top-k token-choice router of Mixtral: `softmax(gate(x))` -> top-k -> renormalise (or keep the
/// raw probabilities when `normalize_top_k` is false).
#[derive(Module, Debug)]
pub struct Router<B: Backend> {
    /// `[D, E]`; the checkpoint's `block_sparse_moe.gate`.
    pub gate: Projection<B>,
    /// Experts per token `K` (change it with [`SparseMoe::set_top_k`](super::SparseMoe::set_top_k),
    /// which validates it).
    pub top_k: usize,
    /// Whether the chosen experts' weights are rescaled to sum to 1.
    pub normalize_top_k: bool,
}

/// What the router decided for each token.
#[derive(Debug, Clone)]
pub struct RouterOutput<B: Backend> {
    /// Raw gate logits in f32, `[T, E]`: what the auxiliary losses are computed from.
    pub logits: Tensor<B, 2>,
    /// Chosen experts, best first, `[T, K]`.
    pub experts: Tensor<B, 2, Int>,
    /// Their mixing weights (sum to 1 per token when renormalised), in the activation dtype,
    /// `[T, K]`.
    pub weights: Tensor<B, 2>,
}

impl<B: Backend> Router<B> {
    /// # Shapes
    /// - `x`: `[T, D]`
    pub fn forward(&self, x: Tensor<B, 2>) -> RouterOutput<B> {
        let dtype = x.dtype();
        // The softmax over experts is taken in f32 as in HF: in bf16 the top-k order and the
        // renormalised weights would change.
        let logits = self.gate.forward(x).cast(FloatDType::F32); // [T, E]
        let probs = softmax(logits.clone(), 1);
        let experts = top_k_indices(probs.clone(), self.top_k); // [T, K]
                                                                // The gradient reaches the gate through these weights.
        let weights = probs.gather(1, experts.clone()); // [T, K]
                                                        // Renormalised over the chosen k, the output is a convex combination of k experts
                                                        // (Mixtral's choice; Switch-style routers keep the raw probabilities).
        let weights = match self.normalize_top_k {
            true => weights.clone() * positive_reciprocal(weights.sum_dim(1)),
            false => weights,
        };
        RouterOutput { logits, experts, weights: weights.cast(dtype) }
    }
}
