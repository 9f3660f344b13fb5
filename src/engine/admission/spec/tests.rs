//! Admission's steps on real descriptors (files, pipes, sockets, a
//! directory), statx'ed with the real syscall as the ring would: every
//! refusal, and what an admitted job's spec holds. No ring, no engine.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use ringxfer_ipc::{FailureKind, PublishTo, Strategy, SubmitRequest};

use super::{precheck, spec, Context, JobSpec, Limits, Load, Refused, Submitter};
use crate::engine::admission::Submitted;
use crate::transfer::choose::ChoiceInputs;
use crate::transfer::{FdKind, FdStat, TransferError};

/// What statx says about `fd`, asked as admission asks it.
fn statx(fd: &OwnedFd) -> Result<FdStat, i32> {
    // SAFETY: an all-zero statx is a valid value.
    let mut buf: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the path is a NUL-terminated empty string, `buf` is writable
    // and outlives the call.
    let rc = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_SYNC_AS_STAT,
            FdStat::MASK,
            &mut buf,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    Ok(FdStat::from_statx(&buf))
}

fn request() -> SubmitRequest {
    SubmitRequest {
        req: 7,
        tag: "t".into(),
        offset: 0,
        length: None,
        dest_offset: 0,
        strategy: Strategy::Auto,
        progress: false,
        priority: Default::default(),
        rate_limit: None,
        detach: false,
        fsync: false,
        verify: false,
        truncate: false,
        publish: None,
        reflink: Default::default(),
        rate_group: None,
        sparse: Default::default(),
    }
}

fn limits() -> Limits {
    Limits {
        jobs_per_connection: 4,
        jobs: 16,
        jobs_per_user: 4,
        bytes_per_connection: 0,
        bytes_per_user: 0,
    }
}

fn context() -> Context {
    Context {
        submitter: Submitter {
            session: 3,
            uid: 1000,
            personality: 0,
            fsize_limit: None,
        },
        load: Load::default(),
        limits: limits(),
        choice: ChoiceInputs {
            direct_threshold: 32 << 20,
            have_buffers: true,
            buffer_size: 1 << 20,
            copy_refused: None,
        },
        acknowledge: true,
        clone_refused: false,
    }
}

fn file_with(dir: &Path, name: &str, bytes: usize) -> OwnedFd {
    let path = dir.join(name);
    File::create(&path)
        .and_then(|mut f| f.write_all(&vec![b'x'; bytes]))
        .expect("write a source file");
    File::open(&path).expect("open the source").into()
}

fn open(path: &Path, options: &mut OpenOptions) -> OwnedFd {
    options.open(path).expect("open a test file").into()
}

fn destination(dir: &Path) -> OwnedFd {
    open(
        &dir.join("dst"),
        OpenOptions::new().read(true).write(true).create(true),
    )
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: pipe2 just made both descriptors, owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Runs step 2 on `src` and `dst` (and `dir`), statx'ed here.
fn decide(
    submit: SubmitRequest,
    src: OwnedFd,
    dst: OwnedFd,
    dir: Option<OwnedFd>,
    cx: &Context,
) -> Result<JobSpec, Refused> {
    let stats = [statx(&src), statx(&dst)];
    let dir_stat = dir.as_ref().map(statx);
    spec(
        42,
        submit,
        Submitted {
            src,
            dst,
            dir,
            remote: None,
        },
        stats,
        dir_stat,
        cx,
    )
}

/// The refusal of a submit that must be refused, its descriptors all back.
fn refused(result: Result<JobSpec, Refused>, descriptors: usize) -> TransferError {
    match result {
        Ok(_) => panic!("admitted a job that must be refused"),
        Err(r) => {
            assert_eq!(r.fds.into_fds().count(), descriptors, "descriptors back");
            r.error
        }
    }
}

fn admitted(result: Result<JobSpec, Refused>) -> JobSpec {
    match result {
        Ok(spec) => spec,
        Err(r) => panic!("refused: {}", r.error),
    }
}

#[test]
fn precheck_refuses_a_draining_daemon_first() {
    let mut submit = request();
    submit.tag = "x".repeat(ringxfer_ipc::MAX_TAG_BYTES + 1);
    let draining = TransferError::new(FailureKind::ShuttingDown, "draining");
    let e =
        precheck(&submit, 1000, Some(draining), &Load::default(), &limits()).expect_err("draining");
    assert_eq!(e.kind, FailureKind::ShuttingDown);
    let e = precheck(&submit, 1000, None, &Load::default(), &limits()).expect_err("tag");
    assert_eq!(e.kind, FailureKind::InvalidRequest);
    assert!(e.message.contains("tag is"), "{e}");
}

#[test]
fn precheck_counts_jobs_of_the_connection_the_daemon_and_the_user() {
    let submit = request();
    let ok = Load {
        connection_jobs: 3,
        jobs: 15,
        user_jobs: 3,
        ..Load::default()
    };
    assert!(precheck(&submit, 1000, None, &ok, &limits()).is_ok());
    let cases = [
        (
            Load {
                connection_jobs: 4,
                ..ok
            },
            "--max-jobs-per-connection",
        ),
        (Load { jobs: 16, ..ok }, "--max-jobs)"),
        (Load { user_jobs: 4, ..ok }, "user 1000 already has 4"),
    ];
    for (load, says) in cases {
        let e = precheck(&submit, 1000, None, &load, &limits()).expect_err(says);
        assert_eq!(e.kind, FailureKind::LimitExceeded);
        assert!(e.message.contains(says), "{e}");
    }
}

#[test]
fn a_small_file_into_a_file_is_admitted_with_everything_it_needs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut submit = request();
    submit.truncate = true;
    submit.verify = true;
    submit.rate_limit = Some(1 << 20);
    let group = ringxfer_ipc::RateGroup { id: 9, rate: 5 };
    submit.rate_group = Some(group);
    let mut cx = context();
    cx.acknowledge = false;
    let src = file_with(dir.path(), "src", 1000);
    let spec = admitted(decide(submit, src, destination(dir.path()), None, &cx));
    assert_eq!((spec.id, spec.req, spec.tag.as_str()), (42, 7, "t"));
    assert_eq!(
        (spec.ends.src_kind, spec.ends.dst_kind),
        (FdKind::File, FdKind::File)
    );
    assert_eq!(spec.shape.total, Some(1000));
    assert!(!spec.shape.length_requested);
    assert_eq!(spec.bytes, 1000);
    assert_eq!(spec.choice.strategy, Strategy::Buffered);
    assert!(spec
        .choice
        .note
        .as_deref()
        .is_some_and(|n| n.starts_with("auto:")));
    assert!(spec.auto && spec.truncate && spec.verify && spec.quiet);
    assert_eq!(spec.rate_limit, Some(1 << 20));
    assert_eq!(spec.rate_group, Some(group));
    assert_eq!(spec.submitter.session, 3);
    assert!(spec.publish.is_none());
}

#[test]
fn a_stream_source_splices_and_moves_an_unknown_length() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (r, _w) = pipe();
    let spec = admitted(decide(
        request(),
        r,
        destination(dir.path()),
        None,
        &context(),
    ));
    assert_eq!(spec.ends.src_kind, FdKind::Pipe);
    assert_eq!((spec.shape.total, spec.bytes), (None, 0));
    assert_eq!(spec.choice.strategy, Strategy::Splice);
    let (a, _b) = UnixStream::pair().expect("socketpair");
    let spec = admitted(decide(
        request(),
        a.into(),
        destination(dir.path()),
        None,
        &context(),
    ));
    assert_eq!(spec.ends.src_kind, FdKind::Socket);
}

#[test]
fn descriptor_kinds_and_access_modes_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let directory = open(dir.path(), OpenOptions::new().read(true));
    let e = refused(
        decide(
            request(),
            directory,
            destination(dir.path()),
            None,
            &context(),
        ),
        2,
    );
    assert_eq!(e.kind, FailureKind::InvalidRequest);
    assert!(
        e.message.contains("source descriptor is a directory"),
        "{e}"
    );

    let src = file_with(dir.path(), "src", 10);
    let write_only = open(&dir.path().join("src"), OpenOptions::new().write(true));
    let e = refused(
        decide(
            request(),
            write_only,
            destination(dir.path()),
            None,
            &context(),
        ),
        2,
    );
    assert_eq!(
        (e.kind, e.os_error),
        (FailureKind::BadDescriptor, Some(libc::EBADF))
    );
    assert!(e.message.contains("source file is open write-only"), "{e}");

    let read_only = open(&dir.path().join("src"), OpenOptions::new().read(true));
    let e = refused(decide(request(), src, read_only, None, &context()), 2);
    assert_eq!(e.kind, FailureKind::BadDescriptor);
    assert!(
        e.message.contains("destination file is open read-only"),
        "{e}"
    );
}

#[test]
fn a_failed_statx_is_refused_naming_the_descriptor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fds = Submitted {
        src: file_with(dir.path(), "src", 10),
        dst: destination(dir.path()),
        dir: None,
        remote: None,
    };
    let stats = [Err(libc::EIO), Ok(statx(&fds.dst).expect("statx"))];
    let e = refused(spec(1, request(), fds, stats, None, &context()), 2);
    assert_eq!(e.os_error, Some(libc::EIO));
    assert!(
        e.message.starts_with("statx of the source descriptor"),
        "{e}"
    );
}

#[test]
fn offsets_are_checked_against_the_source_and_the_largest_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut submit = request();
    submit.offset = 11;
    let src = file_with(dir.path(), "src", 10);
    let e = refused(
        decide(submit, src, destination(dir.path()), None, &context()),
        2,
    );
    assert!(
        e.message
            .contains("offset 11 is beyond the end of the source file (10 bytes)"),
        "{e}"
    );

    let mut submit = request();
    submit.offset = 1;
    let (r, _w) = pipe();
    let e = refused(
        decide(submit, r, destination(dir.path()), None, &context()),
        2,
    );
    assert!(
        e.message
            .contains("the source is a pipe, which has no offsets"),
        "{e}"
    );

    let mut submit = request();
    submit.length = Some(u64::MAX / 2 + 1);
    let src = file_with(dir.path(), "src", 10);
    let e = refused(
        decide(submit, src, destination(dir.path()), None, &context()),
        2,
    );
    assert!(e.message.contains("largest file offset"), "{e}");

    let mut submit = request();
    submit.dest_offset = 5;
    let append = open(
        &dir.path().join("dst"),
        OpenOptions::new().read(true).append(true).create(true),
    );
    let src = file_with(dir.path(), "src", 10);
    let e = refused(decide(submit, src, append, None, &context()), 2);
    assert!(e.message.contains("O_APPEND"), "{e}");
}

#[test]
fn queued_bytes_are_limited_per_connection_then_per_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cx = context();
    cx.limits.bytes_per_connection = 1000;
    cx.limits.bytes_per_user = 1000;
    cx.load.connection_bytes = 500;
    cx.load.user_bytes = 500;
    let src = file_with(dir.path(), "src", 500);
    admitted(decide(request(), src, destination(dir.path()), None, &cx));
    let src = file_with(dir.path(), "src", 501);
    let e = refused(
        decide(request(), src, destination(dir.path()), None, &cx),
        2,
    );
    assert_eq!(e.kind, FailureKind::LimitExceeded);
    assert!(
        e.message.contains("--max-queued-bytes-per-connection"),
        "{e}"
    );
    cx.limits.bytes_per_connection = 0;
    let src = file_with(dir.path(), "src", 501);
    let e = refused(
        decide(request(), src, destination(dir.path()), None, &cx),
        2,
    );
    assert!(
        e.message
            .contains("user 1000's jobs already have 500 bytes"),
        "{e}"
    );
}

#[test]
fn the_clients_file_size_limit_binds_files_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cx = context();
    cx.submitter.fsize_limit = Some(100);
    let src = file_with(dir.path(), "src", 101);
    let e = refused(
        decide(request(), src, destination(dir.path()), None, &cx),
        2,
    );
    assert_eq!(e.os_error, Some(libc::EFBIG));
    assert!(e.message.contains("RLIMIT_FSIZE is 100 bytes"), "{e}");
    let (_r, w) = pipe();
    let src = file_with(dir.path(), "src", 101);
    let spec = admitted(decide(request(), src, w, None, &cx));
    assert_eq!(spec.fsize_limit, None, "a pipe has no file size limit");
    let src = file_with(dir.path(), "src", 100);
    let spec = admitted(decide(request(), src, destination(dir.path()), None, &cx));
    assert_eq!(spec.fsize_limit, Some(100));
}

#[test]
fn verification_needs_two_files_the_destination_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut submit = request();
    submit.verify = true;
    let (_r, w) = pipe();
    let src = file_with(dir.path(), "src", 10);
    let e = refused(decide(submit.clone(), src, w, None, &context()), 2);
    assert!(
        e.message.contains("cannot verify a transfer into a pipe"),
        "{e}"
    );
    let write_only = open(
        &dir.path().join("dst"),
        OpenOptions::new().write(true).create(true),
    );
    let src = file_with(dir.path(), "src", 10);
    let e = refused(decide(submit, src, write_only, None, &context()), 2);
    assert!(e.message.contains("opened write-only"), "{e}");
}

#[test]
fn a_publish_needs_a_file_and_a_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut submit = request();
    submit.publish = Some(PublishTo {
        name: b"out".to_vec(),
        staged_name: None,
    });
    let here = || {
        open(
            dir.path(),
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY),
        )
    };
    let (a, _b) = UnixStream::pair().expect("socketpair");
    let src = file_with(dir.path(), "src", 10);
    let e = refused(
        decide(submit.clone(), src, a.into(), Some(here()), &context()),
        3,
    );
    assert!(
        e.message.contains("only a regular file can be published"),
        "{e}"
    );
    let src = file_with(dir.path(), "src", 10);
    let not_dir = file_with(dir.path(), "other", 1);
    let dst = destination(dir.path());
    let e = refused(
        decide(submit.clone(), src, dst, Some(not_dir), &context()),
        3,
    );
    assert!(e.message.contains("not a directory"), "{e}");
    let src = file_with(dir.path(), "src", 10);
    let spec = admitted(decide(
        submit,
        src,
        destination(dir.path()),
        Some(here()),
        &context(),
    ));
    let publish = spec.publish.expect("a publish plan");
    assert_eq!(publish.name.as_bytes(), b"out");
}

#[test]
fn an_explicit_strategy_the_ends_cannot_take_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_r, w) = pipe();
    let mut submit = request();
    submit.strategy = Strategy::Direct;
    let src = file_with(dir.path(), "src", 10);
    let e = refused(decide(submit.clone(), src, w, None, &context()), 2);
    assert_eq!(e.kind, FailureKind::InvalidRequest);
    assert!(
        e.message
            .contains("the direct strategy cannot take this job"),
        "{e}"
    );
    submit.strategy = Strategy::Uncached;
    let mut cx = context();
    cx.choice.have_buffers = false;
    let src = file_with(dir.path(), "src", 10);
    let e = refused(decide(submit, src, destination(dir.path()), None, &cx), 2);
    assert!(e.message.contains("--buffers 0"), "{e}");
}

#[test]
fn a_job_is_built_from_its_spec_as_admitted() {
    use crate::engine::jobs::{Job, MoverPools, Phase, Shared};
    use crate::engine::rate::TokenBucket;
    use std::time::Instant;

    let dir = tempfile::tempdir().expect("tempdir");
    let mut submit = request();
    submit.offset = 100;
    submit.dest_offset = 4096;
    submit.length = Some(200);
    submit.strategy = Strategy::Buffered;
    submit.rate_limit = Some(1 << 20);
    submit.truncate = true;
    submit.detach = true;
    let src = file_with(dir.path(), "src", 1000);
    let spec = admitted(decide(
        submit,
        src,
        destination(dir.path()),
        None,
        &context(),
    ));
    let pools = MoverPools {
        fixed_buffers: false,
        buffers_per_job: 2,
        chunks_per_job: 2,
    };
    let now = Instant::now();
    let global = TokenBucket::new(4 << 20, now);
    let shared = Shared {
        piece: Some(global.piece()),
        group: None,
    };
    let job = Job::from_spec(spec, pools, shared, now, (None, None, None));
    assert_eq!(
        (job.id, job.req, job.uid, job.session),
        (42, 7, 1000, Some(3))
    );
    assert_eq!(job.copy.strategy(), Strategy::Buffered);
    assert_eq!(job.copy.total(), Some(200));
    assert_eq!(job.range, (100, 4096));
    assert!(job.truncate && job.detach && !job.quiet && !job.auto);
    assert_eq!(job.bucket.as_ref().map(TokenBucket::rate), Some(1 << 20));
    assert_eq!(job.phase, Phase::Copy);
    assert!(job.note.is_none(), "an explicit strategy needs no note");
}

/// `auto` tries a clone once per file system that refuses them: after a
/// refusal (`clone_refused`), the next file-to-file job goes straight to
/// its strategy; one that requires the clone still asks the kernel.
#[test]
fn auto_does_not_ask_a_file_system_that_refused_a_clone_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = admitted(decide(
        request(),
        file_with(dir.path(), "a", 1000),
        destination(dir.path()),
        None,
        &context(),
    ));
    assert_eq!(first.reflink, Some(false), "auto tries a clone first");
    let devices = first.devices.expect("both ends' devices");
    let mut refusals = crate::transfer::reflink::CloneRefusals::default();
    refusals.learn(libc::EINVAL, devices.0, devices.1);
    assert!(
        !refusals.known(devices.0, devices.1),
        "EINVAL may be the file's"
    );
    refusals.learn(libc::EOPNOTSUPP, devices.0, devices.1);
    assert!(refusals.known(devices.0, devices.1));

    let mut cx = context();
    cx.clone_refused = true;
    let src = file_with(dir.path(), "b", 1000);
    let dst = open(
        &dir.path().join("b2"),
        OpenOptions::new().create(true).read(true).write(true),
    );
    let next = admitted(decide(request(), src, dst, None, &cx));
    assert_eq!(next.reflink, None, "asked again");
    let mut required = request();
    required.reflink = ringxfer_ipc::Reflink::Always;
    let src = file_with(dir.path(), "c", 1000);
    let dst = open(
        &dir.path().join("c2"),
        OpenOptions::new().create(true).read(true).write(true),
    );
    assert_eq!(
        admitted(decide(required, src, dst, None, &cx)).reflink,
        Some(true)
    );
}

/// What admission makes of `sparse`: a sparse file into a file is mapped
/// and a dense one is not (cp's test of its blocks against its size);
/// `always` sends `auto` to a strategy that sees the bytes and refuses
/// splice; a required clone goes with `auto` only, as cp.
#[test]
fn sparse_maps_only_files_with_holes_and_always_needs_a_strategy_that_sees_the_bytes() {
    use ringxfer_ipc::{Reflink, Sparse};
    let dir = tempfile::tempdir().expect("tempdir");
    let holey = || {
        let path = dir.path().join("holey");
        let f = File::create(&path).expect("create");
        f.set_len(8 << 20).expect("set_len");
        OwnedFd::from(File::open(&path).expect("open"))
    };
    let dst = |name: &str| {
        open(
            &dir.path().join(name),
            OpenOptions::new().create(true).read(true).write(true),
        )
    };
    let spec = admitted(decide(request(), holey(), dst("a"), None, &context()));
    assert!(spec.shape.holes.map && !spec.shape.holes.zeros);
    let dense = file_with(dir.path(), "dense", 64 << 10);
    let spec = admitted(decide(request(), dense, dst("b"), None, &context()));
    assert!(!spec.shape.holes.any(), "a dense file is not mapped");

    let mut never = request();
    never.sparse = Sparse::Never;
    let spec = admitted(decide(never.clone(), holey(), dst("c"), None, &context()));
    assert!(!spec.shape.holes.any());

    let mut always = request();
    always.sparse = Sparse::Always;
    always.reflink = Reflink::Never;
    let spec = admitted(decide(always.clone(), holey(), dst("d"), None, &context()));
    assert!(spec.shape.holes.map && spec.shape.holes.zeros);
    assert_eq!(spec.choice.strategy, Strategy::Buffered, "not copy-range");
    assert!(
        spec.choice
            .note
            .as_deref()
            .is_some_and(|n| n.contains("copy-range never sees")),
        "{:?}",
        spec.choice.note
    );
    always.strategy = Strategy::Splice;
    let e = refused(decide(always, holey(), dst("e"), None, &context()), 2);
    assert_eq!(e.kind, FailureKind::InvalidRequest);
    assert!(e.message.contains("sparse \"always\""), "{e}");

    never.reflink = Reflink::Always;
    let e = refused(decide(never, holey(), dst("f"), None, &context()), 2);
    assert!(e.message.contains("only with sparse \"auto\""), "{e}");
}

/// `auto` weighs a sparse source by its data, not its size: 64 MiB of
/// holes with 4 KiB of data is below the direct threshold (32 MiB here),
/// where by its size it would have gone direct, waiting on the disk.
#[test]
fn auto_weighs_a_sparse_source_by_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("holey");
    let f = File::create(&path).expect("create");
    std::os::unix::fs::FileExt::write_all_at(&f, &[1u8; 4096], 32 << 20).expect("write");
    f.set_len(64 << 20).expect("set_len");
    f.sync_all().expect("sync");
    let mut submit = request();
    submit.reflink = ringxfer_ipc::Reflink::Never;
    let src = OwnedFd::from(File::open(&path).expect("open"));
    let spec = admitted(decide(
        submit,
        src,
        destination(dir.path()),
        None,
        &context(),
    ));
    assert_eq!(spec.choice.strategy, Strategy::CopyRange);
    let note = spec.choice.note.unwrap_or_default();
    assert!(note.contains("bytes of data (the rest is holes)"), "{note}");
}
