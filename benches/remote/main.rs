//! Host to host on loopback (issue 18): `ringxfer copy FILE
//! HOST:PORT:inbox/NAME` between two daemons, over TLS 1.3 and in
//! plaintext, against rsync over ssh and rsync to an rsync daemon, with
//! openssl's bare TLS 1.3 copy as the floor under ringxfer's TLS row.
//!
//! ```text
//! cargo bench --bench remote                                   # 1 GiB, 5 rounds
//! RINGXFER_BENCH_SIZE=128MiB RINGXFER_BENCH_ROUNDS=2 cargo bench --bench remote
//! RINGXFER_BENCH_DAEMON_ARGS="--engine threads" cargo bench --bench remote
//! RINGXFER_BENCH_FILES=1000 cargo bench --bench remote          # a tree: 1000 x 4 KiB
//! RINGXFER_BENCH_NET=veth cargo bench --bench remote            # across a veth pair (root)
//! RINGXFER_BENCH_STREAMS=4 cargo bench --bench remote           # and a row with --streams 4
//! ```
//!
//! RINGXFER_BENCH_PROBE=1 times a local 1 MiB copy on the receiving
//! daemon in the middle of each TLS push, and alone after it (probe.rs):
//! whether a peer's push disturbs the daemon's local users.
//!
//! RINGXFER_BENCH_STREAMS=N (2 to 16) adds a row: ringxfer over TLS with
//! `copy --streams N`, the file pushed as N stripes, each over a
//! connection of its own, between another pair of daemons.
//!
//! RINGXFER_BENCH_NET=veth puts every sending command in a network
//! namespace of the bench's own, joined to this one by a veth pair
//! (net.rs), as two hosts would be; the plaintext row sits out there (a
//! plaintext push goes to loopback addresses only).
//!
//! With RINGXFER_BENCH_FILES=N the source is a tree of N files (the size,
//! 4 KiB each by default, shared out evenly), 100 to a directory, pushed
//! with `copy -r` and `rsync -r`; the openssl row, one stream of bytes,
//! sits out. Lines then say files/s too.
//!
//! The contenders, every server on 127.0.0.1 only, each on a port of its own:
//! 1. ringxfer, TLS 1.3: a receiving `ringxferd` (`listen_tcp`, its key and
//!    certificate from `ringxferd --init-keys`, the sender's pin in a
//!    `[[peer]]`, an `[[export]]` "inbox") and a sending one (its own key,
//!    the receiver's pin); the release CLI pushes with `ringxfer --socket
//!    SENDER --daemon-only --json copy SRC 127.0.0.1:PORT:inbox/NAME`.
//! 2. ringxfer, plaintext: a receiver with `insecure_plaintext`, a sender
//!    with no identity (`--no-config`).
//! 3. rsync over ssh: `sshd -D` with an sshd_config, host key and
//!    authorized key of the bench's own; `rsync -W -e "ssh -p PORT -i KEY
//!    ... -c aes128-gcm@openssh.com" SRC root@127.0.0.1:DIR/`.
//! 4. rsync daemon: `rsync --daemon --no-detach` with a module of the
//!    bench's own; `rsync -W SRC rsync://127.0.0.1:PORT/mod/`.
//! 5. openssl TLS 1.3: `openssl s_client -quiet -no_ign_eof -nocommands
//!    -tls1_3 ... < SRC` to an `openssl s_server -quiet -naccept 1 -tls1_3
//!    ... > DST/NAME` started for the run, both held to
//!    TLS_AES_128_GCM_SHA256 (what ringxfer's rustls negotiates), with a
//!    throwaway P-256 certificate: the bytes through TLS and nothing else
//!    (openssl.rs).
//!
//! The rsync rows are skipped, with a note, where rsync, sshd, ssh or
//! ssh-keygen is missing (`apt-get install rsync openssh-server`); rsync
//! over ssh needs root. The openssl row is skipped where openssl is
//! missing (`apt-get install openssl`).
//!
//! The source (RINGXFER_BENCH_SIZE, 1 GiB by default) and every
//! destination live on a tmpfs the bench mounts (or /dev/shm), so only
//! the transports are compared. Each contender runs once unmeasured, then
//! RINGXFER_BENCH_ROUNDS (5) rounds take turns, in a balanced order
//! (`turn_order` in support/peers.rs). Before
//! each run every destination is deleted and the file systems synced;
//! after it the destination is checked (size, first and last 4 KiB).
//!
//! Time: the wall time of the sending command, start-up and handshake
//! included, as a user sees it. CPU (user + system) of both ends: for
//! ringxfer, each daemon's utime + stime (its CPU-time clock, as
//! /proc/PID/stat fields 14 and 15 but in ns) and the CLI's rusage on the
//! sending side; for rsync, the rsync client (and its ssh) as reaped
//! children on the sending side, and for the receiver the server's utime +
//! stime + cutime + cstime (fields 14 to 17), read once it has reaped the
//! processes it forked for the connection (server.rs); for openssl, each
//! of s_client and s_server as reaped children (the server less its CPU
//! before it listened), the time running until both have exited.

// The shared helpers serve every bench; this one uses some.
#[allow(dead_code)]
#[path = "../support/mod.rs"]
mod support;

mod lineup;
mod net;
mod openssl;
mod place;
mod probe;
mod report;
mod ringxfer;
mod rsync;
mod server;

use std::path::{Path, PathBuf};

use lineup::{version, Entry, Runner, Sample};
use place::{Place, Want};
use support::{Result, GIB};

/// Rounds unless RINGXFER_BENCH_ROUNDS says otherwise.
const DEFAULT_ROUNDS: usize = 5;

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter here.
    support::exit("remote", run());
}

struct Settings {
    /// Across a veth pair rather than on loopback.
    veth: bool,
    size: u64,
    /// Files in the tree pushed; 0: one file.
    files: u64,
    rounds: usize,
    daemon_args: Vec<String>,
    /// A row pushing over this many connections at once; 1: none.
    streams: u32,
    /// Time a local copy on the receiving daemon during each TLS push.
    probe: bool,
}

fn settings() -> Result<Settings> {
    let files = match std::env::var("RINGXFER_BENCH_FILES") {
        Ok(v) => v
            .parse::<u64>()
            .map_err(|_| format!("RINGXFER_BENCH_FILES={v:?} is not a number of files"))?,
        Err(_) => 0,
    };
    let default_size = if files > 0 { files * 4096 } else { 1 << 30 };
    let veth = match std::env::var("RINGXFER_BENCH_NET").as_deref() {
        Ok("veth") => true,
        Ok("loopback") | Err(_) => false,
        Ok(other) => return Err(format!("RINGXFER_BENCH_NET={other:?}: loopback or veth")),
    };
    Ok(Settings {
        veth,
        size: support::env_size("RINGXFER_BENCH_SIZE", default_size)?,
        files,
        rounds: match std::env::var("RINGXFER_BENCH_ROUNDS") {
            Ok(_) => support::env_rounds()?,
            Err(_) => DEFAULT_ROUNDS,
        },
        daemon_args: support::env_daemon_args(),
        streams: match std::env::var("RINGXFER_BENCH_STREAMS") {
            Ok(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=16).contains(n))
                .ok_or_else(|| format!("RINGXFER_BENCH_STREAMS={v:?}: 1 to 16 streams"))?,
            Err(_) => 1,
        },
        probe: std::env::var_os("RINGXFER_BENCH_PROBE").is_some_and(|v| v == "1"),
    })
}

/// Starts every contender that can run: their daemons and servers, with
/// sockets, keys and configs in `dir` and destinations on `place`; a note
/// for each left out.
fn lineup(cfg: &Settings, dir: &Path, place: &Place) -> Result<(Vec<Entry>, Vec<String>)> {
    let daemon = support::daemon_binary()?;
    let cli = support::bin_override("ringxfer")?
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ringxfer")));
    let mut entries = Vec::new();
    let mut notes = Vec::new();
    let striped = cfg.streams > 1 && cfg.files == 0;
    // (key, label, TLS, --streams); the last row only when asked for.
    let rows = [
        ("ringxfer_tls", "ringxfer push, TLS 1.3", true, 1),
        ("ringxfer_plain", "ringxfer push, plaintext", false, 1),
        (
            "ringxfer_tls_streams",
            "ringxfer push, TLS 1.3, --streams",
            true,
            cfg.streams,
        ),
    ];
    let rows = &rows[..if striped { 3 } else { 2 }];
    for &(key, label, tls, streams) in rows {
        if !tls && net::veth() {
            notes.push("a plaintext push goes to loopback addresses only: its row sits out across the veth pair".into());
            continue;
        }
        let export = place.subdir(key)?;
        let setup = ringxfer::Setup {
            daemon: &daemon,
            cli: &cli,
            daemon_args: &cfg.daemon_args,
            dir,
            export: &export,
            name: key,
        };
        let pair = if tls {
            ringxfer::Pair::tls(&setup)?
        } else {
            ringxfer::Pair::plain(&setup)?
        }
        .with_streams(streams);
        let pair = if cfg.probe && key == "ringxfer_tls" {
            pair.with_probe(dir)?
        } else {
            pair
        };
        pair.print_cpu_source(label);
        let runner = Runner::Ringxfer(pair);
        entries.push(Entry {
            key,
            label,
            dst_dir: export,
            runner,
        });
    }
    support::print_daemon(&daemon, &cfg.daemon_args);
    println!("  cli {}", cli.display());
    rsync_entries(dir, place, &mut entries, &mut notes)?;
    if cfg.files == 0 {
        openssl_entry(dir, place, &mut entries, &mut notes)?;
    } else {
        notes.push("openssl moves one stream of bytes, not a tree: its row sits out".into());
    }
    Ok((entries, notes))
}

/// The openssl row, if openssl is installed.
fn openssl_entry(
    dir: &Path,
    place: &Place,
    entries: &mut Vec<Entry>,
    notes: &mut Vec<String>,
) -> Result<()> {
    let program = match openssl::program() {
        Ok(p) => p,
        Err(note) => {
            notes.push(note);
            return Ok(());
        }
    };
    let copy = openssl::TlsCopy::new(&program, dir)?;
    println!(
        "  openssl {} ({})",
        copy.describe(),
        version(&program, "version")
    );
    entries.push(Entry {
        key: "openssl_tls",
        label: "openssl TLS 1.3 (aes128-gcm)",
        dst_dir: place.subdir("openssl_tls")?,
        runner: Runner::Openssl(copy),
    });
    Ok(())
}

/// The rsync rows that can run.
fn rsync_entries(
    dir: &Path,
    place: &Place,
    entries: &mut Vec<Entry>,
    notes: &mut Vec<String>,
) -> Result<()> {
    let progs = match rsync::programs() {
        Ok(p) => p,
        Err(note) => {
            notes.push(note);
            return Ok(());
        }
    };
    println!(
        "  rsync {} ({})",
        progs.rsync.display(),
        version(&progs.rsync, "--version")
    );
    match &progs.ssh {
        Ok(ssh) => {
            let dst = place.subdir("rsync_ssh")?;
            let over = rsync::OverSsh::start(&progs.rsync, ssh, dir)?;
            println!(
                "  sshd {} ({}), pid {}",
                ssh[0].display(),
                version(&ssh[2], "-V"),
                over.sshd.pid()
            );
            println!("  rsync -e \"{}\"", over.rsh());
            entries.push(Entry {
                key: "rsync_ssh",
                label: "rsync -W over ssh (aes128-gcm)",
                dst_dir: dst,
                runner: Runner::Ssh(over),
            });
        }
        Err(note) => notes.push(note.clone()),
    }
    let dst = place.subdir("rsync_daemon")?;
    let d = rsync::Rsyncd::start(&progs.rsync, dir, &dst)?;
    println!("  rsync --daemon pid {}, {}", d.server.pid(), d.url());
    entries.push(Entry {
        key: "rsync_daemon",
        label: "rsync -W to rsync --daemon",
        dst_dir: dst,
        runner: Runner::Daemon(d),
    });
    Ok(())
}

/// Runs every contender once, in round `round`'s balanced order; keeps the
/// samples unless this is the warm-up.
fn pass(
    entries: &[Entry],
    src: &Path,
    want: &Want,
    label: &str,
    round: usize,
    mut out: Option<&mut Vec<Vec<Sample>>>,
) -> Result<()> {
    let dirs: Vec<&Path> = entries.iter().map(|e| e.dst_dir.as_path()).collect();
    let gib = want.size as f64 / GIB;
    let files = |secs: f64| match want.files {
        0 => String::new(),
        n => format!(" {:>9.0} files/s", n as f64 / secs),
    };
    for i in support::peers::turn_order(entries.len(), round) {
        let e = &entries[i];
        place::empty_dirs(&dirs)?;
        let (s, note) = e.run(src, want)?;
        println!(
            "  {label:<11} {:<32} {:>6.2} GiB/s{} {:>7.3} s  CPU s/GiB send {:.3} recv {:.3}{}",
            e.label,
            gib / s.secs,
            files(s.secs),
            s.secs,
            s.send_cpu / gib,
            s.recv_cpu / gib,
            if note.is_empty() {
                String::new()
            } else {
                format!("  ({note})")
            }
        );
        if let Some(out) = out.as_deref_mut() {
            out[i].push(s);
        }
    }
    Ok(())
}

fn intro(cfg: &Settings, place: &Place) -> Result<()> {
    let gib = cfg.size as f64 / GIB;
    let mem = support::mem_available();
    println!(
        "ringxfer remote bench: host to host over {}",
        net::describe()
    );
    support::print_host(mem);
    println!(
        "  size {} bytes ({gib:.3} GiB), {} measured round(s) after 1 warm-up round",
        cfg.size, cfg.rounds
    );
    if cfg.files > 0 {
        println!(
            "  a tree of {} files of {} bytes, 100 to a directory",
            cfg.files,
            cfg.size / cfg.files
        );
    }
    println!(
        "  files on {} ({})",
        place.describe(),
        support::fs_type(&place.dir)
    );
    println!("  note: time = wall of the sending command; CPU = user+sys of both ends (see benches/remote/main.rs)");
    if mem.is_some_and(|m| m < cfg.size.saturating_mul(2).saturating_add(512 << 20)) {
        return Err(format!(
            "MemAvailable is below twice the size ({gib:.2} GiB) and 512 MiB: the tmpfs holds the source and a copy"
        ));
    }
    Ok(())
}

fn run() -> Result<()> {
    let cfg = settings()?;
    let veth = net::setup(cfg.veth)?;
    let tmp = support::bench_dir("remote-")?;
    let place = Place::new(tmp.path(), cfg.size)?;
    intro(&cfg, &place)?;
    let (src, want) = if cfg.files > 0 {
        let src = place.dir.join("tree");
        place::write_tree(&src, cfg.files, cfg.size / cfg.files)?;
        let want = Want::of_tree(&src, cfg.files, cfg.size / cfg.files)?;
        (src, want)
    } else {
        let src = place.dir.join("source.bin");
        support::write_source(&src, cfg.size)?;
        let want = Want::of(&src, cfg.size)?;
        (src, want)
    };
    let (entries, notes) = lineup(&cfg, tmp.path(), &place)?;
    for n in &notes {
        println!("  note: {n}");
    }
    let mut samples = vec![Vec::new(); entries.len()];
    pass(&entries, &src, &want, "warm-up", 0, None)?;
    for round in 1..=cfg.rounds {
        let label = format!("round {round}/{}", cfg.rounds);
        pass(&entries, &src, &want, &label, round, Some(&mut samples))?;
    }
    report::report(&entries, &samples, cfg.size, cfg.rounds);
    for e in &entries {
        if let Runner::Ringxfer(pair) = &e.runner {
            if let Some(probe) = pair.probe() {
                println!("RESULT_JSON {}", probe.report(e.label));
            }
        }
    }
    // The servers hold directories on the tmpfs: stop them before unmounting.
    drop(entries);
    drop(place);
    drop(tmp);
    drop(veth);
    Ok(())
}
