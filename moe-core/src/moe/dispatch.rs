use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// Where each (token, choice) pair goes when the tokens are grouped by expert.
///
/// The `T*K` assignments are laid out in "slots" sorted by expert (expert 0's tokens first, in
/// token order, then expert 1's, ...). The permutation is computed on the device with one-hot
/// counts and a cumulative sum instead of a sort, because `argsort` reads back to the host on
/// burn 0.21's GPU backends. Only the `E` per-expert counts come back to the host, since every
/// expert's matmul needs its row count.
#[derive(Debug, Clone)]
pub struct DispatchPlan<B: Backend> {
    /// For each slot, the token it holds, `[T*K]`.
    pub token_index: Tensor<B, 1, Int>,
    /// For each slot, the flattened `(token, choice)` assignment `t*K + k` it holds, `[T*K]`.
    pub assignment_index: Tensor<B, 1, Int>,
    /// Tokens routed to each expert; slots of expert `e` start at the sum of earlier counts.
    pub counts: Vec<usize>,
}

impl<B: Backend> DispatchPlan<B> {
    /// # Shapes
    /// - `experts`: `[T, K]` expert ids in `0..n_experts`
    pub fn new(experts: Tensor<B, 2, Int>, n_experts: usize) -> Self {
        let [t, k] = experts.dims();
        let n = t * k;
        let device = experts.device();
        let ids =
            Tensor::<B, 1, Int>::arange(0..n_experts as i64, &device).reshape([1, n_experts]).expand([n, n_experts]);
        let one_hot = experts.reshape([n, 1]).expand([n, n_experts]).equal(ids).int(); // [N, E]
        let counts = one_hot.clone().sum_dim(0); // [1, E]
        let starts = counts.clone().cumsum(1) - counts.clone(); // [1, E] exclusive prefix sum

        // Rank of each assignment among those of its expert (0-based where one_hot is 1).
        let rank = one_hot.clone().cumsum(0) - 1; // [N, E]
        let slot = ((rank + starts.expand([n, n_experts])) * one_hot).sum_dim(1); // [N, 1]
        let assignment_index = Tensor::<B, 1, Int>::zeros([n], &device).scatter(
            0,
            slot.reshape([n]),
            Tensor::arange(0..n as i64, &device),
            burn::tensor::IndexingUpdateOp::Add,
        );
        let token_index = assignment_index.clone().div_scalar(k as i64);
        let counts = counts.into_data().iter::<i64>().map(|c| c as usize).collect();
        Self { token_index, assignment_index, counts }
    }

    /// `[start, end)` slot range of each expert.
    pub fn ranges(&self) -> impl Iterator<Item = (usize, std::ops::Range<usize>)> + '_ {
        self.counts
            .iter()
            .scan(0, |start, &count| {
                let range = *start..*start + count;
                *start += count;
                Some(range)
            })
            .enumerate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn groups_assignments_by_expert_in_token_order() {
        let d = Default::default();
        // 3 tokens, top-2, 3 experts.
        let experts = Tensor::<NdArray, 2, Int>::from_ints([[2, 0], [0, 1], [2, 1]], &d);
        let plan = DispatchPlan::new(experts, 3);
        assert_eq!(plan.counts, vec![2, 2, 2]);
        let a: Vec<i64> = plan.assignment_index.into_data().iter::<i64>().collect();
        // expert 0: (t0,k1)=1, (t1,k0)=2; expert 1: (t1,k1)=3, (t2,k1)=5; expert 2: 0, 4
        assert_eq!(a, vec![1, 2, 3, 5, 0, 4]);
        let t: Vec<i64> = plan.token_index.into_data().iter::<i64>().collect();
        assert_eq!(t, vec![0, 1, 1, 2, 0, 2]);
    }
}
