//! HuggingFace `config.json` of every supported family, with HF's names and each family's
//! defaults (transformers' `MixtralConfig`, `Qwen2MoeConfig`, `Qwen3MoeConfig`, `OlmoeConfig`,
//! `GraniteMoeConfig`, and the dense `MistralConfig` / `LlamaConfig`).
//!
//! This is the only place (with the exporter) where HF names such as `hidden_size` appear.
//! Both published forms are accepted: transformers 4 (top-level `rope_theta`, `torch_dtype`) and
//! transformers 5 (`rope_parameters.rope_theta`, `dtype`, `head_dim: null`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Family, MixtralConfig, Multipliers};
use crate::error::{MoeError, Result};
use crate::moe::{RoutingConfig, Scoring};
use crate::nn::AttentionOptions;

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

/// A `config.json` as HF writes it. Missing fields default as in the transformers config class
/// of its `model_type` (Mixtral's below; the other families' are filled in by
/// [`Self::from_json_str`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HfMixtralConfig {
    /// `"mixtral"`, `"qwen2_moe"`, `"qwen3_moe"`, `"olmoe"`, `"granitemoe"`, or `"mistral"` /
    /// `"llama"` for a dense model.
    #[serde(default)]
    pub model_type: Option<String>,
    /// Vocabulary size `V`.
    #[serde(default = "d::vocab_size")]
    pub vocab_size: usize,
    /// Model width `D`.
    #[serde(default = "d::hidden_size")]
    pub hidden_size: usize,
    /// Expert hidden width `F`; in Qwen-MoE the dense layers' width.
    #[serde(default = "d::intermediate_size")]
    pub intermediate_size: usize,
    /// Qwen-MoE's expert hidden width `F`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moe_intermediate_size: Option<usize>,
    /// Qwen-MoE: every `decoder_sparse_step`-th layer is sparse, the others dense.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder_sparse_step: Option<usize>,
    /// Qwen-MoE: layers whose feed-forward block is dense.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp_only_layers: Option<Vec<usize>>,
    /// Qwen-MoE: whether `sliding_window` applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_sliding_window: Option<bool>,
    /// Qwen2-MoE (transformers 5): each layer's attention, `full_attention` or
    /// `sliding_attention`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_types: Option<Vec<String>>,
    /// Qwen2-MoE: biases on the q, k and v projections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qkv_bias: Option<bool>,
    /// OLMoE: q, k and v clamped to `[-clip_qkv, clip_qkv]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_qkv: Option<f64>,
    /// Granite-MoE: the embeddings' multiplier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_multiplier: Option<f64>,
    /// Granite-MoE: the residual branches' multiplier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residual_multiplier: Option<f64>,
    /// Granite-MoE: the attention scores' scale (instead of `1/sqrt(head_dim)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_multiplier: Option<f64>,
    /// Granite-MoE: the logits are divided by this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logits_scaling: Option<f64>,
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
    /// Experts per MoE layer `E` (Mixtral's and Granite-MoE's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_local_experts: Option<usize>,
    /// Experts per MoE layer `E` (Qwen-MoE's and OLMoE's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_experts: Option<usize>,
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
    /// Biases on the attention projections (Llama, Qwen3-MoE, OLMoE, Granite-MoE: all four).
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
    pub fn router_aux_loss_coef() -> f64 {
        0.001
    }
}

impl HfMixtralConfig {
    /// Parses `config.json` text, filling what it leaves out with the defaults of its
    /// `model_type`'s transformers config class. `path` only names the file in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let json_error = |source| MoeError::Json { path: path.to_path_buf(), source };
        let mut value: serde_json::Value = serde_json::from_str(text).map_err(json_error)?;
        let family = value.get("model_type").and_then(|t| t.as_str()).and_then(Family::from_model_type);
        if let (Some(object), Some((family, false))) = (value.as_object_mut(), family) {
            if let serde_json::Value::Object(defaults) = family_defaults(family) {
                for (key, default) in defaults {
                    // transformers maps each name of the expert count onto the other.
                    let alias = match key.as_str() {
                        "num_experts" => Some("num_local_experts"),
                        "num_local_experts" => Some("num_experts"),
                        _ => None,
                    };
                    if !alias.is_some_and(|a| object.contains_key(a)) {
                        object.entry(key).or_insert(default);
                    }
                }
            }
        }
        serde_json::from_value(value).map_err(json_error)
    }

    /// Reads and parses a `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| MoeError::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// The family and whether the checkpoint is a dense model (`MistralForCausalLM`,
    /// `LlamaForCausalLM`): by `model_type`, or by `architectures` when the type is missing
    /// (Mixtral when neither says).
    pub fn family(&self) -> Result<(Family, bool)> {
        match self.model_type.as_deref() {
            Some(t) => Family::from_model_type(t).ok_or_else(|| {
                MoeError::config(
                    "model_type",
                    format!("is {t:?}; the supported model types are {}", Family::model_types()),
                )
            }),
            None => Ok(self
                .architectures
                .iter()
                .flatten()
                .find_map(|a| Family::from_architecture(a))
                .unwrap_or((Family::Mixtral, false))),
        }
    }

    /// Whether the checkpoint is a dense model (see [`Self::family`]).
    pub fn is_dense(&self) -> bool {
        self.family().is_ok_and(|(_, dense)| dense)
    }

    /// The validated native config.
    pub fn to_mixtral(&self) -> Result<MixtralConfig> {
        let (family, dense) = self.family()?;
        let llama = self.model_type.as_deref() == Some("llama")
            || self.architectures.iter().flatten().any(|a| a == "LlamaForCausalLM");
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(MoeError::config("rope_scaling", "is set; only unscaled RoPE is supported"));
        }
        if self.mlp_bias == Some(true) {
            return Err(MoeError::config("mlp_bias", "is true; feed-forward blocks without biases are supported"));
        }
        // Mixtral's and Mistral's attention has no biases whatever the key says; Qwen2-MoE's
        // are `qkv_bias`; Llama's, Qwen3-MoE's, OLMoE's and Granite-MoE's `attention_bias`.
        let attention_bias = self.attention_bias == Some(true);
        if attention_bias && family == Family::Mixtral && !llama {
            return Err(MoeError::config(
                "attention_bias",
                "is true, but Mixtral and Mistral attention has no biases (a Llama checkpoint says \"llama\")",
            ));
        }
        let (qkv_bias, o_bias) = match family {
            Family::Qwen2Moe => (self.qkv_bias.unwrap_or(true), false),
            _ => (attention_bias, attention_bias),
        };
        if self.hidden_act != "silu" {
            return Err(MoeError::config(
                "hidden_act",
                format!("is {:?}; the supported experts are SwiGLU (\"silu\")", self.hidden_act),
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
                p.rope_theta.or(top).unwrap_or(default_rope_theta(family))
            }
            (None, Some(theta)) => theta,
            (None, None) => default_rope_theta(family),
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
        let qwen = family.is_qwen();
        // Each family's own name first (transformers 5 writes Qwen3-MoE's as `num_local_experts`).
        let n_experts = match family {
            Family::Mixtral | Family::GraniteMoe => self.num_local_experts.or(self.num_experts),
            _ => self.num_experts.or(self.num_local_experts),
        }
        .unwrap_or(8);
        // A Qwen-MoE config without experts is a dense model of its `intermediate_size`.
        let dense = dense || (qwen && n_experts == 0);
        let (d_ff, dense_d_ff) = match (qwen, dense) {
            (true, false) => {
                (self.moe_intermediate_size.unwrap_or(self.intermediate_size), Some(self.intermediate_size))
            }
            _ => (self.intermediate_size, None),
        };
        let dense_layers = if qwen && !dense { self.qwen_dense_layers()? } else { Vec::new() };
        let sliding_window = self.sliding_window(family)?;
        let attention = AttentionOptions {
            qk_norm: family.qk_norm(),
            qkv_bias,
            o_bias,
            clip_qkv: self.clip_qkv.filter(|_| family == Family::Olmoe),
            scale: self.attention_multiplier.filter(|_| family == Family::GraniteMoe),
        };
        let multipliers = match family {
            Family::GraniteMoe => Multipliers {
                embedding: self.embedding_multiplier.unwrap_or(1.0),
                residual: self.residual_multiplier.unwrap_or(1.0),
                logits_scaling: self.logits_scaling.unwrap_or(1.0),
            },
            _ => Multipliers::default(),
        };
        let config = MixtralConfig {
            vocab_size: self.vocab_size,
            d_model: self.hidden_size,
            d_ff,
            n_layers: self.num_hidden_layers,
            n_heads,
            n_kv_heads: self.num_key_value_heads.unwrap_or(n_heads),
            head_dim,
            n_experts: if dense { 1 } else { n_experts },
            top_k: if dense { 1 } else { self.num_experts_per_tok },
            max_seq_len: self.max_position_embeddings,
            rope_theta,
            rms_norm_eps: self.rms_norm_eps,
            sliding_window,
            tie_word_embeddings: self.tie_word_embeddings,
            router_aux_loss_coef: self.router_aux_loss_coef,
            bos_token_id: self.bos_token_id,
            eos_token_ids: self.eos_token_id.as_ref().map(TokenIds::to_vec).unwrap_or_default(),
            pad_token_id: self.pad_token_id,
            routing: if dense { RoutingConfig::default() } else { self.routing(family)? },
            dense,
            family,
            attention,
            dense_layers,
            dense_d_ff,
            multipliers,
        };
        config.validate()?;
        Ok(config)
    }

    /// Qwen-MoE's dense layers: those in `mlp_only_layers`, and those off the
    /// `decoder_sparse_step` (layer `i` is sparse when `(i + 1) % step == 0`).
    fn qwen_dense_layers(&self) -> Result<Vec<usize>> {
        let step = self.decoder_sparse_step.unwrap_or(1);
        if step == 0 {
            return Err(MoeError::config("decoder_sparse_step", "must be at least 1"));
        }
        let only = self.mlp_only_layers.as_deref().unwrap_or_default();
        if step == 1 && only.is_empty() {
            return Ok(Vec::new());
        }
        // The list is as long as the model: bound it before building it (the parameter count,
        // which validation checks, comes after).
        if self.num_hidden_layers > MAX_LAYERS {
            return Err(MoeError::config(
                "num_hidden_layers",
                format!("is {}; no model is that large (at most {MAX_LAYERS} layers)", self.num_hidden_layers),
            ));
        }
        if let Some(&bad) = only.iter().find(|&&n| n >= self.num_hidden_layers) {
            return Err(MoeError::config(
                "mlp_only_layers",
                format!("names layer {bad}, but the model has {} layers (from 0)", self.num_hidden_layers),
            ));
        }
        Ok((0..self.num_hidden_layers).filter(|&i| only.contains(&i) || (i + 1) % step != 0).collect())
    }

    /// The attention window: Qwen-MoE's only with `use_sliding_window`, and Qwen2-MoE's only
    /// when every layer has it.
    fn sliding_window(&self, family: Family) -> Result<Option<usize>> {
        match family {
            Family::Qwen2Moe | Family::Qwen3Moe if self.use_sliding_window != Some(true) => Ok(None),
            Family::Qwen2Moe => Err(MoeError::config(
                "use_sliding_window",
                "is true; Qwen2-MoE's sliding window applies to some layers only, which is not supported",
            )),
            _ => {
                let kinds = self.layer_types.iter().flatten();
                if let Some(kind) = kinds.clone().find(|k| *k != "full_attention" && *k != "sliding_attention") {
                    return Err(MoeError::config(
                        "layer_types",
                        format!("has {kind:?}; only full and sliding attention"),
                    ));
                }
                if kinds.clone().any(|k| k == "full_attention") && kinds.clone().any(|k| k == "sliding_attention") {
                    return Err(MoeError::config(
                        "layer_types",
                        "mixes full and sliding attention; a window on some layers only is not supported",
                    ));
                }
                Ok(self.sliding_window)
            }
        }
    }

    /// The `routing` section these keys describe.
    fn routing(&self, family: Family) -> Result<RoutingConfig> {
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
        if self.shared_expert_intermediate_size == Some(0) {
            return Err(MoeError::config("shared_expert_intermediate_size", "must be at least 1"));
        }
        // Granite-MoE's softmax over the top-k logits is the renormalised top-k of the softmax.
        let normalize_top_k = match family {
            Family::GraniteMoe => true,
            _ => self.norm_topk_prob.unwrap_or(true),
        };
        // Qwen2-MoE's shared expert is always gated.
        let shared_expert_gate = self.shared_expert_gate.unwrap_or(family == Family::Qwen2Moe);
        Ok(RoutingConfig {
            scoring,
            normalize_top_k,
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
            shared_expert_gate,
        })
    }

    /// The `config.json` that transformers 5 would write for this model (weights in `dtype`),
    /// in its family's names.
    pub fn from_mixtral(config: &MixtralConfig, dtype: &str) -> Self {
        let r = &config.routing;
        let family = config.family;
        let qwen = family.is_qwen();
        let a = &config.attention;
        // A dense model with attention biases is a Llama (Mistral's attention has none).
        let (model_type, architecture) = match (config.dense, family) {
            (true, Family::Mixtral) if a.qkv_bias => ("llama", "LlamaForCausalLM"),
            (true, Family::Mixtral) => ("mistral", "MistralForCausalLM"),
            (_, family) => (family.model_type(), family.architecture()),
        };
        let multipliers = &config.multipliers;
        let granite = |v: f64| (family == Family::GraniteMoe).then_some(v);
        let (experts_mixtral, experts_qwen) = match family {
            Family::Mixtral | Family::GraniteMoe => (Some(config.n_experts), None),
            _ => (None, Some(config.n_experts)),
        };
        Self {
            model_type: Some(model_type.into()),
            vocab_size: config.vocab_size,
            hidden_size: config.d_model,
            intermediate_size: if qwen { config.dense_width() } else { config.d_ff },
            moe_intermediate_size: qwen.then_some(config.d_ff),
            decoder_sparse_step: qwen.then_some(1),
            mlp_only_layers: qwen.then(|| config.dense_layers.clone()),
            use_sliding_window: qwen.then_some(config.sliding_window.is_some()),
            layer_types: None,
            qkv_bias: (family == Family::Qwen2Moe).then_some(a.qkv_bias),
            clip_qkv: a.clip_qkv,
            embedding_multiplier: granite(multipliers.embedding),
            residual_multiplier: granite(multipliers.residual),
            attention_multiplier: granite(a.score_scale(config.head_dim)),
            logits_scaling: granite(multipliers.logits_scaling),
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
            num_local_experts: experts_mixtral,
            num_experts: experts_qwen,
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
            // Mixtral has no key (it always renormalises); the other families default to false.
            norm_topk_prob: match family {
                Family::Mixtral | Family::GraniteMoe => (!r.normalize_top_k).then_some(false),
                _ => Some(r.normalize_top_k),
            },
            capacity_factor: config.routing.capacity_factor,
            eval_capacity_factor: config.routing.eval_capacity_factor,
            scoring_func: (r.scoring == Scoring::Sigmoid).then(|| "sigmoid".into()),
            routed_scaling_factor: (r.scaling_factor != 1.0).then_some(r.scaling_factor),
            // Only an explicit `expert_bias`: a bias implied by the rate round-trips through it.
            topk_method: r.expert_bias.then(|| "noaux_tc".into()),
            bias_update_rate: (r.bias_update_rate > 0.0).then_some(r.bias_update_rate),
            n_group: (r.n_groups > 1).then_some(r.n_groups),
            topk_group: (r.n_groups > 1).then_some(r.top_k_groups),
            n_shared_experts: (r.n_shared_experts > 0 && family != Family::Qwen2Moe).then_some(r.n_shared_experts),
            shared_expert_intermediate_size: match family {
                Family::Qwen2Moe => r.shared_width(config.d_ff),
                _ => r.shared_d_ff,
            },
            shared_expert_gate: (r.shared_expert_gate && family != Family::Qwen2Moe).then_some(true),
            expert_choice: r.expert_choice.then_some(true),
            noisy_gating: r.noisy_gating.then_some(true),
            rope_scaling: None,
            attention_bias: (family != Family::Qwen2Moe && a.o_bias).then_some(true),
            mlp_bias: None,
            architectures: Some(vec![architecture.into()]),
            torch_dtype: Some(dtype.into()),
            dtype: Some(dtype.into()),
        }
    }
}

/// More decoder layers than any model has: a config that says more is a typo or hostile.
const MAX_LAYERS: usize = 1 << 16;

/// RoPE's base when a config gives none: transformers' `default_theta` of the family's class.
fn default_rope_theta(family: Family) -> f64 {
    match family {
        Family::Mixtral => 1e6,
        _ => 1e4,
    }
}

/// The defaults of a family's transformers config class (5.x) that differ from Mixtral's, for
/// the keys a `config.json` may leave out.
fn family_defaults(family: Family) -> serde_json::Value {
    use serde_json::json;
    match family {
        Family::Mixtral => json!({}),
        Family::Qwen2Moe => json!({
            "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 24,
            "num_attention_heads": 16, "num_key_value_heads": 16, "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6, "decoder_sparse_step": 1, "moe_intermediate_size": 1408,
            "shared_expert_intermediate_size": 5632, "num_experts_per_tok": 4, "num_experts": 60,
            "norm_topk_prob": false, "router_aux_loss_coef": 0.001, "qkv_bias": true,
        }),
        Family::Qwen3Moe => json!({
            "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 24,
            "num_attention_heads": 32, "num_key_value_heads": 4, "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6, "decoder_sparse_step": 1, "moe_intermediate_size": 768,
            "num_experts_per_tok": 8, "num_experts": 128, "norm_topk_prob": false, "router_aux_loss_coef": 0.001,
        }),
        Family::Olmoe => json!({
            "vocab_size": 50304, "hidden_size": 2048, "intermediate_size": 2048, "num_hidden_layers": 16,
            "num_attention_heads": 16, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
            "pad_token_id": 1, "eos_token_id": 50279, "num_experts_per_tok": 8, "num_experts": 64,
            "router_aux_loss_coef": 0.01, "norm_topk_prob": false,
        }),
        Family::GraniteMoe => json!({
            "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
            "num_attention_heads": 32, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
            "bos_token_id": 1, "eos_token_id": 2, "num_local_experts": 8, "num_experts_per_tok": 2,
            "router_aux_loss_coef": 0.001,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<MixtralConfig> {
        HfMixtralConfig::from_json_str(json, Path::new("config.json"))?.to_mixtral()
    }

    /// The `config.json` files of published checkpoints (transformers 4 form, as the Hub serves
    /// them) parse to their published sizes: total and active parameters within 2% (the
    /// published figures have two or three digits).
    #[test]
    fn published_configs_have_their_published_sizes() {
        let cases = [
            (
                // Qwen/Qwen3-30B-A3B: 30.5B total, 3.3B active.
                r#"{"architectures": ["Qwen3MoeForCausalLM"], "attention_bias": false, "bos_token_id": 151643,
                "decoder_sparse_step": 1, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
                "hidden_size": 2048, "intermediate_size": 6144, "max_position_embeddings": 40960,
                "max_window_layers": 48, "mlp_only_layers": [], "model_type": "qwen3_moe",
                "moe_intermediate_size": 768, "norm_topk_prob": true, "num_attention_heads": 32, "num_experts": 128,
                "num_experts_per_tok": 8, "num_hidden_layers": 48, "num_key_value_heads": 4, "rms_norm_eps": 1e-06,
                "rope_scaling": null, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001, "sliding_window": null,
                "tie_word_embeddings": false, "torch_dtype": "bfloat16", "use_sliding_window": false,
                "vocab_size": 151936}"#,
                Family::Qwen3Moe,
                30.5e9,
                3.3e9,
            ),
            (
                // allenai/OLMoE-1B-7B-0924: 6.9B total, 1.3B active.
                r#"{"architectures": ["OlmoeForCausalLM"], "clip_qkv": null, "eos_token_id": 50279, "hidden_act": "silu",
                "hidden_size": 2048, "intermediate_size": 1024, "max_position_embeddings": 4096, "model_type": "olmoe",
                "norm_topk_prob": false, "num_attention_heads": 16, "num_experts": 64, "num_experts_per_tok": 8,
                "num_hidden_layers": 16, "num_key_value_heads": 16, "pad_token_id": 1, "rms_norm_eps": 1e-05,
                "rope_theta": 10000.0, "tie_word_embeddings": false, "vocab_size": 50304}"#,
                Family::Olmoe,
                6.92e9,
                1.28e9,
            ),
            (
                // Qwen/Qwen1.5-MoE-A2.7B: 14.3B total, 2.7B active.
                r#"{"architectures": ["Qwen2MoeForCausalLM"], "decoder_sparse_step": 1, "hidden_size": 2048,
                "intermediate_size": 5632, "max_position_embeddings": 8192, "model_type": "qwen2_moe",
                "moe_intermediate_size": 1408, "norm_topk_prob": false, "num_attention_heads": 16,
                "num_experts": 60, "num_experts_per_tok": 4, "num_hidden_layers": 24, "num_key_value_heads": 16,
                "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "shared_expert_intermediate_size": 5632,
                "sliding_window": 32768, "tie_word_embeddings": false, "use_sliding_window": false,
                "vocab_size": 151936}"#,
                Family::Qwen2Moe,
                14.3e9,
                2.69e9,
            ),
            (
                // ibm-granite/granite-3.0-1b-a400m-base: 1.3B total, 400M active.
                r#"{"architectures": ["GraniteMoeForCausalLM"], "attention_multiplier": 0.015625,
                "embedding_multiplier": 12.0, "hidden_size": 1024, "intermediate_size": 512, "logits_scaling": 6.0,
                "max_position_embeddings": 4096, "model_type": "granitemoe", "num_attention_heads": 16,
                "num_experts_per_tok": 8, "num_hidden_layers": 24, "num_key_value_heads": 8, "num_local_experts": 32,
                "residual_multiplier": 0.22, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
                "tie_word_embeddings": true, "vocab_size": 49155}"#,
                Family::GraniteMoe,
                1.33e9,
                0.43e9,
            ),
        ];
        for (json, family, total, active) in cases {
            let c = parse(json).unwrap_or_else(|e| panic!("{family}: {e}"));
            assert_eq!(c.family, family);
            for (what, got, want) in
                [("total", c.num_params() as f64, total), ("active", c.num_active_params() as f64, active)]
            {
                assert!((got / want - 1.0).abs() < 0.02, "{family}: {what} {got:e}, published {want:e}");
            }
            assert_eq!(c.sliding_window, None, "{family}: the window is off without use_sliding_window");
        }
    }

    #[test]
    fn a_family_left_out_keys_take_that_family_defaults() {
        let c = parse(r#"{"model_type": "qwen3_moe", "num_hidden_layers": 2}"#).unwrap();
        assert_eq!((c.vocab_size, c.n_experts, c.top_k, c.d_ff, c.dense_d_ff), (151936, 128, 8, 768, Some(6144)));
        assert_eq!((c.rms_norm_eps, c.rope_theta, c.routing.normalize_top_k), (1e-6, 1e4, false));
        // transformers 5 writes Qwen3-MoE's expert count under Mixtral's name.
        let c = parse(r#"{"model_type": "qwen3_moe", "num_local_experts": 4, "num_experts_per_tok": 2}"#).unwrap();
        assert_eq!(c.n_experts, 4);
        let c = parse(r#"{"model_type": "mixtral", "num_hidden_layers": 2}"#).unwrap();
        assert_eq!((c.vocab_size, c.n_experts, c.rope_theta, c.routing.normalize_top_k), (32000, 8, 1e6, true));
        // Qwen-MoE's layer pattern: every second layer sparse, layer 0 dense by name.
        let c = parse(
            r#"{"model_type": "qwen2_moe", "num_hidden_layers": 6, "decoder_sparse_step": 2,
            "mlp_only_layers": [3]}"#,
        )
        .unwrap();
        assert_eq!(c.dense_layers, vec![0, 2, 3, 4]);
    }

    #[test]
    fn unknown_model_types_list_the_supported_ones() {
        let err = parse(r#"{"model_type": "deepseek_v3"}"#).unwrap_err().to_string();
        for family in Family::ALL {
            assert!(err.contains(family.model_type()), "{err}");
        }
    }

    /// Every family's exported `config.json` parses back to the same config.
    #[test]
    fn every_family_round_trips_through_its_config_json() {
        for family in Family::ALL {
            let config = MixtralConfig::tiny_of(family);
            let json = serde_json::to_string(&HfMixtralConfig::from_mixtral(&config, "float32")).unwrap();
            assert_eq!(parse(&json).unwrap(), config, "{family}: {json}");
        }
    }
}
