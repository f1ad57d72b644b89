//! Everything that can stop a run, each naming what to fix.

use std::path::{Path, PathBuf};

/// Errors of the training library.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A config file is not valid JSON of the expected form.
    #[error("config {path}: {reason}")]
    BadConfig {
        /// The config file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A setting is out of range or inconsistent with another.
    #[error("setting `{field}` {reason}")]
    Setting {
        /// The setting, as written in the config (`train.lr`).
        field: String,
        /// What is wrong with its value.
        reason: String,
    },
    /// `--preset` names no preset.
    #[error("unknown preset `{name}` (known: {known})")]
    UnknownPreset {
        /// The name given.
        name: String,
        /// The presets there are.
        known: String,
    },
    /// A data file cannot be used.
    #[error("data {path}: {reason}")]
    BadData {
        /// The data file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The tokenizer could not be loaded or trained.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error(
        "the data yields {got} sequence(s) of {seq_len} tokens for {split}; need at least {need} \
         (more data, a shorter train.seq_len or a larger train.val_fraction)"
    )]
    /// The data is too small for the sequence length and split.
    NotEnoughData {
        /// `train` or `validation`.
        split: &'static str,
        /// Sequences the data yields.
        got: usize,
        /// Sequences needed.
        need: usize,
        /// Tokens per sequence.
        seq_len: usize,
    },
    #[error(
        "step {step}: the {what} is not finite ({value}); training stopped. {}",
        resume_advice(.last_checkpoint.as_deref())
    )]
    /// The loss or gradient norm became NaN or infinite.
    NonFinite {
        /// The optimizer step.
        step: usize,
        /// `loss` or `gradient norm`.
        what: &'static str,
        /// The value seen.
        value: f32,
        /// The newest checkpoint written before it, if any.
        last_checkpoint: Option<PathBuf>,
    },
    /// `--resume` was given something that is not a run or checkpoint to continue.
    #[error("cannot resume from {path}: {reason}")]
    Resume {
        /// The folder given.
        path: PathBuf,
        /// Why it cannot be resumed.
        reason: String,
    },
    /// A checkpoint could not be written or read back.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint folder.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A plot could not be drawn or saved.
    #[error("plot {path}: {reason}")]
    Plot {
        /// The PNG file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// From the model library (config, checkpoint files).
    #[error(transparent)]
    Model(#[from] moe_core::MoeError),
    /// From generation (samples after training) and tokenizer files.
    #[error(transparent)]
    Generate(#[from] moe_generate::GenerateError),
}

/// What a user whose run diverged can do, depending on whether a checkpoint exists.
fn resume_advice(last_checkpoint: Option<&Path>) -> String {
    match last_checkpoint {
        Some(dir) => format!(
            "The last good checkpoint is {}; lower train.lr or set train.grad_clip and --resume the run",
            dir.display()
        ),
        None => "No checkpoint was written before it; lower train.lr or set train.grad_clip and start again".into(),
    }
}

impl TrainError {
    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Self::Io { path: path.as_ref().into(), source }
    }

    pub(crate) fn setting(field: &str, reason: impl Into<String>) -> Self {
        Self::Setting { field: field.into(), reason: reason.into() }
    }
}

/// `Result` with [`TrainError`].
pub type Result<T, E = TrainError> = std::result::Result<T, E>;
