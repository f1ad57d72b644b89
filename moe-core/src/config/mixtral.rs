//! The validated native model config, with this crate's dimension names.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Family, HfMixtralConfig, Multipliers};
use crate::error::{MoeError, Result};
use crate::moe::RoutingConfig;
use crate::nn::AttentionOptions;

/// Shape and hyper-parameters of a decoder model of any supported [`Family`]: Mixtral, its
/// dense siblings (Mistral, Llama), Qwen2-MoE, Qwen3-MoE, OLMoE, Granite-MoE. The families are
/// options of one model (attention options, dense layers, multipliers, routing), not separate
/// code.
///
/// Build one from a preset ([`MixtralConfig::tiny`], [`MixtralConfig::mixtral_8x7b`], ...), from an
/// HF `config.json` ([`MixtralConfig::from_hf_file`]), or as a struct literal followed by
/// [`MixtralConfig::validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixtralConfig {
    /// Vocabulary size `V`.
    pub vocab_size: usize,
    /// Model width `D`.
    pub d_model: usize,
    /// Hidden size of each expert's SwiGLU.
    pub d_ff: usize,
    /// Decoder layers `L`.
    pub n_layers: usize,
    /// Query heads `H`.
    pub n_heads: usize,
    /// Key/value heads: `n_heads` for MHA, fewer for GQA, 1 for MQA.
    pub n_kv_heads: usize,
    /// Head size `Dh` (`D / H` unless the checkpoint says otherwise).
    pub head_dim: usize,
    /// Experts per MoE layer `E`.
    pub n_experts: usize,
    /// Experts per token.
    pub top_k: usize,
    /// Longest sequence (positions in the RoPE table and the KV cache).
    pub max_seq_len: usize,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Each query sees at most this many keys (itself included), as HF's sliding-window mask.
    pub sliding_window: Option<usize>,
    /// Whether the LM head shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Weight of the load-balancing loss in the training objective (HF `router_aux_loss_coef`).
    pub router_aux_loss_coef: f64,
    /// Beginning-of-sequence token id.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token ids (generation stops on any).
    pub eos_token_ids: Vec<u32>,
    /// Padding token id.
    pub pad_token_id: Option<u32>,
    /// How tokens are routed to experts (Mixtral's softmax top-k unless a config says otherwise).
    #[serde(default)]
    pub routing: RoutingConfig,
    /// A dense model (Mistral, Llama): every layer's feed-forward block is one SwiGLU `mlp` of
    /// width `d_ff` instead of the sparse MoE block. `n_experts` and `top_k` are then 1 and the
    /// routing Mixtral's (the fields describe the single always-on FFN). Hub checkpoints of
    /// `MistralForCausalLM` / `LlamaForCausalLM` load as dense models.
    #[serde(default)]
    pub dense: bool,
    /// The published family: decides the checkpoint's key names and `config.json`'s
    /// `model_type`, nothing the model computes.
    #[serde(default)]
    pub family: Family,
    /// Query/key norms, projection biases, clipping and the score scale.
    #[serde(default)]
    pub attention: AttentionOptions,
    /// Layers (from 0, ascending) of a sparse model whose feed-forward block is one dense SwiGLU
    /// of width [`Self::dense_d_ff`] instead of the MoE (Qwen-MoE's `mlp_only_layers` and
    /// `decoder_sparse_step`).
    #[serde(default)]
    pub dense_layers: Vec<usize>,
    /// Width of those dense layers' SwiGLU (Qwen-MoE's `intermediate_size`, where `d_ff` is
    /// `moe_intermediate_size`); `d_ff` when unset.
    #[serde(default)]
    pub dense_d_ff: Option<usize>,
    /// Embedding, residual and logit multipliers (Granite-MoE).
    #[serde(default)]
    pub multipliers: Multipliers,
}

impl MixtralConfig {
    /// A model small enough to train from scratch on a laptop CPU in minutes.
    pub fn tiny() -> Self {
        Self {
            vocab_size: 512,
            d_model: 64,
            d_ff: 128,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 16,
            n_experts: 4,
            top_k: 2,
            max_seq_len: 256,
            rope_theta: 1e4,
            rms_norm_eps: 1e-5,
            sliding_window: None,
            tie_word_embeddings: false,
            // Mixtral's published value.
            router_aux_loss_coef: 0.02,
            bos_token_id: Some(1),
            eos_token_ids: vec![2],
            pad_token_id: None,
            routing: RoutingConfig::default(),
            dense: false,
            family: Family::Mixtral,
            attention: AttentionOptions::default(),
            dense_layers: Vec::new(),
            dense_d_ff: None,
            multipliers: Multipliers::default(),
        }
    }

    /// The dense model (see [`Self::dense`]) with this one's attention, embeddings, norms and
    /// vocabulary, and one FFN `d_ff` wide in every layer. `top_k * self.d_ff` matches the
    /// MoE's active FFN parameters per token (equal compute); `n_experts * self.d_ff` its total.
    pub fn to_dense(&self, d_ff: usize) -> Self {
        Self {
            d_ff,
            n_experts: 1,
            top_k: 1,
            routing: RoutingConfig::default(),
            dense: true,
            dense_layers: Vec::new(),
            dense_d_ff: None,
            ..self.clone()
        }
    }

    /// Whether layer `n`'s feed-forward block is one dense SwiGLU (every layer of a dense
    /// model, the [`Self::dense_layers`] of a sparse one).
    pub fn is_dense_layer(&self, n: usize) -> bool {
        self.dense || self.dense_layers.binary_search(&n).is_ok()
    }

    /// Width of the dense layers' SwiGLU.
    pub fn dense_width(&self) -> usize {
        match self.dense {
            true => self.d_ff,
            false => self.dense_d_ff.unwrap_or(self.d_ff),
        }
    }

    /// Layers whose feed-forward block is the MoE.
    pub fn n_sparse_layers(&self) -> usize {
        match self.dense {
            true => 0,
            false => self.n_layers - self.dense_layers.len().min(self.n_layers),
        }
    }

    /// Whether a model of config `other` has other parameters (names or shapes) than one of
    /// this config: token ids, context length and training weights aside.
    pub fn shape_differs(&self, other: &Self) -> bool {
        let shape = |c: &Self| Self {
            bos_token_id: None,
            eos_token_ids: Vec::new(),
            pad_token_id: None,
            max_seq_len: 1,
            router_aux_loss_coef: 0.0,
            ..c.clone()
        };
        shape(self) != shape(other)
    }

    /// `mistralai/Mixtral-8x7B-v0.1`.
    pub fn mixtral_8x7b() -> Self {
        Self {
            vocab_size: 32000,
            d_model: 4096,
            d_ff: 14336,
            n_layers: 32,
            n_heads: 32,
            n_kv_heads: 8,
            head_dim: 128,
            n_experts: 8,
            top_k: 2,
            max_seq_len: 32768,
            rope_theta: 1e6,
            rms_norm_eps: 1e-5,
            sliding_window: None,
            tie_word_embeddings: false,
            router_aux_loss_coef: 0.02,
            bos_token_id: Some(1),
            eos_token_ids: vec![2],
            pad_token_id: None,
            routing: RoutingConfig::default(),
            dense: false,
            family: Family::Mixtral,
            attention: AttentionOptions::default(),
            dense_layers: Vec::new(),
            dense_d_ff: None,
            multipliers: Multipliers::default(),
        }
    }

    /// `mistralai/Mixtral-8x22B-v0.1`.
    pub fn mixtral_8x22b() -> Self {
        Self {
            vocab_size: 32768,
            d_model: 6144,
            d_ff: 16384,
            n_layers: 56,
            n_heads: 48,
            n_kv_heads: 8,
            head_dim: 128,
            max_seq_len: 65536,
            router_aux_loss_coef: 0.001,
            ..Self::mixtral_8x7b()
        }
    }

    /// Reads an HF `config.json` (transformers 4 or 5 form) and validates it.
    pub fn from_hf_file(path: impl AsRef<Path>) -> Result<Self> {
        HfMixtralConfig::from_file(path)?.to_mixtral()
    }

    /// Checks every field; the error names the first bad field and why.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.d_model),
            ("intermediate_size", self.d_ff),
            ("num_hidden_layers", self.n_layers),
            ("num_attention_heads", self.n_heads),
            ("num_key_value_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
            ("num_local_experts", self.n_experts),
            ("num_experts_per_tok", self.top_k),
            ("max_position_embeddings", self.max_seq_len),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(MoeError::config(field, "must be at least 1"));
            }
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(MoeError::config(
                "num_key_value_heads",
                format!(
                    "({}) must divide num_attention_heads ({}) for grouped-query attention",
                    self.n_kv_heads, self.n_heads
                ),
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(MoeError::config(
                "head_dim",
                format!("({}) must be even for rotary embeddings", self.head_dim),
            ));
        }
        if self.top_k > self.n_experts {
            return Err(MoeError::config(
                "num_experts_per_tok",
                format!("({}) must not exceed num_local_experts ({})", self.top_k, self.n_experts),
            ));
        }
        self.routing.validate(self.n_experts, self.top_k)?;
        if self.dense && (self.n_experts, self.top_k) != (1, 1) {
            return Err(MoeError::config(
                "num_local_experts",
                format!(
                    "is {} with {} per token in a dense model; a dense model's one FFN counts as 1 expert, 1 per token",
                    self.n_experts, self.top_k
                ),
            ));
        }
        if self.dense && self.routing != RoutingConfig::default() {
            return Err(MoeError::config("routing", "must be left unset in a dense model: it has no router"));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(MoeError::config("rope_theta", "must be a positive number"));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(MoeError::config("rms_norm_eps", "must be a positive number"));
        }
        if self.sliding_window == Some(0) {
            return Err(MoeError::config("sliding_window", "must be null or at least 1"));
        }
        self.attention.validate()?;
        self.multipliers.validate()?;
        self.validate_family()?;
        if self.dense && !self.dense_layers.is_empty() {
            return Err(MoeError::config("mlp_only_layers", "must be empty in a dense model: every layer is dense"));
        }
        if !self.dense_layers.windows(2).all(|w| w[0] < w[1]) {
            return Err(MoeError::config("mlp_only_layers", "must list each layer once, in ascending order"));
        }
        if let Some(&last) = self.dense_layers.last() {
            if last >= self.n_layers {
                return Err(MoeError::config(
                    "mlp_only_layers",
                    format!("names layer {last}, but the model has {} layers (from 0)", self.n_layers),
                ));
            }
        }
        if self.dense_d_ff == Some(0) {
            return Err(MoeError::config("intermediate_size", "(the dense layers' width) must be at least 1"));
        }
        if !(self.router_aux_loss_coef.is_finite() && self.router_aux_loss_coef >= 0.0) {
            return Err(MoeError::config("router_aux_loss_coef", "must be a non-negative number"));
        }
        // Shapes whose parameter count does not even fit in 64 bits, or exceeds any model
        // ever trained, are typos or hostile files: refuse them before anything is sized by them.
        match self.checked_num_params() {
            Some(n) if n <= Self::MAX_PARAMS => {}
            _ => {
                return Err(MoeError::config(
                    "num_hidden_layers",
                    format!(
                        "with hidden_size {}, intermediate_size {}, vocab_size {} and {} experts describes more than \
                         {} parameters (no model is that large; check the sizes)",
                        self.d_model,
                        self.d_ff,
                        self.vocab_size,
                        self.n_experts,
                        Self::MAX_PARAMS
                    ),
                ))
            }
        }
        let ids = self
            .bos_token_id
            .iter()
            .map(|id| ("bos_token_id", *id))
            .chain(self.eos_token_ids.iter().map(|id| ("eos_token_id", *id)))
            .chain(self.pad_token_id.iter().map(|id| ("pad_token_id", *id)));
        for (field, id) in ids {
            if id as usize >= self.vocab_size {
                return Err(MoeError::config(field, format!("({id}) must be below vocab_size ({})", self.vocab_size)));
            }
        }
        Ok(())
    }

    /// Checks that the family's checkpoints can say what the options are (so that export writes
    /// a `config.json` transformers reads as this model): the error names the first option its
    /// family has no key for.
    fn validate_family(&self) -> Result<()> {
        let (f, a) = (self.family, &self.attention);
        let qk_norm = f.qk_norm();
        let problem = if a.qk_norm != qk_norm {
            Some(("attention.qk_norm", format!("must be {qk_norm:?} in a {f} model")))
        } else if f == Family::Qwen2Moe && a.o_bias {
            Some(("attention.o_bias", format!("must be false in a {f} model (its biases are `qkv_bias`)")))
        } else if f != Family::Qwen2Moe && a.qkv_bias != a.o_bias {
            Some(("attention.qkv_bias", format!("must equal attention.o_bias in a {f} model (`attention_bias`)")))
        } else if f == Family::Mixtral && !self.dense && a.qkv_bias {
            Some((
                "attention.qkv_bias",
                "must be false in a Mixtral model (only dense Llama models have biases)".into(),
            ))
        } else if f != Family::Olmoe && a.clip_qkv.is_some() {
            Some(("attention.clip_qkv", format!("is OLMoE's; a {f} model has no such key")))
        } else if f != Family::GraniteMoe && (a.scale.is_some() || !self.multipliers.is_identity()) {
            Some(("multipliers", format!("are Granite-MoE's; a {f} model has no such keys")))
        } else if f == Family::GraniteMoe && !self.routing.normalize_top_k {
            Some(("routing.normalize_top_k", format!("must be true in a {f} model")))
        } else if !f.is_qwen() && !self.dense_layers.is_empty() {
            Some(("dense_layers", format!("are Qwen-MoE's `mlp_only_layers`; a {f} model has no such key")))
        } else if let Some(field) = self.routing_beyond_family() {
            Some((field, format!("has no key in a {f} model's config.json (Mixtral's config carries it)")))
        } else if self.dense && f != Family::Mixtral {
            Some(("dense", format!("dense models are Mistral or Llama, not {f}")))
        } else {
            None
        };
        match problem {
            Some((field, reason)) => Err(MoeError::config(field, reason)),
            None => Ok(()),
        }
    }

    /// The first routing option (as `routing.<field>`) that a model of another family than
    /// Mixtral cannot have: those that change inference or add weights, beyond the family's own
    /// (Qwen2-MoE's one gated shared expert, Qwen's and OLMoE's raw top-k weights). Options
    /// that only act while training (jitter, capacity, expert choice) are any family's.
    fn routing_beyond_family(&self) -> Option<&'static str> {
        let (f, r) = (self.family, &self.routing);
        if f == Family::Mixtral || self.dense {
            return None;
        }
        let shared = match f {
            Family::Qwen2Moe => !(r.n_shared_experts == 1 && r.shared_expert_gate),
            _ => r.n_shared_experts > 0,
        };
        [
            ("routing.scoring", r.scoring != crate::moe::Scoring::Softmax),
            ("routing.scaling_factor", r.scaling_factor != 1.0),
            ("routing.eval_capacity_factor", r.eval_capacity_factor.is_some()),
            ("routing.expert_bias", r.has_expert_bias()),
            ("routing.n_groups", r.n_groups != 1),
            ("routing.noisy_gating", r.noisy_gating),
            ("routing.n_shared_experts", shared),
        ]
        .into_iter()
        .find_map(|(field, beyond)| beyond.then_some(field))
    }

    /// Configs describing more parameters than this (100 trillion) are refused by
    /// [`Self::validate`].
    pub const MAX_PARAMS: u64 = 100_000_000_000_000;

    /// [`Self::num_params`] in checked arithmetic: `None` when it overflows `u64`.
    pub fn checked_num_params(&self) -> Option<u64> {
        let [v, d, f, l, h, g, dh, e] = [
            self.vocab_size,
            self.d_model,
            self.d_ff,
            self.n_layers,
            self.n_heads,
            self.n_kv_heads,
            self.head_dim,
            self.n_experts,
        ]
        .map(|x| x as u64);
        let mul = |a: u64, b: u64| a.checked_mul(b);
        let (q_dim, kv_dim) = (mul(h, dh)?, mul(g, dh)?);
        let attention = mul(mul(2, d)?, q_dim.checked_add(kv_dim)?)?
            .checked_add(self.attention.extra_params(d, q_dim, kv_dim, dh)?)?
            .checked_add(mul(2, d)?)?; // the layer's two norms
        let experts = mul(mul(e, 3)?, mul(d, f)?)?;
        let shared = match self.routing.shared_width(self.d_ff) {
            Some(width) => mul(mul(3, d)?, width as u64)?.checked_add(d)?,
            None => 0,
        };
        let sparse_layer = experts
            .checked_add(shared)?
            .checked_add(mul(e, d)?)?
            .checked_add(if self.routing.has_expert_bias() { e } else { 0 })?
            .checked_add(if self.routing.noisy_gating { mul(e, d)? } else { 0 })?;
        let dense_layer = mul(mul(3, d)?, self.dense_width() as u64)?;
        let n_sparse = self.n_sparse_layers() as u64;
        let ffns = mul(n_sparse, sparse_layer)?.checked_add(mul(l - n_sparse, dense_layer)?)?;
        let heads = if self.tie_word_embeddings { 1 } else { 2 };
        mul(heads, mul(v, d)?)?.checked_add(d)?.checked_add(mul(l, attention)?)?.checked_add(ffns)
    }

    /// Bytes of all weights stored at `bytes_per_param` bytes each.
    pub fn weight_bytes(&self, bytes_per_param: usize) -> u64 {
        self.num_params() as u64 * bytes_per_param as u64
    }

    /// Bytes the KV cache needs per position of context (K and V of every layer) at
    /// `bytes_per_value` bytes each.
    pub fn kv_cache_bytes_per_token(&self, bytes_per_value: usize) -> u64 {
        (2 * self.n_layers * self.n_kv_heads * self.head_dim * bytes_per_value) as u64
    }

    /// Parameters of one sparse layer's experts (all of them), shared experts included.
    fn expert_params(&self) -> usize {
        self.n_experts * 3 * self.d_model * self.d_ff + self.shared_params()
    }

    /// Parameters of one layer's shared experts and their gate.
    fn shared_params(&self) -> usize {
        let gate = if self.routing.shared_expert_gate { self.d_model } else { 0 };
        self.routing.shared_width(self.d_ff).map_or(0, |width| 3 * self.d_model * width + gate)
    }

    /// Parameters of one layer's attention block and its two norms.
    fn attention_params(&self) -> usize {
        let (q, kv) = (self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim);
        let q_and_o = 2 * self.d_model * q;
        let k_and_v = 2 * self.d_model * kv;
        let [d, q64, kv64, dh] = [self.d_model, q, kv, self.head_dim].map(|x| x as u64);
        let extras = self.attention.extra_params(d, q64, kv64, dh).map_or(usize::MAX, |n| n as usize);
        q_and_o + k_and_v + extras + 2 * self.d_model
    }

    fn embedding_params(&self) -> usize {
        let head = if self.tie_word_embeddings { 0 } else { self.vocab_size * self.d_model };
        self.vocab_size * self.d_model + head + self.d_model
    }

    /// Parameters of one sparse layer's feed-forward block: router and experts.
    fn sparse_ffn_params(&self) -> usize {
        let router = (1 + self.routing.noisy_gating as usize) * self.n_experts * self.d_model; // gate (and noise)
        router + if self.routing.has_expert_bias() { self.n_experts } else { 0 } + self.expert_params()
    }

    /// All parameters of the model.
    pub fn num_params(&self) -> usize {
        let n_sparse = self.n_sparse_layers();
        let dense_ffn = 3 * self.d_model * self.dense_width();
        self.embedding_params()
            + self.n_layers * self.attention_params()
            + n_sparse * self.sparse_ffn_params()
            + (self.n_layers - n_sparse) * dense_ffn
    }

    /// Parameters that take part in one token's forward pass (only `top_k` routed experts per
    /// sparse layer, and the shared ones).
    pub fn num_active_params(&self) -> usize {
        let inactive = (self.n_experts - self.top_k) * 3 * self.d_model * self.d_ff;
        self.num_params() - self.n_sparse_layers() * inactive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        for config in [MixtralConfig::tiny(), MixtralConfig::mixtral_8x7b(), MixtralConfig::mixtral_8x22b()] {
            config.validate().unwrap();
        }
        for family in Family::ALL {
            let config = MixtralConfig::tiny_of(family);
            config.validate().unwrap();
            assert_eq!(config.checked_num_params(), Some(config.num_params() as u64), "{family}");
        }
    }

    #[test]
    fn options_a_family_cannot_express_are_refused_by_name() {
        let mut c = MixtralConfig::tiny_of(Family::Qwen3Moe);
        c.attention.qk_norm = crate::nn::QkNorm::Whole;
        assert!(c.validate().unwrap_err().to_string().contains("attention.qk_norm"));
        let c = MixtralConfig { dense_layers: vec![0], ..MixtralConfig::tiny() };
        assert!(c.validate().unwrap_err().to_string().contains("dense_layers"));
        let c = MixtralConfig { dense_layers: vec![1, 0], ..MixtralConfig::tiny_of(Family::Qwen2Moe) };
        assert!(c.validate().unwrap_err().to_string().contains("ascending"));
        let c = MixtralConfig { dense_layers: vec![7], ..MixtralConfig::tiny_of(Family::Qwen2Moe) };
        assert!(c.validate().unwrap_err().to_string().contains("layer 7"));
        let mut c = MixtralConfig::tiny_of(Family::GraniteMoe);
        c.multipliers.residual = f64::NAN;
        assert!(c.validate().unwrap_err().to_string().contains("residual_multiplier"));
        let mut c = MixtralConfig::tiny_of(Family::Olmoe);
        c.attention.clip_qkv = Some(-1.0);
        assert!(c.validate().unwrap_err().to_string().contains("clip_qkv"));
        let mut c = MixtralConfig::tiny_of(Family::Qwen3Moe);
        c.routing.scoring = crate::moe::Scoring::Sigmoid;
        assert!(c.validate().unwrap_err().to_string().contains("routing.scoring"));
        let mut c = MixtralConfig::tiny_of(Family::Qwen2Moe);
        c.routing.shared_expert_gate = false;
        assert!(c.validate().unwrap_err().to_string().contains("routing.n_shared_experts"));
    }

    #[test]
    fn mixtral_8x7b_parameter_counts_match_the_published_ones() {
        // Mistral: 46.7B total, 12.9B active.
        let c = MixtralConfig::mixtral_8x7b();
        assert_eq!(c.num_params(), 46_702_792_704);
        assert_eq!(c.num_active_params(), 12_879_925_248);
    }

    #[test]
    fn the_dense_counterpart_of_8x7b_is_mistral_7b() {
        // Mistral-7B-v0.1: 7,241,732,096 parameters, the same attention and vocabulary as 8x7B.
        let c = MixtralConfig::mixtral_8x7b().to_dense(14336);
        c.validate().unwrap();
        assert_eq!(c.num_params(), 7_241_732_096);
        assert_eq!(c.num_active_params(), c.num_params());
        assert_eq!(c.checked_num_params(), Some(7_241_732_096));
        let mut moe_shaped = c.clone();
        moe_shaped.n_experts = 8;
        assert!(moe_shaped.validate().unwrap_err().to_string().contains("num_local_experts"));
    }

    #[test]
    fn bad_fields_are_named() {
        let mut c = MixtralConfig::tiny();
        c.n_kv_heads = 3;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("num_key_value_heads"), "{err}");

        let mut c = MixtralConfig::tiny();
        c.top_k = 5;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("num_experts_per_tok"), "{err}");

        for absurd in [|c: &mut MixtralConfig| c.n_layers = 1 << 40, |c: &mut MixtralConfig| c.d_ff = usize::MAX / 2] {
            let mut c = MixtralConfig::tiny();
            absurd(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("no model is that large"), "{err}");
        }
        let c = MixtralConfig::mixtral_8x22b();
        assert_eq!(c.checked_num_params(), Some(c.num_params() as u64));
    }
}
