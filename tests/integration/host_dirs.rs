//! Host to host: the directories of a tree pushed to another daemon
//! (`Put::directory`): made there if no file made them (empty ones too),
//! with the source's mode and times, which the files written into them
//! before do not change, as `cp -a` and `rsync -a` leave them; and those
//! of a tree pulled, which never follow where the other daemon's listing
//! points.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use ringxfer_ipc::proto::peer::{
    encode_listing, EntryKind, FileMeta, ListEntry, Listing, PeerLimits, PeerMessage, Put,
    Timestamp, PEER_PROTOCOL_VERSION,
};
use ringxfer_ipc::proto::FailureKind;

use crate::host_to_host::{failed_kind, pull_cli, push_tree, put_of, receiver, Sender};
use crate::support::*;

/// Mode and modification time (seconds, nanoseconds) of `path`.
fn mode_and_mtime(path: &Path) -> (u32, i64, i64) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.permissions().mode() & 0o7777, m.mtime(), m.mtime_nsec())
}

/// Sets the modification (and access) time of `path` to `secs`.`nanos`.
fn set_mtime(path: &Path, secs: u64, nanos: u32) {
    let when = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
    let dir = std::fs::File::open(path).expect("open");
    dir.set_times(
        std::fs::FileTimes::new()
            .set_modified(when)
            .set_accessed(when),
    )
    .expect("set times");
}

#[test]
fn a_pushed_tree_keeps_its_directories_empty_ones_modes_and_times() {
    let export = tmpdir();
    let (receiving, address) = receiver(export.path());
    let sending = Daemon::start();
    let tree = sending.dir().join("tree");
    for dir in ["a/b/empty", "a/full", "lonely"] {
        std::fs::create_dir_all(tree.join(dir)).expect("mkdir");
    }
    std::fs::write(tree.join("a/full/f.txt"), b"data").expect("write");
    let dirs = ["", "a", "a/b", "a/b/empty", "a/full", "lonely"];
    for (i, dir) in dirs.iter().enumerate() {
        let path = tree.join(dir);
        let mode = [0o755, 0o750, 0o711, 0o700, 0o775, 0o705][i];
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    // Deepest first, so that setting a child's times leaves its parent's.
    for (i, dir) in dirs.iter().enumerate().rev() {
        set_mtime(&tree.join(dir), 1_500_000_000 + i as u64, 123_456_789);
    }

    let (_, summary) = push_tree(&sending, &receiving, &tree, address);
    assert_eq!(
        (summary["files"].as_u64(), summary["directories"].as_u64()),
        (Some(1), Some(6)),
        "{summary}"
    );
    for dir in dirs {
        let (here, there) = (tree.join(dir), export.path().join("tree").join(dir));
        assert_eq!(mode_and_mtime(&there), mode_and_mtime(&here), "{dir}");
    }
    assert_file_eq(&export.path().join("tree/a/full/f.txt"), b"data");

    // Pulled back, the directory pulled and those beneath it get the same.
    let back = sending.dir().join("back");
    let out = pull_cli(&sending, &["-r"], &format!("{address}:inbox/tree"), &back);
    assert!(
        out.status.success(),
        "{}",
        crate::cli_common::describe(&out)
    );
    for dir in &dirs {
        assert_eq!(
            mode_and_mtime(&back.join(dir)),
            mode_and_mtime(&tree.join(dir)),
            "{dir}"
        );
    }
    assert_file_eq(&back.join("a/full/f.txt"), b"data");
}

/// Offers directory `path` with `mode`, `size` bytes of data; the answer.
fn put_dir(s: &mut Sender, path: &str, mode: u32, size: u64) -> PeerMessage {
    let when = Timestamp {
        secs: 1_600_000_000,
        nanos: 5,
    };
    let put = Put {
        directory: true,
        ..put_of(1, path, size, mode, when)
    };
    s.send(&PeerMessage::Put(put));
    s.recv().expect("an answer to Put")
}

#[test]
fn a_directory_is_made_beneath_the_export_with_no_data() {
    let export = tmpdir();
    std::fs::write(export.path().join("taken"), b"a file").expect("write");
    let (d, address) = receiver(export.path());

    // Made with the directories it lacks, its mode and times set.
    let mut s = Sender::connect(address);
    let ready = put_dir(&mut s, "inbox/x/y/z", 0o701, 0);
    assert!(
        matches!(ready, PeerMessage::Ready { offset: 0, .. }),
        "{ready:?}\n{}",
        d.log()
    );
    s.send(&PeerMessage::End {
        xfer: 1,
        size: 0,
        crc32c: 0,
    });
    assert_eq!(s.recv(), Some(PeerMessage::Done { xfer: 1, crc32c: 0 }));
    assert_eq!(
        mode_and_mtime(&export.path().join("x/y/z")),
        (0o701, 1_600_000_000, 5)
    );

    // Again, over what is there now: only mode and times change.
    let ready = put_dir(&mut s, "inbox/x/y/z", 0o750, 0);
    assert!(matches!(ready, PeerMessage::Ready { .. }), "{ready:?}");
    s.send(&PeerMessage::End {
        xfer: 1,
        size: 0,
        crc32c: 0,
    });
    assert!(matches!(s.recv(), Some(PeerMessage::Done { .. })));
    assert_eq!(mode_and_mtime(&export.path().join("x/y/z")).0, 0o750);

    // A directory with data, or where a file is, is refused; the file stays.
    let mut s = Sender::connect(address);
    let answer = put_dir(&mut s, "inbox/sized", 0o755, 1);
    assert_eq!(
        failed_kind(&answer),
        FailureKind::InvalidRequest,
        "{answer:?}"
    );
    let answer = put_dir(&mut s, "inbox/taken", 0o755, 0);
    assert!(
        matches!(
            answer,
            PeerMessage::Refused { .. } | PeerMessage::Failed { .. }
        ),
        "{answer:?}"
    );
    assert_file_eq(&export.path().join("taken"), b"a file");
    assert!(!export.path().join("sized").exists());

    // A link at the directory's own name is refused: its mode would go to
    // what the link leads to (here the export itself).
    std::os::unix::fs::symlink(".", export.path().join("loop")).expect("symlink");
    let before = mode_and_mtime(export.path());
    let answer = put_dir(&mut s, "inbox/loop", 0o777, 0);
    assert!(
        matches!(
            answer,
            PeerMessage::Refused { .. } | PeerMessage::Failed { .. }
        ),
        "{answer:?}"
    );
    assert_eq!(mode_and_mtime(export.path()), before);
}

/// A daemon of the test's own that serves one `List` with `entries`, in
/// plaintext, to the first connection.
fn lying_lister(entries: Vec<ListEntry>) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(20)));
        let mut s = Sender::from_stream(stream);
        let Some(PeerMessage::Hello { .. }) = s.recv() else {
            return;
        };
        s.send(&PeerMessage::Welcome {
            version: PEER_PROTOCOL_VERSION,
            limits: PeerLimits::default(),
        });
        let Some(PeerMessage::List { xfer, .. }) = s.recv() else {
            return;
        };
        let listing = encode_listing(&Listing {
            mode: 0o755,
            mtime: Timestamp::default(),
            entries,
        });
        let when = Timestamp::default();
        s.send(&PeerMessage::Ready {
            xfer,
            offset: 0,
            meta: Some(FileMeta {
                size: listing.len() as u64,
                mode: 0o644,
                atime: when,
                mtime: when,
            }),
        });
        s.send_data(xfer, 0, &listing, 64 << 10);
        s.send(&PeerMessage::End {
            xfer,
            size: listing.len() as u64,
            crc32c: crc32c::crc32c(&listing),
        });
        // Whatever the puller says next.
        let _ = s.recv();
    });
    address
}

#[test]
fn a_listing_naming_paths_outside_the_tree_is_refused() {
    let sending = Daemon::start();
    let outside = tmpdir();
    let victim = outside.path().join("victim");
    std::fs::create_dir(&victim).expect("mkdir");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    for evil in [
        victim.display().to_string(),
        "../../../../../../tmp".to_string(),
        "a/../..".into(),
    ] {
        let entry = ListEntry {
            path: evil.clone(),
            kind: EntryKind::Dir,
            size: 0,
            mode: 0o4777,
            mtime: Timestamp::default(),
        };
        let address = lying_lister(vec![entry]);
        let dst = sending.dir().join("pulled");
        let out = pull_cli(&sending, &["-r"], &format!("{address}:inbox/t"), &dst);
        assert!(
            !out.status.success(),
            "{evil}: {}",
            crate::cli_common::describe(&out)
        );
        let err = crate::cli_common::stderr(&out);
        assert!(err.contains("not a path beneath"), "{evil}: {err}");
        assert_eq!(mode_and_mtime(&victim).0, 0o700, "{evil}");
    }
}
