//! A resumed pull, the serving side (`Get { resume: true }`): the puller
//! kept a part of the file, and sends the CRC-32C sums of its whole blocks
//! (`Sums`), then `Ready { offset }` at their end. Once the file is open and
//! stated, its own blocks are read and compared, and `Ready` goes back at
//! the end of the longest prefix that matches, with the file's size, mode
//! and times: the data goes from there, and the CRC `End` carries is still
//! the whole file's (the matching blocks' sums combined, then the rest).

use ringxfer_ipc::proto::peer::{FileMeta, PeerMessage};
use ringxfer_ipc::proto::FailureKind;

use super::incoming::os_failure;
use super::tag;
use crate::engine::Engine;
use crate::io::fd::SharedFd;
use crate::io::op;
use crate::transfer::block_sums::{self, Received, BLOCK};

/// Where the comparison is.
#[derive(Debug, Default)]
pub(crate) struct Compare {
    got: Received,
    /// Bytes the sums cover (the puller's `Ready`), once it came.
    upto: Option<u64>,
    /// The file's, once stated.
    pub(super) meta: Option<FileMeta>,
    /// Bytes of the file read and compared; the CRC of the block being
    /// read; a read in flight.
    checked: u64,
    block_crc: u32,
    reading: bool,
}

impl Engine {
    /// `Sums` from the puller.
    pub(super) fn serving_sums(&mut self, k: usize, block: u32, first: u64, crcs: &[u32]) {
        let compare = self.peers.serving_mut(k).and_then(|s| s.resume.as_mut());
        let taken =
            compare.is_some_and(|c| c.upto.is_none() && c.got.take(block, first, crcs, u64::MAX));
        if !taken {
            self.close_peer(k, "protocol error: Sums that do not fit a resumed Get");
        }
    }

    /// The puller's `Ready`: its sums cover `upto` bytes.
    pub(super) fn serving_upto(&mut self, k: usize, upto: u64) {
        let compare = self.peers.serving_mut(k).and_then(|s| s.resume.as_mut());
        let Some(compare) = compare.filter(|c| c.upto.is_none() && upto == c.got.covered()) else {
            return self.close_peer(k, "protocol error: Ready where no sums end");
        };
        compare.upto = Some(upto);
        self.compare_next(k);
    }

    /// Reads the file's next piece for the comparison, once both the sums
    /// and the file's size are in; agrees when they end.
    pub(super) fn compare_next(&mut self, k: usize) {
        let Some(serving) = self.peers.serving_mut(k) else {
            return;
        };
        let Some(c) = serving.resume.as_mut() else {
            return;
        };
        let (Some(upto), Some(meta), false) = (c.upto, c.meta, c.reading) else {
            return;
        };
        // Only blocks within the file as it is now can match.
        let end = upto.min(meta.size - meta.size % BLOCK);
        if c.checked >= end {
            let at = c.checked.min(end);
            return self.agree_serving(k, at);
        }
        let (Some(mut buf), Some(file)) = (serving.buf.take(), serving.file.as_ref()) else {
            return;
        };
        let want = BLOCK - c.checked % BLOCK;
        buf.resize(
            usize::try_from(want)
                .unwrap_or(usize::MAX)
                .min(buf.capacity().max(1)),
            0,
        );
        c.reading = true;
        let read = op::ReadInto::new(SharedFd::owned(file), buf, 0, Some(c.checked));
        self.queue_serving_op(k, tag::CHECK_SRC, read);
    }

    /// A piece of the file read for the comparison.
    pub(super) fn on_compare_read(&mut self, k: usize, buf: Vec<u8>, result: i32) {
        let Some(serving) = self.peers.serving_mut(k) else {
            return;
        };
        let Some(c) = serving.resume.as_mut() else {
            serving.buf = Some(buf);
            return;
        };
        c.reading = false;
        if result <= 0 {
            let at = c.checked;
            serving.buf = Some(buf);
            let what = format!("{}: read at offset {at}", serving.shown);
            let failure = match result {
                0 => (FailureKind::SourceShort, format!("{what}: the file shrank")),
                n => os_failure(-n, what),
            };
            return self.stop_serving(k, Some(failure), true);
        }
        let n = result as usize;
        c.block_crc = crc32c::crc32c_append(c.block_crc, &buf[..n]);
        c.checked += n as u64;
        serving.buf = Some(buf);
        if c.checked.is_multiple_of(BLOCK) {
            let index = c.checked / BLOCK - 1;
            let same = c.got.sums.get(index as usize) == Some(&c.block_crc);
            c.block_crc = 0;
            if !same {
                return self.agree_serving(k, index * BLOCK);
            }
        }
        self.compare_next(k);
    }

    /// The data goes from `at`: `Ready` with the file's meta, then pieces.
    fn agree_serving(&mut self, k: usize, at: u64) {
        let Some(serving) = self.peers.serving_mut(k) else {
            return;
        };
        let Some(c) = serving.resume.take() else {
            return;
        };
        serving.sent = at;
        serving.resumed_from = at;
        serving.crc = block_sums::combined(&c.got.sums, (at / BLOCK) as usize, BLOCK);
        serving.ready = true;
        let ready = PeerMessage::Ready {
            xfer: serving.xfer,
            offset: at,
            meta: c.meta,
        };
        self.send_peer(k, &ready);
        self.serve_next(k);
    }
}
