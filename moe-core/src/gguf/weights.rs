use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use super::names::{gguf_source, permute_rows, GgufSource};
use super::{dequantize, GgmlType, GgufFile};
use crate::config::MixtralConfig;
use crate::error::Result;
use crate::io::{CheckpointTensors, HostTensor, HubKeys, HubLayout};
use crate::model::ParamId;
use crate::quant::QuantMatrix;

/// A GGUF file's tensors seen by their Hub keys (see [`super::names`]): dequantized to f32,
/// experts cut out of merged tensors, q/k rows put back in the Hub's order; or, for quantized
/// projections, their blocks as they are ([`CheckpointTensors::quantized`]). What
/// [`crate::io::load_hub_weights`] builds a model from.
pub struct GgufWeights {
    file: Arc<GgufFile>,
    /// Hub key -> where its values are, for every key of the config whose tensor the file has.
    sources: BTreeMap<String, GgufSource>,
    /// File tensors no key reads (reported as unused by the loader).
    unread: Vec<String>,
}

impl GgufWeights {
    /// The tensors of `file` for a model of shape `config`; an error when the config describes
    /// more parameters than the file's data could hold (before anything is sized by it).
    pub fn new(file: Arc<GgufFile>, config: &MixtralConfig) -> Result<Self> {
        let (needed, held) = (config.checked_num_params().unwrap_or(u64::MAX), max_params(&file));
        if needed > held {
            return Err(file.error(format!(
                "the metadata describes {needed} parameters ({} layers, width {}, {} experts of {}), but the file's \
                 data holds at most {held}",
                config.n_layers, config.d_model, config.n_experts, config.d_ff
            )));
        }
        let merged = file.tensor("blk.0.ffn_gate_exps.weight").is_some();
        let mut sources = BTreeMap::new();
        let mut read = HashSet::new();
        for param in ParamId::all(config) {
            for (part, key) in param.keys(config.family).into_iter().enumerate() {
                let source = gguf_source(param, part, merged, config.n_heads, config.n_kv_heads);
                if file.tensor(&source.tensor).is_some() {
                    read.insert(source.tensor.clone());
                    sources.insert(key, source);
                }
            }
        }
        let unread = file.tensors().iter().map(|t| t.name.clone()).filter(|n| !read.contains(n)).collect();
        Ok(Self { file, sources, unread })
    }
}

/// Every type read stores at least 2 bits per value (Q2_K: 2.625).
fn max_params(file: &GgufFile) -> u64 {
    file.data_bytes().saturating_mul(4)
}

impl CheckpointTensors for GgufWeights {
    fn location(&self) -> &Path {
        self.file.path()
    }

    fn names(&self) -> Vec<String> {
        self.sources.keys().cloned().chain(self.unread.iter().cloned()).collect()
    }

    fn max_params(&self) -> u64 {
        max_params(&self.file)
    }

    fn read_f32(&self, name: &str) -> Result<Option<HostTensor>> {
        let Some(source) = self.sources.get(name) else {
            return Ok(None);
        };
        let info = self.file.tensor(&source.tensor).expect("sources name the file's tensors");
        let data = self.file.tensor_data(info);
        let (shape, bytes) = match source.expert {
            None => (info.shape(), data),
            Some(x) => {
                let [experts, rows, cols] = info.shape()[..] else {
                    return Err(self.file.error(format!(
                        "`{}` has shape {:?}; merged experts are [experts, rows, cols]",
                        info.name,
                        info.shape()
                    )));
                };
                if x >= experts {
                    return Err(self
                        .file
                        .error(format!("`{}` holds {experts} experts; expert {x} is missing", info.name)));
                }
                let size = info.n_bytes / experts;
                (vec![rows, cols], &data[x * size..(x + 1) * size])
            }
        };
        let mut values = vec![0.0; shape.iter().product()];
        dequantize(info.ggml_type, bytes, &mut values);
        if let (Some(heads), &[_, cols]) = (source.permuted_heads, &shape[..]) {
            // When the rows are not whole heads the loader reports the shape that disagrees.
            if let Some(hub) = permute_rows(&values, heads, cols, false) {
                values = hub;
            }
        }
        Ok(Some(HostTensor { shape, values }))
    }

    /// Projections whose every part is of a quantized type, in the shape the config needs:
    /// blocks read in place (q/k rows, which llama.cpp reorders, copied back into the Hub's order).
    fn quantized(&self, param: ParamId, config: &MixtralConfig) -> Option<QuantMatrix> {
        let matrix_like =
            matches!(param.layout(), HubLayout::Linear | HubLayout::FusedLinear) || param == ParamId::Embedding;
        if !matrix_like || matches!(param, ParamId::Router(_)) {
            return None;
        }
        let hub_shape = param.hub_shape(config); // [rows, cols] of each part
        let mut matrix: Option<QuantMatrix> = None;
        for key in param.keys(config.family) {
            let source = self.sources.get(&key)?;
            let info = self.file.tensor(&source.tensor)?;
            if matches!(info.ggml_type, GgmlType::F32 | GgmlType::F16 | GgmlType::Bf16) {
                return None;
            }
            let shape = info.shape();
            let (first, rows) = match (source.expert, &shape[..]) {
                (Some(x), &[experts, rows, cols]) if x < experts && [rows, cols] == hub_shape[..] => (x * rows, rows),
                (None, &[rows, cols]) if [rows, cols] == hub_shape[..] => (0, rows),
                _ => return None, // read_f32 reports the shape
            };
            let cols = hub_shape[1];
            let part = match source.permuted_heads {
                None => QuantMatrix::shared(
                    self.file.clone(),
                    self.file.tensor_start(info) + first * info.ggml_type.row_bytes(cols)?,
                    info.ggml_type,
                    rows,
                    cols,
                ),
                Some(heads) => QuantMatrix::owned(
                    info.ggml_type,
                    unpermuted_rows(self.file.tensor_data(info), heads, rows)?,
                    rows,
                    cols,
                ),
            };
            matrix = Some(match matrix {
                None => part,
                Some(m) => m.stack(part)?,
            });
        }
        matrix
    }
}

/// Whole rows of blocks moved from llama.cpp's q/k order back to the Hub's (see
/// [`permute_rows`]): the permutation applied to row indices.
fn unpermuted_rows(data: &[u8], heads: usize, rows: usize) -> Option<Vec<u8>> {
    let row_bytes = data.len() / rows.max(1);
    let index: Vec<f32> = (0..rows).map(|r| r as f32).collect();
    let order = permute_rows(&index, heads, 1, false)?;
    Some(order.iter().flat_map(|&r| &data[r as usize * row_bytes..(r as usize + 1) * row_bytes]).copied().collect())
}
