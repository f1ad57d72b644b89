//! Quantizing a float checkpoint as it loads (mistral.rs's in-situ quantization, `--quantize`
//! in `moe-infer`): each projection is read, rounded to blocks and kept as blocks, one tensor at
//! a time, so a bf16 Hub checkpoint runs in a quarter of the memory with no GGUF file written.

use std::path::Path;

use super::{CheckpointTensors, HostTensor, HubKeys};
use crate::config::MixtralConfig;
use crate::error::{MoeError, Result};
use crate::model::ParamId;
use crate::quant::{quantize, GgmlType, QuantMatrix, WRITABLE};

/// [`CheckpointTensors`] whose attention, expert (or a dense model's FFN) and LM-head matrices
/// come out quantized to block types: pass it to [`super::load_hub_weights`]. Tensors the source already holds in
/// blocks (a quantized GGUF file's) are kept as they are; embeddings, norms and routers stay
/// floats (as llama.cpp's `llama-quantize` keeps norms and routers); a matrix whose rows are
/// not whole blocks of the type stays floats too.
///
/// ```
/// use burn::backend::NdArray;
/// use moe_core::config::MixtralConfig;
/// use moe_core::io::{load_hub_weights, save_hub_checkpoint, HubWeights, QuantizeOnLoad, WeightDtype};
/// use moe_core::quant::GgmlType;
///
/// let device = Default::default();
/// let model = MixtralConfig::tiny().init::<NdArray>(&device);
/// let dir = std::env::temp_dir().join(format!("moe-core-qol-{}", std::process::id()));
/// save_hub_checkpoint(&model, &dir, WeightDtype::F32)?;
/// let weights = QuantizeOnLoad::new(HubWeights::open(&dir)?, GgmlType::Q8_0)?;
/// let quantized = load_hub_weights::<NdArray>(model.config(), &weights, &device)?;
/// assert!(quantized.layers[0].self_attn.q_proj.blocks().is_some());
/// std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct QuantizeOnLoad<W> {
    inner: W,
    experts: GgmlType,
    /// The attention and LM-head type; `None` keeps them floats.
    dense: Option<GgmlType>,
}

impl<W: CheckpointTensors> QuantizeOnLoad<W> {
    /// Every projection as `ty` (a block type this crate writes: q8_0, q4_0, q4_k, q6_k).
    pub fn new(inner: W, ty: GgmlType) -> Result<Self> {
        check(ty)?;
        Ok(Self { inner, experts: ty, dense: Some(ty) })
    }

    /// The experts (a dense model's FFN) as `ty`, attention and LM head left in floats.
    pub fn experts_only(inner: W, ty: GgmlType) -> Result<Self> {
        check(ty)?;
        Ok(Self { inner, experts: ty, dense: None })
    }
}

/// Block types only: a float "quantization" would keep nothing in blocks.
fn check(ty: GgmlType) -> Result<()> {
    let blocks: Vec<_> = WRITABLE.iter().filter(|t| t.block_size() > 1).map(|t| t.name()).collect();
    if ty.block_size() > 1 && WRITABLE.contains(&ty) {
        Ok(())
    } else {
        Err(MoeError::Unsupported(format!("quantizing on load to {ty} (the block types are {})", blocks.join(", "))))
    }
}

impl<W: CheckpointTensors> CheckpointTensors for QuantizeOnLoad<W> {
    fn location(&self) -> &Path {
        self.inner.location()
    }

    fn names(&self) -> Vec<String> {
        self.inner.names()
    }

    fn max_params(&self) -> u64 {
        self.inner.max_params()
    }

    fn read_f32(&self, name: &str) -> Result<Option<HostTensor>> {
        self.inner.read_f32(name)
    }

    fn quantized(&self, param: ParamId, config: &MixtralConfig) -> Option<QuantMatrix> {
        if let Some(blocks) = self.inner.quantized(param, config) {
            return Some(blocks);
        }
        let ty = match param {
            // A dense model's FFN is where an MoE's experts are: most of the weights.
            ParamId::Expert(..) | ParamId::SharedExpert(..) | ParamId::Mlp(..) => self.experts,
            ParamId::Attention(..) | ParamId::LmHead => self.dense?,
            _ => return None,
        };
        let hub_shape = param.hub_shape(config); // [rows, cols] of each part
        let (rows, cols) = (hub_shape[0], hub_shape[1]);
        ty.row_bytes(cols)?;
        let mut matrix: Option<QuantMatrix> = None;
        for key in param.keys(config.family) {
            // Anything amiss (missing, misshapen, unreadable) is left to the float path, which
            // reports it with the rest of the checkpoint's problems.
            let tensor = self.inner.read_f32(&key).ok()??;
            if tensor.shape != hub_shape {
                return None;
            }
            let part = QuantMatrix::owned(ty, quantize(ty, &tensor.values)?, rows, cols);
            matrix = Some(match matrix {
                None => part,
                Some(m) => m.stack(part)?,
            });
        }
        matrix
    }
}
