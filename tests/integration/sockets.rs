//! File to TCP socket and TCP socket to file, over 127.0.0.1.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use ringxfer_ipc::{Strategy, TransferOptions};

use crate::support::*;

/// A connected TCP pair over 127.0.0.1: (the connecting side, the accepted side).

#[test]
fn file_to_tcp_socket() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    // Much bigger than the socket buffers, so the daemon sees partial sends.
    let len = (8 << 20) + 17;
    let (src, data) = make_file(dir.path(), "src", len, 31);

    let (conn, reader) = tcp_to_reader();
    let s = open_src(&src);
    let h = client.submit(s.as_fd(), conn.as_fd(), &opts()).unwrap();
    let r = wait(h);
    // The daemon must have closed its copy of the socket: ours is the last.
    drop(conn);
    let got = reader.join().unwrap().expect(
        "test reader: no EOF within 30 s of the job ending (daemon still holds the socket?)",
    );
    let c = completed(r, "file -> tcp");
    assert_eq!(c.bytes, len as u64);
    assert_eq!(c.strategy, Strategy::Splice);
    assert_bytes_eq(&got, &data, "bytes received over TCP");
}

#[test]
fn file_to_tcp_socket_with_offset_and_length() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    let (src, data) = make_file(dir.path(), "src", 1 << 20, 32);
    let (conn, mut peer) = tcp_pair();
    let s = open_src(&src);
    let o = TransferOptions {
        offset: 1000,
        length: Some(300_000),
        ..opts()
    };
    let h = client.submit(s.as_fd(), conn.as_fd(), &o).unwrap();
    // Read concurrently: 300 kB may not fit in the socket buffers.
    let reader = thread::spawn(move || {
        peer.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut v = Vec::new();
        peer.read_to_end(&mut v).map(|_| v)
    });
    let c = completed(wait(h), "file -> tcp with offset/length");
    drop(conn);
    let got = reader.join().unwrap().expect("reader: no EOF");
    assert_eq!(c.bytes, 300_000);
    assert_bytes_eq(&got, &data[1000..301_000], "bytes received over TCP");
}

#[test]
fn tcp_socket_to_file_until_eof() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    let len = (4 << 20) + 3;
    let data = pattern(33, len);
    let (mut writer, server_side) = tcp_pair();
    let dst = dir.path().join("dst");
    let t = create_dst(&dst);
    let h = client
        .submit(server_side.as_fd(), t.as_fd(), &opts())
        .unwrap();
    // Our copy of the reading end is not needed; the daemon has its own.
    drop(server_side);
    drop(t);
    let w = {
        let data = data.clone();
        thread::spawn(move || {
            writer.write_all(&data)?;
            writer.shutdown(std::net::Shutdown::Write)
        })
    };
    let c = completed(wait(h), "tcp -> file at EOF");
    w.join().unwrap().expect("test writer");
    assert_eq!(c.bytes, len as u64);
    assert_eq!(c.strategy, Strategy::Splice);
    assert_file_eq(&dst, &data);
}

#[test]
fn tcp_socket_to_file_stops_at_length_without_eof() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    let length = 1 << 20;
    let excess = 1000;
    let data = pattern(34, length + excess);
    let (mut writer, mut server_side) = tcp_pair();
    let dst = dir.path().join("dst");
    let t = create_dst(&dst);
    let o = TransferOptions {
        length: Some(length as u64),
        ..opts()
    };
    let h = client.submit(server_side.as_fd(), t.as_fd(), &o).unwrap();
    drop(t);
    // Write more than `length` and keep the connection open: the job must
    // end at `length`, not wait for EOF.
    let (close_tx, close_rx) = mpsc::channel::<()>();
    let w = {
        let data = data.clone();
        thread::spawn(move || -> std::io::Result<()> {
            writer.write_all(&data)?;
            let _ = close_rx.recv_timeout(Duration::from_secs(60));
            Ok(())
        })
    };
    let r = wait_within(h, Duration::from_secs(20));
    let c = completed(r, "tcp -> file with length (writer still open)");
    assert_eq!(c.bytes, length as u64);
    assert_file_eq(&dst, &data[..length]);

    // The daemon must not have read past `length`: the rest is still in the
    // socket for us.
    close_tx.send(()).unwrap();
    w.join().unwrap().expect("test writer");
    server_side
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    server_side
        .read_to_end(&mut rest)
        .expect("read the rest of the stream");
    assert_bytes_eq(
        &rest,
        &data[length..],
        "bytes left in the socket after the job",
    );
}

#[test]
fn tcp_socket_to_file_with_dest_offset() {
    let d = Daemon::start();
    let client = d.client();
    let dir = tmpdir();
    let data = pattern(35, 200_000);
    let (mut writer, server_side) = tcp_pair();
    let dst = dir.path().join("dst");
    std::fs::write(&dst, vec![0x55u8; 512]).unwrap();
    let t = std::fs::OpenOptions::new().write(true).open(&dst).unwrap();
    let o = TransferOptions {
        dest_offset: 512,
        ..opts()
    };
    let h = client.submit(server_side.as_fd(), t.as_fd(), &o).unwrap();
    drop((server_side, t));
    let w = {
        let data = data.clone();
        thread::spawn(move || {
            writer.write_all(&data)?;
            writer.shutdown(std::net::Shutdown::Write)
        })
    };
    let c = completed(wait(h), "tcp -> file with dest_offset");
    w.join().unwrap().unwrap();
    assert_eq!(c.bytes, data.len() as u64);
    let mut want = vec![0x55u8; 512];
    want.extend_from_slice(&data);
    assert_file_eq(&dst, &want);
}
