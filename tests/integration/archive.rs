//! `copy -a` against `cp -a` on the same tree: whatever cp keeps (types,
//! modes, owners, nanosecond times of files, directories and links, link
//! targets, device numbers, extended attributes of every namespace the
//! caller may read, ACLs, which names are one file), ringxfer keeps.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cli_common::{cli, describe, run};
use crate::support::{make_file, require_root, tmpdir, Daemon};

/// What one name in a tree is, as far as `cp -a` promises to keep it.
#[derive(Debug, PartialEq)]
struct Entry {
    kind: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    rdev: u64,
    content: Vec<u8>,
    xattrs: BTreeMap<String, Vec<u8>>,
    /// The first name (in walk order) of the file this name is.
    same_as: PathBuf,
}

/// Every name under `root` (itself included, as "."), keyed by its path
/// relative to `root`.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), PathBuf> = BTreeMap::new();
    let mut todo = vec![PathBuf::from(".")];
    while let Some(rel) = todo.pop() {
        let path = root.join(&rel);
        let m = std::fs::symlink_metadata(&path).unwrap();
        let kind = m.mode() & libc::S_IFMT;
        let content = match kind {
            libc::S_IFREG => std::fs::read(&path).unwrap(),
            libc::S_IFLNK => std::fs::read_link(&path)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec(),
            _ => Vec::new(),
        };
        if kind == libc::S_IFDIR {
            let mut names: Vec<_> = std::fs::read_dir(&path)
                .unwrap()
                .map(|e| rel.join(e.unwrap().file_name()))
                .collect();
            names.sort();
            todo.extend(names.into_iter().rev());
        }
        let same_as = inodes
            .entry((m.dev(), m.ino()))
            .or_insert_with(|| rel.clone())
            .clone();
        let entry = Entry {
            kind,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            // A directory's own time is not compared for the root: cp and
            // ringxfer both set it, but "." of each copy is where the test
            // made nothing, so it is compared like any other.
            mtime: (m.mtime(), m.mtime_nsec()),
            rdev: m.rdev(),
            content,
            xattrs: xattrs(&path),
            same_as,
        };
        out.insert(rel, entry);
    }
    out
}

/// The extended attributes of `path` itself (not what a link points to).
fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 64 * 1024];
    // SAFETY: a NUL-terminated path and a writable buffer of the length given.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "llistxattr {}", path.display());
    names.truncate(n as usize);
    let mut out = BTreeMap::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).unwrap();
        let mut value = vec![0u8; 64 * 1024];
        // SAFETY: NUL-terminated path and name; a writable buffer of its length.
        let len = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        assert!(len >= 0, "lgetxattr {} {name:?}", path.display());
        value.truncate(len as usize);
        out.insert(String::from_utf8_lossy(name).into_owned(), value);
    }
    out
}

fn tool(cmd: &str, args: &[&str], path: &Path) {
    let out = Command::new(cmd)
        .args(args)
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} (from the attr/acl packages): {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", describe(&out));
}

fn set_times(path: &Path, secs: i64, nsecs: i64) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let t = libc::timespec {
        tv_sec: secs,
        tv_nsec: nsecs,
    };
    // SAFETY: a NUL-terminated path and an array of two timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            [t, t].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0, "utimensat {}", path.display());
}

fn mknod(path: &Path, mode: libc::mode_t, dev: libc::dev_t) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path that outlives the call.
    let rc = unsafe { libc::mknod(c.as_ptr(), mode, dev) };
    assert_eq!(rc, 0, "mknod {}", path.display());
}

/// A tree with one of everything `cp -a` keeps.
fn build_tree(src: &Path) {
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    let (file, _) = make_file(src, "file", 70_000, 3);
    make_file(&src.join("sub"), "small", 10, 4);
    make_file(&src.join("sub/deeper"), "empty", 0, 5);
    std::fs::hard_link(&file, src.join("sub/hardlink")).unwrap();
    std::os::unix::fs::symlink("../file", src.join("sub/link")).unwrap();
    std::os::unix::fs::symlink("nowhere", src.join("dangling")).unwrap();
    mknod(&src.join("fifo"), libc::S_IFIFO | 0o604, 0);
    mknod(
        &src.join("null"),
        libc::S_IFCHR | 0o620,
        libc::makedev(1, 3),
    );
    tool("setfattr", &["-n", "user.colour", "-v", "blue"], &file);
    tool(
        "setfattr",
        &["-n", "security.label", "-v", "kept"],
        &src.join("sub/small"),
    );
    tool(
        "setfattr",
        &["-h", "-n", "trusted.on-link", "-v", "link"],
        &src.join("sub/link"),
    );
    tool(
        "setfattr",
        &["-n", "trusted.on-fifo", "-v", "pipe"],
        &src.join("fifo"),
    );
    tool(
        "setfattr",
        &["-n", "trusted.secret", "-v", "root-only"],
        &file,
    );
    tool(
        "setfacl",
        &["-m", "u:nobody:r,g:nogroup:rw"],
        &src.join("sub/small"),
    );
    tool("setfacl", &["-d", "-m", "u:nobody:rx"], &src.join("sub"));
    tool(
        "setfattr",
        &["-n", "user.shelf", "-v", "top"],
        &src.join("sub/deeper"),
    );
    std::fs::set_permissions(
        src.join("sub/small"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4751),
    )
    .unwrap();
    std::os::unix::fs::lchown(src.join("sub/small"), Some(65534), Some(65534)).unwrap();
    std::os::unix::fs::lchown(src.join("sub/link"), Some(1), Some(2)).unwrap();
    // Times last, deepest first, each with nanoseconds cp keeps.
    let mut stamp = 1_500_000_000;
    for rel in [
        "sub/deeper/empty",
        "sub/deeper",
        "sub/small",
        "sub/link",
        "sub",
        "file",
        "dangling",
        "fifo",
        "null",
        ".",
    ] {
        stamp += 1000;
        set_times(&src.join(rel), stamp, 123_456_789 + stamp % 7);
    }
}

/// The difference between two snapshots, name by name, for a failure message.
fn differences(cp: &BTreeMap<PathBuf, Entry>, ours: &BTreeMap<PathBuf, Entry>) -> Vec<String> {
    let mut diffs = Vec::new();
    for (rel, want) in cp {
        match ours.get(rel) {
            None => diffs.push(format!("{}: missing", rel.display())),
            Some(got) if got != want => diffs.push(format!(
                "{}:\n  cp -a:          {want:?}\n  ringxfer -a:    {got:?}",
                rel.display()
            )),
            Some(_) => {}
        }
    }
    diffs.extend(
        ours.keys()
            .filter(|rel| !cp.contains_key(*rel))
            .map(|rel| format!("{}: not made by cp -a", rel.display())),
    );
    diffs
}

#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn archive_keeps_what_cp_archive_keeps() {
    require_root("device nodes, trusted.* attributes and other owners");
    let d = Daemon::start();
    let dir = tmpdir();
    let src = dir.path().join("src");
    build_tree(&src);

    let by_cp = dir.path().join("by-cp");
    let out = Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&by_cp)
        .output()
        .unwrap();
    assert!(out.status.success(), "cp -a: {}", describe(&out));
    let ours = dir.path().join("by-ringxfer");
    let mut c = cli(&d.socket);
    c.args(["copy", "-a"]).arg(&src).arg(&ours);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    let (want, got) = (snapshot(&by_cp), snapshot(&ours));
    assert_eq!(
        want,
        snapshot(&src),
        "cp -a itself changed the tree: the test is wrong"
    );
    for (rel, name) in [
        ("./sub/link", "trusted.on-link"),
        ("./sub/small", "security.label"),
        ("./fifo", "trusted.on-fifo"),
    ] {
        let attrs = &want[Path::new(rel)].xattrs;
        assert!(
            attrs.contains_key(name),
            "the tree lacks {rel} {name}: {attrs:?}"
        );
    }
    let diffs = differences(&want, &got);
    assert!(
        diffs.is_empty(),
        "copy -a differs from cp -a:\n{}",
        diffs.join("\n")
    );
}
