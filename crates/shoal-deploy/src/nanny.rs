//! The nanny: one worker process, started from a [`WorkerLaunch`], watched,
//! and started again when it asks to (a cluster restart) or passes its
//! memory limit. `LocalCluster` watches many on a thread of its own;
//! `shoal worker` watches one until it ends.
//!
//! # The memory guard
//!
//! With a terminate fraction set
//! ([`LocalClusterBuilder::memory_terminate`](crate::LocalClusterBuilder::memory_terminate),
//! `shoal worker --memory-terminate`), a worker process whose resident
//! memory passes that fraction of its memory limit is killed and started
//! afresh, as Dask's nanny does at 95 %.
//!
//! The worker itself spills results to disk past its target and stops
//! taking tasks past its pause fraction, but it counts only the results it
//! holds. A task that allocates far more than its result (or leaks) is what
//! this guard is for: the machine's memory is shared, and one runaway
//! worker must not take the node (and every other worker on it) down with
//! the kernel's out-of-memory killer. The scheduler sees the worker lost and
//! runs its tasks elsewhere; a task that kills every worker it runs on fails
//! with `WorkerLost` once its allowed attempts are spent.
//!
//! Resident memory includes the program itself (some megabytes): the guard
//! is off by default because a memory limit of results alone may be smaller
//! than that.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::RESTART_EXIT_CODE;
use crate::launch::WorkerLaunch;

/// How often a nanny looks at its processes: a restart waits about this
/// long for its new process, and each look is one `waitpid` (and, with the
/// memory guard, one read of `/proc`) per worker.
pub const NANNY_POLL: Duration = Duration::from_millis(20);

/// The least time between a worker killed for memory and its next start:
/// a process over the limit as soon as it starts (a limit near the
/// program's own size) is not restarted in a tight loop.
const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// What a worker process runs: a program linked with shoal, and its
/// arguments.
#[derive(Clone, Debug)]
pub struct WorkerProgram {
    /// The executable.
    pub exe: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
}

impl WorkerProgram {
    /// This program, re-executed with no arguments: it becomes a worker
    /// before its `main` runs (see `shoal::init`).
    ///
    /// # Errors
    /// When the running executable cannot be found.
    pub fn this_program() -> std::io::Result<WorkerProgram> {
        Ok(WorkerProgram { exe: std::env::current_exe()?, args: Vec::new() })
    }
}

/// How a watched process stands after a look.
#[derive(Debug)]
pub enum Watched {
    /// Running (or waiting for its restart).
    Running,
    /// A new process was started in its place (or will be after a pause).
    Restarted(Restart),
    /// It ended for good, with this status.
    Exited(ExitStatus),
}

/// Why a worker process was replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// It exited to restart: its cluster restarted.
    Asked,
    /// Its resident memory passed its terminate fraction.
    OverMemory,
}

/// A worker process under its nanny.
pub struct WorkerProcess {
    launch: WorkerLaunch,
    program: WorkerProgram,
    name: String,
    child: Child,
    started: Instant,
    /// When the nanny starts a new process in this one's place.
    restart_at: Option<Instant>,
}

impl WorkerProcess {
    /// Starts `program` as the worker `launch` describes; `launch` must
    /// name the worker, so that its new processes keep the name.
    ///
    /// # Errors
    /// When the process cannot start.
    pub fn start(mut launch: WorkerLaunch, program: WorkerProgram) -> std::io::Result<WorkerProcess> {
        launch.nanny = true;
        let name = launch.name.clone().unwrap_or_else(crate::launch::default_name);
        launch.name = Some(name.clone());
        let child = spawn(&launch, &program)?;
        Ok(WorkerProcess { launch, program, name, child, started: Instant::now(), restart_at: None })
    }

    /// The worker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id of its current process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One look: restarts the process if it asked to (it exited with
    /// [`RESTART_EXIT_CODE`]) or passed its memory limit, and says how it
    /// stands.
    ///
    /// # Errors
    /// When its state cannot be read (then it is stopped: no worker runs
    /// without its nanny) or a new process cannot start.
    pub fn watch(&mut self) -> std::io::Result<Watched> {
        if let Some(at) = self.restart_at {
            if Instant::now() < at {
                return Ok(Watched::Running);
            }
            self.restart_at = None;
            self.child = spawn(&self.launch, &self.program)?;
            self.started = Instant::now();
            return Ok(Watched::Running);
        }
        let exited = match self.child.try_wait() {
            Ok(exited) => exited,
            Err(e) => {
                self.stop();
                return Err(e);
            }
        };
        match exited {
            Some(status) if status.code() == Some(RESTART_EXIT_CODE) => {
                self.child = spawn(&self.launch, &self.program)?;
                self.started = Instant::now();
                Ok(Watched::Restarted(Restart::Asked))
            }
            Some(status) => Ok(Watched::Exited(status)),
            // Only a process still running is measured: the pid of one that
            // ended may belong to another process by now.
            None => match self.launch.memory_terminate.and_then(|fraction| {
                past_memory_terminate(&self.name, self.child.id(), self.launch.memory_limit, fraction)
            }) {
                Some(why) => {
                    let pause = self.stop_over_memory(&why);
                    self.restart_at = Some(Instant::now() + pause);
                    Ok(Watched::Restarted(Restart::OverMemory))
                }
                None => Ok(Watched::Running),
            },
        }
    }

    /// Kills the process, waits for it, and removes what it could not (see
    /// [`remove_worker_files`]).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        remove_worker_files(self.child.id(), &self.name, self.launch.local_directory.as_deref());
    }

    /// Kills the process for passing its memory limit (`why` says how),
    /// removes what it leaves behind, and says how long to wait before
    /// starting the next one.
    fn stop_over_memory(&mut self, why: &str) -> Duration {
        eprintln!("shoal: {why}");
        self.stop();
        let lived = self.started.elapsed();
        if lived >= RESTART_PAUSE {
            return Duration::ZERO;
        }
        eprintln!(
            "shoal: worker {} passed its limit {lived:.1?} after starting; is the memory limit larger than the \
             program itself? starting it again in {RESTART_PAUSE:?}",
            self.name
        );
        RESTART_PAUSE
    }
}

/// Starts one process of a worker.
fn spawn(launch: &WorkerLaunch, program: &WorkerProgram) -> std::io::Result<Child> {
    let mut command = Command::new(&program.exe);
    command.args(&program.args).stdin(Stdio::null());
    launch.apply(&mut command);
    command.spawn()
}

/// Removes what killed worker process `pid`, worker `name`, could not: its
/// spill directory (in `local_directory`, or in the system's temporary
/// directory; that one only, since nodes may share the directory) and the
/// files it shared with workers of its host.
pub fn remove_worker_files(pid: u32, name: &str, local_directory: Option<&Path>) {
    let base = local_directory.map_or_else(std::env::temp_dir, Path::to_path_buf);
    let _ = std::fs::remove_dir_all(shoal_worker::spill_directory(&base, pid, name));
    shoal_net::remove_shared_files_of(pid);
}

/// Why worker `name` (process `pid`) must be restarted, if its resident
/// memory is past `fraction` of `memory_limit` (0: no limit).
fn past_memory_terminate(name: &str, pid: u32, memory_limit: u64, fraction: f64) -> Option<String> {
    if memory_limit == 0 {
        return None;
    }
    let resident = shoal_net::resident_bytes(pid)?;
    let threshold = (memory_limit as f64 * fraction) as u64;
    (resident > threshold).then(|| {
        format!(
            "worker {name} (process {pid}) uses {resident} bytes, past {:.0} % of its {memory_limit}-byte memory \
             limit: restarting it (its tasks run again elsewhere; a task that needs more memory than a worker has \
             fails once its attempts are spent)",
            fraction * 100.0
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_measured_and_judged_against_a_limit() {
        let pid = std::process::id();
        if std::path::Path::new("/proc/self/status").exists() {
            let resident = shoal_net::resident_bytes(pid).expect("this process has a resident size");
            assert!(resident > 100 << 10, "{resident} bytes");
            let why =
                past_memory_terminate("local-7", pid, 1 << 20, 0.95).expect("a test binary takes more than 1 MiB");
            assert!(why.contains("local-7") && why.contains("95 % of its 1048576-byte memory limit"), "{why}");
        }
        assert_eq!(past_memory_terminate("local-7", pid, 0, 0.95), None, "no limit");
        assert_eq!(past_memory_terminate("local-7", pid, u64::MAX / 2, 0.95), None);
    }

    fn sh(script: &str) -> WorkerProgram {
        WorkerProgram { exe: "/bin/sh".into(), args: vec!["-c".into(), script.into()] }
    }

    fn launch(name: &str) -> WorkerLaunch {
        WorkerLaunch { name: Some(name.into()), ..WorkerLaunch::default() }
    }

    fn watch_until_exit(p: &mut WorkerProcess) -> (ExitStatus, usize) {
        let mut restarts = 0;
        loop {
            match p.watch().expect("watches") {
                Watched::Running => std::thread::sleep(NANNY_POLL),
                Watched::Restarted(_) => restarts += 1,
                Watched::Exited(status) => return (status, restarts),
            }
        }
    }

    #[test]
    fn a_process_that_asks_to_restart_is_started_again_and_one_that_ends_is_reported() {
        let dir = std::env::temp_dir().join(format!("shoal-nanny-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let marker = dir.join("ran-once");
        // The first process asks to restart, the second ends with 3.
        let script = format!(
            "if [ -e {m} ]; then exit 3; else touch {m}; [ \"$SHOAL_NANNY\" = 1 ] && exit {RESTART_EXIT_CODE}; fi",
            m = marker.display()
        );
        let mut p = WorkerProcess::start(launch("restarting"), sh(&script)).expect("starts");
        let first = p.pid();
        let (status, restarts) = watch_until_exit(&mut p);
        assert_eq!((status.code(), restarts), (Some(3), 1));
        assert_ne!(p.pid(), first, "a new process");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_worker_keeps_its_name_across_processes() {
        let mut p =
            WorkerProcess::start(launch("named"), sh("[ \"$SHOAL_WORKER_NAME\" = named ] || exit 9")).expect("starts");
        assert_eq!(watch_until_exit(&mut p).0.code(), Some(0));
        let mut unnamed = WorkerProcess::start(WorkerLaunch::default(), sh("true")).expect("starts");
        assert!(unnamed.name().ends_with(&format!("-{}", std::process::id())), "{}", unnamed.name());
        watch_until_exit(&mut unnamed);
    }

    #[test]
    fn a_process_past_its_memory_limit_is_killed_and_started_again() {
        let mut guarded = launch("hog");
        guarded.memory_limit = 1 << 20;
        guarded.memory_terminate = Some(0.5);
        // A shell takes more than half a megabyte of resident memory.
        let mut p = WorkerProcess::start(guarded, sh("sleep 30")).expect("starts");
        let first = p.pid();
        let mut looks = 0;
        while !matches!(p.watch().expect("watches"), Watched::Restarted(Restart::OverMemory)) {
            looks += 1;
            assert!(looks < 500, "never judged over its limit");
            std::thread::sleep(NANNY_POLL);
        }
        assert!(!Path::new(&format!("/proc/{first}")).exists() || shoal_net::resident_bytes(first).is_none());
        p.stop();
    }
}
