//! The routed experts' outputs, weighted and added back in token order, in one pass on
//! burn-flex.

use std::any::Any;

use burn::backend::flex::FlexTensor;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData, TensorPrimitive};
use half::{bf16, f16};
use rayon::prelude::*;

use super::{as_flex, copy, from_flex, narrow_half, widen_half};

/// The routed experts' outputs weighted and added back in token order, in one pass, when `B`
/// is burn-flex and every input is contiguous, of one float dtype (f32, f16 or bf16), with an
/// integer index; otherwise the outputs back. Each slot's product is rounded to the dtype
/// before it is added and each sum after, as in `y * w` followed by `select_assign`, so the
/// sums are the same to the bit.
pub(in crate::kernels) fn combine<B: Backend>(
    outputs: Vec<Tensor<B, 2>>,
    weights: &Tensor<B, 2>,
    token_index: &Tensor<B, 1, Int>,
    tokens: usize,
) -> Result<Tensor<B, 2>, Vec<Tensor<B, 2>>> {
    let Some(d) = outputs.first().map(|o| o.dims()[1]) else { return Err(outputs) };
    let prims: Vec<_> = outputs.into_iter().map(Tensor::into_primitive).collect();
    let (wp, ip) = (weights.clone().into_primitive().tensor(), token_index.clone().into_primitive());
    let hidden = (|| {
        let ys = prims
            .iter()
            .map(|p| match p {
                TensorPrimitive::Float(p) => as_flex::<B>(p),
                TensorPrimitive::QFloat(_) => None,
            })
            .collect::<Option<Vec<_>>>()?;
        let ws = as_flex::<B>(&wp)?;
        let index = (&ip as &dyn Any).downcast_ref::<FlexTensor>()?;
        let index: Vec<usize> = match index.dtype() {
            DType::I64 => index.as_slice::<i64>()?.iter().map(|&i| usize::try_from(i).ok()).collect::<Option<_>>()?,
            DType::I32 => index.as_slice::<i32>()?.iter().map(|&i| usize::try_from(i).ok()).collect::<Option<_>>()?,
            _ => return None,
        };
        let shape = [tokens, d];
        let data = match ws.dtype() {
            DType::F32 => TensorData::new(combine_rows::<f32>(&ys, ws, &index, shape, copy, copy)?, shape),
            DType::F16 => TensorData::new(combine_rows::<f16>(&ys, ws, &index, shape, widen_half, narrow_half)?, shape),
            DType::BF16 => {
                TensorData::new(combine_rows::<bf16>(&ys, ws, &index, shape, widen_half, narrow_half)?, shape)
            }
            _ => return None,
        };
        from_flex::<B>(FlexTensor::from_data(data))
    })();
    match hidden {
        Some(hidden) => Ok(Tensor::from_primitive(TensorPrimitive::Float(hidden))),
        None => Err(prims.into_iter().map(Tensor::from_primitive).collect()),
    }
}

/// Tokens per task of [`combine_rows`]: 64 rows of 512 values is 128 KB of f32 to sum.
const COMBINE_TOKENS_PER_TASK: usize = 64;

/// [`combine`]'s pass on values of dtype `E`: `hidden[index[s]] += ws[s] * y[s]` over the
/// slots `s` of the outputs `ys` in order, in f32, rounded to `E` after each product and each
/// sum unless `E` is f32 (burn-flex's f16 and bf16 ops compute in f32 and round once); `None`
/// when a dtype, a length or an index does not fit.
///
/// The sums run token by token, each token's slots in ascending order, so tokens are summed in
/// parallel and every sum adds the same values in the same order as one pass over the slots.
/// (That pass ran on the calling thread, with a zeroed `[T, D]` f32 buffer and a copy of it into
/// the output: 0.7% of the MoE layer's forward at `T = 2048`, `perf`, 2026-11-25, Zen 3, while the
/// other core waited.)
fn combine_rows<E: burn::tensor::Element + bytemuck::Pod + Default + Send + Sync>(
    ys: &[&FlexTensor],
    ws: &FlexTensor,
    index: &[usize],
    [tokens, d]: [usize; 2],
    to_f32: impl Fn(&[E], &mut [f32]) + Sync,
    from_f32: impl Fn(&[f32], &mut [E]) + Sync,
) -> Option<Vec<E>> {
    let ys = ys.iter().map(|y| y.as_slice::<E>()).collect::<Option<Vec<_>>>()?;
    let ws = ws.as_slice::<E>()?;
    if d == 0 || ys.iter().any(|y| y.len() % d != 0) {
        return None;
    }
    let rows: Vec<&[E]> = ys.iter().flat_map(|y| y.chunks_exact(d)).collect();
    if ws.len() != rows.len() || index.len() != rows.len() || index.iter().any(|&t| t >= tokens) {
        return None;
    }
    let mut w32 = vec![0.0f32; rows.len()];
    to_f32(ws, &mut w32);
    // Each token's slots in ascending order: token `t`'s are `order[starts[t]..starts[t + 1]]`.
    let mut starts = vec![0usize; tokens + 1];
    index.iter().for_each(|&t| starts[t + 1] += 1);
    (0..tokens).for_each(|t| starts[t + 1] += starts[t]);
    let mut next = starts.clone();
    let mut order = vec![0usize; rows.len()];
    for (slot, &t) in index.iter().enumerate() {
        order[next[t]] = slot;
        next[t] += 1;
    }
    let rounds = E::dtype() != DType::F32;
    let sum_tokens = |first: usize, out: &mut [std::mem::MaybeUninit<E>]| {
        let (mut h, mut row, mut rounded) = (vec![0.0f32; d], vec![0.0f32; d], vec![E::default(); d]);
        let round = |v: &mut [f32], rounded: &mut [E]| {
            if rounds {
                from_f32(v, rounded);
                to_f32(rounded, v);
            }
        };
        for (t, out) in (first..).zip(out.chunks_exact_mut(d)) {
            h.fill(0.0);
            for &slot in &order[starts[t]..starts[t + 1]] {
                to_f32(rows[slot], &mut row);
                row.iter_mut().for_each(|v| *v *= w32[slot]);
                round(&mut row, &mut rounded);
                h.iter_mut().zip(&row).for_each(|(h, v)| *h += v);
                round(&mut h, &mut rounded);
            }
            from_f32(&h, &mut rounded);
            out.iter_mut().zip(&rounded).for_each(|(out, &v)| {
                out.write(v);
            });
        }
    };
    let mut out = Vec::<E>::with_capacity(tokens * d);
    let spare = &mut out.spare_capacity_mut()[..tokens * d];
    let per_task = COMBINE_TOKENS_PER_TASK * d;
    if tokens <= COMBINE_TOKENS_PER_TASK {
        sum_tokens(0, spare);
    } else {
        spare.par_chunks_mut(per_task).enumerate().for_each(|(i, out)| sum_tokens(i * COMBINE_TOKENS_PER_TASK, out));
    }
    // SAFETY: every token's row of `out` was written above.
    unsafe { out.set_len(tokens * d) };
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, FloatDType};

    use crate::backend::Flex;

    /// `combine` against `cat`, product and `select_assign` in f32, f16 and bf16, to the bit.
    fn check_combine(sizes: &[usize], index: Vec<i64>, tokens: usize) {
        let device = Default::default();
        let outputs: Vec<Tensor<Flex, 2>> =
            sizes.iter().map(|&n| Tensor::random([n, 6], Distribution::Normal(0.0, 1.0), &device)).collect();
        let weights = Tensor::<Flex, 2>::random([index.len(), 1], Distribution::Uniform(0.0, 1.0), &device);
        let index = Tensor::<Flex, 1, Int>::from_data(TensorData::new(index, [sizes.iter().sum::<usize>()]), &device);
        for dtype in [FloatDType::F32, FloatDType::F16, FloatDType::BF16] {
            let outputs: Vec<_> = outputs.iter().map(|o| o.clone().cast(dtype)).collect();
            let weights = weights.clone().cast(dtype);
            let y = Tensor::cat(outputs.clone(), 0) * weights.clone();
            let zeros = Tensor::<Flex, 2>::zeros([tokens, 6], &device).cast(dtype);
            let want = zeros.select_assign(0, index.clone(), y, burn::tensor::IndexingUpdateOp::Add);
            let got = combine(outputs, &weights, &index, tokens).expect("the kernel runs");
            assert_eq!(got.dtype(), dtype.into());
            got.into_data().assert_eq(&want.into_data(), true);
        }
    }

    #[test]
    fn combine_is_cat_multiply_and_select_assign_to_the_bit() {
        // Tokens 0..5, each taken twice, in the experts' order.
        check_combine(&[3, 0, 5, 4], vec![0, 2, 4, 1, 2, 3, 4, 5, 0, 1, 3, 5], 6);
        // More tokens than one task sums: 150 tokens, each taken twice, one taken by no expert.
        let index: Vec<i64> = (0..300).map(|s| (s * 7 % 150) as i64).map(|t| if t == 149 { 0 } else { t }).collect();
        check_combine(&[100, 0, 120, 80], index, 151);

        let device = Default::default();
        let outputs: Vec<Tensor<Flex, 2>> =
            [3, 9].iter().map(|&n| Tensor::random([n, 6], Distribution::Normal(0.0, 1.0), &device)).collect();
        let weights = Tensor::<Flex, 2>::random([12, 1], Distribution::Uniform(0.0, 1.0), &device);
        let out_of_range = Tensor::<Flex, 1, Int>::from_data([0, 2, 4, 1, 2, 3, 4, 5, 0, 1, 3, 6], &device);
        assert!(combine(outputs, &weights, &out_of_range, 6).is_err(), "a token past T: Burn's ops");
    }
}
