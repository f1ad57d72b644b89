//! The burn-flex side of the kernels' ops: reach the tensors' storage when the backend is
//! burn-flex itself (not wrapped in `Autodiff`, whose graph needs Burn's own ops), run a kernel
//! on it, and hand back the result, or the inputs where no kernel applies. This file is the glue
//! the others share (downcasts, dtype conversions); the ops are by kind:
//! - [`products`]: products with a weight matrix (dense, packed, quantized);
//! - [`gemm`]: the `gemm` call for long f32 products, into a buffer of our own;
//! - [`rows`]: row-wise ops (SwiGLU's activation, RMSNorm, RoPE);
//! - [`combine`]: the experts' outputs weighted and added back in token order;
//! - [`strided`]: strided views copied run by run, and KV-cache writes in place.

use std::any::Any;

use burn::backend::flex::FlexTensor;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
use half::slice::HalfFloatSliceExt;
use half::vec::HalfFloatVecExt;
use half::{bf16, f16};

use super::weights::Weights;

mod combine;
mod gemm;
mod products;
mod rows;
mod strided;

pub(super) use combine::combine;
pub(super) use products::{matmul, pack_weight, packed_linear, quantized_linear};
pub(super) use rows::{rms_norm, rope, swiglu};
pub(super) use strided::{contiguous, write_along};

/// A kernel's result as a tensor, or the kernel's input back (`Err`) where it did not apply.
fn kernel_or<B: Backend, const N: usize>(
    out: Option<B::FloatTensorPrimitive>,
    input: TensorPrimitive<B>,
) -> Result<Tensor<B, N>, Tensor<B, N>> {
    match out {
        Some(out) => Ok(Tensor::from_primitive(TensorPrimitive::Float(out))),
        None => Err(Tensor::from_primitive(input)),
    }
}

fn as_flex<B: Backend>(p: &B::FloatTensorPrimitive) -> Option<&FlexTensor> {
    (p as &dyn Any).downcast_ref::<FlexTensor>()
}

fn from_flex<B: Backend>(t: FlexTensor) -> Option<B::FloatTensorPrimitive> {
    let mut slot = Some(t);
    (&mut slot as &mut dyn Any).downcast_mut::<Option<B::FloatTensorPrimitive>>()?.take()
}

/// A flex tensor's values as contiguous f32 (borrowed when they already are), and its dtype.
fn f32_rows(x: &FlexTensor) -> Option<(std::borrow::Cow<'_, [f32]>, DType)> {
    use std::borrow::Cow;
    let dtype = x.dtype();
    if !x.is_contiguous() {
        return Some((Cow::Owned(widen(&x.to_contiguous())?), dtype));
    }
    match dtype {
        DType::F32 => Some((Cow::Borrowed(x.as_slice::<f32>()?), dtype)),
        _ => Some((Cow::Owned(widen(x)?), dtype)),
    }
}

/// A contiguous f32/f16/bf16 tensor's values as f32.
fn widen(x: &FlexTensor) -> Option<Vec<f32>> {
    Some(match x.dtype() {
        DType::F32 => x.as_slice::<f32>()?.to_vec(),
        DType::F16 => x.as_slice::<f16>()?.to_f32_vec(),
        DType::BF16 => x.as_slice::<bf16>()?.to_f32_vec(),
        _ => return None,
    })
}

/// A contiguous f32/f16/bf16 flex tensor's values as kernel weights; `None` for a strided view
/// or another dtype.
fn weights_of(w: &FlexTensor) -> Option<Weights<'_>> {
    Some(match w.dtype() {
        DType::F32 => Weights::F32(w.as_slice::<f32>()?),
        DType::F16 => Weights::F16(w.as_slice::<f16>()?),
        DType::BF16 => Weights::Bf16(w.as_slice::<bf16>()?),
        _ => return None,
    })
}

/// f32 results as tensor data of `dtype`.
fn in_dtype(out: Vec<f32>, shape: [usize; 2], dtype: DType) -> TensorData {
    match dtype {
        DType::F16 => TensorData::new(Vec::<f16>::from_f32_slice(&out), shape),
        DType::BF16 => TensorData::new(Vec::<bf16>::from_f32_slice(&out), shape),
        _ => TensorData::new(out, shape),
    }
}

/// f32 values into f32 values of equal length: the kernels' converter for f32 tensors.
fn copy(from: &[f32], to: &mut [f32]) {
    to.copy_from_slice(from);
}

/// f16 or bf16 values widened to f32 with `half`'s slice conversion (F16C where the CPU has
/// it; the element-by-element `to_f32` was most of a serial pass in an f16 prefill's profile).
fn widen_half<H>(from: &[H], to: &mut [f32])
where
    [H]: HalfFloatSliceExt,
{
    from.convert_to_f32_slice(to);
}

/// f32 values narrowed to f16 or bf16 (round to nearest even), as [`widen_half`].
fn narrow_half<H>(from: &[f32], to: &mut [H])
where
    [H]: HalfFloatSliceExt,
{
    to.convert_from_f32_slice(from);
}

#[cfg(test)]
/// A `[rows, 32]` input and a `[32, 80]` weight, normal draws.
fn inputs<B: Backend>(rows: usize) -> (Tensor<B, 2>, Tensor<B, 2>) {
    use burn::tensor::Distribution;
    let device = Default::default();
    (
        Tensor::random([rows, 32], Distribution::Normal(0.0, 1.0), &device),
        Tensor::random([32, 80], Distribution::Normal(0.0, 1.0), &device),
    )
}
