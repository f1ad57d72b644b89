use std::fmt;
use std::sync::Arc;

use super::{dequantize, GgmlType};

/// Bytes that outlive the matrices cut from them: a memory-mapped model file.
pub trait BlockSource: Send + Sync {
    /// All of them.
    fn bytes(&self) -> &[u8];
}

/// A matrix of quantized rows, borrowed: what the kernels read.
#[derive(Debug, Clone, Copy)]
pub struct QuantRows<'a> {
    /// Block type.
    pub ty: GgmlType,
    /// The blocks, row after row.
    pub data: &'a [u8],
    /// Rows `N` (outputs).
    pub rows: usize,
    /// Values per row `K` (inputs), a multiple of the block size.
    pub cols: usize,
}

/// A weight matrix kept in GGUF blocks, `[N, K]` in ggml's layout (row `n`: output `n`'s `K`
/// input weights), read in place from the memory-mapped file or held in memory. It may be
/// several parts stacked along the outputs (an expert's gate and up projections, fused).
#[derive(Clone)]
pub struct QuantMatrix {
    parts: Vec<Part>,
    cols: usize,
}

#[derive(Clone)]
struct Part {
    ty: GgmlType,
    rows: usize,
    bytes: Bytes,
}

#[derive(Clone)]
enum Bytes {
    /// `len` bytes at `start` of a shared source (a tensor, or an expert's slice of a merged
    /// one, in a memory-mapped file).
    Shared {
        source: Arc<dyn BlockSource>,
        start: usize,
        len: usize,
    },
    Owned(Arc<Vec<u8>>),
}

impl QuantMatrix {
    /// `rows` rows of `cols` values of type `ty` at byte `start` of `source`, read in place.
    ///
    /// # Panics
    /// If they do not fit in `source` or the rows are not whole blocks.
    pub fn shared(source: Arc<dyn BlockSource>, start: usize, ty: GgmlType, rows: usize, cols: usize) -> Self {
        let len = ty.row_bytes(cols).expect("rows are whole blocks") * rows;
        assert!(start + len <= source.bytes().len(), "the rows run past their source");
        Self { parts: vec![Part { ty, rows, bytes: Bytes::Shared { source, start, len } }], cols }
    }

    /// `rows` rows of `cols` values of type `ty`, held in memory.
    ///
    /// # Panics
    /// If `bytes` is not exactly that.
    pub fn owned(ty: GgmlType, bytes: Vec<u8>, rows: usize, cols: usize) -> Self {
        assert_eq!(Some(bytes.len()), ty.row_bytes(cols).map(|r| r * rows), "not {rows} rows of {cols} {ty} values");
        Self { parts: vec![Part { ty, rows, bytes: Bytes::Owned(Arc::new(bytes)) }], cols }
    }

    /// `self` with `other`'s rows after its own (outputs side by side); `None` if the numbers
    /// of inputs differ.
    pub fn stack(mut self, other: QuantMatrix) -> Option<Self> {
        (self.cols == other.cols).then(|| {
            self.parts.extend(other.parts);
            self
        })
    }

    /// Outputs `N`.
    pub fn rows(&self) -> usize {
        self.parts.iter().map(|p| p.rows).sum()
    }

    /// Inputs `K`.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes of blocks.
    pub fn n_bytes(&self) -> usize {
        self.parts.iter().map(|p| p.data().len()).sum()
    }

    /// The types of the parts.
    pub fn types(&self) -> impl Iterator<Item = GgmlType> + '_ {
        self.parts.iter().map(|p| p.ty)
    }

    /// The parts, as the kernel reads them, in output order.
    pub fn parts(&self) -> impl Iterator<Item = QuantRows<'_>> {
        self.parts.iter().map(|p| QuantRows { ty: p.ty, data: p.data(), rows: p.rows, cols: self.cols })
    }

    /// Rows `rows` (in that order, repeats allowed) decoded, `[rows.len(), K]` row-major.
    ///
    /// # Panics
    /// If a row is out of range.
    pub fn dequantize_rows(&self, rows: impl IntoIterator<Item = usize>) -> Vec<f32> {
        let k = self.cols;
        let mut out = Vec::new();
        for r in rows {
            let (mut first, mut part) = (r, None);
            for p in self.parts() {
                if first < p.rows {
                    part = Some(p);
                    break;
                }
                first -= p.rows;
            }
            let part = part.unwrap_or_else(|| panic!("row {r} of a {}-row matrix", self.rows()));
            let row_bytes = part.data.len() / part.rows;
            let start = out.len();
            out.resize(start + k, 0.0);
            dequantize(part.ty, &part.data[first * row_bytes..(first + 1) * row_bytes], &mut out[start..]);
        }
        out
    }

    /// The values as a Burn `Linear` weight, `[K, N]` row-major (transposed).
    pub fn dequantize_transposed(&self) -> Vec<f32> {
        let (k, n) = (self.cols, self.rows());
        let mut out = vec![0.0; k * n];
        let mut row = vec![0.0; k];
        let mut r = 0;
        for part in self.parts() {
            let row_bytes = part.data.len() / part.rows.max(1);
            for blocks in part.data.chunks_exact(row_bytes.max(1)) {
                dequantize(part.ty, blocks, &mut row);
                for (i, v) in row.iter().enumerate() {
                    out[i * n + r] = *v;
                }
                r += 1;
            }
        }
        out
    }
}

impl Part {
    fn data(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Shared { source, start, len } => &source.bytes()[*start..*start + *len],
            Bytes::Owned(v) => v,
        }
    }
}

impl fmt::Debug for QuantMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let types: Vec<_> = self.types().map(|t| t.name()).collect();
        write!(f, "QuantMatrix([{}, {}], {})", self.rows(), self.cols, types.join("+"))
    }
}
