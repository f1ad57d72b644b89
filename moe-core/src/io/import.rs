use std::collections::HashSet;
use std::path::Path;

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::hub_keys::{transpose, HubKeys, HubLayout};
use super::hub_weights::HostTensor;
use super::{CheckpointTensors, HubWeights};
use crate::config::MixtralConfig;
use crate::error::{MoeError, Result};
use crate::model::Mixtral;
use crate::model::{ParamId, ParamMut};
use crate::nn::{Projection, TokenEmbedding};

/// Loads a Hub-layout folder (`config.json` + safetensors) of any supported family onto `device`.
///
/// Weights are converted from their on-disk dtype (F32/F16/BF16) to the device's float type.
/// Loading is strict: missing tensors, tensors the model does not use and shape mismatches
/// are reported together in one [`MoeError::CheckpointMismatch`].
pub fn load_hub_checkpoint<B: Backend>(dir: impl AsRef<Path>, device: &B::Device) -> Result<Mixtral<B>> {
    let dir = dir.as_ref();
    let config_path = dir.join("config.json");
    if !dir.is_dir() {
        return Err(MoeError::io(dir, std::io::Error::new(std::io::ErrorKind::NotFound, "model folder not found")));
    }
    let config = MixtralConfig::from_hf_file(&config_path)?;
    let weights = HubWeights::open(dir)?.with_keys_of(&config)?;
    load_hub_weights(&config, &weights, device)
}

/// Builds a model of shape `config` from already-opened checkpoint tensors (a Hub folder's
/// [`HubWeights`], a GGUF file's [`crate::gguf::GgufWeights`]).
///
/// Which checkpoint key is which parameter, and how it is laid out, is the table of
/// [`super::hub_keys`]. Tolerated extras: `*.rotary_emb.inv_freq` (a buffer older checkpoints
/// saved; RoPE is recomputed from the config) and `lm_head.weight` when the embeddings are tied.
/// A config that describes more parameters than the checkpoint's data could hold is refused
/// before the model is built (an absurd `num_hidden_layers` would otherwise allocate for it).
pub fn load_hub_weights<B: Backend>(
    config: &MixtralConfig,
    weights: &impl CheckpointTensors,
    device: &B::Device,
) -> Result<Mixtral<B>> {
    config.validate()?;
    let (needed, held) = (config.checked_num_params().unwrap_or(u64::MAX), weights.max_params());
    if needed > held {
        return Err(MoeError::CheckpointMismatch {
            dir: weights.location().to_path_buf(),
            problems: vec![format!(
                "the config describes {needed} parameters ({} layers, hidden size {}, intermediate size {}, {} experts), \
                 but the checkpoint's data holds at most {held}: check num_hidden_layers and the sizes",
                config.n_layers, config.d_model, config.d_ff, config.n_experts
            )],
        });
    }
    // Parameters start lazily initialised, so replacing them never materialises random weights.
    let mut model = config.init::<B>(device);
    let mut l = Loader { weights, used: HashSet::new(), problems: Vec::new() };
    if config.tie_word_embeddings {
        l.used.insert(ParamId::LmHead.key(0, config.family));
    }
    for param in ParamId::all(config) {
        if let Some(matrix) = weights.quantized(param, config) {
            if param == ParamId::Embedding {
                model.embed_tokens = TokenEmbedding::quantized(matrix, device);
                l.used.extend(param.keys(config.family));
                continue;
            }
            if let Some(projection) = model.projection_mut(param) {
                *projection = Projection::quantized(matrix, device);
                l.used.extend(param.keys(config.family));
                continue;
            }
        }
        let Some(values) = l.read_param(param, config) else {
            continue;
        };
        let shape = param.shape(config);
        let data = TensorData::new(values, shape);
        match model.param_mut(param).expect("ParamId::all lists the model's own parameters") {
            ParamMut::Rank1(p) => *p = Param::from_tensor(Tensor::from_data(data, device)),
            ParamMut::Rank2(p) => *p = Param::from_tensor(Tensor::from_data(data, device)),
        }
    }

    for name in weights.names() {
        if !l.used.contains(&name) && !name.ends_with("rotary_emb.inv_freq") {
            l.problems.push(format!("unused tensor `{name}` (not part of this model config)"));
        }
    }
    if l.problems.is_empty() {
        Ok(model)
    } else {
        Err(MoeError::CheckpointMismatch { dir: weights.location().to_path_buf(), problems: l.problems })
    }
}

/// Reads tensors, recording every problem instead of stopping at the first.
struct Loader<'a, W> {
    weights: &'a W,
    used: HashSet<String>,
    problems: Vec<String>,
}

impl<W: CheckpointTensors> Loader<'_, W> {
    fn read(&mut self, name: &str, expected: &[usize]) -> Option<HostTensor> {
        self.used.insert(name.to_string());
        match self.weights.read_f32(name) {
            Ok(Some(t)) if t.shape == expected => Some(t),
            Ok(Some(t)) => {
                self.problems.push(format!("tensor `{name}` has shape {:?}, the config needs {expected:?}", t.shape));
                None
            }
            Ok(None) => {
                self.problems.push(format!("missing tensor `{name}`"));
                None
            }
            Err(e) => {
                self.problems.push(e.to_string());
                None
            }
        }
    }

    /// The values of `param` in this crate's layout; `None` (with the problems recorded) when
    /// any of its checkpoint tensors is missing or mis-shaped.
    fn read_param(&mut self, param: ParamId, config: &MixtralConfig) -> Option<Vec<f32>> {
        let hub_shape = param.hub_shape(config);
        let [d_out, d_in] = [hub_shape[0], *hub_shape.last().expect("a shape")];
        let mut parts = Vec::new();
        let mut complete = true;
        for key in param.keys(config.family) {
            // Every key is read, so that one error lists every problem.
            match self.read(&key, &hub_shape) {
                Some(t) if complete => parts.push(match param.layout() {
                    HubLayout::AsIs => t.values,
                    HubLayout::Linear | HubLayout::FusedLinear => transpose(&t.values, d_out, d_in),
                }),
                Some(_) => {}
                None => complete = false,
            }
        }
        if !complete {
            return None;
        }
        if parts.len() == 1 {
            return parts.pop();
        }
        // Fused: row `i` of the parameter is row `i` of each part's `[in, out]`, side by side.
        let mut values = Vec::with_capacity(parts.len() * d_in * d_out);
        for i in 0..d_in {
            for part in &parts {
                values.extend_from_slice(&part[i * d_out..(i + 1) * d_out]);
            }
        }
        Some(values)
    }
}
