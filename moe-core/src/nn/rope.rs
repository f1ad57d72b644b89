use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::kernels::{rope, RopePositions};

/// Rotary position embedding in HF's rotate-half convention.
///
/// `burn::nn::RotaryEncoding` rotates interleaved pairs `(x[2i], x[2i+1])`; HF checkpoints order
/// the q/k projection rows for rotate-half, so that module would compute a different function.
///
/// No table is kept for the model's whole context: each forward pass builds the cos/sin rows
/// of the positions it runs ([`Self::range`], [`Self::rows`]) and every layer shares them. A
/// config's `max_position_embeddings` then costs nothing up front (a table for Mixtral 8x22B's
/// 65536 positions was 64 MiB; an absurd value in a `config.json` was an abort).
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    head_dim: usize,
    /// `1 / theta^(2i / Dh)` for `i < Dh/2`, in f32 as HF computes it.
    inv_freq: Vec<f32>,
}

/// The cos/sin rows of the positions one forward pass runs; see [`RotaryEmbedding`].
#[derive(Debug, Clone)]
pub struct RopeTable<B: Backend> {
    /// `[S, Dh]` (shared by every sequence) or `[B*S, Dh]` (one row per token).
    pub cos: Tensor<B, 2>,
    /// The same shape as `cos`.
    pub sin: Tensor<B, 2>,
    positions: RopePositions,
}

impl RotaryEmbedding {
    /// Rotary embedding of heads of size `head_dim` (even) with base frequency `theta`.
    pub fn new(head_dim: usize, theta: f64) -> Self {
        let inv_freq = (0..head_dim / 2).map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32)).collect();
        Self { head_dim, inv_freq }
    }

    /// Tables for every sequence at positions `start..start + len`.
    pub fn range<B: Backend>(&self, start: usize, len: usize, device: &B::Device) -> RopeTable<B> {
        self.table(start..start + len, RopePositions::Shared, device)
    }

    /// Tables with one row per token, at `positions` (`[B*S]`, batch-major): left-padded
    /// sequences, each at positions of its own.
    pub fn rows<B: Backend>(&self, positions: &[usize], device: &B::Device) -> RopeTable<B> {
        self.table(positions.iter().copied(), RopePositions::PerRow, device)
    }

    /// Computed on the host in f32 with HF's formula (`pos * inv_freq` in f32, `emb =
    /// cat(freqs, freqs)`), so positions round exactly as in transformers.
    fn table<B: Backend>(
        &self,
        positions: impl ExactSizeIterator<Item = usize>,
        kind: RopePositions,
        device: &B::Device,
    ) -> RopeTable<B> {
        let rows = positions.len();
        let (mut cos, mut sin) = (Vec::with_capacity(rows * self.head_dim), Vec::with_capacity(rows * self.head_dim));
        for pos in positions {
            for _ in 0..2 {
                for f in &self.inv_freq {
                    let angle = pos as f32 * f;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
        let shape = [rows, self.head_dim];
        RopeTable {
            cos: Tensor::from_data(TensorData::new(cos, shape), device),
            sin: Tensor::from_data(TensorData::new(sin, shape), device),
            positions: kind,
        }
    }
}

impl<B: Backend> RopeTable<B> {
    /// Rotates `x`, whose positions are the table's.
    ///
    /// Heads come after positions, as the q/k projections produce them: rotating before the
    /// heads are moved in front keeps every operand contiguous (on burn-flex, rotating the
    /// transposed `[B, H, S, Dh]` view walked it element by element).
    ///
    /// # Shapes
    /// - `x`: `[B, S, N, Dh]` (`N` heads) -> `[B, S, N, Dh]`
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        rope(x, &self.cos, &self.sin, self.positions)
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::{Distribution, FloatDType, Tolerance};

    use crate::backend::Flex;

    /// burn-flex takes `kernels::rope`; ndarray Burn's ops: both must compute the same rotation,
    /// for a shared range of positions and per token, in f32 and f16; and a token's rotation
    /// depends on its position only, whichever table it comes from.
    #[test]
    fn the_kernel_computes_what_burns_ops_compute() {
        let rope = RotaryEmbedding::new(8, 100.0);
        let (cpu, flex) = (Default::default(), Default::default());
        let x = Tensor::<NdArray, 4>::random([2, 3, 2, 8], Distribution::Normal(0.0, 1.0), &cpu);
        let on_flex = || Tensor::<Flex, 4>::from_data(x.to_data(), &flex);
        let want = rope.range::<NdArray>(4, 3, &cpu).apply(x.clone()).into_data();
        let got = rope.range::<Flex>(4, 3, &flex).apply(on_flex()).into_data();
        got.assert_approx_eq::<f32>(&want, Tolerance::absolute(1e-6));
        let got = rope.range::<Flex>(4, 3, &flex).apply(on_flex().cast(FloatDType::F16)).cast(FloatDType::F32);
        got.into_data().assert_approx_eq::<f32>(&want, Tolerance::absolute(1e-2));

        let positions = [0, 5, 6, 4, 5, 6];
        let want = rope.rows::<NdArray>(&positions, &cpu).apply(x.clone());
        let got = rope.rows::<Flex>(&positions, &flex).apply(on_flex());
        got.into_data().assert_approx_eq::<f32>(&want.to_data(), Tolerance::absolute(1e-6));
        // The second sequence sits at 4..7, as the shared range put both.
        let shared = rope.range::<NdArray>(4, 3, &cpu).apply(x.clone()).narrow(0, 1, 1);
        want.narrow(0, 1, 1).into_data().assert_eq(&shared.into_data(), true);
    }
}
