//! Training objectives: causal-LM cross-entropy and the router's auxiliary losses (Switch's
//! load balancing, noisy gating's importance + load, z-loss), and knowledge distillation.

mod causal_lm;
mod distillation;
mod importance_load;
mod load_balancing;
mod z_loss;

pub use causal_lm::{causal_lm_loss, IGNORE_INDEX};
pub use distillation::distillation_loss;
pub use importance_load::{cv_squared, importance_load_loss};
pub use load_balancing::load_balancing_loss;
pub use z_loss::router_z_loss;
