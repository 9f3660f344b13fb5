//! `ringxfer copy -r` and `ringxfer copy FILE... DIR` through a daemon, with
//! cp(1)'s semantics, and the atomic publish of every destination.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use crate::cli_common::*;
use crate::support::*;

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// src/{top.bin, empty, link -> a/b/deep.bin, a/b/deep.bin, a/mid.bin, a/dirlink -> b}
fn make_tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    fs::create_dir_all(root.join("a/b")).unwrap();
    let mut files = Vec::new();
    for (i, (name, len)) in [
        ("top.bin", 70_001),
        ("a/mid.bin", 4096),
        ("a/b/deep.bin", 1 << 20),
    ]
    .into_iter()
    .enumerate()
    {
        let (_, data) = make_file(root, name, len, 300 + i as u64);
        files.push((name.to_string(), data));
    }
    fs::write(root.join("empty"), b"").unwrap();
    files.push(("empty".into(), Vec::new()));
    std::os::unix::fs::symlink("a/b/deep.bin", root.join("link")).unwrap();
    std::os::unix::fs::symlink("b", root.join("a/dirlink")).unwrap();
    files
}

fn assert_tree_copied(dst: &Path, files: &[(String, Vec<u8>)]) {
    for (name, data) in files {
        assert_file_eq(&dst.join(name), data);
    }
    for (link, target) in [("link", "a/b/deep.bin"), ("a/dirlink", "b")] {
        let path = dst.join(link);
        let meta =
            fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            meta.file_type().is_symlink(),
            "{} is not a link",
            path.display()
        );
        assert_eq!(fs::read_link(&path).unwrap(), Path::new(target));
    }
    assert!(dst.join("a/b").is_dir());
}

#[test]
fn copy_r_copies_a_tree_with_links_and_empty_files() {
    let d = Daemon::start();
    let dir = tmpdir();
    let src = dir.path().join("src");
    let files = make_tree(&src);

    // DST does not exist: it becomes the copy.
    let dst = dir.path().join("dst");
    let mut c = cli(&d.socket);
    c.arg("copy").arg("-r").arg(&src).arg(&dst);
    let out = run(c);
    assert_exit(&out, 0, "copy -r into a new name");
    assert_tree_copied(&dst, &files);
    assert!(
        stderr(&out).contains("copied 4 files"),
        "summary line: {}",
        describe(&out)
    );
    // No temporary names left behind anywhere: the tree was built under a
    // hidden name next to DST and renamed, and nothing of it is left.
    assert_eq!(names(dir.path()), ["dst", "src"]);
    assert_eq!(names(&dst), ["a", "empty", "link", "top.bin"]);
    assert_eq!(names(&dst.join("a")), ["b", "dirlink", "mid.bin"]);

    // DST exists: the copy goes inside it, under SRC's name, as cp -r does.
    let mut c = cli(&d.socket);
    c.args(["--json", "copy", "-r"]).arg(&src).arg(&dst);
    let out = run(c);
    assert_exit(&out, 0, "copy -r into an existing directory");
    assert_tree_copied(&dst.join("src"), &files);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{}", describe(&out));
    let v = &lines[0];
    assert_eq!(v["op"], "copy", "{v}");
    assert_eq!(v["files"], 4, "{v}");
    assert_eq!(v["links"], 2, "{v}");
    assert_eq!(v["failed"], 0, "{v}");
    // Every file is small and in the page cache: the CLI copied them all,
    // and asked no engine.
    assert_eq!(v["engine"], "cli", "{v}");
    let bytes: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();
    assert_eq!(v["bytes"], bytes, "{v}");
}

/// Names of the files in `dir` opened while `f` ran (inotify's IN_OPEN).
fn opened_during(dir: &Path, f: impl FnOnce()) -> Vec<String> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: no arguments beyond flags; a new descriptor or -1.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    assert!(
        fd >= 0,
        "inotify_init1: {}",
        std::io::Error::last_os_error()
    );
    let path = CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: `fd` is ours and open, `path` NUL-terminated.
    let wd = unsafe { libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_OPEN) };
    assert!(
        wd >= 0,
        "inotify_add_watch: {}",
        std::io::Error::last_os_error()
    );
    f();
    let mut names = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        // SAFETY: `buf` is ours and valid for its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        let mut at = 0;
        while at < n as usize {
            // struct inotify_event: wd, mask, cookie (i32, u32, u32), len (u32), name.
            let len = u32::from_ne_bytes(buf[at + 12..at + 16].try_into().unwrap()) as usize;
            let name = &buf[at + 16..at + 16 + len];
            let name = name.split(|&b| b == 0).next().unwrap_or_default();
            if !name.is_empty() {
                names.push(String::from_utf8_lossy(name).into_owned());
            }
            at += 16 + len;
        }
    }
    // SAFETY: `fd` is ours, closed once.
    unsafe { libc::close(fd) };
    names
}

/// An empty file in a tree is made by the CLI, with no job: a tree of
/// empty files costs a create each, not a round trip to the daemon; inside
/// a new tree, on a file system with a device (where a size of 0 is
/// believed), it is not even opened. A file whose size says 0 but which
/// has bytes (procfs) still gets a job, which reads it to its end.
#[test]
fn empty_files_of_a_tree_need_no_job_and_files_of_proc_are_read_to_their_end() {
    let d = Daemon::start();
    let dir = tmpdir();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..20 {
        let path = src.join("sub").join(format!("e{i}"));
        fs::write(&path, b"").unwrap();
        chmod(&path, if i % 2 == 0 { 0o600 } else { 0o751 });
    }
    let big = vec![5u8; 2 << 20];
    fs::write(src.join("big"), &big).unwrap();
    let before = stats_of(&std::sync::Arc::new(d.client())).jobs_completed;
    let dst = dir.path().join("dst");
    let opened = opened_during(&src.join("sub"), || {
        let mut c = cli(&d.socket);
        c.arg("copy").arg("-r").arg(&src).arg(&dst);
        assert_exit(&run(c), 0, "copy -r of empty files");
    });
    let on_a_device = libc::major(fs::metadata(&src).unwrap().dev()) != 0;
    assert_eq!(
        opened.len(),
        if on_a_device { 0 } else { 20 },
        "empty sources opened: {opened:?}"
    );
    for i in 0..20 {
        let path = dst.join("sub").join(format!("e{i}"));
        let meta = fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(meta.len(), 0, "{}", path.display());
        let want = if i % 2 == 0 { 0o600 } else { 0o751 };
        assert_eq!(meta.mode() & 0o777, want, "{}", path.display());
    }
    assert_eq!(fs::read(dst.join("big")).unwrap(), big);
    let jobs = stats_of(&std::sync::Arc::new(d.client())).jobs_completed - before;
    assert_eq!(
        jobs, 1,
        "one job (the file of 2 MiB), none for the 20 empty files"
    );

    let proc_dir = Path::new("/proc/sys/kernel/random");
    let boot_id = fs::read(proc_dir.join("boot_id")).unwrap();
    assert_eq!(fs::metadata(proc_dir.join("boot_id")).unwrap().len(), 0);
    let dst = dir.path().join("random");
    let mut c = cli(&d.socket);
    c.arg("copy").arg("-r").arg(proc_dir).arg(&dst);
    let out = run(c);
    assert_eq!(
        fs::read(dst.join("boot_id")).unwrap(),
        boot_id,
        "{}",
        describe(&out)
    );
}

/// A tree that is not in the page cache is read ahead of the walk (its
/// directories listed by more threads at once); one that is, is not: a
/// second listing would only cost. Seen from outside as the subdirectories
/// opened: once each by the walk when hot, more when cold.
#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn a_cold_tree_is_read_ahead_of_the_walk_and_a_hot_one_is_not() {
    require_root("root to mount a file system and remount it cold");
    let d = Daemon::start();
    let dir = tmpdir();
    let mnt = mount_fs(dir.path(), "ext4");
    let src = mnt.path().join("src");
    const DIRS: usize = 300;
    for i in 0..DIRS {
        let sub = src.join(format!("d{i}"));
        fs::create_dir_all(&sub).unwrap();
        for f in 0..3 {
            fs::write(sub.join(format!("f{f}")), format!("{i}/{f}")).unwrap();
        }
    }
    let mnt_dir = mnt.path().to_path_buf();
    let copy = |dst: &str| {
        let dst = mnt_dir.join(dst);
        let opened = opened_during(&src, || {
            let mut c = cli(&d.socket);
            c.arg("copy").arg("-r").arg(&src).arg(&dst);
            assert_exit(&run(c), 0, "copy -r");
        });
        for i in (0..DIRS).step_by(37) {
            assert_eq!(
                fs::read_to_string(dst.join(format!("d{i}/f2"))).unwrap(),
                format!("{i}/2")
            );
        }
        opened.iter().filter(|name| name.starts_with('d')).count()
    };
    let hot = copy("hot");
    assert_eq!(hot, DIRS, "each subdirectory opened once, by the walk");
    // Unmounted and mounted again, nothing of it is cached.
    let img = dir.path().join("ext4.img");
    drop(mnt);
    let mut c = Command::new("mount");
    c.args(["-o", "loop"]).arg(&img).arg(&mnt_dir);
    assert!(c.status().unwrap().success(), "mount the image again");
    let mnt = Mount::at(&mnt_dir);
    let cold = copy("cold");
    assert!(
        cold > DIRS,
        "subdirectories opened {cold} times: no read-ahead"
    );
    drop(mnt);
}

/// btrfs and tmpfs have no block device, but their sizes are true: an
/// empty file there is made without being opened, as on ext4 (procfs,
/// also without one, is read: see the test above).
#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn empty_files_on_btrfs_and_tmpfs_are_not_opened_either() {
    require_root("root to mount btrfs and tmpfs");
    let d = Daemon::start();
    for kind in ["btrfs", "tmpfs"] {
        let dir = tmpdir();
        let mnt = mount_fs(dir.path(), kind);
        let src = mnt.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        for i in 0..10 {
            fs::write(src.join("sub").join(format!("e{i}")), b"").unwrap();
        }
        let dst = mnt.path().join("dst");
        let opened = opened_during(&src.join("sub"), || {
            let mut c = cli(&d.socket);
            c.arg("copy").arg("-r").arg(&src).arg(&dst);
            assert_exit(&run(c), 0, "copy -r of empty files");
        });
        assert!(
            opened.is_empty(),
            "{kind}: empty sources opened: {opened:?}"
        );
        for i in 0..10 {
            let meta = fs::metadata(dst.join("sub").join(format!("e{i}"))).unwrap();
            assert!(meta.is_file() && meta.len() == 0, "{kind}: e{i}");
        }
    }
}

/// Files of up to 1 MiB in a new tree are copied by the CLI (a job would
/// cost much of the copy), with their bytes, modes and, with -a, times,
/// and one with holes keeps them; every file gets a job when the command
/// asks something of the engine (a rate limit, a strategy, a priority).
#[test]
fn small_files_of_a_new_tree_are_copied_by_the_cli_unless_the_engine_is_asked() {
    let d = Daemon::start();
    let dir = tmpdir();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("a/b")).unwrap();
    let mut files = Vec::new();
    for (i, len) in [1usize, 100, 4096, 5000, 65_537, 1 << 20]
        .into_iter()
        .enumerate()
    {
        let (_, data) = make_file(&src, &format!("a/b/s{i}"), len, 900 + i as u64);
        files.push((format!("a/b/s{i}"), data));
    }
    chmod(&src.join("a/b/s1"), 0o640);
    let (_, data) = make_file(&src, "large", (1 << 20) + 1, 999);
    files.push(("large".to_string(), data));
    // 64 KiB with a hole before its last 4 KiB: kept by the CLI's copy.
    let holey = fs::File::create(src.join("holey")).unwrap();
    holey.set_len(60 << 10).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&holey, &[9u8; 4096], 60 << 10).unwrap();
    let mut want_holey = vec![0u8; 60 << 10];
    want_holey.extend_from_slice(&[9u8; 4096]);
    files.push(("holey".to_string(), want_holey));

    let copy = |dst: &str, args: &[&str]| {
        let dst = dir.path().join(dst);
        let mut c = cli(&d.socket);
        c.arg("copy").arg("-a").args(args).arg(&src).arg(&dst);
        assert_exit(&run(c), 0, &format!("copy -a {args:?}"));
        for (name, data) in &files {
            assert_file_eq(&dst.join(name), data);
            let (s, t) = (src.join(name), dst.join(name));
            let (s, t) = (fs::metadata(s).unwrap(), fs::metadata(t).unwrap());
            assert_eq!(s.mode(), t.mode(), "{name}");
            assert_eq!(
                (s.mtime(), s.mtime_nsec()),
                (t.mtime(), t.mtime_nsec()),
                "{name}"
            );
        }
        dst
    };
    let jobs = jobs_during(&d, || {
        let dst = copy("plain", &[]);
        let holey = fs::metadata(dst.join("holey")).unwrap();
        assert!(holey.blocks() * 512 < holey.len(), "the hole was kept");
    });
    assert_eq!(jobs, 1, "a job for the file of 1 MiB and a byte");
    assert_eq!(
        jobs_during(&d, || drop(copy("never", &["--reflink=never"]))),
        1
    );
    for asked in [
        &["--rate-limit", "1GiB"][..],
        &["--strategy", "buffered"],
        &["--priority", "high"],
    ] {
        let name = asked.join("");
        assert_eq!(jobs_during(&d, || drop(copy(&name, asked))), 8, "{asked:?}");
    }
    // Out of the page cache, they are the daemon's, whose io_uring reads
    // many at once.
    for (name, _) in &files {
        evict(&src.join(name));
    }
    assert_eq!(jobs_during(&d, || drop(copy("cold", &[]))), 8, "cold files");
}

/// On btrfs a copy of a new tree clones (copy_file_range), which reads no
/// data: small files out of the page cache are copied by the CLI there
/// too, with no job, where on ext4 they are the daemon's (see above).
#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn cold_small_files_on_btrfs_are_cloned_by_the_cli() {
    require_root("root to mount btrfs");
    let d = Daemon::start();
    let dir = tmpdir();
    let mnt = mount_fs(dir.path(), "btrfs");
    let src = mnt.path().join("src");
    fs::create_dir_all(src.join("a")).unwrap();
    let mut files = Vec::new();
    for (i, len) in [100usize, 5000, 70_000, 1 << 20].into_iter().enumerate() {
        let (path, data) = make_file(&src, &format!("a/f{i}"), len, 940 + i as u64);
        evict(&path);
        files.push((format!("a/f{i}"), data));
    }
    let dst = mnt.path().join("dst");
    let jobs = jobs_during(&d, || {
        let mut c = cli(&d.socket);
        c.arg("copy").arg("-r").arg(&src).arg(&dst);
        assert_exit(&run(c), 0, "copy -r of cold files on btrfs");
    });
    for (name, data) in &files {
        assert_file_eq(&dst.join(name), data);
    }
    assert_eq!(jobs, 0, "cold small files on btrfs need no job");
}

/// Access and modification times of `path`, both long ago: relatime then
/// updates the access time on the next read.
fn make_old(path: &Path) -> i64 {
    let long_ago = std::time::UNIX_EPOCH + std::time::Duration::from_secs(946_684_800);
    let times = fs::FileTimes::new()
        .set_accessed(long_ago)
        .set_modified(long_ago);
    fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_times(times))
        .unwrap_or_else(|e| panic!("set times of {}: {e}", path.display()));
    946_684_800
}

/// A tree copy reads its sources with O_NOATIME (their owner, or root, may),
/// so it writes nothing to the source's file system: the daemon's reads
/// and the CLI's look at an empty file leave access times alone.
#[test]
fn a_tree_copy_leaves_the_access_times_of_its_sources_alone() {
    let d = Daemon::start();
    let dir = tmpdir();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let files = [("data", vec![7u8; 100_000]), ("empty", Vec::new())];
    for (name, data) in &files {
        fs::write(src.join(name), data).unwrap();
    }
    // The file system must update access times, or this cannot fail.
    let probe = dir.path().join("probe");
    fs::write(&probe, b"probe").unwrap();
    let old = make_old(&probe);
    fs::read(&probe).unwrap();
    assert_ne!(
        fs::metadata(&probe).unwrap().atime(),
        old,
        "reads here update atime"
    );
    for (name, _) in &files {
        make_old(&src.join(name));
    }
    let dst = dir.path().join("dst");
    let mut c = cli(&d.socket);
    c.arg("copy").arg("-r").arg(&src).arg(&dst);
    assert_exit(&run(c), 0, "copy -r");
    for (name, data) in &files {
        assert_eq!(&fs::read(dst.join(name)).unwrap(), data);
        let atime = fs::metadata(src.join(name)).unwrap().atime();
        assert_eq!(atime, old, "the access time of {name} changed");
    }
}

#[test]
fn copy_r_keeps_directory_modes_and_preserve_keeps_times() {
    let d = Daemon::start();
    let dir = tmpdir();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("ro")).unwrap();
    make_file(&src, "ro/f", 1000, 310);
    make_file(&src, "g", 1000, 311);
    chmod(&src.join("g"), 0o640);
    // Old times, to tell preserved from fresh.
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    fs::File::options()
        .write(true)
        .open(src.join("g"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    // A directory without u+w: its copy must still receive its file.
    chmod(&src.join("ro"), 0o555);

    let dst = dir.path().join("dst");
    let mut c = cli(&d.socket);
    c.args(["copy", "-r", "--preserve"]).arg(&src).arg(&dst);
    let out = run(c);
    chmod(&src.join("ro"), 0o755);
    assert_exit(&out, 0, "copy -r --preserve");
    let ro = fs::metadata(dst.join("ro")).unwrap();
    assert_eq!(ro.mode() & 0o777, 0o555, "directory mode");
    assert_eq!(fs::read(dst.join("ro/f")).unwrap().len(), 1000);
    let g = fs::metadata(dst.join("g")).unwrap();
    assert_eq!(g.mode() & 0o777, 0o640, "file mode");
    assert_eq!(g.mtime(), 1_000_000_000, "file mtime");
    chmod(&dst.join("ro"), 0o755);
}

#[test]
fn copy_files_into_a_directory() {
    let d = Daemon::start();
    let dir = tmpdir();
    let (f1, d1) = make_file(dir.path(), "f1", 12_345, 320);
    let (f2, d2) = make_file(dir.path(), "f2", 0, 321);
    let into = dir.path().join("into");
    fs::create_dir(&into).unwrap();

    let mut c = cli(&d.socket);
    c.arg("copy").arg(&f1).arg(&f2).arg(&into);
    let out = run(c);
    assert_exit(&out, 0, "copy F1 F2 DIR");
    assert_file_eq(&into.join("f1"), &d1);
    assert_file_eq(&into.join("f2"), &d2);

    // DST must be a directory when there are several sources: usage error.
    let not_dir = dir.path().join("not-a-dir");
    let mut c = cli(&d.socket);
    c.arg("copy").arg(&f1).arg(&f2).arg(&not_dir);
    let out = run(c);
    assert_exit(&out, 2, "copy F1 F2 NOT-A-DIR");
    assert!(
        stderr(&out).contains(&not_dir.display().to_string())
            && stderr(&out).contains("not a directory"),
        "{}",
        describe(&out)
    );
    assert!(!not_dir.exists());

    // A directory operand without -r is omitted, like cp, and counted; the
    // files beside it are still copied.
    let sub = dir.path().join("subdir");
    fs::create_dir(&sub).unwrap();
    let into2 = dir.path().join("into2");
    fs::create_dir(&into2).unwrap();
    let mut c = cli(&d.socket);
    c.arg("copy").arg(&f1).arg(&sub).arg(&into2);
    let out = run(c);
    assert_exit(&out, 1, "copy F1 DIR DST without -r");
    let err = stderr(&out);
    assert!(err.contains("omitting directory"), "{}", describe(&out));
    assert!(err.contains("1 of 2 files failed"), "{}", describe(&out));
    assert_file_eq(&into2.join("f1"), &d1);
    assert!(!into2.join("subdir").exists());
}

#[test]
fn special_files_in_a_tree_are_skipped_and_counted() {
    let d = Daemon::start();
    let dir = tmpdir();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let (_, data) = make_file(&src, "regular", 5000, 330);
    let status = Command::new("mkfifo")
        .arg(src.join("fifo"))
        .status()
        .expect("run mkfifo");
    assert!(status.success());
    // Into an existing directory: the regular file is published, the FIFO
    // skipped, and both counted.
    let into = dir.path().join("into");
    fs::create_dir_all(into.join("src")).unwrap();
    let mut c = cli(&d.socket);
    c.args(["copy", "-r"]).arg(&src).arg(&into);
    let out = run(c);
    assert_exit(&out, 1, "a tree with a FIFO");
    assert!(stderr(&out).contains("fifo"), "{}", describe(&out));
    assert!(
        stderr(&out).contains("1 of 2 files failed"),
        "{}",
        describe(&out)
    );
    assert_file_eq(&into.join("src/regular"), &data);
    assert!(!into.join("src/fifo").exists());

    // To a new name: a tree with a failure inside is not created at all.
    let dst = dir.path().join("dst");
    let mut c = cli(&d.socket);
    c.args(["copy", "-r"]).arg(&src).arg(&dst);
    let out = run(c);
    assert_exit(&out, 1, "a new tree with a FIFO");
    assert!(!dst.exists(), "{}", describe(&out));
    assert_eq!(names(dir.path()), ["into", "src"]);
}

#[test]
fn a_failed_copy_leaves_nothing_under_the_name() {
    let d = Daemon::start();
    let dir = tmpdir();
    let (src, _) = make_file(dir.path(), "src", 10_000, 340);

    // New destination: the job fails (the source is shorter than asked),
    // and no file appears, not even an empty one.
    let dst = dir.path().join("dst-new");
    let mut c = cli(&d.socket);
    c.arg("copy")
        .arg(&src)
        .arg(&dst)
        .args(["--length", "20000"]);
    let out = run(c);
    assert_exit(&out, 1, "copy of more than the source holds");
    assert!(!dst.exists(), "a failed copy created {}", dst.display());

    // Existing destination: it keeps its old contents.
    let old = dir.path().join("dst-old");
    fs::write(&old, b"old contents").unwrap();
    let mut c = cli(&d.socket);
    c.arg("copy")
        .arg(&src)
        .arg(&old)
        .args(["--length", "20000"]);
    let out = run(c);
    assert_exit(&out, 1, "failed copy over an existing file");
    assert_file_eq(&old, b"old contents");

    // Nothing else was left in the directory (no temporary names).
    assert_eq!(names(dir.path()), ["dst-old", "src"]);

    // A successful copy replaces the old file with a new one (a new inode:
    // a reader holding the old file sees the old bytes to the end).
    let before = fs::metadata(&old).unwrap().ino();
    let mut c = cli(&d.socket);
    c.arg("copy").arg(&src).arg(&old);
    let out = run(c);
    assert_exit(&out, 0, "copy over an existing file");
    assert_file_eq(&old, &fs::read(&src).unwrap());
    assert_ne!(fs::metadata(&old).unwrap().ino(), before);

    // --in-place keeps the inode.
    let before = fs::metadata(&old).unwrap().ino();
    let mut c = cli(&d.socket);
    c.args(["copy", "--in-place"]).arg(&src).arg(&old);
    let out = run(c);
    assert_exit(&out, 0, "copy --in-place");
    assert_eq!(fs::metadata(&old).unwrap().ino(), before);
}

/// A root-owned tree under `base` of which uid 65534 may read `ok1` and
/// `sub/ok2` (their bytes returned) and not `secret`, `empty-secret` or
/// `locked/`.
fn partly_unreadable_tree(base: &Path) -> (std::path::PathBuf, Vec<u8>, Vec<u8>) {
    let src = base.join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    let (_, ok1) = make_file(&src, "ok1", 3000, 350);
    let (_, ok2) = make_file(&src, "sub/ok2", 5000, 351);
    make_file(&src, "secret", 100, 352);
    chmod(&src.join("secret"), 0o600);
    // Empty, it holds no byte to hide, but it must fail as cp's does.
    fs::write(src.join("empty-secret"), b"").unwrap();
    chmod(&src.join("empty-secret"), 0o600);
    fs::create_dir(src.join("locked")).unwrap();
    make_file(&src, "locked/inner", 100, 353);
    chmod(&src.join("locked"), 0o700);
    chmod(&src, 0o755);
    chmod(&src.join("sub"), 0o755);
    chmod(&src.join("ok1"), 0o644);
    chmod(&src.join("sub/ok2"), 0o644);
    (src, ok1, ok2)
}

#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn permission_errors_are_reported_per_path_and_the_rest_is_copied() {
    require_root("root and setpriv to run the CLI as uid 65534");
    // Everything the unprivileged CLI must reach, itself included:
    // world-searchable and outside the checkout (which may be 0700).
    let base = world_tmpdir();
    let cli_bin = executable_for_others(Path::new(CLI_BIN), base.path());
    let sock_dir = base.path().join("sock");
    fs::create_dir(&sock_dir).unwrap();
    chmod(&sock_dir, 0o755);
    let d = Daemon::start_at(Some(sock_dir.join("rx.sock")), &[]);
    chmod(&d.socket, 0o666);

    let (src, ok1, ok2) = partly_unreadable_tree(base.path());
    // A destination directory the CLI may write in, which already holds
    // the tree's top (so the copy merges into it, file by file).
    let out_dir = base.path().join("out");
    let dst = out_dir.join("src");
    fs::create_dir_all(&dst).unwrap();
    for dir in [&out_dir, &dst] {
        std::os::unix::fs::chown(dir, Some(65534), Some(65534)).unwrap();
    }

    let as_nobody = |args: &[&std::ffi::OsStr]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&cli_bin)
            .current_dir(base.path())
            .env_remove("RINGXFER_SOCKET")
            .arg("--socket")
            .arg(&d.socket)
            .arg("--daemon-only")
            .args(args);
        run(c)
    };
    let out = as_nobody(&[
        "copy".as_ref(),
        "-r".as_ref(),
        src.as_os_str(),
        out_dir.as_os_str(),
    ]);
    assert_exit(&out, 1, "copy -r with unreadable parts");
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "cannot open '{}': Permission denied",
            src.join("secret").display()
        )),
        "{}",
        describe(&out)
    );
    assert!(
        err.contains(&format!(
            "cannot open directory '{}': Permission denied",
            src.join("locked").display()
        )),
        "{}",
        describe(&out)
    );
    assert!(err.contains("3 of 5 files failed"), "{}", describe(&out));
    assert_file_eq(&dst.join("ok1"), &ok1);
    assert_file_eq(&dst.join("sub/ok2"), &ok2);
    assert!(!dst.join("secret").exists());
    assert!(!dst.join("locked").exists());

    // To a new name, the same failures keep the whole tree from its name.
    let new = out_dir.join("new");
    let out = as_nobody(&[
        "copy".as_ref(),
        "-r".as_ref(),
        src.as_os_str(),
        new.as_os_str(),
    ]);
    assert_exit(&out, 1, "copy -r with unreadable parts to a new name");
    for unreadable in ["secret", "empty-secret"] {
        assert!(
            stderr(&out).contains(&format!(
                "cannot open '{}': Permission denied",
                src.join(unreadable).display()
            )),
            "{}",
            describe(&out)
        );
    }
    assert!(
        stderr(&out).contains(&format!("'{}' was not created", new.display())),
        "{}",
        describe(&out)
    );
    assert_eq!(names(&out_dir), ["src"]);

    // A destination directory it may not write in: every file fails, each named.
    let root_only = base.path().join("root-only");
    fs::create_dir(&root_only).unwrap();
    chmod(&root_only, 0o755);
    let out = as_nobody(&[
        "copy".as_ref(),
        src.join("ok1").as_os_str(),
        src.join("sub/ok2").as_os_str(),
        root_only.as_os_str(),
    ]);
    assert_exit(&out, 1, "copy into an unwritable directory");
    let err = stderr(&out);
    assert!(
        err.contains("Permission denied") && err.contains("2 of 2 files failed"),
        "{}",
        describe(&out)
    );
    assert!(names(&root_only).is_empty());
}

#[test]
fn a_tree_copy_killed_midway_leaves_nothing_under_the_name() {
    // The new tree is built under a hidden name and renamed once done, so
    // even SIGKILL, which no cleanup can catch, leaves no half-written file
    // where a reader would take it for the real one.
    let d = Daemon::start();
    let dir = tmpdir();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    make_file(&src, "small", 1000, 370);
    make_file(&src, "big", 8 << 20, 371);
    let dst = dir.path().join("dst");
    let mut c = cli(&d.socket);
    // 8 MiB at 2 MiB/s: four seconds, of which we wait a fraction.
    c.args(["copy", "-r", "--rate-limit", "2MiB"])
        .arg(&src)
        .arg(&dst)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = c.spawn().expect("spawn the CLI");
    let hidden = (0..200).find_map(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        names(dir.path())
            .into_iter()
            .find(|n| n.starts_with(".dst.ringxfer-"))
    });
    let hidden = hidden.expect("the copy is built under a hidden name");
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().expect("SIGKILL the CLI");
    let _ = child.wait();
    assert!(!dst.exists(), "a killed copy left {}", dst.display());
    // What is left is only the hidden directory, which says what it is.
    assert_eq!(names(dir.path()), [hidden.clone(), "src".to_string()]);
    let partial = fs::metadata(dir.path().join(&hidden).join("big")).map(|m| m.len());
    assert!(
        partial.as_ref().is_ok_and(|&n| n < 8 << 20),
        "the big file was mid-copy: {partial:?}"
    );
}

/// A tree the CLI copies wholly itself (small files in the page cache)
/// needs no engine: with no daemon, none is started in-process (which cost
/// a copy of five small files 23 ms where cp takes 2), nothing says one
/// was, and the summary names the CLI. A file that needs a job starts one
/// when it comes; --daemon-only still refuses before anything is copied.
#[test]
fn a_tree_of_small_hot_files_starts_no_engine() {
    let dir = tmpdir();
    let sock = no_daemon_socket(dir.path());
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    let mut files = Vec::new();
    for (i, len) in [1usize, 3000, 70_000].into_iter().enumerate() {
        let name = format!("sub/f{i}");
        files.push((name.clone(), make_file(&src, &name, len, 70 + i as u64).1));
    }
    let copy = |dst: &str, args: &[&str]| {
        let mut c = cli(&sock);
        c.args(args).args(["copy", "-r"]);
        c.arg(&src).arg(dir.path().join(dst));
        run(c)
    };
    let out = copy("small", &["--json"]);
    assert_exit(&out, 0, "copy -r of small files, no daemon");
    for (name, data) in &files {
        assert_file_eq(&dir.path().join("small").join(name), data);
    }
    assert_eq!(json_lines(&out)[0]["engine"], "cli", "{}", describe(&out));
    // Without --json a started engine says so.
    let out = copy("plain", &[]);
    assert_exit(&out, 0, "copy -r of small files, no daemon, plain");
    assert!(!stderr(&out).contains("in-process"), "{}", describe(&out));

    let out = copy("refused", &["--daemon-only"]);
    assert_exit(&out, 3, "--daemon-only with no daemon");
    assert!(!dir.path().join("refused").exists());

    // Over 1 MiB: a job, so the in-process engine starts.
    let name = "sub/large".to_string();
    files.push((name.clone(), make_file(&src, &name, (1 << 20) + 1, 79).1));
    let out = copy("large", &["--json"]);
    assert_exit(&out, 0, "copy -r with a large file, no daemon");
    for (name, data) in &files {
        assert_file_eq(&dir.path().join("large").join(name), data);
    }
    assert_eq!(
        json_lines(&out)[0]["engine"],
        "embedded",
        "{}",
        describe(&out)
    );
    let out = copy("large-plain", &[]);
    assert_exit(&out, 0, "copy -r with a large file, no daemon, plain");
    assert!(stderr(&out).contains("in-process"), "{}", describe(&out));
}
