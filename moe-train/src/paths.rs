//! `moe-train paths`: the ways to a sparse model compared at equal training compute on the
//! built-in corpus, one table and one plot:
//!
//! - **joint**: the MoE trained from scratch, every expert at once (what `moe-train` does);
//! - **upcycled**: a dense model one expert wide, trained, copied into every expert (sparse
//!   upcycling) and trained on as a MoE;
//! - **BTX**: a dense seed branched into one copy per task, each trained on its task, merged
//!   into a MoE and trained on (Branch-Train-MiX);
//! - **dense**: one FFN as wide as the MoE's top-k experts together, the same compute per token;
//! - **distilled**: that dense shape trained on the joint MoE's distributions as well as the
//!   data, against the teacher and against the dense model trained alone.
//!
//! The three MoE paths end in the same shape: one expert per task (BTX makes one per branch),
//! top-2, each expert as wide as the tiny preset's. Compute is counted as training FLOPs,
//! `6 · N · T` (Kaplan et al. 2020): `N` the parameters a token uses (its top-k experts only;
//! the embedding table is looked up, not multiplied), `T` the tokens trained on;
//! attention's `T²` term is left out (64-token sequences). Distillation also pays the teacher's
//! forward passes, `2 · N_teacher · T`, and its row counts them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use moe_core::backend::{run_on, Precision};
use moe_core::config::MixtralConfig;
use moe_core::convert::UpcycleConfig;
use serde::Serialize;

use crate::btx::{run_plan, task_slices, BtxPlan};
use crate::config::{DistillSettings, TrainConfig};
use crate::data::synthetic::TASKS;
use crate::metrics::{read_log, LogRecord};
use crate::report::{percent, task_names, task_value, write_md_json, Table};
use crate::setup::{new_run, DataSpec};
use crate::trainer::{RunSummary, TrainTask};

/// Shares of the BTX budget: the seed, all branches together, the mixing run. The branches get
/// the most, as in the paper, where they are the expensive, parallel part.
pub const BTX_SHARES: [f64; 3] = [0.2, 0.5, 0.3];

/// Options of `moe-train paths`.
#[derive(clap::Args, Debug)]
pub struct PathsArgs {
    /// The compute budget of every path, in optimizer steps of the jointly trained MoE.
    #[arg(long, default_value_t = 1200)]
    pub steps: usize,
    /// Share of the budget the upcycled path spends on its dense model (the rest trains the
    /// upcycled MoE).
    #[arg(long, default_value_t = 0.5)]
    pub dense_share: f64,
    /// `--out`, `--backend`, `--seed`, `--json`.
    #[command(flatten)]
    pub common: crate::experiment::ExperimentArgs,
}

/// One row of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct PathResult {
    /// `joint`, `upcycled`, `BTX`, `dense` or `distilled`.
    pub path: String,
    /// Its stages and their steps.
    pub recipe: String,
    /// Training FLOPs spent (see the module docs).
    pub compute_flops: f64,
    /// All parameters of the final model.
    pub params: usize,
    /// Parameters per token.
    pub active_params: usize,
    /// Validation loss (all tasks) at the end.
    pub val_loss: f32,
    /// Validation loss per task at the end.
    pub task_val_loss: Vec<(String, f64)>,
    /// Greedy exact-match accuracy per task.
    pub task_accuracy: Vec<(String, f64)>,
    /// Task/expert NMI, mean over layers (MoE paths).
    pub nmi: Option<f64>,
    /// `(training FLOPs so far, val loss)` at every evaluation on all tasks, for the plot: one
    /// segment per stage trained on all of them (BTX's branches train and evaluate on one task
    /// each, so its line breaks there).
    pub curve: Vec<Vec<(f64, f32)>>,
    /// The final model's folder.
    pub model_dir: PathBuf,
}

/// Training FLOPs per token of a model of shape `c`: `6 · N`, `N` the parameters a token uses
/// (the embedding table is a lookup unless it is also the tied LM head).
pub fn flops_per_token(c: &MixtralConfig) -> f64 {
    let lookup = if c.tie_word_embeddings { 0 } else { c.vocab_size * c.d_model };
    6.0 * (c.num_active_params() - lookup) as f64
}

/// Steps of a model of shape `c` that cost `share` of `budget` steps of shape `reference`
/// (at least 1).
pub fn equal_compute_steps(share: f64, budget: usize, reference: &MixtralConfig, c: &MixtralConfig) -> usize {
    let steps = share * budget as f64 * flops_per_token(reference) / flops_per_token(c);
    (steps.round() as usize).max(1)
}

/// Runs every path; returns the rows (also written to `OUT/paths.md`, `.json` and `.png`).
pub fn run(args: &PathsArgs, out: &Path, progress: bool) -> Result<Vec<PathResult>> {
    let kind = args.common.backend.ensure_compiled()?;
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    if !(args.dense_share > 0.0 && args.dense_share < 1.0) {
        bail!("--dense-share {} must be between 0 and 1 (exclusive)", args.dense_share);
    }
    let mut base = TrainConfig::tiny();
    base.model.n_experts = TASKS.len();
    base.train.seed = args.common.seed.unwrap_or(base.train.seed);
    // About a dozen evaluations per run make the curves.
    base.train.eval_every = (args.steps / 12).max(1);
    base.train.checkpoint_every = args.steps;
    let t = &base.train;
    let tokens_per_step = (t.batch_size * t.seq_len * t.grad_accum_steps) as f64;
    let all = DataSpec::default();
    let train = |name: &str, config: TrainConfig| -> Result<(RunSummary, MixtralConfig)> {
        eprintln!("[paths] {name}");
        let setup = new_run(config, all.clone(), &out.join(name), progress)?;
        let summary = run_on(kind, Precision::F32, TrainTask { setup: &setup })??;
        Ok((summary, setup.config.model.clone()))
    };
    let with = |model: &MixtralConfig, steps: usize| {
        let mut config = base.clone().with_steps(steps);
        config.model = model.clone();
        config
    };
    let mut rows = Vec::new();

    // The joint MoE first: its run fixes the vocabulary (the same BPE on the same corpus for
    // every path) that the compute of the others is planned with.
    let (joint, moe) = train("joint", base.clone().with_steps(args.steps))?;
    let per_step = |c: &MixtralConfig| flops_per_token(c) * tokens_per_step;
    let budget = args.steps as f64 * per_step(&moe);
    let wide = moe.to_dense(moe.top_k * moe.d_ff);
    let narrow = moe.to_dense(moe.d_ff);
    let steps = |share: f64, c: &MixtralConfig| equal_compute_steps(share, args.steps, &moe, c);
    let recipe = format!("{} experts (top-{}) from scratch, {} steps", moe.n_experts, moe.top_k, args.steps);
    rows.push(row("joint", recipe, budget, &moe, &joint, vec![curve(&joint, 0.0, per_step(&moe))?]));

    let (up_steps, moe_steps) = (steps(args.dense_share, &narrow), steps(1.0 - args.dense_share, &moe));
    let (dense_run, _) = train("upcycled-dense", with(&narrow, up_steps))?;
    let init = out.join("upcycled-init");
    let upcycle = UpcycleConfig { seed: base.train.seed, ..UpcycleConfig::new(moe.n_experts, moe.top_k) };
    let upcycled = crate::upcycle::upcycle_folder(&dense_run.model_dir, &upcycle, &init)?;
    let mut config = with(&upcycled, moe_steps);
    config.train.init_from = Some(std::fs::canonicalize(&init).with_context(|| format!("{}", init.display()))?);
    let (up_run, up_moe) = train("upcycled", config)?;
    let dense_cost = up_steps as f64 * per_step(&narrow);
    // One line: the upcycled MoE starts where its dense model stopped.
    let mut up_curve = curve(&dense_run, 0.0, per_step(&narrow))?;
    up_curve.extend(curve(&up_run, dense_cost, per_step(&up_moe))?);
    let recipe = format!("dense {} wide {up_steps} steps, upcycled, MoE {moe_steps} steps", narrow.d_ff);
    let cost = dense_cost + moe_steps as f64 * per_step(&up_moe);
    rows.push(row("upcycled", recipe, cost, &up_moe, &up_run, vec![up_curve]));

    let [seed_share, branch_share, mix_share] = BTX_SHARES;
    let slices = task_slices();
    let branch_steps =
        ((branch_share * args.steps as f64 * flops_per_token(&moe) / flops_per_token(&narrow) / slices.len() as f64)
            .round() as usize)
            .max(1);
    let plan = BtxPlan {
        base: with(&narrow, args.steps),
        all: ("all tasks".into(), all.clone()),
        steps: [steps(seed_share, &narrow), branch_steps, steps(mix_share, &moe)],
        slices,
        top_k: moe.top_k,
        routers_only: false,
    };
    eprintln!("[paths] BTX");
    let btx = run_plan(&plan, kind, &out.join("btx"), progress)?;
    let [seed_steps, _, mix_steps] = plan.steps;
    let dense_cost = (seed_steps + plan.slices.len() * branch_steps) as f64 * per_step(&narrow);
    let btx_curve = vec![curve(&btx.seed, 0.0, per_step(&narrow))?, curve(&btx.mix, dense_cost, per_step(&moe))?];
    let recipe = format!(
        "dense seed {seed_steps} steps, {} branches x {branch_steps} steps, merged, MoE {mix_steps} steps",
        plan.slices.len()
    );
    let cost = dense_cost + mix_steps as f64 * per_step(&moe);
    rows.push(row("BTX", recipe, cost, &moe, &btx.mix, btx_curve));

    let dense_steps = steps(1.0, &wide);
    let (dense, wide) = train("dense", with(&wide, dense_steps))?;
    let recipe = format!("one FFN {} wide (top-{} experts' width), {dense_steps} steps", wide.d_ff, moe.top_k);
    let cost = dense_steps as f64 * per_step(&wide);
    rows.push(row("dense", recipe, cost, &wide, &dense, vec![curve(&dense, 0.0, per_step(&wide))?]));

    let mut config = with(&wide, dense_steps);
    let teacher = std::fs::canonicalize(&joint.model_dir)?;
    config.train.distill = Some(DistillSettings { teacher, temperature: 2.0, alpha: 0.5 });
    eprintln!("[paths] distilled");
    let (_, student) = crate::distill::run_config(config, all.clone(), kind, &out.join("distilled"), progress)?;
    // The teacher's forward pass is a third of a training step's FLOPs.
    let distill_step = per_step(&wide) + per_step(&moe) / 3.0;
    let recipe = format!("the dense shape, {dense_steps} steps on KL (T = 2) to the joint MoE and the data");
    let cost = dense_steps as f64 * distill_step;
    rows.push(row("distilled", recipe, cost, &wide, &student, vec![curve(&student, 0.0, distill_step)?]));

    write_report(out, &rows)?;
    Ok(rows)
}

fn row(
    path: &str,
    recipe: String,
    compute_flops: f64,
    config: &MixtralConfig,
    run: &RunSummary,
    curve: Vec<Vec<(f64, f32)>>,
) -> PathResult {
    PathResult {
        path: path.into(),
        recipe,
        compute_flops,
        params: config.num_params(),
        active_params: config.num_active_params(),
        val_loss: run.final_val_loss,
        task_val_loss: run.task_val_loss.clone(),
        task_accuracy: run.task_accuracy.clone(),
        nmi: if config.dense { None } else { run.specialisation_nmi },
        curve,
        model_dir: run.model_dir.clone(),
    }
}

/// A run's evaluations as `(FLOPs, val loss)`: `offset` FLOPs before its step 0, `per_step` a step.
fn curve(run: &RunSummary, offset: f64, per_step: f64) -> Result<Vec<(f64, f32)>> {
    let records = read_log(&run.run_dir.join("metrics.jsonl"))?;
    Ok(records
        .iter()
        .filter_map(|r| match r {
            LogRecord::Eval(e) => Some((offset + e.step as f64 * per_step, e.val_loss)),
            LogRecord::Train(_) => None,
        })
        .collect())
}

/// The rows as a Markdown table: per task, its validation loss and (where the task has
/// answers to check) greedy accuracy.
pub fn markdown_table(rows: &[PathResult]) -> String {
    let tasks = task_names(rows.iter().map(|r| &r.task_val_loss[..]));
    let first = ["path", "compute (TFLOP)", "params", "active params", "val loss"];
    let mut table = Table::new(&first, 1, &tasks, &["NMI"]);
    for r in rows {
        let mut cells = vec![
            r.path.clone(),
            format!("{:.2}", r.compute_flops / 1e12),
            format!("{:.2}M", r.params as f64 / 1e6),
            format!("{:.2}M", r.active_params as f64 / 1e6),
            format!("{:.3}", r.val_loss),
        ];
        cells.extend(tasks.iter().map(|t| match (task_value(&r.task_val_loss, t), task_value(&r.task_accuracy, t)) {
            (Some(l), Some(a)) => format!("{l:.3} ({})", percent(a)),
            (Some(l), None) => format!("{l:.3}"),
            (None, _) => "-".into(),
        }));
        cells.push(r.nmi.map_or("-".into(), |n| format!("{n:.2}")));
        table.row(cells);
    }
    let mut out = table.into_string();
    out.push_str("\nPer task: validation loss (greedy exact-match accuracy).\n\n");
    for r in rows {
        out.push_str(&format!("- `{}`: {}\n", r.path, r.recipe));
    }
    out
}

/// Writes `paths.md`, `paths.json` and `paths.png` into `dir`; returns the files.
pub fn write_report(dir: &Path, rows: &[PathResult]) -> Result<Vec<PathBuf>> {
    let [md, json] = write_md_json(dir, "paths", &markdown_table(rows), &rows)?;
    let png = dir.join("paths.png");
    let curves = rows
        .iter()
        .map(|r| {
            let tflops = r.curve.iter().map(|s| s.iter().map(|&(flops, loss)| (flops / 1e12, loss)).collect());
            (r.path.as_str(), tflops.collect())
        })
        .collect();
    let title = "Validation loss against training compute".to_string();
    crate::plots::draw_lines(&png, &crate::plots::LineChart { title, x_desc: "training compute (TFLOP)", curves })?;
    Ok(vec![md, json, png])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tiny MoE of the comparison (5 experts of 128, top-2, vocabulary 384) costs by hand:
    /// per layer attention 64·(64+32+32+64) = 12288, router 5·64 = 320, two experts
    /// 2·3·64·128 = 49152, norms 128: 61888; two layers, the final norm 64 and the LM head
    /// 384·64 give N = 148416 (the embedding table is looked up, not multiplied).
    #[test]
    fn compute_is_counted_by_hand() {
        let moe = MixtralConfig { vocab_size: 384, n_experts: 5, ..MixtralConfig::tiny() };
        assert_eq!(flops_per_token(&moe), 6.0 * 148_416.0);
        // One FFN 256 wide: 12288 + 3·64·256 + 128 = 61568 per layer, 147776 in all.
        let wide = moe.to_dense(256);
        assert_eq!(flops_per_token(&wide), 6.0 * 147_776.0);
        assert_eq!(equal_compute_steps(1.0, 1200, &moe, &wide), 1205);
        // One expert wide: 12288 + 24576 + 128 = 36992 per layer, 98624 in all.
        let narrow = moe.to_dense(128);
        assert_eq!(equal_compute_steps(0.5, 1200, &moe, &narrow), 903);
        assert_eq!(equal_compute_steps(0.0, 1200, &moe, &narrow), 1, "at least one step");
        let tied = MixtralConfig { tie_word_embeddings: true, ..moe.clone() };
        assert_eq!(flops_per_token(&tied), 6.0 * 148_416.0, "the tied head is the same matmul");
    }
}
