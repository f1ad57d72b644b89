//! The ways the families' attention blocks differ from Mixtral's: normalised queries and keys,
//! projection biases, clipped projections and the score scale.

use serde::{Deserialize, Serialize};

use crate::error::{MoeError, Result};

/// RMSNorm of the queries and keys before RoPE, with learned weights (`self_attn.q_norm`,
/// `self_attn.k_norm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QkNorm {
    /// None (Mixtral, Llama, Qwen2-MoE, Granite-MoE).
    #[default]
    None,
    /// Over each head's `Dh` values, one `[Dh]` weight shared by the heads (Qwen3-MoE).
    PerHead,
    /// Over the whole projection, `[H*Dh]` for q and `[G*Dh]` for k (OLMoE).
    Whole,
}

/// Options of [`super::Attention`]; the default is Mixtral's attention.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AttentionOptions {
    /// Query and key normalisation.
    pub qk_norm: QkNorm,
    /// Biases on the q, k and v projections (Qwen2-MoE's `qkv_bias`, `attention_bias`).
    pub qkv_bias: bool,
    /// A bias on the output projection (`attention_bias` of Qwen3-MoE, OLMoE, Granite-MoE).
    pub o_bias: bool,
    /// q, k and v are clamped to `[-c, c]` after the projection and its norm (OLMoE's `clip_qkv`).
    pub clip_qkv: Option<f64>,
    /// What the scores `q·k` are multiplied by, instead of `1/sqrt(Dh)` (Granite-MoE's
    /// `attention_multiplier`).
    pub scale: Option<f64>,
}

impl AttentionOptions {
    /// Checks the values; the error names the HF key of the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.clip_qkv.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
            return Err(MoeError::config("clip_qkv", "must be null or a positive number"));
        }
        if self.scale.is_some_and(|s| !(s.is_finite() && s > 0.0)) {
            return Err(MoeError::config("attention_multiplier", "must be a positive number"));
        }
        Ok(())
    }

    /// The factor the scores are multiplied by for heads `head_dim` wide.
    pub fn score_scale(&self, head_dim: usize) -> f64 {
        self.scale.unwrap_or_else(|| (head_dim as f64).powf(-0.5))
    }

    /// Parameters these options add to one layer's attention (norm weights and biases), in
    /// checked arithmetic: `None` when the count overflows `u64`.
    pub fn extra_params(&self, d_model: u64, q_dim: u64, kv_dim: u64, head_dim: u64) -> Option<u64> {
        let norms = match self.qk_norm {
            QkNorm::None => 0,
            QkNorm::PerHead => head_dim.checked_mul(2)?,
            QkNorm::Whole => q_dim.checked_add(kv_dim)?,
        };
        let qkv = if self.qkv_bias { q_dim.checked_add(kv_dim.checked_mul(2)?)? } else { 0 };
        norms.checked_add(qkv)?.checked_add(if self.o_bias { d_model } else { 0 })
    }
}
