use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::moe::ImportanceLoad;
use crate::nn::functional::positive_reciprocal;

/// Added to the squared mean in [`cv_squared`], as in the reference implementation: a layer
/// whose statistics are all zero has no imbalance, not a division by zero.
const CV_EPSILON: f64 = 1e-10;

/// The squared coefficient of variation `var(x) / (mean(x)² + 1e-10)`, with the population
/// variance, as tensor2tensor's `cv_squared`. Zero when all entries are equal.
///
/// # Shapes
/// - `x`: `[E]` -> `[1]`
pub fn cv_squared<B: Backend>(x: Tensor<B, 1>) -> Tensor<B, 1> {
    let mean = x.clone().mean();
    let variance = (x - mean.clone()).square().mean();
    variance * positive_reciprocal(mean.square().add_scalar(CV_EPSILON))
}

/// Noisy top-k gating's balancing loss (Shazeer et al. 2017): `CV(importance)² + CV(load)²`
/// per layer, averaged over the layers (so its scale does not grow with depth, like the pooled
/// Switch loss). The paper weighs the two terms separately, 0.1 each; here the trainer's one
/// `aux_loss_coef` weighs their sum.
///
/// # Shapes
/// - returns `[1]`
///
/// # Panics
/// If `layers` is empty (a model without noisy gating has no statistics to balance).
pub fn importance_load_loss<B: Backend>(layers: &[ImportanceLoad<B>]) -> Tensor<B, 1> {
    let per_layer: Vec<Tensor<B, 1>> =
        layers.iter().map(|l| cv_squared(l.importance.clone()) + cv_squared(l.load.clone())).collect();
    assert!(!per_layer.is_empty(), "importance_load_loss needs at least one layer's statistics");
    let n = per_layer.len();
    Tensor::cat(per_layer, 0).sum().div_scalar(n as f64)
}
