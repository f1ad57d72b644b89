//! The `moe-train` binary as a user runs it (spawned; this file links no backend code).

use std::path::Path;
use std::process::{Command, Output};

fn moe_train(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moe-train")).args(args).current_dir(cwd).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The README's main job: no arguments but an output folder. It must learn (validation loss at
/// most half the initial one), get at least two built-in tasks half right, keep every expert of
/// every layer at 2% of the tokens or more, report expert specialisation, and export a loadable
/// model.
#[test]
fn default_run_learns_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let out = moe_train(&["--out", "run", "--json"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let initial = summary["initial_val_loss"].as_f64().unwrap();
    let last = summary["final_val_loss"].as_f64().unwrap();
    eprintln!("default run: val loss {initial} -> {last}, NMI {}", summary["specialisation_nmi"]);
    assert!(last <= 0.5 * initial, "validation loss {initial} -> {last}");
    assert!(summary["final_train_loss"].as_f64().unwrap().is_finite());
    assert!(summary["tokens_per_sec"].as_f64().unwrap() > 0.0);
    assert!(summary["specialisation_nmi"].as_f64().unwrap() > 0.0);
    assert_eq!(summary["steps"].as_u64().unwrap(), 1200);
    let accuracy = summary["task_accuracy"].as_array().unwrap();
    let learned = accuracy.iter().filter(|t| t[1].as_f64().unwrap() >= 0.5).count();
    assert!(learned >= 2, "fewer than two tasks at 50%: {accuracy:?}");
    let metrics = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    let last_eval = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rfind(|r| r.get("expert_load").is_some())
        .unwrap();
    for (layer, load) in last_eval["expert_load"].as_array().unwrap().iter().enumerate() {
        let least = load.as_array().unwrap().iter().map(|s| s.as_f64().unwrap()).fold(1.0, f64::min);
        assert!(least >= 0.02, "layer {layer}: an expert has {least} of the tokens");
    }
    let model_dir = Path::new(summary["model_dir"].as_str().unwrap());
    let model_dir = if model_dir.is_absolute() { model_dir.to_path_buf() } else { dir.path().join(model_dir) };
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(model_dir.join(file).is_file(), "{file}");
    }
    let samples = summary["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 5, "one sample per task");
    // Per-task validation loss: every task evaluated, each finite and positive, the overall
    // loss between the best and the worst task's.
    let per_task: Vec<f64> =
        summary["task_val_loss"].as_array().unwrap().iter().map(|t| t[1].as_f64().unwrap()).collect();
    assert_eq!(per_task.len(), 5, "{}", summary["task_val_loss"]);
    let (lo, hi) = per_task.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &l| (lo.min(l), hi.max(l)));
    assert!(lo > 0.0 && lo - 1e-4 <= last && last <= hi + 1e-4, "{per_task:?} vs {last}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--preset", "huge"], "unknown preset `huge`"),
        (&["--config", "missing.json"], "missing.json"),
        (&["--data", "nowhere.txt", "--out", "x"], "nowhere.txt"),
        (&["--backend", "tpu"], "tpu"),
        (&["--resume", "run", "--lr", "0.1"], "only --steps and --backend may be given with it, not --lr"),
        (&["--resume", "run", "--noisy-gating", "--dense"], "not --dense, --noisy-gating"),
        (&["--resume", "nothing-here"], "cannot resume"),
        (&["--seq-len", "1", "--out", "y"], "train.seq_len"),
        (&["--router-jitter", "1.5", "--out", "z"], "routing.jitter_noise"),
        (&["--arch", "deepseek_v3", "--out", "w"], "--arch deepseek_v3: not a model type"),
        (&["--arch", "qwen3_moe", "--dense"], "--dense"),
    ];
    std::fs::write(dir.path().join("bad.json"), "{\"model\": 3}").unwrap();
    for (args, needle) in cases.iter().chain([(&["--config", "bad.json"][..], "bad.json")].iter()) {
        let out = moe_train(args, dir.path());
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} should fail");
        // 1: our error; 2: clap's usage error (a value that does not parse). Never 101 (panic).
        assert!(matches!(out.status.code(), Some(1 | 2)), "{args:?}: {:?} {err}", out.status.code());
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn a_run_folder_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let quick = ["--out", "run", "--steps", "2", "--batch-size", "2", "--seq-len", "16", "--eval-every", "1"];
    let first = moe_train(&quick, dir.path());
    assert!(first.status.success(), "{}", stderr(&first));
    let second = moe_train(&quick, dir.path());
    assert!(!second.status.success());
    assert!(stderr(&second).contains("already holds a run"), "{}", stderr(&second));
    // ... but it can be resumed to more steps.
    let resumed = moe_train(&["--resume", "run", "--steps", "3", "--json"], dir.path());
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let summary: serde_json::Value = serde_json::from_slice(&resumed.stdout).unwrap();
    assert_eq!(summary["steps"].as_u64().unwrap(), 3);
}

/// The routing flags reach the model: the run's settings and the exported Hub config carry
/// them (`router_jitter_noise`, `norm_topk_prob`, `capacity_factor`), the run trains with them
/// on, and its log reports the dropped assignments.
#[test]
fn routing_flags_reach_the_saved_model() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--out", "run", "--steps", "2", "--batch-size", "2", "--seq-len", "16", "--eval-every", "1"];
    let routing = ["--router-jitter", "0.05", "--raw-top-k-weights", "--capacity-factor", "0.5", "--json"];
    let out = moe_train(&[&args[..], &routing[..]].concat(), dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(summary["final_train_loss"].as_f64().unwrap().is_finite());
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run/config.json")).unwrap()).unwrap();
    assert_eq!(run["model"]["routing"]["jitter_noise"], 0.05, "{run}");
    assert_eq!(run["model"]["routing"]["normalize_top_k"], false, "{run}");
    assert_eq!(run["model"]["routing"]["capacity_factor"], 0.5, "{run}");
    // Half the average load per expert: about half the assignments are dropped, and the log
    // says how many.
    let metrics = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    let dropped: Vec<f64> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| r["dropped_fraction"].as_f64())
        .collect();
    assert!(!dropped.is_empty() && dropped.iter().all(|&f| (0.4..1.0).contains(&f)), "{metrics}");
    let model_dir = Path::new(summary["model_dir"].as_str().unwrap());
    let model_dir = if model_dir.is_absolute() { model_dir.to_path_buf() } else { dir.path().join(model_dir) };
    let hub: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model_dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(hub["router_jitter_noise"], 0.05, "{hub}");
    assert_eq!(hub["norm_topk_prob"], false, "{hub}");
    assert_eq!(hub["capacity_factor"], 0.5, "{hub}");

    // DeepSeek-style: sigmoid scores, bias balancing, groups, a shared expert, experts split in 2.
    let deepseek = [
        "--scoring",
        "sigmoid",
        "--bias-update-rate",
        "0.01",
        "--aux-loss-coef",
        "0",
        "--expert-groups",
        "2",
        "--top-k-groups",
        "1",
        "--shared-experts",
        "1",
        "--fine-grained",
        "2",
        "--json",
    ];
    let args = ["--out", "deepseek", "--steps", "2", "--batch-size", "2", "--seq-len", "16", "--eval-every", "1"];
    let out = moe_train(&[&args[..], &deepseek[..]].concat(), dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("deepseek/config.json")).unwrap()).unwrap();
    let (model, routing) = (&run["model"], &run["model"]["routing"]);
    assert_eq!((model["n_experts"].clone(), model["top_k"].clone()), (16.into(), 4.into()), "{run}");
    assert_eq!(routing["scoring"], "sigmoid", "{run}");
    assert_eq!(routing["n_groups"], 2, "{run}");
    // The shared block keeps the width of one expert from before the split.
    assert_eq!(routing["shared_d_ff"], 2 * model["d_ff"].as_u64().unwrap(), "{run}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let model_dir = Path::new(summary["model_dir"].as_str().unwrap());
    let model_dir = if model_dir.is_absolute() { model_dir.to_path_buf() } else { dir.path().join(model_dir) };
    let weights = moe_core::io::HubWeights::open(&model_dir).unwrap();
    // Two steps of balancing moved every bias by +-0.01 or 0 each time, not all by 0.
    let bias = weights.read_f32("model.layers.0.block_sparse_moe.gate.e_score_correction_bias").unwrap().unwrap();
    assert_eq!(bias.shape, [16]);
    assert!(bias.values.iter().all(|b| [-0.02, -0.01, 0.0, 0.01, 0.02].iter().any(|v| (b - v).abs() < 1e-6)));
    assert!(bias.values.iter().any(|&b| b != 0.0), "{:?}", bias.values);
    assert!(weights.read_f32("model.layers.0.block_sparse_moe.shared_experts.w2.weight").unwrap().is_some());
}

fn model_dir(summary: &serde_json::Value, cwd: &Path) -> std::path::PathBuf {
    let dir = Path::new(summary["model_dir"].as_str().unwrap());
    if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        cwd.join(dir)
    }
}

/// `--arch` trains the preset's shape as another family and exports it in that family's Hub
/// layout: Qwen3-MoE's per-head q/k norms and `mlp.experts.X.*_proj` keys.
#[test]
fn arch_trains_and_exports_another_family() {
    let dir = tempfile::tempdir().unwrap();
    let quick = ["--steps", "2", "--batch-size", "2", "--seq-len", "16", "--eval-every", "1", "--json"];
    let out = moe_train(&[&["--out", "qwen", "--arch", "qwen3_moe"][..], &quick[..]].concat(), dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let model = model_dir(&summary, dir.path());
    let hub: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    assert_eq!((hub["model_type"].as_str(), hub["num_experts"].as_u64()), (Some("qwen3_moe"), Some(8)), "{hub}");
    let weights = moe_core::io::HubWeights::open(&model).unwrap();
    let names: Vec<&str> = weights.names().collect();
    assert!(names.contains(&"model.layers.0.self_attn.q_norm.weight"), "{names:?}");
    assert!(names.contains(&"model.layers.1.mlp.experts.7.down_proj.weight"), "{names:?}");
}

/// From dense to sparse as a user goes: train a dense model (`--dense`), upcycle it into 4
/// experts (`moe-train upcycle`), and train the MoE on from it (`--init`). The upcycled model
/// starts exactly where the dense one stopped: the same validation loss on the same split.
#[test]
fn a_dense_run_upcycles_and_trains_on() {
    let dir = tempfile::tempdir().unwrap();
    let quick = ["--steps", "2", "--batch-size", "2", "--seq-len", "16", "--eval-every", "1", "--json"];
    let out = moe_train(&[&["--out", "dense", "--dense"][..], &quick[..]].concat(), dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let dense: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dense_dir = model_dir(&dense, dir.path());
    let hub: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dense_dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(hub["architectures"][0], "MistralForCausalLM", "{hub}");
    // The preset's 2 experts of 128 make one FFN 256 wide: the same compute per token.
    assert_eq!(hub["intermediate_size"], 256, "{hub}");

    let from = dense_dir.to_str().unwrap();
    let up = moe_train(&["upcycle", "--from", from, "--experts", "4", "--top-k", "2", "--out", "up"], dir.path());
    assert!(up.status.success(), "{}", stderr(&up));
    assert!(stderr(&up).contains("moe-train --init"), "{}", stderr(&up));
    let hub: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("up/config.json")).unwrap()).unwrap();
    assert_eq!((hub["model_type"].as_str(), hub["num_local_experts"].as_u64()), (Some("mixtral"), Some(4)), "{hub}");
    assert!(dir.path().join("up/tokenizer.json").is_file());

    let out = moe_train(&[&["--out", "moe", "--init", "up"][..], &quick[..]].concat(), dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let moe: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (before, start) = (dense["final_val_loss"].as_f64().unwrap(), moe["initial_val_loss"].as_f64().unwrap());
    assert!((before - start).abs() < 1e-4, "the upcycled model starts at {start}, the dense one ended at {before}");
    assert!(moe["final_train_loss"].as_f64().unwrap().is_finite());

    // Only the routers learn with --routers-only: the experts and the rest keep the upcycled values.
    let out = moe_train(&[&["--out", "probe", "--init", "up", "--routers-only"][..], &quick[..]].concat(), dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let probe = model_dir(&serde_json::from_slice(&out.stdout).unwrap(), dir.path());
    let (start, end) = (
        moe_core::io::HubWeights::open(dir.path().join("up")).unwrap(),
        moe_core::io::HubWeights::open(&probe).unwrap(),
    );
    let values = |w: &moe_core::io::HubWeights, key: &str| w.read_f32(key).unwrap().unwrap().values;
    for key in ["model.embed_tokens.weight", "model.layers.1.block_sparse_moe.experts.2.w1.weight", "model.norm.weight"]
    {
        assert_eq!(values(&start, key), values(&end, key), "{key} was trained");
    }
    let gate = "model.layers.0.block_sparse_moe.gate.weight";
    assert_ne!(values(&start, gate), values(&end, gate), "the router did not train");

    let cases: &[(&[&str], &str)] = &[
        (&["upcycle", "--from", "up", "--experts", "8", "--out", "again"], "must be dense"),
        (&["upcycle", "--from", from, "--experts", "4", "--top-k", "5", "--out", "bad"], "num_experts_per_tok"),
        (&["upcycle", "--from", from, "--experts", "4", "--out", "up"], "exists already"),
        (&["--init", "up", "--dense", "--out", "x"], "--dense"),
        (&["--init", "nowhere", "--out", "y"], "nowhere"),
        (&["--dense", "--shared-experts", "1", "--out", "z"], "no router"),
        (&["--dense", "--routers-only", "--out", "w"], "train.routers_only"),
    ];
    for (args, needle) in cases {
        let out = moe_train(args, dir.path());
        let err = stderr(&out);
        assert!(!out.status.success() && err.contains(needle) && !err.contains("panicked"), "{args:?}: {err}");
    }
}

/// Distillation as a user runs it: a MoE teacher, then `moe-train distill` trains its dense
/// counterpart on the teacher's distributions and reports both (table, JSON, distill.json);
/// the student's log carries the distillation loss.
#[test]
fn distill_trains_a_student_and_reports_both() {
    let dir = tempfile::tempdir().unwrap();
    let quick = ["--steps", "2", "--batch-size", "2", "--seq-len", "16", "--eval-every", "1", "--json"];
    let out = moe_train(&[&["--out", "teacher"][..], &quick[..]].concat(), dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let teacher = model_dir(&serde_json::from_slice(&out.stdout).unwrap(), dir.path());
    let teacher = teacher.to_str().unwrap();
    let args = ["distill", "--teacher", teacher, "--steps", "2", "--temperature", "3", "--out", "student", "--json"];
    let out = moe_train(&args, dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["temperature"], 3.0);
    let (t, s) = (&report["teacher"], &report["student"]);
    assert!(t["params"].as_u64().unwrap() > s["params"].as_u64().unwrap(), "{report}");
    // The dense student computes as much per token as the teacher's top-2 experts: the
    // teacher's routers (2 layers of 8 x 64) are the only difference.
    assert_eq!(t["active_params"].as_u64().unwrap() - s["active_params"].as_u64().unwrap(), 2 * 8 * 64, "{report}");
    for m in [t, s] {
        assert!(m["val_loss"].as_f64().unwrap().is_finite() && m["decode_tokens_per_sec"].as_f64().unwrap() > 0.0);
    }
    assert!(dir.path().join("student/distill.json").is_file());
    let metrics = std::fs::read_to_string(dir.path().join("student/metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"distill_loss\""), "{metrics}");

    let bad = moe_train(&["distill", "--teacher", teacher, "--alpha", "2", "--out", "x"], dir.path());
    assert!(!bad.status.success() && stderr(&bad).contains("train.distill.alpha"), "{}", stderr(&bad));
    let bad = moe_train(&["distill", "--teacher", "nowhere", "--out", "y"], dir.path());
    assert!(!bad.status.success() && stderr(&bad).contains("nowhere"), "{}", stderr(&bad));
}

/// Branch-Train-MiX end to end on two user-data slices: seed, one branch per `--data` path,
/// the merge (2 experts) and the mixing run, each reported.
#[test]
fn btx_runs_every_stage() {
    let dir = tempfile::tempdir().unwrap();
    let text = |word: &str| {
        (0..120).map(|i| format!("the {word} number {i} walks to the {word} park.\n\n")).collect::<String>()
    };
    std::fs::write(dir.path().join("cats.txt"), text("cat")).unwrap();
    std::fs::write(dir.path().join("dogs.txt"), text("dog")).unwrap();
    let args = ["btx", "--data", "cats.txt", "--data", "dogs.txt", "--seed-steps", "1", "--branch-steps", "1"];
    let mix = ["--mix-steps", "2", "--routers-only", "--out", "btx", "--json"];
    let out = moe_train(&[&args[..], &mix[..]].concat(), dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let stages: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = stages.as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(names, ["seed", "branch cats.txt", "branch dogs.txt", "merged (before mixing)", "mix"]);
    for s in stages.as_array().unwrap() {
        assert!(s["val_loss"].as_f64().unwrap().is_finite(), "{s}");
    }
    let hub: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("btx/merged/config.json")).unwrap()).unwrap();
    assert_eq!(hub["num_local_experts"], 2, "{hub}");
    assert!(dir.path().join("btx/btx.md").is_file());
    let one = moe_train(&["btx", "--data", "cats.txt", "--out", "x"], dir.path());
    assert!(!one.status.success() && stderr(&one).contains("at least two slices"), "{}", stderr(&one));
}

/// `moe-train compare` trains each scheme asked for on the same data and writes one table, its
/// JSON and one plot; an unknown scheme is refused by name before anything trains.
#[test]
fn compare_writes_one_table_and_one_plot() {
    let dir = tempfile::tempdir().unwrap();
    let out = moe_train(
        &["compare", "--schemes", "expert-choice,deepseek,noisy-top-k", "--steps", "2", "--out", "cmp"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    for needle in
        ["| scheme |", "| expert-choice |", "| deepseek |", "| noisy-top-k |", "experts < 2%", "arithmetic", "tokens/s"]
    {
        assert!(table.contains(needle), "{needle}: {table}");
    }
    let report = dir.path().join("cmp");
    assert!(report.join("comparison.png").is_file());
    assert_eq!(std::fs::read_to_string(report.join("comparison.md")).unwrap(), table.split("wrote").next().unwrap());
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("comparison.json")).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    // DeepSeek's 8 experts split in 2: 16 per layer, 2 layers.
    assert_eq!(rows[1]["experts"], 32, "{:?}", rows[1]);
    for row in rows {
        assert!(row["val_loss"].as_f64().unwrap().is_finite());
        assert_eq!(row["val_curve"].as_array().unwrap().len(), 2, "evals at steps 0 and 2");
    }

    let out = moe_train(&["compare", "--schemes", "mixtral,nope"], dir.path());
    assert!(!out.status.success());
    assert!(stderr(&out).contains("\"nope\" is not a scheme"), "{}", stderr(&out));
}

/// `moe-train paths` trains every path on the same data and reports them at equal compute: the
/// three MoE paths end in one shape, the dense and distilled ones in its dense counterpart; the
/// curves run forward in compute (upcycling's MoE picks up where its dense model stopped); bad
/// options are refused before anything trains.
#[test]
fn paths_compares_the_ways_to_a_moe() {
    let dir = tempfile::tempdir().unwrap();
    let out = moe_train(&["paths", "--steps", "3", "--out", "p", "--json"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(names, ["joint", "upcycled", "BTX", "dense", "distilled"]);
    let field = |i: usize, key: &str| rows[i][key].as_u64().unwrap();
    for i in [1, 2] {
        assert_eq!((field(i, "params"), field(i, "active_params")), (field(0, "params"), field(0, "active_params")));
    }
    // The dense shape computes what the top-2 experts do: only the routers (2 layers of 5 x 64) differ.
    assert_eq!(field(0, "active_params") - field(3, "active_params"), 2 * 5 * 64);
    assert_eq!(field(3, "params"), field(4, "params"));
    for row in rows {
        assert!(row["val_loss"].as_f64().unwrap().is_finite() && row["compute_flops"].as_f64().unwrap() > 0.0);
        assert_eq!(row["task_val_loss"].as_array().unwrap().len(), 5, "{row}");
        let segments = row["curve"].as_array().unwrap();
        assert_eq!(segments.len(), if row["path"] == "BTX" { 2 } else { 1 }, "{row}");
        let xs: Vec<f64> =
            segments.iter().flat_map(|s| s.as_array().unwrap()).map(|p| p[0].as_f64().unwrap()).collect();
        assert!(xs.windows(2).all(|w| w[0] <= w[1]) && xs.len() >= 2, "{row}");
    }
    assert!(rows[0]["nmi"].is_number() && rows[3]["nmi"].is_null());
    for file in ["paths.md", "paths.json", "paths.png", "btx/btx.md", "distilled/distill.json"] {
        assert!(dir.path().join("p").join(file).is_file(), "{file}");
    }

    for (args, needle) in
        [(&["paths", "--dense-share", "1.5"][..], "--dense-share"), (&["paths", "--steps", "0"], "--steps")]
    {
        let out = moe_train(args, dir.path());
        assert!(!out.status.success() && stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}
