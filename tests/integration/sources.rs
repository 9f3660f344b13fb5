//! Sources that do not tell their size (issue 13, item 1): procfs says 0,
//! sysfs a page, character devices nothing, and a regular file may grow or
//! shrink while it is read. Without a requested length every strategy reads
//! until a read returns 0, so the destination holds exactly what a plain
//! read() loop returns; a strategy that cannot read a source refuses,
//! naming itself, having written nothing; `auto` falls to the rung that works.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ringxfer_ipc::{Client, Completion, FailureKind, JobError, Strategy, TransferOptions};

use crate::support::*;

const STRATEGIES: [Strategy; 6] = [
    Strategy::Auto,
    Strategy::Splice,
    Strategy::Buffered,
    Strategy::Uncached,
    Strategy::Direct,
    Strategy::CopyRange,
];

/// What a plain read() loop returns from `path` until EOF.
fn read_loop(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn copy(c: &Client, src: &Path, dst: &Path, o: &TransferOptions) -> Result<Completion, JobError> {
    let s = File::open(src).unwrap_or_else(|e| panic!("open {}: {e}", src.display()));
    let d = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dst)
        .expect("create destination");
    let h = c
        .submit(s.as_fd(), d.as_fd(), o)
        .unwrap_or_else(|e| panic!("submit {}: {e:?}", src.display()));
    drop((s, d));
    wait(h)
}

fn with(strategy: Strategy) -> TransferOptions {
    TransferOptions { strategy, ..opts() }
}

/// How a source behaves under each strategy.
#[derive(Clone, Copy, PartialEq)]
enum Expect {
    /// Completes with exactly what a read loop gives.
    Copies,
    /// Refused, naming the strategy and why, with nothing written.
    Refused(&'static str),
}

struct Source {
    path: PathBuf,
    /// Whether the file system lets splice read it.
    splices: bool,
    /// Whether O_DIRECT opens it (only regular files on a disk file system).
    direct: bool,
}

impl Source {
    /// Whether it is a regular file on the destination's file system (the
    /// test's directory), which copy_file_range copies within; procfs and
    /// sysfs are others (EXDEV), a device is no regular file.
    fn copies_in_kernel(&self, dir: &Path) -> bool {
        self.path.starts_with(dir)
    }
}

fn sources(dir: &Path) -> Vec<Source> {
    let empty = dir.join("empty");
    File::create(&empty).expect("create empty");
    let mut list = vec![
        // procfs: size 0, content stable between reads, splice_read works.
        Source {
            path: "/proc/version".into(),
            splices: true,
            direct: false,
        },
        // procfs: size 0, several MiB read a page at a time (many buffers
        // past the hint of 0); no splice_read.
        Source {
            path: "/proc/kallsyms".into(),
            splices: false,
            direct: false,
        },
        // A procfs file without splice_read (init's command line, stable):
        // splice says EINVAL.
        Source {
            path: "/proc/1/cmdline".into(),
            splices: false,
            direct: false,
        },
        // A character device that ends at once; it refuses splice.
        Source {
            path: "/dev/null".into(),
            splices: false,
            direct: false,
        },
        Source {
            path: empty,
            splices: true,
            direct: true,
        },
    ];
    // sysfs: st_size 4096, a few bytes of content.
    for p in [
        "/sys/kernel/mm/transparent_hugepage/enabled",
        "/sys/kernel/kexec_loaded",
        "/sys/power/state",
    ] {
        if Path::new(p).exists() {
            list.push(Source {
                path: p.into(),
                splices: true,
                direct: false,
            });
            break;
        }
    }
    list
}

fn expect(src: &Source, strategy: Strategy, dir: &Path) -> Expect {
    match strategy {
        Strategy::CopyRange if src.path.starts_with("/dev") => {
            Expect::Refused("the copy-range strategy cannot take this job")
        }
        Strategy::CopyRange if !src.copies_in_kernel(dir) => {
            Expect::Refused("the copy-range strategy cannot copy between these files")
        }
        Strategy::Splice if !src.splices => {
            Expect::Refused("the splice strategy cannot read this source")
        }
        Strategy::Direct if !src.direct => {
            Expect::Refused("the direct strategy cannot take this job")
        }
        _ => Expect::Copies,
    }
}

#[test]
fn every_source_kind_with_every_strategy_copies_what_a_read_loop_gives() {
    let d = Daemon::start();
    let c = d.client();
    let dir = tmpdir();
    let mut checked = 0;
    for src in sources(dir.path()) {
        let before = read_loop(&src.path);
        for strategy in STRATEGIES {
            let what = format!("{} with {strategy:?}", src.path.display());
            let dst = dir.path().join("out");
            let r = copy(&c, &src.path, &dst, &with(strategy));
            let after = read_loop(&src.path);
            assert_eq!(
                before, after,
                "{what}: the source is not stable between reads"
            );
            let landed = std::fs::read(&dst).expect("read destination");
            match expect(&src, strategy, dir.path()) {
                Expect::Copies => {
                    let done = completed(r, &what);
                    assert_eq!(done.bytes, before.len() as u64, "{what}: bytes reported");
                    assert_bytes_eq(&landed, &before, &what);
                }
                Expect::Refused(says) => {
                    let f = failed(r, FailureKind::InvalidRequest, &what);
                    assert!(f.message.contains(says), "{what}: {}", f.message);
                    assert_eq!(f.bytes, 0, "{what}");
                    assert!(landed.is_empty(), "{what}: {} bytes written", landed.len());
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} cases ran");
}

#[test]
fn splice_refusing_the_source_says_why_and_auto_falls_back_to_buffered() {
    let d = Daemon::start();
    let c = d.client();
    let dir = tmpdir();
    for path in ["/dev/null", "/proc/1/cmdline"] {
        let src = Path::new(path);
        let want = read_loop(src);
        let dst = dir.path().join("out");
        let f = failed(
            copy(&c, src, &dst, &with(Strategy::Splice)),
            FailureKind::InvalidRequest,
            path,
        );
        assert!(
            f.message
                .contains("refuses splice (EINVAL); use auto or buffered"),
            "{path}: {}",
            f.message
        );
        // procfs files say they hold 0 bytes, so auto picks a buffer at
        // once; /dev/null is a stream, which auto splices until it refuses.
        let done = completed(copy(&c, src, &dst, &with(Strategy::Auto)), path);
        assert_eq!(done.strategy, Strategy::Buffered, "{path}");
        assert_file_eq(&dst, &want);
        if path == "/dev/null" {
            let note = done.note.unwrap_or_default();
            assert!(
                note.contains("refuses splice (EINVAL)"),
                "{path}: note {note:?}"
            );
        }
    }
}

#[test]
fn a_character_device_with_a_length_copies_exactly_that_length_on_every_strategy() {
    let d = Daemon::start();
    let c = d.client();
    let dir = tmpdir();
    let len = (3 << 20) + 7;
    for strategy in [
        Strategy::Auto,
        Strategy::Splice,
        Strategy::Buffered,
        Strategy::Uncached,
    ] {
        let dst = dir.path().join("zero");
        let o = TransferOptions {
            length: Some(len),
            ..with(strategy)
        };
        let done = completed(
            copy(&c, Path::new("/dev/zero"), &dst, &o),
            &format!("{strategy:?}"),
        );
        assert_eq!(done.bytes, len, "{strategy:?}");
        assert_file_eq(&dst, &vec![0u8; len as usize]);
    }
}

#[test]
fn a_requested_length_past_the_end_stays_source_short() {
    let d = Daemon::start();
    let c = d.client();
    let dir = tmpdir();
    let (small, _) = make_file(dir.path(), "small", 100_000, 3);
    for strategy in STRATEGIES {
        for src in [small.as_path(), Path::new("/proc/version")] {
            // Neither O_DIRECT nor copy_file_range (from procfs to another
            // file system) takes procfs: they refuse it (see above).
            if matches!(strategy, Strategy::Direct | Strategy::CopyRange)
                && src.starts_with("/proc")
            {
                continue;
            }
            let o = TransferOptions {
                length: Some(200_000),
                ..with(strategy)
            };
            let what = format!("{} with {strategy:?}", src.display());
            failed(
                copy(&c, src, &dir.path().join("out"), &o),
                FailureKind::SourceShort,
                &what,
            );
        }
    }
}

/// Submits a slow (rate-limited) copy of `src` per strategy, lets `change`
/// act on the sources while the jobs run, and checks each destination holds
/// what a read loop gives afterwards.
fn while_copying(name: &str, len: usize, change: impl Fn(&Path), may_race: bool) {
    let d = Daemon::start();
    let c = d.client();
    let dir = tmpdir();
    // Every file is made before the first job starts, so the change comes
    // within milliseconds of each job's start.
    let files: Vec<PathBuf> = STRATEGIES
        .iter()
        .map(|s| make_file(dir.path(), &format!("{name}-{s:?}"), len, 9).0)
        .collect();
    let mut jobs = Vec::new();
    for (strategy, src) in STRATEGIES.into_iter().zip(files) {
        let dst = dir.path().join(format!("{name}-{strategy:?}.out"));
        let s = File::open(&src).expect("open source");
        let t = create_dst(&dst);
        let o = TransferOptions {
            rate_limit: Some(256 << 10),
            ..with(strategy)
        };
        let h = c.submit(s.as_fd(), t.as_fd(), &o).expect("submit");
        jobs.push((strategy, src, dst, h));
    }
    for (_, src, _, _) in &jobs {
        change(src);
    }
    for (strategy, src, dst, h) in jobs {
        let what = format!("{name} with {strategy:?}");
        let r = wait_within(h, Duration::from_secs(60));
        if may_race {
            if let Err(JobError::Failed { message, .. }) = &r {
                // A read in flight when the file was cut can still return
                // bytes past the new end (it sampled the old size) while
                // another finds the end: the job says the file changed size
                // rather than publish a hole.
                assert!(message.contains("changed size"), "{what}: {message}");
                continue;
            }
        }
        let done = completed(r, &what);
        let want = read_loop(&src);
        assert_eq!(done.bytes, want.len() as u64, "{what}: bytes reported");
        assert_file_eq(&dst, &want);
    }
}

#[test]
fn a_file_that_grows_during_the_copy_is_copied_to_its_new_end() {
    // 1 MiB at 256 KiB/s takes four seconds; the appended bytes (not a
    // multiple of any block) land within milliseconds, long before the end.
    while_copying(
        "grows",
        1 << 20,
        |src| {
            let mut f = OpenOptions::new().append(true).open(src).expect("open");
            f.write_all(&pattern(77, 300_001)).expect("append");
        },
        false,
    );
}

#[test]
fn a_file_that_shrinks_during_the_copy_ends_where_its_reads_end() {
    // 4 MiB at 256 KiB/s; the first pieces are tens of KiB, so every job is
    // far before the new end of 1 MiB + 5 when the file is cut.
    while_copying(
        "shrinks",
        4 << 20,
        |src| {
            let f = OpenOptions::new().write(true).open(src).expect("open");
            f.set_len((1 << 20) + 5).expect("truncate");
        },
        true,
    );
}

/// A pipe the client made non-blocking says EAGAIN when it has nothing: the
/// errno table makes every strategy wait for it to be readable, so splice
/// and buffered end the same way, with every byte.
#[test]
fn a_non_blocking_pipe_source_is_waited_for_the_same_way_by_splice_and_buffered() {
    let d = Daemon::start();
    let c = d.client();
    let dir = tmpdir();
    let want = pattern(12, 200_000);
    for strategy in [Strategy::Splice, Strategy::Buffered, Strategy::Uncached] {
        let (r, mut w) = std::io::pipe().expect("pipe");
        // SAFETY: F_SETFL on a descriptor this test owns.
        unsafe {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&r);
            let flags = libc::fcntl(fd, libc::F_GETFL);
            assert_eq!(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK), 0);
        }
        let dst = dir.path().join("pipe.out");
        let t = create_dst(&dst);
        let h = c
            .submit(r.as_fd(), t.as_fd(), &with(strategy))
            .expect("submit");
        drop((r, t));
        let data = want.clone();
        let writer = std::thread::spawn(move || {
            // Pauses leave the pipe empty, so reads meet EAGAIN.
            for piece in data.chunks(50_000) {
                std::thread::sleep(Duration::from_millis(100));
                w.write_all(piece).expect("write pipe");
            }
        });
        let what = format!("non-blocking pipe with {strategy:?}");
        let done = completed(wait_within(h, Duration::from_secs(30)), &what);
        writer.join().expect("writer");
        assert_eq!(done.bytes, want.len() as u64, "{what}");
        assert_file_eq(&dst, &want);
    }
}

/// What a user types: `ringxfer copy` of procfs and sysfs files exits 0 only
/// with every byte, whichever strategy they name, and an explicit splice of
/// a source that refuses it exits 1 naming the strategy, leaving nothing.
#[test]
fn the_cli_copies_procfs_and_sysfs_files_like_cp() {
    use crate::cli_common::{assert_exit, cli, run, stderr};
    let d = Daemon::start();
    let dir = tmpdir();
    let mut srcs = vec![
        PathBuf::from("/proc/version"),
        PathBuf::from("/proc/1/cmdline"),
    ];
    srcs.extend(
        sources(dir.path())
            .into_iter()
            .map(|s| s.path)
            .filter(|p| p.starts_with("/sys")),
    );
    for (i, src) in srcs.iter().enumerate() {
        let want = read_loop(src);
        for strategy in ["auto", "buffered", "uncached", "splice"] {
            let what = format!("copy --strategy {strategy} {}", src.display());
            let dst = dir.path().join(format!("cli-{i}-{strategy}"));
            let mut c = cli(&d.socket);
            c.args(["copy", "--strategy", strategy]).arg(src).arg(&dst);
            let out = run(c);
            if strategy == "splice" && src.ends_with("cmdline") {
                assert_exit(&out, 1, &what);
                assert!(
                    stderr(&out).contains("the splice strategy cannot read this source"),
                    "{what}: {}",
                    stderr(&out)
                );
                assert!(!dst.exists(), "{what}: a destination was published");
                continue;
            }
            assert_exit(&out, 0, &what);
            assert_file_eq(&dst, &want);
        }
    }
}
