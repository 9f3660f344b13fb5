//! Where the bytes live: a tmpfs of the bench's own (or /dev/shm), so no
//! disk takes part and every contender reads and writes memory; the free
//! loopback ports the servers listen on; and the check of each result.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::{open_sized, read_block, Result, BLOCK};

/// A tmpfs mounted for this run (unmounted on drop), or a directory in
/// /dev/shm where mounting is not allowed.
pub struct Place {
    pub dir: PathBuf,
    mounted: bool,
    _shm: Option<tempfile::TempDir>,
}

impl Place {
    /// Mounts a tmpfs of room for the source, a destination and its
    /// temporary name, on `base/tmpfs`.
    pub fn new(base: &Path, size: u64) -> Result<Place> {
        let dir = base.join("tmpfs");
        fs::create_dir(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let room = size.saturating_mul(3).saturating_add(256 << 20);
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={room},mode=0755"),
                "tmpfs",
            ])
            .arg(&dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            return Ok(Place {
                dir,
                mounted,
                _shm: None,
            });
        }
        let shm = tempfile::Builder::new()
            .prefix("ringxfer-remote-")
            .tempdir_in("/dev/shm")
            .map_err(|e| format!("cannot mount a tmpfs, nor make a directory in /dev/shm: {e}"))?;
        Ok(Place {
            dir: shm.path().to_path_buf(),
            mounted,
            _shm: Some(shm),
        })
    }

    pub fn describe(&self) -> String {
        if self.mounted {
            format!("{} (a tmpfs mounted for this run)", self.dir.display())
        } else {
            format!("{} (mount failed: /dev/shm)", self.dir.display())
        }
    }

    /// A new empty directory `name` on it.
    pub fn subdir(&self, name: &str) -> Result<PathBuf> {
        let d = self.dir.join(name);
        fs::create_dir(&d).map_err(|e| format!("create {}: {e}", d.display()))?;
        Ok(d)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        let umount = |lazy: bool| {
            let mut c = Command::new("umount");
            if lazy {
                c.arg("-l");
            }
            c.arg(&self.dir)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        // A server just stopped may hold the directory a moment longer.
        if !umount(false) && !umount(true) {
            eprintln!("warning: could not unmount {}", self.dir.display());
        }
    }
}

/// A loopback port nobody listened on a moment ago: bound, read, let go,
/// for a server that takes its port from its command line or config.
pub fn free_port() -> Result<u16> {
    let host = crate::net::host();
    let l = TcpListener::bind((host, 0)).map_err(|e| format!("bind {host}:0: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}

/// Whether something listens on the servers' address at `port` (binding
/// it fails), asked without connecting, so no server sees a stray
/// connection.
pub fn port_taken(port: u16) -> bool {
    TcpListener::bind((crate::net::host(), port)).is_err()
}

/// Removes every file in `dirs` (the last run's destination and any
/// temporary name), so each run allocates its destination afresh.
pub fn empty_dirs(dirs: &[&Path]) -> Result<()> {
    for d in dirs {
        let entries = fs::read_dir(d).map_err(|e| format!("read_dir {}: {e}", d.display()))?;
        for e in entries {
            let p = e
                .map_err(|e| format!("read_dir {}: {e}", d.display()))?
                .path();
            let removed = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            removed.map_err(|e| format!("remove {}: {e}", p.display()))?;
        }
    }
    crate::support::cache::sync_all();
    Ok(())
}

/// What every destination must hold: the source's size, first and last
/// blocks.
pub struct Want {
    /// Bytes in all.
    pub size: u64,
    /// Files of the tree; 0: one file.
    pub files: u64,
    head: Vec<u8>,
    tail: Vec<u8>,
}

/// The tree's first file, whose edges are compared.
const FIRST: &str = "d0/f0";

impl Want {
    pub fn of(src: &Path, size: u64) -> Result<Want> {
        let (head, tail) = edges(src, size)?;
        Ok(Want {
            size,
            files: 0,
            head,
            tail,
        })
    }

    /// A tree of `files` files of `each` bytes (`write_tree`).
    pub fn of_tree(src: &Path, files: u64, each: u64) -> Result<Want> {
        let (head, tail) = edges(&src.join(FIRST), each)?;
        Ok(Want {
            size: files * each,
            files,
            head,
            tail,
        })
    }

    /// Fails unless `dst` has the source's size and its first and last 4 KiB
    /// (a tree: as many files, as many bytes, and its first file's edges).
    pub fn check(&self, dst: &Path) -> Result<()> {
        if self.files > 0 {
            let (files, bytes) = tally(dst)?;
            if (files, bytes) != (self.files, self.size) {
                return Err(format!(
                    "{} holds {files} files of {bytes} bytes, not {} of {}",
                    dst.display(),
                    self.files,
                    self.size
                ));
            }
            return self.check_edges(&dst.join(FIRST), self.size / self.files);
        }
        self.check_edges(dst, self.size)
    }

    fn check_edges(&self, dst: &Path, size: u64) -> Result<()> {
        let (head, tail) = edges(dst, size)?;
        if head != self.head || tail != self.tail {
            return Err(format!(
                "{} differs from the source in its first or last {BLOCK} bytes",
                dst.display()
            ));
        }
        Ok(())
    }
}

fn edges(path: &Path, size: u64) -> Result<(Vec<u8>, Vec<u8>)> {
    let file = open_sized(path, size)?;
    let read =
        |off| read_block(&file, off, size).map_err(|e| format!("read {}: {e}", path.display()));
    Ok((read(0)?, read(size.saturating_sub(BLOCK as u64))?))
}

/// Writes `files` files of `each` bytes under `root`, 100 to a directory
/// (`d0/f0`, `d0/f1`, ... `d1/f100`), each of its own bytes.
pub fn write_tree(root: &Path, files: u64, each: u64) -> Result<()> {
    for i in 0..files {
        let dir = root.join(format!("d{}", i / 100));
        if i % 100 == 0 {
            fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        let bytes: Vec<u8> = (0..each).map(|b| (b.wrapping_mul(31) ^ i) as u8).collect();
        let path = dir.join(format!("f{i}"));
        fs::write(&path, bytes).map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Files under `dir` and their bytes.
fn tally(dir: &Path) -> Result<(u64, u64)> {
    let mut found = (0, 0);
    let entries = fs::read_dir(dir).map_err(|e| format!("read_dir {}: {e}", dir.display()))?;
    for e in entries {
        let e = e.map_err(|e| format!("read_dir {}: {e}", dir.display()))?;
        let meta = e
            .metadata()
            .map_err(|err| format!("stat {}: {err}", e.path().display()))?;
        if meta.is_dir() {
            let (f, b) = tally(&e.path())?;
            found = (found.0 + f, found.1 + b);
        } else {
            found = (found.0 + 1, found.1 + meta.len());
        }
    }
    Ok(found)
}
