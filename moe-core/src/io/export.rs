use std::borrow::Cow;
use std::path::Path;

use burn::tensor::backend::Backend;
use safetensors::{Dtype, View};

use super::hub_keys::{hub_tensor, HubKeys};
use crate::config::{Family, HfMixtralConfig};
use crate::error::{MoeError, Result};
use crate::fs::{write_atomic, write_atomic_with};
use crate::model::Mixtral;
use crate::model::{ExpertProj, ParamId};

/// The float type of exported weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightDtype {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
}

impl WeightDtype {
    /// The name HF writes in `config.json`.
    pub fn hf_name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::F16 => "float16",
            Self::BF16 => "bfloat16",
        }
    }

    fn safetensors(self) -> Dtype {
        match self {
            Self::F32 => Dtype::F32,
            Self::F16 => Dtype::F16,
            Self::BF16 => Dtype::BF16,
        }
    }

    fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            Self::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Self::F16 => values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
            Self::BF16 => values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect(),
        }
    }
}

/// Writes `model` as a Hub-layout folder (`config.json` + `model.safetensors`) that
/// [`super::load_hub_checkpoint`] and transformers' `MixtralForCausalLM.from_pretrained` load.
///
/// Tensors are read back from the device one at a time while the file is written, so the host
/// never holds more than one tensor. Both files are written under temporary names and renamed
/// into place, so an interrupted export never leaves a half-written checkpoint.
pub fn save_hub_checkpoint<B: Backend>(model: &Mixtral<B>, dir: impl AsRef<Path>, dtype: WeightDtype) -> Result<()> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|e| MoeError::io(dir, e))?;

    let config = HfMixtralConfig::from_mixtral(model.config(), dtype.hf_name());
    let json = serde_json::to_string_pretty(&config).expect("config serialises");
    write_atomic(&dir.join("config.json"), json.as_bytes())?;

    let tensors = hub_tensors(model, dtype);
    write_atomic_with(&dir.join("model.safetensors"), |tmp| {
        let metadata = Some([("format".to_string(), "pt".to_string())].into());
        safetensors::serialize_to_file(tensors, metadata, tmp)
            .map_err(|e| MoeError::Safetensors { path: tmp.to_path_buf(), reason: e.to_string() })
    })
}

/// One tensor to write, read from the device only when the writer reaches it.
struct LazyTensor<'a> {
    shape: Vec<usize>,
    dtype: WeightDtype,
    read: Box<dyn Fn() -> Vec<f32> + 'a>,
}

impl View for LazyTensor<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype.safetensors()
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.dtype.encode(&(self.read)()))
    }
    fn data_len(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.safetensors().bitsize() / 8
    }
}

/// Every checkpoint tensor of `model`, in the order of the key table; Granite-MoE's experts
/// stacked per layer as its checkpoints store them.
fn hub_tensors<B: Backend>(model: &Mixtral<B>, dtype: WeightDtype) -> Vec<(String, LazyTensor<'_>)> {
    let config = model.config();
    let mut out = Vec::new();
    let stacked = config.family == Family::GraniteMoe;
    for param in ParamId::all(config) {
        if let (true, ParamId::Expert(n, x, proj)) = (stacked, param) {
            if x == 0 {
                out.push(stacked_experts(model, n, proj, dtype));
            }
            continue;
        }
        let value = model.param(param).expect("ParamId::all lists the model's own parameters").value();
        let shape = param.hub_shape(config);
        for (part, key) in param.keys(config.family).into_iter().enumerate() {
            let value = value.clone();
            let read = Box::new(move || hub_tensor(&value, param.layout(), part).1);
            out.push((key, LazyTensor { shape: shape.clone(), dtype, read }));
        }
    }
    out
}

/// Layer `n`'s experts' `proj` stacked as Granite-MoE stores them:
/// `block_sparse_moe.input_linear.weight` `[E, 2F, D]` (each expert's gate rows, then its up
/// rows) or `block_sparse_moe.output_linear.weight` `[E, D, F]`.
fn stacked_experts<B: Backend>(
    model: &Mixtral<B>,
    n: usize,
    proj: ExpertProj,
    dtype: WeightDtype,
) -> (String, LazyTensor<'_>) {
    let config = model.config();
    let (name, parts) = match proj {
        ExpertProj::GateUp => ("input_linear", 2),
        ExpertProj::Down => ("output_linear", 1),
    };
    let one = ParamId::Expert(n, 0, proj).hub_shape(config);
    let shape = vec![config.n_experts, parts * one[0], one[1]];
    let read = Box::new(move || {
        let mut values = Vec::with_capacity(config.n_experts * parts * one[0] * one[1]);
        for x in 0..config.n_experts {
            let param = ParamId::Expert(n, x, proj);
            let value = model.param(param).expect("ParamId::all lists the model's own parameters").value();
            for part in 0..parts {
                values.extend(hub_tensor(&value, param.layout(), part).1);
            }
        }
        values
    });
    (format!("model.layers.{n}.block_sparse_moe.{name}.weight"), LazyTensor { shape, dtype, read })
}
