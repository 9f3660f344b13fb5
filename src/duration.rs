//! Durations as operators write them: `30`, `30s`, `1.5s`, `500ms`, `2m`.

use std::time::Duration;

/// Parses a duration: a non-negative number of seconds, or a number with a
/// unit (`ms`, `s`, `m`, `h`).
///
/// ```
/// use std::time::Duration;
/// use ringxfer::duration::parse_duration;
/// assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
/// assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
/// assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
/// assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
/// assert!(parse_duration("soon").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let bad = || {
        format!("{text:?} is not a duration (use seconds, or a number with ms, s, m or h: 30, 1.5s, 500ms, 2m)")
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|_| bad())
}
