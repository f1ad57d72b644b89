//! Fixture access and comparison helpers.

use std::path::PathBuf;

use burn::backend::{Autodiff, NdArray};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

pub type Cpu = NdArray<f32>;
pub type CpuAutodiff = Autodiff<Cpu>;

/// The HF fixtures this project ships (see tests/fixtures/README.md).
pub const MODELS: [&str; 2] = ["tiny-mixtral", "tiny-swa-bf16-sharded"];

/// The fixtures of the other families (`make_family_fixtures.py`), each with every option of its
/// family on.
pub const FAMILY_MODELS: [&str; 4] = ["tiny-qwen2-moe", "tiny-qwen3-moe", "tiny-olmoe", "tiny-granitemoe"];

pub fn fixture(name: &str) -> PathBuf {
    manifest_dir().join("tests/fixtures").join(name)
}

/// The checkout being tested. `cargo test` sets `CARGO_MANIFEST_DIR` when it runs the binary;
/// that is preferred over the path compiled in, because a build cache shared by two checkouts
/// can hand one of them a test binary compiled in the other (cargo's freshness check does not
/// look at the absolute path), whose compiled-in path names the wrong fixtures.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// What transformers computed on a fixture model (`reference.safetensors`).
pub struct Reference {
    bytes: Vec<u8>,
}

impl Reference {
    pub fn load(model: &str) -> Self {
        let path = fixture(model).join("reference.safetensors");
        Self { bytes: std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) }
    }

    pub fn f32(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap_or_else(|_| panic!("reference has no `{name}`"));
        assert_eq!(t.dtype(), Dtype::F32, "{name}");
        let v = t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        (t.shape().to_vec(), v)
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> Vec<String> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
        names.sort();
        names
    }

    pub fn scalar(&self, name: &str) -> f32 {
        self.f32(name).1[0]
    }

    pub fn i64(&self, name: &str) -> (Vec<usize>, Vec<i64>) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), Dtype::I64, "{name}");
        let v = t.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
        (t.shape().to_vec(), v)
    }

    pub fn input_ids<B: Backend>(&self, device: &B::Device) -> Tensor<B, 2, Int> {
        let (shape, ids) = self.i64("input_ids");
        Tensor::from_data(TensorData::new(ids, shape), device)
    }
}

pub fn host<B: Backend, const N: usize>(t: Tensor<B, N>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// `|a - b| / |b|` in the L2 norm.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let diff: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (diff / norm).sqrt()
}
