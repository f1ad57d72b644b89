//! What the commands that train several runs and report on them together (`compare`,
//! `distill`, `btx`) share: their common options.

use std::path::PathBuf;

use moe_core::backend::BackendKind;

/// Options of every multi-run command.
#[derive(clap::Args, Debug)]
pub struct ExperimentArgs {
    /// Folder for the runs and the report. Default: `runs/<command>-<n>`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// ndarray or flex (CPU), wgpu, or cuda (when built with `--features cuda`).
    #[arg(long, default_value_t = BackendKind::fastest_cpu())]
    pub backend: BackendKind,
    /// Seed of every run.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl ExperimentArgs {
    /// `--out`, or the first free `runs/<command>-<n>`.
    pub fn out_dir(&self, command: &str) -> PathBuf {
        self.out.clone().unwrap_or_else(|| crate::setup::default_run_dir(command))
    }
}
