//! Host to host, the receiving side: a daemon with `listen_tcp` takes files
//! that another daemon pushes into its exports. The sender here is the test
//! itself, speaking the peer wire (`ringxfer_ipc::proto::peer`) over a
//! plain `TcpStream` on 127.0.0.1, so that it can also misbehave: stop
//! short, lie about the CRC, vanish mid-file, name paths that lead out.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ringxfer_ipc::proto::peer::{
    encode, Checksum, FileMeta, PeerLimits, PeerMessage, PeerReader, Piece, Put, RemotePath,
    Timestamp,
};
use ringxfer_ipc::proto::FailureKind;

use crate::support::*;

/// A daemon taking files into `export` (as the export "inbox", written as
/// the test's own user) on a free loopback port.
fn receiver(export: &Path) -> (Daemon, SocketAddr) {
    // SAFETY: geteuid has no arguments and cannot fail.
    receiver_as(export, unsafe { libc::geteuid() })
}

/// As `receiver`, the export written as `uid`.
fn receiver_as(export: &Path, uid: u32) -> (Daemon, SocketAddr) {
    let conf_dir = tmpdir();
    let conf = conf_dir.path().join("ringxferd.toml");
    let text = format!(
        "listen_tcp = \"127.0.0.1:0\"\ninsecure_plaintext = true\n\n[[export]]\nname = \"inbox\"\n\
         path = \"{}\"\nuser = \"{uid}\"\n",
        export.display()
    );
    std::fs::write(&conf, text).expect("write config");
    let d = Daemon::start_with(&["--config", conf.to_str().expect("utf-8")]);
    let mut address = None;
    poll_until(Duration::from_secs(10), || {
        address = d.log().lines().find_map(|l| {
            let line = &l[l.find("listening for other daemons")?..];
            let at = line.find("address=")? + 8;
            line[at..].split_whitespace().next()?.parse().ok()
        });
        address.is_some()
    });
    let address =
        address.unwrap_or_else(|| panic!("no listening address in the log:\n{}", d.log()));
    (d, address)
}

/// The test's side of a connection: the peer wire, by hand.
struct Sender {
    stream: TcpStream,
    reader: PeerReader,
    got: Vec<u8>,
    limits: PeerLimits,
}

impl Sender {
    /// Connects and says Hello; checks the Welcome.
    fn connect(address: SocketAddr) -> Sender {
        let stream = TcpStream::connect(address).expect("connect to the receiver");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("read timeout");
        let mut s = Sender {
            stream,
            reader: PeerReader::default(),
            got: Vec::new(),
            limits: PeerLimits::default(),
        };
        s.send(&PeerMessage::Hello { version: 1 });
        match s.recv() {
            Some(PeerMessage::Welcome { version: 1, limits }) => s.limits = limits,
            other => panic!("expected Welcome, got {other:?}"),
        }
        s
    }

    fn send(&mut self, m: &PeerMessage) {
        let mut bytes = Vec::new();
        encode(m, &mut bytes, self.limits.max_frame).expect("encode");
        self.stream.write_all(&bytes).expect("send");
    }

    /// Data frames of at most `piece` bytes each, from `offset`.
    fn send_data(&mut self, xfer: u64, offset: u64, data: &[u8], piece: usize) {
        for (i, chunk) in data.chunks(piece).enumerate() {
            let at = offset + (i * piece) as u64;
            let len = chunk.len() as u32;
            self.send(&PeerMessage::Data {
                xfer,
                offset: at,
                len,
            });
            self.stream.write_all(chunk).expect("send data");
        }
    }

    /// The next message, or None once the receiver closed the connection.
    fn recv(&mut self) -> Option<PeerMessage> {
        loop {
            if let Some((piece, used)) = self
                .reader
                .next(&self.got, &self.limits)
                .expect("a valid stream")
            {
                let Piece::Message(m) = piece else {
                    panic!("the receiver sent data")
                };
                self.got.drain(..used);
                return Some(m);
            }
            let mut buf = [0u8; 4096];
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.got.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Offers `path` of `size` bytes with `mode` and `mtime`.
    fn put(&mut self, xfer: u64, path: &str, size: u64, mode: u32, mtime: i64) -> PeerMessage {
        let when = Timestamp {
            secs: mtime,
            nanos: 250_000_000,
        };
        let put = Put {
            xfer,
            path: RemotePath::new(path).expect("a valid remote path"),
            meta: FileMeta {
                size,
                mode,
                atime: when,
                mtime: when,
            },
            checksum: Checksum::Crc32c,
            resume: false,
            fsync: true,
        };
        self.send(&PeerMessage::Put(put));
        self.recv().expect("an answer to Put")
    }

    /// Pushes all of `data` to `path` and returns the answer to End.
    fn push(&mut self, xfer: u64, path: &str, data: &[u8], mode: u32) -> PeerMessage {
        let ready = self.put(xfer, path, data.len() as u64, mode, 1_700_000_000);
        assert_eq!(
            ready,
            PeerMessage::Ready {
                xfer,
                offset: 0,
                meta: None
            },
            "{path}"
        );
        self.send_data(xfer, 0, data, 700 << 10);
        let crc32c = crc32c::crc32c(data);
        self.send(&PeerMessage::End {
            xfer,
            size: data.len() as u64,
            crc32c,
        });
        self.recv().expect("an answer to End")
    }
}

/// Names in `dir` that are hidden part files.
fn parts_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".ringxfer-part"))
        .collect()
}

fn failed_kind(answer: &PeerMessage) -> FailureKind {
    match answer {
        PeerMessage::Failed { kind, .. } | PeerMessage::Refused { kind, .. } => *kind,
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn message_of(answer: &PeerMessage) -> &str {
    match answer {
        PeerMessage::Failed { message, .. } | PeerMessage::Refused { message, .. } => message,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn a_pushed_file_lands_whole_with_its_mode_and_times() {
    let export = tmpdir();
    std::fs::create_dir(export.path().join("sub")).expect("mkdir");
    let (d, address) = receiver(export.path());
    let mut s = Sender::connect(address);
    let data = pattern(7, (3 << 20) + 12_345);
    let done = s.push(1, "inbox/sub/file.bin", &data, 0o640);
    assert_eq!(
        done,
        PeerMessage::Done {
            xfer: 1,
            crc32c: crc32c::crc32c(&data)
        },
        "{}",
        d.log()
    );
    let landed = export.path().join("sub/file.bin");
    assert_file_eq(&landed, &data);
    let meta = std::fs::metadata(&landed).expect("stat");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (1_700_000_000, 250_000_000)
    );
    // A second file on the same connection, empty, at the export's top.
    let done = s.push(2, "inbox/empty", b"", 0o600);
    assert_eq!(done, PeerMessage::Done { xfer: 2, crc32c: 0 });
    assert_file_eq(&export.path().join("empty"), b"");
    assert!(parts_in(export.path()).is_empty());
    assert!(parts_in(&export.path().join("sub")).is_empty());
}

#[test]
fn a_short_corrupt_or_abandoned_file_never_takes_the_name() {
    let export = tmpdir();
    let keep = export.path().join("keep.txt");
    std::fs::write(&keep, b"old").expect("write");
    let (d, address) = receiver(export.path());
    let mut s = Sender::connect(address);
    let data = pattern(9, 2 << 20);

    // Ends early: End says the whole size, half came.
    let ready = s.put(1, "inbox/keep.txt", data.len() as u64, 0o644, 0);
    assert!(matches!(ready, PeerMessage::Ready { .. }), "{ready:?}");
    s.send_data(1, 0, &data[..1 << 20], 256 << 10);
    s.send(&PeerMessage::End {
        xfer: 1,
        size: data.len() as u64,
        crc32c: crc32c::crc32c(&data),
    });
    let answer = s.recv().expect("an answer");
    assert_eq!(failed_kind(&answer), FailureKind::SourceShort, "{answer:?}");
    assert_file_eq(&keep, b"old");
    assert!(parts_in(export.path()).is_empty(), "the part is removed");

    // A CRC that does not match the bytes.
    let mut s = Sender::connect(address);
    let ready = s.put(2, "inbox/keep.txt", data.len() as u64, 0o644, 0);
    assert!(matches!(ready, PeerMessage::Ready { .. }), "{ready:?}");
    s.send_data(2, 0, &data, 1 << 20);
    s.send(&PeerMessage::End {
        xfer: 2,
        size: data.len() as u64,
        crc32c: 0x1234_5678,
    });
    let answer = s.recv().expect("an answer");
    assert_eq!(failed_kind(&answer), FailureKind::Mismatch, "{answer:?}");
    assert!(message_of(&answer).contains("inbox/keep.txt"), "{answer:?}");
    assert_file_eq(&keep, b"old");

    // The sender vanishes mid-file.
    let mut s = Sender::connect(address);
    let ready = s.put(3, "inbox/keep.txt", data.len() as u64, 0o644, 0);
    assert!(matches!(ready, PeerMessage::Ready { .. }), "{ready:?}");
    s.send_data(3, 0, &data[..1 << 20], 1 << 20);
    drop(s);
    let gone = poll_until(Duration::from_secs(10), || {
        d.log().contains("receiving a file failed") && parts_in(export.path()).is_empty()
    });
    assert!(
        gone,
        "the part file stays, or no failure is logged:\n{}",
        d.log()
    );
    assert_file_eq(&keep, b"old");

    // The name is free again: a whole file takes it.
    let mut s = Sender::connect(address);
    let done = s.push(4, "inbox/keep.txt", &data, 0o644);
    assert!(matches!(done, PeerMessage::Done { .. }), "{done:?}");
    assert_file_eq(&keep, &data);
}

#[test]
fn names_cannot_lead_out_of_the_export() {
    let export = tmpdir();
    let outside = tmpdir();
    let target = outside.path().join("target");
    std::fs::write(&target, b"outside").expect("write");
    std::os::unix::fs::symlink(outside.path(), export.path().join("out")).expect("symlink");
    std::os::unix::fs::symlink(&target, export.path().join("link")).expect("symlink");
    let (d, address) = receiver(export.path());
    let mut s = Sender::connect(address);

    let answer = s.put(1, "inbox/out/x", 3, 0o644, 0);
    assert_eq!(
        failed_kind(&answer),
        FailureKind::PermissionDenied,
        "{answer:?}"
    );
    assert!(
        message_of(&answer).contains("outside the export"),
        "{answer:?}"
    );
    let answer = s.put(2, "elsewhere/x", 3, 0o644, 0);
    assert!(
        message_of(&answer).contains("no export named"),
        "{answer:?}"
    );
    let answer = s.put(3, "inbox", 3, 0o644, 0);
    assert!(
        message_of(&answer).contains("names the export itself"),
        "{answer:?}"
    );
    assert_eq!(
        std::fs::read_dir(outside.path()).expect("read_dir").count(),
        1
    );

    // A symlink as the file's own name is replaced, never followed.
    let done = s.push(4, "inbox/link", b"new", 0o644);
    assert!(matches!(done, PeerMessage::Done { .. }), "{done:?}");
    assert_file_eq(&target, b"outside");
    let link = std::fs::symlink_metadata(export.path().join("link")).expect("lstat");
    assert!(link.is_file(), "the link became the file");

    // "../x" cannot be encoded; sent by hand it ends the connection.
    let mut raw = Vec::new();
    let put = Put {
        xfer: 5,
        path: RemotePath::new("inbox/zz/x").expect("valid"),
        meta: FileMeta {
            size: 1,
            mode: 0o644,
            atime: Timestamp::default(),
            mtime: Timestamp::default(),
        },
        checksum: Checksum::Crc32c,
        resume: false,
        fsync: false,
    };
    encode(&PeerMessage::Put(put), &mut raw, 1 << 16).expect("encode");
    let at = raw
        .windows(2)
        .position(|w| w == b"zz")
        .expect("the name in the frame");
    raw[at..at + 2].copy_from_slice(b"..");
    s.stream.write_all(&raw).expect("send");
    assert_eq!(s.recv(), None, "the connection ends");
    assert!(
        poll_until(Duration::from_secs(10), || d
            .log()
            .contains("protocol error")),
        "{}",
        d.log()
    );
    assert_eq!(
        std::fs::read_dir(outside.path()).expect("read_dir").count(),
        1
    );
}

#[test]
fn listen_tcp_is_plaintext_on_loopback_only_for_now() {
    let dir = tmpdir();
    let sock = dir.path().join("s.sock");
    let run = |args: &[&str]| {
        let mut cmd = daemon_command(&sock, args);
        cmd.env_remove("RINGXFER_LOG");
        run_timeout(cmd, Duration::from_secs(30))
    };
    let out = run(&["--listen-tcp", "127.0.0.1:0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("listen_tcp = 127.0.0.1:0 (flag --listen-tcp)")
            && err.contains("insecure_plaintext"),
        "{err}"
    );
    let out = run(&["--listen-tcp", "0.0.0.0:0", "--insecure-plaintext"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("is not a loopback address"), "{err}");
    let out = run(&["--listen-tcp", "localhost:1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is not an IP address and port"), "{err}");
}

#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn files_are_written_with_the_rights_of_the_exports_user() {
    use std::os::unix::fs::chown;
    require_root("root to give the export to user nobody");
    const NOBODY: u32 = 65534;
    let base = world_tmpdir();
    let export = base.path().join("export");
    std::fs::create_dir(&export).expect("mkdir");
    std::fs::create_dir(export.join("rootonly")).expect("mkdir");
    chown(&export, Some(NOBODY), Some(NOBODY)).expect("chown");
    std::fs::set_permissions(&export, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let (d, address) = receiver_as(&export, NOBODY);
    let mut s = Sender::connect(address);

    let done = s.push(1, "inbox/mine", b"data", 0o644);
    assert!(
        matches!(done, PeerMessage::Done { .. }),
        "{done:?}\n{}",
        d.log()
    );
    let meta = std::fs::metadata(export.join("mine")).expect("stat");
    assert_eq!(
        (meta.uid(), meta.gid()),
        (NOBODY, NOBODY),
        "owned by the export's user"
    );

    // Root's directory inside the export is closed to nobody, as it would
    // be to nobody's own write.
    let answer = s.put(2, "inbox/rootonly/x", 4, 0o644, 0);
    assert_eq!(
        failed_kind(&answer),
        FailureKind::PermissionDenied,
        "{answer:?}"
    );
    assert!(
        message_of(&answer).contains("inbox/rootonly/x"),
        "{answer:?}"
    );
    assert_eq!(
        std::fs::read_dir(export.join("rootonly"))
            .expect("read_dir")
            .count(),
        0
    );
}
