//! Noisy top-k gating (Shazeer et al. 2017, "Outrageously Large Neural Networks", section 2.1
//! and appendix A): the noisy logits the router chooses by, and the two statistics its
//! balancing losses are taken of.
//!
//! `H(x)_i = (x·W_g)_i + N(0, 1) · softplus((x·W_noise)_i)`; the gates are the softmax of the
//! top-k entries of `H`. Per expert, summed over the batch's tokens:
//! - **importance**: its gate values;
//! - **load**: the probability that it lands in the token's top k when only its own noise is
//!   drawn again, `Φ(((x·W_g)_i - kth_excluding(H, k, i)) / std_i)`, where `kth_excluding` is
//!   the k-th largest entry of `H` other than `i` (the (k+1)-th of `H` if `i` is chosen, the
//!   k-th otherwise). Unlike a count of tokens it is smooth, so the load loss trains the gate
//!   and the noise.
//!
//! [`crate::loss::importance_load_loss`] turns them into `CV(importance)² + CV(load)²`.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, FloatDType, Int, Tensor};

use super::top_k_indices;
use crate::nn::functional::{positive_reciprocal, softplus};

/// Added to the softplus so the noise never vanishes (the `noise_epsilon` of the reference
/// implementations): a router whose noise weights collapsed would otherwise stop exploring and
/// divide by zero in the load probability.
pub const NOISE_FLOOR: f64 = 1e-2;

/// A layer's importance and load, for the balancing losses of noisy gating.
#[derive(Debug, Clone)]
pub struct ImportanceLoad<B: Backend> {
    /// Summed gate weight per expert, `[E]`, f32, differentiable.
    pub importance: Tensor<B, 1>,
    /// Expected tokens per expert under the noise, `[E]`, f32, differentiable.
    pub load: Tensor<B, 1>,
}

impl<B: Backend> ImportanceLoad<B> {
    /// Both statistics cut from the autodiff graph (to log a loss that is not trained).
    pub fn detach(self) -> Self {
        Self { importance: self.importance.detach(), load: self.load.detach() }
    }
}

/// The noise's standard deviation, `softplus(raw) + NOISE_FLOOR`, in f32.
///
/// # Shapes
/// - `raw`: `[T, E]` (`x · W_noise`) -> `[T, E]`
pub fn noise_std<B: Backend>(raw: Tensor<B, 2>) -> Tensor<B, 2> {
    softplus(raw.cast(FloatDType::F32)).add_scalar(NOISE_FLOOR)
}

/// Importance and load of one batch.
///
/// `clean` are the gate logits before noise, `noisy` the ones experts were chosen by (equal to
/// `clean` in inference), `std` the noise's standard deviation, `experts` the chosen experts and
/// `weights` their gate values (all f32).
///
/// # Shapes
/// - `clean`, `noisy`, `std`: `[T, E]`
/// - `experts`, `weights`: `[T, K]`
pub fn importance_load<B: Backend>(
    clean: Tensor<B, 2>,
    noisy: Tensor<B, 2>,
    std: Tensor<B, 2>,
    experts: Tensor<B, 2, Int>,
    weights: Tensor<B, 2>,
) -> ImportanceLoad<B> {
    let [t, e] = clean.dims();
    let [_, k] = experts.dims();
    let device = clean.device();
    let gates = Tensor::<B, 2>::zeros([t, e], &device).scatter(
        1,
        experts.clone(),
        weights.cast(FloatDType::F32),
        burn::tensor::IndexingUpdateOp::Add,
    ); // [T, E]
    let importance = gates.sum_dim(0).reshape([e]);
    if k >= e {
        // Every expert is always chosen: a load of one per token, with nothing to learn.
        return ImportanceLoad { importance, load: Tensor::full([e], t as f32, &device) };
    }
    // The k-th and (k+1)-th largest noisy logits of each token, differentiable through `noisy`.
    let order = top_k_indices(noisy.clone(), k + 1); // [T, K+1]
    let kth = noisy.clone().gather(1, order.clone().narrow(1, k - 1, 1)); // [T, 1]
    let next = noisy.gather(1, order.narrow(1, k, 1)); // [T, 1]
    let chosen = chosen_mask(experts, e); // [T, E]
    let threshold = kth.expand([t, e]).mask_where(chosen, next.expand([t, e]));
    let z = (clean - threshold) * positive_reciprocal(std);
    let load = normal_cdf(z).sum_dim(0).reshape([e]);
    ImportanceLoad { importance, load }
}

/// `true` at each token's chosen experts.
///
/// # Shapes
/// - `experts`: `[T, K]` -> `[T, E]`
fn chosen_mask<B: Backend>(experts: Tensor<B, 2, Int>, n_experts: usize) -> Tensor<B, 2, Bool> {
    let [t, k] = experts.dims();
    let ids = Tensor::<B, 1, Int>::arange(0..n_experts as i64, &experts.device())
        .reshape([1, 1, n_experts])
        .expand([t, k, n_experts]);
    let hits = experts.unsqueeze_dim::<3>(2).expand([t, k, n_experts]).equal(ids).int().sum_dim(1); // [T, 1, E]
    hits.reshape([t, n_experts]).greater_elem(0)
}

/// The standard normal CDF, `Φ(z) = (1 + erf(z / √2)) / 2`.
fn normal_cdf<B: Backend>(z: Tensor<B, 2>) -> Tensor<B, 2> {
    z.mul_scalar(std::f64::consts::FRAC_1_SQRT_2).erf().add_scalar(1.0).mul_scalar(0.5)
}
