//! How a user reaches the daemon: the socket it finds, and what it is told
//! when the socket exists but is not for it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::cli_common::*;
use crate::support::*;

const NOBODY: u32 = 65534;

#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn a_user_refused_by_the_socket_is_told_so_and_how_to_get_access() {
    require_root("root to run the CLI as another user");
    let base = world_tmpdir();
    let cli_bin = executable_for_others(Path::new(CLI_BIN), base.path());
    // Root's daemon, its socket 0660 root:root: nobody may not connect.
    let d = Daemon::start_at(Some(base.path().join("rx.sock")), &[]);
    let src = base.path().join("src");
    fs::write(&src, b"some bytes").unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o644)).unwrap();
    let out_dir = base.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    std::os::unix::fs::chown(&out_dir, Some(NOBODY), Some(NOBODY)).unwrap();
    let as_nobody = |extra: &[&str], dst: &str| {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .arg("--clear-groups")
            .arg(&cli_bin)
            .current_dir(base.path())
            .env_remove("RINGXFER_SOCKET")
            .arg("--socket")
            .arg(&d.socket)
            .args(extra)
            .arg("copy")
            .arg(&src)
            .arg(out_dir.join(dst));
        cli_engine_env(&mut c);
        run(c)
    };

    let out = as_nobody(&[], "a");
    assert_exit(&out, 0, "copy in-process after a refused connect");
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "permission denied on the daemon's socket {}",
            d.socket.display()
        )) && err.contains("group 'root'")
            && err.contains("running the engine in-process"),
        "{}",
        describe(&out)
    );
    assert_eq!(fs::read(out_dir.join("a")).unwrap(), b"some bytes");

    let out = as_nobody(&["--daemon-only"], "b");
    assert_exit(&out, 3, "--daemon-only after a refused connect");
    assert!(
        stderr(&out).contains("usermod -aG root"),
        "{}",
        describe(&out)
    );
    assert!(!out_dir.join("b").exists());
}

#[test]
fn a_connection_to_the_daemon_itself_is_refused_as_either_end_of_a_job() {
    use std::os::fd::AsFd;
    let d = Daemon::start();
    let baseline = d.baseline();
    let c = d.client();
    for end in ["source", "destination"] {
        // What a client could pass to leave a job nobody can end: a
        // connection of its own to the daemon.
        let own = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
        let null = dev_null();
        let zero = zero_source(4096);
        let h = if end == "source" {
            c.submit(own.as_fd(), null.as_fd(), &opts())
        } else {
            c.submit(zero.as_fd(), own.as_fd(), &opts())
        }
        .unwrap();
        let f = failed(
            wait(h),
            ringxfer_ipc::FailureKind::InvalidRequest,
            "a job on a connection to the daemon",
        );
        assert!(
            f.message
                .contains(&format!("the {end} is a connection to this daemon")),
            "{f:?}"
        );
    }
    drop(c);
    d.assert_fds_return(
        baseline,
        std::time::Duration::from_secs(3),
        "after the refusals",
    );
}
