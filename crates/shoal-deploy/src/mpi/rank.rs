//! What each rank runs: the scheduler, the client, a worker.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use shoal_client::Client;
use shoal_net::{Membership, SchedulerServerConfig, WorkerExit, start_scheduler};

use super::rendezvous::{Published, RENDEZVOUS_TIMEOUT, Rendezvous};
use super::{MpiError, MpiRole, MpiWorld};
use crate::{Spelling, WorkerLaunch, WorkerOption};

/// How long a worker rank tries to reach a scheduler it lost before it
/// ends the run, unless `SHOAL_DEATH_TIMEOUT` says otherwise: a rank of an
/// `mpirun` run never comes back, so there is nothing to wait for.
const RANK_DEATH_TIMEOUT: &str = "5";

/// How a rank's part ended.
pub enum RankEnd {
    /// The scheduler or a worker rank is done: the process exits with this code.
    Exit(i32),
    /// Rank 1: a client of the run's cluster, every worker rank joined;
    /// `main` goes on with it.
    Client(Client),
}

/// Runs this process's part of the `mpirun` run `world`.
///
/// # Errors
/// When the scheduler's address cannot be passed or reached, or this
/// rank's part cannot start.
pub fn run_rank(world: &MpiWorld) -> Result<RankEnd, MpiError> {
    let rendezvous = Rendezvous::choose(world)?;
    let failed = |reason: String| MpiError::Rank { rank: world.rank, reason };
    match world.role() {
        MpiRole::Scheduler => run_scheduler(world, &rendezvous).map(RankEnd::Exit),
        MpiRole::Client => {
            let published = rendezvous.lookup(world, RENDEZVOUS_TIMEOUT)?;
            let client = Client::connect_with_token(&published.address, Some(&published.token))
                .map_err(|e| failed(format!("cannot reach the scheduler (rank 0) at {}: {e}", published.address)))?;
            wait_for_workers(&client, world.size - 2).map_err(failed)?;
            Ok(RankEnd::Client(client))
        }
        MpiRole::Worker => {
            let published = rendezvous.lookup(world, RENDEZVOUS_TIMEOUT)?;
            run_worker(world, &published).map(RankEnd::Exit)
        }
    }
}

/// Rank 0: serves until rank 1's client leaves (then stops every worker and
/// exits 0) or a worker rank dies (then exits 1, which ends the others).
fn run_scheduler(world: &MpiWorld, rendezvous: &Rendezvous) -> Result<i32, MpiError> {
    let failed = |reason: String| MpiError::Rank { rank: 0, reason };
    let (listen, advertised) = if world.one_node() {
        (SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), IpAddr::V4(Ipv4Addr::LOCALHOST))
    } else {
        let ip = crate::default_route_ip()
            .ok_or_else(|| failed("this node has no address on a default route for the other nodes".into()))?;
        (SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), ip)
    };
    let token = crate::fresh_token().map_err(|e| failed(e.to_string()))?;
    let (membership, changes) = std::sync::mpsc::channel();
    let config = SchedulerServerConfig {
        listen,
        token: Some(token.clone()),
        membership: Some(membership),
        ..Default::default()
    };
    let scheduler = start_scheduler(config).map_err(|e| failed(e.to_string()))?;
    let address = format!("tcp://{}", SocketAddr::new(advertised, scheduler.address().port()));
    rendezvous.publish(world, &Published { address, token })?;

    let started = Instant::now();
    let mut main_client = None;
    let outcome = loop {
        let change = match changes.recv_timeout(Duration::from_millis(500)) {
            Ok(change) => change,
            Err(RecvTimeoutError::Timeout) if main_client.is_none() && started.elapsed() > RENDEZVOUS_TIMEOUT => {
                break Err(format!("rank 1 (the client) did not connect within {} s", RENDEZVOUS_TIMEOUT.as_secs()));
            }
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break Err("the scheduler stopped".into()),
        };
        match change {
            Membership::ClientJoined(id) if main_client.is_none() => main_client = Some(id),
            Membership::ClientLeft(id) if main_client == Some(id) => break Ok(()),
            Membership::WorkerLeft(name) => {
                break Err(format!("worker {name} died or lost its connection, and a rank does not come back"));
            }
            _ => {}
        }
    };
    rendezvous.clean_up();
    match outcome {
        Ok(()) => {
            scheduler.shutdown();
            Ok(0)
        }
        Err(reason) => {
            eprintln!("shoal mpirun: rank 0 (scheduler): {reason}; ending the run");
            Ok(1)
        }
    }
}

/// Ranks 2 and up: a worker named after its rank, with any `SHOAL_*`
/// worker option the launcher passed on.
fn run_worker(world: &MpiWorld, published: &Published) -> Result<i32, MpiError> {
    let failed = |reason: String| MpiError::Rank { rank: world.rank, reason };
    let name = format!("rank-{}", world.rank);
    let launch = WorkerLaunch::from_vars(|variable| {
        let given = std::env::var(variable).ok();
        match variable {
            v if v == WorkerOption::Scheduler.env() => Some(published.address.clone()),
            v if v == WorkerOption::Token.env() => Some(published.token.clone()),
            v if v == WorkerOption::TokenFile.env() || v == WorkerOption::Nanny.env() => None,
            v if v == WorkerOption::Name.env() => given.or_else(|| Some(name.clone())),
            v if v == WorkerOption::DeathTimeout.env() => given.or_else(|| Some(RANK_DEATH_TIMEOUT.into())),
            _ => given,
        }
    })
    .map_err(|e| failed(e.to_string()))?
    .ok_or_else(|| failed("no scheduler address".into()))?;
    let config = launch.config(Spelling::Env).map_err(|e| failed(e.to_string()))?;
    let worker = shoal_net::start_worker(config)
        .map_err(|e| failed(format!("cannot join the scheduler (rank 0) at {}: {e}", published.address)))?;
    Ok(match worker.wait() {
        WorkerExit::Stopped | WorkerExit::Restart => 0,
        WorkerExit::SchedulerGone => {
            eprintln!("shoal mpirun: rank {} ({name}): the scheduler (rank 0) is gone; ending", world.rank);
            1
        }
    })
}

/// Waits until `workers` workers have joined, so that `main` starts on the
/// whole cluster.
fn wait_for_workers(client: &Client, workers: usize) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let joined = client.scheduler_info().map_err(|e| format!("asking the scheduler for its workers: {e}"))?;
        if joined.len() >= workers {
            return Ok(());
        }
        if started.elapsed() > RENDEZVOUS_TIMEOUT {
            let names: Vec<&str> = joined.iter().map(|w| w.name.as_str()).collect();
            return Err(format!(
                "only {} of {workers} worker ranks joined within {} s (joined: {})",
                joined.len(),
                RENDEZVOUS_TIMEOUT.as_secs(),
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
