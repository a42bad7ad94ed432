//! Workers as real batch jobs. `.ci/run` starts a single-node SLURM and a
//! Grid Engine and sets `SHOAL_TEST_SLURM` and `SHOAL_TEST_SGE`; elsewhere
//! these tests say what they need and check nothing.

use std::process::Command;
use std::time::{Duration, Instant};

use shoal::jobqueue::{JobQueueCluster, Manager};

/// Where the task ran (the job's id, from either manager's variable) and
/// its argument squared.
#[shoal::remote]
fn in_job(x: u64) -> (String, u64) {
    let id = std::env::var("SLURM_JOB_ID").or_else(|_| std::env::var("JOB_ID")).unwrap_or_default();
    (id, x * x)
}

/// Whether the manager still lists job `id` (`squeue` / `qstat`).
fn listed(manager: Manager, id: &str) -> bool {
    let output = match manager {
        Manager::Slurm => Command::new("squeue").args(["-h", "-o", "%i", "-j", id]).output(),
        _ => Command::new("qstat").args(["-j", id]).output(),
    };
    output.is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(id))
}

fn jobs_become_workers_and_go_when_the_cluster_closes(manager: Manager) {
    let logs = std::env::temp_dir().join(format!("shoal-jobqueue-test-{}-{manager:?}", std::process::id()));
    let cluster = JobQueueCluster::builder(manager)
        .log_directory(&logs)
        .cores(1)
        .memory(512 << 20)
        .walltime("00:10:00")
        .death_timeout(Duration::from_secs(5))
        .build()
        .expect("cluster");
    cluster.scale(2).expect("two jobs submitted");
    let ids = cluster.job_ids();
    assert_eq!(ids.len(), 2, "{ids:?}");
    cluster.wait_for_workers(2, Duration::from_secs(120)).expect("both jobs joined as workers");
    let client = cluster.client().expect("client");
    let futures = client.map(in_job, 0..20u64);
    shoal::wait_timeout(&futures, Duration::from_secs(120)).expect("tasks ran in the jobs");
    let results = client.gather(&futures).expect("results");
    for (x, (job, square)) in results.iter().enumerate() {
        assert_eq!(*square, (x * x) as u64);
        assert!(ids.contains(job), "task {x} ran in job {job:?}, not one of {ids:?}");
    }
    cluster.scale(1).expect("scaled down");
    assert_eq!(cluster.job_ids(), ids[..1], "the newest job goes first");
    drop(client);
    drop(cluster);
    let deadline = Instant::now() + Duration::from_secs(60);
    while ids.iter().any(|id| listed(manager, id)) {
        assert!(Instant::now() < deadline, "jobs {ids:?} are still queued or running after close");
        std::thread::sleep(Duration::from_millis(200));
    }
    let scripts = std::fs::read_dir(&logs).expect("the log directory stays").count();
    assert!(scripts >= 2, "the job scripts and output are kept in {}", logs.display());
    let _ = std::fs::remove_dir_all(&logs);
}

#[test]
fn slurm_jobs_become_workers_and_go_when_the_cluster_closes() {
    if std::env::var_os("SHOAL_TEST_SLURM").is_none() {
        eprintln!("SHOAL_TEST_SLURM is not set: no SLURM to test against (.ci/run starts one)");
        return;
    }
    jobs_become_workers_and_go_when_the_cluster_closes(Manager::Slurm);
}

#[test]
fn grid_engine_jobs_become_workers_and_go_when_the_cluster_closes() {
    if std::env::var_os("SHOAL_TEST_SGE").is_none() {
        eprintln!("SHOAL_TEST_SGE is not set: no Grid Engine to test against (.ci/run starts one)");
        return;
    }
    jobs_become_workers_and_go_when_the_cluster_closes(Manager::Sge);
}

struct Tally {
    n: u64,
}

#[shoal::actor]
impl Tally {
    pub(crate) fn new() -> Tally {
        Tally { n: 0 }
    }

    pub(crate) fn add(&mut self, k: u64) -> (String, u64) {
        self.n += k;
        (std::env::var("SLURM_JOB_ID").unwrap_or_default(), self.n)
    }
}

/// An actor in a SLURM job: made there, keeps its state, answers its calls
/// straight from the job's worker.
#[test]
fn an_actor_lives_in_a_slurm_job() {
    if std::env::var_os("SHOAL_TEST_SLURM").is_none() {
        eprintln!("SHOAL_TEST_SLURM is not set: no SLURM to test against (.ci/run starts one)");
        return;
    }
    let logs = std::env::temp_dir().join(format!("shoal-jobqueue-actor-{}", std::process::id()));
    let cluster = JobQueueCluster::builder(Manager::Slurm)
        .log_directory(&logs)
        .cores(1)
        .memory(512 << 20)
        .walltime("00:10:00")
        .build()
        .expect("cluster");
    cluster.scale(1).expect("a job submitted");
    cluster.wait_for_workers(1, Duration::from_secs(120)).expect("the job joined");
    let ids = cluster.job_ids();
    let client = cluster.client().expect("client");
    let tally = client.actor(Tally::new, ());
    let calls: Vec<_> = (1..=10u64).map(|k| tally.add(k)).collect();
    let answers = client.gather(&calls).expect("answers");
    assert_eq!(answers.last().map(|(_, n)| *n), Some(55), "state kept across calls, in order");
    assert!(answers.iter().all(|(job, _)| ids.contains(job)), "{answers:?} ran in {ids:?}");
    drop((tally, client, cluster));
    let _ = std::fs::remove_dir_all(&logs);
}
