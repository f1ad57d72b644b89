//! f32 values to GGUF blocks, with ggml's reference rounding (`quantize_row_*_ref`), so that a
//! file this crate writes holds the blocks llama.cpp's `llama-quantize` would write.

use half::{bf16, f16};
use rayon::prelude::*;

use super::GgmlType;

/// The types [`quantize`] writes.
pub const WRITABLE: [GgmlType; 7] =
    [GgmlType::F32, GgmlType::F16, GgmlType::Bf16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4K, GgmlType::Q6K];

/// Encodes `values` (a whole number of `ty` blocks) as `ty`; `None` when this crate cannot
/// write `ty` (see [`WRITABLE`]). Large inputs are encoded on every core (blocks are
/// independent; an 8x7B's merged expert tensor is 470M values).
///
/// # Panics
/// If `values.len()` is not a multiple of the block size.
pub fn quantize(ty: GgmlType, values: &[f32]) -> Option<Vec<u8>> {
    let bs = ty.block_size();
    assert!(values.len().is_multiple_of(bs), "{} values are not whole {ty} blocks", values.len());
    if !WRITABLE.contains(&ty) {
        return None;
    }
    // Values per task: a multiple of every block size.
    const CHUNK: usize = 1 << 16;
    if values.len() <= CHUNK {
        return Some(encode(ty, values));
    }
    let mut out = vec![0u8; values.len() / bs * ty.type_size()];
    out.par_chunks_mut(CHUNK / bs * ty.type_size())
        .zip(values.par_chunks(CHUNK))
        .for_each(|(out, values)| out.copy_from_slice(&encode(ty, values)));
    Some(out)
}

/// [`quantize`] on one thread, for a writable type.
fn encode(ty: GgmlType, values: &[f32]) -> Vec<u8> {
    let bs = ty.block_size();
    let mut out = Vec::with_capacity(values.len() / bs * ty.type_size());
    match ty {
        GgmlType::F32 => values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        GgmlType::F16 => values.iter().for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
        GgmlType::Bf16 => values.iter().for_each(|v| out.extend_from_slice(&bf16::from_f32(*v).to_le_bytes())),
        GgmlType::Q8_0 => values.chunks_exact(bs).for_each(|x| q8_0(x, &mut out)),
        GgmlType::Q4_0 => values.chunks_exact(bs).for_each(|x| q4_0(x, &mut out)),
        GgmlType::Q4K => values.chunks_exact(bs).for_each(|x| q4_k(x, &mut out)),
        GgmlType::Q6K => values.chunks_exact(bs).for_each(|x| q6_k(x, &mut out)),
        _ => unreachable!("{ty} is not writable"),
    }
    out
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

/// ggml's `nearest_int`: round half to even by adding 1.5 * 2^23 and reading the low mantissa
/// bits (exact for |x| < 2^22, which the callers' ranges keep to).
fn nearest_int(x: f32) -> i32 {
    let bits = (x + 12_582_912.0).to_bits() as i32;
    (bits & 0x007F_FFFF) - 0x0040_0000
}

/// Q4_K: a 256-value super-block of 8 sub-blocks of 32, each with a 6-bit scale and minimum
/// (`value = d * sc * q - dmin * m`, `q` in 0..16). Each sub-block's scale and minimum come from
/// ggml's weighted least-squares search (`make_qkx2_quants`), then all 8 are rounded to 6 bits
/// against the largest; layout `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`.
fn q4_k(x: &[f32], out: &mut Vec<u8>) {
    let mut levels = [0u8; 256];
    let (mut scales, mut mins) = ([0.0f32; 8], [0.0f32; 8]);
    for (j, (x, levels)) in x.chunks_exact(32).zip(levels.chunks_exact_mut(32)).enumerate() {
        let sum_x2: f32 = x.iter().fold(0.0, |s, v| s + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        let weights: [f32; 32] = std::array::from_fn(|l| av_x + x[l].abs());
        (scales[j], mins[j]) = make_qkx2_quants(15, x, &weights, levels, -1.0, 0.1, 20);
    }
    let max_scale = scales.iter().fold(0.0f32, |m, &s| if s > m { s } else { m });
    let max_min = mins.iter().fold(0.0f32, |m, &s| if s > m { s } else { m });
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut packed = [0u8; 12];
    for j in 0..8 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0x0F) | ((lm & 0x0F) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    let (d, dmin) = (f16::from_f32(max_scale / 63.0), f16::from_f32(max_min / 63.0));
    for (j, (x, levels)) in x.chunks_exact(32).zip(levels.chunks_exact_mut(32)).enumerate() {
        let (sc, m) = super::dequantize::scale_min_k4(j, &packed);
        let d = d.to_f32() * sc as f32;
        // A zero scale keeps the search's levels (ggml's `continue`); they decode to `-dm`.
        if d == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * m as f32;
        levels.iter_mut().zip(x).for_each(|(l, v)| *l = nearest_int((v + dm) / d).clamp(0, 15) as u8);
    }
    out.extend_from_slice(&d.to_le_bytes());
    out.extend_from_slice(&dmin.to_le_bytes());
    out.extend_from_slice(&packed);
    for pair in levels.chunks_exact(64) {
        out.extend((0..32).map(|l| pair[l] | (pair[l + 32] << 4)));
    }
}

/// ggml's `make_qkx2_quants`: levels `0..=nmax` for `x` as `scale * l - min`, by weighted least
/// squares over `nstep + 1` candidate scales around `nmax / (max - min)`. Returns the scale and
/// the minimum (as a positive offset); `levels` holds the chosen levels.
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    levels: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for (&v, &w) in x.iter().zip(weights).skip(1) {
        min = if v < min { v } else { min };
        max = if v > max { v } else { max };
        sum_w += w;
        sum_x += w * v;
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        levels.fill(0);
        return (0.0, -min);
    }
    // `min` moves when a candidate wins, and later candidates start from it (as ggml's do).
    let level = |iscale: f32, v: f32, min: f32| nearest_int(iscale * (v - min)).clamp(0, nmax);
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for ((l, &v), &w) in levels.iter_mut().zip(x).zip(weights) {
        *l = level(iscale, v, min) as u8;
        let diff = scale * *l as f32 + min - v;
        best_error += w * (diff * diff);
    }
    let mut candidate = [0u8; 32];
    let candidate = &mut candidate[..x.len()];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for ((c, &v), &w) in candidate.iter_mut().zip(x).zip(weights) {
            let l = level(iscale, v, min);
            *c = l as u8;
            let l = l as f32;
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * v;
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut error = 0.0f32;
            for ((&c, &v), &w) in candidate.iter().zip(x).zip(weights) {
                let diff = this_scale * c as f32 + this_min - v;
                error += w * (diff * diff);
            }
            if error < best_error {
                levels.copy_from_slice(candidate);
                best_error = error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Below this a group is all zeros (ggml's `GROUP_MAX_EPS`).
const GROUP_MAX_EPS: f32 = 1e-15;

/// Q6_K: a 256-value super-block of 16 sub-blocks of 16, each with an 8-bit signed scale
/// (`value = d * sc * (q - 32)`, `q` in 0..64), the scales from ggml's `make_qx_quants` search
/// weighted by `x²`; layout `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`.
fn q6_k(x: &[f32], out: &mut Vec<u8>) {
    let mut levels = [0u8; 256];
    let mut scales = [0.0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
    for (ib, (x, levels)) in x.chunks_exact(16).zip(levels.chunks_exact_mut(16)).enumerate() {
        scales[ib] = make_qx_quants(32, x, levels);
        if scales[ib].abs() > max_abs_scale {
            max_abs_scale = scales[ib].abs();
            max_scale = scales[ib];
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        out.extend_from_slice(&[0u8; 210]);
        return;
    }
    let iscale = -128.0 / max_scale;
    let d = f16::from_f32(1.0 / iscale);
    let sc: [i8; 16] = std::array::from_fn(|ib| nearest_int(iscale * scales[ib]).min(127) as i8);
    for (j, (x, levels)) in x.chunks_exact(16).zip(levels.chunks_exact_mut(16)).enumerate() {
        let d = d.to_f32() * sc[j] as f32;
        if d == 0.0 {
            continue;
        }
        levels.iter_mut().zip(x).for_each(|(l, v)| *l = (nearest_int(v / d).clamp(-32, 31) + 32) as u8);
    }
    let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
    for (half, levels) in levels.chunks_exact(128).enumerate() {
        let (ql, qh) = (&mut ql[half * 64..half * 64 + 64], &mut qh[half * 32..half * 32 + 32]);
        for l in 0..32 {
            let [q1, q2, q3, q4] = [levels[l], levels[l + 32], levels[l + 64], levels[l + 96]];
            ql[l] = (q1 & 0x0F) | ((q3 & 0x0F) << 4);
            ql[l + 32] = (q2 & 0x0F) | ((q4 & 0x0F) << 4);
            qh[l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
    out.extend_from_slice(&ql);
    out.extend_from_slice(&qh);
    out.extend(sc.iter().map(|&s| s as u8));
    out.extend_from_slice(&d.to_le_bytes());
}

/// ggml's `make_qx_quants` with `x²` weights (`rmse_type = 1`): signed levels `-nmax..nmax`
/// (stored `+ nmax`) for `x` as `scale * l`, the best of 19 candidate scales by weighted least
/// squares. Returns the scale.
fn make_qx_quants(nmax: i32, x: &[f32], levels: &mut [u8]) -> f32 {
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let sums = |iscale: f32| {
        x.iter().fold((0.0f32, 0.0f32), |(sumlx, suml2), &v| {
            let (l, w) = (level(iscale, v) as f32, v * v);
            (sumlx + w * v * l, suml2 + w * l * l)
        })
    };
    let mut iscale = -(nmax as f32) / max;
    levels.iter_mut().zip(x).for_each(|(l, &v)| *l = (level(iscale, v) + nmax) as u8);
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            levels.iter_mut().zip(x).for_each(|(l, &v)| *l = (level(iscale, v) + nmax) as u8);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

#[cfg(test)]
mod tests {
    use super::super::dequantize;
    use super::*;

    /// Quantizing then dequantizing stays within half a step of every value (a whole step for
    /// Q4_0: its 16 levels reach `-8d` on the extreme's side but only `7d` on the other, so
    /// values beyond that are clipped; and for the k-quants, whose scales are rounded to 6 or 8
    /// bits after the levels' search), and zeros come back exactly.
    #[test]
    fn round_trips_within_half_a_step() {
        let x: Vec<f32> = (0..256).map(|i| ((i * 37 % 64) as f32 - 31.0) / 7.0 * (1.0 + (i / 32) as f32)).collect();
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
                    // 15 steps over the block's range (at most 2 amax), and 31 over 2 amax.
                    GgmlType::Q4K => 2.0 * 2.0 * amax / 15.0,
                    GgmlType::Q6K => 2.0 * 2.0 * amax / 31.0,
                    _ => amax / 128.0, // f16/bf16 rounding, far below this
                };
                for (a, b) in x.iter().zip(y) {
                    // The slack: the scale itself is rounded to f16.
                    assert!((a - b).abs() <= step * 0.5 + amax * 1e-3, "{ty} block {block}: {a} -> {b}");
                }
            }
        }
        for ty in [GgmlType::Q4_0, GgmlType::Q4K, GgmlType::Q6K] {
            let zeros = quantize(ty, &[0.0; 256]).unwrap();
            let mut y = [1.0; 256];
            dequantize(ty, &zeros, &mut y);
            assert_eq!(y, [0.0; 256], "{ty}");
        }
        assert_eq!(quantize(GgmlType::Q5K, &[0.0; 256]), None);
    }
}
