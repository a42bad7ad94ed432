//! `shoal scheduler`: a standalone scheduler.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, bail};
use shoal_net::{SchedulerServerConfig, start_scheduler};

/// Options of `shoal scheduler`.
#[derive(clap::Args)]
pub(crate) struct SchedulerArgs {
    /// Address to listen on. Anything but loopback needs a cluster token.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 8786)]
    port: u16,
    /// Cluster token that clients and workers must present.
    #[arg(long, env = "SHOAL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Seconds a task that no connected worker may run (it needs resources
    /// or workers the cluster lacks) waits for one before it fails; by
    /// default it waits for ever, and its client hears why.
    #[arg(long)]
    no_worker_timeout: Option<f64>,
}

pub(crate) fn run(args: &SchedulerArgs) -> anyhow::Result<()> {
    if !args.host.is_loopback() && args.token.is_none() {
        bail!(
            "listening on {} (beyond this machine) needs a cluster token: pass --token or set SHOAL_TOKEN",
            args.host
        );
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let listen = SocketAddr::new(args.host, args.port);
    let mut config = SchedulerServerConfig { listen, token: args.token.clone(), ..SchedulerServerConfig::default() };
    if let Some(seconds) = args.no_worker_timeout {
        if !seconds.is_finite() || seconds < 0.0 {
            bail!("--no-worker-timeout {seconds}: give a number of seconds of at least 0");
        }
        config.scheduler.no_worker_timeout_us = Some((seconds * 1e6) as u64);
    }
    let scheduler = start_scheduler(config).with_context(|| format!("cannot start a scheduler on {listen}"))?;
    println!("shoal scheduler at tcp://{}", scheduler.address());
    scheduler.wait();
    Ok(())
}
