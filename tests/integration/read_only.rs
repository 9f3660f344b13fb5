//! A read-only file system is `read-only` (FailureKind::ReadOnly, EROFS),
//! not `permission-denied`: no permission could be granted that makes the
//! write succeed. Both where the CLI meets it (creating a destination on a
//! read-only mount) and where the daemon does (a file system the kernel
//! turns read-only under a running job: ext4's errors=remount-ro), on real
//! mounts, so root only.

use std::fs;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Duration;

use ringxfer_ipc::{FailureKind, TransferOptions};
use serde_json::Value;

use crate::cli_common::*;
use crate::support::*;

/// The failure objects of a `--json` run.
fn errors(out: &std::process::Output) -> Vec<Value> {
    json_lines(out)
        .into_iter()
        .filter(|v| v.get("error").is_some())
        .collect()
}

#[test]
#[ignore = "needs root: mounts and remounts a tmpfs (.ci/run runs it)"]
fn a_destination_on_a_read_only_mount_is_read_only() {
    require_root("mounts a tmpfs");
    let d = Daemon::start();
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "src", 64 << 10, 1);
    let tree = dir.path().join("tree");
    fs::create_dir(&tree).unwrap();
    make_file(&tree, "a", 4096, 2);
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let _mount = mount_tmpfs(&mnt, "4m").unwrap_or_else(|e| panic!("mount tmpfs: {e}"));
    let out = run({
        let mut c = Command::new("mount");
        c.args(["-o", "remount,ro"]).arg(&mnt);
        c
    });
    assert_exit(&out, 0, "mount -o remount,ro");

    let (one, two) = (mnt.join("dst"), tree.join("a"));
    for (args, what) in [
        (vec![src.as_path(), one.as_path()], "one file"),
        (
            vec![src.as_path(), two.as_path(), mnt.as_path()],
            "two files",
        ),
        (
            vec![Path::new("-r"), tree.as_path(), mnt.as_path()],
            "a tree",
        ),
    ] {
        let mut c = cli(&d.socket);
        c.args(["--json", "copy"]).args(&args);
        let out = run(c);
        assert_exit(&out, 1, what);
        assert!(
            stderr(&out).contains("Read-only file system"),
            "{what}: {}",
            describe(&out)
        );
        let errors = errors(&out);
        assert!(!errors.is_empty(), "{what}: {}", describe(&out));
        for e in &errors {
            assert_eq!(e["error"]["kind"], "read-only", "{what}: {e}");
            assert_eq!(e["error"]["os_error"], libc::EROFS, "{what}: {e}");
        }
    }
    assert_eq!(fs::read_dir(&mnt).unwrap().count(), 0, "nothing was made");
}

/// The loop device under the mount at `mnt` (`loop3`), whose ext4 sysfs
/// directory can trigger an error.
fn loop_device(mnt: &Path) -> String {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    let mnt = mnt.to_str().unwrap();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?, f.next()?))
        })
        .find(|&(_, at)| at == mnt)
        .and_then(|(dev, _)| dev.strip_prefix("/dev/"))
        .unwrap_or_else(|| panic!("no loop device mounted at {mnt}: {mounts}"))
        .to_string()
}

/// Both a library job and a CLI copy running when ext4 turns the file
/// system read-only (errors=remount-ro, after an error the test triggers)
/// fail as read-only; the CLI says so in the user's terms, with what was
/// written, and leaves nothing under the name.
#[test]
#[ignore = "needs root: mounts an ext4 loop image (.ci/run runs it)"]
fn a_file_system_turning_read_only_under_a_job_fails_it_as_read_only() {
    require_root("mounts an ext4 loop image");
    let d = Daemon::start();
    let c = shared_client(&d);
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "src", 32 << 20, 3);
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let _mount = mount_image(&mnt, "ext4", 128, "errors=remount-ro")
        .unwrap_or_else(|e| panic!("ext4 loop image: {e}"));
    let device = loop_device(&mnt);

    let s = open_src(&src);
    let t = create_dst(&mnt.join("lib.dst"));
    let slow = TransferOptions {
        rate_limit: Some(4 * MIB),
        ..opts()
    };
    let h = c.submit(s.as_fd(), t.as_fd(), &slow).unwrap();
    let dst = mnt.join("cli.dst");
    let mut cmd = cli(&d.socket);
    cmd.args(["--json", "copy", "--rate-limit", "4MiB"])
        .arg(&src)
        .arg(&dst);
    let copying = thread::spawn(move || run(cmd));
    let both = poll_until(Duration::from_secs(20), || {
        let jobs = jobs_of(&c);
        jobs.len() == 2 && jobs.iter().all(|j| j.bytes >= MIB)
    });
    assert!(both, "both jobs moved a MiB: {:?}", jobs_of(&c));
    fs::write(
        format!("/sys/fs/ext4/{device}/trigger_fs_error"),
        "ringxfer test\n",
    )
    .unwrap();

    let f = failed(
        wait_within(h, Duration::from_secs(20)),
        FailureKind::ReadOnly,
        "a job whose file system turned read-only",
    );
    assert_eq!(f.os_error, Some(libc::EROFS), "{f:?}");
    let out = copying.join().unwrap();
    assert_exit(&out, 1, "copy onto a file system that turned read-only");
    let text = stderr(&out);
    assert!(
        text.contains(&dst.display().to_string())
            && text.contains("Read-only file system (")
            && text.contains("written before it turned read-only)"),
        "{}",
        describe(&out)
    );
    for internal in ["splice", "pipe", "offset", "write to"] {
        assert!(!text.contains(internal), "says {internal}: {text}");
    }
    let errors = errors(&out);
    assert_eq!(errors.len(), 1, "{}", describe(&out));
    assert_eq!(errors[0]["error"]["kind"], "read-only", "{}", errors[0]);
    assert!(!dst.exists(), "a cut-off copy took the name");
}
