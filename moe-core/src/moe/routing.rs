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
}

impl Default for RoutingConfig {
    /// Mixtral's routing: renormalised top-k, no jitter.
    fn default() -> Self {
        Self { normalize_top_k: true, jitter_noise: 0.0 }
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
        Ok(())
    }
}
