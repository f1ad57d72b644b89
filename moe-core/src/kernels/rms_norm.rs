//! RMSNorm in one pass over each row, the rows split across the cores.
//!
//! Why not Burn's ops: in an f16 or bf16 model burn-flex runs them on one core, element by
//! element, and the weight's broadcast goes through its generic index iterator
//! (`StridedIter`). A `perf` profile of an 8x7B-shaped f16 prefill (2026-11-25, Zen 3) had the main
//! thread busy for 15% of the wall time while the worker threads waited, a fifth of it in
//! `RmsNorm::forward`.

use rayon::prelude::*;

/// Rows per rayon task.
const ROWS_PER_TASK: usize = 8;

/// transformers' `MixtralRMSNorm` on rows of `d` values: in f32,
/// `y = x * (mean(x^2) + eps)^-1/2`, rounded to `E`, then times `weight` in `E` (a product of
/// two `E` values, rounded once). `to_f32` and `from_f32` convert slices of equal length.
///
/// # Shapes
/// - `x`: `[M, D]` row-major, `weight`: `[D]` -> `[M, D]` row-major
///
/// # Panics
/// If `weight` is empty or `x` is not a whole number of rows.
pub fn rms_norm<E: Copy + Send + Sync + Default>(
    x: &[E],
    weight: &[E],
    eps: f32,
    to_f32: impl Fn(&[E], &mut [f32]) + Sync,
    from_f32: impl Fn(&[f32], &mut [E]) + Sync,
) -> Vec<E> {
    let d = weight.len();
    assert!(d > 0 && x.len().is_multiple_of(d), "x is not [M, {d}]");
    let mut w = vec![0.0f32; d];
    to_f32(weight, &mut w);
    let mut out = vec![E::default(); x.len()];
    let task = |(x, out): (&[E], &mut [E])| {
        let mut row = vec![0.0f32; d];
        for (x, out) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            to_f32(x, &mut row);
            let scale = (mean_square(&row) + eps).powf(-0.5);
            row.iter_mut().for_each(|v| *v *= scale);
            // Rounded to `E` before the weight, as transformers casts back before multiplying.
            from_f32(&row, out);
            to_f32(out, &mut row);
            row.iter_mut().zip(&w).for_each(|(v, w)| *v *= w);
            from_f32(&row, out);
        }
    };
    if x.len() < d * ROWS_PER_TASK {
        task((x, &mut out));
    } else {
        x.par_chunks(d * ROWS_PER_TASK).zip(out.par_chunks_mut(d * ROWS_PER_TASK)).for_each(task);
    }
    out
}

/// `mean(v^2)`, summed in eight lanes (vectorised, and closer to the exact sum than one running
/// total over thousands of values).
fn mean_square(v: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = v.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|x| x * x).sum();
    for c in chunks {
        lanes.iter_mut().zip(c).for_each(|(l, x)| *l += x * x);
    }
    (lanes.iter().sum::<f32>() + tail) / v.len() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(from: &[f32], to: &mut [f32]) {
        to.copy_from_slice(from);
    }

    #[test]
    fn matches_the_definition_row_by_row() {
        // Rows of odd width (a tail past the lanes), enough rows to run in parallel.
        let (m, d) = (19, 13);
        let x: Vec<f32> = (0..m * d).map(|i| ((i * 37) % 23) as f32 / 7.0 - 1.5).collect();
        let w: Vec<f32> = (0..d).map(|i| 0.5 + i as f32 / 10.0).collect();
        let got = rms_norm(&x, &w, 1e-5, copy, copy);
        for (x, got) in x.chunks(d).zip(got.chunks(d)) {
            let ms = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / d as f64;
            for ((x, w), g) in x.iter().zip(&w).zip(got) {
                let want = *x as f64 / (ms + 1e-5).sqrt() * *w as f64;
                assert!((want - *g as f64).abs() < 1e-5 * (1.0 + want.abs()), "{g} vs {want}");
            }
        }
    }
}
