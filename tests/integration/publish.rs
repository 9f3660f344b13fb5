//! The stub's path helpers publish atomically: a destination appears (or is
//! replaced) only once its job completed, and a failed, cancelled or
//! disconnected job leaves nothing under its name and no temporary files.

use std::ffi::CString;
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::{self, Write};
use std::net::Shutdown;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime};

use ringxfer_ipc::{FailureKind, JobError, Strategy, TransferOptions};

use crate::support::*;

const SIZE: usize = 8 << 20;

/// The names in `dir`, sorted: hidden temporary names show up here.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn umask() -> u32 {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .expect("Umask line");
    u32::from_str_radix(line.trim(), 8).expect("octal umask")
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").mode() & 0o7777
}

/// A FIFO source whose writer sends the first part of `data`, says so, and
/// sends the rest only when told: while it waits, the job is in flight.
struct Feeder {
    fifo: PathBuf,
    sent_first: Receiver<()>,
    go: Sender<()>,
    writer: JoinHandle<io::Result<()>>,
}

impl Feeder {
    fn new(dir: &Path, data: &[u8]) -> Feeder {
        let fifo = dir.join("fifo");
        let c_path = CString::new(fifo.as_os_str().as_bytes()).expect("path without NUL");
        // SAFETY: `c_path` is a NUL-terminated path alive for the call.
        let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
        assert_eq!(rc, 0, "mkfifo: {}", io::Error::last_os_error());
        let (first_tx, sent_first) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<()>();
        let (first, rest) = data.split_at(data.len() / 2);
        let (first, rest) = (first.to_vec(), rest.to_vec());
        let path = fifo.clone();
        let writer = thread::spawn(move || {
            // Blocks until copy_file opens the FIFO for reading.
            let mut w = OpenOptions::new().write(true).open(&path)?;
            // Returns once the daemon has taken all but a pipe's worth.
            w.write_all(&first)?;
            let _ = first_tx.send(());
            if go_rx.recv().is_err() {
                return Ok(());
            }
            w.write_all(&rest)
        });
        Feeder {
            fifo,
            sent_first,
            go,
            writer,
        }
    }

    fn wait_first_half(&self) {
        self.sent_first
            .recv_timeout(JOB_TIMEOUT)
            .expect("the daemon never read the first half from the FIFO");
    }

    /// Lets the writer send the rest and close; returns its result.
    fn finish(self) -> io::Result<()> {
        let _ = self.go.send(());
        self.writer.join().expect("writer thread")
    }

    /// Closes the FIFO without sending the rest.
    fn stop(self) {
        drop(self.go);
        let _ = self.writer.join().expect("writer thread");
    }
}

#[test]
fn a_failed_copy_leaves_nothing_under_the_name() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "src", SIZE, 1);
    let fresh = dir.path().join("fresh");
    let existing = dir.path().join("existing");
    fs::write(&existing, b"old content").expect("write");

    for dst in [&fresh, &existing] {
        let opts = TransferOptions {
            length: Some(2 * SIZE as u64),
            ..opts()
        };
        let h = client.copy_file(&src, dst, &opts).expect("copy_file");
        failed(wait(h), FailureKind::SourceShort, "copy past the end");
    }
    assert!(!fresh.exists(), "a failed job created its destination");
    assert_eq!(fs::read(&existing).expect("read"), b"old content");
    assert_eq!(
        names(dir.path()),
        ["existing", "src"],
        "temporary files left"
    );
}

#[test]
fn a_copy_publishes_exact_bytes() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    let (src, data) = make_file(dir.path(), "src", SIZE + 17, 2);
    fs::set_permissions(&src, fs::Permissions::from_mode(0o640)).expect("chmod");
    let dst = dir.path().join("dst");
    let c = completed(
        wait(client.copy_file(&src, &dst, &opts()).expect("copy_file")),
        "copy_file",
    );
    assert_eq!(c.bytes, data.len() as u64);
    assert_file_eq(&dst, &data);
    assert_eq!(mode_of(&dst), 0o640 & !umask());
    assert_eq!(names(dir.path()), ["dst", "src"]);
}

#[test]
fn a_destination_appears_only_when_the_job_completes() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    let data = pattern(3, SIZE);
    let dst = dir.path().join("dst");

    let feeder = Feeder::new(dir.path(), &data);
    let h = client
        .copy_file(&feeder.fifo, &dst, &opts())
        .expect("copy_file");
    feeder.wait_first_half();
    assert!(!h.is_finished(), "the job ended early: {:?}", h.wait());
    assert!(!dst.exists(), "the destination exists while the job runs");
    assert_eq!(names(dir.path()), ["fifo"], "a temporary name is visible");
    feeder.finish().expect("writer");

    let c = completed(wait(h), "copy from a FIFO");
    assert_eq!(c.bytes, data.len() as u64);
    assert_file_eq(&dst, &data);
    assert_eq!(names(dir.path()), ["dst", "fifo"]);
}

#[test]
fn an_overwritten_destination_keeps_its_old_content_until_completion() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    let data = pattern(4, SIZE);
    let dst = dir.path().join("dst");
    fs::write(&dst, b"the previous version").expect("write");
    fs::set_permissions(&dst, fs::Permissions::from_mode(0o604)).expect("chmod");
    let old_ino = fs::metadata(&dst).expect("stat").ino();

    let feeder = Feeder::new(dir.path(), &data);
    let h = client
        .copy_file(&feeder.fifo, &dst, &opts())
        .expect("copy_file");
    feeder.wait_first_half();
    assert!(!h.is_finished(), "the job ended early: {:?}", h.wait());
    assert_eq!(fs::read(&dst).expect("read"), b"the previous version");
    assert_eq!(names(dir.path()), ["dst", "fifo"]);
    feeder.finish().expect("writer");

    completed(wait(h), "overwrite from a FIFO");
    assert_file_eq(&dst, &data);
    assert_ne!(fs::metadata(&dst).expect("stat").ino(), old_ino);
    assert_eq!(
        mode_of(&dst),
        0o604,
        "the replaced file's mode carries over"
    );
    assert_eq!(names(dir.path()), ["dst", "fifo"]);
}

#[test]
fn a_disconnect_mid_job_leaves_nothing() {
    let d = Daemon::start();
    let dir = tmpdir();
    let data = pattern(5, SIZE);
    let dst = dir.path().join("dst");
    let existing = dir.path().join("existing");
    fs::write(&existing, b"untouched").expect("write");

    for target in [&dst, &existing] {
        let client = d.client();
        let feeder = Feeder::new(dir.path(), &data);
        let h = client
            .copy_file(&feeder.fifo, target, &opts())
            .expect("copy_file");
        feeder.wait_first_half();
        drop(client);
        let err = wait(h).expect_err("the connection ended first");
        assert!(matches!(err, JobError::Disconnected(_)), "{err:?}");
        feeder.stop();
        fs::remove_file(dir.path().join("fifo")).expect("remove fifo");
    }
    assert!(!dst.exists(), "an abandoned job created its destination");
    assert_eq!(fs::read(&existing).expect("read"), b"untouched");
    assert_eq!(names(dir.path()), ["existing"], "temporary files left");
}

#[test]
fn in_place_writes_into_the_destination_while_the_job_runs() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    let data = pattern(6, SIZE);
    let dst = dir.path().join("dst");
    fs::write(&dst, b"the previous version").expect("write");
    let ino = fs::metadata(&dst).expect("stat").ino();

    let feeder = Feeder::new(dir.path(), &data);
    let opts = TransferOptions {
        in_place: true,
        ..opts()
    };
    let h = client
        .copy_file(&feeder.fifo, &dst, &opts)
        .expect("copy_file");
    feeder.wait_first_half();
    assert!(
        poll_until(Duration::from_secs(10), || fs::metadata(&dst)
            .map(|m| m.len() > 20)
            .unwrap_or(false)),
        "no bytes landed in the destination while the job ran"
    );
    feeder.finish().expect("writer");

    completed(wait(h), "in-place copy");
    assert_file_eq(&dst, &data);
    assert_eq!(fs::metadata(&dst).expect("stat").ino(), ino, "same file");
    assert_eq!(names(dir.path()), ["dst", "fifo"]);
}

#[test]
fn preserve_copies_mode_and_times() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    let (src, data) = make_file(dir.path(), "src", SIZE, 7);
    fs::set_permissions(&src, fs::Permissions::from_mode(0o751)).expect("chmod");
    let mtime = SystemTime::UNIX_EPOCH + Duration::new(1_000_000_000, 123_456_789);
    let atime = SystemTime::UNIX_EPOCH + Duration::new(1_100_000_000, 987_654_321);

    let existing = dir.path().join("existing");
    fs::write(&existing, b"older").expect("write");
    let cases = [
        ("fresh", Strategy::Auto, false),
        ("existing", Strategy::Auto, false),
        ("direct-synced", Strategy::Direct, true),
    ];
    for (name, strategy, fsync) in cases {
        // Again each round: the previous copy's reads moved the source's atime.
        File::options()
            .write(true)
            .open(&src)
            .expect("open")
            .set_times(FileTimes::new().set_modified(mtime).set_accessed(atime))
            .expect("set times");
        let dst = dir.path().join(name);
        let opts = TransferOptions {
            preserve: true,
            strategy,
            fsync,
            ..opts()
        };
        let c = completed(
            wait(client.copy_file(&src, &dst, &opts).expect("copy_file")),
            name,
        );
        // The stub syncs the staged file itself, whether or not the daemon
        // (c.synced) already did.
        assert_eq!(c.bytes, data.len() as u64, "{name}");
        if strategy == Strategy::Direct {
            assert_eq!(c.strategy, Strategy::Direct, "{name}: {:?}", c.note);
        }
        // Before reading it back, which moves the atime.
        let meta = fs::metadata(&dst).expect("stat");
        assert_eq!(meta.mode() & 0o7777, 0o751, "{name}");
        assert_eq!(meta.modified().expect("mtime"), mtime, "{name}");
        assert_eq!(meta.accessed().expect("atime"), atime, "{name}");
        assert_file_eq(&dst, &data);
    }
    assert_eq!(
        names(dir.path()),
        ["direct-synced", "existing", "fresh", "src"]
    );
}

#[test]
fn recv_to_file_publishes_when_the_stream_ends() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    let data = pattern(8, SIZE);
    let dst = dir.path().join("incoming");

    let (mut writer, server_side) = tcp_pair();
    let h = client
        .recv_to_file(&server_side, &dst, &opts())
        .expect("recv_to_file");
    drop(server_side);
    writer
        .write_all(&data[..SIZE / 2])
        .expect("send first half");
    assert!(
        !dst.exists(),
        "the destination exists while the stream runs"
    );
    assert!(names(dir.path()).is_empty(), "a temporary name is visible");
    writer.write_all(&data[SIZE / 2..]).expect("send the rest");
    writer.shutdown(Shutdown::Write).expect("shutdown");

    let c = completed(wait(h), "recv_to_file");
    assert_eq!(c.bytes, data.len() as u64);
    assert_file_eq(&dst, &data);
    assert_eq!(mode_of(&dst), 0o644 & !umask());
    assert_eq!(names(dir.path()), ["incoming"]);
}
