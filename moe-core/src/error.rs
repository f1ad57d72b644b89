//! The one error type of `moe-core`: everything that can go wrong at the boundaries (files,
//! configs, checkpoints). Forward passes are infallible.

use std::path::PathBuf;

/// Errors from configs, checkpoints and other inputs `moe-core` reads or writes.
#[derive(Debug, thiserror::Error)]
pub enum MoeError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },

    /// A JSON file (config.json, an index) is not valid JSON or not of the expected form.
    #[error("{path}: malformed JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },

    /// A config value is out of range or inconsistent with another.
    #[error("invalid config: `{field}` {reason}")]
    Config {
        /// The config field (`n_heads`).
        field: String,
        /// What is wrong with its value.
        reason: String,
    },

    /// A safetensors file is corrupt, truncated, or its header does not describe its data.
    #[error("{path}: not a valid safetensors file: {reason}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A GGUF file is corrupt, truncated, or holds something this crate cannot read.
    #[error("{path}: {reason}")]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What is wrong with it, naming the tensor or metadata key.
        reason: String,
    },

    /// A tensor in a checkpoint has a dtype this crate cannot load.
    #[error("tensor `{name}` in {path}: unsupported dtype {dtype} (expected F32, F16, BF16 or F64)")]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// Its dtype.
        dtype: String,
    },

    /// The checkpoint's tensors do not match the model: every problem is listed.
    #[error("checkpoint {dir} does not match the model config:\n{}", .problems.join("\n"))]
    CheckpointMismatch {
        /// The checkpoint folder.
        dir: PathBuf,
        /// One line per missing, unexpected or misshapen tensor.
        problems: Vec<String>,
    },

    /// A model directory has no weights in a layout we know.
    #[error("{dir}: no weights found (expected model.safetensors or model.safetensors.index.json)")]
    NoWeights {
        /// The model folder.
        dir: PathBuf,
    },

    /// An experts-per-token setting outside `1..=n_experts`.
    #[error("experts per token must be in 1..={n_experts}, got {got}")]
    ExpertsPerToken {
        /// The number asked for.
        got: usize,
        /// Experts per layer.
        n_experts: usize,
    },

    /// A backend or dtype that this build or device does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl MoeError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    pub(crate) fn config(field: &str, reason: impl Into<String>) -> Self {
        Self::Config { field: field.to_string(), reason: reason.into() }
    }
}

/// `Result` with [`MoeError`].
pub type Result<T, E = MoeError> = std::result::Result<T, E>;
