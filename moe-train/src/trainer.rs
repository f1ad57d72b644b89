//! The training loop, generic over the autodiff backend.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use moe_core::io::{save_hub_checkpoint, WeightDtype};
use moe_core::loss::causal_lm_loss;
use moe_core::model::Mixtral;
use moe_generate::TextTokenizer;
use serde::Serialize;

use crate::checkpoint::{self, TrainState};
use crate::config::TrainConfig;
use crate::data::packing::{BatchOrder, PackedData, Split, NO_TASK};
use crate::error::{Result, TrainError};
use crate::metrics::{read_log, EvalRecord, LogRecord, RouterStats, RunLog, TrainRecord};
use crate::objective::{objective, Teacher};
use crate::optim::{clip_global_norm, learning_rate, MoeOptimizer};
use crate::samples::{sample_tasks, Sample};

/// Everything a run needs, prepared by the caller (the CLI or a test).
#[derive(Debug)]
pub struct RunSetup {
    /// Settings; `model.vocab_size` must equal the tokenizer's.
    pub config: TrainConfig,
    /// Where config, metrics, checkpoints, plots and the exported model go.
    pub run_dir: PathBuf,
    /// The tokenizer of the run.
    pub tokenizer: TextTokenizer,
    /// The packed training and validation sequences.
    pub data: PackedData,
    /// Task names when the corpus has tasks (the built-in one), else empty.
    pub tasks: Vec<&'static str>,
    /// A checkpoint folder to continue from.
    pub resume_from: Option<PathBuf>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// What a finished run reports (the CLI's `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Optimizer steps done.
    pub steps: usize,
    /// Validation loss before the first step.
    pub initial_val_loss: f32,
    /// Validation loss after the last step.
    pub final_val_loss: f32,
    /// Mean LM loss over the last `min(10, steps)` steps.
    pub final_train_loss: f32,
    /// Training tokens per second over the whole run (evaluation excluded).
    pub tokens_per_sec: f64,
    /// Training tokens consumed.
    pub tokens_seen: u64,
    /// The run folder.
    pub run_dir: PathBuf,
    /// The exported Hub-layout model (`config.json`, `model.safetensors`, `tokenizer.json`).
    pub model_dir: PathBuf,
    /// Mean over layers of the task/expert NMI at the last evaluation (built-in corpus only).
    pub specialisation_nmi: Option<f64>,
    /// Exact-match accuracy of greedy answers per task (built-in corpus only).
    pub task_accuracy: Vec<(String, f64)>,
    /// Validation loss per task at the last evaluation (built-in corpus only).
    pub task_val_loss: Vec<(String, f64)>,
    /// Greedy samples after training.
    pub samples: Vec<Sample>,
    /// PNG plots written.
    pub plots: Vec<PathBuf>,
}

/// [`train`] on the backend a [`run_on`](moe_core::backend::run_on) caller picks, under
/// `Autodiff`.
pub struct TrainTask<'a> {
    /// The run to train.
    pub setup: &'a RunSetup,
}

impl moe_core::backend::BackendTask for TrainTask<'_> {
    type Output = Result<RunSummary>;

    fn run<B: Backend>(self, device: B::Device) -> Result<RunSummary> {
        train::<burn::backend::Autodiff<B>>(self.setup, &device)
    }
}

/// Trains, evaluates, checkpoints, exports and plots; see the crate docs for the folder layout.
pub fn train<B: AutodiffBackend>(setup: &RunSetup, device: &B::Device) -> Result<RunSummary> {
    let RunSetup { config, run_dir, tokenizer, data, tasks, resume_from, progress } = setup;
    let t = &config.train;
    let (b, s) = (t.batch_size, t.seq_len);
    let aux_coef = config.aux_loss_coef();
    std::fs::create_dir_all(run_dir).map_err(|e| TrainError::io(run_dir, e))?;

    // The fresh model's weights come from `init_seeded`'s own generator; the backend's seeds the
    // draws made while training (noisy routing).
    B::seed(device, t.seed);
    let fresh = match &t.init_from {
        Some(dir) => {
            let mut model = moe_core::io::load_hub_checkpoint::<B>(dir, device)?;
            // Token ids, context length and loss weight are the run's; the shape must agree.
            if model.config().shape_differs(&config.model) {
                return Err(TrainError::setting(
                    "train.init_from",
                    format!("{} holds another model than the run's config describes", dir.display()),
                ));
            }
            model.config = config.model.clone();
            model
        }
        None => config.model.init_seeded::<B>(device, t.seed),
    };
    let (mut model, mut optim, mut state) = match resume_from {
        Some(dir) => checkpoint::load(dir, fresh, t, device)?,
        None => {
            let optim = MoeOptimizer::new(t, &fresh);
            (fresh, optim, TrainState { step: 0, batches_seen: 0, tokens_seen: 0, train_secs: 0.0 })
        }
    };
    // The teacher runs without autodiff: no graph, no gradient, and no KV cache either.
    let teacher = match &t.distill {
        Some(d) => {
            let teacher = moe_core::io::load_hub_checkpoint::<B::InnerBackend>(&d.teacher, device)?;
            if teacher.config().vocab_size != config.model.vocab_size {
                return Err(TrainError::setting(
                    "train.distill.teacher",
                    format!(
                        "{} has a vocabulary of {} tokens, the student {}: they must share the tokenizer",
                        d.teacher.display(),
                        teacher.config().vocab_size,
                        config.model.vocab_size
                    ),
                ));
            }
            Some(teacher)
        }
        None => None,
    };
    let log_path = run_dir.join("metrics.jsonl");
    let mut log = RunLog::open(&log_path, resume_from.as_ref().map(|_| state.step))?;
    let mut order = BatchOrder::new(&data.train, b, t.seed)?;
    let evaluate_now =
        |model: &Mixtral<B>, step| evaluate(&model.valid(), &data.val, b, t.eval_batches, tasks.len(), step);

    if state.step == 0 {
        let eval = evaluate_now(&model, 0);
        report_eval(&eval, None);
        log.write(&LogRecord::Eval(eval))?;
    }
    let bar = progress_bar(*progress, t.steps, state.step);
    let tokens_per_step = (b * s * t.grad_accum_steps) as u64;
    while state.step < t.steps {
        let started = Instant::now();
        let step = state.step + 1;
        let lr = learning_rate(state.step, t);
        let mut accumulator = GradientsAccumulator::<Mixtral<B>>::new();
        let mut sums = [0f32; 5];
        let mut dropped = 0f32;
        let mut loads: Vec<Vec<usize>> = Vec::new();
        for _ in 0..t.grad_accum_steps {
            let (ids, _) = data.train.gather(&order.batch(state.batches_seen));
            state.batches_seen += 1;
            let input = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, s]), device);
            let taught = teacher.as_ref().zip(t.distill.as_ref()).map(|(teacher, d)| Teacher {
                logits: Tensor::from_inner(teacher.forward(input.clone().inner()).logits),
                temperature: d.temperature,
                alpha: d.alpha,
            });
            let parts = objective(&model, input, aux_coef, t.z_loss_coef, taught);
            dropped += parts.dropped_fraction / t.grad_accum_steps as f32;
            loads.resize_with(parts.expert_counts.len(), Vec::new);
            for (sum, counts) in loads.iter_mut().zip(&parts.expert_counts) {
                sum.resize(counts.len(), 0);
                sum.iter_mut().zip(counts).for_each(|(s, c)| *s += c);
            }
            let losses = vec![parts.total.clone(), parts.lm_loss, parts.aux_loss, parts.z_loss, parts.distill_loss];
            let values = Tensor::cat(losses, 0).detach().into_data().to_vec::<f32>().expect("f32 losses");
            if !values[0].is_finite() {
                return Err(non_finite(step, "loss", values[0], run_dir));
            }
            for (sum, v) in sums.iter_mut().zip(&values) {
                *sum += v / t.grad_accum_steps as f32;
            }
            let loss =
                if t.grad_accum_steps > 1 { parts.total.div_scalar(t.grad_accum_steps as f32) } else { parts.total };
            accumulator.accumulate(&model, GradientsParams::from_grads(loss.backward(), &model));
        }
        let mut grads = accumulator.grads();
        optim.drop_frozen(&model, &mut grads);
        let grad_norm = clip_global_norm::<B, _>(&model, &mut grads, t.grad_clip);
        if !grad_norm.is_finite() {
            return Err(non_finite(step, "gradient norm", grad_norm, run_dir));
        }
        model = optim.step(lr, model, grads);
        // Auxiliary-loss-free balancing (a no-op unless routing.bias_update_rate > 0).
        model.update_expert_biases(&loads);
        let secs = started.elapsed().as_secs_f64();
        state.step = step;
        state.tokens_seen += tokens_per_step;
        state.train_secs += secs;
        let record = TrainRecord {
            step,
            loss: sums[0],
            lm_loss: sums[1],
            aux_loss: sums[2],
            z_loss: sums[3],
            distill_loss: t.distill.is_some().then_some(sums[4]),
            dropped_fraction: dropped,
            grad_norm,
            lr,
            tokens_per_sec: tokens_per_step as f64 / secs.max(1e-9),
        };
        log.write(&LogRecord::Train(record))?;
        bar.set_position(step as u64);
        bar.set_message(format!(
            "loss {:.3} | lr {lr:.2e} | {:.0} tok/s",
            sums[1],
            state.tokens_seen as f64 / state.train_secs.max(1e-9)
        ));
        if step % t.eval_every == 0 || step == t.steps {
            let eval = evaluate_now(&model, step);
            bar.suspend(|| report_eval(&eval, Some(sums[1])));
            log.write(&LogRecord::Eval(eval))?;
        }
        if step % t.checkpoint_every == 0 || step == t.steps {
            checkpoint::save(run_dir, &model, &optim, &state, t.keep_checkpoints)?;
        }
    }
    bar.finish_and_clear();

    let model = model.valid();
    let model_dir = run_dir.join("model");
    save_hub_checkpoint(&model, &model_dir, WeightDtype::F32)?;
    tokenizer.save(model_dir.join("tokenizer.json"))?;

    let (samples, task_accuracy) = sample_tasks(&model, tokenizer, tasks, &data.val, t.seed)?;
    let records = read_log(&log_path)?;
    let plots = crate::plots::draw_all(&run_dir.join("plots"), &records, tasks)?;
    Ok(summarise(&records, &state, run_dir, model_dir, samples, (tasks, task_accuracy), plots))
}

fn non_finite(step: usize, what: &'static str, value: f32, run_dir: &Path) -> TrainError {
    // Listing can only fail if the folder is unreadable; then no checkpoint is named.
    let last_checkpoint = checkpoint::list(run_dir).ok().and_then(|mut found| found.pop());
    TrainError::NonFinite { step, what, value, last_checkpoint }
}

fn progress_bar(show: bool, steps: usize, done: usize) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps as u64).with_position(done as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] step {pos}/{len} | {msg} | eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

fn report_eval(eval: &EvalRecord, train_loss: Option<f32>) {
    let train = train_loss.map_or(String::new(), |l| format!("train loss {l:.3} | "));
    let nmi = eval
        .specialisation
        .as_ref()
        .map_or(String::new(), |s| format!(" | task/expert NMI {:.2}", s.iter().sum::<f64>() / s.len().max(1) as f64));
    // A dense model has no experts to report.
    let busiest = match eval.expert_load.is_empty() {
        true => String::new(),
        false => {
            let max_load = eval.expert_load.iter().flatten().copied().fold(0.0, f64::max);
            format!(" | busiest expert {:.0}% of choices", 100.0 * max_load)
        }
    };
    log::info!(
        "step {:>5}: {train}val loss {:.3} (ppl {:.2}){busiest}{nmi}",
        eval.step,
        eval.val_loss,
        eval.perplexity
    );
}

/// Validation loss and router statistics over up to `max_batches` batches of `split`.
pub fn evaluate<B: Backend>(
    model: &Mixtral<B>,
    split: &Split,
    batch_size: usize,
    max_batches: usize,
    n_tasks: usize,
    step: usize,
) -> EvalRecord {
    let c = model.config();
    let device = model.devices()[0].clone();
    let b = batch_size.min(split.len()).max(1);
    let batches = (split.len() / b).clamp(1, max_batches);
    let moe_layers = c.n_sparse_layers();
    let mut stats = RouterStats::new(moe_layers, c.n_experts, n_tasks);
    let mut loss_sum = 0.0;
    // Per task: summed next-token NLL and tokens.
    let mut task_nll = vec![(0.0f64, 0u64); n_tasks];
    for i in 0..batches {
        let indices: Vec<usize> = (i * b..(i + 1) * b).collect();
        let (ids, task_ids) = split.gather(&indices);
        let input = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, split.seq_len]), &device);
        let out = model.forward(input.clone());
        if n_tasks > 0 {
            let s = split.seq_len;
            let nll = next_token_nll(out.logits.clone(), input.clone());
            for (n, &value) in nll.iter().enumerate() {
                // Prediction `n` of row `r` is of token `n % (s - 1) + 1` of that row.
                let (row, position) = (n / (s - 1), n % (s - 1) + 1);
                let task = task_ids[row * s + position];
                if task != NO_TASK && (task as usize) < n_tasks {
                    let entry = &mut task_nll[task as usize];
                    entry.0 += value as f64;
                    entry.1 += 1;
                }
            }
        }
        let loss = causal_lm_loss(out.logits, input).into_scalar();
        loss_sum += burn::tensor::ElementConversion::elem::<f64>(loss);
        let (logits, experts): (Vec<Vec<f32>>, Vec<Vec<i64>>) = out
            .routing
            .into_iter()
            .map(|r| {
                let logits = r.router_logits.into_data().convert::<f32>().to_vec().expect("f32");
                (logits, r.experts.into_data().convert::<i64>().to_vec().expect("i64"))
            })
            .unzip();
        stats.add(&logits, &experts, &task_ids);
    }
    let mut record = stats.record(step, (loss_sum / batches as f64) as f32);
    record.task_loss =
        (n_tasks > 0).then(|| task_nll.iter().map(|&(sum, n)| (n > 0).then(|| sum / n as f64)).collect());
    record
}

/// Each position's next-token cross-entropy, read back to the host, `[B * (S - 1)]` row-major.
///
/// # Shapes
/// - `logits`: `[B, S, V]`, `input_ids`: `[B, S]`
fn next_token_nll<B: Backend>(logits: Tensor<B, 3>, input_ids: Tensor<B, 2, Int>) -> Vec<f32> {
    let [b, s, v] = logits.dims();
    let logits = logits.narrow(1, 0, s - 1).reshape([b * (s - 1), v]).cast(burn::tensor::FloatDType::F32);
    let targets = input_ids.narrow(1, 1, s - 1).reshape([b * (s - 1), 1]);
    let nll = moe_core::nn::functional::log_softmax(logits, 1).gather(1, targets).neg();
    nll.into_data().convert::<f32>().to_vec().expect("f32")
}

fn summarise(
    records: &[LogRecord],
    state: &TrainState,
    run_dir: &Path,
    model_dir: PathBuf,
    samples: Vec<Sample>,
    (tasks, task_accuracy): (&[&str], Vec<(String, f64)>),
    plots: Vec<PathBuf>,
) -> RunSummary {
    let evals: Vec<&EvalRecord> =
        records.iter().filter_map(|r| if let LogRecord::Eval(e) = r { Some(e) } else { None }).collect();
    let train: Vec<f32> =
        records.iter().filter_map(|r| if let LogRecord::Train(t) = r { Some(t.lm_loss) } else { None }).collect();
    let tail = &train[train.len().saturating_sub(10)..];
    let last = evals.last();
    RunSummary {
        steps: state.step,
        initial_val_loss: evals.first().map_or(f32::NAN, |e| e.val_loss),
        final_val_loss: last.map_or(f32::NAN, |e| e.val_loss),
        final_train_loss: tail.iter().sum::<f32>() / tail.len().max(1) as f32,
        tokens_per_sec: state.tokens_seen as f64 / state.train_secs.max(1e-9),
        tokens_seen: state.tokens_seen,
        run_dir: run_dir.into(),
        model_dir,
        specialisation_nmi: last
            .and_then(|e| e.specialisation.as_ref())
            .map(|s| s.iter().sum::<f64>() / s.len().max(1) as f64),
        task_accuracy,
        task_val_loss: last
            .and_then(|e| e.task_loss.as_ref())
            .map(|losses| tasks.iter().zip(losses).filter_map(|(t, l)| l.map(|l| (t.to_string(), l))).collect())
            .unwrap_or_default(),
        samples,
        plots,
    }
}
