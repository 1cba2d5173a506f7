//! Drivers above the stages, through the binary: `--set`, `sweep` (resume, Slurm arrays),
//! `compare`, and the sbatch script of `slurm` run against fake Slurm commands.
mod common;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use common::{steptune, steptune_env};

fn mtime(p: &Path) -> SystemTime {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).modified().unwrap()
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

const GRID: [&str; 4] = ["--grid", "training.learning_rate=1e-3,2e-3", "--grid", "finetune.lora_r=2,4"];
const NAMES: [&str; 4] = ["learning_rate=1e-3,lora_r=2", "learning_rate=1e-3,lora_r=4", "learning_rate=2e-3,lora_r=2", "learning_rate=2e-3,lora_r=4"];

/// A 2×2 sweep: one point run alone as a Slurm array task, one interrupted after its first step
/// (prepared and trained by hand with `--set`), then the whole sweep skips the finished point,
/// resumes the interrupted one and runs the rest on data prepared once; `compare` reads it all.
#[test]
fn sweep_runs_each_point_once_resumes_the_unfinished_and_compare_reads_them() {
    let d = tempfile::tempdir().unwrap();
    let recipe = common::tiny_recipe(
        d.path(),
        "sw",
        "{method: lora, lora_r: 2}",
        "{max_steps: 2, device: cpu, per_device_train_batch_size: 8, eval_strategy: steps, eval_steps: 1, save_strategy: no}",
        "eval: {max_new_tokens: 4, max_samples: 2, compare_base: false}\n",
    );
    let r = recipe.to_str().unwrap();
    let root = d.path().join("run");
    let sweep = |extra: &[&str], env: &[(&str, &Path)]| {
        let mut args = vec!["sweep", r];
        args.extend(GRID);
        args.extend(extra);
        steptune_env(&args, d.path(), env)
    };

    // The plan: four points named after their values, none run yet.
    let (code, out, err) = sweep(&["--dry-run"], &[]);
    assert_eq!(code, 0, "{err}");
    for (i, n) in NAMES.iter().enumerate() {
        assert!(out.contains(&format!("{i:>3}  pending  {n}")), "{out}");
    }
    assert!(out.contains("prepared once, shared"), "{out}");
    // A bad grid value is caught before anything runs, named like a --set.
    let (code, _, err) = steptune(&["sweep", r, "--grid", "training.learning_rate=1e-3,fast"], d.path());
    assert_eq!(code, 1);
    assert!(err.contains("learning_rate=fast") && err.contains("invalid type"), "{err}");
    assert!(!root.exists(), "nothing was written");

    // A Slurm array task runs its point only; an id past the grid says how big the grid is.
    let (code, _, err) = sweep(&[], &[("SLURM_ARRAY_TASK_ID", Path::new("1"))]);
    assert_eq!(code, 0, "{err}");
    let p1 = root.join(NAMES[1]);
    assert!(p1.join("report.json").exists() && !root.join(NAMES[0]).exists() && !root.join(NAMES[2]).exists());
    let resolved = std::fs::read_to_string(p1.join("recipe.yaml")).unwrap();
    assert!(resolved.contains("lora_r: 4") && resolved.contains("learning_rate: 0.001"), "{resolved}");
    let (code, _, err) = sweep(&[], &[("SLURM_ARRAY_TASK_ID", Path::new("4"))]);
    assert_eq!(code, 1);
    assert!(err.contains("SLURM_ARRAY_TASK_ID=4") && err.contains("4 points (0-3)") && err.contains("--array=0-3"), "{err}");

    // Point 3 by hand, as a job killed after one step would leave it.
    let p3 = root.join(NAMES[3]);
    let p3_dir = format!("output_dir={}", p3.display());
    let set3 = ["--set", "training.learning_rate=2e-3", "--set", "finetune.lora_r=4", "--set", p3_dir.as_str()];
    let (code, _, err) = steptune(&[&["prepare", r][..], &set3[..]].concat(), d.path());
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = steptune(&[&["train", r, "--stop-after", "1"][..], &set3[..]].concat(), d.path());
    assert_eq!(code, 1, "{err}");
    assert!(p3.join("checkpoints").exists() && !p3.join("train_result.json").exists());
    // compare on the unfinished run: steps so far, marked unfinished; no final loss or report.
    let (code, _, err) = steptune(&["compare", p3.to_str().unwrap(), "--out", d.path().join("cmp3").to_str().unwrap()], d.path());
    assert_eq!(code, 0, "{err}");
    let c = json(&d.path().join("cmp3/compare.json"));
    let run3 = &c["runs"][0];
    assert_eq!((run3["steps"].as_u64(), run3["finished"].as_bool()), (Some(1), Some(false)), "{run3}");
    assert!(run3["final_eval_loss"].is_null() && run3["best_eval_loss"].as_f64().is_some(), "{run3}");
    assert_eq!(run3["missing"], serde_json::json!(["train_result.json", "report.json"]));
    let md = std::fs::read_to_string(d.path().join("cmp3/compare.md")).unwrap();
    assert!(md.contains("| 1 (unfinished) |") && md.contains("| missing |") && md.contains("no train_result.json, report.json"), "{md}");
    // The overrides are in the checkpoint's fingerprint: another learning rate is refused.
    let (code, _, err) = steptune(&["train", r, "--set", "training.learning_rate=5e-3", "--set", "finetune.lora_r=4", "--set", p3_dir.as_str()], d.path());
    assert_eq!(code, 1);
    assert!(err.contains("holds checkpoints of other data or settings"), "{err}");
    // (That attempt rewrote the folder's recipe.yaml; preparing again restores it.)
    assert_eq!(steptune(&[&["prepare", r][..], &set3[..]].concat(), d.path()).0, 0);

    // The whole sweep: point 1 skipped untouched, point 3 resumed, 0 and 2 run, data prepared once.
    let p1_result = mtime(&p1.join("train_result.json"));
    let (code, _, err) = sweep(&[], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("point 1 {} is done; skipped", NAMES[1])), "{err}");
    assert!(err.contains(&format!("point 3 {} (resuming)", NAMES[3])) && err.contains("resuming from"), "{err}");
    assert_eq!(mtime(&p1.join("train_result.json")), p1_result);
    for n in NAMES {
        let t = json(&root.join(n).join("train_result.json"));
        assert_eq!(t["steps"], 2, "{n}");
        assert!(root.join(n).join("report.json").exists(), "{n}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let shared = std::fs::metadata(root.join("_prepare/prepared/train.jsonl")).unwrap().ino();
        assert_eq!(std::fs::metadata(root.join(NAMES[0]).join("prepared/train.jsonl")).unwrap().ino(), shared, "point 0 links the shared preparation");
    }
    let index = json(&root.join("sweep.json"));
    let points = index["points"].as_array().unwrap();
    assert_eq!(points.len(), 4);
    for (p, n) in points.iter().zip(NAMES) {
        assert_eq!((p["name"].as_str().unwrap(), p["state"].as_str().unwrap(), p["steps"].as_u64()), (n, "done", Some(2)));
    }
    assert_eq!(points[2]["settings"]["training.learning_rate"], "2e-3");

    // Again: nothing left to do, nothing touched. With other settings: refused, not overwritten.
    let before: Vec<SystemTime> = NAMES.iter().map(|n| mtime(&root.join(n).join("train_result.json"))).collect();
    let (code, _, err) = sweep(&[], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("0 of 4 points to run"), "{err}");
    assert_eq!(NAMES.iter().map(|n| mtime(&root.join(n).join("train_result.json"))).collect::<Vec<_>>(), before);
    let (code, _, err) = sweep(&["--set", "training.max_steps=3"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("holds a run of other settings") && err.contains("training.max_steps is 2 there and 3 now"), "{err}");

    // compare: the settings that differ, steps, losses, every report metric, one plot.
    std::fs::remove_file(root.join(NAMES[2]).join("report.json")).unwrap();
    let (code, out, err) = steptune(&["compare", root.to_str().unwrap()], d.path());
    assert_eq!(code, 0, "{err}");
    for f in ["compare.md", "compare.json", "compare.png"] {
        assert!(root.join(f).exists(), "{f}");
    }
    let c = json(&root.join("compare.json"));
    assert_eq!(c["differing_settings"], serde_json::json!(["finetune.lora_r", "training.learning_rate"]));
    let runs = c["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    assert_eq!(runs[0]["settings"]["finetune.lora_r"], "2");
    assert!(runs[0]["best_eval_loss"].as_f64().unwrap() > 0.0 && runs[0]["steps"] == 2);
    assert!(runs[0]["metrics"]["tuned.rouge_l_f1"].is_number() && runs[0]["metrics"]["tuned.meteor"].is_number());
    assert!(runs[0]["eval_loss_curve"].as_array().unwrap().len() == 3, "steps 0, 1 and 2");
    // The point without a report: missing, not zero.
    assert_eq!(runs[2]["missing"], serde_json::json!(["report.json"]));
    assert!(runs[2]["metrics"].as_object().unwrap().is_empty());
    let md = std::fs::read_to_string(root.join("compare.md")).unwrap();
    assert!(md.contains("| run | lora_r | learning_rate | steps |"), "{md}");
    let rouge = md.lines().find(|l| l.starts_with("| tuned.rouge_l_f1 |")).unwrap();
    assert_eq!(rouge.matches("missing").count(), 1, "{rouge}");
    assert_eq!(rouge.split('|').nth(4).unwrap().trim(), "missing", "{rouge}");
    assert!(out.contains("# Comparison of 4 runs"), "{out}");
    // Run folders are accepted too; something else is named.
    let (code, _, err) = steptune(&["compare", p1.to_str().unwrap(), p3.to_str().unwrap(), "--out", d.path().join("cmp").to_str().unwrap()], d.path());
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&d.path().join("cmp/compare.json"))["runs"].as_array().unwrap().len(), 2);
    let (code, _, err) = steptune(&["compare", d.path().to_str().unwrap()], d.path());
    assert_eq!(code, 1);
    assert!(err.contains("neither a run folder"), "{err}");
}

#[test]
fn set_overrides_reach_check_and_name_themselves_in_errors() {
    let d = tempfile::tempdir().unwrap();
    let recipe = common::tiny_recipe(d.path(), "ov", "{method: lora}", "{max_steps: 2}", "");
    let r = recipe.to_str().unwrap();
    let (code, out, err) = steptune(&["check", r, "--set", "finetune.lora_r=32", "--set", "training.learning_rate=1e-4"], d.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("lora_r: 32") && out.contains("learning_rate: 0.0001"), "{out}");
    let (code, _, err) = steptune(&["check", r, "--set", "training.lerning_rate=1e-4"], d.path());
    assert_eq!(code, 1);
    assert!(err.contains("--set training.lerning_rate=1e-4: unknown key `training.lerning_rate`: did you mean `training.learning_rate`?"), "{err}");
    let (code, _, err) = steptune(&["check", r, "--set", "finetune.lora_dropout=2"], d.path());
    assert_eq!(code, 1);
    assert!(err.contains("--set finetune.lora_dropout=2: `finetune.lora_dropout` is 2, must be in [0, 1)"), "{err}");
}

/// Writes an executable shell script.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/bash\n{body}")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    p
}

/// The printed sbatch script passes `bash -n`, and run under fake `sbatch`, `srun` and
/// `scontrol`: srun gets one task per GPU and the steptune command line; exit 75 (stopped with a
/// checkpoint) requeues the job; USR1 to the batch shell reaches srun's tasks, and the job is
/// requeued after they stop.
#[test]
fn slurm_script_launches_forwards_usr1_and_requeues_on_exit_75() {
    let d = tempfile::tempdir().unwrap();
    let recipe = common::tiny_recipe(d.path(), "sl", "{method: lora}", "{max_steps: 2}", "");
    let r = recipe.to_str().unwrap();
    let (code, sbatch_text, err) = steptune(
        &["slurm", r, "--nodes", "2", "--gpus-per-node", "4", "--time", "01:30:00", "--partition", "gpu", "--account", "proj", "--set", "training.max_steps=5"],
        d.path(),
    );
    assert_eq!(code, 0, "{err}");
    for line in ["#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4", "#SBATCH --time=01:30:00", "#SBATCH --partition=gpu", "#SBATCH --account=proj", "#SBATCH --signal=B:USR1@120", "#SBATCH --requeue", "#SBATCH --output=slurm-%x-%j.out", "# module load"] {
        assert!(sbatch_text.contains(line), "{line} missing:\n{sbatch_text}");
    }
    assert!(!sbatch_text.contains("--array"));
    let job = d.path().join("job.sh");
    std::fs::write(&job, &sbatch_text).unwrap();
    let syntax = std::process::Command::new("bash").arg("-n").arg(&job).output().unwrap();
    assert!(syntax.status.success(), "{}", String::from_utf8_lossy(&syntax.stderr));
    // A bad override is caught when the script is printed, not when the job starts.
    let (code, _, err) = steptune(&["slurm", r, "--set", "training.lerning_rate=1"], d.path());
    assert_eq!(code, 1);
    assert!(err.contains("did you mean `training.learning_rate`"), "{err}");
    // A sweep is an array job, one task per point.
    let (code, array_text, err) = steptune(&["slurm", r, "--grid", "training.learning_rate=1e-4,2e-4", "--grid", "finetune.lora_r=2,4"], d.path());
    assert_eq!(code, 0, "{err}");
    assert!(array_text.contains("#SBATCH --array=0-3") && array_text.contains("slurm-%x-%A_%a.out"), "{array_text}");
    assert!(array_text.contains(&format!("\"$STEPTUNE\" sweep {r} --grid training.learning_rate=1e-4,2e-4 --grid finetune.lora_r=2,4")), "{array_text}");

    // Fake Slurm: srun logs its arguments and runs the command after its options (or, in
    // `signal` mode, waits for USR1 and exits 75 as a stopped steptune would); scontrol logs;
    // sbatch runs the script as job 4242. A fake steptune logs its arguments.
    let bin = d.path().join("bin");
    let log = d.path().join("log");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&log).unwrap();
    script(&bin, "srun", r#"printf '%s\n' "$@" > "$LOG/srun.args"
if [ "${FAKE_MODE:-}" = signal ]; then
    trap 'echo usr1 >> "$LOG/srun.events"; exit 75' USR1
    touch "$LOG/srun.started"
    while :; do sleep 0.05; done
fi
while [ "${1#--}" != "$1" ]; do shift; done
exec "$@"
"#);
    script(&bin, "scontrol", r#"echo "$@" >> "$LOG/scontrol.args""#);
    script(&bin, "sbatch", r#"SLURM_JOB_ID=4242 exec bash "$1""#);
    let fake = script(&bin, "steptune-fake", r#"printf '%s\n' "$@" > "$LOG/steptune.args"; exit "${FAKE_RC:-0}""#);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let submit = |rc: &str, mode: &str| {
        let _ = std::fs::remove_file(log.join("scontrol.args"));
        std::process::Command::new(bin.join("sbatch"))
            .arg(&job)
            .env("PATH", &path)
            .env("LOG", &log)
            .env("STEPTUNE", &fake)
            .env("FAKE_RC", rc)
            .env("FAKE_MODE", mode)
            .current_dir(d.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let lines = |f: &str| std::fs::read_to_string(log.join(f)).unwrap_or_default().lines().map(str::to_string).collect::<Vec<_>>();

    // A run that ends: srun's arguments, steptune's command line, no requeue.
    let status = submit("0", "").wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let srun = lines("srun.args");
    for a in ["--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--cpus-per-task=8", "--kill-on-bad-exit=1"] {
        assert!(srun.contains(&a.to_string()), "{a} not in {srun:?}");
    }
    assert_eq!(lines("steptune.args"), vec!["run", r, "--set", "training.max_steps=5"]);
    assert!(!log.join("scontrol.args").exists(), "no requeue after a clean exit");
    // steptune stopped by a signal (75): the job requeues itself; its exit code is kept.
    let status = submit("75", "").wait().unwrap();
    assert_eq!(status.code(), Some(75));
    assert_eq!(lines("scontrol.args"), vec!["requeue 4242"]);
    // Another failure is not requeued.
    let status = submit("1", "").wait().unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(!log.join("scontrol.args").exists());
    // USR1 to the batch shell (what --signal=B:USR1@120 does) reaches the tasks through srun.
    let _ = std::fs::remove_file(log.join("srun.started"));
    let mut child = submit("0", "signal");
    let started = std::time::Instant::now();
    while !log.join("srun.started").exists() {
        assert!(started.elapsed().as_secs() < 30, "the fake srun never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The trap is set before srun starts, so the shell is ready once srun is.
    let kill = std::process::Command::new("kill").args(["-USR1", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed().as_secs() > 60 {
            let _ = child.kill();
            panic!("the batch script did not end after USR1");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(75));
    assert_eq!(lines("srun.events"), vec!["usr1"]);
    assert_eq!(lines("scontrol.args"), vec!["requeue 4242"]);
}

/// A sweep launched as 2 data-parallel ranks (as srun launches it from the sbatch script): every
/// point trains on both, rank 0 alone prepares, links, writes sweep.json and speaks.
#[test]
fn a_sweep_runs_under_two_ranks() {
    use std::io::Read as _;
    let d = tempfile::tempdir().unwrap();
    let recipe = common::tiny_recipe(
        d.path(),
        "swdp",
        "{method: lora, lora_r: 2}",
        "{max_steps: 2, device: cpu, per_device_train_batch_size: 4, eval_strategy: steps, eval_steps: 2, save_strategy: no, ddp_timeout: 60}",
        "eval: {max_new_tokens: 4, max_samples: 2, compare_base: false}\n",
    );
    let r = recipe.to_str().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let children: Vec<std::process::Child> = (0..2)
        .map(|rank| {
            std::process::Command::new(env!("CARGO_BIN_EXE_steptune"))
                .args(["sweep", r, "--grid", "finetune.lora_r=2,4"])
                .current_dir(d.path())
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", "2")
                .env("LOCAL_RANK", rank.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .env("OMP_NUM_THREADS", "1")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let started = std::time::Instant::now();
    let mut results = Vec::new();
    for mut c in children {
        let status = loop {
            if let Some(s) = c.try_wait().unwrap() {
                break s;
            }
            if started.elapsed().as_secs() > 240 {
                let _ = c.kill();
                panic!("a rank of the sweep still runs after 240 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        let mut err = String::new();
        c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        results.push((status.code(), err));
    }
    for (rank, (code, err)) in results.iter().enumerate() {
        assert_eq!(*code, Some(0), "rank {rank}:\n{err}");
    }
    assert!(results[0].1.contains("sweep: 2 of 2 points to run") && results[0].1.contains("2 ranks"), "{}", results[0].1);
    assert!(!results[1].1.contains("sweep:"), "rank 1 is silent:\n{}", results[1].1);
    let root = d.path().join("run");
    for n in ["lora_r=2", "lora_r=4"] {
        assert_eq!(json(&root.join(n).join("train_result.json"))["steps"], 2, "{n}");
        assert!(root.join(n).join("report.json").exists(), "{n}");
    }
    let index = json(&root.join("sweep.json"));
    assert!(index["points"].as_array().unwrap().iter().all(|p| p["state"] == "done"), "{index}");
}
