//! Stopping safely and reproducing from the recipe alone, with the real binary: signals at
//! random moments, each followed by a resume, give exactly the losses and adapter of an
//! uninterrupted run; two ranks stop after the same step when only one is signalled; a second
//! SIGINT ends the process at once; a `source: random` run is the same whether its base folder
//! was drawn now or left by an earlier attempt.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const STOPPED: i32 = 75;

fn start(args: &[&str], env: &[(&str, String)]) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_steptune"));
    c.args(args).env("OMP_NUM_THREADS", "1").stdout(Stdio::null()).stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

fn signal(child: &Child, name: &str) {
    assert!(Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().unwrap().success());
}

fn write_recipe(dir: &Path, model: &str, training: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let yaml = format!(
        "name: stop\noutput_dir: {}\nseed: 4\n{model}finetune: {{method: lora, lora_r: 4, lora_alpha: 8, lora_dropout: 0.1}}\ntraining: {{{training}}}\ndata:\n  files: [{}]\n  columns: {{group: intent}}\n  limit: 40\n  max_length: 512\n",
        dir.join("run").display(),
        common::repo().join("data/procedures.jsonl").display()
    );
    let recipe = common::write(dir, "r.yaml", yaml.as_bytes());
    let (code, _, err) = common::steptune(&["prepare", recipe.to_str().unwrap()], dir);
    assert_eq!(code, 0, "{err}");
    recipe
}

fn losses(run: &Path) -> Vec<(u64, f64)> {
    common::curve(run, "loss")
}

fn adapter(run: &Path) -> Vec<u8> {
    std::fs::read(run.join("adapter/adapter_model.safetensors")).unwrap()
}

fn has_trained(run: &Path) -> bool {
    trained_past(run, 0)
}

/// Whether metrics.jsonl shows a training step after `step` (a resumed attempt trains past its
/// checkpoint; until then it is still loading, where a signal ends it at once).
fn trained_past(run: &Path, step: u64) -> bool {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .is_ok_and(|t| t.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).any(|v| v.get("loss").is_some() && v["step"].as_u64() > Some(step)))
}

const LONG: &str = "max_steps: 400, per_device_train_batch_size: 2, learning_rate: 3.0e-3, logging_steps: 1, eval_strategy: steps, eval_steps: 40, save_strategy: steps, save_steps: 40, device: cpu, ddp_timeout: 60";

#[test]
fn signals_at_random_moments_then_resuming_equal_an_uninterrupted_run() {
    let d = tempfile::tempdir().unwrap();
    let straight = write_recipe(&d.path().join("straight"), common::TINY_QWEN3, LONG);
    let (code, err) = common::finish(start(&["train", straight.to_str().unwrap()], &[]), Duration::from_secs(300), "steptune");
    assert_eq!(code, 0, "{err}");

    let stopped = write_recipe(&d.path().join("stopped"), common::TINY_QWEN3, LONG);
    let run = d.path().join("stopped/run");
    // A fixed pseudo-random sequence of moments, 20 to 300 ms after this attempt started training:
    // short against the 400 steps, so every attempt is stopped whatever the machine's speed.
    let mut lcg: u64 = 0x2545_F491_4F6C_DD1D;
    let (mut checkpointed, mut attempts) = (0, 0);
    for sig in ["USR1", "TERM", "INT"].iter().cycle().take(12) {
        let resumes_at = steptune::train::checkpoint::list(&run.join("checkpoints")).pop().map_or(0, |(s, _)| s);
        let child = start(&["train", stopped.to_str().unwrap()], &[]);
        let t0 = Instant::now();
        while !trained_past(&run, resumes_at) && t0.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(5));
        }
        lcg = lcg.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(20 + (lcg >> 33) % 280));
        signal(&child, sig);
        let (code, err) = common::finish(child, Duration::from_secs(120), "steptune");
        attempts += 1;
        match code {
            0 => break,
            STOPPED => {
                checkpointed += 1;
                assert!(err.contains(&format!("stopped by SIG{sig} after step")), "{err}");
                assert!(err.contains("run the same command again"), "{err}");
            }
            other => panic!("SIG{sig}: exit code {other}, expected {STOPPED} (stopped with a checkpoint) or 0 (finished):\n{err}"),
        }
    }
    eprintln!("{checkpointed} of {attempts} attempts were stopped by a signal and resumed");
    assert!(checkpointed >= 8, "only {checkpointed} of {attempts} attempts stopped with a checkpoint");
    let (code, err) = common::finish(start(&["train", stopped.to_str().unwrap()], &[]), Duration::from_secs(300), "steptune");
    assert_eq!(code, 0, "{err}");
    let (a, b) = (losses(&d.path().join("straight/run")), losses(&run));
    assert_eq!(a.len(), 400);
    assert_eq!(a, b, "the resumed losses differ from the uninterrupted run");
    assert_eq!(adapter(&d.path().join("straight/run")), adapter(&run), "the adapters differ");
}

#[test]
fn a_second_sigint_ends_the_process_at_once() {
    // A model whose step takes long enough for two signals to land in it.
    let big = "model:\n  source: random\n  architecture: qwen3\n  config: {model_type: qwen3, hidden_size: 256, intermediate_size: 1024, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 64}\n  train_tokenizer: {vocab_size: 400}\n";
    let d = tempfile::tempdir().unwrap();
    let recipe = write_recipe(d.path(), big, "max_steps: 1000, per_device_train_batch_size: 8, logging_steps: 1, eval_strategy: 'no', save_strategy: 'no', device: cpu");
    let child = start(&["train", recipe.to_str().unwrap()], &[]);
    let t0 = Instant::now();
    while !has_trained(&d.path().join("run")) && t0.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(5));
    }
    signal(&child, "INT");
    std::thread::sleep(Duration::from_millis(5));
    signal(&child, "INT");
    let (code, err) = common::finish(child, Duration::from_secs(60), "steptune");
    assert_eq!(code, 130, "a second SIGINT must end the process at once (128 + 2):\n{err}");
}

#[test]
fn two_ranks_stop_after_the_same_step_when_one_is_signalled() {
    let d = tempfile::tempdir().unwrap();
    let straight = write_recipe(&d.path().join("straight"), common::TINY_QWEN3, LONG);
    let stopped = write_recipe(&d.path().join("stopped"), common::TINY_QWEN3, LONG);
    let job = |recipe: &Path, signal_rank_1: bool| -> Vec<(i32, String)> {
        let port = common::free_port();
        let ranks: Vec<Child> = (0..2)
            .map(|r| {
                let env = [("RANK", r.to_string()), ("WORLD_SIZE", "2".into()), ("LOCAL_RANK", r.to_string()), ("MASTER_ADDR", "127.0.0.1".into()), ("MASTER_PORT", port.to_string())];
                start(&["train", recipe.to_str().unwrap()], &env)
            })
            .collect();
        if signal_rank_1 {
            let run = recipe.parent().unwrap().join("run");
            let t0 = Instant::now();
            while !has_trained(&run) && t0.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(300));
            signal(&ranks[1], "USR1");
        }
        ranks.into_iter().map(|c| common::finish(c, Duration::from_secs(240), "steptune")).collect()
    };
    let done = job(&straight, false);
    assert!(done.iter().all(|(c, _)| *c == 0), "{done:?}");
    let halted = job(&stopped, true);
    assert!(halted.iter().all(|(c, _)| *c == STOPPED), "both ranks must exit {STOPPED}: {halted:?}");
    assert!(halted[0].1.contains("stopped by a signal to another rank after step"), "{}", halted[0].1);
    let step: u64 = halted[0].1.split("after step ").nth(1).unwrap().split(';').next().unwrap().parse().unwrap();
    assert!(d.path().join(format!("stopped/run/checkpoints/step-{step:08}/state.json")).exists());
    assert!(step < 400);
    let resumed = job(&stopped, false);
    assert!(resumed.iter().all(|(c, _)| *c == 0), "{resumed:?}");
    assert_eq!(losses(&d.path().join("straight/run")), losses(&d.path().join("stopped/run")));
    assert_eq!(adapter(&d.path().join("straight/run")), adapter(&d.path().join("stopped/run")));
}

#[test]
fn a_random_base_gives_the_same_run_whether_drawn_now_or_left_by_an_earlier_attempt() {
    let d = tempfile::tempdir().unwrap();
    let training = "max_steps: 12, per_device_train_batch_size: 2, learning_rate: 3.0e-3, logging_steps: 1, eval_strategy: 'no', save_strategy: 'no', device: cpu";
    let first = write_recipe(&d.path().join("first"), common::TINY_QWEN3, training);
    let (code, err) = common::finish(start(&["train", first.to_str().unwrap()], &[]), Duration::from_secs(120), "steptune");
    assert_eq!(code, 0, "{err}");
    let reference = losses(&d.path().join("first/run"));
    // The same folder again from the start: the base is now loaded from disk.
    let (code, err) = common::finish(start(&["train", first.to_str().unwrap(), "--restart"], &[]), Duration::from_secs(120), "steptune");
    assert_eq!(code, 0, "{err}");
    assert_eq!(losses(&d.path().join("first/run")), reference, "--restart with the base on disk");
    // An attempt killed before its first checkpoint leaves the base folder and nothing else.
    let second = write_recipe(&d.path().join("second"), common::TINY_QWEN3, training);
    let child = start(&["train", second.to_str().unwrap()], &[]);
    let t0 = Instant::now();
    while !d.path().join("second/run/base_model/model.safetensors").exists() && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(20));
    let mut child = child;
    child.kill().unwrap();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(d.path().join("second/run/checkpoints"));
    let (code, err) = common::finish(start(&["train", second.to_str().unwrap()], &[]), Duration::from_secs(120), "steptune");
    assert_eq!(code, 0, "{err}");
    assert_eq!(losses(&d.path().join("second/run")), reference, "after an attempt killed before its first checkpoint");
}
