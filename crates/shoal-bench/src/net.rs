//! `net-rtt`: the floor under every distributed figure — a raw 64-byte TCP
//! round trip on loopback between two processes, measured in the same run.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Context;
use serde_json::{Map, Value, json};

use super::{Benchmark, Sample, param_u64};

pub(super) fn benchmarks() -> Vec<Benchmark> {
    vec![Benchmark {
        name: "net-rtt",
        about: "a raw 64-byte TCP round trip on loopback between two processes",
        unit: "round trips/s",
        params: |quick| vec![json!({"round_trips": if quick { 2_000 } else { 20_000 }, "bytes": 64})],
        run,
    }]
}

/// Echoes what it reads until the connection closes; prints its port first.
pub(super) fn echo_server() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot listen on loopback")?;
    println!("{}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    let (mut stream, _) = listener.accept()?;
    stream.set_nodelay(true)?;
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n])?;
    }
}

fn run(params: &Value) -> anyhow::Result<Sample> {
    let trips = param_u64(params, "round_trips")?;
    let size = param_u64(params, "bytes")? as usize;
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("--echo-server")
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the echo process")?;
    let mut port = String::new();
    BufReader::new(child.stdout.take().context("no stdout from the echo process")?).read_line(&mut port)?;
    let mut stream = TcpStream::connect(("127.0.0.1", port.trim().parse::<u16>()?))?;
    stream.set_nodelay(true)?;
    let message = vec![7u8; size];
    let mut reply = vec![0u8; size];
    for _ in 0..100 {
        stream.write_all(&message)?;
        stream.read_exact(&mut reply)?;
    }
    let mut each = Vec::with_capacity(trips as usize);
    let start = Instant::now();
    for _ in 0..trips {
        let t = Instant::now();
        stream.write_all(&message)?;
        stream.read_exact(&mut reply)?;
        each.push(t.elapsed().as_secs_f64());
    }
    let seconds = start.elapsed().as_secs_f64();
    drop(stream);
    let _ = child.wait();
    each.sort_by(f64::total_cmp);
    let mut extra = Map::new();
    extra.insert("median_rtt_us".into(), json!((each[each.len() / 2] * 1e7).round() / 10.0));
    extra.insert("mean_rtt_us".into(), json!((seconds / trips as f64 * 1e7).round() / 10.0));
    Ok(Sample { seconds, items: Some(trips as f64), extra })
}

/// Reads what comes until `n` bytes have arrived, answers one byte, and
/// repeats until the connection closes; prints its port first.
pub(super) fn sink_server() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot listen on loopback")?;
    println!("{}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    let (mut stream, _) = listener.accept()?;
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; 4 << 20];
    let mut expected = [0u8; 8];
    loop {
        if stream.read_exact(&mut expected).is_err() {
            return Ok(());
        }
        let mut left = u64::from_le_bytes(expected);
        while left > 0 {
            let n = stream.read(&mut buf)?;
            anyhow::ensure!(n > 0, "the sender closed early");
            left = left.saturating_sub(n as u64);
        }
        stream.write_all(&[1])?;
    }
}

/// The raw loopback TCP throughput between two processes, in GB/s, for one
/// message of `n` bytes (the best of three): the reference for
/// `cluster-transfer`.
pub(super) fn tcp_throughput(n: usize) -> anyhow::Result<f64> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("--sink-server")
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the sink process")?;
    let mut port = String::new();
    BufReader::new(child.stdout.take().context("no stdout from the sink process")?).read_line(&mut port)?;
    let mut stream = TcpStream::connect(("127.0.0.1", port.trim().parse::<u16>()?))?;
    stream.set_nodelay(true)?;
    let message: Vec<u8> = (0..n).map(|i| i as u8).collect();
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        stream.write_all(&(n as u64).to_le_bytes())?;
        stream.write_all(&message)?;
        let mut ack = [0u8; 1];
        stream.read_exact(&mut ack)?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    drop(stream);
    let _ = child.wait();
    Ok((n as f64 / best / 1e7).round() / 100.0)
}
