//! Writing GGUF (version 3) files, streaming one tensor at a time.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::file::DEFAULT_ALIGNMENT;
use super::{GgmlType, GgufValue};
use crate::error::{MoeError, Result};
use crate::fs::write_atomic_with;

/// A tensor to write: its directory entry; the data comes later, in this order.
#[derive(Debug, Clone)]
pub struct TensorPlan {
    /// Its name in the file.
    pub name: String,
    /// ggml order (row length first), as [`super::GgufTensorInfo::dims`].
    pub dims: Vec<usize>,
    /// Element type.
    pub ggml_type: GgmlType,
}

impl TensorPlan {
    fn n_bytes(&self) -> usize {
        let rows: usize = self.dims[1..].iter().product();
        self.ggml_type.row_bytes(self.dims[0]).expect("planned rows are whole blocks") * rows
    }
}

/// Writes `metadata` and the tensors of `plan` to `path`; `data(i)` returns the encoded bytes
/// of tensor `i` (called once per tensor, in order, so only one is in memory at a time).
///
/// The file is written under a temporary name and renamed over `path` at the end: an
/// interrupted export leaves no half-written model behind.
pub fn write_gguf(
    path: &Path,
    metadata: &[(String, GgufValue)],
    plan: &[TensorPlan],
    data: impl FnMut(usize) -> Result<Vec<u8>>,
) -> Result<()> {
    write_atomic_with(path, |tmp| write_to(tmp, metadata, plan, data))
}

fn write_to(
    path: &Path,
    metadata: &[(String, GgufValue)],
    plan: &[TensorPlan],
    mut data: impl FnMut(usize) -> Result<Vec<u8>>,
) -> Result<()> {
    let io = |e| MoeError::io(path, e);
    let file = File::create(path).map_err(io)?;
    let mut w = Counting { inner: BufWriter::new(file), written: 0 };
    w.write_all(b"GGUF").map_err(io)?;
    w.write_all(&3u32.to_le_bytes()).map_err(io)?;
    w.write_all(&(plan.len() as u64).to_le_bytes()).map_err(io)?;
    w.write_all(&(metadata.len() as u64).to_le_bytes()).map_err(io)?;
    for (key, value) in metadata {
        write_string(&mut w, key).map_err(io)?;
        w.write_all(&value.type_id().to_le_bytes()).map_err(io)?;
        write_value(&mut w, value).map_err(io)?;
    }
    let align = DEFAULT_ALIGNMENT as usize;
    let mut offset = 0usize;
    for t in plan {
        write_string(&mut w, &t.name).map_err(io)?;
        w.write_all(&(t.dims.len() as u32).to_le_bytes()).map_err(io)?;
        for &d in &t.dims {
            w.write_all(&(d as u64).to_le_bytes()).map_err(io)?;
        }
        w.write_all(&t.ggml_type.id().to_le_bytes()).map_err(io)?;
        w.write_all(&(offset as u64).to_le_bytes()).map_err(io)?;
        offset = (offset + t.n_bytes()).next_multiple_of(align);
    }
    pad(&mut w, align).map_err(io)?;
    for (i, t) in plan.iter().enumerate() {
        let bytes = data(i)?;
        if bytes.len() != t.n_bytes() {
            return Err(MoeError::Unsupported(format!(
                "tensor `{}`: {} bytes of data for a {} tensor of {:?} ({} expected)",
                t.name,
                bytes.len(),
                t.ggml_type,
                t.dims,
                t.n_bytes()
            )));
        }
        w.write_all(&bytes).map_err(io)?;
        pad(&mut w, align).map_err(io)?;
    }
    w.inner.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)
}

struct Counting<W> {
    inner: W,
    written: usize,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn pad<W: Write>(w: &mut Counting<W>, align: usize) -> std::io::Result<()> {
    let n = w.written.next_multiple_of(align) - w.written;
    w.write_all(&vec![0u8; n])
}

fn write_string(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn write_value(w: &mut impl Write, value: &GgufValue) -> std::io::Result<()> {
    match value {
        GgufValue::U8(v) => w.write_all(&v.to_le_bytes()),
        GgufValue::I8(v) => w.write_all(&v.to_le_bytes()),
        GgufValue::U16(v) => w.write_all(&v.to_le_bytes()),
        GgufValue::I16(v) => w.write_all(&v.to_le_bytes()),
        GgufValue::U32(v) => w.write_all(&v.to_le_bytes()),
        GgufValue::I32(v) => w.write_all(&v.to_le_bytes()),
        GgufValue::F32(v) => w.write_all(&v.to_le_bytes()),
        GgufValue::Bool(v) => w.write_all(&[u8::from(*v)]),
        GgufValue::String(s) => write_string(w, s),
        GgufValue::Array(items) => {
            // An empty array is written as one of strings; GGUF arrays hold one element type.
            let elem = items.first().map_or(8, GgufValue::type_id);
            if items.iter().any(|v| v.type_id() != elem) {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "a GGUF array mixes value types"));
            }
            w.write_all(&elem.to_le_bytes())?;
            w.write_all(&(items.len() as u64).to_le_bytes())?;
            items.iter().try_for_each(|v| write_value(w, v))
        }
        GgufValue::U64(v) => w.write_all(&v.to_le_bytes()),
        GgufValue::I64(v) => w.write_all(&v.to_le_bytes()),
        GgufValue::F64(v) => w.write_all(&v.to_le_bytes()),
    }
}
