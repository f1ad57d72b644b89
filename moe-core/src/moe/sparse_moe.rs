use burn::config::Config;
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, IndexingUpdateOp, Int, Tensor};

use crate::error::{MoeError, Result};

use super::{DispatchPlan, Experts, ExpertsConfig, Router, RouterConfig, RouterOutput, RoutingConfig};

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
    /// Rescale the chosen experts' probabilities to sum to 1 ([`RoutingConfig::normalize_top_k`]).
    #[config(default = true)]
    pub normalize_top_k: bool,
    /// Router jitter while training ([`RoutingConfig::jitter_noise`]); 0 = none.
    #[config(default = 0.0)]
    pub jitter_noise: f64,
    /// Expert capacity factor while training ([`RoutingConfig::capacity_factor`]); `None` =
    /// dropless.
    pub capacity_factor: Option<f64>,
    /// Expert capacity factor in inference ([`RoutingConfig::eval_capacity_factor`]).
    pub eval_capacity_factor: Option<f64>,
}

impl SparseMoeConfig {
    /// A layer with freshly initialised router and experts.
    ///
    /// The routing options of a model config's `routing` section.
    pub fn with_routing(self, routing: &RoutingConfig) -> Self {
        self.with_normalize_top_k(routing.normalize_top_k)
            .with_jitter_noise(routing.jitter_noise)
            .with_capacity_factor(routing.capacity_factor)
            .with_eval_capacity_factor(routing.eval_capacity_factor)
    }

    /// # Panics
    /// If `top_k` is not in `1..=n_experts`, `jitter_noise` not in `[0, 1)` or a capacity factor
    /// not above 0.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SparseMoe<B> {
        assert!(
            (1..=self.n_experts).contains(&self.top_k),
            "top_k ({}) must be in 1..=n_experts ({})",
            self.top_k,
            self.n_experts
        );
        assert!((0.0..1.0).contains(&self.jitter_noise), "jitter_noise ({}) must be in [0, 1)", self.jitter_noise);
        for factor in [self.capacity_factor, self.eval_capacity_factor].into_iter().flatten() {
            assert!(factor.is_finite() && factor > 0.0, "capacity factors must be > 0 (got {factor})");
        }
        SparseMoe {
            router: RouterConfig::new(self.d_model, self.n_experts, self.top_k)
                .with_normalize_top_k(self.normalize_top_k)
                .init(device),
            experts: ExpertsConfig::new(self.n_experts, self.d_model, self.d_ff).init(device),
            jitter_noise: self.jitter_noise,
            capacity: [self.capacity_factor, self.eval_capacity_factor.or(self.capacity_factor)],
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
/// assert_eq!(out.router_logits.dims(), [10, 4]); // [B*S, E]
/// assert_eq!(out.experts.dims(), [10, 2]); // chosen experts, [B*S, K]
///
/// let aux = load_balancing_loss(&[out.router_logits.clone()], 2, None);
/// let loss = out.hidden.square().mean() + aux.mul_scalar(0.02);
/// let grads = loss.backward();
/// let gate_grad = moe.router.gate.weight.val().grad(&grads).expect("the router is trained");
/// assert!(gate_grad.abs().sum().into_scalar() > 0.0);
/// ```
#[derive(Module, Debug)]
pub struct SparseMoe<B: Backend> {
    /// The gate: picks `top_k` experts per token and their weights.
    pub router: Router<B>,
    /// The SwiGLU experts.
    pub experts: Experts<B>,
    /// Router jitter while training: the input is multiplied by noise from `[1 - j, 1 + j]`.
    pub jitter_noise: f64,
    /// Capacity factors `[training, inference]`; `None` = dropless.
    pub capacity: [Option<f64>; 2],
}

/// Output of [`SparseMoe::forward`].
#[derive(Debug, Clone)]
pub struct MoeOutput<B: Backend, const N: usize> {
    /// Same shape as the input.
    pub hidden: Tensor<B, N>,
    /// Raw router logits in f32, `[T, E]`, for the load-balancing and z losses.
    pub router_logits: Tensor<B, 2>,
    /// Chosen experts per token, `[T, K]`: for load statistics.
    pub experts: Tensor<B, 2, Int>,
    /// Assignments (of `T · K`) dropped because their expert was full; 0 without a capacity.
    pub dropped: usize,
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
        self.router.top_k = top_k;
        Ok(())
    }

    /// # Shapes
    /// - `x`: `[..., D]` (e.g. `[B, S, D]` or `[T, D]`) -> `hidden` of the same shape
    pub fn forward<const N: usize>(&self, x: Tensor<B, N>) -> MoeOutput<B, N> {
        let shape = x.shape();
        let d = shape[N - 1];
        let x = self.jitter(x.reshape([shape.num_elements() / d, d])); // [T, D]
        let route = self.router.forward(x.clone());
        let (hidden, dropped) = self.dispatch(x, &route);
        MoeOutput { hidden: hidden.reshape(shape), router_logits: route.logits, experts: route.experts, dropped }
    }

    /// Assignments each expert takes at most for `tokens` tokens, if capacity is limited.
    fn capacity(&self, tokens: usize, device: &B::Device) -> Option<usize> {
        let factor = self.capacity[usize::from(!B::ad_enabled(device))]?;
        Some(super::expert_capacity(factor, tokens, self.top_k(), self.experts.n_experts()))
    }

    /// `x` times uniform noise from `[1 - j, 1 + j]` while training (an autodiff backend), as
    /// transformers' Mixtral does before its router and experts; `x` itself otherwise.
    ///
    /// # Shapes
    /// - `x`: `[T, D]` -> `[T, D]`
    fn jitter(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let j = self.jitter_noise;
        if j == 0.0 || !B::ad_enabled(&x.device()) {
            return x;
        }
        let noise = Tensor::<B, 2>::random(x.shape(), Distribution::Uniform(1.0 - j, 1.0 + j), &x.device());
        let dtype = x.dtype();
        x * noise.cast(dtype)
    }

    /// Groups tokens by expert, runs each expert once on its rows (the first `capacity` of
    /// them, in token order, when capacity is limited; the rest get zeros), and scatter-adds the
    /// weighted results back to token order. Returns the output and the dropped count.
    ///
    /// # Shapes
    /// - `x`: `[T, D]` -> `[T, D]`
    fn dispatch(&self, x: Tensor<B, 2>, route: &RouterOutput<B>) -> (Tensor<B, 2>, usize) {
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
        let y_sorted = Tensor::cat(outputs, 0) * w_sorted; // [T*K, D]
                                                           // Slots are in expert order, so each token's k contributions are added in ascending
                                                           // expert order, as HF's loop over experts does.
        let hidden = Tensor::zeros([t, d], &y_sorted.device()).select_assign(
            0,
            plan.token_index,
            y_sorted,
            IndexingUpdateOp::Add,
        );
        (hidden, dropped)
    }

    /// Reference implementation: every expert on every token, masked by the routing weights.
    /// `E/K` times the work of [`Self::forward`]; for tests and benchmarks only. Dropless: it
    /// ignores the capacity factor (and jitter).
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
        let all = self.experts.forward_all(x); // [E, T, D]
        let weights = dense.transpose().unsqueeze_dim::<3>(2); // [E, T, 1]
        let hidden = (all * weights).sum_dim(0).squeeze_dim::<2>(0);
        MoeOutput { hidden, router_logits: route.logits, experts: route.experts, dropped: 0 }
    }
}
