//! `copy -r` keeps the README's promise whatever ends it: a new directory
//! appears under its name only when everything in it completed, a file
//! under a final name is always whole (the source's bytes, or the old
//! file's), and no staging name outlives the copy: the CLI removes its own
//! when a file fails, the disk fills, the daemon dies or a signal stops it,
//! and a later copy removes what a SIGKILLed one left.
//!
//! The kill tests repeat at random moments; the seed is printed, and
//! RINGXFER_TEST_SEED replays one.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::cli_common::*;
use crate::support::*;

/// Rounds of each kill test.
const ROUNDS: usize = 10;

/// xorshift64: enough randomness for kill moments, replayable by seed.
struct Rng(u64);

impl Rng {
    fn new(what: &str) -> Rng {
        let seed = std::env::var("RINGXFER_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            })
            .max(1);
        println!("{what}: RINGXFER_TEST_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// What a tree holds: relative path to bytes.
type Files = HashMap<String, Vec<u8>>;

/// src/{top, link -> a/s0, a/{s0..s7, big0}, b/{s0..s7, big1}, b/c/{s0..s7, big2}}:
/// small files of 1 to 32 KiB and four of 512 KiB, which at 1 MiB/s a job
/// take about half a second.
fn make_src(root: &Path, seed: u64) -> Files {
    let mut files = Files::new();
    fs::create_dir_all(root.join("b/c")).unwrap();
    fs::create_dir_all(root.join("a")).unwrap();
    let mut add = |rel: String, len: usize, s: u64| {
        let (_, data) = make_file(root, &rel, len, seed * 100 + s);
        files.insert(rel, data);
    };
    for (d, dir) in ["a", "b", "b/c"].into_iter().enumerate() {
        for i in 0..8 {
            add(
                format!("{dir}/s{i}"),
                1024 * (1 + (i * 5 + d) % 32),
                (d * 10 + i) as u64,
            );
        }
        add(format!("{dir}/big{d}"), 512 << 10, 90 + d as u64);
    }
    add("top".into(), 512 << 10, 99);
    std::os::unix::fs::symlink("a/s0", root.join("link")).unwrap();
    files
}

/// Every name under `root` that is a ringxfer staging name.
fn staging_names(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(root) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().contains(".ringxfer-") {
            found.push(path.clone());
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(staging_names(&path));
        }
    }
    found
}

/// Files under their final names in `dst` whose bytes are neither the
/// source's nor (`old`) what the name held before.
fn torn(dst: &Path, files: &Files, old: &Files) -> Vec<String> {
    let mut torn = Vec::new();
    for (rel, data) in files {
        let path = dst.join(rel);
        let Ok(got) = fs::read(&path) else {
            continue;
        };
        if got != *data && old.get(rel) != Some(&got) {
            torn.push(format!("{} ({} bytes)", path.display(), got.len()));
        }
    }
    torn
}

fn assert_complete(dst: &Path, files: &Files, what: &str) {
    for (rel, data) in files {
        let got = fs::read(dst.join(rel))
            .unwrap_or_else(|e| panic!("{what}: {}: {e}", dst.join(rel).display()));
        assert!(got == *data, "{what}: {} differs from its source", rel);
    }
    assert_eq!(
        fs::read_link(dst.join("link")).ok(),
        Some(PathBuf::from("a/s0")),
        "{what}: the link"
    );
}

/// Where a copy goes: a new name, or a directory that exists and already
/// holds part of the tree (old `a/` files and `top`; no `b/`, which the
/// merge then stages on its own).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Dest {
    New,
    Existing,
}

struct Setup {
    _dir: tempfile::TempDir,
    work: PathBuf,
    src: PathBuf,
    files: Files,
    /// The DST operand.
    arg: PathBuf,
    /// Where the tree lands.
    dst: PathBuf,
    old: Files,
}

fn setup(dest: Dest, seed: u64) -> Setup {
    let dir = tmpdir();
    let work = dir.path().to_path_buf();
    let src = work.join("src");
    let files = make_src(&src, seed);
    let (arg, dst) = match dest {
        Dest::New => (work.join("new"), work.join("new")),
        Dest::Existing => (work.join("into"), work.join("into/src")),
    };
    let mut old = Files::new();
    if dest == Dest::Existing {
        fs::create_dir_all(dst.join("a")).unwrap();
        for rel in ["a/s0", "a/s3", "a/big0", "top"] {
            let (_, data) = make_file(&dst, rel, 3000, seed * 100 + 77);
            old.insert(rel.to_string(), data);
        }
    }
    Setup {
        _dir: dir,
        work,
        src,
        files,
        arg,
        dst,
        old,
    }
}

impl Setup {
    /// `copy -r SRC DST` through the daemon only, 1 MiB/s a job.
    fn command(&self, socket: &Path, rate: Option<&str>) -> Command {
        let mut c = cli(socket);
        c.args(["--daemon-only", "copy", "-r"]);
        if let Some(rate) = rate {
            c.args(["--rate-limit", rate]);
        }
        c.arg(&self.src).arg(&self.arg);
        c
    }

    fn spawn(&self, socket: &Path, default_signals: bool) -> Child {
        self.spawn_at(socket, default_signals, "1MiB")
    }

    /// As `spawn`, each file moving at most `rate` per second.
    fn spawn_at(&self, socket: &Path, default_signals: bool, rate: &str) -> Child {
        let mut c = self.command(socket, Some(rate));
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(self.work.join("stderr")).unwrap());
        if default_signals {
            // SAFETY: signal(2) is async-signal-safe. The test may run
            // where SIGINT is ignored (a background job of a script) or
            // SIGHUP is (under nohup), and the CLI keeps an ignored signal
            // ignored; a user's Ctrl-C, a hang-up or a kill reaches a
            // foreground job that does not ignore them.
            unsafe {
                c.pre_exec(|| {
                    for sig in [libc::SIGINT, libc::SIGHUP, libc::SIGTERM] {
                        libc::signal(sig, libc::SIG_DFL);
                    }
                    Ok(())
                });
            }
        }
        c.spawn().expect("spawn the CLI")
    }

    fn stderr(&self) -> String {
        fs::read_to_string(self.work.join("stderr")).unwrap_or_default()
    }

    /// Staging names anywhere outside the source.
    fn leftovers(&self) -> Vec<PathBuf> {
        staging_names(&self.work)
            .into_iter()
            .filter(|p| !p.starts_with(&self.src))
            .collect()
    }

    fn torn(&self) -> Vec<String> {
        torn(&self.dst, &self.files, &self.old)
    }

    /// A new directory is all there or not there at all: the destination
    /// itself, or in a merge `b`, which did not exist before.
    fn assert_all_or_nothing(&self, dest: Dest, what: &str) {
        match dest {
            Dest::New if self.dst.exists() => assert_complete(&self.dst, &self.files, what),
            Dest::Existing if self.dst.join("b").exists() => {
                for (rel, data) in self.files.iter().filter(|(rel, _)| rel.starts_with("b/")) {
                    let got = fs::read(self.dst.join(rel));
                    assert!(
                        got.as_ref().is_ok_and(|got| got == data),
                        "{what}: {rel} in a published new directory: {:?}",
                        got.map(|g| g.len())
                    );
                }
            }
            _ => {}
        }
    }
}

fn wait_cli(child: &mut Child, what: &str) -> ExitStatus {
    wait_child(child, Duration::from_secs(30)).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("{what}: the CLI did not exit within 30 s")
    })
}

fn kill(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child, which has not been waited for.
    unsafe { libc::kill(child.id() as i32, sig) };
}

#[test]
fn a_new_tree_with_a_failed_item_is_not_created_and_the_summary_names_it() {
    let d = Daemon::start();
    let s = setup(Dest::New, 1);
    let status = Command::new("mkfifo")
        .arg(s.src.join("b/c/fifo"))
        .status()
        .expect("run mkfifo");
    assert!(status.success());

    let out = run(s.command(&d.socket, None));
    assert_exit(&out, 1, "a new tree with a FIFO in it");
    assert!(
        !s.dst.exists(),
        "published with a failure inside: {}",
        describe(&out)
    );
    assert!(s.leftovers().is_empty(), "left: {:?}", s.leftovers());
    let err = stderr(&out);
    let fifo = s.src.join("b/c/fifo").display().to_string();
    assert!(
        err.contains(&format!(
            "'{}' was not created: 1 item in it failed; the partial copy was removed",
            s.dst.display()
        )),
        "{}",
        describe(&out)
    );
    assert!(
        err.contains(&format!("1 of 30 files failed: '{fifo}'")),
        "{}",
        describe(&out)
    );
    assert!(err.contains("copied 0 files"), "{}", describe(&out));
    assert!(!err.contains(".ringxfer-"), "{}", describe(&out));

    // Into a directory that exists: every other file is published, each
    // whole; the summary names the one that failed.
    let into = s.work.join("into");
    let dst = into.join("src");
    fs::create_dir_all(&dst).unwrap();
    let mut c = cli(&d.socket);
    c.args(["--json", "copy", "-r"]).arg(&s.src).arg(&into);
    let out = run(c);
    assert_exit(&out, 1, "the same tree into an existing directory");
    // `b` is new, so staged on its own: it holds the failure and is not
    // created; everything else is there.
    assert!(!dst.join("b").exists(), "{}", describe(&out));
    for (rel, data) in &s.files {
        if !rel.starts_with("b/") {
            assert_file_eq(&dst.join(rel), data);
        }
    }
    let lines = json_lines(&out);
    let summary = lines.last().unwrap();
    assert_eq!(summary["failed"], 1, "{summary}");
    assert_eq!(summary["failed_paths"][0], fifo.as_str(), "{summary}");
    assert!(s.leftovers().is_empty(), "left: {:?}", s.leftovers());
}

#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn a_tree_that_fills_the_disk_is_not_created() {
    require_root("root to mount a 4 MiB tmpfs");
    let d = Daemon::start();
    let s = setup(Dest::New, 2);
    // 2 MiB of the tree fits; 6 MiB more does not.
    make_file(&s.src, "b/huge", 6 << 20, 4);
    let mnt = s.work.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let mount = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&mnt)
        .output()
        .expect("run mount");
    assert!(
        mount.status.success(),
        "cannot mount tmpfs (as root): {}",
        String::from_utf8_lossy(&mount.stderr)
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());

    let dst = mnt.join("copy");
    let mut c = cli(&d.socket);
    c.args(["copy", "-r"]).arg(&s.src).arg(&dst);
    let out = run(c);
    assert_exit(&out, 1, "a tree larger than its file system");
    let err = stderr(&out);
    assert!(
        err.contains("No space left on device"),
        "{}",
        describe(&out)
    );
    assert!(
        err.contains(&format!("'{}' was not created", dst.display())),
        "{}",
        describe(&out)
    );
    assert!(!dst.exists(), "a tree that did not fit was published");
    assert!(
        staging_names(&mnt).is_empty(),
        "left: {:?}",
        staging_names(&mnt)
    );
    // Nothing of it is left taking the space.
    let free = Command::new("df")
        .args(["--output=used", "-B1"])
        .arg(&mnt)
        .output()
        .unwrap();
    let used: u64 = String::from_utf8_lossy(&free.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(u64::MAX);
    assert!(used < 64 << 10, "{used} bytes still used on the tmpfs");

    // Into an existing directory on the full disk: what fits is published
    // whole, the rest is not there at all.
    let into = mnt.join("into");
    fs::create_dir_all(into.join("src")).unwrap();
    let mut c = cli(&d.socket);
    c.args(["copy", "-r"]).arg(&s.src).arg(&into);
    let out = run(c);
    assert_exit(&out, 1, "merging a tree larger than its file system");
    assert!(torn(&into.join("src"), &s.files, &Files::new()).is_empty());
    assert!(!into.join("src/b/huge").exists(), "{}", describe(&out));
    assert!(
        staging_names(&mnt).is_empty(),
        "left: {:?}",
        staging_names(&mnt)
    );
}

/// SIGKILL of the daemon at a random moment of `copy -r` (the CLI, alive,
/// cleans up): no torn file, no staging name, and a new destination is
/// either complete or absent.
fn daemon_killed(dest: Dest) {
    let mut rng = Rng::new("daemon_killed");
    for round in 0..ROUNDS {
        let what = format!("{dest:?} round {round}");
        let d = Daemon::start();
        let s = setup(dest, round as u64);
        let mut child = s.spawn(&d.socket, false);
        std::thread::sleep(Duration::from_millis(rng.below(700)));
        d.signal(libc::SIGKILL);
        let status = wait_cli(&mut child, &what);
        drop(d);
        // 3: killed before the CLI could connect (a loaded machine starts
        // it late), which must leave nothing either.
        assert!(
            matches!(status.code(), Some(0 | 1 | 3)),
            "{what}: {status}; stderr: {}",
            s.stderr()
        );
        assert_eq!(s.torn(), Vec::<String>::new(), "{what}: torn");
        assert_eq!(s.leftovers(), Vec::<PathBuf>::new(), "{what}: left");
        if status.code() != Some(0) && dest == Dest::New {
            assert!(!s.dst.exists(), "{what}: published: {}", s.stderr());
        }
        s.assert_all_or_nothing(dest, &what);
        assert!(!s.stderr().contains(".ringxfer-"), "{what}: {}", s.stderr());
    }
}

#[test]
fn daemon_killed_mid_tree_copy_to_a_new_name() {
    daemon_killed(Dest::New);
}

#[test]
fn daemon_killed_mid_tree_copy_into_an_existing_directory() {
    daemon_killed(Dest::Existing);
}

/// SIGKILL of the CLI at a random moment: no torn file; what it staged is
/// removed by the next copy, which says so, and completes the tree.
fn cli_killed(dest: Dest) {
    let mut rng = Rng::new("cli_killed");
    let d = Daemon::start();
    let mut removed = 0;
    for round in 0..ROUNDS {
        let what = format!("{dest:?} round {round}");
        let s = setup(dest, round as u64);
        let mut child = s.spawn(&d.socket, false);
        std::thread::sleep(Duration::from_millis(rng.below(700)));
        kill(&child, libc::SIGKILL);
        wait_cli(&mut child, &what);
        assert_eq!(s.torn(), Vec::<String>::new(), "{what}: torn");
        s.assert_all_or_nothing(dest, &what);
        let left = s.leftovers();

        let out = run(s.command(&d.socket, None));
        assert_exit(&out, 0, &format!("{what}: the next copy"));
        for path in &left {
            removed += 1;
            let line = format!(
                "ringxfer: removed '{}', left by a copy that was killed (process {} is gone)",
                path.display(),
                child.id()
            );
            assert!(stderr(&out).contains(&line), "{what}: {}", describe(&out));
        }
        assert_eq!(s.leftovers(), Vec::<PathBuf>::new(), "{what}: left");
        assert_complete(&s.dst, &s.files, &what);
    }
    println!("{dest:?}: {removed} leftovers removed in {ROUNDS} rounds");
}

#[test]
fn cli_killed_mid_tree_copy_to_a_new_name() {
    cli_killed(Dest::New);
}

#[test]
fn cli_killed_mid_tree_copy_into_an_existing_directory() {
    cli_killed(Dest::Existing);
}

/// SIGINT (Ctrl-C) at a random moment: the CLI removes what it staged
/// before it exits 130; no torn file.
fn cli_interrupted(dest: Dest) {
    let mut rng = Rng::new("cli_interrupted");
    let d = Daemon::start();
    let mut interrupted = 0;
    for round in 0..ROUNDS {
        let what = format!("{dest:?} round {round}");
        let s = setup(dest, round as u64);
        let mut child = s.spawn(&d.socket, true);
        std::thread::sleep(Duration::from_millis(rng.below(700)));
        kill(&child, libc::SIGINT);
        let status = wait_cli(&mut child, &what);
        // Or ended by the signal itself: it came before the CLI took its
        // signals (a loaded machine starts it late), so before it staged
        // anything; the checks below hold either way.
        assert!(
            matches!(status.code(), Some(0 | 130))
                || std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGINT),
            "{what}: {status}; stderr: {}",
            s.stderr()
        );
        if status.code() == Some(130) {
            interrupted += 1;
        }
        assert_eq!(s.torn(), Vec::<String>::new(), "{what}: torn");
        assert_eq!(s.leftovers(), Vec::<PathBuf>::new(), "{what}: left");
        s.assert_all_or_nothing(dest, &what);
    }
    println!("{dest:?}: {interrupted} of {ROUNDS} interrupted mid-copy");
}

#[test]
fn cli_interrupted_mid_tree_copy_to_a_new_name() {
    cli_interrupted(Dest::New);
}

#[test]
fn cli_interrupted_mid_tree_copy_into_an_existing_directory() {
    cli_interrupted(Dest::Existing);
}

#[test]
fn sigterm_and_sighup_remove_the_staged_tree_and_exit_143_and_129() {
    let d = Daemon::start();
    for (sig, code, name) in [
        (libc::SIGTERM, 143, "SIGTERM"),
        (libc::SIGHUP, 129, "SIGHUP"),
        (libc::SIGINT, 130, "SIGINT"),
    ] {
        let s = setup(Dest::New, 5);
        // Slow enough (each file at 64 KiB/s) that a loaded machine cannot
        // finish the copy between seeing the staged tree and the signal.
        let mut child = s.spawn_at(&d.socket, true, "64KiB");
        // Mid-copy: the staged tree is there.
        let staged = poll_until(Duration::from_secs(10), || !s.leftovers().is_empty());
        assert!(staged, "{name}: no staged tree appeared");
        let started = Instant::now();
        kill(&child, sig);
        let status = wait_cli(&mut child, name);
        assert_eq!(status.code(), Some(code), "{name}: {}", s.stderr());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{name}: took {:?}",
            started.elapsed()
        );
        assert_eq!(s.leftovers(), Vec::<PathBuf>::new(), "{name}: left");
        assert!(!s.dst.exists(), "{name}");
        assert!(
            s.stderr().contains(&format!(
                "'{}' was not created: the copy was interrupted by {name}; the partial copy was removed",
                s.dst.display()
            )),
            "{name}: {}",
            s.stderr()
        );
    }
}

#[test]
fn staging_of_a_live_process_or_another_user_is_kept() {
    let d = Daemon::start();
    let s = setup(Dest::New, 6);
    let mut live = Command::new("sleep").arg("60").spawn().unwrap();
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let of_live = s.work.join(format!(".new.ringxfer-{}-0", live.id()));
    let of_gone = s.work.join(format!(".new.ringxfer-{}-0", gone.id()));
    let other = s.work.join(format!(".other.ringxfer-{}-3", gone.id()));
    let not_ours = s.work.join(format!(".x.ringxfer-{}-1", gone.id()));
    let a_file = s.work.join(format!(".f.ringxfer-{}-2", gone.id()));
    for dir in [&of_live, &of_gone, &other, &not_ours] {
        fs::create_dir(dir).unwrap();
        fs::write(dir.join("part"), b"half").unwrap();
    }
    fs::write(&a_file, b"x").unwrap();
    if running_as_root() {
        std::os::unix::fs::chown(&not_ours, Some(65534), Some(65534)).unwrap();
    }
    fs::set_permissions(&of_gone, fs::Permissions::from_mode(0o755)).unwrap();

    let out = run(s.command(&d.socket, None));
    let _ = live.kill();
    let _ = live.wait();
    assert_exit(&out, 0, "copy beside leftovers");
    assert_complete(&s.dst, &s.files, "copy beside leftovers");
    let err = stderr(&out);
    for gone_dir in [&of_gone, &other] {
        assert!(!gone_dir.exists(), "{} kept", gone_dir.display());
        assert_eq!(
            err.matches(&format!("removed '{}'", gone_dir.display()))
                .count(),
            1,
            "{}",
            describe(&out)
        );
    }
    assert!(
        of_live.join("part").exists(),
        "a live process's staging removed"
    );
    assert!(a_file.exists(), "a staged file was removed");
    if running_as_root() {
        assert!(
            not_ours.join("part").exists(),
            "another user's staging removed"
        );
    }
    assert_eq!(err.matches("removed '").count(), 2, "{}", describe(&out));
}
