use std::collections::HashSet;
use std::path::Path;

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::hub_weights::HostTensor;
use super::HubWeights;
use crate::config::MixtralConfig;
use crate::error::{MoeError, Result};
use crate::model::Mixtral;

/// Loads a Hub-layout Mixtral folder (`config.json` + safetensors) onto `device`.
///
/// Weights are converted from their on-disk dtype (F32/F16/BF16) to the device's float type.
/// Loading is strict: missing tensors, tensors the model does not use and shape mismatches
/// are reported together in one [`MoeError::CheckpointMismatch`].
pub fn load_hub_checkpoint<B: Backend>(
    dir: impl AsRef<Path>,
    device: &B::Device,
) -> Result<Mixtral<B>> {
    let dir = dir.as_ref();
    let config_path = dir.join("config.json");
    if !dir.is_dir() {
        return Err(MoeError::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "model folder not found"),
        ));
    }
    let config = MixtralConfig::from_hf_file(&config_path)?;
    let weights = HubWeights::open(dir)?;
    load_hub_weights(&config, &weights, device)
}

/// Builds a model of shape `config` from already-opened checkpoint tensors.
///
/// The key mapping, HF -> this crate (Linear weights are transposed from PyTorch's `[out, in]`
/// to Burn's `[in, out]`; the `E` experts of a layer are stacked into one tensor):
///
/// | checkpoint key                                           | model field                          |
/// |----------------------------------------------------------|--------------------------------------|
/// | `model.embed_tokens.weight` `[V, D]`                     | `embed_tokens.weight` (as is)        |
/// | `model.layers.N.input_layernorm.weight`                  | `layers[N].input_layernorm.weight`   |
/// | `model.layers.N.self_attn.{q,k,v,o}_proj.weight`         | `layers[N].self_attn.{q,k,v,o}_proj` |
/// | `model.layers.N.post_attention_layernorm.weight`         | `layers[N].post_attention_layernorm` |
/// | `model.layers.N.block_sparse_moe.gate.weight` `[E, D]`   | `...block_sparse_moe.router.gate`    |
/// | `model.layers.N.block_sparse_moe.experts.X.w{1,3}.weight`| `...experts.w{1,3}[X]` `[D, F]`      |
/// | `model.layers.N.block_sparse_moe.experts.X.w2.weight`    | `...experts.w2[X]` `[F, D]`          |
/// | `model.norm.weight`                                      | `norm.weight`                        |
/// | `lm_head.weight` `[V, D]`                                | `lm_head` (absent when tied)         |
///
/// Tolerated extras: `*.rotary_emb.inv_freq` (a buffer older checkpoints saved; RoPE is
/// recomputed from the config) and `lm_head.weight` when the embeddings are tied.
pub fn load_hub_weights<B: Backend>(
    config: &MixtralConfig,
    weights: &HubWeights,
    device: &B::Device,
) -> Result<Mixtral<B>> {
    config.validate()?;
    let (d, f, v, e) = (config.d_model, config.d_ff, config.vocab_size, config.n_experts);
    let q_dim = config.n_heads * config.head_dim;
    let kv_dim = config.n_kv_heads * config.head_dim;

    // Parameters start lazily initialised, so replacing them never materialises random weights.
    let mut model = config.init::<B>(device);
    let mut l = Loader {
        weights,
        device,
        used: HashSet::new(),
        problems: Vec::new(),
    };

    set(&mut model.embed_tokens.weight, l.plain("model.embed_tokens.weight", &[v, d]));
    set(&mut model.norm.weight, l.plain("model.norm.weight", &[d]));
    match &mut model.lm_head {
        Some(head) => set(&mut head.weight, l.linear("lm_head.weight", d, v)),
        None => {
            l.used.insert("lm_head.weight".into());
        }
    }
    for (i, layer) in model.layers.iter_mut().enumerate() {
        let p = format!("model.layers.{i}");
        set(&mut layer.input_layernorm.weight, l.plain(&format!("{p}.input_layernorm.weight"), &[d]));
        set(
            &mut layer.post_attention_layernorm.weight,
            l.plain(&format!("{p}.post_attention_layernorm.weight"), &[d]),
        );
        let attn = &mut layer.self_attn;
        set(&mut attn.q_proj.weight, l.linear(&format!("{p}.self_attn.q_proj.weight"), d, q_dim));
        set(&mut attn.k_proj.weight, l.linear(&format!("{p}.self_attn.k_proj.weight"), d, kv_dim));
        set(&mut attn.v_proj.weight, l.linear(&format!("{p}.self_attn.v_proj.weight"), d, kv_dim));
        set(&mut attn.o_proj.weight, l.linear(&format!("{p}.self_attn.o_proj.weight"), q_dim, d));
        let moe = &mut layer.block_sparse_moe;
        let m = format!("{p}.block_sparse_moe");
        set(&mut moe.router.gate.weight, l.linear(&format!("{m}.gate.weight"), d, e));
        let expert_key = |x: usize, w: &str| format!("{m}.experts.{x}.{w}.weight");
        set(&mut moe.experts.w1, l.stacked(e, |x| expert_key(x, "w1"), d, f));
        set(&mut moe.experts.w3, l.stacked(e, |x| expert_key(x, "w3"), d, f));
        set(&mut moe.experts.w2, l.stacked(e, |x| expert_key(x, "w2"), f, d));
    }

    for name in weights.names() {
        if !l.used.contains(name) && !name.ends_with("rotary_emb.inv_freq") {
            l.problems.push(format!("unused tensor `{name}` (not part of this model config)"));
        }
    }
    if l.problems.is_empty() {
        Ok(model)
    } else {
        Err(MoeError::CheckpointMismatch {
            dir: weights.dir().to_path_buf(),
            problems: l.problems,
        })
    }
}

fn set<B: Backend, const N: usize>(param: &mut Param<Tensor<B, N>>, value: Option<Tensor<B, N>>) {
    if let Some(value) = value {
        *param = Param::from_tensor(value);
    }
}

/// Reads tensors, recording every problem instead of stopping at the first.
struct Loader<'a, B: Backend> {
    weights: &'a HubWeights,
    device: &'a B::Device,
    used: HashSet<String>,
    problems: Vec<String>,
}

impl<B: Backend> Loader<'_, B> {
    fn read(&mut self, name: &str, expected: &[usize]) -> Option<HostTensor> {
        self.used.insert(name.to_string());
        match self.weights.read_f32(name) {
            Ok(Some(t)) if t.shape == expected => Some(t),
            Ok(Some(t)) => {
                self.problems.push(format!(
                    "tensor `{name}` has shape {:?}, the config needs {expected:?}",
                    t.shape
                ));
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

    /// A tensor stored as is (embeddings, norm weights).
    fn plain<const N: usize>(&mut self, name: &str, shape: &[usize]) -> Option<Tensor<B, N>> {
        let t = self.read(name, shape)?;
        Some(Tensor::from_data(TensorData::new(t.values, t.shape), self.device))
    }

    /// A PyTorch Linear weight `[d_out, d_in]`, returned as Burn's `[d_in, d_out]`.
    fn linear(&mut self, name: &str, d_in: usize, d_out: usize) -> Option<Tensor<B, 2>> {
        let t = self.read(name, &[d_out, d_in])?;
        let values = transpose(&t.values, d_out, d_in);
        Some(Tensor::from_data(TensorData::new(values, [d_in, d_out]), self.device))
    }

    /// `n` Linear weights `[d_out, d_in]` stacked into `[n, d_in, d_out]`.
    fn stacked(
        &mut self,
        n: usize,
        name: impl Fn(usize) -> String,
        d_in: usize,
        d_out: usize,
    ) -> Option<Tensor<B, 3>> {
        let mut values = Vec::with_capacity(n * d_in * d_out);
        let mut complete = true;
        for x in 0..n {
            match self.read(&name(x), &[d_out, d_in]) {
                Some(t) if complete => values.extend(transpose(&t.values, d_out, d_in)),
                Some(_) => {}
                None => complete = false,
            }
        }
        complete.then(|| Tensor::from_data(TensorData::new(values, [n, d_in, d_out]), self.device))
    }
}

/// Row-major `[rows, cols]` -> `[cols, rows]`, in cache-friendly tiles.
pub(crate) fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut out = vec![0.0; values.len()];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    out[c * rows + r] = values[r * cols + c];
                }
            }
        }
    }
    out
}
