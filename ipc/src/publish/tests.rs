use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{fchown, symlink, FileTypeExt, PermissionsExt};

use super::names::NAME_MAX;
use super::open::cstring;
use super::*;

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

fn umask() -> u32 {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .expect("Umask line");
    u32::from_str_radix(line.trim(), 8).expect("octal umask")
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn stage(dst: &Path, opts: &PublishOptions, named: bool) -> StagedFile {
    StagedFile::create_as(dst, None, opts, named, std::process::id()).expect("stage")
}

#[test]
fn unnamed_file_publishes_to_a_new_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dst = dir.path().join("new");
    let opts = PublishOptions {
        mode: Some(0o640),
        ..Default::default()
    };
    let staged = stage(&dst, &opts, false);
    assert!(matches!(staged.identity, Identity::Unnamed), "{staged:?}");
    staged.file().write_all(b"fresh bytes").expect("write");
    assert!(names(dir.path()).is_empty(), "nothing named before publish");
    staged.publish(None).expect("publish");
    assert_eq!(fs::read(&dst).expect("read"), b"fresh bytes");
    assert_eq!(mode_of(&dst), 0o640 & !umask());
    assert_eq!(names(dir.path()), ["new"]);
}

/// Replacing: the old content stays visible until publish, then the new
/// file (another inode) takes the name and the old permission bits.
fn replaces_an_existing_file(named: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dst = dir.path().join("existing");
    fs::write(&dst, b"the old content, longer than the new").expect("write old");
    chmod(&dst, 0o604);
    let old_ino = fs::metadata(&dst).expect("stat").ino();

    let staged = stage(&dst, &PublishOptions::default(), named);
    assert_eq!(
        matches!(staged.identity, Identity::Named(_)),
        named,
        "{staged:?}"
    );
    staged.file().write_all(b"new content").expect("write");
    assert_eq!(
        fs::read(&dst).expect("read"),
        b"the old content, longer than the new"
    );
    staged.publish(None).expect("publish");

    assert_eq!(fs::read(&dst).expect("read"), b"new content");
    assert_ne!(fs::metadata(&dst).expect("stat").ino(), old_ino);
    assert_eq!(mode_of(&dst), 0o604, "the replaced file's mode is kept");
    assert_eq!(names(dir.path()), ["existing"], "no temporary name left");
}

#[test]
fn unnamed_file_replaces_an_existing_file() {
    replaces_an_existing_file(false);
}

#[test]
fn named_temp_replaces_an_existing_file() {
    replaces_an_existing_file(true);
}

#[test]
fn named_temp_is_hidden_next_to_the_destination_until_published() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dst = dir.path().join("out.bin");
    let staged = stage(&dst, &PublishOptions::default(), true);
    let listed = names(dir.path());
    assert_eq!(listed.len(), 1, "{listed:?}");
    let prefix = format!(".out.bin.ringxfer-{}-", std::process::id());
    assert!(listed[0].starts_with(&prefix), "{listed:?}");
    staged.file().write_all(b"named").expect("write");
    staged.publish(None).expect("publish");
    assert_eq!(fs::read(&dst).expect("read"), b"named");
    assert_eq!(names(dir.path()), ["out.bin"]);
}

#[test]
fn abandon_and_drop_leave_nothing() {
    for named in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let fresh = dir.path().join("fresh");
        let staged = stage(&fresh, &PublishOptions::default(), named);
        staged.file().write_all(b"half").expect("write");
        staged.abandon();
        assert!(names(dir.path()).is_empty(), "named: {named}");

        let existing = dir.path().join("existing");
        fs::write(&existing, b"keep me").expect("write");
        let staged = stage(&existing, &PublishOptions::default(), named);
        staged.file().write_all(b"half").expect("write");
        drop(staged);
        assert_eq!(fs::read(&existing).expect("read"), b"keep me");
        assert_eq!(names(dir.path()), ["existing"], "named: {named}");
    }
}

#[test]
fn in_place_writes_into_the_destination() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dst = dir.path().join("dst");
    fs::write(&dst, b"previous content").expect("write");
    let ino = fs::metadata(&dst).expect("stat").ino();
    let opts = PublishOptions {
        in_place: true,
        ..Default::default()
    };
    let staged = stage(&dst, &opts, false);
    assert!(staged.is_in_place());
    assert!(staged.wants_truncate());
    assert_eq!(
        fs::read(&dst).expect("read"),
        b"previous content",
        "not truncated before the daemon took the job"
    );
    drop(staged);
    assert_eq!(fs::read(&dst).expect("read"), b"previous content");
    let staged = stage(&dst, &opts, false);
    staged.file().write_all(b"direct").expect("write");
    assert_eq!(
        fs::read(&dst).expect("read"),
        b"directus content",
        "visible at once"
    );
    staged
        .file()
        .set_len(6)
        .expect("truncate, as the daemon does");
    staged.publish(None).expect("publish");
    assert_eq!(fs::read(&dst).expect("read"), b"direct");
    assert_eq!(fs::metadata(&dst).expect("stat").ino(), ino);

    // Read-write, so that a verifying daemon can read it back.
    let staged = stage(&dst, &opts, false);
    staged.file().write_all(b"readable").expect("write");
    let mut back = String::new();
    let mut file = staged.file();
    file.rewind().expect("rewind");
    file.read_to_string(&mut back).expect("read back");
    assert_eq!(back, "readable");

    // Abandoning leaves what was written: there is nothing to undo.
    staged.abandon();
    assert_eq!(fs::read(&dst).expect("read"), b"readable");

    let fresh = dir.path().join("fresh");
    let staged = stage(&fresh, &opts, false);
    assert!(fresh.exists(), "created at once");
    drop(staged);
    assert!(!fresh.exists(), "an abandoned file it created is removed");
    let staged = stage(&fresh, &opts, false);
    staged.publish(None).expect("publish");
    assert_eq!(mode_of(&fresh), 0o666 & !umask());
}

#[test]
fn a_device_destination_is_written_in_place() {
    let staged = stage(Path::new("/dev/null"), &PublishOptions::default(), false);
    assert!(staged.is_in_place());
    staged.file().write_all(b"gone").expect("write");
    staged.publish(None).expect("publish");
    assert!(fs::metadata("/dev/null")
        .expect("stat")
        .file_type()
        .is_char_device());
}

#[test]
fn the_source_itself_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    fs::write(&src, b"precious").expect("write");
    let link = dir.path().join("link");
    symlink("src", &link).expect("symlink");
    let meta = fs::metadata(&src).expect("stat");
    for dst in [&src, &link] {
        for in_place in [false, true] {
            let opts = PublishOptions {
                in_place,
                ..Default::default()
            };
            let err = StagedFile::create(dst, Some(&meta), &opts).expect_err("same file");
            assert!(
                matches!(&err, PublishError::SameFile { path, .. } if path == dst),
                "{err:?}"
            );
            let named = err.with_source_path(&src).to_string();
            assert!(named.contains("is the same file as"), "{named}");
            assert!(named.contains(&*src.to_string_lossy()), "{named}");
        }
    }
    assert_eq!(fs::read(&src).expect("read"), b"precious");
    assert_eq!(names(dir.path()), ["link", "src"]);
}

#[test]
fn directories_and_missing_directories_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err =
        StagedFile::create(dir.path(), None, &PublishOptions::default()).expect_err("a directory");
    assert!(matches!(err, PublishError::IsDirectory { .. }), "{err:?}");
    let err =
        StagedFile::create(Path::new("/"), None, &PublishOptions::default()).expect_err("the root");
    assert!(matches!(err, PublishError::IsDirectory { .. }), "{err:?}");

    let missing = dir.path().join("no-such-dir");
    for in_place in [false, true] {
        let opts = PublishOptions {
            in_place,
            ..Default::default()
        };
        let err = StagedFile::create(&missing.join("f"), None, &opts).expect_err("no directory");
        assert_eq!(
            err.io_error().map(io::Error::kind),
            Some(io::ErrorKind::NotFound),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&*missing.to_string_lossy()),
            "{err}"
        );
    }
}

#[test]
fn a_symlink_destination_has_its_target_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let real = dir.path().join("real");
    fs::write(&real, b"old").expect("write");
    let link = dir.path().join("link");
    symlink("real", &link).expect("symlink");
    let staged = stage(&link, &PublishOptions::default(), false);
    assert_eq!(staged.path(), link);
    staged.file().write_all(b"new").expect("write");
    staged.publish(None).expect("publish");
    assert!(fs::symlink_metadata(&link)
        .expect("lstat")
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(&real).expect("read"), b"new");

    // Not through a dangling link: cp refuses, and so does staging.
    let dangling = dir.path().join("dangling");
    symlink("made", &dangling).expect("symlink");
    let err = StagedFile::create(&dangling, None, &PublishOptions::default()).unwrap_err();
    assert!(
        matches!(err, PublishError::DanglingSymlink { ref path } if *path == dangling),
        "{err}"
    );
    assert_eq!(names(dir.path()), ["dangling", "link", "real"]);
}

/// Sets distinct access and modification times on `file` through
/// futimens(2), independently of how the code under test sets them.
fn set_times(file: &File, atime: (i64, i64), mtime: (i64, i64)) {
    let times = [
        libc::timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ];
    // SAFETY: `file` is open for the call; `times` is an array of two
    // initialised timespecs, as futimens reads, alive until it returns.
    let rc = unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) };
    assert_eq!(rc, 0, "futimens: {}", io::Error::last_os_error());
}

#[test]
fn preserve_copies_mode_and_times() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    fs::write(&src, b"source").expect("write");
    chmod(&src, 0o751);
    set_times(
        &File::open(&src).expect("open"),
        (1_200_000_000, 111_111_111),
        (1_000_000_000, 123_456_789),
    );
    let meta = fs::metadata(&src).expect("stat");

    for (name, in_place, named, existing) in [
        ("unnamed", false, false, false),
        ("unnamed-over", false, false, true),
        ("named", false, true, false),
        ("named-over", false, true, true),
        ("in-place", true, false, true),
    ] {
        let dst = dir.path().join(name);
        if existing {
            fs::write(&dst, b"older").expect("write");
            chmod(&dst, 0o600);
        }
        let opts = PublishOptions {
            preserve: true,
            in_place,
            ..Default::default()
        };
        let staged = StagedFile::create_as(&dst, Some(&meta), &opts, named, std::process::id())
            .expect("stage");
        staged.file().write_all(b"source").expect("write");
        staged.publish(Some(&meta)).expect("publish");
        let got = fs::metadata(&dst).expect("stat");
        assert_eq!(got.mode() & 0o7777, 0o751, "{name}");
        assert_eq!(
            (got.mtime(), got.mtime_nsec()),
            (1_000_000_000, 123_456_789),
            "{name}"
        );
        assert_eq!(
            (got.atime(), got.atime_nsec()),
            (1_200_000_000, 111_111_111),
            "{name}"
        );
        assert_eq!((got.uid(), got.gid()), (meta.uid(), meta.gid()), "{name}");
    }
}

#[test]
fn preserve_metadata_copies_the_owner_where_permitted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    let dst = dir.path().join("dst");
    fs::write(&src, b"s").expect("write");
    fs::write(&dst, b"d").expect("write");
    let file = File::open(&dst).expect("open");
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        fchown(File::open(&src).expect("open"), Some(4242), Some(4343)).expect("chown");
        chmod(&src, 0o4755);
    } else {
        chmod(&src, 0o755);
    }
    preserve_metadata(&file, &fs::metadata(&src).expect("stat")).expect("preserve");
    let got = fs::metadata(&dst).expect("stat");
    if root {
        assert_eq!((got.uid(), got.gid()), (4242, 4343));
        assert_eq!(got.mode() & 0o7777, 0o4755, "set-ID kept with the owner");
    } else {
        assert_eq!(got.mode() & 0o7777, 0o755);
    }
}

#[test]
fn fsync_variants_publish() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = PublishOptions {
        fsync: true,
        ..Default::default()
    };
    for (name, named, in_place) in [
        ("unnamed", false, false),
        ("named", true, false),
        ("in-place", false, true),
    ] {
        let dst = dir.path().join(name);
        for round in 0..2 {
            let opts = PublishOptions {
                in_place,
                ..opts.clone()
            };
            let staged = stage(&dst, &opts, named);
            write!(staged.file(), "{name} {round}").expect("write");
            staged.publish(None).expect("publish");
            assert_eq!(
                fs::read_to_string(&dst).expect("read"),
                format!("{name} {round}")
            );
        }
    }
    assert_eq!(names(dir.path()), ["in-place", "named", "unnamed"]);
}

#[test]
fn direct_opens_with_o_direct_where_the_file_system_allows() {
    let dir = tempfile::tempdir().expect("tempdir");
    for named in [false, true] {
        let dst = dir.path().join(format!("direct-{named}"));
        let opts = PublishOptions {
            direct: true,
            ..Default::default()
        };
        let staged = stage(&dst, &opts, named);
        // SAFETY: the descriptor is open for the call; F_GETFL takes no argument.
        let flags = unsafe { libc::fcntl(staged.file().as_raw_fd(), libc::F_GETFL) };
        assert!(flags >= 0, "F_GETFL: {}", io::Error::last_os_error());
        // tmpfs refuses O_DIRECT; the fallback is a plain open then.
        let fs_type = {
            // SAFETY: statfs is plain data, all-zero is a valid value.
            let mut st: libc::statfs = unsafe { std::mem::zeroed() };
            let path = cstring(dir.path()).expect("path");
            // SAFETY: `path` is NUL-terminated and `st` writable, both alive for the call.
            assert_eq!(unsafe { libc::statfs(path.as_ptr(), &mut st) }, 0);
            st.f_type
        };
        if fs_type != libc::TMPFS_MAGIC {
            assert_ne!(flags & libc::O_DIRECT, 0, "named: {named}");
        }
        assert_eq!(flags & libc::O_ACCMODE, libc::O_RDWR, "named: {named}");
        staged.publish(None).expect("publish");
        assert!(dst.exists());
    }
}

#[test]
fn long_names_still_get_a_temporary_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = "n".repeat(NAME_MAX);
    let dst = dir.path().join(&name);
    fs::write(&dst, b"old").expect("write");
    for named in [false, true] {
        let staged = stage(&dst, &PublishOptions::default(), named);
        staged.file().write_all(b"new").expect("write");
        staged.publish(None).expect("publish");
        assert_eq!(fs::read(&dst).expect("read"), b"new");
    }
    assert_eq!(names(dir.path()), [name]);
}

/// A directory too large to list cheaply is listed for leftovers only by a
/// copy that stages under a hidden name, as the runs that leave them do; a
/// small one always.
#[test]
fn leftovers_are_looked_for_in_a_large_directory_only_by_named_staging() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dst = dir.path().join("out");
    let mut gone = std::process::Command::new("true").spawn().expect("spawn");
    let pid = gone.id();
    gone.wait().expect("wait");
    let leftover = dir.path().join(hidden_name_for(OsStr::new("out"), pid, 0));
    let plant = || fs::write(&leftover, b"half").expect("leftover");

    plant();
    let small = stage(&dst, &PublishOptions::default(), false);
    assert_eq!(
        small.remove_stale(),
        vec![leftover.clone()],
        "a small directory is listed"
    );

    let mut n = 0;
    while fs::metadata(dir.path()).expect("stat").len() <= CHEAP_LISTING {
        for _ in 0..256 {
            fs::write(dir.path().join(format!("filler-{n:06}")), b"").expect("filler");
            n += 1;
        }
    }
    plant();
    let unnamed = stage(&dst, &PublishOptions::default(), false);
    assert!(
        unnamed.remove_stale().is_empty(),
        "listed a large directory"
    );
    assert!(leftover.exists());
    let named = stage(&dst, &PublishOptions::default(), true);
    assert_eq!(
        named.remove_stale(),
        vec![leftover.clone()],
        "named staging looks"
    );
}
