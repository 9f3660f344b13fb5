//! ringxfer's contenders: two `ringxferd`, one receiving on a loopback
//! port into an export on the tmpfs, one pushing what the CLI hands it,
//! over TLS 1.3 between pinned daemons or in plaintext.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::lineup::{timed, Sample};
use crate::place::{free_port, port_taken};
use crate::probe::Probe;
use crate::support::{Daemon, DaemonCpu, Result};

/// The daemons and the CLI of one ringxfer contender.
pub struct Pair {
    cli: PathBuf,
    /// `--streams`: connections one file is pushed over.
    streams: u32,
    /// A local copy on the receiving daemon during each push
    /// (RINGXFER_BENCH_PROBE).
    probe: Option<Probe>,
    socket: PathBuf,
    /// The receiving daemon's Unix socket.
    rx_socket: PathBuf,
    port: u16,
    sender_cpu: DaemonCpu,
    receiver_cpu: DaemonCpu,
    // Dropped (stopped) last, after the readers of their CPU.
    _sender: Daemon,
    _receiver: Daemon,
}

/// What starting a pair needs.
pub struct Setup<'a> {
    pub daemon: &'a Path,
    pub cli: &'a Path,
    pub daemon_args: &'a [String],
    /// For sockets, keys and config files.
    pub dir: &'a Path,
    /// The receiver's export.
    pub export: &'a Path,
    /// The contender's key: its files' names in `dir` start with it.
    pub name: &'a str,
}

/// `ringxferd --init-keys DIR/NAME`: the directory and the pin it printed.
fn init_keys(daemon: &Path, dir: &Path, name: &str) -> Result<(PathBuf, String)> {
    let keys = dir.join(name);
    fs::create_dir(&keys).map_err(|e| format!("create {}: {e}", keys.display()))?;
    let out = Command::new(daemon)
        .arg("--init-keys")
        .arg(&keys)
        .output()
        .map_err(|e| format!("run {} --init-keys: {e}", daemon.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "ringxferd --init-keys {} exited with {}: {}",
            keys.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let pin = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("pin = \"")?.strip_suffix('"'))
        .ok_or_else(|| format!("ringxferd --init-keys printed no pin: {text}"))?;
    Ok((keys, pin.to_string()))
}

/// The TOML lines naming the key and certificate in `keys` and trusting
/// the daemon of `pin`, called `peer`.
fn tls_lines(keys: &Path, peer: &str, pin: &str) -> String {
    format!(
        "tls_cert = \"{0}/cert.pem\"\ntls_key = \"{0}/key.pem\"\n\n[[peer]]\nname = \"{peer}\"\npin = \"{pin}\"\n",
        keys.display()
    )
}

fn write_config(path: &Path, text: &str) -> Result<Vec<String>> {
    fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(vec!["--config".into(), path.display().to_string()])
}

impl Pair {
    /// Receiver and sender speaking TLS 1.3, each pinning the other.
    pub fn tls(s: &Setup<'_>) -> Result<Pair> {
        let (rx_keys, rx_pin) = init_keys(s.daemon, s.dir, &format!("{}-keys-receiver", s.name))?;
        let (tx_keys, tx_pin) = init_keys(s.daemon, s.dir, &format!("{}-keys-sender", s.name))?;
        let port = free_port()?;
        let rx = format!(
            "listen_tcp = \"{}:{port}\"\n{}\n{}",
            crate::net::host(),
            tls_lines(&rx_keys, "sender", &tx_pin),
            export_table(s.export)
        );
        let rx = write_config(&s.dir.join(format!("{}-receiver.toml", s.name)), &rx)?;
        let tx = tls_lines(&tx_keys, "receiver", &rx_pin);
        let tx = write_config(&s.dir.join(format!("{}-sender.toml", s.name)), &tx)?;
        Pair::start(s, port, rx, tx)
    }

    /// A receiver with `insecure_plaintext` and a sender with no identity.
    pub fn plain(s: &Setup<'_>) -> Result<Pair> {
        let port = free_port()?;
        let rx = format!(
            "listen_tcp = \"127.0.0.1:{port}\"\ninsecure_plaintext = true\n\n{}",
            export_table(s.export)
        );
        let rx = write_config(&s.dir.join(format!("{}-receiver.toml", s.name)), &rx)?;
        Pair::start(s, port, rx, vec!["--no-config".into()])
    }

    fn start(
        s: &Setup<'_>,
        port: u16,
        mut rx_args: Vec<String>,
        mut tx_args: Vec<String>,
    ) -> Result<Pair> {
        rx_args.extend_from_slice(s.daemon_args);
        tx_args.extend_from_slice(s.daemon_args);
        let name = s.name;
        let rx_socket = s.dir.join(format!("{name}-rx.sock"));
        let receiver = Daemon::start(s.daemon, &rx_socket, &rx_args)?;
        wait_listening(port)?;
        let socket = s.dir.join(format!("{name}-tx.sock"));
        let sender = Daemon::start(s.daemon, &socket, &tx_args)?;
        Ok(Pair {
            cli: s.cli.to_path_buf(),
            streams: 1,
            probe: None,
            socket,
            rx_socket,
            port,
            sender_cpu: DaemonCpu::new(sender.pid()),
            receiver_cpu: DaemonCpu::new(receiver.pid()),
            _sender: sender,
            _receiver: receiver,
        })
    }

    /// Pushes each file over `n` connections at once (`--streams`).
    pub fn with_streams(self, n: u32) -> Pair {
        Pair { streams: n, ..self }
    }

    /// Times a local copy on the receiving daemon during each push; its
    /// files in `dir`.
    pub fn with_probe(self, dir: &Path) -> Result<Pair> {
        let probe = Probe::new(&self.rx_socket, dir)?;
        Ok(Pair {
            probe: Some(probe),
            ..self
        })
    }

    /// What the probe measured, if there is one.
    pub fn probe(&self) -> Option<&Probe> {
        self.probe.as_ref()
    }

    pub fn print_cpu_source(&self, label: &str) {
        print!("  {label}, sender: ");
        self.sender_cpu.print_source("");
        print!("  {label}, receiver: ");
        self.receiver_cpu.print_source("");
    }

    /// `ringxfer copy SRC 127.0.0.1:PORT:inbox/NAME` (a tree: `copy -r SRC
    /// 127.0.0.1:PORT:inbox`); the note is the CLI's own elapsed_s.
    pub fn push(&self, src: &Path, size: u64) -> Result<(Sample, String)> {
        let name = src
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("the source's name is not UTF-8")?;
        let mut cmd = crate::net::sender(&self.cli);
        cmd.arg("--socket")
            .arg(&self.socket)
            .args(["--daemon-only", "--json", "copy"]);
        if self.streams > 1 {
            cmd.arg(format!("--streams={}", self.streams));
        }
        if src.is_dir() {
            // Into the export, the tree keeps its name.
            cmd.arg("-r")
                .arg(src)
                .arg(format!("{}:{}:inbox", crate::net::host(), self.port));
        } else {
            cmd.arg(src)
                .arg(format!("{}:{}:inbox/{name}", crate::net::host(), self.port));
        }
        let (s0, r0) = (self.sender_cpu.secs()?, self.receiver_cpu.secs()?);
        let run = || {
            let out = timed(cmd)?;
            Ok((out, self.sender_cpu.secs()?, self.receiver_cpu.secs()?))
        };
        let (out, s1, r1) = match &self.probe {
            Some(probe) => probe.around(run)?,
            None => run()?,
        };
        let report: serde_json::Value = out
            .stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .ok_or_else(|| format!("ringxfer printed no JSON: {}", out.stdout.trim()))?;
        if report["bytes"].as_u64() != Some(size) {
            return Err(format!("ringxfer reported {report}, not {size} bytes"));
        }
        let sample = Sample {
            secs: out.wall,
            send_cpu: out.cpu + (s1 - s0),
            recv_cpu: r1 - r0,
        };
        let elapsed = report["elapsed_s"].as_f64().unwrap_or(f64::NAN);
        Ok((sample, format!("CLI says {elapsed:.3} s")))
    }
}

/// The `[[export]]` "inbox": `dir`, written as the user running the bench.
fn export_table(dir: &Path) -> String {
    // SAFETY: geteuid takes nothing and cannot fail.
    let uid = unsafe { libc::geteuid() };
    format!(
        "[[export]]\nname = \"inbox\"\npath = \"{}\"\nuser = \"{uid}\"\n",
        dir.display()
    )
}

/// Waits until something has bound 127.0.0.1:`port`.
pub fn wait_listening(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !port_taken(port) {
        if Instant::now() > deadline {
            let host = crate::net::host();
            return Err(format!("nothing listens on {host}:{port} after 10 s"));
        }
        thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
