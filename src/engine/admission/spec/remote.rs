//! The checks of a push to another daemon (`Request::SubmitRemote`): a
//! regular file read from an offset, into a socket connected to the other
//! daemon, checked end to end by CRC-32C. What does not apply to a push is
//! refused by name rather than ignored.

use ringxfer_ipc::proto::peer::{FileMeta, Timestamp};
use ringxfer_ipc::{FailureKind, Reflink, Strategy, SubmitRequest};

use super::{byte_limits, Context, Decided};
use crate::transfer::choose::Choice;
use crate::transfer::{FdKind, Plan, TransferError};

/// Permission bits, access and modification times of the source.
pub(super) type SourceMeta = (u32, (i64, u32), (i64, u32));

/// What a push settles, or why it cannot run.
pub(super) fn decide(
    plan: &Plan,
    submit: &SubmitRequest,
    cx: &Context,
    (perm, atime, mtime): SourceMeta,
    pull: bool,
) -> Result<Decided, TransferError> {
    let refuse = |why: String| Err(TransferError::new(FailureKind::InvalidRequest, why));
    if pull {
        return decide_pull(plan, submit);
    }
    if plan.ends.src_kind != FdKind::File {
        return refuse(format!(
            "a push to another daemon sends a regular file; the source is a {}",
            plan.ends.src_kind
        ));
    }
    if plan.ends.dst_kind != FdKind::Socket {
        return refuse(format!(
            "a push to another daemon goes through a socket connected to it; the destination is a {}",
            plan.ends.dst_kind
        ));
    }
    if !matches!(submit.strategy, Strategy::Auto | Strategy::Peer) {
        return refuse(format!(
            "the {} strategy cannot push to another daemon: use auto",
            submit.strategy
        ));
    }
    if submit.dest_offset != 0 || submit.truncate || submit.publish.is_some() {
        return refuse(
            "a push to another daemon writes a whole new file there: dest_offset, truncate and publish do not apply"
                .into(),
        );
    }
    if submit.reflink == Reflink::Always {
        return refuse("a push to another daemon cannot clone the file".into());
    }
    let bytes = plan.total.unwrap_or(0);
    byte_limits(bytes, cx.submitter.uid, &cx.load, &cx.limits)?;
    let at = |(secs, nanos): (i64, u32)| Timestamp { secs, nanos };
    Ok(Decided {
        fsize_limit: None,
        publish: None,
        bytes,
        choice: Choice::plain(Strategy::Peer, None),
        reflink: None,
        push: Some(FileMeta {
            size: bytes,
            mode: perm,
            atime: at(atime),
            mtime: at(mtime),
        }),
    })
}

/// What a pull settles: from a socket connected to the other daemon into a
/// regular file, written whole from its start.
fn decide_pull(plan: &Plan, submit: &SubmitRequest) -> Result<Decided, TransferError> {
    let refuse = |why: String| Err(TransferError::new(FailureKind::InvalidRequest, why));
    if plan.ends.src_kind != FdKind::Socket {
        return refuse(format!(
            "a pull from another daemon reads a socket connected to it; the source is a {}",
            plan.ends.src_kind
        ));
    }
    if plan.ends.dst_kind != FdKind::File {
        return refuse(format!(
            "a pull from another daemon writes a regular file; the destination is a {}",
            plan.ends.dst_kind
        ));
    }
    if !matches!(submit.strategy, Strategy::Auto | Strategy::Peer)
        || submit.offset != 0
        || submit.length.is_some()
        || submit.dest_offset != 0
        || submit.publish.is_some()
        || submit.reflink == Reflink::Always
    {
        return refuse(
            "a pull from another daemon takes the whole file into a file of its own: strategy, offsets, length, publish and clones do not apply"
                .into(),
        );
    }
    let nothing = Timestamp::default();
    Ok(Decided {
        fsize_limit: None,
        publish: None,
        bytes: 0,
        choice: Choice::plain(Strategy::Peer, None),
        reflink: None,
        push: Some(FileMeta {
            size: 0,
            mode: 0,
            atime: nothing,
            mtime: nothing,
        }),
    })
}
