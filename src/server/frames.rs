//! Cutting requests out of the bytes a connection has received.

use ringxfer_ipc::{codec, ProtocolErrorKind, Request, FRAME_HEADER_LEN};

/// Why the bytes received so far are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub kind: ProtocolErrorKind,
    pub message: String,
}

/// Takes the first complete frame off the front of `buf`, returning the
/// request and how many bytes it used, or `None` when more bytes are needed.
/// A length over `max_frame` is refused as soon as the header is in, before
/// any of the payload is waited for.
pub fn next_frame(buf: &[u8], max_frame: u32) -> Result<Option<(Request, usize)>, FrameError> {
    let Some(header) = buf.get(..FRAME_HEADER_LEN) else {
        return Ok(None);
    };
    let mut len_bytes = [0u8; FRAME_HEADER_LEN];
    len_bytes.copy_from_slice(header);
    let len = codec::frame_len(len_bytes);
    if len > max_frame {
        return Err(FrameError {
            kind: ProtocolErrorKind::FrameTooLarge,
            message: format!("frame length {len} exceeds the limit of {max_frame} bytes"),
        });
    }
    let end = FRAME_HEADER_LEN + len as usize;
    let Some(payload) = buf.get(FRAME_HEADER_LEN..end) else {
        return Ok(None);
    };
    match codec::decode_payload::<Request>(payload) {
        Ok(req) => Ok(Some((req, end))),
        Err(e) => Err(FrameError {
            kind: ProtocolErrorKind::Undecodable,
            message: format!("a frame of {len} bytes is not a valid request: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringxfer_ipc::PROTOCOL_VERSION;

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
}
