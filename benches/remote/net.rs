//! Where the servers listen and where the senders run: on loopback (the
//! default), or across a veth pair (RINGXFER_BENCH_NET=veth), the servers
//! in this network namespace on 10.77.0.1 and every sending command (the
//! ringxfer CLI, which makes the connection its daemon pushes over; rsync
//! and its ssh; openssl s_client) in a namespace of the bench's own,
//! 10.77.0.2, so the bytes cross a network device (MTU 1500, GSO/GRO) as
//! between two hosts. A plaintext push goes to loopback addresses only
//! (the daemon's rule), so that row sits out across the veth pair.

use std::ffi::OsStr;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::support::Result;

const NS: &str = "ringxfer-bench-a";
const HOST: &str = "10.77.0.1";
const SENDER: &str = "10.77.0.2";
const LINK: &str = "rxbench0";

static VETH: OnceLock<bool> = OnceLock::new();

/// The namespace and veth pair, removed on drop.
pub struct Veth;

impl Drop for Veth {
    fn drop(&mut self) {
        // Deleting the namespace takes the pair with it.
        let _ = run(&["netns", "del", NS]);
    }
}

/// Sets the bench up on loopback, or across a veth pair for `veth`.
pub fn setup(veth: bool) -> Result<Option<Veth>> {
    VETH.set(veth).map_err(|_| "the network is set up once")?;
    if !veth {
        return Ok(None);
    }
    let _ = run(&["netns", "del", NS]);
    let peer = format!("{LINK}p");
    let host = format!("{HOST}/24");
    let sender = format!("{SENDER}/24");
    let steps: [&[&str]; 8] = [
        &["netns", "add", NS],
        &["link", "add", LINK, "type", "veth", "peer", "name", &peer],
        &["link", "set", &peer, "netns", NS],
        &["addr", "add", &host, "dev", LINK],
        &["link", "set", LINK, "up"],
        &["-n", NS, "addr", "add", &sender, "dev", &peer],
        &["-n", NS, "link", "set", &peer, "up"],
        &["-n", NS, "link", "set", "lo", "up"],
    ];
    let guard = Veth;
    for step in steps {
        run(step)?;
    }
    Ok(Some(guard))
}

fn run(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "run ip {}: {e} (RINGXFER_BENCH_NET=veth needs iproute2 and root)",
                args.join(" ")
            )
        })?;
    if !out.status.success() {
        return Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Across the veth pair.
pub fn veth() -> bool {
    VETH.get().copied().unwrap_or(false)
}

/// The address the servers listen on and the senders reach.
pub fn host() -> &'static str {
    if veth() {
        HOST
    } else {
        "127.0.0.1"
    }
}

/// A command on the sending side: in the sender's namespace across the
/// veth pair (`ip netns exec` execs it: same process, so its CPU is
/// counted as the command's own).
pub fn sender(program: impl AsRef<OsStr>) -> Command {
    if veth() {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", NS]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// How the bench's network is, for its header.
pub fn describe() -> String {
    if veth() {
        format!("a veth pair: servers on {HOST}, senders in network namespace {NS} ({SENDER})")
    } else {
        "loopback (127.0.0.1)".into()
    }
}
