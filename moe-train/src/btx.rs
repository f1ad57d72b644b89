//! `moe-train btx`: Branch-Train-MiX (Sukhbaatar et al. 2024) as one command. A dense seed
//! model is trained on all the data, branched into one copy per data slice (the built-in
//! corpus's tasks, or one `--data` path each), each copy trained on its slice alone, the
//! branches merged into a MoE (their FFNs become the experts; attention, embeddings and norms
//! are averaged; the routers are new), and the MoE trained on all the data.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use moe_core::backend::{run_on, Cpu, Precision};
use moe_core::config::{HfMixtralConfig, MixtralConfig};
use moe_core::convert::{merge_branches, MergeConfig};
use moe_core::io::{load_hub_checkpoint, save_hub_checkpoint, WeightDtype};
use serde::Serialize;

use crate::config::TrainConfig;
use crate::data::synthetic::TASKS;
use crate::setup::{new_run, DataSpec};
use crate::trainer::{RunSummary, TrainTask};

/// Options of `moe-train btx`.
#[derive(clap::Args, Debug)]
pub struct BtxArgs {
    /// Steps of the dense seed model on all the data.
    #[arg(long, default_value_t = 200)]
    pub seed_steps: usize,
    /// Steps of each branch on its own slice.
    #[arg(long, default_value_t = 300)]
    pub branch_steps: usize,
    /// Steps of the merged MoE on all the data.
    #[arg(long, default_value_t = 300)]
    pub mix_steps: usize,
    /// Train only the merged model's routers in the mix stage (the branches stay frozen).
    #[arg(long)]
    pub routers_only: bool,
    /// Experts per token of the merged MoE.
    #[arg(long, default_value_t = 2)]
    pub top_k: usize,
    /// One slice (and branch) per path; default: the built-in corpus, one branch per task.
    #[arg(long)]
    pub data: Vec<PathBuf>,
    /// `--out`, `--backend`, `--seed`, `--json`.
    #[command(flatten)]
    pub common: crate::experiment::ExperimentArgs,
}

/// One stage of the pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct StageResult {
    /// `seed`, `branch <slice>`, `merged` (before mixing) or `mix`.
    pub stage: String,
    /// The data it trained (or was evaluated) on.
    pub data: String,
    /// Optimizer steps of the stage.
    pub steps: usize,
    /// Validation loss on the stage's own data at its end.
    pub val_loss: f32,
    /// Greedy exact-match accuracy per built-in task.
    pub task_accuracy: Vec<(String, f64)>,
    /// Task/expert NMI (MoE stages on the built-in corpus).
    pub nmi: Option<f64>,
    /// The stage's model folder.
    pub model_dir: PathBuf,
}

/// Runs the pipeline; returns its stages in order (also written to `OUT/btx.md` and `.json`).
pub fn run(args: &BtxArgs, out: &Path, progress: bool) -> Result<Vec<StageResult>> {
    let kind = args.common.backend.ensure_compiled()?;
    for (flag, steps) in
        [("--seed-steps", args.seed_steps), ("--branch-steps", args.branch_steps), ("--mix-steps", args.mix_steps)]
    {
        if steps == 0 {
            bail!("{flag} must be at least 1");
        }
    }
    let all = DataSpec { paths: args.data.clone(), ..DataSpec::default() };
    let slices: Vec<(String, DataSpec)> = match args.data.is_empty() {
        true => TASKS
            .iter()
            .map(|t| (t.to_string(), DataSpec { tasks: vec![t.to_string()], ..DataSpec::default() }))
            .collect(),
        false => args
            .data
            .iter()
            .map(|p| (p.display().to_string(), DataSpec { paths: vec![p.clone()], ..DataSpec::default() }))
            .collect(),
    };
    if slices.len() < 2 {
        bail!("Branch-Train-MiX needs at least two slices of data: give two or more --data paths");
    }
    if !(1..=slices.len()).contains(&args.top_k) {
        bail!("--top-k {} must be in 1..={} (one expert per slice)", args.top_k, slices.len());
    }
    let mut base = TrainConfig::tiny();
    // Each branch is as wide as one expert of the preset: the merged MoE has its shape.
    base.model = base.model.to_dense(base.model.d_ff);
    base.train.seed = args.common.seed.unwrap_or(base.train.seed);
    let all_name = if args.data.is_empty() { "all tasks".to_string() } else { "all --data".to_string() };
    let train = |name: &str, config: TrainConfig, spec: DataSpec| -> Result<RunSummary> {
        eprintln!("[btx] {name}");
        let setup = new_run(config, spec, &out.join(name), progress)?;
        Ok(run_on(kind, Precision::F32, TrainTask { setup: &setup })??)
    };
    let mut stages = Vec::new();

    let seed = train("seed", base.clone().with_steps(args.seed_steps), all.clone())?;
    stages.push(stage("seed", &all_name, &seed, seed.final_val_loss));
    let seed_dir = std::fs::canonicalize(&seed.model_dir)?;

    let mut branch_dirs = Vec::new();
    for (i, (name, slice)) in slices.iter().enumerate() {
        let mut config = base.clone().with_steps(args.branch_steps);
        config.model = model_config(&seed_dir)?;
        config.train.init_from = Some(seed_dir.clone());
        let run = train(&format!("branch-{i}"), config, slice.clone())?;
        stages.push(stage(&format!("branch {name}"), name, &run, run.final_val_loss));
        branch_dirs.push(std::fs::canonicalize(&run.model_dir)?);
    }

    let device = Default::default();
    let branches = branch_dirs
        .iter()
        .map(|dir| load_hub_checkpoint::<Cpu>(dir, &device).with_context(|| format!("{}", dir.display())))
        .collect::<Result<Vec<_>>>()?;
    let merged = merge_branches(branches, &MergeConfig { seed: base.train.seed, ..MergeConfig::new(args.top_k) })?;
    let merged_dir = out.join("merged");
    save_hub_checkpoint(&merged, &merged_dir, WeightDtype::F32)?;
    std::fs::copy(seed_dir.join("tokenizer.json"), merged_dir.join("tokenizer.json"))?;
    let merged_dir = std::fs::canonicalize(&merged_dir)?;

    let mut config = base.with_steps(args.mix_steps);
    config.model = model_config(&merged_dir)?;
    config.train.init_from = Some(merged_dir.clone());
    config.train.routers_only = args.routers_only;
    let mix = train("mix", config, all)?;
    stages.push(StageResult {
        stage: "merged (before mixing)".into(),
        data: all_name.clone(),
        steps: 0,
        val_loss: mix.initial_val_loss,
        task_accuracy: Vec::new(),
        nmi: None,
        model_dir: merged_dir,
    });
    stages.push(stage("mix", &all_name, &mix, mix.final_val_loss));

    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("btx.md"), markdown_table(&stages))?;
    std::fs::write(out.join("btx.json"), serde_json::to_string_pretty(&stages)?)?;
    Ok(stages)
}

fn stage(name: &str, data: &str, run: &RunSummary, val_loss: f32) -> StageResult {
    StageResult {
        stage: name.into(),
        data: data.into(),
        steps: run.steps,
        val_loss,
        task_accuracy: run.task_accuracy.clone(),
        nmi: run.specialisation_nmi,
        model_dir: run.model_dir.clone(),
    }
}

fn model_config(dir: &Path) -> Result<MixtralConfig> {
    Ok(HfMixtralConfig::from_file(dir.join("config.json"))?.to_mixtral()?)
}

/// The stages as a Markdown table, one column per task.
pub fn markdown_table(stages: &[StageResult]) -> String {
    let tasks: Vec<&str> = stages
        .iter()
        .find(|s| !s.task_accuracy.is_empty())
        .map(|s| s.task_accuracy.iter().map(|(t, _)| t.as_str()).collect())
        .unwrap_or_default();
    let mut out = String::from("| stage | data | steps | val loss |");
    for task in &tasks {
        out.push_str(&format!(" {task} |"));
    }
    out.push_str(" NMI |\n|---|---|---:|---:|");
    out.push_str(&"---:|".repeat(tasks.len() + 1));
    out.push('\n');
    for s in stages {
        out.push_str(&format!("| {} | {} | {} | {:.3} |", s.stage, s.data, s.steps, s.val_loss));
        for task in &tasks {
            match s.task_accuracy.iter().find(|(t, _)| t == task) {
                Some((_, a)) => out.push_str(&format!(" {:.0}% |", a * 100.0)),
                None => out.push_str(" |"),
            }
        }
        out.push_str(&format!(" {} |\n", s.nmi.map_or(String::new(), |n| format!("{n:.2}"))));
    }
    out
}
