//! Data parallelism with real processes: 2 ranks over Gloo on 127.0.0.1 (a free port each time,
//! every wait bounded). Two ranks with accumulation 1 train exactly as one process with
//! accumulation 2 (LoRA with dropout, full fine-tuning, gradient checkpointing); checkpoints move
//! between world sizes; a killed rank ends the job with a message naming it; a bad recipe or
//! mismatched settings are reported once, by rank 0.
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tch::Tensor;

/// One rank of a job of `world` ranks (one thread each, as torchrun sets OMP_NUM_THREADS=1).
fn spawn_rank(args: &[&str], rank: usize, world: usize, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_steptune"))
        .args(args)
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `steptune ARGS` as a job of `world` ranks; every rank's (exit code, stderr).
fn job(args: &[&str], world: usize) -> Vec<(i32, String)> {
    let port = common::free_port();
    let children: Vec<Child> = (0..world).map(|r| spawn_rank(args, r, world, port)).collect();
    children.into_iter().enumerate().map(|(r, c)| common::finish(c, Duration::from_secs(240), &format!("rank {r}"))).collect()
}

fn single(args: &[&str]) -> (i32, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_steptune")).args(args).env("OMP_NUM_THREADS", "1").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    common::finish(child, Duration::from_secs(240), "single process")
}

fn ok(results: &[(i32, String)]) {
    for (r, (code, err)) in results.iter().enumerate() {
        assert_eq!(*code, 0, "rank {r} failed:\n{err}");
    }
}

const TRAINING: &str = "max_steps: 6, per_device_train_batch_size: 3, learning_rate: 3.0e-3, warmup_steps: 1, logging_steps: 1, eval_strategy: steps, eval_steps: 3, save_strategy: steps, save_steps: 3, device: cpu, ddp_timeout: 60";

/// A T5 in miniature (flan-t5's layout and real tokenizer, from ../shared).
fn tiny_t5() -> String {
    format!(
        "model:\n  source: random\n  architecture: t5\n  tokenizer: {}\n  config: {{model_type: t5, d_model: 32, d_kv: 8, d_ff: 64, num_layers: 2, num_heads: 4, feed_forward_proj: gated-gelu, tie_word_embeddings: false, dropout_rate: 0.1}}\n",
        common::shared().join("models/flan-t5-small").display()
    )
}

/// A prepared tiny run in `dir/run` for `finetune` and `training` (plus accumulation).
fn prepared(dir: &Path, finetune: &str, training: &str, accum: usize) -> PathBuf {
    prepared_model(dir, common::TINY_QWEN3, finetune, training, accum)
}

fn prepared_model(dir: &Path, model: &str, finetune: &str, training: &str, accum: usize) -> PathBuf {
    let recipe = write_recipe(dir, model, finetune, training, accum);
    let (code, err) = single(&["prepare", recipe.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    recipe
}

/// `dir/r.yaml`, training into `dir/run`.
fn write_recipe(dir: &Path, model: &str, finetune: &str, training: &str, accum: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let yaml = format!(
        "name: ddp\noutput_dir: {}\nseed: 11\n{model}finetune: {finetune}\ntraining: {{{training}, gradient_accumulation_steps: {accum}}}\ndata:\n  files: [{}]\n  columns: {{group: intent}}\n  limit: 40\n  max_length: 512\n",
        dir.join("run").display(),
        common::repo().join("data/procedures.jsonl").display()
    );
    common::write(dir, "r.yaml", yaml.as_bytes())
}

fn tensors(file: &Path) -> HashMap<String, Tensor> {
    steptune::nn::weights::read_file(file, None, tch::Device::Cpu, &|_| true).unwrap().into_iter().collect()
}

fn assert_close(a: &[(u64, f64)], b: &[(u64, f64)], rel: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: {a:?} vs {b:?}");
    for ((sa, la), (sb, lb)) in a.iter().zip(b) {
        assert_eq!(sa, sb);
        assert!((la - lb).abs() <= rel * la.abs().max(lb.abs()), "{what} at step {sa}: {la} vs {lb}");
    }
}

/// Worst |a - b| / max|a| over every tensor of two safetensors files with the same names.
fn worst_relative(a: &Path, b: &Path) -> f64 {
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(ta.len(), tb.len());
    let mut worst = 0f64;
    for (name, x) in &ta {
        let y = &tb[name];
        let scale = x.abs().max().double_value(&[]).max(1e-12);
        worst = worst.max((x - y).abs().max().double_value(&[]) / scale);
    }
    worst
}

/// 2 ranks × accumulation 1 against 1 process × accumulation 2: per-step losses, eval losses and
/// the written weights within 1e-6 relative.
fn two_ranks_equal_one(model: &str, finetune: &str, training: &str, weights: &str) {
    let d = tempfile::tempdir().unwrap();
    let one = prepared_model(&d.path().join("one"), model, finetune, training, 2);
    let two = prepared_model(&d.path().join("two"), model, finetune, training, 1);
    let (code, err) = single(&["train", one.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let results = job(&["train", two.to_str().unwrap()], 2);
    ok(&results);
    // One progress line and one summary, from rank 0 only.
    assert!(results[0].1.contains("train: 6 steps"), "{}", results[0].1);
    assert!(!results[1].1.contains("train: 6 steps"), "rank 1 printed the summary:\n{}", results[1].1);
    let (run1, run2) = (d.path().join("one/run"), d.path().join("two/run"));
    let (l1, l2) = (common::curve(&run1, "loss"), common::curve(&run2, "loss"));
    assert_eq!(l1.len(), 6);
    assert_close(&l1, &l2, 1e-6, "training loss");
    assert_close(&common::curve(&run1, "eval_loss"), &common::curve(&run2, "eval_loss"), 1e-6, "eval loss");
    let worst = worst_relative(&run1.join(weights), &run2.join(weights));
    eprintln!("{finetune}: worst relative difference of the written weights, 2 ranks vs 1: {worst:e}");
    assert!(worst <= 1e-6, "weights differ by {worst:e}");
    // The run records that it had two ranks, and gradients were all-reduced every step.
    let info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run2.join("run_train.json")).unwrap()).unwrap();
    assert_eq!(info["ranks"], 2);
    assert!(common::curve(&run2, "allreduce_bytes").iter().all(|(_, b)| *b > 0.0));
}

const LORA: &str = "{method: lora, lora_r: 4, lora_alpha: 8, lora_dropout: 0.1}";
const ADAPTER: &str = "adapter/adapter_model.safetensors";

#[test]
fn two_ranks_train_lora_with_dropout_as_one_process_with_double_accumulation() {
    two_ranks_equal_one(common::TINY_QWEN3, LORA, TRAINING, ADAPTER);
}

#[test]
fn two_ranks_train_lora_with_gradient_checkpointing_as_one_process() {
    two_ranks_equal_one(common::TINY_QWEN3, LORA, &format!("{TRAINING}, gradient_checkpointing: true"), ADAPTER);
}

#[test]
fn two_ranks_train_qlora_with_gradient_checkpointing_as_one_process() {
    two_ranks_equal_one(common::TINY_QWEN3, "{method: qlora, lora_r: 4, lora_alpha: 8, lora_dropout: 0.1}", &format!("{TRAINING}, gradient_checkpointing: true"), ADAPTER);
}

#[test]
fn two_ranks_fine_tune_fully_as_one_process() {
    two_ranks_equal_one(common::TINY_QWEN3, "{method: full}", TRAINING, "model/model.safetensors");
}

#[test]
fn two_ranks_train_t5_fully_and_with_lora_as_one_process() {
    two_ranks_equal_one(&tiny_t5(), "{method: full}", TRAINING, "model/model.safetensors");
    two_ranks_equal_one(&tiny_t5(), "{method: lora, lora_r: 4, lora_alpha: 8, lora_dropout: 0.1, lora_target_modules: [q, v, wo]}", TRAINING, ADAPTER);
}

#[test]
fn checkpoints_resume_at_the_same_and_at_another_world_size() {
    let d = tempfile::tempdir().unwrap();
    let lora = "{method: lora, lora_r: 4, lora_alpha: 8, lora_dropout: 0.1}";
    let straight = prepared(&d.path().join("straight"), lora, TRAINING, 1);
    ok(&job(&["train", straight.to_str().unwrap()], 2));
    let reference = common::curve(&d.path().join("straight/run"), "loss");

    // Stopped at step 3 on 2 ranks, resumed on 2: exactly the straight run.
    let same = prepared(&d.path().join("same"), lora, TRAINING, 1);
    let stopped = job(&["train", same.to_str().unwrap(), "--stop-after", "3"], 2);
    assert!(stopped.iter().all(|(c, _)| *c != 0));
    assert!(stopped[0].1.contains("stopped after step 3"), "{}", stopped[0].1);
    assert!(d.path().join("same/run/checkpoints/step-00000003/state.json").exists());
    ok(&job(&["train", same.to_str().unwrap()], 2));
    assert_eq!(common::curve(&d.path().join("same/run"), "loss"), reference, "resumed at world size 2");

    // Stopped on 2 ranks, resumed by one process with accumulation 2: the same global batch.
    let other = prepared(&d.path().join("other"), lora, TRAINING, 1);
    let _ = job(&["train", other.to_str().unwrap(), "--stop-after", "3"], 2);
    let resumed = write_recipe(&d.path().join("other"), common::TINY_QWEN3, lora, TRAINING, 2);
    let (code, err) = single(&["train", resumed.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("resuming from"), "{err}");
    assert_close(&common::curve(&d.path().join("other/run"), "loss"), &reference, 1e-6, "resumed at world size 1");

    // Another global batch (1 process, accumulation 1) is not the same run: refused, with what to do.
    let changed = write_recipe(&d.path().join("other"), common::TINY_QWEN3, lora, TRAINING, 1);
    let (code, err) = single(&["train", changed.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("--restart"), "{err}");
}

/// Waits until the run's metrics show `step`, or fails after `limit`.
fn wait_for_step(run: &Path, step: u64, limit: Duration) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(text) = std::fs::read_to_string(run.join("metrics.jsonl")) {
            if text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).any(|v| v["step"].as_u64() >= Some(step) && v.get("loss").is_some()) {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no step {step} in {} after {limit:?}", run.join("metrics.jsonl").display());
}

/// Kills rank `victim` of a long 2-rank run once it trains; the survivor must stop by itself
/// within 60 s with a message naming the dead rank, and rank 0's last checkpoint stays whole.
fn kill_rank(victim: usize) -> String {
    let d = tempfile::tempdir().unwrap();
    let recipe = prepared(d.path(), "{method: lora, lora_r: 4, lora_alpha: 8}", "max_steps: 100000, per_device_train_batch_size: 3, logging_steps: 1, eval_strategy: 'no', save_strategy: steps, save_steps: 2, device: cpu, ddp_timeout: 600", 1);
    let port = common::free_port();
    let mut children: Vec<Child> = (0..2).map(|r| spawn_rank(&["train", recipe.to_str().unwrap()], r, 2, port)).collect();
    wait_for_step(&d.path().join("run"), 3, Duration::from_secs(120));
    children[victim].kill().unwrap();
    let _ = children[victim].wait();
    let survivor = children.remove(1 - victim);
    let killed_at = Instant::now();
    let (code, err) = common::finish(survivor, Duration::from_secs(60), "the surviving rank");
    assert_ne!(code, 0, "{err}");
    eprintln!("rank {} stopped {:.1} s after rank {victim} was killed:\n{err}", 1 - victim, killed_at.elapsed().as_secs_f64());
    // Whatever checkpoint is listed is complete.
    for (_, dir) in steptune::train::checkpoint::list(&d.path().join("run/checkpoints")) {
        for f in ["trainable.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"] {
            assert!(dir.join(f).exists(), "{} lacks {f}", dir.display());
        }
    }
    err
}

#[test]
fn a_killed_rank_ends_the_job_with_a_message_naming_it() {
    let err = kill_rank(1);
    assert!(err.contains("rank 0 of 2"), "{err}");
    assert!(err.contains("rank 1: DIED"), "{err}");
    assert!(err.contains("resumes from it"), "{err}");
    // Rank 0 hosts the store: without it the survivor says so.
    let err = kill_rank(0);
    assert!(err.contains("rank 1 of 2"), "{err}");
    assert!(err.contains("rank 0"), "{err}");
}

#[test]
fn a_hung_rank_ends_the_job_within_the_timeout() {
    let d = tempfile::tempdir().unwrap();
    let recipe = prepared(d.path(), "{method: lora, lora_r: 4, lora_alpha: 8}", "max_steps: 100000, per_device_train_batch_size: 3, logging_steps: 1, eval_strategy: 'no', save_strategy: 'no', device: cpu, ddp_timeout: 8", 1);
    let port = common::free_port();
    let r0 = spawn_rank(&["train", recipe.to_str().unwrap()], 0, 2, port);
    let mut r1 = spawn_rank(&["train", recipe.to_str().unwrap()], 1, 2, port);
    wait_for_step(&d.path().join("run"), 2, Duration::from_secs(120));
    // Rank 1 freezes (as a process stuck in a driver call would): rank 0 waits ddp_timeout, no more.
    let status = Command::new("kill").args(["-STOP", &r1.id().to_string()]).status().unwrap();
    assert!(status.success());
    let stopped = Instant::now();
    let (code, err) = common::finish(r0, Duration::from_secs(60), "rank 0");
    let waited = stopped.elapsed().as_secs_f64();
    let _ = r1.kill();
    let _ = r1.wait();
    assert_ne!(code, 0);
    assert!(waited >= 7.0 && waited < 40.0, "rank 0 stopped after {waited:.1} s with a timeout of 8 s:\n{err}");
    assert!(err.contains("rank 1: DIED or was stopped"), "{err}");
}

#[test]
fn a_bad_recipe_is_reported_once_and_different_settings_name_the_rank() {
    let d = tempfile::tempdir().unwrap();
    let bad = common::write(d.path(), "bad.yaml", b"name: x\nmodel: {source: random}\ntraining: {learning_rat: 0.1}\n");
    let results = job(&["train", bad.to_str().unwrap()], 2);
    assert!(results.iter().all(|(c, _)| *c != 0));
    assert!(results[0].1.contains("learning_rat"), "{}", results[0].1);
    assert!(results[0].1.contains("on every rank"), "{}", results[0].1);
    assert!(!results[1].1.contains("learning_rat"), "rank 1 repeated the error:\n{}", results[1].1);

    // Rank 1 reads a recipe with another learning rate into the same run folder.
    let lora = "{method: lora, lora_r: 4, lora_alpha: 8}";
    let a = prepared(&d.path().join("a"), lora, TRAINING, 1);
    let b_dir = d.path().join("b");
    std::fs::create_dir_all(&b_dir).unwrap();
    let b = common::write(&b_dir, "r.yaml", std::fs::read_to_string(&a).unwrap().replace("learning_rate: 3.0e-3", "learning_rate: 1.0e-3").as_bytes());
    let port = common::free_port();
    let r0 = spawn_rank(&["train", a.to_str().unwrap()], 0, 2, port);
    let r1 = spawn_rank(&["train", b.to_str().unwrap()], 1, 2, port);
    let (c0, e0) = common::finish(r0, Duration::from_secs(120), "rank 0");
    let (c1, _) = common::finish(r1, Duration::from_secs(120), "rank 1");
    assert!(c0 != 0 && c1 != 0);
    assert!(e0.contains("rank 1 loaded different prepared data and training settings than rank 0"), "{e0}");
}

#[test]
fn the_main_job_runs_under_two_ranks_and_rank_0_writes_the_report() {
    let d = tempfile::tempdir().unwrap();
    let recipe = common::tiny_recipe(
        d.path(),
        "ddp-run",
        "{method: lora, lora_r: 4, lora_alpha: 8}",
        "{max_steps: 3, per_device_train_batch_size: 4, logging_steps: 1, device: cpu, ddp_timeout: 60}",
        "eval: {max_new_tokens: 8, max_samples: 5}\n",
    );
    let results = job(&["run", recipe.to_str().unwrap()], 2);
    ok(&results);
    let run = d.path().join("run");
    assert!(run.join("report.md").exists() && run.join("adapter/adapter_model.safetensors").exists());
    // The generations of both ranks, gathered in prompt order: as many as there are eval prompts.
    let preds = std::fs::read_to_string(run.join("eval/predictions_tuned.jsonl")).unwrap();
    let prompts: Vec<String> = preds.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["prompt"].as_str().unwrap().to_string()).collect();
    assert_eq!(prompts.len(), 5);
    let eval: Vec<String> = steptune::train::batches::read_prepared(&run.join("prepared/eval.jsonl")).unwrap().into_iter().map(|e| e.prompt).collect();
    let mut unique: Vec<String> = Vec::new();
    for p in eval {
        if !unique.contains(&p) {
            unique.push(p);
        }
    }
    assert_eq!(prompts, unique[..5].to_vec());
    assert!(results[0].1.contains("eval: wrote"), "{}", results[0].1);
    assert!(!results[1].1.contains("eval: wrote"), "{}", results[1].1);
}
