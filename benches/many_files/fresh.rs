//! A fresh file system for each round: a sparse image, made with the
//! file system's own mkfs and defaults, on a loop device, mounted; torn down
//! (unmounted, detached, deleted) when the round ends.
//!
//! Why: a file system that has just had many files deleted (ext4 skips
//! recently freed inodes for about a minute) or has taken a million files is
//! several times slower to create files in, so a long-lived one makes each
//! round unlike the last. Without root there are no loop mounts: a round
//! then gets a new directory on the file system under the bench directory,
//! and the bench warns that its figures inherit that file system's history.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use crate::support::Result;

/// The file systems a round may be made on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FsKind {
    Ext4,
    Btrfs,
}

impl FsKind {
    pub fn key(self) -> &'static str {
        match self {
            FsKind::Ext4 => "ext4",
            FsKind::Btrfs => "btrfs",
        }
    }

    pub fn parse(s: &str) -> Option<FsKind> {
        match s {
            "ext4" => Some(FsKind::Ext4),
            "btrfs" => Some(FsKind::Btrfs),
            _ => None,
        }
    }

    /// mkfs as a user makes one. ext4 initialises its inode tables and
    /// journal now, not lazily in a kernel thread that would write while a
    /// round is measured.
    fn mkfs(self, image: &Path) -> Command {
        let mut c = Command::new(format!("mkfs.{}", self.key()));
        match self {
            FsKind::Ext4 => c.args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"]),
            FsKind::Btrfs => c.args(["-q", "-f"]),
        };
        c.arg(image);
        c
    }
}

/// Whether this process may mount (it is root).
pub fn can_mount() -> bool {
    // SAFETY: geteuid has no memory effects and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn must(mut c: Command) -> Result<String> {
    let desc = format!("{c:?}");
    let out = c.output().map_err(|e| format!("{desc}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{desc} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Where one round's files go; gone on drop.
pub struct Scratch {
    dir: PathBuf,
    /// The loop device and its image, when the round has a file system of
    /// its own.
    image: Option<(String, PathBuf)>,
}

impl Scratch {
    /// A new file system of `kind` (of `size` bytes, sparse) mounted at
    /// `base/mnt-N`, or without root a new directory `base/dir-N`.
    pub fn new(base: &Path, n: usize, kind: FsKind, size: u64) -> Result<Scratch> {
        if !can_mount() {
            let dir = base.join(format!("dir-{n}"));
            fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
            return Ok(Scratch { dir, image: None });
        }
        let img = base.join(format!("{}-{n}.img", kind.key()));
        File::create(&img)
            .and_then(|f| f.set_len(size))
            .map_err(|e| format!("create {}: {e}", img.display()))?;
        let mut scratch = Scratch {
            dir: base.join(format!("mnt-{n}")),
            image: None,
        };
        must(kind.mkfs(&img))?;
        // Direct I/O on the image file: the loop device then reads and
        // writes the disk as a disk would, rather than through a second
        // page cache of the image's own (twice the memory, and readahead of
        // its own under every cold read).
        let mut losetup = Command::new("losetup");
        losetup
            .args(["--find", "--show", "--direct-io=on"])
            .arg(&img);
        let dev = must(losetup)?;
        scratch.image = Some((dev.clone(), img));
        fs::create_dir(&scratch.dir)
            .map_err(|e| format!("mkdir {}: {e}", scratch.dir.display()))?;
        let mut mount = Command::new("mount");
        mount.arg(&dev).arg(&scratch.dir);
        if let Err(e) = must(mount) {
            // Nothing is mounted: do not let drop unmount what is below.
            let _ = fs::remove_dir(&scratch.dir);
            return Err(e);
        }
        Ok(scratch)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The loop device, and whether it does direct I/O, for the header.
    pub fn describe(&self) -> String {
        match &self.image {
            Some((dev, _)) => {
                let name = dev.trim_start_matches("/dev/");
                let dio = fs::read_to_string(format!("/sys/block/{name}/loop/dio"))
                    .map_or("?".into(), |s| s.trim().to_string());
                format!("{dev} (direct I/O {dio})")
            }
            None => "a directory, no file system of its own".into(),
        }
    }

    /// Bytes in use on the round's file system (after a sync, what the
    /// copies allocated): f_blocks - f_bfree.
    pub fn used(&self) -> Option<u64> {
        let c = std::ffi::CString::new(self.dir.as_os_str().as_encoded_bytes()).ok()?;
        // SAFETY: statvfs is plain data; statvfs(3) only writes into it.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a NUL-terminated path and `st` writable.
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return None;
        }
        Some((st.f_blocks - st.f_bfree) as u64 * st.f_frsize as u64)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Some((dev, img)) = self.image.take() else {
            let _ = fs::remove_dir_all(&self.dir);
            return;
        };
        // The daemon may close its last descriptor on the file system a
        // moment after its client exits: try again before giving up.
        let mut unmounted = false;
        for _ in 0..50 {
            let ok = Command::new("umount").arg(&self.dir).output();
            if ok.is_ok_and(|o| o.status.success()) {
                unmounted = true;
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        if !unmounted {
            eprintln!(
                "  WARNING: {} is busy: unmounted lazily",
                self.dir.display()
            );
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let _ = Command::new("losetup").arg("-d").arg(&dev).status();
        let _ = fs::remove_dir(&self.dir);
        let _ = fs::remove_file(&img);
    }
}
