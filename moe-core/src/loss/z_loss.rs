use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor};

use crate::nn::functional::logsumexp;

/// Router z-loss (ST-MoE, Zoph et al. 2022): the mean over all tokens of all layers of
/// `logsumexp(router_logits)^2`. It keeps router logits small, which keeps the softmax stable.
///
/// # Shapes
/// - `router_logits`: `L` tensors of `[T, E]` -> `[1]`
///
/// # Panics
/// If `router_logits` is empty (a dense model's output has no router logits).
pub fn router_z_loss<B: Backend>(router_logits: &[Tensor<B, 2>]) -> Tensor<B, 1> {
    let logits = Tensor::cat(router_logits.to_vec(), 0).cast(FloatDType::F32); // [L*T, E]
    logsumexp(logits, 1).square().mean() // [N, 1] -> [1]
}
