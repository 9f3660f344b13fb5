//! The four source trees: their shape, writing them, reading them once, and
//! checking a copy of one.
//!
//! Every file's bytes are a window of one seeded pool, at an offset of its
//! own: writing needs no generator per file, the windows differ, so a copy
//! that swaps two files' bytes is caught, and a copy is checked against the
//! pool without reading the source again.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::support::Result;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// Where the windows start: offsets step by a prime through this span.
const POOL_SPAN: usize = 16 << 20;
/// The largest file of any tree (mixed's sizes stop here).
const MAX_FILE: u64 = 4 * MIB;
/// The mixed tree's sizes: ln(size) is normal around ln(3 KiB) with this
/// spread, which puts the median at 3 KiB, the mean near 11 KiB and the
/// largest of 60,000 files at a few MiB, as in a source checkout.
const MIXED_MEDIAN: f64 = 3072.0;
const MIXED_SIGMA: f64 = 1.6;
/// One mixed file in this many is empty (`__init__.py`, `.gitkeep`).
const MIXED_EMPTY_ONE_IN: u64 = 50;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Shape {
    Flat,
    Deep,
    Large,
    Mixed,
}

impl Shape {
    pub const ALL: [Shape; 4] = [Shape::Flat, Shape::Deep, Shape::Large, Shape::Mixed];

    pub fn key(self) -> &'static str {
        match self {
            Shape::Flat => "flat",
            Shape::Deep => "deep",
            Shape::Large => "large",
            Shape::Mixed => "mixed",
        }
    }

    /// The bytes of every this many'th file are compared (all of them where
    /// the files are few or large, a sample where there are many).
    fn sample_every(self) -> usize {
        match self {
            Shape::Flat | Shape::Large => 1,
            Shape::Deep | Shape::Mixed => 97,
        }
    }

    /// Files at scale 1.
    fn files(self) -> f64 {
        match self {
            Shape::Flat => 10_000.0,
            Shape::Deep => 100_000.0,
            Shape::Large => 1_000.0,
            Shape::Mixed => 60_000.0,
        }
    }
}

/// One file of a tree: where, how big, and where its bytes start in the pool.
pub struct FileSpec {
    pub path: PathBuf,
    pub size: u64,
    offset: usize,
}

/// A tree as it is written: directories parents first, then files.
pub struct Tree {
    pub shape: Shape,
    pub dirs: Vec<PathBuf>,
    pub files: Vec<FileSpec>,
    pub bytes: u64,
}

/// The bytes every file is a window of.
pub struct Pool(Vec<u8>);

impl Pool {
    pub fn new() -> Pool {
        Pool(crate::support::data::seeded_bytes(
            17,
            POOL_SPAN as u64 + MAX_FILE,
        ))
    }

    fn bytes(&self, f: &FileSpec) -> &[u8] {
        &self.0[f.offset..f.offset + f.size as usize]
    }
}

/// xorshift64: the mixed tree's shape, from a fixed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

fn file(i: usize, path: PathBuf, size: u64) -> FileSpec {
    FileSpec {
        path,
        size,
        // 4093 is prime, so offsets differ for the first POOL_SPAN files.
        offset: i.wrapping_mul(4093) % POOL_SPAN,
    }
}

/// The tree of `shape` with its file count times `scale` (at least one).
pub fn build(shape: Shape, scale: f64) -> Tree {
    let n = ((shape.files() * scale).round() as usize).max(1);
    let (dirs, files) = match shape {
        Shape::Flat => (vec![], flat(n, 4 * KIB)),
        Shape::Large => (vec![], flat(n, MIB)),
        Shape::Deep => deep(n),
        Shape::Mixed => mixed(n, ((4_000.0 * scale).round() as usize).max(1)),
    };
    let bytes = files.iter().map(|f| f.size).sum();
    Tree {
        shape,
        dirs,
        files,
        bytes,
    }
}

fn flat(n: usize, size: u64) -> Vec<FileSpec> {
    (0..n)
        .map(|i| file(i, PathBuf::from(format!("f{i:05}")), size))
        .collect()
}

/// Empty files, ten to a directory, the directories four levels deep with
/// ten to a level: file i is in leaf i / 10, whose digits name its path.
fn deep(n: usize) -> (Vec<PathBuf>, Vec<FileSpec>) {
    let mut dirs = Vec::new();
    let leaf = |j: usize, levels: usize| -> PathBuf {
        let digits = [j / 1000, (j / 100) % 10, (j / 10) % 10, j % 10];
        ["a", "b", "c", "d"]
            .iter()
            .zip(digits)
            .take(levels)
            .map(|(p, d)| format!("{p}{d}"))
            .collect()
    };
    for j in 0..n.div_ceil(10) {
        for (levels, every) in [(1, 1000), (2, 100), (3, 10), (4, 1)] {
            if j % every == 0 {
                dirs.push(leaf(j, levels));
            }
        }
    }
    let files = (0..n)
        .map(|i| file(i, leaf(i / 10, 4).join(format!("f{}", i % 10)), 0))
        .collect();
    (dirs, files)
}

/// A source checkout: `ndirs` directories, each under a random earlier one
/// (so depths vary, most between 4 and 12), files put more often in the
/// older, shallower ones, sizes log-normal.
fn mixed(n: usize, ndirs: usize) -> (Vec<PathBuf>, Vec<FileSpec>) {
    let mut rng = Rng(0x5EED_0017_C0FF_EE11);
    let mut dirs = vec![PathBuf::new()];
    for k in 1..ndirs {
        let parent = dirs[(rng.next() % dirs.len() as u64) as usize].clone();
        dirs.push(parent.join(format!("d{k}")));
    }
    let files = (0..n)
        .map(|i| {
            let u = rng.unit();
            let dir = &dirs[((u * u * ndirs as f64) as usize).min(ndirs - 1)];
            let size = if rng.next().is_multiple_of(MIXED_EMPTY_ONE_IN) {
                0
            } else {
                let s = MIXED_MEDIAN * (MIXED_SIGMA * rng.normal()).exp();
                (s.round() as u64).clamp(1, MAX_FILE)
            };
            file(i, dir.join(format!("f{i}")), size)
        })
        .collect();
    dirs.remove(0); // the root is the copy itself
    (dirs, files)
}

impl Tree {
    /// "N files (B bytes) in D directories", for headers.
    pub fn describe(&self) -> String {
        format!(
            "{} files, {} in {} director{}",
            self.files.len(),
            ringxfer::size::format_bytes(self.bytes),
            self.dirs.len() + 1,
            if self.dirs.is_empty() { "y" } else { "ies" }
        )
    }

    /// Writes the tree at `root` (which must not exist) from `pool`.
    pub fn write(&self, root: &Path, pool: &Pool) -> Result<()> {
        let mkdir = |d: &Path| fs::create_dir(d).map_err(|e| format!("mkdir {}: {e}", d.display()));
        mkdir(root)?;
        for d in &self.dirs {
            mkdir(&root.join(d))?;
        }
        for f in &self.files {
            let p = root.join(&f.path);
            fs::write(&p, pool.bytes(f)).map_err(|e| format!("write {}: {e}", p.display()))?;
        }
        Ok(())
    }

    /// Lists every directory and reads every file under `root`, so a hot
    /// run finds the source's pages, inodes and directory blocks cached.
    pub fn read_all(&self, root: &Path) -> Result<()> {
        walk(root, &mut |_, _| Ok(()))?;
        let mut buf = Vec::with_capacity(MAX_FILE as usize);
        for f in &self.files {
            let p = root.join(&f.path);
            buf.clear();
            File::open(&p)
                .and_then(|mut file| file.read_to_end(&mut buf))
                .map_err(|e| format!("read {}: {e}", p.display()))?;
        }
        Ok(())
    }

    /// Up to `n` of the non-empty files under `root`, spread over the tree.
    pub fn some_files(&self, root: &Path, n: usize) -> Vec<PathBuf> {
        let full: Vec<&FileSpec> = self.files.iter().filter(|f| f.size > 0).collect();
        let step = full.len().div_ceil(n.max(1)).max(1);
        full.iter()
            .step_by(step)
            .map(|f| root.join(&f.path))
            .collect()
    }

    /// `dst` holds exactly this tree: the same directories and files,
    /// nothing else, every file its size, and the bytes of a sample of
    /// files (every one for flat and large) those of the source.
    pub fn check(&self, dst: &Path, pool: &Pool, who: &str) -> Result<()> {
        let fail = |what: String| Err(format!("{who}: {what} in {}", dst.display()));
        // What is there: None for a directory, Some(size) for a file.
        let mut found: HashMap<PathBuf, Option<u64>> = HashMap::new();
        walk(dst, &mut |rel, size| {
            found.insert(rel.to_path_buf(), size);
            Ok(())
        })
        .map_err(|e| format!("{who}: {e}"))?;
        for d in &self.dirs {
            match found.remove(d) {
                Some(None) => {}
                Some(Some(_)) => {
                    return fail(format!("{} is a file, not a directory", d.display()))
                }
                None => return fail(format!("directory {} is missing", d.display())),
            }
        }
        for f in &self.files {
            match found.remove(&f.path) {
                Some(Some(size)) if size == f.size => {}
                Some(Some(size)) => {
                    return fail(format!(
                        "{} has {size} bytes, not {}",
                        f.path.display(),
                        f.size
                    ))
                }
                Some(None) => return fail(format!("{} is a directory", f.path.display())),
                None => return fail(format!("file {} is missing", f.path.display())),
            }
        }
        if let Some(extra) = found.keys().next() {
            return fail(format!(
                "{} entries that are not in the source, such as {}",
                found.len(),
                extra.display()
            ));
        }
        for f in self.files.iter().step_by(self.shape.sample_every()) {
            let p = dst.join(&f.path);
            let got = fs::read(&p).map_err(|e| format!("{who}: read {}: {e}", p.display()))?;
            if got != pool.bytes(f) {
                return fail(format!("{} differs from its source", f.path.display()));
            }
        }
        Ok(())
    }
}

/// Calls `each` with the path under `root` of every entry below it, and
/// None for a directory, its size for a regular file; anything else (a
/// link, a device) is an error.
fn walk(root: &Path, each: &mut dyn FnMut(&Path, Option<u64>) -> Result<()>) -> Result<()> {
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let rd = fs::read_dir(&dir).map_err(|e| format!("read {}: {e}", dir.display()))?;
        for entry in rd {
            let entry = entry.map_err(|e| format!("read {}: {e}", dir.display()))?;
            let path = entry.path();
            let meta = entry
                .metadata()
                .map_err(|e| format!("stat {}: {e}", path.display()))?;
            let rel = path.strip_prefix(root).map_err(|e| e.to_string())?;
            if meta.is_dir() {
                each(rel, None)?;
                todo.push(path);
            } else if meta.is_file() {
                each(rel, Some(meta.len()))?;
            } else {
                return Err(format!("{} is neither file nor directory", path.display()));
            }
        }
    }
    Ok(())
}
