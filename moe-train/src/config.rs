//! One run's settings: the model shape and everything about training it.
//!
//! Saved as `config.json` next to the run, so a run can be resumed and reproduced from its folder.

use std::path::{Path, PathBuf};

use moe_core::config::MixtralConfig;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// Model and training settings of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The model. `vocab_size` is replaced by the tokenizer's size when the run starts.
    pub model: MixtralConfig,
    /// Optimisation, data and run settings.
    pub train: TrainingSettings,
}

/// Optimisation, data and bookkeeping settings.
///
/// Missing fields in a config file take the values of [`TrainingSettings::default`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingSettings {
    /// Optimizer steps to run (each of `grad_accum_steps` micro-batches).
    pub steps: usize,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches whose gradients are summed into one optimizer step.
    pub grad_accum_steps: usize,
    /// Tokens per training sequence (packed; at most the model's `max_seq_len`).
    pub seq_len: usize,
    /// Peak learning rate, reached after `warmup_steps`.
    pub lr: f64,
    /// Learning rate at the end of the cosine decay, as a fraction of `lr`.
    pub min_lr_ratio: f64,
    /// Steps of linear warm-up from 0 to `lr`.
    pub warmup_steps: usize,
    /// Steps over which the cosine decays from `lr` to `min_lr_ratio * lr`; the rate then stays at
    /// the minimum. Kept apart from `steps` (as nanoGPT's `lr_decay_iters`) so that a run cut
    /// short and resumed follows the same schedule as one run straight through.
    pub lr_decay_steps: usize,
    /// AdamW first-moment decay.
    pub beta1: f64,
    /// AdamW second-moment decay.
    pub beta2: f64,
    /// AdamW epsilon.
    pub epsilon: f64,
    /// Decoupled (AdamW) weight decay for matrices; norms and biases never decay.
    pub weight_decay: f64,
    /// Whether the token embedding decays too (nanoGPT: no).
    pub decay_embeddings: bool,
    /// Whether norm weights (and other vectors) decay too (nanoGPT: no; `torch.optim.AdamW` on
    /// `model.parameters()`: yes).
    pub decay_norms: bool,
    /// Clip gradients to this global L2 norm (over all parameters together); `None` = off.
    pub grad_clip: Option<f64>,
    /// Weight of the load-balancing loss. `None` = the model's `router_aux_loss_coef`.
    pub aux_loss_coef: Option<f64>,
    /// Weight of the router z-loss (ST-MoE; Mixtral trains with 0).
    pub z_loss_coef: f64,
    /// Evaluate on the validation split every this many steps (and at the end).
    pub eval_every: usize,
    /// Validation micro-batches per evaluation (at most what the split holds).
    pub eval_batches: usize,
    /// Fraction of the documents held out for validation.
    pub val_fraction: f64,
    /// Save a checkpoint every this many steps (and at the end).
    pub checkpoint_every: usize,
    /// Checkpoints to keep; older ones are deleted.
    pub keep_checkpoints: usize,
    /// Documents of the built-in corpus to generate.
    pub synthetic_documents: usize,
    /// BPE vocabulary size when the run trains its own tokenizer.
    pub tokenizer_vocab_size: usize,
    /// Seeds the model init, the synthetic corpus, the split and the data order.
    pub seed: u64,
    /// Start from the weights of this Hub-layout model folder instead of a random init
    /// (fine-tuning, or training on from `moe-train upcycle`): its `config.json` is the model,
    /// and its `tokenizer.json` the run's tokenizer unless the data spec names one.
    pub init_from: Option<PathBuf>,
    /// Knowledge distillation from a teacher model (`moe-train distill`); `None` = plain
    /// language-model training.
    pub distill: Option<DistillSettings>,
    /// Train only the routers (their gates and noise weights); every other parameter stays as
    /// it started. Branch-Train-MiX's cheap option of learning a fresh router over frozen
    /// branches, or a probe of an upcycled model's routing.
    pub routers_only: bool,
}

/// Knowledge distillation settings: the objective becomes `(1 - alpha) · lm_loss + alpha ·
/// T² · KL(teacher ‖ student)` at temperature `T` (plus the balancing losses of a MoE student).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillSettings {
    /// The teacher: a Hub-layout model folder with the student's tokenizer (`tokenizer.json`).
    pub teacher: PathBuf,
    /// Softmax temperature of both distributions (Hinton et al.: 1 to 20; higher shows more of
    /// the teacher's ranking of unlikely tokens).
    pub temperature: f64,
    /// Weight of the distillation term; `1 - alpha` weighs the cross-entropy with the data.
    pub alpha: f64,
}

impl Default for TrainingSettings {
    fn default() -> Self {
        Self {
            steps: 300,
            batch_size: 16,
            grad_accum_steps: 1,
            seq_len: 64,
            lr: 3e-3,
            min_lr_ratio: 0.1,
            warmup_steps: 20,
            lr_decay_steps: 300,
            beta1: 0.9,
            beta2: 0.95,
            epsilon: 1e-8,
            weight_decay: 0.1,
            decay_embeddings: false,
            decay_norms: false,
            grad_clip: Some(1.0),
            aux_loss_coef: None,
            z_loss_coef: 0.0,
            eval_every: 50,
            eval_batches: 8,
            val_fraction: 0.05,
            checkpoint_every: 100,
            keep_checkpoints: 2,
            synthetic_documents: 40_000,
            tokenizer_vocab_size: 384,
            seed: 42,
            init_from: None,
            distill: None,
            routers_only: false,
        }
    }
}

/// Names of the built-in presets, smallest first.
pub const PRESETS: &[&str] = &["tiny", "small"];

impl TrainConfig {
    /// A named preset: `tiny` (the no-argument run: minutes on a laptop CPU) or `small`
    /// (a GPU-sized model: vocab 32000, d_model 512, 8 layers, 8 experts top-2, sequence 1024).
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "tiny" => Ok(Self::tiny()),
            "small" => Ok(Self::small()),
            other => Err(TrainError::UnknownPreset { name: other.into(), known: PRESETS.join(", ") }),
        }
    }

    /// Learns the built-in multi-task corpus in about two minutes on 2 CPU cores.
    pub fn tiny() -> Self {
        // moe-core's tiny shape with more experts (the corpus has 5 tasks) and a short context.
        let model = MixtralConfig { vocab_size: 384, n_experts: 8, max_seq_len: 64, ..MixtralConfig::tiny() };
        // 1200 steps (1.2M tokens, 113 s with evaluation on 2 cores): at 300 the model had the
        // answers' format but 0-15% of them right; at 1200 sums 100%, copy 70%, sort 60%, and no
        // expert below 4% of its layer's tokens at any evaluation (the load-balancing loss at
        // Mixtral's 0.02 suffices once the run is this long).
        let train = TrainingSettings {
            steps: 1200,
            lr_decay_steps: 1200,
            eval_every: 200,
            checkpoint_every: 200,
            ..TrainingSettings::default()
        };
        Self { model, train }
    }

    /// The shape transformers was measured at for training throughput (see docs/benchmarks-history.md).
    pub fn small() -> Self {
        let model = MixtralConfig {
            vocab_size: 32000,
            d_model: 512,
            d_ff: 1408,
            n_layers: 8,
            n_heads: 8,
            n_kv_heads: 8,
            head_dim: 64,
            n_experts: 8,
            top_k: 2,
            max_seq_len: 1024,
            ..MixtralConfig::tiny()
        };
        let train = TrainingSettings {
            steps: 2000,
            batch_size: 8,
            seq_len: 1024,
            lr: 1e-3,
            warmup_steps: 100,
            lr_decay_steps: 2000,
            eval_every: 200,
            checkpoint_every: 500,
            tokenizer_vocab_size: 32000,
            ..TrainingSettings::default()
        };
        Self { model, train }
    }

    /// This config trained for `steps` steps, its schedule shortened to match: the learning
    /// rate decays over them, and evaluation, checkpoints and warm-up fit inside.
    pub fn with_steps(mut self, steps: usize) -> Self {
        let t = &mut self.train;
        t.steps = steps;
        t.lr_decay_steps = steps;
        t.eval_every = t.eval_every.min(steps);
        t.checkpoint_every = t.checkpoint_every.min(steps);
        t.warmup_steps = t.warmup_steps.min(steps / 2);
        self
    }

    /// Reads a JSON config (`{"model": {...}, "train": {...}}`) and validates it.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        let config: Self = serde_json::from_str(&text)
            .map_err(|e| TrainError::BadConfig { path: path.into(), reason: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// Writes the config as pretty JSON.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let text = serde_json::to_string_pretty(self).expect("config serialises");
        Ok(moe_core::fs::write_atomic(path, text.as_bytes())?)
    }

    /// The load-balancing loss weight in effect.
    pub fn aux_loss_coef(&self) -> f64 {
        self.train.aux_loss_coef.unwrap_or(self.model.router_aux_loss_coef)
    }

    /// Checks every setting; the error names the first bad one and why.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        let t = &self.train;
        let bad = |field: &str, reason: String| Err(TrainError::setting(field, reason));
        for (field, value) in [
            ("train.steps", t.steps),
            ("train.batch_size", t.batch_size),
            ("train.grad_accum_steps", t.grad_accum_steps),
            ("train.eval_every", t.eval_every),
            ("train.eval_batches", t.eval_batches),
            ("train.checkpoint_every", t.checkpoint_every),
            ("train.keep_checkpoints", t.keep_checkpoints),
            ("train.lr_decay_steps", t.lr_decay_steps),
            ("train.synthetic_documents", t.synthetic_documents),
        ] {
            if value == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        if t.seq_len < 2 {
            return bad("train.seq_len", format!("is {}; a next-token loss needs at least 2", t.seq_len));
        }
        if t.seq_len > self.model.max_seq_len {
            return bad(
                "train.seq_len",
                format!("({}) exceeds model.max_seq_len ({})", t.seq_len, self.model.max_seq_len),
            );
        }
        if !(t.lr.is_finite() && t.lr > 0.0) {
            return bad("train.lr", format!("must be a positive number, got {}", t.lr));
        }
        if !(0.0..=1.0).contains(&t.min_lr_ratio) {
            return bad("train.min_lr_ratio", format!("must be in [0, 1], got {}", t.min_lr_ratio));
        }
        for (field, beta) in [("train.beta1", t.beta1), ("train.beta2", t.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return bad(field, format!("must be in [0, 1), got {beta}"));
            }
        }
        if !(t.epsilon.is_finite() && t.epsilon > 0.0) {
            return bad("train.epsilon", format!("must be positive, got {}", t.epsilon));
        }
        if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
            return bad("train.weight_decay", format!("must be >= 0, got {}", t.weight_decay));
        }
        if let Some(clip) = t.grad_clip {
            if !(clip.is_finite() && clip > 0.0) {
                return bad("train.grad_clip", format!("must be positive (or null for off), got {clip}"));
            }
        }
        let non_negative = |x: f64| x.is_finite() && x >= 0.0;
        if !non_negative(self.aux_loss_coef()) || !non_negative(t.z_loss_coef) {
            return bad("train.aux_loss_coef / train.z_loss_coef", "must be >= 0".into());
        }
        if !(t.val_fraction > 0.0 && t.val_fraction < 1.0) {
            return bad("train.val_fraction", format!("must be in (0, 1), got {}", t.val_fraction));
        }
        if t.routers_only && self.model.dense {
            return bad("train.routers_only", "a dense model has no router to train".into());
        }
        if let Some(d) = &t.distill {
            if !(d.temperature.is_finite() && d.temperature > 0.0) {
                return bad("train.distill.temperature", format!("must be > 0, got {}", d.temperature));
            }
            if !(0.0..=1.0).contains(&d.alpha) {
                return bad("train.distill.alpha", format!("must be in [0, 1], got {}", d.alpha));
            }
        }
        if t.tokenizer_vocab_size < 260 {
            return bad(
                "train.tokenizer_vocab_size",
                format!("({}) must leave room for the 256 byte tokens and the specials", t.tokenizer_vocab_size),
            );
        }
        Ok(())
    }
}
