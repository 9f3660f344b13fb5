//! Cutting requests out of the bytes a connection has received, with the
//! deframer the client stub uses too (`ringxfer_proto::frame`), and saying
//! why in the protocol's terms.

use ringxfer_ipc::frame::{self, DeframeError};
use ringxfer_ipc::{ProtocolErrorKind, Request};

/// Why the bytes received so far are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FrameError {
    pub kind: ProtocolErrorKind,
    pub message: String,
}

/// Takes the first complete frame off the front of `buf`, returning the
/// request and how many bytes it used, or `None` when more bytes are needed.
/// A length over `max_frame` is refused as soon as the header is in, before
/// any of the payload is waited for.
pub(crate) fn next_frame(
    buf: &[u8],
    max_frame: u32,
) -> Result<Option<(Request, usize)>, FrameError> {
    frame::next(buf, max_frame).map_err(|e| match e {
        DeframeError::TooLarge { .. } => FrameError {
            kind: ProtocolErrorKind::FrameTooLarge,
            message: e.to_string(),
        },
        DeframeError::Decode { len, source } => FrameError {
            kind: ProtocolErrorKind::Undecodable,
            message: format!("a frame of {len} bytes is not a valid request: {source}"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringxfer_ipc::{codec, FRAME_HEADER_LEN, PROTOCOL_VERSION};

    fn frame(req: &Request) -> Vec<u8> {
        let mut v = Vec::new();
        codec::encode_frame(req, &mut v, 1 << 20).expect("encodes");
        v
    }

    #[test]
    fn whole_frame_is_taken_and_partial_waits() {
        let hello = Request::Hello {
            version: PROTOCOL_VERSION,
        };
        let mut bytes = frame(&hello);
        let n = bytes.len();
        bytes.extend_from_slice(&frame(&Request::Stats)[..3]);
        let (req, used) = next_frame(&bytes, 1024).expect("valid").expect("complete");
        assert_eq!((req, used), (hello, n));
        assert_eq!(next_frame(&bytes[n..], 1024), Ok(None));
        assert_eq!(next_frame(&bytes[..n - 1], 1024), Ok(None));
    }

    #[test]
    fn oversized_length_is_refused_from_the_header_alone() {
        let err = next_frame(&[0, 0, 0, 1], 1024).expect_err("too large");
        assert_eq!(err.kind, ProtocolErrorKind::FrameTooLarge);
        assert!(err.message.contains("16777216"), "{}", err.message);
    }

    #[test]
    fn garbage_payload_is_undecodable() {
        let err = next_frame(&[3, 0, 0, 0, 0xff, 0xfe, 0xfd], 1024).expect_err("garbage");
        assert_eq!(err.kind, ProtocolErrorKind::Undecodable);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use ringxfer_ipc::{Priority, PublishTo, RateGroup, Strategy as Xfer, SubmitRequest};

        fn strategy() -> impl Strategy<Value = Xfer> {
            prop_oneof![
                Just(Xfer::Auto),
                Just(Xfer::Splice),
                Just(Xfer::Direct),
                Just(Xfer::Uncached),
                Just(Xfer::Buffered),
                Just(Xfer::Reflink),
            ]
        }

        fn submit() -> impl Strategy<Value = SubmitRequest> {
            let publish = proptest::option::of(
                (
                    proptest::collection::vec(any::<u8>(), 0..16),
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
                )
                    .prop_map(|(name, staged_name)| PublishTo { name, staged_name }),
            );
            (
                (any::<u64>(), ".{0,24}", any::<u64>(), any::<Option<u64>>()),
                (any::<u64>(), strategy(), any::<bool>(), 0u8..3),
                (
                    any::<Option<u64>>(),
                    any::<[bool; 4]>(),
                    publish,
                    any::<Option<(u64, u64)>>(),
                ),
            )
                .prop_map(
                    |((req, tag, offset, length), (dest_offset, strategy, progress, p), rest)| {
                        let (rate_limit, [detach, fsync, verify, truncate], publish, group) = rest;
                        SubmitRequest {
                            req,
                            tag,
                            offset,
                            length,
                            dest_offset,
                            strategy,
                            progress,
                            priority: [Priority::Low, Priority::Normal, Priority::High][p as usize],
                            rate_limit,
                            detach,
                            fsync,
                            verify,
                            truncate,
                            publish,
                            reflink: Default::default(),
                            rate_group: group.map(|(id, rate)| RateGroup { id, rate }),
                            sparse: Default::default(),
                        }
                    },
                )
        }

        fn request() -> impl Strategy<Value = Request> {
            prop_oneof![
                any::<u32>().prop_map(|version| Request::Hello { version }),
                Just(Request::Stats),
                (any::<u64>(), any::<u64>()).prop_map(|(req, job)| Request::Cancel { req, job }),
                (any::<u64>(), any::<u64>()).prop_map(|(req, job)| Request::Status { req, job }),
                (any::<u64>(), any::<u64>(), any::<bool>())
                    .prop_map(|(req, job, progress)| Request::Wait { req, job, progress }),
                (any::<u64>(), any::<u64>()).prop_map(|(req, after)| Request::Jobs { req, after }),
                submit().prop_map(Request::Submit),
                proptest::collection::vec(submit(), 0..5).prop_map(Request::SubmitBatch),
                (submit(), "[a-z]{1,8}/[a-z]{1,8}").prop_map(|(submit, path)| {
                    let path = ringxfer_ipc::proto::peer::RemotePath::new(&path)
                        .expect("a relative path of two plain components");
                    let (mkdir, pull) = (false, true);
                    Request::SubmitRemote(Box::new(ringxfer_ipc::RemoteSubmit {
                        submit,
                        path,
                        mkdir,
                        pull,
                        resume: false,
                        list: false,
                        connection: ringxfer_ipc::proto::PeerConnection::Close,
                        stripe: None,
                    }))
                }),
            ]
        }

        // The fuzzing of the daemon's decoder (issue 15): cargo-fuzz needs a

        // nightly toolchain, so these properties run with many cases in every

        // test run (.ci/run included): about 4 s together in a debug build.

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(20_000))]

            /// Every request the client can send comes back whole, and no
            /// strict prefix of its frame is taken for a frame.
            #[test]
            fn requests_round_trip_and_prefixes_wait(req in request()) {
                let bytes = frame(&req);
                prop_assert_eq!(next_frame(&bytes, 1 << 20), Ok(Some((req, bytes.len()))));
                for cut in 0..bytes.len() {
                    prop_assert_eq!(next_frame(&bytes[..cut], 1 << 20), Ok(None));
                }
            }

            /// Whatever bytes arrive, the decoder answers without panicking
            /// and never claims more bytes than it was given.
            #[test]
            fn any_bytes_are_answered(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                if let Ok(Some((_, used))) = next_frame(&bytes, 1024) {
                    prop_assert!(used <= bytes.len());
                }
            }

            /// A valid frame with bytes of its payload changed is decoded
            /// to something or refused, never a panic, and a frame's header
            /// still bounds it.
            #[test]
            fn corrupted_frames_are_refused_or_decoded(
                req in request(),
                flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            ) {
                let mut bytes = frame(&req);
                for (at, value) in flips {
                    let i = FRAME_HEADER_LEN + at.index(bytes.len() - FRAME_HEADER_LEN);
                    bytes[i] = value;
                }
                if let Ok(Some((_, used))) = next_frame(&bytes, 1 << 20) {
                    prop_assert_eq!(used, bytes.len());
                }
            }
        }
    }
}
