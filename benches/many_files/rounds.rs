//! The rounds of one case (file system, tree, cache state): each on a
//! fresh file system, the source written, every contender's copy timed and
//! checked.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::fresh::{self, FsKind, Scratch};
use crate::lineup::{Contender, Ringxfer, Sample};
use crate::support::cache::{cached_fraction, drop_caches, sync_all};
use crate::support::{self, Result};
use crate::tree::{Pool, Shape, Tree};

/// The smallest image: sparse, so only what is written takes room.
const MIN_IMAGE: u64 = 16 << 30;
/// Source files whose residency is checked before each run.
const RESIDENCY_SAMPLE: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Cache {
    Hot,
    Cold,
}

impl Cache {
    pub fn key(self) -> &'static str {
        match self {
            Cache::Hot => "hot",
            Cache::Cold => "cold",
        }
    }
}

/// What every round of every case uses.
pub struct Ctx {
    /// Where the images and mount points go.
    pub base: PathBuf,
    pub contenders: Vec<Contender>,
    pub rx: Ringxfer,
    pub pool: Pool,
    pub rounds: usize,
    /// Rounds made so far: names the images.
    pub made: usize,
}

/// The figures of one file system, tree and cache state.
pub struct Case {
    /// The file system's name, or "dir" for a directory without one.
    pub fs: &'static str,
    pub shape: Shape,
    pub cache: Cache,
    pub files: usize,
    pub dirs: usize,
    pub bytes: u64,
    /// samples[contender][round]
    pub samples: Vec<Vec<Sample>>,
}

/// The image size for `tree`: room for the source and every copy, and
/// inodes for them at ext4's default of one per 16 KiB.
fn image_size(tree: &Tree, copies: usize) -> u64 {
    let entries = (tree.files.len() + tree.dirs.len() + 1) as u64;
    let copies = copies as u64 + 1;
    let data = copies * (tree.bytes + entries * 4096);
    let inodes = copies * entries * (16 << 10);
    (data.max(inodes) * 3 / 2).max(MIN_IMAGE)
}

/// Fails early when the disk under the images cannot hold a round.
fn check_room(base: &Path, tree: &Tree, copies: usize) -> Result<()> {
    let entries = (tree.files.len() + tree.dirs.len()) as u64;
    let need = (copies as u64 + 1) * (tree.bytes + entries * 4096) * 5 / 4 + (1 << 30);
    match support::disk_space(base) {
        Some((_, free)) if free < need => Err(format!(
            "{} has {} free; a round of the {} tree needs about {}",
            base.display(),
            ringxfer::size::format_bytes(free),
            tree.shape.key(),
            ringxfer::size::format_bytes(need)
        )),
        _ => Ok(()),
    }
}

/// The warm-up round and the measured ones of one case.
pub fn measure(ctx: &mut Ctx, fs: FsKind, tree: &Tree, cache: Cache) -> Result<Case> {
    check_room(&ctx.base, tree, ctx.contenders.len())?;
    let fs_name = if fresh::can_mount() { fs.key() } else { "dir" };
    println!();
    println!(
        "{fs_name} / {} ({}) / {}:",
        tree.shape.key(),
        tree.describe(),
        cache.key()
    );
    let mut samples = vec![Vec::new(); ctx.contenders.len()];
    for round in 0..=ctx.rounds {
        let got = one_round(ctx, fs, tree, cache, round)?;
        if round > 0 {
            for (s, g) in samples.iter_mut().zip(got) {
                s.push(g);
            }
        }
    }
    Ok(Case {
        fs: fs_name,
        shape: tree.shape,
        cache,
        files: tree.files.len(),
        dirs: tree.dirs.len() + 1,
        bytes: tree.bytes,
        samples,
    })
}

/// One round on a fresh file system: the source written, then every
/// contender's copy, timed and checked. Round 0 is the warm-up.
fn one_round(
    ctx: &mut Ctx,
    fs: FsKind,
    tree: &Tree,
    cache: Cache,
    round: usize,
) -> Result<Vec<Sample>> {
    let t = Instant::now();
    ctx.made += 1;
    let size = image_size(tree, ctx.contenders.len());
    let scratch = Scratch::new(&ctx.base, ctx.made, fs, size)?;
    let src = scratch.path().join("src");
    tree.write(&src, &ctx.pool)?;
    sync_all();
    if cache == Cache::Hot {
        tree.read_all(&src)?;
    }
    let setup = t.elapsed().as_secs_f64();
    let sample_files = tree.some_files(&src, RESIDENCY_SAMPLE);
    let n = ctx.contenders.len();
    let mut out = vec![None; n];
    let mut line = Vec::new();
    for i in crate::support::peers::turn_order(n, round) {
        let c = &ctx.contenders[i];
        let dst = scratch.path().join(c.who.key());
        prepare(cache, &sample_files, c.who.label())?;
        let used0 = scratch.used();
        let mut sample = c.run(&ctx.rx, &src, &dst)?;
        sync_all();
        if let (Some(a), Some(b)) = (used0, scratch.used()) {
            sample.disk = b.saturating_sub(a);
        }
        tree.check(&dst, &ctx.pool, c.who.label())?;
        line.push(format!("{} {:.3} s", c.who.key(), sample.wall));
        out[i] = Some(sample);
    }
    let label = match round {
        0 => "warm-up".to_string(),
        r => format!("round {r}/{}", ctx.rounds),
    };
    if round == 0 {
        println!("  round file system: {}", scratch.describe());
    }
    drop(scratch);
    println!(
        "  {label:<11} {}  (fs made, source written in {setup:.1} s; round {:.1} s)",
        line.join(", "),
        t.elapsed().as_secs_f64()
    );
    Ok(out.into_iter().flatten().collect())
}

/// Hot: the file system synced, the source checked to be cached. Cold:
/// the page cache dropped, the source checked to be out of it.
fn prepare(cache: Cache, sample_files: &[PathBuf], who: &str) -> Result<()> {
    match cache {
        Cache::Hot => sync_all(),
        Cache::Cold => drop_caches().map_err(|e| format!("drop_caches: {e}"))?,
    }
    let cached = cached_fraction(sample_files.iter().map(PathBuf::as_path));
    match (cache, cached) {
        (Cache::Hot, Some(f)) if f < 0.99 => println!(
            "  WARNING: only {:.1}% of a sample of the source is cached before {who}'s hot run",
            f * 100.0
        ),
        (Cache::Cold, Some(f)) if f > 0.01 => println!(
            "  WARNING: {:.1}% of a sample of the source is still cached after drop_caches, before {who}",
            f * 100.0
        ),
        _ => {}
    }
    Ok(())
}
