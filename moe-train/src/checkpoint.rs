//! Checkpoints: model, optimizer state and progress, written atomically; the last K kept.
//!
//! Layout: `RUN/checkpoints/step-000100/{model.mpk, optim-decay.mpk, optim-no-decay.mpk,
//! state.json}`. A checkpoint is written into a hidden temp folder and renamed into place, so a
//! crash mid-write never leaves a half checkpoint that `--resume` would pick.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use moe_core::model::Mixtral;
use serde::{Deserialize, Serialize};

use crate::config::TrainingSettings;
use crate::error::{Result, TrainError};
use crate::optim::MoeOptimizer;

/// Progress saved with a checkpoint: everything besides weights and optimizer moments that a
/// resumed run needs to continue exactly.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: usize,
    /// Micro-batches consumed (the data position; the batch order is a function of it).
    pub batches_seen: usize,
    /// Training tokens consumed so far.
    pub tokens_seen: u64,
    /// Training wall time so far (for tokens/s over a resumed run).
    pub train_secs: f64,
}

fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::new()
}

/// `RUN/checkpoints`.
pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Writes a checkpoint of step `state.step` and deletes all but the newest `keep`.
pub fn save<B: AutodiffBackend>(
    run_dir: &Path,
    model: &Mixtral<B>,
    optim: &MoeOptimizer<B>,
    state: &TrainState,
    keep: usize,
) -> Result<PathBuf> {
    let root = checkpoints_dir(run_dir);
    std::fs::create_dir_all(&root).map_err(|e| TrainError::io(&root, e))?;
    let name = format!("step-{:06}", state.step);
    let tmp = root.join(format!(".tmp-{name}"));
    let dest = root.join(&name);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    let fail = |reason: String| TrainError::Checkpoint { path: tmp.clone(), reason };
    let rec = recorder();
    rec.record(model.clone().into_record(), tmp.join("model")).map_err(|e| fail(e.to_string()))?;
    rec.record(optim.decay.to_record(), tmp.join("optim-decay")).map_err(|e| fail(e.to_string()))?;
    rec.record(optim.no_decay.to_record(), tmp.join("optim-no-decay")).map_err(|e| fail(e.to_string()))?;
    let json = serde_json::to_string_pretty(state).expect("state serialises");
    std::fs::write(tmp.join("state.json"), json).map_err(|e| TrainError::io(tmp.join("state.json"), e))?;
    if dest.exists() {
        std::fs::remove_dir_all(&dest).map_err(|e| TrainError::io(&dest, e))?;
    }
    std::fs::rename(&tmp, &dest).map_err(|e| TrainError::io(&dest, e))?;
    for old in list(run_dir)?.iter().rev().skip(keep) {
        std::fs::remove_dir_all(old).map_err(|e| TrainError::io(old, e))?;
    }
    Ok(dest)
}

/// Finished checkpoints of a run, oldest first.
pub fn list(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let root = checkpoints_dir(run_dir);
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(&root)
        .map_err(|e| TrainError::io(&root, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("step-") && p.join("state.json").is_file())
        })
        .collect();
    found.sort();
    Ok(found)
}

/// The progress saved in checkpoint folder `dir`.
pub fn read_state(dir: &Path) -> Result<TrainState> {
    let path = dir.join("state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Resume { path: dir.into(), reason: format!("state.json: {e}") })
}

/// Restores model, optimizer and progress from a checkpoint folder; `model` is a freshly built
/// one of the run's shape. The optimizer is built after loading because its parameter groups
/// are keyed by the parameter ids the checkpoint restores.
pub fn load<B: AutodiffBackend>(
    dir: &Path,
    model: Mixtral<B>,
    settings: &TrainingSettings,
    device: &B::Device,
) -> Result<(Mixtral<B>, MoeOptimizer<B>, TrainState)> {
    let fail = |reason: String| TrainError::Resume { path: dir.into(), reason };
    let state = read_state(dir)?;
    let rec = recorder();
    let record = rec.load(dir.join("model"), device).map_err(|e| fail(format!("model weights: {e}")))?;
    let model = model.load_record(record);
    let mut optim = MoeOptimizer::new(settings, &model);
    let decay = rec.load(dir.join("optim-decay"), device).map_err(|e| fail(format!("optimizer state: {e}")))?;
    let no_decay = rec.load(dir.join("optim-no-decay"), device).map_err(|e| fail(format!("optimizer state: {e}")))?;
    optim.decay = optim.decay.load_record(decay);
    optim.no_decay = optim.no_decay.load_record(no_decay);
    Ok((model, optim, state))
}
