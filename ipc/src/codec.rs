//! The one place that knows how frames are encoded.
//!
//! Payloads are bincode 2 (serde) with the standard configuration and a decode
//! limit equal to the frame limit, so a hostile length field inside a payload
//! cannot make the decoder allocate more than the frame itself. Swapping the
//! codec means changing this module only.

use serde::{de::DeserializeOwned, Serialize};

use crate::proto::FRAME_HEADER_LEN;

/// Decoding never allocates more than this for one payload, whatever it claims.
const DECODE_LIMIT: usize = 16 * 1024 * 1024;

/// A frame that could not be encoded or decoded.
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

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// Appends one frame (header and payload) holding `msg` to `out`.
///
/// ```
/// use ringxfer_ipc::{codec, Request, PROTOCOL_VERSION};
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
    if let Err(e) = bincode::serde::encode_into_std_write(msg, out, config()) {
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
/// assert_eq!(ringxfer_ipc::codec::frame_len([5, 1, 0, 0]), 261);
/// ```
pub fn frame_len(header: [u8; FRAME_HEADER_LEN]) -> u32 {
    u32::from_le_bytes(header)
}

/// Decodes one payload, refusing trailing bytes.
///
/// ```
/// use ringxfer_ipc::{codec, Request};
/// assert!(codec::decode_payload::<Request>(&[0xff, 0xff, 0xff]).is_err());
/// ```
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CodecError> {
    let (msg, used) = bincode::serde::decode_from_slice(payload, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != payload.len() {
        return Err(CodecError::Trailing(payload.len() - used));
    }
    Ok(msg)
}
