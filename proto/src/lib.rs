//! The wire protocol of the ringxfer daemon: its messages and their codec.
//!
//! This crate is what a program, or a binding in another language, needs
//! to speak to `ringxferd` without the client stub of `ringxfer-ipc`: the
//! [`Request`]s a client sends, the [`Event`]s the daemon sends back, and
//! [`codec`], the one place that knows how they are encoded. It depends on
//! serde, postcard and thiserror only: no libc, no threads, no sockets.
//! [`peer`] defines the wire between two daemons (host-to-host transfers),
//! which no daemon speaks yet.
//!
//! # Frames
//!
//! Both directions of the daemon's Unix stream socket carry frames:
//!
//! ```text
//! +----------------------------+---------------------------------+
//! | length: u32, little-endian | payload: `length` bytes         |
//! | (FRAME_HEADER_LEN = 4)     | one message, postcard-encoded   |
//! +----------------------------+---------------------------------+
//! ```
//!
//! The payload is one [`Request`] (client to daemon) or one [`Event`]
//! (daemon to client) in postcard's format (serde; enum variants by index,
//! integers as varints, see <https://postcard.jamesmunns.com/wire-format>),
//! with no bytes after it. A payload may be at most
//! [`DEFAULT_MAX_FRAME`] bytes until the daemon says otherwise in
//! [`Limits::max_frame`].
//!
//! Descriptors travel beside the bytes, as `SCM_RIGHTS` ancillary data of
//! the `sendmsg(2)` that carries the frame's first byte:
//! [`SUBMIT_DESCRIPTORS`] (source, destination) with [`Request::Submit`],
//! [`PUBLISH_DESCRIPTORS`] when it has [`SubmitRequest::publish`], two per
//! job with [`Request::SubmitBatch`], none with anything else.
//!
//! # Version handshake
//!
//! A connection's first frame is [`Request::Hello`] with
//! [`PROTOCOL_VERSION`]. The daemon answers [`Event::Welcome`] with its
//! version and the [`Limits`] it enforces on the connection, or, for any
//! other version, [`Event::ProtocolError`] with
//! [`ProtocolErrorKind::BadVersion`] and closes the connection. `Hello` is
//! the first variant and holds one integer, so its encoding has been the
//! same in every version: a client built for another version always gets
//! that clear answer, never a garbled one. After the handshake requests
//! and events flow independently; events that answer a request carry its
//! `req`.
//!
//! ```
//! use ringxfer_proto::{codec, Event, Limits, Request, DEFAULT_MAX_FRAME, PROTOCOL_VERSION};
//!
//! // The client's first frame.
//! let mut frame = Vec::new();
//! let hello = Request::Hello { version: PROTOCOL_VERSION };
//! codec::encode_frame(&hello, &mut frame, DEFAULT_MAX_FRAME)?;
//! assert_eq!(frame, [2, 0, 0, 0, 0, PROTOCOL_VERSION as u8]);
//!
//! // The daemon's answer, cut out of the bytes received.
//! let limits = Limits {
//!     max_frame: DEFAULT_MAX_FRAME, max_jobs_per_connection: 64, max_fds_per_message: 64,
//!     max_jobs_per_user: 256, max_queued_bytes_per_connection: 0, max_queued_bytes_per_user: 0,
//! };
//! let mut received = Vec::new();
//! codec::encode_frame(&Event::Welcome { version: PROTOCOL_VERSION, limits }, &mut received, DEFAULT_MAX_FRAME)?;
//! let header = received[..ringxfer_proto::FRAME_HEADER_LEN].try_into()?;
//! let len = codec::frame_len(header) as usize;
//! let payload = &received[ringxfer_proto::FRAME_HEADER_LEN..][..len];
//! match codec::decode_payload::<Event>(payload)? {
//!     Event::Welcome { version, limits } => {
//!         assert_eq!(version, PROTOCOL_VERSION);
//!         assert_eq!(limits.max_fds_per_message, 64);
//!     }
//!     other => panic!("no Welcome: {other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod codec;
pub mod frame;
mod messages;
pub mod peer;

pub use codec::CodecError;
pub use messages::*;

#[cfg(test)]
mod tests {
    use super::*;

    fn frame<T: serde::Serialize>(msg: &T) -> Vec<u8> {
        let mut buf = Vec::new();
        codec::encode_frame(msg, &mut buf, DEFAULT_MAX_FRAME).expect("encode");
        buf
    }

    fn unframe<T: serde::de::DeserializeOwned>(buf: &[u8]) -> T {
        let header = buf[..FRAME_HEADER_LEN].try_into().expect("header");
        let len = codec::frame_len(header) as usize;
        assert_eq!(buf.len(), FRAME_HEADER_LEN + len, "one whole frame");
        codec::decode_payload(&buf[FRAME_HEADER_LEN..]).expect("decode")
    }

    fn submit() -> SubmitRequest {
        SubmitRequest {
            req: 7,
            tag: "a/b.txt".into(),
            offset: 1,
            length: Some(1 << 40),
            dest_offset: 2,
            strategy: Strategy::Direct,
            progress: true,
            priority: Priority::High,
            rate_limit: Some(1 << 20),
            detach: true,
            fsync: true,
            verify: true,
            truncate: true,
            publish: Some(PublishTo {
                name: b"out".to_vec(),
                staged_name: Some(b".out.ringxfer-1-2".to_vec()),
            }),
            reflink: crate::Reflink::Always,
            rate_group: Some(RateGroup {
                id: 3,
                rate: 50 << 20,
            }),
            sparse: crate::Sparse::Never,
        }
    }

    /// What a binding author relies on: the handshake's bytes never move,
    /// whatever else the protocol's versions change.
    #[test]
    fn hello_is_the_first_variant_and_one_varint() {
        let bytes = frame(&Request::Hello { version: 300 });
        assert_eq!(bytes, [3, 0, 0, 0, 0, 0xac, 0x02]);
    }

    #[test]
    fn every_request_round_trips() {
        let requests = [
            Request::Hello {
                version: PROTOCOL_VERSION,
            },
            Request::Submit(submit()),
            Request::Cancel { req: 1, job: 2 },
            Request::Status { req: 3, job: 4 },
            Request::Wait {
                req: 5,
                job: 6,
                progress: true,
            },
            Request::Jobs { req: 7, after: 8 },
            Request::Stats,
            Request::SubmitBatch(vec![submit(), submit()]),
            Request::SubmitRemote(Box::new(RemoteSubmit {
                submit: submit(),
                path: peer::RemotePath::new("inbox/a.bin").expect("a valid remote path"),
                mkdir: true,
                pull: false,
                resume: false,
                list: false,
                connection: PeerConnection::Continue,
                stripe: Some(peer::StripeId {
                    set: 7,
                    index: 1,
                    count: 2,
                }),
            })),
        ];
        for request in requests {
            assert_eq!(unframe::<Request>(&frame(&request)), request);
        }
    }

    #[test]
    fn job_events_round_trip() {
        let events = [
            Event::Accepted { req: 1, job: 2 },
            Event::Progress {
                req: 1,
                job: 2,
                bytes: 3,
                total: Some(4),
            },
            Event::Completed {
                req: 1,
                job: 2,
                bytes: 3,
                strategy: Strategy::Buffered,
                elapsed_us: 5,
                note: Some("why".into()),
                synced: true,
                checksums: None,
            },
            Event::Failed {
                req: 1,
                job: None,
                kind: FailureKind::NoSpace,
                os_error: Some(28),
                message: "full".into(),
                bytes: 0,
            },
            Event::ProtocolError {
                kind: ProtocolErrorKind::BadVersion,
                message: "v5".into(),
            },
        ];
        for event in events {
            assert_eq!(unframe::<Event>(&frame(&event)), event);
        }
    }

    #[test]
    fn trailing_bytes_and_oversized_frames_are_refused() {
        let mut bytes = frame(&Request::Stats);
        bytes.push(0);
        let payload = &bytes[FRAME_HEADER_LEN..];
        assert!(matches!(
            codec::decode_payload::<Request>(payload),
            Err(CodecError::Trailing(1))
        ));
        let mut out = vec![9];
        let big = Request::Submit(SubmitRequest {
            tag: "x".repeat(100),
            ..submit()
        });
        assert!(matches!(
            codec::encode_frame(&big, &mut out, 16),
            Err(CodecError::TooLarge { max: 16, .. })
        ));
        assert_eq!(out, [9], "a refused frame leaves the buffer as it was");
    }
}
