//! The daemon's signals: SIGHUP reloads what can change while jobs run and
//! says what needs a restart; stray signals whose default action would end
//! the process do not; SIGQUIT stops gracefully, as SIGTERM does.

use std::io::Write;
use std::os::fd::AsFd;
use std::time::Duration;

use ringxfer_ipc::FailureKind;

use crate::support::*;

fn log_has(d: &Daemon, needle: &str) -> bool {
    poll_until(Duration::from_secs(10), || d.log().contains(needle))
}

#[test]
fn sighup_reloads_limits_and_names_what_needs_a_restart() {
    let dir = tmpdir();
    let config = dir.path().join("ringxferd.toml");
    std::fs::write(&config, "max_jobs_per_user = 100\n").unwrap();
    let d = Daemon::start_with(&["--config", config.to_str().unwrap()]);
    let c = d.client();
    let (_first, _w1) = submit_idle(&c, &opts());

    std::fs::write(&config, "max_jobs_per_user = 1\npipes = 8\n").unwrap();
    d.signal(libc::SIGHUP);
    assert!(log_has(&d, "settings reloaded"), "log:\n{}", d.log());
    let log = d.log();
    assert!(log.contains("max_jobs_per_user: 100 -> 1"), "{log}");
    assert!(log.contains("needs_restart=pipes: 32 -> 8"), "{log}");

    // The new cap holds at once, for the jobs that come next.
    let (second, _w2) = submit_idle(&c, &opts());
    let f = failed(
        wait(second),
        FailureKind::LimitExceeded,
        "over the reloaded cap",
    );
    assert!(f.message.contains("max-jobs-per-user"), "{f:?}");

    // A file that no longer parses changes nothing, and says why.
    std::fs::write(&config, "pipes = [\n").unwrap();
    d.signal(libc::SIGHUP);
    assert!(log_has(&d, "were not reloaded"), "log:\n{}", d.log());
    let (third, _w3) = submit_idle(&c, &opts());
    failed(
        wait(third),
        FailureKind::LimitExceeded,
        "the cap still holds",
    );
    drop(c);
    d.stop();
}

#[test]
fn stray_signals_do_not_end_the_daemon_or_its_jobs() {
    let d = Daemon::start();
    let c = d.client();
    let (writer, reader) = std::os::unix::net::UnixStream::pair().unwrap();
    let dir = tmpdir();
    let dst_path = dir.path().join("out");
    let dst = create_dst(&dst_path);
    let job = c.submit(reader.as_fd(), dst.as_fd(), &opts()).unwrap();
    for sig in [
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGALRM,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGIO,
        libc::SIGPWR,
        libc::SIGXFSZ,
        libc::SIGXCPU,
        libc::SIGPIPE,
    ] {
        d.signal(sig);
    }
    assert!(log_has(&d, "status (SIGUSR1)"), "log:\n{}", d.log());
    let want = pattern(77, 100_000);
    (&writer).write_all(&want).unwrap();
    drop(writer);
    let done = completed(wait(job), "the job running through the signals");
    assert_eq!(done.bytes, want.len() as u64);
    assert_file_eq(&dst_path, &want);
    drop(c);
    d.stop_with(libc::SIGQUIT);
}

#[test]
fn sigquit_lets_running_jobs_finish() {
    let d = Daemon::start();
    let c = d.client();
    let (writer, reader) = std::os::unix::net::UnixStream::pair().unwrap();
    let job = c
        .submit(reader.as_fd(), dev_null().as_fd(), &opts())
        .unwrap();
    d.signal(libc::SIGQUIT);
    assert!(log_has(&d, "stop signal"), "log:\n{}", d.log());
    (&writer).write_all(&[7u8; 4096]).unwrap();
    drop(writer);
    let done = completed(wait(job), "a job running at SIGQUIT");
    assert_eq!(done.bytes, 4096);
    drop(c);
    d.wait_exit(Duration::from_secs(10));
}
