//! Data parallelism: the one module that knows about ranks.
//!
//! Processes meet through torch.distributed's own engine (c10d, through the shim in
//! `csrc/dist.cpp`): a TCPStore rendezvous, then Gloo for CPU tensors or NCCL for CUDA tensors.
//! Who is who comes from the environment torchrun or Slurm's srun sets (or the same variables
//! set by hand). Without them, or with a world size of 1, there is no group at all: every
//! collective is a no-op and the run is the single process it always was.
//!
//! Every collective names what the job was doing when it failed, and asks the store which peer
//! stopped beating (each rank publishes a heartbeat with its current activity), so a dead or hung
//! rank ends the whole job within `training.ddp_timeout` with a message naming it.
use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

use crate::recipe::{DdpBackend, TrainingSection};

#[repr(C)]
struct RawGroup {
    _private: [u8; 0],
}

extern "C" {
    fn steptune_dist_init(
        host: *const c_char,
        port: c_int,
        rank: c_int,
        size: c_int,
        agent_store: c_int,
        timeout_ms: i64,
        backend: c_int,
        device_index: c_int,
        prefix: *const c_char,
        out: *mut *mut RawGroup,
    ) -> c_int;
    fn steptune_dist_all_reduce_sum(g: *mut RawGroup, t: *mut C_tensor) -> c_int;
    fn steptune_dist_broadcast(g: *mut RawGroup, t: *mut C_tensor, root: c_int) -> c_int;
    fn steptune_dist_barrier(g: *mut RawGroup) -> c_int;
    fn steptune_dist_set_activity(g: *mut RawGroup, what: *const c_char);
    fn steptune_dist_peer_report(g: *mut RawGroup, failed: *const c_char, settle_ms: i64) -> *mut c_char;
    fn steptune_dist_free_string(s: *mut c_char);
    fn steptune_dist_free(g: *mut RawGroup, healthy: c_int);
    fn steptune_last_error() -> *const c_char;
}

/// Flat gradient buckets of this many bytes (torch DDP's default bucket_cap_mb is 25).
const BUCKET_BYTES: i64 = 25 << 20;
/// How long a survivor waits after a failed collective before judging which peers stopped
/// beating (heartbeats come every second; the shim calls a peer dead after 3 s of silence).
const SETTLE_MS: i64 = 4000;

/// Who this process is, as the launcher said.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub rank: usize,
    pub world_size: usize,
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// torchrun's agent already serves the store: every rank is a client.
    pub agent_store: bool,
    /// Keys of a restarted torchrun attempt must not meet the old attempt's.
    pub attempt: u64,
    pub launcher: &'static str,
}

impl Launch {
    /// From the process environment; None when not launched as one of several ranks.
    pub fn from_env() -> Result<Option<Launch>> {
        Launch::from_vars(&|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// torchrun's variables (or the same set by hand) first, then Slurm's srun.
    pub fn from_vars(var: &dyn Fn(&str) -> Option<String>) -> Result<Option<Launch>> {
        let num = |k: &str| -> Result<Option<u64>> {
            var(k).map(|v| v.trim().parse::<u64>().with_context(|| format!("the environment variable {k}={v} is not a whole number"))).transpose()
        };
        let port = |default: Option<u16>| -> Result<u16> {
            match var("MASTER_PORT") {
                Some(p) => p.trim().parse::<u16>().with_context(|| format!("MASTER_PORT={p} is not a port number")),
                None => default.context("MASTER_PORT is not set: set MASTER_ADDR and MASTER_PORT (torchrun sets both)"),
            }
        };
        let (rank, size, local, addr, port, launcher) = if let (Some(rank), Some(size)) = (num("RANK")?, num("WORLD_SIZE")?) {
            if size <= 1 {
                return Ok(None);
            }
            let addr = var("MASTER_ADDR").context("RANK and WORLD_SIZE are set but MASTER_ADDR is not: set MASTER_ADDR and MASTER_PORT (torchrun sets them)")?;
            let launcher = if var("TORCHELASTIC_RUN_ID").is_some() { "torchrun" } else { "environment" };
            (rank, size, num("LOCAL_RANK")?.unwrap_or(0), addr, port(None)?, launcher)
        } else if var("SLURM_STEP_ID").is_some() && num("SLURM_PROCID")?.is_some() {
            // Inside an srun step (a batch script alone has no step, and is one process).
            let size = match num("SLURM_STEP_NUM_TASKS")? {
                Some(n) => n,
                None => num("SLURM_NTASKS")?.unwrap_or(1),
            };
            if size <= 1 {
                return Ok(None);
            }
            let rank = num("SLURM_PROCID")?.unwrap_or(0);
            let nodes = var("SLURM_STEP_NODELIST").or_else(|| var("SLURM_JOB_NODELIST")).or_else(|| var("SLURM_NODELIST"));
            let addr = match var("MASTER_ADDR") {
                Some(a) => a,
                None => nodes.as_deref().and_then(first_slurm_host).context("srun set no SLURM_JOB_NODELIST: set MASTER_ADDR to the first node's address")?,
            };
            // One port per job, so that jobs sharing a node do not meet each other.
            let job = num("SLURM_JOB_ID")?.unwrap_or(0);
            (rank, size, num("SLURM_LOCALID")?.unwrap_or(0), addr, port(Some(20000 + (job % 20000) as u16))?, "srun")
        } else {
            return Ok(None);
        };
        if rank >= size {
            bail!("rank {rank} is not below the world size {size}: check the launcher's RANK/WORLD_SIZE (or SLURM_PROCID/SLURM_NTASKS)");
        }
        Ok(Some(Launch {
            rank: rank as usize,
            world_size: size as usize,
            local_rank: local as usize,
            master_addr: addr,
            master_port: port,
            agent_store: var("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1"),
            attempt: num("TORCHELASTIC_RESTART_COUNT")?.unwrap_or(0),
            launcher,
        }))
    }
}

/// The first host of a Slurm node list: `gpu[07-09,12],cpu3` → `gpu07`.
pub fn first_slurm_host(list: &str) -> Option<String> {
    let list = list.trim();
    let end = list.find([',', '[']).unwrap_or(list.len());
    let prefix = &list[..end];
    if list[end..].starts_with('[') {
        let inner = &list[end + 1..];
        let first = inner.split([',', '-', ']']).next()?;
        return (!first.is_empty()).then(|| format!("{prefix}{first}"));
    }
    (!prefix.is_empty()).then(|| prefix.to_string())
}

/// A failure already reported by rank 0 on behalf of every rank: other ranks exit quietly, so a
/// bad recipe or a data error is printed once, not once per rank.
#[derive(Debug)]
pub struct Reported;

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped: rank 0 reported the error")
    }
}

impl std::error::Error for Reported {}

/// A failure every rank already knows of (through `agree`): rank 0 holds it as `Agreed`, the
/// others as `Reported`. It needs no further agreement.
#[derive(Debug)]
pub struct Agreed(pub String);

impl std::fmt::Display for Agreed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Agreed {}

pub fn is_reported(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Reported>())
}

pub fn is_agreed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Reported>() || c.is::<Agreed>())
}

struct Group(*mut RawGroup);

// SAFETY: the group is used from the main thread only; the shim's own heartbeat thread holds its
// own store connection and shares nothing with Rust but a mutex-guarded string.
unsafe impl Send for Group {}
unsafe impl Sync for Group {}

/// This process's place in the job, and the group it reduces with (none when it is alone).
pub struct World {
    pub rank: usize,
    pub size: usize,
    pub local_rank: usize,
    /// Where collectives run: the CPU for Gloo, this rank's GPU for NCCL.
    pub device: Device,
    pub backend: &'static str,
    group: Option<Group>,
    healthy: AtomicBool,
    closed: AtomicBool,
    /// Bytes summed and seconds spent in gradient all-reduces, for the metrics and benchmarks.
    reduced_bytes: AtomicU64,
    reduce_nanos: AtomicU64,
}

static WORLD: OnceLock<World> = OnceLock::new();

/// The job's world: what `init` built, or a single process when it was never called.
pub fn world() -> &'static World {
    WORLD.get_or_init(World::single)
}

/// Joins the job the environment describes, once per process. `training` gives the backend, the
/// timeout and the device (`auto`/`cuda` mean this rank's GPU, `cuda:LOCAL_RANK`).
pub fn init(training: Option<&TrainingSection>) -> Result<&'static World> {
    if let Some(w) = WORLD.get() {
        return Ok(w);
    }
    let world = match Launch::from_env()? {
        None => World::single(),
        Some(launch) => World::join(&launch, training)?,
    };
    Ok(WORLD.get_or_init(|| world))
}

impl World {
    pub fn single() -> World {
        World {
            rank: 0,
            size: 1,
            local_rank: 0,
            device: Device::Cpu,
            backend: "none",
            group: None,
            healthy: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            reduced_bytes: AtomicU64::new(0),
            reduce_nanos: AtomicU64::new(0),
        }
    }

    fn join(launch: &Launch, training: Option<&TrainingSection>) -> Result<World> {
        let defaults = TrainingSection::default();
        let t = training.unwrap_or(&defaults);
        let gpu = tch::Cuda::is_available() && t.device != "cpu";
        let backend = match t.ddp_backend {
            DdpBackend::Auto if gpu => DdpBackend::Nccl,
            DdpBackend::Auto => DdpBackend::Gloo,
            b => b,
        };
        if backend == DdpBackend::Nccl && !gpu {
            bail!("rank {}: training.ddp_backend is nccl but this rank sees no GPU (training.device {}): use gloo on CPUs", launch.rank, t.device);
        }
        // This rank's GPU, as train::device_of picks it (a task may see only its own).
        let gpu_index = launch.local_rank % (tch::Cuda::device_count().max(1) as usize);
        let device = if backend == DdpBackend::Nccl { Device::Cuda(gpu_index) } else { Device::Cpu };
        let host = CString::new(launch.master_addr.clone()).context("MASTER_ADDR holds a NUL byte")?;
        let prefix = CString::new(format!("/steptune/attempt_{}/", launch.attempt)).expect("no NUL");
        let mut raw: *mut RawGroup = std::ptr::null_mut();
        let timeout_ms = (t.ddp_timeout * 1000.0) as i64;
        let started = Instant::now();
        // SAFETY: the strings live for the call; on success the shim stores an owned group in `raw`.
        let rc = unsafe {
            steptune_dist_init(
                host.as_ptr(),
                launch.master_port as c_int,
                launch.rank as c_int,
                launch.world_size as c_int,
                launch.agent_store as c_int,
                timeout_ms,
                (backend == DdpBackend::Nccl) as c_int,
                gpu_index as c_int,
                prefix.as_ptr(),
                &mut raw,
            )
        };
        if rc != 0 {
            bail!(
                "rank {} of {} ({}) could not join the job at {}:{} within {:.0} s: {}\n\
                 Check that all {} processes started, that this node reaches MASTER_ADDR:MASTER_PORT, and that no other job uses the port \
                 (training.ddp_timeout is {} s).",
                launch.rank,
                launch.world_size,
                launch.launcher,
                launch.master_addr,
                launch.master_port,
                started.elapsed().as_secs_f64(),
                last_error(),
                launch.world_size,
                t.ddp_timeout
            );
        }
        Ok(World {
            rank: launch.rank,
            size: launch.world_size,
            local_rank: launch.local_rank,
            device,
            backend: if backend == DdpBackend::Nccl { "nccl" } else { "gloo" },
            group: Some(Group(raw)),
            healthy: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            reduced_bytes: AtomicU64::new(0),
            reduce_nanos: AtomicU64::new(0),
        })
    }

    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// What this rank is doing now; peers quote it if this rank dies or hangs.
    pub fn doing(&self, what: &str) {
        if let Some(g) = &self.group {
            let c = CString::new(what.replace('\0', " ")).expect("no NUL");
            // SAFETY: the shim copies the string under its mutex.
            unsafe { steptune_dist_set_activity(g.0, c.as_ptr()) };
        }
    }

    /// Runs one collective; a failure says what the job was doing and which peers stopped.
    fn collective(&self, what: &str, call: impl FnOnce(*mut RawGroup) -> c_int) -> Result<()> {
        let Some(g) = &self.group else { return Ok(()) };
        if self.closed.load(Ordering::SeqCst) {
            bail!("rank {}: {what} after the process group was shut down", self.rank);
        }
        if call(g.0) == 0 {
            return Ok(());
        }
        let error = last_error();
        self.healthy.store(false, Ordering::SeqCst);
        // SAFETY: the shim returns a malloc'ed string, freed right after copying.
        let failed = CString::new(what.replace('\0', " ")).expect("no NUL");
        let report = unsafe {
            let p = steptune_dist_peer_report(g.0, failed.as_ptr(), SETTLE_MS);
            let s = CStr::from_ptr(p).to_string_lossy().into_owned();
            steptune_dist_free_string(p);
            s
        };
        bail!(
            "{what} failed: {}\nWhat the other ranks said last (their heartbeats, once a second):\n{}\
             The job stops here; the last checkpoint written by rank 0 is intact, and `steptune train` resumes from it.",
            error.trim(),
            report
        )
    }

    /// Sums `t` over every rank, in place.
    pub fn all_reduce_sum(&self, t: &mut Tensor, what: &str) -> Result<()> {
        // SAFETY (both): the tensor is live for the call; the shim keeps no reference to it.
        self.in_place(t, what, |g, on| unsafe { steptune_dist_all_reduce_sum(g, on) })
    }

    /// Overwrites `t` with rank 0's.
    pub fn broadcast(&self, t: &mut Tensor, what: &str) -> Result<()> {
        self.in_place(t, what, |g, on| unsafe { steptune_dist_broadcast(g, on, 0) })
    }

    /// Runs `call` on a dense contiguous copy of `t` on the group's device (`t` itself when it is
    /// one already), and copies the result back into `t` when it was a copy.
    fn in_place(&self, t: &mut Tensor, what: &str, call: impl FnOnce(*mut RawGroup, *mut C_tensor) -> c_int) -> Result<()> {
        if self.group.is_none() {
            return Ok(());
        }
        let mut on = t.to_device(self.device).contiguous();
        self.collective(what, |g| call(g, on.as_mut_ptr()))?;
        if on.data_ptr() != t.data_ptr() {
            let _guard = tch::no_grad_guard();
            let _ = t.copy_(&on);
        }
        Ok(())
    }

    pub fn barrier(&self, what: &str) -> Result<()> {
        self.collective(what, |g| unsafe { steptune_dist_barrier(g) })
    }

    /// Element-wise sums of a few numbers over every rank (exact in f64 for counts).
    pub fn sum_f64(&self, values: &[f64], what: &str) -> Result<Vec<f64>> {
        if self.group.is_none() {
            return Ok(values.to_vec());
        }
        let mut t = Tensor::from_slice(values).to_device(self.device);
        self.all_reduce_sum(&mut t, what)?;
        Ok(Vec::<f64>::try_from(&t.to_device(Device::Cpu))?)
    }

    /// Every rank's bytes, in rank order.
    pub fn all_gather_bytes(&self, bytes: &[u8], what: &str) -> Result<Vec<Vec<u8>>> {
        if self.group.is_none() {
            return Ok(vec![bytes.to_vec()]);
        }
        let mut lengths = vec![0f64; self.size];
        lengths[self.rank] = bytes.len() as f64;
        let lengths: Vec<usize> = self.sum_f64(&lengths, what)?.iter().map(|&l| l as usize).collect();
        let width = lengths.iter().copied().max().unwrap_or(0).max(1);
        // Each rank fills its own row of zeros; the sum is everyone's rows.
        let mut rows = vec![0u8; self.size * width];
        rows[self.rank * width..self.rank * width + bytes.len()].copy_from_slice(bytes);
        let mut t = Tensor::from_slice(&rows).to_device(self.device);
        self.all_reduce_sum(&mut t, what)?;
        let all = Vec::<u8>::try_from(&t.to_device(Device::Cpu))?;
        Ok(lengths.iter().enumerate().map(|(r, &n)| all[r * width..r * width + n].to_vec()).collect())
    }

    /// `agree`, unless the failure is one every rank already knows of.
    pub fn agree_unless_agreed<T>(&self, what: &str, result: Result<T>) -> Result<T> {
        match result {
            Err(e) if is_agreed(&e) => Err(e),
            other => self.agree(what, other),
        }
    }

    /// Every rank's outcome of the same step: when any rank failed, rank 0 reports each distinct
    /// message once, naming the ranks, and the others stop quietly (`Reported`).
    pub fn agree<T>(&self, what: &str, result: Result<T>) -> Result<T> {
        if self.group.is_none() {
            return result;
        }
        let mine = match &result {
            Ok(_) => String::new(),
            Err(e) => format!("{e:#}"),
        };
        let all = self.all_gather_bytes(mine.as_bytes(), what)?;
        let mut failures: Vec<(Vec<usize>, String)> = Vec::new();
        for (rank, m) in all.iter().enumerate().filter(|(_, m)| !m.is_empty()) {
            let m = String::from_utf8_lossy(m).into_owned();
            match failures.iter_mut().find(|(_, f)| *f == m) {
                Some((ranks, _)) => ranks.push(rank),
                None => failures.push((vec![rank], m)),
            }
        }
        if failures.is_empty() {
            return result;
        }
        if !self.is_main() {
            return Err(Reported.into());
        }
        if failures.len() == 1 && failures[0].0.len() == self.size {
            return Err(Agreed(format!("{} (on every rank)", failures[0].1)).into());
        }
        let lines: Vec<String> = failures.into_iter().map(|(ranks, m)| format!("{}: {m}", rank_list(&ranks))).collect();
        Err(Agreed(format!("{what} failed on some ranks:\n{}", lines.join("\n"))).into())
    }

    /// For an error every rank meets alike (a NaN loss summed across ranks): the other ranks stop
    /// quietly here, and rank 0 goes on to report it.
    pub fn quiet_unless_main(&self) -> Result<()> {
        if self.is_main() {
            Ok(())
        } else {
            Err(Reported.into())
        }
    }

    /// Rank 0 runs `step` first (it writes files the others then read), then the others; a
    /// failure on rank 0 stops the others before they start.
    pub fn main_first<T>(&self, what: &str, mut step: impl FnMut() -> Result<T>) -> Result<T> {
        if self.group.is_none() {
            return step();
        }
        if self.is_main() {
            let result = self.agree(what, step());
            let result = result.and_then(|v| self.agree(what, Ok(())).map(|_| v));
            return result;
        }
        self.agree(what, Ok(()))?;
        let result = step();
        self.agree(what, result)
    }

    /// Stops the run unless every rank holds the same `value` (a fingerprint of what it loaded),
    /// naming the ranks that differ from rank 0.
    pub fn check_same(&self, what: &str, value: &str) -> Result<()> {
        if self.group.is_none() {
            return Ok(());
        }
        let all = self.all_gather_bytes(value.as_bytes(), &format!("comparing {what}"))?;
        let differ: Vec<usize> = (1..self.size).filter(|&r| all[r] != all[0]).collect();
        if differ.is_empty() {
            return Ok(());
        }
        let mine = if differ.contains(&self.rank) { " (this rank is one of them)" } else { "" };
        bail!(
            "{} loaded different {what} than rank 0{mine}: rank 0 has {}, {}. Every rank must read the same files \
             (a shared output_dir and the same model folder on every node).",
            rank_list(&differ),
            String::from_utf8_lossy(&all[0]),
            differ.iter().map(|&r| format!("rank {r} has {}", String::from_utf8_lossy(&all[r]))).collect::<Vec<_>>().join(", ")
        )
    }

    /// Rank 0's values into `tensors` on every rank (trainable weights at the start), in flat
    /// buckets.
    pub fn broadcast_tensors(&self, tensors: &[Tensor], what: &str) -> Result<()> {
        if self.group.is_none() {
            return Ok(());
        }
        for bucket in buckets(tensors) {
            let mut flat = Tensor::cat(&bucket.iter().map(|t| t.detach().reshape([-1])).collect::<Vec<_>>(), 0);
            self.broadcast(&mut flat, what)?;
            unflatten_into(&flat, &bucket);
        }
        Ok(())
    }

    /// Sums the gradients of `params` over every rank, in flat buckets. A parameter without a
    /// gradient contributes zeros (every rank must reduce the same bucket layout).
    pub fn all_reduce_grads(&self, params: &[Tensor], what: &str) -> Result<()> {
        if self.group.is_none() {
            return Ok(());
        }
        let started = Instant::now();
        let grads: Vec<Tensor> = params
            .iter()
            .map(|p| {
                let g = p.grad();
                if g.defined() {
                    g
                } else {
                    // Seeds a zero .grad (a rank with no micro-batch this step, before any backward).
                    let zero = (p * 0.0).sum(p.kind());
                    zero.backward();
                    p.grad()
                }
            })
            .collect();
        for bucket in buckets(&grads) {
            let mut flat = Tensor::cat(&bucket.iter().map(|g| g.reshape([-1])).collect::<Vec<_>>(), 0);
            self.reduced_bytes.fetch_add((flat.numel() * flat.kind().elt_size_in_bytes()) as u64, Ordering::Relaxed);
            self.all_reduce_sum(&mut flat, what)?;
            unflatten_into(&flat, &bucket);
        }
        self.reduce_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Bytes summed and seconds spent in gradient all-reduces since the last call.
    pub fn take_reduce_stats(&self) -> (u64, f64) {
        let b = self.reduced_bytes.swap(0, Ordering::Relaxed);
        let n = self.reduce_nanos.swap(0, Ordering::Relaxed);
        (b, n as f64 * 1e-9)
    }

    /// `n` items dealt to ranks in contiguous blocks (rank order is item order when gathered).
    pub fn my_share(&self, n: usize) -> std::ops::Range<usize> {
        share(n, self.rank, self.size)
    }
}

/// Ends this rank's membership; peers read that it finished, or that it stopped with `error`.
/// The world is a static, never dropped, so main calls this before exiting.
pub fn shutdown(error: Option<&anyhow::Error>) {
    if let Some(w) = WORLD.get() {
        if let Some(g) = &w.group {
            if let Some(e) = error {
                w.healthy.store(false, Ordering::SeqCst);
                let first = format!("{e:#}").lines().next().unwrap_or_default().chars().take(300).collect::<String>();
                w.doing(&format!("stopped with an error: {first}"));
            }
            if !w.closed.swap(true, Ordering::SeqCst) {
                // SAFETY: the pointer is not used after (`closed` turns every collective away).
                unsafe { steptune_dist_free(g.0, w.healthy.load(Ordering::SeqCst) as c_int) };
            }
        }
    }
}

/// Rank `rank`'s contiguous block of `n` items dealt to `size` ranks.
pub fn share(n: usize, rank: usize, size: usize) -> std::ops::Range<usize> {
    let per = n / size;
    let extra = n % size;
    let start = rank * per + rank.min(extra);
    start..start + per + usize::from(rank < extra)
}

fn last_error() -> String {
    // SAFETY: a NUL-terminated thread-local string.
    unsafe { CStr::from_ptr(steptune_last_error()) }.to_string_lossy().into_owned()
}

fn rank_list(ranks: &[usize]) -> String {
    let names: Vec<String> = ranks.iter().map(usize::to_string).collect();
    format!("rank{} {}", if ranks.len() > 1 { "s" } else { "" }, names.join(", "))
}

/// Consecutive tensors of one dtype and device, up to BUCKET_BYTES each (a larger tensor alone).
fn buckets(tensors: &[Tensor]) -> Vec<Vec<Tensor>> {
    let mut out: Vec<Vec<Tensor>> = Vec::new();
    let mut bytes = 0i64;
    for t in tensors {
        let size = (t.numel() * t.kind().elt_size_in_bytes()) as i64;
        let fits = out.last().is_some_and(|b| {
            let first = &b[0];
            first.kind() == t.kind() && first.device() == t.device() && bytes + size <= BUCKET_BYTES
        });
        if fits {
            out.last_mut().expect("a bucket").push(t.shallow_clone());
            bytes += size;
        } else {
            out.push(vec![t.shallow_clone()]);
            bytes = size;
        }
    }
    out
}

/// Copies a flat bucket back into the tensors it was cut from.
fn unflatten_into(flat: &Tensor, bucket: &[Tensor]) {
    let _guard = tch::no_grad_guard();
    let mut offset = 0i64;
    for t in bucket {
        let n = t.numel() as i64;
        let mut dst = t.shallow_clone();
        let _ = dst.copy_(&flat.narrow(0, offset, n).view_as(t));
        offset += n;
    }
}

/// The exact integer checksum of a tensor's bytes: a plain sum and a position-weighted sum of its
/// elements read as integers, computed on its own device in chunks (no float rounding, so every
/// rank that loaded the same bytes gets the same value).
pub fn checksum(t: &Tensor) -> (i64, i64) {
    let _guard = tch::no_grad_guard();
    let int_kind = match t.kind().elt_size_in_bytes() {
        1 => Kind::Uint8,
        2 => Kind::Int16,
        4 => Kind::Int,
        _ => Kind::Int64,
    };
    let flat = t.detach().contiguous().reshape([-1]).view_dtype(int_kind);
    let n = flat.numel() as i64;
    let (mut s1, mut s2) = (0i64, 0i64);
    let chunk = 1i64 << 22;
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let x = flat.narrow(0, start, len).to_kind(Kind::Int64);
        // Weights 1..=len (and the chunk's index), so swapped elements or chunks change the sum.
        let w = Tensor::arange_start(1, len + 1, (Kind::Int64, x.device()));
        s1 = s1.wrapping_add(x.sum(Kind::Int64).int64_value(&[]));
        let weighted = (&x * &w).sum(Kind::Int64).int64_value(&[]);
        s2 = s2.wrapping_add(weighted.wrapping_mul(start / chunk + 1));
        start += len;
    }
    (s1, s2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn slurm_node_lists_give_their_first_host() {
        assert_eq!(first_slurm_host("gpu[07-09,12],cpu3").as_deref(), Some("gpu07"));
        assert_eq!(first_slurm_host("node001").as_deref(), Some("node001"));
        assert_eq!(first_slurm_host("a1,b2").as_deref(), Some("a1"));
        assert_eq!(first_slurm_host("n[3,5]").as_deref(), Some("n3"));
        assert_eq!(first_slurm_host(""), None);
    }

    #[test]
    fn torchrun_and_srun_environments_are_read() {
        let t = Launch::from_vars(&vars(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "10.1.2.3"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RUN_ID", "x"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((t.rank, t.world_size, t.local_rank, t.master_port, t.agent_store, t.attempt, t.launcher), (1, 4, 1, 29500, true, 2, "torchrun"));
        let s = Launch::from_vars(&vars(&[("SLURM_STEP_ID", "0"), ("SLURM_PROCID", "3"), ("SLURM_NTASKS", "8"), ("SLURM_LOCALID", "1"), ("SLURM_JOB_NODELIST", "gpu[07-08]"), ("SLURM_JOB_ID", "123456")]))
            .unwrap()
            .unwrap();
        assert_eq!((s.rank, s.world_size, s.local_rank, s.master_addr.as_str(), s.master_port, s.agent_store), (3, 8, 1, "gpu07", 20000 + (123456 % 20000) as u16, false));
        // A batch script (no srun step), one rank, or nothing at all: a single process.
        assert_eq!(Launch::from_vars(&vars(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "8")])).unwrap(), None);
        assert_eq!(Launch::from_vars(&vars(&[("RANK", "0"), ("WORLD_SIZE", "1")])).unwrap(), None);
        assert_eq!(Launch::from_vars(&vars(&[])).unwrap(), None);
        // Half a configuration is an error that says what to set.
        let e = Launch::from_vars(&vars(&[("RANK", "0"), ("WORLD_SIZE", "2")])).unwrap_err().to_string();
        assert!(e.contains("MASTER_ADDR"), "{e}");
        let e = Launch::from_vars(&vars(&[("RANK", "2"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "1")])).unwrap_err().to_string();
        assert!(e.contains("rank 2 is not below"), "{e}");
    }

    #[test]
    fn shares_cover_every_item_once_in_rank_order() {
        for n in [0, 1, 5, 8] {
            let mut all = Vec::new();
            for rank in 0..3 {
                all.extend(share(n, rank, 3));
            }
            assert_eq!(all, (0..n).collect::<Vec<_>>());
        }
    }

    #[test]
    fn checksums_are_exact_and_see_order() {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
        let b = Tensor::from_slice(&[2.0f32, 1.0, 3.0]);
        assert_eq!(checksum(&a), checksum(&a.copy()));
        assert_ne!(checksum(&a), checksum(&b));
        assert_ne!(checksum(&a.to_kind(Kind::BFloat16)), checksum(&b.to_kind(Kind::BFloat16)));
    }
}
