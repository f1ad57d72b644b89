//! `moe-train distill`: a student (by default the teacher's dense counterpart) trained on the
//! teacher's next-token distributions (knowledge distillation, Hinton et al. 2015) as well as
//! the data, then both compared on the same validation split: loss, perplexity, size and
//! decode speed.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use moe_core::backend::{run_on, BackendKind, BackendTask, Precision};
use moe_core::config::HfMixtralConfig;
use moe_core::io::load_hub_checkpoint;
use moe_core::model::Mixtral;
use moe_generate::{generate, GenerationConfig, SamplingConfig};
use serde::Serialize;

use crate::config::{DistillSettings, TrainConfig};
use crate::setup::{new_run, DataSpec};
use crate::trainer::{evaluate, RunSetup, RunSummary, TrainTask};

/// Options of `moe-train distill`.
#[derive(clap::Args, Debug)]
pub struct DistillArgs {
    /// The teacher: a Hub-layout model folder with its `tokenizer.json` (a run's `model/`).
    #[arg(long, value_name = "DIR")]
    pub teacher: PathBuf,
    /// The student's settings (`{"model": {...}, "train": {...}}`; its vocabulary is the
    /// teacher's). Default: the teacher's dense counterpart (one FFN per layer as wide as its
    /// top-k experts together: the same compute per token) with the tiny preset's training.
    #[arg(long, value_name = "CONFIG")]
    pub student: Option<PathBuf>,
    /// Softmax temperature of both distributions.
    #[arg(long, default_value_t = 2.0)]
    pub temperature: f64,
    /// Weight of the distillation term; 1 - ALPHA weighs the cross-entropy with the data.
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f64,
    /// Optimizer steps (the learning rate decays over them). Default: the student config's.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Training data (as `moe-train --data`); default: the built-in corpus.
    #[arg(long)]
    pub data: Vec<PathBuf>,
    /// `--out`, `--backend`, `--seed`, `--json`.
    #[command(flatten)]
    pub common: crate::experiment::ExperimentArgs,
}

/// One model of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    /// Its Hub-layout folder.
    pub model_dir: PathBuf,
    /// All parameters.
    pub params: usize,
    /// Parameters per token.
    pub active_params: usize,
    /// Validation loss on the student run's split.
    pub val_loss: f32,
    /// `exp(val_loss)`.
    pub perplexity: f32,
    /// Greedy decode speed, one sequence, 32 new tokens (median of 3).
    pub decode_tokens_per_sec: f64,
}

/// What `moe-train distill` reports (also written to `RUN/distill.json`).
#[derive(Debug, Clone, Serialize)]
pub struct DistillReport {
    /// Temperature used.
    pub temperature: f64,
    /// Weight of the distillation term.
    pub alpha: f64,
    /// Optimizer steps of the student.
    pub steps: usize,
    /// The teacher.
    pub teacher: ModelReport,
    /// The student after training.
    pub student: ModelReport,
}

/// Runs `moe-train distill`.
pub fn run(args: &DistillArgs, out: PathBuf, progress: bool) -> Result<DistillReport> {
    let kind = args.common.backend.ensure_compiled()?;
    let teacher_dir =
        std::fs::canonicalize(&args.teacher).with_context(|| format!("--teacher {}", args.teacher.display()))?;
    let teacher_config = HfMixtralConfig::from_file(teacher_dir.join("config.json"))
        .and_then(|hf| hf.to_mixtral())
        .with_context(|| format!("--teacher {}", teacher_dir.display()))?;
    if !teacher_dir.join("tokenizer.json").is_file() {
        bail!("--teacher {}: no tokenizer.json (the student must share the teacher's tokens)", teacher_dir.display());
    }
    let mut config = match &args.student {
        Some(path) => TrainConfig::from_file(path)?,
        None => {
            let mut config = TrainConfig::tiny();
            config.model = teacher_config.to_dense(teacher_config.top_k * teacher_config.d_ff);
            config.model.max_seq_len = config.model.max_seq_len.max(config.train.seq_len);
            config
        }
    };
    if let Some(steps) = args.steps {
        if steps == 0 {
            bail!("--steps must be at least 1");
        }
        config = config.with_steps(steps);
    }
    let t = &mut config.train;
    t.seed = args.common.seed.unwrap_or(t.seed);
    t.distill =
        Some(DistillSettings { teacher: teacher_dir.clone(), temperature: args.temperature, alpha: args.alpha });
    let spec = DataSpec { paths: args.data.clone(), ..DataSpec::default() };
    Ok(run_config(config, spec, kind, &out, progress)?.0)
}

/// Trains the student `config` (whose `train.distill` names the teacher) on `spec` into `out`
/// on backend `kind`, then measures both; returns the report (also `OUT/distill.json`) and the
/// student's run.
pub fn run_config(
    config: TrainConfig,
    spec: DataSpec,
    kind: BackendKind,
    out: &Path,
    progress: bool,
) -> Result<(DistillReport, RunSummary)> {
    let Some(settings) = config.train.distill.clone() else {
        bail!("train.distill is not set: there is no teacher to distil");
    };
    let setup = new_run(config, spec, out, progress)?;
    let summary = run_on(kind, Precision::F32, TrainTask { setup: &setup })??;
    let (teacher, student) = run_on(
        kind,
        Precision::F32,
        CompareTask { setup: &setup, teacher: &settings.teacher, student: &summary.model_dir },
    )??;
    let (temperature, alpha) = (settings.temperature, settings.alpha);
    let report = DistillReport { temperature, alpha, steps: summary.steps, teacher, student };
    let text = serde_json::to_string_pretty(&report)?;
    moe_core::fs::write_atomic(&setup.run_dir.join("distill.json"), text.as_bytes())?;
    Ok((report, summary))
}

/// The report as a Markdown table.
pub fn markdown_table(report: &DistillReport) -> String {
    let mut out = String::from("| model | params | active params | val loss | perplexity | decode tok/s |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|\n");
    for (name, m) in [("teacher", &report.teacher), ("student", &report.student)] {
        out.push_str(&format!(
            "| {name} | {:.2}M | {:.2}M | {:.3} | {:.2} | {:.0} |\n",
            m.params as f64 / 1e6,
            m.active_params as f64 / 1e6,
            m.val_loss,
            m.perplexity,
            m.decode_tokens_per_sec
        ));
    }
    out
}

/// Teacher and student measured on the run's validation split and backend.
struct CompareTask<'a> {
    setup: &'a RunSetup,
    teacher: &'a Path,
    student: &'a Path,
}

impl BackendTask for CompareTask<'_> {
    type Output = Result<(ModelReport, ModelReport)>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let measure = |dir: &Path| -> Result<ModelReport> {
            let model = load_hub_checkpoint::<B>(dir, &device).with_context(|| format!("{}", dir.display()))?;
            let t = &self.setup.config.train;
            let eval = evaluate(&model, &self.setup.data.val, t.batch_size, t.eval_batches, 0, 0);
            let c = model.config();
            Ok(ModelReport {
                model_dir: dir.to_path_buf(),
                params: c.num_params(),
                active_params: c.num_active_params(),
                val_loss: eval.val_loss,
                perplexity: eval.perplexity,
                decode_tokens_per_sec: decode_speed(&model, &self.setup.data.val.tokens)?,
            })
        };
        Ok((measure(self.teacher)?, measure(self.student)?))
    }
}

/// Greedy decode tokens per second after an 8-token prompt, median of 3.
fn decode_speed<B: Backend>(model: &Mixtral<B>, tokens: &[u32]) -> Result<f64> {
    let prompt: Vec<u32> = tokens.iter().copied().take(8).collect();
    let new = 32.min(model.config().max_seq_len.saturating_sub(prompt.len()));
    let config = GenerationConfig { max_new_tokens: new, sampling: SamplingConfig::default(), stop_tokens: Vec::new() };
    let mut speeds = Vec::new();
    for _ in 0..3 {
        let out = generate(model, std::slice::from_ref(&prompt), &config, |_, _| true)?;
        speeds.push(out.decode_tokens_per_sec());
    }
    speeds.sort_by(f64::total_cmp);
    Ok(speeds[1])
}
