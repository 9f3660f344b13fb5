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
    Timestamp, PEER_PROTOCOL_VERSION,
};
use ringxfer_ipc::proto::FailureKind;

use crate::support::*;

/// A daemon taking files into `export` (as the export "inbox", written as
/// the test's own user) on a free loopback port.
pub(crate) fn receiver(export: &Path) -> (Daemon, SocketAddr) {
    // SAFETY: geteuid has no arguments and cannot fail.
    receiver_as(export, unsafe { libc::geteuid() })
}

/// As `receiver`, the export written as `uid`.
fn receiver_as(export: &Path, uid: u32) -> (Daemon, SocketAddr) {
    receiver_with(export, uid, "")
}

/// As `receiver_as`, with more settings (`settings`, TOML lines).
pub(crate) fn receiver_with(export: &Path, uid: u32, settings: &str) -> (Daemon, SocketAddr) {
    let conf_dir = tmpdir();
    let conf = conf_dir.path().join("ringxferd.toml");
    let text = format!(
        "listen_tcp = \"127.0.0.1:0\"\ninsecure_plaintext = true\n{settings}\n[[export]]\nname = \"inbox\"\n\
         path = \"{}\"\nuser = \"{uid}\"\n",
        export.display()
    );
    std::fs::write(&conf, text).expect("write config");
    listening(Daemon::start_with(&[
        "--config",
        conf.to_str().expect("utf-8"),
    ]))
}

/// `d` and the TCP address it says it listens on for other daemons.
fn listening(d: Daemon) -> (Daemon, SocketAddr) {
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
pub(crate) struct Sender {
    pub(crate) stream: TcpStream,
    reader: PeerReader,
    got: Vec<u8>,
    limits: PeerLimits,
}

impl Sender {
    /// The peer wire by hand on `stream`, as it is.
    pub(crate) fn from_stream(stream: TcpStream) -> Sender {
        Sender {
            stream,
            reader: PeerReader::default(),
            got: Vec::new(),
            limits: PeerLimits::default(),
        }
    }

    /// Connects and says Hello; checks the Welcome.
    pub(crate) fn connect(address: SocketAddr) -> Sender {
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
        s.send(&PeerMessage::Hello {
            version: PEER_PROTOCOL_VERSION,
        });
        match s.recv() {
            Some(PeerMessage::Welcome {
                version: PEER_PROTOCOL_VERSION,
                limits,
            }) => s.limits = limits,
            other => panic!("expected Welcome, got {other:?}"),
        }
        s
    }

    pub(crate) fn send(&mut self, m: &PeerMessage) {
        let mut bytes = Vec::new();
        encode(m, &mut bytes, self.limits.max_frame).expect("encode");
        self.stream.write_all(&bytes).expect("send");
    }

    /// Data frames of at most `piece` bytes each, from `offset`.
    pub(crate) fn send_data(&mut self, xfer: u64, offset: u64, data: &[u8], piece: usize) {
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
    pub(crate) fn recv(&mut self) -> Option<PeerMessage> {
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

    /// Pulls `path`: its meta, bytes and the CRC `End` gave, or the answer
    /// that refused or failed it. The daemon is told `Done`.
    // The answer that refused the pull is what the test looks at: a test
    // helper, where its size costs nothing.
    #[allow(clippy::result_large_err)]
    pub(crate) fn pull(
        &mut self,
        xfer: u64,
        path: &str,
    ) -> Result<(FileMeta, Vec<u8>, u32), PeerMessage> {
        let path = RemotePath::new(path).expect("a valid remote path");
        self.send(&PeerMessage::Get {
            xfer,
            path,
            resume: false,
        });
        let meta = match self.recv() {
            Some(PeerMessage::Ready {
                meta: Some(meta),
                offset: 0,
                ..
            }) => meta,
            other => return Err(other.unwrap_or(PeerMessage::Bye)),
        };
        let mut bytes = Vec::new();
        loop {
            let next = self
                .reader
                .next(&self.got, &self.limits)
                .expect("a valid stream");
            let Some((piece, used)) = next else {
                let mut buf = [0u8; 64 << 10];
                match self.stream.read(&mut buf) {
                    Ok(0) | Err(_) => return Err(PeerMessage::Bye),
                    Ok(n) => self.got.extend_from_slice(&buf[..n]),
                }
                continue;
            };
            let end = match piece {
                Piece::Data {
                    offset, bytes: b, ..
                } => {
                    assert_eq!(offset as usize, bytes.len(), "data in order");
                    bytes.extend_from_slice(b);
                    None
                }
                Piece::Message(PeerMessage::End { size, crc32c, .. }) => Some((size, crc32c)),
                Piece::Message(other) => return Err(other),
            };
            self.got.drain(..used);
            if let Some((size, crc)) = end {
                assert_eq!(size, bytes.len() as u64);
                self.send(&PeerMessage::Done { xfer, crc32c: crc });
                return Ok((meta, bytes, crc));
            }
        }
    }

    /// Offers `path` of `size` bytes with `mode` and `mtime`.
    pub(crate) fn put(
        &mut self,
        xfer: u64,
        path: &str,
        size: u64,
        mode: u32,
        mtime: i64,
    ) -> PeerMessage {
        let when = Timestamp {
            secs: mtime,
            nanos: 250_000_000,
        };
        self.send(&PeerMessage::Put(put_of(xfer, path, size, mode, when)));
        self.recv().expect("an answer to Put")
    }

    /// Pushes all of `data` to `path` and returns the answer to End.
    pub(crate) fn push(&mut self, xfer: u64, path: &str, data: &[u8], mode: u32) -> PeerMessage {
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

/// A `Put` of file `path`, `size` bytes with `mode`, modified `when`,
/// to be fsynced.
pub(crate) fn put_of(xfer: u64, path: &str, size: u64, mode: u32, when: Timestamp) -> Put {
    Put {
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
        mkdir: false,
        stripe: None,
        directory: false,
    }
}

/// Names in `dir` that are hidden part files.
pub(crate) fn parts_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".ringxfer-part"))
        .collect()
}

pub(crate) fn failed_kind(answer: &PeerMessage) -> FailureKind {
    match answer {
        PeerMessage::Failed { kind, .. } | PeerMessage::Refused { kind, .. } => *kind,
        other => panic!("expected a failure, got {other:?}"),
    }
}

pub(crate) fn message_of(answer: &PeerMessage) -> &str {
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

    // The sender cancels mid-file: the part goes.
    let mut s = Sender::connect(address);
    let ready = s.put(3, "inbox/keep.txt", data.len() as u64, 0o644, 0);
    assert!(matches!(ready, PeerMessage::Ready { .. }), "{ready:?}");
    s.send_data(3, 0, &data[..1 << 20], 1 << 20);
    s.send(&PeerMessage::Cancel { xfer: 3 });
    let answer = s.recv().expect("an answer");
    assert_eq!(failed_kind(&answer), FailureKind::Cancelled, "{answer:?}");
    assert!(parts_in(export.path()).is_empty(), "the part is removed");
    assert_file_eq(&keep, b"old");

    // The sender vanishes mid-file: the part is kept, for a resume, with
    // every whole buffer that arrived.
    let mut s = Sender::connect(address);
    let ready = s.put(4, "inbox/keep.txt", data.len() as u64, 0o644, 0);
    assert!(matches!(ready, PeerMessage::Ready { .. }), "{ready:?}");
    s.send_data(4, 0, &data[..(1 << 20) + 5], 1 << 20);
    drop(s);
    let kept = poll_until(Duration::from_secs(10), || {
        d.log().contains("the part is kept for a resume")
    });
    assert!(kept, "no failure is logged:\n{}", d.log());
    let part = parts_in(export.path()).pop().expect("the part is kept");
    assert_file_eq(&part, &data[..1 << 20]);
    assert_file_eq(&keep, b"old");

    // The name is free again: a whole file takes it.
    let mut s = Sender::connect(address);
    let done = s.push(5, "inbox/keep.txt", &data, 0o644);
    assert!(matches!(done, PeerMessage::Done { .. }), "{done:?}");
    assert_file_eq(&keep, &data);
    assert!(parts_in(export.path()).is_empty());
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
        mkdir: false,
        stripe: None,
        directory: false,
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
fn listen_tcp_needs_tls_with_pinned_peers_or_plaintext_on_loopback() {
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
    let (keys, _) = keys();
    let cert = keys.path().join("cert.pem");
    let key = keys.path().join("key.pem");
    let (cert, key) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
    let out = run(&[
        "--listen-tcp",
        "127.0.0.1:0",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no [[peer]] is pinned"), "{err}");
    let out = run(&["--listen-tcp", "127.0.0.1:0", "--tls-cert", cert]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tls_cert and tls_key go together"), "{err}");
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

/// Writes `bytes` as `name` in `d`'s directory and pushes it to `dst`.
fn push_bytes(d: &Daemon, name: &str, bytes: &[u8], dst: &str) -> std::process::Output {
    let src = d.dir().join(name);
    std::fs::write(&src, bytes).expect("write");
    push_cli(d, &[], &src, dst)
}

/// `ringxfer --json copy ARGS... SRC DST` through daemon `d`.
pub(crate) fn push_cli(d: &Daemon, args: &[&str], src: &Path, dst: &str) -> std::process::Output {
    let mut c = crate::cli_common::cli(&d.socket);
    c.args(["--json", "copy"]).args(args).arg(src).arg(dst);
    crate::cli_common::run(c)
}

#[test]
fn the_cli_pushes_a_file_to_another_daemon_whole_with_its_mode_and_times() {
    let export = tmpdir();
    std::fs::create_dir(export.path().join("dir")).expect("mkdir");
    let (receiving, address) = receiver(export.path());
    let sending = Daemon::start();
    let data = pattern(11, (5 << 20) + 777);
    let src = sending.dir().join("report.bin");
    std::fs::write(&src, &data).expect("write");
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let when = std::time::UNIX_EPOCH + Duration::new(1_600_000_000, 123_000_000);
    std::fs::File::options()
        .write(true)
        .open(&src)
        .expect("open")
        .set_modified(when)
        .expect("mtime");

    // Into the export: the file keeps its name.
    let out = push_cli(&sending, &[], &src, &format!("{address}:inbox"));
    assert!(
        out.status.success(),
        "{}\n{}",
        crate::cli_common::describe(&out),
        receiving.log()
    );
    let report = crate::cli_common::json_lines(&out).pop().expect("a report");
    assert_eq!(report["strategy"], "peer", "{report}");
    assert!(
        report["note"]
            .as_str()
            .unwrap_or_default()
            .starts_with("plaintext"),
        "{report}"
    );
    assert_eq!(report["bytes"], data.len() as u64);
    let crc = u64::from(crc32c::crc32c(&data));
    assert_eq!(
        (
            report["checksums"]["source"].as_u64(),
            report["checksums"]["destination"].as_u64()
        ),
        (Some(crc), Some(crc))
    );
    let landed = export.path().join("report.bin");
    assert_file_eq(&landed, &data);
    let meta = std::fs::metadata(&landed).expect("stat");
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (1_600_000_000, 123_000_000)
    );

    // Under another name in a directory, replacing what was there.
    std::fs::write(export.path().join("dir/renamed.bin"), b"old").expect("write");
    let out = push_cli(
        &sending,
        &["--fsync"],
        &src,
        &format!("{address}:inbox/dir/renamed.bin"),
    );
    assert!(
        out.status.success(),
        "{}",
        crate::cli_common::describe(&out)
    );
    assert_eq!(
        crate::cli_common::json_lines(&out).pop().expect("a report")["synced"],
        true
    );
    assert_file_eq(&export.path().join("dir/renamed.bin"), &data);
    assert!(parts_in(&export.path().join("dir")).is_empty());
}

#[test]
fn a_push_the_other_daemon_refuses_fails_in_the_users_terms() {
    let export = tmpdir();
    let (_receiving, address) = receiver(export.path());
    let sending = Daemon::start();
    let src = sending.dir().join("a.txt");
    std::fs::write(&src, b"hello").expect("write");
    let cases = [
        (format!("{address}:nope/a.txt"), "no export named \"nope\""),
        (
            format!("{address}:inbox/missing/a.txt"),
            "cannot open the directory missing",
        ),
    ];
    for (dst, says) in cases {
        let out = push_cli(&sending, &[], &src, &dst);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{dst}: {}",
            crate::cli_common::describe(&out)
        );
        let err = crate::cli_common::stderr(&out);
        assert!(err.contains(&dst) && err.contains(says), "{dst}: {err}");
    }
    let out = push_cli(&sending, &[], &src, &format!("{address}:inbox/../a.txt"));
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        crate::cli_common::describe(&out)
    );
    assert!(crate::cli_common::stderr(&out).contains("would leave the export"));
    assert_eq!(
        std::fs::read_dir(export.path()).expect("read_dir").count(),
        0,
        "nothing landed"
    );
}

/// A push at 4 MiB/s through `d` (with `args`), once its part in `export`
/// holds at least `bytes`.
pub(crate) fn push_until(
    d: &Daemon,
    args: &[&str],
    src: &Path,
    dst: &str,
    export: &Path,
    bytes: u64,
) -> std::process::Child {
    let mut c = crate::cli_common::cli(&d.socket);
    c.args(["--json", "copy", "--rate-limit", "4MiB"])
        .args(args)
        .arg(src)
        .arg(dst);
    let child = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the CLI");
    let grown = poll_until(Duration::from_secs(20), || {
        parts_in(export)
            .iter()
            .any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() >= bytes))
    });
    assert!(grown, "no part of {bytes} bytes appeared");
    child
}

/// The report of a `--json` push that succeeded.
pub(crate) fn pushed(out: &std::process::Output, receiving: &Daemon) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}\n{}",
        crate::cli_common::describe(out),
        receiving.log()
    );
    crate::cli_common::json_lines(out).pop().expect("a report")
}

/// Where the note of a resumed push says it started.
pub(crate) fn resumed_at(report: &serde_json::Value) -> Option<u64> {
    let note = report["note"].as_str()?;
    let at = note.find("resumed: the first ")? + "resumed: the first ".len();
    note[at..].split(' ').next()?.parse().ok()
}

#[test]
fn a_push_cut_off_midway_keeps_the_old_file_and_resumes_where_the_part_matches() {
    const MIB: u64 = 1 << 20;
    let export = tmpdir();
    let keep = export.path().join("big.bin");
    std::fs::write(&keep, b"old").expect("write");
    let (receiving, address) = receiver(export.path());
    let mut sending = Daemon::start();
    let data = pattern(3, 24 << 20);
    let sources = tmpdir();
    let src = sources.path().join("big.bin");
    std::fs::write(&src, &data).expect("write");
    let dst = format!("{address}:inbox");

    // The sending daemon is killed mid-file: the name keeps the old file,
    // and the part what arrived.
    let child = push_until(&sending, &[], &src, &dst, export.path(), 6 * MIB);
    sending.signal(libc::SIGKILL);
    let out = child.wait_with_output().expect("wait");
    assert!(!out.status.success());
    let kept = poll_until(Duration::from_secs(10), || {
        receiving.log().contains("the part is kept for a resume")
    });
    assert!(kept, "{}", receiving.log());
    assert_file_eq(&keep, b"old");
    let part = parts_in(export.path()).pop().expect("the part is kept");
    assert!(std::fs::metadata(&part).expect("stat").len() >= 6 * MIB);

    // A byte of its third block is damaged: the resume starts there, and
    // the file that lands is the source's.
    let mut bytes = std::fs::read(&part).expect("read the part");
    bytes[(2 * MIB + 100) as usize] ^= 0xff;
    std::fs::write(&part, &bytes).expect("damage the part");
    sending = Daemon::start();
    let out = push_cli(&sending, &["--resume"], &src, &dst);
    let report = pushed(&out, &receiving);
    assert_eq!(resumed_at(&report), Some(2 * MIB), "{report}");
    assert_eq!(report["bytes"], data.len() as u64);
    assert_file_eq(&keep, &data);
    assert!(parts_in(export.path()).is_empty());

    // The receiving daemon is killed mid-file, then started again on the
    // same export: the resume goes on from the part it left.
    std::fs::write(&keep, b"old").expect("write");
    let child = push_until(&sending, &[], &src, &dst, export.path(), 6 * MIB);
    receiving.signal(libc::SIGKILL);
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("the other daemon"), "{err}");
    assert_file_eq(&keep, b"old");
    let (receiving, address) = receiver(export.path());
    let dst = format!("{address}:inbox");
    let out = push_cli(&sending, &["--resume"], &src, &dst);
    let report = pushed(&out, &receiving);
    let from = resumed_at(&report).unwrap_or(0);
    assert!(from >= 4 * MIB && from.is_multiple_of(MIB), "{report}");
    assert_file_eq(&keep, &data);
    assert!(parts_in(export.path()).is_empty());

    // Without a part, --resume is a plain push; and a local copy refuses it.
    std::fs::remove_file(&keep).expect("rm");
    let report = pushed(&push_cli(&sending, &["--resume"], &src, &dst), &receiving);
    assert_eq!(resumed_at(&report), None, "{report}");
    assert_file_eq(&keep, &data);
    let out = push_cli(
        &sending,
        &["--resume"],
        &src,
        &sending.dir().join("local").to_string_lossy(),
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        crate::cli_common::describe(&out)
    );
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("--resume continues a copy to or from another host"));
}

#[test]
fn a_connection_that_says_nothing_is_closed_in_time() {
    let export = tmpdir();
    // SAFETY: geteuid has no arguments and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let settings = "handshake_timeout = \"1s\"\nframe_timeout = \"2s\"\n";
    let (d, address) = receiver_with(export.path(), uid, settings);
    let started = std::time::Instant::now();
    let mut silent = TcpStream::connect(address).expect("connect");
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    assert_eq!(silent.read(&mut byte).ok(), Some(0), "closed, not answered");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(d.log().contains("no Hello within 1s"), "{}", d.log());

    // A sender that stops halfway through a file is cut off too; a part of
    // less than a block (all a resume can use) goes.
    let mut s = Sender::connect(address);
    let ready = s.put(1, "inbox/stalled.bin", 1 << 20, 0o644, 0);
    assert!(matches!(ready, PeerMessage::Ready { .. }), "{ready:?}");
    s.send_data(1, 0, &pattern(1, 1000), 1000);
    assert_eq!(s.recv(), None, "the connection ends");
    assert!(d.log().contains("nothing received for 2s"), "{}", d.log());
    let gone = poll_until(Duration::from_secs(10), || {
        parts_in(export.path()).is_empty()
    });
    assert!(gone, "{}", d.log());
    assert!(!export.path().join("stalled.bin").exists());
}

/// A daemon that accepts one connection and reads it but never answers
/// (frozen: its kernel still acknowledges); the messages it got come back
/// once the other end closes.
fn frozen_daemon() -> (SocketAddr, std::thread::JoinHandle<Vec<PeerMessage>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    let heard = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let (mut bytes, mut buf) = (Vec::new(), [0u8; 4096]);
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
        }
        let (mut reader, mut at, mut got) = (PeerReader::default(), 0, Vec::new());
        while let Ok(Some((Piece::Message(m), used))) =
            reader.next(&bytes[at..], &PeerLimits::default())
        {
            got.push(m);
            at += used;
        }
        got
    });
    (address, heard)
}

#[test]
fn a_push_or_pull_to_a_daemon_that_stays_silent_fails_in_time_after_a_ping() {
    let a = sender_with("frame_timeout = \"3s\"\n");
    let src = a.dir().join("f.bin");
    std::fs::write(&src, pattern(3, 5000)).expect("write");
    let pull_to = a.dir().join("pulled.bin");
    for pull in [false, true] {
        let (address, heard) = frozen_daemon();
        let started = std::time::Instant::now();
        let out = if pull {
            pull_cli(&a, &[], &format!("{address}:inbox/f.bin"), &pull_to)
        } else {
            push_cli(&a, &[], &src, &format!("{address}:inbox/f.bin"))
        };
        let took = started.elapsed();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            crate::cli_common::describe(&out)
        );
        let err = crate::cli_common::stderr(&out);
        assert!(
            err.contains("said nothing for 3s, not even to a Ping"),
            "{err}"
        );
        assert!(took < Duration::from_secs(15), "{took:?}");
        let got = heard.join().expect("the frozen daemon's thread");
        assert!(
            matches!(got.first(), Some(PeerMessage::Hello { .. })),
            "{got:?}"
        );
        assert!(
            got.iter().any(|m| matches!(m, PeerMessage::Ping)),
            "{got:?}"
        );
        assert!(!pull_to.exists(), "nothing named after a failed pull");
    }
}

#[test]
fn slow_files_outlast_frame_timeout_and_a_rested_connection_is_dialled_again() {
    // Both daemons with a frame_timeout far below the time the files take:
    // a push whose receiver said nothing while the file came (nothing was
    // owed), a pull whose puller said nothing, and connections resting
    // between files longer than 10 x frame_timeout all still end whole.
    let export = tmpdir();
    // SAFETY: geteuid has no arguments and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let (b, address) = receiver_with(export.path(), uid, "frame_timeout = \"300ms\"\n");
    let a = sender_with("frame_timeout = \"300ms\"\n");
    let big = pattern(5, 4 << 20);
    let src = a.dir().join("big.bin");
    std::fs::write(&src, &big).expect("write");
    let slow = ["--rate-limit", "1MiB"];
    let out = push_cli(&a, &slow, &src, &format!("{address}:inbox/big.bin"));
    assert!(
        out.status.success(),
        "{}\n{}",
        crate::cli_common::describe(&out),
        b.log()
    );
    assert_file_eq(&export.path().join("big.bin"), &big);
    let back = a.dir().join("back.bin");
    let out = pull_cli(&a, &slow, &format!("{address}:inbox/big.bin"), &back);
    assert!(
        out.status.success(),
        "{}\n{}",
        crate::cli_common::describe(&out),
        b.log()
    );
    assert_file_eq(&back, &big);

    // A tree whose first file takes over 3 s: the connections of the files
    // after it rest that long (the receiver closes them at 3 s), and the
    // files that would have gone on with them are pushed on new ones.
    let tree = a.dir().join("t");
    std::fs::create_dir(&tree).expect("mkdir");
    std::fs::write(tree.join("a_big.bin"), &big).expect("write");
    let small: Vec<Vec<u8>> = (0..9).map(|i| pattern(i, 3000)).collect();
    for (i, data) in small.iter().enumerate() {
        std::fs::write(tree.join(format!("b{i}")), data).expect("write");
    }
    let out = push_cli(
        &a,
        &["-r", "--rate-limit", "1MiB"],
        &tree,
        &format!("{address}:inbox"),
    );
    let summary = tree_summary(&out);
    assert_eq!(
        (summary["files"].as_u64(), summary["failed"].as_u64()),
        (Some(10), Some(0)),
        "{summary}"
    );
    for (i, data) in small.iter().enumerate() {
        assert_file_eq(&export.path().join(format!("t/b{i}")), data);
    }
    assert!(b.log().contains("idle between files for 3s"), "{}", b.log());
}

/// A tree's `--rate-limit` caps the whole tree, both ways, as a local
/// tree's does (`rsync --bwlimit`), not each of the files in flight.
#[test]
fn a_rate_limit_caps_a_whole_tree_pushed_or_pulled() {
    let export = tmpdir();
    let (b, address) = receiver(export.path());
    let a = Daemon::start();
    let tree = a.dir().join("t");
    std::fs::create_dir(&tree).expect("mkdir");
    for i in 0..4u64 {
        std::fs::write(tree.join(format!("f{i}")), pattern(i, 3 << 20)).expect("write");
    }
    let limit = 4.0 * (1u64 << 20) as f64;
    let check = |out: &std::process::Output, what: &str| {
        let summary = tree_summary(out);
        assert_eq!(summary["files"], 4, "{what}: {summary}");
        let rate = summary["bytes"].as_f64().unwrap_or(0.0)
            / summary["elapsed_s"].as_f64().unwrap_or(f64::INFINITY);
        assert!(
            rate >= 0.7 * limit && rate <= 1.25 * limit,
            "{what}: {:.2} MiB/s in all under a 4 MiB/s limit\n{}",
            rate / (1u64 << 20) as f64,
            b.log()
        );
    };
    let slow = ["-r", "--rate-limit", "4MiB"];
    check(
        &push_cli(&a, &slow, &tree, &format!("{address}:inbox")),
        "push",
    );
    let back = a.dir().join("back");
    check(
        &pull_cli(&a, &slow, &format!("{address}:inbox/t"), &back),
        "pull",
    );
}

/// A fresh key and certificate (`ringxferd --init-keys`) in a new
/// directory, and the certificate's pin as it printed it.
fn keys() -> (tempfile::TempDir, String) {
    let dir = tmpdir();
    let out = std::process::Command::new(DAEMON_BIN)
        .arg("--init-keys")
        .arg(dir.path())
        .output()
        .expect("run ringxferd --init-keys");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let pin = text
        .lines()
        .find_map(|l| l.strip_prefix("pin = \"")?.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no pin in {text}"))
        .to_string();
    (dir, pin)
}

/// TOML lines giving a daemon the keys in `dir` and trusting `peers`.
fn tls_settings(dir: &Path, peers: &[(&str, &str)]) -> String {
    let mut text = format!(
        "tls_cert = \"{0}/cert.pem\"\ntls_key = \"{0}/key.pem\"\n",
        dir.display()
    );
    for (name, pin) in peers {
        text += &format!("\n[[peer]]\nname = \"{name}\"\npin = \"{pin}\"\n");
    }
    text
}

/// A daemon (not listening on TCP) with `settings`, to push from.
fn sender_with(settings: &str) -> Daemon {
    sender_env(settings, &[])
}

/// As `sender_with`, with more variables in the daemon's environment.
fn sender_env(settings: &str, env: &[(&str, &str)]) -> Daemon {
    let dir = tmpdir();
    let conf = dir.path().join("sender.toml");
    std::fs::write(&conf, settings).expect("write config");
    let args = ["--config", conf.to_str().expect("utf-8")];
    let d = Daemon::start_customized(None, &args, |c| {
        c.envs(env.iter().copied());
    });
    drop(dir);
    d
}

/// A TLS receiver: `keys` its own, trusting `peers`; listens on loopback.
fn tls_receiver(export: &Path, keys: &Path, peers: &[(&str, &str)]) -> (Daemon, SocketAddr) {
    tls_receiver_with(export, keys, peers, "")
}

/// As `tls_receiver`, with more lines in the export's table.
fn tls_receiver_with(
    export: &Path,
    keys: &Path,
    peers: &[(&str, &str)],
    export_lines: &str,
) -> (Daemon, SocketAddr) {
    tls_receiver_env(export, keys, peers, export_lines, &[])
}

/// As `tls_receiver_with`, with more variables in the daemon's
/// environment.
fn tls_receiver_env(
    export: &Path,
    keys: &Path,
    peers: &[(&str, &str)],
    export_lines: &str,
    env: &[(&str, &str)],
) -> (Daemon, SocketAddr) {
    let conf_dir = tmpdir();
    let conf = conf_dir.path().join("ringxferd.toml");
    // SAFETY: geteuid has no arguments and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let text = format!(
        "listen_tcp = \"127.0.0.1:0\"\n{}\n[[export]]\nname = \"inbox\"\npath = \"{}\"\nuser = \"{uid}\"\n{export_lines}",
        tls_settings(keys, peers),
        export.display()
    );
    std::fs::write(&conf, text).expect("write config");
    let args = ["--config", conf.to_str().expect("utf-8")];
    listening(Daemon::start_customized(None, &args, |c| {
        c.envs(env.iter().copied());
    }))
}

/// Whether this kernel's TLS offload is what daemons here use (the probe
/// of `ringxferd --check`): tests of the kernel path run where it is, and
/// say that they skipped otherwise.
fn kernel_tls_here() -> bool {
    let out = std::process::Command::new(DAEMON_BIN)
        .arg("--check")
        .output()
        .expect("run ringxferd --check");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .any(|l| l.contains("kernel TLS") && l.contains("available: TLS 1.3"))
}

#[test]
fn a_push_over_tls_between_pinned_daemons_lands_whole() {
    let (a, b, address, export, note) = push_over_tls(&[]);
    let (a_log, b_log) = (a.log(), b.log());
    if kernel_tls_here() {
        assert!(note.starts_with("TLS 1.3, sealed by the kernel"), "{note}");
        assert_eq!(
            b_log.matches("TLS handed to the kernel").count(),
            2,
            "{b_log}"
        );
        let sent = "TLS to the other daemon handed to the kernel";
        assert_eq!(a_log.matches(sent).count(), 2, "{a_log}");
    } else {
        assert!(note.starts_with("TLS 1.3, sealed in user space"), "{note}");
        assert!(!b_log.contains("handed to the kernel"), "{b_log}");
        eprintln!("skipped the kernel half: this kernel has no TLS offload ({note})");
    }
    drop((a, b, address, export));
}

#[test]
fn the_hand_over_of_tls_to_the_kernel_waits_for_a_quiet_socket() {
    // Where the kernel has no TLS, the hand-over is rehearsed: the same
    // moment (handshake done, nothing in flight, no record read past),
    // checked the same way, then user-space TLS goes on.
    let env = [("RINGXFER_KTLS_REHEARSAL", "1")];
    let (a, b, _address, _export, _note) = push_over_tls(&env);
    let (a_log, b_log) = (a.log(), b.log());
    let (served, sent) = if kernel_tls_here() {
        (
            "TLS handed to the kernel",
            "TLS to the other daemon handed to the kernel",
        )
    } else {
        (
            "TLS hand-over rehearsed",
            "TLS hand-over to the other daemon rehearsed",
        )
    };
    // Both ends of both connections: the push, then the pull.
    assert_eq!(b_log.matches(served).count(), 2, "{b_log}");
    assert_eq!(a_log.matches(sent).count(), 2, "{a_log}");
}

/// Pushes a file from a new daemon to another over TLS and pulls it back,
/// both daemons given `env`; checks the bytes both ways and that the
/// receiver named the sender by its pin. Returns the daemons, the
/// receiver's address, its export and the push's note.
fn push_over_tls(env: &[(&str, &str)]) -> (Daemon, Daemon, SocketAddr, tempfile::TempDir, String) {
    let ((a_keys, a_pin), (b_keys, b_pin)) = (keys(), keys());
    let export = tmpdir();
    let peers = [("host-a", a_pin.as_str())];
    let (b, address) = tls_receiver_env(export.path(), b_keys.path(), &peers, "", env);
    let a = sender_env(&tls_settings(a_keys.path(), &[("host-b", &b_pin)]), env);
    let data = pattern(21, (6 << 20) + 4321);
    let src = a.dir().join("secret.bin");
    std::fs::write(&src, &data).expect("write");
    let out = push_cli(&a, &[], &src, &format!("{address}:inbox"));
    assert!(
        out.status.success(),
        "{}\n{}",
        crate::cli_common::describe(&out),
        b.log()
    );
    let report = crate::cli_common::json_lines(&out).pop().expect("a report");
    let crc = u64::from(crc32c::crc32c(&data));
    assert_eq!(
        report["checksums"]["destination"].as_u64(),
        Some(crc),
        "{report}"
    );
    assert_file_eq(&export.path().join("secret.bin"), &data);
    let note = report["note"].as_str().unwrap_or_default().to_string();
    // And back, pulled over TLS.
    let back = a.dir().join("back.bin");
    let mut c = crate::cli_common::cli(&a.socket);
    c.arg("copy")
        .arg(format!("{address}:inbox/secret.bin"))
        .arg(&back);
    let out = crate::cli_common::run(c);
    assert!(
        out.status.success(),
        "{}\n{}",
        crate::cli_common::describe(&out),
        b.log()
    );
    assert_file_eq(&back, &data);
    let log = b.log();
    assert!(
        log.contains("TLS established") && log.contains("name=host-a"),
        "{log}"
    );
    drop((a_keys, b_keys));
    (a, b, address, export, note)
}

#[test]
fn a_daemon_not_pinned_or_not_speaking_tls_is_refused() {
    let ((a_keys, a_pin), (b_keys, b_pin), (c_keys, c_pin)) = (keys(), keys(), keys());
    let export = tmpdir();
    let (b, address) = tls_receiver(export.path(), b_keys.path(), &[("host-a", &a_pin)]);
    let dst = format!("{address}:inbox");

    // C trusts B, but B does not know C.
    let c = sender_with(&tls_settings(c_keys.path(), &[("host-b", &b_pin)]));
    let out = push_bytes(&c, "x.bin", b"intruder", &dst);
    crate::cli_common::assert_exit(&out, 1, "x.bin");
    let unpinned = format!("certificate {c_pin} is not pinned by any [[peer]]");
    assert!(
        poll_until(Duration::from_secs(10), || b.log().contains(&unpinned)),
        "{}",
        b.log()
    );

    // A is known to B, but pins another key for it (C's): A refuses B.
    let a = sender_with(&tls_settings(a_keys.path(), &[("host-b", &c_pin)]));
    let out = push_bytes(&a, "y.bin", b"misdirected", &dst);
    crate::cli_common::assert_exit(&out, 1, "y.bin");
    let err = crate::cli_common::stderr(&out);
    assert!(
        err.contains(&format!("certificate {b_pin} is not pinned")),
        "{err}"
    );

    // A daemon without TLS speaks plaintext, which B does not take.
    let plain = Daemon::start();
    let out = push_bytes(&plain, "z.bin", b"plaintext", &dst);
    crate::cli_common::assert_exit(&out, 1, "z.bin");

    assert_eq!(
        std::fs::read_dir(export.path()).expect("read_dir").count(),
        0,
        "nothing landed"
    );
}

#[test]
fn an_export_takes_only_the_peers_it_names() {
    let ((a_keys, a_pin), (b_keys, b_pin), (c_keys, c_pin)) = (keys(), keys(), keys());
    let export = tmpdir();
    let peers = [("host-a", a_pin.as_str()), ("host-c", c_pin.as_str())];
    let only_a = "peers = [\"host-a\"]\n";
    let (b, address) = tls_receiver_with(export.path(), b_keys.path(), &peers, only_a);
    let dst = format!("{address}:inbox");

    // C is pinned (it may connect) but not named by the export.
    let c = sender_with(&tls_settings(c_keys.path(), &[("host-b", &b_pin)]));
    let out = push_bytes(&c, "c.bin", b"from c", &dst);
    crate::cli_common::assert_exit(&out, 1, "c.bin");
    let err = crate::cli_common::stderr(&out);
    assert!(
        err.contains("export \"inbox\" is not open to peer \"host-c\""),
        "{err}\n{}",
        b.log()
    );

    let a = sender_with(&tls_settings(a_keys.path(), &[("host-b", &b_pin)]));
    let src = a.dir().join("a.bin");
    std::fs::write(&src, b"from a").expect("write");
    let out = push_cli(&a, &[], &src, &dst);
    assert!(
        out.status.success(),
        "{}",
        crate::cli_common::describe(&out)
    );
    assert_file_eq(&export.path().join("a.bin"), b"from a");
    assert!(!export.path().join("c.bin").exists());
}

#[test]
fn check_says_what_talking_to_other_daemons_would_be() {
    let ((keys_dir, pin), (_, other_pin)) = (keys(), keys());
    let export = tmpdir();
    let dir = tmpdir();
    let conf = dir.path().join("ringxferd.toml");
    let text = format!(
        "listen_tcp = \"127.0.0.1:0\"\n{}\n[[export]]\nname = \"inbox\"\npath = \"{}\"\nuser = \"0\"\n",
        tls_settings(keys_dir.path(), &[("other", &other_pin)]),
        export.path().display()
    );
    std::fs::write(&conf, text).expect("write config");
    let check = |extra: &[&str]| {
        let sock = dir.path().join("check.sock");
        let mut cmd = std::process::Command::new(DAEMON_BIN);
        cmd.args([
            "--config",
            conf.to_str().expect("utf-8"),
            "--socket",
            sock.to_str().expect("utf-8"),
            "--check",
        ])
        .args(extra);
        run_timeout(cmd, Duration::from_secs(30))
    };
    let out = check(&[]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("host to host"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.starts_with("ok"), "{line}");
    assert!(
        line.contains(&format!("identity {pin}, 1 pinned peer(s)")),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            "exports inbox -> {} (uid 0)",
            export.path().display()
        )),
        "{line}"
    );

    // What the daemon would refuse to start with fails the check, in its words.
    let out = check(&["--tls-key", "/nonexistent/key.pem"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("host to host"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.starts_with("FAIL") && line.contains("tls_key /nonexistent/key.pem"),
        "{line}"
    );
}

#[test]
fn a_tree_is_pushed_file_by_file_and_its_directories_made() {
    let export = tmpdir();
    let outside = tmpdir();
    let (receiving, address) = receiver(export.path());
    let sending = Daemon::start();
    let tree = sending.dir().join("tree");
    let mut files = Vec::new();
    for (i, rel) in ["top.txt", "a/one.bin", "a/b/c/deep.bin", "d/two.txt"]
        .iter()
        .enumerate()
    {
        let path = tree.join(rel);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        let data = pattern(i as u64, 1000 + i * 300_000);
        std::fs::write(&path, &data).expect("write");
        files.push((rel.to_string(), data));
    }
    std::os::unix::fs::symlink("top.txt", tree.join("link")).expect("symlink");

    let (out, summary) = push_tree(&sending, &receiving, &tree, address);
    assert_eq!(
        (summary["files"].as_u64(), summary["skipped"].as_u64()),
        (Some(4), Some(1)),
        "{summary}"
    );
    assert!(crate::cli_common::stderr(&out).contains("link: only regular files"));
    for (rel, data) in &files {
        assert_file_eq(&export.path().join("tree").join(rel), data);
    }

    // A directory of the export that leads out (a symlink) fails the
    // files under it and the directories (a, a/b, a/b/c), and only those;
    // nothing is made outside.
    std::fs::remove_dir_all(export.path().join("tree/a")).expect("rm");
    std::os::unix::fs::symlink(outside.path(), export.path().join("tree/a")).expect("symlink");
    let out = push_cli(&sending, &["-r"], &tree, &format!("{address}:inbox"));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        crate::cli_common::describe(&out)
    );
    let err = crate::cli_common::stderr(&out);
    assert!(err.contains("outside the export"), "{err}");
    let summary = crate::cli_common::json_lines(&out)
        .pop()
        .expect("a summary");
    assert_eq!(
        (
            summary["files"].as_u64(),
            summary["directories"].as_u64(),
            summary["failed"].as_u64()
        ),
        (Some(2), Some(2), Some(5)),
        "{summary}"
    );
    assert_eq!(
        std::fs::read_dir(outside.path()).expect("read_dir").count(),
        0,
        "nothing outside"
    );
}

#[test]
fn a_tree_goes_over_a_few_connections_each_kept_from_file_to_file() {
    let ((a_keys, a_pin), (b_keys, b_pin)) = (keys(), keys());
    let export = tmpdir();
    let peers = [("host-a", a_pin.as_str())];
    let (b, address) = tls_receiver(export.path(), b_keys.path(), &peers);
    let a = sender_with(&tls_settings(a_keys.path(), &[("host-b", &b_pin)]));
    let tree = a.dir().join("many");
    let mut files = Vec::new();
    for i in 0..40u64 {
        let rel = format!("d{}/f{i}", i % 3);
        let path = tree.join(&rel);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        let data = pattern(i, 100 + (i as usize) * 997);
        std::fs::write(&path, &data).expect("write");
        files.push((rel, data));
    }
    let out = push_cli(&a, &["-r"], &tree, &format!("{address}:inbox"));
    assert!(
        out.status.success(),
        "{}\n{}",
        crate::cli_common::describe(&out),
        b.log()
    );
    for (rel, data) in &files {
        assert_file_eq(&export.path().join("many").join(rel), data);
    }
    // Eight connections at most (the CLI's window), one handshake each,
    // however many files.
    let log = b.log();
    let handshakes = log.matches("TLS established").count();
    assert!(
        (1..=8).contains(&handshakes),
        "{handshakes} handshakes for 40 files:\n{log}"
    );
    assert_eq!(log.matches("received a file").count(), 40, "{log}");

    // And back: the listing's connection and a few more carry the files.
    let back = a.dir().join("back");
    let out = pull_cli(&a, &["-r"], &format!("{address}:inbox/many"), &back);
    assert!(
        out.status.success(),
        "{}\n{}",
        crate::cli_common::describe(&out),
        b.log()
    );
    for (rel, data) in &files {
        assert_file_eq(&back.join(rel), data);
    }
    let pulled = b.log().matches("TLS established").count() - handshakes;
    assert!(
        (1..=8).contains(&pulled),
        "{pulled} handshakes to pull 40 files:\n{}",
        b.log()
    );
    let handshakes = handshakes + pulled;

    // A program may do the same through the client crate; a socket whose
    // conversation was not kept cannot be continued, and says so.
    let client = ringxfer_ipc::Client::connect(&a.socket).expect("connect");
    let src = std::fs::File::open(tree.join("d0/f0")).expect("open");
    let socket = TcpStream::connect(address).expect("connect");
    let path = RemotePath::new("inbox/once.bin").expect("path");
    let opts = ringxfer_ipc::TransferOptions {
        connection: ringxfer_ipc::proto::PeerConnection::Continue,
        ..Default::default()
    };
    let err = client
        .submit_remote(&src, &socket, &path, false, &opts)
        .map_err(|e| e.to_string())
        .and_then(|h| h.wait().map_err(|e| e.to_string()))
        .expect_err("refused");
    assert!(
        err.contains("no connection to the other daemon is kept"),
        "{err}"
    );
    let keep = ringxfer_ipc::TransferOptions {
        connection: ringxfer_ipc::proto::PeerConnection::Keep,
        ..Default::default()
    };
    let socket = TcpStream::connect(address).expect("connect");
    for (name, opts) in [
        ("kept.bin", &keep),
        ("again.bin", &opts),
        ("third.bin", &opts),
    ] {
        let path = RemotePath::new(&format!("inbox/{name}")).expect("path");
        let done = client
            .submit_remote(&src, &socket, &path, false, opts)
            .map_err(|e| e.to_string())
            .and_then(|h| h.wait().map_err(|e| e.to_string()))
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", b.log()));
        assert_eq!(done.bytes, files[0].1.len() as u64);
        assert_file_eq(&export.path().join(name), &files[0].1);
    }
    assert_eq!(b.log().matches("TLS established").count(), handshakes + 1);
}

/// The summary a tree copy printed last.
/// Pushes `tree` with `copy -r` from `sending` into `receiving`'s inbox,
/// which must succeed: the CLI's output and its summary.
pub(crate) fn push_tree(
    sending: &Daemon,
    receiving: &Daemon,
    tree: &Path,
    address: SocketAddr,
) -> (std::process::Output, serde_json::Value) {
    let out = push_cli(sending, &["-r"], tree, &format!("{address}:inbox"));
    assert!(
        out.status.success(),
        "{}\n{}",
        crate::cli_common::describe(&out),
        receiving.log()
    );
    let summary = crate::cli_common::json_lines(&out)
        .pop()
        .expect("a summary");
    (out, summary)
}

fn tree_summary(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", crate::cli_common::describe(out));
    crate::cli_common::json_lines(out).pop().expect("a summary")
}

#[test]
fn a_tree_goes_on_with_resume_both_ways_leaving_alone_what_is_there() {
    let export = tmpdir();
    let (b, address) = receiver(export.path());
    let a = Daemon::start();
    let tree = a.dir().join("t");
    std::fs::create_dir_all(tree.join("sub")).expect("mkdir");
    let mut files: Vec<(String, Vec<u8>)> = (0..9u64)
        .map(|i| (format!("sub/f{i}"), pattern(i, 5000 + i as usize * 31)))
        .collect();
    files.push(("big.bin".into(), pattern(99, 6 << 20)));
    for (rel, data) in &files {
        std::fs::write(tree.join(rel), data).expect("write");
    }
    let to = format!("{address}:inbox");
    let first = tree_summary(&push_cli(&a, &["-r"], &tree, &to));
    assert_eq!(first["files"], 10, "{first}");
    let received = |b: &Daemon| b.log().matches("received a file").count();
    assert_eq!(received(&b), 10);

    // One file changed here, one gone there: --resume sends those two.
    files[0].1 = pattern(7, 4000);
    std::fs::write(tree.join(&files[0].0), &files[0].1).expect("rewrite");
    std::fs::remove_file(export.path().join("t/sub/f1")).expect("rm");
    let out = push_cli(&a, &["-r", "--resume"], &tree, &to);
    let again = tree_summary(&out);
    assert_eq!(
        (again["files"].as_u64(), again["skipped"].as_u64()),
        (Some(2), Some(8)),
        "{}",
        crate::cli_common::describe(&out)
    );
    assert_eq!(received(&b), 12, "{}", b.log());
    for (rel, data) in &files {
        assert_file_eq(&export.path().join("t").join(rel), data);
    }

    // Pulled back; then one file changed here, and the big one cut off
    // with half of it kept as its part: --resume pulls those two only.
    // Into an existing directory, as cp -r: both runs name back/t.
    let parent = a.dir().join("back");
    std::fs::create_dir(&parent).expect("mkdir");
    let back = parent.join("t");
    let from = format!("{address}:inbox/t");
    let pulled = tree_summary(&pull_cli(&a, &["-r"], &from, &parent));
    assert_eq!(pulled["files"], 10, "{pulled}");
    std::fs::write(back.join("sub/f2"), b"changed here").expect("rewrite");
    std::fs::remove_file(back.join("big.bin")).expect("rm");
    let part = back.join(".big.bin.ringxfer-part");
    std::fs::write(&part, &files[9].1[..3 << 20]).expect("part");
    let resumed = tree_summary(&pull_cli(&a, &["-r", "--resume"], &from, &parent));
    assert_eq!(
        (resumed["files"].as_u64(), resumed["skipped"].as_u64()),
        (Some(2), Some(8)),
        "{resumed}"
    );
    for (rel, data) in &files {
        assert_file_eq(&back.join(rel), data);
    }
    assert!(!part.exists(), "the part took the file's name");
    // The other daemon sent the big file's second half only.
    let log = b.log();
    let sent: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("sent a file") && l.contains("big.bin"))
        .collect();
    assert_eq!(sent.len(), 2, "{log}");
    let half = format!("bytes={0} resumed_from={0}", 3 << 20);
    assert!(sent[1].contains(&half), "{}", sent[1]);
}

#[test]
fn a_push_shows_progress_is_listed_and_cancelled_like_a_local_copy() {
    let export = tmpdir();
    let (receiving, address) = receiver(export.path());
    let sending = Daemon::start();
    let src = sending.dir().join("slow.bin");
    std::fs::write(&src, pattern(8, 32 << 20)).expect("write");
    // 32 MiB at 2 MiB/s: far longer than the test needs.
    let mut c = crate::cli_common::cli(&sending.socket);
    c.args(["--json", "--progress", "copy", "--rate-limit", "2MiB"])
        .arg(&src)
        .arg(format!("{address}:inbox"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().expect("spawn the CLI");

    let mut job = None;
    let listed = poll_until(Duration::from_secs(20), || {
        let mut c = crate::cli_common::cli(&sending.socket);
        c.args(["--json", "jobs"]);
        let out = crate::cli_common::run(c);
        job = crate::cli_common::json_lines(&out)
            .into_iter()
            .find(|v| v["strategy"] == "peer" && v["bytes"].as_u64().unwrap_or(0) > 0)
            .and_then(|v| v["job"].as_u64());
        job.is_some()
    });
    assert!(listed, "the push was never listed as moving bytes");
    let job = job.expect("listed").to_string();
    let mut c = crate::cli_common::cli(&sending.socket);
    c.args(["cancel", &job]);
    let out = crate::cli_common::run(c);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        crate::cli_common::describe(&out)
    );

    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        crate::cli_common::describe(&out)
    );
    let lines = crate::cli_common::json_lines(&out);
    let progress =
        |v: &serde_json::Value| v["event"] == "progress" && v["bytes"].as_u64().unwrap_or(0) > 0;
    assert!(lines.iter().any(progress), "no progress: {lines:?}");
    assert!(
        crate::cli_common::stderr(&out).contains("cancelled"),
        "{}",
        crate::cli_common::describe(&out)
    );
    let gone = poll_until(Duration::from_secs(10), || {
        std::fs::read_dir(export.path())
            .map(|d| d.count())
            .unwrap_or(1)
            == 0
    });
    assert!(
        gone,
        "the part stays after the push was cancelled:\n{}",
        receiving.log()
    );
}

/// Two hosts for a test: network namespaces joined by a veth pair,
/// 10.213.0.1 (A) and 10.213.0.2 (B), removed on drop. Root only.
struct TwoHosts {
    names: [String; 2],
    link_a: String,
}

impl TwoHosts {
    fn new() -> TwoHosts {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "{}x{}",
            std::process::id() % 100_000,
            N.fetch_add(1, Ordering::Relaxed)
        );
        let names = [format!("rxa{tag}"), format!("rxb{tag}")];
        let (va, vb) = (format!("va{tag}"), format!("vb{tag}"));
        let ip = |args: &[&str]| {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .expect("run ip");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let hosts = TwoHosts {
            names: names.clone(),
            link_a: va.clone(),
        };
        for ns in &names {
            ip(&["netns", "add", ns]);
        }
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
        for (ns, link, addr) in [
            (&names[0], &va, "10.213.0.1/30"),
            (&names[1], &vb, "10.213.0.2/30"),
        ] {
            ip(&["link", "set", link, "netns", ns]);
            ip(&["-n", ns, "addr", "add", addr, "dev", link]);
            ip(&["-n", ns, "link", "set", link, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        hosts
    }

    /// Makes `cmd` run in host `i`'s network namespace.
    fn enter(&self, i: usize, cmd: &mut std::process::Command) {
        use std::os::fd::IntoRawFd;
        use std::os::unix::process::CommandExt;
        let ns =
            std::fs::File::open(format!("/run/netns/{}", self.names[i])).expect("open the netns");
        // Leaked on purpose (a test makes a handful): the child needs it
        // between fork and exec, after this returns.
        let fd = ns.into_raw_fd();
        // SAFETY: setns(2) is async-signal-safe; between fork and exec the
        // child is single-threaded, which joining a network namespace needs.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// Cuts the link, as a pulled cable would.
    fn cut(&self) {
        self.set_link("down");
    }

    /// Plugs the cable back in.
    fn mend(&self) {
        self.set_link("up");
    }

    fn set_link(&self, state: &str) {
        let out = std::process::Command::new("ip")
            .args(["-n", &self.names[0], "link", "set", &self.link_a, state])
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .output();
        }
    }
}

/// A daemon in host `i` of `hosts` with the TOML `settings`.
fn daemon_in(hosts: &TwoHosts, i: usize, settings: &str) -> Daemon {
    let dir = tmpdir();
    let conf = dir.path().join("ringxferd.toml");
    std::fs::write(&conf, settings).expect("write config");
    let conf = conf.to_str().expect("utf-8").to_string();
    let d = Daemon::start_customized(None, &["--config", &conf], |cmd| hosts.enter(i, cmd));
    drop(dir);
    d
}

#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn between_two_hosts_a_push_needs_tls_and_a_cut_link_fails_in_time() {
    require_root("root to make network namespaces and a veth pair");
    let hosts = TwoHosts::new();
    let ((a_keys, a_pin), (b_keys, b_pin)) = (keys(), keys());
    let export = tmpdir();
    let b_settings = format!(
        "listen_tcp = \"10.213.0.2:7300\"\nframe_timeout = \"3s\"\n{}\n[[export]]\nname = \"inbox\"\npath = \"{}\"\nuser = \"0\"\n",
        tls_settings(b_keys.path(), &[("host-a", &a_pin)]),
        export.path().display()
    );
    let b = daemon_in(&hosts, 1, &b_settings);
    let a_settings = format!(
        "frame_timeout = \"3s\"\n{}",
        tls_settings(a_keys.path(), &[("host-b", &b_pin)])
    );
    let a = daemon_in(&hosts, 0, &a_settings);
    let push = |d: &Daemon, args: &[&str], src: &Path| {
        let mut c = crate::cli_common::cli(&d.socket);
        c.args(["copy"])
            .args(args)
            .arg(src)
            .arg("10.213.0.2:7300:inbox");
        hosts.enter(0, &mut c);
        c
    };

    let data = pattern(31, 8 << 20);
    let src = a.dir().join("over-veth.bin");
    std::fs::write(&src, &data).expect("write");
    let out = crate::cli_common::run(push(&a, &[], &src));
    assert!(
        out.status.success(),
        "{}\n{}",
        crate::cli_common::describe(&out),
        b.log()
    );
    assert_file_eq(&export.path().join("over-veth.bin"), &data);

    // A daemon without TLS does not push across a network.
    let plain = daemon_in(&hosts, 0, "");
    let out = crate::cli_common::run(push(&plain, &[], &src));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        crate::cli_common::stderr(&out).contains("needs TLS"),
        "{}",
        crate::cli_common::describe(&out)
    );

    // The cable is pulled mid-file: both ends give up within seconds, and
    // the name keeps what it had; once the link is back, --resume finishes
    // it from the part the receiver kept.
    let big = a.dir().join("big.bin");
    std::fs::write(&big, pattern(32, 32 << 20)).expect("write");
    std::fs::write(export.path().join("big.bin"), b"old").expect("write");
    let child = push(&a, &["--rate-limit", "2MiB"], &big)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the CLI");
    let partial = || {
        parts_in(export.path())
            .iter()
            .any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
    };
    assert!(poll_until(Duration::from_secs(20), partial), "no part grew");
    let cut_at = std::time::Instant::now();
    hosts.cut();
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("timed out"), "{err}");
    assert!(
        cut_at.elapsed() < Duration::from_secs(30),
        "the sender took {:?}",
        cut_at.elapsed()
    );
    let kept = poll_until(Duration::from_secs(20), || {
        b.log().contains("the part is kept for a resume")
    });
    assert!(kept, "{}", b.log());
    assert!(partial(), "{}", b.log());
    assert_file_eq(&export.path().join("big.bin"), b"old");
    hosts.mend();
    let out = crate::cli_common::run(push(&a, &["--resume"], &big));
    assert!(
        out.status.success(),
        "{}\n{}",
        crate::cli_common::describe(&out),
        b.log()
    );
    assert!(
        b.log().contains("resuming a file from another daemon"),
        "{}",
        b.log()
    );
    assert_file_eq(&export.path().join("big.bin"), &pattern(32, 32 << 20));
    assert!(parts_in(export.path()).is_empty());
}

#[test]
fn a_daemon_serves_a_file_another_pulls_and_nothing_outside_its_export() {
    let export = tmpdir();
    let outside = tmpdir();
    std::fs::write(outside.path().join("secret"), b"outside").expect("write");
    std::fs::create_dir(export.path().join("dir")).expect("mkdir");
    let data = pattern(41, (2 << 20) + 999);
    let file = export.path().join("dir/served.bin");
    std::fs::write(&file, &data).expect("write");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    std::os::unix::fs::symlink(outside.path(), export.path().join("out")).expect("symlink");
    std::os::unix::fs::symlink("dir/served.bin", export.path().join("link")).expect("symlink");
    let (d, address) = receiver(export.path());
    let mut s = Sender::connect(address);

    let (meta, bytes, crc) = s
        .pull(1, "inbox/dir/served.bin")
        .unwrap_or_else(|m| panic!("{m:?}\n{}", d.log()));
    assert_bytes_eq(&bytes, &data, "pulled");
    assert_eq!(crc, crc32c::crc32c(&data));
    assert_eq!((meta.size, meta.mode), (data.len() as u64, 0o640));
    // Another on the same connection: an empty file.
    std::fs::write(export.path().join("empty"), b"").expect("write");
    let (meta, bytes, _) = s.pull(2, "inbox/empty").expect("pulled");
    assert_eq!((meta.size, bytes.len()), (0, 0));

    for (path, says) in [
        ("inbox/out/secret", "outside the export"),
        ("inbox/link", "inbox/link"),
        ("inbox/missing", "No such file"),
        ("inbox/dir", "not a regular file"),
        ("elsewhere/x", "no export named"),
    ] {
        match s.pull(3, path) {
            Err(PeerMessage::Refused { message, .. }) => {
                assert!(message.contains(says), "{path}: {message}")
            }
            other => panic!("{path}: {other:?}"),
        }
    }
    assert!(
        poll_until(Duration::from_secs(5), || d
            .log()
            .contains("sent a file to another daemon")),
        "{}",
        d.log()
    );
}

/// `ringxfer --json copy ARGS... SRC DST` through daemon `d`, SRC remote.
pub(crate) fn pull_cli(d: &Daemon, args: &[&str], src: &str, dst: &Path) -> std::process::Output {
    let mut c = crate::cli_common::cli(&d.socket);
    c.args(["--json", "copy"]).args(args).arg(src).arg(dst);
    crate::cli_common::run(c)
}

#[test]
fn the_cli_pulls_a_file_whole_with_its_mode_and_times_or_leaves_nothing() {
    let export = tmpdir();
    std::fs::create_dir(export.path().join("dir")).expect("mkdir");
    let data = pattern(51, (3 << 20) + 4321);
    let remote_file = export.path().join("dir/far.bin");
    std::fs::write(&remote_file, &data).expect("write");
    std::fs::set_permissions(&remote_file, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let when = std::time::UNIX_EPOCH + Duration::new(1_500_000_000, 5_000);
    std::fs::File::options()
        .write(true)
        .open(&remote_file)
        .expect("open")
        .set_modified(when)
        .expect("mtime");
    let outside = tmpdir();
    std::fs::write(outside.path().join("secret"), b"outside").expect("write");
    std::os::unix::fs::symlink(outside.path(), export.path().join("out")).expect("symlink");
    let (serving, address) = receiver(export.path());
    let pulling = Daemon::start();
    let here = tmpdir();

    // Into a directory: the file keeps its name.
    let out = pull_cli(
        &pulling,
        &[],
        &format!("{address}:inbox/dir/far.bin"),
        here.path(),
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        crate::cli_common::describe(&out),
        serving.log()
    );
    let report = crate::cli_common::json_lines(&out).pop().expect("a report");
    let crc = u64::from(crc32c::crc32c(&data));
    assert_eq!(
        (
            report["checksums"]["source"].as_u64(),
            report["checksums"]["destination"].as_u64()
        ),
        (Some(crc), Some(crc)),
        "{report}"
    );
    let landed = here.path().join("far.bin");
    assert_file_eq(&landed, &data);
    let meta = std::fs::metadata(&landed).expect("stat");
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!((meta.mtime(), meta.mtime_nsec()), (1_500_000_000, 5_000));

    // Over an existing file, under another name.
    let named = here.path().join("renamed.bin");
    std::fs::write(&named, b"old").expect("write");
    let out = pull_cli(
        &pulling,
        &[],
        &format!("{address}:inbox/dir/far.bin"),
        &named,
    );
    assert!(
        out.status.success(),
        "{}",
        crate::cli_common::describe(&out)
    );
    assert_file_eq(&named, &data);

    // What cannot be pulled leaves nothing here, and says why.
    for (src, says) in [
        ("inbox/missing", "No such file"),
        ("inbox/out/secret", "outside the export"),
    ] {
        let dst = here.path().join("never");
        let out = pull_cli(&pulling, &[], &format!("{address}:{src}"), &dst);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{src}: {}",
            crate::cli_common::describe(&out)
        );
        assert!(
            crate::cli_common::stderr(&out).contains(says),
            "{src}: {}",
            crate::cli_common::describe(&out)
        );
        assert!(!dst.exists(), "{src}: a file appeared");
    }
    // A rate limit holds a pull back as it does a copy: 3 MiB at 1 MiB/s.
    let limited = here.path().join("limited");
    let src = format!("{address}:inbox/dir/far.bin");
    let started = std::time::Instant::now();
    let out = pull_cli(&pulling, &["--rate-limit", "1MiB"], &src, &limited);
    assert!(
        out.status.success(),
        "{}",
        crate::cli_common::describe(&out)
    );
    // Unlimited it takes some 20 ms. Bytes count as moved once written,
    // and up to 2 MiB wait in the write buffers, so a file this small
    // goes faster than the rate; a long pull holds to it.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1000), "took {took:?}");
    assert_file_eq(&limited, &data);
    let names: Vec<_> = std::fs::read_dir(here.path())
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names.len(), 3, "no staging file left behind: {names:?}");
}

#[test]
fn a_pull_whose_server_dies_names_nothing_and_resumes_from_the_part_kept() {
    const MIB: u64 = 1 << 20;
    let export = tmpdir();
    let data = pattern(71, 20 << 20);
    std::fs::write(export.path().join("far.bin"), &data).expect("write");
    let (serving, address) = receiver(export.path());
    let pulling = Daemon::start();
    let here = tmpdir();
    let dst = here.path().join("far.bin");
    let part = here.path().join(".far.bin.ringxfer-part");
    let mut c = crate::cli_common::cli(&pulling.socket);
    c.args(["copy", "--rate-limit", "4MiB"])
        .arg(format!("{address}:inbox/far.bin"))
        .arg(&dst)
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().expect("spawn the CLI");
    let grown = poll_until(Duration::from_secs(20), || {
        std::fs::metadata(&part).is_ok_and(|m| m.len() >= 4 * MIB)
    });
    assert!(grown, "the part never grew");
    serving.signal(libc::SIGKILL);
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the other daemon closed the connection"),
        "{err}"
    );
    assert!(err.contains("--resume"), "{err}");
    assert!(!dst.exists(), "a partial pull took the name");
    assert!(part.exists(), "the part is kept");

    // Its second block damaged, the pull resumes there, and the file that
    // takes the name is the other daemon's.
    let mut bytes = std::fs::read(&part).expect("read the part");
    bytes[(MIB + 7) as usize] ^= 0x5a;
    std::fs::write(&part, &bytes).expect("damage the part");
    let (serving, address) = receiver(export.path());
    let out = pull_cli(
        &pulling,
        &["--resume"],
        &format!("{address}:inbox/far.bin"),
        &dst,
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        crate::cli_common::describe(&out),
        serving.log()
    );
    let report = crate::cli_common::json_lines(&out).pop().expect("a report");
    let note = report["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("resumed: the first 1048576 bytes"),
        "{report}"
    );
    assert_file_eq(&dst, &data);
    assert!(!part.exists());

    // A pull refused for another reason leaves nothing.
    let out = pull_cli(
        &pulling,
        &[],
        &format!("{address}:inbox/none.bin"),
        &here.path().join("none.bin"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        std::fs::read_dir(here.path()).expect("read_dir").count(),
        1,
        "only far.bin"
    );
}

/// A receiver (as `receiver`) listening on `port` of 127.0.0.1.
fn receiver_on(export: &Path, port: u16) -> (Daemon, SocketAddr) {
    let conf_dir = tmpdir();
    let conf = conf_dir.path().join("ringxferd.toml");
    // SAFETY: geteuid has no arguments and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let text = format!(
        "listen_tcp = \"127.0.0.1:{port}\"\ninsecure_plaintext = true\n[[export]]\nname = \"inbox\"\n\
         path = \"{}\"\nuser = \"{uid}\"\n",
        export.display()
    );
    std::fs::write(&conf, text).expect("write config");
    listening(Daemon::start_with(&[
        "--config",
        conf.to_str().expect("utf-8"),
    ]))
}

/// `ringxfer --json ARGS...` through `d`, its JSON report.
fn job_report(d: &Daemon, args: &[&str]) -> (std::process::Output, Option<serde_json::Value>) {
    let mut c = crate::cli_common::cli(&d.socket);
    c.arg("--json").args(args);
    let out = crate::cli_common::run(c);
    let report = crate::cli_common::json_lines(&out).pop();
    (out, report)
}

#[test]
fn a_detached_push_dials_again_and_resumes_when_the_receiver_comes_back() {
    const MIB: u64 = 1 << 20;
    let export = tmpdir();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let (receiving, address) = receiver_on(export.path(), port);
    let sending = Daemon::start();
    let sources = tmpdir();
    let data = pattern(5, 20 << 20);
    let src = sources.path().join("far.bin");
    std::fs::write(&src, &data).expect("write");
    let src_arg = src.to_str().expect("utf-8");
    let dst = format!("{address}:inbox");

    let (out, report) = job_report(
        &sending,
        &["copy", "--detach", "--rate-limit", "4MiB", src_arg, &dst],
    );
    let job = report.and_then(|r| r["job"].as_u64());
    let job = job.unwrap_or_else(|| panic!("no job id: {}", crate::cli_common::describe(&out)));
    let grown = poll_until(Duration::from_secs(20), || {
        parts_in(export.path())
            .iter()
            .any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() >= 4 * MIB))
    });
    assert!(grown, "{}", receiving.log());

    // The receiver dies; the job waits and dials again until it is back.
    receiving.signal(libc::SIGKILL);
    let dialling = poll_until(Duration::from_secs(10), || {
        sending.log().contains("dialling again in")
    });
    assert!(dialling, "{}", sending.log());
    std::thread::sleep(Duration::from_secs(2));
    let (receiving, _) = receiver_on(export.path(), port);
    let (out, report) = job_report(&sending, &["wait", &job.to_string()]);
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        crate::cli_common::describe(&out),
        sending.log(),
        receiving.log()
    );
    let report = report.expect("a report");
    assert_eq!(report["bytes"], data.len() as u64, "{report}");
    assert_file_eq(&export.path().join("far.bin"), &data);
    assert!(parts_in(export.path()).is_empty());
    let log = receiving.log();
    let resumed = log
        .lines()
        .find(|l| l.contains("resuming a file from another daemon"))
        .unwrap_or_else(|| panic!("no resume in the log:\n{log}"));
    assert!(!resumed.contains(" offset=0 "), "{resumed}");

    // Cancelled while it waits to dial again, the job ends at once.
    let (out, report) = job_report(
        &sending,
        &["copy", "--detach", "--rate-limit", "4MiB", src_arg, &dst],
    );
    let job = report.and_then(|r| r["job"].as_u64());
    let job = job.unwrap_or_else(|| panic!("no job id: {}", crate::cli_common::describe(&out)));
    assert!(poll_until(Duration::from_secs(20), || !parts_in(
        export.path()
    )
    .is_empty()));
    receiving.signal(libc::SIGKILL);
    let before = sending.log().matches("dialling again in").count();
    assert!(poll_until(Duration::from_secs(10), || {
        sending.log().matches("dialling again in").count() > before
    }));
    let started = std::time::Instant::now();
    let (out, _) = job_report(&sending, &["cancel", &job.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        crate::cli_common::describe(&out)
    );
    let (out, _) = job_report(&sending, &["wait", &job.to_string()]);
    assert!(!out.status.success());
    assert!(
        crate::cli_common::stderr(&out).contains("cancel"),
        "{}",
        crate::cli_common::describe(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn the_cli_pulls_a_tree_by_its_listing_and_follows_no_link_out() {
    let export = tmpdir();
    let tree = export.path().join("photos");
    for dir in ["2025/jan", "2026", "empty"] {
        std::fs::create_dir_all(tree.join(dir)).expect("mkdir");
    }
    let files = [
        ("top.txt", pattern(61, 10)),
        ("2025/jan/a.bin", pattern(62, (1 << 20) + 1)),
        ("2026/none.bin", Vec::new()),
        ("2026/b.bin", pattern(63, 70_000)),
    ];
    for (name, data) in &files {
        std::fs::write(tree.join(name), data).expect("write");
    }
    std::fs::set_permissions(tree.join("top.txt"), std::fs::Permissions::from_mode(0o640))
        .expect("chmod");
    let outside = tmpdir();
    std::fs::write(outside.path().join("secret"), b"outside").expect("write");
    std::os::unix::fs::symlink(outside.path(), tree.join("2026/out")).expect("symlink");
    std::os::unix::fs::symlink(outside.path(), export.path().join("linked")).expect("symlink");
    let (serving, address) = receiver(export.path());
    let pulling = Daemon::start();
    let here = tmpdir();

    // Into an existing directory, the tree keeps its name.
    let out = pull_cli(
        &pulling,
        &["-r"],
        &format!("{address}:inbox/photos"),
        here.path(),
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        crate::cli_common::describe(&out),
        serving.log()
    );
    let report = crate::cli_common::json_lines(&out)
        .pop()
        .expect("a summary");
    assert_eq!(report["files"], 4, "{report}");
    assert_eq!(report["skipped"], 1, "{report}");
    let landed = here.path().join("photos");
    for (name, data) in &files {
        assert_file_eq(&landed.join(name), data);
    }
    assert!(landed.join("empty").is_dir());
    let mode = std::fs::metadata(landed.join("top.txt"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    assert!(
        !landed.join("2026/out").exists(),
        "a link in the tree is not followed"
    );
    assert!(crate::cli_common::stderr(&out).contains("skipped"));

    // To a new name, the tree takes it; the export's root can be pulled too.
    let renamed = here.path().join("copy");
    let out = pull_cli(
        &pulling,
        &["-r"],
        &format!("{address}:inbox/photos/2025"),
        &renamed,
    );
    assert!(
        out.status.success(),
        "{}",
        crate::cli_common::describe(&out)
    );
    assert_file_eq(&renamed.join("jan/a.bin"), &files[1].1);

    // A directory that is a link out of the export is not listed.
    let out = pull_cli(
        &pulling,
        &["-r"],
        &format!("{address}:inbox/linked"),
        &here.path().join("x"),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        crate::cli_common::describe(&out)
    );
    assert!(
        crate::cli_common::stderr(&out).contains("inbox/linked"),
        "{}",
        crate::cli_common::describe(&out)
    );
    assert!(!here.path().join("x").exists());
}

#[test]
fn one_peer_cannot_take_every_connection() {
    let export = tmpdir();
    let (d, address) = receiver(export.path());
    let held: Vec<Sender> = (0..16).map(|_| Sender::connect(address)).collect();
    let mut seventeenth = TcpStream::connect(address).expect("connect");
    seventeenth
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut hello = Vec::new();
    encode(&PeerMessage::Hello { version: 1 }, &mut hello, 64).expect("encode");
    let _ = seventeenth.write_all(&hello);
    let mut byte = [0u8; 1];
    assert!(
        matches!(seventeenth.read(&mut byte), Ok(0) | Err(_)),
        "the 17th connection is closed, not welcomed"
    );
    assert!(d.log().contains("the most one peer may"), "{}", d.log());
    drop(held);
    // Once they are gone, the peer is welcome again.
    let closed = poll_until(Duration::from_secs(10), || {
        d.log()
            .matches("connection of another daemon closed")
            .count()
            >= 16
    });
    assert!(closed, "{}", d.log());
    let mut s = Sender::connect(address);
    let done = s.push(1, "inbox/after.txt", b"after", 0o644);
    assert!(matches!(done, PeerMessage::Done { .. }), "{done:?}");
}
