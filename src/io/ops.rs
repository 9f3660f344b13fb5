//! The table of operations in flight, keyed by `user_data`.
//!
//! Each entry says who gets the completion, with the owner's opaque tag,
//! and holds the typed operation (io/op/), which owns everything the kernel
//! may read or write for it (a receive buffer and its `msghdr`, the bytes
//! being sent, the pipe and descriptors of a splice). The entry is
//! removed only when its completion is reaped, so nothing the kernel can see is
//! freed or moved while the operation runs, whatever happened to its owner.

use slab::Slab;

use super::op::AnyOp;

/// `user_data` of cancel requests. Their own completions carry nothing the
/// loop needs (the cancelled operation completes separately), so they get no
/// table entry. Slab keys never reach this value.
pub(crate) const CANCEL_USER_DATA: u64 = u64::MAX;

/// Who is told when an operation completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The listening socket's accept.
    Listener,
    /// A client connection, by key in the session table.
    Session(usize),
    /// A transfer, by key in the job table.
    Job(usize),
    /// A submitted job being admitted, by key in `Admissions`.
    Admission(usize),
    /// The signalfd read that tells the loop to stop.
    Signal,
    /// A close of a descriptor nobody needs any more.
    Closer,
    /// The timer that wakes jobs waiting for a rate limit.
    Throttle,
    /// The end of the shutdown grace period.
    Grace,
    /// The periodic report to the loop's observer.
    Tick,
    /// The timer that sends held final events of batch jobs.
    HoldTimer,
    /// The once-a-second check of connections' deadlines.
    Housekeeping,
    /// The look for jobs stalled over their user's share (shares.rs).
    Stall,
    /// The accept on the TCP listener of other daemons.
    TcpListener,
    /// A connection of another daemon, by key in the peer table.
    Peer(usize),
}

/// One operation in flight: who is told when it completes, the tag its
/// owner gave it (what it means is the owner's: a chunk's step, a statx's
/// index; this layer never looks), and the operation itself, which holds
/// what the kernel touches and goes back to the owner with the completion.
pub struct Op {
    pub owner: Owner,
    pub tag: u32,
    pub op: AnyOp,
}

/// The operations in flight.
pub struct OpTable {
    ops: Slab<Op>,
    /// Per job key, the personality its operations run under (0: the
    /// daemon's credentials); see `crate::privileges`.
    personalities: Vec<u16>,
    /// The same per connection of another daemon (its export's user).
    peer_personalities: Vec<u16>,
}

impl OpTable {
    pub fn with_capacity(n: usize) -> OpTable {
        OpTable {
            ops: Slab::with_capacity(n),
            personalities: Vec::new(),
            peer_personalities: Vec::new(),
        }
    }

    /// Makes every operation of `owner` (a job, or a connection of another
    /// daemon) from now on run under `personality` (0: the daemon's
    /// credentials). Set at admission (at each file, for a connection), so
    /// a reused key never keeps the one before.
    pub fn set_personality(&mut self, owner: Owner, personality: u16) {
        let (table, key) = match owner {
            Owner::Job(key) => (&mut self.personalities, key),
            Owner::Peer(key) => (&mut self.peer_personalities, key),
            _ => return,
        };
        if table.len() <= key {
            table.resize(key + 1, 0);
        }
        table[key] = personality;
    }

    /// The personality of `owner`'s operations: its job's or its
    /// connection's, or 0.
    pub fn personality(&self, owner: Owner) -> u16 {
        let (table, key) = match owner {
            Owner::Job(key) => (&self.personalities, key),
            Owner::Peer(key) => (&self.peer_personalities, key),
            _ => return 0,
        };
        table.get(key).copied().unwrap_or(0)
    }

    /// Records an operation about to be submitted and returns its `user_data`.
    pub fn insert(&mut self, op: Op) -> u64 {
        self.ops.insert(op) as u64
    }

    /// The entry of an operation that completed but will complete again
    /// (IORING_CQE_F_MORE): it stays in the table.
    pub fn peek(&self, user_data: u64) -> Option<&Op> {
        let key = usize::try_from(user_data).ok()?;
        self.ops.get(key)
    }

    /// Takes back the entry of a completed operation. `None` for a
    /// `user_data` that is not in the table, which only a bug can cause.
    pub fn complete(&mut self, user_data: u64) -> Option<Op> {
        let key = usize::try_from(user_data).ok()?;
        self.ops.try_remove(key)
    }

    /// The operation at `user_data`, for building its entry once in place.
    pub fn get_mut(&mut self, user_data: u64) -> Option<&mut Op> {
        let key = usize::try_from(user_data).ok()?;
        self.ops.get_mut(key)
    }

    /// Undoes `insert` for an operation that never reached the ring.
    pub fn forget(&mut self, user_data: u64) -> Option<Op> {
        self.complete(user_data)
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}
