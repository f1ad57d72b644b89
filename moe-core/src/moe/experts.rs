use burn::config::Config;
use burn::module::Module;
use burn::nn::Initializer;
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::nn::{SwiGlu, SwiGluConfig};

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
        let ffn = SwiGluConfig::new(self.d_model, self.d_ff).with_initializer(self.initializer.clone());
        Experts { ffns: (0..self.n_experts).map(|_| ffn.init(device)).collect() }
    }
}

/// `E` SwiGLU experts `w2(silu(w1 x) * w3 x)`, each with parameters of its own.
///
/// Not one stacked `[E, D, F]` tensor per projection (transformers v5's layout): under Burn's
/// autodiff, taking expert `e`'s slice of a stacked parameter makes the backward pass allocate
/// and add a zero gradient of the *whole* stack for every expert and projection, which made the
/// layer's forward + backward 9.7x the equal-FLOP dense layer's at 128 tokens (docs/benchmarks-history.md,
/// issue 10). Each expert's products read its own contiguous matrices either way.
#[derive(Module, Debug)]
pub struct Experts<B: Backend> {
    /// Expert `e` is `ffns[e]` (checkpoint `experts.{e}.w1/w3/w2`).
    pub ffns: Vec<SwiGlu<B>>,
}

impl<B: Backend> Experts<B> {
    /// Number of experts `E`.
    pub fn n_experts(&self) -> usize {
        self.ffns.len()
    }

    /// Runs expert `e` on the tokens routed to it.
    ///
    /// # Shapes
    /// - `x`: `[N, D]` -> `[N, D]`
    pub fn forward_expert(&self, e: usize, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.ffns[e].forward(x)
    }

    /// Every expert on every token, as one batched matmul over the experts' weights stacked:
    /// the dense reference.
    ///
    /// # Shapes
    /// - `x`: `[T, D]` -> `[E, T, D]`
    pub fn forward_all(&self, x: Tensor<B, 2>) -> Tensor<B, 3> {
        let [t, d] = x.dims();
        let e = self.n_experts();
        let stack = |w: fn(&SwiGlu<B>) -> Tensor<B, 2>| Tensor::stack::<3>(self.ffns.iter().map(w).collect(), 0);
        let gate_up = stack(|ffn| ffn.gate_up.weight.val()); // [E, D, 2F]
        let down = stack(|ffn| ffn.down.weight.val()); // [E, F, D]
        let f = down.dims()[1];
        let h = x.unsqueeze::<3>().expand([e, t, d]).matmul(gate_up); // [E, T, 2F]
        let h = silu(h.clone().narrow(2, 0, f)) * h.narrow(2, f, f); // [E, T, F]
        h.matmul(down)
    }
}
