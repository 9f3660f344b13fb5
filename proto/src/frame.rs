//! The one deframer: cutting length-prefixed frames out of received bytes.
//!
//! The daemon cuts requests out of what a connection sent, the client stub
//! cuts events out of what the daemon sent; both use [`cut`] (bytes already
//! buffered) or [`payload_len`] (a header read on its own), so the limit on a
//! frame's length is checked the same way, before any of its payload is
//! waited for, on both sides.

use serde::de::DeserializeOwned;

use crate::codec::{self, CodecError};
use crate::FRAME_HEADER_LEN;

/// Why the bytes at the front of a buffer are not a frame that can be used.
/// Either way the stream cannot go on (the receiver cannot tell where the
/// next frame starts): the daemon closes the connection with
/// [`ProtocolErrorKind::FrameTooLarge`](crate::ProtocolErrorKind::FrameTooLarge)
/// or [`Undecodable`](crate::ProtocolErrorKind::Undecodable).
///
/// ```
/// use ringxfer_proto::{frame::{self, DeframeError}, Request};
///
/// // A header naming 2 bytes, and 2 bytes that are no Request.
/// match frame::next::<Request>(&[2, 0, 0, 0, 0xff, 0xff], 1024) {
///     Err(DeframeError::Decode { len: 2, source }) => println!("{source}"),
///     other => panic!("{other:?}"),
/// }
/// match frame::next::<Request>(&[0, 0, 1, 0], 1024) {
///     Err(e @ DeframeError::TooLarge { len: 65536, max: 1024 }) => println!("{e}"),
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum DeframeError {
    /// The header names a payload longer than the receiver accepts.
    #[error("frame length {len} exceeds the limit of {max} bytes")]
    TooLarge {
        /// The length the header named.
        len: u32,
        /// The receiver's limit.
        max: u32,
    },
    /// The payload is whole but does not decode.
    #[error("a frame of {len} bytes does not decode: {source}")]
    Decode {
        /// The payload's length.
        len: u32,
        /// What the codec said.
        #[source]
        source: CodecError,
    },
}

/// The payload length a frame header names, refused when over `max_frame`.
///
/// ```
/// use ringxfer_proto::frame;
/// assert_eq!(frame::payload_len([5, 0, 0, 0], 1024).unwrap(), 5);
/// assert!(frame::payload_len([0, 0, 0, 1], 1024).is_err());
/// ```
pub fn payload_len(header: [u8; FRAME_HEADER_LEN], max_frame: u32) -> Result<u32, DeframeError> {
    let len = codec::frame_len(header);
    if len > max_frame {
        return Err(DeframeError::TooLarge {
            len,
            max: max_frame,
        });
    }
    Ok(len)
}

/// How many bytes the frame begun at the front of `buf` takes in all,
/// header included, once its header is in (`None` before that). Not checked
/// against a limit: for sizing a receive buffer.
///
/// ```
/// use ringxfer_proto::{codec, frame, Event};
///
/// let mut sent = Vec::new();
/// codec::encode_frame(&Event::Stats(Default::default()), &mut sent, 1024)?;
/// // Only part of the frame has arrived yet: grow the buffer to hold it all.
/// let mut buf = sent[..6].to_vec();
/// let whole = frame::begun_len(&buf).expect("the header is in");
/// assert_eq!(whole, sent.len());
/// buf.reserve(whole - buf.len());
/// assert_eq!(frame::begun_len(&buf[..3]), None);
/// # Ok::<(), ringxfer_proto::CodecError>(())
/// ```
pub fn begun_len(buf: &[u8]) -> Option<usize> {
    let header: [u8; FRAME_HEADER_LEN] = buf.get(..FRAME_HEADER_LEN)?.try_into().ok()?;
    Some(FRAME_HEADER_LEN + codec::frame_len(header) as usize)
}

/// Cuts the first complete frame off the front of `buf`: its payload and
/// how many bytes of `buf` the frame used, or `None` when more bytes are
/// needed. A length over `max_frame` is refused as soon as the header is in.
/// For a receiver that decodes elsewhere (or not at all); [`next`] also
/// decodes.
///
/// ```
/// use ringxfer_proto::{codec, frame, Request};
///
/// // Two frames and the start of a third, as one recv(2) may return them.
/// let mut buf = Vec::new();
/// codec::encode_frame(&Request::Stats, &mut buf, 1024)?;
/// codec::encode_frame(&Request::Cancel { req: 1, job: 2 }, &mut buf, 1024)?;
/// buf.extend_from_slice(&[3, 0]);
///
/// let mut payloads = Vec::new();
/// let mut at = 0;
/// while let Some((payload, used)) = frame::cut(&buf[at..], 1024)? {
///     payloads.push(payload.to_vec());
///     at += used;
/// }
/// assert_eq!(payloads, [vec![6], vec![2, 1, 2]]);
/// assert_eq!(&buf[at..], [3, 0], "kept until the rest arrives");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn cut(buf: &[u8], max_frame: u32) -> Result<Option<(&[u8], usize)>, DeframeError> {
    let Some(header) = buf.get(..FRAME_HEADER_LEN) else {
        return Ok(None);
    };
    let mut bytes = [0u8; FRAME_HEADER_LEN];
    bytes.copy_from_slice(header);
    let end = FRAME_HEADER_LEN + payload_len(bytes, max_frame)? as usize;
    Ok(buf.get(FRAME_HEADER_LEN..end).map(|payload| (payload, end)))
}

/// Cuts the first complete frame off the front of `buf` and decodes its
/// message: the message and the bytes used, or `None` when more are needed.
///
/// ```
/// use ringxfer_proto::{codec, frame, Request};
/// let mut bytes = Vec::new();
/// codec::encode_frame(&Request::Stats, &mut bytes, 1024).unwrap();
/// let n = bytes.len();
/// assert_eq!(frame::next::<Request>(&bytes, 1024).unwrap(), Some((Request::Stats, n)));
/// assert_eq!(frame::next::<Request>(&bytes[..n - 1], 1024).unwrap(), None);
/// ```
pub fn next<T: DeserializeOwned>(
    buf: &[u8],
    max_frame: u32,
) -> Result<Option<(T, usize)>, DeframeError> {
    let Some((payload, used)) = cut(buf, max_frame)? else {
        return Ok(None);
    };
    match codec::decode_payload(payload) {
        Ok(msg) => Ok(Some((msg, used))),
        Err(source) => Err(DeframeError::Decode {
            len: payload.len() as u32,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;

    #[test]
    fn several_frames_are_cut_one_by_one_and_a_partial_one_waits() {
        let mut bytes = Vec::new();
        codec::encode_frame(&Event::Stats(Default::default()), &mut bytes, 1 << 20).unwrap();
        let first = bytes.len();
        codec::encode_frame(&Event::Stats(Default::default()), &mut bytes, 1 << 20).unwrap();
        let (_, used) = next::<Event>(&bytes, 1 << 20).unwrap().unwrap();
        assert_eq!(used, first);
        let (_, used) = next::<Event>(&bytes[first..], 1 << 20).unwrap().unwrap();
        assert_eq!(first + used, bytes.len());
        assert!(next::<Event>(&bytes[..first - 1], 1 << 20)
            .unwrap()
            .is_none());
        assert_eq!(begun_len(&bytes[..FRAME_HEADER_LEN]), Some(first));
        assert_eq!(begun_len(&bytes[..FRAME_HEADER_LEN - 1]), None);
    }

    #[test]
    fn the_limit_is_checked_from_the_header_alone() {
        match cut(&[9, 0, 0, 0], 8) {
            Err(DeframeError::TooLarge { len: 9, max: 8 }) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(cut(&[8, 0, 0, 0], 8), Ok(None)));
    }
}
