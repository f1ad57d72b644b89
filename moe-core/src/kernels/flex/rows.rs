//! Row-wise ops on burn-flex: SwiGLU's activation, RMSNorm and RoPE, each one pass over
//! contiguous rows in the tensor's own dtype.

use burn::backend::flex::FlexTensor;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use super::{as_flex, copy, f32_rows, from_flex, kernel_or, narrow_half, widen_half};
use crate::kernels::rms_norm::rms_norm as rms_norm_rows;
use crate::kernels::rope::rope as rope_rows;
use crate::kernels::swiglu::swiglu as swiglu_rows;
use crate::kernels::RopePositions;

/// `silu(h[.., ..F]) * h[.., F..]` by this crate's kernel when `B` is burn-flex and `h` is a
/// contiguous f32/f16/bf16 tensor; otherwise `h` back.
pub(in crate::kernels) fn swiglu<B: Backend, const N: usize>(h: Tensor<B, N>) -> Result<Tensor<B, N>, Tensor<B, N>> {
    let mut shape = h.dims();
    let f = shape[N - 1] / 2;
    shape[N - 1] = f;
    let hp = h.into_primitive();
    let out = match &hp {
        TensorPrimitive::Float(p) => as_flex::<B>(p).and_then(|h| {
            let data = match h.dtype() {
                DType::F32 => TensorData::new(swiglu_rows(h.as_slice::<f32>()?, f, copy, copy), shape),
                DType::F16 => TensorData::new(swiglu_half(h.as_slice::<f16>()?, f), shape),
                DType::BF16 => TensorData::new(swiglu_half(h.as_slice::<bf16>()?, f), shape),
                _ => return None,
            };
            from_flex::<B>(FlexTensor::from_data(data))
        }),
        _ => None,
    };
    kernel_or(out, hp)
}

/// [`swiglu_rows`] on f16 or bf16 values.
fn swiglu_half<H: Copy + Send + Sync + Default>(h: &[H], f: usize) -> Vec<H>
where
    [H]: HalfFloatSliceExt,
{
    swiglu_rows(h, f, widen_half, narrow_half)
}

/// [`rms_norm_rows`] on contiguous `x` and `w` of dtype `E`, `w` of `d` values; `None` otherwise.
fn norm_rows<E: burn::tensor::Element + bytemuck::Pod + Default + Send + Sync>(
    x: &FlexTensor,
    w: &FlexTensor,
    d: usize,
    eps: f32,
    to_f32: impl Fn(&[E], &mut [f32]) + Sync,
    from_f32: impl Fn(&[f32], &mut [E]) + Sync,
) -> Option<Vec<E>> {
    let (x, w) = (x.as_slice::<E>()?, w.as_slice::<E>()?);
    (d > 0 && w.len() == d).then(|| rms_norm_rows(x, w, eps, to_f32, from_f32))
}

/// RMSNorm by this crate's kernel when `B` is burn-flex and `x` and `weight` are contiguous
/// tensors of one float dtype; otherwise `x` back.
pub(in crate::kernels) fn rms_norm<B: Backend, const N: usize>(
    x: Tensor<B, N>,
    weight: &Tensor<B, 1>,
    eps: f64,
) -> Result<Tensor<B, N>, Tensor<B, N>> {
    let shape = x.dims();
    let xp = x.into_primitive();
    let wp = weight.clone().into_primitive().tensor();
    let d = shape[N - 1];
    let out = match (&xp, as_flex::<B>(&wp)) {
        (TensorPrimitive::Float(p), Some(w)) => as_flex::<B>(p).and_then(|x| {
            let eps = eps as f32;
            let data = match x.dtype() {
                DType::F32 => TensorData::new(norm_rows::<f32>(x, w, d, eps, copy, copy)?, shape),
                DType::F16 => TensorData::new(norm_rows::<f16>(x, w, d, eps, widen_half, narrow_half)?, shape),
                DType::BF16 => TensorData::new(norm_rows::<bf16>(x, w, d, eps, widen_half, narrow_half)?, shape),
                _ => return None,
            };
            from_flex::<B>(FlexTensor::from_data(data))
        }),
        _ => None,
    };
    kernel_or(out, xp)
}

/// RoPE by this crate's kernel when `B` is burn-flex and the tables are contiguous f32, f16 or
/// bf16 (a model run in f16 makes them in its default dtype); otherwise `x` back.
pub(in crate::kernels) fn rope<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 2>,
    sin: &Tensor<B, 2>,
    positions: RopePositions,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    let [b, s, heads, dh] = x.dims();
    let xp = x.into_primitive();
    if !matches!(&xp, TensorPrimitive::Float(p) if as_flex::<B>(p).is_some()) {
        return Err(Tensor::from_primitive(xp));
    }
    let rows = match positions {
        RopePositions::Shared => s,
        RopePositions::PerRow => b * s,
    };
    if cos.dims() != [rows, dh] || sin.dims() != [rows, dh] {
        return Err(Tensor::from_primitive(xp));
    }
    let (cp, sp) = (cos.clone().into_primitive().tensor(), sin.clone().into_primitive().tensor());
    let out = match (&xp, as_flex::<B>(&cp), as_flex::<B>(&sp)) {
        (TensorPrimitive::Float(p), Some(c), Some(sn)) => as_flex::<B>(p).and_then(|xf| {
            let (c, sn) = (f32_rows(c)?.0, f32_rows(sn)?.0);
            let xc;
            let xf = if xf.is_contiguous() {
                xf
            } else {
                xc = xf.to_contiguous();
                &xc
            };
            let shape = [b, s, heads, dh];
            let position = |r: usize| r % rows;
            let data = match xf.dtype() {
                DType::F32 => {
                    TensorData::new(rope_rows(xf.as_slice::<f32>()?, heads, dh, &c, &sn, position, copy, copy), shape)
                }
                DType::F16 => TensorData::new(
                    rope_rows(xf.as_slice::<f16>()?, heads, dh, &c, &sn, position, widen_half, narrow_half),
                    shape,
                ),
                DType::BF16 => TensorData::new(
                    rope_rows(xf.as_slice::<bf16>()?, heads, dh, &c, &sn, position, widen_half, narrow_half),
                    shape,
                ),
                _ => return None,
            };
            from_flex::<B>(FlexTensor::from_data(data))
        }),
        _ => None,
    };
    kernel_or(out, xp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::tensor::{Distribution, FloatDType, Tolerance};

    use crate::backend::Flex;
    use crate::kernels::flex::inputs;
    use crate::kernels::BLOCKED_ROWS;

    #[test]
    fn swiglu_takes_the_kernel_on_products_of_any_size() {
        for rows in [3, BLOCKED_ROWS + 100] {
            let (x, w) = inputs::<Flex>(rows);
            let h = crate::kernels::matmul_weight(x, w); // [rows, 80]
            assert!(swiglu(h).is_ok(), "{rows} rows");
        }
        let (x, w) = inputs::<Autodiff<Flex>>(3);
        assert!(swiglu(x.matmul(w)).is_err(), "autodiff: Burn's ops keep the graph");
    }

    #[test]
    fn rms_norm_takes_the_kernel_in_every_float_dtype() {
        let device = Default::default();
        let x = Tensor::<Flex, 3>::random([3, 7, 19], Distribution::Normal(0.5, 2.0), &device);
        let w = Tensor::<Flex, 1>::random([19], Distribution::Uniform(0.5, 1.5), &device);
        for dtype in [FloatDType::F32, FloatDType::F16, FloatDType::BF16] {
            assert!(rms_norm(x.clone().cast(dtype), &w.clone().cast(dtype), 1e-5).is_ok(), "{dtype:?}");
        }
        let on_graph = Tensor::<Autodiff<Flex>, 3>::from_data(x.into_data(), &device);
        let w = Tensor::<Autodiff<Flex>, 1>::from_data(w.into_data(), &device);
        assert!(rms_norm(on_graph, &w, 1e-5).is_err(), "autodiff: Burn's ops keep the graph");
    }

    #[test]
    fn rope_takes_the_kernel_with_tables_in_half_precision() {
        // A model run in f16 makes its tables in its default dtype: the kernel widens them.
        let device = Default::default();
        let x = Tensor::<Flex, 4>::random([1, 3, 2, 8], Distribution::Normal(0.0, 1.0), &device);
        let table = crate::nn::RotaryEmbedding::new(8, 100.0).range::<Flex>(2, 3, &device);
        let want = rope(x.clone(), &table.cos, &table.sin, RopePositions::Shared).unwrap();
        for dtype in [FloatDType::F16, FloatDType::BF16] {
            let (cos, sin) = (table.cos.clone().cast(dtype), table.sin.clone().cast(dtype));
            let got = rope(x.clone().cast(dtype), &cos, &sin, RopePositions::Shared).expect("the kernel");
            got.cast(FloatDType::F32).into_data().assert_approx_eq::<f32>(&want.to_data(), Tolerance::absolute(3e-2));
        }
    }
}
