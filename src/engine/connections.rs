//! Limits on client connections, so that no user can hold the daemon's
//! connections or memory: how many connections in all and per user, how
//! long a connection may take to say `Hello` or to finish a frame it began,
//! and how many bytes of events all clients together may leave unread.
//!
//! Deadlines are checked by one ring timer a second, armed only while a
//! daemon (with a listener) has connections, its clients' or other
//! daemons' (peers/); the in-process engine's one connection is its own
//! caller and needs none.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ringxfer_ipc::ProtocolErrorKind;
use tracing::error;

use super::{Engine, Owner};
use crate::server::frames::FrameError;
use crate::server::wire;

const CHECK_EVERY: Duration = Duration::from_secs(1);
/// At most one warning a second about clients cut off for not reading.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Open connections per user, and the log of clients cut off for not
/// reading.
#[derive(Default)]
pub(super) struct Connections {
    per_user: HashMap<u32, usize>,
    /// When a disconnection for not reading was last logged at warn level,
    /// and how many came since: a thousand such clients make one line a
    /// second, not a thousand.
    not_reading_logged: Option<Instant>,
    not_reading_since: u64,
}

impl Connections {
    /// Counts a client cut off for not reading; `Some(n)` when it is time
    /// to log it, with `n` cut off since the last line.
    pub(super) fn cut_off_for_not_reading(&mut self) -> Option<u64> {
        self.not_reading_since += 1;
        let now = Instant::now();
        if self
            .not_reading_logged
            .is_some_and(|at| now.duration_since(at) < LOG_EVERY)
        {
            return None;
        }
        self.not_reading_logged = Some(now);
        Some(std::mem::take(&mut self.not_reading_since))
    }

    /// A connection of `uid` is gone.
    pub(super) fn release(&mut self, uid: u32) {
        if let Some(n) = self.per_user.get_mut(&uid) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(&uid);
            }
        }
    }
}

impl Engine {
    /// Counts a new connection of `uid`; the reason to refuse it, if it is
    /// past the daemon's limit or the user's.
    pub(super) fn count_connection(&mut self, uid: u32) -> Option<String> {
        let total = self.sessions.slab.len();
        let mine = self.sessions.connections.per_user.entry(uid).or_default();
        *mine += 1;
        if total > self.config.max_connections {
            Some(format!(
                "the daemon already has {} connections, the most allowed (--max-connections)",
                self.config.max_connections
            ))
        } else if *mine > self.config.max_connections_per_user {
            Some(format!(
                "user {uid} already has {} connections, the most allowed (--max-connections-per-user)",
                self.config.max_connections_per_user
            ))
        } else {
            None
        }
    }

    /// Whether session `k`'s unsent events (the event just added included)
    /// are more than its share while all clients' together are past
    /// `--max-event-bytes` (see [`wire::over_event_share`]).
    pub(super) fn over_event_share(&self, k: usize) -> bool {
        let Some(mine) = self.sessions.slab.get(k).map(|s| s.wire.unsent()) else {
            return false;
        };
        let total = || {
            self.sessions
                .slab
                .iter()
                .map(|(_, s)| s.wire.unsent())
                .sum()
        };
        let budget = self.config.max_event_bytes;
        wire::over_event_share(mine, total, budget, self.sessions.slab.len())
    }

    /// Arms the deadline check, if a daemon has connections and none is armed.
    pub(super) fn arm_deadlines(&mut self) {
        // Jobs too: a detached push outlives its client (liveness.rs).
        let connected =
            !self.sessions.slab.is_empty() || self.has_peers() || !self.jobs.slab.is_empty();
        if self.listener.fd.is_none()
            || self.life.stopping
            || self.timers.deadlines.is_some()
            || !connected
        {
            return;
        }
        match self.io.timeout(Owner::Housekeeping, CHECK_EVERY) {
            Ok(ud) => self.timers.deadlines = Some(ud),
            Err(e) => error!("cannot queue the connection deadline timer: {e}"),
        }
    }

    pub(super) fn on_deadlines(&mut self, result: i32) {
        self.timers.deadlines = None;
        if result == -libc::ECANCELED {
            return;
        }
        let now = Instant::now();
        let (handshake, frame) = (self.config.handshake_timeout, self.config.frame_timeout);
        let late: Vec<(usize, String)> = self
            .sessions
            .slab
            .iter()
            .filter(|(_, s)| !s.closing)
            .filter_map(|(k, s)| {
                if !s.wire.greeted() && now.duration_since(s.opened) > handshake {
                    let why = format!("no Hello within {:?} (--handshake-timeout)", handshake);
                    Some((k, why))
                } else {
                    let since = s.wire.partial_since()?;
                    (now.duration_since(since) > frame).then(|| {
                        let why = format!(
                            "part of a request frame held unfinished for over {frame:?} (--frame-timeout)"
                        );
                        (k, why)
                    })
                }
            })
            .collect();
        for (k, message) in late {
            let kind = ProtocolErrorKind::TimedOut;
            self.protocol_error(k, FrameError { kind, message });
        }
        self.peer_deadlines(now);
        self.job_peer_deadlines(now);
        self.arm_deadlines();
    }
}
