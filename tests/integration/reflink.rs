//! The copy ladder's first rung (issue 16): a whole file into a new one is
//! cloned (FICLONE) where the file system shares extents (btrfs, XFS with
//! reflink=1), and `auto` falls back where it cannot (ext4, tmpfs), on
//! real loop-mounted file systems. The engine under test is the suite's
//! (RINGXFER_TEST_ENGINE), so .ci/run covers both.

use std::path::Path;
use std::process::Command;

use crate::cli_common::*;
use crate::support::*;

const MIB: u64 = 1 << 20;

/// Whether `filefrag -v` shows every extent of `path` as shared.
fn extents_shared(path: &Path) -> (bool, String) {
    let out = run({
        let mut c = Command::new("filefrag");
        c.arg("-v").arg(path);
        c
    });
    assert_exit(&out, 0, "filefrag -v");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let extents: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .filter(|l| l.contains(':'))
        .collect();
    let shared = !extents.is_empty() && extents.iter().all(|l| l.contains("shared"));
    (shared, text)
}

fn clones_on(kind: &str) {
    require_root("mounts loop images");
    let base = tmpdir();
    let m = mount_fs(base.path(), kind);
    let d = Daemon::start();
    let (src, want) = make_file(m.path(), "src", (64 * MIB) as usize, 16);
    let dst = m.path().join("dst");
    let out = copy_json(&d, &[], &src, &dst);
    assert_exit(&out, 0, &format!("copy on {kind}"));
    let done = &json_lines(&out)[0];
    assert_eq!(done["strategy"], "reflink", "{kind}: {done}");
    assert_eq!(done["bytes"], 64 * MIB, "{kind}: {done}");
    assert_file_eq(&dst, &want);
    let (shared, text) = extents_shared(&dst);
    assert!(shared, "{kind}: the copy's extents are not shared:\n{text}");
    // --reflink=always clones too; stats count the bytes by strategy.
    let out = copy_json(&d, &["--reflink=always"], &src, &m.path().join("dst2"));
    assert_exit(&out, 0, &format!("copy --reflink=always on {kind}"));
    let mut c = cli(&d.socket);
    c.args(["--json", "stats"]);
    let out = run(c);
    let v = &json_lines(&out)[0];
    let reflink = v["strategies"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["strategy"] == "reflink"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(reflink["bytes"], 128 * MIB, "{v}");
    // --reflink=never copies.
    let out = copy_json(&d, &["--reflink=never"], &src, &m.path().join("dst3"));
    assert_exit(&out, 0, "copy --reflink=never");
    assert_ne!(json_lines(&out)[0]["strategy"], "reflink");
    assert_file_eq(&m.path().join("dst3"), &want);
    d.stop();
}

fn falls_back_on(kind: &str) {
    require_root("mounts loop images");
    let base = tmpdir();
    let m = mount_fs(base.path(), kind);
    let d = Daemon::start();
    let (src, want) = make_file(m.path(), "src", (8 * MIB) as usize, 17);
    let dst = m.path().join("dst");
    // The engine's ladder (a hot 8 MiB file would be the CLI's own copy).
    let out = copy_json(&d, &["--daemon-only"], &src, &dst);
    assert_exit(&out, 0, &format!("copy on {kind}"));
    let done = &json_lines(&out)[0];
    assert_eq!(done["engine"], "daemon", "{kind}: {done}");
    assert_ne!(done["strategy"], "reflink", "{kind}: {done}");
    assert_file_eq(&dst, &want);
    // always: fails, naming the destination, and leaves nothing under it.
    let never = m.path().join("never");
    let out = copy_json(&d, &["--reflink=always"], &src, &never);
    assert!(!out.status.success(), "{kind}: {}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("reflink not supported"), "{kind}: {err}");
    assert!(err.contains(&never.display().to_string()), "{kind}: {err}");
    assert!(!never.exists(), "{kind}: a failed clone left {never:?}");
    d.stop();
}

#[test]
#[ignore = "needs root: mounts a btrfs loop image (.ci/run runs it)"]
fn a_copy_on_btrfs_is_a_clone_sharing_extents() {
    clones_on("btrfs");
}

#[test]
#[ignore = "needs root: mounts an XFS loop image (.ci/run runs it)"]
fn a_copy_on_xfs_is_a_clone_sharing_extents() {
    clones_on("xfs");
}

#[test]
#[ignore = "needs root: mounts an ext4 loop image (.ci/run runs it)"]
fn a_copy_on_ext4_falls_back_and_always_fails_clearly() {
    falls_back_on("ext4");
}

#[test]
#[ignore = "needs root: mounts a tmpfs (.ci/run runs it)"]
fn a_copy_on_tmpfs_falls_back_and_always_fails_clearly() {
    falls_back_on("tmpfs");
}
