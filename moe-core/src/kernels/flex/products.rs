//! Products with a weight matrix on burn-flex: dense (this crate's decoding and blocked kernels,
//! or `gemm`), packed in strips, or quantized blocks.

use burn::backend::flex::FlexTensor;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};

use super::gemm::long_f32;
use super::{as_flex, f32_rows, from_flex, in_dtype, kernel_or, weights_of};
use crate::kernels::blocked::blocked_matmul;
use crate::kernels::isa::{self, Isa};
use crate::kernels::packed::{packed_matmul, PackedWeights};
use crate::kernels::quantized::quantized_matmul;
use crate::kernels::skinny::skinny_matmul;
use crate::kernels::{BLOCKED_ROWS, SKINNY_ROWS};
use crate::quant::QuantMatrix;

/// `x @ w` by this crate's kernels when `B` is burn-flex and `w` is a contiguous f32/f16/bf16
/// matrix `[1, ..., 1, K, N]`: up to [`BLOCKED_ROWS`] rows of `x`, or f32 `x` and `w` of any
/// length (`gemm`); otherwise the inputs back.
#[allow(clippy::type_complexity)]
pub(in crate::kernels) fn matmul<B: Backend, const R: usize>(
    x: Tensor<B, 2>,
    w: Tensor<B, R>,
) -> Result<Tensor<B, 2>, (Tensor<B, 2>, Tensor<B, R>)> {
    let [m, k] = x.dims();
    let dims = w.dims();
    if dims[..R - 2].iter().any(|&d| d != 1) || dims[R - 2] != k {
        return Err((x, w));
    }
    let n = dims[R - 1];
    let (xp, wp) = (x.into_primitive(), w.into_primitive());
    let out = match (&xp, &wp) {
        (TensorPrimitive::Float(xp), TensorPrimitive::Float(wp)) => match (as_flex::<B>(xp), as_flex::<B>(wp)) {
            (Some(xf), Some(wf)) => run(xf, wf, m, k, n),
            _ => None,
        },
        _ => None, // quantized tensors
    };
    match out.and_then(from_flex::<B>) {
        Some(out) => Ok(Tensor::from_primitive(TensorPrimitive::Float(out))),
        None => Err((Tensor::from_primitive(xp), Tensor::from_primitive(wp))),
    }
}

/// The product in `x`'s dtype, or `None` where the kernel does not apply (a strided weight
/// view, another dtype). The blocked kernel's plain-Rust version is no match for `gemm`'s
/// kernels (NEON on aarch64), so without the x86 tiles its rows go to `gemm` too.
fn run(x: &FlexTensor, w: &FlexTensor, m: usize, k: usize, n: usize) -> Option<FlexTensor> {
    if m > BLOCKED_ROWS || (m > SKINNY_ROWS && !isa::has(Isa::Avx2)) {
        return long_f32(x, w, m, k, n);
    }
    let weights = weights_of(w)?;
    let (rows, dtype) = f32_rows(x)?;
    let out =
        if m <= SKINNY_ROWS { skinny_matmul(&rows, weights, m, k, n) } else { blocked_matmul(&rows, weights, m, k, n) };
    let data = in_dtype(out, [m, n], dtype);
    Some(FlexTensor::from_data(data))
}

/// `x @ Wᵀ` with `W` in quantized blocks ([`quantized_matmul`] per part, the parts' outputs side
/// by side), in `x`'s dtype, when `B` is burn-flex; otherwise `x` back.
pub(in crate::kernels) fn quantized_linear<B: Backend>(
    x: Tensor<B, 2>,
    w: &QuantMatrix,
) -> Result<Tensor<B, 2>, Tensor<B, 2>> {
    let [m, _] = x.dims();
    let xp = x.into_primitive();
    let out = match &xp {
        TensorPrimitive::Float(p) => as_flex::<B>(p).and_then(|xf| {
            let (rows, dtype) = f32_rows(xf)?;
            let n = w.rows();
            let mut out = vec![0.0f32; m * n];
            let mut col = 0;
            for part in w.parts() {
                let values = quantized_matmul(&rows, part, m);
                for (o, v) in out.chunks_exact_mut(n).zip(values.chunks_exact(part.rows)) {
                    o[col..col + part.rows].copy_from_slice(v);
                }
                col += part.rows;
            }
            from_flex::<B>(FlexTensor::from_data(in_dtype(out, [m, n], dtype)))
        }),
        _ => None,
    };
    kernel_or(out, xp)
}

/// `w` in strips for [`packed_matmul`] when `B` is burn-flex and `w` is f32/f16/bf16 (copied
/// to contiguous first if it is a strided view); `None` otherwise.
pub(in crate::kernels) fn pack_weight<B: Backend>(w: &Tensor<B, 2>) -> Option<PackedWeights> {
    let [k, n] = w.dims();
    let p = w.clone().into_primitive().tensor();
    let w = as_flex::<B>(&p)?;
    let contiguous;
    let w = if w.is_contiguous() {
        w
    } else {
        contiguous = w.to_contiguous();
        &contiguous
    };
    let weights = weights_of(w)?;
    (weights.len() == k * n).then(|| PackedWeights::pack(weights, k, n))
}

/// `x @ W` by [`packed_matmul`] in `x`'s dtype when `B` is burn-flex; otherwise `x` back.
pub(in crate::kernels) fn packed_linear<B: Backend>(
    x: Tensor<B, 2>,
    w: &PackedWeights,
) -> Result<Tensor<B, 2>, Tensor<B, 2>> {
    let [m, k] = x.dims();
    let [wk, n] = w.dims();
    if k != wk {
        return Err(x);
    }
    let xp = x.into_primitive();
    let out = match &xp {
        TensorPrimitive::Float(p) => as_flex::<B>(p).and_then(|xf| {
            let (rows, dtype) = f32_rows(xf)?;
            from_flex::<B>(FlexTensor::from_data(in_dtype(packed_matmul(&rows, w, m), [m, n], dtype)))
        }),
        _ => None,
    };
    kernel_or(out, xp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::tensor::{FloatDType, Tolerance};

    use crate::backend::Flex;
    use crate::kernels::flex::inputs;

    #[test]
    fn takes_the_kernel_only_where_it_applies() {
        for rows in [1, SKINNY_ROWS, SKINNY_ROWS + 1, BLOCKED_ROWS] {
            let (x, w) = inputs::<Flex>(rows);
            assert!(matmul(x, w).is_ok(), "flex, {rows} rows: a kernel of this crate");
        }
        let (x, w) = inputs::<Flex>(BLOCKED_ROWS + 1);
        assert!(matmul(x, w).is_ok(), "many rows, f32: gemm into a buffer of our own");
        let (x, w) = inputs::<Flex>(BLOCKED_ROWS + 1);
        assert!(matmul(x.cast(FloatDType::F16), w.cast(FloatDType::F16)).is_err(), "many rows, f16: Burn's matmul");
        let (x, w) = inputs::<Flex>(2);
        assert!(matmul(x, w.transpose().reshape([32, 80])).is_ok(), "a copied transpose is contiguous");
        let (x, w) = inputs::<Flex>(2);
        assert!(matmul(x, w.reshape([80, 32]).transpose()).is_err(), "a strided view: gemm");
        let (x, w) = inputs::<Autodiff<Flex>>(1);
        assert!(matmul(x, w).is_err(), "autodiff: Burn's ops keep the graph");
    }

    #[test]
    fn many_rows_match_burns_matmul() {
        let (x, w) = inputs::<Flex>(BLOCKED_ROWS + 37);
        let want = x.clone().unsqueeze::<3>().matmul(w.clone().unsqueeze::<3>()).reshape([BLOCKED_ROWS + 37, 80]);
        let got = matmul(x, w).expect("gemm runs");
        got.into_data().assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-5));
    }

    #[test]
    fn half_precision_stays_half_precision() {
        for (dtype, rows) in
            [(FloatDType::F16, 3), (FloatDType::BF16, 3), (FloatDType::F16, 20), (FloatDType::BF16, 20)]
        {
            let (x, w) = inputs::<Flex>(rows);
            let want = x.clone().matmul(w.clone());
            let got = matmul(x.cast(dtype), w.cast(dtype));
            if rows > SKINNY_ROWS && !isa::has(Isa::Avx2) {
                assert!(got.is_err(), "{rows} rows without the x86 tiles: Burn's matmul (gemm)");
                continue;
            }
            let got = got.expect("the kernel runs");
            assert_eq!(got.dtype(), dtype.into());
            // Inputs rounded to 8 mantissa bits (bf16), 32 products summed.
            got.cast(FloatDType::F32).into_data().assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(0.3));
        }
    }
}
