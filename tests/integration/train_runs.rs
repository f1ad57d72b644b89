//! Whole `moe-train` runs through the library: exact resume, non-finite stops, and an exported
//! folder that `moe-infer` loads.

use std::path::Path;

use moe_core::io::load_hub_checkpoint;
use moe_infer::{score, TextTokenizer};
use moe_train::metrics::{read_log, LogRecord};
use moe_train::setup::{new_run, resume_run, DataSpec};
use moe_train::{train, TrainConfig, TrainError};

use crate::common::*;

/// A run small enough for a test: the tiny model on a smaller corpus, a few steps.
fn config(steps: usize) -> TrainConfig {
    let mut c = TrainConfig::tiny();
    c.train.steps = steps;
    c.train.batch_size = 4;
    c.train.seq_len = 32;
    c.train.eval_every = 5;
    c.train.eval_batches = 2;
    c.train.checkpoint_every = 5;
    c.train.synthetic_documents = 1500;
    c.train.tokenizer_vocab_size = 300;
    c.train.warmup_steps = 3;
    c.train.lr_decay_steps = 20;
    c
}

fn train_losses(run: &Path) -> Vec<(usize, f32, f32, f32)> {
    read_log(&run.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            LogRecord::Train(t) => Some((t.step, t.loss, t.grad_norm, t.lr as f32)),
            LogRecord::Eval(_) => None,
        })
        .collect()
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let straight = dir.path().join("straight");
    let setup = new_run(config(20), DataSpec::default(), &straight, false).unwrap();
    let summary = train::<CpuAutodiff>(&setup, &device).unwrap();
    assert_eq!(summary.steps, 20);

    let split = dir.path().join("split");
    let setup = new_run(config(10), DataSpec::default(), &split, false).unwrap();
    train::<CpuAutodiff>(&setup, &device).unwrap();
    let setup = resume_run(&split, Some(20), false).unwrap();
    let resumed = train::<CpuAutodiff>(&setup, &device).unwrap();

    let (a, b) = (train_losses(&straight), train_losses(&split));
    assert_eq!(a.len(), 20);
    assert_eq!(a, b, "losses, grad norms and learning rates must be identical");
    assert_eq!(summary.final_val_loss, resumed.final_val_loss);
    assert_eq!(summary.initial_val_loss, resumed.initial_val_loss);
    // Checkpoints are pruned to `keep_checkpoints`.
    let kept = moe_train::checkpoint::list(&split).unwrap();
    assert_eq!(kept.len(), 2, "{kept:?}");

    // The exported folder is a Hub checkpoint moe-infer can score, with its tokenizer.
    let model = load_hub_checkpoint::<Cpu>(&resumed.model_dir, &device).unwrap();
    let tokenizer = TextTokenizer::from_file(resumed.model_dir.join("tokenizer.json")).unwrap();
    let ids = tokenizer.encode("12+34=46", true).unwrap();
    let scored = score(&model, &[ids]).unwrap();
    assert!(scored.mean_nll.is_finite());
    for plot in ["loss.png", "expert_load.png", "task_expert_routing.png"] {
        assert!(resumed.run_dir.join("plots").join(plot).is_file(), "{plot}");
    }
}

#[test]
fn non_finite_loss_stops_with_the_step_and_names_the_newest_checkpoint() {
    for checkpoint_every in [1, 50] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(12);
        c.train.lr = 1e30;
        c.train.warmup_steps = 0;
        c.train.grad_clip = None;
        c.train.checkpoint_every = checkpoint_every;
        let setup = new_run(c, DataSpec::default(), dir.path(), false).unwrap();
        let err = train::<CpuAutodiff>(&setup, &Default::default()).unwrap_err();
        let message = err.to_string();
        let TrainError::NonFinite { step, last_checkpoint, .. } = err else {
            panic!("expected a non-finite stop: {message}");
        };
        assert!(message.contains(&format!("step {step}")) && message.contains("not finite"), "{message}");
        // Checkpoints written before the failing step are kept, and the error names the newest.
        let kept = moe_train::checkpoint::list(dir.path()).unwrap();
        assert_eq!(last_checkpoint.as_ref(), kept.last(), "{message}");
        match &last_checkpoint {
            Some(newest) => {
                assert_eq!(checkpoint_every, 1, "{message}");
                assert!(newest.ends_with(format!("step-{:06}", step - 1)), "{newest:?} for step {step}");
                assert!(message.contains(&newest.display().to_string()), "{message}");
            }
            None => {
                assert!(checkpoint_every > step || step == 1, "step {step}: {message}");
                assert!(message.contains("No checkpoint was written"), "{message}");
            }
        }
    }
}

#[test]
fn bad_settings_and_data_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(5);
    c.train.seq_len = 1000;
    let err = new_run(c, DataSpec::default(), dir.path(), false).unwrap_err().to_string();
    assert!(err.contains("train.seq_len"), "{err}");

    let spec = DataSpec { paths: vec![dir.path().join("nope.txt")], ..DataSpec::default() };
    let err = new_run(config(5), spec, dir.path(), false).unwrap_err().to_string();
    assert!(err.contains("nope.txt"), "{err}");

    let err = resume_run(dir.path(), None, false).unwrap_err().to_string();
    assert!(err.contains("cannot resume"), "{err}");
}
