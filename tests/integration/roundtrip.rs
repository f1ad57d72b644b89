//! Export to the Hub layout and back.

use std::collections::BTreeMap;

use moe_core::io::{load_hub_checkpoint, save_hub_checkpoint, HubWeights, WeightDtype};

use crate::common::*;

fn tensor_table(dir: &std::path::Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let weights = HubWeights::open(dir).unwrap();
    weights
        .names()
        .map(|n| {
            let t = weights.read_f32(n).unwrap().unwrap();
            (n.to_string(), (t.shape, t.values))
        })
        .collect()
}

#[test]
fn export_reloads_with_identical_weights_and_hub_keys() {
    let device = Default::default();
    for name in MODELS {
        let model = load_hub_checkpoint::<Cpu>(fixture(name), &device).unwrap();
        // The bf16 fixture's values are exactly representable in bf16, so both dtypes are exact
        // for it; for the f32 fixture only the f32 export is.
        for dtype in [WeightDtype::F32, WeightDtype::BF16] {
            let out = tempfile::tempdir().unwrap();
            save_hub_checkpoint(&model, out.path(), dtype).unwrap();
            if name == "tiny-swa-bf16-sharded" || dtype == WeightDtype::F32 {
                // Same keys, shapes and values as the checkpoint transformers wrote.
                assert!(tensor_table(out.path()) == tensor_table(&fixture(name)), "{name} {dtype:?}: tensors differ");
            }
            let again = load_hub_checkpoint::<Cpu>(out.path(), &device).unwrap();
            assert_eq!(again.config(), model.config());
            let reference = Reference::load(name);
            let ids = reference.input_ids::<Cpu>(&device);
            let a = host(model.forward(ids.clone()).logits);
            let b = host(again.forward(ids).logits);
            let diff = max_abs_diff(&a, &b);
            let exact = name == "tiny-swa-bf16-sharded" || dtype == WeightDtype::F32;
            assert!(if exact { diff == 0.0 } else { diff < 0.1 }, "{name} {dtype:?}: reloaded logits differ by {diff}");
            let config: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(out.path().join("config.json")).unwrap()).unwrap();
            assert_eq!(config["architectures"][0], "MixtralForCausalLM");
            assert_eq!(config["model_type"], "mixtral");
        }
    }
}
