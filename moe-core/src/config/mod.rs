//! Model configuration: HF `config.json` parsing and the validated native [`MixtralConfig`],
//! with the [`Family`] it belongs to.

mod family;
mod hf;
mod mixtral;
mod multipliers;

pub use family::Family;
pub use hf::HfMixtralConfig;
pub use mixtral::MixtralConfig;
pub use multipliers::Multipliers;
