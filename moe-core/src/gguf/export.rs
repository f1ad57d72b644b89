use std::fmt;
use std::path::Path;
use std::sync::Arc;

use burn::tensor::backend::Backend;

use super::config::mixtral_metadata;
use super::names::{gguf_source, permute_rows};
use super::writer::{write_gguf, TensorPlan};
use super::{GgmlType, GgufValue};
use crate::config::MixtralConfig;
use crate::error::{MoeError, Result};
use crate::io::{hub_tensor, CheckpointTensors, HubKeys};
use crate::model::Mixtral;
use crate::model::{AttentionProj, ExpertProj, ParamId};
use crate::quant::{quantize, WRITABLE};

/// `tokenizer.ggml.model` of a file without a tokenizer, as llama.cpp writes it
/// (`LLAMA_VOCAB_TYPE_NONE`).
pub const NO_TOKENIZER: &str = "none";

/// How [`save_gguf`] stores a model's weights.
#[derive(Debug, Clone)]
pub struct GgufExport {
    /// Type of the expert matrices (most of a Mixtral's weights), or of a dense model's FFN.
    pub experts: GgmlType,
    /// Type of the other matrices: embedding, attention, LM head.
    pub dense: GgmlType,
    /// Metadata written after the model's own (a tokenizer's `tokenizer.ggml.*` keys, which
    /// llama.cpp needs to run the file).
    pub metadata: Vec<(String, GgufValue)>,
    /// Told of each tensor as it is encoded (a large model takes minutes).
    pub progress: Option<Progress>,
}

/// A callback given `(tensor number from 1, tensors in all, tensor name)`.
pub type ProgressFn = dyn Fn(usize, usize, &str) + Send + Sync;

/// [`GgufExport::progress`]: a shared [`ProgressFn`].
#[derive(Clone)]
pub struct Progress(pub Arc<ProgressFn>);

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Progress(..)")
    }
}

impl GgufExport {
    /// Every matrix as `ty`. Norm weights and routers stay f32 whatever the type, as
    /// llama.cpp's `llama-quantize` keeps them.
    pub fn new(ty: GgmlType) -> Self {
        Self { experts: ty, dense: ty, metadata: Vec::new(), progress: None }
    }

    /// Expert matrices as `experts`, the rest as `dense` (quantize the experts only, keeping
    /// attention in higher precision).
    pub fn experts_only(experts: GgmlType, dense: GgmlType) -> Self {
        Self { experts, dense, metadata: Vec::new(), progress: None }
    }

    /// Adds metadata entries.
    pub fn with_metadata(mut self, metadata: Vec<(String, GgufValue)>) -> Self {
        self.metadata.extend(metadata);
        self
    }

    /// Calls `progress(n, total, name)` as tensor `n` of `total` is encoded.
    pub fn with_progress(mut self, progress: impl Fn(usize, usize, &str) + Send + Sync + 'static) -> Self {
        self.progress = Some(Progress(Arc::new(progress)));
        self
    }
}

/// What one planned tensor holds.
enum Content {
    /// One parameter (part of a fused one), its rows reordered for llama.cpp's RoPE if `heads`.
    Param { param: ParamId, part: usize, heads: Option<usize> },
    /// One projection of every expert of a layer, stacked `[E, rows, cols]`.
    Experts { layer: usize, proj: ExpertProj, part: usize },
}

/// Writes `model` as a GGUF file in llama.cpp's `llama` layout (merged `ffn_*_exps` experts, or
/// a dense model's `ffn_{gate,up,down}`; q/k rows in llama.cpp's order), weights of the types `options` names, so that
/// [`super::load_gguf`] and llama.cpp read it. A matrix whose rows are not whole blocks of its
/// type is written as f16 instead (as `llama-quantize` falls back). Tensors are read from the
/// device and encoded one at a time.
pub fn save_gguf<B: Backend>(model: &Mixtral<B>, path: impl AsRef<Path>, options: &GgufExport) -> Result<()> {
    write_mixtral_gguf(model.config(), path.as_ref(), options, |param, part| {
        let value = model.param(param).expect("the plan lists the model's own parameters").value();
        Ok(hub_tensor(&value, param.layout(), part).1)
    })
}

/// [`save_gguf`] straight from checkpoint tensors (a Hub folder's [`crate::io::HubWeights`], a
/// GGUF file's [`super::GgufWeights`]) of a model of shape `config`, without building the model:
/// one tensor is in memory at a time (a layer's experts of one projection, for merged ones), so
/// a model larger than memory converts.
pub fn convert_to_gguf(
    config: &MixtralConfig,
    weights: &impl CheckpointTensors,
    path: impl AsRef<Path>,
    options: &GgufExport,
) -> Result<()> {
    write_mixtral_gguf(config, path.as_ref(), options, |param, part| {
        let key = param.key(part, config.family);
        let hub_shape = param.hub_shape(config);
        match weights.read_f32(&key)? {
            Some(t) if t.shape == hub_shape => Ok(t.values),
            Some(t) => Err(MoeError::CheckpointMismatch {
                dir: weights.location().to_path_buf(),
                problems: vec![format!("tensor `{key}` has shape {:?}, the config needs {hub_shape:?}", t.shape)],
            }),
            None => Err(MoeError::CheckpointMismatch {
                dir: weights.location().to_path_buf(),
                problems: vec![format!("missing tensor `{key}`")],
            }),
        }
    })
}

/// The first option of `config` outside llama.cpp's `llama` architecture (other than routing,
/// checked with [`crate::moe::RoutingConfig::inference_differs_from_mixtral`]).
fn beyond_llama(config: &MixtralConfig) -> Option<String> {
    let a = &config.attention;
    if config.family != crate::config::Family::Mixtral {
        Some(format!("family {}", config.family))
    } else if a.qkv_bias || a.o_bias {
        Some("attention biases".into())
    } else if !config.dense_layers.is_empty() {
        Some("dense layers between sparse ones".into())
    } else {
        None
    }
}

/// The writer behind both: `values(param, part)` gives a parameter's values in the Hub layout.
fn write_mixtral_gguf(
    config: &MixtralConfig,
    path: &Path,
    options: &GgufExport,
    values: impl Fn(ParamId, usize) -> Result<Vec<f32>>,
) -> Result<()> {
    config.validate()?;
    if let Some(what) = beyond_llama(config) {
        return Err(MoeError::Unsupported(format!(
            "writing a model with {what} to GGUF: this crate writes llama.cpp's `llama` architecture, which has no such \
             option, so the file would compute other logits"
        )));
    }
    // The file would load (here and in llama.cpp) as a model that routes the `llama` way.
    if let Some(field) = config.routing.inference_differs_from_mixtral() {
        return Err(MoeError::Unsupported(format!(
            "writing a model with {field} set to GGUF: llama.cpp's `llama` architecture routes as \
             Mixtral does (softmax scores, renormalised top-k weights, dropless, no selection bias, \
             expert groups or shared experts), so the file would compute other logits"
        )));
    }
    for ty in [options.experts, options.dense] {
        if !WRITABLE.contains(&ty) {
            let names: Vec<_> = WRITABLE.iter().map(|t| t.name()).collect();
            return Err(MoeError::Unsupported(format!(
                "writing {ty} weights (this crate writes {})",
                names.join(", ")
            )));
        }
    }
    let mut plan = Vec::new();
    let mut contents = Vec::new();
    let mut add = |content: Content, shape: Vec<usize>, ty: GgmlType| {
        let (name, ty) = match &content {
            Content::Param { param, part, .. } => (gguf_source(*param, *part, true, 0, 0).tensor, ty),
            Content::Experts { layer, proj, part } => {
                (gguf_source(ParamId::Expert(*layer, 0, *proj), *part, true, 0, 0).tensor, ty)
            }
        };
        let cols = *shape.last().expect("a shape");
        let ty = if shape.len() == 1 {
            GgmlType::F32
        } else if ty.row_bytes(cols).is_none() {
            GgmlType::F16
        } else {
            ty
        };
        plan.push(TensorPlan { name, dims: shape.into_iter().rev().collect(), ggml_type: ty });
        contents.push(content);
    };
    let param = |param: ParamId| Content::Param { param, part: 0, heads: None };
    add(param(ParamId::Embedding), ParamId::Embedding.hub_shape(config), options.dense);
    add(param(ParamId::FinalNorm), ParamId::FinalNorm.hub_shape(config), GgmlType::F32);
    if !config.tie_word_embeddings {
        add(param(ParamId::LmHead), ParamId::LmHead.hub_shape(config), options.dense);
    }
    for n in 0..config.n_layers {
        add(param(ParamId::InputNorm(n)), ParamId::InputNorm(n).hub_shape(config), GgmlType::F32);
        for (p, heads) in [
            (AttentionProj::Q, Some(config.n_heads)),
            (AttentionProj::K, Some(config.n_kv_heads)),
            (AttentionProj::V, None),
            (AttentionProj::O, None),
        ] {
            let a = ParamId::Attention(n, p);
            add(Content::Param { param: a, part: 0, heads }, a.hub_shape(config), options.dense);
        }
        add(param(ParamId::PostAttentionNorm(n)), ParamId::PostAttentionNorm(n).hub_shape(config), GgmlType::F32);
        if config.dense {
            for (proj, part) in [(ExpertProj::GateUp, 0), (ExpertProj::Down, 0), (ExpertProj::GateUp, 1)] {
                let mlp = ParamId::Mlp(n, proj);
                add(Content::Param { param: mlp, part, heads: None }, mlp.hub_shape(config), options.experts);
            }
            continue;
        }
        add(param(ParamId::Router(n)), ParamId::Router(n).hub_shape(config), GgmlType::F32);
        for (proj, part) in [(ExpertProj::GateUp, 0), (ExpertProj::Down, 0), (ExpertProj::GateUp, 1)] {
            let mut shape = ParamId::Expert(n, 0, proj).hub_shape(config);
            shape.insert(0, config.n_experts);
            add(Content::Experts { layer: n, proj, part }, shape, options.experts);
        }
    }

    let mut metadata = mixtral_metadata(config, "burn-moe");
    metadata.extend(options.metadata.iter().cloned());
    // llama.cpp refuses a file without this key ("key not found: tokenizer.ggml.model"); a
    // model with no tokenizer (one trained on token ids) says so with llama.cpp's "none".
    if !metadata.iter().any(|(key, _)| key == "tokenizer.ggml.model") {
        metadata.push(("tokenizer.ggml.model".into(), GgufValue::String(NO_TOKENIZER.into())));
    }
    write_gguf(path, &metadata, &plan, |i| {
        if let Some(Progress(progress)) = &options.progress {
            progress(i + 1, plan.len(), &plan[i].name);
        }
        let values = match contents[i] {
            Content::Param { param, part, heads } => {
                let v = values(param, part)?;
                match heads {
                    Some(heads) => permute_rows(&v, heads, config.d_model, true)
                        .expect("q/k weights are whole heads of even size (validated config)"),
                    None => v,
                }
            }
            Content::Experts { layer, proj, part } => {
                let mut all = Vec::new();
                for x in 0..config.n_experts {
                    all.extend(values(ParamId::Expert(layer, x, proj), part)?);
                }
                all
            }
        };
        Ok(quantize(plan[i].ggml_type, &values).expect("planned types are writable"))
    })
}
