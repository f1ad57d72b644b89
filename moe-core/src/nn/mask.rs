use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor};

/// The attention mask of `s_q` queries over `s_k` keys (`true` = masked), where query `i` is
/// `offset` positions after key `i` (queries at `offset..offset + s_q` over keys at `0..s_k`,
/// shifted by however many old keys the caller left out).
///
/// A query at position `p` sees keys `k <= p` and, with a sliding window `w`, only `k > p - w`
/// (so `w` keys, itself included), exactly as transformers' `sliding_window_causal_mask`.
///
/// # Shapes
/// - returns `[s_q, s_k]`
pub fn attention_mask<B: Backend>(
    s_q: usize,
    s_k: usize,
    offset: usize,
    sliding_window: Option<usize>,
    device: &B::Device,
) -> Tensor<B, 2, Bool> {
    let offset = offset as i64;
    // true where key > query position
    let causal = Tensor::<B, 2, Bool>::tril_mask([s_q, s_k], offset, device);
    match sliding_window {
        Some(w) => {
            // true where key <= query position - w
            let too_old = Tensor::<B, 2, Bool>::triu_mask([s_q, s_k], offset - (w as i64 - 1), device);
            causal.bool_or(too_old)
        }
        None => causal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    fn rows(mask: Tensor<NdArray, 2, Bool>) -> Vec<String> {
        let [s_q, s_k] = mask.dims();
        let v: Vec<bool> = mask.into_data().to_vec().unwrap();
        (0..s_q).map(|q| (0..s_k).map(|k| if v[q * s_k + k] { '.' } else { 'x' }).collect()).collect()
    }

    #[test]
    fn causal_and_window_masks_match_hf() {
        let d = Default::default();
        assert_eq!(rows(attention_mask::<NdArray>(3, 3, 0, None, &d)), ["x..", "xx.", "xxx"]);
        // window 2: each query sees itself and one key before it.
        assert_eq!(rows(attention_mask::<NdArray>(4, 4, 0, Some(2), &d)), ["x...", "xx..", ".xx.", "..xx"]);
        // one query at position 4 with a cache of 5 keys, window 3.
        assert_eq!(rows(attention_mask::<NdArray>(1, 5, 4, Some(3), &d)), ["..xxx"]);
    }
}
