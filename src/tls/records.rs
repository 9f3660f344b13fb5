//! Where the records of a TLS byte stream begin and end. While a
//! handshake lasts, reads stop at the end of the record under way, so that
//! when it is done no record after it has been taken from the socket: the
//! kernel, if it takes the session over, must find them there.

/// A record's header: content type, legacy version, length (big-endian).
const HEADER: usize = 5;

#[derive(Debug, Default)]
pub(super) struct RecordCursor {
    header: [u8; HEADER],
    header_len: usize,
    body_left: usize,
}

impl RecordCursor {
    /// Moves over `bytes`, the next of the stream.
    pub(super) fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.header_len < HEADER {
                let n = (HEADER - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
                self.header_len += n;
                bytes = &bytes[n..];
                if self.header_len == HEADER {
                    self.body_left =
                        usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                }
            } else {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
            }
            if self.header_len == HEADER && self.body_left == 0 {
                self.header_len = 0;
            }
        }
    }

    /// Bytes to the end of the record under way (or of the next header):
    /// never zero.
    pub(super) fn to_boundary(&self) -> usize {
        if self.header_len < HEADER {
            HEADER - self.header_len
        } else {
            self.body_left
        }
    }

    /// No part of a record has been read past.
    pub(super) fn at_boundary(&self) -> bool {
        self.header_len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(len: u16) -> Vec<u8> {
        let mut r = vec![23, 3, 3];
        r.extend_from_slice(&len.to_be_bytes());
        r.extend(std::iter::repeat_n(0xAB, usize::from(len)));
        r
    }

    #[test]
    fn reads_cut_at_the_boundaries_never_cross_a_record() {
        let stream: Vec<u8> = [record(3), record(0), record(300)].concat();
        let mut cursor = RecordCursor::default();
        let mut at = 0;
        let mut cuts = Vec::new();
        while at < stream.len() {
            // Every read takes what it may, in pieces of at most 7 bytes.
            let n = cursor.to_boundary().min(7).min(stream.len() - at);
            cursor.advance(&stream[at..at + n]);
            at += n;
            if cursor.at_boundary() {
                cuts.push(at);
            }
        }
        assert_eq!(cuts, vec![8, 13, 318]);
        assert_eq!(cursor.to_boundary(), HEADER);
    }

    #[test]
    fn one_call_may_span_records_and_stop_inside_one() {
        let stream: Vec<u8> = [record(10), record(20)].concat();
        let mut cursor = RecordCursor::default();
        cursor.advance(&stream[..17]);
        assert!(!cursor.at_boundary());
        assert_eq!(cursor.to_boundary(), 3, "the rest of the second header");
        cursor.advance(&stream[17..]);
        assert!(cursor.at_boundary());
    }
}
