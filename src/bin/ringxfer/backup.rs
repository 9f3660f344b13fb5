//! cp's --backup: before a copy replaces a file, the old one is kept under
//! a backup name (`name~`, or `name.~N~` numbered), as GNU cp makes them.
//!
//! The backup is a second link to the old file, made before the new one is
//! renamed over the name, so the name never goes missing; where hard links
//! are refused (a file system without them, or protected_hardlinks), the old
//! file is renamed to the backup name instead, as cp itself does.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::staging::link_temp;

/// Which backup names to make (cp's CONTROL words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// `none`, `off`: no backups, even with --backup.
    None,
    /// `numbered`, `t`: always `name.~N~`.
    Numbered,
    /// `existing`, `nil`: numbered where numbered backups exist, else simple.
    Existing,
    /// `simple`, `never`: always `name` + suffix.
    Simple,
}

impl Control {
    /// cp's words for a CONTROL, with its message for any other.
    pub fn parse(word: &str) -> Result<Control, String> {
        match word {
            "none" | "off" => Ok(Control::None),
            "numbered" | "t" => Ok(Control::Numbered),
            "existing" | "nil" => Ok(Control::Existing),
            "simple" | "never" => Ok(Control::Simple),
            other => Err(format!(
                "invalid backup type '{other}' (valid: none, off, numbered, t, existing, nil, simple, never)"
            )),
        }
    }
}

/// How backups are made for one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub control: Control,
    /// The simple backups' suffix: --suffix, else $SIMPLE_BACKUP_SUFFIX, else `~`.
    pub suffix: OsString,
}

impl Backup {
    /// Keeps the file at `dst`, if there is one, under its backup name;
    /// returns that name. A directory is not a file to back up.
    pub fn keep(&self, dst: &Path) -> io::Result<Option<PathBuf>> {
        if self.control == Control::None {
            return Ok(None);
        }
        match fs::symlink_metadata(dst) {
            Ok(meta) if !meta.is_dir() => {}
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        let name = self.name_for(dst)?;
        link_or_rename(dst, &name)?;
        Ok(Some(name))
    }

    /// The backup name `dst` gets now.
    fn name_for(&self, dst: &Path) -> io::Result<PathBuf> {
        let numbered = match self.control {
            Control::Numbered => true,
            Control::Existing => highest_number(dst)? > 0,
            Control::Simple | Control::None => false,
        };
        let mut name = dst.as_os_str().to_owned();
        if numbered {
            name.push(format!(".~{}~", highest_number(dst)? + 1));
        } else {
            name.push(&self.suffix);
        }
        Ok(PathBuf::from(name))
    }
}

/// The highest N of the `name.~N~` backups next to `dst`; 0 if none.
fn highest_number(dst: &Path) -> io::Result<u64> {
    let (Some(file), dir) = (dst.file_name(), dst.parent()) else {
        return Ok(0);
    };
    let dir = match dir {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut prefix = file.as_bytes().to_vec();
    prefix.extend_from_slice(b".~");
    let mut highest = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(rest) = name.as_bytes().strip_prefix(prefix.as_slice()) else {
            continue;
        };
        let Some(digits) = rest.strip_suffix(b"~") else {
            continue;
        };
        if let Some(n) = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse::<u64>().ok())
        {
            highest = highest.max(n);
        }
    }
    Ok(highest)
}

/// Makes `backup` name the file at `dst`: a new link, moved over an older
/// backup by rename (so a simple backup is replaced whole), else `dst`
/// itself renamed there.
fn link_or_rename(dst: &Path, backup: &Path) -> io::Result<()> {
    let temp = link_temp(backup);
    let _ = fs::remove_file(&temp);
    match fs::hard_link(dst, &temp) {
        Ok(()) => fs::rename(&temp, backup).inspect_err(|_| {
            let _ = fs::remove_file(&temp);
        }),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EPERM | libc::EXDEV | libc::EOPNOTSUPP | libc::EMLINK)
            ) =>
        {
            fs::rename(dst, backup)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn simple() -> Backup {
        Backup {
            control: Control::Simple,
            suffix: "~".into(),
        }
    }

    #[test]
    fn simple_backups_replace_the_last_one_and_keep_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let dst = dir.path().join("f");
        fs::write(&dst, "one").unwrap();
        let name = simple().keep(&dst).unwrap().unwrap();
        assert_eq!(name, dir.path().join("f~"));
        assert_eq!(
            fs::read(&dst).unwrap(),
            b"one",
            "the name never goes missing"
        );
        fs::write(dst.with_file_name("g"), "two").unwrap();
        fs::rename(dst.with_file_name("g"), &dst).unwrap();
        simple().keep(&dst).unwrap();
        assert_eq!(fs::read(&name).unwrap(), b"two");
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 2, "no temporary name left");
    }

    #[test]
    fn numbered_and_existing_count_up() {
        let dir = tempfile::tempdir().unwrap();
        let dst = dir.path().join("f");
        fs::write(&dst, "x").unwrap();
        let existing = Backup {
            control: Control::Existing,
            ..simple()
        };
        assert_eq!(existing.keep(&dst).unwrap().unwrap(), dir.path().join("f~"));
        let numbered = Backup {
            control: Control::Numbered,
            ..simple()
        };
        assert_eq!(
            numbered.keep(&dst).unwrap().unwrap(),
            dir.path().join("f.~1~")
        );
        assert_eq!(
            numbered.keep(&dst).unwrap().unwrap(),
            dir.path().join("f.~2~")
        );
        assert_eq!(
            existing.keep(&dst).unwrap().unwrap(),
            dir.path().join("f.~3~")
        );
    }

    #[test]
    fn nothing_to_keep_and_words() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(simple().keep(&dir.path().join("missing")).unwrap(), None);
        assert_eq!(simple().keep(dir.path()).unwrap(), None);
        assert_eq!(Control::parse("t"), Ok(Control::Numbered));
        assert!(Control::parse("sometimes")
            .unwrap_err()
            .contains("invalid backup type"));
    }
}
