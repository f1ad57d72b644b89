//! `moe-bench moe-layer`: the sparse MoE layer against the all-experts reference and an
//! equal-FLOP dense SwiGLU, forward and forward + backward.

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use moe_core::backend::{BackendKind, Precision};
use moe_core::moe::SparseMoeConfig;
use moe_core::nn::SwiGluConfig;
use serde::Serialize;

use crate::timing::median_ms;

/// The shape and how to time it.
#[derive(Debug, Clone, Serialize)]
pub struct LayerShape {
    pub tokens: usize,
    pub d_model: usize,
    pub d_ff: usize,
    pub experts: usize,
    pub top_k: usize,
}

#[derive(Debug, Serialize)]
pub struct LayerReport {
    pub backend: String,
    pub dtype: String,
    /// The instructions the CPU kernels ran (`moe_core::kernels::isa`: portable, avx2, avx512).
    pub cpu_isa: String,
    pub shape: LayerShape,
    pub warmup: usize,
    pub repeats: usize,
    /// Sparse layer forward (router + dispatch + experts + combine), median ms.
    pub sparse_ms: f64,
    /// The same forward with the weights laid out for the CPU kernels once, as an inference
    /// model runs it (`SparseMoe::pack_for_cpu`, what `moe-infer` does on flex); equal to
    /// `sparse_ms` in all but noise on backends where packing does nothing.
    pub sparse_packed_ms: f64,
    /// Sparse layer forward + backward of `sum(hidden)`, median ms.
    pub sparse_fwd_bwd_ms: f64,
    /// Every expert on every token, masked (the naive baseline), forward median ms.
    pub all_experts_ms: f64,
    /// Dense SwiGLU D -> K*F -> D on the same tokens (the experts' arithmetic floor), forward median ms.
    pub dense_equal_flop_ms: f64,
    /// Dense SwiGLU forward + backward, median ms.
    pub dense_fwd_bwd_ms: f64,
    /// `all_experts_ms / sparse_ms` (target >= 2.4 on CPU).
    pub speedup_vs_all_experts: f64,
    /// `sparse_ms / dense_equal_flop_ms` (target <= 1.25 on CPU).
    pub sparse_over_dense: f64,
    /// `sparse_fwd_bwd_ms / dense_fwd_bwd_ms`.
    pub sparse_over_dense_fwd_bwd: f64,
    /// Experts' matmul FLOPs per forward (`6 T K D F`) over the sparse forward time.
    pub sparse_tflops: f64,
    /// Forward + backward FLOPs (3x forward) over the sparse forward + backward time.
    pub sparse_fwd_bwd_tflops: f64,
}

pub fn run<B: Backend>(
    backend: BackendKind,
    precision: Precision,
    shape: LayerShape,
    warmup: usize,
    repeats: usize,
    device: &B::Device,
) -> LayerReport {
    let LayerShape { tokens: t, d_model: d, d_ff: f, experts: e, top_k: k } = shape.clone();
    B::seed(device, 7);
    let moe = SparseMoeConfig::new(d, f, e).with_top_k(k).init::<B>(device);
    let dense = SwiGluConfig::new(d, k * f).init::<B>(device);
    // Random inputs, so that tokens spread over the experts as real activations do.
    let x = Tensor::<B, 2>::random([t, d], Distribution::Normal(0.0, 1.0), device);

    let sparse_ms = median_ms::<B, _>(device, warmup, repeats, || moe.forward(x.clone()).hidden);
    let mut packed = moe.clone();
    packed.pack_for_cpu();
    let sparse_packed_ms = median_ms::<B, _>(device, warmup, repeats, || packed.forward(x.clone()).hidden);
    drop(packed);
    let all_experts_ms = median_ms::<B, _>(device, warmup, repeats, || moe.forward_all_experts(x.clone()).hidden);
    let dense_equal_flop_ms = median_ms::<B, _>(device, warmup, repeats, || dense.forward(x.clone()));

    // Forward + backward: the same modules (same seed) on the autodiff backend.
    B::seed(device, 7);
    let moe = SparseMoeConfig::new(d, f, e).with_top_k(k).init::<Autodiff<B>>(device);
    let dense = SwiGluConfig::new(d, k * f).init::<Autodiff<B>>(device);
    let x = Tensor::<Autodiff<B>, 2>::from_inner(x);
    let sparse_fwd_bwd_ms =
        median_ms::<B, _>(device, warmup, repeats, || moe.forward(x.clone()).hidden.sum().backward());
    let dense_fwd_bwd_ms = median_ms::<B, _>(device, warmup, repeats, || dense.forward(x.clone()).sum().backward());

    let flops = 6.0 * (t * k * d * f) as f64;
    LayerReport {
        backend: backend.to_string(),
        cpu_isa: moe_core::kernels::isa::chosen().to_string(),
        dtype: precision.to_string(),
        shape,
        warmup,
        repeats,
        sparse_ms,
        sparse_packed_ms,
        sparse_fwd_bwd_ms,
        all_experts_ms,
        dense_equal_flop_ms,
        dense_fwd_bwd_ms,
        speedup_vs_all_experts: all_experts_ms / sparse_ms,
        sparse_over_dense: sparse_ms / dense_equal_flop_ms,
        sparse_over_dense_fwd_bwd: sparse_fwd_bwd_ms / dense_fwd_bwd_ms,
        sparse_tflops: flops / (sparse_ms * 1e-3) / 1e12,
        sparse_fwd_bwd_tflops: 3.0 * flops / (sparse_fwd_bwd_ms * 1e-3) / 1e12,
    }
}
