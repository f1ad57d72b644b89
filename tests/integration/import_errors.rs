//! Bad checkpoints and configs give clear errors, never panics.

use std::collections::HashMap;
use std::path::Path;

use moe_core::io::load_hub_checkpoint;
use moe_core::MoeError;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::common::*;

/// A copy of `tiny-mixtral` in a temporary folder, to be damaged by a test.
fn copy_of_tiny() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny-mixtral").join(f), dir.path().join(f)).unwrap();
    }
    dir
}

fn load_err(dir: &Path) -> MoeError {
    match load_hub_checkpoint::<Cpu>(dir, &Default::default()) {
        Ok(_) => panic!("{} loaded, but should not", dir.display()),
        Err(e) => e,
    }
}

/// Rewrites model.safetensors through `edit`, which gets every tensor as (dtype, shape, bytes).
fn rewrite(dir: &Path, edit: impl FnOnce(&mut HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>)) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: HashMap<_, _> =
        st.tensors().into_iter().map(|(n, t)| (n, (t.dtype(), t.shape().to_vec(), t.data().to_vec()))).collect();
    edit(&mut tensors);
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, (dt, shape, data))| (n.clone(), TensorView::new(*dt, shape.clone(), data).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
}

#[test]
fn missing_folder() {
    let err = load_err(Path::new("/definitely/not/a/model"));
    assert!(matches!(err, MoeError::Io { .. }), "{err}");
    assert!(err.to_string().contains("/definitely/not/a/model"), "{err}");
}

#[test]
fn missing_weights() {
    let dir = copy_of_tiny();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    assert!(matches!(load_err(dir.path()), MoeError::NoWeights { .. }));
}

#[test]
fn malformed_config_json() {
    let dir = copy_of_tiny();
    std::fs::write(dir.path().join("config.json"), "{\"hidden_size\": 64,").unwrap();
    let err = load_err(dir.path());
    assert!(matches!(err, MoeError::Json { .. }), "{err}");
    assert!(err.to_string().contains("config.json"), "{err}");

    std::fs::write(dir.path().join("config.json"), "{\"hidden_size\": \"wide\"}").unwrap();
    assert!(matches!(load_err(dir.path()), MoeError::Json { .. }));
}

#[test]
fn invalid_config_value_names_the_field() {
    let dir = copy_of_tiny();
    let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    for (from, to, field) in [
        ("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3", "num_key_value_heads"),
        ("\"num_experts_per_tok\": 2", "\"num_experts_per_tok\": 9", "num_experts_per_tok"),
        ("\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"", "hidden_act"),
        ("\"num_local_experts\": 4", "\"num_local_experts\": 0", "num_local_experts"),
    ] {
        assert!(text.contains(from), "{from}");
        std::fs::write(dir.path().join("config.json"), text.replace(from, to)).unwrap();
        let err = load_err(dir.path());
        assert!(matches!(err, MoeError::Config { .. }), "{err}");
        assert!(err.to_string().contains(field), "{err}");
    }
}

/// Absurd sizes are errors before anything is allocated for them, and an enormous context costs
/// nothing until it is used (RoPE rows are built for the positions run).
#[test]
fn absurd_config_values_are_errors_not_aborts() {
    let dir = copy_of_tiny();
    let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    for (from, to, says) in [
        ("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1000000000000", "no model is that large"),
        ("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 200000", "holds at most"),
        ("\"intermediate_size\": 128", "\"intermediate_size\": 10000000", "holds at most"),
        ("\"vocab_size\": 512", "\"vocab_size\": 18446744073709551615", "no model is that large"),
    ] {
        assert!(text.contains(from), "{from}");
        std::fs::write(dir.path().join("config.json"), text.replace(from, to)).unwrap();
        let err = load_err(dir.path()).to_string();
        assert!(err.contains(says), "{to}: {err}");
    }
    let huge = text.replace("\"max_position_embeddings\": 256", "\"max_position_embeddings\": 1000000000000");
    std::fs::write(dir.path().join("config.json"), huge).unwrap();
    let model = load_hub_checkpoint::<Cpu>(dir.path(), &Default::default()).unwrap();
    let ids = burn::tensor::Tensor::<Cpu, 2, burn::tensor::Int>::from_ints([[1, 2, 3]], &Default::default());
    assert_eq!(model.forward(ids).logits.dims(), [1, 3, 512]);
}

#[test]
fn truncated_safetensors() {
    let dir = copy_of_tiny();
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    for len in [0, 5, 100, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..len]).unwrap();
        let err = load_err(dir.path());
        assert!(matches!(err, MoeError::Safetensors { .. }), "len {len}: {err}");
        assert!(err.to_string().contains("model.safetensors"), "{err}");
    }
}

#[test]
fn header_whose_offsets_lie() {
    let dir = copy_of_tiny();
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    // Point the first tensor's data at bytes it does not own (same length, shifted).
    let mut json: serde_json::Value = serde_json::from_str(header).unwrap();
    let (name, entry) = json.as_object_mut().unwrap().iter_mut().find(|(k, _)| *k != "__metadata__").unwrap();
    let offsets = entry["data_offsets"].as_array_mut().unwrap();
    let (a, b) = (offsets[0].as_u64().unwrap(), offsets[1].as_u64().unwrap());
    offsets[0] = (a + 4).into();
    offsets[1] = (b + 4).into();
    let name = name.clone();
    let mut lying = serde_json::to_string(&json).unwrap().into_bytes();
    lying.resize(n.max(lying.len()), b' ');
    let mut file = (lying.len() as u64).to_le_bytes().to_vec();
    file.extend(lying);
    file.extend(&bytes[8 + n..]);
    std::fs::write(&path, file).unwrap();
    let err = load_err(dir.path());
    assert!(matches!(err, MoeError::Safetensors { .. }), "{err} ({name})");
}

#[test]
fn missing_and_unused_keys_are_all_listed() {
    let dir = copy_of_tiny();
    rewrite(dir.path(), |t| {
        t.remove("model.layers.1.self_attn.k_proj.weight");
        t.remove("model.layers.0.block_sparse_moe.experts.3.w2.weight");
        let extra = t["model.norm.weight"].clone();
        t.insert("model.layers.7.mystery.weight".into(), extra);
    });
    let err = load_err(dir.path());
    let text = err.to_string();
    assert!(matches!(err, MoeError::CheckpointMismatch { .. }), "{text}");
    for key in [
        "missing tensor `model.layers.1.self_attn.k_proj.weight`",
        "missing tensor `model.layers.0.block_sparse_moe.experts.3.w2.weight`",
        "unused tensor `model.layers.7.mystery.weight`",
    ] {
        assert!(text.contains(key), "{key} not in: {text}");
    }
}

#[test]
fn wrong_shapes_are_listed() {
    let dir = copy_of_tiny();
    let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    let text = text.replace("\"intermediate_size\": 128", "\"intermediate_size\": 96");
    std::fs::write(dir.path().join("config.json"), text).unwrap();
    let err = load_err(dir.path()).to_string();
    assert!(
        err.contains(
            "`model.layers.0.block_sparse_moe.experts.0.w1.weight` has shape [128, 64], the config needs [96, 64]"
        ),
        "{err}"
    );
    assert!(err.contains("model.layers.1.block_sparse_moe.experts.3.w2.weight"), "{err}");
}

#[test]
fn unsupported_dtype() {
    let dir = copy_of_tiny();
    rewrite(dir.path(), |t| {
        let entry = t.get_mut("model.norm.weight").unwrap();
        entry.0 = Dtype::I32;
    });
    let err = load_err(dir.path()).to_string();
    assert!(err.contains("model.norm.weight") && err.contains("unsupported dtype"), "{err}");
}

#[test]
fn sharded_index_naming_a_missing_shard() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("tiny-swa-bf16-sharded");
    for f in ["config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let err = load_err(dir.path());
    assert!(err.to_string().contains("model-00002-of-00002.safetensors"), "{err}");
}
