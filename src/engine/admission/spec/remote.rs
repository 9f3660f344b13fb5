//! The checks of a push to another daemon (`Request::SubmitRemote`): a
//! regular file read from an offset, into a socket connected to the other
//! daemon, checked end to end by CRC-32C. What does not apply to a push is
//! refused by name rather than ignored.

use ringxfer_ipc::proto::peer::{FileMeta, StripeId, Timestamp, MAX_STRIPES};
use ringxfer_ipc::{FailureKind, Reflink, Strategy, SubmitRequest};

use super::{byte_limits, Context, Decided};
use crate::engine::admission::PushTarget;
use crate::transfer::choose::Choice;
use crate::transfer::{FdKind, Plan, TransferError};

/// Permission bits, access and modification times, and size of the
/// source.
pub(super) type SourceMeta = (u32, (i64, u32), (i64, u32), u64);

/// What a push settles, or why it cannot run.
pub(super) fn decide(
    plan: &Plan,
    submit: &SubmitRequest,
    cx: &Context,
    (perm, atime, mtime, src_size): SourceMeta,
    target: &PushTarget,
) -> Result<Decided, TransferError> {
    let refuse = |why: String| Err(TransferError::new(FailureKind::InvalidRequest, why));
    if target.pull {
        return decide_pull(plan, submit);
    }
    let directory = plan.ends.src_kind == FdKind::Directory;
    if plan.ends.src_kind != FdKind::File && !directory {
        return refuse(format!(
            "a push to another daemon sends a regular file or a directory; the source is a {}",
            plan.ends.src_kind
        ));
    }
    let whole = submit.offset == 0 && submit.length.is_none();
    if directory && (target.stripe.is_some() || target.resume || !whole) {
        return refuse(
            "a directory goes whole, as its mode and times: stripes, resume, offset and length do not apply"
                .into(),
        );
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
    let size = match target.stripe {
        Some(stripe) => {
            check_stripe(stripe, plan, target.resume || submit.detach, src_size)?;
            src_size
        }
        None => bytes,
    };
    byte_limits(bytes, cx.submitter.uid, &cx.load, &cx.limits)?;
    let at = |(secs, nanos): (i64, u32)| Timestamp { secs, nanos };
    Ok(Decided {
        fsize_limit: None,
        publish: None,
        bytes,
        choice: Choice::plain(Strategy::Peer, None),
        reflink: None,
        push: Some(FileMeta {
            size,
            mode: perm,
            atime: at(atime),
            mtime: at(mtime),
        }),
    })
}

/// A stripe is one of at most 16, names its range of the source (offset
/// and length, within the file as it is now), and neither resumes nor is
/// detached (which dials again and resumes: `retry`).
fn check_stripe(
    stripe: StripeId,
    plan: &Plan,
    retry: bool,
    src_size: u64,
) -> Result<(), TransferError> {
    let refuse = |why: String| Err(TransferError::new(FailureKind::InvalidRequest, why));
    let StripeId { index, count, .. } = stripe;
    if !stripe.is_valid() {
        return refuse(format!(
            "stripe {index} of {count}: a file goes as 1 to {MAX_STRIPES} stripes, numbered from 0"
        ));
    }
    if retry {
        return refuse(
            "a stripe neither resumes nor is detached: push the file again, or as one stream"
                .into(),
        );
    }
    let end = plan.total.map(|len| plan.src_start.saturating_add(len));
    match end {
        // The last stripe ends at the file's end: a file that grew since
        // it was cut would otherwise be published short of its tail.
        Some(end) if index + 1 == count && end != src_size => refuse(format!(
            "the source is {src_size} bytes now and its last stripe ends at {end}: it \
             changed size since it was cut into stripes"
        )),
        Some(end) if plan.length_requested && end <= src_size => Ok(()),
        _ => refuse(format!(
            "stripe {index} of {count} must name its range (offset and length) within the \
             source's {src_size} bytes"
        )),
    }
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
