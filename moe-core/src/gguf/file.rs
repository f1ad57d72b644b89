//! Reading a GGUF file: header, metadata and tensor directory, every size and offset checked
//! against the file before anything is allocated or sliced by it.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::{GgmlType, GgufValue};
use crate::error::{MoeError, Result};

const MAGIC: &[u8; 4] = b"GGUF";
/// Alignment of the tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;
/// Arrays of arrays nest at most this deep (a hostile file could otherwise recurse us out of stack).
const MAX_NESTING: usize = 4;

/// A GGUF file (versions 2 and 3), memory-mapped; tensor data is read in place.
pub struct GgufFile {
    path: PathBuf,
    bytes: Bytes,
    version: u32,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<GgufTensorInfo>,
    by_name: HashMap<String, usize>,
    data_start: usize,
}

/// One entry of the tensor directory.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    /// `blk.0.attn_q.weight`.
    pub name: String,
    /// ggml order: `dims[0]` is the row length (the fastest-moving index).
    pub dims: Vec<usize>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: usize,
    /// Bytes of data.
    pub n_bytes: usize,
}

impl GgufTensorInfo {
    /// Shape with the outermost dimension first, as PyTorch and safetensors write it (the
    /// reverse of [`Self::dims`]): `[out, in]` for a linear weight.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }

    /// Number of values.
    pub fn n_elements(&self) -> usize {
        self.dims.iter().product()
    }
}

/// The file's bytes: mapped, or owned (files built in memory, tests).
enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Self::Mapped(m) => m,
            Self::Owned(v) => v,
        }
    }
}

impl GgufFile {
    /// Opens and validates `path` (memory-mapped).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| MoeError::io(&path, e))?;
        // SAFETY: read-only map that lives as long as `GgufFile`; as every reader of mapped
        // model files, we assume no other process truncates the file while it is open.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| MoeError::io(&path, e))?;
        Self::parse(path, Bytes::Mapped(mmap))
    }

    /// Validates a GGUF file held in memory; `name` stands for its path in errors.
    pub fn from_bytes(bytes: Vec<u8>, name: impl Into<PathBuf>) -> Result<Self> {
        Self::parse(name.into(), Bytes::Owned(bytes))
    }

    fn parse(path: PathBuf, bytes: Bytes) -> Result<Self> {
        let header = Header::read(&bytes).map_err(|reason| MoeError::Gguf { path: path.clone(), reason })?;
        let by_name = header.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Ok(Self {
            path,
            bytes,
            version: header.version,
            metadata: header.metadata,
            tensors: header.tensors,
            by_name,
            data_start: header.data_start,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Every metadata key and value, sorted by key.
    pub fn metadata(&self) -> &BTreeMap<String, GgufValue> {
        &self.metadata
    }

    /// One metadata value.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// The tensor directory, in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    /// A tensor's directory entry.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// Bytes of all tensor data.
    pub fn data_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.n_bytes as u64).sum()
    }

    /// Where a tensor's data starts in the file.
    pub fn tensor_start(&self, info: &GgufTensorInfo) -> usize {
        self.data_start + info.offset
    }

    /// A tensor's data, in place (validated when the file was opened).
    pub fn tensor_data(&self, info: &GgufTensorInfo) -> &[u8] {
        let start = self.data_start + info.offset;
        &self.bytes[start..start + info.n_bytes]
    }

    /// An error about this file.
    pub(crate) fn error(&self, reason: impl Into<String>) -> MoeError {
        MoeError::Gguf { path: self.path.clone(), reason: reason.into() }
    }
}

impl crate::quant::BlockSource for GgufFile {
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// What [`Header::read`] found.
struct Header {
    version: u32,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<GgufTensorInfo>,
    data_start: usize,
}

impl Header {
    fn read(bytes: &[u8]) -> std::result::Result<Self, String> {
        let mut r = Reader { bytes, at: 0 };
        if bytes.len() < 4 || &bytes[..4] != MAGIC {
            return Err("not a GGUF file (it does not start with \"GGUF\")".into());
        }
        r.at = 4;
        let version = r.u32("the version")?;
        match version {
            2 | 3 => {}
            1 => return Err("GGUF version 1 is not supported (convert the file with a current llama.cpp)".into()),
            v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
                return Err("big-endian GGUF files are not supported".into());
            }
            v => return Err(format!("unknown GGUF version {v} (this reader knows 2 and 3)")),
        }
        let n_tensors = r.u64("the tensor count")?;
        let n_kv = r.u64("the metadata count")?;
        // Each metadata entry takes at least 13 bytes and each tensor entry 28: counts beyond
        // what the file could hold are lies, found before anything is allocated for them.
        r.check_count(n_kv, 13, "metadata entries")?;
        r.check_count(n_tensors, 28, "tensors")?;

        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = r.string(&format!("the key of metadata entry {i}"))?;
            let value = r.value(&key, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(format!("metadata key `{key}` appears twice"));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(GgufValue::U32(a)) if a.is_power_of_two() => u64::from(*a),
            Some(other) => return Err(format!("general.alignment is {other}, not a power of two (u32)")),
        };

        let mut tensors = Vec::new();
        let mut names = std::collections::HashSet::new();
        for i in 0..n_tensors {
            let name = r.string(&format!("the name of tensor {i}"))?;
            let n_dims = r.u32(&format!("the rank of `{name}`"))?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(format!("tensor `{name}` has {n_dims} dimensions (ggml allows 1 to {MAX_DIMS})"));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                let d = r.u64(&format!("the shape of `{name}`"))?;
                dims.push(usize::try_from(d).ok().filter(|&d| d > 0).ok_or_else(|| {
                    format!("tensor `{name}` has a dimension of {d} (every dimension must be at least 1)")
                })?);
            }
            let type_id = r.u32(&format!("the type of `{name}`"))?;
            let ggml_type = GgmlType::from_id(type_id).map_err(|known| match known {
                Some(t) => format!("tensor `{name}` is of type {t}, which this reader does not support"),
                None => format!("tensor `{name}` has unknown ggml type {type_id}"),
            })?;
            let offset = r.u64(&format!("the offset of `{name}`"))?;
            let n_elements = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            let n_bytes = n_elements.and_then(|n| {
                let rows = n / dims[0];
                ggml_type.row_bytes(dims[0])?.checked_mul(rows)
            });
            let Some(n_bytes) = n_bytes else {
                return Err(format!(
                    "tensor `{name}` of shape {dims:?} is not a whole number of {ggml_type} blocks ({} values) per row, \
                     or too large",
                    ggml_type.block_size()
                ));
            };
            if offset % alignment != 0 {
                return Err(format!(
                    "tensor `{name}` starts at offset {offset}, not a multiple of the alignment {alignment}"
                ));
            }
            if !names.insert(name.clone()) {
                return Err(format!("tensor `{name}` appears twice"));
            }
            tensors.push(GgufTensorInfo {
                name,
                dims,
                ggml_type,
                offset: usize::try_from(offset).unwrap_or(usize::MAX),
                n_bytes,
            });
        }
        let data_start = r.at.next_multiple_of(alignment as usize);
        let data_len = bytes.len().saturating_sub(data_start);
        for t in &tensors {
            if t.offset.checked_add(t.n_bytes).is_none_or(|end| end > data_len) {
                return Err(format!(
                    "tensor `{}` ({} bytes at offset {}) runs past the end of the file ({data_len} bytes of data): \
                     truncated or corrupt",
                    t.name, t.n_bytes, t.offset
                ));
            }
        }
        Ok(Self { version, metadata, tensors, data_start })
    }
}

/// A bounds-checked little-endian cursor.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: u64, what: &str) -> std::result::Result<&[u8], String> {
        let left = self.bytes.len() - self.at;
        match usize::try_from(n) {
            Ok(n) if n <= left => {
                let out = &self.bytes[self.at..self.at + n];
                self.at += n;
                Ok(out)
            }
            _ => Err(format!(
                "{what} at byte {} needs {n} bytes, the file has {left} left: truncated or corrupt",
                self.at
            )),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> std::result::Result<[u8; N], String> {
        Ok(self.take(N as u64, what)?.try_into().expect("took N bytes"))
    }

    fn u32(&mut self, what: &str) -> std::result::Result<u32, String> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> std::result::Result<u64, String> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// `count` items of at least `min_bytes` each must fit in what is left of the file.
    fn check_count(&self, count: u64, min_bytes: u64, what: &str) -> std::result::Result<(), String> {
        let left = (self.bytes.len() - self.at) as u64;
        if count.checked_mul(min_bytes).is_none_or(|n| n > left) {
            return Err(format!(
                "the header claims {count} {what}, more than the file's {left} remaining bytes can hold: truncated or \
                 corrupt"
            ));
        }
        Ok(())
    }

    fn string(&mut self, what: &str) -> std::result::Result<String, String> {
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not valid UTF-8"))
    }

    fn value(&mut self, key: &str, depth: usize) -> std::result::Result<GgufValue, String> {
        let type_id = self.u32(&format!("the type of `{key}`"))?;
        self.value_of(type_id, key, depth)
    }

    fn value_of(&mut self, type_id: u32, key: &str, depth: usize) -> std::result::Result<GgufValue, String> {
        let what = format!("the value of `{key}`");
        Ok(match type_id {
            0 => GgufValue::U8(self.array::<1>(&what)?[0]),
            1 => GgufValue::I8(self.array::<1>(&what)?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(&what)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(&what)?)),
            4 => GgufValue::U32(u32::from_le_bytes(self.array(&what)?)),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(&what)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(&what)?)),
            7 => match self.array::<1>(&what)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(format!("{what} is a bool stored as {b} (must be 0 or 1)")),
            },
            8 => GgufValue::String(self.string(&what)?),
            9 => {
                if depth >= MAX_NESTING {
                    return Err(format!("`{key}` nests arrays more than {MAX_NESTING} deep"));
                }
                let elem = self.u32(&what)?;
                let len = self.u64(&what)?;
                let min = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8..=12 => 8,
                    other => return Err(format!("`{key}` is an array of unknown type {other}")),
                };
                self.check_count(len, min, &format!("elements in `{key}`"))?;
                let mut items = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    items.push(self.value_of(elem, key, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(u64::from_le_bytes(self.array(&what)?)),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(&what)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(&what)?)),
            other => return Err(format!("`{key}` has unknown value type {other}")),
        })
    }
}
