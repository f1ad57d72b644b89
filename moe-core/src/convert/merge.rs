//! Branch-Train-MiX's merge (Sukhbaatar et al. 2024, "Branch-Train-MiX: Mixing Expert LLMs
//! into a Mixture-of-Experts LLM"): dense models branched from one seed and trained apart
//! become one MoE whose experts are their FFNs.

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::RouterInit;
use crate::config::MixtralConfig;
use crate::draws::Draws;
use crate::error::{MoeError, Result};
use crate::model::{FeedForward, Mixtral};
use crate::model::{ParamId, ParamMut, ParamRef};
use crate::moe::{Experts, RouterConfig, RoutingConfig, SparseMoe};
use crate::nn::{Projection, SwiGlu};

/// Settings of [`merge_branches`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeConfig {
    /// Experts per token `K`.
    pub top_k: usize,
    /// Routing of the merged layers.
    pub routing: RoutingConfig,
    /// How the new routers start.
    pub router_init: RouterInit,
    /// Seed of the router draws (a generator of the merge's own: the backend's is left alone).
    pub seed: u64,
}

impl MergeConfig {
    /// `top_k` experts per token, Mixtral's routing, routers drawn with standard deviation 0.02.
    pub fn new(top_k: usize) -> Self {
        Self { top_k, routing: RoutingConfig::default(), router_init: RouterInit::Normal(0.02), seed: 0 }
    }
}

/// The MoE merged from dense `branches` of one shape: expert `i` of each layer is branch `i`'s
/// FFN; the embeddings, attention, norms and head are the element-wise mean of the branches';
/// the routers are new. Merging `N` copies of one model gives the model [`super::upcycle`]
/// makes of it with `N` experts (exact copies).
pub fn merge_branches<B: Backend>(branches: Vec<Mixtral<B>>, config: &MergeConfig) -> Result<Mixtral<B>> {
    let Some(first) = branches.first() else {
        return Err(MoeError::config("merge", "needs at least one branch"));
    };
    let dense = first.config.clone();
    if !dense.dense {
        return Err(MoeError::config("merge", "the branches must be dense models (MistralForCausalLM)"));
    }
    if let Some(i) = branches.iter().position(|b| b.config.shape_differs(&dense)) {
        return Err(MoeError::config("merge", format!("branch {i} has another shape than branch 0")));
    }
    let n = branches.len();
    let model_config = MixtralConfig {
        n_experts: n,
        top_k: config.top_k,
        routing: config.routing.clone(),
        dense: false,
        ..dense.clone()
    };
    model_config.validate()?;
    let device = first.embed_tokens.weight.lazy_device();
    let mut draws = Draws::new(config.seed);

    // The shared parameters: the mean over the branches, written into a copy of branch 0.
    let shared: Vec<ParamId> = ParamId::all(&dense).into_iter().filter(|p| !matches!(p, ParamId::Mlp(..))).collect();
    let mut means = Vec::with_capacity(shared.len());
    for &param in &shared {
        let mean = match first.param(param).expect("ParamId::all lists the model's own parameters") {
            ParamRef::Rank1(_) => {
                let sum = branches.iter().map(|b| rank1(b, param)).reduce(|a, b| a + b).expect("n >= 1");
                MeanTensor::Rank1(sum.div_scalar(n as f64))
            }
            ParamRef::Rank2(_) => {
                let sum = branches.iter().map(|b| rank2(b, param)).reduce(|a, b| a + b).expect("n >= 1");
                MeanTensor::Rank2(sum.div_scalar(n as f64))
            }
        };
        means.push(mean);
    }
    // Each branch's FFNs, as fresh parameters.
    let ffns: Vec<Vec<SwiGlu<B>>> = branches
        .iter()
        .map(|b| {
            b.layers
                .iter()
                .map(|layer| {
                    let mlp = layer.feed_forward.mlp().expect("validated: dense");
                    let fresh = |w: Tensor<B, 2>| Projection {
                        weight: Param::from_tensor(w.detach()),
                        bias: None,
                        quantized: None,
                        packed: None,
                    };
                    SwiGlu { gate_up: fresh(mlp.gate_up.weight.val()), down: fresh(mlp.down.weight.val()) }
                })
                .collect()
        })
        .collect();
    let mut model = branches.into_iter().next().expect("n >= 1");
    for (&param, mean) in shared.iter().zip(means) {
        match (model.param_mut(param).expect("listed"), mean) {
            // Detached: on an autodiff backend the mean is a computed tensor; a parameter is a leaf.
            (ParamMut::Rank1(p), MeanTensor::Rank1(v)) => *p = Param::from_tensor(v.detach()),
            (ParamMut::Rank2(p), MeanTensor::Rank2(v)) => *p = Param::from_tensor(v.detach()),
            _ => unreachable!("the same parameter has the same rank in every branch"),
        }
        // A quantized weight's blocks would no longer be its value.
        if let Some(projection) = model.projection_mut(param) {
            projection.quantized = None;
        }
    }
    let (d, e) = (model_config.d_model, n);
    for (l, layer) in model.layers.iter_mut().enumerate() {
        let mut router =
            RouterConfig::new(d, e, model_config.top_k).with_routing(model_config.routing.clone()).init::<B>(&device);
        router.gate.weight = Param::from_tensor(config.router_init.gate([d, e], &mut draws, &device));
        let experts = Experts { ffns: ffns.iter().map(|branch| branch[l].clone()).collect() };
        let shared = model_config.routing.shared_width(model_config.d_ff).map(|width| {
            let mut s = crate::moe::SharedExpertsConfig::new(d, width)
                .with_gated(model_config.routing.shared_expert_gate)
                .init::<B>(&device);
            s.ffn.down.weight = Param::from_tensor(s.ffn.down.weight.val().zeros_like().detach());
            s
        });
        layer.feed_forward = FeedForward::Sparse(SparseMoe { router, experts, shared });
    }
    model.config = model_config;
    Ok(model)
}

enum MeanTensor<B: Backend> {
    Rank1(Tensor<B, 1>),
    Rank2(Tensor<B, 2>),
}

fn rank1<B: Backend>(model: &Mixtral<B>, param: ParamId) -> Tensor<B, 1> {
    match model.param(param) {
        Some(ParamRef::Rank1(p)) => p.val(),
        _ => unreachable!("validated: every branch has the shape of branch 0"),
    }
}

fn rank2<B: Backend>(model: &Mixtral<B>, param: ParamId) -> Tensor<B, 2> {
    match model.param(param) {
        Some(ParamRef::Rank2(p)) => p.val(),
        _ => unreachable!("validated: every branch has the shape of branch 0"),
    }
}
