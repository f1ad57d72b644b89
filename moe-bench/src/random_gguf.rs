//! `moe-bench random-gguf`: a random-weight Mixtral-shaped GGUF file, written tensor by tensor,
//! so that a full-size model (an 8x7B's 32 layers) can be loaded, timed and compared with
//! llama.cpp on a machine that could never hold it in floats, and without a download.
//!
//! `../shared/peers/make_mixtral_gguf.py` makes the same kind of file, but it writes the f16
//! model first (93 GB for 8x7B) and quantizes that; here each tensor is drawn and quantized on
//! its own, so the disk and memory needed are the quantized file's and one tensor's.

use std::path::{Path, PathBuf};

use moe_core::config::MixtralConfig;
use moe_core::gguf::GgufValue;
use moe_core::io::{parse_hub_key, CheckpointTensors, HostTensor, HubKeys};
use moe_core::model::ParamId;
use moe_core::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Hub-layout tensors of random weights for a model of shape `config`: matrices with
/// independent entries of mean 0 and standard deviation `1/sqrt(fan_in)` (0.02 for the
/// embedding), norm weights 1. Each tensor's values depend only on the seed and its name.
pub struct RandomTensors {
    config: MixtralConfig,
    seed: u64,
    location: PathBuf,
}

impl RandomTensors {
    pub fn new(config: MixtralConfig, seed: u64) -> Self {
        Self { config, seed, location: PathBuf::from("<random weights>") }
    }
}

impl CheckpointTensors for RandomTensors {
    fn location(&self) -> &Path {
        &self.location
    }

    fn names(&self) -> Vec<String> {
        ParamId::all(&self.config).into_iter().flat_map(|p| p.keys(self.config.family)).collect()
    }

    fn max_params(&self) -> u64 {
        u64::MAX
    }

    fn read_f32(&self, name: &str) -> Result<Option<HostTensor>> {
        let Some((param, _)) = parse_hub_key(name) else {
            return Ok(None);
        };
        let shape = param.hub_shape(&self.config);
        let n: usize = shape.iter().product();
        let values = match (param, shape.len()) {
            (_, 1) => vec![1.0; n],
            (ParamId::Embedding, _) => normal(n, 0.02, self.seed_of(name)),
            _ => normal(n, 1.0 / (shape[1] as f32).sqrt(), self.seed_of(name)),
        };
        Ok(Some(HostTensor { shape, values }))
    }
}

impl RandomTensors {
    /// A stream per tensor (FNV-1a of the name, mixed with the seed).
    fn seed_of(&self, name: &str) -> u64 {
        name.bytes().fold(0xcbf2_9ce4_8422_2325 ^ self.seed, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
    }
}

/// `n` values of mean 0 and standard deviation `std`, drawn on every core (an 8x7B expert tensor
/// is 470M values). The sum of four uniforms, rescaled: a bell shape cheap to draw, which is
/// all random benchmark weights need.
fn normal(n: usize, std: f32, seed: u64) -> Vec<f32> {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 20;
    let mut out = vec![0.0f32; n];
    // Four uniforms on [0, 1) sum to mean 2, variance 4/12.
    let scale = std * 3f32.sqrt();
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(i, chunk)| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(i as u64));
        for v in chunk {
            let s: f32 = (0..4).map(|_| rng.random::<f32>()).sum();
            *v = (s - 2.0) * scale;
        }
    });
    out
}

/// A llama.cpp `llama` vocabulary of `v` tokens (`<unk> <s> </s>`, the 256 byte tokens, then
/// `▁t0`, `▁t1`, ...), as `make_mixtral_gguf.py` writes it: enough for `moe-infer generate` and
/// llama.cpp to tokenize and print. The special ids come from the config (1 and 2).
pub fn synthetic_vocab(v: usize) -> Vec<(String, GgufValue)> {
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>"].map(String::from).into();
    tokens.extend((0..256).map(|b| format!("<0x{b:02X}>")));
    let first = tokens.len();
    tokens.extend((0..v.saturating_sub(first)).map(|i| format!("\u{2581}t{i}")));
    tokens.truncate(v);
    // llama.cpp's token types: 2 unknown, 3 control, 6 byte, 1 normal.
    let types = (0..tokens.len()).map(|i| match i {
        0 => 2,
        1 | 2 => 3,
        i if i < first => 6,
        _ => 1,
    });
    vec![
        ("tokenizer.ggml.model".into(), GgufValue::String("llama".into())),
        ("tokenizer.ggml.scores".into(), GgufValue::Array(vec![GgufValue::F32(0.0); tokens.len()])),
        ("tokenizer.ggml.token_type".into(), GgufValue::Array(types.map(GgufValue::I32).collect())),
        ("tokenizer.ggml.tokens".into(), GgufValue::Array(tokens.into_iter().map(GgufValue::String).collect())),
    ]
}
