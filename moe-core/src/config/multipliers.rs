//! Granite's scalar multipliers of the embeddings, the residual branches and the logits.

use serde::{Deserialize, Serialize};

use crate::error::{MoeError, Result};

/// Constant factors some families put on the residual stream (Granite-MoE's
/// `embedding_multiplier`, `residual_multiplier`, `logits_scaling`); all 1 elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Multipliers {
    /// The token embeddings are multiplied by this.
    pub embedding: f64,
    /// The output of each attention and feed-forward block is multiplied by this before it is
    /// added to the residual stream.
    pub residual: f64,
    /// The logits are divided by this.
    pub logits_scaling: f64,
}

impl Default for Multipliers {
    fn default() -> Self {
        Self { embedding: 1.0, residual: 1.0, logits_scaling: 1.0 }
    }
}

impl Multipliers {
    /// Whether every factor is 1 (the model computes as if there were none).
    pub fn is_identity(&self) -> bool {
        *self == Self::default()
    }

    /// Checks the values; the error names the HF key of the first bad one.
    pub fn validate(&self) -> Result<()> {
        for (field, value) in [
            ("embedding_multiplier", self.embedding),
            ("residual_multiplier", self.residual),
            ("logits_scaling", self.logits_scaling),
        ] {
            if !(value.is_finite() && value != 0.0) {
                return Err(MoeError::config(field, "must be a finite non-zero number"));
            }
        }
        Ok(())
    }
}
