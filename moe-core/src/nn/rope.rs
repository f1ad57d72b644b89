use burn::config::Config;
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::kernels::{rope, RopePositions};

/// Configuration of [`RotaryEmbedding`].
#[derive(Config, Debug)]
pub struct RotaryEmbeddingConfig {
    /// Size of each head; the rotation pairs dimension `i` with `i + head_dim/2`.
    pub head_dim: usize,
    /// Positions in the precomputed table.
    pub max_seq_len: usize,
    /// Base frequency.
    #[config(default = 10000.0)]
    pub theta: f64,
}

impl RotaryEmbeddingConfig {
    /// Precomputes the cos/sin tables.
    ///
    /// They are computed on the host in f32 with HF's formula (`inv_freq = 1 / theta^(2i/Dh)` in
    /// f32, then `pos * inv_freq` in f32) so that positions round exactly as in transformers.
    pub fn init<B: Backend>(&self, device: &B::Device) -> RotaryEmbedding<B> {
        let half = self.head_dim / 2;
        let inv_freq: Vec<f32> =
            (0..half).map(|i| 1.0 / (self.theta as f32).powf((2 * i) as f32 / self.head_dim as f32)).collect();
        let mut cos = Vec::with_capacity(self.max_seq_len * self.head_dim);
        let mut sin = Vec::with_capacity(self.max_seq_len * self.head_dim);
        for pos in 0..self.max_seq_len {
            // `emb = cat(freqs, freqs)`: both halves of a head share the frequencies.
            for _ in 0..2 {
                for f in &inv_freq {
                    let angle = pos as f32 * f;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
        let shape = [self.max_seq_len, self.head_dim];
        RotaryEmbedding {
            cos: Tensor::from_data(TensorData::new(cos, shape), device),
            sin: Tensor::from_data(TensorData::new(sin, shape), device),
        }
    }
}

/// Rotary position embedding in HF's rotate-half convention.
///
/// `burn::nn::RotaryEncoding` rotates interleaved pairs `(x[2i], x[2i+1])`; HF checkpoints order
/// the q/k projection rows for rotate-half, so that module would compute a different function.
#[derive(Module, Debug)]
pub struct RotaryEmbedding<B: Backend> {
    /// `[max_seq_len, Dh]`; a constant, not a parameter.
    pub cos: Tensor<B, 2>,
    /// `[max_seq_len, Dh]`.
    pub sin: Tensor<B, 2>,
}

impl<B: Backend> RotaryEmbedding<B> {
    /// Rotates `x` whose sequence positions start at `start`.
    ///
    /// Heads come after positions, as the q/k projections produce them: rotating before the
    /// heads are moved in front keeps every operand contiguous (on burn-flex, rotating the
    /// transposed `[B, H, S, Dh]` view walked it element by element).
    ///
    /// # Shapes
    /// - `x`: `[B, S, N, Dh]` (`N` heads) -> `[B, S, N, Dh]`
    pub fn apply(&self, x: Tensor<B, 4>, start: usize) -> Tensor<B, 4> {
        let x = match rope(x, &self.cos, &self.sin, &RopePositions::Start(start)) {
            Ok(out) => return out,
            Err(x) => x,
        };
        let [_, s, _, dh] = x.dims();
        let dtype = x.dtype();
        let cos = self.cos.clone().narrow(0, start, s).cast(dtype).reshape([1, s, 1, dh]);
        let sin = self.sin.clone().narrow(0, start, s).cast(dtype).reshape([1, s, 1, dh]);
        x.clone() * cos + rotate_half(x) * sin
    }

    /// [`Self::apply`] with each sequence at its own positions (left-padded batches).
    ///
    /// # Shapes
    /// - `x`: `[B, S, N, Dh]`, `positions`: `[B, S]` -> `[B, S, N, Dh]`
    pub fn apply_at(&self, x: Tensor<B, 4>, positions: Tensor<B, 2, Int>) -> Tensor<B, 4> {
        let positions = RopePositions::Each(positions);
        let x = match rope(x, &self.cos, &self.sin, &positions) {
            Ok(out) => return out,
            Err(x) => x,
        };
        let RopePositions::Each(positions) = positions else { unreachable!("built above") };
        let [b, s, _, dh] = x.dims();
        let dtype = x.dtype();
        let flat = positions.reshape([b * s]);
        let cos = self.cos.clone().select(0, flat.clone()).cast(dtype).reshape([b, s, 1, dh]);
        let sin = self.sin.clone().select(0, flat).cast(dtype).reshape([b, s, 1, dh]);
        x.clone() * cos + rotate_half(x) * sin
    }

    /// Positions the table covers.
    pub fn max_seq_len(&self) -> usize {
        self.cos.dims()[0]
    }
}

/// `[x1, x2] -> [-x2, x1]` on the last dimension.
fn rotate_half<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let dh = x.dims()[3];
    let x1 = x.clone().narrow(3, 0, dh / 2);
    let x2 = x.narrow(3, dh / 2, dh / 2);
    Tensor::cat(vec![x2.neg(), x1], 3)
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::{Distribution, FloatDType, Tolerance};

    use crate::backend::Flex;

    /// burn-flex takes `kernels::rope`; ndarray Burn's ops: both must compute the same rotation,
    /// from a start position and at per-sequence positions, in f32 and f16.
    #[test]
    fn the_kernel_computes_what_burns_ops_compute() {
        let config = RotaryEmbeddingConfig::new(8, 16).with_theta(100.0);
        let (flex, ndarray) = (config.init::<Flex>(&Default::default()), config.init::<NdArray>(&Default::default()));
        let x = Tensor::<NdArray, 4>::random([2, 3, 2, 8], Distribution::Normal(0.0, 1.0), &Default::default());
        let on_flex = || Tensor::<Flex, 4>::from_data(x.to_data(), &Default::default());
        let positions = [[0i64, 5, 6], [3, 4, 15]];
        let want = ndarray.apply(x.clone(), 4).into_data();
        flex.apply(on_flex(), 4).into_data().assert_approx_eq::<f32>(&want, Tolerance::absolute(1e-6));
        let got = flex.apply(on_flex().cast(FloatDType::F16), 4).cast(FloatDType::F32);
        got.into_data().assert_approx_eq::<f32>(&want, Tolerance::absolute(1e-2));
        let want = ndarray.apply_at(x.clone(), Tensor::from_ints(positions, &Default::default())).into_data();
        let got = flex.apply_at(on_flex(), Tensor::from_ints(positions, &Default::default()));
        got.into_data().assert_approx_eq::<f32>(&want, Tolerance::absolute(1e-6));
    }
}
