//! Where a remote path lands: which export, the directory beneath it, the
//! file's name, and the hidden name it is written under until it is whole.
//! Pure, so every refusal is tested without a socket.

use std::ffi::CString;

use ringxfer_ipc::proto::peer::RemotePath;

/// What the hidden name of a file being received ends with.
pub(super) const PART_SUFFIX: &str = ".ringxfer-part";

/// A remote path, cut for the system calls that make it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    /// The first component: the export's name.
    pub export: String,
    /// The directory beneath the export ("." for the export itself).
    pub parent: CString,
    /// The file's name in that directory.
    pub leaf: CString,
    /// The hidden name it is written under until published.
    pub part: CString,
}

/// Cuts `path` ("EXPORT/dir/file"). A `RemotePath` has no empty, `.` or
/// `..` component and no NUL (it was checked as it was decoded), so what is
/// left to refuse is a path that names the export itself.
pub(super) fn split(path: &RemotePath) -> Result<Target, String> {
    let text = path.as_str();
    let Some((export, rest)) = text.split_once('/') else {
        return Err(format!(
            "{text}: names the export itself; name a file in it (EXPORT/FILE)"
        ));
    };
    let (parent, leaf) = match rest.rsplit_once('/') {
        Some((parent, leaf)) => (parent, leaf),
        None => (".", rest),
    };
    let c = |s: &str| CString::new(s).map_err(|_| format!("{text}: the name holds a NUL byte"));
    Ok(Target {
        export: export.to_string(),
        parent: c(parent)?,
        leaf: c(leaf)?,
        part: c(&part_name(leaf))?,
    })
}

/// `.NAME.ringxfer-part`; a name too long for that (NAME_MAX is 255 bytes)
/// keeps its first 200 bytes and a CRC of the whole, so two long names
/// that share a beginning do not share a part.
fn part_name(leaf: &str) -> String {
    let whole = format!(".{leaf}{PART_SUFFIX}");
    if whole.len() <= 255 {
        return whole;
    }
    let mut cut = 200;
    while !leaf.is_char_boundary(cut) {
        cut -= 1;
    }
    let crc = crc32c::crc32c(leaf.as_bytes());
    format!(".{}~{crc:08x}{PART_SUFFIX}", &leaf[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(path: &str) -> Result<Target, String> {
        split(&RemotePath::new(path).expect("a valid remote path"))
    }

    #[test]
    fn a_file_in_the_export_and_deeper() {
        let t = cut("inbox/a.txt").expect("cuts");
        assert_eq!(t.export, "inbox");
        assert_eq!(t.parent.to_str(), Ok("."));
        assert_eq!(t.leaf.to_str(), Ok("a.txt"));
        assert_eq!(t.part.to_str(), Ok(".a.txt.ringxfer-part"));
        let t = cut("inbox/x/y/z.bin").expect("cuts");
        assert_eq!(t.parent.to_str(), Ok("x/y"));
        assert_eq!(t.leaf.to_str(), Ok("z.bin"));
    }

    #[test]
    fn the_export_alone_is_refused() {
        let err = cut("inbox").unwrap_err();
        assert!(err.contains("names the export itself"), "{err}");
    }

    #[test]
    fn a_long_name_gets_a_part_name_that_fits() {
        let long = "é".repeat(120); // 240 bytes
        let t = cut(&format!("inbox/{long}")).expect("cuts");
        let part = t.part.to_str().expect("utf-8");
        assert!(part.len() <= 255, "{}", part.len());
        assert!(part.ends_with(PART_SUFFIX));
        let other = cut(&format!("inbox/{long}x")).expect("cuts");
        assert_ne!(t.part, other.part);
    }
}
