//! Bytes in flight per other daemon (`peer_bytes_in_flight`): what one
//! peer has sent here that is not written yet, over all its connections
//! (the buffer each is filling, and its writes in flight), is held under
//! a limit. A connection whose read would take its peer past it is not
//! read (`held`), so TCP slows that peer down, until writes land.
//!
//! Holding a read must not wait on a buffer that only more bytes would
//! fill: the peer's connections hand their buffers being filled to the
//! disk at once, whole or not, so their writes land and let the held
//! reads go on. A read brings at most `RX_BUFFER` bytes, and each read
//! armed counts as that many, so the limit holds to the byte.

use super::conn::RX_BUFFER;
use super::incoming::{Incoming, Step};
use super::DEFAULT_PEER_BYTES_IN_FLIGHT;
use crate::engine::Engine;

impl Engine {
    /// Whether a read on connection `k`, receiving a file, could take its
    /// peer past `peer_bytes_in_flight`; notes the most any peer had.
    pub(super) fn peer_at_limit(&mut self, k: usize) -> bool {
        let Some(conn) = self.peers.conns.get(k) else {
            return false;
        };
        // Only a connection the file's bytes come on is held: one waiting
        // for the daemon's own steps (a stripe waiting for the others, say)
        // must hear Ping and Cancel.
        if !conn.incoming.as_ref().is_some_and(Incoming::receiving) {
            return false;
        }
        // Each read armed may bring a whole receive buffer.
        let (unwritten, reading) = self
            .peers
            .conns
            .iter()
            .filter(|(_, c)| c.same_peer(conn))
            .fold((0, 0), |(bytes, reads), (_, c)| {
                let armed =
                    c.rx_op.is_some() && c.incoming.as_ref().is_some_and(Incoming::receiving);
                (bytes + c.unwritten() as u64, reads + u64::from(armed))
            });
        self.peers.bytes_in_flight_max = self.peers.bytes_in_flight_max.max(unwritten);
        let limit = match self.peers.bytes_in_flight {
            0 => DEFAULT_PEER_BYTES_IN_FLIGHT,
            n => n,
        };
        unwritten + (reading + 1) * RX_BUFFER as u64 > limit
    }

    /// Connection `k`'s read waits; its peer's buffers being filled go to
    /// the disk, so that it does not wait for bytes that cannot come.
    pub(super) fn hold_peer_recv(&mut self, k: usize) {
        let Some(conn) = self.peers.conns.get_mut(k) else {
            return;
        };
        conn.held = true;
        let peer: Vec<usize> = {
            let conn = &self.peers.conns[k];
            self.peers
                .conns
                .iter()
                .filter(|(_, c)| c.same_peer(conn))
                .map(|(j, _)| j)
                .collect()
        };
        for j in peer {
            let Some(c) = self.peers.conns.get_mut(j) else {
                continue;
            };
            let receiving = c
                .incoming
                .as_ref()
                .is_some_and(|i| i.step == Step::Receiving);
            // A read in flight was armed for the room the buffer being
            // filled still has: handing that buffer to the disk could leave
            // less than the read brings (a stripe failed with "past what
            // the daemon can hold"). Its read lands first, then it is held
            // and flushed itself.
            let read_needs_it = c.rx_op.is_some() && c.room_after_flush() < RX_BUFFER;
            if !receiving || read_needs_it {
                continue;
            }
            let mut full = Vec::with_capacity(1);
            c.flush_into(&mut full);
            self.write_full(j, &mut full);
        }
    }

    /// Writes landed, or a file ended: the reads held go on where the
    /// limit allows.
    pub(super) fn release_held_reads(&mut self) {
        let held: Vec<usize> = self
            .peers
            .conns
            .iter()
            .filter(|(_, c)| c.held)
            .map(|(j, _)| j)
            .collect();
        for j in held {
            if let Some(c) = self.peers.conns.get_mut(j) {
                c.held = false;
            }
            self.arm_peer_recv(j);
        }
    }
}
