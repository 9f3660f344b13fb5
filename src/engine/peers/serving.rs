//! Serving a file to another daemon that pulls it (`Get`): opened beneath
//! the export with RESOLVE_BENEATH (and O_NOFOLLOW: a symlink as the file's
//! own name is refused, not followed), as the export's user; its size,
//! mode and times from statx go out in `Ready`; then its bytes, one piece
//! read at a time into the connection's buffer, framed as `Data` with the
//! CRC-32C taken in passing, the next read only once the last piece has
//! left; then `End`. The puller answers `Done` or `Failed`, and the file
//! is closed either way.

use std::os::fd::{FromRawFd, OwnedFd};
use std::rc::Rc;

use ringxfer_ipc::proto::peer::{encode, FileMeta, PeerMessage, RemotePath, Timestamp};
use ringxfer_ipc::proto::FailureKind;
use tracing::{info, warn};

use super::incoming::os_failure;
use super::tag;
use crate::engine::Engine;
use crate::io::fd::SharedFd;
use crate::io::op::{self, openat2::How};
use crate::io::ops::Owner;

/// The most of the file one read takes.
const PIECE: usize = 1 << 20;

pub(super) struct Serving {
    xfer: u64,
    /// The remote path, as the puller named it.
    shown: String,
    file: Option<Rc<OwnedFd>>,
    size: u64,
    sent: u64,
    crc: u32,
    /// The read buffer, when no read holds it.
    buf: Option<Vec<u8>>,
    /// `Ready` went out: a failure is answered with `Failed`, not `Refused`.
    ready: bool,
    /// `End` went out: `Done` or `Failed` is awaited.
    ended: bool,
}

impl Serving {
    /// The file's descriptor, to close.
    pub(super) fn into_file(self) -> Option<Rc<OwnedFd>> {
        self.file
    }
}

impl Engine {
    /// A `Get`: checks the name, then opens the file.
    pub(super) fn start_serving(&mut self, k: usize, xfer: u64, path: RemotePath) {
        let refuse = |kind, message| PeerMessage::Refused {
            xfer,
            kind,
            message,
        };
        if self.peers.conns.get(k).is_none_or(|c| c.busy()) {
            let why = "another file is being moved on this connection".to_string();
            return self.send_peer(k, &refuse(FailureKind::LimitExceeded, why));
        }
        let (export, _) = match self.resolve_export(k, &path) {
            Ok(found) => found,
            Err((kind, why)) => return self.send_peer(k, &refuse(kind, why)),
        };
        let rel = path.as_str().split_once('/').map_or("", |(_, rel)| rel);
        let Ok(rel) = std::ffi::CString::new(rel) else {
            return;
        };
        let dir = SharedFd::owned(&self.peers.exports[export].dir);
        let how = How {
            flags: (libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64,
            mode: 0,
            resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
        };
        if let Some(conn) = self.peers.conns.get_mut(k) {
            conn.serving = Some(Serving {
                xfer,
                shown: path.as_str().to_string(),
                file: None,
                size: 0,
                sent: 0,
                crc: 0,
                buf: Some(Vec::with_capacity(PIECE)),
                ready: false,
                ended: false,
            });
        }
        self.queue_serving_op(k, tag::OPEN_SRC, op::OpenAt2::new(dir, rel, how));
    }

    fn queue_serving_op(&mut self, k: usize, tag: u32, op: impl Into<op::AnyOp>) {
        match self.io.queue_op(Owner::Peer(k), tag, op) {
            Ok(_) => {
                if let Some(conn) = self.peers.conns.get_mut(k) {
                    conn.ops += 1;
                }
            }
            Err(e) => {
                let why = format!("cannot queue an operation: {e}");
                self.stop_serving(k, Some((FailureKind::Io, why)), true)
            }
        }
    }

    /// The file is open (or not).
    pub(super) fn on_serving_open(&mut self, k: usize, result: i32) {
        let Some(serving) = self.peers.conns.get_mut(k).and_then(|c| c.serving.as_mut()) else {
            if result >= 0 {
                // SAFETY: a successful openat2 returns a new descriptor
                // that only this completion knows about.
                let fd = unsafe { OwnedFd::from_raw_fd(result) };
                self.closing.doomed.push(fd);
            }
            return;
        };
        if result < 0 {
            let what = format!("{}: cannot open it", serving.shown);
            return self.stop_serving(k, Some(os_failure(-result, what)), true);
        }
        // SAFETY: a successful openat2 returns a new descriptor that only
        // this completion knows about.
        let file = Rc::new(unsafe { OwnedFd::from_raw_fd(result) });
        let stat = op::Statx::new(
            SharedFd::owned(&file),
            0,
            libc::STATX_TYPE
                | libc::STATX_SIZE
                | libc::STATX_MODE
                | libc::STATX_ATIME
                | libc::STATX_MTIME,
        );
        serving.file = Some(file);
        self.queue_serving_op(k, tag::STAT_SRC, stat);
    }

    /// What the file is: `Ready` with its size, mode and times.
    pub(super) fn on_serving_stat(&mut self, k: usize, result: i32, stx: &libc::statx) {
        let Some(serving) = self.peers.conns.get_mut(k).and_then(|c| c.serving.as_mut()) else {
            return;
        };
        if result < 0 {
            let what = format!("{}: cannot stat it", serving.shown);
            return self.stop_serving(k, Some(os_failure(-result, what)), true);
        }
        if u32::from(stx.stx_mode) & libc::S_IFMT != libc::S_IFREG {
            let why = format!("{}: not a regular file", serving.shown);
            return self.stop_serving(k, Some((FailureKind::InvalidRequest, why)), true);
        }
        serving.size = stx.stx_size;
        serving.ready = true;
        let at = |t: libc::statx_timestamp| Timestamp {
            secs: t.tv_sec,
            nanos: t.tv_nsec,
        };
        let meta = FileMeta {
            size: stx.stx_size,
            mode: u32::from(stx.stx_mode) & 0o7777,
            atime: at(stx.stx_atime),
            mtime: at(stx.stx_mtime),
        };
        let ready = PeerMessage::Ready {
            xfer: serving.xfer,
            offset: 0,
            meta: Some(meta),
        };
        self.send_peer(k, &ready);
        self.serve_next(k);
    }

    /// Reads the next piece, once the last one has left; `End` after the
    /// last.
    pub(super) fn serve_next(&mut self, k: usize) {
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        let idle = conn.out.is_empty() && conn.outgoing.is_some() && !conn.closing;
        let Some(serving) = conn
            .serving
            .as_mut()
            .filter(|s| s.ready && !s.ended && s.buf.is_some() && idle)
        else {
            return;
        };
        if serving.sent == serving.size {
            serving.ended = true;
            let end = PeerMessage::End {
                xfer: serving.xfer,
                size: serving.size,
                crc32c: serving.crc,
            };
            return self.send_peer(k, &end);
        }
        let (Some(mut buf), Some(file)) = (serving.buf.take(), serving.file.as_ref()) else {
            return;
        };
        let want = (serving.size - serving.sent).min(PIECE as u64) as usize;
        buf.resize(want, 0);
        let read = op::ReadInto::new(SharedFd::owned(file), buf, 0, Some(serving.sent));
        self.queue_serving_op(k, tag::READ_SRC, read);
    }

    /// A message about the file being served: the puller's `Done` or
    /// `Failed` ends it.
    pub(super) fn serving_answer(&mut self, k: usize, message: PeerMessage) {
        let xfer = self
            .peers
            .conns
            .get(k)
            .and_then(|c| c.serving.as_ref())
            .map(|s| s.xfer);
        match message {
            PeerMessage::Done { xfer: x, .. } if Some(x) == xfer => {
                self.stop_serving(k, None, false)
            }
            PeerMessage::Failed {
                xfer: x,
                kind,
                message,
            } if Some(x) == xfer => {
                let why = format!("the other daemon: {message}");
                self.stop_serving(k, Some((kind, why)), false)
            }
            PeerMessage::Cancel { xfer: x } if Some(x) == xfer => {
                let why = "the other daemon cancelled it".to_string();
                self.stop_serving(k, Some((FailureKind::Cancelled, why)), false)
            }
            other => {
                let why = format!("protocol error: {other:?} for no file being sent");
                self.close_peer(k, &why)
            }
        }
    }

    /// A piece is read: framed, counted, sent.
    pub(super) fn on_serving_read(&mut self, k: usize, buf: Vec<u8>, result: i32) {
        let max_frame = self.peers.limits.max_frame;
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        let Some(serving) = conn.serving.as_mut() else {
            return;
        };
        let failure = match result {
            n if n < 0 => Some(os_failure(
                -n,
                format!("{}: read at offset {}", serving.shown, serving.sent),
            )),
            0 => Some((
                FailureKind::SourceShort,
                format!("{}: the file shrank while it was sent", serving.shown),
            )),
            _ => None,
        };
        if let Some(failure) = failure {
            serving.buf = Some(buf);
            return self.stop_serving(k, Some(failure), true);
        }
        let n = result as usize;
        let data = PeerMessage::Data {
            xfer: serving.xfer,
            offset: serving.sent,
            len: n as u32,
        };
        if encode(&data, &mut conn.out, max_frame).is_err() {
            return self.close_peer(k, "the daemon could not encode a message");
        }
        conn.out.extend_from_slice(&buf[..n]);
        serving.crc = crc32c::crc32c_append(serving.crc, &buf[..n]);
        serving.sent += n as u64;
        serving.buf = Some(buf);
        self.flush_peer(k);
        self.serve_next(k);
    }

    /// `Done` or `Failed` from the puller, or a failure here (`tell`: say
    /// it to the puller): the file is closed, off the loop thread once no
    /// read holds it.
    pub(super) fn stop_serving(
        &mut self,
        k: usize,
        failure: Option<(FailureKind, String)>,
        tell: bool,
    ) {
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        let Some(serving) = conn.serving.take() else {
            return;
        };
        match &failure {
            None => {
                info!(peer = %conn.who, path = %serving.shown, bytes = serving.sent, "sent a file to another daemon")
            }
            Some((kind, why)) => {
                warn!(peer = %conn.who, path = %serving.shown, ?kind, "sending a file failed: {why}")
            }
        }
        if let Some(file) = serving.file {
            match Rc::try_unwrap(file) {
                Ok(fd) => self.closing.doomed.push(fd),
                Err(shared) => conn.retired.push(shared),
            }
        }
        if let (Some((kind, message)), true) = (failure, tell) {
            let xfer = serving.xfer;
            let answer = if !serving.ready {
                PeerMessage::Refused {
                    xfer,
                    kind,
                    message,
                }
            } else {
                PeerMessage::Failed {
                    xfer,
                    kind,
                    message,
                }
            };
            self.send_peer(k, &answer);
        }
    }
}
