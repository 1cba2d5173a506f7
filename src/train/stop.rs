//! Stopping safely. SIGUSR1 (Slurm's warning before a time limit, `--signal=USR1@120`), SIGTERM
//! (preemption, scancel, torchrun shutting down) and SIGINT (Ctrl-C) during training finish the
//! current optimizer step, write a checkpoint and exit with [`EXIT_CODE`], so a requeued job
//! resumes exactly where it stopped. A second signal, or one outside the training loop, ends the
//! process at once. Under data parallelism the request is summed across ranks with the step's
//! loss, so every rank stops after the same step.
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use anyhow::Result;

/// The exit code of a run stopped by a signal with its checkpoint written (EX_TEMPFAIL: "try
/// again"): batch scripts requeue on it.
pub const EXIT_CODE: i32 = 75;

static REQUESTED: AtomicI32 = AtomicI32::new(0);
static IN_LOOP: AtomicBool = AtomicBool::new(false);

const SIGNALS: [i32; 3] = [signal_hook::consts::SIGUSR1, signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT];

/// Takes over SIGUSR1, SIGTERM and SIGINT for this process (the commands that train).
pub fn install() -> Result<()> {
    for sig in SIGNALS {
        // SAFETY: the action only touches atomics and calls `_exit`, both async-signal-safe.
        unsafe {
            signal_hook::low_level::register(sig, move || {
                if IN_LOOP.load(Ordering::SeqCst) && REQUESTED.load(Ordering::SeqCst) == 0 {
                    REQUESTED.store(sig, Ordering::SeqCst);
                } else {
                    // As the default action would: the process ends now, with 128 + the signal.
                    signal_hook::low_level::exit(128 + sig);
                }
            })?;
        }
    }
    Ok(())
}

/// While alive, a signal asks the training loop to stop after its step instead of ending the process.
pub struct InLoop;

impl InLoop {
    pub fn enter() -> InLoop {
        IN_LOOP.store(true, Ordering::SeqCst);
        InLoop
    }
}

impl Drop for InLoop {
    fn drop(&mut self) {
        IN_LOOP.store(false, Ordering::SeqCst);
    }
}

/// The signal that asked to stop, if one did.
pub fn requested() -> Option<i32> {
    match REQUESTED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        s if s == signal_hook::consts::SIGUSR1 => "SIGUSR1",
        s if s == signal_hook::consts::SIGTERM => "SIGTERM",
        s if s == signal_hook::consts::SIGINT => "SIGINT",
        _ => "a signal",
    }
}

/// Training stopped on request with everything needed to resume on disk.
#[derive(Debug)]
pub struct Stopped {
    pub step: u64,
    /// The signal, when this rank received one (another rank may have).
    pub signal: Option<i32>,
    pub checkpoint: PathBuf,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stopped by {} after step {}; the checkpoint {} holds everything to resume: run the same command again \
             (exit code {EXIT_CODE}, which batch scripts requeue on)",
            self.signal.map(signal_name).unwrap_or("a signal to another rank"),
            self.step,
            self.checkpoint.display()
        )
    }
}

impl std::error::Error for Stopped {}
