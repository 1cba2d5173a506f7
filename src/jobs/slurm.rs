//! `steptune slurm`: prints a complete sbatch script for a run or a sweep.
//!
//! The script is printed, not submitted, so it can be read, kept with the results and edited for
//! a site's modules. Its one job beyond launching is preemption: Slurm signals the batch shell
//! before the time limit, the shell passes that to srun's tasks, steptune checkpoints and exits
//! with 75, and the shell requeues the job, whose next start resumes from the checkpoint.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::sweep::Sweep;
use crate::recipe::{LoadedRecipe, Override};

/// The exit code of a run stopped by a signal after writing its checkpoint (EX_TEMPFAIL).
pub const EXIT_STOPPED: i32 = 75;

#[derive(Debug, Clone)]
pub struct SlurmOptions {
    pub nodes: u32,
    /// GPUs per node, one task each; 0 for a CPU job of one task per node.
    pub gpus_per_node: u32,
    pub cpus_per_task: u32,
    pub time: String,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub job_name: Option<String>,
    pub mem: Option<String>,
    /// The steptune binary the job runs (the script lets $STEPTUNE replace it).
    pub binary: PathBuf,
    /// The job's working directory (relative recipe paths and output_dir resolve against it).
    pub workdir: PathBuf,
}

/// A word for bash: as is when plain, else single-quoted.
fn quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_./=:,+-@%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn absolute(p: &Path, base: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}

pub fn script(recipe: Option<&Path>, overrides: &[String], grid: &[String], o: &SlurmOptions) -> Result<String> {
    if o.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if o.time.trim().is_empty() {
        bail!("--time must be a Slurm time limit such as 24:00:00 or 2-00:00:00");
    }
    // The recipe and every override are checked now, not when the job starts hours later.
    let loaded = LoadedRecipe::load_or_quickstart(recipe, &Override::parse_all(overrides)?)?;
    let sweep = if grid.is_empty() { None } else { Some(Sweep::plan(recipe, overrides, grid)?) };
    let name = o.job_name.clone().unwrap_or_else(|| loaded.recipe.name.clone());
    let tasks = o.gpus_per_node.max(1);
    let recipe_arg = recipe.map(|p| absolute(p, &o.workdir));

    let mut args: Vec<String> = vec![if sweep.is_some() { "sweep".into() } else { "run".into() }];
    if let Some(r) = &recipe_arg {
        args.push(quote(&r.display().to_string()));
    }
    for g in grid {
        args.push("--grid".into());
        args.push(quote(g));
    }
    for s in overrides {
        args.push("--set".into());
        args.push(quote(s));
    }

    let mut s = String::new();
    let what = match (&sweep, &recipe_arg) {
        (Some(sw), _) => format!("a sweep of {} points of {}, one array task per point", sw.points.len(), recipe_arg.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "the embedded quickstart".into())),
        (None, Some(r)) => format!("the main job of {}", r.display()),
        (None, None) => "the main job of the embedded quickstart recipe".into(),
    };
    let _ = writeln!(s, "#!/bin/bash");
    let _ = writeln!(s, "# Printed by `steptune slurm` (steptune {}): {what}.", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(s, "# Submit with: sbatch THIS_FILE      Output: {}", sweep.as_ref().map(|sw| sw.root.clone()).unwrap_or_else(|| loaded.output_dir()).display());
    let _ = writeln!(s, "#SBATCH --job-name={}", quote(&name));
    let _ = writeln!(s, "#SBATCH --nodes={}", o.nodes);
    let _ = writeln!(s, "#SBATCH --ntasks-per-node={tasks}");
    if o.gpus_per_node > 0 {
        let _ = writeln!(s, "#SBATCH --gpus-per-node={}", o.gpus_per_node);
    }
    let _ = writeln!(s, "#SBATCH --cpus-per-task={}", o.cpus_per_task);
    if let Some(m) = &o.mem {
        let _ = writeln!(s, "#SBATCH --mem={m}");
    }
    let _ = writeln!(s, "#SBATCH --time={}", o.time.trim());
    if let Some(p) = &o.partition {
        let _ = writeln!(s, "#SBATCH --partition={p}");
    }
    if let Some(a) = &o.account {
        let _ = writeln!(s, "#SBATCH --account={a}");
    }
    if let Some(sw) = &sweep {
        let _ = writeln!(s, "#SBATCH --array=0-{}", sw.points.len() - 1);
    }
    let _ = writeln!(s, "#SBATCH --chdir={}", o.workdir.display());
    let log = if sweep.is_some() { "slurm-%x-%A_%a.out" } else { "slurm-%x-%j.out" };
    let _ = writeln!(s, "#SBATCH --output={log}");
    let _ = writeln!(s, "#SBATCH --open-mode=append");
    let _ = writeln!(s, "#SBATCH --signal=B:USR1@120");
    let _ = writeln!(s, "#SBATCH --requeue");
    let _ = write!(
        s,
        r#"
# Logs: {log} in {workdir} (appended to across requeues; each line
# starts with its task's rank). The run's own files are in its output folder.
#
# Preemption and time limits. 120 s before the time limit Slurm sends USR1 to this batch shell
# only (B:). The trap below forwards it to srun, which passes it on to every steptune task; they
# finish the current step, write a checkpoint and exit with {code} ("stopped by a signal; requeue or
# rerun to resume"). This script then requeues the job. The next start runs the same command:
# `steptune run` resumes training from the newest checkpoint (a finished run is not trained
# again) and `steptune sweep` skips finished points and resumes the unfinished one. A job the
# scheduler preempts gets TERM on every task, which steptune answers the same way (checkpoint,
# exit 75); with PreemptMode=REQUEUE Slurm requeues it itself.

set -uo pipefail

# ---- Site set-up: load what your cluster needs here, for example
# module load gcc/13 cuda/12.4
# export LIBTORCH=/path/to/libtorch        # if steptune was built against a libtorch elsewhere
# export GLOO_SOCKET_IFNAME=ib0            # Gloo (CPU) traffic across nodes on this interface
# export NCCL_SOCKET_IFNAME=ib0            # NCCL bootstrap interface, where needed
# ----

STEPTUNE=${{STEPTUNE:-{binary}}}
export OMP_NUM_THREADS=${{SLURM_CPUS_PER_TASK:-1}}

srun_pid=""
forwarded=0
stop_asked=0
forward() {{
    forwarded=1
    stop_asked=1
    echo "steptune-slurm: USR1: asking every task to checkpoint and stop"
    if [ -n "$srun_pid" ]; then kill -USR1 "$srun_pid" 2>/dev/null || true; fi
}}
trap forward USR1

# One task per GPU (the data-parallel rendezvous reads SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID
# and the first host of the node list; MASTER_PORT is 20000 + job id mod 20000). Every task sees
# all GPUs of its node and takes cuda:SLURM_LOCALID, so GPUs are not bound per task. srun needs
# --cpus-per-task of its own since Slurm 22.05.
srun --nodes={nodes} --ntasks-per-node={tasks}{gpus} --cpus-per-task={cpus} --kill-on-bad-exit=1 --label \
    "$STEPTUNE" {args} &
srun_pid=$!
# A signal that came before srun's pid was known is passed on now.
if [ "$stop_asked" = 1 ]; then kill -USR1 "$srun_pid" 2>/dev/null || true; fi
# A trapped signal interrupts `wait`: wait again until srun itself has ended.
while :; do
    forwarded=0
    wait "$srun_pid"
    rc=$?
    [ "$forwarded" = 1 ] || break
done

if [ "$rc" -eq {code} ]; then
    echo "steptune-slurm: stopped with a checkpoint (exit {code}); requeueing job ${{SLURM_JOB_ID}}"
    scontrol requeue "${{SLURM_JOB_ID}}"
fi
exit "$rc"
"#,
        workdir = o.workdir.display(),
        code = EXIT_STOPPED,
        binary = quote(&o.binary.display().to_string()),
        nodes = o.nodes,
        gpus = if o.gpus_per_node > 0 { format!(" --gpus-per-node={}", o.gpus_per_node) } else { String::new() },
        cpus = o.cpus_per_task,
        args = args.join(" "),
    );
    Ok(s)
}

/// The options' defaults where a flag was not given: this binary and the current folder.
pub fn defaults_binary_and_workdir() -> Result<(PathBuf, PathBuf)> {
    let bin = std::env::current_exe().context("cannot find the steptune binary's path")?;
    let cwd = std::env::current_dir().context("cannot read the current folder")?;
    Ok((bin, cwd))
}

#[cfg(test)]
mod tests {
    #[test]
    fn words_are_quoted_for_bash() {
        assert_eq!(super::quote("training.learning_rate=1e-4"), "training.learning_rate=1e-4");
        assert_eq!(super::quote("a b"), "'a b'");
        assert_eq!(super::quote("it's"), "'it'\\''s'");
        assert_eq!(super::quote("[q_proj, v_proj]"), "'[q_proj, v_proj]'");
    }
}
