//! Destinations that are not plain names: symbolic links (dangling, or
//! planted by another user), the CLI's own standard output, FIFOs. Nothing
//! is resolved in user space that the kernel would refuse, and a
//! destination that a rename cannot replace is written directly.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::cli_common::*;
use crate::support::*;

fn copy_cmd(socket: &Path, src: &Path, dst: &Path) -> Command {
    let mut c = cli(socket);
    c.arg("copy").arg(src).arg(dst);
    c
}

#[test]
fn a_dangling_symlink_destination_is_refused_like_cp() {
    let d = Daemon::start();
    let (src, _) = make_file(d.dir(), "src", 5000, 900);
    let link = d.dir().join("dang");
    std::os::unix::fs::symlink("nowhere", &link).unwrap();
    let out = run(copy_cmd(&d.socket, &src, &link));
    assert_exit(&out, 1, "copy through a dangling symlink");
    assert!(
        stderr(&out).contains(&format!(
            "not writing through dangling symlink {}",
            link.display()
        )),
        "{}",
        describe(&out)
    );
    assert!(
        !d.dir().join("nowhere").exists(),
        "the link's target was created"
    );
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("nowhere"));
}

#[test]
fn a_symlink_to_a_file_replaces_the_file_and_keeps_the_link() {
    let d = Daemon::start();
    let (src, want) = make_file(d.dir(), "src", 70_000, 901);
    fs::create_dir(d.dir().join("real")).unwrap();
    let real = d.dir().join("real/file");
    fs::write(&real, b"old").unwrap();
    let link = d.dir().join("link");
    // Relative to the link's directory, as the kernel reads it.
    std::os::unix::fs::symlink("real/file", &link).unwrap();
    let out = run(copy_cmd(&d.socket, &src, &link));
    assert_exit(&out, 0, "copy through a symlink");
    assert_file_eq(&real, &want);
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
}

/// Sets fs.protected_symlinks for the test's life and puts the old value back.
struct ProtectedSymlinks(String);

impl ProtectedSymlinks {
    const PATH: &'static str = "/proc/sys/fs/protected_symlinks";

    fn on() -> ProtectedSymlinks {
        let old = fs::read_to_string(Self::PATH).expect("read fs.protected_symlinks");
        fs::write(Self::PATH, "1").expect("set fs.protected_symlinks=1");
        ProtectedSymlinks(old)
    }
}

impl Drop for ProtectedSymlinks {
    fn drop(&mut self) {
        let _ = fs::write(Self::PATH, self.0.trim());
    }
}

#[test]
#[ignore = "needs root: .ci/run runs it (--include-ignored)"]
fn a_symlink_planted_by_another_user_in_a_sticky_directory_is_not_followed() {
    require_root("root to set fs.protected_symlinks and give a link to another user");
    let _guard = ProtectedSymlinks::on();
    let d = Daemon::start();
    let (src, _) = make_file(d.dir(), "src", 3000, 902);
    let precious = d.dir().join("precious");
    fs::write(&precious, b"root's own data").unwrap();
    // A /tmp of our own: sticky and world-writable, owned by root.
    let shared = world_tmpdir();
    let sticky = shared.path().join("sticky");
    fs::create_dir(&sticky).unwrap();
    fs::set_permissions(&sticky, fs::Permissions::from_mode(0o1777)).unwrap();
    // Another user's link there, pointing at root's file.
    let link = sticky.join("report.txt");
    std::os::unix::fs::symlink(&precious, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();

    let out = run(copy_cmd(&d.socket, &src, &link));
    assert_exit(
        &out,
        1,
        "copy through another user's link in a sticky directory",
    );
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        describe(&out)
    );
    assert_eq!(fs::read(&precious).unwrap(), b"root's own data");
    let left: Vec<_> = fs::read_dir(&sticky)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("report.txt")]);
}

#[test]
fn dev_stdout_into_a_pipe_gets_the_bytes() {
    let d = Daemon::start();
    for (len, seed) in [(100usize, 903u64), (300_000, 904)] {
        let (src, want) = make_file(d.dir(), &format!("src-{len}"), len, seed);
        let mut c = copy_cmd(&d.socket, &src, Path::new("/dev/stdout"));
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let out = run(c);
        assert_exit(&out, 0, "copy to /dev/stdout (a pipe)");
        assert_bytes_eq(&out.stdout, &want, "what the pipe got");
    }
}

#[test]
fn dev_stdout_appended_by_the_shell_keeps_its_file_and_appends() {
    let d = Daemon::start();
    let (src, want) = make_file(d.dir(), "src", 20_000, 905);
    let log = d.dir().join("log");
    fs::write(&log, b"first line\n").unwrap();
    let ino = fs::metadata(&log).unwrap().ino();
    // The shell opens `log` for appending and hands it over as stdout.
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(r#""$@" >> "$LOG""#)
        .arg("sh")
        .arg(CLI_BIN)
        .args(copy_cmd(&d.socket, &src, Path::new("/dev/stdout")).get_args())
        .env("LOG", &log);
    // `cli`'s environment, on the shell that runs it.
    for (k, v) in cli(&d.socket).get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let out = run(c);
    assert_exit(&out, 0, "copy to /dev/stdout >> log");
    assert_eq!(
        fs::metadata(&log).unwrap().ino(),
        ino,
        "the file was replaced"
    );
    let mut expected = b"first line\n".to_vec();
    expected.extend_from_slice(&want);
    assert_file_eq(&log, &expected);
}

#[test]
fn a_fifo_destination_is_written_directly() {
    let d = Daemon::start();
    let (src, want) = make_file(d.dir(), "src", 200_000, 906);
    let fifo = d.dir().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a NUL-terminated path alive for the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let reader_path = fifo.clone();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        fs::File::open(&reader_path)
            .and_then(|mut f| f.read_to_end(&mut got))
            .expect("read the fifo");
        got
    });
    let out = run(copy_cmd(&d.socket, &src, &fifo));
    assert_exit(&out, 0, "copy into a FIFO");
    assert_bytes_eq(&reader.join().unwrap(), &want, "what the FIFO carried");
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
}
