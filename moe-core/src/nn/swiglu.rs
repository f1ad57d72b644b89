use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Configuration of [`SwiGlu`].
#[derive(Config, Debug)]
pub struct SwiGluConfig {
    /// Model width `D`.
    pub d_model: usize,
    /// Hidden width `F`.
    pub d_ff: usize,
}

impl SwiGluConfig {
    /// A block with freshly initialised weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SwiGlu<B> {
        let up = LinearConfig::new(self.d_model, self.d_ff).with_bias(false);
        let down = LinearConfig::new(self.d_ff, self.d_model).with_bias(false);
        SwiGlu { w1: up.init(device), w3: up.init(device), w2: down.init(device) }
    }
}

/// A dense SwiGLU feed-forward block, `w2(silu(w1 x) * w3 x)`: one Mixtral expert as a plain
/// layer. Used as the dense baseline and in the 1-expert equivalence test.
#[derive(Module, Debug)]
pub struct SwiGlu<B: Backend> {
    /// Gate projection `[D, F]`.
    pub w1: Linear<B>,
    /// Up projection `[D, F]`.
    pub w3: Linear<B>,
    /// Down projection `[F, D]`.
    pub w2: Linear<B>,
}

impl<B: Backend> SwiGlu<B> {
    /// # Shapes
    /// - `x`: `[..., D]` -> `[..., D]`
    pub fn forward<const N: usize>(&self, x: Tensor<B, N>) -> Tensor<B, N> {
        self.w2.forward(silu(self.w1.forward(x.clone())) * self.w3.forward(x))
    }
}
