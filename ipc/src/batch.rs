//! Many submissions in one frame.
//!
//! A small file's job costs the client one sendmsg(2) and the daemon one
//! receive when it is submitted alone, which for a 4 KiB file is a good part
//! of what the whole copy costs. A [`SubmitBatch`] gathers up to
//! [`Limits::max_fds_per_message`](crate::Limits::max_fds_per_message) / 2
//! jobs into one [`Request::SubmitBatch`] frame and sends it, with all the
//! descriptors in one `SCM_RIGHTS` message, in one call.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use crate::client::{lock, send_error, submit_request, Callback, Client, JobHandle, JobSlot};
use crate::codec::{self, CodecError};
use crate::fdpass::send_with_fds;
use crate::proto::{Request, SubmitRequest, FRAME_HEADER_LEN, SUBMIT_DESCRIPTORS};
use crate::{ClientError, Completion, JobError, TransferOptions};

/// Bytes of a `SubmitBatch` payload besides its jobs: the variant and the
/// length of the list, each at most a 9-byte varint.
const BATCH_OVERHEAD: usize = 18;

/// Submissions gathered to go to the daemon together; made by
/// [`Client::batch`].
///
/// The batch borrows each job's descriptors until it is sent. A job that
/// asked for neither progress nor detach is not acknowledged with
/// `Accepted`, so its [`JobHandle::job_id`] waits for its final event. Every job added
/// runs its callback (and resolves its [`JobHandle`]) exactly once: with its
/// result once sent, or with [`JobError::Disconnected`] if the batch could not
/// be sent or was dropped unsent.
///
/// ```no_run
/// use std::fs::File;
/// use ringxfer_ipc::{Client, TransferOptions};
///
/// let client = Client::connect_default()?;
/// let files: Vec<(File, File)> = (0..3)
///     .map(|i| Ok((File::open(format!("in{i}"))?, File::create(format!("out{i}"))?)))
///     .collect::<std::io::Result<_>>()?;
/// let mut batch = client.batch();
/// let mut jobs = Vec::new();
/// for (src, dst) in &files {
///     jobs.push(batch.submit(src, dst, &TransferOptions::default(), None)?);
/// }
/// batch.send()?;
/// for job in jobs {
///     println!("{} bytes", job.wait()?.bytes);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SubmitBatch<'c, 'fd> {
    client: &'c Client,
    jobs: Vec<SubmitRequest>,
    /// What the frame's payload will take, at most.
    payload: usize,
    /// Scratch for measuring one job's encoding.
    scratch: Vec<u8>,
    fds: Vec<BorrowedFd<'fd>>,
    slots: Vec<Arc<JobSlot>>,
    capacity: usize,
}

impl Client {
    /// An empty batch of submissions on this connection (see [`SubmitBatch`]).
    ///
    /// ```no_run
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// let batch = client.batch();
    /// assert!(batch.capacity() >= 1);
    /// # Ok::<(), ringxfer_ipc::ClientError>(())
    /// ```
    pub fn batch<'fd>(&self) -> SubmitBatch<'_, 'fd> {
        let per_message = self.inner.limits.max_fds_per_message as usize / SUBMIT_DESCRIPTORS;
        let capacity = per_message.max(1);
        SubmitBatch {
            client: self,
            jobs: Vec::with_capacity(capacity),
            payload: BATCH_OVERHEAD,
            scratch: Vec::new(),
            fds: Vec::with_capacity(capacity * SUBMIT_DESCRIPTORS),
            slots: Vec::with_capacity(capacity),
            capacity,
        }
    }
}

impl<'c, 'fd> SubmitBatch<'c, 'fd> {
    /// How many jobs one batch can carry: half the descriptors the daemon
    /// takes in one message.
    ///
    /// ```no_run
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// let batch = client.batch();
    /// assert_eq!(batch.capacity() as u32, (client.limits().max_fds_per_message / 2).max(1));
    /// # Ok::<(), ringxfer_ipc::ClientError>(())
    /// ```
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Jobs added and not yet sent.
    ///
    /// ```no_run
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// assert_eq!(client.batch().len(), 0);
    /// # Ok::<(), ringxfer_ipc::ClientError>(())
    /// ```
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether nothing has been added.
    ///
    /// ```no_run
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// assert!(client.batch().is_empty());
    /// # Ok::<(), ringxfer_ipc::ClientError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether the batch holds [`SubmitBatch::capacity`] jobs (which drops
    /// to the jobs it holds once the next would not fit in the daemon's
    /// frame limit); send it.
    ///
    /// ```no_run
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// assert!(!client.batch().is_full());
    /// # Ok::<(), ringxfer_ipc::ClientError>(())
    /// ```
    pub fn is_full(&self) -> bool {
        self.slots.len() >= self.capacity
    }

    /// Adds a job, as [`Client::submit_with_callback`] would submit it (or
    /// as [`Client::submit`] without `on_done`); it goes out with the batch.
    ///
    /// # Errors
    ///
    /// [`ClientError::Codec`] if the job cannot be encoded (a tag over the
    /// daemon's frame limit), [`ClientError::Disconnected`] if the connection
    /// has already ended; `InvalidInput` ([`ClientError::Io`]) if the batch
    /// is full, or the job would take the frame over the daemon's limit. The
    /// job is then not added and `on_done` never runs.
    ///
    /// ```no_run
    /// use std::fs::File;
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// let (src, dst) = (File::open("in.bin")?, File::create("out.bin")?);
    /// let mut batch = client.batch();
    /// batch.submit(&src, &dst, &Default::default(), Some(Box::new(|result| {
    ///     println!("{:?}", result.map(|done| done.bytes));
    /// })))?;
    /// batch.send()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[allow(clippy::type_complexity)]
    pub fn submit(
        &mut self,
        source: &'fd impl AsFd,
        dest: &'fd impl AsFd,
        opts: &TransferOptions,
        on_done: Option<Box<dyn FnOnce(Result<Completion, JobError>) + Send + 'static>>,
    ) -> Result<JobHandle, ClientError> {
        if self.is_full() {
            return Err(full(self.capacity));
        }
        let inner = &*self.client.inner;
        if lock(&inner.shared).closed.is_some() {
            return Err(ClientError::Disconnected);
        }
        let req = {
            let mut tx = lock(&inner.tx);
            let req = tx.next_req;
            tx.next_req += 1;
            req
        };
        let Request::Submit(job) = submit_request(req, opts) else {
            unreachable!("submit_request makes a Submit");
        };
        // The frame must stay within the daemon's limit: a job that would
        // take it over makes the batch full instead.
        self.scratch.clear();
        codec::encode_frame(&job, &mut self.scratch, inner.limits.max_frame)?;
        let len = self.scratch.len() - FRAME_HEADER_LEN;
        if self.payload + len > inner.limits.max_frame as usize {
            if self.jobs.is_empty() {
                return Err(CodecError::TooLarge {
                    len: self.payload + len,
                    max: inner.limits.max_frame,
                }
                .into());
            }
            self.capacity = self.jobs.len();
            return Err(full(self.capacity));
        }
        self.payload += len;
        self.jobs.push(job);
        let callback: Option<Callback> = on_done;
        let slot = Arc::new(JobSlot::new(req, callback, None));
        self.fds.push(source.as_fd());
        self.fds.push(dest.as_fd());
        self.slots.push(Arc::clone(&slot));
        Ok(JobHandle { slot })
    }

    /// Sends every job added in one frame and message; returns how many.
    ///
    /// # Errors
    ///
    /// [`ClientError::Disconnected`] or [`ClientError::Io`] when sendmsg(2)
    /// fails; every job of the batch has then been resolved with
    /// [`JobError::Disconnected`] and its callback run.
    ///
    /// ```no_run
    /// let client = ringxfer_ipc::Client::connect_default()?;
    /// assert_eq!(client.batch().send()?, 0, "an empty batch sends nothing");
    /// # Ok::<(), ringxfer_ipc::ClientError>(())
    /// ```
    pub fn send(mut self) -> Result<usize, ClientError> {
        let n = self.slots.len();
        if n == 0 {
            return Ok(0);
        }
        let inner = &*self.client.inner;
        let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + self.payload);
        let request = Request::SubmitBatch(std::mem::take(&mut self.jobs));
        if let Err(e) = codec::encode_frame(&request, &mut frame, inner.limits.max_frame) {
            self.abandon("the batch could not be encoded");
            return Err(e.into());
        }
        let sent = {
            // As in Client::submit: the send lock keeps the frames whole on
            // the stream and makes the disconnect sweep wait, so a slot in
            // the table always belongs to a request that left whole; the
            // slots go in before the bytes, because answers can come back
            // before sendmsg returns.
            let _tx = lock(&inner.tx);
            {
                let mut shared = lock(&inner.shared);
                if shared.closed.is_some() {
                    drop(shared);
                    drop(_tx);
                    self.abandon("the connection ended before the batch was sent");
                    return Err(ClientError::Disconnected);
                }
                for slot in &self.slots {
                    shared.jobs.insert(slot.req, Arc::clone(slot));
                }
            }
            let sent = self.client.ensure_reader().and_then(|()| {
                send_with_fds(inner.stream.as_fd(), &frame, &self.fds)
                    .map_err(|e| send_error("sending a batch of Submits to the daemon", e))
            });
            if sent.is_err() {
                let mut shared = lock(&inner.shared);
                for slot in &self.slots {
                    shared.jobs.remove(&slot.req);
                }
            }
            sent
        };
        match sent {
            Ok(()) => {
                self.slots.clear();
                Ok(n)
            }
            Err(e) => {
                self.abandon("sending the batch to the daemon failed");
                Err(e)
            }
        }
    }

    fn abandon(&mut self, why: &str) {
        for slot in self.slots.drain(..) {
            slot.abandon(JobError::Disconnected(why.to_string()));
        }
    }
}

/// The error for a job that does not fit.
fn full(capacity: usize) -> ClientError {
    ClientError::Io {
        op: "adding to a batch of submissions",
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("the batch is full ({capacity} jobs); send it first"),
        ),
    }
}

impl Drop for SubmitBatch<'_, '_> {
    /// Jobs never sent are resolved as disconnected, so nobody waits for them.
    fn drop(&mut self) {
        self.abandon("the batch was dropped before it was sent");
    }
}
