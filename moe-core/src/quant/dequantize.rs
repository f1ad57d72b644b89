//! Blocks of a GGUF tensor back to f32 values, as ggml's `dequantize_row_*` compute them.
//!
//! Written here rather than taken from a crate: the crates that read GGUF (candle-core,
//! mistral.rs) bring a tensor library of their own, and these loops are ggml's reference ones,
//! checked value for value against `gguf-py`'s numpy dequantizers in the tests.

use half::{bf16, f16};

use super::GgmlType;

/// Decodes `out.len()` values (a whole number of blocks) from `bytes`.
///
/// # Panics
/// If `bytes` is not exactly the blocks of `out.len()` values of type `ty`: callers slice
/// tensors by the sizes [`GgmlType::row_bytes`] gives.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) {
    let (bs, ts) = (ty.block_size(), ty.type_size());
    assert!(
        out.len().is_multiple_of(bs) && bytes.len() == out.len() / bs * ts,
        "{} bytes are not the {ty} blocks of {} values",
        bytes.len(),
        out.len()
    );
    let blocks = bytes.chunks_exact(ts).zip(out.chunks_exact_mut(bs));
    match ty {
        GgmlType::F32 => blocks.for_each(|(b, y)| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        GgmlType::F16 => blocks.for_each(|(b, y)| y[0] = f16::from_le_bytes([b[0], b[1]]).to_f32()),
        GgmlType::Bf16 => blocks.for_each(|(b, y)| y[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        GgmlType::Q4_0 => blocks.for_each(|(b, y)| q4_0(b, y)),
        GgmlType::Q4_1 => blocks.for_each(|(b, y)| q4_1(b, y)),
        GgmlType::Q5_0 => blocks.for_each(|(b, y)| q5_0(b, y)),
        GgmlType::Q5_1 => blocks.for_each(|(b, y)| q5_1(b, y)),
        GgmlType::Q8_0 => blocks.for_each(|(b, y)| q8_0(b, y)),
        GgmlType::Q2K => blocks.for_each(|(b, y)| q2_k(b, y)),
        GgmlType::Q3K => blocks.for_each(|(b, y)| q3_k(b, y)),
        GgmlType::Q4K => blocks.for_each(|(b, y)| q4_k(b, y)),
        GgmlType::Q5K => blocks.for_each(|(b, y)| q5_k(b, y)),
        GgmlType::Q6K => blocks.for_each(|(b, y)| q6_k(b, y)),
    }
}

fn half_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// `d: f16, qs: [u8; 16]`: value `j` is the low nibble of `qs[j]`, value `j + 16` the high one.
fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    for (j, &q) in b[2..18].iter().enumerate() {
        y[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
        y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

/// `d: f16, m: f16, qs: [u8; 16]`.
fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (half_at(b, 0), half_at(b, 2));
    for (j, &q) in b[4..20].iter().enumerate() {
        y[j] = (q & 0x0F) as f32 * d + m;
        y[j + 16] = (q >> 4) as f32 * d + m;
    }
}

/// `d: f16, qh: u32 (the fifth bits), qs: [u8; 16]`.
fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for (j, &q) in b[6..22].iter().enumerate() {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = (((q & 0x0F) as u32 | h0) as i32 - 16) as f32 * d;
        y[j + 16] = (((q >> 4) as u32 | h1) as i32 - 16) as f32 * d;
    }
}

/// `d: f16, m: f16, qh: u32, qs: [u8; 16]`.
fn q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (half_at(b, 0), half_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    for (j, &q) in b[8..24].iter().enumerate() {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = ((q & 0x0F) as u32 | h0) as f32 * d + m;
        y[j + 16] = ((q >> 4) as u32 | h1) as f32 * d + m;
    }
}

/// `d: f16, qs: [i8; 32]`.
fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    for (y, &q) in y.iter_mut().zip(&b[2..34]) {
        *y = q as i8 as f32 * d;
    }
}

/// `scales: [u8; 16] (low nibble scale, high nibble minimum), qs: [u8; 64], d: f16, dmin: f16`.
fn q2_k(b: &[u8], y: &mut [f32]) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, min) = (half_at(b, 80), half_at(b, 82));
    let mut is = 0;
    for (half, q) in qs.chunks_exact(32).enumerate() {
        for j in 0..4 {
            let shift = 2 * j;
            for part in 0..2 {
                let sc = scales[is];
                is += 1;
                let (dl, ml) = (d * (sc & 0x0F) as f32, min * (sc >> 4) as f32);
                for l in 0..16 {
                    let at = half * 128 + j * 32 + part * 16 + l;
                    y[at] = dl * ((q[part * 16 + l] >> shift) & 3) as f32 - ml;
                }
            }
        }
    }
}

/// `hmask: [u8; 32], qs: [u8; 64], scales: [u8; 12] (sixteen 6-bit scales), d: f16`.
fn q3_k(b: &[u8], y: &mut [f32]) {
    let (hmask, qs, packed) = (&b[0..32], &b[32..96], &b[96..108]);
    let d_all = half_at(b, 108);
    let scales = unpack_q3_k_scales(packed);
    let (mut is, mut m) = (0, 1u8);
    for (half, q) in qs.chunks_exact(32).enumerate() {
        for j in 0..4 {
            let shift = 2 * j;
            for part in 0..2 {
                let dl = d_all * (scales[is] as i32 - 32) as f32;
                is += 1;
                for l in 0..16 {
                    let i = part * 16 + l;
                    let low = ((q[i] >> shift) & 3) as i32;
                    let high = if hmask[i] & m != 0 { 0 } else { 4 };
                    y[half * 128 + j * 32 + i] = dl * (low - high) as f32;
                }
            }
            m <<= 1;
        }
    }
}

/// Q3_K's sixteen 6-bit scales: low 4 bits in the first 8 bytes' nibbles, high 2 bits in the
/// last 4 bytes (ggml's `kmask` shuffle, spelled out per scale).
fn unpack_q3_k_scales(packed: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let low = if i < 8 { packed[i] & 0x0F } else { packed[i - 8] >> 4 };
        let high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
        *o = low | (high << 4);
    }
    out
}

/// Scale and minimum `j` (of 8) of the 12 packed bytes of Q4_K and Q5_K (ggml's
/// `get_scale_min_k4`).
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`.
fn q4_k(b: &[u8], y: &mut [f32]) {
    let (d, min) = (half_at(b, 0), half_at(b, 2));
    let (scales, qs) = (&b[4..16], &b[16..144]);
    for (k, q) in qs.chunks_exact(32).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * k, scales);
        let (sc2, m2) = scale_min_k4(2 * k + 1, scales);
        let (d1, m1, d2, m2) = (d * sc1 as f32, min * m1 as f32, d * sc2 as f32, min * m2 as f32);
        for (l, &q) in q.iter().enumerate() {
            y[k * 64 + l] = d1 * (q & 0x0F) as f32 - m1;
            y[k * 64 + 32 + l] = d2 * (q >> 4) as f32 - m2;
        }
    }
}

/// `d: f16, dmin: f16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128]`.
fn q5_k(b: &[u8], y: &mut [f32]) {
    let (d, min) = (half_at(b, 0), half_at(b, 2));
    let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
    for (k, ql) in qs.chunks_exact(32).enumerate() {
        let (u1, u2) = (1u8 << (2 * k), 2u8 << (2 * k));
        let (sc1, m1) = scale_min_k4(2 * k, scales);
        let (sc2, m2) = scale_min_k4(2 * k + 1, scales);
        let (d1, m1, d2, m2) = (d * sc1 as f32, min * m1 as f32, d * sc2 as f32, min * m2 as f32);
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            y[k * 64 + l] = d1 * ((ql[l] & 0x0F) + h1) as f32 - m1;
            y[k * 64 + 32 + l] = d2 * ((ql[l] >> 4) + h2) as f32 - m2;
        }
    }
}

/// `ql: [u8; 128] (low 4 bits), qh: [u8; 64] (high 2 bits), scales: [i8; 16], d: f16`.
fn q6_k(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 208);
    for n in 0..2 {
        let (ql, qh, sc) = (&b[n * 64..n * 64 + 64], &b[128 + n * 32..128 + n * 32 + 32], &b[192 + n * 8..200 + n * 8]);
        let y = &mut y[n * 128..n * 128 + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            let s = |i: usize| d * (sc[is + i] as i8) as f32;
            y[l] = s(0) * q1 as f32;
            y[l + 32] = s(2) * q2 as f32;
            y[l + 64] = s(4) * q3 as f32;
            y[l + 96] = s(6) * q4 as f32;
        }
    }
}
