//! Whether the other daemon of a host-to-host job is still there. TCP does
//! not say: a daemon frozen (stopped, or its loop stuck) still has its
//! kernel acknowledge data and answer keepalives, so a push waiting for
//! `Done`, or a pull for the file, would wait forever. So while a job
//! listens for the other daemon and hears nothing for a third of
//! `frame_timeout`, it says `Ping` (the other loop answers `Pong` whatever
//! it is doing, even mid-file); a `Ping` unanswered for two thirds of
//! `frame_timeout` fails the job as a lost connection (a detached push
//! then dials again). A long silence alone fails nothing: nothing may have
//! been owed (the receiver says nothing while a file comes).

use std::time::Instant;

use ringxfer_ipc::FailureKind;

use super::super::jobs::Phase;
use super::super::Engine;
use crate::io::ops::Owner;
use crate::transfer::TransferError;

impl Engine {
    /// Pings the other daemon of every job that has heard nothing for a
    /// while, and fails those that heard nothing for `frame_timeout`.
    pub(in crate::engine) fn job_peer_deadlines(&mut self, now: Instant) {
        let frame = self.config.frame_timeout;
        let mut quiet = Vec::new();
        for (k, job) in &self.jobs.slab {
            if job.phase != Phase::Copy {
                continue;
            }
            match job.copy.peer_silence(now) {
                Some((_, Some(unanswered))) if unanswered > frame * 2 / 3 => quiet.push((k, true)),
                Some((silence, None)) if silence > frame / 3 => quiet.push((k, false)),
                _ => {}
            }
        }
        for (k, gone) in quiet {
            let Some(job) = self.jobs.slab.get_mut(k) else {
                continue;
            };
            let (owner, io) = (Owner::Job(k), &mut self.io);
            if gone {
                let why = format!(
                    "the other daemon said nothing for {frame:?}, not even to a Ping \
                     (--frame-timeout): it is gone or stuck"
                );
                let err = TransferError::new(FailureKind::PeerGone, why);
                job.copy
                    .peer_silent(err, owner, io, &mut self.slots.returned);
            } else {
                job.copy.ping_peer(owner, io);
            }
            self.after_job_step(k);
        }
    }
}
