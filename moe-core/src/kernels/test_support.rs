//! What the kernels' tests share: inputs exact in every dtype and an f64 reference.

use half::{bf16, f16};

#[cfg(x86_simd)]
use super::isa::{self, Isa, ISA_VAR};
use super::weights::Weights;

/// Whether a test of an x86 kernel that needs `level` runs in this process. Yes where the
/// kernels run `level`; no where `MOE_CPU_ISA` capped them below it (that run tests the plainer
/// code paths, and the uncapped run tests this kernel), said on stderr. A CPU without `level`
/// fails the test rather than pass it having tested nothing: such a CPU runs the plain kernels,
/// which the `portable` feature's build tests.
#[cfg(x86_simd)]
pub(super) fn simd_kernel_runs(level: Isa) -> bool {
    if isa::has(level) {
        return true;
    }
    assert!(
        isa::detected() >= level,
        "this test's kernel needs {level}, which this CPU lacks: test with `--features moe-core/portable`"
    );
    eprintln!("not run: {ISA_VAR} caps the kernels at {} (below {level})", isa::chosen());
    false
}

/// Multiples of 1/8 in [-1, 1]: exact in f32, f16 and bf16, so every dtype must agree with the
/// f64 reference up to f32 summation error.
pub(super) fn values(len: usize, seed: u32) -> Vec<f32> {
    (0..len).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 24) % 17) as f32 / 8.0 - 1.0).collect()
}

/// The product in f64, term by term.
pub(super) fn reference(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    (0..m * n)
        .map(|i| (0..k).map(|kk| x[i / n * k + kk] as f64 * w[kk * n + i % n] as f64).sum::<f64>() as f32)
        .collect()
}

/// Runs `kernel` on every `(m, k, n)` with f32, f16 and bf16 weights and compares each output
/// with the reference (relative 1e-5).
pub(super) fn check_every_dtype(
    kernel: fn(&[f32], Weights<'_>, usize, usize, usize) -> Vec<f32>,
    shapes: &[(usize, usize, usize)],
) {
    for &(m, k, n) in shapes {
        let x = values(m * k, 1);
        let w = values(k * n, 2);
        let want = reference(&x, &w, m, k, n);
        let w16: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let wb16: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        for (name, weights) in [("f32", Weights::F32(&w)), ("f16", Weights::F16(&w16)), ("bf16", Weights::Bf16(&wb16))]
        {
            let got = kernel(&x, weights, m, k, n);
            assert_eq!(got.len(), m * n);
            for (i, (g, r)) in got.iter().zip(&want).enumerate() {
                assert!((g - r).abs() <= 1e-5 * (1.0 + r.abs()), "{name} m{m} k{k} n{n} [{i}]: {g} vs {r}");
            }
        }
    }
}
