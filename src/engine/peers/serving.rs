//! Serving a file to another daemon that pulls it (`Get`): opened beneath
//! the export with RESOLVE_BENEATH (and O_NOFOLLOW: a symlink as the file's
//! own name is refused, not followed), as the export's user; its size,
//! mode and times from statx go out in `Ready`; then its bytes, one piece
//! read at a time into the connection's buffer, framed as `Data` with the
//! CRC-32C taken in passing, the next read only once the last piece has
//! left; then `End`. The puller answers `Done` or `Failed`, and the file
//! is closed either way.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use ringxfer_ipc::proto::peer::{
    encode, encode_listing, EntryKind, FileMeta, ListEntry, Listing, PeerMessage, RemotePath,
    Timestamp,
};
use ringxfer_ipc::proto::FailureKind;
use tracing::{info, warn};

use super::incoming::os_failure;
use super::lease::{LeaseKey, Way};
use super::tag;
use crate::engine::Engine;
use crate::io::fd::SharedFd;
use crate::io::op::{self, list_dir::Found, openat2::How};
use crate::io::ops::Owner;

/// The most of the file one read takes.
const PIECE: usize = 1 << 20;
/// Entries one `List` takes at most (about 100 MiB of listing).
const MAX_LISTED: usize = 1 << 20;

pub(super) struct Serving {
    pub(super) xfer: u64,
    /// The remote path, as the puller named it.
    pub(super) shown: String,
    pub(super) file: Option<Rc<OwnedFd>>,
    size: u64,
    /// Where the next read is (the file's end once all is sent), and
    /// where sending started (a resumed pull's first block that differed).
    pub(super) sent: u64,
    pub(super) resumed_from: u64,
    pub(super) crc: u32,
    /// The read buffer, when no read holds it.
    pub(super) buf: Option<Vec<u8>>,
    /// `Ready` went out: a failure is answered with `Failed`, not `Refused`.
    pub(super) ready: bool,
    /// A resumed `Get`: the puller's sums of the part it kept, and the
    /// comparison of the file's own blocks (serving_resume.rs).
    pub(super) resume: Option<super::serving_resume::Compare>,
    /// `End` went out: `Done` or `Failed` is awaited.
    ended: bool,
    /// A `List`: what the walk of the directory found; its listing is
    /// served as the file.
    listing: Option<Arc<Mutex<Vec<Found>>>>,
    /// Its export, and its job, which lends each read a permit (lease.rs).
    export: usize,
    pub(super) lease: Option<LeaseKey>,
}

impl Serving {
    /// `End` went out: only the puller's answer is left.
    pub(super) fn ended(&self) -> bool {
        self.ended
    }

    /// The file's descriptor, to close, and its job, to end.
    pub(super) fn into_parts(self) -> (Option<Rc<OwnedFd>>, Option<LeaseKey>) {
        (self.file, self.lease)
    }
}

impl Engine {
    /// A `Get` (or, `list`, a `List`): checks the name, then opens the
    /// file (the directory).
    pub(super) fn start_serving(
        &mut self,
        k: usize,
        (xfer, path): (u64, RemotePath),
        list: bool,
        resume: bool,
    ) {
        let refuse = |kind, message| PeerMessage::Refused {
            xfer,
            kind,
            message,
        };
        if self.peers.conns.get(k).is_none_or(|c| c.busy()) {
            let why = "another file is being moved on this connection".to_string();
            return self.send_peer(k, &refuse(FailureKind::LimitExceeded, why));
        }
        if let Some(e) = self.draining_refusal() {
            return self.send_peer(k, &refuse(e.kind, e.message));
        }
        let (export, _) = match self.resolve_export(k, &path) {
            Ok(found) => found,
            Err((kind, why)) => return self.send_peer(k, &refuse(kind, why)),
        };
        let rel = path.as_str().split_once('/').map_or(".", |(_, rel)| rel);
        let Ok(rel) = std::ffi::CString::new(rel) else {
            return;
        };
        let dir = SharedFd::owned(&self.peers.exports[export].dir);
        let only_dirs = if list { libc::O_DIRECTORY } else { 0 };
        let how = How {
            flags: (libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | only_dirs) as u64,
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
                resumed_from: 0,
                crc: 0,
                buf: Some(Vec::with_capacity(PIECE)),
                ready: false,
                ended: false,
                listing: list.then(Arc::default),
                resume: resume.then(Default::default),
                export,
                lease: None,
            });
        }
        self.queue_serving_op(k, tag::OPEN_SRC, op::OpenAt2::new(dir, rel, how));
    }

    pub(super) fn queue_serving_op(&mut self, k: usize, tag: u32, op: impl Into<op::AnyOp>) {
        match self.io.queue_op(Owner::Peer(k), tag, op) {
            Ok(_) => {
                if let Some(conn) = self.peers.conns.get_mut(k) {
                    conn.ops += 1;
                    conn.serving_ops += 1;
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
        let Some(serving) = self.peers.serving_mut(k) else {
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
        if let Some(out) = serving.listing.as_ref() {
            let walk = op::ListDir::new(SharedFd::owned(&file), MAX_LISTED, Arc::clone(out));
            serving.file = Some(file);
            return self.queue_serving_op(k, tag::LIST_DIR, walk);
        }
        self.stat_served(k, file);
    }

    /// What the listing found, as the file served: in a memfd, whose
    /// size, mode and times go out as a file's.
    pub(super) fn on_listed(&mut self, k: usize, result: i32) {
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        let Some(serving) = conn.serving.as_mut() else {
            return;
        };
        if result < 0 {
            let what = format!("{}: cannot list it", serving.shown);
            return self.stop_serving(k, Some(os_failure(-result, what)), true);
        }
        let found = serving
            .listing
            .take()
            .and_then(|out| Arc::try_unwrap(out).ok())
            .and_then(|out| out.into_inner().ok())
            .unwrap_or_default();
        let bytes = encode_listing(&listing_of(found));
        let memfd = match listing_file(&bytes) {
            Ok(fd) => Rc::new(fd),
            Err(e) => {
                let why = format!("{}: cannot hold its listing: {e}", serving.shown);
                return self.stop_serving(k, Some((FailureKind::Io, why)), true);
            }
        };
        if let Some(dir) = serving.file.take() {
            match Rc::try_unwrap(dir) {
                Ok(fd) => self.closing.doomed.push(fd),
                Err(shared) => conn.retired.push(shared),
            }
        }
        self.stat_served(k, memfd);
    }

    /// Asks what the file is (statx), to answer `Ready`.
    fn stat_served(&mut self, k: usize, file: Rc<OwnedFd>) {
        let Some(serving) = self.peers.serving_mut(k) else {
            return;
        };
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
        let Some(serving) = self.peers.serving_mut(k) else {
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
        if let Some(compare) = serving.resume.as_mut() {
            compare.meta = Some(meta);
            return self.compare_next(k);
        }
        serving.ready = true;
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
        // No lease (no buffer pool to lend permits): reads go as they come.
        if let Some(lease) = self.serving_lease(k) {
            if !self.lease_take(lease, 1) {
                return;
            }
        }
        let Some(serving) = self.peers.serving_mut(k) else {
            return;
        };
        let (Some(mut buf), Some(file)) = (serving.buf.take(), serving.file.as_ref()) else {
            return;
        };
        let want = (serving.size - serving.sent).min(PIECE as u64) as usize;
        buf.resize(want, 0);
        let read = op::ReadInto::new(SharedFd::owned(file), buf, 0, Some(serving.sent));
        self.queue_serving_op(k, tag::READ_SRC, read);
    }

    /// The job of the file being served on connection `k`, made at its
    /// first read.
    fn serving_lease(&mut self, k: usize) -> Option<LeaseKey> {
        let s = self.peers.serving_mut(k)?;
        if s.lease.is_some() {
            return s.lease;
        }
        let (xfer, export, shown, left) = (s.xfer, s.export, s.shown.clone(), s.size - s.sent);
        let lease = self.open_lease(k, (xfer, export, &shown), Way::Served, left);
        if let Some(s) = self.peers.serving_mut(k) {
            s.lease = lease;
        }
        lease
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
        let lease = serving.lease;
        self.lease_done(lease, result.max(0) as u64);
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
                info!(
                    peer = %conn.who,
                    path = %serving.shown,
                    bytes = serving.sent.saturating_sub(serving.resumed_from),
                    resumed_from = serving.resumed_from,
                    "sent a file to another daemon"
                );
            }
            Some((kind, why)) => {
                warn!(peer = %conn.who, path = %serving.shown, ?kind, "sending a file failed: {why}")
            }
        }
        self.end_lease(serving.lease, failure.as_ref());
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
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

/// A walk as the wire lists it: the directory's own permission bits and
/// time (its entry comes first, with an empty path), then every entry
/// beneath it.
fn listing_of(found: Vec<Found>) -> Listing {
    let mut found = found.into_iter().peekable();
    let root = found.next_if(|f| f.path.is_empty());
    let (mode, mtime) = root.map_or((0, Timestamp::default()), |r| {
        (r.mode & 0o7777, timestamp(r.mtime))
    });
    Listing {
        mode,
        mtime,
        entries: listing_entries(found),
    }
}

fn timestamp((secs, nanos): (i64, u32)) -> Timestamp {
    Timestamp { secs, nanos }
}

/// The entries beneath as the wire lists them: kinds from the mode, the
/// permission bits, names as UTF-8 (one that is not is listed as `Other`,
/// which the puller skips).
fn listing_entries(found: impl Iterator<Item = Found>) -> Vec<ListEntry> {
    found
        .map(|f| {
            let kind = match f.mode & libc::S_IFMT {
                libc::S_IFREG => EntryKind::File,
                libc::S_IFDIR => EntryKind::Dir,
                libc::S_IFLNK => EntryKind::Symlink,
                _ => EntryKind::Other,
            };
            let (path, kind) = match String::from_utf8(f.path) {
                Ok(path) => (path, kind),
                Err(e) => (
                    String::from_utf8_lossy(e.as_bytes()).into_owned(),
                    EntryKind::Other,
                ),
            };
            ListEntry {
                path,
                kind,
                size: f.size,
                mode: f.mode & 0o7777,
                mtime: timestamp(f.mtime),
            }
        })
        .collect()
}

/// `bytes` in a new memfd, to serve as a file. Writing to memory cannot
/// wait on a file system, so this runs on the loop thread.
fn listing_file(bytes: &[u8]) -> std::io::Result<OwnedFd> {
    // SAFETY: the name is a NUL-terminated literal; memfd_create takes no
    // other pointer.
    let fd = unsafe { libc::memfd_create(c"ringxfer-listing".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes)?;
    Ok(OwnedFd::from(file))
}
