//! `moe-train btx`: Branch-Train-MiX (Sukhbaatar et al. 2024) as one command. A dense seed
//! model is trained on all the data, branched into one copy per data slice (the built-in
//! corpus's tasks, or one `--data` path each), each copy trained on its slice alone, the
//! branches merged into a MoE (their FFNs become the experts; attention, embeddings and norms
//! are averaged; the routers are new), and the MoE trained on all the data.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use moe_core::backend::{run_on, BackendKind, Cpu, Precision};
use moe_core::config::{HfMixtralConfig, MixtralConfig};
use moe_core::convert::{merge_branches, MergeConfig};
use moe_core::io::{load_hub_checkpoint, save_hub_checkpoint, WeightDtype};
use serde::Serialize;

use crate::config::TrainConfig;
use crate::data::synthetic::TASKS;
use crate::report::{percent, task_names, task_value, write_md_json, Table};
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

/// One Branch-Train-MiX pipeline: what `moe-train btx` runs, and the BTX path of `moe-train
/// paths`.
#[derive(Debug, Clone)]
pub struct BtxPlan {
    /// The dense seed's settings: its model (each branch, and so each expert, is as wide as
    /// its FFN) and the training settings of every stage.
    pub base: TrainConfig,
    /// All the data (seed and mix stages), and its name in the report.
    pub all: (String, DataSpec),
    /// One slice per branch, with its name.
    pub slices: Vec<(String, DataSpec)>,
    /// Steps of the seed, of each branch, and of the mix stage.
    pub steps: [usize; 3],
    /// Experts per token of the merged MoE.
    pub top_k: usize,
    /// Train only the merged model's routers in the mix stage.
    pub routers_only: bool,
}

/// A finished pipeline: its stages in order, and the seed and mix runs in full.
#[derive(Debug, Clone)]
pub struct BtxRun {
    /// Every stage, as reported.
    pub stages: Vec<StageResult>,
    /// The dense seed's run.
    pub seed: RunSummary,
    /// The merged MoE's run.
    pub mix: RunSummary,
}

/// The built-in corpus cut into its tasks, one slice each.
pub fn task_slices() -> Vec<(String, DataSpec)> {
    TASKS.iter().map(|t| (t.to_string(), DataSpec { tasks: vec![t.to_string()], ..DataSpec::default() })).collect()
}

/// Runs `moe-train btx`; returns its stages in order (also written to `OUT/btx.md` and `.json`).
pub fn run(args: &BtxArgs, out: &Path, progress: bool) -> Result<Vec<StageResult>> {
    let kind = args.common.backend.ensure_compiled()?;
    let all = DataSpec { paths: args.data.clone(), ..DataSpec::default() };
    let slices: Vec<(String, DataSpec)> = match args.data.is_empty() {
        true => task_slices(),
        false => args
            .data
            .iter()
            .map(|p| (p.display().to_string(), DataSpec { paths: vec![p.clone()], ..DataSpec::default() }))
            .collect(),
    };
    let mut base = TrainConfig::tiny();
    // Each branch is as wide as one expert of the preset: the merged MoE has its shape.
    base.model = base.model.to_dense(base.model.d_ff);
    base.train.seed = args.common.seed.unwrap_or(base.train.seed);
    let all_name = if args.data.is_empty() { "all tasks".to_string() } else { "all --data".to_string() };
    let plan = BtxPlan {
        base,
        all: (all_name, all),
        slices,
        steps: [args.seed_steps, args.branch_steps, args.mix_steps],
        top_k: args.top_k,
        routers_only: args.routers_only,
    };
    Ok(run_plan(&plan, kind, out, progress)?.stages)
}

/// Runs the pipeline `plan` on backend `kind` into `out` (a folder per stage, and `btx.md`,
/// `btx.json` reporting them).
pub fn run_plan(plan: &BtxPlan, kind: BackendKind, out: &Path, progress: bool) -> Result<BtxRun> {
    for (flag, steps) in ["--seed-steps", "--branch-steps", "--mix-steps"].into_iter().zip(plan.steps) {
        if steps == 0 {
            bail!("{flag} must be at least 1");
        }
    }
    let [seed_steps, branch_steps, mix_steps] = plan.steps;
    let (slices, (all_name, all)) = (&plan.slices, &plan.all);
    if slices.len() < 2 {
        bail!("Branch-Train-MiX needs at least two slices of data: give two or more --data paths");
    }
    if !(1..=slices.len()).contains(&plan.top_k) {
        bail!("--top-k {} must be in 1..={} (one expert per slice)", plan.top_k, slices.len());
    }
    if !plan.base.model.dense {
        bail!("the Branch-Train-MiX seed must be a dense model");
    }
    let base = &plan.base;
    let train = |name: &str, config: TrainConfig, spec: DataSpec| -> Result<RunSummary> {
        eprintln!("[btx] {name}");
        let setup = new_run(config, spec, &out.join(name), progress)?;
        Ok(run_on(kind, Precision::F32, TrainTask { setup: &setup })??)
    };
    let mut stages = Vec::new();

    let seed = train("seed", base.clone().with_steps(seed_steps), all.clone())?;
    stages.push(stage("seed", all_name, &seed, seed.final_val_loss));
    let seed_dir = std::fs::canonicalize(&seed.model_dir)?;

    let mut branch_dirs = Vec::new();
    for (i, (name, slice)) in slices.iter().enumerate() {
        let mut config = base.clone().with_steps(branch_steps);
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
    let merged = merge_branches(branches, &MergeConfig { seed: base.train.seed, ..MergeConfig::new(plan.top_k) })?;
    let merged_dir = out.join("merged");
    save_hub_checkpoint(&merged, &merged_dir, WeightDtype::F32)?;
    std::fs::copy(seed_dir.join("tokenizer.json"), merged_dir.join("tokenizer.json"))?;
    let merged_dir = std::fs::canonicalize(&merged_dir)?;

    let mut config = base.clone().with_steps(mix_steps);
    config.model = model_config(&merged_dir)?;
    config.train.init_from = Some(merged_dir.clone());
    config.train.routers_only = plan.routers_only;
    let mix = train("mix", config, all.clone())?;
    stages.push(StageResult {
        stage: "merged (before mixing)".into(),
        data: all_name.clone(),
        steps: 0,
        val_loss: mix.initial_val_loss,
        task_accuracy: Vec::new(),
        nmi: None,
        model_dir: merged_dir,
    });
    stages.push(stage("mix", all_name, &mix, mix.final_val_loss));

    write_md_json(out, "btx", &markdown_table(&stages), &stages)?;
    Ok(BtxRun { stages, seed, mix })
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
    let tasks = task_names(stages.iter().map(|s| &s.task_accuracy[..]));
    let mut table = Table::new(&["stage", "data", "steps", "val loss"], 2, &tasks, &["NMI"]);
    for s in stages {
        let mut cells = vec![s.stage.clone(), s.data.clone(), s.steps.to_string(), format!("{:.3}", s.val_loss)];
        cells.extend(tasks.iter().map(|t| task_value(&s.task_accuracy, t).map_or(String::new(), percent)));
        cells.push(s.nmi.map_or(String::new(), |n| format!("{n:.2}")));
        table.row(cells);
    }
    table.into_string()
}
