//! Turning settings and data paths into a ready [`RunSetup`], for a new run or a resumed one.
//!
//! A run folder holds `config.json` (the full settings), `data.json` (where the data came from),
//! `tokenizer.json`, `metrics.jsonl`, `checkpoints/`, `plots/` and, at the end, `model/`.

use std::path::{Path, PathBuf};

use moe_generate::TextTokenizer;
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::config::TrainConfig;
use crate::data::{self, synthetic, PackedData};
use crate::error::{Result, TrainError};
use crate::trainer::RunSetup;

/// Where a run's data comes from (saved as `data.json` so `--resume` rebuilds the same data).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataSpec {
    /// Text files, folders, JSONL; empty = the built-in multi-task corpus.
    pub paths: Vec<PathBuf>,
    /// A `tokenizer.json` to use; `None` = train a BPE on the data.
    pub tokenizer: Option<PathBuf>,
    /// Built-in corpus only: keep the documents of these tasks (names of
    /// [`synthetic::TASKS`]); empty = all of them. A Branch-Train-MiX branch trains on one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<String>,
}

/// Prepares a new run in `run_dir` (which must not hold a run already).
pub fn new_run(mut config: TrainConfig, mut spec: DataSpec, run_dir: &Path, progress: bool) -> Result<RunSetup> {
    config.validate()?;
    // Absolute, so that `--resume` finds the data from any working directory.
    for path in spec.paths.iter_mut().chain(spec.tokenizer.as_mut()) {
        *path = std::fs::canonicalize(&*path)
            .map_err(|e| TrainError::BadData { path: path.clone(), reason: e.to_string() })?;
    }
    if run_dir.join("config.json").exists() {
        return Err(TrainError::setting(
            "--out",
            format!("{} already holds a run: continue it with --resume {0}, or pick another --out", run_dir.display()),
        ));
    }
    let t = &config.train;
    let (docs, tasks) = documents(&spec, t.synthetic_documents, t.seed)?;
    // The model's (or the teacher's) own tokenizer: its embedding rows are those tokens.
    let given = t.init_from.as_ref().or(t.distill.as_ref().map(|d| &d.teacher)).map(|dir| dir.join("tokenizer.json"));
    let tokenizer = match (&spec.tokenizer, given) {
        (Some(path), _) => data::load_tokenizer(path)?,
        (None, Some(path)) => data::load_tokenizer(&path)?,
        (None, None) => data::train_tokenizer(&docs, t.tokenizer_vocab_size)?,
    };
    if t.init_from.is_some() && tokenizer.vocab_size() != config.model.vocab_size {
        return Err(TrainError::setting(
            "--tokenizer",
            format!("has {} tokens but the model of --init {}", tokenizer.vocab_size(), config.model.vocab_size),
        ));
    }
    config.model.vocab_size = tokenizer.vocab_size();
    config.model.bos_token_id = tokenizer.bos_id();
    config.model.eos_token_ids = tokenizer.eos_id().into_iter().collect();
    config.model.pad_token_id = None;
    config.validate()?;
    let packed = PackedData::build(&docs, &tokenizer, t.seq_len, t.val_fraction, t.seed)?;

    std::fs::create_dir_all(run_dir).map_err(|e| TrainError::io(run_dir, e))?;
    config.save(run_dir.join("config.json"))?;
    tokenizer.save(run_dir.join("tokenizer.json"))?;
    let spec_json = serde_json::to_string_pretty(&spec).expect("spec serialises");
    moe_core::fs::write_atomic(&run_dir.join("data.json"), spec_json.as_bytes())?;
    Ok(RunSetup { config, run_dir: run_dir.into(), tokenizer, data: packed, tasks, resume_from: None, progress })
}

/// Prepares to continue the run in `dir` (a run folder: its newest checkpoint; or a checkpoint
/// folder inside one), optionally to a new total of `steps`.
pub fn resume_run(dir: &Path, steps: Option<usize>, progress: bool) -> Result<RunSetup> {
    let fail = |reason: String| TrainError::Resume { path: dir.into(), reason };
    let (run_dir, checkpoint) = if dir.join("state.json").is_file() {
        let run = dir.parent().and_then(Path::parent).ok_or_else(|| fail("checkpoint outside a run folder".into()))?;
        (run.to_path_buf(), dir.to_path_buf())
    } else if dir.join("config.json").is_file() {
        let newest = checkpoint::list(dir)?
            .pop()
            .ok_or_else(|| fail("the run has no checkpoint yet (nothing to resume)".into()))?;
        (dir.to_path_buf(), newest)
    } else {
        return Err(fail("not a run folder (no config.json) nor a checkpoint (no state.json)".into()));
    };
    let mut config = TrainConfig::from_file(run_dir.join("config.json"))?;
    if let Some(steps) = steps {
        config.train.steps = steps;
    }
    config.validate()?;
    let state = checkpoint::read_state(&checkpoint)?;
    if state.step > config.train.steps {
        return Err(fail(format!("the checkpoint is at step {}, beyond --steps {}", state.step, config.train.steps)));
    }
    let spec_path = run_dir.join("data.json");
    let spec: DataSpec =
        serde_json::from_str(&std::fs::read_to_string(&spec_path).map_err(|e| TrainError::io(&spec_path, e))?)
            .map_err(|e| fail(format!("{}: {e}", spec_path.display())))?;
    let t = &config.train;
    let (docs, tasks) = documents(&spec, t.synthetic_documents, t.seed)?;
    let tokenizer = TextTokenizer::from_file(run_dir.join("tokenizer.json"))?;
    let packed = PackedData::build(&docs, &tokenizer, t.seq_len, t.val_fraction, t.seed)?;
    config.save(run_dir.join("config.json"))?;
    Ok(RunSetup { config, run_dir, tokenizer, data: packed, tasks, resume_from: Some(checkpoint), progress })
}

fn documents(spec: &DataSpec, synthetic_docs: usize, seed: u64) -> Result<(Vec<data::Document>, Vec<&'static str>)> {
    if !spec.paths.is_empty() {
        if !spec.tasks.is_empty() {
            return Err(TrainError::setting(
                "tasks",
                "selects tasks of the built-in corpus; user data has none".to_string(),
            ));
        }
        return Ok((data::load_documents(&spec.paths)?, Vec::new()));
    }
    let mut keep = Vec::new();
    for name in &spec.tasks {
        match synthetic::TASKS.iter().position(|t| t == name) {
            Some(id) => keep.push(id),
            None => {
                return Err(TrainError::setting(
                    "tasks",
                    format!("{name:?} is not a built-in task; they are {}", synthetic::TASKS.join(", ")),
                ))
            }
        }
    }
    let mut docs = synthetic::corpus(synthetic_docs, seed);
    if !keep.is_empty() {
        docs.retain(|d| d.task.is_some_and(|t| keep.contains(&t)));
    }
    Ok((docs, synthetic::TASKS.to_vec()))
}

/// `runs/<preset>-<n>` for the first `n` not taken yet.
pub fn default_run_dir(preset: &str) -> PathBuf {
    (1..).map(|n| PathBuf::from("runs").join(format!("{preset}-{n}"))).find(|p| !p.exists()).expect("some name is free")
}
