use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Int, Tensor};

use crate::nn::functional::{log_softmax, positive_reciprocal};

/// Label value that takes no part in the loss (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// Mean next-token cross-entropy, as HF `ForCausalLMLoss`: position `s` predicts `labels[s+1]`,
/// labels equal to [`IGNORE_INDEX`] are skipped, and the mean is over the labels that count.
///
/// # Shapes
/// - `logits`: `[B, S, V]`, `labels`: `[B, S]` -> `[1]`
pub fn causal_lm_loss<B: Backend>(logits: Tensor<B, 3>, labels: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    let [b, s, v] = logits.dims();
    let n = b * (s - 1);
    let logits = logits.narrow(1, 0, s - 1).reshape([n, v]).cast(FloatDType::F32);
    let targets = labels.narrow(1, 1, s - 1).reshape([n, 1]);
    let ignored = targets.clone().equal_elem(IGNORE_INDEX); // [N, 1]

    // gather needs a valid class everywhere; ignored rows are zeroed below.
    let safe_targets = targets.mask_fill(ignored.clone(), 0);
    let nll = log_softmax(logits, 1).gather(1, safe_targets).neg(); // [N, 1]
    let nll = nll.mask_fill(ignored.clone(), 0.0);
    let counted = ignored.bool_not().float().cast(FloatDType::F32).sum().clamp_min(1.0);
    // A product with `counted^-1`, not a division: see `nn::functional`.
    nll.sum() * positive_reciprocal(counted)
}
