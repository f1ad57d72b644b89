//! Strided views on burn-flex: copied into row-major order one run of the last dim at a time,
//! and KV-cache writes into the cache's own storage.

use std::any::Any;

use burn::backend::flex::FlexTensor;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
use half::{bf16, f16};

use super::{as_flex, from_flex};

/// `buffer[.., start.., ..] = value` along `dim` in the buffer's own storage, when `B` is
/// burn-flex, the buffer is contiguous and held by nobody else, and the dtypes agree; otherwise
/// the inputs back.
#[allow(clippy::type_complexity)]
pub(in crate::kernels) fn write_along<B: Backend, const D: usize>(
    buffer: Tensor<B, D>,
    dim: usize,
    start: usize,
    value: Tensor<B, D>,
) -> Result<Tensor<B, D>, (Tensor<B, D>, Tensor<B, D>)> {
    let (dims, value_dims) = (buffer.dims(), value.dims());
    let fits = (0..D).all(|i| if i == dim { start + value_dims[i] <= dims[i] } else { value_dims[i] == dims[i] });
    if !fits {
        return Err((buffer, value));
    }
    let (mut bp, vp) = (buffer.into_primitive(), value.into_primitive());
    let written = match (&mut bp, &vp) {
        (TensorPrimitive::Float(b), TensorPrimitive::Float(v)) => {
            match ((b as &mut dyn Any).downcast_mut::<FlexTensor>(), as_flex::<B>(v)) {
                (Some(b), Some(v)) => write(b, v, &dims, dim, start, value_dims[dim]),
                _ => false,
            }
        }
        _ => false,
    };
    if written {
        Ok(Tensor::from_primitive(bp))
    } else {
        Err((Tensor::from_primitive(bp), Tensor::from_primitive(vp)))
    }
}

/// `t` copied into row-major order run by run (memcpy of its last dim) when `B` is burn-flex
/// and `t` is a view with positive strides whose last dim is contiguous (heads swapped in
/// front of positions); otherwise `t` back. burn-flex's own copy walks such a 3-D view element
/// by element (`StridedIter`): that took 5-6% of a 128-token prefill of the issue-10 shape.
pub(in crate::kernels) fn contiguous<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, D> {
    let tp = t.into_primitive();
    let copied = match &tp {
        TensorPrimitive::Float(p) => as_flex::<B>(p).and_then(copy_runs).and_then(from_flex::<B>),
        _ => None,
    };
    match copied {
        Some(out) => Tensor::from_primitive(TensorPrimitive::Float(out)),
        None => Tensor::from_primitive(tp),
    }
}

/// [`contiguous`] on a flex tensor: `None` where it does not apply.
pub(super) fn copy_runs(t: &FlexTensor) -> Option<FlexTensor> {
    let layout = t.layout();
    let (dims, strides) = (layout.shape().as_slice(), layout.strides());
    let run = *dims.last()?;
    if layout.is_contiguous() || strides.last() != Some(&1) || run < 8 || strides.iter().any(|&s| s < 0) {
        return None;
    }
    let strides: Vec<usize> = strides.iter().map(|&s| s as usize).collect();
    let data = match t.dtype() {
        DType::F32 => TensorData::new(runs::<f32>(t.bytes(), dims, &strides, layout.start_offset()), dims.to_vec()),
        DType::F16 => TensorData::new(runs::<f16>(t.bytes(), dims, &strides, layout.start_offset()), dims.to_vec()),
        DType::BF16 => TensorData::new(runs::<bf16>(t.bytes(), dims, &strides, layout.start_offset()), dims.to_vec()),
        _ => return None,
    };
    Some(FlexTensor::from_data(data))
}

/// The elements of the view (`dims`, `strides`, `offset`, last stride 1) of `bytes` in
/// row-major order, one slice copy per run of the last dim.
fn runs<E: bytemuck::Pod>(bytes: &[u8], dims: &[usize], strides: &[usize], offset: usize) -> Vec<E> {
    let src: &[E] = bytemuck::cast_slice(bytes);
    let (outer, run) = (&dims[..dims.len() - 1], dims[dims.len() - 1]);
    let count: usize = outer.iter().product();
    let mut out = Vec::with_capacity(count * run);
    let mut index = vec![0usize; outer.len()];
    for _ in 0..count {
        let at = offset + index.iter().zip(strides).map(|(i, s)| i * s).sum::<usize>();
        out.extend_from_slice(&src[at..at + run]);
        // The next run: the innermost outer index first.
        for (i, &len) in index.iter_mut().zip(outer).rev() {
            *i += 1;
            if *i < len {
                break;
            }
            *i = 0;
        }
    }
    out
}

/// Copies `value` (`len` positions along `dim`) into `buffer` at `start`; `false` if the
/// buffer is shared, strided or of another dtype.
fn write(buffer: &mut FlexTensor, value: &FlexTensor, dims: &[usize], dim: usize, start: usize, len: usize) -> bool {
    if buffer.dtype() != value.dtype() || buffer.layout().contiguous_offsets() != Some((0, dims.iter().product())) {
        return false;
    }
    let value = copy_runs(value).unwrap_or_else(|| value.to_contiguous());
    match buffer.dtype() {
        DType::F32 => write_typed::<f32>(buffer, &value, dims, dim, start, len),
        DType::F16 => write_typed::<f16>(buffer, &value, dims, dim, start, len),
        DType::BF16 => write_typed::<bf16>(buffer, &value, dims, dim, start, len),
        _ => false,
    }
}

fn write_typed<E: burn::tensor::Element + bytemuck::Pod>(
    buffer: &mut FlexTensor,
    value: &FlexTensor,
    dims: &[usize],
    dim: usize,
    start: usize,
    len: usize,
) -> bool {
    let Some(src) = value.as_slice::<E>() else { return false };
    let Some(dst) = buffer.try_storage_mut::<E>() else { return false };
    let inner: usize = dims[dim + 1..].iter().product();
    let block = len * inner;
    if block == 0 {
        return true;
    }
    for (outer, chunk) in src.chunks_exact(block).enumerate() {
        let at = (outer * dims[dim] + start) * inner;
        dst[at..at + block].copy_from_slice(chunk);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, FloatDType};

    use crate::backend::Flex;

    /// A view with heads swapped in front of positions (and one narrowed, so it starts past
    /// its buffer's start) is copied run by run to exactly what Burn's copy gives, in every
    /// dtype; a view whose last dim is strided is left to Burn.
    #[test]
    fn contiguous_copies_swapped_views_run_by_run() {
        let device = Default::default();
        let x = Tensor::<Flex, 4>::random([2, 5, 3, 16], Distribution::Normal(0.0, 1.0), &device);
        for dtype in [FloatDType::F32, FloatDType::F16, FloatDType::BF16] {
            for view in [x.clone().cast(dtype).swap_dims(1, 2), x.clone().cast(dtype).swap_dims(1, 2).narrow(2, 1, 3)] {
                let want = view.clone().into_data();
                let TensorPrimitive::Float(p) = view.clone().into_primitive() else { unreachable!() };
                assert!(copy_runs(as_flex::<Flex>(&p).unwrap()).is_some(), "{dtype:?}: the run copy applies");
                assert_eq!(contiguous(view).into_data(), want, "{dtype:?}");
            }
        }
        let TensorPrimitive::Float(p) = x.clone().swap_dims(2, 3).into_primitive() else { unreachable!() };
        assert!(copy_runs(as_flex::<Flex>(&p).unwrap()).is_none(), "the last dim is strided");
        let TensorPrimitive::Float(p) = x.into_primitive() else { unreachable!() };
        assert!(copy_runs(as_flex::<Flex>(&p).unwrap()).is_none(), "already contiguous");
    }
}
