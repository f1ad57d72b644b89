use burn::config::Config;
use burn::module::Module;
use burn::nn::{Initializer, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::Projection;
use crate::kernels::swiglu;

/// Configuration of [`SwiGlu`].
#[derive(Config, Debug)]
pub struct SwiGluConfig {
    /// Model width `D`.
    pub d_model: usize,
    /// Hidden width `F`.
    pub d_ff: usize,
    /// Same scheme as `burn::nn::Linear` (uniform, `1/sqrt(fan_in)` bound, like torch).
    #[config(default = "Initializer::KaimingUniform{gain: 1.0 / 3.0f64.sqrt(), fan_out_only: false}")]
    pub initializer: Initializer,
}

impl SwiGluConfig {
    /// A block with freshly initialised weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SwiGlu<B> {
        let linear = |d_in, d_out| {
            LinearConfig::new(d_in, d_out)
                .with_bias(false)
                .with_initializer(self.initializer.clone())
                .init(device)
                .into()
        };
        SwiGlu { gate_up: linear(self.d_model, 2 * self.d_ff), down: linear(self.d_ff, self.d_model) }
    }
}

/// A SwiGLU feed-forward block, `w2(silu(w1 x) * w3 x)`: one Mixtral expert, or a dense FFN.
///
/// The gate (`w1`) and up (`w3`) projections are one `[D, 2F]` matrix, so both come out of one
/// product: one pass over the input instead of two, and for a few rows (decoding, an expert's
/// share of a prompt) one pass of the kernel over the weights.
#[derive(Module, Debug)]
pub struct SwiGlu<B: Backend> {
    /// Gate and up projections side by side, `[D, 2F]`: columns `..F` are the gate
    /// (checkpoint `w1`), columns `F..` the up projection (`w3`).
    pub gate_up: Projection<B>,
    /// Down projection `[F, D]` (checkpoint `w2`).
    pub down: Projection<B>,
}

impl<B: Backend> SwiGlu<B> {
    /// Hidden width `F`.
    pub fn d_ff(&self) -> usize {
        self.down.dims()[0]
    }

    /// # Shapes
    /// - `x`: `[..., D]` -> `[..., D]`
    pub fn forward<const N: usize>(&self, x: Tensor<B, N>) -> Tensor<B, N> {
        let h = self.gate_up.forward(x); // [..., 2F]
        self.down.forward(swiglu(h))
    }
}
