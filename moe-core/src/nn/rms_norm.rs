use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor};

/// Configuration of [`RmsNorm`].
#[derive(Config, Debug)]
pub struct RmsNormConfig {
    /// Size of the normalised (last) dimension.
    pub d_model: usize,
    /// Added to the mean square; Mixtral uses 1e-5.
    #[config(default = 1e-5)]
    pub epsilon: f64,
}

impl RmsNormConfig {
    /// A norm with unit weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> RmsNorm<B> {
        RmsNorm { weight: Param::from_tensor(Tensor::ones([self.d_model], device)), epsilon: self.epsilon }
    }
}

/// Root-mean-square layer norm as in HF `MixtralRMSNorm`.
///
/// Unlike `burn::nn::RmsNorm`, the whole normalisation runs in f32 and is cast back to the input
/// dtype before the weight multiplies it, which is what HF does; with f16/bf16 activations the
/// two orders round differently.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// `[D]`; named as in the checkpoint (`*_layernorm.weight`).
    pub weight: Param<Tensor<B, 1>>,
    /// Added to the mean square before the square root.
    pub epsilon: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// # Shapes
    /// - `x`: `[..., D]` -> `[..., D]`
    pub fn forward<const N: usize>(&self, x: Tensor<B, N>) -> Tensor<B, N> {
        let dtype = x.dtype();
        let x = x.cast(FloatDType::F32);
        let variance = x.clone().square().mean_dim(N - 1);
        // `powf(-0.5)`, not `recip` or a division: burn-ndarray 0.21's `recip` is an approximate
        // SIMD reciprocal (5e-5 relative error, enough to move logits by 1e-4), and autodiff's
        // backward of a division calls `recip` too. `powf` is exact both ways.
        let normed = x * variance.add_scalar(self.epsilon).powf_scalar(-0.5);
        let weight = self.weight.val().unsqueeze::<N>();
        normed.cast(dtype) * weight
    }
}
