//! File-to-file copies through the daemon: sizes, offsets, lengths.

use std::fs::OpenOptions;
use std::os::fd::AsFd;

use ringxfer_ipc::{FailureKind, Strategy, TransferOptions};

use crate::support::*;

#[test]
fn copies_are_byte_identical_for_edge_sizes() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    for (i, len) in [0usize, 1, 4095, 4096, (1 << 20) + 1]
        .into_iter()
        .enumerate()
    {
        copy_and_check(
            &client,
            dir.path(),
            &format!("size-{len}"),
            len,
            100 + i as u64,
        );
    }
}

#[test]
fn copy_64_mib_is_byte_identical() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    copy_and_check(&client, dir.path(), "size-64MiB", 64 << 20, 64);
}

#[test]
fn explicit_splice_strategy_is_honoured() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    let (src, data) = make_file(dir.path(), "a", 300_000, 5);
    let dst = dir.path().join("b");
    let (s, t) = (open_src(&src), create_dst(&dst));
    let o = TransferOptions {
        strategy: Strategy::Splice,
        ..opts()
    };
    let c = completed(
        wait(client.submit(s.as_fd(), t.as_fd(), &o).unwrap()),
        "splice",
    );
    assert_eq!(c.bytes, data.len() as u64);
    assert_eq!(c.strategy, Strategy::Splice);
    assert_file_eq(&dst, &data);
}

/// Runs one copy of `src` (given bytes `data`) with `o` into a fresh
/// destination, checks the bytes moved and the strategy `auto` chose, and
/// returns what the destination holds.
fn copy_with(
    client: &ringxfer_ipc::Client,
    dir: &std::path::Path,
    name: &str,
    src: &std::path::Path,
    o: &TransferOptions,
    want_bytes: u64,
    want_strategy: Strategy,
) -> Vec<u8> {
    let dst = dir.join(name);
    let (s, t) = (open_src(src), create_dst(&dst));
    let c = completed(wait(client.submit(s.as_fd(), t.as_fd(), o).unwrap()), name);
    assert_eq!(c.bytes, want_bytes, "{name}: completion bytes");
    assert_eq!(c.strategy, want_strategy, "{name}: strategy");
    drop((s, t));
    std::fs::read(&dst).unwrap()
}

#[test]
fn offset_and_length() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    let (src, data) = make_file(dir.path(), "src", 100_000, 7);

    // Offset only: from 1234 to the end.
    let o = TransferOptions {
        offset: 1234,
        ..opts()
    };
    let got = copy_with(
        &client,
        dir.path(),
        "off",
        &src,
        &o,
        100_000 - 1234,
        Strategy::CopyRange,
    );
    assert_bytes_eq(&got, &data[1234..], "offset only");

    // Length only: the first 5000 bytes.
    let o = TransferOptions {
        length: Some(5000),
        ..opts()
    };
    let got = copy_with(
        &client,
        dir.path(),
        "len",
        &src,
        &o,
        5000,
        Strategy::Buffered,
    );
    assert_bytes_eq(&got, &data[..5000], "length only");

    // Both.
    let o = TransferOptions {
        offset: 777,
        length: Some(3333),
        ..opts()
    };
    let got = copy_with(
        &client,
        dir.path(),
        "both",
        &src,
        &o,
        3333,
        Strategy::Buffered,
    );
    assert_bytes_eq(&got, &data[777..777 + 3333], "offset and length");

    // Offset exactly at the end: nothing to move, a known length of 0,
    // which the buffered strategy finishes without an operation.
    let o = TransferOptions {
        offset: 100_000,
        ..opts()
    };
    let got = copy_with(
        &client,
        dir.path(),
        "at-end",
        &src,
        &o,
        0,
        Strategy::Buffered,
    );
    assert!(got.is_empty(), "offset at EOF wrote {} bytes", got.len());
}

#[test]
fn dest_offset_writes_in_place() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    let (src, data) = make_file(dir.path(), "src", 50_000, 8);
    let pre = vec![0xAAu8; 10_000];
    let dst = dir.path().join("dst");
    std::fs::write(&dst, &pre).unwrap();
    // Open without truncating: the bytes before dest_offset must survive.
    let t = OpenOptions::new().write(true).open(&dst).unwrap();
    let s = open_src(&src);
    let o = TransferOptions {
        offset: 100,
        length: Some(8192),
        dest_offset: 4096,
        ..opts()
    };
    let c = completed(
        wait(client.submit(s.as_fd(), t.as_fd(), &o).unwrap()),
        "dest_offset",
    );
    assert_eq!(c.bytes, 8192);
    let mut want = pre[..4096].to_vec();
    want.extend_from_slice(&data[100..100 + 8192]);
    assert_file_eq(&dst, &want);

    // A dest_offset past the current end leaves a hole of zeros.
    let dst2 = dir.path().join("dst2");
    std::fs::write(&dst2, b"xy").unwrap();
    let t = OpenOptions::new().write(true).open(&dst2).unwrap();
    let o = TransferOptions {
        length: Some(10),
        dest_offset: 6,
        ..opts()
    };
    let c = completed(
        wait(client.submit(s.as_fd(), t.as_fd(), &o).unwrap()),
        "hole",
    );
    assert_eq!(c.bytes, 10);
    let mut want = b"xy\0\0\0\0".to_vec();
    want.extend_from_slice(&data[..10]);
    assert_file_eq(&dst2, &want);
}

#[test]
fn length_past_end_of_source_fails_source_short() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    let (src, _data) = make_file(dir.path(), "src", 1000, 9);
    let dst = dir.path().join("dst");
    let (s, t) = (open_src(&src), create_dst(&dst));
    let o = TransferOptions {
        length: Some(5000),
        ..opts()
    };
    let f = failed(
        wait(client.submit(s.as_fd(), t.as_fd(), &o).unwrap()),
        FailureKind::SourceShort,
        "length 5000 from a 1000-byte source",
    );
    assert!(
        f.message.contains("5000"),
        "source-short message should name the requested length 5000: {:?}",
        f.message
    );
    assert!(
        f.bytes <= 1000,
        "failure reports {} bytes moved from a 1000-byte source",
        f.bytes
    );

    // Offset plus length past the end is short too.
    let o = TransferOptions {
        offset: 900,
        length: Some(200),
        ..opts()
    };
    let t = create_dst(&dst);
    let f = failed(
        wait(client.submit(s.as_fd(), t.as_fd(), &o).unwrap()),
        FailureKind::SourceShort,
        "offset 900 length 200 from a 1000-byte source",
    );
    assert!(
        f.message.contains("200"),
        "message should name the length 200: {:?}",
        f.message
    );

    // The same connection keeps working afterwards.
    copy_and_check(&client, dir.path(), "after", 4321, 10);
}
