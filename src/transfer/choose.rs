//! Which strategy moves a job, and why.
//!
//! `auto` decides per job. A regular file of at most [`SMALL_FILE_MAX`]
//! bytes copied to a regular file goes `buffered`. A larger source that is
//! mostly in the page cache is copied by the kernel even when large: its
//! bytes are already in memory, and reading them with O_DIRECT would go to
//! the disk again. A cold source at or above the direct threshold goes
//! direct when both ends allow it, so a large copy does not evict everyone
//! else's hot pages. The kernel's copy is copy_file_range into a regular
//! file (as cp and xcp do; splice where the file systems refused it
//! before), sendfile into a socket, splice for everything else. nginx's
//! `directio` decides by size alone; the residency test is ours.

use ringxfer_ipc::{FailureKind, Sparse, Strategy};

use super::copy_range::refusal_reason;
use super::dio::{
    cached_fraction, cached_fraction_whole, enable_direct, may_ask_residency, restore_flags,
    SavedFlags,
};
use super::{FdKind, Plan, TransferError};

/// Above this fraction of its pages in the page cache, a source counts as hot.
pub(crate) const HOT_FRACTION: f64 = 0.5;

/// Under `auto`, regular files up to this size go `buffered`.
pub(crate) const SMALL_FILE_MAX: u64 = 64 * 1024;

/// What the choice depends on besides the job.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChoiceInputs {
    pub direct_threshold: u64,
    /// The engine has pool buffers at all.
    pub have_buffers: bool,
    /// The size of each pool buffer (`--buffer-size`).
    pub buffer_size: u64,
    /// copy_file_range refused this job's pair of file systems before,
    /// with this errno: `auto` splices without asking again
    /// (`copy_range::CopyRefusals`).
    pub copy_refused: Option<i32>,
}

/// The decision.
#[derive(Debug)]
pub(crate) struct Choice {
    pub strategy: Strategy,
    /// Why, for the Completed event (always set for `auto`).
    pub note: Option<String>,
    /// For `direct`: the O_DIRECT alignment of the two files.
    pub align: u64,
    /// Flags to put back when the job ends (O_DIRECT switched on here).
    pub saved: Vec<SavedFlags>,
    /// The destination's size now, to restore if the job fails.
    pub orig_dst_size: u64,
}

impl Choice {
    fn splice(note: Option<String>) -> Choice {
        Choice::plain(Strategy::Splice, note)
    }

    /// A strategy that needs neither alignment nor flags.
    pub(crate) fn plain(strategy: Strategy, note: Option<String>) -> Choice {
        Choice {
            strategy,
            note,
            align: 0,
            saved: Vec::new(),
            orig_dst_size: 0,
        }
    }
}

/// Decides the strategy for `plan` as `asked`. An explicit strategy that the
/// descriptors cannot take is an `InvalidRequest` naming the reason; `auto`
/// falls back to splice and says why in the note.
pub(crate) fn choose(
    plan: &Plan,
    asked: Strategy,
    inputs: ChoiceInputs,
) -> Result<Choice, TransferError> {
    let refuse = |why: String| TransferError::new(FailureKind::InvalidRequest, why);
    if plan.dst_append {
        // splice(2) refuses O_APPEND files, and direct's aligned offsets mean
        // nothing there: plain buffered writes at the file's end take it.
        return match asked {
            Strategy::Buffered => buffered(plan, inputs)
                .map_err(|why| refuse(format!("the buffered strategy cannot take this job: {why}"))),
            Strategy::Auto | Strategy::Uncached => uncached(plan, inputs)
                .map(|mut c| {
                    if asked == Strategy::Auto {
                        c.note = Some(
                            "auto: splice cannot write to a file open with O_APPEND, so buffered writes at its end (uncached)".into(),
                        );
                    }
                    c
                })
                .map_err(|why| refuse(format!("the destination is open with O_APPEND and the uncached strategy cannot take it: {why}"))),
            other => Err(refuse(format!(
                "the destination file is open with O_APPEND, which the {other} strategy cannot write: use auto, uncached or buffered, or open it without O_APPEND"
            ))),
        };
    }
    match asked {
        // Blocks of zeros become holes only where the bytes are seen.
        Strategy::Splice if plan.holes.zeros => Err(super::holes::zeros_unseen("splice")),
        Strategy::Splice => Ok(Choice::splice(None)),
        Strategy::CopyRange if plan.holes.zeros => Err(super::holes::zeros_unseen("copy-range")),
        Strategy::CopyRange if fills_holes(plan) => Err(refuse(format!(
            "sparse \"never\" writes the source's holes out as zeros, and copy_file_range may keep them (XFS and btrfs share the range's extents): {}",
            "use auto, splice or a buffer strategy, or sparse \"auto\""
        ))),
        Strategy::Direct => direct(plan, inputs)
            .map_err(|why| refuse(format!("the direct strategy cannot take this job: {why}"))),
        Strategy::Uncached => uncached(plan, inputs)
            .map_err(|why| refuse(format!("the uncached strategy cannot take this job: {why}"))),
        Strategy::Buffered => buffered(plan, inputs)
            .map_err(|why| refuse(format!("the buffered strategy cannot take this job: {why}"))),
        Strategy::CopyRange => copy_range(plan).map_err(|why| {
            refuse(format!(
                "the copy-range strategy cannot take this job: {why}"
            ))
        }),
        Strategy::Sendfile => sendfile(plan)
            .map_err(|why| refuse(format!("the sendfile strategy cannot take this job: {why}"))),
        Strategy::Auto => Ok(seeing_zeros(auto(plan, inputs), plan, inputs)),
        // The clone is reflink.rs's; admission asks here only for what
        // follows it, and a required clone has nothing after it.
        Strategy::Reflink => Ok(Choice::splice(None)),
        Strategy::Peer => Err(refuse(
            "the peer strategy only pushes to another daemon (SubmitRemote, `ringxfer copy FILE HOST:EXPORT/PATH`)".to_string(),
        )),
    }
}

fn auto(plan: &Plan, inputs: ChoiceInputs) -> Choice {
    let Some(total) = plan.total.filter(|_| plan.ends.src_kind == FdKind::File) else {
        return Choice::splice(Some(
            "auto: the source is a stream, which splice moves best".into(),
        ));
    };
    // A small file goes through a pool buffer: splice hands both of its
    // halves to an io-wq worker, one after the other, while a read the page
    // cache answers completes inline and only the write goes to a worker
    // (ext4 refuses IOCB_NOWAIT buffered writes). For 10,000 files of 4 KiB
    // that took the daemon's worker time from 0.028 to 0.020 s. Residency
    // is not asked: that would cost a syscall per file for nothing.
    if total <= SMALL_FILE_MAX {
        if let Ok(mut choice) = buffered(plan, inputs) {
            choice.note = Some(if plan.length_requested {
                format!(
                    "auto: {total} bytes is at most {SMALL_FILE_MAX}, so one read and one write through a buffer"
                )
            } else {
                // procfs says 0 and sysfs a page whatever they hold: the size
                // is a hint, and the file is read to its end.
                format!(
                    "auto: the source file says it holds {total} bytes, at most {SMALL_FILE_MAX}, so it is read to its end through a buffer"
                )
            });
            return choice;
        }
    }
    // A source whose holes are skipped moves its data only: that is what
    // weighs (a GiB with a MiB of data is a MiB to copy, not a cold GiB
    // for O_DIRECT, whose writes wait for the disk).
    let data = plan.data_bytes(total);
    let weighed = if data < total {
        format!("{data} bytes of data (the rest is holes)")
    } else {
        format!("{total} bytes")
    };
    if data < inputs.direct_threshold {
        let why = format!(
            "auto: {weighed} is below the direct threshold of {} bytes",
            inputs.direct_threshold
        );
        return in_kernel(plan, inputs, why);
    }
    // cachestat looks at the page cache only, unless it must ask the file
    // system whether the daemon may know (see `may_ask_residency`): then the
    // residency stays unknown rather than stall the loop on a server. A
    // dense source is sampled; of a sparse one, every cached page is
    // counted (a sample would miss its data or magnify it) and weighed
    // against its data.
    let ask = |src: &_, start, len| {
        if data < total {
            cached_fraction_whole(src, start, len)
        } else {
            cached_fraction(src, start, len)
        }
    };
    let cached = may_ask_residency(plan.src_owner, plan.src_writable)
        .then(|| ask(&plan.ends.src, plan.src_start, total))
        .flatten()
        .map(|f| (f * total as f64 / data.max(1) as f64).min(1.0));
    if let Some(f) = cached.filter(|&f| f >= HOT_FRACTION) {
        let why = format!(
            "auto: the source is {:.0}% in the page cache, where the kernel copies it from",
            f * 100.0
        );
        return in_kernel(plan, inputs, why);
    }
    let residency = cached.map_or("of unknown page-cache residency".to_string(), |f| {
        format!("{:.0}% in the page cache", f * 100.0)
    });
    match direct(plan, inputs) {
        Ok(mut choice) => {
            choice.note = Some(format!(
                "auto: the source is cold ({residency}) and {weighed} is at or above the direct threshold"
            ));
            choice
        }
        Err(why) => in_kernel(plan, inputs, format!("auto: direct not possible ({why})")),
    }
}

/// With `--sparse=always` (a file into a file), blocks of zeros are to
/// become holes, which only a strategy whose reads go through memory can
/// find: where `auto` chose splice or copy-range, it goes buffered instead.
fn seeing_zeros(choice: Choice, plan: &Plan, inputs: ChoiceInputs) -> Choice {
    if !plan.holes.zeros || !matches!(choice.strategy, Strategy::Splice | Strategy::CopyRange) {
        return choice;
    }
    let why = format!(
        "sparse \"always\" looks for blocks of zeros, which {} never sees",
        choice.strategy
    );
    match buffered(plan, inputs) {
        Ok(mut c) => {
            c.note = Some(format!(
                "auto: {why}: read() and write() through a buffer (buffered)"
            ));
            c
        }
        Err(no) => Choice::splice(Some(format!(
            "auto: {why}, and no buffer strategy can take the job ({no}): splice keeps the source's holes, and writes its zeros"
        ))),
    }
}

/// The kernel's own copy of a regular file, where `auto` does not read it
/// into a buffer (`why` says why not, for the note): copy_file_range into
/// a regular file, as cp and xcp do (a worker runs it, a piece at a time;
/// on NFS 4.2 or SMB the server copies), unless it refused these two file
/// systems before; splice otherwise, into a socket too.
///
/// Measured (benches/throughput.rs, hot 1 GiB, this 2-core VM, two runs
/// of 8 rounds): copy-range took 0.25-0.26 s and 0.25 s of CPU, as
/// std::io::copy (cp's copy_file_range) did, where splice through 1 MiB
/// pipes took 0.22 s and 0.22-0.31 s of CPU (median ratio 0.88); but in
/// the rounds where the VM faulted in the page cache's high-order pages for
/// splice's 1 MiB loads, splice took 0.4-2.1 s and copy-range 0.25-0.6 s
/// (ratios up to 2.1, 4.6 in earlier runs): copy-range is fast in both
/// memory states. Into a loopback TCP socket sendfile on a worker and
/// splice were level (medians of per-round ratios 0.91-1.18 over six runs,
/// CPU 0.26-0.33 s/GiB either way): sendfile does not win, so a socket
/// still splices; `--strategy sendfile` asks for it.
fn in_kernel(plan: &Plan, inputs: ChoiceInputs, why: String) -> Choice {
    if fills_holes(plan) {
        return Choice::splice(Some(format!(
            "{why}, so splice: sparse \"never\" writes holes out, which copy_file_range may not (XFS and btrfs share the range's extents)"
        )));
    }
    match (plan.ends.dst_kind, inputs.copy_refused) {
        (FdKind::File, None) => Choice::plain(
            Strategy::CopyRange,
            Some(format!(
                "{why}, so copy_file_range copies it in the kernel (copy-range)"
            )),
        ),
        (FdKind::File, Some(errno)) => Choice::splice(Some(format!(
            "{why}, so splice: copy_file_range refused these two file systems before ({})",
            refusal_reason(errno)
        ))),
        _ => Choice::splice(Some(format!("{why}, so splice"))),
    }
}

/// Whether the job is to write a file's holes out as zeros
/// (`--sparse=never`), which copy_file_range does not promise: on XFS and
/// btrfs it clones the range, holes and all.
fn fills_holes(plan: &Plan) -> bool {
    plan.sparse == Sparse::Never && plan.ends.src_kind == FdKind::File
}

/// copy_file_range copies between regular files.
fn copy_range(plan: &Plan) -> Result<Choice, String> {
    let (src, dst) = (plan.ends.src_kind, plan.ends.dst_kind);
    if src != FdKind::File || dst != FdKind::File {
        let hint = if src == FdKind::File && dst == FdKind::Socket {
            " (sendfile sends a file into a socket)"
        } else {
            ""
        };
        return Err(format!(
            "copy_file_range copies a regular file into a regular file, and this job is {src} to {dst}{hint}"
        ));
    }
    Ok(Choice::plain(Strategy::CopyRange, None))
}

/// sendfile sends a regular file into a socket.
fn sendfile(plan: &Plan) -> Result<Choice, String> {
    let (src, dst) = (plan.ends.src_kind, plan.ends.dst_kind);
    if src != FdKind::File || dst != FdKind::Socket {
        return Err(format!(
            "sendfile sends a regular file into a socket, and this job is {src} to {dst}"
        ));
    }
    Ok(Choice::plain(Strategy::Sendfile, None))
}

/// read() and write() take any source (a character device or a pipe is
/// read at its position until it ends); the destination must be a file.
fn into_a_file(plan: &Plan) -> Result<u64, String> {
    if plan.ends.dst_kind != FdKind::File {
        return Err(format!(
            "it writes into regular files, and this job's destination is a {}",
            plan.ends.dst_kind
        ));
    }
    Ok(plan.dst_size)
}

fn direct(plan: &Plan, inputs: ChoiceInputs) -> Result<Choice, String> {
    if !inputs.have_buffers {
        return Err("the daemon has no I/O buffers (--buffers 0)".into());
    }
    let (src, dst) = (plan.ends.src_kind, plan.ends.dst_kind);
    let src_file = src == FdKind::File;
    let dst_file = dst == FdKind::File;
    if !(src_file && (dst_file || dst == FdKind::Socket) || src == FdKind::Socket && dst_file) {
        return Err(format!(
            "it moves file to file, file to socket or socket to file, and this job is {src} to {dst}"
        ));
    }
    let orig_dst_size = plan.dst_size;
    if !src_file && orig_dst_size > plan.dst_start {
        // The stream's length is unknown, so whether its padded last block
        // would overwrite data that follows cannot be known either.
        return Err(format!(
            "a stream of unknown length cannot be written into the middle of an existing file ({orig_dst_size} bytes, writing from offset {})",
            plan.dst_start
        ));
    }
    // From admission's statx (STATX_DIOALIGN), run off the loop thread.
    let align_of = |which: &str| -> Result<u64, String> {
        let i = usize::from(which == "destination");
        plan.dio_align[i]
            .map(u64::from)
            .ok_or_else(|| format!("the {which}'s file system does not support O_DIRECT"))
    };
    let mut align = 1;
    let mut files = Vec::with_capacity(2);
    if src_file {
        align = align.max(align_of("source")?);
        files.push(("source", &plan.ends.src, plan.src_start));
    }
    if dst_file {
        align = align.max(align_of("destination")?);
        files.push(("destination", &plan.ends.dst, plan.dst_start));
    }
    fits_buffers(align, inputs.buffer_size)?;
    for (which, _, off) in &files {
        if off % align != 0 {
            return Err(format!(
                "the {which} offset {off} is not aligned to the file system's O_DIRECT alignment of {align} bytes"
            ));
        }
    }
    let mut saved = Vec::with_capacity(2);
    for (which, fd, _) in files {
        match enable_direct(fd) {
            Ok(Some(s)) => saved.push(s),
            Ok(None) => {}
            Err(e) => {
                for s in saved {
                    restore_flags(s);
                }
                return Err(format!("the {which}'s file system refuses O_DIRECT ({e})"));
            }
        }
    }
    Ok(Choice {
        strategy: Strategy::Direct,
        note: None,
        align,
        saved,
        orig_dst_size,
    })
}

/// Every O_DIRECT read and write is a whole number of alignment blocks in
/// one pool buffer, and the last one is zero-padded to a block: a block must
/// fit the buffer and divide it, or the kernel (and the padding) would write
/// past it into memory another job owns.
pub(crate) fn fits_buffers(align: u64, buffer_size: u64) -> Result<(), String> {
    if align > buffer_size || !buffer_size.is_multiple_of(align) {
        return Err(format!(
            "the file system's O_DIRECT alignment of {align} bytes does not divide the daemon's buffer size of {buffer_size} bytes (ringxferd --buffer-size): use a multiple of {align}"
        ));
    }
    Ok(())
}

fn buffered(plan: &Plan, inputs: ChoiceInputs) -> Result<Choice, String> {
    uncached(plan, inputs).map(|c| Choice {
        strategy: Strategy::Buffered,
        ..c
    })
}

fn uncached(plan: &Plan, inputs: ChoiceInputs) -> Result<Choice, String> {
    if !inputs.have_buffers {
        return Err("the daemon has no I/O buffers (--buffers 0)".into());
    }
    let orig_dst_size = into_a_file(plan)?;
    Ok(Choice {
        strategy: Strategy::Uncached,
        note: None,
        align: 1,
        saved: Vec::new(),
        orig_dst_size,
    })
}

#[cfg(test)]
mod tests {
    use super::fits_buffers;

    #[test]
    fn a_direct_block_must_fit_and_divide_a_buffer() {
        assert!(fits_buffers(4096, 1 << 20).is_ok());
        assert!(fits_buffers(512, 4096).is_ok());
        assert!(fits_buffers(4096, 4096).is_ok());
        let small = fits_buffers(8192, 4096).expect_err("larger than a buffer");
        assert!(small.contains("--buffer-size"), "{small}");
        assert!(fits_buffers(8192, 12288).is_err(), "not a divisor");
    }
}
