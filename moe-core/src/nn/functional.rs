//! Softmax, log-softmax, log-sum-exp and softplus whose backward passes never call `recip`.
//!
//! burn 0.21's autodiff differentiates a division `a / b` and a `log(b)` through `recip(b)`, and
//! burn-ndarray's `recip` is an approximate SIMD reciprocal (about 5e-5 relative error) applied
//! to the aligned middle of a buffer only, so the gradients of Burn's own `softmax` and
//! `log_softmax` are both inexact and dependent on where the allocator put the buffer: two runs
//! of the same training step differ in the last bits. These versions multiply by
//! [`positive_reciprocal`] instead, whose derivative is computed with `powf`, exact on every
//! backend; the forward values equal Burn's to within an ulp or two.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// `1 / x` for `x > 0`, as `(x^-0.5)^2`, differentiated exactly.
///
/// Not `powf_scalar(-1.0)`: burn 0.21 turns integer exponents into `powi`, which goes through
/// the approximate `recip`. Two roundings: within 2 ulp of the true reciprocal.
pub fn positive_reciprocal<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.powf_scalar(-0.5).square()
}

/// `exp(x) / sum(exp(x))` along `dim`.
pub fn softmax<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    let max = x.clone().detach().max_dim(dim);
    let exp = (x - max).exp();
    let sum = exp.clone().sum_dim(dim);
    exp * positive_reciprocal(sum)
}

/// `log(sum(exp(x)))` along `dim` (kept as a size-1 dim).
///
/// The value is computed as usual; the gradient, `softmax(x)`, is attached through a term that
/// is zero in value (`sum(p * (x - x))` with `p` and the second `x` detached), so no `log`
/// is differentiated.
pub fn logsumexp<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    let detached = x.clone().detach();
    let max = detached.clone().max_dim(dim);
    let exp = (detached.clone() - max.clone()).exp();
    let sum = exp.clone().sum_dim(dim);
    let value = sum.clone().log() + max;
    let probs = exp * positive_reciprocal(sum);
    value + (probs * (x - detached)).sum_dim(dim)
}

/// `log(1 + exp(x))`, computed as `max(x, 0) + log(1 + exp(-|x|))` so that it neither
/// overflows for large `x` nor rounds the small values of very negative ones to 0; its gradient,
/// `sigmoid(x)` (as `1 / (1 + exp(-x))` through [`positive_reciprocal`]), is attached as in
/// [`logsumexp`]. Burn's `softplus` is `log(1 + exp(x))` as written (infinite above x = 88)
/// and differentiates its `log` through the approximate `recip`.
pub fn softplus<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let detached = x.clone().detach();
    let value = detached.clone().clamp_min(0.0) + detached.clone().abs().neg().exp().log1p();
    let slope = positive_reciprocal(detached.clone().neg().exp().add_scalar(1.0));
    value + slope * (x - detached)
}

/// `x - logsumexp(x)` along `dim`.
pub fn log_softmax<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    let lse = logsumexp(x.clone(), dim);
    x - lse
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::{activation, Tolerance};

    type A = Autodiff<NdArray>;

    /// Deterministic inputs (a fixed integer hash mapped to [-1, 1)): a test that draws from
    /// the backend's global RNG changes its data from run to run.
    fn fixed_values(n: usize, salt: u64) -> Vec<f32> {
        (0..n as u64)
            .map(|i| {
                let mut h = (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt;
                h ^= h >> 31;
                h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
                h ^= h >> 29;
                (h >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    #[test]
    fn values_and_gradients_match_the_definitions() {
        let device = Default::default();
        let (rows, cols) = (5, 37);
        let xs: Vec<f32> = fixed_values(rows * cols, 1).iter().map(|v| 6.0 * v).collect();
        let ws: Vec<f32> = fixed_values(rows * cols, 2).iter().map(|v| 0.5 * (v + 1.0)).collect();
        let x = Tensor::<NdArray, 1>::from_floats(xs.as_slice(), &device).reshape([rows, cols]);
        let w = Tensor::<NdArray, 1>::from_floats(ws.as_slice(), &device).reshape([rows, cols]);
        softmax(x.clone(), 1)
            .into_data()
            .assert_approx_eq::<f32>(&activation::softmax(x.clone(), 1).into_data(), Tolerance::absolute(1e-6));
        log_softmax(x.clone(), 1)
            .into_data()
            .assert_approx_eq::<f32>(&activation::log_softmax(x.clone(), 1).into_data(), Tolerance::absolute(1e-5));

        // d/dx sum(w * log_softmax(x)) = w - softmax(x) * sum(w), with f64 host arithmetic.
        // The bound is a few f32 ulps of the terms; the approximate `recip` this module avoids
        // is off by about 5e-5 relative, far outside it.
        let xa = Tensor::<A, 2>::from_inner(x).require_grad();
        let loss = (log_softmax(xa.clone(), 1) * Tensor::from_inner(w)).sum();
        let grad: Vec<f32> = xa.grad(&loss.backward()).unwrap().into_data().to_vec().unwrap();
        for r in 0..rows {
            let row = &xs[r * cols..(r + 1) * cols];
            let m = row.iter().copied().fold(f32::MIN, f32::max) as f64;
            let z: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
            let wsum: f64 = ws[r * cols..(r + 1) * cols].iter().map(|&v| v as f64).sum();
            for c in 0..cols {
                let p = (row[c] as f64 - m).exp() / z;
                let (wc, pw) = (ws[r * cols + c] as f64, p * wsum);
                let want = wc - pw;
                let bound = 1e-6 * (wc.abs() + pw.abs()) + 1e-7;
                let got = grad[r * cols + c] as f64;
                assert!((got - want).abs() <= bound, "[{r},{c}]: got {got}, want {want}");
            }
        }
    }

    #[test]
    fn softplus_is_stable_and_its_gradient_is_the_sigmoid() {
        let device = Default::default();
        let xs = [-200.0f32, -30.0, -1.0, 0.0, 0.5, 30.0, 200.0];
        let x = Tensor::<A, 1>::from_floats(xs, &device).require_grad();
        let y = softplus(x.clone());
        let values: Vec<f32> = y.clone().into_data().to_vec().unwrap();
        let grad: Vec<f32> = x.grad(&y.sum().backward()).unwrap().into_data().to_vec().unwrap();
        for ((&x, &v), &g) in xs.iter().zip(&values).zip(&grad) {
            let x = x as f64;
            let want = x.max(0.0) + (-x.abs()).exp().ln_1p();
            let slope = 1.0 / (1.0 + (-x).exp());
            assert!((v as f64 - want).abs() <= 1e-6 * want.max(1e-30), "softplus({x}) = {v}, want {want}");
            assert!((g as f64 - slope).abs() <= 1e-6, "softplus'({x}) = {g}, want {slope}");
        }
    }
}
