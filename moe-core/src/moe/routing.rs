//! The `routing` section of the model config: how the router turns gate logits into each
//! token's experts and mixing weights, and what runs beside the routed experts. Mixtral's
//! behaviour is the default, so a config without the section (every checkpoint written before
//! it existed) routes exactly as before.

use serde::{Deserialize, Serialize};

use crate::error::{MoeError, Result};

/// How gate logits become expert scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scoring {
    /// A softmax over the experts (Mixtral, Switch, Qwen-MoE): scores compete and sum to 1.
    #[default]
    Softmax,
    /// An independent sigmoid per expert (DeepSeek-V3): an expert's score does not fall when
    /// another's rises, which suits many fine-grained experts and bias-based balancing.
    Sigmoid,
}

/// Routing options of every MoE layer of a model (`MixtralConfig::routing`).
///
/// In a config file: `"routing": {"normalize_top_k": false, "jitter_noise": 0.01}`; missing
/// fields take Mixtral's values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// How gate logits become scores: `"softmax"` (the default) or `"sigmoid"`.
    pub scoring: Scoring,
    /// Rescale the chosen experts' scores to sum to 1 per token (Mixtral, DeepSeek-V3, and
    /// Qwen-MoE's `norm_topk_prob = true`); `false` keeps the raw scores, so a token whose
    /// router is unsure gets a smaller update from its experts (Switch, Qwen2-MoE's default).
    pub normalize_top_k: bool,
    /// Multiplies the routed experts' weights after any renormalisation (DeepSeek-V3's
    /// `routed_scaling_factor`, 2.5 there); 1 leaves them alone.
    pub scaling_factor: f64,
    /// Noisy top-k gating (Shazeer et al. 2017) while training: each gate logit gets Gaussian
    /// noise with a learned, per-token standard deviation `softplus(x · W_noise) + 0.01` before
    /// the top-k, so an expert just outside a token's top k is sometimes tried; and the
    /// balancing loss becomes the paper's importance + load losses, `CV(importance)² +
    /// CV(load)²` (`importance` = each expert's summed gate weights, `load` = the expected
    /// number of tokens it receives under the noise, smooth in both the gate and the noise), at
    /// the trainer's `aux_loss_coef`. `W_noise` `[D, E]` starts at zero. Inference (no autodiff)
    /// routes by the clean logits, as Mixtral. Softmax scoring only, without expert choice,
    /// selection bias or groups.
    pub noisy_gating: bool,
    /// Router jitter (Switch Transformer; HF Mixtral's `router_jitter_noise`): while training
    /// (on an autodiff backend), each MoE layer's input is multiplied element-wise by noise drawn
    /// uniformly from `[1 - j, 1 + j]` before the router and the experts see it, as
    /// transformers does. `0` turns it off; inference never jitters.
    pub jitter_noise: f64,
    /// Expert capacity while training (Switch Transformer, GShard): each expert takes at most
    /// `ceil(factor · T · K / E)` of a batch's `T · K` assignments, first come (in token order)
    /// first served; the rest are dropped: the token gets nothing from that expert and passes
    /// through the residual connection alone. `None` (the default, as Mixtral): dropless.
    pub capacity_factor: Option<f64>,
    /// Expert capacity in inference (no autodiff), often larger than the training one (Switch:
    /// 1.25 to train, 2.0 to evaluate). `None`: the same as `capacity_factor`.
    pub eval_capacity_factor: Option<f64>,
    /// A per-expert bias added to the scores when experts are *chosen* but not when they are
    /// *weighted* (DeepSeek-V3's `e_score_correction_bias`, auxiliary-loss-free balancing). It
    /// is a model parameter (saved, loaded, exported) but never gets a gradient. Implied by a
    /// `bias_update_rate` above 0.
    pub expert_bias: bool,
    /// Auxiliary-loss-free load balancing (Wang et al. 2024, DeepSeek-V3): after every
    /// optimizer step each expert's bias moves by this much towards balance, `b_e += rate ·
    /// sign(mean load - load_e)`, counted over the step's tokens. DeepSeek-V3 used 0.001; 0
    /// leaves the bias alone.
    pub bias_update_rate: f64,
    /// Group-limited routing (DeepSeek-V3's `n_group`): the experts are split into this many
    /// equal groups, and each token picks its experts only within its `top_k_groups` best
    /// groups (a group's score is the sum of its two best expert scores, bias included). With
    /// experts placed by group on devices, this bounds how many devices a token visits. 1 = off.
    pub n_groups: usize,
    /// Groups each token may route into (DeepSeek-V3's `topk_group`); at most `n_groups`.
    pub top_k_groups: usize,
    /// Expert choice (Zhou et al. 2022) while training: instead of each token choosing `K`
    /// experts, each expert chooses its `C = ceil(f · T · K / E)` best tokens of the batch by
    /// score (`f` = `capacity_factor`, 1 when unset) and weights them by their raw score. Load is
    /// balanced by construction; a token may get any number of experts, including none (it
    /// passes through the residual). Choosing among the batch's tokens looks at later
    /// positions, which generation cannot, so inference (no autodiff: evaluation, generation,
    /// serving) routes each token to its top-`K` experts by the same scores and weights, the
    /// usual fix. `normalize_top_k` does not apply.
    pub expert_choice: bool,
    /// Always-on shared experts (DeepSeekMoE, Qwen-MoE): one SwiGLU block every token runs
    /// beside its routed experts, whose output is added to theirs. They hold the common
    /// knowledge so the routed experts can specialise. 0 = none (Mixtral).
    pub n_shared_experts: usize,
    /// Hidden width of the shared block; `None` = `n_shared_experts · intermediate_size`
    /// (DeepSeek fuses its shared experts into one block that wide).
    pub shared_d_ff: Option<usize>,
    /// Scale the shared block's output per token by `sigmoid(x · w)`, a learned `[D, 1]` gate
    /// (Qwen-MoE's `shared_expert_gate`); `false` adds it as is (DeepSeek).
    pub shared_expert_gate: bool,
}

impl Default for RoutingConfig {
    /// Mixtral's routing: softmax, renormalised top-k, no noise, no jitter, no capacity limit, no bias,
    /// groups or shared experts.
    fn default() -> Self {
        Self {
            scoring: Scoring::Softmax,
            normalize_top_k: true,
            scaling_factor: 1.0,
            noisy_gating: false,
            jitter_noise: 0.0,
            capacity_factor: None,
            eval_capacity_factor: None,
            expert_bias: false,
            bias_update_rate: 0.0,
            n_groups: 1,
            top_k_groups: 1,
            expert_choice: false,
            n_shared_experts: 0,
            shared_d_ff: None,
            shared_expert_gate: false,
        }
    }
}

impl RoutingConfig {
    /// Checks the values a layer of `n_experts` experts, `top_k` per token, can run with.
    pub fn validate(&self, n_experts: usize, top_k: usize) -> Result<()> {
        if !(self.jitter_noise.is_finite() && (0.0..1.0).contains(&self.jitter_noise)) {
            return Err(MoeError::config(
                "routing.jitter_noise",
                format!("is {}; it must be in [0, 1) (noise is drawn from [1 - j, 1 + j])", self.jitter_noise),
            ));
        }
        for (field, factor) in [
            ("routing.capacity_factor", self.capacity_factor),
            ("routing.eval_capacity_factor", self.eval_capacity_factor),
        ] {
            if let Some(f) = factor.filter(|f| !(f.is_finite() && *f > 0.0)) {
                return Err(MoeError::config(field, format!("is {f}; a capacity factor must be > 0")));
            }
        }
        if !(self.scaling_factor.is_finite() && self.scaling_factor > 0.0) {
            return Err(MoeError::config(
                "routing.scaling_factor",
                format!("is {}; it must be > 0", self.scaling_factor),
            ));
        }
        if !(self.bias_update_rate.is_finite() && self.bias_update_rate >= 0.0) {
            return Err(MoeError::config(
                "routing.bias_update_rate",
                format!("is {}; it must be a number >= 0", self.bias_update_rate),
            ));
        }
        let g = self.n_groups;
        if g == 0 || !n_experts.is_multiple_of(g) {
            return Err(MoeError::config(
                "routing.n_groups",
                format!("is {g}; it must be at least 1 and divide num_local_experts ({n_experts})"),
            ));
        }
        if !(1..=g).contains(&self.top_k_groups) {
            return Err(MoeError::config(
                "routing.top_k_groups",
                format!("is {}; it must be in 1..=n_groups ({g})", self.top_k_groups),
            ));
        }
        let reachable = self.top_k_groups * (n_experts / g);
        if top_k > reachable {
            return Err(MoeError::config(
                "routing.top_k_groups",
                format!(
                    "{} groups of {} experts hold {reachable} experts, fewer than num_experts_per_tok ({top_k})",
                    self.top_k_groups,
                    n_experts / g
                ),
            ));
        }
        if self.expert_choice && (self.has_expert_bias() || g > 1) {
            return Err(MoeError::config(
                "routing.expert_choice",
                "does not combine with a selection bias or expert groups: experts choose tokens, not tokens experts",
            ));
        }
        if self.noisy_gating {
            let clash = [
                ("routing.scoring = \"sigmoid\"", self.scoring == Scoring::Sigmoid),
                ("routing.expert_choice", self.expert_choice),
                ("a selection bias (routing.expert_bias / bias_update_rate)", self.has_expert_bias()),
                ("routing.n_groups > 1", g > 1),
            ]
            .into_iter()
            .find_map(|(what, set)| set.then_some(what));
            if let Some(what) = clash {
                return Err(MoeError::config(
                    "routing.noisy_gating",
                    format!(
                        "does not combine with {what}: its load loss is the probability of a softmax top-k choice \
                         among noisy logits"
                    ),
                ));
            }
        }
        if self.shared_d_ff == Some(0) {
            return Err(MoeError::config("routing.shared_d_ff", "must be null or at least 1"));
        }
        if self.n_shared_experts == 0 && (self.shared_d_ff.is_some() || self.shared_expert_gate) {
            let field = if self.shared_expert_gate { "routing.shared_expert_gate" } else { "routing.shared_d_ff" };
            return Err(MoeError::config(field, "is set but routing.n_shared_experts is 0"));
        }
        Ok(())
    }

    /// The capacity factor in force: `eval_capacity_factor` (falling back to `capacity_factor`)
    /// in inference, `capacity_factor` while training.
    pub fn capacity_factor(&self, training: bool) -> Option<f64> {
        match training {
            true => self.capacity_factor,
            false => self.eval_capacity_factor.or(self.capacity_factor),
        }
    }

    /// Whether the routers carry a per-expert selection bias.
    pub fn has_expert_bias(&self) -> bool {
        self.expert_bias || self.bias_update_rate > 0.0
    }

    /// Hidden width of the shared block, if there is one, for experts `d_ff` wide.
    pub fn shared_width(&self, d_ff: usize) -> Option<usize> {
        // Saturating: a hostile config's product is refused by the parameter count, not a panic.
        (self.n_shared_experts > 0).then(|| self.shared_d_ff.unwrap_or(self.n_shared_experts.saturating_mul(d_ff)))
    }

    /// The first option (as `routing.<field>`) with which inference differs from Mixtral's,
    /// or `None` when a Mixtral runtime (transformers' Mixtral, llama.cpp) computes the same
    /// logits. Jitter, gate noise and the training capacity only act while training.
    pub fn inference_differs_from_mixtral(&self) -> Option<&'static str> {
        let mixtral = Self::default();
        // Noisy gating routes by the clean logits in inference, as Mixtral does.
        [
            ("routing.scoring", self.scoring != mixtral.scoring),
            ("routing.normalize_top_k", !self.normalize_top_k),
            ("routing.scaling_factor", self.scaling_factor != 1.0),
            ("routing.eval_capacity_factor", self.capacity_factor(false).is_some()),
            ("routing.expert_bias", self.has_expert_bias()),
            ("routing.n_groups", self.n_groups != 1),
            // Inference routes by token choice with the raw scores.
            ("routing.expert_choice", self.expert_choice),
            ("routing.n_shared_experts", self.n_shared_experts > 0),
        ]
        .into_iter()
        .find_map(|(field, differs)| differs.then_some(field))
    }
}

/// Assignments each expert takes at most: `ceil(factor · T · K / E)`.
pub fn expert_capacity(factor: f64, tokens: usize, top_k: usize, n_experts: usize) -> usize {
    (factor * (tokens * top_k) as f64 / n_experts as f64).ceil() as usize
}

/// DeepSeek-V3's auxiliary-loss-free bias update: each expert's bias moves by `rate` towards
/// balance, up when it got fewer than the mean of `loads` (tokens routed to each expert over a
/// training step), down when more, unchanged when exactly at the mean.
pub fn updated_expert_bias(bias: &[f32], loads: &[usize], rate: f64) -> Vec<f32> {
    let mean = loads.iter().sum::<usize>() as f64 / loads.len().max(1) as f64;
    bias.iter()
        .zip(loads)
        .map(|(&b, &load)| {
            let error = mean - load as f64;
            let step = if error > 0.0 {
                rate
            } else if error < 0.0 {
                -rate
            } else {
                0.0
            };
            (b as f64 + step) as f32
        })
        .collect()
}
