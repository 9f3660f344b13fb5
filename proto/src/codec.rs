//! The one place that knows how frames are encoded.
//!
//! A frame is a `u32` little-endian payload length and a postcard payload
//! (serde). postcard was chosen over bincode 2 (unmaintained,
//! RUSTSEC-2025-0141; 3.0.0 is an empty tombstone), wincode and bitcode
//! because its wire format is specified and stable across its 1.x
//! releases, it is widely used for exactly this (framed messages between
//! processes and devices), and it decodes from a slice, checking every
//! length against the bytes left, so a hostile length inside a payload
//! cannot make the decoder allocate more than the payload holds. Its
//! varints and enum tags encode `Hello { version }` exactly as bincode's
//! standard configuration did, so a client of the bincode protocol (v5 and
//! before) still gets a clear `BadVersion` (see the integration test
//! `a_client_of_the_bincode_protocol_still_gets_a_clear_bad_version`). Swapping
//! the codec means changing this module only.

use serde::{de::DeserializeOwned, Serialize};

use crate::FRAME_HEADER_LEN;

/// A frame that could not be encoded or decoded.
///
/// ```
/// use ringxfer_proto::{codec, CodecError, Request};
/// let err = codec::decode_payload::<Request>(&[6, 0]).unwrap_err(); // Stats, then a stray byte
/// assert!(matches!(err, CodecError::Trailing(1)));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The payload is not a valid encoding of the expected message.
    #[error("undecodable payload: {0}")]
    Decode(String),
    /// The payload decoded but left bytes unread.
    #[error("payload has {0} trailing bytes after the message")]
    Trailing(usize),
    /// The message could not be encoded (only a bug can cause this).
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// The encoded message is larger than a frame may be.
    #[error("encoded message of {len} bytes exceeds the frame limit of {max} bytes")]
    TooLarge {
        /// The payload's length.
        len: usize,
        /// The limit it broke.
        max: u32,
    },
}

/// Appends one frame (header and payload) holding `msg` to `out`.
///
/// ```
/// use ringxfer_proto::{codec, Request, PROTOCOL_VERSION};
/// let mut buf = Vec::new();
/// codec::encode_frame(&Request::Hello { version: PROTOCOL_VERSION }, &mut buf, 1024).unwrap();
/// let len = codec::frame_len(buf[..4].try_into().unwrap()) as usize;
/// let back: Request = codec::decode_payload(&buf[4..4 + len]).unwrap();
/// assert_eq!(back, Request::Hello { version: PROTOCOL_VERSION });
/// ```
pub fn encode_frame<T: Serialize>(
    msg: &T,
    out: &mut Vec<u8>,
    max_frame: u32,
) -> Result<(), CodecError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
    if let Err(e) = postcard::to_io(msg, &mut *out) {
        out.truncate(start);
        return Err(CodecError::Encode(e.to_string()));
    }
    let len = out.len() - start - FRAME_HEADER_LEN;
    if len > max_frame as usize {
        out.truncate(start);
        return Err(CodecError::TooLarge {
            len,
            max: max_frame,
        });
    }
    // The length fits in u32 because it is at most max_frame.
    out[start..start + FRAME_HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Reads the payload length from a frame header.
///
/// ```
/// assert_eq!(ringxfer_proto::codec::frame_len([5, 1, 0, 0]), 261);
/// ```
pub fn frame_len(header: [u8; FRAME_HEADER_LEN]) -> u32 {
    u32::from_le_bytes(header)
}

/// Decodes one payload, refusing trailing bytes.
///
/// ```
/// use ringxfer_proto::{codec, Request};
/// assert!(codec::decode_payload::<Request>(&[0xff, 0xff, 0xff]).is_err());
/// ```
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CodecError> {
    let (msg, rest) =
        postcard::take_from_bytes(payload).map_err(|e| CodecError::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::Trailing(rest.len()));
    }
    Ok(msg)
}
