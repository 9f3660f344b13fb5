//! The wire between two daemons (host-to-host transfers, issue 18): what
//! one `ringxferd` says to another over a TCP (TLS) connection.
//!
//! This module defines the messages and how a stream of them is cut. It
//! lives here, beside the client's protocol,
//! because both ends must agree on it byte for byte, and a program that
//! wants to talk to a daemon over the network needs nothing else.
//!
//! # Frames and raw data
//!
//! A frame is the client wire's (see the crate's documentation): a `u32`
//! little-endian length, then one [`PeerMessage`] in postcard's format, at
//! most [`PeerLimits::max_frame`] bytes. One message is followed by bytes
//! outside any frame: [`PeerMessage::Data`] announces `len` raw bytes of a
//! file, which come right after it, untouched, so that a sender can hand
//! them to sendfile, splice or kernel TLS and a receiver can splice them
//! into the file. [`PeerReader`] cuts a received stream into messages and
//! those spans.
//!
//! ```text
//! | len | Put ... | len | Data{xfer 1, offset 0, len 5} | h e l l o | len | End ... |
//! ```
//!
//! # A file, pushed
//!
//! The sender offers it ([`PeerMessage::Put`]); the receiver answers
//! [`PeerMessage::Ready`] with the offset it wants the data from (0, or
//! where a resumed transfer continues) or [`PeerMessage::Refused`]. Then
//! data, at offsets in order, then [`PeerMessage::End`] with the size and
//! the CRC-32C of the whole file. The receiver publishes the file under its
//! name (staged until then) only if both match, then answers
//! [`PeerMessage::Done`]; the sender reports success only once it has that
//! answer. A connection that ends before `Done` is a failure at both ends,
//! and the name keeps what it had.
//!
//! A resumed push (`Put { resume: true }`) is answered first with
//! [`PeerMessage::Sums`] of the whole blocks of the part the receiver kept,
//! then `Ready` at their end; the sender compares them with its file and
//! answers `Ready` itself, at the end of the longest prefix that matches
//! (0 if none), and sends the data from there. `End`'s CRC is still the
//! whole file's. A receiver that kept nothing answers `Ready { offset: 0 }`
//! alone, as for a new file.
//!
//! # A large file, in stripes
//!
//! A sender may push one file as several stripes, each over a connection
//! of its own (`Put { stripe: Some(..) }`, bbcp's parallel streams): every
//! stripe names the set (a number the sender chose), its index, how many
//! stripes the set has and the range of the file it carries; `meta.size`
//! is the whole file's. Data offsets are the file's; `End` gives the
//! stripe's length and the CRC-32C of its bytes. The receiver writes every
//! stripe into the same staged part, answers `Done` to each stripe once
//! its bytes landed, and publishes the file when the last stripe of the
//! set landed, before that stripe's `Done`: the sender holds the file as
//! published once every stripe is done. Any stripe failing (other than by
//! a lost connection) fails the file: the name keeps what it had.
//!
//! ```
//! use ringxfer_proto::peer::{
//!     encode, Checksum, FileMeta, PeerLimits, PeerMessage, PeerReader, Piece, Put, RemotePath,
//!     Timestamp,
//! };
//!
//! let limits = PeerLimits::default();
//! let file = b"hello";
//! let put = Put {
//!     xfer: 1,
//!     path: RemotePath::new("backups/notes.txt")?,
//!     meta: FileMeta { size: 5, mode: 0o644, atime: Timestamp::default(), mtime: Timestamp::default() },
//!     checksum: Checksum::Crc32c,
//!     resume: false,
//!     fsync: false,
//!     mkdir: false,
//!     stripe: None,
//!     directory: false,
//! };
//! let mut stream = Vec::new();
//! encode(&PeerMessage::Put(put), &mut stream, limits.max_frame)?;
//! encode(&PeerMessage::Data { xfer: 1, offset: 0, len: 5 }, &mut stream, limits.max_frame)?;
//! stream.extend_from_slice(file); // raw, after its Data
//! encode(&PeerMessage::End { xfer: 1, size: 5, crc32c: 0x9a71_bb4c }, &mut stream, limits.max_frame)?;
//!
//! // The receiver's side: cut what arrived.
//! let (mut reader, mut at, mut landed) = (PeerReader::default(), 0, Vec::new());
//! while let Some((piece, used)) = reader.next(&stream[at..], &limits)? {
//!     match piece {
//!         Piece::Message(PeerMessage::Put(put)) => assert_eq!(put.path.as_str(), "backups/notes.txt"),
//!         Piece::Data { xfer: 1, offset, bytes } => {
//!             assert_eq!(offset as usize, landed.len());
//!             landed.extend_from_slice(bytes);
//!         }
//!         Piece::Message(PeerMessage::End { size, .. }) => assert_eq!(size, 5),
//!         other => panic!("unexpected {other:?}"),
//!     }
//!     at += used;
//! }
//! assert_eq!(landed, file);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::frame::{self, DeframeError};
use crate::FailureKind;

/// The TCP port a remote path without one (`HOST:EXPORT/PATH`) reaches.
pub const DEFAULT_PORT: u16 = 7300;

/// The version a daemon sends in [`PeerMessage::Hello`].
/// Version 2 added [`Put::stripe`], version 3 [`Put::directory`],
/// version 4 the listed directory's own mode and time ([`Listing`]).
pub const PEER_PROTOCOL_VERSION: u32 = 4;

/// The most stripes one file may be pushed as ([`Stripe`]).
pub const MAX_STRIPES: u32 = 16;

/// The longest name a [`RemotePath`] may be, in bytes (Linux's PATH_MAX
/// less its NUL).
pub const MAX_PATH_LEN: usize = 4095;

/// The longest component of a [`RemotePath`], in bytes (NAME_MAX).
pub const MAX_COMPONENT_LEN: usize = 255;

/// What each end accepts, sent in [`PeerMessage::Welcome`].
///
/// ```
/// let limits = ringxfer_proto::peer::PeerLimits::default();
/// assert!(limits.max_data > limits.max_frame);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerLimits {
    /// The largest frame payload, in bytes.
    pub max_frame: u32,
    /// The most raw bytes one [`PeerMessage::Data`] may announce.
    pub max_data: u32,
    /// Bytes a sender may have sent that the receiver has not yet written.
    pub max_inflight: u64,
}

impl Default for PeerLimits {
    /// 64 KiB frames (a [`PeerMessage::Sums`] of 16,000 blocks fits), 8 MiB
    /// of data a header (a sendfile's piece), 64 MiB in flight.
    fn default() -> PeerLimits {
        PeerLimits {
            max_frame: 64 << 10,
            max_data: 8 << 20,
            max_inflight: 64 << 20,
        }
    }
}

/// A time of a file: seconds and nanoseconds since the epoch.
///
/// ```
/// let t = ringxfer_proto::peer::Timestamp { secs: -1, nanos: 500_000_000 };
/// assert!(t < ringxfer_proto::peer::Timestamp::default()); // half a second before 1970
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp {
    /// Whole seconds (negative before 1970).
    pub secs: i64,
    /// Nanoseconds within the second, below 1,000,000,000.
    pub nanos: u32,
}

/// What the receiver needs to make the file as the sender has it.
///
/// ```
/// use ringxfer_proto::peer::{FileMeta, Timestamp};
/// let meta = FileMeta { size: 1 << 20, mode: 0o640, atime: Timestamp::default(), mtime: Timestamp::default() };
/// assert_eq!(meta.mode & 0o777, 0o640);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// Its length in bytes.
    pub size: u64,
    /// Its permission bits (st_mode & 0o7777).
    pub mode: u32,
    /// Last access.
    pub atime: Timestamp,
    /// Last modification.
    pub mtime: Timestamp,
}

/// How the bytes of a file are checked end to end.
///
/// ```
/// assert_eq!(ringxfer_proto::peer::Checksum::Crc32c, Default::default());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Checksum {
    /// CRC-32C (Castagnoli), as `--verify` computes it.
    #[default]
    Crc32c,
}

/// A file offered to a receiver ([`PeerMessage::Put`]).
///
/// ```
/// use ringxfer_proto::peer::{Checksum, FileMeta, Put, RemotePath, Timestamp};
/// let put = Put {
///     xfer: 7,
///     path: RemotePath::new("a/b.bin")?,
///     meta: FileMeta { size: 3, mode: 0o600, atime: Timestamp::default(), mtime: Timestamp::default() },
///     checksum: Checksum::Crc32c,
///     resume: true,
///     fsync: true,
///     mkdir: false,
///     stripe: None,
///     directory: false,
/// };
/// assert_eq!(put.path.components().count(), 2);
/// # Ok::<(), ringxfer_proto::peer::NameError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Put {
    /// The sender's number for this transfer on the connection.
    pub xfer: u64,
    /// Where it goes, beneath the receiver's export.
    pub path: RemotePath,
    /// Its size, mode and times.
    pub meta: FileMeta,
    /// How its bytes are checked.
    pub checksum: Checksum,
    /// Continue a part the receiver kept from an interrupted transfer.
    pub resume: bool,
    /// Make data and name durable before answering [`PeerMessage::Done`].
    pub fsync: bool,
    /// Make the directories of `path` that do not exist yet (a tree being
    /// pushed), beneath the export, as its user, mode 0755 less its umask.
    pub mkdir: bool,
    /// One stripe of a file pushed over several connections at once;
    /// `meta.size` is then the whole file's.
    pub stripe: Option<Stripe>,
    /// A directory, not a file (a tree being pushed): made beneath the
    /// export with the directories it lacks, as `mkdir -p`, and given
    /// `meta`'s mode and times. It has no data: `size` 0, `Ready`, then
    /// `End { size: 0, crc32c: 0 }`, and `Done` once mode and times are
    /// set.
    pub directory: bool,
}

/// Which stripe of which file a client's push is ([`MAX_STRIPES`] at
/// most): the daemon takes its range from the job's offset and length.
///
/// ```
/// use ringxfer_proto::peer::StripeId;
/// let second = StripeId { set: 0x5eed, index: 1, count: 4 };
/// assert!(second.is_valid());
/// assert!(!StripeId { index: 4, ..second }.is_valid());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StripeId {
    /// The sender's number for the file's set of stripes.
    pub set: u64,
    /// This stripe's place in the set, from 0.
    pub index: u32,
    /// How many stripes the set has.
    pub count: u32,
}

impl StripeId {
    /// At least one stripe, at most [`MAX_STRIPES`], and `index` among them.
    pub fn is_valid(&self) -> bool {
        (1..=MAX_STRIPES).contains(&self.count) && self.index < self.count
    }
}

/// A stripe of a file on the wire ([`Put::stripe`]): which one, and the
/// range of the file it carries.
///
/// ```
/// use ringxfer_proto::peer::{Stripe, StripeId};
/// let s = Stripe { id: StripeId { set: 9, index: 0, count: 2 }, offset: 0, len: 1 << 20 };
/// assert!(s.fits(2 << 20));
/// assert!(!s.fits(1 << 19));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stripe {
    pub id: StripeId,
    /// Where its bytes start in the file.
    pub offset: u64,
    /// How many bytes it carries.
    pub len: u64,
}

impl Stripe {
    /// Valid, and within a file of `size` bytes.
    pub fn fits(&self, size: u64) -> bool {
        self.id.is_valid()
            && self
                .offset
                .checked_add(self.len)
                .is_some_and(|end| end <= size)
    }
}

/// One message between daemons. `Hello` is the first variant and holds one
/// integer, so that a daemon of any version can read another's version.
///
/// ```
/// use ringxfer_proto::peer::{encode, PeerMessage, PEER_PROTOCOL_VERSION};
/// let mut bytes = Vec::new();
/// encode(&PeerMessage::Hello { version: PEER_PROTOCOL_VERSION }, &mut bytes, 64)?;
/// assert_eq!(bytes, [2, 0, 0, 0, 0, PEER_PROTOCOL_VERSION as u8]);
/// # Ok::<(), ringxfer_proto::CodecError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// The connecting daemon's first message.
    Hello {
        /// [`PEER_PROTOCOL_VERSION`] of the sender.
        version: u32,
    },
    /// The answer to `Hello`: the listener's version and limits.
    Welcome {
        /// The listener's version.
        version: u32,
        /// What it accepts.
        limits: PeerLimits,
    },
    /// A file offered for writing (push).
    Put(Put),
    /// A file asked for (pull).
    Get {
        /// The asker's number for this transfer.
        xfer: u64,
        /// Which, beneath the answerer's export.
        path: RemotePath,
        /// The asker keeps a part and wants the rest (then `Sums` follows).
        resume: bool,
    },
    /// Go ahead: data is wanted from `offset` on. For a `Get`, `meta` says
    /// what is coming.
    Ready {
        /// The transfer.
        xfer: u64,
        /// Where the data starts.
        offset: u64,
        /// The file's size, mode and times, answering a `Get`.
        meta: Option<FileMeta>,
    },
    /// The transfer cannot start.
    Refused {
        /// The transfer.
        xfer: u64,
        /// Why, in the client protocol's terms.
        kind: FailureKind,
        /// Why, in words (the path as the peer named it, the errno).
        message: String,
    },
    /// `len` raw bytes of the file at `offset` follow this frame.
    Data {
        /// The transfer.
        xfer: u64,
        /// Where they go in the file.
        offset: u64,
        /// How many follow (1 to [`PeerLimits::max_data`]).
        len: u32,
    },
    /// All data was sent: the file is `size` bytes and its checksum this.
    End {
        /// The transfer.
        xfer: u64,
        /// The file's whole size.
        size: u64,
        /// The CRC-32C of all its bytes.
        crc32c: u32,
    },
    /// Published under its name: the checksum of what landed.
    Done {
        /// The transfer.
        xfer: u64,
        /// The CRC-32C the receiver computed.
        crc32c: u32,
    },
    /// The transfer failed after it started; the name keeps what it had.
    Failed {
        /// The transfer.
        xfer: u64,
        /// Why, in the client protocol's terms.
        kind: FailureKind,
        /// Why, in words.
        message: String,
    },
    /// Stop this transfer (either side).
    Cancel {
        /// The transfer.
        xfer: u64,
    },
    /// CRC-32Cs of the part kept, `block` bytes each from block `first`
    /// (several frames for a long part), before the receiver's `Ready` at
    /// their end: the sender answers `Ready` at the end of the longest
    /// prefix it has the same.
    Sums {
        /// The transfer.
        xfer: u64,
        /// Bytes a block.
        block: u32,
        /// The first block's number.
        first: u64,
        /// One a block, in order.
        crcs: Vec<u32>,
    },
    /// Are you there? (answered by `Pong`).
    Ping,
    /// Here.
    Pong,
    /// Nothing more on this connection.
    Bye,
    /// A tree asked for (a pull with `-r`): the answerer serves, as if it
    /// were the file of a `Get`, the listing ([`encode_listing`]) of
    /// everything beneath `path`, a directory in its export.
    List {
        /// The asker's number for this transfer.
        xfer: u64,
        /// Which directory, beneath the answerer's export.
        path: RemotePath,
    },
}

/// What a [`ListEntry`] is; links and other kinds are listed, not followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory (its entries follow it in the listing).
    Dir,
    /// A symbolic link (not followed).
    Symlink,
    /// Anything else, or a name that is not UTF-8.
    Other,
}

/// One entry of a listing: its path below the listed directory, with `/`
/// between components, parents before children.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    /// Below the listed directory.
    pub path: String,
    pub kind: EntryKind,
    /// Bytes, for a file.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    pub mtime: Timestamp,
}

/// What a [`PeerMessage::List`] serves: the listed directory's own
/// permission bits and modification time (which a copy of it takes, as
/// `cp -a` gives them), and everything beneath it.
///
/// ```
/// use ringxfer_proto::peer::{decode_listing, encode_listing, EntryKind, ListEntry, Listing, Timestamp};
/// let listing = Listing {
///     mode: 0o750,
///     mtime: Timestamp { secs: 1_700_000_000, nanos: 5 },
///     entries: vec![
///         ListEntry { path: "photos".into(), kind: EntryKind::Dir, size: 0, mode: 0o755, mtime: Timestamp::default() },
///         ListEntry { path: "photos/a.jpg".into(), kind: EntryKind::File, size: 3, mode: 0o644, mtime: Timestamp::default() },
///     ],
/// };
/// assert_eq!(decode_listing(&encode_listing(&listing))?, listing);
/// # Ok::<(), ringxfer_proto::CodecError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// The listed directory's permission bits.
    pub mode: u32,
    pub mtime: Timestamp,
    pub entries: Vec<ListEntry>,
}

/// A listing as the bytes a [`PeerMessage::List`] serves (postcard).
pub fn encode_listing(listing: &Listing) -> Vec<u8> {
    postcard::to_allocvec(listing).unwrap_or_default()
}

/// The listing in a listing's bytes.
pub fn decode_listing(bytes: &[u8]) -> Result<Listing, CodecError> {
    postcard::from_bytes(bytes).map_err(|e| CodecError::Decode(e.to_string()))
}

/// A name beneath a peer's export, checked before it reaches any system
/// call: relative, `/`-separated, with no empty, `.` or `..` component and
/// no NUL, at most [`MAX_PATH_LEN`] bytes and [`MAX_COMPONENT_LEN`] a
/// component. (Symbolic links within the export are the receiver's to
/// refuse, with `openat2(RESOLVE_BENEATH)`.) A received one is checked as
/// it is decoded: a frame holding a bad name does not decode (postcard
/// keeps no reason), so a sender checks its names first, to tell its user
/// why.
///
/// ```
/// use ringxfer_proto::peer::{NameError, RemotePath};
/// assert_eq!(RemotePath::new("photos/2026/a.jpg")?.components().last(), Some("a.jpg"));
/// assert_eq!(RemotePath::new("../etc/passwd"), Err(NameError::DotDot));
/// assert_eq!(RemotePath::new("/etc/passwd"), Err(NameError::Absolute));
/// # Ok::<(), NameError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RemotePath(String);

/// Why a name is not a [`RemotePath`].
///
/// ```
/// use ringxfer_proto::peer::{NameError, RemotePath};
/// let err = RemotePath::new("a//b").unwrap_err();
/// assert_eq!(err, NameError::EmptyComponent);
/// assert_eq!(err.to_string(), "the name has an empty component (//, or a / at its end)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Nothing.
    #[error("the name is empty")]
    Empty,
    /// Over [`MAX_PATH_LEN`] bytes.
    #[error("the name is {0} bytes long (at most {MAX_PATH_LEN})")]
    TooLong(usize),
    /// A component over [`MAX_COMPONENT_LEN`] bytes.
    #[error("a component of the name is {0} bytes long (at most {MAX_COMPONENT_LEN})")]
    ComponentTooLong(usize),
    /// It starts with `/`.
    #[error("the name is absolute; it must be relative to the export")]
    Absolute,
    /// It holds a NUL byte.
    #[error("the name holds a NUL byte")]
    Nul,
    /// `//`, or a `/` at its end.
    #[error("the name has an empty component (//, or a / at its end)")]
    EmptyComponent,
    /// A `.` component.
    #[error("the name has a . component")]
    Dot,
    /// A `..` component: it would leave the export.
    #[error("the name has a .. component, which would leave the export")]
    DotDot,
}

impl RemotePath {
    /// Checks `name` (see [`RemotePath`]).
    pub fn new(name: &str) -> Result<RemotePath, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MAX_PATH_LEN {
            return Err(NameError::TooLong(name.len()));
        }
        if name.starts_with('/') {
            return Err(NameError::Absolute);
        }
        if name.contains('\0') {
            return Err(NameError::Nul);
        }
        for part in name.split('/') {
            match part {
                "" => return Err(NameError::EmptyComponent),
                "." => return Err(NameError::Dot),
                ".." => return Err(NameError::DotDot),
                long if long.len() > MAX_COMPONENT_LEN => {
                    return Err(NameError::ComponentTooLong(long.len()))
                }
                _ => {}
            }
        }
        Ok(RemotePath(name.to_owned()))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its components, from the export down.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl TryFrom<String> for RemotePath {
    type Error = NameError;

    fn try_from(name: String) -> Result<RemotePath, NameError> {
        RemotePath::new(&name)
    }
}

impl From<RemotePath> for String {
    fn from(path: RemotePath) -> String {
        path.0
    }
}

/// Appends `msg` as one frame to `out` (see [`codec::encode_frame`]). A
/// [`PeerMessage::Data`]'s bytes are the caller's to send after it.
pub fn encode(msg: &PeerMessage, out: &mut Vec<u8>, max_frame: u32) -> Result<(), CodecError> {
    codec::encode_frame(msg, out, max_frame)
}

/// What [`PeerReader::next`] cut from a stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A message (never [`PeerMessage::Data`]: its bytes come as `Data`).
    Message(PeerMessage),
    /// Raw bytes of a transfer's file, for `offset` on: all or part of what
    /// a `Data` announced.
    Data {
        /// The transfer.
        xfer: u64,
        /// Where `bytes` go in the file.
        offset: u64,
        /// As many of them as the buffer held.
        bytes: &'a [u8],
    },
}

/// Why a peer's stream cannot be read on: the connection must end.
///
/// ```
/// use ringxfer_proto::peer::{encode, PeerLimits, PeerMessage, PeerReader, PeerWireError};
/// let limits = PeerLimits::default();
/// let mut bytes = Vec::new();
/// encode(&PeerMessage::Data { xfer: 1, offset: 0, len: limits.max_data + 1 }, &mut bytes, 64)?;
/// let err = PeerReader::default().next(&bytes, &limits).unwrap_err();
/// assert!(matches!(err, PeerWireError::DataTooLong { .. }));
/// # Ok::<(), ringxfer_proto::CodecError>(())
/// ```
#[derive(Debug, thiserror::Error)]
pub enum PeerWireError {
    /// A frame too long, or one that does not decode.
    #[error(transparent)]
    Frame(#[from] DeframeError),
    /// A `Data` announcing more than the limit.
    #[error("a Data frame announces {len} bytes (at most {max})")]
    DataTooLong {
        /// What it announced.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// A `Data` announcing nothing.
    #[error("a Data frame announces no bytes")]
    EmptyData,
}

/// Raw bytes announced and not yet taken.
#[derive(Debug, Clone, Copy)]
struct Announced {
    xfer: u64,
    offset: u64,
    left: u32,
}

/// Cuts a received stream into [`Piece`]s, remembering across calls how
/// much of an announced `Data` is still to come.
///
/// ```
/// use ringxfer_proto::peer::{encode, PeerLimits, PeerMessage, PeerReader, Piece};
/// let limits = PeerLimits::default();
/// let mut bytes = Vec::new();
/// encode(&PeerMessage::Data { xfer: 3, offset: 10, len: 4 }, &mut bytes, 64)?;
/// bytes.extend_from_slice(b"ab"); // only half has arrived
/// let mut reader = PeerReader::default();
/// let (piece, used) = reader.next(&bytes, &limits)?.expect("a piece");
/// assert_eq!(piece, Piece::Data { xfer: 3, offset: 10, bytes: b"ab" });
/// assert_eq!(used, bytes.len());
/// assert_eq!(reader.data_left(), Some((3, 12, 2)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct PeerReader {
    announced: Option<Announced>,
}

impl PeerReader {
    /// The next piece at the start of `buf` and the bytes it used, or None
    /// until more has arrived. A `Data` whose header came alone is a
    /// [`Piece::Data`] with no bytes (its bytes come with the next calls,
    /// or by [`PeerReader::took`]).
    pub fn next<'a>(
        &mut self,
        buf: &'a [u8],
        limits: &PeerLimits,
    ) -> Result<Option<(Piece<'a>, usize)>, PeerWireError> {
        if self.announced.is_some() {
            return Ok(self.take_data(buf));
        }
        let Some((msg, used)) = frame::next::<PeerMessage>(buf, limits.max_frame)? else {
            return Ok(None);
        };
        let PeerMessage::Data { xfer, offset, len } = msg else {
            return Ok(Some((Piece::Message(msg), used)));
        };
        self.announce(xfer, offset, len, limits)?;
        Ok(Some(match self.take_data(&buf[used..]) {
            Some((piece, more)) => (piece, used + more),
            None => (
                Piece::Data {
                    xfer,
                    offset,
                    bytes: &[],
                },
                used,
            ),
        }))
    }

    /// The transfer, offset and number of raw bytes still to come of the
    /// last `Data`, if any: a receiver that moves them itself (splice from
    /// the socket into the file) says how many with [`PeerReader::took`].
    pub fn data_left(&self) -> Option<(u64, u64, u32)> {
        self.announced.map(|a| (a.xfer, a.offset, a.left))
    }

    /// Counts `n` raw bytes taken from the stream by other means (at most
    /// what [`PeerReader::data_left`] says).
    pub fn took(&mut self, n: u32) {
        if let Some(a) = &mut self.announced {
            let n = n.min(a.left);
            a.left -= n;
            a.offset += u64::from(n);
            if a.left == 0 {
                self.announced = None;
            }
        }
    }

    fn announce(
        &mut self,
        xfer: u64,
        offset: u64,
        len: u32,
        limits: &PeerLimits,
    ) -> Result<(), PeerWireError> {
        if len == 0 {
            return Err(PeerWireError::EmptyData);
        }
        if len > limits.max_data {
            return Err(PeerWireError::DataTooLong {
                len,
                max: limits.max_data,
            });
        }
        self.announced = Some(Announced {
            xfer,
            offset,
            left: len,
        });
        Ok(())
    }

    /// Announced bytes at the start of `buf`, if any are due and there.
    fn take_data<'a>(&mut self, buf: &'a [u8]) -> Option<(Piece<'a>, usize)> {
        let a = self.announced?;
        let n = buf.len().min(a.left as usize);
        if n == 0 {
            return None;
        }
        // n <= a.left, a u32.
        self.took(n as u32);
        let piece = Piece::Data {
            xfer: a.xfer,
            offset: a.offset,
            bytes: &buf[..n],
        };
        Some((piece, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> PeerLimits {
        PeerLimits {
            max_frame: 1024,
            max_data: 64,
            max_inflight: 1 << 20,
        }
    }

    #[test]
    fn names_that_would_leave_the_export_or_confuse_a_file_system_are_refused() {
        let long_part = "x".repeat(MAX_COMPONENT_LEN + 1);
        let long_name = "a/".repeat(MAX_PATH_LEN / 2 + 1);
        let refused = [
            ("", NameError::Empty),
            ("/etc/passwd", NameError::Absolute),
            ("..", NameError::DotDot),
            ("a/../../b", NameError::DotDot),
            ("a/..", NameError::DotDot),
            ("./a", NameError::Dot),
            ("a/./b", NameError::Dot),
            ("a//b", NameError::EmptyComponent),
            ("a/", NameError::EmptyComponent),
            ("a\0b", NameError::Nul),
            (
                long_part.as_str(),
                NameError::ComponentTooLong(MAX_COMPONENT_LEN + 1),
            ),
            (long_name.as_str(), NameError::TooLong(long_name.len())),
        ];
        for (name, why) in refused {
            assert_eq!(RemotePath::new(name), Err(why), "{name:?}");
        }
        for name in [
            "a",
            "a/b/c.txt",
            "...",
            "..a",
            "a..",
            ".hidden/x",
            "with space/é",
        ] {
            assert_eq!(RemotePath::new(name).map(String::from).as_deref(), Ok(name));
        }
    }

    #[test]
    fn a_received_name_is_checked_as_it_is_decoded() {
        // The same bytes as a Get of "a/b", with the name swapped for "../b".
        let mut good = Vec::new();
        let get = |path| PeerMessage::Get {
            xfer: 1,
            path,
            resume: false,
        };
        encode(&get(RemotePath::new("a/b").unwrap()), &mut good, 64).unwrap();
        let mut bad = good.clone();
        let at = bad.windows(3).position(|w| w == b"a/b").unwrap();
        bad[at..at + 3].copy_from_slice(b"../");
        let err = PeerReader::default().next(&bad, &limits()).unwrap_err();
        assert!(
            matches!(err, PeerWireError::Frame(DeframeError::Decode { .. })),
            "{err}"
        );
        assert!(PeerReader::default()
            .next(&good, &limits())
            .unwrap()
            .is_some());
    }

    #[test]
    fn data_must_announce_something_and_no_more_than_the_limit() {
        for (len, refused) in [(0, true), (1, false), (64, false), (65, true)] {
            let mut bytes = Vec::new();
            encode(
                &PeerMessage::Data {
                    xfer: 1,
                    offset: 0,
                    len,
                },
                &mut bytes,
                64,
            )
            .unwrap();
            let got = PeerReader::default().next(&bytes, &limits());
            assert_eq!(got.is_err(), refused, "len {len}: {got:?}");
        }
    }

    #[test]
    fn a_header_alone_is_data_of_no_bytes_and_raw_bytes_taken_elsewhere_are_counted() {
        let mut bytes = Vec::new();
        encode(
            &PeerMessage::Data {
                xfer: 2,
                offset: 100,
                len: 10,
            },
            &mut bytes,
            64,
        )
        .unwrap();
        let header = bytes.len();
        let mut reader = PeerReader::default();
        let (piece, used) = reader.next(&bytes, &limits()).unwrap().unwrap();
        assert_eq!(
            piece,
            Piece::Data {
                xfer: 2,
                offset: 100,
                bytes: &[]
            }
        );
        assert_eq!(used, header);
        assert_eq!(reader.data_left(), Some((2, 100, 10)));
        // Spliced straight from the socket: the reader only counts them.
        reader.took(7);
        assert_eq!(reader.data_left(), Some((2, 107, 3)));
        assert_eq!(reader.next(&[], &limits()).unwrap(), None);
        let (piece, used) = reader.next(b"xyzEND", &limits()).unwrap().unwrap();
        assert_eq!(
            piece,
            Piece::Data {
                xfer: 2,
                offset: 107,
                bytes: b"xyz"
            }
        );
        assert_eq!((used, reader.data_left()), (3, None));
    }

    /// What a stream carries, as a sender writes it.
    #[derive(Debug, Clone)]
    enum Sent {
        Message(PeerMessage),
        Data { xfer: u64, bytes: Vec<u8> },
    }

    fn message() -> impl Strategy<Value = PeerMessage> {
        let name =
            "[a-z]{1,8}(/[a-z.]{1,8}){0,3}".prop_filter_map("a name", |s| RemotePath::new(&s).ok());
        prop_oneof![
            any::<u32>().prop_map(|version| PeerMessage::Hello { version }),
            (any::<u64>(), name.clone(), any::<bool>())
                .prop_map(|(xfer, path, resume)| PeerMessage::Get { xfer, path, resume }),
            (any::<u64>(), any::<u64>(), any::<u32>())
                .prop_map(|(xfer, size, crc32c)| PeerMessage::End { xfer, size, crc32c }),
            (
                any::<u64>(),
                proptest::collection::vec(any::<u32>(), 0..20),
                any::<u64>()
            )
                .prop_map(|(xfer, crcs, first)| PeerMessage::Sums {
                    xfer,
                    block: 1 << 24,
                    first,
                    crcs
                }),
            (any::<u64>(), ".{0,40}").prop_map(|(xfer, message)| PeerMessage::Failed {
                xfer,
                kind: FailureKind::NoSpace,
                message
            }),
            Just(PeerMessage::Ping),
            Just(PeerMessage::Bye),
            (any::<u64>(), name).prop_map(|(xfer, path)| PeerMessage::List { xfer, path }),
        ]
    }

    fn sent() -> impl Strategy<Value = Sent> {
        prop_oneof![
            message().prop_map(Sent::Message),
            (0u64..4, proptest::collection::vec(any::<u8>(), 1..=64))
                .prop_map(|(xfer, bytes)| Sent::Data { xfer, bytes }),
        ]
    }

    /// Reads `stream` arriving in pieces of the given sizes, as a socket
    /// delivers it: what was not used waits for the next piece. Each
    /// transfer's data must come at the offsets that follow on.
    fn read_in_pieces(stream: &[u8], sizes: &[usize]) -> Result<Vec<Sent>, PeerWireError> {
        let (mut reader, mut buf, mut got) = (PeerReader::default(), Vec::new(), Vec::new());
        let mut offsets = [0u64; 4];
        let mut rest = stream;
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at((*size).min(rest.len()));
            buf.extend_from_slice(now);
            rest = later;
            let mut at = 0;
            while let Some((piece, used)) = reader.next(&buf[at..], &limits())? {
                at += used;
                match piece {
                    Piece::Message(msg) => got.push(Sent::Message(msg)),
                    // Joined to the previous one where it goes on from it.
                    Piece::Data {
                        xfer,
                        offset,
                        bytes,
                    } => {
                        let expected = &mut offsets[xfer as usize];
                        assert_eq!(offset, *expected, "data of {xfer} out of place");
                        *expected += bytes.len() as u64;
                        match got.last_mut() {
                            Some(Sent::Data { xfer: x, bytes: b }) if *x == xfer => {
                                b.extend_from_slice(bytes)
                            }
                            _ => got.push(Sent::Data {
                                xfer,
                                bytes: bytes.to_vec(),
                            }),
                        }
                    }
                }
                if at == buf.len() {
                    break;
                }
            }
            buf.drain(..at);
        }
        Ok(got)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever the sizes the stream arrives in, the receiver reads the
        /// messages and data the sender wrote, in order, every data byte at
        /// its offset.
        #[test]
        fn any_cut_of_a_stream_reads_as_it_was_written(
            sent in proptest::collection::vec(sent(), 0..12),
            sizes in proptest::collection::vec(1usize..80, 1..8),
        ) {
            let mut stream = Vec::new();
            let mut offsets = [0u64; 4];
            for s in &sent {
                match s {
                    Sent::Message(msg) => encode(msg, &mut stream, limits().max_frame).unwrap(),
                    Sent::Data { xfer, bytes } => {
                        let offset = &mut offsets[*xfer as usize];
                        let len = bytes.len() as u32;
                        encode(&PeerMessage::Data { xfer: *xfer, offset: *offset, len }, &mut stream, 64).unwrap();
                        stream.extend_from_slice(bytes);
                        *offset += u64::from(len);
                    }
                }
            }
            let got = read_in_pieces(&stream, &sizes).unwrap();
            prop_assert_eq!(format!("{:?}", merged(&sent)), format!("{got:?}"));
        }
    }

    /// `sent` as the reader reports it: data of one transfer right after
    /// data of the same transfer reads as one run.
    fn merged(sent: &[Sent]) -> Vec<Sent> {
        let mut out: Vec<Sent> = Vec::new();
        for s in sent {
            match (out.last_mut(), s) {
                (
                    Some(Sent::Data { xfer: a, bytes }),
                    Sent::Data {
                        xfer: b,
                        bytes: more,
                    },
                ) if a == b => bytes.extend_from_slice(more),
                _ => out.push(s.clone()),
            }
        }
        out
    }
}
