//! The `routing` section of the model config: how the router turns gate logits into each
//! token's experts and mixing weights. Mixtral's behaviour is the default, so a config without
//! the section (every checkpoint written before it existed) routes exactly as before.

use serde::{Deserialize, Serialize};

use crate::error::{MoeError, Result};

/// Routing options of every MoE layer of a model (`MixtralConfig::routing`).
///
/// In a config file: `"routing": {"normalize_top_k": false, "jitter_noise": 0.01}`; missing
/// fields take Mixtral's values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// Rescale the chosen experts' softmax probabilities to sum to 1 per token (Mixtral, and
    /// Qwen-MoE's `norm_topk_prob = true`); `false` keeps the raw probabilities, so a token whose
    /// router is unsure gets a smaller update from its experts (Switch, Qwen2-MoE's default).
    pub normalize_top_k: bool,
    /// Router jitter (Switch Transformer; HF Mixtral's `router_jitter_noise`): while training
    /// (on an autodiff backend), each MoE layer's input is multiplied element-wise by noise drawn
    /// uniformly from `[1 - j, 1 + j]` before the router and the experts see it, as
    /// transformers does. `0` turns it off; inference never jitters.
    pub jitter_noise: f64,
    /// Expert capacity while training (Switch Transformer, GShard): each expert takes at most
    /// `ceil(factor · T · K / E)` of a batch's `T · K` assignments, first come (in token order)
    /// first served; the rest are dropped: the token gets nothing from that expert and passes
    /// through the residual connection alone. `None` (the default, as Mixtral): dropless.
    pub capacity_factor: Option<f64>,
    /// Expert capacity in inference (no autodiff), often larger than the training one (Switch:
    /// 1.25 to train, 2.0 to evaluate). `None`: the same as `capacity_factor`.
    pub eval_capacity_factor: Option<f64>,
}

impl Default for RoutingConfig {
    /// Mixtral's routing: renormalised top-k, no jitter, no capacity limit.
    fn default() -> Self {
        Self { normalize_top_k: true, jitter_noise: 0.0, capacity_factor: None, eval_capacity_factor: None }
    }
}

impl RoutingConfig {
    /// Checks the values a layer can run with.
    pub fn validate(&self) -> Result<()> {
        if !(self.jitter_noise.is_finite() && (0.0..1.0).contains(&self.jitter_noise)) {
            return Err(MoeError::config(
                "routing.jitter_noise",
                format!("is {}; it must be in [0, 1) (noise is drawn from [1 - j, 1 + j])", self.jitter_noise),
            ));
        }
        for (field, factor) in [
            ("routing.capacity_factor", self.capacity_factor),
            ("routing.eval_capacity_factor", self.eval_capacity_factor),
        ] {
            if let Some(f) = factor.filter(|f| !(f.is_finite() && *f > 0.0)) {
                return Err(MoeError::config(field, format!("is {f}; a capacity factor must be > 0")));
            }
        }
        Ok(())
    }

    /// The capacity factor in force: `eval_capacity_factor` (falling back to `capacity_factor`)
    /// in inference, `capacity_factor` while training.
    pub fn capacity_factor(&self, training: bool) -> Option<f64> {
        match training {
            true => self.capacity_factor,
            false => self.eval_capacity_factor.or(self.capacity_factor),
        }
    }
}

/// Assignments each expert takes at most: `ceil(factor · T · K / E)`.
pub fn expert_capacity(factor: f64, tokens: usize, top_k: usize, n_experts: usize) -> usize {
    (factor * (tokens * top_k) as f64 / n_experts as f64).ceil() as usize
}
