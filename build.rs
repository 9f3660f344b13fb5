//! Links GCC's unwinder statically (libgcc_eh.a, what `gcc -static-libgcc`
//! does) where the system's C compiler is the linker and has it, so
//! neither binary loads libgcc_s.so.1 at start: its constructor probes the
//! CPU (cpuid, which traps to the hypervisor in a VM), and loading it cost
//! every process 0.09-0.1 ms here (an empty C program: 0.59 ms to spawn
//! and reap, 0.68 ms linked with -lgcc_s), 6% of the CLI's whole copy of a
//! small file (issue 16). std still asks for gcc_s, but the linker's
//! --as-needed drops it once the archive, taken whole and placed before
//! std, defines every _Unwind_ symbol. Panics unwind as before (the CLI
//! turns one into status 101).
//!
//! The archive comes from the compiler that builds here, so the binaries
//! need that compiler's C library at run time (GCC 12's unwinder on glibc
//! 2.35 calls _dl_find_object): RINGXFER_DYNAMIC_LIBGCC=1 keeps libgcc_s
//! for binaries meant to run on an older glibc. Nothing is done either, and
//! gcc_s is linked as before, for another target or C library, a static
//! build (crt-static links the archive itself), a linker or C compiler of
//! one's own (RUSTC_LINKER, CC and the like: their archive may not be the
//! system's), or where `cc` cannot name the archive. Where it is done, the
//! `static_unwinder` cfg is set (a test checks the result).

use std::path::PathBuf;
use std::process::Command;

/// Variables that mean the link is not the system `cc`'s, or that ask for
/// libgcc_s: any of them set and non-empty leaves the link as std makes it.
const OWN_TOOLCHAIN: [&str; 5] = [
    "RINGXFER_DYNAMIC_LIBGCC",
    "RUSTC_LINKER",
    "CC",
    "TARGET_CC",
    "HOST_CC",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(static_unwinder)");
    for name in OWN_TOOLCHAIN
        .iter()
        .copied()
        .chain(target_cc_vars().iter().map(String::as_str))
    {
        println!("cargo:rerun-if-env-changed={name}");
    }
    if let Some(archive) = static_unwinder() {
        println!("cargo:rerun-if-changed={}", archive.display());
        if let Some(dir) = archive.parent() {
            println!("cargo:rustc-link-search=native={}", dir.display());
            println!("cargo:rustc-link-lib=static:+whole-archive,-bundle=gcc_eh");
            println!("cargo:rustc-cfg=static_unwinder");
        }
    }
}

/// `CC_<target>` in the two spellings the cc crate reads.
fn target_cc_vars() -> [String; 2] {
    let target = std::env::var("TARGET").unwrap_or_default();
    [
        format!("CC_{target}"),
        format!("CC_{}", target.replace('-', "_")),
    ]
}

/// libgcc_eh.a, for a native x86_64 or aarch64 linux-gnu build linked by
/// the system's `cc`, which would otherwise link libgcc_s.so.
fn static_unwinder() -> Option<PathBuf> {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let native = var("HOST") == var("TARGET");
    let gnu = var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu";
    let arch = matches!(var("CARGO_CFG_TARGET_ARCH").as_str(), "x86_64" | "aarch64");
    let crt_static = var("CARGO_CFG_TARGET_FEATURE")
        .split(',')
        .any(|f| f == "crt-static");
    let own = OWN_TOOLCHAIN
        .iter()
        .map(|name| var(name))
        .chain(target_cc_vars().iter().map(|name| var(name)))
        .any(|value| !value.is_empty());
    if !native || !gnu || !arch || crt_static || own {
        return None;
    }
    let out = Command::new("cc")
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()?;
    // Without the archive the compiler prints the bare name back.
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    (out.status.success() && path.is_absolute() && path.is_file()).then_some(path)
}
