use std::borrow::Cow;
use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use safetensors::{Dtype, View};

use super::import::transpose;
use crate::config::HfMixtralConfig;
use crate::error::{MoeError, Result};
use crate::model::Mixtral;

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
            Self::F16 => values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
            Self::BF16 => values
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
        }
    }
}

/// Writes `model` as a Hub-layout folder (`config.json` + `model.safetensors`) that
/// [`super::load_hub_checkpoint`] and transformers' `MixtralForCausalLM.from_pretrained` load.
///
/// Tensors are read back from the device one at a time while the file is written, so the host
/// never holds more than one tensor. Both files are written under temporary names and renamed
/// into place, so an interrupted export never leaves a half-written checkpoint.
pub fn save_hub_checkpoint<B: Backend>(
    model: &Mixtral<B>,
    dir: impl AsRef<Path>,
    dtype: WeightDtype,
) -> Result<()> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|e| MoeError::io(dir, e))?;

    let config = HfMixtralConfig::from_mixtral(model.config(), dtype.hf_name());
    let json = serde_json::to_string_pretty(&config).expect("config serialises");
    write_atomically(&dir.join("config.json"), |tmp| {
        std::fs::write(tmp, json.as_bytes()).map_err(|e| MoeError::io(tmp, e))
    })?;

    let tensors = hub_tensors(model, dtype);
    write_atomically(&dir.join("model.safetensors"), |tmp| {
        let metadata = Some([("format".to_string(), "pt".to_string())].into());
        safetensors::serialize_to_file(tensors, metadata, tmp).map_err(|e| MoeError::Safetensors {
            path: tmp.to_path_buf(),
            reason: e.to_string(),
        })
    })
}

fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = path.with_extension("tmp");
    write(&tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| MoeError::io(path, e))
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

fn host<B: Backend, const N: usize>(t: Tensor<B, N>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

/// The inverse of the import table in `import.rs`.
fn hub_tensors<B: Backend>(model: &Mixtral<B>, dtype: WeightDtype) -> Vec<(String, LazyTensor<'_>)> {
    let mut out = Vec::new();
    let mut plain = |name: String, t: Tensor<B, 2>| {
        let shape = t.dims().to_vec();
        out.push((name, LazyTensor { shape, dtype, read: Box::new(move || host(t.clone())) }));
    };
    plain("model.embed_tokens.weight".into(), model.embed_tokens.weight.val());
    let mut tensors = Vec::new();
    let mut vector = |name: String, t: Tensor<B, 1>| {
        let shape = t.dims().to_vec();
        tensors.push((name, LazyTensor { shape, dtype, read: Box::new(move || host(t.clone())) }));
    };
    vector("model.norm.weight".into(), model.norm.weight.val());
    for (i, layer) in model.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        vector(format!("{p}.input_layernorm.weight"), layer.input_layernorm.weight.val());
        vector(
            format!("{p}.post_attention_layernorm.weight"),
            layer.post_attention_layernorm.weight.val(),
        );
    }
    out.extend(tensors);

    // Burn `[in, out]` (or one expert of a stacked `[E, in, out]`) -> PyTorch `[out, in]`.
    let mut linear = |name: String, t: Tensor<B, 2>| {
        let [d_in, d_out] = t.dims();
        out.push((
            name,
            LazyTensor {
                shape: vec![d_out, d_in],
                dtype,
                read: Box::new(move || transpose(&host(t.clone()), d_in, d_out)),
            },
        ));
    };
    if let Some(head) = &model.lm_head {
        linear("lm_head.weight".into(), head.weight.val());
    }
    for (i, layer) in model.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let attn = &layer.self_attn;
        for (proj, w) in [
            ("q_proj", &attn.q_proj),
            ("k_proj", &attn.k_proj),
            ("v_proj", &attn.v_proj),
            ("o_proj", &attn.o_proj),
        ] {
            linear(format!("{p}.self_attn.{proj}.weight"), w.weight.val());
        }
        let moe = &layer.block_sparse_moe;
        let m = format!("{p}.block_sparse_moe");
        linear(format!("{m}.gate.weight"), moe.router.gate.weight.val());
        for (w, stacked) in [("w1", &moe.experts.w1), ("w2", &moe.experts.w2), ("w3", &moe.experts.w3)] {
            let [e, d_in, d_out] = stacked.dims();
            for x in 0..e {
                let expert = stacked.val().narrow(0, x, 1).reshape([d_in, d_out]);
                linear(format!("{m}.experts.{x}.{w}.weight"), expert);
            }
        }
    }
    out
}
