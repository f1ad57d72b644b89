//! Train sparse Mixture-of-Experts transformers (Mixtral architecture) from scratch on Burn.
//!
//! The pieces, each usable on its own:
//! - [`config`]: one JSON file of model and training settings, presets `tiny` and `small`;
//! - [`data`]: the built-in multi-task corpus, the user's text/JSONL, tokenizer (given or a BPE
//!   trained on the data), packing and a resumable batch order;
//! - [`objective`](mod@objective): LM cross-entropy + load-balancing loss + router z-loss, as HF assembles it;
//! - [`optim`]: AdamW with decay groups, global-norm clipping, warmup + cosine schedule;
//! - [`checkpoint`]: atomic checkpoints (model, optimizer, progress) for exact resume;
//! - [`metrics`] and [`plots`]: per-step/per-eval JSONL, expert load, router entropy,
//!   task/expert specialisation, PNG plots;
//! - [`trainer::train`]: the loop that ties them together; [`setup`] prepares a run folder.
//! - [`compare`]: the routing schemes trained side by side (`moe-train compare`);
//! - [`upcycle`], [`btx`], [`distill`] and [`paths`]: from dense to sparse and back, and the
//!   ways to a MoE compared at equal compute.
//!
//! The `moe-train` binary is [`cli::run`].

#![warn(missing_docs)]

pub mod btx;
pub mod checkpoint;
pub mod cli;
pub mod compare;
pub mod config;
pub mod data;
pub mod distill;
pub mod error;
pub mod experiment;
pub mod metrics;
pub mod objective;
pub mod optim;
pub mod paths;
pub mod plots;
pub mod report;
pub mod samples;
pub mod setup;
pub mod trainer;
pub mod upcycle;

pub use config::{TrainConfig, TrainingSettings};
pub use error::{Result, TrainError};
pub use objective::{objective, Objective};
pub use optim::MoeOptimizer;
pub use trainer::{train, RunSetup, RunSummary};
