pub use moe_core;
pub use moe_infer;
