use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use crate::error::{MoeError, Result};

/// The tensors of a Hub-layout checkpoint folder, memory-mapped, decoded one at a time.
///
/// Reads `model.safetensors.index.json` (sharded) or `model.safetensors` (single file). Each
/// shard's header is validated up front by the `safetensors` crate: a truncated file, a header
/// whose offsets overlap, leave holes or run past the end of the file, are errors here, before
/// any tensor is read.
pub struct HubWeights {
    dir: PathBuf,
    shards: Vec<Shard>,
    /// Tensor name -> index into `shards`.
    locations: BTreeMap<String, usize>,
    /// Keys of the key table that the file stores under another name or stacked with other
    /// experts ([`Self::with_keys_of`]); the tensors they stand for are then not listed.
    pub(super) aliases: BTreeMap<String, Alias>,
}

/// Where a key of the key table is, in a file that does not store it under that key.
#[derive(Debug, Clone)]
pub(super) enum Alias {
    /// The whole tensor of another name.
    Renamed(String),
    /// Rows `first..first + count` of a tensor seen as `[rows, last dimension]`.
    Rows { tensor: String, first: usize, count: usize },
}

struct Shard {
    path: PathBuf,
    mmap: Mmap,
    /// Where the data section starts (8-byte length + JSON header).
    data_start: usize,
    tensors: HashMap<String, TensorInfo>,
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

/// A tensor's shape and its values decoded to f32, row-major.
pub struct HostTensor {
    /// Outermost dimension first.
    pub shape: Vec<usize>,
    /// Row-major.
    pub values: Vec<f32>,
}

impl HubWeights {
    /// Opens `model.safetensors` or the shards of `model.safetensors.index.json` in `dir` (memory-mapped).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let index_path = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let mut weights =
            Self { dir: dir.clone(), shards: Vec::new(), locations: BTreeMap::new(), aliases: BTreeMap::new() };
        if index_path.is_file() {
            let text = std::fs::read_to_string(&index_path).map_err(|e| MoeError::io(&index_path, e))?;
            let index: ShardIndex =
                serde_json::from_str(&text).map_err(|source| MoeError::Json { path: index_path.clone(), source })?;
            let mut shard_of_file: HashMap<String, usize> = HashMap::new();
            for (name, file) in &index.weight_map {
                if file.contains('/') || file.contains('\\') {
                    return Err(MoeError::Safetensors {
                        path: index_path.clone(),
                        reason: format!("shard name {file:?} of `{name}` must be a file name in the same folder"),
                    });
                }
                let shard = match shard_of_file.get(file) {
                    Some(&i) => i,
                    None => {
                        weights.shards.push(Shard::open(dir.join(file))?);
                        shard_of_file.insert(file.clone(), weights.shards.len() - 1);
                        weights.shards.len() - 1
                    }
                };
                if !weights.shards[shard].tensors.contains_key(name) {
                    return Err(MoeError::Safetensors {
                        path: weights.shards[shard].path.clone(),
                        reason: format!("the index maps `{name}` to this shard, but the shard has no such tensor"),
                    });
                }
                weights.locations.insert(name.clone(), shard);
            }
        } else if single.is_file() {
            let shard = Shard::open(single)?;
            weights.locations = shard.tensors.keys().map(|k| (k.clone(), 0)).collect();
            weights.shards.push(shard);
        } else {
            return Err(MoeError::NoWeights { dir });
        }
        Ok(weights)
    }

    /// The model folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every tensor name in the file, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.locations.keys().map(String::as_str)
    }

    /// Shape of a tensor of the file, without reading its data.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        let shard = &self.shards[*self.locations.get(name)?];
        Some(&shard.tensors[name].shape)
    }

    /// Decodes one tensor to f32 (from F32, F16, BF16 or F64 on disk): a tensor of the file,
    /// or a key that [`Self::with_keys_of`] found under another name or stacked.
    pub fn read_f32(&self, name: &str) -> Result<Option<HostTensor>> {
        match self.aliases.get(name) {
            None => self.read_rows(name, None),
            Some(Alias::Renamed(tensor)) => self.read_rows(tensor, None),
            Some(Alias::Rows { tensor, first, count }) => self.read_rows(tensor, Some((*first, *count))),
        }
    }

    /// A tensor of the file, or `rows = (first, count)` of it seen as `[rows, last dimension]`.
    fn read_rows(&self, name: &str, rows: Option<(usize, usize)>) -> Result<Option<HostTensor>> {
        let Some(&i) = self.locations.get(name) else {
            return Ok(None);
        };
        let shard = &self.shards[i];
        let info = &shard.tensors[name];
        let (start, end) = info.data_offsets;
        let (start, end, shape) = match rows {
            None => (start, end, info.shape.clone()),
            Some((first, count)) => {
                // The header was validated: offsets match shape and dtype, so the rows lie inside.
                let cols = info.shape.last().copied().unwrap_or(1);
                let row_bytes = cols * info.dtype.bitsize() / 8;
                let at = start + first * row_bytes;
                (at, at + count * row_bytes, vec![count, cols])
            }
        };
        if end > info.data_offsets.1 {
            return Err(MoeError::Safetensors {
                path: shard.path.clone(),
                reason: format!("rows past the end of tensor `{name}`"),
            });
        }
        let bytes = &shard.mmap[shard.data_start + start..shard.data_start + end];
        let values = match info.dtype {
            Dtype::F32 => decode(bytes, f32::from_le_bytes),
            Dtype::F16 => decode(bytes, |b| half::f16::from_le_bytes(b).to_f32()),
            Dtype::BF16 => decode(bytes, |b| half::bf16::from_le_bytes(b).to_f32()),
            Dtype::F64 => decode(bytes, |b| f64::from_le_bytes(b) as f32),
            other => {
                return Err(MoeError::UnsupportedDtype {
                    path: shard.path.clone(),
                    name: name.to_string(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        Ok(Some(HostTensor { shape, values }))
    }
}

impl super::CheckpointTensors for HubWeights {
    fn location(&self) -> &Path {
        &self.dir
    }

    fn names(&self) -> Vec<String> {
        let stand_ins: std::collections::HashSet<&str> = self
            .aliases
            .values()
            .map(|a| match a {
                Alias::Renamed(t) | Alias::Rows { tensor: t, .. } => t.as_str(),
            })
            .collect();
        let own = self.locations.keys().filter(|k| !stand_ins.contains(k.as_str())).cloned();
        own.chain(self.aliases.keys().cloned()).collect()
    }

    /// Safetensors stores at least 16 bits per parameter (F8 is not read).
    fn max_params(&self) -> u64 {
        self.shards.iter().map(|s| (s.mmap.len() - s.data_start) as u64 / 2).sum()
    }

    fn read_f32(&self, name: &str) -> Result<Option<HostTensor>> {
        HubWeights::read_f32(self, name)
    }
}

fn decode<const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
    bytes.chunks_exact(N).map(|c| f(c.try_into().expect("chunks_exact yields N bytes"))).collect()
}

impl Shard {
    fn open(path: PathBuf) -> Result<Self> {
        let file = File::open(&path).map_err(|e| MoeError::io(&path, e))?;
        let invalid = |reason: String| MoeError::Safetensors { path: path.clone(), reason };
        let len = file.metadata().map_err(|e| MoeError::io(&path, e))?.len();
        if len < 8 {
            return Err(invalid(format!("the file is {len} bytes, too short for a header")));
        }
        // SAFETY: the map is read-only and lives as long as `Shard`; like every reader of
        // memory-mapped checkpoints we assume the file is not truncated by another process
        // while it is open.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| MoeError::io(&path, e))?;
        let (header_len, metadata): (usize, Metadata) =
            SafeTensors::read_metadata(&mmap).map_err(|e| invalid(describe(&e)))?;
        let tensors = metadata.tensors().into_iter().map(|(name, info)| (name, info.clone())).collect();
        Ok(Self { path, mmap, data_start: 8 + header_len, tensors })
    }
}

/// The `safetensors` crate's errors, in words a user can act on.
fn describe(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::MetadataIncompleteBuffer => {
            "the data section's length differs from what the header describes (truncated or padded file)".into()
        }
        E::InvalidOffset(name) => format!("tensor `{name}` has offsets that overlap, leave a gap or run past the data"),
        E::TensorInvalidInfo => "a tensor's offsets do not match its shape and dtype".into(),
        E::InvalidHeaderLength | E::HeaderTooLarge | E::HeaderTooSmall => {
            "the header length is larger than the file".into()
        }
        other => other.to_string(),
    }
}
