//! The floor under ringxfer's TLS row: `openssl s_client` pushing the
//! file's bytes through TLS 1.3 to `openssl s_server`, which writes what it
//! receives into the destination. No protocol, no name, no size, no reply:
//! what is left is the cost of the handshake, the cipher and moving the
//! bytes through two processes' reads and writes.
//!
//! s_server takes one connection (`-naccept 1`) and exits when the client
//! closes it, so each run starts a server of its own on a free port; its
//! start-up (loading the key) is neither timed nor counted in its CPU.
//! s_client reads the source on its stdin and, with `-no_ign_eof`, closes
//! the connection (close_notify) at its end; `-nocommands` stops it from
//! taking a 'Q', 'R' or 'k' at the start of a read for a command.

use std::fs::{self, File};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::lineup::Sample;
use crate::place::{free_port, port_taken};
use crate::support::peers::{children_cpu, find_program};
use crate::support::{stop_child, DaemonCpu, Result, GIB};

/// What to install when openssl is missing.
pub const INSTALL: &str = "apt-get install openssl";

/// The one suite both ends offer: TLS 1.3's default in OpenSSL, and the
/// first choice of rustls's ring provider, which ringxfer's TLS row
/// negotiates, so both rows pay for the same cipher.
pub const SUITE: &str = "TLS_AES_128_GCM_SHA256";

/// The name in the throwaway certificate, which the client checks.
const CN: &str = "bench";

/// openssl on PATH (or /usr/bin), or a note saying why the row is skipped.
pub fn program() -> std::result::Result<PathBuf, String> {
    find_program("openssl")
        .or_else(|| Some(PathBuf::from("/usr/bin/openssl")).filter(|p| p.is_file()))
        .ok_or_else(|| {
            format!("openssl is not installed: the openssl TLS row skipped; `{INSTALL}`")
        })
}

/// s_client to s_server on 127.0.0.1, with a certificate of the bench's own.
pub struct TlsCopy {
    openssl: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// Where each run's server and client write their stderr.
    dir: PathBuf,
}

impl TlsCopy {
    /// Makes a self-signed P-256 certificate and key, for a day, in
    /// `dir/openssl`.
    pub fn new(openssl: &Path, dir: &Path) -> Result<TlsCopy> {
        let dir = dir.join("openssl");
        fs::create_dir(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let out = Command::new(openssl)
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .arg("-subj")
            .arg(format!("/CN={CN}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run {} req: {e}", openssl.display()))?;
        if !out.status.success() {
            return Err(format!(
                "openssl req -x509 exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(TlsCopy {
            openssl: openssl.to_path_buf(),
            cert,
            key,
            dir,
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "{} s_client | s_server -naccept 1, TLS 1.3 {SUITE}, P-256 cert {}",
            self.openssl.display(),
            self.cert.display()
        )
    }

    /// `openssl s_client < SRC` to a fresh `openssl s_server > DST/NAME`.
    /// Time: from starting s_client until both have exited, the file
    /// written. CPU: each process's, from RUSAGE_CHILDREN as it is reaped,
    /// less what the server spent before it listened.
    pub fn push(&self, src: &Path, dst_dir: &Path, size: u64) -> Result<Sample> {
        let name = src.file_name().ok_or("the source has no name")?;
        let dst = dst_dir.join(name);
        let port = free_port()?;
        let mut server = self.serve(port, &dst)?;
        let startup = DaemonCpu::new(server.child.id()).secs()?;
        let input = File::open(src).map_err(|e| format!("open {}: {e}", src.display()))?;
        let client_log = self.dir.join("s_client.stderr");
        let log = File::create(&client_log)
            .map_err(|e| format!("create {}: {e}", client_log.display()))?;
        let mut cmd = crate::net::sender(&self.openssl);
        cmd.args([
            "s_client",
            "-quiet",
            "-no_ign_eof",
            "-nocommands",
            "-tls1_3",
        ])
        .args([
            "-ciphersuites",
            SUITE,
            "-servername",
            CN,
            "-verify_hostname",
            CN,
        ])
        .arg("-CAfile")
        .arg(&self.cert)
        .arg("-verify_return_error")
        .arg("-connect")
        .arg(format!("{}:{port}", crate::net::host()))
        .stdin(input)
        .stdout(Stdio::null())
        .stderr(log);
        // Generous: a minute, and a minute per GiB, before calling it hung.
        let limit = Duration::from_secs_f64(60.0 + 60.0 * size as f64 / GIB);
        let cpu0 = children_cpu();
        let t0 = Instant::now();
        let client = cmd
            .spawn()
            .map_err(|e| format!("start openssl s_client: {e}"))?;
        let mut client = Reaped::new("openssl s_client", client, None, client_log);
        let deadline = t0 + limit;
        exit_by(&server.child, deadline).map_err(|e| server.failed(&e))?;
        exit_by(&client.child, deadline).map_err(|e| client.failed(&e))?;
        let secs = t0.elapsed().as_secs_f64();
        // Each reap adds that one process's CPU to RUSAGE_CHILDREN.
        let recv_status = server.reap()?;
        let cpu1 = children_cpu();
        let send_status = client.reap()?;
        let cpu2 = children_cpu();
        for (status, side) in [(recv_status, &server), (send_status, &client)] {
            if !status.success() {
                return Err(side.failed(&format!("exited with {status}")));
            }
        }
        let got = fs::metadata(&dst)
            .map_err(|e| format!("stat {}: {e}", dst.display()))?
            .len();
        if got != size {
            return Err(format!(
                "openssl s_server wrote {got} bytes to {}, not {size}",
                dst.display()
            ));
        }
        Ok(Sample {
            secs,
            send_cpu: cpu2 - cpu1,
            recv_cpu: cpu1 - cpu0 - startup,
        })
    }

    /// `openssl s_server` on 127.0.0.1:`port`, writing what it receives to
    /// `dst`, once it listens.
    fn serve(&self, port: u16, dst: &Path) -> Result<Reaped> {
        let out = File::create(dst).map_err(|e| format!("create {}: {e}", dst.display()))?;
        let log_path = self.dir.join("s_server.stderr");
        let log =
            File::create(&log_path).map_err(|e| format!("create {}: {e}", log_path.display()))?;
        // Its stdin is a pipe this end keeps open and never writes: at the
        // end of a file or /dev/null, -quiet s_server would find stdin
        // readable forever and spin on it.
        let mut child = Command::new(&self.openssl)
            .args(["s_server", "-quiet", "-naccept", "1", "-tls1_3"])
            .args(["-ciphersuites", SUITE])
            .arg("-cert")
            .arg(&self.cert)
            .arg("-key")
            .arg(&self.key)
            .arg("-accept")
            .arg(format!("{}:{port}", crate::net::host()))
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start openssl s_server: {e}"))?;
        let stdin = child.stdin.take();
        let mut server = Reaped::new("openssl s_server", child, stdin, log_path);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !port_taken(port) {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(server.failed(&format!("exited at start-up with {status}")));
            }
            if Instant::now() > deadline {
                let host = crate::net::host();
                return Err(server.failed(&format!("did not listen on {host}:{port} in 10 s")));
            }
            thread::sleep(Duration::from_millis(5));
        }
        Ok(server)
    }
}

/// A child of one run, stopped and reaped on drop unless [`Reaped::reap`]
/// got to it first, so an error leaves no process behind.
struct Reaped {
    name: &'static str,
    child: Child,
    /// The server's stdin, held open until it is reaped.
    _stdin: Option<ChildStdin>,
    log: PathBuf,
    reaped: bool,
}

impl Reaped {
    fn new(name: &'static str, child: Child, stdin: Option<ChildStdin>, log: PathBuf) -> Reaped {
        Reaped {
            name,
            child,
            _stdin: stdin,
            log,
            reaped: false,
        }
    }

    /// Reaps a child that has exited.
    fn reap(&mut self) -> Result<ExitStatus> {
        let status = self
            .child
            .wait()
            .map_err(|e| format!("wait for {}: {e}", self.name))?;
        self.reaped = true;
        Ok(status)
    }

    /// `what` went wrong, with what the child said on stderr.
    fn failed(&self, what: &str) -> String {
        let said = fs::read_to_string(&self.log).unwrap_or_default();
        format!("{} {what}: {}", self.name, said.trim())
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if !self.reaped {
            stop_child(&mut self.child);
        }
    }
}

/// Waits until `child` has exited, not reaping it, or fails at `deadline`.
/// It sleeps in poll(2) on the child's pidfd, which turns readable at its
/// exit, so the time is exact and the wait costs no CPU.
fn exit_by(child: &Child, deadline: Instant) -> Result<()> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
    if fd < 0 {
        return Err(format!("pidfd_open: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("did not exit in time (hung?)".into());
        }
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: `p` is one valid pollfd.
        match unsafe { libc::poll(&mut p, 1, ms.max(1)) } {
            n if n > 0 => return Ok(()),
            0 => continue,
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(format!("poll on a pidfd: {e}"));
                }
            }
        }
    }
}
