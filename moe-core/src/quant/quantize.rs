//! f32 values to GGUF blocks, with ggml's reference rounding (`quantize_row_*_ref`), so that a
//! file this crate writes holds the blocks llama.cpp's `llama-quantize` would write.

use half::{bf16, f16};

use super::GgmlType;

/// The types [`quantize`] writes.
pub const WRITABLE: [GgmlType; 5] = [GgmlType::F32, GgmlType::F16, GgmlType::Bf16, GgmlType::Q8_0, GgmlType::Q4_0];

/// Encodes `values` (a whole number of `ty` blocks) as `ty`; `None` when this crate cannot
/// write `ty` (see [`WRITABLE`]).
///
/// # Panics
/// If `values.len()` is not a multiple of the block size.
pub fn quantize(ty: GgmlType, values: &[f32]) -> Option<Vec<u8>> {
    let bs = ty.block_size();
    assert!(values.len().is_multiple_of(bs), "{} values are not whole {ty} blocks", values.len());
    let mut out = Vec::with_capacity(values.len() / bs * ty.type_size());
    match ty {
        GgmlType::F32 => values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        GgmlType::F16 => values.iter().for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
        GgmlType::Bf16 => values.iter().for_each(|v| out.extend_from_slice(&bf16::from_f32(*v).to_le_bytes())),
        GgmlType::Q8_0 => values.chunks_exact(bs).for_each(|x| q8_0(x, &mut out)),
        GgmlType::Q4_0 => values.chunks_exact(bs).for_each(|x| q4_0(x, &mut out)),
        _ => return None,
    }
    Some(out)
}

/// `d = max|x| / 127`, `q = round(x / d)`.
fn q8_0(x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    out.extend(x.iter().map(|v| (v * id).round() as i8 as u8));
}

/// `d = x_max / -8` (the value of largest magnitude, with its sign), `q = min(15, trunc(x / d + 8.5))`.
fn q4_0(x: &[f32], out: &mut Vec<u8>) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    let q = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
    out.extend((0..16).map(|j| q(x[j]) | (q(x[j + 16]) << 4)));
}

#[cfg(test)]
mod tests {
    use super::super::dequantize;
    use super::*;

    /// Quantizing then dequantizing stays within half a step of every value (a whole step for
    /// Q4_0: its 16 levels reach `-8d` on the extreme's side but only `7d` on the other, so
    /// values beyond that are clipped), and zeros come back exactly.
    #[test]
    fn round_trips_within_half_a_step() {
        let x: Vec<f32> = (0..64).map(|i| ((i * 37 % 64) as f32 - 31.0) / 7.0).collect();
        for ty in WRITABLE {
            let bytes = quantize(ty, &x).unwrap();
            assert_eq!(bytes.len(), ty.row_bytes(x.len()).unwrap());
            let mut y = vec![0.0; x.len()];
            dequantize(ty, &bytes, &mut y);
            for (block, (x, y)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
                let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let step = match ty {
                    GgmlType::Q8_0 => amax / 127.0,
                    GgmlType::Q4_0 => 2.0 * amax / 8.0,
                    _ => amax / 128.0, // f16/bf16 rounding, far below this
                };
                for (a, b) in x.iter().zip(y) {
                    assert!((a - b).abs() <= step * 0.5 + 1e-3, "{ty} block {block}: {a} -> {b}");
                }
            }
        }
        let zeros = quantize(GgmlType::Q4_0, &[0.0; 32]).unwrap();
        let mut y = [1.0; 32];
        dequantize(GgmlType::Q4_0, &zeros, &mut y);
        assert_eq!(y, [0.0; 32]);
        assert_eq!(quantize(GgmlType::Q4K, &[0.0; 256]), None);
    }
}
