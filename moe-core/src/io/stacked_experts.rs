//! Files that store a layer's experts stacked in one tensor, or a router under another name:
//! Granite-MoE's own checkpoints (`block_sparse_moe.input_linear.weight` `[E, 2F, D]`,
//! `output_linear.weight` `[E, D, F]`, `router.layer.weight`) and what transformers 5 writes
//! with `save_original_format=False` for any family (`mlp.experts.gate_up_proj` `[E, 2F, D]`,
//! `mlp.experts.down_proj` `[E, D, F]`, Mixtral's router as `mlp.gate.weight`, Granite's as
//! `router.weight`). [`HubWeights::with_keys_of`] shows them under the per-expert keys of the
//! key table ([`super::hub_keys`]), whatever the family, reading each expert's rows in place.

use super::hub_weights::Alias;
use super::{CheckpointTensors, HubKeys, HubWeights};
use crate::config::MixtralConfig;
use crate::error::{MoeError, Result};
use crate::model::{ExpertProj, ParamId};

impl HubWeights {
    /// These tensors under the keys a model of shape `config` reads: where a layer's router or
    /// experts are missing under the table's keys but present in another known form (see the
    /// module docs), the keys stand for them. A stacked tensor whose shape is not the config's
    /// `[E, 2F, D]` / `[E, D, F]` is an error naming it.
    pub fn with_keys_of(mut self, config: &MixtralConfig) -> Result<Self> {
        // A config larger than the files is refused by the loader before it walks the layers;
        // so is it here (its layer count could be anything).
        if config.checked_num_params().is_none_or(|n| n > self.max_params()) {
            return Ok(self);
        }
        let family = config.family;
        let (e, f, d) = (config.n_experts, config.d_ff, config.d_model);
        let mut problems = Vec::new();
        for n in (0..config.n_layers).filter(|&n| !config.is_dense_layer(n)) {
            let router = ParamId::Router(n).key(0, family);
            if self.shape(&router).is_none() {
                let other = [
                    format!("model.layers.{n}.mlp.gate.weight"),
                    format!("model.layers.{n}.block_sparse_moe.router.weight"),
                ]
                .into_iter()
                .find(|k| self.shape(k).is_some());
                if let Some(other) = other {
                    self.aliases.insert(router, Alias::Renamed(other));
                }
            }
            if self.shape(&ParamId::Expert(n, 0, ExpertProj::GateUp).key(0, family)).is_some() {
                continue;
            }
            let stacked = [
                ("mlp.experts.gate_up_proj", "mlp.experts.down_proj"),
                ("block_sparse_moe.experts.gate_up_proj", "block_sparse_moe.experts.down_proj"),
                ("block_sparse_moe.input_linear.weight", "block_sparse_moe.output_linear.weight"),
            ]
            .map(|(gate_up, down)| (format!("model.layers.{n}.{gate_up}"), format!("model.layers.{n}.{down}")));
            let Some((gate_up, down)) = stacked.into_iter().find(|(g, _)| self.shape(g).is_some()) else {
                continue;
            };
            let mut fits = true;
            for (name, want) in [(&gate_up, [e, 2 * f, d]), (&down, [e, d, f])] {
                match self.shape(name) {
                    Some(shape) if shape == want => {}
                    Some(shape) => {
                        problems.push(format!("tensor `{name}` has shape {shape:?}, the config needs {want:?}"));
                        fits = false;
                    }
                    None => {
                        problems
                            .push(format!("missing tensor `{name}` (the layer's experts are stacked in `{gate_up}`)"));
                        fits = false;
                    }
                }
            }
            if !fits {
                continue;
            }
            for x in 0..e {
                let rows = |tensor: &String, first, count| Alias::Rows { tensor: tensor.clone(), first, count };
                let [gate, up] = [0, 1].map(|part| ParamId::Expert(n, x, ExpertProj::GateUp).key(part, family));
                self.aliases.insert(gate, rows(&gate_up, x * 2 * f, f));
                self.aliases.insert(up, rows(&gate_up, x * 2 * f + f, f));
                self.aliases.insert(ParamId::Expert(n, x, ExpertProj::Down).key(0, family), rows(&down, x * d, d));
            }
        }
        match problems.is_empty() {
            true => Ok(self),
            false => Err(MoeError::CheckpointMismatch { dir: self.dir().to_path_buf(), problems }),
        }
    }
}
