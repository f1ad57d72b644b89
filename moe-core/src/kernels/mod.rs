//! Hand-written CPU kernels for the products Burn's CPU backends run slowly, and the functions
//! the modules call so that any backend can use them.
//!
//! One seam: each op the modules call here ([`matmul_weight`], [`swiglu`], [`rms_norm`],
//! [`rope`], [`combine`], [`write_along`], [`contiguous`], [`packed_linear`],
//! [`quantized_linear`]) is the whole op. On burn-flex without autodiff it runs this crate's
//! kernel where one applies (`flex/` reaches the storage); everywhere else, and where no kernel
//! applies, it runs Burn's ops, written out beside the dispatch. Modules never fall back
//! themselves, so the plain version of every op is in this file. Which instructions the kernels
//! use is chosen once, in [`isa`].
//!
//! [`matmul_weight`] is `x.matmul(w)` for activations times a weight matrix. On burn-flex
//! without autodiff (inference) it runs [`skinny_matmul`] for up to [`SKINNY_ROWS`] rows of
//! activations (decoding: read the weights once, on every core) and [`blocked_matmul`] for up to
//! [`BLOCKED_ROWS`] (an expert's share of a prompt), and longer f32 products go to `gemm` into
//! a buffer of this crate's (burn-flex's own matmul copies each output once more); everywhere
//! else (other backends, training, longer f16/bf16 prompts) it is Burn's matmul. Choosing at
//! run time keeps the modules generic over `B: Backend`.
//!
//! An inference model on burn-flex can lay its weights out for these kernels once
//! ([`pack_weight`], [`PackedWeights`]); [`packed_linear`] then multiplies with them at any
//! number of rows, with no copying of weights per product.

mod blocked;
#[cfg(feature = "flex")]
mod flex;
mod int_dot;
pub mod isa;
mod packed;
mod quantized;
mod rms_norm;
mod rope;
#[cfg(x86_simd)]
mod rows_x8;
mod skinny;
mod swiglu;
#[cfg(test)]
mod test_support;
mod tiles;
mod weights;

use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, IndexingUpdateOp, Int, Tensor};

use crate::quant::QuantMatrix;

pub use blocked::blocked_matmul;
pub use packed::{packed_matmul, PackedWeights};
pub use quantized::quantized_matmul;
pub use rms_norm::rms_norm as rms_norm_rows;
pub use rope::rope as rope_rows;
pub use skinny::skinny_matmul;
pub use swiglu::swiglu as swiglu_rows;
pub use weights::Weights;

/// Up to this many rows of activations (tokens) take the matrix-vector kernel [`skinny_matmul`].
pub const SKINNY_ROWS: usize = 8;
/// Up to this many rows take the register-blocked [`blocked_matmul`]; more rows are
/// matrix-matrix work, where `gemm`'s packing pays for itself. (At about 128 rows per expert,
/// `moe-bench moe-layer --tokens 512`, the kernel measured 5-20% faster than `gemm` once its
/// packing prefetched; docs/benchmarks-history.md.)
pub const BLOCKED_ROWS: usize = 128;

/// `x @ w`, where `w` is one weight matrix: a `[K, N]` parameter or a `[1, K, N]` slice of a
/// stacked one (`narrow(0, e, 1)` of an experts tensor; no copy is made of it).
///
/// # Shapes
/// - `x`: `[M, K]`, `w`: `[K, N]` or `[1, K, N]` -> `[M, N]`
pub fn matmul_weight<B: Backend, const R: usize>(x: Tensor<B, 2>, w: Tensor<B, R>) -> Tensor<B, 2> {
    let [m, _] = x.dims();
    let n = w.dims()[R - 1];
    #[cfg(feature = "flex")]
    let (x, w) = match flex::matmul(x, w) {
        Ok(out) => return out,
        Err(inputs) => inputs,
    };
    x.unsqueeze::<R>().matmul(w).reshape([m, n])
}

/// `buffer[.., start..start + S, ..] = value` along axis `dim`, in place where the backend
/// allows: a KV cache write. On burn-flex the written rows are copied into the buffer's own
/// storage when nothing else holds it; Burn's `slice_assign` there copies the whole buffer first
/// (it keeps a second handle to it while writing), which made every decoding step copy every
/// layer's cache. Elsewhere this is `slice_assign`.
///
/// # Shapes
/// - `buffer`: `[.., C, ..]`, `value`: the same except `S <= C - start` along `dim`
pub fn write_along<B: Backend, const D: usize>(
    buffer: &mut Tensor<B, D>,
    dim: usize,
    start: usize,
    value: Tensor<B, D>,
) {
    let device = buffer.device();
    let full = std::mem::replace(buffer, Tensor::empty([0; D], &device));
    #[cfg(feature = "flex")]
    let (full, value) = match flex::write_along(full, dim, start, value) {
        Ok(written) => {
            *buffer = written;
            return;
        }
        Err(inputs) => inputs,
    };
    let ranges: [std::ops::Range<usize>; D] = std::array::from_fn(|i| {
        let len = value.dims()[i];
        if i == dim {
            start..start + len
        } else {
            0..len
        }
    });
    *buffer = full.slice_assign(ranges, value);
}

/// Which table row each row of a [`rope`] input takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopePositions {
    /// `[S, Dh]` tables shared by every sequence: row `s` of each sequence takes table row `s`.
    Shared,
    /// `[B*S, Dh]` tables, one row per token (sequences at positions of their own).
    PerRow,
}

/// Rotary position embedding in transformers' rotate-half convention, `x * cos +
/// rotate_half(x) * sin`: by [`rope_rows`] on burn-flex without autodiff, Burn's ops elsewhere.
///
/// # Shapes
/// - `x`: `[B, S, N, Dh]`, `cos`/`sin`: `[S, Dh]` ([`RopePositions::Shared`]) or `[B*S, Dh]`
///   ([`RopePositions::PerRow`]) -> `[B, S, N, Dh]`
pub fn rope<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 2>,
    sin: &Tensor<B, 2>,
    positions: RopePositions,
) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    let x = match flex::rope(x, cos, sin, positions) {
        Ok(out) => return out,
        Err(x) => x,
    };
    let [b, s, _, dh] = x.dims();
    let dtype = x.dtype();
    let batch = match positions {
        RopePositions::Shared => 1,
        RopePositions::PerRow => b,
    };
    let cos = cos.clone().cast(dtype).reshape([batch, s, 1, dh]);
    let sin = sin.clone().cast(dtype).reshape([batch, s, 1, dh]);
    x.clone() * cos + rotate_half(x) * sin
}

/// `[x1, x2] -> [-x2, x1]` on the last dimension.
fn rotate_half<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let dh = x.dims()[3];
    let x1 = x.clone().narrow(3, 0, dh / 2);
    let x2 = x.narrow(3, dh / 2, dh / 2);
    Tensor::cat(vec![x2.neg(), x1], 3)
}

/// RMSNorm as transformers' `MixtralRMSNorm` computes it: normalised in f32, cast back to `x`'s
/// dtype, then scaled by `weight`. By [`rms_norm_rows`] on burn-flex without autodiff, Burn's
/// ops elsewhere.
///
/// # Shapes
/// - `x`: `[..., D]`, `weight`: `[D]` of `x`'s dtype -> `[..., D]`
pub fn rms_norm<B: Backend, const N: usize>(x: Tensor<B, N>, weight: &Tensor<B, 1>, eps: f64) -> Tensor<B, N> {
    #[cfg(feature = "flex")]
    let x = match flex::rms_norm(x, weight, eps) {
        Ok(out) => return out,
        Err(x) => x,
    };
    let dtype = x.dtype();
    let x = x.cast(FloatDType::F32);
    let variance = x.clone().square().mean_dim(N - 1);
    // `powf(-0.5)`, not `recip` or a division: burn-ndarray 0.21's `recip` is an approximate
    // SIMD reciprocal (5e-5 relative error, enough to move logits by 1e-4), and autodiff's
    // backward of a division calls `recip` too. `powf` is exact both ways.
    let normed = x * variance.add_scalar(eps).powf_scalar(-0.5);
    normed.cast(dtype) * weight.clone().unsqueeze::<N>()
}

/// SwiGLU's activation `silu(gate) * up` on the output of a fused `[.., 2F]` gate/up product
/// (the gate first). On burn-flex without autodiff it is [`swiglu_rows`], one contiguous pass;
/// elsewhere Burn's ops on the two halves.
///
/// # Shapes
/// - `h`: `[..., 2F]` -> `[..., F]`
pub fn swiglu<B: Backend, const N: usize>(h: Tensor<B, N>) -> Tensor<B, N> {
    let f = h.dims()[N - 1] / 2;
    #[cfg(feature = "flex")]
    let h = match flex::swiglu(h) {
        Ok(out) => return out,
        Err(h) => h,
    };
    silu(h.clone().narrow(N - 1, 0, f)) * h.narrow(N - 1, f, f)
}

/// `t` in row-major storage, so that a reshape after it copies nothing. On burn-flex a view
/// whose last dim is contiguous (heads swapped in front of positions) is copied one run of
/// that dim at a time; elsewhere `t` comes back as it is and Burn copies where it must.
pub fn contiguous<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    let t = flex::contiguous(t);
    t
}

/// The routed experts' outputs, weighted and added back in token order:
/// `hidden[token_index[s]] += weights[s] * y[s]` over the slots `s` in order, `y` the outputs
/// concatenated. Slots are in expert order, so each token's contributions are added in
/// ascending expert order, as transformers' loop over experts does. On burn-flex without
/// autodiff this is one pass over the outputs, tokens summed in parallel; elsewhere Burn's
/// `cat`, product and `select_assign` (at `T = 2048` those were a concatenated copy, a product
/// and a zeroed `[T, D]` of memory traffic each).
///
/// # Shapes
/// - `outputs`: `[N_i, D]` with `Σ N_i = S`, `weights`: `[S, 1]`, `token_index`: `[S]` in
///   `0..tokens` -> `[tokens, D]`
pub fn combine<B: Backend>(
    outputs: Vec<Tensor<B, 2>>,
    weights: Tensor<B, 2>,
    token_index: Tensor<B, 1, Int>,
    tokens: usize,
) -> Tensor<B, 2> {
    #[cfg(feature = "flex")]
    let outputs = match flex::combine(outputs, &weights, &token_index, tokens) {
        Ok(hidden) => return hidden,
        Err(outputs) => outputs,
    };
    let y = Tensor::cat(outputs, 0) * weights; // [S, D]
    let d = y.dims()[1];
    Tensor::zeros([tokens, d], &y.device()).select_assign(0, token_index, y, IndexingUpdateOp::Add)
}

/// `w` laid out for [`packed_linear`] when `B` is burn-flex without autodiff, `w` a contiguous
/// f32/f16/bf16 matrix and the CPU runs the x86 kernels that read the layout; `None` elsewhere
/// (the caller keeps `w`). On other CPUs a packed weight would only reach
/// [`packed_matmul`]'s plain-Rust loop, where `gemm`'s kernels multiply the unpacked one faster.
///
/// # Shapes
/// - `w`: `[K, N]`
pub fn pack_weight<B: Backend>(w: &Tensor<B, 2>) -> Option<PackedWeights> {
    if !isa::has(isa::Isa::Avx2) {
        return None;
    }
    #[cfg(feature = "flex")]
    return flex::pack_weight(w);
    #[cfg(not(feature = "flex"))]
    {
        let _ = w;
        None
    }
}

/// `x @ W` with `W` laid out by [`pack_weight`]: by [`packed_matmul`] in `x`'s dtype on burn-flex
/// without autodiff; elsewhere [`matmul_weight`] with `weight()`, `W`'s values as a `[K, N]`
/// tensor (asked for only there).
///
/// # Shapes
/// - `x`: `[M, K]` -> `[M, N]`
pub fn packed_linear<B: Backend>(
    x: Tensor<B, 2>,
    w: &PackedWeights,
    weight: impl FnOnce() -> Tensor<B, 2>,
) -> Tensor<B, 2> {
    #[cfg(feature = "flex")]
    let x = match flex::packed_linear(x, w) {
        Ok(out) => return out,
        Err(x) => x,
    };
    let _ = w;
    matmul_weight(x, weight())
}

/// `x @ Wᵀ` with `W` a matrix of quantized rows (`[N, K]`): read in its blocks on burn-flex
/// without autodiff; elsewhere [`matmul_weight`] with `weight()`, the dequantized `Wᵀ` as a
/// `[K, N]` tensor (asked for only there).
///
/// # Shapes
/// - `x`: `[M, K]` -> `[M, N]`
pub fn quantized_linear<B: Backend>(
    x: Tensor<B, 2>,
    w: &QuantMatrix,
    weight: impl FnOnce() -> Tensor<B, 2>,
) -> Tensor<B, 2> {
    #[cfg(feature = "flex")]
    let x = match flex::quantized_linear(x, w) {
        Ok(out) => return out,
        Err(x) => x,
    };
    let _ = w;
    matmul_weight(x, weight())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LinearConfig;
    use burn::tensor::{Distribution, Tolerance};

    fn check<B: Backend>(device: &B::Device) {
        for (rows, bias) in
            [(1, false), (3, true), (SKINNY_ROWS, false), (SKINNY_ROWS + 1, true), (BLOCKED_ROWS + 1, false)]
        {
            let layer = LinearConfig::new(48, 200).with_bias(bias).init::<B>(device);
            let x = Tensor::<B, 3>::random([1, rows, 48], Distribution::Normal(0.0, 1.0), device);
            let want = layer.forward(x.clone());
            let got = crate::nn::Projection::from(layer).forward(x);
            got.into_data().assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-5));
        }
        // A `[1, K, N]` slice of a stacked tensor.
        let stacked = Tensor::<B, 3>::random([3, 40, 24], Distribution::Normal(0.0, 1.0), device);
        let x = Tensor::<B, 2>::random([2, 40], Distribution::Normal(0.0, 1.0), device);
        let want = x.clone().matmul(stacked.clone().narrow(0, 1, 1).reshape([40, 24]));
        matmul_weight(x, stacked.narrow(0, 1, 1))
            .into_data()
            .assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-5));

        // SwiGLU's activation on a fused product, against its definition.
        let h = Tensor::<B, 3>::random([2, 5, 2 * 7], Distribution::Normal(0.0, 2.0), device);
        let want = silu(h.clone().narrow(2, 0, 7)) * h.clone().narrow(2, 7, 7);
        swiglu(h).into_data().assert_approx_eq::<f32>(&want.into_data(), Tolerance::rel_abs(1e-6, 1e-6));

        // Cache writes along axis 2, twice into the same buffer.
        let mut buffer = Tensor::<B, 4>::zeros([2, 3, 6, 4], device);
        let a = Tensor::<B, 4>::random([2, 3, 2, 4], Distribution::Normal(0.0, 1.0), device);
        // A strided view, as keys are after `swap_dims`.
        let b = Tensor::<B, 4>::random([2, 3, 4, 3], Distribution::Normal(0.0, 1.0), device).swap_dims(2, 3);
        write_along(&mut buffer, 2, 1, a.clone());
        write_along(&mut buffer, 2, 3, b.clone());
        let want = Tensor::cat(vec![Tensor::zeros([2, 3, 1, 4], device), a, b], 2);
        buffer.into_data().assert_eq(&want.into_data(), true);
    }

    #[test]
    fn same_function_as_burn_on_ndarray() {
        check::<burn::backend::NdArray>(&Default::default());
    }

    #[cfg(feature = "flex")]
    #[test]
    fn same_function_as_burn_on_flex() {
        check::<crate::backend::Flex>(&Default::default());
    }

    /// A projection packed for the CPU kernels: the same products at decoding and prompt
    /// lengths, in f32 and f16, and a weight that unpacks lazily to the original (same id,
    /// dtype, values). Under autodiff, and on CPUs without the x86 kernels, nothing is packed.
    #[cfg(feature = "flex")]
    #[test]
    fn packed_projections_compute_the_same_products() {
        use burn::tensor::FloatDType;
        type Flex = crate::backend::Flex;
        let device = Default::default();
        if !isa::has(isa::Isa::Avx2) {
            let mut layer: crate::nn::Projection<Flex> = LinearConfig::new(40, 70).init(&device).into();
            assert!(!layer.pack_for_cpu(), "no kernel reads the layout: the weight stays for gemm");
            return;
        }
        for dtype in [FloatDType::F32, FloatDType::F16] {
            let mut layer: crate::nn::Projection<Flex> = LinearConfig::new(40, 70).with_bias(true).init(&device).into();
            layer.weight = layer.weight.map(|w| w.cast(dtype));
            layer.bias = layer.bias.map(|b| b.map(|b| b.cast(dtype)));
            let (id, original) = (layer.weight.id, layer.weight.val().into_data());
            let xs: Vec<_> = [1, 3, SKINNY_ROWS + 1, BLOCKED_ROWS + 5]
                .map(|rows| Tensor::<Flex, 2>::random([rows, 40], Distribution::Normal(0.0, 1.0), &device).cast(dtype))
                .into();
            let want: Vec<_> = xs.iter().map(|x| layer.forward(x.clone())).collect();
            assert!(layer.pack_for_cpu(), "{dtype:?}");
            assert!(layer.packed().is_some());
            for (x, want) in xs.into_iter().zip(want) {
                let got = layer.forward(x);
                assert_eq!(got.dtype(), dtype.into());
                let tolerance = if dtype == FloatDType::F32 { 1e-5 } else { 2e-2 };
                got.cast(FloatDType::F32)
                    .into_data()
                    .assert_approx_eq::<f32>(&want.cast(FloatDType::F32).into_data(), Tolerance::absolute(tolerance));
            }
            assert_eq!(layer.weight.id, id);
            assert_eq!(layer.weight.val().into_data(), original, "{dtype:?}");
        }
        let mut layer: crate::nn::Projection<burn::backend::Autodiff<Flex>> =
            LinearConfig::new(40, 70).init(&device).into();
        assert!(!layer.pack_for_cpu(), "autodiff: Burn's ops keep the graph");
    }
}
