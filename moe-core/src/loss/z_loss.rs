use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor};

/// Router z-loss (ST-MoE, Zoph et al. 2022): the mean over all tokens of all layers of
/// `logsumexp(router_logits)^2`. It keeps router logits small, which keeps the softmax stable.
///
/// # Shapes
/// - `router_logits`: `L` tensors of `[T, E]` -> `[1]`
pub fn router_z_loss<B: Backend>(router_logits: &[Tensor<B, 2>]) -> Tensor<B, 1> {
    let logits = Tensor::cat(router_logits.to_vec(), 0).cast(FloatDType::F32); // [L*T, E]
    // logsumexp with the max subtracted, for stability.
    let max = logits.clone().max_dim(1).detach(); // [N, 1]
    let lse = (logits - max.clone()).exp().sum_dim(1).log() + max; // [N, 1]
    lse.square().mean()
}
