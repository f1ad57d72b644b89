//! Sparse upcycling (Komatsuzaki et al. 2022, "Sparse Upcycling: Training Mixture-of-Experts
//! from Dense Checkpoints"), with Drop-Upcycling's partial re-initialisation (Nakamura et al.
//! 2025): a dense model becomes a MoE whose experts all start as its FFN.

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::config::MixtralConfig;
use crate::draws::Draws;
use crate::error::{MoeError, Result};
use crate::model::{DecoderLayer, FeedForward, Mixtral};
use crate::moe::{Experts, RouterConfig, RoutingConfig, SparseMoe};
use crate::nn::{Projection, SwiGlu};

/// How the new routers start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouterInit {
    /// All-zero gates: every expert scores the same, so at first every token goes to the
    /// first `K` experts (ties go to the lowest index) until the balancing loss moves the gates.
    Zero,
    /// Gaussian gates with this standard deviation: the usual choice, small enough that the
    /// mixture still computes about the dense FFN.
    Normal(f64),
}

impl RouterInit {
    /// A new router's `[D, E]` gate weights.
    pub(super) fn gate<B: Backend>(self, [d, e]: [usize; 2], draws: &mut Draws, device: &B::Device) -> Tensor<B, 2> {
        match self {
            Self::Zero => Tensor::zeros([d, e], device),
            Self::Normal(std) => draws.normal([d, e], 0.0, std, device),
        }
    }
}

/// Settings of [`upcycle`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpcycleConfig {
    /// Experts per layer `E`.
    pub n_experts: usize,
    /// Experts per token `K`.
    pub top_k: usize,
    /// Routing of the new MoE layers.
    pub routing: RoutingConfig,
    /// How the routers start.
    pub router_init: RouterInit,
    /// Gaussian noise added to each expert's copy, as a fraction of each matrix's standard
    /// deviation (0: exact copies), so that the experts differ from the first step.
    pub expert_noise: f64,
    /// Drop-Upcycling: the fraction of each expert's hidden units (`F` axis: a gate and up
    /// column and a down row each) drawn afresh from a normal distribution with the dense
    /// matrix's mean and standard deviation; each expert drops its own random subset. 0 keeps
    /// the copies whole (Nakamura et al. found 0.5 best).
    pub reinit_fraction: f64,
    /// Seed of the router, noise and re-initialisation draws (a generator of the conversion's
    /// own: the backend's is left alone).
    pub seed: u64,
}

impl UpcycleConfig {
    /// `n_experts` exact copies, `top_k` per token, Mixtral's routing, routers drawn with
    /// standard deviation 0.02: the upcycled model computes the dense model's function (the
    /// renormalised weights of identical experts sum to 1 whatever the router says), and the
    /// routers already tell tokens apart.
    pub fn new(n_experts: usize, top_k: usize) -> Self {
        Self {
            n_experts,
            top_k,
            routing: RoutingConfig::default(),
            router_init: RouterInit::Normal(0.02),
            expert_noise: 0.0,
            reinit_fraction: 0.0,
            seed: 0,
        }
    }

    /// The config of the model `upcycle` makes from a dense model of config `dense`.
    pub fn model_config(&self, dense: &MixtralConfig) -> MixtralConfig {
        MixtralConfig {
            n_experts: self.n_experts,
            top_k: self.top_k,
            routing: self.routing.clone(),
            dense: false,
            ..dense.clone()
        }
    }

    fn validate(&self, dense: &MixtralConfig) -> Result<()> {
        if !dense.dense {
            return Err(MoeError::config("upcycle", "the model to upcycle must be dense (MistralForCausalLM)"));
        }
        if !(self.expert_noise.is_finite() && self.expert_noise >= 0.0) {
            return Err(MoeError::config("upcycle.expert_noise", format!("is {}; it must be >= 0", self.expert_noise)));
        }
        if !(self.reinit_fraction.is_finite() && (0.0..=1.0).contains(&self.reinit_fraction)) {
            return Err(MoeError::config(
                "upcycle.reinit_fraction",
                format!("is {}; it must be in [0, 1]", self.reinit_fraction),
            ));
        }
        if let RouterInit::Normal(std) = self.router_init {
            if !(std.is_finite() && std > 0.0) {
                return Err(MoeError::config("upcycle.router_init", format!("std is {std}; it must be > 0")));
            }
        }
        self.model_config(dense).validate()
    }
}

/// The MoE made from `dense`: attention, norms, embeddings and head kept, each layer's FFN
/// copied into `n_experts` experts (with the noise and re-initialisation `config` asks for) and
/// a new router. With exact copies, every token's renormalised weights sum to 1 over `K`
/// identical experts, so the upcycled model computes the dense model's logits (to rounding)
/// whatever the routers say; with raw (not renormalised) weights it would not, and with shared
/// experts the shared block starts at zero so that it holds too.
///
/// Every parameter of the result is a new one (its own id): the experts do not share the
/// dense FFN's, so an optimizer updates them apart.
pub fn upcycle<B: Backend>(dense: Mixtral<B>, config: &UpcycleConfig) -> Result<Mixtral<B>> {
    config.validate(&dense.config)?;
    let model_config = config.model_config(&dense.config);
    let device = dense.embed_tokens.weight.lazy_device();
    let mut draws = Draws::new(config.seed);
    let Mixtral { embed_tokens, layers, norm, lm_head, rope, .. } = dense;
    let layers = layers
        .into_iter()
        .map(|layer| {
            let DecoderLayer {
                input_layernorm,
                self_attn,
                post_attention_layernorm,
                feed_forward,
                residual_multiplier,
            } = layer;
            let FeedForward::Dense(mlp) = feed_forward else { unreachable!("validated: the model is dense") };
            let moe = sparse_block(&mlp, &model_config, config, &mut draws, &device);
            DecoderLayer {
                input_layernorm,
                self_attn,
                post_attention_layernorm,
                feed_forward: FeedForward::Sparse(moe),
                residual_multiplier,
            }
        })
        .collect();
    Ok(Mixtral { embed_tokens, layers, norm, lm_head, rope, config: model_config })
}

/// One layer's MoE block from its dense FFN.
fn sparse_block<B: Backend>(
    mlp: &SwiGlu<B>,
    model: &MixtralConfig,
    config: &UpcycleConfig,
    draws: &mut Draws,
    device: &B::Device,
) -> SparseMoe<B> {
    let (d, e) = (model.d_model, model.n_experts);
    let mut router = RouterConfig::new(d, e, model.top_k).with_routing(model.routing.clone()).init::<B>(device);
    router.gate.weight = Param::from_tensor(config.router_init.gate([d, e], draws, device));
    // `val()` materialises a lazy weight once, so every copy starts from the same values.
    let (gate_up, down) = (mlp.gate_up.weight.val(), mlp.down.weight.val());
    let ffns = (0..e).map(|_| expert_copy(gate_up.clone(), down.clone(), config, draws)).collect();
    let shared = model.routing.shared_width(model.d_ff).map(|width| {
        let mut shared = crate::moe::SharedExpertsConfig::new(d, width)
            .with_gated(model.routing.shared_expert_gate)
            .init::<B>(device);
        // Zero output at first, so the upcycled model still computes the dense one.
        let zero = shared.ffn.down.weight.val().zeros_like();
        shared.ffn.down.weight = Param::from_tensor(zero.detach());
        shared
    });
    SparseMoe { router, experts: Experts { ffns }, shared }
}

/// A fresh copy of an FFN (`gate_up` `[D, 2F]`, `down` `[F, D]`), noised and partly
/// re-initialised as `config` says.
fn expert_copy<B: Backend>(
    gate_up: Tensor<B, 2>,
    down: Tensor<B, 2>,
    config: &UpcycleConfig,
    draws: &mut Draws,
) -> SwiGlu<B> {
    let [d, two_f] = gate_up.dims();
    let f = two_f / 2;
    let (mut gate_up, mut down) = (gate_up, down);
    if config.reinit_fraction > 0.0 {
        let device = down.device();
        let dropped = ((config.reinit_fraction * f as f64).round() as usize).min(f);
        let units = Tensor::<B, 1, Bool>::from_data(TensorData::new(draws.subset(f, dropped), [f]), &device); // [F]
        let mut fresh = |w: Tensor<B, 2>| {
            let (mean, std) = moments(&w);
            draws.normal::<B>(w.dims(), mean, std, &device).cast(w.dtype())
        };
        let (g, u) = (gate_up.clone().narrow(1, 0, f), gate_up.narrow(1, f, f));
        let columns = units.clone().reshape([1, f]).expand([d, f]);
        let g = g.clone().mask_where(columns.clone(), fresh(g));
        let u = u.clone().mask_where(columns, fresh(u));
        gate_up = Tensor::cat(vec![g, u], 1);
        let rows = units.reshape([f, 1]).expand([f, d]);
        down = down.clone().mask_where(rows, fresh(down));
    }
    if config.expert_noise > 0.0 {
        let mut noised = |w: Tensor<B, 2>| {
            let (_, std) = moments(&w);
            let noise = draws.normal::<B>(w.dims(), 0.0, config.expert_noise * std, &w.device());
            w.clone() + noise.cast(w.dtype())
        };
        gate_up = noised(gate_up);
        down = noised(down);
    }
    // Detached: on an autodiff backend the noised copy is a computed tensor, and a parameter
    // must be a leaf of its own.
    let projection = |w: Tensor<B, 2>| Projection {
        weight: Param::from_tensor(w.detach()),
        bias: None,
        quantized: None,
        packed: None,
    };
    SwiGlu { gate_up: projection(gate_up), down: projection(down) }
}

/// Mean and (population) standard deviation of a matrix's entries, read to the host.
fn moments<B: Backend>(w: &Tensor<B, 2>) -> (f64, f64) {
    let mean = w.clone().mean().into_scalar();
    let mean = burn::tensor::ElementConversion::elem::<f64>(mean);
    let var = (w.clone() - mean).square().mean().into_scalar();
    (mean, burn::tensor::ElementConversion::elem::<f64>(var).sqrt())
}
