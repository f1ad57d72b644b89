use std::path::Path;

use super::hub_weights::HostTensor;
use crate::config::MixtralConfig;
use crate::error::Result;
use crate::model::ParamId;
use crate::quant::QuantMatrix;

/// The tensors of a checkpoint by Hub key (`model.layers.0.self_attn.q_proj.weight`), decoded
/// to f32 in the Hub layout: what [`super::load_hub_weights`] builds a model from. Hub
/// safetensors folders ([`super::HubWeights`]) and GGUF files
/// ([`crate::gguf::GgufWeights`]) both provide it.
pub trait CheckpointTensors {
    /// The folder or file, for errors.
    fn location(&self) -> &Path;

    /// Every tensor: Hub keys, and the file's own names for tensors that have no Hub key (so
    /// that they are reported as unused).
    fn names(&self) -> Vec<String>;

    /// The most parameters the checkpoint's data could hold: a config that asks for more is
    /// refused before anything is allocated for it.
    fn max_params(&self) -> u64;

    /// A tensor's values in the Hub layout (`[out, in]` for linear weights); `Ok(None)` when
    /// the checkpoint has no such key.
    fn read_f32(&self, name: &str) -> Result<Option<HostTensor>>;

    /// The blocks of a projection (attention, expert, LM head) or of the embedding (`[V, D]`)
    /// stored quantized, `[out, in]` rows in the Hub's row order, to be kept as they are; `None` (the default) to load it as
    /// floats through [`Self::read_f32`].
    fn quantized(&self, param: ParamId, config: &MixtralConfig) -> Option<QuantMatrix> {
        let _ = (param, config);
        None
    }
}
