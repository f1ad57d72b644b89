//! Which published model family a config describes: its names (HF `model_type`, the
//! checkpoint's key names, the model class) and its defaults. The families differ in options of
//! the one model ([`super::MixtralConfig`]'s attention options, dense layers and multipliers),
//! not in code paths.

use serde::{Deserialize, Serialize};

use super::{MixtralConfig, Multipliers};
use crate::moe::RoutingConfig;
use crate::nn::{AttentionOptions, QkNorm};

/// A published family of sparse (or dense) decoder models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Mixtral (`mixtral`), and with [`super::MixtralConfig::dense`] the dense Mistral and Llama.
    #[default]
    Mixtral,
    /// Qwen1.5-MoE and Qwen2-MoE (`qwen2_moe`): q/k/v biases, a gated shared expert, dense
    /// layers between sparse ones.
    Qwen2Moe,
    /// Qwen3-MoE (`qwen3_moe`): RMSNorm on each head of q and k.
    Qwen3Moe,
    /// OLMoE (`olmoe`): RMSNorm over the whole q and k projections, optional `clip_qkv`.
    Olmoe,
    /// Granite-MoE (`granitemoe`): embedding, attention, residual and logit multipliers,
    /// experts stored stacked.
    GraniteMoe,
}

impl Family {
    /// Every family, in the order their names are listed in errors.
    pub const ALL: [Family; 5] = [Self::Mixtral, Self::Qwen2Moe, Self::Qwen3Moe, Self::Olmoe, Self::GraniteMoe];

    /// The family of an HF `model_type`, and whether that type is the family's dense sibling
    /// (`mistral`, `llama`).
    pub fn from_model_type(model_type: &str) -> Option<(Self, bool)> {
        match model_type {
            "mistral" | "llama" => Some((Self::Mixtral, true)),
            _ => Self::ALL.into_iter().find(|f| f.model_type() == model_type).map(|f| (f, false)),
        }
    }

    /// The family of an HF model class (`architectures` in `config.json`), and whether it is
    /// a dense sibling.
    pub fn from_architecture(class: &str) -> Option<(Self, bool)> {
        match class {
            "MistralForCausalLM" | "LlamaForCausalLM" => Some((Self::Mixtral, true)),
            _ => Self::ALL.into_iter().find(|f| f.architecture() == class).map(|f| (f, false)),
        }
    }

    /// HF `model_type` of the family's sparse models.
    pub fn model_type(self) -> &'static str {
        match self {
            Self::Mixtral => "mixtral",
            Self::Qwen2Moe => "qwen2_moe",
            Self::Qwen3Moe => "qwen3_moe",
            Self::Olmoe => "olmoe",
            Self::GraniteMoe => "granitemoe",
        }
    }

    /// HF model class of the family's sparse models.
    pub fn architecture(self) -> &'static str {
        match self {
            Self::Mixtral => "MixtralForCausalLM",
            Self::Qwen2Moe => "Qwen2MoeForCausalLM",
            Self::Qwen3Moe => "Qwen3MoeForCausalLM",
            Self::Olmoe => "OlmoeForCausalLM",
            Self::GraniteMoe => "GraniteMoeForCausalLM",
        }
    }

    /// The query/key norm the family's attention has (its config has no key for it).
    pub fn qk_norm(self) -> QkNorm {
        match self {
            Self::Qwen3Moe => QkNorm::PerHead,
            Self::Olmoe => QkNorm::Whole,
            _ => QkNorm::None,
        }
    }

    /// Qwen-MoE: `moe_intermediate_size` for the experts, `intermediate_size` and
    /// `mlp_only_layers` / `decoder_sparse_step` for dense layers, `use_sliding_window`.
    pub fn is_qwen(self) -> bool {
        matches!(self, Self::Qwen2Moe | Self::Qwen3Moe)
    }

    /// The `model_type`s a config may name, for errors.
    pub fn model_types() -> String {
        let mut names: Vec<_> = Self::ALL.iter().map(|f| format!("{:?}", f.model_type())).collect();
        names.extend(["\"mistral\"".into(), "\"llama\"".into()]);
        names.join(", ")
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.model_type())
    }
}

impl MixtralConfig {
    /// This shape as a model of `family`, with the options its published models use: Qwen2-MoE's
    /// q/k/v biases, raw top-k weights and a gated shared expert `top_k` experts wide (as
    /// Qwen1.5-MoE-A2.7B's 5632 beside 4 of 1408); Qwen3-MoE's per-head q/k norms; OLMoE's whole
    /// q/k norms and raw top-k weights; Granite-MoE's multipliers (granite-3.0-1b-a400m's:
    /// embeddings x12, residual branches x0.22, scores x`1/Dh`, logits /6) and tied embeddings.
    /// What `moe-train --arch` trains; Mixtral gives the shape back as it is. The routing options
    /// it sets replace this config's.
    pub fn with_family(&self, family: Family) -> Self {
        let base = Self {
            family,
            attention: AttentionOptions::default(),
            multipliers: Multipliers::default(),
            dense_layers: Vec::new(),
            dense_d_ff: None,
            ..self.clone()
        };
        match family {
            Family::Mixtral => Self { family, ..self.clone() },
            Family::Qwen2Moe => Self {
                attention: AttentionOptions { qkv_bias: true, ..Default::default() },
                routing: RoutingConfig {
                    normalize_top_k: false,
                    n_shared_experts: 1,
                    shared_d_ff: Some(self.top_k * self.d_ff),
                    shared_expert_gate: true,
                    ..Default::default()
                },
                ..base
            },
            Family::Qwen3Moe => {
                Self { attention: AttentionOptions { qk_norm: family.qk_norm(), ..Default::default() }, ..base }
            }
            Family::Olmoe => Self {
                attention: AttentionOptions { qk_norm: family.qk_norm(), ..Default::default() },
                routing: RoutingConfig { normalize_top_k: false, ..Default::default() },
                ..base
            },
            Family::GraniteMoe => Self {
                attention: AttentionOptions { scale: Some(1.0 / self.head_dim as f64), ..Default::default() },
                multipliers: Multipliers { embedding: 12.0, residual: 0.22, logits_scaling: 6.0 },
                routing: RoutingConfig::default(),
                tie_word_embeddings: true,
                ..base
            },
        }
    }

    /// [`Self::tiny`] with every option of `family` on, at the shapes of the transformers
    /// fixtures (`tests/fixtures/make_family_fixtures.py`): Qwen2-MoE's q/k/v biases, gated
    /// shared expert, raw top-k weights and a dense second layer; Qwen3-MoE's per-head q/k
    /// norms; OLMoE's whole q/k norms, clipping and raw top-k weights; Granite-MoE's
    /// multipliers, score scale and tied embeddings.
    pub fn tiny_of(family: Family) -> Self {
        let tiny = Self::tiny().with_family(family);
        match family {
            Family::Mixtral => tiny,
            Family::Qwen2Moe => Self {
                routing: RoutingConfig { shared_d_ff: Some(96), ..tiny.routing.clone() },
                dense_layers: vec![1],
                dense_d_ff: Some(160),
                ..tiny
            },
            // `intermediate_size` is in every Qwen config, used by dense layers if any.
            Family::Qwen3Moe => Self { dense_d_ff: Some(160), ..tiny },
            Family::Olmoe => Self { attention: AttentionOptions { clip_qkv: Some(8.0), ..tiny.attention }, ..tiny },
            Family::GraniteMoe => Self {
                attention: AttentionOptions { scale: Some(0.2), ..Default::default() },
                multipliers: Multipliers { embedding: 6.0, residual: 0.5, logits_scaling: 4.0 },
                ..tiny
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for family in Family::ALL {
            assert_eq!(Family::from_model_type(family.model_type()), Some((family, false)));
            assert_eq!(Family::from_architecture(family.architecture()), Some((family, false)));
        }
        assert_eq!(Family::from_model_type("llama"), Some((Family::Mixtral, true)));
        assert_eq!(Family::from_model_type("deepseek_v3"), None);
    }

    #[test]
    fn every_family_of_every_preset_is_valid() {
        for base in [MixtralConfig::tiny(), MixtralConfig::mixtral_8x7b()] {
            for family in Family::ALL {
                let config = base.with_family(family);
                config.validate().unwrap_or_else(|e| panic!("{family}: {e}"));
                assert_eq!(config.family, family);
            }
        }
    }
}
