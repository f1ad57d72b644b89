//! What a run records: a JSONL line per step and per evaluation, and the router statistics that
//! show whether experts are used evenly and whether they specialise.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::packing::NO_TASK;
use crate::error::{Result, TrainError};

/// An expert that receives less than this share of a layer's routed tokens counts as dead
/// (`moe-train compare`, the expert-load plot; the no-argument demo promises none).
pub const DEAD_EXPERT_SHARE: f64 = 0.02;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LogRecord {
    /// One optimizer step.
    Train(TrainRecord),
    /// One evaluation on the validation split.
    Eval(EvalRecord),
}

impl LogRecord {
    /// The optimizer step the record belongs to.
    pub fn step(&self) -> usize {
        match self {
            Self::Train(r) => r.step,
            Self::Eval(r) => r.step,
        }
    }
}

/// One optimizer step (losses are means over its micro-batches).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainRecord {
    /// 1-based: the number of optimizer steps done after this one.
    pub step: usize,
    /// The objective: `lm_loss + aux_coef * aux_loss + z_coef * z_loss`.
    pub loss: f32,
    /// Next-token cross-entropy.
    pub lm_loss: f32,
    /// Load-balancing loss (unscaled).
    pub aux_loss: f32,
    /// Router z-loss (unscaled).
    pub z_loss: f32,
    /// Distillation loss (unscaled), when a teacher trains the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill_loss: Option<f32>,
    /// Fraction of expert assignments dropped for capacity (`routing.capacity_factor`).
    #[serde(default)]
    pub dropped_fraction: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// Learning rate of the step.
    pub lr: f64,
    /// Training throughput over the step.
    pub tokens_per_sec: f64,
}

/// One evaluation on the validation split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// The optimizer step evaluated after.
    pub step: usize,
    /// Mean next-token cross-entropy on the validation split.
    pub val_loss: f32,
    /// `exp(val_loss)`.
    pub perplexity: f32,
    /// `[L][E]`: fraction of (token, choice) pairs each expert received.
    pub expert_load: Vec<Vec<f64>>,
    /// `[L]`: mean entropy (nats) of the router's softmax; `ln E` is uniform.
    pub router_entropy: Vec<f64>,
    /// `[L][task][E]`: choices per task and expert, for corpora with known tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_expert: Option<Vec<Vec<Vec<u64>>>>,
    /// `[L]`: normalised mutual information between task and chosen expert (0 = none, 1 = each
    /// task has its own experts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specialisation: Option<Vec<f64>>,
    /// `[task]`: mean next-token cross-entropy of the tokens of each task (the token predicted
    /// belongs to it), for corpora with known tasks; `None` for a task with no token evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_loss: Option<Vec<Option<f64>>>,
}

/// Router statistics accumulated over evaluation batches.
#[derive(Debug, Clone)]
pub struct RouterStats {
    n_experts: usize,
    n_tasks: usize,
    /// `[L][E]`
    load: Vec<Vec<u64>>,
    /// `[L]`
    entropy_sum: Vec<f64>,
    tokens: u64,
    /// `[L][task][E]`
    task_expert: Vec<Vec<Vec<u64>>>,
}

impl RouterStats {
    /// Zeroed statistics for a model of this shape and corpus.
    pub fn new(n_layers: usize, n_experts: usize, n_tasks: usize) -> Self {
        Self {
            n_experts,
            n_tasks,
            load: vec![vec![0; n_experts]; n_layers],
            entropy_sum: vec![0.0; n_layers],
            tokens: 0,
            task_expert: vec![vec![vec![0; n_experts]; n_tasks]; n_layers],
        }
    }

    /// Adds one batch: per layer the router logits `[T * E]` and chosen experts `[T * K]`, and
    /// the task of each of the `T` tokens.
    pub fn add(&mut self, router_logits: &[Vec<f32>], experts: &[Vec<i64>], tasks: &[u8]) {
        let e = self.n_experts;
        let t = tasks.len();
        for (layer, (logits, chosen)) in router_logits.iter().zip(experts).enumerate() {
            let k = chosen.len() / t;
            for (token, row) in logits.chunks_exact(e).enumerate() {
                self.entropy_sum[layer] += entropy(row);
                let task = tasks[token];
                // Expert choice marks the experts a token did not get with -1.
                for &expert in chosen[token * k..(token + 1) * k].iter().filter(|&&e| e >= 0) {
                    self.load[layer][expert as usize] += 1;
                    if task != NO_TASK && (task as usize) < self.n_tasks {
                        self.task_expert[layer][task as usize][expert as usize] += 1;
                    }
                }
            }
        }
        self.tokens += t as u64;
    }

    /// The statistics as an eval record.
    pub fn record(&self, step: usize, val_loss: f32) -> EvalRecord {
        let expert_load = self
            .load
            .iter()
            .map(|counts| {
                let total = counts.iter().sum::<u64>().max(1) as f64;
                counts.iter().map(|&c| c as f64 / total).collect()
            })
            .collect();
        let router_entropy = self.entropy_sum.iter().map(|&s| s / self.tokens.max(1) as f64).collect();
        let has_tasks = self.task_expert.iter().flatten().flatten().any(|&c| c > 0);
        EvalRecord {
            step,
            val_loss,
            perplexity: val_loss.exp(),
            expert_load,
            router_entropy,
            task_expert: has_tasks.then(|| self.task_expert.clone()),
            specialisation: has_tasks
                .then(|| self.task_expert.iter().map(|c| normalized_mutual_information(c)).collect()),
            task_loss: None,
        }
    }
}

/// Entropy (nats) of the softmax of `logits`.
fn entropy(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exps: Vec<f64> = logits.iter().map(|&l| (l as f64 - max).exp()).collect();
    let z: f64 = exps.iter().sum();
    exps.iter().map(|&x| x / z).filter(|&p| p > 0.0).map(|p| -p * p.ln()).sum()
}

/// NMI of a contingency table `counts[a][b]`, normalised by the mean of the two entropies
/// (scikit-learn's default "arithmetic" normalisation).
pub fn normalized_mutual_information(counts: &[Vec<u64>]) -> f64 {
    let n: f64 = counts.iter().flatten().sum::<u64>() as f64;
    if n == 0.0 {
        return 0.0;
    }
    let rows: Vec<f64> = counts.iter().map(|r| r.iter().sum::<u64>() as f64 / n).collect();
    let cols: Vec<f64> =
        (0..counts.first().map_or(0, Vec::len)).map(|j| counts.iter().map(|r| r[j]).sum::<u64>() as f64 / n).collect();
    let h = |ps: &[f64]| -> f64 { ps.iter().filter(|&&p| p > 0.0).map(|&p| -p * p.ln()).sum() };
    let mut mi = 0.0;
    for (i, row) in counts.iter().enumerate() {
        for (j, &c) in row.iter().enumerate() {
            if c > 0 {
                let p = c as f64 / n;
                mi += p * (p / (rows[i] * cols[j])).ln();
            }
        }
    }
    let denom = (h(&rows) + h(&cols)) / 2.0;
    if denom <= 0.0 {
        0.0
    } else {
        (mi / denom).clamp(0.0, 1.0)
    }
}

/// `metrics.jsonl`, appended to as the run goes.
pub struct RunLog {
    path: PathBuf,
    file: std::fs::File,
}

impl RunLog {
    /// Opens the log; when resuming from step `resume_step`, records after it (written by the
    /// interrupted run after its last checkpoint) are dropped first.
    pub fn open(path: &Path, resume_step: Option<usize>) -> Result<Self> {
        match resume_step {
            Some(step) => {
                let kept: Vec<LogRecord> = read_log(path)?.into_iter().filter(|r| r.step() <= step).collect();
                let mut text = String::new();
                for r in &kept {
                    text.push_str(&serde_json::to_string(r).expect("record serialises"));
                    text.push('\n');
                }
                moe_core::fs::write_atomic(path, text.as_bytes())?;
            }
            None => std::fs::write(path, "").map_err(|e| TrainError::io(path, e))?,
        }
        let file = std::fs::OpenOptions::new().append(true).open(path).map_err(|e| TrainError::io(path, e))?;
        Ok(Self { path: path.into(), file })
    }

    /// Appends one record as a JSON line and flushes it.
    pub fn write(&mut self, record: &LogRecord) -> Result<()> {
        let line = serde_json::to_string(record).expect("record serialises");
        writeln!(self.file, "{line}").map_err(|e| TrainError::io(&self.path, e))
    }
}

/// Every record of a `metrics.jsonl` (none if the file does not exist).
pub fn read_log(path: &Path) -> Result<Vec<LogRecord>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| TrainError::BadData { path: path.into(), reason: format!("line {}: {e}", i + 1) })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nmi_is_one_for_a_bijection_and_zero_for_independence() {
        let perfect = vec![vec![10, 0, 0], vec![0, 7, 0], vec![0, 0, 3]];
        assert!((normalized_mutual_information(&perfect) - 1.0).abs() < 1e-12);
        let independent = vec![vec![5, 5], vec![5, 5]];
        assert!(normalized_mutual_information(&independent).abs() < 1e-12);
        assert_eq!(normalized_mutual_information(&[vec![0, 0]]), 0.0);
    }

    #[test]
    fn router_stats_count_loads_and_entropy() {
        let mut stats = RouterStats::new(1, 2, 2);
        // 2 tokens, E = 2, K = 1: token 0 (task 0) -> expert 0, token 1 (task 1) -> expert 1.
        stats.add(&[vec![0.0, 0.0, 0.0, 0.0]], &[vec![0, 1]], &[0, 1]);
        let r = stats.record(3, 1.0);
        assert_eq!(r.expert_load, vec![vec![0.5, 0.5]]);
        assert!((r.router_entropy[0] - 2f64.ln()).abs() < 1e-9);
        assert!((r.specialisation.unwrap()[0] - 1.0).abs() < 1e-9);
    }
}
