//! GGUF: files llama.cpp's tools wrote run here as llama.cpp runs them; models exported here
//! read back with the same logits; damaged files are errors, never panics.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::{Int, Tensor};
use moe_core::gguf::{
    dequantize, load_gguf, load_gguf_file, mixtral_config, quantize, save_gguf, write_gguf, GgmlType, GgufExport,
    GgufFile, GgufValue, GgufWeights, TensorPlan,
};
use moe_core::io::{load_hub_checkpoint, load_hub_weights, CheckpointTensors, QuantizeOnLoad};
use moe_core::model::Mixtral;
use moe_core::MoeError;
use moe_infer::{generate, GenerationConfig, SamplingConfig, TextTokenizer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::common::*;

fn gguf_fixture(name: &str) -> PathBuf {
    fixture("gguf").join(name)
}

/// What llama.cpp computed on the fixture files (`make_gguf_fixtures.py`).
fn llama_cpp() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(gguf_fixture("llama_cpp.json")).unwrap()).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// `[1, S]` ids.
fn tokens(ids: &[u32]) -> Tensor<Cpu, 2, Int> {
    let ids: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
    Tensor::<Cpu, 1, Int>::from_ints(ids.as_slice(), &Default::default()).reshape([1, ids.len()])
}

/// Logits of the last position of `prompt`.
fn last_logits(model: &Mixtral<Cpu>, prompt: &[u32]) -> Vec<f32> {
    let logits = model.forward(tokens(prompt)).logits;
    let v = model.config().vocab_size;
    host(logits.narrow(1, prompt.len() - 1, 1).reshape([v]))
}

fn greedy(model: &Mixtral<Cpu>, prompt: &[u32], n: usize) -> Vec<u32> {
    let config = GenerationConfig {
        max_new_tokens: n,
        sampling: SamplingConfig { temperature: 0.0, ..Default::default() },
        stop_tokens: vec![],
    };
    let out = generate(model, &[prompt.to_vec()], &config, |_, _| true).unwrap();
    out.sequences[0][prompt.len()..].to_vec()
}

/// Every quantized block ggml's own `ggml_quantize_chunk` wrote decodes to what gguf-py's
/// dequantizer computes, and the types written here encode exactly as ggml encodes them.
#[test]
fn every_type_decodes_as_ggml_does() {
    let file = GgufFile::open(gguf_fixture("quant-types.gguf")).unwrap();
    let read = |name: &str| {
        let info = file.tensor(name).unwrap_or_else(|| panic!("no {name}"));
        let mut out = vec![0.0; info.n_elements()];
        dequantize(info.ggml_type, file.tensor_data(info), &mut out);
        out
    };
    let source = read("source");
    let mut seen = 0;
    for info in file.tensors().iter().filter(|t| t.ggml_type != GgmlType::F32) {
        let (got, want) = (read(&info.name), read(&format!("{}.ref", info.name)));
        assert_eq!(max_abs_diff(&got, &want), 0.0, "{}", info.name);
        if let Some(bytes) = quantize(info.ggml_type, &source) {
            assert!(bytes == file.tensor_data(info), "{}: encoded differently from ggml", info.name);
        }
        seen += 1;
    }
    assert_eq!(seen, GgmlType::ALL.len() - 1, "a fixture per type but f32");
}

/// llama.cpp-quantized files (Q8_0, Q4_0, and Q4_K_M with Q6_K) load and compute what llama.cpp
/// computes on them, up to llama.cpp quantizing its activations (which this crate does not).
/// Greedy tokens agree wherever llama.cpp's choice is not a near-tie.
#[test]
fn llama_cpp_files_run_as_llama_cpp_runs_them() {
    let expected = llama_cpp();
    let prompt = ids(&expected["prompt"]);
    for (model, kind, tolerance) in
        [("tiny-mixtral", "q8_0", 0.05), ("tiny-mixtral", "q4_0", 0.1), ("tiny-k", "q4_k_m", 0.1)]
    {
        let lc = &expected[model][kind];
        let loaded = load_gguf::<Cpu>(gguf_fixture(&format!("{model}-{kind}.gguf")), &Default::default()).unwrap();
        let diff = max_abs_diff(&last_logits(&loaded, &prompt), &floats(&lc["last_logits"]));
        println!("{model} {kind}: max |logit - llama.cpp's| = {diff}");
        assert!(diff < tolerance, "{model} {kind}: logits differ from llama.cpp's by {diff}");
        let (want, margins) = (ids(&lc["greedy"]), floats(&lc["margins"]));
        // Each of llama.cpp's greedy steps, with its tokens as the prefix: the same choice
        // wherever its margin over the runner-up exceeds twice the logit difference.
        let sequence: Vec<u32> = prompt.iter().chain(&want).copied().collect();
        let (mut checked, v) = (0, loaded.config().vocab_size);
        let all = host(loaded.forward(tokens(&sequence)).logits);
        for (i, (&token, &margin)) in want.iter().zip(&margins).enumerate() {
            let row = &all[(prompt.len() - 1 + i) * v..][..v];
            let ours = (0..v).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap() as u32;
            if margin > 2.0 * diff {
                assert_eq!(ours, token, "{model} {kind}: step {i} (llama.cpp's margin {margin}, difference {diff})");
                checked += 1;
            }
        }
        assert!(checked * 2 >= want.len(), "{model} {kind}: only {checked} steps were clear choices");
        // And KV-cached generation follows the same path up to the first near-tie.
        let sure = margins.iter().take_while(|&&m| m > 2.0 * diff).count();
        assert_eq!(greedy(&loaded, &prompt, want.len())[..sure], want[..sure], "{model} {kind}: generated");
        println!("{model} {kind}: {checked}/{} greedy steps checked, {sure} generated", want.len());
    }
}

/// Quantized projections stay in their blocks: on burn-flex the model multiplies with them and
/// never materialises float weights; on ndarray they are dequantized when first used. Both
/// compute the same function up to flex rounding the activations of short inputs to 8 bits as
/// llama.cpp does: the logits differ from ndarray's by the same order as llama.cpp's own (at
/// most twice as much; on these files 0.6-1.1x).
#[test]
fn quantized_weights_stay_quantized_on_flex() {
    use moe_core::backend::Flex;
    let expected = llama_cpp();
    let prompt = ids(&expected["prompt"]);
    for name in ["tiny-mixtral-q4_0.gguf", "tiny-mixtral-q8_0.gguf", "tiny-k-q4_k_m.gguf"] {
        let on_cpu = load_gguf::<Cpu>(gguf_fixture(name), &Default::default()).unwrap();
        let on_flex = load_gguf::<Flex>(gguf_fixture(name), &Default::default()).unwrap();
        let ids: Vec<i64> = prompt.iter().map(|&t| t as i64).collect();
        let input = Tensor::<Flex, 1, Int>::from_ints(ids.as_slice(), &Default::default()).reshape([1, ids.len()]);
        let v = on_cpu.config().vocab_size;
        let flex_logits: Vec<f32> = on_flex.forward(input).logits.into_data().iter::<f32>().collect();
        let cpu_logits = host(on_cpu.forward(tokens(&prompt)).logits);
        let last = |l: &[f32]| l[l.len() - v..].to_vec();
        let diff = max_abs_diff(&last(&flex_logits), &last(&cpu_logits));
        let (model, kind) = name.trim_end_matches(".gguf").rsplit_once('-').unwrap();
        let llama_diff = max_abs_diff(&floats(&expected[model][kind]["last_logits"]), &last(&cpu_logits));
        println!("{name}: flex vs ndarray {diff}, llama.cpp vs ndarray {llama_diff}");
        assert!(diff <= 2.0 * llama_diff, "{name}: flex (blocks) and ndarray (dequantized) differ by {diff}");
        let attn = &on_flex.layers[0].self_attn;
        let ffn = &on_flex.layers[0].moe().unwrap().experts.ffns[0];
        for p in [&attn.q_proj, &attn.k_proj, &attn.o_proj, &ffn.gate_up, &ffn.down] {
            assert!(p.blocks().is_some(), "{name}: a projection lost its blocks");
        }
        assert!(on_flex.embed_tokens.blocks().is_some(), "{name}: the embedding lost its blocks");
    }
}

/// A quantized embedding (token_embd in Q4_0) looks up the rows its lazy table would hold,
/// repeats and the last id included, without materialising the table.
#[test]
fn a_quantized_embedding_looks_up_the_rows_of_its_table() {
    let model = load_gguf::<Cpu>(gguf_fixture("tiny-mixtral-q4_0.gguf"), &Default::default()).unwrap();
    let embedding = &model.embed_tokens;
    assert!(embedding.blocks().is_some(), "token_embd stays in blocks");
    let v = model.config().vocab_size as u32;
    let ids = [3, 0, v - 1, 7, 7, 1];
    let rows = host(embedding.forward(tokens(&ids)));
    assert!(embedding.blocks().is_some(), "a lookup does not materialise the table");
    let table = host(embedding.weight.val());
    assert!(embedding.blocks().is_none(), "reading the weight does");
    let d = model.config().d_model;
    let want: Vec<f32> = ids.iter().flat_map(|&id| table[id as usize * d..][..d].to_vec()).collect();
    assert_eq!(rows, want);
}

/// Exported as F32 and read back: the same model (config and logits, to transformers' within
/// 1e-5); as F16, within f16 rounding.
#[test]
fn exported_files_read_back_as_the_same_model() {
    let device = Default::default();
    for name in MODELS {
        let model = load_hub_checkpoint::<Cpu>(fixture(name), &device).unwrap();
        let reference = Reference::load(name);
        let ids = reference.input_ids::<Cpu>(&device);
        let want = host(model.forward(ids.clone()).logits);
        for (ty, tolerance) in [(GgmlType::F32, 0.0), (GgmlType::F16, 2e-2)] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("model.gguf");
            save_gguf(&model, &path, &GgufExport::new(ty)).unwrap();
            // No tokenizer given: the file says so as llama.cpp does (it refuses files without
            // the key).
            let model_key = GgufFile::open(&path).unwrap().get("tokenizer.ggml.model").cloned();
            assert_eq!(model_key, Some(GgufValue::String("none".into())), "{name} {ty}");
            let again = load_gguf::<Cpu>(&path, &device).unwrap();
            assert_eq!(again.config(), model.config(), "{name} {ty}");
            let got = host(again.forward(ids.clone()).logits);
            let diff = max_abs_diff(&got, &want);
            assert!(diff <= tolerance, "{name} {ty}: logits differ by {diff}");
            if ty == GgmlType::F32 {
                let hf = reference.f32("logits").1;
                assert!(max_abs_diff(&got, &hf) < 1e-5, "{name}: logits vs transformers");
            }
        }
    }
}

/// Quantized here (Q8_0, Q4_0, Q4_K; experts only), the logits move from the f32 model's by no
/// more than llama.cpp's own quantization of the same weights moves its logits (within 10%).
#[test]
fn quantization_error_is_no_worse_than_llama_cpps() {
    let device = Default::default();
    let expected = llama_cpp();
    let prompt = ids(&expected["prompt"]);
    // tiny-k has rows of 256, which k-quants need; its f16 file holds exactly the values
    // llama.cpp quantized.
    let tiny_k = gguf_fixture("tiny-k-f16.gguf");
    for (name, model, cases) in [
        (
            "tiny-mixtral",
            load_hub_checkpoint::<Cpu>(fixture("tiny-mixtral"), &device).unwrap(),
            vec![(GgmlType::Q8_0, "q8_0"), (GgmlType::Q4_0, "q4_0")],
        ),
        ("tiny-k", load_gguf::<Cpu>(&tiny_k, &device).unwrap(), vec![(GgmlType::Q4K, "q4_k")]),
    ] {
        let f32_logits = last_logits(&model, &prompt);
        // llama.cpp's f32 run of the same weights agrees with this crate's.
        let lc_f32 = floats(&expected[name]["f32_last_logits"]);
        let f32_diff = max_abs_diff(&f32_logits, &lc_f32);
        println!("{name} f32: max |logit - llama.cpp's| = {f32_diff}");
        // llama.cpp keeps its KV cache in f16: differences of ~1e-3 are its rounding.
        assert!(f32_diff < 1e-2, "{name} f32: this crate and llama.cpp disagree by {f32_diff}");
        for (ty, kind) in cases {
            let llama_error = expected[name][kind]["max_abs_error_vs_f32"].as_f64().unwrap() as f32;
            let dir = tempfile::tempdir().unwrap();
            for (options, label) in
                [(GgufExport::new(ty), "all"), (GgufExport::experts_only(ty, GgmlType::F16), "experts only")]
            {
                let path = dir.path().join("q.gguf");
                save_gguf(&model, &path, &options).unwrap();
                let q = load_gguf::<Cpu>(&path, &device).unwrap();
                let error = max_abs_diff(&last_logits(&q, &prompt), &f32_logits);
                println!("{name} {kind} {label}: max |logit error| {error:.4} (llama.cpp {llama_error:.4})");
                // The blocks are ggml's own (`every_type_decodes_as_ggml_does`); llama.cpp then
                // rounds the activations to 8 bits and this crate (here, on ndarray) does not,
                // which moves the largest error either way by a few percent.
                let bound = 1.1 * llama_error;
                assert!(error > 0.0 && error <= bound, "{kind} {label}: error {error} vs llama.cpp's {llama_error}");
            }
        }
    }
}

/// Quantized as it loads (`QuantizeOnLoad`, `--quantize`): the blocks the GGUF export writes,
/// so the same logits as the exported file (with the embedding, which loading leaves in floats,
/// put back); experts only keeps attention in floats; float types are refused.
#[test]
fn quantizing_on_load_equals_quantizing_to_a_file() {
    let device = Default::default();
    let prompt = ids(&llama_cpp()["prompt"]);
    let path = gguf_fixture("tiny-k-f16.gguf");
    let file = Arc::new(GgufFile::open(&path).unwrap());
    let config = mixtral_config(&file).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let model = load_gguf::<Cpu>(&path, &device).unwrap();
    for (ty, experts_only) in [(GgmlType::Q4K, false), (GgmlType::Q8_0, true)] {
        let source = GgufWeights::new(file.clone(), &config).unwrap();
        let (weights, options) = match experts_only {
            false => (QuantizeOnLoad::new(source, ty).unwrap(), GgufExport::new(ty)),
            true => (QuantizeOnLoad::experts_only(source, ty).unwrap(), GgufExport::experts_only(ty, GgmlType::F32)),
        };
        let on_load = load_hub_weights::<Cpu>(&config, &weights, &device).unwrap();
        let attn = &on_load.layers[0].self_attn.q_proj;
        assert_eq!(attn.blocks().is_some(), !experts_only, "{ty}: attention in blocks");
        assert!(on_load.layers[0].moe().unwrap().experts.ffns[0].gate_up.blocks().is_some(), "{ty}: experts");
        let file_path = dir.path().join("q.gguf");
        save_gguf(&model, &file_path, &options).unwrap();
        let mut from_file = load_gguf::<Cpu>(&file_path, &device).unwrap();
        // The export quantizes the embedding too; loading keeps it in floats (a lookup).
        from_file.embed_tokens = model.embed_tokens.clone();
        let diff = max_abs_diff(&last_logits(&on_load, &prompt), &last_logits(&from_file, &prompt));
        assert!(diff <= 1e-5, "{ty} (experts only: {experts_only}): on load vs file {diff}");
    }
    let source = || GgufWeights::new(file.clone(), &config).unwrap();
    for ty in [GgmlType::F16, GgmlType::Q5K] {
        let err = QuantizeOnLoad::new(source(), ty).err().expect("refused").to_string();
        assert!(err.contains("block types are"), "{ty}: {err}");
    }
}

// --- damaged files --------------------------------------------------------------------------

fn gguf_err(bytes: Vec<u8>) -> String {
    let file = match GgufFile::from_bytes(bytes, "damaged.gguf") {
        Ok(file) => file,
        Err(e) => return e.to_string(),
    };
    match load_gguf_file::<Cpu>(Arc::new(file), &Default::default()) {
        Ok(_) => panic!("the damaged file loaded"),
        Err(e) => e.to_string(),
    }
}

/// Byte offset of the directory entry of tensor `name` (just after its name).
fn entry_of(bytes: &[u8], name: &str) -> usize {
    let needle = [&(name.len() as u64).to_le_bytes()[..], name.as_bytes()].concat();
    bytes.windows(needle.len()).position(|w| w == needle).unwrap() + needle.len()
}

/// Rewrites a GGUF file with edited metadata (the tensors copied as they are).
fn with_metadata(path: &Path, edit: impl FnOnce(&mut Vec<(String, GgufValue)>)) -> Vec<u8> {
    let file = GgufFile::open(path).unwrap();
    let mut metadata: Vec<_> = file.metadata().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    edit(&mut metadata);
    let plan: Vec<_> = file
        .tensors()
        .iter()
        .map(|t| TensorPlan { name: t.name.clone(), dims: t.dims.clone(), ggml_type: t.ggml_type })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("edited.gguf");
    write_gguf(&out, &metadata, &plan, |i| Ok(file.tensor_data(&file.tensors()[i]).to_vec())).unwrap();
    std::fs::read(out).unwrap()
}

fn set(metadata: &mut Vec<(String, GgufValue)>, key: &str, value: GgufValue) {
    metadata.retain(|(k, _)| k != key);
    metadata.push((key.to_string(), value));
}

#[test]
fn damaged_files_are_errors_naming_the_problem() {
    let path = gguf_fixture("tiny-mixtral-q4_0.gguf");
    let good = std::fs::read(&path).unwrap();

    let err = gguf_err(good[..good.len() - 100].to_vec());
    assert!(err.contains("runs past the end of the file") && err.contains("truncated"), "{err}");
    let err = gguf_err(good[..3000].to_vec());
    assert!(err.contains("truncated"), "{err}");
    assert!(gguf_err(b"PK\x03\x04 not a gguf".to_vec()).contains("not a GGUF file"));

    // A tensor offset that lies.
    let mut bytes = good.clone();
    let at = entry_of(&bytes, "blk.1.attn_v.weight") + 4 + 2 * 8 + 4;
    bytes[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let err = gguf_err(bytes);
    assert!(err.contains("blk.1.attn_v.weight") && err.contains("runs past"), "{err}");

    // Types this crate does not read, known to ggml and not.
    for (id, says) in [(16u32, "iq2_xxs, which this reader does not support"), (200, "unknown ggml type 200")] {
        let mut bytes = good.clone();
        let at = entry_of(&bytes, "blk.0.attn_q.weight") + 4 + 2 * 8;
        bytes[at..at + 4].copy_from_slice(&id.to_le_bytes());
        let err = gguf_err(bytes);
        assert!(err.contains("blk.0.attn_q.weight") && err.contains(says), "{err}");
    }

    // Metadata: a vocabulary that disagrees with the embedding, absurd and missing sizes.
    let err = gguf_err(with_metadata(&path, |m| {
        set(m, "tokenizer.ggml.tokens", GgufValue::Array(vec![GgufValue::String("a".into()); 10]))
    }));
    assert!(err.contains("vocabulary") && err.contains("10 tokens"), "{err}");
    let err = gguf_err(with_metadata(&path, |m| set(m, "llama.block_count", GgufValue::U64(4_000_000_000))));
    assert!(err.contains("parameters"), "{err}");
    let err = gguf_err(with_metadata(&path, |m| set(m, "llama.feed_forward_length", GgufValue::U64(u64::MAX))));
    assert!(err.contains("no model is that large"), "{err}");
    let err = gguf_err(with_metadata(&path, |m| set(m, "llama.embedding_length", GgufValue::U32(0))));
    assert!(err.contains("hidden_size") && err.contains("at least 1"), "{err}");
    let err = gguf_err(with_metadata(&path, |m| m.retain(|(k, _)| k != "llama.expert_count")));
    assert!(err.contains("expert_count") && err.contains("routers"), "{err}");
    let err = gguf_err(with_metadata(&path, |m| set(m, "llama.attention.head_count", GgufValue::String("4".into()))));
    assert!(err.contains("llama.attention.head_count") && err.contains("not a non-negative integer"), "{err}");
    let err = gguf_err(with_metadata(&path, |m| set(m, "general.architecture", GgufValue::String("bert".into()))));
    assert!(err.contains("architecture `bert`"), "{err}");

    // An enormous context costs nothing up front: the file loads and runs.
    let huge = with_metadata(&path, |m| set(m, "llama.context_length", GgufValue::U64(1 << 40)));
    let file = GgufFile::from_bytes(huge, "huge-context.gguf").unwrap();
    let model = load_gguf_file::<Cpu>(Arc::new(file), &Default::default()).unwrap();
    assert_eq!(model.config().max_seq_len, 1 << 40);
    assert_eq!(last_logits(&model, &[1, 2, 3]).len(), 512);
}

/// Thousands of damaged files, in-process: bytes flipped, sizes and offsets overwritten with
/// extreme values, files cut short. Every one is loaded or refused; none panics or aborts.
#[test]
fn fuzzed_files_never_panic() {
    let good = std::fs::read(gguf_fixture("tiny-mixtral-q4_0.gguf")).unwrap();
    // Damage lands in the header (metadata and tensor directory), half of it in the directory.
    let header_end = good.len() - GgufFile::open(gguf_fixture("tiny-mixtral-q4_0.gguf")).unwrap().data_bytes() as usize;
    let directory = entry_of(&good, "token_embd.weight") - 40;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let somewhere = |rng: &mut ChaCha8Rng, room: usize| {
        if rng.random() {
            rng.random_range(directory..header_end - room)
        } else {
            rng.random_range(0..header_end - room)
        }
    };
    let (mut loaded, mut refused) = (0, 0);
    for case in 0..3000 {
        let mut bytes = good.clone();
        match case % 4 {
            0 => {
                for _ in 0..rng.random_range(1..8) {
                    let at = somewhere(&mut rng, 0);
                    bytes[at] = rng.random();
                }
            }
            1 => {
                let at = somewhere(&mut rng, 8);
                let extreme = [0u64, 1, u32::MAX as u64, u64::MAX, 1 << 62, rng.random()][rng.random_range(0..6)];
                bytes[at..at + 8].copy_from_slice(&extreme.to_le_bytes());
            }
            2 => bytes.truncate(rng.random_range(0..good.len())),
            _ => {
                let at = somewhere(&mut rng, 4);
                bytes[at..at + 4].copy_from_slice(&rng.random_range(0u32..40).to_le_bytes());
            }
        }
        let outcome = std::panic::catch_unwind(|| {
            let file = Arc::new(GgufFile::from_bytes(bytes, "fuzzed.gguf")?);
            let config = mixtral_config(&file)?;
            let weights = GgufWeights::new(file.clone(), &config)?;
            for name in weights.names() {
                weights.read_f32(&name)?;
            }
            let model = load_gguf_file::<Cpu>(file, &Default::default())?;
            model.forward(tokens(&[1, 2])); // quantized blocks are decoded when first used
            Ok(())
        });
        match outcome {
            Ok(Ok(())) => loaded += 1,
            Ok(Err(MoeError::Gguf { .. } | MoeError::Config { .. } | MoeError::CheckpointMismatch { .. })) => {
                refused += 1
            }
            Ok(Err(other)) => panic!("case {case}: unexpected error kind: {other}"),
            Err(_) => panic!("case {case}: the loader panicked"),
        }
    }
    println!("fuzzed GGUF: {loaded} loaded, {refused} refused");
    assert!(refused > 1000 && loaded > 10, "{loaded} loaded, {refused} refused");
}

/// The same for safetensors checkpoints: damaged headers, cut files, through the whole loader.
#[test]
fn fuzzed_safetensors_never_panic() {
    let good = std::fs::read(fixture("tiny-mixtral").join("model.safetensors")).unwrap();
    let header_end = 8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("tiny-mixtral").join("config.json"), dir.path().join("config.json")).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let (mut loaded, mut refused) = (0, 0);
    for case in 0..600 {
        let mut bytes = good.clone();
        match case % 3 {
            0 => {
                for _ in 0..rng.random_range(1..6) {
                    let at = rng.random_range(0..header_end);
                    bytes[at] = rng.random_range(b' '..=b'~');
                }
            }
            1 => bytes[..8].copy_from_slice(&[0u64, 3, u64::MAX, 1 << 40, rng.random()][case % 5].to_le_bytes()),
            _ => bytes.truncate(rng.random_range(0..good.len())),
        }
        std::fs::write(dir.path().join("model.safetensors"), &bytes).unwrap();
        match std::panic::catch_unwind(|| load_hub_checkpoint::<Cpu>(dir.path(), &Default::default())) {
            Ok(Ok(_)) => loaded += 1,
            Ok(Err(_)) => refused += 1,
            Err(_) => panic!("case {case}: the loader panicked"),
        }
    }
    println!("fuzzed safetensors: {loaded} loaded, {refused} refused");
    assert!(refused > 300, "{loaded} loaded, {refused} refused");
}

// --- tokenizers -----------------------------------------------------------------------------

/// The tokenizer in a llama.cpp file's metadata encodes as llama.cpp encodes (BOS, the space in
/// front, merges by score, byte fallback) and decodes back to the text.
#[test]
fn the_files_tokenizer_encodes_as_llama_cpp() {
    let file = GgufFile::open(gguf_fixture("tiny-mixtral-q8_0.gguf")).unwrap();
    let tokenizer = TextTokenizer::from_gguf(&file).unwrap();
    assert_eq!((tokenizer.bos_id(), tokenizer.eos_id()), (Some(1), Some(2)));
    let expected = llama_cpp();
    for (text, want) in expected["tokenized"].as_object().unwrap() {
        let ids = tokenizer.encode(text, true).unwrap();
        assert_eq!(ids, self::ids(want), "{text:?}");
        assert_eq!(tokenizer.decode(&ids, true).unwrap(), *text);
    }
}

/// A Mistral-style tokenizer.json written into a GGUF file (as `moe-infer quantize` does) and
/// read back encodes every case as the original does.
#[test]
fn a_tokenizer_json_survives_the_trip_through_gguf() {
    let original = TextTokenizer::from_file(fixture("tokenizer").join("tokenizer.json")).unwrap();
    let model = load_hub_checkpoint::<Cpu>(fixture("tiny-mixtral"), &Default::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("with-tokenizer.gguf");
    let options = GgufExport::new(GgmlType::Q8_0).with_metadata(original.to_gguf_metadata().unwrap());
    save_gguf(&model, &path, &options).unwrap();
    let read = TextTokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer").join("cases.json")).unwrap()).unwrap();
    for case in cases["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(read.encode(text, true).unwrap(), self::ids(&case["ids"]), "{text:?}");
        assert_eq!(read.decode(&self::ids(&case["ids"]), true).unwrap(), case["decoded"].as_str().unwrap());
    }
}
