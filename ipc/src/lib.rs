//! The wire protocol of the ringxfer daemon and a client stub to speak it.
//!
//! Programs link this crate to hand transfers to `ringxferd`: they open the
//! files or sockets themselves, pass the descriptors over the daemon's Unix
//! socket, and are told when each transfer is done. The crate has no io_uring
//! dependency; it needs only a Unix socket. The messages and their codec
//! come from `ringxfer-proto` (re-exported here as [`proto`] and
//! [`codec`]), which a program speaking the protocol without this stub
//! links on its own.

pub mod batch;
pub mod client;
mod destination;
pub mod dispatch;
pub mod errno;
pub mod fdpass;
pub mod publish;
pub mod socket_path;

/// The protocol's messages, from `ringxfer-proto` (the crate a program or a
/// language binding links to speak the protocol without this stub).
pub use ringxfer_proto as proto;
/// The frame codec, from `ringxfer-proto`.
pub use ringxfer_proto::codec;
/// The one deframer, daemon's and client's, from `ringxfer-proto`.
pub use ringxfer_proto::frame;

pub use batch::SubmitBatch;
pub use client::{Client, ClientError, Completion, JobError, JobHandle, LostJob, TransferOptions};
pub use publish::{preserve_metadata, PublishError, PublishOptions, StagedFile};
pub use socket_path::{client_socket_path, default_socket_path, SYSTEM_SOCKET};

pub use proto::{
    fit_tag, Checksums, Event, FailureKind, JobInfo, JobState, Limits, Priority, ProtocolErrorKind,
    PublishTo, RateGroup, Reflink, RemoteSubmit, Request, Sparse, StatsReport, Strategy,
    StrategyStats, SubmitRequest, DEFAULT_MAX_FRAME, FRAME_HEADER_LEN, JOBS_PAGE, MAX_TAG_BYTES,
    PROTOCOL_VERSION, PUBLISH_DESCRIPTORS, SUBMIT_DESCRIPTORS,
};
