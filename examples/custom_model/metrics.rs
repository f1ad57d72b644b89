//! What a training step reports, and two router metrics for burn-train's dashboard.

use std::collections::HashMap;
use std::sync::Arc;

use burn::prelude::*;
use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::{
    AccuracyInput, Adaptor, ItemLazy, LossInput, Metric, MetricAttributes, MetricDefinition, MetricMetadata,
    MetricName, Numeric, NumericAttributes, NumericEntry, SerializedEntry,
};
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};

/// Output of one training or validation step.
pub struct TopicOutput<B: Backend> {
    /// `[1]` the objective: cross-entropy + coef x load-balancing loss.
    pub loss: Tensor<B, 1>,
    /// `[B, C]`
    pub logits: Tensor<B, 2>,
    /// `[B]`
    pub targets: Tensor<B, 1, Int>,
    /// `[1]` the load-balancing loss alone (unscaled; `top_k` when perfectly balanced).
    pub aux_loss: Tensor<B, 1>,
    /// `[L, E]` assignments per expert of each layer in this batch.
    pub expert_tokens: Tensor<B, 2>,
}

impl<B: Backend> TopicOutput<B> {
    /// The same values cut from the autodiff graph (metrics only read them).
    pub fn detach(self) -> Self {
        Self {
            loss: self.loss.detach(),
            logits: self.logits.detach(),
            targets: self.targets,
            aux_loss: self.aux_loss.detach(),
            expert_tokens: self.expert_tokens.detach(),
        }
    }
}

impl<B: Backend> ItemLazy for TopicOutput<B> {
    type ItemSync = Self;

    fn sync(self) -> Self {
        self
    }
}

impl<B: Backend> Adaptor<LossInput<B>> for TopicOutput<B> {
    fn adapt(&self) -> LossInput<B> {
        LossInput::new(self.loss.clone())
    }
}

impl<B: Backend> Adaptor<AccuracyInput<B>> for TopicOutput<B> {
    fn adapt(&self) -> AccuracyInput<B> {
        AccuracyInput::new(self.logits.clone(), self.targets.clone())
    }
}

/// Input of the router metrics: host copies of the step's router statistics.
pub struct RouterInput {
    aux_loss: f64,
    /// Per layer, assignments per expert.
    expert_tokens: Vec<Vec<f64>>,
    batch_size: usize,
}

impl<B: Backend> Adaptor<RouterInput> for TopicOutput<B> {
    fn adapt(&self) -> RouterInput {
        let [layers, experts] = self.expert_tokens.dims();
        let counts: Vec<f64> = self.expert_tokens.to_data().iter::<f64>().collect();
        RouterInput {
            aux_loss: self.aux_loss.to_data().iter::<f64>().next().unwrap_or(f64::NAN),
            expert_tokens: (0..layers).map(|l| counts[l * experts..(l + 1) * experts].to_vec()).collect(),
            batch_size: self.targets.dims()[0],
        }
    }
}

/// Which router statistic a [`RouterMetric`] shows.
#[derive(Debug, Clone, Copy)]
pub enum RouterStat {
    /// The load-balancing loss (unscaled).
    AuxLoss,
    /// The least-used expert's share of assignments relative to a uniform share, over all
    /// layers: 1 = perfectly balanced, 0 = an expert receives no tokens.
    MinExpertLoad,
}

/// A numeric metric over [`RouterInput`].
#[derive(Clone)]
pub struct RouterMetric {
    stat: RouterStat,
    name: MetricName,
    state: NumericMetricState,
}

impl RouterMetric {
    /// A metric showing `stat`.
    pub fn new(stat: RouterStat) -> Self {
        let name = match stat {
            RouterStat::AuxLoss => "Router aux loss",
            RouterStat::MinExpertLoad => "Min expert load",
        };
        Self { stat, name: Arc::new(name.to_string()), state: NumericMetricState::new() }
    }
}

/// The least-used expert's share relative to uniform, over all layers.
pub fn min_expert_load(expert_tokens: &[Vec<f64>]) -> f64 {
    expert_tokens
        .iter()
        .map(|layer| {
            let total: f64 = layer.iter().sum();
            let min = layer.iter().copied().fold(f64::INFINITY, f64::min);
            if total > 0.0 {
                min * layer.len() as f64 / total
            } else {
                0.0
            }
        })
        .fold(f64::INFINITY, f64::min)
}

impl Metric for RouterMetric {
    type Input = RouterInput;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn update(&mut self, item: &RouterInput, _metadata: &MetricMetadata) -> SerializedEntry {
        let value = match self.stat {
            RouterStat::AuxLoss => item.aux_loss,
            RouterStat::MinExpertLoad => min_expert_load(&item.expert_tokens),
        };
        self.state.update(value, item.batch_size, FormatOptions::new(self.name()).precision(3))
    }

    fn clear(&mut self) {
        self.state.reset()
    }

    fn attributes(&self) -> MetricAttributes {
        let higher_is_better = matches!(self.stat, RouterStat::MinExpertLoad);
        NumericAttributes { unit: None, higher_is_better }.into()
    }
}

impl Numeric for RouterMetric {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.running_value()
    }
}

/// A plain renderer for logs and pipes: one stderr line per `every` training iterations and at
/// the end of each validation pass (burn-train's own CLI renderer prints every item to stdout).
pub struct LineRenderer {
    every: usize,
    names: HashMap<String, String>,
    train: Vec<(String, String)>,
    valid: Vec<(String, String)>,
}

impl LineRenderer {
    /// Prints every `every` training iterations.
    pub fn new(every: usize) -> Self {
        Self { every: every.max(1), names: HashMap::new(), train: Vec::new(), valid: Vec::new() }
    }

    fn record(&self, into: &mut Vec<(String, String)>, state: MetricState) {
        let entry = match state {
            MetricState::Generic(entry) | MetricState::Numeric(entry, _) => entry,
        };
        let id = format!("{:?}", entry.metric_id);
        let name = self.names.get(&id).cloned().unwrap_or(id);
        let value = entry.serialized_entry.formatted;
        match into.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => into.push((name, value)),
        }
    }

    fn line(split: &str, item: &TrainingProgress, values: &[(String, String)]) -> String {
        let epoch = item.global_progress.items_processed;
        let iteration = item.iteration.unwrap_or(0);
        let metrics: Vec<String> = values.iter().map(|(n, v)| format!("{n}: {v}")).collect();
        format!("[{split}] epoch {epoch} iteration {iteration} | {}", metrics.join(" | "))
    }
}

impl MetricsRendererTraining for LineRenderer {
    fn update_train(&mut self, state: MetricState) {
        let mut train = std::mem::take(&mut self.train);
        self.record(&mut train, state);
        self.train = train;
    }

    fn update_valid(&mut self, state: MetricState) {
        let mut valid = std::mem::take(&mut self.valid);
        self.record(&mut valid, state);
        self.valid = valid;
    }

    fn render_train(&mut self, item: TrainingProgress, _: Vec<ProgressType>) {
        let epoch_done = item.progress.as_ref().is_some_and(|p| p.items_processed >= p.items_total);
        if item.iteration.unwrap_or(0).is_multiple_of(self.every) || epoch_done {
            eprintln!("{}", Self::line("train", &item, &self.train));
        }
    }

    fn render_valid(&mut self, item: TrainingProgress, _: Vec<ProgressType>) {
        if let Some(progress) = &item.progress {
            if progress.items_processed >= progress.items_total {
                eprintln!("{}", Self::line("valid", &item, &self.valid));
            }
        }
    }
}

impl MetricsRendererEvaluation for LineRenderer {
    fn update_test(&mut self, _: EvaluationName, _: MetricState) {}

    fn render_test(&mut self, _: EvaluationProgress, _: Vec<ProgressType>) {}
}

impl MetricsRenderer for LineRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names.insert(format!("{:?}", definition.metric_id), definition.name);
    }
}
