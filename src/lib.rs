pub use moe_core;
