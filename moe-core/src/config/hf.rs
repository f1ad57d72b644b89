//! HuggingFace `config.json` for Mixtral, with HF's names and HF's defaults.
//!
//! This is the only place (with the exporter) where HF names such as `hidden_size` appear.
//! Both published forms are accepted: transformers 4 (top-level `rope_theta`, `torch_dtype`) and
//! transformers 5 (`rope_parameters.rope_theta`, `dtype`, `head_dim: null`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::MixtralConfig;
use crate::error::{MoeError, Result};
use crate::moe::{RoutingConfig, Scoring};

/// `eos_token_id` is an int or a list of ints in HF configs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            Self::One(id) => vec![*id],
            Self::Many(ids) => ids.clone(),
        }
    }
}

/// transformers 5 `rope_parameters`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HfRopeParameters {
    pub rope_theta: Option<f64>,
    #[serde(default = "default_rope_type")]
    pub rope_type: String,
}

fn default_rope_type() -> String {
    "default".into()
}

/// A Mixtral `config.json` as HF writes it. Missing optional fields default as in
/// transformers' `MixtralConfig.__init__`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HfMixtralConfig {
    /// `"mixtral"`, or `"mistral"` / `"llama"` for a dense model.
    #[serde(default)]
    pub model_type: Option<String>,
    /// Vocabulary size `V`.
    #[serde(default = "d::vocab_size")]
    pub vocab_size: usize,
    /// Model width `D`.
    #[serde(default = "d::hidden_size")]
    pub hidden_size: usize,
    /// Expert hidden width `F`.
    #[serde(default = "d::intermediate_size")]
    pub intermediate_size: usize,
    /// Decoder layers `L`.
    #[serde(default = "d::num_hidden_layers")]
    pub num_hidden_layers: usize,
    /// Query heads `H`.
    #[serde(default = "d::num_attention_heads")]
    pub num_attention_heads: usize,
    /// HF: `None` means multi-head attention (as many KV heads as query heads).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// HF: `None` means `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Expert activation; only `silu` is supported.
    #[serde(default = "d::hidden_act")]
    pub hidden_act: String,
    /// Context length.
    #[serde(default = "d::max_position_embeddings")]
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    #[serde(default = "d::rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// transformers 4 form.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// transformers 5 form.
    #[serde(default)]
    pub rope_parameters: Option<HfRopeParameters>,
    /// Sliding-window attention width, if any.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Experts per token `K`.
    #[serde(default = "d::num_experts_per_tok")]
    pub num_experts_per_tok: usize,
    /// `num_experts` is accepted as an alias (Qwen-MoE style configs).
    #[serde(default = "d::num_local_experts", alias = "num_experts")]
    pub num_local_experts: usize,
    /// Weight of the load-balancing loss in HF's training loss.
    #[serde(default = "d::router_aux_loss_coef")]
    pub router_aux_loss_coef: f64,
    /// Whether `lm_head` shares the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence token id.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token id(s).
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    /// Padding token id.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// Attention dropout (training only; must be 0 for parity).
    #[serde(default)]
    pub attention_dropout: f64,
    /// Router jitter while training (`routing.jitter_noise`).
    #[serde(default)]
    pub router_jitter_noise: f64,
    /// Whether the top-k weights are renormalised (Qwen-MoE's key; transformers' Mixtral always
    /// renormalises and has no such key, so it is written only when `false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub norm_topk_prob: Option<bool>,
    /// Expert capacity factor while training (`routing.capacity_factor`; not a transformers
    /// key: written only when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_factor: Option<f64>,
    /// Expert capacity factor in inference (`routing.eval_capacity_factor`; written only when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_capacity_factor: Option<f64>,
    /// `"sigmoid"` for sigmoid expert scores (DeepSeek-V3's key; written only when not softmax).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scoring_func: Option<String>,
    /// Multiplier of the routed weights (DeepSeek-V3's key; written only when not 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routed_scaling_factor: Option<f64>,
    /// `"noaux_tc"`: the routers carry a selection bias (DeepSeek-V3's key and value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topk_method: Option<String>,
    /// Auxiliary-loss-free balancing rate while training (`routing.bias_update_rate`; not a
    /// transformers key: written only when above 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias_update_rate: Option<f64>,
    /// Expert groups (DeepSeek-V3's key; written only when above 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_group: Option<usize>,
    /// Groups a token routes into (DeepSeek-V3's key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topk_group: Option<usize>,
    /// Shared experts (DeepSeek's key; written only when above 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_shared_experts: Option<usize>,
    /// Hidden width of the shared block (Qwen2-MoE's key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_expert_intermediate_size: Option<usize>,
    /// Whether the shared block has a sigmoid gate (Qwen2-MoE always has one; not a
    /// transformers key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_expert_gate: Option<bool>,
    /// Expert-choice routing while training (`routing.expert_choice`; not a transformers key:
    /// written only when true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expert_choice: Option<bool>,
    /// Noisy top-k gating while training (`routing.noisy_gating`; not a transformers key:
    /// written only when true, with the `gate_noise` weights beside the gate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noisy_gating: Option<bool>,
    /// Llama's RoPE scaling (`null` is the only value supported; written only when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<serde_json::Value>,
    /// Llama's biases on the attention projections (`false` is the only value supported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_bias: Option<bool>,
    /// Llama's biases on the MLP projections (`false` is the only value supported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp_bias: Option<bool>,
    /// Model classes the checkpoint is for (`MixtralForCausalLM`, `MistralForCausalLM`).
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    /// transformers 4 name of the checkpoint dtype.
    #[serde(default)]
    pub torch_dtype: Option<String>,
    /// transformers 5 name of the checkpoint dtype.
    #[serde(default)]
    pub dtype: Option<String>,
}

/// transformers' `MixtralConfig` defaults (the Mixtral-8x7B shape).
mod d {
    pub fn vocab_size() -> usize {
        32000
    }
    pub fn hidden_size() -> usize {
        4096
    }
    pub fn intermediate_size() -> usize {
        14336
    }
    pub fn num_hidden_layers() -> usize {
        32
    }
    pub fn num_attention_heads() -> usize {
        32
    }
    pub fn hidden_act() -> String {
        "silu".into()
    }
    pub fn max_position_embeddings() -> usize {
        4096 * 32
    }
    pub fn rms_norm_eps() -> f64 {
        1e-5
    }
    pub fn num_experts_per_tok() -> usize {
        2
    }
    pub fn num_local_experts() -> usize {
        8
    }
    pub fn router_aux_loss_coef() -> f64 {
        0.001
    }
}

impl HfMixtralConfig {
    /// Parses `config.json` text. `path` only names the file in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        serde_json::from_str(text).map_err(|source| MoeError::Json { path: path.to_path_buf(), source })
    }

    /// Reads and parses a `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| MoeError::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// Whether the checkpoint is a dense model (`MistralForCausalLM`, `LlamaForCausalLM`): by
    /// `model_type`, or by `architectures` when the type is missing.
    pub fn is_dense(&self) -> bool {
        match self.model_type.as_deref() {
            Some(t) => t == "mistral" || t == "llama",
            None => self.architectures.iter().flatten().any(|a| a == "MistralForCausalLM" || a == "LlamaForCausalLM"),
        }
    }

    /// The validated native config.
    pub fn to_mixtral(&self) -> Result<MixtralConfig> {
        if let Some(model_type) = &self.model_type {
            if !["mixtral", "mistral", "llama"].contains(&model_type.as_str()) {
                return Err(MoeError::config(
                    "model_type",
                    format!(
                        "is {model_type:?}; \"mixtral\" and the dense \"mistral\" and \"llama\" checkpoints are supported"
                    ),
                ));
            }
        }
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(MoeError::config("rope_scaling", "is set; only unscaled RoPE is supported"));
        }
        for (field, bias) in [("attention_bias", self.attention_bias), ("mlp_bias", self.mlp_bias)] {
            if bias == Some(true) {
                return Err(MoeError::config(field, "is true; projections without biases are supported"));
            }
        }
        let dense = self.is_dense();
        if self.hidden_act != "silu" {
            return Err(MoeError::config(
                "hidden_act",
                format!("is {:?}; Mixtral experts are SwiGLU (\"silu\")", self.hidden_act),
            ));
        }
        let rope_theta = match (&self.rope_parameters, self.rope_theta) {
            (Some(p), top) => {
                if p.rope_type != "default" {
                    return Err(MoeError::config(
                        "rope_parameters.rope_type",
                        format!("is {:?}; only \"default\" RoPE is supported", p.rope_type),
                    ));
                }
                p.rope_theta.or(top).unwrap_or(1e6)
            }
            (None, Some(theta)) => theta,
            (None, None) => 1e6,
        };
        let n_heads = self.num_attention_heads;
        let head_dim = match self.head_dim {
            Some(h) => h,
            None => {
                if n_heads == 0 || !self.hidden_size.is_multiple_of(n_heads) {
                    return Err(MoeError::config(
                        "num_attention_heads",
                        format!(
                            "({n_heads}) must divide hidden_size ({}) when head_dim is not given",
                            self.hidden_size
                        ),
                    ));
                }
                self.hidden_size / n_heads
            }
        };
        let config = MixtralConfig {
            vocab_size: self.vocab_size,
            d_model: self.hidden_size,
            d_ff: self.intermediate_size,
            n_layers: self.num_hidden_layers,
            n_heads,
            n_kv_heads: self.num_key_value_heads.unwrap_or(n_heads),
            head_dim,
            n_experts: if dense { 1 } else { self.num_local_experts },
            top_k: if dense { 1 } else { self.num_experts_per_tok },
            max_seq_len: self.max_position_embeddings,
            rope_theta,
            rms_norm_eps: self.rms_norm_eps,
            sliding_window: self.sliding_window,
            tie_word_embeddings: self.tie_word_embeddings,
            router_aux_loss_coef: self.router_aux_loss_coef,
            bos_token_id: self.bos_token_id,
            eos_token_ids: self.eos_token_id.as_ref().map(TokenIds::to_vec).unwrap_or_default(),
            pad_token_id: self.pad_token_id,
            routing: if dense { RoutingConfig::default() } else { self.routing()? },
            dense,
        };
        config.validate()?;
        Ok(config)
    }

    /// The `routing` section these keys describe.
    fn routing(&self) -> Result<RoutingConfig> {
        let scoring = match self.scoring_func.as_deref() {
            None | Some("softmax") => Scoring::Softmax,
            Some("sigmoid") => Scoring::Sigmoid,
            Some(other) => {
                return Err(MoeError::config(
                    "scoring_func",
                    format!("is {other:?}; \"softmax\" and \"sigmoid\" are supported"),
                ))
            }
        };
        let expert_bias = match self.topk_method.as_deref() {
            None | Some("greedy") => false,
            Some("noaux_tc") => true,
            Some(other) => {
                return Err(MoeError::config(
                    "topk_method",
                    format!("is {other:?}; \"greedy\" and \"noaux_tc\" (a selection bias) are supported"),
                ))
            }
        };
        let n_shared_experts = self.n_shared_experts.unwrap_or(0);
        // A Qwen-style config names only the shared width: that is one shared block.
        let n_shared_experts = match (n_shared_experts, self.shared_expert_intermediate_size) {
            (0, Some(_)) => 1,
            (n, _) => n,
        };
        Ok(RoutingConfig {
            scoring,
            normalize_top_k: self.norm_topk_prob.unwrap_or(true),
            scaling_factor: self.routed_scaling_factor.unwrap_or(1.0),
            jitter_noise: self.router_jitter_noise,
            capacity_factor: self.capacity_factor,
            eval_capacity_factor: self.eval_capacity_factor,
            expert_bias,
            bias_update_rate: self.bias_update_rate.unwrap_or(0.0),
            n_groups: self.n_group.unwrap_or(1),
            top_k_groups: self.topk_group.unwrap_or(1),
            expert_choice: self.expert_choice.unwrap_or(false),
            noisy_gating: self.noisy_gating.unwrap_or(false),
            n_shared_experts,
            shared_d_ff: self.shared_expert_intermediate_size,
            shared_expert_gate: self.shared_expert_gate.unwrap_or(false),
        })
    }

    /// The `config.json` that transformers 5 would write for this model (weights in `dtype`).
    pub fn from_mixtral(config: &MixtralConfig, dtype: &str) -> Self {
        let r = &config.routing;
        Self {
            model_type: Some(if config.dense { "mistral" } else { "mixtral" }.into()),
            vocab_size: config.vocab_size,
            hidden_size: config.d_model,
            intermediate_size: config.d_ff,
            num_hidden_layers: config.n_layers,
            num_attention_heads: config.n_heads,
            num_key_value_heads: Some(config.n_kv_heads),
            head_dim: Some(config.head_dim),
            hidden_act: "silu".into(),
            max_position_embeddings: config.max_seq_len,
            rms_norm_eps: config.rms_norm_eps,
            // Both forms, so that transformers 4 and 5 read the same theta.
            rope_theta: Some(config.rope_theta),
            rope_parameters: Some(HfRopeParameters {
                rope_theta: Some(config.rope_theta),
                rope_type: "default".into(),
            }),
            sliding_window: config.sliding_window,
            num_experts_per_tok: config.top_k,
            num_local_experts: config.n_experts,
            router_aux_loss_coef: config.router_aux_loss_coef,
            tie_word_embeddings: config.tie_word_embeddings,
            bos_token_id: config.bos_token_id,
            eos_token_id: match config.eos_token_ids.as_slice() {
                [] => None,
                [one] => Some(TokenIds::One(*one)),
                many => Some(TokenIds::Many(many.to_vec())),
            },
            pad_token_id: config.pad_token_id,
            attention_dropout: 0.0,
            router_jitter_noise: config.routing.jitter_noise,
            norm_topk_prob: (!config.routing.normalize_top_k).then_some(false),
            capacity_factor: config.routing.capacity_factor,
            eval_capacity_factor: config.routing.eval_capacity_factor,
            scoring_func: (r.scoring == Scoring::Sigmoid).then(|| "sigmoid".into()),
            routed_scaling_factor: (r.scaling_factor != 1.0).then_some(r.scaling_factor),
            // Only an explicit `expert_bias`: a bias implied by the rate round-trips through it.
            topk_method: r.expert_bias.then(|| "noaux_tc".into()),
            bias_update_rate: (r.bias_update_rate > 0.0).then_some(r.bias_update_rate),
            n_group: (r.n_groups > 1).then_some(r.n_groups),
            topk_group: (r.n_groups > 1).then_some(r.top_k_groups),
            n_shared_experts: (r.n_shared_experts > 0).then_some(r.n_shared_experts),
            shared_expert_intermediate_size: r.shared_d_ff,
            shared_expert_gate: r.shared_expert_gate.then_some(true),
            expert_choice: r.expert_choice.then_some(true),
            noisy_gating: r.noisy_gating.then_some(true),
            rope_scaling: None,
            attention_bias: None,
            mlp_bias: None,
            architectures: Some(vec![if config.dense { "MistralForCausalLM" } else { "MixtralForCausalLM" }.into()]),
            torch_dtype: Some(dtype.into()),
            dtype: Some(dtype.into()),
        }
    }
}
