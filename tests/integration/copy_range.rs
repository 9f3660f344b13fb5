//! The in-kernel copy on workers (issue 16): copy_file_range from a file
//! into a file (`copy-range`, what `auto` uses past 64 KiB where it does
//! not go direct) and sendfile into a socket (`sendfile`), a bounded piece
//! at a time, so progress, cancel and rate limits work as for splice;
//! where the file systems refuse (EXDEV between two of them), `auto`
//! splices and says why, and an explicit `copy-range` is refused naming
//! why. On real file systems: the suite's directory, loop-mounted ext4 and
//! tmpfs (root); the engine under test is the suite's
//! (RINGXFER_TEST_ENGINE), so .ci/run covers both.

use std::fs;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ringxfer_ipc::{Event, FailureKind, Reflink, Strategy, TransferOptions};

use crate::cli_common::*;
use crate::support::*;

const MIB: u64 = 1 << 20;

/// A fresh file system of `kind` ("ext4", "tmpfs") at `dir/NAME`.
fn mount(dir: &Path, name: &str, kind: &str) -> Mount {
    let mnt = dir.join(name);
    fs::create_dir(&mnt).unwrap();
    if kind == "tmpfs" {
        let m = mount_tmpfs(&mnt, "256m").unwrap_or_else(|e| panic!("mount tmpfs: {e}"));
        return m;
    }
    let img = dir.join(format!("{name}.img"));
    fs::File::create(&img).unwrap().set_len(256 * MIB).unwrap();
    let out = run({
        let mut c = Command::new(format!("mkfs.{kind}"));
        c.args(["-q", "-F"]).arg(&img);
        c
    });
    assert_exit(&out, 0, &format!("mkfs.{kind}"));
    let out = run({
        let mut c = Command::new("mount");
        c.args(["-o", "loop"]).arg(&img).arg(&mnt);
        c
    });
    assert_exit(&out, 0, &format!("mount -o loop of the {kind} image"));
    Mount::at(&mnt)
}

/// `ringxfer --json copy ARGS... SRC DST`: its output.
fn cli_copy(d: &Daemon, args: &[&str], src: &Path, dst: &Path) -> std::process::Output {
    let mut c = cli(&d.socket);
    // The engine's strategies are under test: a hot file of these sizes
    // would otherwise be the CLI's own copy.
    c.args(["--daemon-only", "--json", "copy"])
        .args(args)
        .arg(src)
        .arg(dst);
    run(c)
}

/// The bytes `ringxfer --json stats` counts for `strategy`.
fn stats_bytes(d: &Daemon, strategy: &str) -> u64 {
    let mut c = cli(&d.socket);
    c.args(["--json", "stats"]);
    let out = run(c);
    assert_exit(&out, 0, "stats");
    let v = &json_lines(&out)[0];
    v["strategies"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["strategy"] == strategy))
        .and_then(|s| s["bytes"].as_u64())
        .unwrap_or_else(|| panic!("no {strategy} row in stats: {v}"))
}

/// Options for a job of `strategy` that clones nothing.
fn with(strategy: Strategy) -> TransferOptions {
    TransferOptions {
        strategy,
        reflink: Reflink::Never,
        ..opts()
    }
}

fn copies_within(kind: &str) {
    require_root("mounts file systems");
    let base = tmpdir();
    let m = mount(base.path(), "mnt", kind);
    let d = Daemon::start();
    // Not a multiple of a piece, a page or a block.
    let len = (24 * MIB + 4093) as usize;
    let (src, want) = make_file(m.path(), "src", len, 61);
    let dst = m.path().join("auto");
    let out = cli_copy(&d, &[], &src, &dst);
    assert_exit(&out, 0, &format!("copy on {kind}"));
    let done = &json_lines(&out)[0];
    assert_eq!(done["strategy"], "copy-range", "{kind}: {done}");
    assert_eq!(done["bytes"], len as u64, "{kind}: {done}");
    let note = done["note"].as_str().unwrap_or_default();
    assert!(note.contains("copy_file_range"), "{kind}: {note}");
    assert_file_eq(&dst, &want);
    let dst = m.path().join("explicit");
    let out = cli_copy(&d, &["--strategy", "copy-range"], &src, &dst);
    assert_exit(&out, 0, &format!("copy --strategy copy-range on {kind}"));
    assert_eq!(json_lines(&out)[0]["strategy"], "copy-range");
    assert_file_eq(&dst, &want);
    assert_eq!(stats_bytes(&d, "copy-range"), 2 * len as u64, "{kind}");
    // The CLI's text stats name the path too.
    let mut c = cli(&d.socket);
    c.arg("stats");
    let text = String::from_utf8_lossy(&run(c).stdout).into_owned();
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("copy-range")),
        "{text}"
    );
    d.stop();
}

#[test]
#[ignore = "needs root: mounts an ext4 loop image (.ci/run runs it)"]
fn copy_range_copies_byte_identical_within_ext4() {
    copies_within("ext4");
}

#[test]
#[ignore = "needs root: mounts a tmpfs (.ci/run runs it)"]
fn copy_range_copies_byte_identical_within_tmpfs() {
    copies_within("tmpfs");
}

#[test]
#[ignore = "needs root: mounts an ext4 loop image and a tmpfs (.ci/run runs it)"]
fn across_file_systems_auto_splices_and_copy_range_is_refused() {
    require_root("mounts file systems");
    let base = tmpdir();
    let from = mount(base.path(), "ext4", "ext4");
    let to = mount(base.path(), "tmpfs", "tmpfs");
    let d = Daemon::start();
    let (src, want) = make_file(from.path(), "src", (8 * MIB) as usize, 62);
    // auto: copy_file_range says EXDEV, nothing was written, so splice.
    let dst = to.path().join("first");
    let out = cli_copy(&d, &["--reflink=never"], &src, &dst);
    assert_exit(&out, 0, "copy across file systems");
    let done = &json_lines(&out)[0];
    assert_eq!(done["strategy"], "splice", "{done}");
    let note = done["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("copy_file_range refused (EXDEV"),
        "the note says why: {note}"
    );
    assert_file_eq(&dst, &want);
    // The pair of file systems is remembered: the next job splices at once.
    let dst = to.path().join("second");
    let out = cli_copy(&d, &["--reflink=never"], &src, &dst);
    assert_exit(&out, 0, "a second copy across file systems");
    let done = &json_lines(&out)[0];
    assert_eq!(done["strategy"], "splice", "{done}");
    let note = done["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("refused these two file systems before"),
        "{note}"
    );
    assert_file_eq(&dst, &want);
    // Asked for explicitly: refused, saying why, and nothing is published.
    let dst = to.path().join("explicit");
    let out = cli_copy(&d, &["--strategy", "copy-range"], &src, &dst);
    assert_exit(&out, 1, "copy --strategy copy-range across file systems");
    let err = stderr(&out);
    assert!(
        err.contains("the copy-range strategy cannot copy between these files")
            && err.contains("EXDEV")
            && err.contains("use auto or splice"),
        "{err}"
    );
    assert!(!dst.exists(), "a refused copy published {dst:?}");
    d.stop();
}

#[test]
fn a_procfs_source_under_auto_goes_down_the_ladder_to_a_buffer() {
    // Past 64 KiB asked for, auto tries copy_file_range (procfs to another
    // file system: EXDEV), then splice (kallsyms has no splice_read:
    // EINVAL), then reads it into a buffer; the note tells the way down.
    let d = Daemon::start();
    let c = d.client();
    let dir = tmpdir();
    let kallsyms = Path::new("/proc/kallsyms");
    let len = 256 << 10;
    let want = fs::read(kallsyms).expect("read /proc/kallsyms");
    assert!(want.len() > len, "/proc/kallsyms holds only {}", want.len());
    let dst = dir.path().join("kallsyms");
    let (s, t) = (fs::File::open(kallsyms).unwrap(), create_dst(&dst));
    let o = TransferOptions {
        length: Some(len as u64),
        ..opts()
    };
    let h = c.submit(s.as_fd(), t.as_fd(), &o).unwrap();
    drop((s, t));
    let done = completed(wait(h), "/proc/kallsyms under auto");
    assert_eq!(done.bytes, len as u64);
    assert_eq!(done.strategy, Strategy::Buffered);
    let note = done.note.unwrap_or_default();
    assert!(
        note.contains("copy_file_range refused") && note.contains("refuses splice"),
        "{note}"
    );
    assert_file_eq(&dst, &want[..len]);
}

#[test]
fn a_big_copy_range_job_cancels_mid_copy_and_leaks_nothing() {
    let d = Daemon::start();
    let baseline = d.baseline();
    let c = shared_client(&d);
    let dir = tmpdir();
    let len = 128 * MIB;
    let (src, _) = make_file(dir.path(), "big", len as usize, 63);
    let dst = dir.path().join("big.out");
    let (s, t) = (open_src(&src), create_dst(&dst));
    // 32 MiB/s: four seconds, cut into pieces of a twentieth of a second.
    let o = TransferOptions {
        rate_limit: Some(32 * MIB),
        ..with(Strategy::CopyRange)
    };
    let h = c.submit(s.as_fd(), t.as_fd(), &o).unwrap();
    drop((s, t));
    let id = id_of(&h);
    let info = status_until(&c, id, Duration::from_secs(10), "copying", |i| i.bytes > 0);
    assert_eq!(info.strategy, Strategy::CopyRange, "{info:?}");
    let asked = Instant::now();
    cancel_job(&c, id).expect("cancel");
    let f = failed(
        wait(h),
        FailureKind::Cancelled,
        "a cancelled copy-range job",
    );
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "the cancel took {:?}",
        asked.elapsed()
    );
    assert!(f.bytes > 0 && f.bytes < len, "moved {} of {len}", f.bytes);
    drop(c);
    d.assert_fds_return(baseline, Duration::from_secs(5), "after a cancel");
    d.assert_healthy(baseline, "after cancelling a copy-range job");
}

#[test]
fn copy_range_reports_progress_and_holds_its_rate_limit() {
    let d = Daemon::start();
    let c = d.client();
    let events = c.events();
    let dir = tmpdir();
    let len = 24 * MIB;
    let (src, want) = make_file(dir.path(), "src", len as usize, 64);
    let dst = dir.path().join("dst");
    let (s, t) = (open_src(&src), create_dst(&dst));
    // 24 MiB at 16 MiB/s: a second and a half; at least a second even if
    // the bucket starts with a tenth of a second's worth of tokens.
    let o = TransferOptions {
        rate_limit: Some(16 * MIB),
        progress: true,
        ..with(Strategy::CopyRange)
    };
    let started = Instant::now();
    let h = c.submit(s.as_fd(), t.as_fd(), &o).unwrap();
    drop((s, t));
    let job = id_of(&h);
    let done = completed(wait(h), "a rate-limited copy-range job");
    let took = started.elapsed();
    assert_eq!(done.strategy, Strategy::CopyRange);
    assert_eq!(done.bytes, len);
    assert_file_eq(&dst, &want);
    assert!(
        took >= Duration::from_secs(1) && took <= Duration::from_secs(10),
        "24 MiB under a 16 MiB/s limit took {took:?}"
    );
    let seen: Vec<u64> = events
        .try_iter()
        .filter_map(|e| match e {
            Event::Progress { job: j, bytes, .. } if j == job => Some(bytes),
            _ => None,
        })
        .collect();
    assert!(seen.len() >= 5, "progress events: {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]) && seen.iter().all(|&b| b > 0 && b <= len),
        "progress must grow and stay within the total: {seen:?}"
    );
}

/// Sends `src` (offset, length) into a TCP connection with `o`; what the
/// peer received, and the completion.
fn send_over_tcp(
    d: &Daemon,
    src: &Path,
    o: &TransferOptions,
) -> (Vec<u8>, ringxfer_ipc::Completion) {
    let client = d.client();
    let (conn, reader) = tcp_to_reader();
    let s = open_src(src);
    let h = client.submit(s.as_fd(), conn.as_fd(), o).unwrap();
    drop(s);
    let done = completed(wait(h), "sendfile into a socket");
    drop(conn);
    let got = reader.join().unwrap().expect("the peer saw no EOF");
    (got, done)
}

#[test]
fn sendfile_into_a_socket_is_byte_identical() {
    let d = Daemon::start();
    let dir = tmpdir();
    // Much more than the socket buffers, and more than a piece.
    let len = (20 * MIB + 17) as usize;
    let (src, data) = make_file(dir.path(), "src", len, 65);
    let (got, done) = send_over_tcp(&d, &src, &with(Strategy::Sendfile));
    assert_eq!(done.strategy, Strategy::Sendfile);
    assert_eq!(done.bytes, len as u64);
    assert_bytes_eq(&got, &data, "bytes received over TCP");
    let o = TransferOptions {
        offset: 1000,
        length: Some(3 * MIB + 5),
        ..with(Strategy::Sendfile)
    };
    let (got, done) = send_over_tcp(&d, &src, &o);
    assert_eq!(done.bytes, 3 * MIB + 5);
    assert_bytes_eq(&got, &data[1000..1000 + (3 * MIB + 5) as usize], "a range");
    assert_eq!(
        stats_bytes(&d, "sendfile"),
        len as u64 + 3 * MIB + 5,
        "stats count sendfile's bytes"
    );
    // sendfile sends into sockets; a file destination is copy-range's.
    let c = d.client();
    let dst = dir.path().join("file");
    let (s, t) = (open_src(&src), create_dst(&dst));
    let r = wait(
        c.submit(s.as_fd(), t.as_fd(), &with(Strategy::Sendfile))
            .unwrap(),
    );
    let f = failed(r, FailureKind::InvalidRequest, "sendfile into a file");
    assert!(
        f.message
            .contains("the sendfile strategy cannot take this job"),
        "{}",
        f.message
    );
}
