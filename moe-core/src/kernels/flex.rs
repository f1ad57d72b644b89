//! The burn-flex side of [`super::matmul_weight`] and [`super::write_along`]: reach the tensors'
//! storage when the backend is burn-flex itself (not wrapped in `Autodiff`, whose graph needs
//! Burn's own ops), and run the kernels on it.

use std::any::Any;

use burn::backend::flex::FlexTensor;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData, TensorPrimitive};
use half::slice::HalfFloatSliceExt;
use half::vec::HalfFloatVecExt;
use half::{bf16, f16};
use rayon::prelude::*;

use super::blocked::blocked_matmul;
use super::packed::{packed_matmul, PackedWeights};
use super::quantized::quantized_matmul;
use super::rms_norm::rms_norm as rms_norm_rows;
use super::rope::rope as rope_rows;
use super::skinny::skinny_matmul;
use super::swiglu::swiglu as swiglu_rows;
use super::weights::Weights;
use super::{RopePositions, BLOCKED_ROWS, SKINNY_ROWS};
use crate::quant::QuantMatrix;

/// `x @ w` by this crate's kernels when `B` is burn-flex and `w` is a contiguous f32/f16/bf16
/// matrix `[1, ..., 1, K, N]`: up to [`BLOCKED_ROWS`] rows of `x`, or f32 `x` and `w` of any
/// length (`gemm`); otherwise the inputs back.
#[allow(clippy::type_complexity)]
pub(super) fn matmul<B: Backend, const R: usize>(
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

/// `silu(h[.., ..F]) * h[.., F..]` by this crate's kernel when `B` is burn-flex and `h` is a
/// contiguous f32/f16/bf16 tensor; otherwise `h` back.
pub(super) fn swiglu<B: Backend, const N: usize>(h: Tensor<B, N>) -> Result<Tensor<B, N>, Tensor<B, N>> {
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

/// RMSNorm by this crate's kernel when `B` is burn-flex and `x` and `weight` are contiguous
/// tensors of one float dtype; otherwise `x` back.
pub(super) fn rms_norm<B: Backend, const N: usize>(
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
pub(super) fn rope<B: Backend>(
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

/// `buffer[.., start.., ..] = value` along `dim` in the buffer's own storage, when `B` is
/// burn-flex, the buffer is contiguous and held by nobody else, and the dtypes agree; otherwise
/// the inputs back.
#[allow(clippy::type_complexity)]
pub(super) fn write_along<B: Backend, const D: usize>(
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
pub(super) fn contiguous<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, D> {
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
fn copy_runs(t: &FlexTensor) -> Option<FlexTensor> {
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

/// The routed experts' outputs weighted and added back in token order, in one pass, when `B`
/// is burn-flex and every input is contiguous, of one float dtype (f32, f16 or bf16), with an
/// integer index; otherwise the outputs back. Each slot's product is rounded to the dtype
/// before it is added and each sum after, as in `y * w` followed by `select_assign`, so the
/// sums are the same to the bit.
pub(super) fn combine<B: Backend>(
    outputs: Vec<Tensor<B, 2>>,
    weights: &Tensor<B, 2>,
    token_index: &Tensor<B, 1, Int>,
    tokens: usize,
) -> Result<Tensor<B, 2>, Vec<Tensor<B, 2>>> {
    let Some(d) = outputs.first().map(|o| o.dims()[1]) else { return Err(outputs) };
    let prims: Vec<_> = outputs.into_iter().map(Tensor::into_primitive).collect();
    let (wp, ip) = (weights.clone().into_primitive().tensor(), token_index.clone().into_primitive());
    let hidden = (|| {
        let ys = prims
            .iter()
            .map(|p| match p {
                TensorPrimitive::Float(p) => as_flex::<B>(p),
                TensorPrimitive::QFloat(_) => None,
            })
            .collect::<Option<Vec<_>>>()?;
        let ws = as_flex::<B>(&wp)?;
        let index = (&ip as &dyn Any).downcast_ref::<FlexTensor>()?;
        let index: Vec<usize> = match index.dtype() {
            DType::I64 => index.as_slice::<i64>()?.iter().map(|&i| usize::try_from(i).ok()).collect::<Option<_>>()?,
            DType::I32 => index.as_slice::<i32>()?.iter().map(|&i| usize::try_from(i).ok()).collect::<Option<_>>()?,
            _ => return None,
        };
        let shape = [tokens, d];
        let data = match ws.dtype() {
            DType::F32 => TensorData::new(combine_rows::<f32>(&ys, ws, &index, shape, copy, copy)?, shape),
            DType::F16 => TensorData::new(combine_rows::<f16>(&ys, ws, &index, shape, widen_half, narrow_half)?, shape),
            DType::BF16 => {
                TensorData::new(combine_rows::<bf16>(&ys, ws, &index, shape, widen_half, narrow_half)?, shape)
            }
            _ => return None,
        };
        from_flex::<B>(FlexTensor::from_data(data))
    })();
    match hidden {
        Some(hidden) => Ok(Tensor::from_primitive(TensorPrimitive::Float(hidden))),
        None => Err(prims.into_iter().map(Tensor::from_primitive).collect()),
    }
}

/// Tokens per task of [`combine_rows`]: 64 rows of 512 values is 128 KB of f32 to sum.
const COMBINE_TOKENS_PER_TASK: usize = 64;

/// [`combine`]'s pass on values of dtype `E`: `hidden[index[s]] += ws[s] * y[s]` over the
/// slots `s` of the outputs `ys` in order, in f32, rounded to `E` after each product and each
/// sum unless `E` is f32 (burn-flex's f16 and bf16 ops compute in f32 and round once); `None`
/// when a dtype, a length or an index does not fit.
///
/// The sums run token by token, each token's slots in ascending order, so tokens are summed in
/// parallel and every sum adds the same values in the same order as one pass over the slots.
/// (That pass ran on the calling thread, with a zeroed `[T, D]` f32 buffer and a copy of it into
/// the output: 0.7% of the MoE layer's forward at `T = 2048`, `perf`, session 19, while the
/// other core waited.)
fn combine_rows<E: burn::tensor::Element + bytemuck::Pod + Default + Send + Sync>(
    ys: &[&FlexTensor],
    ws: &FlexTensor,
    index: &[usize],
    [tokens, d]: [usize; 2],
    to_f32: impl Fn(&[E], &mut [f32]) + Sync,
    from_f32: impl Fn(&[f32], &mut [E]) + Sync,
) -> Option<Vec<E>> {
    let ys = ys.iter().map(|y| y.as_slice::<E>()).collect::<Option<Vec<_>>>()?;
    let ws = ws.as_slice::<E>()?;
    if d == 0 || ys.iter().any(|y| y.len() % d != 0) {
        return None;
    }
    let rows: Vec<&[E]> = ys.iter().flat_map(|y| y.chunks_exact(d)).collect();
    if ws.len() != rows.len() || index.len() != rows.len() || index.iter().any(|&t| t >= tokens) {
        return None;
    }
    let mut w32 = vec![0.0f32; rows.len()];
    to_f32(ws, &mut w32);
    // Each token's slots in ascending order: token `t`'s are `order[starts[t]..starts[t + 1]]`.
    let mut starts = vec![0usize; tokens + 1];
    index.iter().for_each(|&t| starts[t + 1] += 1);
    (0..tokens).for_each(|t| starts[t + 1] += starts[t]);
    let mut next = starts.clone();
    let mut order = vec![0usize; rows.len()];
    for (slot, &t) in index.iter().enumerate() {
        order[next[t]] = slot;
        next[t] += 1;
    }
    let rounds = E::dtype() != DType::F32;
    let sum_tokens = |first: usize, out: &mut [std::mem::MaybeUninit<E>]| {
        let (mut h, mut row, mut rounded) = (vec![0.0f32; d], vec![0.0f32; d], vec![E::default(); d]);
        let round = |v: &mut [f32], rounded: &mut [E]| {
            if rounds {
                from_f32(v, rounded);
                to_f32(rounded, v);
            }
        };
        for (t, out) in (first..).zip(out.chunks_exact_mut(d)) {
            h.fill(0.0);
            for &slot in &order[starts[t]..starts[t + 1]] {
                to_f32(rows[slot], &mut row);
                row.iter_mut().for_each(|v| *v *= w32[slot]);
                round(&mut row, &mut rounded);
                h.iter_mut().zip(&row).for_each(|(h, v)| *h += v);
                round(&mut h, &mut rounded);
            }
            from_f32(&h, &mut rounded);
            out.iter_mut().zip(&rounded).for_each(|(out, &v)| {
                out.write(v);
            });
        }
    };
    let mut out = Vec::<E>::with_capacity(tokens * d);
    let spare = &mut out.spare_capacity_mut()[..tokens * d];
    let per_task = COMBINE_TOKENS_PER_TASK * d;
    if tokens <= COMBINE_TOKENS_PER_TASK {
        sum_tokens(0, spare);
    } else {
        spare.par_chunks_mut(per_task).enumerate().for_each(|(i, out)| sum_tokens(i * COMBINE_TOKENS_PER_TASK, out));
    }
    // SAFETY: every token's row of `out` was written above.
    unsafe { out.set_len(tokens * d) };
    Some(out)
}

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

/// `x @ Wᵀ` with `W` in quantized blocks ([`quantized_matmul`] per part, the parts' outputs side
/// by side), in `x`'s dtype, when `B` is burn-flex; otherwise `x` back.
pub(super) fn quantized_linear<B: Backend>(x: Tensor<B, 2>, w: &QuantMatrix) -> Result<Tensor<B, 2>, Tensor<B, 2>> {
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
pub(super) fn pack_weight<B: Backend>(w: &Tensor<B, 2>) -> Option<PackedWeights> {
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
pub(super) fn packed_linear<B: Backend>(x: Tensor<B, 2>, w: &PackedWeights) -> Result<Tensor<B, 2>, Tensor<B, 2>> {
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

/// `x @ w` for f32 `x` and `w` by `gemm` into a buffer of our own, `None` for other dtypes.
///
/// Why not burn-flex's matmul, which runs the same `gemm`: it allocates its output with
/// `FlexTensor::empty`, which zero-fills a byte vector and then copies all of it into a new
/// allocation (cubecl's `Bytes::from_bytes_vec` enforces a 16-byte alignment on a `Vec<u8>`
/// whatever its address): 2.4% of the sparse layer's forward at `T = 2048` went to that copy
/// (`perf` with DWARF call graphs, session 15), twice the output's pages touched for nothing.
fn long_f32(x: &FlexTensor, w: &FlexTensor, m: usize, k: usize, n: usize) -> Option<FlexTensor> {
    if x.dtype() != DType::F32 {
        return None;
    }
    let w = w.as_slice::<f32>()?;
    let (x, _) = f32_rows(x)?;
    if x.len() != m * k || w.len() != k * n {
        return None;
    }
    if m * n == 0 || k == 0 {
        return Some(FlexTensor::from_data(TensorData::new(vec![0.0f32; m * n], [m, n])));
    }
    // Not zero-filled first: the fill was 1.3% of the layer's forward (`memset` under this
    // function), and `gemm` writes every element.
    let mut out = Vec::<f32>::with_capacity(m * n);
    // SAFETY: `out` has room for `[m, n]`, `x` is `[m, k]` and `w` `[k, n]`, all row-major
    // (strides below); with `read_dst` false, `gemm` writes all of `out = 1 * x w` without
    // reading it, so every element is initialised before `set_len`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
        out.set_len(m * n);
    }
    Some(FlexTensor::from_data(TensorData::new(out, [m, n])))
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

/// The product in `x`'s dtype, or `None` where the kernel does not apply (a strided weight
/// view, another dtype).
fn run(x: &FlexTensor, w: &FlexTensor, m: usize, k: usize, n: usize) -> Option<FlexTensor> {
    if m > BLOCKED_ROWS {
        return long_f32(x, w, m, k, n);
    }
    let weights = weights_of(w)?;
    let (rows, dtype) = f32_rows(x)?;
    let out =
        if m <= SKINNY_ROWS { skinny_matmul(&rows, weights, m, k, n) } else { blocked_matmul(&rows, weights, m, k, n) };
    let data = in_dtype(out, [m, n], dtype);
    Some(FlexTensor::from_data(data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::tensor::{Distribution, FloatDType, Tolerance};

    use crate::backend::Flex;

    fn inputs<B: Backend>(rows: usize) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let device = Default::default();
        (
            Tensor::random([rows, 32], Distribution::Normal(0.0, 1.0), &device),
            Tensor::random([32, 80], Distribution::Normal(0.0, 1.0), &device),
        )
    }

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
    fn many_rows_match_burns_matmul() {
        let (x, w) = inputs::<Flex>(BLOCKED_ROWS + 37);
        let want = x.clone().unsqueeze::<3>().matmul(w.clone().unsqueeze::<3>()).reshape([BLOCKED_ROWS + 37, 80]);
        let got = matmul(x, w).expect("gemm runs");
        got.into_data().assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-5));
    }

    /// `combine` against `cat`, product and `select_assign` in f32, f16 and bf16, to the bit.
    fn check_combine(sizes: &[usize], index: Vec<i64>, tokens: usize) {
        let device = Default::default();
        let outputs: Vec<Tensor<Flex, 2>> =
            sizes.iter().map(|&n| Tensor::random([n, 6], Distribution::Normal(0.0, 1.0), &device)).collect();
        let weights = Tensor::<Flex, 2>::random([index.len(), 1], Distribution::Uniform(0.0, 1.0), &device);
        let index = Tensor::<Flex, 1, Int>::from_data(TensorData::new(index, [sizes.iter().sum::<usize>()]), &device);
        for dtype in [FloatDType::F32, FloatDType::F16, FloatDType::BF16] {
            let outputs: Vec<_> = outputs.iter().map(|o| o.clone().cast(dtype)).collect();
            let weights = weights.clone().cast(dtype);
            let y = Tensor::cat(outputs.clone(), 0) * weights.clone();
            let zeros = Tensor::<Flex, 2>::zeros([tokens, 6], &device).cast(dtype);
            let want = zeros.select_assign(0, index.clone(), y, burn::tensor::IndexingUpdateOp::Add);
            let got = combine(outputs, &weights, &index, tokens).expect("the kernel runs");
            assert_eq!(got.dtype(), dtype.into());
            got.into_data().assert_eq(&want.into_data(), true);
        }
    }

    #[test]
    fn combine_is_cat_multiply_and_select_assign_to_the_bit() {
        // Tokens 0..5, each taken twice, in the experts' order.
        check_combine(&[3, 0, 5, 4], vec![0, 2, 4, 1, 2, 3, 4, 5, 0, 1, 3, 5], 6);
        // More tokens than one task sums: 150 tokens, each taken twice, one taken by no expert.
        let index: Vec<i64> = (0..300).map(|s| (s * 7 % 150) as i64).map(|t| if t == 149 { 0 } else { t }).collect();
        check_combine(&[100, 0, 120, 80], index, 151);

        let device = Default::default();
        let outputs: Vec<Tensor<Flex, 2>> =
            [3, 9].iter().map(|&n| Tensor::random([n, 6], Distribution::Normal(0.0, 1.0), &device)).collect();
        let weights = Tensor::<Flex, 2>::random([12, 1], Distribution::Uniform(0.0, 1.0), &device);
        let out_of_range = Tensor::<Flex, 1, Int>::from_data([0, 2, 4, 1, 2, 3, 4, 5, 0, 1, 3, 6], &device);
        assert!(combine(outputs, &weights, &out_of_range, 6).is_err(), "a token past T: Burn's ops");
    }

    #[test]
    fn half_precision_stays_half_precision() {
        for (dtype, rows) in
            [(FloatDType::F16, 3), (FloatDType::BF16, 3), (FloatDType::F16, 20), (FloatDType::BF16, 20)]
        {
            let (x, w) = inputs::<Flex>(rows);
            let want = x.clone().matmul(w.clone());
            let got = matmul(x.cast(dtype), w.cast(dtype)).expect("the kernel runs");
            assert_eq!(got.dtype(), dtype.into());
            // Inputs rounded to 8 mantissa bits (bf16), 32 products summed.
            got.cast(FloatDType::F32).into_data().assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(0.3));
        }
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
