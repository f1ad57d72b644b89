//! The `moe-infer` binary as a user runs it (this test file spawns the binary and links no
//! backend code of its own).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// This crate's folder in the checkout being tested. The runtime value first: a build cache
/// shared by two checkouts can hand this one a binary compiled in the other (see
/// tests/integration/common.rs).
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

fn fixture(name: &str) -> PathBuf {
    manifest_dir().join("../tests/fixtures").join(name)
}

fn moe_infer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moe-infer")).args(args).output().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn reference(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name).join("reference.json")).unwrap()).unwrap()
}

#[test]
fn greedy_generate_reproduces_transformers() {
    for name in ["tiny-mixtral", "tiny-swa-bf16-sharded"] {
        let want: Vec<u64> =
            reference(name)["gen_tokens"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        let prompt = want[..8].iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        let model = fixture(name);
        let new = (want.len() - 8).to_string();
        let out = moe_infer(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt-ids",
            &prompt,
            "--max-new-tokens",
            &new,
            "--temperature",
            "0",
            "--json",
        ]);
        let got = json(&out);
        let ids: Vec<u64> = got["token_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert_eq!(ids, want, "{name}");
        assert!(got["decode_tokens_per_sec"].as_f64().unwrap() > 0.0);
        assert!(got["prompt_tokens_per_sec"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn score_matches_transformers_and_dumps_logits() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["tiny-mixtral", "tiny-swa-bf16-sharded"] {
        let bytes = std::fs::read(fixture(name).join("reference.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let ids = st.tensor("input_ids").unwrap();
        let s = ids.shape()[1];
        let ids: Vec<i64> = ids.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
        let lines: Vec<String> =
            ids.chunks(s).map(|r| r.iter().map(i64::to_string).collect::<Vec<_>>().join(" ")).collect();
        let ids_file = dir.path().join(format!("{name}.txt"));
        std::fs::write(&ids_file, lines.join("\n")).unwrap();
        let dump = dir.path().join(format!("{name}.safetensors"));
        let out = moe_infer(&[
            "score",
            "--model",
            fixture(name).to_str().unwrap(),
            "--token-ids",
            ids_file.to_str().unwrap(),
            "--dump-logits",
            dump.to_str().unwrap(),
            "--json",
        ]);
        let got = json(&out);
        let r = reference(name);
        for key in ["lm_loss", "aux_loss"] {
            let ours = if key == "lm_loss" { &got["mean_nll"] } else { &got["aux_loss"] };
            assert!((ours.as_f64().unwrap() - r[key].as_f64().unwrap()).abs() <= 1e-5, "{name} {key}");
        }
        assert!((got["perplexity"].as_f64().unwrap() - r["lm_loss"].as_f64().unwrap().exp()).abs() < 1e-2);

        let dumped = std::fs::read(&dump).unwrap();
        let dumped = safetensors::SafeTensors::deserialize(&dumped).unwrap();
        let f32s = |t: safetensors::tensor::TensorView| -> Vec<f32> {
            t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
        };
        for key in ["logits", "router_logits"] {
            let (a, b) = (dumped.tensor(key).unwrap(), st.tensor(key).unwrap());
            assert_eq!(a.shape(), b.shape(), "{key}");
            let diff = f32s(a).iter().zip(f32s(b)).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
            assert!(diff <= 1e-4, "{name} {key}: {diff}");
        }
    }
}

#[test]
fn bad_input_exits_nonzero_with_a_message() {
    let tiny = fixture("tiny-mixtral");
    let tiny = tiny.to_str().unwrap();
    let cases: [(&[&str], &str); 8] = [
        (&["generate", "--model", "/no/such/model", "--prompt-ids", "1"], "/no/such/model"),
        (&["generate", "--model", tiny, "--prompt", "hi"], "needs a tokenizer"),
        (&["generate", "--model", tiny, "--prompt", "hi", "--tokenizer", "/no/tok.json"], "/no/tok.json"),
        (&["inspect", "--model", "/no/such/model"], "/no/such/model"),
        (&["generate", "--model", tiny, "--prompt-ids", "1,999"], "token id 999"),
        (&["generate", "--model", tiny, "--prompt-ids", "1,x"], "\"x\" is not a token id"),
        (&["generate", "--model", tiny, "--prompt-ids", "1", "-n", "300"], "context"),
        (&["score", "--model", tiny, "--token-ids", "/no/such/file"], "/no/such/file"),
    ];
    for (args, needle) in cases {
        let out = moe_infer(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    let out = moe_infer(&["generate", "--model", tiny, "--prompt-ids", "1", "--backend", "tpu"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown backend `tpu`"));
}

fn tokenizer_file() -> String {
    fixture("tokenizer").join("tokenizer.json").to_str().unwrap().to_string()
}

#[test]
fn text_prompts_stream_text_and_json_has_text() {
    let tiny = fixture("tiny-mixtral");
    let tok = tokenizer_file();
    let base = ["generate", "--model", tiny.to_str().unwrap(), "--tokenizer", &tok, "-n", "12", "--temperature", "0"];
    let mut args = base.to_vec();
    args.extend(["--prompt", "Return a new list", "--json"]);
    let got = json(&moe_infer(&args));
    let ids = got["token_ids"].as_array().unwrap();
    assert_eq!(ids[0].as_u64(), Some(1), "BOS first");
    assert!(ids.len() > 5);
    let text = got["text"].as_str().unwrap().to_string();

    // Streaming prints the prompt and the same continuation.
    let mut args = base.to_vec();
    args.extend(["--prompt", "Return a new list"]);
    let out = moe_infer(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim_end_matches('\n'), format!("Return a new list{text}"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tok/s"));

    // Prompts of different lengths in one call; each equals its own single run.
    let mut args = base.to_vec();
    args.extend(["--prompt", "Return a new list", "--prompt", "héllo", "--json"]);
    let both = json(&moe_infer(&args));
    assert_eq!(both["text"][0].as_str().unwrap(), text);
    assert_eq!(both["token_ids"][0], got["token_ids"]);
}

#[test]
fn inspect_reports_counts_and_memory() {
    let tiny = fixture("tiny-mixtral");
    let got = json(&moe_infer(&["inspect", "--model", tiny.to_str().unwrap(), "--json"]));
    let total = got["params_total"].as_u64().unwrap();
    let active = got["params_active_per_token"].as_u64().unwrap();
    assert!(active < total && active > 0);
    assert_eq!(got["memory"]["f32"]["weights_bytes"].as_u64().unwrap(), 4 * total);
    assert_eq!(got["memory"]["bf16"]["weights_bytes"].as_u64().unwrap(), 2 * total);
    // The weights on disk are f32: the safetensors payload is about 4 bytes per parameter.
    let on_disk = std::fs::metadata(tiny.join("model.safetensors")).unwrap().len();
    assert!(on_disk >= 4 * total && on_disk < 4 * total + 64 * 1024, "{on_disk} vs {total}");

    // The same shape as a dense Mistral: one FFN, every parameter active, said so in words.
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(tiny.join("config.json")).unwrap().replace("\"mixtral\"", "\"mistral\"");
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    let model = dir.path().to_str().unwrap();
    let dense = json(&moe_infer(&["inspect", "--model", model, "--json"]));
    assert_eq!(dense["params_total"], dense["params_active_per_token"]);
    let out = moe_infer(&["inspect", "--model", model]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("dense FFN d_ff 128") && !text.contains("experts"), "{text}");
}

/// `moe-infer ARGS` with `input` typed on its standard input (an interactive chat).
fn interactive(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_moe-infer"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn chat_answers_each_turn_until_exit() {
    let tiny = fixture("tiny-mixtral");
    let tok = tokenizer_file();
    let out = interactive(
        &["chat", "--model", tiny.to_str().unwrap(), "--tokenizer", &tok, "-n", "8", "--temperature", "0"],
        b"hello there\nand again\n/exit\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.matches("tok/s").count(), 2, "two answers: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().filter(|l| l.starts_with("> ")).count() >= 3, "three prompts: {stdout}");
}

/// The fixture's `input_ids` as a `--token-ids` file, and the reference safetensors bytes.
fn token_ids_file(dir: &std::path::Path, name: &str) -> (PathBuf, Vec<u8>) {
    let bytes = std::fs::read(fixture(name).join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ids = st.tensor("input_ids").unwrap();
    let s = ids.shape()[1];
    let ids: Vec<i64> = ids.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    let lines: Vec<String> =
        ids.chunks(s).map(|r| r.iter().map(i64::to_string).collect::<Vec<_>>().join(" ")).collect();
    let path = dir.join(format!("{name}.ids.txt"));
    std::fs::write(&path, lines.join("\n")).unwrap();
    (path, bytes)
}

fn f32s(t: safetensors::tensor::TensorView) -> Vec<f32> {
    t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

/// `--backend flex` in f32 matches transformers like ndarray does; in f16 and bf16 (weights,
/// activations and matmuls in the half type, norms/softmaxes/losses in f32) it stays within
/// the half type's rounding of the f32 reference. Backends without the dtype refuse it.
#[test]
fn flex_backend_in_f32_f16_and_bf16() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["tiny-mixtral", "tiny-swa-bf16-sharded"] {
        let (ids_file, reference_bytes) = token_ids_file(dir.path(), name);
        let st = safetensors::SafeTensors::deserialize(&reference_bytes).unwrap();
        let want_logits = f32s(st.tensor("logits").unwrap());
        let r = reference(name);
        // (dtype, |lm_loss - HF|, median over positions of |logits - HF| / |HF logits|)
        let vocab = st.tensor("logits").unwrap().shape()[2];
        for (dtype, loss_tol, logit_tol) in [("f32", 1e-5, 1e-5), ("f16", 1e-3, 5e-3), ("bf16", 1e-2, 3e-2)] {
            let dump = dir.path().join(format!("{name}-{dtype}.safetensors"));
            let out = moe_infer(&[
                "score",
                "--model",
                fixture(name).to_str().unwrap(),
                "--token-ids",
                ids_file.to_str().unwrap(),
                "--backend",
                "flex",
                "--dtype",
                dtype,
                "--dump-logits",
                dump.to_str().unwrap(),
                "--json",
            ]);
            let got = json(&out);
            let loss_diff = (got["mean_nll"].as_f64().unwrap() - r["lm_loss"].as_f64().unwrap()).abs();
            let aux_diff = (got["aux_loss"].as_f64().unwrap() - r["aux_loss"].as_f64().unwrap()).abs();
            let dumped = std::fs::read(&dump).unwrap();
            let dumped = safetensors::SafeTensors::deserialize(&dumped).unwrap();
            let logits = f32s(dumped.tensor("logits").unwrap());
            // Per position, then the median: in half precision the random fixture's router
            // flips a near-tie expert for the odd token (transformers' own bf16 run would too),
            // which moves that token's logits (and its neighbours') a lot and the rest not at all.
            let mut rel: Vec<f64> = logits
                .chunks(vocab)
                .zip(want_logits.chunks(vocab))
                .map(|(a, b)| {
                    let d: f64 = a.iter().zip(b).map(|(&x, &y)| ((x - y) as f64).powi(2)).sum();
                    let n: f64 = b.iter().map(|&y| (y as f64).powi(2)).sum();
                    (d / n).sqrt()
                })
                .collect();
            rel.sort_by(f64::total_cmp);
            let median = rel[rel.len() / 2];
            eprintln!("{name} flex {dtype}: lm_loss diff {loss_diff:.2e}, aux diff {aux_diff:.2e}, median position logits rel err {median:.2e}");
            assert!(loss_diff <= loss_tol, "{name} {dtype}: lm_loss off by {loss_diff}");
            assert!(median <= logit_tol, "{name} {dtype}: logits off by {median} (median relative error)");
            assert!(aux_diff <= 10.0 * loss_tol, "{name} {dtype}: aux_loss off by {aux_diff}");
        }
    }

    let tiny = fixture("tiny-mixtral");
    for (args, needle) in [
        (["--backend", "ndarray", "--dtype", "bf16"], "bf16 is not supported by this backend"),
        (["--backend", "ndarray", "--dtype", "f16"], "f16 is not supported by this backend"),
        (["--backend", "flex", "--dtype", "f64"], "unknown dtype `f64`"),
    ] {
        let mut all = vec!["generate", "--model", tiny.to_str().unwrap(), "--prompt-ids", "1,2"];
        all.extend(args);
        let out = moe_infer(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{all:?} succeeded");
        assert!(stderr.contains(needle), "{all:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{all:?}: {stderr}");
    }
}

/// Prompts of different lengths run as one left-padded batch and each gets what it gets alone.
#[test]
fn ragged_prompts_batch_like_single_prompts() {
    let tiny = fixture("tiny-mixtral");
    let tiny = tiny.to_str().unwrap();
    let run = |prompts: &[&str]| -> Vec<Vec<u64>> {
        let mut args = vec!["generate", "--model", tiny, "-n", "6", "--temperature", "0", "--json"];
        for p in prompts {
            args.extend(["--prompt-ids", p]);
        }
        let got = json(&moe_infer(&args));
        let ids = &got["token_ids"];
        let rows: Vec<&serde_json::Value> = match ids.as_array().unwrap().first() {
            Some(v) if v.is_array() => ids.as_array().unwrap().iter().collect(),
            _ => vec![ids],
        };
        rows.iter().map(|r| r.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect()).collect()
    };
    let prompts = ["5,17,300", "9", "44,2,71,8,19,250,3"];
    let together = run(&prompts);
    assert_eq!(together.len(), 3);
    for (i, p) in prompts.iter().enumerate() {
        assert_eq!(together[i], run(&[p])[0], "prompt {p}");
    }
}

/// A model without a tokenizer written to GGUF (marked `tokenizer.ggml.model = "none"`, which
/// llama.cpp needs to load it) generates from token ids, and asks for a tokenizer for text.
#[test]
fn a_gguf_file_without_a_tokenizer_runs_on_token_ids() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny-q8_0.gguf");
    let gguf = gguf.to_str().unwrap();
    let out = moe_infer(&["quantize", fixture("tiny-mixtral").to_str().unwrap(), gguf, "--type", "q8_0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = json(&moe_infer(&["generate", "--model", gguf, "--prompt-ids", "1,5,9", "-n", "3", "--json"]));
    assert_eq!(got["token_ids"].as_array().unwrap().len(), 6, "{got}");
    let out = moe_infer(&["generate", "--model", gguf, "--prompt", "hello", "-n", "3"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a tokenizer"), "{out:?}");
}

/// GGUF end to end: a Hub folder with its tokenizer quantized to a GGUF file, which then
/// generates from a text prompt with no other file (its tokenizer inside) and inspects; greedy
/// tokens equal those of the model the file was loaded as in the library, and of the folder
/// quantized as it loads (`--quantize`); damaged files and types this version cannot write are
/// errors.
#[test]
fn quantize_to_gguf_then_generate_from_the_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub");
    std::fs::create_dir(&hub).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny-mixtral").join(f), hub.join(f)).unwrap();
    }
    std::fs::copy(fixture("tokenizer").join("tokenizer.json"), hub.join("tokenizer.json")).unwrap();
    let gguf = dir.path().join("tiny-q4_0.gguf");
    let gguf = gguf.to_str().unwrap();
    let out = moe_infer(&["quantize", hub.to_str().unwrap(), gguf, "--type", "q4_0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("MiB"));
    let size = std::fs::metadata(gguf).unwrap().len();
    let f32_size = std::fs::metadata(hub.join("model.safetensors")).unwrap().len();
    assert!(size * 5 < f32_size, "q4_0 file {size} bytes vs f32 {f32_size}");

    let args =
        ["generate", "--model", gguf, "--prompt", "Return a new list", "-n", "6", "--temperature", "0", "--json"];
    let got = json(&moe_infer(&args));
    let ids = got["token_ids"].as_array().unwrap();
    assert_eq!(ids[0].as_u64(), Some(1), "BOS first");
    assert!(ids.len() > 6 && got["text"].as_str().is_some(), "{got}");
    let with_hub_tokenizer = {
        let tok = tokenizer_file();
        let mut a = args.to_vec();
        a.extend(["--tokenizer", tok.as_str()]);
        json(&moe_infer(&a))
    };
    assert_eq!(with_hub_tokenizer["token_ids"], got["token_ids"], "the file's tokenizer is the folder's");
    // Quantized as it loads instead: the same blocks, so the same tokens.
    let hub_arg = hub.to_str().unwrap();
    let mut on_load = args.to_vec();
    on_load[2] = hub_arg;
    on_load.extend(["--quantize", "q4_0"]);
    assert_eq!(json(&moe_infer(&on_load))["token_ids"], got["token_ids"], "--quantize q4_0 vs the q4_0 file");

    let info = json(&moe_infer(&["inspect", "--model", gguf, "--json"]));
    assert_eq!(info["config"]["n_experts"], 4);

    let broken = dir.path().join("broken.gguf");
    let bytes = std::fs::read(gguf).unwrap();
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    for (args, needle) in [
        (vec!["generate", "--model", broken.to_str().unwrap(), "--prompt-ids", "1"], "truncated"),
        (vec!["quantize", hub.to_str().unwrap(), "x.gguf", "--type", "q5_k"], "this version writes"),
        (
            vec!["generate", "--model", hub.to_str().unwrap(), "--prompt-ids", "1", "--quantize", "f16"],
            "block types are",
        ),
        (
            vec!["generate", "--model", hub.to_str().unwrap(), "--prompt-ids", "1", "--quantize-experts-only"],
            "--quantize",
        ),
        (vec!["quantize", hub.to_str().unwrap(), "x.gguf", "--type", "q9"], "unknown type"),
    ] {
        let out = moe_infer(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(needle) && !stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// A `moe-infer serve` process on a free loopback port, its log collected; killed on drop.
struct Server {
    child: std::process::Child,
    url: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        use std::io::BufRead;
        let tiny = fixture("tiny-mixtral");
        let tok = tokenizer_file();
        let mut child = Command::new(env!("CARGO_BIN_EXE_moe-infer"))
            .args(["serve", "--model", tiny.to_str().unwrap(), "--tokenizer", &tok, "--port", "0"])
            .args(["--model-name", "tiny"])
            .args(extra)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let collected = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Some(at) = line.find("http://") {
                    let url = line[at..].split_whitespace().next().unwrap().to_string();
                    let _ = url_tx.send(url);
                }
                collected.lock().unwrap().push(line);
            }
        });
        let url = url_rx.recv_timeout(std::time::Duration::from_secs(120)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the server did not start: {:?}", log.lock().unwrap())
        });
        Server { child, url, log }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Runs a Python script from tests/ with the server's URL first; panics with its output
    /// and the server's log if it fails.
    fn python(&self, script: &str, args: &[&str]) -> String {
        let path = manifest_dir().join("tests").join(script);
        let out = Command::new("python3").arg(path).arg(&self.url).args(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{script} failed:\n{stdout}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log().join("\n")
        );
        stdout
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The OpenAI API through the real `openai` client and raw HTTP: chat and completions, whole
/// and streamed, stop strings, seeds, every bad request with its status and error body, and a
/// client that disconnects mid-stream (its request leaves the batch at once: logged as such,
/// long before its token budget).
#[test]
fn serve_speaks_the_openai_api() {
    let server = Server::start(&["--max-body-bytes", "4096"]);
    let out = server.python("openai_api.py", &["tiny", "4096", "256"]);
    assert!(out.contains("checks hold"), "{out}");
    let log = server.log();
    let line = log.iter().find(|l| l.contains("client-disconnected")).unwrap_or_else(|| panic!("{log:#?}"));
    let generated: usize =
        line.split("completion_tokens=").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(generated < 248 / 2, "the disconnected request went on for {generated} tokens: {line}");
    for want in ["POST /v1/chat/completions 200 prompt_tokens=", "POST /v1/chat/completions 404", "GET /v1/models 200"]
    {
        assert!(log.iter().any(|l| l.contains(want)), "no log line {want:?} in {log:#?}");
    }
}

/// Concurrent streaming clients share the batch: every request completes and returns what it
/// returns alone (greedy), then SIGTERM lets the server finish and exit cleanly. (The speed-up
/// is measured with the same script in docs/benchmarks-history.md, not asserted here.)
#[test]
fn serve_batches_concurrent_requests_and_stops_on_sigterm() {
    let server = Server::start(&["--max-batch", "8", "--max-queue", "8"]);
    let out = server.python("serve_load.py", &["tiny", "--clients", "12", "--tokens", "16", "--timeout", "120"]);
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(report["concurrent_tokens_per_sec"].as_f64().unwrap() > 0.0, "{report}");

    // SIGTERM ends it with exit status 0.
    let mut server = server;
    let status = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(std::time::Instant::now() < deadline, "the server did not stop: {:#?}", server.log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}: {:#?}", server.log());
    assert!(server.log().iter().any(|l| l.contains("shutting down")), "{:#?}", server.log());
}

/// `serve --chat-template FILE` hands the messages to the template as they are: a request the
/// template refuses (`raise_exception`) is a 400 with the template's message, one it accepts
/// is answered.
#[test]
fn serve_renders_the_chat_template() {
    use std::io::{Read, Write as _};
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("t.jinja");
    std::fs::write(
        &template,
        "{% if messages | length > 1 %}{{ raise_exception('one message at a time') }}{% endif %}\
         {{ bos_token }}<|user|>{{ messages[0].content }}<|assistant|>",
    )
    .unwrap();
    let server = Server::start(&["--chat-template", template.to_str().unwrap()]);
    let addr = server.url.trim_start_matches("http://").to_string();
    let post = |messages: &str| {
        let body = format!(r#"{{"messages": {messages}, "max_tokens": 2, "temperature": 0}}"#);
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            stream,
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    let refused = post(r#"[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]"#);
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
    assert!(refused.contains("one message at a time"), "{refused}");
    let answered = post(r#"[{"role": "user", "content": "hello"}]"#);
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
}

/// A full server (every slot and queue place taken) answers 503 with Retry-After. SIGTERM while
/// a stream runs: with no grace period the stream is cut with a final error chunk (OpenAI's
/// error JSON), and the server exits cleanly.
#[test]
fn serve_refuses_when_full_and_cuts_running_streams_on_shutdown() {
    use std::io::{Read, Write as _};
    let mut server = Server::start(&["--shutdown-grace", "0", "--max-batch", "1", "--max-queue", "0"]);
    let addr = server.url.trim_start_matches("http://").to_string();
    let body = r#"{"prompt": "x", "max_tokens": 240, "stream": true, "ignore_eos": true, "temperature": 0}"#;
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut first = [0u8; 256];
    let n = stream.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).contains("200 OK"));
    let mut second = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        second,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut refused = String::new();
    second.read_to_string(&mut refused).unwrap();
    let refused_lower = refused.to_lowercase();
    assert!(refused.starts_with("HTTP/1.1 503") && refused_lower.contains("retry-after: 1"), "{refused}");
    assert!(refused.contains("\"server_error\""), "{refused}");
    Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    let mut rest = String::new();
    stream.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("shutting down") && rest.contains("\"error\""), "{rest}");
    assert!(!rest.contains("[DONE]"), "{rest}");
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}: {:#?}", server.log());
}

/// `--chat-template FILE` is what `chat` renders each turn with: a template that refuses the
/// messages (`raise_exception`) is an error naming its message; one that accepts them answers.
#[test]
fn chat_renders_the_chat_template_it_is_given() {
    let tiny = fixture("tiny-mixtral");
    let dir = tempfile::tempdir().unwrap();
    let chat = |template: &str| {
        let path = dir.path().join("t.jinja");
        std::fs::write(&path, template).unwrap();
        let (model, tok) = (tiny.to_str().unwrap(), tokenizer_file());
        let args = ["chat", "--model", model, "--tokenizer", &tok, "-n", "4", "--temperature", "0", "--chat-template"];
        interactive(&[&args[..], &[path.to_str().unwrap()]].concat(), b"hello\n/exit\n")
    };
    let out = chat("{{ raise_exception('this model takes no ' + messages[0].role + ' turns') }}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("this model takes no user turns"), "{stderr}");
    let out = chat("{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tok/s"));
}

/// `moe-infer run MODEL` is `chat` with the model as its argument (Ollama's habit).
#[test]
fn run_is_chat_with_a_positional_model() {
    let tiny = fixture("tiny-mixtral");
    let tok = tokenizer_file();
    let out = interactive(
        &["run", tiny.to_str().unwrap(), "--tokenizer", &tok, "-n", "8", "--temperature", "0"],
        b"hello\n/exit\n",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tok/s"), "{stderr}");
}
