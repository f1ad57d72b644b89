use burn::config::Config;
use burn::module::Module;
use burn::nn::LinearConfig;
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::nn::{Projection, SwiGlu, SwiGluConfig};

/// Configuration of [`SharedExperts`].
#[derive(Config, Debug)]
pub struct SharedExpertsConfig {
    /// Model width `D`.
    pub d_model: usize,
    /// Hidden width of the block (all shared experts fused into one).
    pub d_ff: usize,
    /// Scale the output by a learned per-token sigmoid gate (Qwen-MoE).
    #[config(default = false)]
    pub gated: bool,
}

impl SharedExpertsConfig {
    /// A block with freshly initialised weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SharedExperts<B> {
        SharedExperts {
            ffn: SwiGluConfig::new(self.d_model, self.d_ff).init(device),
            gate: self.gated.then(|| LinearConfig::new(self.d_model, 1).with_bias(false).init(device).into()),
        }
    }
}

/// The always-on shared experts of DeepSeekMoE and Qwen-MoE: one SwiGLU block that every token
/// runs beside its routed experts (`n` shared experts of width `F` are one block of width
/// `n · F`: the same function, one matmul instead of `n`). With a gate (Qwen-MoE), the block's
/// output is scaled per token by `sigmoid(x · w)`.
#[derive(Module, Debug)]
pub struct SharedExperts<B: Backend> {
    /// The block (checkpoint `shared_experts.w1/w3/w2`).
    pub ffn: SwiGlu<B>,
    /// `[D, 1]` (checkpoint `shared_expert_gate`), if gated.
    pub gate: Option<Projection<B>>,
}

impl<B: Backend> SharedExperts<B> {
    /// # Shapes
    /// - `x`: `[T, D]` -> `[T, D]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let y = self.ffn.forward(x.clone());
        match &self.gate {
            Some(gate) => y * sigmoid(gate.forward(x)),
            None => y,
        }
    }
}
