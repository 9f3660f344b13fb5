//! `ringxfer copy FILE HOST:EXPORT/PATH`: a push to another daemon. The
//! CLI connects to it (so the local user's rights and routes apply to the
//! connection, as for `send`), and the local engine speaks the peer wire on
//! that socket: the file lands under PATH in the other daemon's export only
//! once it is whole and its CRC-32C matches.
//!
//! A destination is remote by scp's rule: a colon before the first slash
//! (`host:inbox/a`, `10.0.0.2:7300:inbox/a`, `[::1]:7300:inbox/a`); write a
//! local name with a colon as `./a:b`.

use std::ffi::OsStr;
use std::net::TcpStream;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use ringxfer_ipc::proto::peer::{RemotePath, DEFAULT_PORT};

use crate::context::{Context, CopyArgs};
use crate::error::{CliError, Exit};
use crate::files::open_source;
use crate::job_plan;
use crate::remote_stripes;
use crate::report::{self, Op, Subject};

/// A remote destination, as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// What `TcpStream::connect` takes: `host:port`.
    pub address: String,
    /// `EXPORT` or `EXPORT/dir/file`, as written (a trailing `/` kept).
    pub path: String,
}

impl Remote {
    /// `Some` when `dst` names another host (scp's rule, above).
    pub fn parse(dst: &Path) -> Option<Remote> {
        let text = dst.to_str()?;
        let head = text.split('/').next()?;
        let (host, export) = split_host(head)?;
        let rest = &text[head.len()..];
        let address = if host_has_port(host) {
            host.to_string()
        } else {
            format!("{host}:{DEFAULT_PORT}")
        };
        Some(Remote {
            address,
            path: format!("{export}{rest}"),
        })
    }

    /// The remote path of `src` pushed here: into the export or a
    /// directory (`inbox`, `inbox/dir/`) it keeps its own name, as cp does.
    pub fn path_for(&self, src: &Path) -> Result<RemotePath, CliError> {
        let name = src.file_name().map(OsStr::as_bytes).unwrap_or_default();
        let into_dir = !self.path.contains('/') || self.path.ends_with('/');
        let text = if into_dir {
            let name = std::str::from_utf8(name).map_err(|_| {
                CliError::usage(format!("{}: a remote name must be UTF-8", src.display()))
            })?;
            format!("{}/{name}", self.path.trim_end_matches('/'))
        } else {
            self.path.clone()
        };
        RemotePath::new(&text).map_err(|e| CliError::usage(format!("remote path {text}: {e}")))
    }
}

/// `host` and `export` of `head` (the text before the first `/`), split at
/// its last colon; None without one, or with nothing on either side.
fn split_host(head: &str) -> Option<(&str, &str)> {
    let at = head.rfind(':')?;
    let (host, export) = (&head[..at], &head[at + 1..]);
    (!host.is_empty() && !export.is_empty()).then_some((host, export))
}

/// Whether `host` ends in a port: `name:7300`, `1.2.3.4:7300`, `[::1]:7300`.
fn host_has_port(host: &str) -> bool {
    match host.rsplit_once(':') {
        Some((name, port)) => {
            port.parse::<u16>().is_ok() && (!name.contains(':') || name.ends_with(']'))
        }
        None => false,
    }
}

/// Pushes the one source of `args` to `remote`.
pub fn push(ctx: &Context, args: &CopyArgs<'_>, remote: &Remote) -> Exit {
    if let Err(err) = check_flags(args) {
        ctx.out.failed(Op::Copy, None, &err);
        return err.exit;
    }
    let src = &args.sources[0];
    let subject = Subject {
        op: Op::Copy,
        src: src.display().to_string(),
        dst: format!("{}:{}", remote.address, remote.path),
    };
    let result = run(ctx, args, remote, &subject);
    crate::signals::take();
    match result {
        Ok(Pushed::Done(done)) => {
            ctx.out.transfer_done(&subject, &done);
            Exit::Done
        }
        Ok(Pushed::Detached(job)) => {
            ctx.out.detached(&subject, job);
            Exit::Done
        }
        Err(err) => {
            ctx.out.failed(Op::Copy, Some(&subject), &err);
            err.exit
        }
    }
}

/// How a push ended here: done, or handed to the daemon (--detach).
enum Pushed {
    Done(crate::report::Finished),
    Detached(u64),
}

fn run(
    ctx: &Context,
    args: &CopyArgs<'_>,
    remote: &Remote,
    subject: &Subject,
) -> Result<Pushed, CliError> {
    let src = &args.sources[0];
    let path = remote.path_for(src)?;
    let (file, _) = open_source(src, "a directory goes to another host with -r")?;
    let engine = ctx.engine(&args.job)?;
    let streams = streams(args, &file)?;
    if streams > 1 {
        let mut plan = ctx.plan(args.range, args.job, args.dest.fsync);
        // --rate-limit caps the file's streams together.
        plan.whole_command = true;
        let (file, size) = (&file, file.metadata().map_or(0, |m| m.len()));
        let to = (remote.address.as_str(), &path);
        return remote_stripes::push(&engine, subject, (file, size), to, streams, plan)
            .map(Pushed::Done);
    }
    let socket = TcpStream::connect(&remote.address)
        .map_err(|err| CliError::io(format!("connect to {}", remote.address), &err))?;
    let mut plan = ctx.plan(args.range, args.job, args.dest.fsync);
    plan.resume = args.dest.resume;
    if args.job.detach {
        return job_plan::detach_remote(&engine, subject, &file, &socket, &path, plan)
            .map(Pushed::Detached);
    }
    job_plan::run_remote(&engine, subject, &file, &socket, &path, false, plan).map(Pushed::Done)
}

/// How many streams the push of `file` goes as: `--streams`, fewer for a
/// file too small for each to carry 8 MiB; one, with a note, for a push
/// that resumes or is detached (stripes do neither).
fn streams(args: &CopyArgs<'_>, file: &std::fs::File) -> Result<u32, CliError> {
    let asked = args.dest.streams.max(1);
    if asked == 1 {
        return Ok(1);
    }
    if args.range.is_partial() {
        return Err(CliError::usage(
            "--streams pushes a whole file: not with --offset or --length",
        ));
    }
    if args.dest.resume || args.job.detach {
        report::note("--resume and --detach push the file as one stream");
        return Ok(1);
    }
    let size = file
        .metadata()
        .map_err(|err| CliError::io(format!("stat {}", args.sources[0].display()), &err))?
        .len();
    Ok(remote_stripes::stripes_for(size, asked))
}

/// A job that went on with a kept connection (`PeerConnection::Continue`)
/// failed before anything moved because the connection was no longer
/// there (closed by the other daemon while it rested, or not kept): worth
/// once more on a new connection.
pub fn kept_connection_lost(err: &ringxfer_ipc::JobError) -> bool {
    use ringxfer_ipc::proto::FailureKind;
    matches!(
        err,
        ringxfer_ipc::JobError::Failed {
            kind: FailureKind::PeerGone | FailureKind::InvalidRequest,
            bytes: 0,
            ..
        }
    )
}

/// What a push cannot do (yet), refused before anything is opened.
pub fn check_flags(args: &CopyArgs<'_>) -> Result<(), CliError> {
    let refuse = |what: &str| {
        Err(CliError::usage(format!(
            "{what} to another host is not supported yet"
        )))
    };
    if args.sources.len() != 1 {
        return refuse("copying several files");
    }
    if args.recursive && (args.range.is_partial() || args.job.detach || args.dest.streams > 1) {
        return Err(CliError::usage(
            "--offset, --length, --detach and --streams take one file, not -r",
        ));
    }
    if args.dest.in_place || args.dest.no_clobber || args.dest.update || args.backup.is_some() {
        return refuse("--in-place, --no-clobber, --update or --backup");
    }
    Ok(())
}

/// What a pull (of a file, or with -r of a tree) cannot do (yet), refused
/// before anything is opened.
pub fn check_pull_flags(args: &CopyArgs<'_>) -> Result<(), CliError> {
    let refuse = |what: &str| {
        Err(CliError::usage(format!(
            "{what} from another host is not supported yet"
        )))
    };
    if args.sources.len() != 1 {
        return refuse("copying several files");
    }
    if args.job.detach || args.range.is_partial() || args.dest.streams > 1 {
        return refuse("--detach, --offset, --length or --streams");
    }
    if args.dest.in_place || args.dest.no_clobber || args.dest.update || args.backup.is_some() {
        return refuse("--in-place, --no-clobber, --update or --backup");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Option<Remote> {
        Remote::parse(Path::new(s))
    }

    #[test]
    fn scp_rule_tells_remote_from_local() {
        assert_eq!(parse("out/a:b"), None);
        assert_eq!(parse("./a:b"), None);
        assert_eq!(parse("/tmp/a:b"), None);
        assert_eq!(parse("plain"), None);
        let r = parse("backup.example:inbox/a/b.txt").expect("remote");
        assert_eq!(r.address, "backup.example:7300");
        assert_eq!(r.path, "inbox/a/b.txt");
        let r = parse("127.0.0.1:7301:inbox/x").expect("remote");
        assert_eq!(
            (r.address.as_str(), r.path.as_str()),
            ("127.0.0.1:7301", "inbox/x")
        );
        let r = parse("[::1]:7301:inbox").expect("remote");
        assert_eq!(
            (r.address.as_str(), r.path.as_str()),
            ("[::1]:7301", "inbox")
        );
        let r = parse("host:inbox").expect("remote");
        assert_eq!(r.address, "host:7300");
    }

    #[test]
    fn into_an_export_or_a_directory_the_file_keeps_its_name() {
        let src = Path::new("/data/notes.txt");
        let at = |dst: &str| {
            parse(dst)
                .expect("remote")
                .path_for(src)
                .map(|p| p.as_str().to_string())
        };
        assert_eq!(at("h:inbox").ok().as_deref(), Some("inbox/notes.txt"));
        assert_eq!(
            at("h:inbox/dir/").ok().as_deref(),
            Some("inbox/dir/notes.txt")
        );
        assert_eq!(
            at("h:inbox/other.txt").ok().as_deref(),
            Some("inbox/other.txt")
        );
        assert!(at("h:inbox/../x").is_err());
    }
}
