//! The training objective, assembled as HF's `MixtralForCausalLM` does.

use burn::tensor::activation::log_sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use moe_core::loss::{causal_lm_loss, distillation_loss, importance_load_loss, load_balancing_loss, router_z_loss};
use moe_core::model::Mixtral;
use moe_core::moe::Scoring;

/// The objective and its parts, each `[1]`.
#[derive(Debug, Clone)]
pub struct Objective<B: Backend> {
    /// `lm_loss + aux_coef * aux_loss + z_coef * z_loss` (with a teacher, `(1 - alpha) *
    /// lm_loss + alpha * distill_loss` in place of `lm_loss`): what is differentiated.
    pub total: Tensor<B, 1>,
    /// Next-token cross-entropy (labels = inputs shifted by one).
    pub lm_loss: Tensor<B, 1>,
    /// Load-balancing loss, unscaled: HF's `load_balancing_loss_func`, or under noisy gating
    /// the importance + load loss.
    pub aux_loss: Tensor<B, 1>,
    /// Router z-loss (unscaled).
    pub z_loss: Tensor<B, 1>,
    /// Distillation loss `T² · KL(teacher ‖ student)` (unscaled); 0 without a teacher.
    pub distill_loss: Tensor<B, 1>,
    /// Fraction of the `T · K` assignments of all layers dropped for expert capacity (0
    /// without `routing.capacity_factor`).
    pub dropped_fraction: f32,
    /// Assignments each layer routed to each expert, `[L][E]`: the load that
    /// auxiliary-loss-free balancing evens out after the step.
    pub expert_counts: Vec<Vec<usize>>,
}

/// A teacher's logits for the batch, for distillation.
#[derive(Debug, Clone)]
pub struct Teacher<B: Backend> {
    /// `[B, S, V]`, computed without autodiff.
    pub logits: Tensor<B, 3>,
    /// Softmax temperature.
    pub temperature: f64,
    /// Weight of the distillation term (`1 - alpha` weighs the cross-entropy).
    pub alpha: f64,
}

/// Runs the model on `input_ids` and assembles the objective. With a coefficient of 0 the part
/// is still computed (it is logged) but kept out of the graph.
///
/// # Shapes
/// - `input_ids`: `[B, S]`
pub fn objective<B: Backend>(
    model: &Mixtral<B>,
    input_ids: Tensor<B, 2, Int>,
    aux_coef: f64,
    z_coef: f64,
    teacher: Option<Teacher<B>>,
) -> Objective<B> {
    let out = model.forward(input_ids.clone());
    let (router_logits, expert_counts, importance_load) =
        (out.router_logits(), out.expert_counts(), out.importance_load());
    let dropped: Vec<usize> = out.routing.iter().map(|r| r.dropped).collect();
    let logits = out.logits;
    let top_k = model.config().top_k;
    let assignments = input_ids.shape().num_elements() * top_k * dropped.len().max(1);
    let dropped_fraction = dropped.iter().sum::<usize>() as f32 / assignments as f32;
    let lm_loss = causal_lm_loss(logits.clone(), input_ids);
    let (data_term, distill_loss) = match teacher {
        Some(Teacher { logits: teacher, temperature, alpha }) => {
            let kd = distillation_loss(logits, teacher, temperature);
            (lm_loss.clone().mul_scalar(1.0 - alpha) + kd.clone().mul_scalar(alpha), kd)
        }
        None => (lm_loss.clone(), lm_loss.zeros_like()),
    };
    if router_logits.is_empty() {
        // A dense model: nothing to balance.
        let zero = lm_loss.zeros_like();
        let (aux_loss, z_loss) = (zero.clone(), zero);
        return Objective {
            total: data_term,
            lm_loss,
            aux_loss,
            z_loss,
            distill_loss,
            dropped_fraction,
            expert_counts,
        };
    }
    let detached = |ls: &[Tensor<B, 2>]| ls.iter().map(|l| l.clone().detach()).collect::<Vec<_>>();
    // The balancing loss weighs each expert's share of the tokens by its mean score: softmax
    // probabilities, or for sigmoid scoring the sigmoids normalised per token (DeepSeek-V3's
    // balance loss), which is the softmax of their logs.
    let scores = match model.config().routing.scoring {
        Scoring::Softmax => router_logits.clone(),
        Scoring::Sigmoid => router_logits.iter().map(|l| log_sigmoid(l.clone())).collect(),
    };
    let aux_loss = match (importance_load.is_empty(), aux_coef > 0.0) {
        (true, true) => load_balancing_loss(&scores, top_k, None),
        (true, false) => load_balancing_loss(&detached(&scores), top_k, None),
        // Noisy gating (Shazeer et al. 2017) balances with its own losses.
        (false, true) => importance_load_loss(&importance_load),
        (false, false) => importance_load_loss(&importance_load.into_iter().map(|s| s.detach()).collect::<Vec<_>>()),
    };
    let z_loss = if z_coef > 0.0 { router_z_loss(&router_logits) } else { router_z_loss(&detached(&router_logits)) };
    let mut total = data_term;
    if aux_coef > 0.0 {
        total = total + aux_loss.clone().mul_scalar(aux_coef);
    }
    if z_coef > 0.0 {
        total = total + z_loss.clone().mul_scalar(z_coef);
    }
    Objective { total, lm_loss, aux_loss, z_loss, distill_loss, dropped_fraction, expert_counts }
}
