//! rsync's contenders: over ssh to a private sshd on 127.0.0.1, and to an
//! rsync daemon on 127.0.0.1, each server the bench's child (server.rs).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::lineup::{timed, Sample};
use crate::place::free_port;
use crate::server::Server;
use crate::support::peers::find_program;
use crate::support::Result;

/// What to install when a program is missing.
pub const INSTALL: &str = "apt-get install rsync openssh-server";

/// The programs both rsync rows need, or why they cannot run.
pub struct Programs {
    pub rsync: PathBuf,
    /// sshd, ssh-keygen and ssh, or why the ssh row cannot run.
    pub ssh: std::result::Result<[PathBuf; 3], String>,
}

/// `name` on PATH or in the sbin directories a user's PATH may lack.
fn program(name: &str) -> Option<PathBuf> {
    find_program(name).or_else(|| {
        ["/usr/sbin", "/sbin", "/usr/local/sbin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
    })
}

/// The rsync, sshd, ssh-keygen and ssh found, or a note for each missing.
pub fn programs() -> std::result::Result<Programs, String> {
    let rsync = program("rsync")
        .ok_or_else(|| format!("rsync is not installed: both rsync rows skipped; `{INSTALL}`"))?;
    // SAFETY: geteuid takes nothing and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let found = ["sshd", "ssh-keygen", "ssh"].map(program);
    let ssh = match found {
        _ if !root => Err("rsync over ssh needs root (sshd): skipped".to_string()),
        [Some(a), Some(b), Some(c)] => Ok([a, b, c]),
        _ => Err(format!(
            "sshd, ssh-keygen or ssh is not installed: rsync over ssh skipped; `{INSTALL}`"
        )),
    };
    Ok(Programs { rsync, ssh })
}

/// rsync to `root@127.0.0.1:DIR/` through ssh, to an sshd of its own.
pub struct OverSsh {
    rsync: PathBuf,
    rsh: String,
    pub sshd: Server,
}

fn keygen(keygen: &Path, path: &Path) -> Result<()> {
    let out = Command::new(keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()
        .map_err(|e| format!("run ssh-keygen: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ssh-keygen -f {} exited with {}: {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

impl OverSsh {
    /// Makes a host key and a client key in `dir`, writes an sshd_config
    /// that takes only that client key, and starts `sshd -D` on a free port.
    pub fn start(
        rsync: &Path,
        [sshd, ssh_keygen, ssh]: &[PathBuf; 3],
        dir: &Path,
    ) -> Result<OverSsh> {
        let host_key = dir.join("ssh_host_ed25519_key");
        let client_key = dir.join("client_ed25519_key");
        keygen(ssh_keygen, &host_key)?;
        keygen(ssh_keygen, &client_key)?;
        let authorized = dir.join("authorized_keys");
        fs::copy(client_key.with_extension("pub"), &authorized)
            .map_err(|e| format!("write {}: {e}", authorized.display()))?;
        // sshd refuses to start without its privilege separation directory,
        // which systemd's tmpfiles make on a booted system.
        fs::create_dir_all("/run/sshd").map_err(|e| format!("create /run/sshd: {e}"))?;
        let port = free_port()?;
        let config = dir.join("sshd_config");
        let text = format!(
            "Port {port}\nListenAddress {}\nHostKey {}\nAuthorizedKeysFile {}\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile {}\n\
             LogLevel ERROR\n",
            crate::net::host(),
            host_key.display(),
            authorized.display(),
            dir.join("sshd.pid").display()
        );
        fs::write(&config, text).map_err(|e| format!("write {}: {e}", config.display()))?;
        let mut cmd = Command::new(sshd);
        cmd.arg("-D").arg("-e").arg("-f").arg(&config);
        let sshd = Server::start("sshd", cmd, &dir.join("sshd.log"), port, "SSH-")?;
        let rsh = format!(
            "{} -p {port} -i {} -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no \
             -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -c aes128-gcm@openssh.com",
            ssh.display(),
            client_key.display()
        );
        Ok(OverSsh {
            rsync: rsync.to_path_buf(),
            rsh,
            sshd,
        })
    }

    pub fn rsh(&self) -> &str {
        &self.rsh
    }

    /// `rsync -W -r -e SSH SRC root@127.0.0.1:DST/`: the sender is the rsync
    /// and ssh this process waits for; the receiver what sshd forked.
    pub fn push(&self, src: &Path, dst: &Path) -> Result<Sample> {
        let mut cmd = crate::net::sender(&self.rsync);
        cmd.args(["-W", "-r"])
            .arg("-e")
            .arg(&self.rsh)
            .arg(src)
            .arg(format!("root@{}:{}/", crate::net::host(), dst.display()));
        self.sshd.wait_reaped()?;
        let r0 = self.sshd.cpu()?;
        let out = timed(cmd)?;
        self.sshd.wait_reaped()?;
        Ok(Sample {
            secs: out.wall,
            send_cpu: out.cpu,
            recv_cpu: self.sshd.cpu()? - r0,
        })
    }
}

/// rsync to `rsync://127.0.0.1:PORT/mod/`, an rsync daemon of its own.
pub struct Rsyncd {
    rsync: PathBuf,
    url: String,
    pub server: Server,
}

impl Rsyncd {
    /// `rsync --daemon --no-detach` on a free port, its module `mod`
    /// writing into `dst` as root.
    pub fn start(rsync: &Path, dir: &Path, dst: &Path) -> Result<Rsyncd> {
        let port = free_port()?;
        let config = dir.join("rsyncd.conf");
        // SAFETY: geteuid takes nothing and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        // Not root, the daemon cannot change users: it writes as itself.
        let owner = if root {
            "    uid = root\n    gid = root\n"
        } else {
            ""
        };
        let text = format!(
            "use chroot = no\nlog file = {}\n\n[mod]\n    path = {}\n    read only = no\n{owner}",
            dir.join("rsyncd.log").display(),
            dst.display()
        );
        fs::write(&config, text).map_err(|e| format!("write {}: {e}", config.display()))?;
        let mut cmd = Command::new(rsync);
        cmd.args(["--daemon", "--no-detach"])
            .arg(format!("--config={}", config.display()))
            .arg(format!("--port={port}"))
            .arg(format!("--address={}", crate::net::host()));
        let server = Server::start(
            "rsync --daemon",
            cmd,
            &dir.join("rsyncd.stderr"),
            port,
            "@RSYNCD:",
        )?;
        Ok(Rsyncd {
            rsync: rsync.to_path_buf(),
            url: format!("rsync://{}:{port}/mod/", crate::net::host()),
            server,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// `rsync -W -r SRC rsync://127.0.0.1:PORT/mod/`.
    pub fn push(&self, src: &Path) -> Result<Sample> {
        let mut cmd = crate::net::sender(&self.rsync);
        cmd.args(["-W", "-r"]).arg(src).arg(&self.url);
        self.server.wait_reaped()?;
        let r0 = self.server.cpu()?;
        let out = timed(cmd)?;
        self.server.wait_reaped()?;
        Ok(Sample {
            secs: out.wall,
            send_cpu: out.cpu,
            recv_cpu: self.server.cpu()? - r0,
        })
    }
}
