//! Requests: submitting jobs, following them, and the control requests
//! answered by one event (cancel, status, jobs, stats).

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use crossbeam_channel::Receiver;

use super::errors::unexpected_answer;
use super::publisher::Staged;
use super::{lock, send_error, submit_request, Callback, Client, JobSlot};
use crate::codec;
use crate::fdpass::send_with_fds;
use crate::proto::peer::RemotePath;
use crate::proto::{Event, JobInfo, PublishTo, RemoteSubmit, Request, StatsReport};
use crate::{ClientError, Completion, JobError, JobHandle, TransferOptions};
#[cfg(doc)]
use crate::{FailureKind, StagedFile};

/// What a submit carries besides its two descriptors.
pub(crate) enum Extra<'a> {
    None,
    /// The directory to publish in (a third descriptor), and the names.
    Publish(BorrowedFd<'a>, PublishTo),
    /// A push to another daemon: where the file lands there.
    /// And whether to make its missing directories there.
    /// And whether to continue a part the other daemon kept.
    Remote(RemotePath, bool, bool),
    /// A pull from another daemon: what to ask it for, and whether it is
    /// a directory's listing.
    /// And whether to continue the part `dest` holds.
    Pull(RemotePath, bool, bool),
}

impl Client {
    /// Hands the daemon a transfer from `source` to `dest`. Returns once the
    /// request is sent; the handle tells when the job is admitted and done.
    ///
    /// The daemon gets its own copies of the descriptors, so the caller may
    /// close its copies as soon as this returns.
    ///
    /// # Errors
    ///
    /// [`ClientError::Disconnected`] if the connection is closed,
    /// [`ClientError::Codec`] if the request does not fit in a frame (an
    /// enormous tag), [`ClientError::Io`] if sendmsg(2) fails (e.g. `EBADF`
    /// for a closed descriptor).
    ///
    /// ```no_run
    /// use std::fs::File;
    /// use ringxfer_ipc::{Client, TransferOptions};
    ///
    /// let client = Client::connect_default()?;
    /// let src = File::open("in.bin")?;
    /// let dst = File::create("out.bin")?;
    /// let job = client.submit(&src, &dst, &TransferOptions { progress: true, ..Default::default() })?;
    /// println!("job {} moved {} bytes", job.job_id()?, job.wait()?.bytes);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn submit(
        &self,
        source: impl AsFd,
        dest: impl AsFd,
        opts: &TransferOptions,
    ) -> Result<JobHandle, ClientError> {
        self.submit_inner(source.as_fd(), dest.as_fd(), Extra::None, opts, None, None)
    }

    /// Hands the daemon a push of `source` to another daemon (host to host):
    /// `socket` is a TCP connection the caller made to that daemon's
    /// `listen_tcp`, and `path` (`EXPORT/dir/file`) is where the file lands
    /// there. The job completes only once the other daemon says the file is
    /// whole under its name, its CRC-32C equal to the one sent
    /// ([`Completion::checksums`] carries both); until then that name keeps
    /// what it had. [`TransferOptions::fsync`] asks the other daemon to make
    /// file and name durable first; `mkdir` to make the directories of
    /// `path` it lacks (beneath its export), as for a tree. `dest_offset`,
    /// `truncate`, `in_place` and clones do not apply.
    ///
    /// # Errors
    ///
    /// As [`Client::submit`].
    ///
    /// ```no_run
    /// use std::fs::File;
    /// use std::net::TcpStream;
    /// use ringxfer_ipc::proto::peer::RemotePath;
    /// use ringxfer_ipc::{Client, TransferOptions};
    ///
    /// let client = Client::connect_default()?;
    /// let src = File::open("notes.txt")?;
    /// let other = TcpStream::connect("127.0.0.1:7300")?;
    /// let path = RemotePath::new("inbox/notes.txt")?;
    /// let done = client.submit_remote(&src, &other, &path, false, &TransferOptions::default())?.wait()?;
    /// println!("{} bytes landed, crc32c {:08x}", done.bytes, done.checksums.unwrap().destination);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn submit_remote(
        &self,
        source: impl AsFd,
        socket: impl AsFd,
        path: &RemotePath,
        mkdir: bool,
        opts: &TransferOptions,
    ) -> Result<JobHandle, ClientError> {
        let extra = Extra::Remote(path.clone(), mkdir, opts.resume);
        self.submit_inner(source.as_fd(), socket.as_fd(), extra, opts, None, None)
    }

    /// Hands the daemon a pull of `path` (`EXPORT/dir/file`) from another
    /// daemon, through `socket` (a TCP connection the caller made to its
    /// `listen_tcp`), into `dest`: the bytes are checked against the
    /// other daemon's CRC-32C ([`Completion::checksums`] carries both) and
    /// `dest` gets the file's mode (permission bits) and times before the
    /// job completes. `dest` is written whole from offset 0; stage it (see
    /// [`StagedFile`]) so that a failed pull leaves no name behind.
    ///
    /// # Errors
    ///
    /// As [`Client::submit`].
    ///
    /// ```no_run
    /// use std::fs::File;
    /// use std::net::TcpStream;
    /// use ringxfer_ipc::proto::peer::RemotePath;
    /// use ringxfer_ipc::{Client, TransferOptions};
    ///
    /// let client = Client::connect_default()?;
    /// let other = TcpStream::connect("127.0.0.1:7300")?;
    /// let dest = File::create("notes.txt")?;
    /// let path = RemotePath::new("inbox/notes.txt")?;
    /// client.submit_pull(&other, &dest, &path, &TransferOptions::default())?.wait()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn submit_pull(
        &self,
        socket: impl AsFd,
        dest: impl AsFd,
        path: &RemotePath,
        opts: &TransferOptions,
    ) -> Result<JobHandle, ClientError> {
        let extra = Extra::Pull(path.clone(), false, opts.resume);
        self.submit_inner(socket.as_fd(), dest.as_fd(), extra, opts, None, None)
    }

    /// As [`Client::submit_pull`], the listing of the directory `path`
    /// (its own mode and time, and everything beneath it: a
    /// [`crate::proto::peer::Listing`], which
    /// [`crate::proto::peer::decode_listing`] reads) into `dest`, say a
    /// memfd, checked by CRC-32C as a file is. A tree is pulled by its
    /// listing, then file by file.
    ///
    /// # Errors
    ///
    /// As [`Client::submit`].
    ///
    /// ```no_run
    /// use std::io::{Read, Seek};
    /// use std::net::TcpStream;
    /// use ringxfer_ipc::proto::peer::{decode_listing, RemotePath};
    /// use ringxfer_ipc::{Client, TransferOptions};
    ///
    /// let client = Client::connect_default()?;
    /// let other = TcpStream::connect("127.0.0.1:7300")?;
    /// let mut dest = tempfile::tempfile()?;
    /// let path = RemotePath::new("inbox/photos")?;
    /// client.submit_list(&other, &dest, &path, &TransferOptions::default())?.wait()?;
    /// let mut bytes = Vec::new();
    /// dest.rewind()?;
    /// dest.read_to_end(&mut bytes)?;
    /// for entry in decode_listing(&bytes)?.entries {
    ///     println!("{:?} {}", entry.kind, entry.path);
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn submit_list(
        &self,
        socket: impl AsFd,
        dest: impl AsFd,
        path: &RemotePath,
        opts: &TransferOptions,
    ) -> Result<JobHandle, ClientError> {
        let extra = Extra::Pull(path.clone(), true, false);
        self.submit_inner(socket.as_fd(), dest.as_fd(), extra, opts, None, None)
    }

    /// As [`Client::submit`], and the daemon gives `dest` a name in `dir`
    /// when the job completes (see [`PublishTo`]): for a detached job whose
    /// destination is staged (an O_TMPFILE, or a hidden file named in
    /// `publish.staged_name`) and whose submitter may be gone by then. A
    /// failed or cancelled job leaves nothing under the name. `dir` is the
    /// directory both names are in, opened by the caller (O_RDONLY, so
    /// that with `fsync` the daemon can sync it too).
    /// [`StagedFile::for_daemon`] makes both.
    ///
    /// # Errors
    ///
    /// As [`Client::submit`].
    ///
    /// ```no_run
    /// use std::fs::File;
    /// use std::path::Path;
    /// use ringxfer_ipc::{Client, PublishOptions, StagedFile, TransferOptions};
    ///
    /// let client = Client::connect_default()?;
    /// let pid = client.daemon_pid().expect("the daemon's pid");
    /// let src = File::open("in.bin")?;
    /// let staged = StagedFile::create_for_daemon(Path::new("out.bin"), None, &PublishOptions::default(), pid)?;
    /// let (dir, publish) = staged.for_daemon()?.expect("a staged, not in-place, destination");
    /// let opts = TransferOptions { detach: true, ..Default::default() };
    /// let job = client.submit_publish(&src, staged.file(), &dir, publish, &opts)?;
    /// job.job_id()?; // admitted: the daemon names out.bin when the job completes
    /// staged.hand_over();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn submit_publish(
        &self,
        source: impl AsFd,
        dest: impl AsFd,
        dir: impl AsFd,
        publish: PublishTo,
        opts: &TransferOptions,
    ) -> Result<JobHandle, ClientError> {
        self.submit_inner(
            source.as_fd(),
            dest.as_fd(),
            Extra::Publish(dir.as_fd(), publish),
            opts,
            None,
            None,
        )
    }

    /// As [`Client::submit`], and `on_done` runs with the job's result on the
    /// stub's event thread, exactly once: when the job completes or fails, or
    /// when the connection ends first. If this returns an error, `on_done`
    /// never runs.
    ///
    /// The callback delays every other event while it runs, so keep it short,
    /// and do not wait in it for anything only the event thread can deliver
    /// ([`JobHandle::wait`] on another job, [`Client::stats`]).
    ///
    /// # Errors
    ///
    /// As [`Client::submit`].
    ///
    /// ```no_run
    /// use std::fs::File;
    /// use ringxfer_ipc::{Client, TransferOptions};
    ///
    /// let client = Client::connect_default()?;
    /// let (src, dst) = (File::open("in.bin")?, File::create("out.bin")?);
    /// client.submit_with_callback(&src, &dst, &TransferOptions::default(), |result| match result {
    ///     Ok(done) => println!("{} bytes", done.bytes),
    ///     Err(e) => eprintln!("copy failed: {e}"),
    /// })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn submit_with_callback(
        &self,
        source: impl AsFd,
        dest: impl AsFd,
        opts: &TransferOptions,
        on_done: impl FnOnce(Result<Completion, JobError>) + Send + 'static,
    ) -> Result<JobHandle, ClientError> {
        self.submit_inner(
            source.as_fd(),
            dest.as_fd(),
            Extra::None,
            opts,
            Some(Box::new(on_done)),
            None,
        )
    }

    pub(crate) fn submit_inner(
        &self,
        source: BorrowedFd<'_>,
        dest: BorrowedFd<'_>,
        extra: Extra<'_>,
        opts: &TransferOptions,
        callback: Option<Callback>,
        staged: Option<Staged>,
    ) -> Result<JobHandle, ClientError> {
        let inner = &*self.inner;
        let mut tx = lock(&inner.tx);
        let tx = &mut *tx;
        let req = tx.next_req;
        tx.next_req += 1;
        let mut request = submit_request(req, opts);
        let mut dir = None;
        match (extra, &mut request) {
            (Extra::Publish(fd, publish), Request::Submit(submit)) => {
                submit.publish = Some(publish);
                dir = Some(fd);
            }
            (Extra::Remote(path, mkdir, resume), Request::Submit(submit)) => {
                let submit = submit.clone();
                let push = RemoteSubmit {
                    submit,
                    path,
                    mkdir,
                    pull: false,
                    resume,
                    list: false,
                    connection: opts.connection,
                    stripe: opts.stripe,
                };
                request = Request::SubmitRemote(Box::new(push));
            }
            (Extra::Pull(path, list, resume), Request::Submit(submit)) => {
                let submit = submit.clone();
                let pull = RemoteSubmit {
                    submit,
                    path,
                    mkdir: false,
                    pull: true,
                    resume,
                    list,
                    connection: opts.connection,
                    stripe: None,
                };
                request = Request::SubmitRemote(Box::new(pull));
            }
            _ => {}
        }
        tx.buf.clear();
        codec::encode_frame(&request, &mut tx.buf, inner.limits.max_frame)?;

        // The slot must be in the table before the frame leaves: the answer
        // can arrive before sendmsg returns.
        let slot = Arc::new(JobSlot::new(req, callback, staged));
        {
            let mut shared = lock(&inner.shared);
            if shared.closed.is_some() {
                return Err(ClientError::Disconnected);
            }
            shared.jobs.insert(req, Arc::clone(&slot));
        }
        if let Err(e) = self.ensure_reader() {
            // Withdrawn unsent, its callback unrun, as for a failed send.
            lock(&inner.shared).jobs.remove(&req);
            return Err(e);
        }
        let sent = match dir {
            Some(dir) => send_with_fds(inner.stream.as_fd(), &tx.buf, &[source, dest, dir]),
            None => send_with_fds(inner.stream.as_fd(), &tx.buf, &[source, dest]),
        };
        if let Err(e) = sent {
            // The disconnect sweep takes the send lock we hold, and the daemon
            // cannot answer a request it did not get whole, so the slot is
            // still unresolved and ours to withdraw, callback unrun; a staged
            // destination in it is abandoned as the slot drops.
            lock(&inner.shared).jobs.remove(&req);
            return Err(send_error("sending Submit to the daemon", e));
        }
        Ok(JobHandle { slot })
    }

    /// A channel of every event received from now on: `Accepted`,
    /// `Progress`, `Completed`, `Failed`, `Stats` and `ProtocolError`.
    ///
    /// Each call makes a new subscriber. The channel is unbounded, so read it
    /// or drop it; a dropped receiver is pruned at the next event. When the
    /// connection ends the channel disconnects (after any events still in it).
    ///
    /// Events come in the order received, but for the final event of a
    /// [`Client::copy_file`] or [`Client::recv_to_file`] job: it comes once
    /// the destination has its name (or was abandoned), which other jobs'
    /// events received meanwhile need not wait for.
    ///
    /// ```no_run
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// let events = client.events();
    /// for event in events.iter() {
    ///     println!("{event:?}");
    /// }
    /// # Ok::<(), ringxfer_ipc::ClientError>(())
    /// ```
    pub fn events(&self) -> Receiver<Event> {
        let (sender, receiver) = crossbeam_channel::unbounded();
        {
            let mut shared = lock(&self.inner.shared);
            // After the end, dropping the sender here makes the receiver
            // report the disconnection at once instead of waiting forever.
            if shared.closed.is_none() {
                shared.subscribers.push(sender);
            }
        }
        // Without a thread to read them no event would come, nor the end:
        // a connection that cannot have one ends, which the channel tells.
        if let Err(e) = self.ensure_reader() {
            self.inner.close(e.to_string());
        }
        receiver
    }

    /// Asks the daemon to cancel a job by its id (from [`JobHandle::job_id`],
    /// [`Client::jobs`] or another connection): any job of this user, any
    /// job at all for root. Returns once the daemon has taken the request;
    /// the job itself then fails with [`FailureKind::Cancelled`] (seen by its
    /// [`JobHandle`] and by [`Client::wait_job`]) once every operation it had
    /// in flight is back, unless it finished first.
    ///
    /// # Errors
    ///
    /// [`ClientError::Refused`] for an unknown job ([`FailureKind::NoSuchJob`],
    /// also for one that already finished) or another user's
    /// ([`FailureKind::PermissionDenied`]); [`ClientError::Disconnected`] if
    /// the connection is closed, [`ClientError::Io`] if sending fails.
    ///
    /// ```no_run
    /// # use std::fs::File;
    /// # use ringxfer_ipc::{Client, FailureKind, TransferOptions};
    /// # let client = Client::connect_default()?;
    /// # let (src, dst) = (File::open("in.bin")?, File::create("out.bin")?);
    /// let job = client.submit(&src, &dst, &TransferOptions::default())?;
    /// client.cancel(job.job_id()?)?;
    /// if let Err(e) = job.wait() {
    ///     assert_eq!(e.kind(), Some(FailureKind::Cancelled));
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cancel(&self, job: u64) -> Result<(), ClientError> {
        match self.ask("sending Cancel to the daemon", |req| Request::Cancel {
            req,
            job,
        })? {
            Event::Cancelling { .. } => Ok(()),
            other => Err(unexpected_answer(job, other)),
        }
    }

    /// Asks for one job's state: a running job, or one that finished
    /// recently (the daemon remembers the last few thousand).
    ///
    /// # Errors
    ///
    /// As [`Client::cancel`].
    ///
    /// ```no_run
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// let info = client.status(42)?;
    /// println!("job 42 is {}: {} of {:?} bytes", info.state.name(), info.bytes, info.total);
    /// # Ok::<(), ringxfer_ipc::ClientError>(())
    /// ```
    pub fn status(&self, job: u64) -> Result<JobInfo, ClientError> {
        match self.ask("sending Status to the daemon", |req| Request::Status {
            req,
            job,
        })? {
            Event::Status { info, .. } => Ok(info),
            other => Err(unexpected_answer(job, other)),
        }
    }

    /// Lists the unfinished jobs this user may see (every user's, for root),
    /// oldest first.
    ///
    /// # Errors
    ///
    /// [`ClientError::Disconnected`] if the connection is closed or closes
    /// before the answer, [`ClientError::Io`] if sending fails.
    ///
    /// ```no_run
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// for job in client.jobs()? {
    ///     println!("{} {} {}/{:?}", job.job, job.state.name(), job.bytes, job.total);
    /// }
    /// # Ok::<(), ringxfer_ipc::ClientError>(())
    /// ```
    pub fn jobs(&self) -> Result<Vec<JobInfo>, ClientError> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            match self.ask("sending Jobs to the daemon", |req| Request::Jobs {
                req,
                after,
            })? {
                Event::Jobs { jobs, more, .. } => {
                    let last = jobs.last().map(|j| j.job);
                    all.extend(jobs);
                    match last {
                        // Ids only grow, so the next page starts past this one.
                        Some(last) if more && last > after => after = last,
                        _ => return Ok(all),
                    }
                }
                other => return Err(unexpected_answer(0, other)),
            }
        }
    }

    /// Follows a job submitted elsewhere (a detached job, or one of another
    /// connection of this user): the handle resolves with that job's result,
    /// at once if it finished recently. With `progress`, the handle's
    /// [`JobHandle::bytes_so_far`] follows it too.
    ///
    /// # Errors
    ///
    /// As [`Client::submit`]. An unknown job is not an error here: the
    /// handle resolves to [`JobError::Failed`] with [`FailureKind::NoSuchJob`]
    /// (or [`FailureKind::PermissionDenied`] for another user's job).
    ///
    /// ```no_run
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// let done = client.wait_job(42, false)?.wait()?;
    /// println!("job 42 moved {} bytes", done.bytes);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_job(&self, job: u64, progress: bool) -> Result<JobHandle, ClientError> {
        let inner = &*self.inner;
        let mut tx = lock(&inner.tx);
        let tx = &mut *tx;
        let req = tx.next_req;
        tx.next_req += 1;
        tx.buf.clear();
        codec::encode_frame(
            &Request::Wait { req, job, progress },
            &mut tx.buf,
            inner.limits.max_frame,
        )?;
        let slot = Arc::new(JobSlot::new(req, None, None));
        {
            let mut shared = lock(&inner.shared);
            if shared.closed.is_some() {
                return Err(ClientError::Disconnected);
            }
            shared.jobs.insert(req, Arc::clone(&slot));
        }
        let sent = self.ensure_reader().and_then(|()| {
            send_with_fds(inner.stream.as_fd(), &tx.buf, &[])
                .map_err(|e| send_error("sending Wait to the daemon", e))
        });
        if let Err(e) = sent {
            lock(&inner.shared).jobs.remove(&req);
            return Err(e);
        }
        Ok(JobHandle { slot })
    }

    /// Sends a request that takes a `req` and waits for the event answering it.
    fn ask(
        &self,
        op: &'static str,
        make: impl FnOnce(u64) -> Request,
    ) -> Result<Event, ClientError> {
        let inner = &*self.inner;
        let (sender, receiver) = crossbeam_channel::bounded(1);
        {
            let mut tx = lock(&inner.tx);
            let tx = &mut *tx;
            let req = tx.next_req;
            tx.next_req += 1;
            tx.buf.clear();
            codec::encode_frame(&make(req), &mut tx.buf, inner.limits.max_frame)?;
            {
                let mut shared = lock(&inner.shared);
                if shared.closed.is_some() {
                    return Err(ClientError::Disconnected);
                }
                shared.answers.insert(req, sender);
            }
            let sent = self.ensure_reader().and_then(|()| {
                send_with_fds(inner.stream.as_fd(), &tx.buf, &[]).map_err(|e| send_error(op, e))
            });
            if let Err(e) = sent {
                lock(&inner.shared).answers.remove(&req);
                return Err(e);
            }
        }
        // The sender is dropped unanswered only when the connection ends.
        receiver.recv().map_err(|_| ClientError::Disconnected)
    }

    /// Asks the daemon for its counters and waits for the answer.
    ///
    /// Do not call this from a job callback: the answer is delivered by the
    /// thread the callback runs on.
    ///
    /// # Errors
    ///
    /// [`ClientError::Disconnected`] if the connection is closed or closes
    /// before the answer, [`ClientError::Io`] if sending fails.
    ///
    /// ```no_run
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// let stats = client.stats()?;
    /// println!("{} jobs running, {} bytes moved", stats.jobs_running, stats.bytes_moved);
    /// # Ok::<(), ringxfer_ipc::ClientError>(())
    /// ```
    pub fn stats(&self) -> Result<StatsReport, ClientError> {
        let inner = &*self.inner;
        let (sender, receiver) = crossbeam_channel::bounded(1);
        {
            let mut tx = lock(&inner.tx);
            let tx = &mut *tx;
            tx.buf.clear();
            codec::encode_frame(&Request::Stats, &mut tx.buf, inner.limits.max_frame)?;
            let id = tx.next_stats;
            tx.next_stats += 1;
            {
                let mut shared = lock(&inner.shared);
                if shared.closed.is_some() {
                    return Err(ClientError::Disconnected);
                }
                // Queued under the send lock, so queue order is send order.
                shared.stats_waiters.push_back((id, sender));
            }
            let sent = self.ensure_reader().and_then(|()| {
                send_with_fds(inner.stream.as_fd(), &tx.buf, &[])
                    .map_err(|e| send_error("sending Stats to the daemon", e))
            });
            if let Err(e) = sent {
                lock(&inner.shared)
                    .stats_waiters
                    .retain(|(waiter, _)| *waiter != id);
                return Err(e);
            }
        }
        // The sender is dropped unanswered only when the connection ends.
        receiver.recv().map_err(|_| ClientError::Disconnected)
    }
}
