//! The `gemm` call for long f32 products, into a buffer of this crate's.

use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, TensorData};

use super::f32_rows;

/// `x @ w` for f32 `x` and `w` by `gemm` into a buffer of our own, `None` for other dtypes.
///
/// Why not burn-flex's matmul, which runs the same `gemm`: it allocates its output with
/// `FlexTensor::empty`, which zero-fills a byte vector and then copies all of it into a new
/// allocation (cubecl's `Bytes::from_bytes_vec` enforces a 16-byte alignment on a `Vec<u8>`
/// whatever its address): 2.4% of the sparse layer's forward at `T = 2048` went to that copy
/// (`perf` with DWARF call graphs, 2026-11-24, Zen 3), twice the output's pages touched for nothing.
pub(super) fn long_f32(x: &FlexTensor, w: &FlexTensor, m: usize, k: usize, n: usize) -> Option<FlexTensor> {
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
