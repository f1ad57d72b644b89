//! Your own Burn model with moe-core's sparse MoE layer, trained by burn-train's `Learner`.
//!
//! A small transformer classifier (not Mixtral) whose feed-forward blocks are
//! [`moe_core::moe::SparseMoe`] learns which topic dominates a generated token sequence. The
//! load-balancing loss is part of the objective, and the dashboard shows accuracy, the router's
//! aux loss and the least-used expert's load next to the loss.
//!
//! ```sh
//! cargo run --release --example custom_model                     # ndarray, 4 epochs
//! cargo run --release --example custom_model -- --backend wgpu --epochs 8
//! cargo run --release --example custom_model -- --json           # plain logs + a JSON summary
//! ```

mod data;
mod metrics;
mod model;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{ensure, Result};
use burn::backend::Autodiff;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::InMemDataset;
use burn::module::AutodiffModule;
use burn::optim::AdamWConfig;
use burn::prelude::*;
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{Learner, SupervisedTraining};
use clap::Parser;
use moe_core::backend::{run_on, BackendKind, BackendTask, Precision};
use serde::Serialize;

use data::{TopicBatcher, TopicItem, TopicTask};
use metrics::{min_expert_load, LineRenderer, RouterMetric, RouterStat};
use model::{TopicClassifier, TopicClassifierConfig};

/// Train a custom MoE classifier with burn-train.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// ndarray or flex (CPU), wgpu, or cuda (when built with `--features cuda`).
    #[arg(long, default_value = "ndarray")]
    backend: BackendKind,
    /// Passes over the training set.
    #[arg(long, default_value_t = 4)]
    epochs: usize,
    /// Training examples (validation: a quarter as many).
    #[arg(long, default_value_t = 4096)]
    train_size: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Experts per MoE layer.
    #[arg(long, default_value_t = 4)]
    experts: usize,
    /// Experts per token.
    #[arg(long, default_value_t = 2)]
    top_k: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Folder for burn-train's logs.
    #[arg(long, default_value = "runs/custom-model")]
    out: PathBuf,
    /// Plain progress lines on stderr and one JSON summary on stdout.
    #[arg(long)]
    json: bool,
}

/// What the run achieved, on the validation set.
#[derive(Debug, Serialize)]
struct Summary {
    backend: String,
    epochs: usize,
    valid_loss_before: f64,
    valid_loss_after: f64,
    valid_accuracy_after: f64,
    /// Per layer, each expert's share of the (token, slot) assignments after training.
    expert_share: Vec<Vec<f64>>,
    /// The least-used expert's share relative to uniform (1 = balanced, 0 = unused expert).
    min_expert_load: f64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        args.epochs > 0 && args.train_size >= 4 * args.batch_size && args.batch_size > 0,
        "need --epochs >= 1, --batch-size >= 1 and --train-size >= 4 x --batch-size"
    );
    ensure!((1..=args.experts).contains(&args.top_k), "--top-k must be in 1..=--experts");
    let summary = run_on(args.backend, Precision::F32, Train(args.clone()))??;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "valid loss {:.3} -> {:.3}, accuracy {:.1}%; min expert load {:.2}",
            summary.valid_loss_before,
            summary.valid_loss_after,
            100.0 * summary.valid_accuracy_after,
            summary.min_expert_load
        );
        for (layer, shares) in summary.expert_share.iter().enumerate() {
            let shares: Vec<String> = shares.iter().map(|s| format!("{:.0}%", 100.0 * s)).collect();
            println!("layer {layer} expert shares: {}", shares.join(" "));
        }
    }
    Ok(())
}

/// The training run, written once for every backend.
struct Train(Args);

impl BackendTask for Train {
    type Output = Result<Summary>;

    fn run<B: Backend>(self, device: B::Device) -> Result<Summary> {
        train::<Autodiff<B>>(self.0, device)
    }
}

fn train<B: burn::tensor::backend::AutodiffBackend>(args: Args, device: B::Device) -> Result<Summary> {
    B::seed(&device, args.seed);
    let task = TopicTask::default();
    let train_items = task.generate(args.train_size, args.seed);
    let valid_items = task.generate(args.train_size / 4, args.seed + 1);

    let config = TopicClassifierConfig::new(task.vocab_size(), task.seq_len, task.topics)
        .with_n_experts(args.experts)
        .with_top_k(args.top_k);
    let model: TopicClassifier<B> = config.init(&device);
    let before = evaluate(&model.valid(), &valid_items, args.batch_size, &device);

    let train_loader = DataLoaderBuilder::<B, _, _>::new(TopicBatcher)
        .batch_size(args.batch_size)
        .shuffle(args.seed)
        .set_device(device.clone())
        .build(InMemDataset::new(train_items));
    let valid_loader = DataLoaderBuilder::<B::InnerBackend, _, _>::new(TopicBatcher)
        .batch_size(args.batch_size)
        .set_device(device.clone())
        .build(InMemDataset::new(valid_items.clone()));

    let mut training = SupervisedTraining::new(&args.out, train_loader, valid_loader)
        .metric_train_numeric(LossMetric::new())
        .metric_valid_numeric(LossMetric::new())
        .metric_train_numeric(AccuracyMetric::new())
        .metric_valid_numeric(AccuracyMetric::new())
        .metric_train_numeric(RouterMetric::new(RouterStat::AuxLoss))
        .metric_train_numeric(RouterMetric::new(RouterStat::MinExpertLoad))
        .metric_valid_numeric(RouterMetric::new(RouterStat::MinExpertLoad))
        .num_epochs(args.epochs);
    // burn-train's dashboard in a terminal; plain lines otherwise (and always with --json).
    if args.json || !std::io::stdout().is_terminal() {
        training = training.renderer(LineRenderer::new(25));
    }
    let learner = Learner::new(model, AdamWConfig::new().with_weight_decay(0.01).init(), args.lr);
    let trained = training.launch(learner).model;

    let after = evaluate(&trained, &valid_items, args.batch_size, &device);
    Ok(Summary {
        backend: args.backend.to_string(),
        epochs: args.epochs,
        valid_loss_before: before.loss,
        valid_loss_after: after.loss,
        valid_accuracy_after: after.accuracy,
        min_expert_load: min_expert_load(&after.expert_tokens),
        expert_share: after
            .expert_tokens
            .iter()
            .map(|layer| {
                let total: f64 = layer.iter().sum();
                layer.iter().map(|c| c / total).collect()
            })
            .collect(),
    })
}

/// Validation-set loss, accuracy and per-layer expert assignment counts.
struct Evaluation {
    loss: f64,
    accuracy: f64,
    expert_tokens: Vec<Vec<f64>>,
}

fn evaluate<B: Backend>(
    model: &TopicClassifier<B>,
    items: &[TopicItem],
    batch_size: usize,
    device: &B::Device,
) -> Evaluation {
    let loader: Arc<dyn DataLoader<B, _>> = DataLoaderBuilder::<B, _, _>::new(TopicBatcher)
        .batch_size(batch_size)
        .set_device(device.clone())
        .build(InMemDataset::new(items.to_vec()));
    let (mut loss, mut correct, mut n) = (0.0, 0usize, 0usize);
    let mut expert_tokens: Vec<Vec<f64>> = Vec::new();
    for batch in loader.iter() {
        let out = model.objective(batch);
        let b = out.targets.dims()[0];
        loss += out.loss.into_scalar().elem::<f64>() * b as f64;
        let predicted = out.logits.argmax(1).squeeze_dim::<1>(1);
        correct += predicted.equal(out.targets).int().sum().into_scalar().elem::<i64>() as usize;
        n += b;
        let [layers, experts] = out.expert_tokens.dims();
        let counts: Vec<f64> = out.expert_tokens.into_data().iter::<f64>().collect();
        expert_tokens.resize(layers, vec![0.0; experts]);
        for (l, row) in expert_tokens.iter_mut().enumerate() {
            for (e, c) in row.iter_mut().enumerate() {
                *c += counts[l * experts + e];
            }
        }
    }
    Evaluation { loss: loss / n as f64, accuracy: correct as f64 / n as f64, expert_tokens }
}
