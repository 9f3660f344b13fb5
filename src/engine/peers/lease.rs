//! Each file another daemon pushes here or pulls from here is a job of
//! its export's user (`Mover::Lease`, transfer/peer_lease.rs): its
//! connection writes (or reads) the file, and each of those operations
//! first waits for a permit, a pool buffer lent through the fair queues.
//! So the peer's I/O takes that user's share, as a local copy does, is
//! held by `--rate-limit` and `--max-inflight`, and shows in `jobs` and
//! `stats`; `cancel` of the job fails the file on its connection.
//!
//! The job is made at the file's first write or read (a directory or a
//! refused name never makes one) and ends with the file, with its outcome.

use std::time::Instant;

use ringxfer_ipc::{FailureKind, Priority};
use slab::Slab;

use super::conn::WRITE_BUFFERS;
use crate::engine::jobs::Job;
use crate::engine::Engine;
use crate::transfer::peer_lease::{LeaseFor, PeerLease};
use crate::transfer::{Mover, TransferError};

/// A lease's job: its slab key and its id (a key is reused once its job
/// has ended; the id never is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LeaseKey {
    key: usize,
    id: u64,
}

/// Which way a file goes, for the job's tag and the most permits it holds.
#[derive(Debug, Clone, Copy)]
pub(super) enum Way {
    /// Pushed here: up to the connection's write buffers in flight.
    Received,
    /// Pulled from here: one read at a time.
    Served,
}

impl Engine {
    /// The lease of the file `xfer` on connection `k`, made now: a job of
    /// the user of `export`, named after the peer and `shown`.
    pub(super) fn open_lease(
        &mut self,
        k: usize,
        (xfer, export, shown): (u64, usize, &str),
        way: Way,
        total: u64,
    ) -> Option<LeaseKey> {
        if self.slots.buffers.total() == 0 {
            // `buffers = 0`: no permit could ever be lent.
            return None;
        }
        let conn = self.peers.conns.get(k)?;
        let peer = conn.peer.as_deref().unwrap_or(&conn.who);
        let export = &self.peers.exports[export];
        let (tag, most) = match way {
            Way::Received => (format!("from {peer}: {shown}"), WRITE_BUFFERS),
            Way::Served => (format!("to {peer}: {shown}"), 1),
        };
        let uid = export.identity.uid;
        let most = most.min(self.config.buffers_per_job);
        let lease = PeerLease::new(LeaseFor { conn: k, xfer }, most, Some(total));
        let id = self.jobs.next_id;
        self.jobs.next_id += 1;
        let job = Job::bare(
            id,
            uid,
            tag,
            Mover::Lease(lease),
            Priority::Normal,
            Instant::now(),
        );
        let key = self.jobs.slab.insert(job);
        self.jobs.ids.insert(id, key);
        let usage = self.slots.users.entry(uid);
        usage.jobs += 1;
        usage.bytes += total;
        Some(LeaseKey { key, id })
    }

    /// `waiting` operations of the lease's file wait for a permit: true if
    /// one may go now (it holds the permit until `lease_done`). False: the
    /// job queues for one, and its connection goes on once lent
    /// (`lease_granted`). A lease that has ended (cancelled) lets nothing go.
    pub(super) fn lease_take(&mut self, lease: LeaseKey, waiting: usize) -> bool {
        let Some(l) = lease_in(&mut self.jobs.slab, lease) else {
            return false;
        };
        l.set_waiting(waiting);
        if l.take() {
            return true;
        }
        self.after_job_step(lease.key);
        false
    }

    /// `waiting` operations of the lease's file wait for a permit (none:
    /// the file failed, and what waited was dropped).
    pub(super) fn lease_waiting(&mut self, lease: Option<LeaseKey>, waiting: usize) {
        if let Some(l) = lease.and_then(|lease| lease_in(&mut self.jobs.slab, lease)) {
            l.set_waiting(waiting);
        }
    }

    /// An operation that held a permit ended, having moved `bytes`.
    pub(super) fn lease_done(&mut self, lease: Option<LeaseKey>, bytes: u64) {
        let Some(lease) = lease else { return };
        let Some(l) = lease_in(&mut self.jobs.slab, lease) else {
            return;
        };
        l.give(bytes, &mut self.slots.returned);
        self.after_job_step(lease.key);
    }

    /// The lease's file ended (`failure`: how, if it failed): its job ends
    /// too, with the same outcome.
    pub(super) fn end_lease(
        &mut self,
        lease: Option<LeaseKey>,
        failure: Option<&(FailureKind, String)>,
    ) {
        let Some(lease) = lease else { return };
        let Some(l) = lease_in(&mut self.jobs.slab, lease) else {
            return;
        };
        let failure = failure.map(|(kind, why)| TransferError::new(*kind, why.clone()));
        l.end(failure, &mut self.slots.returned);
        self.after_job_step(lease.key);
    }

    /// After a step of lease job `k`: a permit lent lets its connection's
    /// waiting operation go.
    pub(in crate::engine) fn lease_granted(&mut self, k: usize) {
        let Some(Job {
            id,
            copy: Mover::Lease(l),
            ..
        }) = self.jobs.slab.get(k)
        else {
            return;
        };
        if !l.ready() {
            return;
        }
        let (conn, lease) = (l.serves.conn, LeaseKey { key: k, id: *id });
        let Some(c) = self.peers.conns.get(conn) else {
            return;
        };
        if c.incoming.as_ref().is_some_and(|i| i.lease == Some(lease)) {
            self.write_pending(conn);
        } else if c.serving.as_ref().is_some_and(|s| s.lease == Some(lease)) {
            self.serve_next(conn);
        }
    }

    /// Whether the file a lease serves may still fail: not once it is being
    /// published (received) or wholly sent (served).
    pub(in crate::engine) fn lease_cancellable(&self, serves: LeaseFor) -> bool {
        let Some(c) = self.peers.conns.get(serves.conn) else {
            return true;
        };
        if let Some(inc) = c.incoming.as_ref().filter(|i| i.xfer == serves.xfer) {
            return !self.incoming_late(inc);
        }
        if let Some(s) = c.serving.as_ref().filter(|s| s.xfer == serves.xfer) {
            return !s.ended();
        }
        true
    }

    /// Lease job `k` was cancelled through the daemon (not stopping: the
    /// connections are lost then, and keep their parts): its file fails on
    /// its connection, which tells the other daemon.
    pub(in crate::engine) fn lease_cancelled(&mut self, serves: LeaseFor, err: &TransferError) {
        let failure = (err.kind, err.message.clone());
        let k = serves.conn;
        let Some(c) = self.peers.conns.get_mut(k) else {
            return;
        };
        if let Some(inc) = c.incoming.as_mut().filter(|i| i.xfer == serves.xfer) {
            inc.lease = None;
            self.cancel_incoming(k, serves.xfer, failure);
        } else if let Some(s) = c.serving.as_mut().filter(|s| s.xfer == serves.xfer) {
            s.lease = None;
            self.stop_serving(k, Some(failure), true);
        }
    }
}

/// The lease `lease` names, if its job is still the one it was made for.
fn lease_in(jobs: &mut Slab<Job>, lease: LeaseKey) -> Option<&mut PeerLease> {
    match jobs.get_mut(lease.key) {
        Some(Job {
            id,
            copy: Mover::Lease(l),
            ..
        }) if *id == lease.id => Some(l),
        _ => None,
    }
}
