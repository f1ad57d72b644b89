use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// Indices of the `k` largest entries of each row, largest first.
///
/// Built from `k` rounds of `max_dim_with_indices` + masking because, in burn 0.21, `topk`
/// panics under autodiff, `argtopk` is unimplemented on NdArray, and `topk_with_indices` sorts
/// on the host on GPU backends. This stays on the device on every backend; `k` is small.
///
/// # Shapes
/// - `scores`: `[T, E]` -> `[T, K]`
pub fn top_k_indices<B: Backend>(scores: Tensor<B, 2>, k: usize) -> Tensor<B, 2, Int> {
    let [t, e] = scores.dims();
    let expert_ids = Tensor::<B, 1, Int>::arange(0..e as i64, &scores.device()).reshape([1, e]).expand([t, e]);
    let mut remaining = scores.detach();
    let mut picks = Vec::with_capacity(k);
    for round in 0..k {
        let (_, idx) = remaining.clone().max_dim_with_indices(1); // [T, 1]
        if round + 1 < k {
            let taken = idx.clone().expand([t, e]).equal(expert_ids.clone());
            remaining = remaining.mask_fill(taken, f32::NEG_INFINITY);
        }
        picks.push(idx);
    }
    Tensor::cat(picks, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn picks_largest_first() {
        let d = Default::default();
        let s = Tensor::<NdArray, 2>::from_floats([[0.1, 0.5, 0.2, 0.9], [0.7, 0.1, 0.6, 0.0]], &d);
        let idx: Vec<i64> = top_k_indices(s, 2).into_data().iter::<i64>().collect();
        assert_eq!(idx, vec![3, 1, 0, 2]);
    }
}
