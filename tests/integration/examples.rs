//! Runs the root package's examples as a user would, from the binaries `cargo test` builds
//! alongside the tests (examples are compiled by `cargo test` but not run by it).

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::common::{fixture, Reference};

/// `target/<profile>/examples/<name>`, next to this test binary's `deps/` folder.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "example binary {} is missing: `cargo test --workspace` (or `cargo build --examples`) builds it",
        path.display()
    );
    path
}

fn run(name: &str, args: &[&str]) -> Output {
    let out = Command::new(example(name)).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{name} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn custom_model_learns_with_every_expert_used() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        "custom_model",
        &["--epochs", "2", "--train-size", "1024", "--json", "--out", dir.path().to_str().unwrap()],
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let before = summary["valid_loss_before"].as_f64().unwrap();
    let after = summary["valid_loss_after"].as_f64().unwrap();
    let accuracy = summary["valid_accuracy_after"].as_f64().unwrap();
    // 4 classes: chance is ln 4 = 1.386 and 25%.
    assert!(after < 0.8 * before, "validation loss {before} -> {after}");
    assert!(accuracy > 0.5, "accuracy {accuracy}");
    let shares = summary["expert_share"].as_array().unwrap();
    assert_eq!(shares.len(), 2, "two MoE layers");
    for (layer, experts) in shares.iter().enumerate() {
        let experts = experts.as_array().unwrap();
        assert_eq!(experts.len(), 4);
        for (e, share) in experts.iter().enumerate() {
            let share = share.as_f64().unwrap();
            assert!(share > 0.02, "layer {layer} expert {e} gets {share} of the tokens");
        }
    }
    // burn-train's progress lines went to stderr, with the router metrics in them.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Min expert load") && stderr.contains("Accuracy"), "{stderr}");
}

#[test]
fn load_and_generate_reproduces_transformers_and_streams_text() {
    let reference = Reference::load("tiny-mixtral");
    let prompt: Vec<String> = reference.i64("gen_prompt").1.iter().map(|t| t.to_string()).collect();
    let want: Vec<i64> = reference.i64("gen_tokens").1;
    let new_tokens = (want.len() - prompt.len()).to_string();
    let model = fixture("tiny-mixtral");
    let out = run(
        "load_and_generate",
        &["--model", model.to_str().unwrap(), "--prompt-ids", &prompt.join(","), "--max-new-tokens", &new_tokens],
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let want: Vec<String> = want.iter().map(|t| t.to_string()).collect();
    assert!(stdout.contains(&format!("token ids: [{}]", want.join(", "))), "{stdout}");

    let tokenizer = fixture("tokenizer/tokenizer.json");
    let out = run(
        "load_and_generate",
        &[
            "--model",
            model.to_str().unwrap(),
            "--tokenizer",
            tokenizer.to_str().unwrap(),
            "--prompt",
            "Hello",
            "--max-new-tokens",
            "5",
        ],
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("Hello"), "{stdout}");
    assert!(stdout.contains("perplexity"), "{stdout}");
}
