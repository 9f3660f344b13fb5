//! One file pushed by another daemon, from `Put` to `Done`:
//!
//! 1. open the directory beneath the export (openat2, RESOLVE_BENEATH, as
//!    the export's user), then create the hidden part file in it; answer
//!    `Ready` (or `Refused`);
//! 2. write the data at its offsets as it arrives, with its CRC-32C;
//! 3. at `End`, once every write has landed: the size and CRC must be what
//!    the sender announced and what arrived; then mode and times, fsync if
//!    asked, rename over the name, fsync of the directory if asked;
//!    answer `Done`.
//!
//! Anything else (a failed write, a short or corrupt file, a cancel)
//! removes the part file, after the writes in flight have landed, and
//! answers `Failed`: the name keeps what it had. A lost connection (the
//! sender killed, the link cut, this daemon stopping) keeps the part, so
//! that a `Put { resume: true }` of the same name can continue it
//! (resume.rs).
//!
//! A stripe of a file pushed over several connections at once writes its
//! range into the same part, and the last stripe of the set publishes
//! (stripes.rs). A directory (`Put::directory`, a tree's) is made with the
//! directories it lacks, takes no data, and gets its mode and times at
//! `End`; nothing is renamed, and a failure removes nothing.

use std::collections::VecDeque;
use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::rc::Rc;
use std::time::Instant;

use ringxfer_ipc::proto::peer::{FileMeta, PeerMessage, Put, RemotePath, Stripe};
use ringxfer_ipc::proto::FailureKind;
use tracing::{info, warn};

use super::conn::{PeerConn, WRITE_BUFFER};
use super::lease::{LeaseKey, Way};
use super::names::{self, Target};
use super::stripes::{Landing, Leaving, NameKey};
use super::tag;
use crate::engine::Engine;
use crate::io::fd::SharedFd;
use crate::io::op::{self, openat2::How, set_meta::Meta, AnyOp};
use crate::io::ops::Owner;
use crate::transfer::errno::failure_kind;

/// Where a file being received is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    OpenParent,
    OpenPart,
    /// Resuming: reading the kept part, sending its block sums.
    Summing,
    /// Resuming: the sums went out; the sender's `Ready` says where its
    /// data starts.
    AwaitingOffset,
    Receiving,
    /// A stripe that landed, waiting for the others (stripes.rs).
    Landed,
    Publishing,
    /// Failed: waiting for writes in flight, then removing the part.
    Aborting,
}

pub(super) struct Incoming {
    pub(super) xfer: u64,
    pub(super) export: usize,
    /// The remote path, as the sender named it.
    pub(super) shown: String,
    pub(super) target: Target,
    pub(super) meta: FileMeta,
    /// One stripe of the file among several connections (stripes.rs).
    pub(super) stripe: Option<Stripe>,
    /// A directory, not a file; whether its own name was made yet (then
    /// `parent` is the directory itself).
    pub(super) directory: bool,
    pub(super) leaf_made: bool,
    fsync: bool,
    /// Continue the part kept (opened without truncating it); its block
    /// sums, how many went out, and the bytes they cover.
    pub(super) resume: bool,
    pub(super) sums: Vec<u32>,
    pub(super) sums_sent: usize,
    pub(super) summed: u64,
    /// Where the sender's data started (0 unless resumed).
    pub(super) resumed_from: u64,
    /// Make the directories it lacks (`Put::mkdir`); those still to make
    /// or open, in order, once that started.
    pub(super) mkdir: bool,
    pub(super) dirs: Vec<CString>,
    pub(super) parent: Option<Rc<OwnedFd>>,
    pub(super) file: Option<Rc<OwnedFd>>,
    pub(super) step: Step,
    /// Bytes received (and copied for writing), and their CRC-32C.
    pub(super) received: u64,
    pub(super) crc: u32,
    /// What `End` said: size and CRC-32C.
    end: Option<(u64, u32)>,
    /// Its operations in flight (opens, writes, publishing steps): it is
    /// forgotten only at zero.
    pub(super) in_flight: usize,
    /// `Ready` went out: a failure is answered with `Failed`, not `Refused`.
    pub(super) ready: bool,
    failure: Option<(FailureKind, String)>,
    started: Instant,
    /// When it landed, a stripe waiting for the others (stripes.rs).
    pub(super) landed_at: Option<Instant>,
    /// Its job, which lends each write a permit (lease.rs), and the
    /// buffers filled that wait for one, counted in `in_flight`.
    pub(super) lease: Option<LeaseKey>,
    pending: VecDeque<(u64, Vec<u8>)>,
}

impl Incoming {
    /// Whether a failure leaves the part for a later resume: only a lost
    /// connection does, and only once the part holds a whole block (what
    /// a resume can use; a buffer not yet full is not written).
    fn keeps_part(&self) -> bool {
        let lost = matches!(&self.failure, Some((FailureKind::PeerGone, _)));
        let wrote = self.received - self.span().0;
        lost && (wrote >= WRITE_BUFFER as u64 || self.summed > 0)
    }

    /// Waiting for the sender's bytes (not for the daemon's own steps).
    pub(super) fn receiving(&self) -> bool {
        matches!(self.step, Step::Receiving | Step::AwaitingOffset)
    }

    /// Where its data starts (a stripe's offset, or 0) and ends.
    fn span(&self) -> (u64, u64) {
        match self.stripe {
            Some(s) => (s.offset, s.offset + s.len),
            None => (0, self.meta.size),
        }
    }

    /// The name it is received under, if it is a stripe of a set.
    pub(super) fn stripe_name(&self) -> Option<NameKey> {
        self.stripe.map(|_| (self.export, self.shown.clone()))
    }
}

/// Takes raw data received for `xfer` at `offset` into `conn`'s write
/// buffers; buffers filled go to `full`. An error is a protocol error.
pub(super) fn take_data(
    conn: &mut PeerConn,
    xfer: u64,
    offset: u64,
    bytes: &[u8],
    full: &mut Vec<(u64, Vec<u8>)>,
) -> Result<(), String> {
    let Some(inc) = conn.incoming.as_mut().filter(|i| i.xfer == xfer) else {
        return Err(format!(
            "Data for transfer {xfer}, which is not being received"
        ));
    };
    match inc.step {
        // A failed file's data still in flight is dropped.
        Step::Aborting => return Ok(()),
        Step::Receiving if inc.end.is_none() => {}
        _ => {
            return Err(format!(
                "Data for transfer {xfer} before Ready or after End"
            ))
        }
    }
    if offset != inc.received {
        return Err(format!(
            "Data for transfer {xfer} at offset {offset}, where {} was next",
            inc.received
        ));
    }
    let len = bytes.len() as u64;
    let (_, end) = inc.span();
    if inc.received + len > end {
        return Err(format!(
            "Data for transfer {xfer} past its announced end at {end} bytes"
        ));
    }
    inc.received += len;
    inc.crc = crc32c::crc32c_append(inc.crc, bytes);
    if !conn.copy_in(offset, bytes, full) {
        return Err(format!(
            "Data for transfer {xfer} past what the daemon can hold"
        ));
    }
    Ok(())
}

/// A failure in the client protocol's terms, with the OS error.
pub(super) fn os_failure(errno: i32, what: String) -> (FailureKind, String) {
    let err = std::io::Error::from_raw_os_error(errno);
    let kind = if errno == libc::EXDEV {
        FailureKind::PermissionDenied
    } else {
        failure_kind(errno)
    };
    let why = if errno == libc::EXDEV {
        "it leads outside the export (a symbolic link or mount point)".to_string()
    } else {
        err.to_string()
    };
    (kind, format!("{what}: {why}"))
}

impl Engine {
    /// A `Put`: checks the name, then opens its directory.
    pub(super) fn start_incoming(&mut self, k: usize, put: Put) {
        let xfer = put.xfer;
        let (export, target) = match self.check_put(k, &put) {
            Ok(found) => found,
            Err((kind, message)) => {
                return self.send_peer(
                    k,
                    &PeerMessage::Refused {
                        xfer,
                        kind,
                        message,
                    },
                )
            }
        };
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        conn.ensure_write_buffers();
        self.peers
            .busy
            .insert((export, put.path.as_str().to_string()));
        let at_root = target.parent.as_bytes() == b".";
        let start = put.stripe.map_or(0, |s| s.offset);
        conn.incoming = Some(Incoming {
            xfer,
            export,
            shown: put.path.as_str().to_string(),
            target,
            meta: put.meta,
            stripe: put.stripe,
            directory: put.directory,
            leaf_made: false,
            fsync: put.fsync,
            resume: put.resume,
            sums: Vec::new(),
            sums_sent: 0,
            summed: 0,
            resumed_from: 0,
            mkdir: put.mkdir || put.directory,
            dirs: Vec::new(),
            parent: None,
            file: None,
            step: Step::OpenParent,
            received: start,
            crc: 0,
            end: None,
            in_flight: 0,
            ready: false,
            failure: None,
            started: Instant::now(),
            landed_at: None,
            lease: None,
            pending: VecDeque::new(),
        });
        if at_root {
            return self.open_part(k);
        }
        let Some(inc) = self.peers.incoming(k) else {
            return;
        };
        let dir = SharedFd::owned(&self.peers.exports[export].dir);
        let how = How {
            flags: (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
            mode: 0,
            resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
        };
        let open = op::OpenAt2::new(dir, inc.target.parent.clone(), how);
        self.queue_incoming_op(k, tag::OPEN_PARENT, open);
    }

    /// The export and the cut name of a `Put`, or why it is refused.
    fn check_put(&mut self, k: usize, put: &Put) -> Result<(usize, Target), (FailureKind, String)> {
        if let Some(e) = self.draining_refusal() {
            return Err((e.kind, e.message));
        }
        let busy_conn = self.peers.conns.get(k).is_none_or(|c| c.busy());
        if busy_conn {
            let why = "another file is being moved on this connection".to_string();
            return Err((FailureKind::LimitExceeded, why));
        }
        let (export, target) = self.resolve_export(k, &put.path)?;
        let name = (export, put.path.as_str().to_string());
        if put.directory && (put.stripe.is_some() || put.resume || put.meta.size != 0) {
            let why = format!(
                "{}: a directory has no data: no size, stripes or resume",
                put.path.as_str()
            );
            return Err((FailureKind::InvalidRequest, why));
        }
        if put.stripe.is_some() {
            self.join_stripe(k, &name, put)?;
        } else if self.peers.busy.contains(&name) {
            let why = format!("{}: another transfer is writing it", put.path.as_str());
            return Err((FailureKind::LimitExceeded, why));
        }
        Ok((export, target))
    }

    /// The export `path` names and the path cut, if connection `k` may use
    /// it; its operations run as the export's user from now on.
    pub(super) fn resolve_export(
        &mut self,
        k: usize,
        path: &RemotePath,
    ) -> Result<(usize, Target), (FailureKind, String)> {
        let target = names::split(path).map_err(|e| (FailureKind::InvalidRequest, e))?;
        let shown = path.as_str();
        let Some(export) = self
            .peers
            .exports
            .iter()
            .position(|e| e.name == target.export)
        else {
            let why = format!(
                "{shown}: this daemon has no export named {:?}",
                target.export
            );
            return Err((FailureKind::PermissionDenied, why));
        };
        if let Err(who) = self.export_open_to(k, export) {
            let why = format!("{shown}: export {:?} is not open to {who}", target.export);
            return Err((FailureKind::PermissionDenied, why));
        }
        let identity = &self.peers.exports[export].identity;
        let personality = match self.io.ring.personality(identity) {
            Ok(p) => p.unwrap_or(0),
            Err(e) => {
                let why = format!("{shown}: cannot act as the export's user: {e}");
                return Err((FailureKind::PermissionDenied, why));
            }
        };
        self.io.ops.set_personality(Owner::Peer(k), personality);
        Ok((export, target))
    }

    /// Whether connection `k` may write into `export`: its `peers` list,
    /// if it has one, names the pinned peer at the other end; else who it
    /// is, for the refusal.
    fn export_open_to(&self, k: usize, export: usize) -> Result<(), String> {
        let Some(allowed) = &self.peers.exports[export].peers else {
            return Ok(());
        };
        let conn = self.peers.conns.get(k);
        match conn.and_then(|c| c.peer.clone()) {
            Some(name) if allowed.contains(&name) => Ok(()),
            Some(name) => Err(format!("peer {name:?}")),
            None => Err("a daemon without TLS".into()),
        }
    }

    /// Queues an operation of the file being received on connection `k`
    /// (if it cannot be, the file fails).
    pub(super) fn queue_incoming_op(&mut self, k: usize, tag: u32, op: impl Into<AnyOp>) {
        let _ = self.try_incoming_op(k, tag, op);
    }

    /// As `queue_incoming_op`: whether it was queued.
    fn try_incoming_op(&mut self, k: usize, tag: u32, op: impl Into<AnyOp>) -> bool {
        match self.io.queue_op(Owner::Peer(k), tag, op) {
            Ok(_) => {
                if let Some(conn) = self.peers.conns.get_mut(k) {
                    conn.ops += 1;
                    if let Some(inc) = conn.incoming.as_mut() {
                        inc.in_flight += 1;
                    }
                }
                true
            }
            Err(e) => {
                self.fail_incoming(
                    k,
                    (FailureKind::Io, format!("cannot queue an operation: {e}")),
                );
                false
            }
        }
    }

    /// Queues a write of received bytes, counted as in flight until it
    /// lands (in_flight.rs).
    fn queue_write(&mut self, k: usize, write: op::WriteFrom) {
        let len = write.buf.len();
        if self.try_incoming_op(k, tag::WRITE, write) {
            if let Some(conn) = self.peers.conns.get_mut(k) {
                conn.writing += len;
            }
        }
    }

    /// The completion of a step of the file being received (not a write).
    pub(super) fn on_incoming_step(&mut self, k: usize, tag: u32, result: i32) {
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        let closing = conn.closing;
        let Some(inc) = conn.incoming.as_mut() else {
            return;
        };
        inc.in_flight -= 1;
        if result >= 0 {
            match tag {
                tag::OPEN_PARENT => inc.parent = Some(adopt(result)),
                tag::OPEN_DIR => {
                    if let Some(old) = inc.parent.replace(adopt(result)) {
                        self.closing.doomed.extend(Rc::try_unwrap(old).ok());
                    }
                }
                tag::OPEN_PART => inc.file = Some(adopt(result)),
                // The part is the file now: nothing to remove if a later step fails.
                tag::RENAME => inc.file = None,
                _ => {}
            }
        }
        if tag == tag::UNLINK {
            if result < 0 && result != -libc::ENOENT {
                let err = std::io::Error::from_raw_os_error(-result);
                warn!(path = %inc.shown, "cannot remove the hidden part file: {err}");
            }
            inc.file = None;
            return self.finish_abort(k);
        }
        if inc.step == Step::Aborting {
            return self.advance_abort(k);
        }
        if closing {
            return self.fail_incoming(k, (FailureKind::PeerGone, "the connection closed".into()));
        }
        if tag == tag::OPEN_PARENT && result == -libc::ENOENT && inc.mkdir && inc.dirs.is_empty() {
            return self.make_dirs(k);
        }
        if matches!(tag, tag::MKDIR | tag::OPEN_DIR) {
            return self.on_dir_step(k, tag, result);
        }
        if result < 0 {
            let what = format!("{}: {}", inc.shown, step_name(tag, &inc.target));
            return self.fail_incoming(k, os_failure(-result, what));
        }
        match tag {
            tag::OPEN_PARENT => self.open_part(k),
            tag::OPEN_PART => self.part_opened(k),
            tag::TRUNCATE => self.set_meta(k),
            tag::SET_META => self.after_meta(k),
            tag::SYNC => self.rename_into_place(k),
            tag::RENAME => self.after_rename(k),
            tag::SYNC_DIR => self.incoming_done(k),
            _ => {}
        }
    }

    /// The directory is open (none opened: the export itself): create the
    /// part.
    pub(super) fn open_part(&mut self, k: usize) {
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        let Some(inc) = conn.incoming.as_mut() else {
            return;
        };
        if inc.directory {
            if inc.leaf_made {
                return self.ready_for_data(k);
            }
            // Its own name is the last directory to make.
            inc.leaf_made = true;
            inc.dirs = vec![inc.target.leaf.clone()];
            return self.make_next_dir(k);
        }
        let parent = match &inc.parent {
            Some(parent) => Rc::clone(parent),
            None => Rc::clone(&self.peers.exports[inc.export].dir),
        };
        // A resumed part is kept, and read before it is written; the
        // stripes of a file share theirs (cut to the file's size at the end).
        let keep = if inc.resume || inc.stripe.is_some() {
            libc::O_RDWR
        } else {
            libc::O_WRONLY | libc::O_TRUNC
        };
        let how = How {
            flags: (keep | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64,
            mode: 0o600,
            resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
        };
        let open = op::OpenAt2::new(SharedFd::owned(&parent), inc.target.part.clone(), how);
        inc.parent = Some(parent);
        inc.step = Step::OpenPart;
        self.queue_incoming_op(k, tag::OPEN_PART, open);
    }

    fn part_opened(&mut self, k: usize) {
        let resume = self.peers.incoming(k).is_some_and(|i| i.resume);
        if resume {
            return self.sum_part(k);
        }
        self.ready_for_data(k);
    }

    /// The part (or, for a directory, the directory) is there and open:
    /// the data may come, from offset 0.
    fn ready_for_data(&mut self, k: usize) {
        let Some(inc) = self.peers.incoming_mut(k) else {
            return;
        };
        inc.step = Step::Receiving;
        inc.ready = true;
        let ready = PeerMessage::Ready {
            xfer: inc.xfer,
            offset: 0,
            meta: None,
        };
        self.send_peer(k, &ready);
        self.arm_peer_recv(k);
    }

    /// Writes the buffers filled (`full`) at their offsets, each once its
    /// job lends it a permit.
    pub(super) fn write_full(&mut self, k: usize, full: &mut Vec<(u64, Vec<u8>)>) {
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        for (offset, buf) in full.drain(..) {
            let inc = conn
                .incoming
                .as_mut()
                .filter(|i| i.step == Step::Receiving && i.file.is_some());
            let Some(inc) = inc else {
                conn.give_back(buf);
                continue;
            };
            // Waiting for its permit, it is in flight to the peer's bytes
            // (in_flight.rs) and to the file's end.
            conn.writing += buf.len();
            inc.in_flight += 1;
            inc.pending.push_back((offset, buf));
        }
        self.write_pending(k);
    }

    /// Writes the buffers waiting, as far as the file's job has permits.
    pub(super) fn write_pending(&mut self, k: usize) {
        loop {
            let Some(inc) = self.peers.incoming(k) else {
                return;
            };
            let waiting = inc.pending.len();
            if waiting == 0 || inc.step != Step::Receiving {
                return;
            }
            // No lease (no buffer pool to lend permits): writes go as they come.
            if let Some(lease) = self.incoming_lease(k) {
                if !self.lease_take(lease, waiting) {
                    return;
                }
            }
            let Some(conn) = self.peers.conns.get_mut(k) else {
                return;
            };
            let Some(inc) = conn.incoming.as_mut() else {
                return;
            };
            let Some((offset, buf)) = inc.pending.pop_front() else {
                return;
            };
            inc.in_flight -= 1;
            conn.writing -= buf.len();
            let Some(file) = inc.file.as_ref().map(SharedFd::owned) else {
                conn.give_back(buf);
                return;
            };
            self.queue_write(k, op::WriteFrom::new(file, buf, offset));
        }
    }

    /// The job of the file being received on connection `k`, made at its
    /// first write.
    fn incoming_lease(&mut self, k: usize) -> Option<LeaseKey> {
        let inc = self.peers.incoming(k)?;
        if inc.lease.is_some() {
            return inc.lease;
        }
        let (start, end) = inc.span();
        let id = (inc.xfer, inc.export, inc.shown.clone());
        let lease = self.open_lease(k, (id.0, id.1, &id.2), Way::Received, end - start);
        if let Some(inc) = self.peers.incoming_mut(k) {
            inc.lease = lease;
        }
        lease
    }

    /// Drops the buffers waiting for a permit (the file failed).
    fn drop_pending(&mut self, k: usize) {
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        let Some(inc) = conn.incoming.as_mut() else {
            return;
        };
        let pending: Vec<(u64, Vec<u8>)> = inc.pending.drain(..).collect();
        inc.in_flight -= pending.len();
        let lease = inc.lease;
        for (_, buf) in pending {
            conn.writing -= buf.len();
            conn.give_back(buf);
        }
        // Nothing waits for a permit any more.
        self.lease_waiting(lease, 0);
    }

    pub(super) fn on_incoming_write(&mut self, k: usize, write: op::WriteFrom, result: i32) {
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        conn.writing = conn.writing.saturating_sub(write.buf.len());
        let Some(inc) = conn.incoming.as_mut() else {
            return conn.give_back(write.buf);
        };
        inc.in_flight -= 1;
        let lease = inc.lease;
        self.lease_done(lease, result.max(0) as u64);
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        let Some(inc) = conn.incoming.as_mut() else {
            return conn.give_back(write.buf);
        };
        let (offset, mut buf) = (write.offset, write.buf);
        if result < 0 || inc.step == Step::Aborting || conn.closing {
            let what = format!("{}: write at offset {offset}", inc.shown);
            conn.give_back(buf);
            if result < 0 {
                return self.fail_incoming(k, os_failure(-result, what));
            }
            return self.advance_abort(k);
        }
        let n = result as usize;
        if n < buf.len() && n > 0 {
            // A short write: the rest goes again, from where it stopped,
            // with a permit of its own.
            buf.drain(..n);
            conn.writing += buf.len();
            inc.in_flight += 1;
            inc.pending.push_front((offset + n as u64, buf));
            return self.write_pending(k);
        }
        let stuck = (n == 0 && !buf.is_empty())
            .then(|| format!("{}: write at offset {offset} wrote nothing", inc.shown));
        let ended = inc.end.is_some() && inc.in_flight == 0;
        conn.give_back(buf);
        if let Some(why) = stuck {
            return self.fail_incoming(k, (FailureKind::Io, why));
        }
        if ended {
            self.check_end(k);
            // Its bytes are all written: reads held for them need not wait
            // for the publish.
            return self.release_held_reads();
        }
        self.arm_peer_recv(k);
        self.release_held_reads();
    }

    /// `End`: every byte is in the buffers; write the last one and check.
    pub(super) fn end_incoming(&mut self, k: usize, xfer: u64, size: u64, crc: u32) {
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        let Some(inc) = conn.incoming.as_mut().filter(|i| i.xfer == xfer) else {
            return self.close_peer(
                k,
                &format!("protocol error: End for transfer {xfer}, which is not being received"),
            );
        };
        if inc.step == Step::Aborting {
            return;
        }
        if inc.step != Step::Receiving || inc.end.is_some() {
            return self.close_peer(
                k,
                &format!("protocol error: End for transfer {xfer} before Ready or twice"),
            );
        }
        inc.end = Some((size, crc));
        let mut full = Vec::with_capacity(1);
        conn.flush_into(&mut full);
        self.write_full(k, &mut full);
        let idle = self.peers.incoming(k).is_some_and(|i| i.in_flight == 0);
        if idle {
            self.check_end(k);
        }
    }

    /// Every write landed: the file must be whole and unchanged.
    fn check_end(&mut self, k: usize) {
        let Some(inc) = self.peers.incoming_mut(k) else {
            return;
        };
        let Some((size, crc)) = inc.end else { return };
        let (start, end) = inc.span();
        if size != end - start || inc.received != end {
            let why = format!(
                "{}: the sender ended it at {} bytes ({} received) where it announced {}",
                inc.shown,
                size,
                inc.received - start,
                end - start
            );
            return self.fail_incoming(k, (FailureKind::SourceShort, why));
        }
        if crc != inc.crc {
            let why = format!(
                "{}: CRC-32C of the bytes received is {:08x}, the sender's is {crc:08x}",
                inc.shown, inc.crc
            );
            return self.fail_incoming(k, (FailureKind::Mismatch, why));
        }
        inc.step = Step::Publishing;
        if let Some(name) = inc.stripe_name() {
            inc.step = Step::Landed;
            inc.landed_at = Some(Instant::now());
            match self.stripe_landed(k, &name) {
                Landing::Wait => {
                    // Its bytes are written: reads held for them go on, and
                    // its own read hears Ping and Cancel while it waits.
                    self.arm_peer_recv(k);
                    return self.release_held_reads();
                }
                Landing::Fail(kind, why) => return self.fail_incoming(k, (kind, why)),
                Landing::Publish => {}
            }
        }
        let Some(inc) = self.peers.incoming_mut(k) else {
            return;
        };
        inc.step = Step::Publishing;
        if inc.directory {
            return self.set_meta(k);
        }
        let Some(file) = inc.file.as_ref().map(SharedFd::owned) else {
            return;
        };
        if inc.resume || inc.stripe.is_some() {
            // A kept or shared part may be longer than the file is now.
            let cut = op::Ftruncate::new(file, inc.meta.size);
            return self.queue_incoming_op(k, tag::TRUNCATE, cut);
        }
        self.set_meta(k);
    }

    /// Mode (permission bits) and times, before the rename (of a
    /// directory: of the directory itself, which is `parent` by now).
    fn set_meta(&mut self, k: usize) {
        let Some(inc) = self.peers.incoming(k) else {
            return;
        };
        let target = if inc.directory {
            inc.parent.as_ref()
        } else {
            inc.file.as_ref()
        };
        let Some(file) = target.map(SharedFd::owned) else {
            return;
        };
        // Permission bits only: a sender cannot make a setuid or setgid
        // file owned by the export's user. A directory keeps setgid (new
        // files take its group) and sticky, as `cp -a` does.
        let bits = if inc.directory { 0o3777 } else { 0o777 };
        let meta = Meta {
            mode: inc.meta.mode & bits,
            atime: (inc.meta.atime.secs, inc.meta.atime.nanos),
            mtime: (inc.meta.mtime.secs, inc.meta.mtime.nanos),
        };
        self.queue_incoming_op(k, tag::SET_META, op::SetMeta::new(file, meta));
    }

    fn after_meta(&mut self, k: usize) {
        let Some(inc) = self.peers.incoming(k) else {
            return;
        };
        if inc.directory {
            return match (inc.fsync, inc.parent.as_ref()) {
                (true, Some(dir)) => {
                    let sync = op::Fsync::new(SharedFd::owned(dir), false);
                    self.queue_incoming_op(k, tag::SYNC_DIR, sync)
                }
                _ => self.incoming_done(k),
            };
        }
        match (inc.fsync, inc.file.as_ref()) {
            (true, Some(file)) => {
                let sync = op::Fsync::new(SharedFd::owned(file), false);
                self.queue_incoming_op(k, tag::SYNC, sync);
            }
            _ => self.rename_into_place(k),
        }
    }

    fn rename_into_place(&mut self, k: usize) {
        let Some(inc) = self.peers.incoming(k) else {
            return;
        };
        let Some(parent) = inc.parent.as_ref().map(SharedFd::owned) else {
            return;
        };
        let (from, to) = (inc.target.part.clone(), inc.target.leaf.clone());
        self.queue_incoming_op(k, tag::RENAME, op::RenameAt::new(parent, from, to));
    }

    fn after_rename(&mut self, k: usize) {
        let Some(inc) = self.peers.incoming_mut(k) else {
            return;
        };
        // The part is the file now: nothing to remove if a later step fails.
        inc.file = None;
        match (inc.fsync, inc.parent.as_ref()) {
            (true, Some(dir)) => {
                let sync = op::Fsync::new(SharedFd::owned(dir), false);
                self.queue_incoming_op(k, tag::SYNC_DIR, sync);
            }
            _ => self.incoming_done(k),
        }
    }

    pub(super) fn incoming_done(&mut self, k: usize) {
        let publisher = self
            .peers
            .incoming(k)
            .filter(|i| i.step == Step::Publishing)
            .and_then(Incoming::stripe_name);
        if let Some(name) = publisher {
            self.stripes_published(&name);
        }
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        let Some(inc) = conn.incoming.take() else {
            return;
        };
        let export = self.peers.exports[inc.export].path.display();
        if inc.directory {
            info!(peer = %conn.who, path = %inc.shown, %export, "received a directory from another daemon");
        } else {
            info!(
                peer = %conn.who,
                path = %inc.shown,
                %export,
                bytes = inc.received,
                resumed_from = inc.resumed_from,
                seconds = inc.started.elapsed().as_secs_f64(),
                "received a file from another daemon"
            );
        }
        let done = PeerMessage::Done {
            xfer: inc.xfer,
            crc32c: inc.crc,
        };
        self.release_incoming(inc);
        self.send_peer(k, &done);
        self.arm_peer_recv(k);
        self.release_held_reads();
    }

    /// `Cancel` from the sender, or the file's job cancelled here
    /// (`failure` says which).
    pub(super) fn cancel_incoming(&mut self, k: usize, xfer: u64, failure: (FailureKind, String)) {
        let Some(inc) = self.peers.incoming(k).filter(|i| i.xfer == xfer) else {
            return;
        };
        if !self.incoming_late(inc) {
            self.fail_incoming(k, failure);
        }
    }

    /// Whether `inc` is being published (or is a stripe landed whose set
    /// publishes): a cancel then comes too late, as for a file renamed.
    pub(super) fn incoming_late(&self, inc: &Incoming) -> bool {
        match inc.stripe_name() {
            Some(name) => self.stripes_publishing(&name),
            None => inc.step == Step::Publishing,
        }
    }

    /// The connection is closing: the file being received fails (`kind`
    /// PeerGone: the connection was lost, and its part is kept).
    pub(super) fn abandon_incoming(&mut self, k: usize, why: &str, kind: FailureKind) {
        let live = self
            .peers
            .incoming(k)
            .is_some_and(|i| i.step != Step::Aborting);
        if live {
            self.fail_incoming(k, (kind, why.to_string()));
        }
    }

    /// The file being received failed: wait for writes, remove the part,
    /// then answer.
    pub(super) fn fail_incoming(&mut self, k: usize, failure: (FailureKind, String)) {
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        conn.discard_fill();
        let Some(inc) = conn.incoming.as_mut() else {
            return;
        };
        if inc.step == Step::Aborting {
            return;
        }
        inc.step = Step::Aborting;
        let name = inc.stripe_name();
        self.drop_pending(k);
        if let Some(name) = name {
            self.stripe_failed(k, &name, failure.0, &failure.1);
        }
        if let Some(inc) = self.peers.incoming_mut(k) {
            inc.failure = Some(failure);
        }
        self.advance_abort(k);
    }

    /// Once no write is in flight, removes the part (if made and not yet
    /// renamed, and not kept for a resume), then finishes.
    pub(super) fn advance_abort(&mut self, k: usize) {
        let Some(inc) = self.peers.incoming(k) else {
            return;
        };
        if inc.in_flight > 0 {
            return;
        }
        let leaving = match inc.stripe_name() {
            Some(name) => {
                let wrote = inc.received - inc.span().0;
                Some(self.stripe_leaving(&name, wrote))
            }
            None => None,
        };
        let Some(inc) = self.peers.incoming(k) else {
            return;
        };
        match leaving {
            Some(Leaving::Others | Leaving::Keep) => return self.finish_abort(k),
            // The set's part goes, whatever this stripe opened of it.
            Some(Leaving::Remove) => {
                if let Some(parent) = inc.parent.as_ref() {
                    let unlink =
                        op::UnlinkAt::new(SharedFd::owned(parent), inc.target.part.clone());
                    return self.queue_incoming_op(k, tag::UNLINK, unlink);
                }
                return self.finish_abort(k);
            }
            None => {}
        }
        match (inc.file.as_ref(), inc.parent.as_ref()) {
            (Some(_), Some(_)) if inc.keeps_part() => {
                info!(path = %inc.shown, bytes = inc.received, "the connection was lost: the part is kept for a resume");
                self.finish_abort(k)
            }
            (Some(_), Some(parent)) => {
                let unlink = op::UnlinkAt::new(SharedFd::owned(parent), inc.target.part.clone());
                self.queue_incoming_op(k, tag::UNLINK, unlink);
            }
            _ => self.finish_abort(k),
        }
    }

    /// The part is gone: answer and forget the file.
    fn finish_abort(&mut self, k: usize) {
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        let Some(inc) = conn.incoming.take() else {
            return;
        };
        let (kind, message) = inc
            .failure
            .clone()
            .unwrap_or((FailureKind::Io, "failed".into()));
        warn!(peer = %conn.who, path = %inc.shown, ?kind, "receiving a file failed: {message}");
        let answer = if inc.ready {
            PeerMessage::Failed {
                xfer: inc.xfer,
                kind,
                message,
            }
        } else {
            PeerMessage::Refused {
                xfer: inc.xfer,
                kind,
                message,
            }
        };
        let closing = conn.closing;
        self.release_incoming(inc);
        if !closing {
            self.send_peer(k, &answer);
            self.arm_peer_recv(k);
        }
        self.release_held_reads();
    }

    /// Forgets a finished file: its name is free again, and its
    /// descriptors are closed off the loop thread.
    pub(super) fn release_incoming(&mut self, inc: Incoming) {
        self.end_lease(inc.lease, inc.failure.as_ref());
        match inc.stripe_name() {
            Some(name) => self.stripe_gone(&name),
            None => {
                self.peers.busy.remove(&(inc.export, inc.shown));
            }
        }
        for fd in [inc.file, inc.parent].into_iter().flatten() {
            if let Ok(fd) = Rc::try_unwrap(fd) {
                self.closing.doomed.push(fd);
            }
        }
    }
}

/// The descriptor a successful open returned.
fn adopt(fd: i32) -> Rc<OwnedFd> {
    // SAFETY: called only with the result of a successful openat2, a new
    // descriptor that only its completion knows about.
    Rc::new(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What a step does, for its error message.
fn step_name(tag: u32, target: &Target) -> String {
    let show = |c: &CString| c.to_string_lossy().into_owned();
    match tag {
        tag::OPEN_PARENT => format!("cannot open the directory {}", show(&target.parent)),
        tag::OPEN_PART => format!("cannot create {}", show(&target.part)),
        tag::SET_META => "cannot set its mode and times".into(),
        tag::TRUNCATE => "cannot cut the kept part to the file's size".into(),
        tag::SYNC => "fsync failed".into(),
        tag::RENAME => format!(
            "cannot rename {} over {}",
            show(&target.part),
            show(&target.leaf)
        ),
        tag::SYNC_DIR => "renamed into place, but the fsync of its directory failed".into(),
        _ => "failed".into(),
    }
}
