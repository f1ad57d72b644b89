//! Model configuration: HF `config.json` parsing and the validated native [`MixtralConfig`].

mod hf;
mod mixtral;

pub use hf::HfMixtralConfig;
pub use mixtral::MixtralConfig;
