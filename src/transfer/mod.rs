//! Transfers: what a job moves, and the strategies that move it.
//!
//! `plan` looks at the two descriptors a client passed (with what statx,
//! run off the loop thread, said about them) and decides what the transfer
//! is (which ends are seekable, where it starts and ends); a strategy then
//! moves the bytes.

pub(crate) mod block_sums;
pub(crate) mod buffered;
pub(crate) mod choose;
pub(crate) mod copy_range;
pub(crate) mod dio;
pub(crate) mod errno;
pub(crate) mod fsize;
pub(crate) mod holes;
pub(crate) mod peer_lease;
pub(crate) mod peer_link;
pub(crate) mod peer_pull;
pub(crate) mod peer_push;
pub(crate) mod peer_socket;
pub(crate) mod pipeline;
pub(crate) mod ranges;
pub(crate) mod redial;
pub(crate) mod reflink;
pub(crate) mod splice;
pub(crate) mod step;
pub(crate) mod verify;
pub(crate) mod write_buffers;

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use std::rc::Rc;

use ringxfer_ipc::{FailureKind, Sparse, Strategy, SubmitRequest};

use crate::io::buffer_pool::BufRef;
use crate::io::fd::SharedFd;
use crate::io::op::AnyOp;
use crate::io::ops::Owner;
use crate::io::piece_pool::Piece;
use crate::io::pipe_pool::Pipe;
use crate::io::Io;
use buffered::BufferCopy;
use copy_range::RangeCopy;
use holes::{HolePlan, SrcAlloc};
use peer_lease::PeerLease;
use peer_pull::PeerPull;
use peer_push::PeerPush;
use reflink::ReflinkCopy;
use splice::{Returned, SpliceCopy};

/// The state machine moving one job's bytes, whichever strategy it is.
pub(crate) enum Mover {
    Splice(SpliceCopy),
    Buffered(BufferCopy),
    /// A clone, which borrows neither pipes nor buffers.
    Reflink(ReflinkCopy),
    /// copy_file_range or sendfile on workers, which borrow worker pieces.
    CopyRange(RangeCopy),
    /// A push to another daemon, through pool buffers.
    Peer(PeerPush),
    /// A pull from another daemon, through its own buffers.
    Pull(PeerPull),
    /// Another daemon's file, written or read here by its connection:
    /// the slots it takes of the daemon's share (peer_lease.rs).
    Lease(PeerLease),
}

impl Mover {
    pub(crate) fn strategy(&self) -> Strategy {
        match self {
            Mover::Splice(_) => Strategy::Splice,
            Mover::Buffered(b) => b.strategy(),
            Mover::Reflink(_) => Strategy::Reflink,
            Mover::CopyRange(c) if c.sends() => Strategy::Sendfile,
            Mover::CopyRange(_) => Strategy::CopyRange,
            Mover::Peer(p) => p.strategy(),
            Mover::Pull(p) => p.strategy(),
            Mover::Lease(l) => l.strategy(),
        }
    }

    pub(crate) fn start(&mut self, owner: Owner, io: &mut Io) {
        match self {
            Mover::Splice(c) => c.start(owner, io),
            Mover::Buffered(c) => c.start(owner, io),
            Mover::Reflink(c) => c.start(owner, io),
            Mover::CopyRange(c) => c.start(owner, io),
            Mover::Peer(c) => c.start(owner, io),
            Mover::Pull(c) => c.start(owner, io),
            // Its connection moves the bytes.
            Mover::Lease(_) => {}
        }
    }

    pub(crate) fn wants_pipe(&self) -> bool {
        matches!(self, Mover::Splice(c) if c.wants_pipe())
    }

    pub(crate) fn wants_buffer(&self) -> bool {
        match self {
            Mover::Buffered(c) => c.wants_buffer(),
            Mover::Peer(c) => c.wants_buffer(),
            Mover::Pull(c) => c.wants_buffer(),
            Mover::Lease(c) => c.wants_buffer(),
            _ => false,
        }
    }

    pub(crate) fn wants_piece(&self) -> bool {
        matches!(self, Mover::CopyRange(c) if c.wants_piece())
    }

    pub(crate) fn add_pipe(
        &mut self,
        pipe: Rc<Pipe>,
        owner: Owner,
        io: &mut Io,
        out: &mut Vec<Returned>,
    ) {
        match self {
            Mover::Splice(c) => c.lend(pipe, owner, io, false, out),
            Mover::Buffered(_)
            | Mover::Reflink(_)
            | Mover::CopyRange(_)
            | Mover::Peer(_)
            | Mover::Pull(_)
            | Mover::Lease(_) => out.push(Returned::Clean(pipe)),
        }
    }

    pub(crate) fn add_buffer(
        &mut self,
        buf: BufRef,
        owner: Owner,
        io: &mut Io,
        out: &mut Vec<Returned>,
    ) {
        match self {
            Mover::Buffered(c) => c.lend(buf, owner, io, false, out),
            Mover::Peer(c) => c.lend(buf, owner, io, out),
            Mover::Pull(c) => c.lend(buf, owner, io, out),
            Mover::Lease(c) => c.lend(buf, out),
            Mover::Splice(_) | Mover::Reflink(_) | Mover::CopyRange(_) => {
                out.push(Returned::Buffer(buf))
            }
        }
    }

    pub(crate) fn add_piece(
        &mut self,
        piece: Piece,
        owner: Owner,
        io: &mut Io,
        out: &mut Vec<Returned>,
    ) {
        match self {
            Mover::CopyRange(c) => c.lend(piece, owner, io, false, out),
            Mover::Splice(_)
            | Mover::Buffered(_)
            | Mover::Reflink(_)
            | Mover::Peer(_)
            | Mover::Pull(_)
            | Mover::Lease(_) => out.push(Returned::Piece(piece)),
        }
    }

    /// Handles a completion; with `yield_resources`, other jobs wait for the
    /// kind of resource this one uses, so a chunk that is done gives it back.
    /// `buf`: the pool buffer the completed operation held, handed back.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_complete(
        &mut self,
        tag: u32,
        result: i32,
        buf: Option<BufRef>,
        owner: Owner,
        io: &mut Io,
        yield_resources: bool,
        out: &mut Vec<Returned>,
    ) {
        match self {
            Mover::Splice(c) => c.on_complete(tag, result, buf, owner, io, yield_resources, out),
            Mover::Buffered(c) => c.on_complete(tag, result, buf, owner, io, yield_resources, out),
            Mover::CopyRange(c) => c.on_complete(tag, result, buf, owner, io, yield_resources, out),
            Mover::Reflink(c) => {
                out.extend(buf.map(Returned::Buffer));
                c.on_complete(result)
            }
            Mover::Peer(c) => c.on_complete(tag, result, buf, owner, io, yield_resources, out),
            // A pull's operations all come back through `on_control`; a
            // lease has none.
            Mover::Pull(_) | Mover::Lease(_) => out.extend(buf.map(Returned::Buffer)),
        }
    }

    /// A completion of an operation that holds its own buffer (a push's
    /// control frames), handed back with it; pool buffers a pull held as
    /// permits go to `out`.
    pub(crate) fn on_control(
        &mut self,
        tag: u32,
        result: i32,
        op: AnyOp,
        owner: Owner,
        io: &mut Io,
        out: &mut Vec<Returned>,
    ) {
        match self {
            Mover::Peer(c) => c.on_control(tag, result, op, owner, io),
            Mover::Pull(c) => c.on_control(tag, result, op, owner, io, out),
            _ => {}
        }
    }

    pub(crate) fn fail(
        &mut self,
        err: TransferError,
        owner: Owner,
        io: &mut Io,
        out: &mut Vec<Returned>,
    ) {
        match self {
            Mover::Splice(c) => c.fail(err, owner, io, out),
            Mover::Buffered(c) => c.fail(err, owner, io, out),
            Mover::CopyRange(c) => c.fail(err, owner, io, out),
            Mover::Reflink(c) => c.fail(err, io),
            Mover::Peer(c) => c.fail(err, owner, io, out),
            Mover::Pull(c) => c.fail(err, io, out),
            Mover::Lease(c) => c.fail(err, out),
        }
    }

    pub(crate) fn is_finished(&self) -> bool {
        match self {
            Mover::Splice(c) => c.is_finished(),
            Mover::Buffered(c) => c.is_finished(),
            Mover::CopyRange(c) => c.is_finished(),
            Mover::Reflink(c) => c.is_finished(),
            Mover::Peer(c) => c.is_finished(),
            Mover::Pull(c) => c.is_finished(),
            Mover::Lease(c) => c.is_finished(),
        }
    }

    pub(crate) fn failure(&self) -> Option<&TransferError> {
        match self {
            Mover::Splice(c) => c.failure(),
            Mover::Buffered(c) => c.failure(),
            Mover::CopyRange(c) => c.failure(),
            Mover::Reflink(c) => c.failure(),
            Mover::Peer(c) => c.failure(),
            Mover::Pull(c) => c.failure(),
            Mover::Lease(c) => c.failure(),
        }
    }

    /// A job waiting on another daemon: how long it has said nothing while
    /// this side listened, and how long a `Ping` went unanswered
    /// (peer_link.rs).
    pub(crate) fn peer_silence(
        &self,
        now: std::time::Instant,
    ) -> Option<(std::time::Duration, Option<std::time::Duration>)> {
        match self {
            Mover::Peer(c) => c.peer_silence(now),
            Mover::Pull(c) => c.peer_silence(now),
            _ => None,
        }
    }

    /// Asks the other daemon whether it is still there (`Ping`).
    pub(crate) fn ping_peer(&mut self, owner: Owner, io: &mut Io) {
        match self {
            Mover::Peer(c) => c.ping_peer(owner, io),
            Mover::Pull(c) => c.ping_peer(owner, io),
            _ => {}
        }
    }

    /// The other daemon said nothing for too long, even to a `Ping`: the
    /// job fails as if the connection were cut (a detached push dials
    /// again).
    pub(crate) fn peer_silent(
        &mut self,
        err: TransferError,
        owner: Owner,
        io: &mut Io,
        out: &mut Vec<Returned>,
    ) {
        match self {
            Mover::Peer(c) => c.peer_silent(err, owner, io),
            Mover::Pull(c) => c.fail(err, io, out),
            _ => {}
        }
    }

    /// Bytes taken in so far, for rate limits and shares: what `moved`
    /// counts, except for a pull, whose bytes count as they come off the
    /// network (its writes land later, a 1 MiB buffer at a time: charged
    /// then, four pulls under one limit ran a buffer each past it, 1.38x).
    pub(crate) fn taken(&self) -> u64 {
        match self {
            Mover::Pull(c) => c.bytes_in(),
            other => other.moved(),
        }
    }

    pub(crate) fn moved(&self) -> u64 {
        match self {
            Mover::Splice(c) => c.moved,
            Mover::Buffered(c) => c.moved,
            Mover::CopyRange(c) => c.moved,
            Mover::Reflink(c) => c.moved,
            Mover::Peer(c) => c.moved,
            Mover::Pull(c) => c.moved,
            Mover::Lease(c) => c.moved,
        }
    }

    /// Of `moved`, the bytes skipped as holes (holes.rs): no byte was
    /// read or written for them.
    pub(crate) fn hole_bytes(&self) -> u64 {
        match self {
            Mover::Splice(c) => c.hole_bytes(),
            Mover::Buffered(c) => c.hole_bytes(),
            Mover::CopyRange(c) => c.hole_bytes(),
            Mover::Reflink(_) | Mover::Peer(_) | Mover::Pull(_) | Mover::Lease(_) => 0,
        }
    }

    pub(crate) fn total(&self) -> Option<u64> {
        match self {
            Mover::Splice(c) => c.total(),
            Mover::Buffered(c) => c.total(),
            Mover::CopyRange(c) => c.total(),
            Mover::Reflink(c) => c.total(),
            Mover::Peer(c) => c.total(),
            Mover::Pull(c) => c.total(),
            Mover::Lease(c) => c.total(),
        }
    }

    /// The job's descriptors, shared with its operations.
    pub(crate) fn endpoints(&self) -> Option<Rc<Endpoints>> {
        match self {
            Mover::Splice(c) => Some(c.endpoints()),
            Mover::Buffered(c) => Some(c.endpoints()),
            Mover::CopyRange(c) => Some(c.endpoints()),
            Mover::Reflink(c) => Some(c.endpoints()),
            Mover::Peer(c) => Some(c.endpoints()),
            Mover::Pull(c) => Some(c.endpoints()),
            Mover::Lease(_) => None,
        }
    }

    /// Asks for the source's checksum to be computed in passing, where the
    /// bytes go through memory (the buffered strategies).
    pub(crate) fn checksum_source(&mut self) {
        match self {
            Mover::Buffered(c) => c.checksum_source(),
            Mover::Reflink(c) => c.checksum_source(),
            Mover::Splice(_)
            | Mover::CopyRange(_)
            | Mover::Peer(_)
            | Mover::Pull(_)
            | Mover::Lease(_) => {}
        }
    }

    /// The source's checksum computed in passing, if it was and is complete.
    pub(crate) fn source_checksum(&self) -> Option<u32> {
        match self {
            Mover::Buffered(c) => c.source_checksum(),
            Mover::Splice(_) | Mover::Reflink(_) | Mover::CopyRange(_) => None,
            Mover::Peer(c) => c.checksums().map(|(sent, _)| sent),
            Mover::Pull(c) => c.checksums().map(|(sent, _)| sent),
            Mover::Lease(_) => None,
        }
    }

    /// Moves at most `bytes` per operation (rounded to the O_DIRECT
    /// alignment where there is one), so rate limits hold over short windows.
    pub(crate) fn set_piece_limit(&mut self, bytes: u64) {
        match self {
            Mover::Splice(c) => c.set_piece_limit(bytes),
            Mover::Buffered(c) => c.set_piece_limit(bytes),
            Mover::CopyRange(c) => c.set_piece_limit(bytes),
            // One operation whatever the size; kept for a fall back.
            Mover::Reflink(c) => c.set_piece_limit(bytes),
            Mover::Peer(c) => c.set_piece_limit(bytes),
            // Its pace is the other daemon's; a rate limit does not hold it
            // back yet. A lease's operations are its connection's.
            Mover::Pull(_) | Mover::Lease(_) => {}
        }
    }

    /// Every descriptor it holds, to close off the loop thread: the job's
    /// two, and a host-to-host link's own sockets.
    pub(crate) fn into_descriptors(self) -> Vec<OwnedFd> {
        let ends = match self {
            Mover::Splice(c) => c.into_endpoints(),
            Mover::Buffered(c) => c.into_endpoints(),
            Mover::CopyRange(c) => c.into_endpoints(),
            Mover::Reflink(c) => c.into_endpoints(),
            Mover::Peer(c) => return c.into_descriptors(),
            Mover::Pull(c) => return c.into_descriptors(),
            // The connection holds its descriptors.
            Mover::Lease(_) => return Vec::new(),
        };
        ends.map(|e| vec![e.src, e.dst]).unwrap_or_default()
    }
}

/// What a descriptor refers to, as far as moving bytes is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FdKind {
    File,
    BlockDevice,
    CharDevice,
    Socket,
    Pipe,
    Directory,
    Other,
}

impl FdKind {
    fn of(mode: libc::mode_t) -> FdKind {
        match mode & libc::S_IFMT {
            libc::S_IFREG => FdKind::File,
            libc::S_IFBLK => FdKind::BlockDevice,
            libc::S_IFCHR => FdKind::CharDevice,
            libc::S_IFSOCK => FdKind::Socket,
            libc::S_IFIFO => FdKind::Pipe,
            libc::S_IFDIR => FdKind::Directory,
            _ => FdKind::Other,
        }
    }

    /// Whether reads and writes take an offset. Streams are read and written
    /// strictly in order, one operation at a time.
    pub(crate) fn seekable(self) -> bool {
        matches!(self, FdKind::File | FdKind::BlockDevice)
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            FdKind::File => "file",
            FdKind::BlockDevice => "block device",
            FdKind::CharDevice => "character device",
            FdKind::Socket => "socket",
            FdKind::Pipe => "pipe",
            FdKind::Directory => "directory",
            FdKind::Other => "special file",
        }
    }
}

impl fmt::Display for FdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The two descriptors of a job. Shared (`Rc`) with every operation in flight
/// on them, so they stay open until the kernel has finished with them even if
/// the job itself is gone.
#[derive(Debug)]
pub(crate) struct Endpoints {
    pub src: OwnedFd,
    pub dst: OwnedFd,
    pub src_kind: FdKind,
    pub dst_kind: FdKind,
}

impl Endpoints {
    /// The source, for an operation that names it: the share keeps both
    /// descriptors open until the operation is back from the kernel.
    pub(crate) fn shared_src(self: &Rc<Self>) -> SharedFd {
        SharedFd::of(self, |e| e.src.as_fd())
    }

    /// The destination, for an operation that names it.
    pub(crate) fn shared_dst(self: &Rc<Self>) -> SharedFd {
        SharedFd::of(self, |e| e.dst.as_fd())
    }
}

/// Why a job failed: the class the client sees, the OS error and a sentence
/// naming the operation and the descriptors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TransferError {
    pub kind: FailureKind,
    pub os_error: Option<i32>,
    pub message: String,
}

/// What a job moves, apart from its descriptors: what the strategies are
/// built from, at admission or when `auto` falls back at run time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub src_start: u64,
    pub dst_start: u64,
    pub total: Option<u64>,
    pub length_requested: bool,
    pub dst_append: bool,
    pub dst_size: u64,
    /// What becomes of the source's holes (holes.rs).
    pub holes: HolePlan,
}

impl Shape {
    /// The total is a regular file's size hint: read until end of file.
    pub(crate) fn open_end(&self, src_kind: FdKind) -> bool {
        !self.length_requested && src_kind.seekable() && self.total.is_some()
    }
}

impl TransferError {
    pub(crate) fn new(kind: FailureKind, message: impl Into<String>) -> TransferError {
        TransferError {
            kind,
            os_error: None,
            message: message.into(),
        }
    }

    /// An error returned by the kernel for operation `op` (for example
    /// "splice source file -> pipe at offset 4096").
    pub(crate) fn os(op: impl fmt::Display, errno: i32) -> TransferError {
        let err = std::io::Error::from_raw_os_error(errno);
        TransferError {
            kind: failure_kind(errno),
            os_error: Some(errno),
            message: format!("{op}: {err}"),
        }
    }

    /// The source ended at `reached` before `total` bytes from `start` were
    /// read: asked for too much (`requested`), or a file that shrank.
    pub(crate) fn short_source(
        reached: u64,
        start: u64,
        total: u64,
        requested: bool,
    ) -> TransferError {
        let message = if requested {
            format!(
                "the source ended at offset {reached}, before the requested length of {total} bytes from offset {start} was read"
            )
        } else {
            format!(
                "the source file shrank during the transfer: it ended at offset {reached}, but held {} bytes when the job started",
                start + total
            )
        };
        TransferError::new(FailureKind::SourceShort, message)
    }

    /// Reads of a source without a requested length disagreed on where it
    /// ends: one returned end of file at `eof`, another found bytes up to
    /// `high` (the file shrank and grew again while it was read).
    pub(crate) fn source_changed(eof: u64, high: u64) -> TransferError {
        TransferError::new(
            FailureKind::SourceShort,
            format!(
                "the source file changed size while it was read: a read found its end at offset {eof}, another found bytes up to offset {high}"
            ),
        )
    }

    pub(crate) fn cancelled(why: &str) -> TransferError {
        TransferError::new(FailureKind::Cancelled, why)
    }
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

pub(crate) use errno::failure_kind;

/// What a job will move, decided once at admission.
#[derive(Debug)]
pub(crate) struct Plan {
    pub ends: Endpoints,
    /// First source offset read (seekable sources).
    pub src_start: u64,
    /// First destination offset written (seekable destinations).
    pub dst_start: u64,
    /// Bytes to move: the requested length, or, for a regular file, what it
    /// says it holds past the offset. That size is only a hint (procfs says
    /// 0, sysfs a page, a file may grow or shrink): without a requested
    /// length every strategy reads a regular file until a read returns 0.
    /// `None`: a stream, read until its end.
    pub total: Option<u64>,
    /// Whether `total` was asked for by the client: then a source that ends
    /// early is `SourceShort`; otherwise `total` is the hint above.
    pub length_requested: bool,
    /// The destination is a file open with O_APPEND: writes land at its end
    /// whatever the offset, and splice refuses it.
    pub dst_append: bool,
    /// What the destination held at admission (0 for anything but a
    /// regular file), from the same statx as its kind.
    pub dst_size: u64,
    /// The O_DIRECT alignment of the source and the destination, from the
    /// same statx (`None`: the file system does no direct I/O there).
    pub dio_align: [Option<u32>; 2],
    /// Who owns the source and whether its descriptor is open for writing:
    /// what decides whether cachestat may ask the file system (`choose`).
    pub src_owner: u32,
    pub src_writable: bool,
    /// What the client asked of holes, and what becomes of them here.
    pub sparse: Sparse,
    pub holes: HolePlan,
    /// Bytes the source has allocated (st_blocks), for a regular file.
    pub src_allocated: u64,
}

impl Plan {
    /// Bytes of data the job reads, as far as admission knows: of a
    /// source whose holes are skipped, what it has allocated (its data,
    /// give or take a block), else the total.
    pub(crate) fn data_bytes(&self, total: u64) -> u64 {
        if self.holes.map {
            total.min(self.src_allocated)
        } else {
            total
        }
    }

    /// Splits the plan into the descriptors (for a strategy to share with
    /// its operations) and the rest.
    pub(crate) fn into_parts(self) -> (Endpoints, Shape) {
        let shape = Shape {
            src_start: self.src_start,
            dst_start: self.dst_start,
            total: self.total,
            length_requested: self.length_requested,
            dst_append: self.dst_append,
            dst_size: self.dst_size,
            holes: self.holes,
        };
        (self.ends, shape)
    }
}

/// What statx said about one of a job's descriptors. Asked for through the
/// ring (IORING_OP_STATX, run by io-wq or a worker of the threads back end)
/// when the job is submitted: on FUSE or a network file system a getattr can
/// wait on a server, and it must not wait on the loop thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FdStat {
    pub kind: FdKind,
    /// `st_size` (0 for what is not a regular file).
    pub size: u64,
    /// The O_DIRECT alignment (see `dio::alignment_of`); `None` when the
    /// file system does no direct I/O on it.
    pub dio_align: Option<u32>,
    /// The owner: cachestat asks the file system for permission unless the
    /// daemon owns the file (see `dio::cached_fraction`).
    pub uid: u32,
    /// The device (file system) it is on: statx always tells it.
    pub dev: u64,
    /// Blocks of 512 bytes allocated, and the file system's block size:
    /// whether a regular file may have holes (holes.rs).
    pub blocks: u64,
    pub blksize: u32,
    /// Permission bits (st_mode & 0o7777), and access and modification
    /// times (seconds, nanoseconds): what a push to another daemon gives
    /// the file there.
    pub perm: u32,
    pub atime: (i64, u32),
    pub mtime: (i64, u32),
}

impl FdStat {
    /// The statx mask admission asks for: the type, the size and the
    /// O_DIRECT alignment (which the kernel answers where it knows it).
    pub(crate) const MASK: u32 = libc::STATX_TYPE
        | libc::STATX_SIZE
        | libc::STATX_UID
        | libc::STATX_DIOALIGN
        | libc::STATX_BLOCKS
        | libc::STATX_MODE
        | libc::STATX_ATIME
        | libc::STATX_MTIME;

    pub(crate) fn from_statx(stx: &libc::statx) -> FdStat {
        FdStat {
            kind: FdKind::of(libc::mode_t::from(stx.stx_mode)),
            size: stx.stx_size,
            dio_align: dio::alignment_of(stx),
            uid: stx.stx_uid,
            dev: libc::makedev(stx.stx_dev_major, stx.stx_dev_minor),
            // Without STATX_BLOCKS in the answer the file counts as dense.
            blocks: if stx.stx_mask & libc::STATX_BLOCKS != 0 {
                stx.stx_blocks
            } else {
                u64::MAX / 512
            },
            blksize: stx.stx_blksize,
            perm: u32::from(stx.stx_mode) & 0o7777,
            atime: (stx.stx_atime.tv_sec, stx.stx_atime.tv_nsec),
            mtime: (stx.stx_mtime.tv_sec, stx.stx_mtime.tv_nsec),
        }
    }
}

struct Probe {
    kind: FdKind,
    size: u64,
    access: libc::c_int,
    append: bool,
    dio_align: Option<u32>,
    uid: u32,
    alloc: SrcAlloc,
}

/// `stat`: what statx said, or the errno it failed with. The status flags
/// come from F_GETFL here, on the loop thread: it reads the open file's
/// `f_flags` and never reaches the file system.
fn probe(fd: &OwnedFd, stat: Result<FdStat, i32>, which: &str) -> Result<Probe, TransferError> {
    let stat =
        stat.map_err(|errno| TransferError::os(format!("statx of the {which} descriptor"), errno))?;
    // SAFETY: F_GETFL takes no argument and touches no memory of ours.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        let errno = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        return Err(TransferError::os(
            format!("fcntl(F_GETFL) of the {which} descriptor"),
            errno,
        ));
    }
    Ok(Probe {
        kind: stat.kind,
        size: stat.size,
        access: flags & libc::O_ACCMODE,
        append: flags & libc::O_APPEND != 0,
        dio_align: stat.dio_align,
        uid: stat.uid,
        alloc: SrcAlloc {
            size: stat.size,
            blocks: stat.blocks,
            blksize: stat.blksize,
        },
    })
}

/// A refused job: why, and the descriptors, for the caller to close.
pub(crate) struct Refused {
    pub error: TransferError,
    pub fds: [OwnedFd; 2],
}

/// What statx said about a job's two descriptors (or the errno each
/// failed with), source first.
pub(crate) type Stats = [Result<FdStat, i32>; 2];

/// Checks the two descriptors against the request and decides what to move.
/// Every refusal names the descriptor and what is wrong with it.
///
/// `dir_source`: the source may be a directory (a push to another daemon
/// of a directory's mode and times, which moves no bytes).
pub(crate) fn plan(
    src: OwnedFd,
    dst: OwnedFd,
    req: &SubmitRequest,
    (stats, dir_source): (Stats, bool),
) -> Result<Plan, Refused> {
    match check(&src, &dst, req, stats, dir_source) {
        Ok(Checked {
            src_kind,
            dst_kind,
            total,
            length_requested,
            dst_append,
            dst_size,
            dio_align,
            src_owner,
            src_writable,
            holes,
            src_allocated,
        }) => Ok(Plan {
            ends: Endpoints {
                src,
                dst,
                src_kind,
                dst_kind,
            },
            src_start: req.offset,
            dst_start: req.dest_offset,
            total,
            length_requested,
            dst_append,
            dst_size,
            dio_align,
            src_owner,
            src_writable,
            sparse: req.sparse,
            holes,
            src_allocated,
        }),
        Err(error) => Err(Refused {
            error,
            fds: [src, dst],
        }),
    }
}

struct Checked {
    src_kind: FdKind,
    dst_kind: FdKind,
    total: Option<u64>,
    length_requested: bool,
    dst_append: bool,
    dst_size: u64,
    dio_align: [Option<u32>; 2],
    src_owner: u32,
    src_writable: bool,
    holes: HolePlan,
    src_allocated: u64,
}

fn check(
    src: &OwnedFd,
    dst: &OwnedFd,
    req: &SubmitRequest,
    [src_stat, dst_stat]: Stats,
    dir_source: bool,
) -> Result<Checked, TransferError> {
    let s = probe(src, src_stat, "source")?;
    let d = probe(dst, dst_stat, "destination")?;
    let a_directory = dir_source && s.kind == FdKind::Directory;
    if !a_directory {
        movable(&s, &d)?;
    }
    let dst_append = d.append && d.kind == FdKind::File;
    if dst_append && req.dest_offset != 0 {
        return Err(TransferError::new(
            FailureKind::InvalidRequest,
            "a destination offset was given but the destination file is open with O_APPEND, which writes at its end",
        ));
    }
    let (total, length_requested) = match a_directory {
        // What a directory has to move: nothing but its mode and times.
        true => (Some(0), false),
        false => extent(req, &s)?,
    };
    let dst_size = if d.kind == FdKind::File { d.size } else { 0 };
    Ok(Checked {
        src_kind: s.kind,
        dst_kind: d.kind,
        total,
        length_requested,
        dst_append,
        dst_size,
        dio_align: [s.dio_align, d.dio_align],
        src_owner: s.uid,
        src_writable: s.access != libc::O_RDONLY,
        holes: HolePlan::of(req.sparse, [s.kind, d.kind], dst_append, s.alloc),
        src_allocated: s.alloc.blocks.saturating_mul(512),
    })
}

/// Whether bytes can move from `s` to `d` at all: their kinds, and the
/// direction each is open for.
fn movable(s: &Probe, d: &Probe) -> Result<(), TransferError> {
    for (which, p) in [("source", s), ("destination", d)] {
        if matches!(p.kind, FdKind::Directory | FdKind::Other) {
            return Err(TransferError::new(
                FailureKind::InvalidRequest,
                format!(
                    "the {which} descriptor is a {}, which cannot be transferred",
                    p.kind
                ),
            ));
        }
    }
    if s.access == libc::O_WRONLY {
        return Err(TransferError {
            kind: FailureKind::BadDescriptor,
            os_error: Some(libc::EBADF),
            message: format!(
                "the source {} is open write-only (O_WRONLY): open it for reading",
                s.kind
            ),
        });
    }
    if d.access == libc::O_RDONLY {
        return Err(TransferError {
            kind: FailureKind::BadDescriptor,
            os_error: Some(libc::EBADF),
            message: format!(
                "the destination {} is open read-only (O_RDONLY): open it for writing",
                d.kind
            ),
        });
    }
    Ok(())
}

/// How much the job moves (`Plan::total`) and whether that was asked for,
/// with the offsets checked against the source and the largest offset.
fn extent(req: &SubmitRequest, s: &Probe) -> Result<(Option<u64>, bool), TransferError> {
    let (total, length_requested) = match (req.length, s.kind) {
        (Some(n), _) => (Some(n), true),
        // A regular file's size is a hint (see `Plan::total`), 0 included.
        (None, FdKind::File) => {
            if req.offset > s.size {
                return Err(TransferError::new(
                    FailureKind::InvalidRequest,
                    format!(
                        "offset {} is beyond the end of the source file ({} bytes)",
                        req.offset, s.size
                    ),
                ));
            }
            (Some(s.size - req.offset), false)
        }
        _ => (None, false),
    };
    if req.offset > 0 && !s.kind.seekable() {
        return Err(TransferError::new(
            FailureKind::InvalidRequest,
            format!(
                "an offset was given but the source is a {}, which has no offsets",
                s.kind
            ),
        ));
    }
    let fits = |start: u64| {
        start
            .checked_add(total.unwrap_or(0))
            .is_some_and(|end| end <= i64::MAX as u64)
    };
    if !fits(req.offset) || !fits(req.dest_offset) {
        return Err(TransferError::new(
            FailureKind::InvalidRequest,
            "offset plus length exceeds the largest file offset (2^63 - 1)",
        ));
    }
    Ok((total, length_requested))
}
