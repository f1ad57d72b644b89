//! The element types of GGUF tensors (ggml's `ggml_type`): plain floats and quantization blocks.

use std::fmt;

/// A ggml tensor type that this crate reads: its id in the file, block size and bytes per block.
///
/// Every type stores a row of `ne[0]` values as `ne[0] / block_size` blocks of `type_size`
/// bytes; the quantized ones hold small integers and one or two f16 scales per block (the
/// "k-quants" `Q*_K` per 256-value super-block, with 6-bit sub-block scales).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// 4-bit, 32 values, one f16 scale: `(q - 8) * d`.
    Q4_0,
    /// 4-bit, 32 values, f16 scale and minimum: `q * d + m`.
    Q4_1,
    /// 5-bit, 32 values, one scale: `(q - 16) * d`.
    Q5_0,
    /// 5-bit, 32 values, scale and minimum.
    Q5_1,
    /// 8-bit, 32 values, one f16 scale: `q * d`.
    Q8_0,
    /// 2-bit k-quant (256 values, 4-bit sub-block scales and minimums).
    Q2K,
    /// 3-bit k-quant (256 values, 6-bit sub-block scales).
    Q3K,
    /// 4-bit k-quant (256 values, 6-bit sub-block scales and minimums).
    Q4K,
    /// 5-bit k-quant.
    Q5K,
    /// 6-bit k-quant (256 values, 8-bit sub-block scales).
    Q6K,
    /// bfloat16.
    Bf16,
}

impl GgmlType {
    /// Every type this crate reads.
    pub const ALL: [GgmlType; 13] = [
        Self::F32,
        Self::F16,
        Self::Q4_0,
        Self::Q4_1,
        Self::Q5_0,
        Self::Q5_1,
        Self::Q8_0,
        Self::Q2K,
        Self::Q3K,
        Self::Q4K,
        Self::Q5K,
        Self::Q6K,
        Self::Bf16,
    ];

    /// The type with ggml id `id`; `Err` carries the type's name when ggml knows it (IQ types,
    /// Q8_1, ...) and this crate does not read it.
    pub fn from_id(id: u32) -> Result<Self, Option<&'static str>> {
        Self::ALL.into_iter().find(|t| t.id() == id).ok_or_else(|| unsupported_name(id))
    }

    /// Its id in GGUF files.
    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q2K => 10,
            Self::Q3K => 11,
            Self::Q4K => 12,
            Self::Q5K => 13,
            Self::Q6K => 14,
            Self::Bf16 => 30,
        }
    }

    /// ggml's name (`q4_K`, `f16`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q4_0 => "q4_0",
            Self::Q4_1 => "q4_1",
            Self::Q5_0 => "q5_0",
            Self::Q5_1 => "q5_1",
            Self::Q8_0 => "q8_0",
            Self::Q2K => "q2_K",
            Self::Q3K => "q3_K",
            Self::Q4K => "q4_K",
            Self::Q5K => "q5_K",
            Self::Q6K => "q6_K",
            Self::Bf16 => "bf16",
        }
    }

    /// Values per block.
    pub fn block_size(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::Bf16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 => 32,
            Self::Q2K | Self::Q3K | Self::Q4K | Self::Q5K | Self::Q6K => 256,
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::Bf16 => 2,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q2K => 84,
            Self::Q3K => 110,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
        }
    }

    /// Bits stored per value, scales included (4.5 for Q4_0).
    pub fn bits_per_value(self) -> f64 {
        (self.type_size() * 8) as f64 / self.block_size() as f64
    }

    /// Bytes of a row of `n` values; `None` when `n` is not a whole number of blocks.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        if !n.is_multiple_of(self.block_size()) {
            return None;
        }
        (n / self.block_size()).checked_mul(self.type_size())
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for GgmlType {
    type Err = String;

    /// A type by ggml's name, case-insensitive (`q4_k`, `Q8_0`, `bf16`).
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|t| t.name().eq_ignore_ascii_case(s)).ok_or_else(|| {
            let names: Vec<_> = Self::ALL.iter().map(|t| t.name()).collect();
            format!("unknown type {s:?} (one of {})", names.join(", "))
        })
    }
}

/// Names of the ggml types this crate does not read, for error messages.
fn unsupported_name(id: u32) -> Option<&'static str> {
    Some(match id {
        9 => "q8_1",
        15 => "q8_K",
        16 => "iq2_xxs",
        17 => "iq2_xs",
        18 => "iq3_xxs",
        19 => "iq1_s",
        20 => "iq4_nl",
        21 => "iq3_s",
        22 => "iq2_s",
        23 => "iq4_xs",
        24 => "i8",
        25 => "i16",
        26 => "i32",
        27 => "i64",
        28 => "f64",
        29 => "iq1_m",
        34 => "tq1_0",
        35 => "tq2_0",
        39 => "mxfp4",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_round_trip() {
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Ok(t));
            assert_eq!(t.name().to_uppercase().parse::<GgmlType>(), Ok(t));
        }
        assert_eq!(GgmlType::from_id(16), Err(Some("iq2_xxs")));
        assert_eq!(GgmlType::from_id(1000), Err(None));
        assert_eq!(GgmlType::Q4_0.bits_per_value(), 4.5);
        assert_eq!(GgmlType::Q4K.row_bytes(512), Some(288));
        assert_eq!(GgmlType::Q4K.row_bytes(100), None);
    }
}
