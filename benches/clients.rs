//! What clients that never read cost the daemon, and whether it keeps
//! serving everyone else meanwhile.
//!
//! ```text
//! cargo bench --bench clients
//! RINGXFER_BENCH_CLIENTS=2000 RINGXFER_BENCH_ROUNDS=5 cargo bench --bench clients
//! ```
//!
//! Each round starts a daemon with the default settings, gives it 100 idle
//! jobs with 1 KiB tags (so that a job listing is about 120 KiB), then opens
//! RINGXFER_BENCH_CLIENTS (default 1,000) connections that each send Hello
//! and 20 listing requests and never read a byte. Once the daemon has
//! answered all it is going to (its count of events stops growing), the
//! round reads the daemon's resident memory (VmRSS) and times a 1 MiB copy
//! by a fresh client. The idle daemon's RSS is read first, for reference.
//!
//! Target: RSS under 128 MiB with 1,000 such clients, and the copy served
//! (in well under a second).

#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use ringxfer_ipc::{codec, Client, Request, TransferOptions, DEFAULT_MAX_FRAME, PROTOCOL_VERSION};
use support::{daemon_binary, env_rounds, fmt_list, median, Daemon, Result};

const LISTINGS_PER_CLIENT: u64 = 20;
const IDLE_JOBS: usize = 100;

fn main() {
    support::exit("clients", run());
}

fn run() -> Result<()> {
    let clients = std::env::var("RINGXFER_BENCH_CLIENTS")
        .ok()
        .map_or(Ok(1000), |v| {
            v.parse::<usize>()
                .map_err(|e| format!("RINGXFER_BENCH_CLIENTS={v:?}: {e}"))
        })?;
    let rounds = env_rounds()?;
    raise_nofile()?;
    let bin = daemon_binary()?;
    let (mut idle, mut loaded, mut copy_ms) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let r = one_round(&bin, clients)?;
        println!(
            "round {round}: idle {:.1} MiB, with {clients} silent clients {:.1} MiB, 1 MiB copy {:.1} ms",
            r.0, r.1, r.2
        );
        idle.push(r.0);
        loaded.push(r.1);
        copy_ms.push(r.2);
    }
    report("idle daemon RSS, MiB", &idle);
    report(
        &format!("RSS with {clients} clients that never read, MiB (target < 128)"),
        &loaded,
    );
    report("a fresh client's 1 MiB copy meanwhile, ms", &copy_ms);
    Ok(())
}

fn report(what: &str, v: &[f64]) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    println!(
        "{what}: median {:.1} (min {min:.1}, max {max:.1}; {})",
        median(v.to_vec()).unwrap_or(f64::NAN),
        fmt_list(v)
    );
}

/// Idle RSS, RSS under the silent clients (MiB), and the copy's time (ms).
fn one_round(bin: &std::path::Path, clients: usize) -> Result<(f64, f64, f64)> {
    let dir = support::bench_dir("clients")?;
    let socket = dir.path().join("rx.sock");
    let daemon = Daemon::start(bin, &socket, &[])?;
    let pid = daemon.pid();
    let idle_rss = rss_mib(pid)?;
    let owner = Client::connect(&socket).map_err(|e| e.to_string())?;
    let mut held = Vec::with_capacity(IDLE_JOBS);
    for i in 0..IDLE_JOBS {
        let (writer, reader) = UnixStream::pair().map_err(|e| e.to_string())?;
        let null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .map_err(|e| e.to_string())?;
        let opts = TransferOptions {
            tag: format!("{i:04}{}", "t".repeat(1020)),
            ..Default::default()
        };
        let job = owner
            .submit(reader.as_fd(), null.as_fd(), &opts)
            .map_err(|e| e.to_string())?;
        held.push((job, writer));
    }
    let asks = silent_requests()?;
    let mut silent = Vec::with_capacity(clients);
    for _ in 0..clients {
        let s = UnixStream::connect(&socket).map_err(|e| e.to_string())?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        let _ = (&s).write(&asks);
        silent.push(s);
    }
    settle(&owner)?;
    let loaded_rss = rss_mib(pid)?;
    let copy_ms = timed_copy(&socket, dir.path())?;
    drop((silent, held, owner, daemon));
    Ok((idle_rss, loaded_rss, copy_ms))
}

fn silent_requests() -> Result<Vec<u8>> {
    let mut asks = Vec::new();
    let hello = Request::Hello {
        version: PROTOCOL_VERSION,
    };
    codec::encode_frame(&hello, &mut asks, DEFAULT_MAX_FRAME).map_err(|e| e.to_string())?;
    for req in 0..LISTINGS_PER_CLIENT {
        let jobs = Request::Jobs { req, after: 0 };
        codec::encode_frame(&jobs, &mut asks, DEFAULT_MAX_FRAME).map_err(|e| e.to_string())?;
    }
    Ok(asks)
}

/// Waits until the daemon's count of events grows by no more than the
/// Stats answer that reads it.
fn settle(client: &Client) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = client.stats().map_err(|e| e.to_string())?.events_sent;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        let now = client.stats().map_err(|e| e.to_string())?.events_sent;
        if now <= last + 1 {
            return Ok(());
        }
        last = now;
    }
    Err("the daemon kept sending events for 60 s".into())
}

fn timed_copy(socket: &std::path::Path, dir: &std::path::Path) -> Result<f64> {
    let src = dir.join("src");
    support::write_source(&src, 1 << 20)?;
    let t0 = Instant::now();
    let client = Client::connect(socket).map_err(|e| e.to_string())?;
    client
        .copy_file(&src, &dir.join("dst"), &TransferOptions::default())
        .and_then(|job| {
            job.wait()
                .map_err(|e| ringxfer_ipc::ClientError::Handshake(e.to_string()))
        })
        .map_err(|e| format!("the served client's copy failed: {e}"))?;
    Ok(t0.elapsed().as_secs_f64() * 1e3)
}

fn rss_mib(pid: u32) -> Result<f64> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .ok_or_else(|| "no VmRSS in /proc/PID/status".to_string())
}

fn raise_nofile() -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit the call fills in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err("cannot read RLIMIT_NOFILE".into());
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: as above; raising the soft limit to the hard one is allowed.
    let ok = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0;
    ok.then_some(())
        .ok_or_else(|| "cannot raise RLIMIT_NOFILE".into())
}
