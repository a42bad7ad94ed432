//! How the scheduler's address and token get from rank 0 to the others.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::pmi::Pmi;
use super::{Launcher, MpiError, MpiWorld};

/// The way this run passes the scheduler's address between its ranks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rendezvous {
    /// The launcher's PMI key-value space, through the socket `PMI_FD` names.
    Pmi(String),
    /// A file every rank can read: the user's scheduler file, or (all ranks
    /// on one node) a private file in the run's own directory.
    File(PathBuf),
}

/// What rank 0 tells the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Published {
    /// `tcp://host:port`.
    pub(crate) address: String,
    /// The cluster token.
    pub(crate) token: String,
}

/// How long a rank waits for rank 0's scheduler to be published.
pub(crate) const RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(60);

/// The first line of a scheduler file, which tells it from any other file.
const FILE_HEADER: &str = "shoal scheduler file 1";

impl Rendezvous {
    /// The way that works for `world`: the scheduler file if the user named
    /// one, else the launcher's PMI, else (one node) a private file.
    ///
    /// # Errors
    /// [`MpiError::NoRendezvous`] when the ranks span nodes and the launcher
    /// carries nothing between them.
    pub fn choose(world: &MpiWorld) -> Result<Rendezvous, MpiError> {
        if let Some(file) = &world.scheduler_file {
            return Ok(Rendezvous::File(file.clone()));
        }
        if let Some(fd) = &world.pmi_fd {
            return Ok(Rendezvous::Pmi(fd.clone()));
        }
        if world.one_node() {
            if let Some(dir) = &world.session_dir {
                return Ok(Rendezvous::File(dir.join("shoal-scheduler")));
            }
            if let Some(job) = &world.job {
                return Ok(Rendezvous::File(private_dir().join(job)));
            }
        }
        Err(MpiError::NoRendezvous {
            launcher: world.launcher,
            size: world.size,
            nodes: world.nodes.map_or_else(|| "?".to_string(), |n| n.to_string()),
            hint: match world.launcher {
                Launcher::Srun | Launcher::Pmix => ", or run srun --mpi=pmi2",
                Launcher::OpenMpi | Launcher::Pmi => "",
            },
        })
    }

    /// Rank 0: makes `published` known to every other rank.
    pub(crate) fn publish(&self, world: &MpiWorld, published: &Published) -> Result<(), MpiError> {
        match self {
            Rendezvous::Pmi(fd) => {
                let failed = pmi_failed;
                let mut pmi = Pmi::from_fd(fd).map_err(failed)?;
                pmi.put("shoal-scheduler", &published.address).map_err(failed)?;
                pmi.put("shoal-token", &published.token).map_err(failed)?;
                pmi.barrier().map_err(failed)?;
                pmi.finalize().map_err(failed)
            }
            Rendezvous::File(path) => write_file(path, world, published).map_err(|e| file_failed(path, e)),
        }
    }

    /// Every other rank: what rank 0 published, waiting up to `timeout`.
    pub(crate) fn lookup(&self, world: &MpiWorld, timeout: Duration) -> Result<Published, MpiError> {
        match self {
            Rendezvous::Pmi(fd) => {
                let failed = pmi_failed;
                let mut pmi = Pmi::from_fd(fd).map_err(failed)?;
                pmi.barrier().map_err(failed)?;
                let address = pmi.get("shoal-scheduler").map_err(failed)?;
                let token = pmi.get("shoal-token").map_err(failed)?;
                pmi.finalize().map_err(failed)?;
                match (address, token) {
                    (Some(address), Some(token)) => Ok(Published { address, token }),
                    _ => Err(MpiError::Rendezvous {
                        through: "the launcher's PMI server".into(),
                        reason: "rank 0 put no scheduler address before the barrier".into(),
                    }),
                }
            }
            Rendezvous::File(path) => {
                let started = Instant::now();
                loop {
                    match read_file(path, world) {
                        Ok(Some(published)) => return Ok(published),
                        Ok(None) if started.elapsed() < timeout => std::thread::sleep(Duration::from_millis(20)),
                        Ok(None) => {
                            let reason = format!(
                                "rank 0 wrote no scheduler address within {} s (did it start?)",
                                timeout.as_secs()
                            );
                            return Err(file_failed(path, reason));
                        }
                        Err(e) => return Err(file_failed(path, e)),
                    }
                }
            }
        }
    }

    /// Rank 0, when the run ends: removes the file it wrote.
    pub(crate) fn clean_up(&self) {
        if let Rendezvous::File(path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn pmi_failed(e: super::PmiError) -> MpiError {
    MpiError::Rendezvous { through: "the launcher's PMI server".into(), reason: e.to_string() }
}

fn file_failed(path: &Path, reason: impl std::fmt::Display) -> MpiError {
    MpiError::Rendezvous { through: path.display().to_string(), reason: reason.to_string() }
}

/// A directory of this user's on this node, which only they may enter.
fn private_dir() -> PathBuf {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "user".into());
    std::env::temp_dir().join(format!("shoal-mpi-{user}"))
}

/// Writes the file whole (a rename), readable by its owner only.
fn write_file(path: &Path, world: &MpiWorld, published: &Published) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let private = private_dir();
    if path.parent() == Some(private.as_path()) && std::fs::metadata(&private)?.permissions().mode() & 0o077 != 0 {
        let message = format!("{} may be entered by other users: remove it", private.display());
        return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, message));
    }
    let job = world.job.as_deref().unwrap_or("");
    let text = format!("{FILE_HEADER}\n{}\n{}\n{job}\n", published.address, published.token);
    let partial = path.with_extension(format!("partial-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&partial)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&partial, path)
}

/// The file's address and token if it is there and is this run's: a file
/// left by an earlier run (another job) is waited past, not used.
fn read_file(path: &Path, world: &MpiWorld) -> Result<Option<Published>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut lines = text.lines();
    if lines.next() != Some(FILE_HEADER) {
        return Err(format!("not a shoal scheduler file (its first line is not {FILE_HEADER:?})"));
    }
    let (Some(address), Some(token), job) = (lines.next(), lines.next(), lines.next().unwrap_or("")) else {
        return Ok(None);
    };
    let ours = job.is_empty() || world.job.as_deref().is_none_or(|j| j == job);
    Ok(ours.then(|| Published { address: address.to_string(), token: token.to_string() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world(job: &str) -> MpiWorld {
        MpiWorld {
            rank: 0,
            size: 4,
            launcher: Launcher::Srun,
            nodes: Some(1),
            job: Some(job.to_string()),
            session_dir: None,
            pmi_fd: None,
            scheduler_file: None,
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shoal-rendezvous-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_choice_follows_what_the_launcher_offers() {
        let mut w = world("slurm-1.0");
        assert_eq!(Rendezvous::choose(&w).expect("one node"), Rendezvous::File(private_dir().join("slurm-1.0")));
        w.session_dir = Some("/tmp/ompi.vm.0/pid.9".into());
        assert_eq!(
            Rendezvous::choose(&w).expect("one node"),
            Rendezvous::File("/tmp/ompi.vm.0/pid.9/shoal-scheduler".into())
        );
        w.pmi_fd = Some("5".into());
        assert_eq!(Rendezvous::choose(&w).expect("pmi"), Rendezvous::Pmi("5".into()));
        w.scheduler_file = Some("/shared/s".into());
        assert_eq!(Rendezvous::choose(&w).expect("a file"), Rendezvous::File("/shared/s".into()));

        let mut spread = world("slurm-1.0");
        spread.nodes = Some(3);
        let err = Rendezvous::choose(&spread).expect_err("nodes apart");
        assert_eq!(
            err.to_string(),
            "srun spread the 4 ranks over 3 nodes and gives shoal no way to pass the scheduler's address between \
             them: set SHOAL_SCHEDULER_FILE to a path on a directory every node shares (e.g. mpirun -x \
             SHOAL_SCHEDULER_FILE=$HOME/.shoal-scheduler-$JOB_ID), or run srun --mpi=pmi2"
        );
    }

    #[test]
    fn a_published_file_is_read_by_this_run_only_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("file");
        let path = dir.join("sched");
        let published = Published { address: "tcp://127.0.0.1:4000".into(), token: "ab12".into() };
        let rendezvous = Rendezvous::File(path.clone());
        rendezvous.publish(&world("job-1"), &published).expect("written");
        let mode = std::fs::metadata(&path).expect("there").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(rendezvous.lookup(&world("job-1"), Duration::ZERO).expect("read"), published);
        let err = rendezvous.lookup(&world("job-2"), Duration::from_millis(50)).expect_err("another run's file");
        assert!(err.to_string().contains("rank 0 wrote no scheduler address within 0 s"), "{err}");
        rendezvous.clean_up();
        assert!(!path.exists());

        std::fs::write(&path, "tcp://1.2.3.4:5\n").expect("a stranger");
        let err = rendezvous.lookup(&world("job-1"), Duration::ZERO).expect_err("not ours");
        assert!(
            err.to_string().ends_with("not a shoal scheduler file (its first line is not \"shoal scheduler file 1\")"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_rank_waits_for_the_file_to_appear() {
        let dir = scratch("wait");
        let rendezvous = Rendezvous::File(dir.join("sched"));
        let published = Published { address: "tcp://127.0.0.1:4001".into(), token: "cd34".into() };
        let reader = {
            let rendezvous = rendezvous.clone();
            std::thread::spawn(move || rendezvous.lookup(&world("j"), RENDEZVOUS_TIMEOUT))
        };
        rendezvous.publish(&world("j"), &published).expect("written");
        assert_eq!(reader.join().expect("reader").expect("read"), published);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
