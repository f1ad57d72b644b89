//! Everything that can stop a run, each naming what to fix.

use std::path::{Path, PathBuf};

/// Errors of the training library.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("config {path}: {reason}")]
    BadConfig { path: PathBuf, reason: String },
    #[error("setting `{field}` {reason}")]
    Setting { field: String, reason: String },
    #[error("unknown preset `{name}` (known: {known})")]
    UnknownPreset { name: String, known: String },
    #[error("data {path}: {reason}")]
    BadData { path: PathBuf, reason: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error(
        "the data yields {got} sequence(s) of {seq_len} tokens for {split}; need at least {need} \
         (more data, a shorter train.seq_len or a larger train.val_fraction)"
    )]
    NotEnoughData { split: &'static str, got: usize, need: usize, seq_len: usize },
    #[error(
        "step {step}: the {what} is not finite ({value}); training stopped. The last good \
         checkpoint is kept in {checkpoints}; lower train.lr or set train.grad_clip and resume"
    )]
    NonFinite { step: usize, what: &'static str, value: f32, checkpoints: PathBuf },
    #[error("cannot resume from {path}: {reason}")]
    Resume { path: PathBuf, reason: String },
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    #[error("plot {path}: {reason}")]
    Plot { path: PathBuf, reason: String },
    #[error(transparent)]
    Model(#[from] moe_core::MoeError),
    #[error(transparent)]
    Infer(#[from] moe_infer::InferError),
}

impl TrainError {
    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Self::Io { path: path.as_ref().into(), source }
    }

    pub(crate) fn setting(field: &str, reason: impl Into<String>) -> Self {
        Self::Setting { field: field.into(), reason: reason.into() }
    }
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;
