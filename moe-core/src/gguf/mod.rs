//! GGUF, llama.cpp's model file: read Mixtral-architecture files (as llama.cpp, Ollama and the
//! Hub's quantized uploads write them), and dense Llama/Mistral ones, and write both.
//!
//! - [`GgufFile`]: the header, metadata and tensor directory, every size and offset checked
//!   against the file before use; tensor data stays in the memory-mapped file.
//! - [`mixtral_config`] / [`GgufWeights`]: the model shape from `llama.*` metadata, and the
//!   tensors under their Hub keys ([`names`] is the table), so that
//!   [`crate::io::load_hub_weights`] builds the model as it does from safetensors.
//! - [`dequantize`] / [`quantize`] (from [`crate::quant`]): F32, F16, BF16, Q4_0, Q4_1, Q5_0,
//!   Q5_1, Q8_0 and the k-quants Q2_K to Q6_K are read; F32, F16, BF16, Q8_0 and Q4_0 written.
//! - [`save_gguf`] / [`convert_to_gguf`]: a model, or a checkpoint tensor by tensor, to a file
//!   llama.cpp runs.
//!
//! Loading keeps quantized projections in their blocks, in the mapped file: on burn-flex the
//! model multiplies with them directly; other backends dequantize a projection the first time
//! it is used.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::{Int, Tensor, Tolerance};
//! use moe_core::config::MixtralConfig;
//! use moe_core::gguf::{load_gguf, save_gguf, GgmlType, GgufExport};
//!
//! let device = Default::default();
//! let model = MixtralConfig::tiny().init::<NdArray>(&device); // random weights
//! let path = std::env::temp_dir().join(format!("moe-core-gguf-doc-{}.gguf", std::process::id()));
//! save_gguf(&model, &path, &GgufExport::new(GgmlType::F32))?;
//! let loaded = load_gguf::<NdArray>(&path, &device)?;
//!
//! let ids = Tensor::<NdArray, 2, Int>::from_ints([[1, 5, 9, 2]], &device);
//! let (a, b) = (model.forward(ids.clone()).logits, loaded.forward(ids).logits);
//! a.into_data().assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(1e-5));
//! std::fs::remove_file(&path)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod export;
mod file;
pub mod names;
mod value;
mod weights;
mod writer;

use std::path::Path;
use std::sync::Arc;

use burn::tensor::backend::Backend;

pub use config::{mixtral_config, mixtral_metadata};
pub use export::{convert_to_gguf, save_gguf, GgufExport, Progress, ProgressFn, NO_TOKENIZER};
pub use file::{GgufFile, GgufTensorInfo};
pub use value::GgufValue;
pub use weights::GgufWeights;
pub use writer::{write_gguf, TensorPlan};

pub use crate::quant::{dequantize, quantize, GgmlType, WRITABLE};

use crate::error::Result;
use crate::io::load_hub_weights;
use crate::model::Mixtral;

/// Loads a Mixtral-architecture (or dense Llama/Mistral) GGUF file onto `device`. Quantized projections keep their
/// blocks, read in place from the memory-mapped file (see [`crate::nn::Projection`]); the rest
/// (embedding, norms, routers, and f32/f16/bf16 tensors) becomes float parameters.
pub fn load_gguf<B: Backend>(path: impl AsRef<Path>, device: &B::Device) -> Result<Mixtral<B>> {
    load_gguf_file(Arc::new(GgufFile::open(path)?), device)
}

/// [`load_gguf`] of an opened file (whose metadata the caller also wants: the tokenizer).
pub fn load_gguf_file<B: Backend>(file: Arc<GgufFile>, device: &B::Device) -> Result<Mixtral<B>> {
    let config = mixtral_config(&file)?;
    load_hub_weights(&config, &GgufWeights::new(file, &config)?, device)
}
