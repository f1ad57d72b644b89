use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::kernels::matmul_weight;

/// Configuration of [`Experts`].
#[derive(Config, Debug)]
pub struct ExpertsConfig {
    /// Experts `E`.
    pub n_experts: usize,
    /// Model width `D`.
    pub d_model: usize,
    /// Expert hidden width `F`.
    pub d_ff: usize,
    /// Same scheme as `burn::nn::Linear` (uniform, `1/sqrt(fan_in)` bound, like torch).
    #[config(default = "Initializer::KaimingUniform{gain: 1.0 / 3.0f64.sqrt(), fan_out_only: false}")]
    pub initializer: Initializer,
}

impl ExpertsConfig {
    /// Experts with freshly initialised weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Experts<B> {
        let (e, d, f) = (self.n_experts, self.d_model, self.d_ff);
        Experts {
            w1: self.initializer.init_with([e, d, f], Some(d), Some(f), device),
            w3: self.initializer.init_with([e, d, f], Some(d), Some(f), device),
            w2: self.initializer.init_with([e, f, d], Some(f), Some(d), device),
        }
    }
}

/// `E` SwiGLU experts `w2(silu(w1 x) * w3 x)` with their weights stacked into 3-D parameters, so
/// that dispatch can run them as batched or grouped matmuls and the optimizer sees one tensor
/// per projection (as transformers v5 and megablocks store them).
#[derive(Module, Debug)]
pub struct Experts<B: Backend> {
    /// Gate projections `[E, D, F]` (checkpoint `experts.{e}.w1`, transposed).
    pub w1: Param<Tensor<B, 3>>,
    /// Up projections `[E, D, F]` (checkpoint `experts.{e}.w3`, transposed).
    pub w3: Param<Tensor<B, 3>>,
    /// Down projections `[E, F, D]` (checkpoint `experts.{e}.w2`, transposed).
    pub w2: Param<Tensor<B, 3>>,
}

impl<B: Backend> Experts<B> {
    /// Number of experts `E`.
    pub fn n_experts(&self) -> usize {
        self.w1.dims()[0]
    }

    /// Runs expert `e` on the tokens routed to it.
    ///
    /// # Shapes
    /// - `x`: `[N, D]` -> `[N, D]`
    pub fn forward_expert(&self, e: usize, x: Tensor<B, 2>) -> Tensor<B, 2> {
        // `[1, D, F]` views into the stacked parameters: reshaping them to 2-D would copy the
        // expert's weights on burn-flex (a view with an offset cannot be reshaped in place).
        let w1 = self.w1.val().narrow(0, e, 1);
        let w3 = self.w3.val().narrow(0, e, 1);
        let w2 = self.w2.val().narrow(0, e, 1);
        let h = silu(matmul_weight(x.clone(), w1)) * matmul_weight(x, w3); // [N, F]
        matmul_weight(h, w2)
    }

    /// Every expert on every token, as one batched matmul: the dense reference.
    ///
    /// # Shapes
    /// - `x`: `[T, D]` -> `[E, T, D]`
    pub fn forward_all(&self, x: Tensor<B, 2>) -> Tensor<B, 3> {
        let [t, d] = x.dims();
        let e = self.n_experts();
        let x = x.unsqueeze::<3>().expand([e, t, d]);
        let h = silu(x.clone().matmul(self.w1.val())) * x.matmul(self.w3.val()); // [E, T, F]
        h.matmul(self.w2.val())
    }
}
