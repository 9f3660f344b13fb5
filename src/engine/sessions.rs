//! The glue between client connections and the loop: receives and sends go
//! through the I/O queue, their completions are fed to the session's wire
//! (`server::wire`, which knows the protocol), and the requests it hands
//! back are acted on here. Every call into the I/O queue for a session is
//! in this file.

use std::os::fd::{AsRawFd, OwnedFd};

use ringxfer_ipc::{Event, Limits, ProtocolErrorKind, Request, PROTOCOL_VERSION};
use slab::Slab;
use tracing::{debug, error, info, warn};

use super::admission::PushTarget;
use super::connections::Connections;
use super::{scheduler, Engine};
use crate::io::fd::SharedFd;
use crate::io::op::AnyOp;
use crate::io::ops::{Op, Owner};
use crate::server::frames::FrameError;
use crate::server::session::{
    peer_credentials, peer_hung_up, RecvBuf, SendBuf, Session, MAX_FDS_PER_MESSAGE,
};
use crate::server::wire::{Incoming, Receipt, Sent};
use crate::transfer::TransferError;

/// Client connections, and what is kept across them.
pub(super) struct Sessions {
    pub slab: Slab<Session>,
    /// Connections per user, and clients cut off (connections.rs).
    pub connections: Connections,
    /// Sessions that may hold events (possibly some twice, or gone); see
    /// coalesce.rs.
    pub held: Vec<usize>,
    pub next_id: u64,
}

impl Sessions {
    pub(super) fn new() -> Sessions {
        Sessions {
            slab: Slab::with_capacity(64),
            connections: Connections::default(),
            held: Vec::with_capacity(16),
            next_id: 1,
        }
    }
}

impl Engine {
    /// A completion of session `k`'s receive or send.
    pub(super) fn on_session_op(&mut self, op: Op, result: i32) {
        match (op.owner, op.op) {
            (Owner::Session(k), AnyOp::RecvMsg(op)) => {
                let buf: Box<dyn std::any::Any> = op.into_target();
                match buf.downcast() {
                    Ok(buf) => self.on_recv(k, result, buf),
                    Err(_) => error!("a receive completed without the session's buffer"),
                }
            }
            (Owner::Session(k), AnyOp::Send(op)) => {
                let buf: Option<Box<dyn std::any::Any>> = op.into_bytes().map(|b| b as _);
                match buf.map(|b| b.downcast()) {
                    Some(Ok(buf)) => self.on_send(k, result, buf),
                    _ => error!("a send completed without the session's buffer"),
                }
            }
            (owner, _) => error!(?owner, tag = op.tag, "completion of an unexpected kind"),
        }
    }

    /// Takes a new connection: who is at the other end, what it may do,
    /// and whether there is room for it.
    pub(super) fn open_session(&mut self, fd: OwnedFd) {
        // Jobs belong to the peer's uid; a connection whose uid cannot be
        // known would otherwise share one placeholder owner with every
        // other such connection, and see and cancel their jobs.
        let Some(peer) = peer_credentials(&fd) else {
            let err = std::io::Error::last_os_error();
            warn!(
                "refusing a connection whose peer credentials cannot be read (SO_PEERCRED: {err})"
            );
            self.closing.doomed.push(fd);
            return;
        };
        let (personality, fsize_limit) = match self.client_rights(&fd, peer) {
            Ok(rights) => rights,
            Err(why) => {
                warn!(pid = peer.0, uid = peer.1, "refusing a connection: {why}");
                self.closing.doomed.push(fd);
                return;
            }
        };
        let id = self.sessions.next_id;
        self.sessions.next_id += 1;
        let mut session = Session::new(id, fd, self.config.max_frame, peer);
        session.personality = personality;
        session.fsize_limit = fsize_limit;
        let key = self.sessions.slab.insert(session);
        let (pid, uid, gid) = peer;
        info!(session = id, pid, uid, gid, "client connected");
        if let Some(message) = self.count_connection(uid) {
            let kind = ProtocolErrorKind::TooManyConnections;
            return self.protocol_error(key, FrameError { kind, message });
        }
        self.arm_recv(key);
        self.arm_deadlines();
    }

    /// What a client may have the daemon do for it, once the daemon has
    /// dropped its privileges: the personality its jobs run under and its
    /// RLIMIT_FSIZE (see `crate::privileges`). An engine embedded in the CLI
    /// acts with its host's rights, which are the client's.
    fn client_rights(
        &mut self,
        fd: &OwnedFd,
        peer: (i32, u32, u32),
    ) -> Result<(u16, Option<u64>), String> {
        use crate::privileges::{self, FsizeLimit};
        if !privileges::dropped() {
            return Ok((0, None));
        }
        let (pid, uid, gid) = peer;
        let identity = privileges::peer_identity(fd.as_raw_fd(), uid, gid).ok_or_else(|| {
            format!(
                "its groups cannot be read (SO_PEERGROUPS: {})",
                std::io::Error::last_os_error()
            )
        })?;
        let personality = self
            .io
            .ring
            .personality(&identity)
            .map_err(|e| format!("cannot register its credentials with the ring: {e}"))?
            .unwrap_or(0);
        let fsize = match privileges::peer_fsize_limit(fd.as_raw_fd(), pid) {
            FsizeLimit::Known(limit) => limit,
            FsizeLimit::Hidden => {
                debug!(pid, "the client's RLIMIT_FSIZE cannot be read (/proc/{pid} hidden): not enforced");
                None
            }
            FsizeLimit::Gone => {
                return Err(format!(
                    "the process that connected (pid {pid}) is gone, so its RLIMIT_FSIZE cannot be read"
                ))
            }
        };
        Ok((personality, fsize))
    }

    // ---- receiving -------------------------------------------------------------

    pub(super) fn arm_recv(&mut self, k: usize) {
        let Some(session) = self.sessions.slab.get_mut(k) else {
            return;
        };
        let Some(buf) = session.wire.take_recv() else {
            return;
        };
        let fd = SharedFd::owned(&session.fd);
        let io = &mut self.io;
        match io.recvmsg(Owner::Session(k), fd, buf) {
            Ok(ud) => session.recv_op = Some(ud),
            Err(e) => {
                session.wire.recv_not_queued();
                error!(session = session.id, "cannot queue recvmsg: {e}");
                self.close_session(k, "the daemon could not queue a receive");
            }
        }
    }

    fn on_recv(&mut self, k: usize, result: i32, buf: Box<RecvBuf>) {
        let Some(session) = self.sessions.slab.get_mut(k) else {
            return;
        };
        session.recv_op = None;
        if session.closing {
            session
                .wire
                .on_recv_closing(result, buf, &mut self.closing.doomed);
            return self.free_if_done(k);
        }
        match session.wire.on_recv(result, buf) {
            Receipt::Bytes => self.take_requests(k),
            Receipt::Again => self.arm_recv(k),
            Receipt::Eof => self.on_eof(k),
            Receipt::Failed(errno) => {
                let err = std::io::Error::from_raw_os_error(errno);
                debug!(session = session.id, "recvmsg failed: {err}");
                self.close_session(k, "the connection failed");
            }
            Receipt::Broken(e) => self.protocol_error(k, e),
        }
    }

    /// The client shut down its sending side between frames.
    fn on_eof(&mut self, k: usize) {
        let busy = self.jobs.admissions.of_session(k) > 0;
        let Some(session) = self.sessions.slab.get_mut(k) else {
            return;
        };
        if (session.jobs.is_empty() && !busy) || peer_hung_up(&session.fd) {
            debug!(session = session.id, "client closed the connection");
            self.close_session(k, "the client closed the connection");
        } else {
            // Shut down for writing only: the client still waits for its
            // jobs' events, so they run on and the session closes after
            // the last one. (A client that hangs up entirely later is
            // noticed when an event to it fails to send.)
            debug!(session = session.id, "client half-closed the connection");
            session.half_closed = true;
        }
    }

    /// Acts on every complete frame received, then receives again.
    fn take_requests(&mut self, k: usize) {
        let outcome = loop {
            let Some(session) = self.sessions.slab.get_mut(k) else {
                return;
            };
            if session.closing {
                break Ok(());
            }
            match session.wire.next_incoming(&mut self.closing.doomed) {
                None => break Ok(()),
                Some(Err(e)) => break Err(e),
                Some(Ok(incoming)) => self.act_on(k, incoming),
            }
        };
        let Some(session) = self.sessions.slab.get_mut(k) else {
            return;
        };
        match session
            .wire
            .finish_frames(outcome, &mut self.closing.doomed)
        {
            Err(e) => self.protocol_error(k, e),
            Ok(()) if !session.closing => self.arm_recv(k),
            Ok(()) => {}
        }
    }

    fn act_on(&mut self, k: usize, incoming: Incoming) {
        match incoming {
            Incoming::Hello => self.welcome(k),
            Incoming::Request(req, fds) => self.handle_request(k, req, fds),
        }
    }

    fn welcome(&mut self, k: usize) {
        let config = &self.config;
        let limits = Limits {
            max_frame: config.max_frame,
            max_jobs_per_connection: config.max_jobs_per_connection as u32,
            max_fds_per_message: MAX_FDS_PER_MESSAGE as u32,
            max_jobs_per_user: config.user_job_cap() as u32,
            max_queued_bytes_per_connection: config.max_queued_bytes_per_connection,
            max_queued_bytes_per_user: config.max_queued_bytes_per_user,
        };
        let version = PROTOCOL_VERSION;
        self.emit(k, &Event::Welcome { version, limits });
    }

    /// A request after Hello, with exactly the descriptors it needs (the
    /// wire made sure: two per job, three with a directory to publish in,
    /// in job order).
    fn handle_request(&mut self, k: usize, req: Request, fds: Vec<OwnedFd>) {
        match req {
            Request::Submit(submit) => {
                let mut fds = fds.into_iter();
                if let (Some(src), Some(dst)) = (fds.next(), fds.next()) {
                    self.admit(k, submit, (src, dst, fds.next()), None, true);
                }
                self.closing.doomed.extend(fds);
            }
            Request::SubmitRemote(push) => {
                let push = *push;
                let mut fds = fds.into_iter();
                if let (Some(src), Some(dst)) = (fds.next(), fds.next()) {
                    let target = PushTarget {
                        path: push.path,
                        mkdir: push.mkdir,
                        pull: push.pull,
                        resume: push.resume,
                        list: push.list,
                        connection: push.connection,
                        stripe: push.stripe,
                    };
                    self.admit(k, push.submit, (src, dst, None), Some(target), true);
                }
                self.closing.doomed.extend(fds);
            }
            Request::SubmitBatch(submits) => self.admit_batch(k, submits, fds),
            Request::Cancel { req, job } => self.on_cancel(k, req, job),
            Request::Status { req, job } => self.on_status(k, req, job),
            Request::Wait { req, job, progress } => self.on_wait(k, req, job, progress),
            Request::Jobs { req, after } => self.on_jobs(k, req, after),
            Request::Stats => {
                let report = self.stats();
                self.emit(k, &Event::Stats(report));
            }
            // The wire answers Hello itself.
            Request::Hello { .. } => {}
        }
    }

    fn admit_batch(
        &mut self,
        k: usize,
        submits: Vec<ringxfer_ipc::SubmitRequest>,
        fds: Vec<OwnedFd>,
    ) {
        let mut fds = fds.into_iter();
        for submit in submits {
            let (Some(src), Some(dst)) = (fds.next(), fds.next()) else {
                break;
            };
            let dir = submit.publish.is_some().then(|| fds.next()).flatten();
            // An Accepted per job would double the events of a batch of
            // small files for nothing: their final event carries the id. A
            // detached job's owner needs the id before that, and so does a
            // progress bar.
            let acknowledge = submit.progress || submit.detach;
            self.admit(k, submit, (src, dst, dir), None, acknowledge);
            if self.sessions.slab.get(k).is_none_or(|s| s.closing) {
                break;
            }
        }
        // Those of jobs a closing session did not get to.
        self.closing.doomed.extend(fds);
    }

    pub(super) fn protocol_error(&mut self, k: usize, e: FrameError) {
        if let Some(session) = self.sessions.slab.get(k) {
            warn!(session = session.id, kind = ?e.kind, "closing connection: {}", e.message);
        }
        let (kind, message) = (e.kind, e.message);
        self.emit(k, &Event::ProtocolError { kind, message });
        self.close_session(k, "protocol error");
    }

    // ---- closing ---------------------------------------------------------------

    /// Stops reading, cancels the session's jobs and frees it once its
    /// operations are back, its jobs have reported and its last events are
    /// sent. A send already waiting on a full socket is cancelled, and later
    /// sends do not wait: a client that stopped reading cannot hold the
    /// session (or a daemon that is stopping) forever.
    pub(super) fn close_session(&mut self, k: usize, why: &str) {
        let Some(session) = self.sessions.slab.get_mut(k) else {
            return;
        };
        if session.closing {
            return;
        }
        session.closing = true;
        session.wire.close(&mut self.closing.doomed);
        let ops = [session.recv_op, session.send_op];
        let jobs = std::mem::take(&mut session.jobs);
        for ud in ops.into_iter().flatten() {
            let _ = self.io.cancel(ud);
        }
        self.abandon_admissions(k);
        self.end_session_jobs(k, jobs, why);
        self.drop_kept(k);
        for (_, job) in self.jobs.slab.iter_mut() {
            job.watchers.retain(|w| w.session != k);
        }
        // Its detached jobs wait on for slots without it.
        for q in &mut self.slots.queues {
            q.unpark_all(scheduler::Group::Connection(k));
        }
        self.free_if_done(k);
    }

    /// A closing session's jobs: detached ones run on without it, the
    /// others are cancelled.
    fn end_session_jobs(&mut self, k: usize, jobs: Vec<usize>, why: &str) {
        for jk in jobs {
            match self.jobs.slab.get_mut(jk) {
                Some(job) if job.detach && !self.life.stopping => {
                    // A detached job runs on without its connection; its
                    // events go to whoever waits for it.
                    job.session = None;
                    debug!(job = job.id, "connection closed; detached job runs on");
                }
                Some(_) => {
                    if let Some(session) = self.sessions.slab.get_mut(k) {
                        session.jobs.push(jk);
                    }
                    self.fail_job(jk, TransferError::cancelled(why));
                }
                None => {}
            }
        }
    }

    pub(super) fn free_if_done(&mut self, k: usize) {
        if self.sessions.slab.get(k).is_some_and(Session::is_done) {
            let session = self.sessions.slab.remove(k);
            self.sessions.connections.release(session.peer.1);
            debug!(session = session.id, "connection closed");
        }
    }

    // ---- sending ---------------------------------------------------------------

    /// Encodes an event for the session and starts sending it (with any
    /// events held before it).
    pub(super) fn emit(&mut self, k: usize, event: &Event) {
        if self.encode_event(k, event) {
            self.flush(k);
        }
    }

    /// Appends an event to the session's unsent bytes; false if there is no
    /// such session any more or it had to be closed.
    pub(super) fn encode_event(&mut self, k: usize, event: &Event) -> bool {
        let Some(session) = self.sessions.slab.get_mut(k) else {
            return false;
        };
        if session.wire.not_reading() {
            warn!(
                session = session.id,
                "client is not reading its events; closing"
            );
            self.cut_off(k);
            return false;
        }
        // Checked before encoding too, so that a client already over its
        // share costs no more encoding (a listing is ~120 KiB of work), and
        // after, for the event just added.
        let over = self.over_event_share(k);
        let session = &mut self.sessions.slab[k];
        if !over {
            if let Err(e) = session.wire.queue_event(event) {
                error!(session = session.id, "cannot encode an event: {e}");
                return false;
            }
        }
        if over || self.over_event_share(k) {
            if let Some(clients) = self.sessions.connections.cut_off_for_not_reading() {
                warn!(
                    session = self.sessions.slab[k].id,
                    clients,
                    "clients not reading their events held more than their share of the daemon's event memory; closed"
                );
            }
            self.cut_off(k);
            return false;
        }
        self.counters.events_sent += 1;
        true
    }

    /// Closes a session that does not read its events, dropping them.
    fn cut_off(&mut self, k: usize) {
        let session = &mut self.sessions.slab[k];
        session.wire.drop_pending();
        session.held_events = 0;
        self.close_session(k, "the client stopped reading its events");
    }

    /// Sends what the session has pending, unless a send is in flight.
    pub(super) fn flush(&mut self, k: usize) {
        let Some(session) = self.sessions.slab.get_mut(k) else {
            return;
        };
        if session.send_op.is_some() {
            return;
        }
        let Some(buf) = session.wire.start_send() else {
            return;
        };
        session.held_events = 0;
        let fd = SharedFd::owned(&session.fd);
        let io = &mut self.io;
        match io.send(Owner::Session(k), fd, buf, session.closing) {
            Ok(ud) => {
                session.send_op = Some(ud);
                self.counters.event_sends += 1;
            }
            Err(e) => {
                session.wire.send_not_queued();
                error!(session = session.id, "cannot queue send: {e}");
                self.close_session(k, "the daemon could not queue a send");
            }
        }
    }

    fn on_send(&mut self, k: usize, result: i32, buf: Box<SendBuf>) {
        let Some(session) = self.sessions.slab.get_mut(k) else {
            return;
        };
        session.send_op = None;
        match session.wire.on_sent(result, buf, session.closing) {
            Sent::Again => self.flush(k),
            Sent::Done => {
                self.flush(k);
                if let Some(session) = self.sessions.slab.get_mut(k) {
                    session.wire.shrink_idle_buffers();
                }
                self.free_if_done(k);
            }
            Sent::Failed(errno) => {
                if !matches!(errno, libc::ECANCELED | libc::EAGAIN) {
                    let err = std::io::Error::from_raw_os_error(errno);
                    debug!(session = session.id, "send failed: {err}");
                }
                // The client is gone, or not reading while the session
                // closes: what was left to send cannot be delivered.
                self.close_session(k, "the connection failed");
                self.free_if_done(k);
            }
        }
    }
}
