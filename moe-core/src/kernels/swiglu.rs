//! SwiGLU's activation `silu(gate) * up` on the output of a fused gate/up product, in one pass.
//!
//! Why not Burn's ops: the gate and the up halves of a `[M, 2F]` product are strided views, and
//! burn-flex runs element-wise ops on strided views through a generic per-element index iterator
//! (`StridedIter`, 6% of a `moe-layer --tokens 2048` profile on the same views in the
//! all-experts reference, which keeps Burn's ops). Here each row is read once, contiguously, on
//! every core, with no intermediate `silu` tensor.

use rayon::prelude::*;

/// Rows per rayon task: enough work (~16K elements at the usual widths) to pay for a task.
const ROWS_PER_TASK: usize = 8;

/// `out[m, j] = silu(h[m, j]) * h[m, F + j]`, computed in f32 and stored as `E`.
///
/// # Shapes
/// - `h`: `[M, 2F]` row-major -> `[M, F]` row-major
///
/// # Panics
/// If `h` is not a whole number of `2F`-wide rows.
pub fn swiglu<E: Copy + Send + Sync + Default>(
    h: &[E],
    f: usize,
    to_f32: fn(E) -> f32,
    from_f32: fn(f32) -> E,
) -> Vec<E> {
    assert!(f > 0 && h.len().is_multiple_of(2 * f), "h is not [M, 2 * {f}]");
    let mut out = vec![E::default(); h.len() / 2];
    let row = |(h, out): (&[E], &mut [E])| {
        let (gate, up) = h.split_at(f);
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            let g = to_f32(g);
            *o = from_f32(g / (1.0 + (-g).exp()) * to_f32(u));
        }
    };
    if h.len() < 2 * f * ROWS_PER_TASK {
        h.chunks_exact(2 * f).zip(out.chunks_exact_mut(f)).for_each(row);
    } else {
        h.par_chunks(2 * f * ROWS_PER_TASK).zip(out.par_chunks_mut(f * ROWS_PER_TASK)).for_each(|(h, out)| {
            h.chunks_exact(2 * f).zip(out.chunks_exact_mut(f)).for_each(row);
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_definition_on_every_row() {
        let f = 5;
        for m in [1, 3, ROWS_PER_TASK * 3 + 1] {
            let h: Vec<f32> = (0..m * 2 * f).map(|i| ((i * 37 % 23) as f32 - 11.0) / 3.0).collect();
            let got = swiglu(&h, f, |v| v, |v| v);
            for r in 0..m {
                for j in 0..f {
                    let (g, u) = (h[r * 2 * f + j] as f64, h[r * 2 * f + f + j] as f64);
                    let want = g / (1.0 + (-g).exp()) * u;
                    assert!((got[r * f + j] as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()), "row {r} col {j}");
                }
            }
        }
    }
}
