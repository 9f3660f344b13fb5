//! What a job asks for: [`TransferOptions`], and the `Submit` they make.

use crate::proto::peer::StripeId;
use crate::proto::{
    PeerConnection, Priority, RateGroup, Reflink, Request, Sparse, Strategy, SubmitRequest,
};
#[cfg(doc)]
use crate::{Client, JobHandle};

/// What to transfer and how; everything but the two descriptors.
///
/// ```
/// use ringxfer_ipc::{Strategy, TransferOptions};
/// let opts = TransferOptions { tag: "backup.tar".into(), length: Some(4096), ..Default::default() };
/// assert_eq!(opts.strategy, Strategy::Auto);
/// ```
#[derive(Debug, Clone)]
pub struct TransferOptions {
    /// Free text the daemon logs with the job (a file name, say).
    pub tag: String,
    /// Where reading starts in the source (ignored for sockets and pipes).
    pub offset: u64,
    /// How many bytes to move; `None` means to the end of the source.
    pub length: Option<u64>,
    /// Where writing starts in the destination (ignored for sockets and pipes).
    pub dest_offset: u64,
    /// Which transfer strategy to ask for.
    pub strategy: Strategy,
    /// Whether to ask for `Progress` events, which feed [`JobHandle::bytes_so_far`].
    pub progress: bool,
    /// The job's scheduling class.
    pub priority: Priority,
    /// At most this many bytes per second for this job alone; to cap
    /// several jobs together, see [`TransferOptions::rate_group`].
    pub rate_limit: Option<u64>,
    /// Let the job run on if this connection closes; follow it later with
    /// [`Client::wait_job`] from any connection of the same user.
    ///
    /// A staged destination of the path helpers is then published by the
    /// daemon when the job completes (this process may be gone by then):
    /// it gets the destination's directory and name with the job.
    pub detach: bool,
    /// Complete only once the destination's data is durable (fdatasync).
    pub fsync: bool,
    /// Checksum what was read and what landed, and fail on a difference.
    pub verify: bool,
    /// Path helpers only ([`Client::copy_file`], [`Client::recv_to_file`]):
    /// write straight into the destination instead of into a temporary
    /// file that takes the destination's name only once the job completed
    /// (see [`crate::publish`]).
    pub in_place: bool,
    /// [`Client::copy_file`] only: give the destination the source's mode,
    /// owner (where permitted) and timestamps once the job completed.
    pub preserve: bool,
    /// Once every byte is written, the daemon truncates a regular-file
    /// destination to where the job's writes ended (see
    /// [`SubmitRequest::truncate`]). The path helpers set it themselves for
    /// [`TransferOptions::in_place`].
    pub truncate: bool,
    /// Whether the daemon clones the source (FICLONE) where it can:
    /// [`Reflink`], as `cp --reflink`.
    pub reflink: Reflink,
    /// A limit shared with this connection's other jobs of the same group:
    /// all of them together move at most [`RateGroup::rate`] bytes per
    /// second, as `rsync --bwlimit` or `pv -L` cap a whole transfer. The id
    /// is this connection's own (another client's group 1 is another
    /// group); [`TransferOptions::rate_limit`] still caps each job too.
    ///
    /// ```no_run
    /// use ringxfer_ipc::{Client, RateGroup, TransferOptions};
    /// use std::fs::File;
    ///
    /// let client = Client::connect_default()?;
    /// // Eight files at 50 MiB/s in all, not 50 MiB/s each.
    /// let all = TransferOptions {
    ///     rate_group: Some(RateGroup { id: 1, rate: 50 << 20 }),
    ///     ..Default::default()
    /// };
    /// let mut handles = Vec::new();
    /// for i in 0..8 {
    ///     let src = File::open(format!("part{i}"))?;
    ///     let dst = File::create(format!("/backup/part{i}"))?;
    ///     handles.push(client.submit(&src, &dst, &all)?);
    /// }
    /// for h in handles {
    ///     h.wait()?;
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub rate_group: Option<RateGroup>,
    /// What becomes of the source's holes: [`Sparse`], as `cp --sparse`.
    pub sparse: Sparse,
    /// [`Client::submit_remote`] and [`Client::submit_pull`] only: continue
    /// an interrupted transfer, as `rsync --partial --append-verify` does.
    /// The receiving side kept the part of a file whose connection was
    /// lost (for a pull, `dest` holds it); the part's blocks that match the
    /// source (CRC-32C, block by block) are not sent again, and the whole
    /// file is still checked before it takes its name.
    ///
    /// ```
    /// let opts = ringxfer_ipc::TransferOptions { resume: true, ..Default::default() };
    /// assert!(opts.resume);
    /// ```
    pub resume: bool,
    /// [`Client::submit_remote`] and [`Client::submit_pull`] only: whether
    /// the conversation with the other daemon outlives this job, so that
    /// the next file handed over with the same socket pays for no new TCP
    /// or TLS handshake ([`PeerConnection`]). Hand a socket over again
    /// (with [`PeerConnection::Continue`]) only after its job succeeded;
    /// after a failure connect anew.
    ///
    /// ```
    /// use ringxfer_ipc::proto::PeerConnection;
    /// let first = ringxfer_ipc::TransferOptions { connection: PeerConnection::Keep, ..Default::default() };
    /// let next = ringxfer_ipc::TransferOptions { connection: PeerConnection::Continue, ..first.clone() };
    /// assert_eq!(next.connection, PeerConnection::Continue);
    /// ```
    pub connection: PeerConnection,
    /// [`Client::submit_remote`] only: this job pushes one stripe of the
    /// file (its `offset` and `length`) among several pushed at once, each
    /// through a socket of its own, for a link one TCP stream cannot fill
    /// (as bbcp's parallel streams). The other daemon publishes the file
    /// once every stripe of the set is in: when all the set's jobs
    /// succeeded, the file is there, whole. Stripes do not resume.
    ///
    /// ```
    /// use ringxfer_ipc::proto::peer::StripeId;
    /// let half = 1 << 30;
    /// let first = ringxfer_ipc::TransferOptions {
    ///     length: Some(half),
    ///     stripe: Some(StripeId { set: 42, index: 0, count: 2 }),
    ///     ..Default::default()
    /// };
    /// let second = ringxfer_ipc::TransferOptions {
    ///     offset: half,
    ///     stripe: Some(StripeId { set: 42, index: 1, count: 2 }),
    ///     ..first.clone()
    /// };
    /// assert_eq!(second.length, Some(half));
    /// ```
    pub stripe: Option<StripeId>,
}

impl Default for TransferOptions {
    /// The whole source from offset 0 to destination offset 0, strategy
    /// chosen by the daemon, no progress events.
    ///
    /// ```
    /// let opts = ringxfer_ipc::TransferOptions::default();
    /// assert_eq!((opts.offset, opts.length, opts.progress), (0, None, false));
    /// ```
    fn default() -> Self {
        TransferOptions {
            tag: String::new(),
            offset: 0,
            length: None,
            dest_offset: 0,
            strategy: Strategy::Auto,
            progress: false,
            priority: Priority::Normal,
            rate_limit: None,
            detach: false,
            fsync: false,
            verify: false,
            in_place: false,
            preserve: false,
            truncate: false,
            reflink: Reflink::Auto,
            rate_group: None,
            sparse: Sparse::Auto,
            resume: false,
            connection: PeerConnection::Close,
            stripe: None,
        }
    }
}

/// The Submit frame for request `req` with `opts`.
pub(crate) fn submit_request(req: u64, opts: &TransferOptions) -> Request {
    Request::Submit(SubmitRequest {
        req,
        tag: opts.tag.clone(),
        offset: opts.offset,
        length: opts.length,
        dest_offset: opts.dest_offset,
        strategy: opts.strategy,
        progress: opts.progress,
        priority: opts.priority,
        rate_limit: opts.rate_limit,
        detach: opts.detach,
        fsync: opts.fsync,
        verify: opts.verify,
        truncate: opts.truncate,
        publish: None,
        reflink: opts.reflink,
        rate_group: opts.rate_group,
        sparse: opts.sparse,
    })
}
