use crate::nn::functional::{positive_reciprocal, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, FloatDType, Int, Tensor};

use crate::moe::top_k_indices;

/// The Switch-Transformer load-balancing loss exactly as HF `load_balancing_loss_func`.
///
/// Router logits of all layers are pooled; `f_e` is the fraction of (token, choice) pairs sent to
/// expert `e` (per choice slot) and `P_e` the mean router probability of `e`; the loss is
/// `E * sum_k sum_e f_{k,e} * P_e`, which equals `top_k` under perfectly uniform routing.
/// With an `attention_mask` (`true` = real token) padding tokens are left out of both means.
///
/// # Shapes
/// - `router_logits`: `L` tensors of `[T, E]` (`T = B*S`, batch-major)
/// - `attention_mask`: `[B, S]`
/// - returns `[1]`
///
/// # Panics
/// If `router_logits` is empty (a dense model's output has no router logits to balance).
pub fn load_balancing_loss<B: Backend>(
    router_logits: &[Tensor<B, 2>],
    top_k: usize,
    attention_mask: Option<Tensor<B, 2, Bool>>,
) -> Tensor<B, 1> {
    // f32 throughout, whatever the model's dtype: bool-to-float conversions below produce the
    // device's default float type, which may be f16/bf16.
    let logits = Tensor::cat(router_logits.to_vec(), 0).cast(FloatDType::F32); // [L*T, E]
    let [n, e] = logits.dims();
    let probs = softmax(logits, 1);
    let chosen = top_k_indices(probs.clone(), top_k); // [N, K]
    let expert_ids = Tensor::<B, 1, Int>::arange(0..e as i64, &probs.device()).reshape([1, 1, e]).expand([n, top_k, e]);
    let expert_mask =
        chosen.unsqueeze_dim::<3>(2).expand([n, top_k, e]).equal(expert_ids).float().cast(FloatDType::F32); // [N, K, E]

    let (tokens_per_expert, prob_per_expert) = match attention_mask {
        None => (
            expert_mask.mean_dim(0).squeeze_dim::<2>(0), // [K, E]
            probs.mean_dim(0),                           // [1, E]
        ),
        Some(mask) => {
            let layers = router_logits.len();
            let [b, s] = mask.dims();
            let weight = mask.float().cast(FloatDType::F32).reshape([1, b * s]).expand([layers, b * s]).reshape([n, 1]); // [N, 1]
            let total = weight.clone().sum().clamp_min(1e-12).reshape([1, 1]);
            let tokens =
                (expert_mask * weight.clone().unsqueeze_dim::<3>(2)).sum_dim(0).squeeze_dim::<2>(0) / total.clone(); // [K, E]
            let prob = (probs * weight).sum_dim(0) * positive_reciprocal(total); // [1, E]
            (tokens, prob)
        }
    };
    (tokens_per_expert * prob_per_expert).sum().mul_scalar(e as f64)
}
