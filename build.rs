//! Links GCC's unwinder statically (libgcc_eh.a, what `gcc -static-libgcc`
//! does) where the C compiler has it, so neither binary loads libgcc_s.so.1
//! at start: its constructor probes the CPU (cpuid, which traps to the
//! hypervisor in a VM), and loading it cost every process 0.09-0.1 ms
//! here (an empty C program: 0.59 ms to spawn and reap, 0.68 ms linked with
//! -lgcc_s), 6% of the CLI's whole copy of a small file (issue 16). std
//! still asks for gcc_s, but the linker's --as-needed drops it once the
//! archive, taken whole and placed before std, defines every _Unwind_
//! symbol. Panics unwind as before (the CLI turns one into status 101).
//!
//! Nothing is done, and gcc_s is linked as before, for another target or C
//! library, a static build (crt-static links the archive itself), or where
//! the compiler cannot name the archive.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CC");
    if let Some(dir) = static_unwinder_dir() {
        println!("cargo:rustc-link-search=native={}", dir.display());
        println!("cargo:rustc-link-lib=static:+whole-archive,-bundle=gcc_eh");
    }
}

/// The directory holding libgcc_eh.a, for a native linux-gnu build that
/// would otherwise link libgcc_s.so.
fn static_unwinder_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let native = var("HOST") == var("TARGET");
    let gnu = var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu";
    let crt_static = var("CARGO_CFG_TARGET_FEATURE")
        .split(',')
        .any(|f| f == "crt-static");
    if !native || !gnu || crt_static {
        return None;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let out = Command::new(cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()?;
    // Without the archive the compiler prints the bare name back.
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    if !out.status.success() || !path.is_absolute() || !path.is_file() {
        return None;
    }
    path.parent().map(PathBuf::from)
}
