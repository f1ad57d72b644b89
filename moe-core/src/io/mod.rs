//! HuggingFace Hub-layout checkpoints: `config.json` + safetensors (single or sharded).
//!
//! Save a model and load it back (the same function, in f32):
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::{Int, Tensor, Tolerance};
//! use moe_core::config::MixtralConfig;
//! use moe_core::io::{load_hub_checkpoint, save_hub_checkpoint, WeightDtype};
//!
//! let device = Default::default();
//! let model = MixtralConfig::tiny().init::<NdArray>(&device); // random weights
//! let dir = std::env::temp_dir().join(format!("moe-core-doc-{}", std::process::id()));
//! save_hub_checkpoint(&model, &dir, WeightDtype::F32)?; // config.json + model.safetensors
//! let loaded = load_hub_checkpoint::<NdArray>(&dir, &device)?;
//!
//! let ids = Tensor::<NdArray, 2, Int>::from_ints([[1, 5, 9, 2]], &device);
//! let (a, b) = (model.forward(ids.clone()).logits, loaded.forward(ids).logits);
//! a.into_data().assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(1e-6));
//! std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod checkpoint_tensors;
mod export;
pub mod hub_keys;
mod hub_weights;
mod import;
mod quantize_on_load;
mod stacked_experts;

pub use checkpoint_tensors::CheckpointTensors;
pub use export::{save_hub_checkpoint, WeightDtype};
pub use hub_keys::{hub_tensor, parse_hub_key, HubKeys, HubLayout};
pub use hub_weights::{HostTensor, HubWeights};
pub use import::{load_hub_checkpoint, load_hub_weights};
pub use quantize_on_load::QuantizeOnLoad;
