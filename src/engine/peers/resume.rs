//! Continuing an interrupted push (`Put { resume: true }`), the receiving
//! side. A lost connection leaves the hidden part (incoming.rs); a resumed
//! `Put` of the same name opens it without truncating it and:
//!
//! 1. reads it a write buffer (one block) at a time, up to the file's
//!    announced size, and sends the CRC-32C of each whole block (`Sums`,
//!    in batches), then `Ready { offset }`: the bytes those sums cover;
//! 2. the sender compares them with its own file and answers `Ready` at
//!    the end of the longest prefix that matches (0 if none): its data
//!    comes from there, and the file's CRC starts as the combination of
//!    the matching blocks' sums;
//! 3. the rest is received and checked as for any push; the part is cut
//!    to the file's size before it is published.
//!
//! A part with less than a block is not worth a round trip: `Ready { 0 }`
//! at once, as for a new file.

use ringxfer_ipc::proto::peer::PeerMessage;
use tracing::info;

use super::incoming::{os_failure, Step};
use super::tag;
use crate::engine::Engine;
use crate::io::fd::SharedFd;
use crate::io::op;
use crate::transfer::block_sums::{self, BLOCK, MAX_BLOCKS};
use ringxfer_ipc::FailureKind;

// A block is one write buffer: the part is read into them.
const _: () = assert!(BLOCK == super::conn::WRITE_BUFFER as u64);

impl Engine {
    /// The kept part is open: sum it, block by block.
    pub(super) fn sum_part(&mut self, k: usize) {
        if let Some(inc) = self.peers.incoming_mut(k) {
            inc.step = Step::Summing;
        }
        self.read_part_block(k);
    }

    /// Reads the part's next block, or ends the sums when the file's size
    /// leaves no whole block (or the part ended).
    fn read_part_block(&mut self, k: usize) {
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        let Some(inc) = conn.incoming.as_ref() else {
            return;
        };
        let whole_block_left = inc.meta.size.saturating_sub(inc.summed) >= BLOCK;
        let file = inc.file.as_ref().map(SharedFd::owned);
        let (Some(file), true, true) = (file, whole_block_left, inc.sums.len() < MAX_BLOCKS) else {
            return self.sums_done(k);
        };
        let offset = inc.summed;
        let Some(buf) = conn.take_spare() else {
            return self.sums_done(k);
        };
        let read = op::ReadInto::new(file, buf, 0, Some(offset));
        self.queue_incoming_op(k, tag::READ_PART, read);
    }

    /// A block of the part was read: a whole one is summed; a short one is
    /// where the part ends.
    pub(super) fn on_part_read(&mut self, k: usize, buf: Vec<u8>, result: i32) {
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        let closing = conn.closing;
        let Some(inc) = conn.incoming.as_mut() else {
            return conn.give_back(buf);
        };
        inc.in_flight -= 1;
        let whole = usize::try_from(result).is_ok_and(|n| n == buf.len());
        if whole {
            inc.sums.push(crc32c::crc32c(&buf));
            inc.summed += BLOCK;
        }
        let what = format!(
            "{}: read of the kept part at offset {}",
            inc.shown, inc.summed
        );
        let aborting = inc.step == Step::Aborting;
        conn.give_back(buf);
        if aborting {
            return self.advance_abort(k);
        }
        if closing {
            let why = "the connection closed".to_string();
            return self.fail_incoming(k, (FailureKind::PeerGone, why));
        }
        if result < 0 {
            return self.fail_incoming(k, os_failure(-result, what));
        }
        self.send_sums(k, false);
        if whole {
            self.read_part_block(k);
        } else {
            self.sums_done(k);
        }
    }

    /// Sends the sums not sent yet: every full frame's worth, or (`all`)
    /// every one.
    fn send_sums(&mut self, k: usize, all: bool) {
        let Some(inc) = self.peers.incoming_mut(k) else {
            return;
        };
        for frame in block_sums::frames(inc.xfer, &inc.sums, &mut inc.sums_sent, all) {
            self.send_peer(k, &frame);
        }
    }

    /// Every block is summed: the sender is told how far the sums go, and
    /// says where its data starts (or, with nothing summed, data is
    /// wanted from 0 at once).
    fn sums_done(&mut self, k: usize) {
        self.send_sums(k, true);
        let Some(inc) = self.peers.incoming_mut(k) else {
            return;
        };
        inc.ready = true;
        inc.step = if inc.summed == 0 {
            Step::Receiving
        } else {
            Step::AwaitingOffset
        };
        let ready = PeerMessage::Ready {
            xfer: inc.xfer,
            offset: inc.summed,
            meta: None,
        };
        self.send_peer(k, &ready);
        self.arm_peer_recv(k);
    }

    /// The sender's `Ready`: its data starts at `offset`, the end of the
    /// blocks it found the same.
    pub(super) fn resume_at(&mut self, k: usize, xfer: u64, offset: u64) {
        let Some(inc) = self.peers.incoming_mut(k) else {
            return;
        };
        if inc.step == Step::Aborting {
            return;
        }
        let fits = offset.is_multiple_of(BLOCK) && offset <= inc.summed;
        if inc.xfer != xfer || inc.step != Step::AwaitingOffset || !fits {
            let why = format!(
                "protocol error: Ready at offset {offset} for transfer {xfer}, which is not \
                 waiting for one there"
            );
            return self.close_peer(k, &why);
        }
        inc.crc = block_sums::combined(&inc.sums, (offset / BLOCK) as usize, BLOCK);
        inc.received = offset;
        inc.resumed_from = offset;
        inc.step = Step::Receiving;
        info!(path = %inc.shown, offset, kept = inc.summed, "resuming a file from another daemon");
        self.arm_peer_recv(k);
    }
}
