//! HuggingFace Hub-layout checkpoints: `config.json` + safetensors (single or sharded).

mod export;
mod hub_weights;
mod import;

pub use export::{save_hub_checkpoint, WeightDtype};
pub use hub_weights::HubWeights;
pub use import::{load_hub_checkpoint, load_hub_weights};
