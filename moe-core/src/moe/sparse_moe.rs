use burn::config::Config;
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, IndexingUpdateOp, Int, Tensor, TensorData};

use crate::error::{MoeError, Result};
use crate::nn::Projection;

use super::{
    updated_expert_bias, DispatchPlan, Experts, ExpertsConfig, LayerRouting, Router, RouterConfig, RouterOutput,
    RoutingConfig, SharedExperts, SharedExpertsConfig,
};

/// Configuration of [`SparseMoe`].
#[derive(Config, Debug)]
pub struct SparseMoeConfig {
    /// Model width `D`.
    pub d_model: usize,
    /// Hidden size of each expert.
    pub d_ff: usize,
    /// Experts `E`.
    pub n_experts: usize,
    /// Experts per token.
    #[config(default = 2)]
    pub top_k: usize,
    /// Scoring, weights, jitter, capacity, balancing bias, groups and shared experts (see
    /// [`RoutingConfig`]); Mixtral's by default.
    #[config(default = "RoutingConfig::default()")]
    pub routing: RoutingConfig,
}

impl SparseMoeConfig {
    /// A layer with freshly initialised router and experts (and shared experts if the routing
    /// has them).
    ///
    /// # Panics
    /// If the routing options do not fit `n_experts` and `top_k` (see
    /// [`RoutingConfig::validate`]; a model config is validated before it gets here).
    pub fn init<B: Backend>(&self, device: &B::Device) -> SparseMoe<B> {
        if let Err(e) = self.routing.validate(self.n_experts, self.top_k) {
            panic!("{e}");
        }
        assert!(
            (1..=self.n_experts).contains(&self.top_k),
            "top_k ({}) must be in 1..=n_experts ({})",
            self.top_k,
            self.n_experts
        );
        SparseMoe {
            router: RouterConfig::new(self.d_model, self.n_experts, self.top_k)
                .with_routing(self.routing.clone())
                .init(device),
            experts: ExpertsConfig::new(self.n_experts, self.d_model, self.d_ff).init(device),
            shared: self.routing.shared_width(self.d_ff).map(|width| {
                SharedExpertsConfig::new(self.d_model, width).with_gated(self.routing.shared_expert_gate).init(device)
            }),
        }
    }
}

/// Mixtral's sparse MoE block: each token runs only its `top_k` experts and sums their outputs
/// weighted by the renormalised router probabilities.
///
/// A drop-in replacement for the feed-forward block of any Burn model: build, run, add the
/// load-balancing loss to the objective, and backpropagate (the router learns through the
/// top-k weights):
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::tensor::{Distribution, Tensor};
/// use moe_core::loss::load_balancing_loss;
/// use moe_core::moe::SparseMoeConfig;
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// // d_model 16, d_ff 32, 4 experts, 2 per token.
/// let moe = SparseMoeConfig::new(16, 32, 4).with_top_k(2).init::<B>(&device);
/// let x = Tensor::<B, 3>::random([2, 5, 16], Distribution::Normal(0.0, 1.0), &device); // [B, S, D]
///
/// let out = moe.forward(x);
/// assert_eq!(out.hidden.dims(), [2, 5, 16]);
/// assert_eq!(out.routing.router_logits.dims(), [10, 4]); // [B*S, E]
/// assert_eq!(out.routing.experts.dims(), [10, 2]); // chosen experts, [B*S, K]
///
/// let aux = load_balancing_loss(&[out.routing.router_logits.clone()], 2, None);
/// let loss = out.hidden.square().mean() + aux.mul_scalar(0.02);
/// let grads = loss.backward();
/// let gate_grad = moe.router.gate.weight.val().grad(&grads).expect("the router is trained");
/// assert!(gate_grad.abs().sum().into_scalar() > 0.0);
/// ```
#[derive(Module, Debug)]
pub struct SparseMoe<B: Backend> {
    /// The gate: picks `top_k` experts per token and their weights.
    pub router: Router<B>,
    /// The routed SwiGLU experts.
    pub experts: Experts<B>,
    /// The always-on shared experts, if the routing has them.
    pub shared: Option<SharedExperts<B>>,
}

/// Output of [`SparseMoe::forward`].
#[derive(Debug, Clone)]
pub struct MoeOutput<B: Backend, const N: usize> {
    /// Same shape as the input.
    pub hidden: Tensor<B, N>,
    /// What the router decided (logits, chosen experts, loads).
    pub routing: LayerRouting<B>,
}

impl<B: Backend> SparseMoe<B> {
    /// Experts per token.
    pub fn top_k(&self) -> usize {
        self.router.top_k
    }

    /// Routes each token to `top_k` experts from now on (llama.cpp's "experts per token"
    /// override); an error unless `1 <= top_k <= n_experts`.
    pub fn set_top_k(&mut self, top_k: usize) -> Result<()> {
        let n_experts = self.experts.n_experts();
        if !(1..=n_experts).contains(&top_k) {
            return Err(MoeError::ExpertsPerToken { got: top_k, n_experts });
        }
        self.router.routing.validate(n_experts, top_k)?;
        self.router.top_k = top_k;
        Ok(())
    }

    /// Lays the router's, the experts' and the shared experts' float weights out for this
    /// crate's CPU kernels ([`Projection::pack_for_cpu`]), for inference on burn-flex: every
    /// product then reads its weights in place instead of `gemm` copying them into its own
    /// layout on each call (4.5% of this layer's forward at `T = 2048`, `perf`, 2026-11-25, Zen 3).
    /// Does nothing on other backends or under autodiff. Returns how many projections it packed.
    pub fn pack_for_cpu(&mut self) -> usize {
        let mut projections: Vec<&mut Projection<B>> = vec![&mut self.router.gate];
        projections.extend(self.router.noise.as_mut());
        for ffn in &mut self.experts.ffns {
            projections.extend([&mut ffn.gate_up, &mut ffn.down]);
        }
        if let Some(shared) = &mut self.shared {
            projections.extend([&mut shared.ffn.gate_up, &mut shared.ffn.down]);
            projections.extend(shared.gate.as_mut());
        }
        projections.into_iter().map(Projection::pack_for_cpu).filter(|&packed| packed).count()
    }

    /// The routing options of this layer.
    pub fn routing(&self) -> &RoutingConfig {
        &self.router.routing
    }

    /// One auxiliary-loss-free balancing step ([`updated_expert_bias`]): moves each expert's
    /// selection bias by `routing.bias_update_rate` towards balance, given the assignments
    /// `loads[e]` each expert received over a training step. Does nothing without a bias or
    /// with a rate of 0.
    pub fn update_expert_bias(&mut self, loads: &[usize]) {
        let rate = self.router.routing.bias_update_rate;
        let Some(bias) = self.router.bias.take() else { return };
        self.router.bias = Some(if rate == 0.0 {
            bias
        } else {
            bias.map(|b| {
                let old: Vec<f32> = b.to_data().convert::<f32>().to_vec().expect("f32 bias");
                let new = updated_expert_bias(&old, loads, rate);
                Tensor::<B, 1>::from_data(TensorData::new(new, [old.len()]), &b.device()).cast(b.dtype())
            })
        });
    }

    /// # Shapes
    /// - `x`: `[..., D]` (e.g. `[B, S, D]` or `[T, D]`) -> `hidden` of the same shape
    pub fn forward<const N: usize>(&self, x: Tensor<B, N>) -> MoeOutput<B, N> {
        let shape = x.shape();
        let d = shape[N - 1];
        let x = self.jitter(x.reshape([shape.num_elements() / d, d])); // [T, D]
        let route = self.router.forward(x.clone());
        let (routed, experts, dropped, counts) = if self.routing().expert_choice && B::ad_enabled(&x.device()) {
            self.expert_choice(x.clone(), &route)
        } else {
            let (routed, dropped, counts) = self.dispatch(x.clone(), &route);
            (routed, route.experts, dropped, counts)
        };
        let hidden = match &self.shared {
            // Added after the routed sum, as transformers' Qwen2-MoE and DeepSeek-V3 do.
            Some(shared) => routed + shared.forward(x),
            None => routed,
        };
        MoeOutput {
            hidden: hidden.reshape(shape),
            routing: LayerRouting {
                router_logits: route.logits,
                experts,
                dropped,
                counts,
                importance_load: route.importance_load,
            },
        }
    }

    /// Assignments each expert takes at most for `tokens` tokens, if capacity is limited.
    fn capacity(&self, tokens: usize, device: &B::Device) -> Option<usize> {
        let factor = self.routing().capacity_factor(B::ad_enabled(device))?;
        Some(super::expert_capacity(factor, tokens, self.top_k(), self.experts.n_experts()))
    }

    /// `x` times uniform noise from `[1 - j, 1 + j]` while training (an autodiff backend), as
    /// transformers' Mixtral does before its router and experts; `x` itself otherwise.
    ///
    /// # Shapes
    /// - `x`: `[T, D]` -> `[T, D]`
    fn jitter(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let j = self.routing().jitter_noise;
        if j == 0.0 || !B::ad_enabled(&x.device()) {
            return x;
        }
        let noise = Tensor::<B, 2>::random(x.shape(), Distribution::Uniform(1.0 - j, 1.0 + j), &x.device());
        let dtype = x.dtype();
        x * noise.cast(dtype)
    }

    /// Groups tokens by expert, runs each expert once on its rows (the first `capacity` of
    /// them, in token order, when capacity is limited; the rest get zeros), and scatter-adds the
    /// weighted results back to token order. Returns the output, the dropped count and the
    /// assignments per expert.
    ///
    /// # Shapes
    /// - `x`: `[T, D]` -> `[T, D]`
    fn dispatch(&self, x: Tensor<B, 2>, route: &RouterOutput<B>) -> (Tensor<B, 2>, usize, Vec<usize>) {
        let [t, d] = x.dims();
        let [_, k] = route.experts.dims();
        let device = x.device();
        let capacity = self.capacity(t, &device).unwrap_or(usize::MAX);
        let plan = DispatchPlan::new(route.experts.clone(), self.experts.n_experts());
        let x_sorted = x.select(0, plan.token_index.clone()); // [T*K, D]
        let w_sorted =
            route.weights.clone().reshape([t * k]).select(0, plan.assignment_index.clone()).reshape([t * k, 1]);
        let mut dropped = 0;
        let outputs: Vec<_> = plan
            .ranges()
            .filter(|(_, range)| !range.is_empty())
            .flat_map(|(e, range)| {
                let kept = range.len().min(capacity);
                let rows = x_sorted.clone().narrow(0, range.start, kept);
                let out = self.experts.forward_expert(e, rows);
                // The overflow's slots stay in place (zeros), so slots still line up with
                // `token_index` below.
                let overflow = range.len() - kept;
                dropped += overflow;
                let zeros = (overflow > 0).then(|| Tensor::<B, 2>::zeros([overflow, d], &device).cast(out.dtype()));
                std::iter::once(out).chain(zeros)
            })
            .collect();
        // Each token's k contributions are added in ascending expert order, as HF's loop over
        // experts does.
        let hidden = crate::kernels::combine(outputs, w_sorted, plan.token_index.clone(), t);
        (hidden, dropped, plan.counts)
    }

    /// Expert choice (see [`RoutingConfig::expert_choice`]): expert `e` runs on its `C` best
    /// tokens by score and adds them back weighted by the score. Returns the output, each
    /// token's experts as `[T, E]` (`e` where expert `e` took the token, -1 elsewhere), the
    /// tokens no expert took, and `C` per expert.
    ///
    /// # Shapes
    /// - `x`: `[T, D]` -> `[T, D]`
    fn expert_choice(
        &self,
        x: Tensor<B, 2>,
        route: &RouterOutput<B>,
    ) -> (Tensor<B, 2>, Tensor<B, 2, Int>, usize, Vec<usize>) {
        let [t, d] = x.dims();
        let e = self.experts.n_experts();
        let device = x.device();
        let factor = self.routing().capacity_factor.unwrap_or(1.0);
        let c = super::expert_capacity(factor, t, self.top_k(), e).clamp(1, t);
        let by_expert = route.scores.clone().transpose(); // [E, T]

        // The choice is not differentiated; the weights are (through `gather`).
        let picked = by_expert.clone().detach().argsort_descending(1).narrow(1, 0, c); // [E, C]
        let weights = by_expert.gather(1, picked.clone()).reshape([e * c, 1]); // [E*C, 1]
        let token_index = picked.clone().reshape([e * c]);
        let x_sorted = x.select(0, token_index.clone()); // [E*C, D]
        let outputs: Vec<_> = (0..e)
            .map(|expert| self.experts.forward_expert(expert, x_sorted.clone().narrow(0, expert * c, c)))
            .collect();
        let y = Tensor::cat(outputs, 0); // [E*C, D]
        let y = y.clone() * weights.cast(y.dtype());
        let hidden = Tensor::<B, 2>::zeros([t, d], &device).cast(y.dtype()).select_assign(
            0,
            token_index,
            y,
            IndexingUpdateOp::Add,
        );
        // [T, E]: 1 where the expert took the token.
        let taken = Tensor::<B, 2, Int>::zeros([e, t], &device)
            .scatter(1, picked.clone(), picked.ones_like(), IndexingUpdateOp::Add)
            .transpose()
            .greater_elem(0);
        let ids = Tensor::<B, 1, Int>::arange(0..e as i64, &device).reshape([1, e]).expand([t, e]);
        let experts = ids.mask_fill(taken.clone().bool_not(), -1);
        let untouched = taken.int().sum_dim(1).equal_elem(0).int().sum().into_scalar();
        let dropped = burn::tensor::ElementConversion::elem::<i64>(untouched) as usize;
        (hidden, experts, dropped, vec![c; e])
    }

    /// Reference implementation: every expert on every token, masked by the routing weights.
    /// `E/K` times the work of [`Self::forward`]; for tests and benchmarks only. Dropless: it
    /// ignores the capacity factor (and jitter). Shared experts are added as in
    /// [`Self::forward`].
    ///
    /// # Shapes
    /// - `x`: `[T, D]` -> `[T, D]`
    pub fn forward_all_experts(&self, x: Tensor<B, 2>) -> MoeOutput<B, 2> {
        let [t, _] = x.dims();
        let e = self.experts.n_experts();
        let route = self.router.forward(x.clone());
        // Dense [T, E] weights: the k routing weights at their experts, zero elsewhere.
        let dense = Tensor::zeros([t, e], &x.device()).scatter(
            1,
            route.experts.clone(),
            route.weights.clone(),
            IndexingUpdateOp::Add,
        );
        let all = self.experts.forward_all(x.clone()); // [E, T, D]
        let weights = dense.transpose().unsqueeze_dim::<3>(2); // [E, T, 1]
        let hidden = (all * weights).sum_dim(0).squeeze_dim::<2>(0);
        let hidden = match &self.shared {
            Some(shared) => hidden + shared.forward(x),
            None => hidden,
        };
        let counts = DispatchPlan::new(route.experts.clone(), e).counts;
        MoeOutput {
            hidden,
            routing: LayerRouting {
                router_logits: route.logits,
                experts: route.experts,
                dropped: 0,
                counts,
                importance_load: route.importance_load,
            },
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::tensor::Tolerance;

    /// Packed for the CPU kernels, the layer computes what it computed before, at a
    /// decoding length and at expert shares long enough for the prompt kernel.
    #[test]
    fn packing_for_the_cpu_keeps_the_function() {
        type Flex = crate::backend::Flex;
        let device = Default::default();
        let mut moe = SparseMoeConfig::new(24, 40, 4).with_top_k(2).init::<Flex>(&device);
        let xs = [1, 300].map(|t| Tensor::<Flex, 2>::random([t, 24], Distribution::Normal(0.0, 1.0), &device));
        let want = xs.clone().map(|x| moe.forward(x).hidden);
        // The router and each expert's two projections, where the CPU runs the kernels that read
        // the layout.
        let packable = if crate::kernels::isa::has(crate::kernels::isa::Isa::Avx2) { 1 + 2 * 4 } else { 0 };
        assert_eq!(moe.pack_for_cpu(), packable);
        assert_eq!(moe.pack_for_cpu(), 0, "already packed");
        for (x, want) in xs.into_iter().zip(want) {
            moe.forward(x).hidden.into_data().assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-5));
        }
    }
}
