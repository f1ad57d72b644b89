//! `moe-train compare`: the tiny preset trained on the built-in corpus under each routing
//! scheme, with the same seed, data and number of steps, summarised in one table and one plot.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::metrics::{read_log, LogRecord};
use crate::report::{percent, task_names, task_value, write_md_json, Table};
use crate::setup::{new_run, DataSpec};
use crate::trainer::{RunSummary, TrainTask};
use moe_core::backend::{run_on, Precision};
use moe_core::moe::{RoutingConfig, Scoring};

pub use crate::metrics::DEAD_EXPERT_SHARE;

/// A routing scheme: a name, one line on what it is, and how it changes the preset.
pub struct Scheme {
    /// Short name (`--schemes` takes these).
    pub name: &'static str,
    /// What the scheme is, for the table.
    pub about: &'static str,
    configure: fn(&mut TrainConfig),
}

impl Scheme {
    /// The preset `base` changed to this scheme.
    pub fn apply(&self, base: &TrainConfig) -> TrainConfig {
        let mut config = base.clone();
        (self.configure)(&mut config);
        config
    }
}

/// Every scheme the comparison knows, the preset's own routing first.
pub fn schemes() -> Vec<Scheme> {
    vec![
        Scheme { name: "preset", about: "the preset's routing, unchanged", configure: |_| {} },
        Scheme {
            name: "mixtral",
            about: "softmax top-k, renormalised, load-balancing loss 0.02 (Mixtral)",
            configure: |c| {
                c.model.routing = RoutingConfig::default();
                c.train.aux_loss_coef = Some(0.02);
            },
        },
        Scheme {
            name: "no-balancing",
            about: "softmax top-k with no balancing at all: what the balancing fixes",
            configure: |c| {
                c.model.routing = RoutingConfig::default();
                c.train.aux_loss_coef = Some(0.0);
            },
        },
        Scheme {
            name: "noisy-top-k",
            about: "learned Gaussian noise on the gate logits, importance + load losses 0.1 (Shazeer et al.)",
            configure: |c| {
                c.model.routing = RoutingConfig { noisy_gating: true, ..RoutingConfig::default() };
                c.train.aux_loss_coef = Some(0.1);
            },
        },
        Scheme {
            name: "switch",
            about: "raw top-k probabilities, capacity 1.25 (eval 2.0), jitter 0.01 (Switch)",
            configure: |c| {
                c.model.routing = RoutingConfig {
                    normalize_top_k: false,
                    capacity_factor: Some(1.25),
                    eval_capacity_factor: Some(2.0),
                    jitter_noise: 0.01,
                    ..RoutingConfig::default()
                };
                c.train.aux_loss_coef = Some(0.02);
            },
        },
        Scheme {
            name: "deepseek",
            about: "sigmoid scores, bias balancing (0.001/step, no aux loss), 1 shared expert, experts split in 2",
            configure: |c| {
                let m = &mut c.model;
                m.routing = RoutingConfig {
                    scoring: Scoring::Sigmoid,
                    bias_update_rate: 1e-3,
                    n_shared_experts: 1,
                    shared_d_ff: Some(m.d_ff),
                    ..RoutingConfig::default()
                };
                m.n_experts *= 2;
                m.top_k *= 2;
                m.d_ff /= 2;
                c.train.aux_loss_coef = Some(0.0);
            },
        },
        Scheme {
            name: "expert-choice",
            about: "each expert takes its top T*K/E tokens, raw scores; token choice in inference (Zhou et al.)",
            configure: |c| {
                c.model.routing =
                    RoutingConfig { expert_choice: true, normalize_top_k: false, ..RoutingConfig::default() };
                c.train.aux_loss_coef = Some(0.0);
            },
        },
        Scheme {
            name: "qwen",
            about: "one gated shared expert, raw top-k probabilities, loss 0.02 (Qwen-MoE)",
            configure: |c| {
                c.model.routing = RoutingConfig {
                    normalize_top_k: false,
                    n_shared_experts: 1,
                    shared_expert_gate: true,
                    ..RoutingConfig::default()
                };
                c.train.aux_loss_coef = Some(0.02);
            },
        },
    ]
}

/// The schemes named in `names` (all when empty), in the order given; an error names an
/// unknown one.
pub fn select(names: &[String]) -> Result<Vec<Scheme>> {
    let mut all = schemes();
    if names.is_empty() {
        return Ok(all);
    }
    let known: Vec<&str> = all.iter().map(|s| s.name).collect();
    let mut picked = Vec::new();
    for name in names {
        let Some(i) = all.iter().position(|s| s.name == name) else {
            return Err(TrainError::setting(
                "--schemes",
                format!("{name:?} is not a scheme; known: {}", known.join(", ")),
            ));
        };
        picked.push(all.remove(i));
    }
    Ok(picked)
}

/// One row of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct SchemeResult {
    /// Scheme name.
    pub scheme: String,
    /// What it is.
    pub about: String,
    /// Parameters used per token.
    pub active_params: usize,
    /// Validation loss after the last step.
    pub val_loss: f32,
    /// `(step, val_loss)` at every evaluation, for the plot.
    pub val_curve: Vec<(usize, f32)>,
    /// Mean share of routed assignments dropped for capacity over training.
    pub dropped_fraction: f64,
    /// Coefficient of variation of the experts' load at the last evaluation (std / mean),
    /// averaged over layers: 0 is perfectly even.
    pub load_cv: f64,
    /// (layer, expert) pairs with less than [`DEAD_EXPERT_SHARE`] of the layer's tokens.
    pub dead_experts: usize,
    /// All (layer, expert) pairs.
    pub experts: usize,
    /// Task/expert normalised mutual information, mean over layers.
    pub nmi: Option<f64>,
    /// Greedy exact-match accuracy per task.
    pub task_accuracy: Vec<(String, f64)>,
    /// Training throughput.
    pub tokens_per_sec: f64,
    /// The run folder.
    pub run_dir: PathBuf,
}

impl SchemeResult {
    /// Gathers a finished run's row from its summary and `metrics.jsonl`.
    pub fn from_run(scheme: &Scheme, config: &TrainConfig, summary: &RunSummary) -> Result<Self> {
        let records = read_log(&summary.run_dir.join("metrics.jsonl"))?;
        let mut val_curve = Vec::new();
        let mut last_load = None;
        let (mut dropped, mut train_steps) = (0.0, 0usize);
        for record in &records {
            match record {
                LogRecord::Eval(e) => {
                    val_curve.push((e.step, e.val_loss));
                    last_load = Some(&e.expert_load);
                }
                LogRecord::Train(t) => {
                    dropped += t.dropped_fraction as f64;
                    train_steps += 1;
                }
            }
        }
        let load = last_load.cloned().unwrap_or_default();
        let cvs: Vec<f64> = load.iter().map(|shares| coefficient_of_variation(shares)).collect();
        Ok(Self {
            scheme: scheme.name.into(),
            about: scheme.about.into(),
            active_params: config.model.num_active_params(),
            val_loss: summary.final_val_loss,
            val_curve,
            dropped_fraction: dropped / train_steps.max(1) as f64,
            load_cv: cvs.iter().sum::<f64>() / cvs.len().max(1) as f64,
            dead_experts: load.iter().flatten().filter(|&&share| share < DEAD_EXPERT_SHARE).count(),
            experts: load.iter().map(Vec::len).sum(),
            nmi: summary.specialisation_nmi,
            task_accuracy: summary.task_accuracy.clone(),
            tokens_per_sec: summary.tokens_per_sec,
            run_dir: summary.run_dir.clone(),
        })
    }
}

/// `std / mean` of `xs` (population std); 0 for an empty or all-zero slice.
pub fn coefficient_of_variation(xs: &[f64]) -> f64 {
    let n = xs.len().max(1) as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if mean <= 0.0 {
        return 0.0;
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    var.sqrt() / mean
}

/// The comparison as a Markdown table, one row per scheme and one column per task.
pub fn markdown_table(results: &[SchemeResult]) -> String {
    let tasks = task_names(results.iter().map(|r| &r.task_accuracy[..]));
    let first = ["scheme", "active params", "val loss", "dropped", "load CV", "experts < 2%", "NMI"];
    let mut table = Table::new(&first, 1, &tasks, &["tokens/s"]);
    for r in results {
        let mut cells = vec![
            r.scheme.clone(),
            format!("{:.2}M", r.active_params as f64 / 1e6),
            format!("{:.3}", r.val_loss),
            format!("{:.1}%", 100.0 * r.dropped_fraction),
            format!("{:.2}", r.load_cv),
            format!("{}/{}", r.dead_experts, r.experts),
            r.nmi.map_or("-".into(), |n| format!("{n:.2}")),
        ];
        cells.extend(tasks.iter().map(|t| task_value(&r.task_accuracy, t).map_or("-".into(), percent)));
        cells.push(format!("{:.0}", r.tokens_per_sec));
        table.row(cells);
    }
    let mut out = table.into_string();
    out.push('\n');
    for r in results {
        out.push_str(&format!("- `{}`: {}\n", r.scheme, r.about));
    }
    out
}

/// Writes `comparison.md`, `comparison.json` and `comparison.png` into `dir`; returns the files.
pub fn write_report(dir: &Path, results: &[SchemeResult]) -> Result<Vec<PathBuf>> {
    let [md, json] = write_md_json(dir, "comparison", &markdown_table(results), &results)?;
    let png = dir.join("comparison.png");
    let curves = results
        .iter()
        .map(|r| (r.scheme.as_str(), vec![r.val_curve.iter().map(|&(step, loss)| (step as f64, loss)).collect()]))
        .collect();
    // The plot leaves out step 0 (see `draw_lines`): say where it starts.
    let from = results.iter().flat_map(|r| &r.val_curve).map(|p| p.0).filter(|&s| s > 0).min();
    let title = match from {
        Some(step) => format!("Validation loss by routing scheme (from step {step})"),
        None => "Validation loss by routing scheme".to_string(),
    };
    crate::plots::draw_lines(&png, &crate::plots::LineChart { title, x_desc: "step", curves })?;
    Ok(vec![md, json, png])
}

/// Options of `moe-train compare`.
#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// Schemes to train, comma-separated, in this order. Default: all of preset, mixtral,
    /// no-balancing, noisy-top-k, switch, deepseek, expert-choice, qwen.
    #[arg(long, value_delimiter = ',')]
    pub schemes: Vec<String>,
    /// Optimizer steps per scheme (the learning rate decays over them). Default: the preset's.
    #[arg(long)]
    pub steps: Option<usize>,
    /// `--out`, `--backend`, `--seed`, `--json`.
    #[command(flatten)]
    pub common: crate::experiment::ExperimentArgs,
}

/// Runs `moe-train compare`: each scheme's run, then the table and the plot.
pub fn run(args: &CompareArgs) -> anyhow::Result<()> {
    let kind = args.common.backend.ensure_compiled()?;
    let schemes = select(&args.schemes)?;
    let mut base = TrainConfig::tiny();
    if let Some(steps) = args.steps {
        if steps == 0 {
            anyhow::bail!("--steps must be at least 1");
        }
        base = base.with_steps(steps);
        base.train.checkpoint_every = steps;
    }
    base.train.seed = args.common.seed.unwrap_or(base.train.seed);
    let out = args.common.out_dir("compare");
    let progress = std::io::stderr().is_terminal();
    let mut results = Vec::new();
    for (i, scheme) in schemes.iter().enumerate() {
        eprintln!("[{}/{}] {}: {}", i + 1, schemes.len(), scheme.name, scheme.about);
        let config = scheme.apply(&base);
        let spec = DataSpec::default();
        let setup = new_run(config.clone(), spec, &out.join(scheme.name), progress)?;
        let summary = run_on(kind, Precision::F32, TrainTask { setup: &setup })??;
        results.push(SchemeResult::from_run(scheme, &config, &summary)?);
    }
    let files = write_report(&out, &results)?;
    if args.common.json {
        println!("{}", serde_json::to_string(&results)?);
    } else {
        print!("{}", markdown_table(&results));
        for file in files {
            println!("wrote {}", file.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coefficient_of_variation_by_hand() {
        assert_eq!(coefficient_of_variation(&[0.25; 4]), 0.0);
        // mean 0.25, std sqrt(((0.25)^2 * 2 + 0 + 0) / 4) = 0.1768
        let cv = coefficient_of_variation(&[0.5, 0.0, 0.25, 0.25]);
        assert!((cv - 0.5f64.sqrt()).abs() < 1e-12, "{cv}");
    }

    #[test]
    fn every_scheme_gives_a_valid_config_and_unknown_names_are_refused() {
        let base = TrainConfig::tiny();
        for scheme in schemes() {
            scheme.apply(&base).validate().unwrap_or_else(|e| panic!("{}: {e}", scheme.name));
        }
        let picked = select(&["switch".into(), "mixtral".into()]).unwrap();
        assert_eq!(picked.iter().map(|s| s.name).collect::<Vec<_>>(), ["switch", "mixtral"]);
        let err = select(&["nope".into()]).err().expect("refused").to_string();
        assert!(err.contains("nope") && err.contains("deepseek"), "{err}");
    }
}
