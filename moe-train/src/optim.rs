//! AdamW with two parameter groups, global-norm gradient clipping and the LR schedule.
//!
//! Burn's `AdamW` decays every parameter and clips each gradient on its own; training recipes
//! (nanoGPT, HF `Trainer`) exempt norms and embeddings from decay and clip the norm of all
//! gradients together, so both are done here around two stock Burn optimizers.

use std::collections::HashSet;
use std::f64::consts::PI;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};
use moe_core::model::Mixtral;

use crate::config::TrainingSettings;

/// Learning rate of optimizer step `step` (0-based): linear warmup to `lr` over `warmup_steps`,
/// cosine decay to `min_lr_ratio * lr` at `lr_decay_steps`, constant after.
pub fn learning_rate(step: usize, t: &TrainingSettings) -> f64 {
    let min_lr = t.lr * t.min_lr_ratio;
    if step < t.warmup_steps {
        return t.lr * (step + 1) as f64 / t.warmup_steps as f64;
    }
    if step >= t.lr_decay_steps {
        return min_lr;
    }
    let progress = (step - t.warmup_steps) as f64 / (t.lr_decay_steps - t.warmup_steps).max(1) as f64;
    min_lr + 0.5 * (1.0 + (PI * progress).cos()) * (t.lr - min_lr)
}

type Adam<B> = OptimizerAdaptor<AdamW, Mixtral<B>, B>;

/// AdamW over a Mixtral: weight decay for matrices (and, if asked, the embedding), none for
/// norms.
pub struct MoeOptimizer<B: AutodiffBackend> {
    /// Parameters that decay.
    pub decay: Adam<B>,
    /// Parameters that do not.
    pub no_decay: Adam<B>,
    no_decay_ids: HashSet<ParamId>,
    /// The experts' parameters (see [`Self::step`]), unless frozen.
    expert_ids: HashSet<ParamId>,
    /// Parameters that are not trained (`train.routers_only`).
    frozen_ids: HashSet<ParamId>,
}

impl<B: AutodiffBackend> MoeOptimizer<B> {
    /// Two AdamW groups for `model` (decayed and not decayed) with the settings of `t`.
    pub fn new(t: &TrainingSettings, model: &Mixtral<B>) -> Self {
        let adam = |decay: f64| {
            AdamWConfig::new()
                .with_beta_1(t.beta1 as f32)
                .with_beta_2(t.beta2 as f32)
                .with_epsilon(t.epsilon as f32)
                .with_weight_decay(decay as f32)
                .init::<B, Mixtral<B>>()
        };
        let mut groups = Groups {
            path: Vec::new(),
            decay_embeddings: t.decay_embeddings,
            decay_norms: t.decay_norms,
            routers_only: t.routers_only,
            no_decay: HashSet::new(),
            experts: HashSet::new(),
            frozen: HashSet::new(),
        };
        model.visit(&mut groups);
        Self {
            decay: adam(t.weight_decay),
            no_decay: adam(0.0),
            no_decay_ids: groups.no_decay,
            expert_ids: groups.experts,
            frozen_ids: groups.frozen,
        }
    }

    /// Drops the gradients of frozen parameters (`train.routers_only`), so that neither the
    /// gradient norm nor the update sees them: AdamW leaves a parameter without a gradient
    /// alone, weight decay included.
    pub fn drop_frozen(&self, model: &Mixtral<B>, grads: &mut GradientsParams) {
        if self.frozen_ids.is_empty() {
            return;
        }
        let mut split = SplitGrads { ids: &self.frozen_ids, from: grads, to: GradientsParams::new() };
        model.visit(&mut split);
    }

    /// One AdamW update of every parameter that has a gradient, and of every expert.
    ///
    /// An expert no token reached in this step has no gradient (its parameters took no part in
    /// the loss), and Burn's AdamW would leave it alone. transformers keeps a layer's experts in
    /// one stacked tensor, whose gradient is zero there, so torch's AdamW still decays such an
    /// expert and moves its moments; the experts get zero gradients here to do the same.
    pub fn step(&mut self, lr: f64, model: Mixtral<B>, mut grads: GradientsParams) -> Mixtral<B> {
        model.visit(&mut ZeroGradsOfIdleExperts { ids: &self.expert_ids, grads: &mut grads });
        let mut split = SplitGrads { ids: &self.no_decay_ids, from: &mut grads, to: GradientsParams::new() };
        model.visit(&mut split);
        let no_decay = split.to;
        let model = self.decay.step(lr, model, grads);
        self.no_decay.step(lr, model, no_decay)
    }
}

/// Sorts parameters by rank and path: rank < 2 (norms) and the embedding decay only if asked;
/// also notes which are the experts'.
struct Groups {
    path: Vec<String>,
    decay_embeddings: bool,
    decay_norms: bool,
    routers_only: bool,
    no_decay: HashSet<ParamId>,
    experts: HashSet<ParamId>,
    frozen: HashSet<ParamId>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Groups {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let embedding = self.path.iter().any(|p| p == "embed_tokens");
        if (D < 2 && !self.decay_norms) || (embedding && !self.decay_embeddings) {
            self.no_decay.insert(param.id);
        }
        if self.routers_only && !self.path.iter().any(|p| p == "router") {
            self.frozen.insert(param.id);
        } else if self.path.iter().any(|p| p == "experts") {
            self.experts.insert(param.id);
        }
    }
}

struct ZeroGradsOfIdleExperts<'a> {
    ids: &'a HashSet<ParamId>,
    grads: &'a mut GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for ZeroGradsOfIdleExperts<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.ids.contains(&param.id) && self.grads.get::<B::InnerBackend, D>(param.id).is_none() {
            self.grads.register(param.id, param.val().inner().zeros_like());
        }
    }
}

struct SplitGrads<'a> {
    ids: &'a HashSet<ParamId>,
    from: &'a mut GradientsParams,
    to: GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SplitGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.ids.contains(&param.id) {
            if let Some(g) = self.from.remove::<B::InnerBackend, D>(param.id) {
                self.to.register(param.id, g);
            }
        }
    }
}

/// The L2 norm of all gradients together (read back to the host: one sync per step).
pub fn global_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M, grads: &GradientsParams) -> f32 {
    let mut norm = SquaredNorm::<B> { grads, sum: None };
    model.visit(&mut norm);
    norm.sum.map_or(0.0, |s| s.into_scalar().elem::<f32>().sqrt())
}

struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    sum: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let sq = g.square().sum();
            self.sum = Some(match self.sum.take() {
                Some(s) => s + sq,
                None => sq,
            });
        }
    }
}

/// Scales every gradient by `factor` (torch's `clip_grad_norm_` with `max_norm / (norm + 1e-6)`).
pub fn scale_grads<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M, grads: &mut GradientsParams, factor: f32) {
    let mut scale = Scale { grads, factor };
    model.visit(&mut scale);
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f32,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// Clips to `max_norm` as torch does; returns the norm before clipping.
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
    max_norm: Option<f64>,
) -> f32 {
    let norm = global_grad_norm::<B, M>(model, grads);
    if let Some(max_norm) = max_norm {
        let factor = max_norm as f32 / (norm + 1e-6);
        if factor < 1.0 && norm.is_finite() {
            scale_grads::<B, M>(model, grads, factor);
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let t = TrainingSettings {
            lr: 1.0,
            min_lr_ratio: 0.1,
            warmup_steps: 10,
            lr_decay_steps: 110,
            ..Default::default()
        };
        assert!((learning_rate(0, &t) - 0.1).abs() < 1e-12);
        assert!((learning_rate(9, &t) - 1.0).abs() < 1e-12);
        assert!((learning_rate(10, &t) - 1.0).abs() < 1e-12);
        assert!((learning_rate(60, &t) - 0.55).abs() < 1e-12);
        assert!((learning_rate(110, &t) - 0.1).abs() < 1e-12);
        assert!((learning_rate(5000, &t) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn an_expert_without_gradient_is_still_decayed() {
        use burn::backend::{Autodiff, NdArray};
        type B = Autodiff<NdArray>;
        let device = Default::default();
        let model = moe_core::config::MixtralConfig::tiny().init::<B>(&device);
        // A loss that no expert takes part in: only the embedding has a gradient.
        let loss = model.embed_tokens.weight.val().sum();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let before: Vec<f32> =
            model.layers[0].moe().unwrap().experts.ffns[1].down.weight.val().into_data().to_vec().unwrap();
        let t = TrainingSettings { lr: 0.5, weight_decay: 0.1, ..Default::default() };
        let mut optim = MoeOptimizer::new(&t, &model);
        let model = optim.step(t.lr, model, grads);
        let after: Vec<f32> =
            model.layers[0].moe().unwrap().experts.ffns[1].down.weight.val().into_data().to_vec().unwrap();
        // AdamW with a zero gradient: only the decay, w * (1 - lr * wd), as torch does.
        for (a, b) in after.iter().zip(&before) {
            assert!((a - b * (1.0 - 0.05)).abs() <= 1e-6, "{a} vs {b}");
        }
    }
}
