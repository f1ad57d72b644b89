//! Conversions between dense and sparse models: sparse upcycling (a dense model's FFN copied
//! into every expert) and Branch-Train-MiX's merge (dense branches' FFNs as the experts).

mod merge;
mod upcycle;

pub use merge::{merge_branches, MergeConfig};
pub use upcycle::{upcycle, RouterInit, UpcycleConfig};
