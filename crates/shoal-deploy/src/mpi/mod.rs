//! `mpirun` mode, as dask-mpi has it: one program started as N ranks by an
//! MPI launcher (`mpirun -np N ./prog`, `mpiexec`, `srun -n N`) becomes a
//! whole cluster. Rank 0 is the scheduler, rank 1 the client that runs the
//! program's `main`, ranks 2 and up the workers. No MPI library is linked:
//! the rank and size come from the launcher's environment, and the
//! scheduler's address (with a fresh cluster token) reaches the other ranks
//! through the launcher itself where it can carry it, through a private
//! file in the job's own directory where every rank is on one node, or
//! through the scheduler file the user names with `SHOAL_SCHEDULER_FILE`
//! on a shared directory.
//!
//! The ranks live and die together: when `main` returns, rank 1 exits,
//! the scheduler stops every worker and every rank exits 0; when any rank
//! dies the others end within seconds with an error that names it.
//!
//! ```
//! use shoal_deploy::mpi::{MpiRole, MpiWorld};
//!
//! let env = [("OMPI_COMM_WORLD_RANK", "1"), ("OMPI_COMM_WORLD_SIZE", "4"), ("OMPI_MCA_orte_num_nodes", "1")];
//! let var = |name: &str| env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string());
//! let world = MpiWorld::from_vars(var)?.expect("started by mpirun");
//! assert_eq!((world.rank, world.size, world.role()), (1, 4, MpiRole::Client));
//!
//! let two = [("PMI_RANK", "0"), ("PMI_SIZE", "2")];
//! let var = |name: &str| two.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string());
//! let err = MpiWorld::from_vars(var).unwrap_err();
//! assert!(err.to_string().starts_with("shoal's mpirun mode needs at least 3 ranks"));
//! # Ok::<(), shoal_deploy::mpi::MpiError>(())
//! ```

mod pmi;
mod rank;
mod rendezvous;

pub use pmi::PmiError;
pub use rank::{RankEnd, run_rank};
pub use rendezvous::Rendezvous;

use std::path::PathBuf;

/// The variable that names a scheduler file on a shared directory, for
/// launchers that cannot carry the scheduler's address across nodes.
pub const SCHEDULER_FILE: &str = "SHOAL_SCHEDULER_FILE";

/// The variable that turns `mpirun` mode off (`SHOAL_MPI=0`) for a program
/// that runs under an MPI launcher for other reasons.
pub const MPI_SWITCH: &str = "SHOAL_MPI";

/// Which launcher started this process, as its variables show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launcher {
    /// Open MPI's `mpirun` (`OMPI_COMM_WORLD_RANK`).
    OpenMpi,
    /// A launcher speaking PMI-1 or PMI-2 (`PMI_RANK`): MPICH's and Intel
    /// MPI's Hydra `mpiexec`, `srun --mpi=pmi2`.
    Pmi,
    /// A PMIx launcher without Open MPI's variables (`srun --mpi=pmix`).
    Pmix,
    /// `srun` without MPI (`SLURM_PROCID` within a job step).
    Srun,
}

impl std::fmt::Display for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Launcher::OpenMpi => "Open MPI's mpirun",
            Launcher::Pmi => "a PMI launcher (mpiexec, srun --mpi=pmi2)",
            Launcher::Pmix => "srun --mpi=pmix",
            Launcher::Srun => "srun",
        })
    }
}

/// What a rank does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MpiRole {
    /// Rank 0.
    Scheduler,
    /// Rank 1: runs `main`.
    Client,
    /// Ranks 2 and up.
    Worker,
}

/// This process's place in a run started by an MPI launcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MpiWorld {
    /// Its rank, from 0.
    pub rank: usize,
    /// How many ranks the launcher started.
    pub size: usize,
    /// Who started it.
    pub launcher: Launcher,
    /// Over how many nodes the ranks are spread, where the launcher says.
    pub nodes: Option<usize>,
    /// What names this run apart from every other (the launcher's job id).
    pub job: Option<String>,
    /// A directory of this run on this node that the launcher removes when
    /// the run ends (Open MPI's session directory).
    pub session_dir: Option<PathBuf>,
    /// The launcher's PMI socket (`PMI_FD`), where it gives one.
    pub pmi_fd: Option<String>,
    /// A scheduler file the user named (`SHOAL_SCHEDULER_FILE`).
    pub scheduler_file: Option<PathBuf>,
}

/// Why `mpirun` mode cannot start.
#[derive(Debug, thiserror::Error)]
pub enum MpiError {
    /// Fewer ranks than a scheduler, a client and a worker.
    #[error(
        "shoal's mpirun mode needs at least 3 ranks (rank 0 the scheduler, rank 1 your main, 2 and up the workers); \
         {launcher} started {size}: run with -np 3 or more"
    )]
    TooFewRanks {
        /// The launcher.
        launcher: Launcher,
        /// The ranks it started.
        size: usize,
    },
    /// A launcher's variable does not hold what it should.
    #[error("{variable}={value:?} is not a {what}")]
    BadVariable {
        /// The variable.
        variable: &'static str,
        /// Its text.
        value: String,
        /// What it should be.
        what: &'static str,
    },
    /// The program asked for `mpirun` mode and no launcher started it.
    #[error(
        "this program runs under mpirun (it calls shoal::init_mpi), but no MPI launcher started this process as \
         one of its ranks (no OMPI_COMM_WORLD_RANK, PMI_RANK, PMIX_RANK or SLURM_PROCID){detail}: start it with \
         mpirun -np N, mpiexec -n N or srun -n N, N at least 3 (a launcher that sets none of these starts N \
         unrelated copies, each rank 0 of 1)"
    )]
    NotLaunched {
        /// What the variables said instead.
        detail: String,
    },
    /// The ranks cannot learn the scheduler's address from the launcher.
    #[error(
        "{launcher} spread the {size} ranks over {nodes} nodes and gives shoal no way to pass the scheduler's \
         address between them: set {SCHEDULER_FILE} to a path on a directory every node shares \
         (e.g. mpirun -x {SCHEDULER_FILE}=$HOME/.shoal-scheduler-$JOB_ID){hint}"
    )]
    NoRendezvous {
        /// The launcher.
        launcher: Launcher,
        /// The ranks.
        size: usize,
        /// The nodes (`?` when the launcher does not say).
        nodes: String,
        /// What else would work with this launcher.
        hint: &'static str,
    },
    /// The scheduler's address could not be published or read.
    #[error("passing the scheduler's address between ranks through {through}: {reason}")]
    Rendezvous {
        /// Through what (the PMI server, a file's path).
        through: String,
        /// What went wrong.
        reason: String,
    },
    /// This rank's part could not start or ended badly.
    #[error("rank {rank}: {reason}")]
    Rank {
        /// The rank.
        rank: usize,
        /// What went wrong.
        reason: String,
    },
}

impl MpiWorld {
    /// This process's place, read from its environment: `None` for a
    /// process no MPI launcher started (or one started as a single rank,
    /// an ordinary program under `srun`), and for `SHOAL_MPI=0`.
    ///
    /// # Errors
    /// [`MpiError::TooFewRanks`] for 2 ranks, [`MpiError::BadVariable`]
    /// for a launcher's variable that does not parse.
    pub fn from_env() -> Result<Option<MpiWorld>, MpiError> {
        MpiWorld::from_vars(|name| std::env::var(name).ok())
    }

    /// [`MpiWorld::from_env`] over any source of variables.
    ///
    /// # Errors
    /// As [`MpiWorld::from_env`].
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<MpiWorld>, MpiError> {
        if var(MPI_SWITCH).is_some_and(|v| matches!(v.trim(), "0" | "off" | "false" | "no")) {
            return Ok(None);
        }
        let Some(world) = MpiWorld::read(&var)? else { return Ok(None) };
        match world.size {
            1 => Ok(None),
            2 => Err(MpiError::TooFewRanks { launcher: world.launcher, size: 2 }),
            _ => Ok(Some(world)),
        }
    }

    /// What the launcher's variables say, whatever the size.
    fn read(var: &impl Fn(&str) -> Option<String>) -> Result<Option<MpiWorld>, MpiError> {
        let number = |name: &'static str| -> Result<Option<usize>, MpiError> {
            var(name)
                .map(|text| {
                    text.trim().parse().map_err(|_| MpiError::BadVariable {
                        variable: name,
                        value: text.clone(),
                        what: "number",
                    })
                })
                .transpose()
        };
        let slurm_step = || match (var("SLURM_JOB_ID"), var("SLURM_STEP_ID")) {
            (Some(job), Some(step)) => Some(format!("slurm-{job}.{step}")),
            _ => None,
        };
        let slurm_nodes = || number("SLURM_STEP_NUM_NODES");
        let (launcher, rank, size, nodes, job) = if let Some(rank) = number("OMPI_COMM_WORLD_RANK")? {
            let size = required(number("OMPI_COMM_WORLD_SIZE")?, "OMPI_COMM_WORLD_SIZE")?;
            let job = var("OMPI_MCA_ess_base_jobid").map(|j| format!("ompi-{j}"));
            (Launcher::OpenMpi, rank, size, number("OMPI_MCA_orte_num_nodes")?, job)
        } else if let Some(rank) = number("PMI_RANK")? {
            let size = required(number("PMI_SIZE")?, "PMI_SIZE")?;
            // Hydra says how many ranks share this node; all of them means one node.
            let nodes = match (slurm_nodes()?, number("MPI_LOCALNRANKS")?) {
                (Some(n), _) => Some(n),
                (None, Some(local)) if local == size => Some(1),
                _ => None,
            };
            let job = slurm_step().or_else(|| var("PMI_KVSNAME")).or_else(|| var("PMI_JOBID"));
            (Launcher::Pmi, rank, size, nodes, job)
        } else if let Some(rank) = number("PMIX_RANK")? {
            let size = required(number("SLURM_STEP_NUM_TASKS")?.or(number("SLURM_NTASKS")?), "SLURM_STEP_NUM_TASKS")?;
            (Launcher::Pmix, rank, size, slurm_nodes()?, var("PMIX_NAMESPACE").map(|n| format!("pmix-{n}")))
        } else if var("SLURM_STEP_ID").is_some()
            && let Some(rank) = number("SLURM_PROCID")?
        {
            let size = required(number("SLURM_STEP_NUM_TASKS")?.or(number("SLURM_NTASKS")?), "SLURM_STEP_NUM_TASKS")?;
            (Launcher::Srun, rank, size, slurm_nodes()?, slurm_step())
        } else {
            return Ok(None);
        };
        if rank >= size {
            return Err(MpiError::BadVariable {
                variable: "rank",
                value: format!("{rank} of {size}"),
                what: "rank below the launcher's size",
            });
        }
        Ok(Some(MpiWorld {
            rank,
            size,
            launcher,
            nodes,
            job,
            session_dir: var("OMPI_MCA_orte_jobfam_session_dir").map(PathBuf::from),
            pmi_fd: if launcher == Launcher::Pmi { var("PMI_FD") } else { None },
            scheduler_file: var(SCHEDULER_FILE).filter(|f| !f.is_empty()).map(PathBuf::from),
        }))
    }

    /// For a program that must run under a launcher (`shoal::init_mpi`):
    /// why this process, which is not part of an `mpirun` run, cannot go on.
    pub fn not_launched(var: impl Fn(&str) -> Option<String>) -> MpiError {
        let detail = match MpiWorld::read(&var) {
            Ok(Some(world)) if world.size == 1 => format!("; {} started it as rank 0 of 1", world.launcher),
            Err(e) => format!("; {e}"),
            _ if var(MPI_SWITCH).is_some() => format!("; {MPI_SWITCH} turns mpirun mode off"),
            _ => String::new(),
        };
        MpiError::NotLaunched { detail }
    }

    /// What this rank does.
    pub fn role(&self) -> MpiRole {
        match self.rank {
            0 => MpiRole::Scheduler,
            1 => MpiRole::Client,
            _ => MpiRole::Worker,
        }
    }

    /// Whether every rank runs on this node.
    pub fn one_node(&self) -> bool {
        self.nodes == Some(1)
    }
}

fn required(value: Option<usize>, variable: &'static str) -> Result<usize, MpiError> {
    value.ok_or(MpiError::BadVariable { variable, value: String::new(), what: "number (it is missing)" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world(env: &[(&str, &str)]) -> Result<Option<MpiWorld>, MpiError> {
        MpiWorld::from_vars(|name| env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn each_launcher_gives_rank_size_and_nodes() {
        let ompi = world(&[
            ("OMPI_COMM_WORLD_RANK", "3"),
            ("OMPI_COMM_WORLD_SIZE", "8"),
            ("OMPI_MCA_orte_num_nodes", "1"),
            ("OMPI_MCA_ess_base_jobid", "1362100225"),
            ("OMPI_MCA_orte_jobfam_session_dir", "/tmp/ompi.vm.0/pid.15822"),
            ("PMIX_RANK", "3"),
        ])
        .expect("reads")
        .expect("a world");
        assert_eq!((ompi.launcher, ompi.rank, ompi.size, ompi.nodes), (Launcher::OpenMpi, 3, 8, Some(1)));
        assert_eq!(ompi.job.as_deref(), Some("ompi-1362100225"));
        assert_eq!(ompi.role(), MpiRole::Worker);
        assert_eq!(ompi.session_dir, Some(PathBuf::from("/tmp/ompi.vm.0/pid.15822")));

        let hydra = world(&[
            ("PMI_RANK", "0"),
            ("PMI_SIZE", "4"),
            ("PMI_FD", "6"),
            ("MPI_LOCALNRANKS", "4"),
            ("PMI_KVSNAME", "kvs_99_0"),
        ])
        .expect("reads")
        .expect("a world");
        assert_eq!((hydra.launcher, hydra.nodes, hydra.role()), (Launcher::Pmi, Some(1), MpiRole::Scheduler));
        assert_eq!(hydra.pmi_fd.as_deref(), Some("6"));

        let srun = world(&[
            ("SLURM_JOB_ID", "12"),
            ("SLURM_STEP_ID", "0"),
            ("SLURM_PROCID", "1"),
            ("SLURM_STEP_NUM_TASKS", "4"),
            ("SLURM_STEP_NUM_NODES", "2"),
        ])
        .expect("reads")
        .expect("a world");
        assert_eq!((srun.launcher, srun.nodes, srun.role()), (Launcher::Srun, Some(2), MpiRole::Client));
        assert_eq!(srun.job.as_deref(), Some("slurm-12.0"));

        let pmix = world(&[("PMIX_RANK", "2"), ("SLURM_NTASKS", "3"), ("PMIX_NAMESPACE", "slurm.pmix.5.0")])
            .expect("reads")
            .expect("a world");
        assert_eq!((pmix.launcher, pmix.nodes), (Launcher::Pmix, None));
    }

    #[test]
    fn an_ordinary_process_a_single_rank_and_the_switch_are_no_world() {
        assert_eq!(world(&[]).expect("reads"), None);
        // A batch script's own shell: a job, but no step.
        assert_eq!(
            world(&[("SLURM_JOB_ID", "12"), ("SLURM_PROCID", "0"), ("SLURM_NTASKS", "4")]).expect("reads"),
            None
        );
        assert_eq!(
            world(&[("SLURM_STEP_ID", "0"), ("SLURM_PROCID", "0"), ("SLURM_NTASKS", "1")]).expect("reads"),
            None
        );
        let off = [("OMPI_COMM_WORLD_RANK", "0"), ("OMPI_COMM_WORLD_SIZE", "4"), ("SHOAL_MPI", "0")];
        assert_eq!(world(&off).expect("reads"), None);
    }

    #[test]
    fn bad_launches_are_named() {
        let err = world(&[("OMPI_COMM_WORLD_RANK", "1"), ("OMPI_COMM_WORLD_SIZE", "2")]).expect_err("two ranks");
        assert_eq!(
            err.to_string(),
            "shoal's mpirun mode needs at least 3 ranks (rank 0 the scheduler, rank 1 your main, 2 and up the \
             workers); Open MPI's mpirun started 2: run with -np 3 or more"
        );
        let err = world(&[("PMI_RANK", "x"), ("PMI_SIZE", "4")]).expect_err("a bad rank");
        assert_eq!(err.to_string(), "PMI_RANK=\"x\" is not a number");
        let err = world(&[("PMI_RANK", "1")]).expect_err("no size");
        assert_eq!(err.to_string(), "PMI_SIZE=\"\" is not a number (it is missing)");
        let err = world(&[("PMI_RANK", "4"), ("PMI_SIZE", "4")]).expect_err("rank past size");
        assert_eq!(err.to_string(), "rank=\"4 of 4\" is not a rank below the launcher's size");
    }

    #[test]
    fn a_program_that_needs_a_launcher_says_which_one_it_lacked() {
        let single = [("SLURM_STEP_ID", "0"), ("SLURM_PROCID", "0"), ("SLURM_STEP_NUM_TASKS", "1")];
        let var = |name: &str| single.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string());
        let message = MpiWorld::not_launched(var).to_string();
        assert!(message.contains("SLURM_PROCID); srun started it as rank 0 of 1: start it with"), "{message}");
        let message = MpiWorld::not_launched(|_| None).to_string();
        assert!(message.starts_with("this program runs under mpirun (it calls shoal::init_mpi)"), "{message}");
    }
}
