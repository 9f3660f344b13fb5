//! Requests about jobs by id: Cancel, Status, Wait and Jobs.
//!
//! A job belongs to the user who submitted it (SO_PEERCRED of the submitting
//! connection). Any connection of that user may cancel it, ask about it or
//! follow it; root may do so for every job. Another user is told the job is
//! not theirs, and does not see it in listings.

use std::time::Instant;

use ringxfer_ipc::{Event, FailureKind, JobInfo, JOBS_PAGE};

use super::jobs::{with_req, Watcher};
use super::Engine;
use crate::transfer::TransferError;

/// The most `Wait`s one job takes at once: each is a copy of every event
/// the job sends, so they are bounded like everything a client can make.
const MAX_WATCHERS: usize = 64;

/// What a lookup by id found.
enum Lookup {
    /// A running job, by key.
    Running(usize),
    /// A finished job, by index in `recent`.
    Finished(usize),
    Refused(FailureKind, String),
}

impl Engine {
    fn uid_of(&self, k: usize) -> u32 {
        self.sessions.slab.get(k).map_or(u32::MAX, |s| s.peer.1)
    }

    /// Finds job `job` for the user of session `k`. Another user's job is
    /// answered exactly as a job that does not exist, so nobody learns who
    /// runs what by trying ids.
    fn lookup(&self, k: usize, job: u64) -> Lookup {
        let uid = self.uid_of(k);
        let may = |owner: u32| uid == 0 || uid == owner;
        if let Some(j) = self
            .jobs
            .ids
            .get(&job)
            .and_then(|&jk| self.jobs.slab.get(jk))
        {
            if may(j.uid) {
                return Lookup::Running(self.jobs.ids[&job]);
            }
        } else if let Some(i) = self.jobs.recent.iter().rposition(|f| f.info.job == job) {
            if may(self.jobs.recent[i].info.uid) {
                return Lookup::Finished(i);
            }
        }
        Lookup::Refused(
            FailureKind::NoSuchJob,
            format!(
                "no job {job}: it never existed, or finished before the last {} jobs",
                super::RECENT_JOBS
            ),
        )
    }

    fn refused(&mut self, k: usize, req: u64, job: u64, kind: FailureKind, message: String) {
        self.emit(
            k,
            &Event::Refused {
                req,
                job,
                kind,
                message,
            },
        );
    }

    pub(super) fn on_cancel(&mut self, k: usize, req: u64, job: u64) {
        match self.lookup(k, job) {
            Lookup::Running(jk) => {
                self.emit(k, &Event::Cancelling { req, job });
                let uid = self.uid_of(k);
                let by = if self.jobs.slab.get(jk).and_then(|j| j.session) == Some(k) {
                    "cancelled by the client".to_string()
                } else {
                    format!("cancelled by request (uid {uid})")
                };
                self.fail_job(jk, TransferError::cancelled(&by));
            }
            Lookup::Finished(i) => {
                let state = self.jobs.recent[i].info.state.name();
                self.refused(
                    k,
                    req,
                    job,
                    FailureKind::NoSuchJob,
                    format!("job {job} already finished ({state})"),
                );
            }
            Lookup::Refused(kind, message) => self.refused(k, req, job, kind, message),
        }
    }

    pub(super) fn on_status(&mut self, k: usize, req: u64, job: u64) {
        let info = match self.lookup(k, job) {
            Lookup::Running(jk) => self.jobs.slab.get(jk).map(|j| j.info(Instant::now())),
            Lookup::Finished(i) => Some(self.jobs.recent[i].info.clone()),
            Lookup::Refused(kind, message) => return self.refused(k, req, job, kind, message),
        };
        if let Some(info) = info {
            self.emit(k, &Event::Status { req, info });
        }
    }

    pub(super) fn on_wait(&mut self, k: usize, req: u64, job: u64, progress: bool) {
        match self.lookup(k, job) {
            Lookup::Running(jk) if self.jobs.slab[jk].watchers.len() >= MAX_WATCHERS => self.emit(
                k,
                &Event::Failed {
                    req,
                    job: Some(job),
                    kind: FailureKind::LimitExceeded,
                    os_error: None,
                    message: format!(
                        "job {job} already has {MAX_WATCHERS} waiters, the most one job takes"
                    ),
                    bytes: 0,
                },
            ),
            Lookup::Running(jk) => {
                self.emit(k, &Event::Accepted { req, job });
                if let Some(j) = self.jobs.slab.get_mut(jk) {
                    j.watchers.push(Watcher {
                        session: k,
                        req,
                        progress,
                    });
                }
            }
            Lookup::Finished(i) => {
                let event = with_req(&self.jobs.recent[i].event, req);
                self.emit(k, &event);
            }
            Lookup::Refused(kind, message) => self.emit(
                k,
                &Event::Failed {
                    req,
                    job: Some(job),
                    kind,
                    os_error: None,
                    message,
                    bytes: 0,
                },
            ),
        }
    }

    /// Answers one page of the listing: the first [`JOBS_PAGE`] jobs this
    /// user may see with an id above `after`, so that any number of jobs
    /// lists in answers of bounded size (tags are bounded at submit).
    pub(super) fn on_jobs(&mut self, k: usize, req: u64, after: u64) {
        let uid = self.uid_of(k);
        let now = Instant::now();
        let mut ids: Vec<(u64, usize)> = self
            .jobs
            .slab
            .iter()
            .filter(|(_, j)| (uid == 0 || j.uid == uid) && j.id > after)
            .map(|(key, j)| (j.id, key))
            .collect();
        ids.sort_unstable();
        let more = ids.len() > JOBS_PAGE;
        let jobs: Vec<JobInfo> = ids
            .iter()
            .take(JOBS_PAGE)
            .filter_map(|&(_, key)| self.jobs.slab.get(key).map(|j| j.info(now)))
            .collect();
        self.emit(k, &Event::Jobs { req, jobs, more });
    }
}
