//! The config file's `[[export]]` tables: the directories other daemons may
//! write into over `listen_tcp`, each under a name (the first component of
//! a remote path, `HOST:NAME/dir/file`) and the user whose rights apply;
//! and its `[[peer]]` tables: the other daemons it trusts, by the pin of
//! their certificate.
//!
//! ```toml
//! [[export]]
//! name = "inbox"
//! path = "/srv/inbox"
//! user = "backup"
//!
//! [[peer]]
//! name = "backup-host"
//! pin = "sha256:6b3c..."
//! ```

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::SettingsError;
use crate::tls::Pin;

/// One export, as the file gives it; the daemon opens `path` at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSetting {
    /// The first component of remote paths that lead here.
    pub name: String,
    /// An absolute directory.
    pub path: PathBuf,
    /// Whose rights files are written with: a user name or a numeric uid.
    pub user: String,
    /// The `[[peer]]` names that may write here; None: every pinned peer.
    pub peers: Option<Vec<String>>,
    /// The line of the file that opens the table, for later messages.
    pub line: usize,
}

/// Another daemon this one trusts, as the file gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSetting {
    /// What the log calls it.
    pub name: String,
    /// The pin of its certificate.
    pub pin: Pin,
    pub line: usize,
}

/// Reads the `peer` array of tables, as [`read`] does the exports.
pub(super) fn read_peers(
    path: &Path,
    raw: Option<Vec<Spanned<toml::Table>>>,
    line_of: impl Fn(usize) -> usize,
) -> Result<Vec<PeerSetting>, SettingsError> {
    let mut peers: Vec<PeerSetting> = Vec::new();
    for table in raw.unwrap_or_default() {
        let line = line_of(table.span().start);
        let bad = |problem: String| SettingsError::BadValue {
            path: path.to_path_buf(),
            line,
            key: "peer",
            problem,
        };
        let table = table.get_ref();
        if let Some(unknown) = table
            .keys()
            .find(|k| !["name", "pin"].contains(&k.as_str()))
        {
            return Err(bad(format!(
                "unknown key `{unknown}` in a [[peer]]; its keys are name and pin"
            )));
        }
        let text = |key: &str| match table.get(key) {
            Some(toml::Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!("{key} = {} is not a string", other.type_str())),
            None => Err(format!("a [[peer]] needs `{key}`")),
        };
        let name = text("name").map_err(bad)?;
        let pin = text("pin").map_err(bad)?.parse::<Pin>().map_err(bad)?;
        if peers.iter().any(|p| p.name == name) {
            return Err(bad(format!("a second peer named {name:?}")));
        }
        peers.push(PeerSetting { name, pin, line });
    }
    Ok(peers)
}

/// Reads the `export` array of tables; `line_of` turns a byte offset of the
/// file into its line.
pub(super) fn read(
    path: &Path,
    raw: Option<Vec<Spanned<toml::Table>>>,
    line_of: impl Fn(usize) -> usize,
) -> Result<Vec<ExportSetting>, SettingsError> {
    let mut exports: Vec<ExportSetting> = Vec::new();
    for table in raw.unwrap_or_default() {
        let line = line_of(table.span().start);
        let bad = |problem: String| SettingsError::BadValue {
            path: path.to_path_buf(),
            line,
            key: "export",
            problem,
        };
        let export = one(table.get_ref(), line).map_err(bad)?;
        if exports.iter().any(|e| e.name == export.name) {
            return Err(bad(format!(
                "a second export named {:?}: each name may be used once",
                export.name
            )));
        }
        exports.push(export);
    }
    Ok(exports)
}

/// One table, checked: its three keys and nothing else.
fn one(table: &toml::Table, line: usize) -> Result<ExportSetting, String> {
    if let Some(unknown) = table
        .keys()
        .find(|k| !["name", "path", "user", "peers"].contains(&k.as_str()))
    {
        return Err(format!(
            "unknown key `{unknown}` in an [[export]]; its keys are name, path, user and peers"
        ));
    }
    let text = |key: &str| match table.get(key) {
        Some(toml::Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("{key} = {} is not a string", other.type_str())),
        None => Err(format!("an [[export]] needs `{key}`")),
    };
    let name = text("name")?;
    check_name(&name)?;
    let path = PathBuf::from(text("path")?);
    if !path.is_absolute() {
        return Err(format!(
            "export {name:?}: path {:?} is not absolute",
            path.display()
        ));
    }
    let user = text("user")?;
    if user.is_empty() {
        return Err(format!("export {name:?}: user is empty"));
    }
    let peers = match table.get("peers") {
        None => None,
        Some(toml::Value::Array(names)) => Some(
            names
                .iter()
                .map(|n| match n {
                    toml::Value::String(s) => Ok(s.clone()),
                    other => Err(format!(
                        "export {name:?}: peers holds a {}, not a name",
                        other.type_str()
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(other) => {
            return Err(format!(
                "export {name:?}: peers = {} is not a list of [[peer]] names",
                other.type_str()
            ))
        }
    };
    Ok(ExportSetting {
        name,
        path,
        user,
        peers,
        line,
    })
}

/// An export's name is one component of a remote path.
fn check_name(name: &str) -> Result<(), String> {
    let fine = !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 255
        && !name.contains(['/', '\0', ':']);
    if fine {
        Ok(())
    } else {
        Err(format!(
            "export name {name:?} is not a single path component (no '/', ':', '.' or '..')"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::file;
    use std::path::Path;

    fn parse(text: &str) -> Result<Vec<super::ExportSetting>, String> {
        file::parse(Path::new("/etc/r.toml"), text)
            .map(|(_, (exports, _))| exports)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn exports_are_read_with_their_lines() {
        let text =
            "pipes = 4\n\n[[export]]\nname = \"inbox\"\npath = \"/srv/in\"\nuser = \"backup\"\n\n\
                    [[export]]\nname = \"b\"\npath = \"/srv/b\"\nuser = \"1000\"\n";
        let exports = parse(text).expect("parses");
        assert_eq!(exports.len(), 2);
        assert_eq!(
            (
                exports[0].name.as_str(),
                exports[0].path.to_str(),
                exports[0].user.as_str()
            ),
            ("inbox", Some("/srv/in"), "backup")
        );
        assert_eq!((exports[0].line, exports[1].line), (3, 8));
        assert_eq!(exports[0].peers, None);
        let text =
            "[[export]]\nname = \"a\"\npath = \"/x\"\nuser = \"u\"\npeers = [\"h1\", \"h2\"]\n";
        let exports = parse(text).expect("parses");
        assert_eq!(
            exports[0].peers,
            Some(vec!["h1".to_string(), "h2".to_string()])
        );
    }

    #[test]
    fn bad_exports_name_the_line_and_the_problem() {
        let err = parse("[[export]]\nname = \"a/b\"\npath = \"/x\"\nuser = \"u\"\n").unwrap_err();
        assert!(
            err.starts_with("/etc/r.toml:1: key `export`: export name \"a/b\""),
            "{err}"
        );
        let err = parse("[[export]]\nname = \"a\"\npath = \"rel\"\nuser = \"u\"\n").unwrap_err();
        assert!(err.contains("path \"rel\" is not absolute"), "{err}");
        let err = parse("[[export]]\nname = \"a\"\npath = \"/x\"\n").unwrap_err();
        assert!(err.contains("needs `user`"), "{err}");
        let err =
            parse("[[export]]\nname = \"a\"\npath = \"/x\"\nuser = \"u\"\nmode = 1\n").unwrap_err();
        assert!(err.contains("unknown key `mode` in an [[export]]"), "{err}");
        let twice = "[[export]]\nname = \"a\"\npath = \"/x\"\nuser = \"u\"\n\
                     [[export]]\nname = \"a\"\npath = \"/y\"\nuser = \"u\"\n";
        let err = parse(twice).unwrap_err();
        assert!(
            err.starts_with("/etc/r.toml:5:") && err.contains("a second export named"),
            "{err}"
        );
    }
}
