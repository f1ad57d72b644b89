//! Training objectives: causal-LM cross-entropy and the router's auxiliary losses.

mod causal_lm;
mod load_balancing;
mod z_loss;

pub use causal_lm::{causal_lm_loss, IGNORE_INDEX};
pub use load_balancing::load_balancing_loss;
pub use z_loss::router_z_loss;
