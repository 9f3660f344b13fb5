//! The `ringxfer` command line, through a daemon and embedded.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::cli_common::cli;
use crate::support::*;

const CLI_TIMEOUT: Duration = Duration::from_secs(60);

fn run(cmd: Command) -> Output {
    run_timeout(cmd, CLI_TIMEOUT)
}

fn describe(out: &Output) -> String {
    format!(
        "status {}; stdout: {:?}; stderr: {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The JSON objects on stdout, one per non-empty line.
fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| {
                panic!("stdout line is not JSON ({e}): {l:?}; {}", describe(out))
            })
        })
        .collect()
}

fn one_json(out: &Output) -> Value {
    let mut v = json_lines(out);
    assert_eq!(
        v.len(),
        1,
        "expected one JSON result line; {}",
        describe(out)
    );
    v.pop().unwrap()
}

/// A socket path in `dir` that nothing listens on.
fn no_daemon_socket(dir: &Path) -> std::path::PathBuf {
    dir.join("nobody-here.sock")
}

#[test]
fn copy_through_the_daemon_json() {
    let d = Daemon::start();
    let dir = tmpdir();
    // Over the most a hot single file the CLI copies itself may hold.
    let (src, data) = make_file(dir.path(), "src", (32 << 20) + 1, 60);
    let dst = dir.path().join("dst");
    let mut c = cli(&d.socket);
    c.arg("--json").arg("copy").arg(&src).arg(&dst);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let v = one_json(&out);
    assert_eq!(v["engine"], "daemon", "{v}");
    assert_eq!(v["bytes"], data.len() as u64, "{v}");
    assert_eq!(v["strategy"], "copy-range", "{v}");
    assert!(v.get("error").is_none_or(|e| e.is_null()), "{v}");
    assert_file_eq(&dst, &data);
}

#[test]
fn copy_through_the_daemon_plain_with_offset_and_length() {
    let d = Daemon::start();
    let dir = tmpdir();
    let (src, data) = make_file(dir.path(), "src", 100_000, 61);
    let dst = dir.path().join("dst");
    let mut c = cli(&d.socket);
    c.args(["--strategy", "splice", "copy"])
        .arg(&src)
        .arg(&dst)
        .args(["--offset", "10", "--length", "5000"]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_file_eq(&dst, &data[10..5010]);
}

#[test]
fn copy_without_a_daemon_runs_in_process() {
    let dir = tmpdir();
    let sock = no_daemon_socket(dir.path());
    // Over the most a hot single file the CLI copies itself may hold.
    let (src, data) = make_file(dir.path(), "src", (32 << 20) + 7, 62);

    let dst = dir.path().join("dst-plain");
    let mut c = cli(&sock);
    c.arg("copy").arg(&src).arg(&dst);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        stderr.contains("in-process")
            || stderr.contains("in process")
            || stderr.contains("embedded"),
        "stderr should say the engine runs in-process: {}",
        describe(&out)
    );
    assert_file_eq(&dst, &data);

    let dst = dir.path().join("dst-json");
    let mut c = cli(&sock);
    c.arg("--json").arg("copy").arg(&src).arg(&dst);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let v = one_json(&out);
    assert_eq!(v["engine"], "embedded", "{v}");
    assert_eq!(v["bytes"], data.len() as u64, "{v}");
    assert_file_eq(&dst, &data);
}

#[test]
fn daemon_only_without_a_daemon_exits_3() {
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "src", 10, 63);
    let dst = dir.path().join("dst");
    let mut c = cli(&no_daemon_socket(dir.path()));
    c.arg("--daemon-only").arg("copy").arg(&src).arg(&dst);
    let out = run(c);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(
        !out.stderr.is_empty(),
        "no message on stderr; {}",
        describe(&out)
    );
}

#[test]
fn usage_errors_exit_2() {
    let dir = tmpdir();
    let sock = no_daemon_socket(dir.path());
    let (src, _) = make_file(dir.path(), "src", 10, 64);
    let dst = dir.path().join("dst");

    let mut c = cli(&sock);
    c.arg("--no-such-flag").arg("copy").arg(&src).arg(&dst);
    let out = run(c);
    assert_eq!(
        out.status.code(),
        Some(2),
        "unknown flag: {}",
        describe(&out)
    );

    let mut c = cli(&sock);
    c.arg("copy").arg(&src);
    let out = run(c);
    assert_eq!(
        out.status.code(),
        Some(2),
        "copy without DST: {}",
        describe(&out)
    );

    let mut c = cli(&sock);
    c.args(["--strategy", "warp", "copy"]).arg(&src).arg(&dst);
    let out = run(c);
    assert_eq!(
        out.status.code(),
        Some(2),
        "unknown strategy: {}",
        describe(&out)
    );

    let mut c = cli(&sock);
    c.arg("copy").arg(&src).arg(&dst).args(["--length", "lots"]);
    let out = run(c);
    assert_eq!(
        out.status.code(),
        Some(2),
        "non-numeric length: {}",
        describe(&out)
    );
    assert!(!dst.exists(), "a usage error created the destination");
}

#[test]
fn missing_source_exits_1_naming_the_path() {
    let d = Daemon::start();
    let dir = tmpdir();
    let src = dir.path().join("does-not-exist");
    let dst = dir.path().join("dst");
    let mut c = cli(&d.socket);
    c.arg("copy").arg(&src).arg(&dst);
    let out = run(c);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&src.display().to_string()),
        "stderr should name {}: {}",
        src.display(),
        describe(&out)
    );
}

/// As cp: the destination the user named, not the staging step inside it.
#[test]
fn a_destination_in_a_missing_directory_is_named_as_given() {
    let d = Daemon::start();
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "src", 1000, 65);
    let dst = dir.path().join("nodir").join("x");
    let mut c = cli(&d.socket);
    c.arg("copy").arg(&src).arg(&dst);
    let out = run(c);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "cannot create '{}': No such file or directory",
        dst.display()
    );
    assert!(stderr.contains(&want), "want {want:?}: {}", describe(&out));
    assert!(!stderr.contains("temporary"), "{}", describe(&out));
}

#[test]
fn json_failure_names_the_kind() {
    let d = Daemon::start();
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "src", 1000, 65);
    let dst = dir.path().join("dst");
    let mut c = cli(&d.socket);
    c.arg("--json")
        .arg("copy")
        .arg(&src)
        .arg(&dst)
        .args(["--length", "5000"]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let v = one_json(&out);
    assert_eq!(v["error"]["kind"], "source-short", "{v}");
    assert_eq!(v["engine"], "daemon", "{v}");
}

#[test]
fn stats_through_the_daemon() {
    let d = Daemon::start();
    let dir = tmpdir();
    copy_and_check(&d.client(), dir.path(), "pre-stats", 4096, 66);
    let mut c = cli(&d.socket);
    c.arg("--json").arg("stats");
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let v = one_json(&out);
    assert!(v.is_object(), "{v}");
    if let Some(n) = v.get("jobs_completed") {
        assert!(n.as_u64().unwrap_or(0) >= 1, "{v}");
    }

    let mut c = cli(&d.socket);
    c.arg("stats");
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        !out.stdout.is_empty(),
        "plain stats printed nothing; {}",
        describe(&out)
    );
}

#[test]
fn send_and_recv_between_two_cli_processes() {
    let d = Daemon::start();
    let dir = tmpdir();
    let (src, data) = make_file(dir.path(), "src", (5 << 20) + 123, 67);
    let dst = dir.path().join("received");

    let mut recv = cli(&d.socket);
    recv.arg("recv")
        .arg("127.0.0.1:0")
        .arg(&dst)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut receiver = recv.spawn().expect("spawn ringxfer recv");
    let stdout_t = {
        let mut o = receiver.stdout.take().unwrap();
        thread::spawn(move || {
            let mut v = Vec::new();
            let _ = std::io::Read::read_to_end(&mut o, &mut v);
            v
        })
    };
    // Forward stderr lines; keep draining after the address shows up.
    let (tx, rx) = mpsc::channel::<String>();
    let stderr_t = {
        let e = receiver.stderr.take().unwrap();
        thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(e).lines() {
                let Ok(line) = line else { break };
                all.push_str(&line);
                all.push('\n');
                let _ = tx.send(line);
            }
            all
        })
    };
    let mut addr = None;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
        if let Some(i) = line.find("listening on ") {
            addr = Some(line[i + "listening on ".len()..].trim().to_string());
            break;
        }
    }
    let Some(addr) = addr else {
        let _ = receiver.kill();
        let _ = receiver.wait();
        panic!(
            "ringxfer recv never printed \"listening on ADDR:PORT\"; stderr: {:?}",
            stderr_t.join().unwrap_or_default()
        );
    };
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "recv printed an unusable address {addr:?}"
    );

    let mut send = cli(&d.socket);
    send.arg("send").arg(&src).arg(&addr);
    let sent = run(send);

    let status = wait_child(&mut receiver, CLI_TIMEOUT);
    if status.is_none() {
        let _ = receiver.kill();
        let _ = receiver.wait();
    }
    let recv_stderr = stderr_t.join().unwrap_or_default();
    let recv_stdout = stdout_t.join().unwrap_or_default();
    assert_eq!(
        sent.status.code(),
        Some(0),
        "ringxfer send: {}",
        describe(&sent)
    );
    let status = status.unwrap_or_else(|| {
        panic!("ringxfer recv did not exit after the sender finished; stderr: {recv_stderr:?}")
    });
    assert_eq!(
        status.code(),
        Some(0),
        "ringxfer recv: {status}; stdout: {:?}; stderr: {recv_stderr:?}",
        String::from_utf8_lossy(&recv_stdout)
    );
    assert_file_eq(&dst, &data);
}

/// Sets a file's modification time to `secs` after the epoch.
fn set_mtime(path: &Path, secs: u64) {
    let when = std::time::UNIX_EPOCH + Duration::from_secs(secs);
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(when))
        .unwrap_or_else(|e| panic!("set the mtime of {}: {e}", path.display()));
}

/// cp's -n, -u and -v, on one file and merged into an existing tree.
#[test]
fn no_clobber_and_update_leave_destinations_as_cp_does() {
    let d = Daemon::start();
    let dir = tmpdir();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let (old_src, _) = make_file(&src, "old", 100, 1);
    let (new_src, new_bytes) = make_file(&src, "new", 100, 2);
    set_mtime(&old_src, 1_000);
    set_mtime(&new_src, 3_000);
    let dst = dir.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    for name in ["old", "new"] {
        std::fs::write(dst.join(name), "kept").unwrap();
        set_mtime(&dst.join(name), 2_000);
    }

    let mut c = cli(&d.socket);
    c.args(["copy", "-n", "-v"])
        .arg(&new_src)
        .arg(dst.join("new"));
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        std::fs::read(dst.join("new")).unwrap(),
        b"kept",
        "-n replaced"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("skipped '"), "{}", describe(&out));

    // -u merges the tree: the newer source replaces, the older is skipped.
    let mut c = cli(&d.socket);
    c.args(["--json", "copy", "-r", "-u", "-T"])
        .arg(&src)
        .arg(&dst);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(std::fs::read(dst.join("new")).unwrap(), new_bytes);
    assert_eq!(
        std::fs::read(dst.join("old")).unwrap(),
        b"kept",
        "-u replaced a newer file"
    );
    let lines = json_lines(&out);
    assert!(
        lines
            .iter()
            .any(|v| v["skipped"] == true && v["dst"].as_str().is_some_and(|d| d.ends_with("old"))),
        "{lines:?}"
    );
    let summary = lines.last().expect("a summary");
    assert_eq!(
        (summary["files"].as_u64(), summary["skipped"].as_u64()),
        (Some(1), Some(1)),
        "{summary}"
    );
}

/// Runs `c`, which must end in a usage error (exit 2) saying `says`.
fn assert_usage_error(c: Command, args: &[&str], says: &str) {
    let out = run(c);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(says),
        "{args:?}: {}",
        describe(&out)
    );
}

/// cp's -t and -T, and their usage errors.
#[test]
fn target_directory_flags_place_copies_as_cp_does() {
    let d = Daemon::start();
    let dir = tmpdir();
    let (a, a_bytes) = make_file(dir.path(), "a", 10, 3);
    let (b, _) = make_file(dir.path(), "b", 10, 4);
    let into = dir.path().join("into");
    std::fs::create_dir(&into).unwrap();

    let mut c = cli(&d.socket);
    c.args(["copy", "-v", "-t"]).arg(&into).arg(&a).arg(&b);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(std::fs::read(into.join("a")).unwrap(), a_bytes);
    assert!(into.join("b").is_file());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let want = format!("'{}' -> '{}'", a.display(), into.join("a").display());
    assert!(stdout.contains(&want), "want {want}: {}", describe(&out));

    // -T: an existing directory is the name, so a file cannot replace it.
    let mut c = cli(&d.socket);
    c.args(["copy", "-T"]).arg(&a).arg(&into);
    let out = run(c);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(!into.join("a").join("a").exists());

    for (args, says) in [
        (
            vec!["-t", "nowhere", "a"],
            "target directory 'nowhere' is not a directory",
        ),
        (vec!["-T", "a", "b", "c"], "extra operand 'b'"),
        (vec!["a"], "missing destination file operand after 'a'"),
    ] {
        let mut c = cli(&d.socket);
        c.current_dir(dir.path()).arg("copy").args(&args);
        assert_usage_error(c, &args, says);
    }
}

/// cp's --backup, -b and --suffix: the old file is kept under cp's backup
/// names, on one file and in a tree merged into an existing directory.
#[test]
fn backups_keep_replaced_files_under_cps_names() {
    let d = Daemon::start();
    let dir = tmpdir();
    let (src, src_bytes) = make_file(dir.path(), "src", 100, 5);
    let dst = dir.path().join("dst");
    let copy = |args: &[&str]| {
        let mut c = cli(&d.socket);
        c.arg("copy").args(args).arg(&src).arg(&dst);
        let out = run(c);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", describe(&out));
        out
    };
    std::fs::write(&dst, "first").unwrap();
    let out = copy(&["-v", "--backup"]);
    let simple = dir.path().join("dst~");
    assert_eq!(std::fs::read(&simple).unwrap(), b"first");
    assert_eq!(std::fs::read(&dst).unwrap(), src_bytes);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("(backup: '{}')", simple.display())),
        "{}",
        describe(&out)
    );

    copy(&["--backup=numbered"]);
    assert_eq!(
        std::fs::read(dir.path().join("dst.~1~")).unwrap(),
        src_bytes
    );
    copy(&["-b", "--suffix=.old"]);
    assert!(
        dir.path().join("dst.~2~").is_file(),
        "existing: numbered, as some are"
    );

    // A tree merged into a directory backs up what it replaces.
    let tree = dir.path().join("tree");
    let into = dir.path().join("into");
    for d in [&tree, &into] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(tree.join("f"), "new").unwrap();
    std::fs::write(into.join("f"), "old").unwrap();
    let mut c = cli(&d.socket);
    c.args(["copy", "-r", "-T", "--backup=simple", "--suffix=.bak"])
        .arg(&tree)
        .arg(&into);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(std::fs::read(into.join("f")).unwrap(), b"new");
    assert_eq!(std::fs::read(into.join("f.bak")).unwrap(), b"old");

    for (args, says) in [
        (
            vec!["--backup=sometimes"],
            "invalid backup type 'sometimes'",
        ),
        (
            vec!["--backup", "-n"],
            "--backup cannot be combined with --no-clobber",
        ),
        (
            vec!["-b", "--in-place"],
            "--backup cannot be combined with --in-place",
        ),
    ] {
        let mut c = cli(&d.socket);
        c.arg("copy").args(&args).arg(&src).arg(&dst);
        assert_usage_error(c, &args, says);
    }
}

/// `copy -a` as cp -a: a tree with its files' extended attributes and ACLs
/// (setfattr and setfacl, from the attr and acl packages); a plain copy
/// keeps neither.
#[test]
fn archive_keeps_extended_attributes_and_acls() {
    let d = Daemon::start();
    let dir = tmpdir();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let (file, _) = make_file(&src, "f", 1000, 6);
    let tool = |cmd: &str, args: &[&str], path: &Path| {
        let out = Command::new(cmd)
            .args(args)
            .arg(path)
            .output()
            .unwrap_or_else(|e| panic!("{cmd} (from the attr/acl packages): {e}"));
        assert!(out.status.success(), "{cmd} {args:?}: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    tool("setfattr", &["-n", "user.colour", "-v", "blue"], &file);
    tool("setfacl", &["-m", "u:nobody:r"], &file);
    tool("setfacl", &["-d", "-m", "u:nobody:rx"], &src);
    tool("setfattr", &["-n", "user.shelf", "-v", "top"], &src);

    let archived = dir.path().join("archived");
    let mut c = cli(&d.socket);
    c.args(["copy", "-a"]).arg(&src).arg(&archived);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let copy = archived.join("f");
    let attrs = tool("getfattr", &["-d"], &copy);
    assert!(attrs.contains("user.colour=\"blue\""), "{attrs}");
    let acl = tool("getfacl", &["-c"], &copy);
    assert!(acl.contains("user:nobody:r--"), "{acl}");
    // The directory's own: its default ACL and attributes.
    let acl = tool("getfacl", &["-c"], &archived);
    assert!(acl.contains("default:user:nobody:r-x"), "{acl}");
    let attrs = tool("getfattr", &["-d"], &archived);
    assert!(attrs.contains("user.shelf=\"top\""), "{attrs}");

    let plain = dir.path().join("plain");
    let mut c = cli(&d.socket);
    c.args(["copy", "-r"]).arg(&src).arg(&plain);
    assert_eq!(run(c).status.code(), Some(0));
    let attrs = tool("getfattr", &["-d"], &plain.join("f"));
    assert!(!attrs.contains("user.colour"), "{attrs}");
}

/// `copy -a` keeps hard links within the tree, into a new directory and
/// merged into an existing one (replacing what was there); -r does not.
#[test]
fn archive_keeps_hard_links_within_the_tree() {
    use std::os::unix::fs::MetadataExt;
    let d = Daemon::start();
    let dir = tmpdir();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let (one, bytes) = make_file(&src, "one", 5000, 7);
    std::fs::hard_link(&one, src.join("two")).unwrap();
    std::fs::hard_link(&one, src.join("sub/three")).unwrap();
    let merged = dir.path().join("merged");
    std::fs::create_dir(&merged).unwrap();
    std::fs::write(merged.join("two"), "old").unwrap();

    for (args, dst) in [
        (vec!["-a"], dir.path().join("new")),
        (vec!["-a", "-T"], merged.clone()),
    ] {
        let mut c = cli(&d.socket);
        c.arg("copy").args(&args).arg(&src).arg(&dst);
        let out = run(c);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", describe(&out));
        let metas: Vec<_> = ["one", "two", "sub/three"]
            .iter()
            .map(|n| std::fs::metadata(dst.join(n)).unwrap())
            .collect();
        assert!(
            metas.iter().all(|m| m.ino() == metas[0].ino()),
            "{args:?}: not one file"
        );
        assert_eq!(metas[0].nlink(), 3, "{args:?}");
        assert_eq!(std::fs::read(dst.join("sub/three")).unwrap(), bytes);
    }

    let plain = dir.path().join("plain");
    let mut c = cli(&d.socket);
    c.args(["copy", "-r"]).arg(&src).arg(&plain);
    assert_eq!(run(c).status.code(), Some(0));
    let (a, b) = (
        std::fs::metadata(plain.join("one")).unwrap(),
        std::fs::metadata(plain.join("two")).unwrap(),
    );
    assert_ne!(a.ino(), b.ino(), "-r copies each name");
}

/// `copy -a` recreates a FIFO and a device node as cp -a does (mode,
/// device number, times); `-r` still refuses them, as before.
#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn archive_recreates_fifos_and_device_nodes() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    require_root("mknod of a device node");
    let d = Daemon::start();
    let dir = tmpdir();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let fifo = std::ffi::CString::new(src.join("fifo").as_os_str().as_encoded_bytes()).unwrap();
    let null = std::ffi::CString::new(src.join("null").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: NUL-terminated paths that outlive the calls.
    unsafe {
        assert_eq!(libc::mkfifo(fifo.as_ptr(), 0o640), 0);
        assert_eq!(
            libc::mknod(null.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)),
            0
        );
    }
    set_mtime(&src.join("null"), 1_000_000);

    let dst = dir.path().join("dst");
    let mut c = cli(&d.socket);
    c.args(["copy", "-a"]).arg(&src).arg(&dst);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let fifo_meta = std::fs::symlink_metadata(dst.join("fifo")).unwrap();
    assert!(fifo_meta.file_type().is_fifo());
    assert_eq!(fifo_meta.mode() & 0o7777, 0o640);
    let null_meta = std::fs::symlink_metadata(dst.join("null")).unwrap();
    assert!(null_meta.file_type().is_char_device());
    assert_eq!(null_meta.rdev(), libc::makedev(1, 3));
    assert_eq!(null_meta.mtime(), 1_000_000);

    let mut c = cli(&d.socket);
    c.args(["copy", "-r"])
        .arg(&src)
        .arg(dir.path().join("plain"));
    let out = run(c);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a fifo is not copied"));
}

/// A full disk is said in the user's terms (the destination, the OS's
/// words, how much was written), not by the engine's step.
#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn a_full_disk_is_named_in_the_users_terms() {
    require_root("root to mount tmpfs");
    let d = Daemon::start();
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "src", 3 << 20, 8);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _mount = mount_tmpfs(&mnt, "1m").unwrap_or_else(|e| panic!("mount tmpfs: {e}"));
    let dst = mnt.join("dst");
    let mut c = cli(&d.socket);
    // The engine's words (the CLI's own copy has its test).
    c.arg("--daemon-only").arg("copy").arg(&src).arg(&dst);
    let out = run(c);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&dst.display().to_string()),
        "{}",
        describe(&out)
    );
    assert!(
        stderr.contains("No space left on device ("),
        "{}",
        describe(&out)
    );
    assert!(
        stderr.contains("written before it filled)"),
        "{}",
        describe(&out)
    );
    for internal in ["splice", "pipe", "offset"] {
        assert!(
            !stderr.contains(internal),
            "says {internal}: {}",
            describe(&out)
        );
    }
    assert!(!dst.exists(), "a short copy took the name");
}

/// On a terminal (`script` gives the CLI one), a tree copy's bar counts a
/// large file's bytes while it moves, not only once it is done.
#[test]
fn a_tree_bar_moves_during_a_large_file() {
    let d = Daemon::start();
    let dir = tmpdir();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    make_file(&src, "big", 24 << 20, 9);
    let cli_bin = Path::new(CLI_BIN);
    let line = format!(
        "{} --socket {} copy -r --rate-limit 8MiB {} {}",
        cli_bin.display(),
        d.socket.display(),
        src.display(),
        dir.path().join("dst").display()
    );
    let mut c = Command::new("script");
    c.args(["-qec", &line, "/dev/null"]);
    let out = run(c);
    assert!(out.status.success(), "{}", describe(&out));
    let screen = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    // Each frame says "<moved> <unit>/24.00 MiB".
    let moved: Vec<f64> = screen
        .split("/24.00 MiB")
        .filter_map(|before| {
            let mut words = before.split_whitespace().rev();
            let unit = words.next()?;
            let n: f64 = words.next()?.parse().ok()?;
            match unit {
                "MiB" => Some(n),
                "KiB" => Some(n / 1024.0),
                _ => None,
            }
        })
        .collect();
    let partial = moved.iter().any(|&m| m > 0.0 && m < 24.0);
    assert!(
        partial,
        "no bar between 0 and 24 MiB on the terminal ({moved:?}): {screen}"
    );
}

/// cp's -L, -P and -H (the default): which symbolic links a copy follows.
#[test]
fn dereference_flags_follow_links_as_cp_does() {
    let d = Daemon::start();
    let dir = tmpdir();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("d")).unwrap();
    let (_, bytes) = make_file(&tree.join("d"), "f", 100, 10);
    std::os::unix::fs::symlink("d", tree.join("dlink")).unwrap();
    let named = dir.path().join("named");
    std::os::unix::fs::symlink("tree", &named).unwrap();
    let copy = |args: &[&str], src: &Path, dst: &Path| {
        let mut c = cli(&d.socket);
        c.arg("copy").args(args).arg(src).arg(dst);
        run(c)
    };
    let is_link = |p: &Path| {
        std::fs::symlink_metadata(p)
            .unwrap()
            .file_type()
            .is_symlink()
    };

    // -H (default): the named link is followed, the one inside is kept.
    let h = dir.path().join("h");
    assert_eq!(copy(&["-r"], &named, &h).status.code(), Some(0));
    assert!(!is_link(&h) && is_link(&h.join("dlink")));
    // -L: both followed; the link inside becomes a directory.
    let l = dir.path().join("l");
    let out = copy(&["-rL"], &named, &l);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(!is_link(&l.join("dlink")));
    assert_eq!(std::fs::read(l.join("dlink/f")).unwrap(), bytes);
    // -P: the named link is copied as a link, with or without -r.
    for args in [&["-P"][..], &["-rP"][..]] {
        let p = dir.path().join(format!("p{}", args[0]));
        let out = copy(args, &named, &p);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", describe(&out));
        assert_eq!(
            std::fs::read_link(&p).unwrap(),
            Path::new("tree"),
            "{args:?}"
        );
    }
    // -L through a link back up the tree: a cycle, refused by name.
    std::os::unix::fs::symlink("..", tree.join("d/up")).unwrap();
    let out = copy(&["-rL"], &tree, &dir.path().join("cycle"));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("(a cycle)"),
        "{}",
        describe(&out)
    );
}

/// `copy -r d/. e`, as cp: d's contents go into e itself (not into e/d).
#[test]
fn a_dot_source_copies_the_contents_into_the_directory() {
    let d = Daemon::start();
    let dir = tmpdir();
    let src = dir.path().join("d");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let (_, bytes) = make_file(&src.join("sub"), "f", 100, 11);
    let into = dir.path().join("e");
    std::fs::create_dir(&into).unwrap();
    std::fs::write(into.join("kept"), "k").unwrap();
    let mut c = cli(&d.socket);
    c.args(["copy", "-r"]).arg(src.join(".")).arg(&into);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(std::fs::read(into.join("sub/f")).unwrap(), bytes);
    assert!(into.join("kept").is_file());
    assert!(!into.join("d").exists(), "copied into e/d");
}

/// `--sparse` other than auto is about a file copied into a file: send and
/// recv, with a socket at one end, refuse it rather than ignore it, before
/// they connect, listen or stage anything.
#[test]
fn send_and_recv_refuse_sparse_choices() {
    let d = Daemon::start();
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "src", 100, 5);
    let dst = dir.path().join("dst");
    for (args, says) in [
        (
            vec![
                "send",
                "--sparse=always",
                src.to_str().unwrap(),
                "127.0.0.1:9",
            ],
            "--sparse=always applies to copies into a file, and send writes to a socket",
        ),
        (
            vec![
                "recv",
                "--sparse=never",
                "127.0.0.1:0",
                dst.to_str().unwrap(),
            ],
            "--sparse=never applies to copies into a file, and recv reads from a socket",
        ),
    ] {
        let mut c = cli(&d.socket);
        c.args(&args);
        assert_usage_error(c, &args, says);
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "only src"
    );
}

/// A full disk met by a copy the CLI makes itself (a small hot file) fails
/// as a job's would: exit 1, `no-space`, the destination named, how much
/// was written, nothing under its name.
#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn a_full_disk_under_the_clis_own_copy_leaves_nothing() {
    require_root("root to mount tmpfs");
    let d = Daemon::start();
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "src", 1 << 20, 9);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _mount = mount_tmpfs(&mnt, "256k").unwrap_or_else(|e| panic!("mount tmpfs: {e}"));
    let dst = mnt.join("dst");
    let out = crate::cli_common::copy_json(&d, &[], &src, &dst);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let v = one_json(&out);
    assert_eq!(v["engine"], "cli", "{v}");
    assert_eq!(v["error"]["kind"], "no-space", "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&dst.display().to_string()), "{v}");
    assert!(message.contains("No space left on device"), "{v}");
    // How much got there, as the engine says it of a job.
    assert!(message.contains("written before it filled)"), "{v}");
    assert!(!dst.exists(), "a short copy took the name");
    assert_eq!(std::fs::read_dir(&mnt).unwrap().count(), 0, "nothing left");
}

/// Neither binary loads libgcc_s.so.1 at start (build.rs links GCC's
/// unwinder statically): its constructor's CPU probe and the loading cost
/// every command about 0.1 ms (issue 16); nor libm.so.6 (the CLI defines
/// `pow`), another 0.05 ms. Asked of the dynamic loader itself
/// (LD_TRACE_LOADED_OBJECTS, what ldd does), which lists what the binary
/// would load and runs none of it. Where build.rs left the link as std
/// makes it (another toolchain, RINGXFER_DYNAMIC_LIBGCC), libgcc_s is not
/// checked, and the test says so.
#[test]
fn the_binaries_start_without_libgcc_s_or_libm() {
    for bin in [CLI_BIN, DAEMON_BIN] {
        let out = Command::new(bin)
            .env("LD_TRACE_LOADED_OBJECTS", "1")
            .output()
            .expect("run the loader's trace");
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && listed.contains("libc.so"),
            "{bin}: no list of loaded objects: {}",
            describe(&out)
        );
        // The CLI defines `pow` (c_pow.rs): no libm either.
        assert!(!listed.contains("libm."), "{bin} loads libm:\n{listed}");
        if !cfg!(static_unwinder) {
            eprintln!("build.rs linked libgcc_s as std does on this toolchain: not checked");
            continue;
        }
        assert!(
            !listed.contains("libgcc_s"),
            "{bin} loads libgcc_s:\n{listed}"
        );
    }
}
