//! Least privilege: a user gets no more from a root daemon than from writing
//! the file itself. Each test runs the CLI as user nobody against a root
//! daemon whose socket is opened to everyone, and compares with what the
//! kernel does for nobody's own write. Root only (users, loop mounts).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

use crate::cli_common::*;
use crate::support::*;

const NOBODY: u32 = 65534;

/// A root daemon at `base`/rx.sock, its socket mode 0666.
fn open_daemon(base: &Path) -> Daemon {
    let d = Daemon::start_at(Some(base.join("rx.sock")), &[]);
    fs::set_permissions(&d.socket, fs::Permissions::from_mode(0o666)).unwrap();
    d
}

/// `cmd` (a program and its arguments) as nobody, with no groups, under
/// an RLIMIT_FSIZE of `fsize` bytes if given (prlimit, before exec).
fn as_nobody(base: &Path, fsize: Option<u64>, cmd: &[&str]) -> Command {
    let mut c = match fsize {
        Some(n) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--fsize={n}")).arg("--").arg("setpriv");
            c
        }
        None => Command::new("setpriv"),
    };
    c.arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups")
        .args(cmd)
        .current_dir(base)
        .env_remove("RINGXFER_SOCKET");
    cli_engine_env(&mut c);
    c
}

/// The CLI as nobody through daemon `d` (never in-process).
fn cli_as_nobody(base: &Path, d: &Daemon, fsize: Option<u64>, args: &[&str]) -> Output {
    let cli_bin = base.join("ringxfer");
    let socket = d.socket.to_str().unwrap().to_string();
    let mut cmd = vec![
        cli_bin.to_str().unwrap(),
        "--socket",
        &socket,
        "--daemon-only",
    ];
    cmd.extend_from_slice(args);
    run(as_nobody(base, fsize, &cmd))
}

/// A file of `len` bytes owned by nobody with `mode`.
fn nobodys_file(path: &Path, len: usize, mode: u32) {
    fs::write(path, pattern(7, len)).unwrap();
    std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    // chown clears setuid/setgid: the mode goes on after it.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn a_users_copy_into_its_setuid_file_clears_the_bits_as_its_own_write_does() {
    require_root("runs the CLI as nobody");
    let base = world_tmpdir();
    executable_for_others(Path::new(CLI_BIN), base.path());
    let d = open_daemon(base.path());
    let said = poll_until(CONTROL_TIMEOUT, || {
        let log = d.log();
        log.contains("privileges dropped") && log.contains("CAP_SETUID and CAP_SETGID only")
    });
    assert!(said, "the daemon says what it keeps: {}", d.log());
    let src = base.path().join("src");
    fs::write(&src, pattern(1, 200_000)).unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o644)).unwrap();
    let dir = base.path().join("home");
    fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();

    // What the kernel does for nobody's own write: both bits go.
    let own = dir.join("own");
    nobodys_file(&own, 1000, 0o6755);
    assert_eq!(mode(&own), 0o6755);
    let out = run(as_nobody(
        base.path(),
        None,
        &["sh", "-c", "printf x >> home/own"],
    ));
    assert_exit(&out, 0, "nobody's own append");
    assert_eq!(mode(&own), 0o755, "the kernel clears both bits");

    for strategy in ["splice", "buffered"] {
        let dst = dir.join(format!("via-{strategy}"));
        nobodys_file(&dst, 1000, 0o6755);
        let out = cli_as_nobody(
            base.path(),
            &d,
            None,
            &[
                "copy",
                "--in-place",
                "--strategy",
                strategy,
                src.to_str().unwrap(),
                dst.to_str().unwrap(),
            ],
        );
        assert_exit(&out, 0, "nobody's in-place copy through the daemon");
        assert_eq!(fs::read(&dst).unwrap(), pattern(1, 200_000));
        assert_eq!(
            mode(&dst),
            mode(&own),
            "{strategy}: the daemon's write cleared what nobody's own write clears: {}",
            describe(&out)
        );
    }
    d.stop();
}

#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn a_user_filling_ext4_through_the_daemon_stops_where_its_own_dd_stops() {
    require_root("mounts a loop device and runs the CLI as nobody");
    let base = world_tmpdir();
    executable_for_others(Path::new(CLI_BIN), base.path());
    let img = base.path().join("ext4.img");
    fs::File::create(&img).unwrap().set_len(64 * MIB).unwrap();
    let out = run({
        let mut c = Command::new("mkfs.ext4");
        c.args(["-q", "-F", "-m", "50"]).arg(&img);
        c
    });
    assert_exit(&out, 0, "mkfs.ext4 -m 50");
    let mnt = base.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let out = run({
        let mut c = Command::new("mount");
        c.args(["-o", "loop"]).arg(&img).arg(&mnt);
        c
    });
    assert_exit(&out, 0, "mount -o loop of the ext4 image (as root)");
    let _mounted = Mount::at(&mnt);
    let home = mnt.join("home");
    fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).unwrap();

    // nobody's own dd: how far it gets before ENOSPC.
    let out = run(as_nobody(
        base.path(),
        None,
        &["dd", "if=/dev/zero", "of=mnt/home/dd", "bs=1M"],
    ));
    assert!(
        !out.status.success(),
        "dd fills the disk: {}",
        describe(&out)
    );
    let own = fs::metadata(home.join("dd")).unwrap().len();
    fs::remove_file(home.join("dd")).unwrap();
    // Root could write about twice as much (half the blocks are reserved).
    let src = base.path().join("src");
    fs::write(&src, pattern(2, (own + own / 2) as usize)).unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o644)).unwrap();

    let d = open_daemon(base.path());
    for strategy in ["splice", "buffered", "direct"] {
        let dst = home.join(format!("via-{strategy}"));
        let out = cli_as_nobody(
            base.path(),
            &d,
            None,
            &[
                "copy",
                "--strategy",
                strategy,
                src.to_str().unwrap(),
                dst.to_str().unwrap(),
            ],
        );
        assert_exit(&out, 1, "a copy past nobody's free space");
        assert!(
            stderr(&out).contains("No space left on device"),
            "{strategy}: {}",
            describe(&out)
        );
        assert!(!dst.exists(), "{strategy}: nothing published");
        let used: u64 = fs::read_dir(&home)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().blocks() * 512)
            .sum();
        assert_eq!(used, 0, "{strategy}: nothing left behind");
    }
    d.stop();
}

#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn a_users_rlimit_fsize_bounds_what_the_daemon_writes_for_it() {
    require_root("runs the CLI as nobody");
    let base = world_tmpdir();
    executable_for_others(Path::new(CLI_BIN), base.path());
    let d = open_daemon(base.path());
    let src = base.path().join("src");
    fs::write(&src, pattern(3, 4 * MIB as usize)).unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o644)).unwrap();
    let dir = base.path().join("home");
    fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
    let limit = MIB;

    // A file of known size: refused at admission.
    let dst = dir.join("file");
    let out = cli_as_nobody(
        base.path(),
        &d,
        Some(limit),
        &["copy", src.to_str().unwrap(), dst.to_str().unwrap()],
    );
    assert_exit(&out, 1, "a copy larger than nobody's RLIMIT_FSIZE");
    assert!(
        stderr(&out).contains(&format!(
            "File too large: the client's RLIMIT_FSIZE is {limit} bytes"
        )),
        "{}",
        describe(&out)
    );
    assert!(!dst.exists(), "nothing published");

    // A stream: stopped at the limit.
    let dst = dir.join("stream");
    let cli_bin = base.path().join("ringxfer");
    let script = format!(
        "cat {} | {} --socket {} --daemon-only copy /dev/stdin {}",
        src.display(),
        cli_bin.display(),
        d.socket.display(),
        dst.display()
    );
    let out = run(as_nobody(base.path(), Some(limit), &["sh", "-c", &script]));
    assert_exit(&out, 1, "a stream past nobody's RLIMIT_FSIZE");
    assert!(
        stderr(&out).contains("File too large") && stderr(&out).contains("RLIMIT_FSIZE"),
        "{}",
        describe(&out)
    );
    assert!(!dst.exists(), "nothing published");

    // Within the limit, a copy goes through.
    let small = base.path().join("small");
    fs::write(&small, pattern(4, (limit / 2) as usize)).unwrap();
    fs::set_permissions(&small, fs::Permissions::from_mode(0o644)).unwrap();
    let dst = dir.join("small");
    let out = cli_as_nobody(
        base.path(),
        &d,
        Some(limit),
        &["copy", small.to_str().unwrap(), dst.to_str().unwrap()],
    );
    assert_exit(&out, 0, "a copy within the limit");
    assert_eq!(fs::read(&dst).unwrap(), pattern(4, (limit / 2) as usize));
    d.stop();
}
