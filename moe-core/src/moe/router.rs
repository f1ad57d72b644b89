use crate::nn::functional::{positive_reciprocal, softmax};
use crate::nn::Projection;
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::LinearConfig;
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, FloatDType, Int, Tensor};

use super::noisy_gating::{importance_load, noise_std, ImportanceLoad};
use super::{top_k_indices, RoutingConfig, Scoring};

/// Configuration of [`Router`].
#[derive(Config, Debug)]
pub struct RouterConfig {
    /// Model width `D`.
    pub d_model: usize,
    /// Experts `E`.
    pub n_experts: usize,
    /// Experts chosen per token.
    pub top_k: usize,
    /// Scoring, renormalisation, selection bias and groups (see [`RoutingConfig`]).
    #[config(default = "RoutingConfig::default()")]
    pub routing: RoutingConfig,
}

impl RouterConfig {
    /// A router with a freshly initialised gate (and a zero selection bias, or zero noise
    /// weights, if the routing has them).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Router<B> {
        let zeros = || Tensor::zeros([self.d_model, self.n_experts], device);
        Router {
            gate: LinearConfig::new(self.d_model, self.n_experts).with_bias(false).init(device).into(),
            // Zero, as in the paper: every expert starts with the same noise, softplus(0).
            noise: self.routing.noisy_gating.then(|| Projection {
                weight: Param::from_tensor(zeros()),
                bias: None,
                quantized: None,
                packed: None,
            }),
            bias: self
                .routing
                .has_expert_bias()
                .then(|| Param::from_tensor(Tensor::zeros([self.n_experts], device)).set_require_grad(false)),
            top_k: self.top_k,
            routing: self.routing.clone(),
        }
    }
}

/// Token-choice top-k router: `score(gate(x))` -> (bias, groups) -> top-k -> weights.
///
/// With the default routing this is Mixtral's: `softmax(gate(x))`, top-k, renormalised. The
/// options of [`RoutingConfig`] give Switch (raw top-k probabilities), Qwen-MoE and DeepSeek-V3
/// (sigmoid scores, a selection bias, group-limited choice, scaled weights).
#[derive(Module, Debug)]
pub struct Router<B: Backend> {
    /// `[D, E]`; the checkpoint's `block_sparse_moe.gate`.
    pub gate: Projection<B>,
    /// `[E]` selection bias (checkpoint `block_sparse_moe.gate.e_score_correction_bias`), if
    /// the routing has one: added to the scores to choose experts, not to weight them.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// `[D, E]` noise weights of noisy gating (checkpoint `block_sparse_moe.gate_noise`), if the
    /// routing has it: the noise's standard deviation is `softplus(x · W) + 0.01`.
    pub noise: Option<Projection<B>>,
    /// Experts per token `K` (change it with [`SparseMoe::set_top_k`](super::SparseMoe::set_top_k),
    /// which validates it).
    pub top_k: usize,
    /// The routing options the router was built with.
    #[module(skip)]
    pub routing: RoutingConfig,
}

/// What the router decided for each token.
#[derive(Debug, Clone)]
pub struct RouterOutput<B: Backend> {
    /// Raw gate logits in f32, `[T, E]`: what the auxiliary losses are computed from.
    pub logits: Tensor<B, 2>,
    /// Expert scores in f32 (softmax or sigmoid of the logits), `[T, E]`, differentiable.
    pub scores: Tensor<B, 2>,
    /// Chosen experts, best first, `[T, K]`.
    pub experts: Tensor<B, 2, Int>,
    /// Their mixing weights (sum to the scaling factor per token when renormalised), in the
    /// activation dtype, `[T, K]`.
    pub weights: Tensor<B, 2>,
    /// Importance and load of the batch, under noisy gating (in training and inference, so
    /// validation can report the same loss).
    pub importance_load: Option<ImportanceLoad<B>>,
}

impl<B: Backend> Router<B> {
    /// Routes each token. Under noisy gating, on an autodiff backend (training), the gate
    /// logits get fresh Gaussian noise; see [`Self::forward_with_noise`].
    ///
    /// # Shapes
    /// - `x`: `[T, D]`
    pub fn forward(&self, x: Tensor<B, 2>) -> RouterOutput<B> {
        let sample = (self.noise.is_some() && B::ad_enabled(&x.device())).then(|| {
            let [t, _] = x.dims();
            Tensor::random([t, self.gate.dims()[1]], Distribution::Normal(0.0, 1.0), &x.device())
        });
        self.forward_with_noise(x, sample)
    }

    /// [`Self::forward`] with noisy gating's standard-normal draws given (`None`: no noise, as in
    /// inference); ignored without noisy gating. For tests that need the same noise twice.
    ///
    /// # Shapes
    /// - `x`: `[T, D]`
    /// - `sample`: `[T, E]`
    pub fn forward_with_noise(&self, x: Tensor<B, 2>, sample: Option<Tensor<B, 2>>) -> RouterOutput<B> {
        let dtype = x.dtype();
        // Scores are taken in f32 as in HF: in bf16 the top-k order and the renormalised
        // weights would change.
        let logits = self.gate.forward(x.clone()).cast(FloatDType::F32); // [T, E]
        let std = self.noise.as_ref().map(|noise| noise_std(noise.forward(x))); // [T, E]
        let noisy = match (&std, sample) {
            (Some(std), Some(sample)) => logits.clone() + sample.cast(FloatDType::F32) * std.clone(),
            _ => logits.clone(),
        };
        let scores = match self.routing.scoring {
            Scoring::Softmax => softmax(noisy.clone(), 1),
            Scoring::Sigmoid => sigmoid(noisy.clone()),
        };
        let experts = top_k_indices(self.choice_scores(scores.clone()), self.top_k); // [T, K]

        // The gradient reaches the gate through these weights (the choice itself is discrete).
        let weights = scores.clone().gather(1, experts.clone()); // [T, K]

        // Renormalised over the chosen k, the output is a convex combination of k experts
        // (Mixtral's choice; Switch-style routers keep the raw probabilities). Expert choice
        // weights by the raw scores, in training and in its token-choice inference.
        let weights = match self.routing.normalize_top_k && !self.routing.expert_choice {
            true => weights.clone() * positive_reciprocal(weights.sum_dim(1)),
            false => weights,
        };
        let scale = self.routing.scaling_factor;
        let weights = if scale == 1.0 { weights } else { weights.mul_scalar(scale) };
        let importance_load =
            std.map(|std| importance_load(logits.clone(), noisy, std, experts.clone(), weights.clone()));
        RouterOutput { logits, scores, experts, weights: weights.cast(dtype), importance_load }
    }

    /// The scores experts are chosen by: `scores` plus the selection bias, with the experts
    /// outside each token's best groups ruled out. Detached: choosing is not differentiated.
    ///
    /// # Shapes
    /// - `scores`: `[T, E]` -> `[T, E]`
    fn choice_scores(&self, scores: Tensor<B, 2>) -> Tensor<B, 2> {
        let scores = scores.detach();
        let scores = match &self.bias {
            Some(bias) => scores + bias.val().detach().cast(FloatDType::F32).unsqueeze_dim::<2>(0),
            None => scores,
        };
        let groups = self.routing.n_groups;
        if groups <= 1 || self.routing.top_k_groups >= groups {
            return scores;
        }
        let [t, e] = scores.dims();
        let per_group = e / groups;
        // A group's score is the sum of its two best experts' (DeepSeek-V3).
        let grouped = scores.clone().reshape([t * groups, per_group]);
        let best = top_k_indices(grouped.clone(), per_group.min(2));
        let group_scores = grouped.gather(1, best).sum_dim(1).reshape([t, groups]); // [T, G]
        let kept = top_k_indices(group_scores, self.routing.top_k_groups); // [T, top_k_groups]
        let kg = self.routing.top_k_groups;
        let group_ids = Tensor::<B, 1, Int>::arange(0..groups as i64, &scores.device())
            .reshape([1, 1, groups])
            .expand([t, kg, groups]);
        let hits = kept.unsqueeze_dim::<3>(2).expand([t, kg, groups]).equal(group_ids).int().sum_dim(1); // [T, 1, G]
        let ruled_out = hits.reshape([t, groups, 1]).expand([t, groups, per_group]).reshape([t, e]).equal_elem(0);
        // -inf, not transformers' 0: with a negative bias a ruled-out expert's 0 could beat a
        // kept one's score.
        scores.mask_fill(ruled_out, f32::NEG_INFINITY)
    }
}
