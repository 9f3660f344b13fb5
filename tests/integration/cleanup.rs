//! A failed job that wrote into an existing destination (what `--in-place`
//! does) leaves it the same way whatever its strategy (issue 13, item 9):
//! truncated back to the size it had when the job was admitted. The same
//! errno also ends a job the same way in every strategy (item 8).

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;

use ringxfer_ipc::{Client, Completion, FailureKind, JobError, Strategy, TransferOptions};

use crate::support::*;

const STRATEGIES: [Strategy; 5] = [
    Strategy::Auto,
    Strategy::Splice,
    Strategy::Buffered,
    Strategy::Uncached,
    Strategy::Direct,
];

/// Writes `len` bytes of pattern `seed` into `path` and opens it for
/// writing without truncating, as `--in-place` does.
fn existing_destination(path: &Path, len: usize, seed: u64) -> File {
    std::fs::write(path, pattern(seed, len)).expect("write destination");
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open destination")
}

fn run(c: &Client, src: &Path, dst: &File, o: &TransferOptions) -> Result<Completion, JobError> {
    let s = File::open(src).expect("open source");
    let h = c.submit(s.as_fd(), dst.as_fd(), o).expect("submit");
    drop(s);
    wait(h)
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").len()
}

#[test]
fn a_failed_job_into_an_existing_file_truncates_it_back_whatever_the_strategy() {
    // One pipe or buffer per job: ranges go in order, so every byte before
    // the source's end is written before the job finds it short.
    let d = Daemon::start_with(&["--chunks-per-job", "1", "--buffers-per-job", "1"]);
    let c = d.client();
    let dir = tmpdir();
    // 3 MiB + 5 of source, asked for 8 MiB: every strategy writes the 3 MiB
    // over the old 1 MiB + 3, then finds the source short.
    let (src, data) = make_file(dir.path(), "src", (3 << 20) + 5, 1);
    let orig = (1 << 20) + 3;
    for strategy in STRATEGIES {
        let what = format!("{strategy:?}");
        let path = dir.path().join(format!("dst-{what}"));
        let dst = existing_destination(&path, orig, 2);
        let o = TransferOptions {
            length: Some(8 << 20),
            strategy,
            ..opts()
        };
        let f = failed(run(&c, &src, &dst, &o), FailureKind::SourceShort, &what);
        assert!(
            f.bytes > 0,
            "{what}: nothing was written before the failure"
        );
        assert_eq!(
            size(&path),
            orig as u64,
            "{what}: the destination keeps the size it had at admission"
        );
        // What was written over the old bytes stays (the documented
        // exception of --in-place; which pieces landed before the failure
        // cancelled the rest varies); nothing past the old end does.
        let got = std::fs::read(&path).expect("read");
        let old = pattern(2, orig);
        for (i, b) in got.iter().enumerate() {
            assert!(
                *b == data[i] || *b == old[i],
                "{what}: byte {i} is neither old nor new"
            );
        }
    }
}

#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn a_full_disk_ends_every_strategy_the_same_way_and_restores_the_size() {
    require_root("root to mount tmpfs");
    let d = Daemon::start();
    let c = d.client();
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "src", 4 << 20, 5);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&mnt)
        .output()
        .expect("run mount");
    assert!(
        out.status.success(),
        "cannot mount tmpfs (as root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _mount = Mount::at(&mnt);
    let orig = 64 << 10;
    for strategy in STRATEGIES {
        let what = format!("{strategy:?} into a full tmpfs");
        let path = mnt.join("dst");
        let dst = existing_destination(&path, orig, 6);
        let o = TransferOptions { strategy, ..opts() };
        match run(&c, &src, &dst, &o) {
            Err(JobError::Failed {
                kind: FailureKind::InvalidRequest,
                message,
                ..
            }) if strategy == Strategy::Direct => {
                // A kernel whose tmpfs has no O_DIRECT refuses at admission.
                assert!(message.contains("direct"), "{what}: {message}");
            }
            r => {
                let f = failed(r, FailureKind::NoSpace, &what);
                assert_eq!(f.os_error, Some(libc::ENOSPC), "{what}: {f:?}");
            }
        }
        assert_eq!(size(&path), orig as u64, "{what}: size after the failure");
        drop(dst);
        std::fs::remove_file(&path).expect("remove");
    }
}
