//! The messages that cross the daemon's Unix socket.
//!
//! Every frame is a little-endian `u32` payload length followed by the payload,
//! encoded by [`crate::codec`]. A connection starts with [`Request::Hello`]
//! answered by [`Event::Welcome`]; after that the client sends requests and the
//! daemon sends events, each side independently.
//!
//! A [`Request::Submit`] frame is sent in one `sendmsg` carrying exactly
//! [`SUBMIT_DESCRIPTORS`] descriptors with `SCM_RIGHTS`: the source first, then
//! the destination. Every other request carries none.

use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks. The daemon refuses any other.
/// Version 2 added the `direct` and `uncached` strategies and `note` on
/// [`Event::Completed`]; version 3 added job control (priorities, rate
/// limits, detached jobs, `Cancel`/`Status`/`Wait`/`Jobs` by id, fsync and
/// verification) and the per-strategy counters; version 4 added
/// [`Request::SubmitBatch`]; version 5 the buffered strategy; version 6
/// [`SubmitRequest::truncate`] and [`SubmitRequest::publish`] (the daemon
/// gives a detached job's staged file its name); version 7 the `reflink`
/// strategy and [`SubmitRequest::reflink`]; version 8
/// [`SubmitRequest::rate_group`], [`SubmitRequest::sparse`],
/// [`FailureKind::ReadOnly`] and the `copy-range` and `sendfile` strategies;
/// version 9 [`Request::SubmitRemote`] and the `peer` strategy; version
/// 10 [`RemoteSubmit::resume`], [`RemoteSubmit::list`] and
/// [`RemoteSubmit::connection`]; version 11 [`RemoteSubmit::stripe`] and
/// [`StatsReport::peer_bytes_in_flight_max`].
///
/// A client sends it in [`Request::Hello`]; a daemon of another version
/// answers [`ProtocolErrorKind::BadVersion`] instead of [`Event::Welcome`].
///
/// ```
/// use ringxfer_proto::{codec, Request, FRAME_HEADER_LEN, PROTOCOL_VERSION};
///
/// let mut frame = Vec::new();
/// codec::encode_frame(&Request::Hello { version: PROTOCOL_VERSION }, &mut frame, 64)?;
/// // What the daemon checks first.
/// match codec::decode_payload(&frame[FRAME_HEADER_LEN..])? {
///     Request::Hello { version } => assert_eq!(version, PROTOCOL_VERSION),
///     other => panic!("not a Hello: {other:?}"),
/// }
/// # Ok::<(), ringxfer_proto::CodecError>(())
/// ```
pub const PROTOCOL_VERSION: u32 = 11;

/// How many descriptors a [`Request::Submit`] frame carries: source, destination.
/// A frame with fewer is refused ([`ProtocolErrorKind::MissingDescriptors`]).
///
/// ```
/// use ringxfer_proto::SUBMIT_DESCRIPTORS;
/// use std::os::fd::{AsRawFd, RawFd};
/// # let submit = |publish| ringxfer_proto::SubmitRequest { req: 1, tag: String::new(), offset: 0,
/// #     length: None, dest_offset: 0, strategy: ringxfer_proto::Strategy::Auto, progress: false,
/// #     priority: Default::default(), rate_limit: None, detach: false, fsync: false,
/// #     verify: false, truncate: false, publish, reflink: Default::default(),
/// #     rate_group: None, sparse: Default::default() };
///
/// let src = std::fs::File::open("/dev/zero")?;
/// let dst = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
/// // The SCM_RIGHTS array of the sendmsg(2) that carries the frame: source first.
/// let fds: [RawFd; SUBMIT_DESCRIPTORS] = [src.as_raw_fd(), dst.as_raw_fd()];
/// assert_eq!(fds.len(), submit(None).descriptors());
/// # Ok::<(), std::io::Error>(())
/// ```
pub const SUBMIT_DESCRIPTORS: usize = 2;

/// How many a job with [`SubmitRequest::publish`] carries: source, the
/// staged destination, then the directory it is to be named in.
///
/// ```
/// use ringxfer_proto::{PublishTo, PUBLISH_DESCRIPTORS};
/// use std::os::fd::{AsRawFd, RawFd};
/// # let submit = |publish| ringxfer_proto::SubmitRequest { req: 1, tag: String::new(), offset: 0,
/// #     length: None, dest_offset: 0, strategy: ringxfer_proto::Strategy::Auto, progress: false,
/// #     priority: Default::default(), rate_limit: None, detach: false, fsync: false,
/// #     verify: false, truncate: false, publish, reflink: Default::default(),
/// #     rate_group: None, sparse: Default::default() };
///
/// let src = std::fs::File::open("/dev/zero")?;
/// let staged = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
/// let dir = std::fs::File::open("/tmp")?;
/// let fds: [RawFd; PUBLISH_DESCRIPTORS] = [src.as_raw_fd(), staged.as_raw_fd(), dir.as_raw_fd()];
/// let to = PublishTo { name: b"out.bin".to_vec(), staged_name: None };
/// assert_eq!(fds.len(), submit(Some(to)).descriptors());
/// # Ok::<(), std::io::Error>(())
/// ```
pub const PUBLISH_DESCRIPTORS: usize = 3;

/// The length of a frame's header: a little-endian `u32` payload length.
///
/// ```
/// use ringxfer_proto::{codec, Event, FRAME_HEADER_LEN};
///
/// let mut frame = Vec::new();
/// codec::encode_frame(&Event::Accepted { req: 1, job: 9 }, &mut frame, 64)?;
/// let (header, payload) = frame.split_at(FRAME_HEADER_LEN);
/// let header: [u8; FRAME_HEADER_LEN] = header.try_into()?;
/// assert_eq!(codec::frame_len(header) as usize, payload.len());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub const FRAME_HEADER_LEN: usize = 4;

/// The largest payload either side accepts unless the daemon's [`Limits`] say otherwise.
/// A client keeps the requests it sends within it until [`Event::Welcome`]
/// arrives, then within [`Limits::max_frame`]; the daemon refuses a longer
/// request from its header alone, before waiting for the payload.
///
/// ```
/// use ringxfer_proto::{frame, DEFAULT_MAX_FRAME};
///
/// let header = (DEFAULT_MAX_FRAME + 1).to_le_bytes();
/// assert!(matches!(
///     frame::cut(&header, DEFAULT_MAX_FRAME),
///     Err(frame::DeframeError::TooLarge { .. })
/// ));
/// ```
pub const DEFAULT_MAX_FRAME: u32 = 64 * 1024;

/// The longest [`SubmitRequest::tag`] the daemon takes, in bytes; a longer
/// one is refused, so that any listing fits in pages of [`JOBS_PAGE`] jobs.
/// [`fit_tag`] shortens a tag that may be longer (a deep path, say).
///
/// ```
/// use ringxfer_proto::{fit_tag, MAX_TAG_BYTES};
///
/// let path = format!("/srv/{}/image.raw", "nested/".repeat(200));
/// assert!(path.len() > MAX_TAG_BYTES);
/// let tag = fit_tag(&path);
/// assert!(tag.len() <= MAX_TAG_BYTES);
/// ```
pub const MAX_TAG_BYTES: usize = 1024;

/// `text` made short enough to be a tag: unchanged if it fits in
/// [`MAX_TAG_BYTES`], else its end (the informative part of a path) after
/// an ellipsis, cut at a character boundary.
///
/// ```
/// use ringxfer_proto::{fit_tag, MAX_TAG_BYTES};
/// assert_eq!(fit_tag("a/b.txt"), "a/b.txt");
/// let long = format!("/{}/file.bin", "d".repeat(5000));
/// let tag = fit_tag(&long);
/// assert!(tag.len() <= MAX_TAG_BYTES && tag.starts_with('…') && tag.ends_with("/file.bin"));
/// ```
pub fn fit_tag(text: &str) -> String {
    if text.len() <= MAX_TAG_BYTES {
        return text.to_string();
    }
    let mut start = text.len() - (MAX_TAG_BYTES - '…'.len_utf8());
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

/// The most jobs one [`Event::Jobs`] answer carries; a listing of more comes
/// in pages, each asked for with [`Request::Jobs`]'s `after`.
///
/// ```
/// use ringxfer_proto::{Event, JobInfo, Request, JOBS_PAGE};
///
/// // How a client walks the pages: ask again after the last id while `more`.
/// fn next_request(req: u64, answer: &Event) -> Option<Request> {
///     match answer {
///         Event::Jobs { jobs, more: true, .. } => {
///             assert!(jobs.len() <= JOBS_PAGE);
///             let after = jobs.last()?.job;
///             Some(Request::Jobs { req, after })
///         }
///         _ => None,
///     }
/// }
/// let last_page = Event::Jobs { req: 1, jobs: Vec::<JobInfo>::new(), more: false };
/// assert_eq!(next_request(2, &last_page), None);
/// ```
pub const JOBS_PAGE: usize = 256;

/// A request from a client to the daemon.
///
/// ```
/// use ringxfer_proto::{codec, Request, DEFAULT_MAX_FRAME};
/// let mut frame = Vec::new();
/// codec::encode_frame(&Request::Cancel { req: 4, job: 17 }, &mut frame, DEFAULT_MAX_FRAME)?;
/// // Variant 2, then req and job as varints.
/// assert_eq!(frame, [3, 0, 0, 0, 2, 4, 17]);
/// # Ok::<(), ringxfer_proto::CodecError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The first frame of every connection.
    Hello {
        /// Must equal the daemon's [`PROTOCOL_VERSION`].
        version: u32,
    },
    /// Start a transfer between the two descriptors passed with this frame.
    Submit(SubmitRequest),
    /// Ask the daemon to cancel a job of this user (any job, for root).
    /// Answered by [`Event::Cancelling`] or [`Event::Refused`]; the job's own
    /// final event ([`Event::Failed`] with [`FailureKind::Cancelled`]) goes
    /// to its owner and watchers once every operation it had in flight is back.
    Cancel {
        /// Chosen by the client; the answer carries it back.
        req: u64,
        /// The daemon's id for the job, from [`Event::Accepted`].
        job: u64,
    },
    /// Ask for one job's state; answered by [`Event::Status`] or
    /// [`Event::Refused`]. Recently finished jobs are remembered.
    Status {
        /// Chosen by the client; the answer carries it back.
        req: u64,
        /// The daemon's id for the job.
        job: u64,
    },
    /// Follow a job submitted elsewhere (another connection of the same
    /// user, or a detached job). The daemon answers as if `req` had
    /// submitted it: [`Event::Accepted`], [`Event::Progress`] if asked, then
    /// [`Event::Completed`] or [`Event::Failed`], all carrying this `req`. A
    /// job that finished recently is answered with its final event at once;
    /// an unknown job with [`Event::Failed`] of kind [`FailureKind::NoSuchJob`].
    Wait {
        /// Chosen by the client, unique on its connection among submits and waits.
        req: u64,
        /// The daemon's id for the job.
        job: u64,
        /// Whether to send [`Event::Progress`] for it.
        progress: bool,
    },
    /// List the jobs this user may see (all of them, for root); answered by
    /// [`Event::Jobs`] with at most [`JOBS_PAGE`] of them, by id.
    Jobs {
        /// Chosen by the client; the answer carries it back.
        req: u64,
        /// Only jobs with a larger id: 0 for the first page, then the last
        /// id of the page before.
        after: u64,
    },
    /// Ask for the daemon's counters; answered by [`Event::Stats`].
    Stats,
    /// Several transfers in one frame, each answered as if it had come in
    /// its own `Submit`: the frame carries [`SUBMIT_DESCRIPTORS`] descriptors
    /// per job, in job order (source, destination, source, destination, ...),
    /// so at most [`Limits::max_fds_per_message`] / 2 jobs. One frame and one
    /// message for many small jobs saves the client a sendmsg(2) and the
    /// daemon a receive per job. A job of a batch gets no [`Event::Accepted`]
    /// unless it asked for progress or to be detached: its first event is
    /// otherwise its final one, which carries its id too.
    SubmitBatch(Vec<SubmitRequest>),
    /// Push a file to another daemon (host to host): the source, then a TCP
    /// socket the client connected to that daemon's `listen_tcp`; or, with
    /// [`RemoteSubmit::pull`], pull one: the socket, then the destination. The daemon
    /// speaks the peer wire ([`crate::peer`]) on it and the job completes
    /// only once the other daemon said the file landed whole under its name.
    SubmitRemote(Box<RemoteSubmit>),
}

/// A file pushed to another daemon ([`Request::SubmitRemote`]): the job as
/// for [`Request::Submit`] (its `publish`, `verify`, `truncate`, `reflink`
/// and `dest_offset` do not apply; every remote copy is checked end to end
/// by CRC-32C), and where the file lands beneath the other daemon's export.
///
/// ```
/// use ringxfer_proto::peer::RemotePath;
/// use ringxfer_proto::{RemoteSubmit, Request, Strategy, SubmitRequest};
/// let submit = SubmitRequest {
///     req: 1, tag: "notes.txt".into(), offset: 0, length: None, dest_offset: 0,
///     strategy: Strategy::Auto, progress: true, priority: Default::default(), rate_limit: None,
///     detach: false, fsync: true, verify: false, truncate: false, publish: None,
///     reflink: Default::default(), rate_group: None, sparse: Default::default(),
/// };
/// let push = RemoteSubmit {
///     submit, path: RemotePath::new("inbox/notes.txt")?, mkdir: false, pull: false, resume: false,
///     list: false, connection: Default::default(), stripe: None,
/// };
/// assert_eq!(push.descriptors(), 2);
/// let _ = Request::SubmitRemote(Box::new(push));
/// # Ok::<(), ringxfer_proto::peer::NameError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSubmit {
    /// The job.
    pub submit: SubmitRequest,
    /// `EXPORT/dir/file` on the other daemon.
    pub path: crate::peer::RemotePath,
    /// Make the directories of `path` the other daemon lacks (a tree).
    pub mkdir: bool,
    /// The other way: pull `path` from the other daemon into the
    /// destination; the descriptors are then the socket, then the file.
    pub pull: bool,
    /// Continue an interrupted push: the other daemon kept the part that
    /// arrived, and what of it matches the source (by CRC-32C, block by
    /// block) is not sent again.
    pub resume: bool,
    /// A pull of `path`'s listing ([`crate::peer::PeerMessage::List`]),
    /// a directory's, rather than of a file.
    pub list: bool,
    /// Whether the conversation with the other daemon on this socket
    /// outlives the job, for the next file ([`PeerConnection`]).
    pub connection: PeerConnection,
    /// A push of one stripe of the source (the job's offset and length)
    /// among several sent at once, each through a socket of its own; the
    /// other daemon publishes the file when every stripe of the set is in.
    pub stripe: Option<crate::peer::StripeId>,
}

/// What becomes of a host-to-host job's conversation with the other daemon
/// ([`RemoteSubmit::connection`]). Many files over one connection pay for
/// one TCP and TLS handshake, not one each.
///
/// ```
/// use ringxfer_proto::PeerConnection;
/// // The first file of a tree on a new socket keeps it; the next ones,
/// // handed over with the same socket, continue on it.
/// let first = PeerConnection::Keep;
/// let next = PeerConnection::Continue;
/// assert_ne!(first, next);
/// assert_eq!(PeerConnection::default(), PeerConnection::Close);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PeerConnection {
    /// The job speaks on a new socket and ends the conversation with it.
    #[default]
    Close,
    /// The job speaks on a new socket; if it succeeds, the daemon keeps
    /// the conversation (and its TLS session) for the next job this client
    /// hands over with the same socket, until the client disconnects.
    Keep,
    /// The job goes on with the conversation a job of this client kept on
    /// the same socket, and keeps it again if it succeeds; without one it
    /// fails at once, saying to connect again (the socket is mid-
    /// conversation: a new one cannot start on it).
    Continue,
}

impl RemoteSubmit {
    /// The descriptors that come with it: the source and the socket.
    pub fn descriptors(&self) -> usize {
        SUBMIT_DESCRIPTORS
    }
}

/// How a job shares the ring with others. A job of a higher class gets more
/// of the daemon's I/O slots when they are contended (weights 4, 2, 1), and a
/// newly submitted job of any class moves its first bytes before a busy job
/// gets its next chunk. Set per job in [`SubmitRequest::priority`];
/// [`JobInfo::priority`] reports it.
///
/// ```
/// use ringxfer_proto::Priority;
///
/// let p: Priority = "high".parse()?;
/// assert_eq!(p.weight(), 2 * Priority::default().weight());
/// assert!(Priority::Low < Priority::Normal && Priority::Normal < p);
/// assert_eq!(p.to_string(), "high");
/// # Ok::<(), String>(())
/// ```
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum Priority {
    /// Background work: a quarter of a high job's share.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Latency-sensitive work: twice a normal job's share.
    High,
}

impl Priority {
    /// The lower-case name used on the command line and in listings.
    ///
    /// ```
    /// assert_eq!(ringxfer_proto::Priority::High.name(), "high");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
        }
    }

    /// The class's share of contended I/O slots, relative to the others.
    ///
    /// ```
    /// use ringxfer_proto::Priority;
    /// assert!(Priority::High.weight() > Priority::Normal.weight());
    /// ```
    pub fn weight(self) -> u32 {
        match self {
            Priority::Low => 1,
            Priority::Normal => 2,
            Priority::High => 4,
        }
    }
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Priority {
    type Err = String;

    /// ```
    /// let p: ringxfer_proto::Priority = "low".parse().unwrap();
    /// assert_eq!(p, ringxfer_proto::Priority::Low);
    /// assert!("urgent".parse::<ringxfer_proto::Priority>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "low" => Ok(Priority::Low),
            "normal" => Ok(Priority::Normal),
            "high" => Ok(Priority::High),
            other => Err(format!(
                "unknown priority {other:?}: expected low, normal or high"
            )),
        }
    }
}

/// What to transfer, sent with two descriptors: source then destination.
///
/// ```
/// use ringxfer_proto::{Priority, Request, Strategy, SubmitRequest};
/// let submit = Request::Submit(SubmitRequest {
///     req: 1, tag: "backup.tar".into(), offset: 0, length: None, dest_offset: 0,
///     strategy: Strategy::Auto, progress: true, priority: Priority::Normal, rate_limit: None,
///     detach: false, fsync: true, verify: false, truncate: false, publish: None,
///     reflink: Default::default(), rate_group: None, sparse: Default::default(),
/// });
/// assert!(matches!(submit, Request::Submit(SubmitRequest { req: 1, .. })));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitRequest {
    /// Chosen by the client, unique on its connection; every event about this
    /// job carries it back.
    pub req: u64,
    /// Free text the daemon logs with the job (a file name, say); at most
    /// [`MAX_TAG_BYTES`] bytes.
    pub tag: String,
    /// Where reading starts in the source (ignored for sockets and pipes).
    pub offset: u64,
    /// How many bytes to move; `None` means to the end of the source.
    pub length: Option<u64>,
    /// Where writing starts in the destination (ignored for sockets and pipes).
    pub dest_offset: u64,
    /// Which transfer strategy to use.
    pub strategy: Strategy,
    /// Whether the client wants [`Event::Progress`] events for this job.
    pub progress: bool,
    /// The job's scheduling class.
    pub priority: Priority,
    /// At most this many bytes per second, on top of the daemon's global limit.
    pub rate_limit: Option<u64>,
    /// Keep running if this connection goes away; otherwise the job is
    /// cancelled with it. A detached job can be followed with
    /// [`Request::Wait`] from any connection of the same user.
    pub detach: bool,
    /// Complete only after the destination's data is durable
    /// (fdatasync through the ring). Ignored for socket and pipe destinations.
    pub fsync: bool,
    /// Checksum (CRC-32C) what was read and what landed, compare them and
    /// report both in [`Event::Completed`]; a difference fails the job with
    /// [`FailureKind::Mismatch`]. Needs a regular-file source and a
    /// destination that can be read back (a regular file opened read-write,
    /// not O_APPEND), whatever the strategy.
    pub verify: bool,
    /// Once every byte is written, truncate a regular-file destination to
    /// where the job's writes ended (`dest_offset` + bytes moved): what an
    /// in-place copy over a longer file needs, done only after the job was
    /// admitted, so that a refused job leaves the destination as it was.
    pub truncate: bool,
    /// Give the destination (a staged, unnamed or hidden file) its name once
    /// the job completed: the daemon links or renames it into the directory
    /// passed as a third descriptor. A failed or cancelled job leaves
    /// nothing under the name. For detached jobs, whose client is gone by then.
    pub publish: Option<PublishTo>,
    /// Whether to clone the source (FICLONE: the destination shares its
    /// extents) before any copy: see [`Reflink`].
    pub reflink: Reflink,
    /// A limit this job shares with the connection's other jobs of the same
    /// group, on top of [`SubmitRequest::rate_limit`] and the daemon's: see
    /// [`RateGroup`].
    pub rate_group: Option<RateGroup>,
    /// What becomes of the source's holes and runs of zeros: see [`Sparse`].
    pub sparse: Sparse,
}

/// A rate limit shared by several jobs of one connection: together they
/// move at most `rate` bytes per second, however many run at once (as
/// `rsync --bwlimit` caps a whole transfer). A job's own
/// [`SubmitRequest::rate_limit`] still applies to it as well.
///
/// The `id` is the client's choice and the connection's own: the same id on
/// another connection (another process, another user) is another group, so
/// nobody can join or slow a group but the connection that made it. The
/// group lives while any of its jobs does (a detached one included, after
/// its connection closed); the rate is the one its latest job named.
///
/// ```
/// use ringxfer_proto::{RateGroup, SubmitRequest};
/// # let file = |req, tag: &str| SubmitRequest { req, tag: tag.into(), offset: 0, length: None,
/// #     dest_offset: 0, strategy: ringxfer_proto::Strategy::Auto, progress: false,
/// #     priority: Default::default(), rate_limit: None, detach: false, fsync: false,
/// #     verify: false, truncate: false, publish: None, reflink: Default::default(),
/// #     rate_group: None, sparse: Default::default() };
///
/// // Eight files, 50 MiB/s for all of them together.
/// let all = RateGroup { id: 1, rate: 50 << 20 };
/// let jobs: Vec<SubmitRequest> = (0..8)
///     .map(|i| SubmitRequest { rate_group: Some(all), ..file(i, "part") })
///     .collect();
/// assert!(jobs.iter().all(|j| j.rate_group == Some(all) && j.rate_limit.is_none()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RateGroup {
    /// The client's name for the group, unique among its connection's groups.
    pub id: u64,
    /// Bytes per second for all the group's jobs together (0: no limit).
    pub rate: u64,
}

/// Holes in a regular-file destination, as `cp --sparse` asks for them. A
/// copy from a regular file to a regular file finds the source's holes
/// (SEEK_DATA and SEEK_HOLE) and writes none of them: the destination gets
/// the same holes (a region of an existing destination that must become a
/// hole is punched), and its size is the source's. Other pairs of ends have
/// no holes to keep.
///
/// ```
/// let s: ringxfer_proto::Sparse = "always".parse().unwrap();
/// assert_eq!(s, ringxfer_proto::Sparse::Always);
/// assert_eq!(ringxfer_proto::Sparse::default().name(), "auto");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sparse {
    /// Keep the source's holes.
    #[default]
    Auto,
    /// Keep the holes, and also turn every block of zeros read from the
    /// data into a hole: only a strategy whose reads go through memory
    /// (direct, uncached, buffered) sees the bytes; `auto` picks one, and
    /// the splice strategy refuses.
    Always,
    /// Write holes out as zeros: a fully allocated destination.
    Never,
}

impl Sparse {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Sparse::Auto => "auto",
            Sparse::Always => "always",
            Sparse::Never => "never",
        }
    }
}

impl std::str::FromStr for Sparse {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Sparse::Auto),
            "always" => Ok(Sparse::Always),
            "never" => Ok(Sparse::Never),
            other => Err(format!(
                "unknown sparse choice {other:?}: expected auto, always or never"
            )),
        }
    }
}

/// Cloning a whole regular file into an empty one (FICLONE), as `cp
/// --reflink` asks it: on btrfs, XFS and other copy-on-write file systems
/// the destination then shares the source's extents and nothing is copied.
/// A job clones only when it copies a whole regular file (offset 0, no
/// length) to a regular file from offset 0 that is empty or truncated at
/// the end, with the `auto` or `reflink` strategy.
///
/// ```
/// let r: ringxfer_proto::Reflink = "always".parse().unwrap();
/// assert_eq!(r, ringxfer_proto::Reflink::Always);
/// assert_eq!(ringxfer_proto::Reflink::default().name(), "auto");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reflink {
    /// Clone where the file systems can; else copy, and the note says why.
    #[default]
    Auto,
    /// Clone, or fail the job saying why (as the `reflink` strategy).
    Always,
    /// Never clone.
    Never,
}

impl Reflink {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Reflink::Auto => "auto",
            Reflink::Always => "always",
            Reflink::Never => "never",
        }
    }
}

impl std::str::FromStr for Reflink {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Reflink::Auto),
            "always" => Ok(Reflink::Always),
            "never" => Ok(Reflink::Never),
            other => Err(format!(
                "unknown reflink choice {other:?}: expected auto, always or never"
            )),
        }
    }
}

impl SubmitRequest {
    /// How many descriptors travel with this job: [`SUBMIT_DESCRIPTORS`],
    /// or [`PUBLISH_DESCRIPTORS`] with [`SubmitRequest::publish`].
    ///
    /// ```
    /// # let mut s = ringxfer_proto::SubmitRequest { req: 1, tag: String::new(), offset: 0, length: None,
    /// #   dest_offset: 0, strategy: ringxfer_proto::Strategy::Auto, progress: false,
    /// #   priority: Default::default(), rate_limit: None, detach: false, fsync: false,
    /// #   verify: false, truncate: false, publish: None,
    /// #   reflink: Default::default(), rate_group: None, sparse: Default::default() };
    /// assert_eq!(s.descriptors(), 2);
    /// s.publish = Some(ringxfer_proto::PublishTo { name: b"out".to_vec(), staged_name: None });
    /// assert_eq!(s.descriptors(), 3);
    /// ```
    pub fn descriptors(&self) -> usize {
        if self.publish.is_some() {
            PUBLISH_DESCRIPTORS
        } else {
            SUBMIT_DESCRIPTORS
        }
    }
}

/// Where the daemon names a published destination, in the directory
/// descriptor that comes with the job. Names are bytes, as Linux names
/// are: one component, no `/`.
///
/// ```
/// use ringxfer_proto::PublishTo;
/// use std::os::unix::ffi::OsStrExt;
///
/// let dst = std::path::Path::new("/srv/backup/db.dump");
/// let to = PublishTo {
///     name: dst.file_name().expect("a file name").as_bytes().to_vec(),
///     // The destination is an O_TMPFILE in /srv/backup: no hidden name.
///     staged_name: None,
/// };
/// assert_eq!(to.name, b"db.dump");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishTo {
    /// The final name: one path component, no `/`.
    pub name: Vec<u8>,
    /// The hidden name the destination was created under in that
    /// directory, where the file system has no O_TMPFILE; `None`: the
    /// destination is an unnamed O_TMPFILE, linked through
    /// `/proc/self/fd`. A hidden name is renamed over the final name on
    /// completion and unlinked if the job fails.
    pub staged_name: Option<Vec<u8>>,
}

/// A transfer strategy, as asked for ([`SubmitRequest::strategy`]) and as
/// used ([`Event::Completed`]'s `strategy`, with a `note` saying why when
/// `Auto` chose it or the daemon used another).
///
/// ```
/// use ringxfer_proto::{codec, Event, Strategy, FRAME_HEADER_LEN};
///
/// let mut frame = Vec::new();
/// let note = "auto: 4096 bytes is at most 65536, so one read and one write through a buffer";
/// let done = Event::Completed {
///     req: 1, job: 7, bytes: 4096, strategy: Strategy::Buffered, elapsed_us: 90,
///     note: Some(note.into()), synced: false, checksums: None,
/// };
/// codec::encode_frame(&done, &mut frame, 1024)?;
/// let back = codec::decode_payload(&frame[FRAME_HEADER_LEN..])?;
/// if let Event::Completed { strategy, note, .. } = back {
///     assert_eq!(strategy, "buffered".parse()?);
///     println!("moved with {strategy}: {}", note.unwrap_or_default());
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Strategy {
    /// Let the daemon pick the cheapest path the descriptors allow.
    Auto,
    /// splice(2) through a pipe: no copy through user space.
    Splice,
    /// O_DIRECT reads into the daemon's registered, aligned buffers and
    /// O_DIRECT writes (or zero-copy sends) out of them: the page cache is
    /// bypassed, so a large copy evicts nobody's hot data.
    Direct,
    /// Buffered reads and writes with RWF_DONTCACHE: no alignment rules, and
    /// the pages are dropped once written.
    Uncached,
    /// Plain buffered reads into the daemon's registered buffers and writes
    /// out of them, through the page cache. What `auto` uses for small
    /// files: a read the page cache answers completes without a worker
    /// thread, where splice hands both of its halves to one.
    Buffered,
    /// The destination was cloned from the source (FICLONE): it shares
    /// the source's extents and no byte was copied. As asked: clone or
    /// fail (see [`Reflink`]).
    Reflink,
    /// copy_file_range(2) from a regular file into a regular file, one
    /// bounded piece at a time on the daemon's worker threads: the kernel
    /// copies in the page cache (ext4, tmpfs) or asks the server to (NFS
    /// 4.2, SMB, CephFS). What `auto` uses for larger files it does not
    /// send direct; where the file systems refuse it (different ones:
    /// EXDEV), `auto` splices instead.
    CopyRange,
    /// sendfile(2) from a regular file into a socket, one bounded piece at
    /// a time on the daemon's worker threads.
    Sendfile,
    /// Pushed to another daemon over the peer wire ([`crate::peer`]):
    /// read into the daemon's buffers, framed and sent, checked end to end
    /// by CRC-32C. Only [`Request::SubmitRemote`] jobs use it.
    Peer,
}

impl Strategy {
    /// The lower-case name used on the command line and in logs.
    ///
    /// ```
    /// assert_eq!(ringxfer_proto::Strategy::Splice.name(), "splice");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Auto => "auto",
            Strategy::Splice => "splice",
            Strategy::Direct => "direct",
            Strategy::Uncached => "uncached",
            Strategy::Buffered => "buffered",
            Strategy::Reflink => "reflink",
            Strategy::CopyRange => "copy-range",
            Strategy::Sendfile => "sendfile",
            Strategy::Peer => "peer",
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;

    /// ```
    /// let s: ringxfer_proto::Strategy = "splice".parse().unwrap();
    /// assert_eq!(s, ringxfer_proto::Strategy::Splice);
    /// assert!("fast".parse::<ringxfer_proto::Strategy>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Strategy::Auto),
            "splice" => Ok(Strategy::Splice),
            "direct" => Ok(Strategy::Direct),
            "uncached" => Ok(Strategy::Uncached),
            "buffered" => Ok(Strategy::Buffered),
            "reflink" => Ok(Strategy::Reflink),
            "copy-range" => Ok(Strategy::CopyRange),
            "sendfile" => Ok(Strategy::Sendfile),
            "peer" => Ok(Strategy::Peer),
            other => Err(format!(
                "unknown strategy {other:?}: expected auto, splice, direct, uncached, buffered, reflink, copy-range, sendfile or peer"
            )),
        }
    }
}

/// The limits a daemon enforces on each connection, sent in [`Event::Welcome`].
///
/// ```
/// use ringxfer_proto::{Limits, SUBMIT_DESCRIPTORS};
/// let limits = Limits {
///     max_frame: 64 * 1024, max_jobs_per_connection: 64, max_fds_per_message: 64,
///     max_jobs_per_user: 256, max_queued_bytes_per_connection: 0, max_queued_bytes_per_user: 0,
/// };
/// // Jobs one SubmitBatch can carry.
/// assert_eq!(limits.max_fds_per_message as usize / SUBMIT_DESCRIPTORS, 32);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// The largest frame payload the daemon accepts, in bytes.
    pub max_frame: u32,
    /// How many jobs one connection may have submitted and not yet finished.
    pub max_jobs_per_connection: u32,
    /// The most descriptors one message may carry.
    pub max_fds_per_message: u32,
    /// How many unfinished jobs one user may have across connections.
    pub max_jobs_per_user: u32,
    /// How many bytes one connection's unfinished jobs may still have to move
    /// (0: no limit). Jobs of unknown length count as nothing.
    pub max_queued_bytes_per_connection: u64,
    /// The same, across all of one user's connections (0: no limit).
    pub max_queued_bytes_per_user: u64,
}

/// Why a job failed or was refused, in [`Event::Failed`] and
/// [`Event::Refused`]: what a program can act on (free space and retry,
/// fix permissions, give up) without parsing the message. The client crate
/// maps an errno to it with `ringxfer_ipc::errno::failure_kind`, as the
/// daemon does.
///
/// ```
/// use ringxfer_proto::{codec, Event, FailureKind, FRAME_HEADER_LEN};
///
/// let mut frame = Vec::new();
/// let failed = Event::Failed {
///     req: 3, job: Some(12), kind: FailureKind::NoSpace, os_error: Some(28),
///     message: "writing /mnt/full/out.bin: No space left on device".into(), bytes: 1 << 20,
/// };
/// codec::encode_frame(&failed, &mut frame, 1024)?;
/// let Event::Failed { kind, .. } = codec::decode_payload(&frame[FRAME_HEADER_LEN..])? else {
///     unreachable!("encoded a Failed")
/// };
/// match kind {
///     FailureKind::NoSpace => eprintln!("free some space on the destination and try again"),
///     FailureKind::Cancelled => {}
///     other => eprintln!("the copy failed ({other})"),
/// }
/// assert_eq!(kind.to_string(), "no-space");
/// # Ok::<(), ringxfer_proto::CodecError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FailureKind {
    /// The request itself was wrong (a bad offset, a descriptor of a kind that
    /// cannot be read or written, a strategy that does not fit).
    InvalidRequest,
    /// A daemon or connection limit refused the job.
    LimitExceeded,
    /// The source ended before the requested length was moved.
    SourceShort,
    /// The destination's file system is full (ENOSPC, EDQUOT).
    NoSpace,
    /// A descriptor was not open for the needed direction (EBADF), e.g. a
    /// read-only destination.
    BadDescriptor,
    /// The kernel refused the operation (EPERM, EACCES); a read-only file
    /// system is [`FailureKind::ReadOnly`].
    PermissionDenied,
    /// The peer of a socket went away (EPIPE, ECONNRESET).
    PeerGone,
    /// The job was cancelled before it finished.
    Cancelled,
    /// Any other I/O error; the message names the operation and errno.
    Io,
    /// The checksum of what landed differs from the checksum of what was read.
    Mismatch,
    /// No job has that id (it never existed, or finished too long ago to be
    /// remembered).
    NoSuchJob,
    /// The daemon is shutting down.
    ShuttingDown,
    /// The destination's file system is read-only (EROFS): mounted so, or
    /// turned so by the kernel after an error (ext4's errors=remount-ro).
    /// Not a permission a user could be granted: remount it or write
    /// elsewhere.
    ReadOnly,
}

impl FailureKind {
    /// A short lower-case name for logs and JSON output.
    ///
    /// ```
    /// assert_eq!(ringxfer_proto::FailureKind::NoSpace.name(), "no-space");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::InvalidRequest => "invalid-request",
            FailureKind::LimitExceeded => "limit-exceeded",
            FailureKind::SourceShort => "source-short",
            FailureKind::NoSpace => "no-space",
            FailureKind::BadDescriptor => "bad-descriptor",
            FailureKind::PermissionDenied => "permission-denied",
            FailureKind::PeerGone => "peer-gone",
            FailureKind::Cancelled => "cancelled",
            FailureKind::Io => "io",
            FailureKind::Mismatch => "mismatch",
            FailureKind::NoSuchJob => "no-such-job",
            FailureKind::ShuttingDown => "shutting-down",
            FailureKind::ReadOnly => "read-only",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why the daemon closed a connection, in [`Event::ProtocolError`], the
/// last event the connection carries. Most kinds are a client's bug; a few
/// (`ShuttingDown`, `TooManyConnections`) are worth a retry later.
///
/// ```
/// use ringxfer_proto::{codec, Event, ProtocolErrorKind, FRAME_HEADER_LEN};
///
/// // What a daemon of another version answers to Hello.
/// let mut frame = Vec::new();
/// let refusal = Event::ProtocolError {
///     kind: ProtocolErrorKind::BadVersion,
///     message: "the client speaks protocol version 5; this daemon speaks version 6".into(),
/// };
/// codec::encode_frame(&refusal, &mut frame, 1024)?;
/// match codec::decode_payload(&frame[FRAME_HEADER_LEN..])? {
///     Event::ProtocolError { kind: ProtocolErrorKind::BadVersion, message } => {
///         assert!(message.contains("version"));
///     }
///     other => panic!("{other:?}"),
/// }
/// # Ok::<(), ringxfer_proto::CodecError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProtocolErrorKind {
    /// A frame's length exceeded [`Limits::max_frame`].
    FrameTooLarge,
    /// A payload could not be decoded as a [`Request`].
    Undecodable,
    /// `Hello` named a protocol version the daemon does not speak.
    BadVersion,
    /// The connection ended in the middle of a frame.
    Truncated,
    /// A frame came with fewer descriptors than it needs.
    MissingDescriptors,
    /// Descriptors arrived that no frame claimed.
    ExtraDescriptors,
    /// One message carried more descriptors than [`Limits::max_fds_per_message`].
    TooManyDescriptors,
    /// A request came out of order (anything before `Hello`, a second `Hello`).
    UnexpectedRequest,
    /// The daemon is shutting down.
    ShuttingDown,
    /// A connection limit was reached: the daemon's total, or this user's.
    TooManyConnections,
    /// The connection sent no `Hello` in time, or held part of a frame too long.
    TimedOut,
    /// The client left more events unread than its share of the daemon's
    /// event memory.
    NotReading,
}

/// Where a job is in its life, in [`JobInfo::state`]. The first three are
/// a job still running; the last two are kept a while after it finished.
///
/// ```
/// use ringxfer_proto::{FailureKind, JobState};
///
/// let state = JobState::Failed { kind: FailureKind::Cancelled, message: "cancelled".into() };
/// let finished = matches!(state, JobState::Completed | JobState::Failed { .. });
/// assert!(finished);
/// assert_eq!(state.name(), "failed");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    /// Admitted, waiting for its first I/O slot (a pipe or a buffer).
    Queued,
    /// Moving bytes (or waiting for a slow peer).
    Running,
    /// Waiting for its rate limit (or the daemon's) to allow more bytes.
    Throttled,
    /// Every byte is in the destination (and durable, if fsync was asked).
    Completed,
    /// Failed or cancelled.
    Failed {
        /// The class of failure.
        kind: FailureKind,
        /// What went wrong.
        message: String,
    },
}

impl JobState {
    /// A short lower-case name for listings.
    ///
    /// ```
    /// assert_eq!(ringxfer_proto::JobState::Throttled.name(), "throttled");
    /// ```
    pub fn name(&self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Throttled => "throttled",
            JobState::Completed => "completed",
            JobState::Failed { .. } => "failed",
        }
    }
}

/// One job as [`Request::Status`] and [`Request::Jobs`] describe it
/// ([`Event::Status`], [`Event::Jobs`]).
///
/// ```
/// use ringxfer_proto::{codec, Event, JobInfo, JobState, Priority, Strategy, FRAME_HEADER_LEN};
///
/// let info = JobInfo {
///     job: 12, uid: 1000, tag: "db.dump".into(), state: JobState::Running,
///     bytes: 1 << 30, total: Some(4 << 30), rate: 200 << 20, strategy: Strategy::Splice,
///     priority: Priority::Normal, rate_limit: None, detached: true, elapsed_us: 5_000_000,
/// };
/// let mut frame = Vec::new();
/// codec::encode_frame(&Event::Status { req: 1, info }, &mut frame, 1024)?;
/// let Event::Status { info, .. } = codec::decode_payload(&frame[FRAME_HEADER_LEN..])? else {
///     unreachable!("encoded a Status")
/// };
/// if let (Some(total), true) = (info.total, info.rate > 0) {
///     let left_s = (total - info.bytes) / info.rate;
///     assert_eq!(left_s, 15);
/// }
/// # Ok::<(), ringxfer_proto::CodecError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInfo {
    /// The daemon's id for the job.
    pub job: u64,
    /// The user who submitted it.
    pub uid: u32,
    /// The submitter's tag.
    pub tag: String,
    /// Where it is.
    pub state: JobState,
    /// Bytes written to the destination so far.
    pub bytes: u64,
    /// What it will move in all, when known.
    pub total: Option<u64>,
    /// Bytes per second over the last second or so (0 once finished).
    pub rate: u64,
    /// The strategy moving it.
    pub strategy: Strategy,
    /// Its scheduling class.
    pub priority: Priority,
    /// Its own rate limit, if any.
    pub rate_limit: Option<u64>,
    /// Whether it outlives the connection that submitted it.
    pub detached: bool,
    /// Time since admission (to the end, once finished), in microseconds.
    pub elapsed_us: u64,
}

/// Counters of one strategy, in [`StatsReport::strategies`].
///
/// ```
/// use ringxfer_proto::{StatsReport, Strategy, StrategyStats};
///
/// let report = StatsReport {
///     strategies: vec![StrategyStats {
///         strategy: Some(Strategy::Splice), jobs_completed: 40, jobs_failed: 2,
///         bytes: 40 << 20, ops: 1280,
///     }],
///     ..Default::default()
/// };
/// for s in &report.strategies {
///     let name = s.strategy.map_or("?", Strategy::name);
///     let jobs = s.jobs_completed + s.jobs_failed;
///     println!("{name}: {jobs} jobs, {} failed, {} bytes", s.jobs_failed, s.bytes);
/// }
/// let splice = report.strategies.iter().find(|s| s.strategy == Some(Strategy::Splice));
/// assert_eq!(splice.map(|s| s.jobs_failed), Some(2));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StrategyStats {
    /// The strategy counted.
    pub strategy: Option<Strategy>,
    /// Jobs of it that completed.
    pub jobs_completed: u64,
    /// Jobs of it that failed or were cancelled.
    pub jobs_failed: u64,
    /// Bytes it moved (finished and running jobs).
    pub bytes: u64,
    /// I/O operations (splices, reads, writes, sends, fsyncs) it completed.
    pub ops: u64,
}

/// CRC-32C checksums of a verified job, in [`Event::Completed`]
/// ([`SubmitRequest::verify`]). A job completes only when they are equal
/// (a difference fails it with [`FailureKind::Mismatch`]); the client may
/// keep the value, to check the file later.
///
/// ```
/// use ringxfer_proto::{Checksums, Event, Strategy};
///
/// let done = Event::Completed {
///     req: 1, job: 7, bytes: 9, strategy: Strategy::Buffered, elapsed_us: 40, note: None,
///     synced: true, checksums: Some(Checksums { source: 0xe306_9283, destination: 0xe306_9283 }),
/// };
/// if let Event::Completed { checksums: Some(sums), .. } = done {
///     assert_eq!(sums.source, sums.destination);
///     println!("crc32c {:08x}", sums.destination);
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksums {
    /// Of the bytes read from the source.
    pub source: u32,
    /// Of the bytes in the destination afterwards.
    pub destination: u32,
}

/// What the daemon counts, answered to [`Request::Stats`] with
/// [`Event::Stats`].
///
/// ```
/// use ringxfer_proto::{codec, Event, Request, StatsReport, FRAME_HEADER_LEN};
///
/// let mut ask = Vec::new();
/// codec::encode_frame(&Request::Stats, &mut ask, 64)?;
/// assert_eq!(ask, [1, 0, 0, 0, 6]);
///
/// let report = StatsReport { pipes_total: 8, pipes_in_use: 6, ..Default::default() };
/// let mut answer = Vec::new();
/// codec::encode_frame(&Event::Stats(report), &mut answer, 1024)?;
/// if let Event::Stats(stats) = codec::decode_payload(&answer[FRAME_HEADER_LEN..])? {
///     println!("{} of {} pipes lent", stats.pipes_in_use, stats.pipes_total);
///     assert_eq!(stats.jobs_running, 0);
/// }
/// # Ok::<(), ringxfer_proto::CodecError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReport {
    /// Milliseconds since the engine started.
    pub uptime_ms: u64,
    /// Client connections open now.
    pub connections: u64,
    /// Jobs admitted and not finished (queued, running or throttled).
    pub jobs_running: u64,
    /// Of those, jobs waiting for their first I/O slot.
    pub jobs_queued: u64,
    /// Of those, jobs waiting for a rate limit.
    pub jobs_throttled: u64,
    /// Of those, detached jobs.
    pub jobs_detached: u64,
    /// Jobs that completed since start.
    pub jobs_completed: u64,
    /// Jobs that failed or were cancelled since start.
    pub jobs_failed: u64,
    /// Bytes written to destinations by finished and running jobs.
    pub bytes_moved: u64,
    /// Submission queue entries handed to the kernel.
    pub sqes_submitted: u64,
    /// `io_uring_enter` calls made by the loop.
    pub enter_calls: u64,
    /// Events queued for clients (sent, or lost with a connection that ended).
    pub events_sent: u64,
    /// Sends that carried them.
    pub event_sends: u64,
    /// Of the events, final events of batch jobs held back (at most 1 ms)
    /// to go out together with others.
    pub events_held: u64,
    /// Pipes the pool holds, idle or lent out.
    pub pipes_total: u64,
    /// Pipes lent to jobs now.
    pub pipes_in_use: u64,
    /// The capacity of each pooled pipe, in bytes.
    pub pipe_capacity: u64,
    /// I/O buffers the pool holds (direct and uncached strategies).
    pub buffers_total: u64,
    /// Buffers lent to jobs now.
    pub buffers_in_use: u64,
    /// The size of each buffer, in bytes.
    pub buffer_size: u64,
    /// Whether the buffers are registered with the ring (fixed reads and writes).
    pub buffers_registered: bool,
    /// Job I/O slots (pipes and buffers) lent now. Each carries one
    /// operation at a time (a linked splice read and write count as one).
    pub ops_in_flight: u64,
    /// The daemon's cap on job I/O slots lent at once (`--max-inflight`).
    pub max_ops_in_flight: u64,
    /// The daemon's global rate limit in bytes per second, if any.
    pub rate_limit: Option<u64>,
    /// Counters per strategy: splice, direct, uncached, buffered.
    pub strategies: Vec<StrategyStats>,
    /// Host to host: the most bytes one other daemon had sent here and not
    /// yet written, since start (held under `peer_bytes_in_flight`).
    pub peer_bytes_in_flight_max: u64,
}

/// An event from the daemon to a client.
///
/// ```
/// use ringxfer_proto::{codec, Event, DEFAULT_MAX_FRAME};
/// let mut frame = Vec::new();
/// codec::encode_frame(&Event::Accepted { req: 1, job: 300 }, &mut frame, DEFAULT_MAX_FRAME)?;
/// let back: Event = codec::decode_payload(&frame[ringxfer_proto::FRAME_HEADER_LEN..])?;
/// assert_eq!(back, Event::Accepted { req: 1, job: 300 });
/// # Ok::<(), ringxfer_proto::CodecError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The answer to `Hello`.
    Welcome {
        /// The daemon's [`PROTOCOL_VERSION`].
        version: u32,
        /// What the daemon enforces on this connection.
        limits: Limits,
    },
    /// A job was admitted and has an id.
    Accepted {
        /// The client's [`SubmitRequest::req`].
        req: u64,
        /// The daemon's id for the job.
        job: u64,
    },
    /// Bytes moved so far, for jobs submitted with `progress: true`.
    Progress {
        /// The client's [`SubmitRequest::req`].
        req: u64,
        /// The daemon's id for the job.
        job: u64,
        /// Bytes written to the destination so far.
        bytes: u64,
        /// The total the job will move, when known in advance.
        total: Option<u64>,
    },
    /// The job finished: every byte is in the destination.
    Completed {
        /// The client's [`SubmitRequest::req`].
        req: u64,
        /// The daemon's id for the job.
        job: u64,
        /// Bytes moved.
        bytes: u64,
        /// The strategy that moved them.
        strategy: Strategy,
        /// Time from admission to the last byte, in microseconds.
        elapsed_us: u64,
        /// Why this strategy was used, when `auto` chose it or when it
        /// differs from the one asked for (e.g. "the source is 93% in the
        /// page cache", "the file system refuses O_DIRECT").
        note: Option<String>,
        /// Whether the destination was synced (fdatasync) before this event.
        synced: bool,
        /// The checksums, when verification was asked for.
        checksums: Option<Checksums>,
    },
    /// The job failed, was cancelled or was refused (then `job` is `None`).
    Failed {
        /// The client's [`SubmitRequest::req`].
        req: u64,
        /// The daemon's id, if the job had been admitted.
        job: Option<u64>,
        /// The class of failure.
        kind: FailureKind,
        /// The OS error number, when one caused the failure.
        os_error: Option<i32>,
        /// What went wrong: the operation, the descriptor kind and the cause.
        message: String,
        /// Bytes written to the destination before the failure.
        bytes: u64,
    },
    /// The answer to [`Request::Cancel`]: the job is being cancelled; its
    /// final event follows to its owner and watchers.
    Cancelling {
        /// The client's `req` of the Cancel.
        req: u64,
        /// The job.
        job: u64,
    },
    /// The answer to [`Request::Status`].
    Status {
        /// The client's `req` of the Status.
        req: u64,
        /// The job.
        info: JobInfo,
    },
    /// The answer to [`Request::Jobs`]: unfinished jobs, oldest first.
    Jobs {
        /// The client's `req` of the Jobs.
        req: u64,
        /// One entry per job the user may see, at most [`JOBS_PAGE`].
        jobs: Vec<JobInfo>,
        /// More jobs follow the last one here: ask again with `after`.
        more: bool,
    },
    /// A `Cancel` or `Status` that could not be done.
    Refused {
        /// The client's `req` of the request.
        req: u64,
        /// The job it named.
        job: u64,
        /// [`FailureKind::NoSuchJob`] or [`FailureKind::PermissionDenied`]
        /// (another user's job).
        kind: FailureKind,
        /// A sentence saying why.
        message: String,
    },
    /// The answer to [`Request::Stats`].
    Stats(StatsReport),
    /// The connection is being closed because of what the client sent.
    ProtocolError {
        /// The class of error.
        kind: ProtocolErrorKind,
        /// A sentence naming what was wrong.
        message: String,
    },
}
