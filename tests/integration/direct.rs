//! The direct strategy (O_DIRECT through the daemon's aligned buffers), the
//! uncached strategy (RWF_DONTCACHE), and how `auto` chooses between them and
//! splice: sizes, alignment, every direction, file systems that refuse
//! O_DIRECT, a full destination, a shrinking source, and what stays in the
//! page cache afterwards.
//!
//! The tests pass plain (buffered) descriptors: making the I/O direct is the
//! daemon's business.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use ringxfer_ipc::{Client, Completion, FailureKind, Strategy, TransferOptions};

use crate::pagecache::*;
use crate::support::*;

// ---------------------------------------------------------------------------
// Helpers

/// Default options with `strategy`.
fn with(strategy: Strategy) -> TransferOptions {
    TransferOptions { strategy, ..opts() }
}

/// Whether `text` contains `needle`, ignoring case.
fn mentions(text: &str, needle: &str) -> bool {
    text.to_lowercase().contains(&needle.to_lowercase())
}

/// Asserts the completion carries a note that mentions `needle`.
fn assert_note_mentions(c: &Completion, needle: &str, what: &str) {
    match &c.note {
        Some(n) if mentions(n, needle) => {}
        other => panic!("{what}: expected a note mentioning {needle:?}, got {other:?}"),
    }
}

/// Copies a fresh file of `len` bytes with `strategy`, asserts that strategy
/// was used and the copy is byte-identical.
fn copy_with(
    client: &Client,
    dir: &Path,
    name: &str,
    len: usize,
    seed: u64,
    strategy: Strategy,
) -> Completion {
    let (src, data) = make_file(dir, &format!("{name}.src"), len, seed);
    let dst = dir.join(format!("{name}.dst"));
    let s = open_src(&src);
    let t = create_dst(&dst);
    let h = client
        .submit(s.as_fd(), t.as_fd(), &with(strategy))
        .unwrap_or_else(|e| panic!("{name}: submit: {e:?}"));
    drop((s, t));
    let c = completed(wait(h), name);
    assert_eq!(c.bytes, len as u64, "{name}: completion bytes");
    assert_eq!(
        c.strategy, strategy,
        "{name}: strategy used (note {:?})",
        c.note
    );
    assert_file_eq(&dst, &data);
    c
}

/// Mounts a `fstype` (tmpfs, ramfs) with `options` on a fresh directory
/// `dir/name`, or says why it could not.
fn mount(dir: &Path, name: &str, fstype: &str, options: Option<&str>) -> Result<Mount, String> {
    let mnt = dir.join(name);
    std::fs::create_dir(&mnt).map_err(|e| e.to_string())?;
    let mut cmd = Command::new("mount");
    cmd.args(["-t", fstype]);
    if let Some(o) = options {
        cmd.args(["-o", o]);
    }
    let out = cmd
        .arg(fstype)
        .arg(&mnt)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(Mount::at(&mnt))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

// ---------------------------------------------------------------------------
// File to file, direct

#[test]
fn direct_file_to_file_edge_sizes() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    for (i, len) in [0usize, 1, 4095, 4096, 4097, (1 << 20) + 1]
        .into_iter()
        .enumerate()
    {
        copy_with(
            &client,
            dir.path(),
            &format!("direct-size-{len}"),
            len,
            300 + i as u64,
            Strategy::Direct,
        );
    }
}

#[test]
fn direct_file_to_file_1_gib_plus_123() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    let len = (1u64 << 30) + 123;
    let pat = BigPattern::new(310);
    let src = dir.path().join("big.src");
    let dst = dir.path().join("big.dst");
    pat.write_file(&src, len);
    let s = open_src(&src);
    let t = create_dst(&dst);
    let started = Instant::now();
    let h = client
        .submit(s.as_fd(), t.as_fd(), &with(Strategy::Direct))
        .unwrap();
    drop((s, t));
    let c = completed(
        wait_within(h, Duration::from_secs(300)),
        "1 GiB + 123 direct",
    );
    eprintln!(
        "1 GiB + 123 direct: {:?} by the daemon, {:?} by the test",
        c.elapsed,
        started.elapsed()
    );
    assert_eq!(c.bytes, len, "completion bytes");
    assert_eq!(c.strategy, Strategy::Direct, "strategy (note {:?})", c.note);
    pat.assert_file(&dst, len);
}

#[test]
fn direct_aligned_offsets_and_lengths() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    let (src, data) = make_file(dir.path(), "src", (1 << 20) + 777, 320);
    let other = pattern(321, 64 << 10);
    // (offset, length, dest_offset, what the destination held before)
    let cases: [(u64, Option<u64>, u64, &[u8]); 4] = [
        (4096, Some(10_000), 0, &[]),
        (8192, None, 4096, &[]),
        (4096, Some(3 * 4096), 8192, &other),
        (65536, Some(1 << 19), 0, &[]),
    ];
    for (i, (offset, length, dest_offset, before)) in cases.into_iter().enumerate() {
        let what = format!("offset {offset}, length {length:?}, dest_offset {dest_offset}");
        let dst = dir.path().join(format!("dst{i}"));
        std::fs::write(&dst, before).unwrap();
        let s = open_src(&src);
        let t = OpenOptions::new().write(true).open(&dst).unwrap();
        let o = TransferOptions {
            offset,
            length,
            dest_offset,
            ..with(Strategy::Direct)
        };
        let c = completed(
            wait(client.submit(s.as_fd(), t.as_fd(), &o).unwrap()),
            &what,
        );
        drop((s, t));
        let n = length.unwrap_or(data.len() as u64 - offset) as usize;
        let (off, doff) = (offset as usize, dest_offset as usize);
        let mut want = before.to_vec();
        if want.len() < doff + n {
            want.resize(doff + n, 0);
        }
        want[doff..doff + n].copy_from_slice(&data[off..off + n]);
        assert_eq!(c.bytes, n as u64, "{what}: completion bytes");
        assert_eq!(
            c.strategy,
            Strategy::Direct,
            "{what}: strategy (note {:?})",
            c.note
        );
        assert_file_eq(&dst, &want);
    }
}

/// The status flags of the open file description behind `fd`.
fn status_flags(fd: std::os::fd::BorrowedFd<'_>) -> i32 {
    use std::os::fd::AsRawFd;
    // SAFETY: F_GETFL on a descriptor the caller keeps open.
    let fl = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    assert!(
        fl >= 0,
        "fcntl(F_GETFL): {}",
        std::io::Error::last_os_error()
    );
    fl
}

#[test]
fn direct_job_leaves_the_clients_descriptors_as_they_were() {
    // The daemon shares the client's open file descriptions; whatever it
    // switches on to go direct must be off again once the job is over.
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    let (src, data) = make_file(dir.path(), "src", (1 << 20) + 1, 328);
    let dst = dir.path().join("dst");
    let s = open_src(&src);
    let t = create_dst(&dst);
    let before = (status_flags(s.as_fd()), status_flags(t.as_fd()));
    assert_eq!(before.0 & libc::O_DIRECT, 0);
    let c = completed(
        wait(
            client
                .submit(s.as_fd(), t.as_fd(), &with(Strategy::Direct))
                .unwrap(),
        ),
        "direct copy",
    );
    assert_eq!(c.strategy, Strategy::Direct, "strategy (note {:?})", c.note);
    let mut after = before;
    let restored = poll_until(Duration::from_secs(2), || {
        after = (status_flags(s.as_fd()), status_flags(t.as_fd()));
        after == before
    });
    assert!(
        restored,
        "descriptor flags (source, destination) were ({:#o}, {:#o}), are ({:#o}, {:#o}) \
         after the job (O_DIRECT is {:#o})",
        before.0,
        before.1,
        after.0,
        after.1,
        libc::O_DIRECT
    );
    // And the client can go on with buffered, unaligned I/O on them.
    let mut buf = [0u8; 1001];
    (&s).read_exact(&mut buf).unwrap();
    assert_bytes_eq(&buf, &data[..1001], "buffered read after the job");
    (&t).write_all(b"tail").unwrap();
}

#[test]
fn direct_unaligned_length_into_an_existing_file_keeps_what_follows() {
    // A direct write of a range that ends mid-block inside a larger file must
    // not pad over, or truncate away, the bytes after the range.
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    let (src, data) = make_file(dir.path(), "src", 1 << 20, 325);
    let (dst, before) = make_file(dir.path(), "dst", 64 << 10, 326);
    let s = open_src(&src);
    let t = OpenOptions::new().write(true).open(&dst).unwrap();
    let o = TransferOptions {
        offset: 4096,
        length: Some(10_000),
        dest_offset: 8192,
        ..with(Strategy::Direct)
    };
    let c = completed(
        wait(client.submit(s.as_fd(), t.as_fd(), &o).unwrap()),
        "10000 bytes into the middle of a 64 KiB file",
    );
    assert_eq!(c.bytes, 10_000);
    assert_eq!(c.strategy, Strategy::Direct, "strategy (note {:?})", c.note);
    let mut want = before;
    want[8192..18_192].copy_from_slice(&data[4096..14_096]);
    assert_file_eq(&dst, &want);
}

/// Submits a direct copy with `o`'s unaligned offset and asserts the
/// refusal: InvalidRequest naming the alignment, nothing moved or written.
fn assert_unaligned_direct_refused(o: TransferOptions, seed: u64, what: &str) {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "src", 1 << 20, seed);
    let dst = dir.path().join("dst");
    let s = open_src(&src);
    let t = create_dst(&dst);
    let f = failed(
        wait(client.submit(s.as_fd(), t.as_fd(), &o).unwrap()),
        FailureKind::InvalidRequest,
        what,
    );
    assert!(
        mentions(&f.message, "align"),
        "{what}: the refusal should say the offset is not aligned: {f:?}"
    );
    assert_eq!(f.bytes, 0, "{f:?}");
    assert_eq!(
        std::fs::metadata(&dst).unwrap().len(),
        0,
        "destination touched"
    );
}

#[test]
fn direct_unaligned_offset_is_invalid_request() {
    // 1001 is a multiple of no block size.
    let o = TransferOptions {
        offset: 1001,
        ..with(Strategy::Direct)
    };
    assert_unaligned_direct_refused(o, 330, "direct with offset 1001");
}

#[test]
fn direct_unaligned_dest_offset_is_invalid_request() {
    let o = TransferOptions {
        dest_offset: 1001,
        ..with(Strategy::Direct)
    };
    assert_unaligned_direct_refused(o, 331, "direct with dest_offset 1001");
}

#[test]
fn auto_with_unaligned_offset_falls_back_to_copy_range_with_a_note() {
    // Cold and over the threshold, so auto would go direct but for the offset.
    let d = Daemon::start_with(&["--direct-threshold", "1"]);
    let client = d.client();
    let dir = tmpdir();
    let (src, data) = make_file(dir.path(), "src", 4 << 20, 332);
    assert_cold(&src, "source");
    let dst = dir.path().join("dst");
    let s = open_src(&src);
    let t = create_dst(&dst);
    let o = TransferOptions {
        offset: 1001,
        ..with(Strategy::Auto)
    };
    let c = completed(
        wait(client.submit(s.as_fd(), t.as_fd(), &o).unwrap()),
        "auto with offset 1001",
    );
    assert_eq!(
        c.strategy,
        Strategy::CopyRange,
        "strategy (note {:?})",
        c.note
    );
    assert_note_mentions(&c, "align", "auto with offset 1001");
    assert_eq!(c.bytes, (data.len() - 1001) as u64);
    assert_file_eq(&dst, &data[1001..]);
}

// ---------------------------------------------------------------------------
// Failures

#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn direct_into_a_full_file_system_fails_at_once_and_leaves_the_destination() {
    require_root("root to mount a 4 MiB tmpfs");
    let d = Daemon::start();
    let baseline = d.baseline();
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "src", 8 << 20, 340);
    let mnt = match mount(dir.path(), "mnt", "tmpfs", Some("size=4m")) {
        Ok(m) => m,
        Err(e) => panic!("cannot mount tmpfs (as root): {e}"),
    };
    {
        let dst = mnt.path().join("dst");
        let before = pattern(341, 1000);
        std::fs::write(&dst, &before).unwrap();
        let client = d.client();
        let s = open_src(&src);
        // Not truncated: the job must leave these 1000 bytes as they were.
        let t = OpenOptions::new().write(true).open(&dst).unwrap();
        let h = client
            .submit(s.as_fd(), t.as_fd(), &with(Strategy::Direct))
            .unwrap();
        drop((s, t));
        let f = failed(
            wait_within(h, Duration::from_secs(20)),
            FailureKind::NoSpace,
            "8 MiB direct into a 4 MiB tmpfs",
        );
        assert_eq!(f.os_error, Some(libc::ENOSPC), "os_error: {f:?}");
        assert_eq!(
            f.bytes, 0,
            "preallocation should fail before any byte moves: {f:?}"
        );
        assert_eq!(
            std::fs::metadata(&dst).unwrap().len(),
            1000,
            "destination size after the failed job"
        );
        assert_file_eq(&dst, &before);
    }
    d.assert_healthy(baseline, "after ENOSPC on a direct job");
    drop(mnt);
}

#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn ramfs_source_is_hot_for_auto_and_refused_by_direct() {
    // A ramfs file lives in the page cache, so auto splices it from memory
    // (the residency test comes first, and says so); explicit direct is
    // refused because ramfs has no O_DIRECT.
    require_root("root to mount ramfs");
    let d = Daemon::start_with(&["--direct-threshold", "1"]);
    let client = d.client();
    let dir = tmpdir();
    let mnt = match mount(dir.path(), "ramfs", "ramfs", None) {
        Ok(m) => m,
        Err(e) => panic!("cannot mount ramfs (as root): {e}"),
    };
    let (src, data) = make_file(mnt.path(), "src", (2 << 20) + 3, 350);

    let dst = dir.path().join("auto.dst");
    let s = open_src(&src);
    let t = create_dst(&dst);
    let c = completed(
        wait(client.submit(s.as_fd(), t.as_fd(), &opts()).unwrap()),
        "auto from ramfs",
    );
    assert_eq!(c.strategy, Strategy::Splice, "strategy (note {:?})", c.note);
    assert_note_mentions(&c, "page cache", "auto from ramfs");
    assert_eq!(c.bytes, data.len() as u64);
    assert_file_eq(&dst, &data);

    assert_direct_refused(
        &client,
        &s,
        &dir.path().join("direct.dst"),
        "direct from ramfs",
    );
    drop(s);
    drop(mnt);
}

/// Submits `src` into a new file at `dst` with the direct strategy and
/// checks it is refused at once, naming O_DIRECT, with nothing moved.
fn assert_direct_refused(client: &Client, src: &File, dst: &Path, what: &str) {
    let t = create_dst(dst);
    let f = failed(
        wait(client.submit(src, &t, &with(Strategy::Direct)).unwrap()),
        FailureKind::InvalidRequest,
        what,
    );
    assert!(
        mentions(&f.message, "O_DIRECT"),
        "{what}: the refusal should name O_DIRECT: {f:?}"
    );
    assert_eq!(f.bytes, 0, "{what}: {f:?}");
}

#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn ramfs_destination_auto_falls_back_to_splice_and_direct_is_refused() {
    require_root("root to mount ramfs");
    let d = Daemon::start_with(&["--direct-threshold", "1"]);
    let client = d.client();
    let dir = tmpdir();
    let mnt = match mount(dir.path(), "ramfs", "ramfs", None) {
        Ok(m) => m,
        Err(e) => panic!("cannot mount ramfs (as root): {e}"),
    };
    // A cold source on ext4: only the destination stands in direct's way.
    let (src, data) = make_file(dir.path(), "src", (2 << 20) + 3, 351);
    assert_cold(&src, "source");

    let dst = mnt.path().join("auto.dst");
    let s = open_src(&src);
    let t = create_dst(&dst);
    let c = completed(
        wait(client.submit(s.as_fd(), t.as_fd(), &opts()).unwrap()),
        "auto to ramfs",
    );
    assert_eq!(c.strategy, Strategy::Splice, "strategy (note {:?})", c.note);
    assert_note_mentions(&c, "O_DIRECT", "auto to ramfs");
    assert_eq!(c.bytes, data.len() as u64);
    assert_file_eq(&dst, &data);

    assert_direct_refused(
        &client,
        &s,
        &mnt.path().join("direct.dst"),
        "direct to ramfs",
    );
    drop(s);
    drop(mnt);
}

#[test]
fn direct_source_that_shrinks_ends_where_its_reads_end() {
    // Without a requested length the file's size at admission is a hint:
    // the job ends where a read returns 0, as cp's read loop would. Two
    // small buffers make the copy slow enough to truncate under it.
    let d = Daemon::start_with(&["--buffers", "2", "--buffer-size", "65536"]);
    let baseline = d.baseline();
    let client = d.client();
    let dir = tmpdir();
    let pat = BigPattern::new(360);
    let src = dir.path().join("src");
    let dst = dir.path().join("dst");
    let len = 256u64 << 20;
    pat.write_file(&src, len);
    let s = open_src(&src);
    let t = create_dst(&dst);
    let h = client
        .submit(s.as_fd(), t.as_fd(), &with(Strategy::Direct))
        .unwrap();
    drop((s, t));
    let _ = h.job_id();
    OpenOptions::new()
        .write(true)
        .open(&src)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    match wait_within(h, Duration::from_secs(60)) {
        Ok(c) => {
            // Whatever the reads found before the cut, then nothing past
            // where one returned 0: never the 256 MiB the size said.
            assert!(c.bytes >= 1 << 20 && c.bytes < len, "{} bytes", c.bytes);
            pat.assert_file(&dst, c.bytes);
        }
        // Two reads disagreed on the end (one ran before the cut, one after).
        r => {
            let f = failed(r, FailureKind::SourceShort, "source truncated mid-copy");
            assert!(f.message.contains("changed size"), "{f:?}");
        }
    }
    drop(client);
    d.assert_healthy(baseline, "after a source shrank under a direct job");
}

// ---------------------------------------------------------------------------
// Sockets, direct

#[test]
fn direct_file_to_tcp_socket() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    for (i, len) in [1usize, 4097, (8 << 20) + 17].into_iter().enumerate() {
        let what = format!("direct file -> tcp, {len} bytes");
        let (src, data) = make_file(dir.path(), &format!("src{i}"), len, 370 + i as u64);
        let (conn, reader) = tcp_to_reader();
        let s = open_src(&src);
        let h = client
            .submit(s.as_fd(), conn.as_fd(), &with(Strategy::Direct))
            .unwrap();
        let r = wait(h);
        drop(conn);
        let got = reader.join().unwrap().unwrap_or_else(|e| {
            panic!("{what}: test reader: {e} (daemon still holds the socket?)")
        });
        let c = completed(r, &what);
        assert_eq!(c.bytes, len as u64, "{what}: completion bytes");
        assert_eq!(
            c.strategy,
            Strategy::Direct,
            "{what}: strategy (note {:?})",
            c.note
        );
        assert_bytes_eq(&got, &data, &what);
    }
}

#[test]
fn direct_tcp_socket_to_file() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    for (i, len) in [1usize, 4096, 1_000_003, (3 << 20) + 5]
        .into_iter()
        .enumerate()
    {
        let what = format!("direct tcp -> file, {len} bytes");
        let data = pattern(380 + i as u64, len);
        let (mut writer, server_side) = tcp_pair();
        let dst = dir.path().join(format!("dst{i}"));
        let t = create_dst(&dst);
        let h = client
            .submit(server_side.as_fd(), t.as_fd(), &with(Strategy::Direct))
            .unwrap();
        drop((server_side, t));
        let w = {
            let data = data.clone();
            thread::spawn(move || {
                writer.write_all(&data)?;
                writer.shutdown(std::net::Shutdown::Write)
            })
        };
        let c = completed(wait(h), &what);
        w.join().unwrap().expect("test writer");
        assert_eq!(c.bytes, len as u64, "{what}: completion bytes");
        assert_eq!(
            c.strategy,
            Strategy::Direct,
            "{what}: strategy (note {:?})",
            c.note
        );
        assert_eq!(
            std::fs::metadata(&dst).unwrap().len(),
            len as u64,
            "{what}: destination size"
        );
        assert_file_eq(&dst, &data);
    }
}

// ---------------------------------------------------------------------------
// Uncached

#[test]
fn uncached_file_to_file() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    for (i, len) in [1usize, 4097, (3 << 20) + 5].into_iter().enumerate() {
        copy_with(
            &client,
            dir.path(),
            &format!("uncached-size-{len}"),
            len,
            390 + i as u64,
            Strategy::Uncached,
        );
    }
}

// ---------------------------------------------------------------------------
// Buffered

#[test]
fn buffered_file_to_file() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    // One byte, a page and one, and several buffers' worth with a tail.
    for (i, len) in [1usize, 4097, (3 << 20) + 5].into_iter().enumerate() {
        copy_with(
            &client,
            dir.path(),
            &format!("buffered-size-{len}"),
            len,
            395 + i as u64,
            Strategy::Buffered,
        );
    }
}

#[test]
fn buffered_needs_regular_files_and_appends_to_an_append_only_file() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    let (src, data) = make_file(dir.path(), "src", 70_000, 396);
    let s = open_src(&src);

    let (conn, _peer) = tcp_pair();
    let f = failed(
        wait(
            client
                .submit(s.as_fd(), conn.as_fd(), &with(Strategy::Buffered))
                .unwrap(),
        ),
        FailureKind::InvalidRequest,
        "buffered into a socket",
    );
    assert!(mentions(&f.message, "buffered"), "{f:?}");
    assert!(mentions(&f.message, "regular files"), "{f:?}");

    let (dst, before) = make_file(dir.path(), "dst", 3000, 397);
    let t = OpenOptions::new().append(true).open(&dst).unwrap();
    let c = completed(
        wait(
            client
                .submit(s.as_fd(), t.as_fd(), &with(Strategy::Buffered))
                .unwrap(),
        ),
        "buffered into an O_APPEND file",
    );
    assert_eq!(c.strategy, Strategy::Buffered);
    let mut want = before;
    want.extend_from_slice(&data);
    assert_file_eq(&dst, &want);
}

#[test]
fn auto_copies_a_small_file_through_a_buffer_and_says_why() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    for (len, want) in [
        (4096, Strategy::Buffered),
        (64 << 10, Strategy::Buffered),
        ((64 << 10) + 1, Strategy::CopyRange),
    ] {
        let (src, data) = make_file(dir.path(), &format!("src{len}"), len, 398);
        let dst = dir.path().join(format!("dst{len}"));
        let (s, t) = (open_src(&src), create_dst(&dst));
        let what = format!("auto, {len} bytes");
        let c = completed(
            wait(client.submit(s.as_fd(), t.as_fd(), &opts()).unwrap()),
            &what,
        );
        assert_eq!(c.strategy, want, "{what}: strategy (note {:?})", c.note);
        if want == Strategy::Buffered {
            assert_note_mentions(&c, "through a buffer", &what);
        }
        assert_eq!(c.bytes, data.len() as u64, "{what}: bytes");
        assert_file_eq(&dst, &data);
    }
}

// ---------------------------------------------------------------------------
// Auto

#[test]
fn auto_sends_a_cold_large_file_direct() {
    let d = Daemon::start_with(&["--direct-threshold", "1048576"]);
    let client = d.client();
    let dir = tmpdir();
    let (src, data) = make_file(dir.path(), "src", (16 << 20) + 9, 400);
    assert_cold(&src, "source");
    let dst = dir.path().join("dst");
    let s = open_src(&src);
    let t = create_dst(&dst);
    let c = completed(
        wait(client.submit(s.as_fd(), t.as_fd(), &opts()).unwrap()),
        "auto, cold 16 MiB",
    );
    eprintln!("auto, cold: {:?}, note {:?}", c.strategy, c.note);
    assert_eq!(c.strategy, Strategy::Direct, "strategy (note {:?})", c.note);
    assert!(
        c.note.as_deref().is_some_and(|n| !n.trim().is_empty()),
        "auto chose direct without a note saying why"
    );
    assert_eq!(c.bytes, data.len() as u64);
    assert_file_eq(&dst, &data);
}

#[test]
fn auto_copies_a_hot_large_file_in_the_kernel() {
    let d = Daemon::start_with(&["--direct-threshold", "1048576"]);
    let client = d.client();
    let dir = tmpdir();
    let (src, data) = make_file(dir.path(), "src", (16 << 20) + 9, 401);
    let r = make_hot(&src);
    assert!(
        r.fraction() > 0.9,
        "source not cached after reading it: {r}"
    );
    let dst = dir.path().join("dst");
    let s = open_src(&src);
    let t = create_dst(&dst);
    let c = completed(
        wait(client.submit(s.as_fd(), t.as_fd(), &opts()).unwrap()),
        "auto, hot 16 MiB",
    );
    eprintln!("auto, hot: {:?}, note {:?}", c.strategy, c.note);
    assert_eq!(
        c.strategy,
        Strategy::CopyRange,
        "strategy (note {:?})",
        c.note
    );
    assert_note_mentions(&c, "page cache", "auto, hot 16 MiB");
    assert_eq!(c.bytes, data.len() as u64);
    assert_file_eq(&dst, &data);
}

// ---------------------------------------------------------------------------
// Page-cache hygiene

#[test]
fn residency_measurement_sees_cold_and_hot_files() {
    // The instrument the hygiene and auto tests rely on, without a daemon:
    // cachestat and mincore agree, and a file goes cold and hot on demand.
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "src", (8 << 20) + 5, 405);
    assert_cold(&src, "freshly written file");
    let cold = residency_by_mincore(&src);
    assert!(cold.fraction() <= 0.01, "mincore disagrees: {cold}");
    let hot = make_hot(&src);
    let hot_m = residency_by_mincore(&src);
    eprintln!("cold {cold}; hot {hot} / {hot_m}");
    assert!(hot.fraction() > 0.9, "read the whole file, yet {hot}");
    assert!(hot_m.fraction() > 0.9, "read the whole file, yet {hot_m}");
}

#[test]
fn direct_copy_leaves_the_page_cache_alone() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    let len = 256u64 << 20;
    let pat = BigPattern::new(410);
    let src = dir.path().join("src");
    pat.write_file(&src, len);
    let copy = |dst: &Path, strategy: Strategy| -> Completion {
        let s = open_src(&src);
        let t = create_dst(dst);
        let h = client
            .submit(s.as_fd(), t.as_fd(), &with(strategy))
            .unwrap();
        drop((s, t));
        let c = completed(
            wait_within(h, Duration::from_secs(120)),
            &format!("cold 256 MiB, {strategy}"),
        );
        assert_eq!(c.bytes, len, "{strategy}: completion bytes");
        assert_eq!(
            c.strategy, strategy,
            "{strategy}: strategy (note {:?})",
            c.note
        );
        c
    };

    assert_cold(&src, "source before the direct copy");
    let direct_dst = dir.path().join("direct.dst");
    copy(&direct_dst, Strategy::Direct);
    let direct_src = residency(&src);
    let direct_out = residency(&direct_dst);

    assert_cold(&src, "source before the splice copy");
    let splice_dst = dir.path().join("splice.dst");
    copy(&splice_dst, Strategy::Splice);
    let splice_src = residency(&src);
    let splice_out = residency(&splice_dst);

    eprintln!("cold 256 MiB copy, resident afterwards:");
    eprintln!("  direct: source {direct_src}, destination {direct_out}");
    eprintln!("  splice: source {splice_src}, destination {splice_out}");
    assert!(
        direct_src.fraction() < 0.02,
        "direct copy left {direct_src} of the source in the page cache"
    );
    assert!(
        direct_out.fraction() < 0.02,
        "direct copy left {direct_out} of the destination in the page cache"
    );
    assert!(
        splice_out.fraction() > 0.5,
        "the contrast failed: a splice copy left only {splice_out} of its \
         destination in the page cache"
    );
    pat.assert_file(&direct_dst, len);
    pat.assert_file(&splice_dst, len);
}

#[test]
fn an_append_only_destination_goes_uncached_under_auto_and_splice_refuses_it() {
    // splice(2) refuses files open with O_APPEND; auto takes them with plain
    // buffered writes at the end (uncached), and says so.
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    let (src, data) = make_file(dir.path(), "src", (3 << 20) + 11, 360);
    let (dst, before) = make_file(dir.path(), "dst", 5000, 361);
    let s = open_src(&src);
    let t = OpenOptions::new().append(true).open(&dst).unwrap();
    let c = completed(
        wait(client.submit(s.as_fd(), t.as_fd(), &opts()).unwrap()),
        "auto into an O_APPEND file",
    );
    assert_eq!(
        c.strategy,
        Strategy::Uncached,
        "strategy (note {:?})",
        c.note
    );
    assert_note_mentions(&c, "O_APPEND", "auto into an O_APPEND file");
    let mut want = before;
    want.extend_from_slice(&data);
    assert_file_eq(&dst, &want);

    let f = failed(
        wait(
            client
                .submit(s.as_fd(), t.as_fd(), &with(Strategy::Splice))
                .unwrap(),
        ),
        FailureKind::InvalidRequest,
        "splice into an O_APPEND file",
    );
    assert!(mentions(&f.message, "O_APPEND"), "{f:?}");
}
