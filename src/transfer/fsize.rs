//! The client's RLIMIT_FSIZE, applied to a job: refused at admission when
//! its known end lies past the limit, cut back when a stream runs past it
//! (`crate::privileges` reads the limit from the client's process).

use ringxfer_ipc::FailureKind;

use super::TransferError;

/// The EFBIG failure of a job that would write past its client's limit.
pub(crate) fn too_large(limit: u64, what: &str) -> TransferError {
    TransferError {
        kind: FailureKind::Io,
        os_error: Some(libc::EFBIG),
        message: format!(
            "File too large: the client's RLIMIT_FSIZE is {limit} bytes; {what} (EFBIG, as the \
             client's own write would get)"
        ),
    }
}

/// At admission: a job into a regular file whose end is known (a requested
/// length, or a regular source's size) and lies past the client's limit is
/// refused, as its own write would fail there.
pub(crate) fn fsize_refusal(
    limit: Option<u64>,
    dst_start: u64,
    total: Option<u64>,
) -> Option<TransferError> {
    let limit = limit?;
    let end = dst_start.saturating_add(total?);
    (end > limit).then(|| {
        too_large(
            limit,
            &format!("the job would write up to byte {end} of the destination"),
        )
    })
}

/// While a job runs: whether a destination written from `dst_start` with
/// `moved` bytes has passed the limit (a stream of unknown length).
pub(crate) fn fsize_exceeded(
    limit: Option<u64>,
    dst_start: u64,
    moved: u64,
) -> Option<TransferError> {
    let limit = limit?;
    (dst_start.saturating_add(moved) > limit).then(|| {
        too_large(
            limit,
            "the stream went on past it; the destination is cut back",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_ends_past_the_limit_are_refused() {
        assert!(fsize_refusal(Some(100), 0, Some(100)).is_none());
        assert!(fsize_refusal(Some(100), 1, Some(100)).is_some());
        assert!(fsize_refusal(None, 0, Some(u64::MAX)).is_none());
        assert!(fsize_refusal(Some(100), 0, None).is_none());
        assert!(fsize_exceeded(Some(100), 50, 51).is_some());
        assert!(fsize_exceeded(Some(100), 50, 50).is_none());
    }
}
