//! One integration-test binary for the workspace (each test binary re-instantiates Burn's
//! generics, which costs minutes of build time on small machines).

mod common;
#[cfg(feature = "cuda")]
mod cuda;
mod dense;
mod equivalence;
mod examples;
mod families;
mod gguf;
mod gradients;
mod import_errors;
mod infer;
mod kv_cache;
mod noisy_gating;
mod parity;
mod roundtrip;
mod routing;
mod tokenizer;
mod train_runs;
mod training;
#[cfg(feature = "wgpu")]
mod wgpu;
