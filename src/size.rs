//! Byte counts as people write and read them.
//!
//! Input follows dd(1) and GNU coreutils: `K`, `KiB` (and `M`, `G`, `T`, `P`,
//! `E` alike) are powers of 1024, `KB`, `MB`, ... are powers of 1000, `B` or
//! nothing means bytes. Output always uses binary units (`1.50 MiB`).

use std::time::Duration;

/// Parses `4096`, `4KiB`, `4k`, `1.5M`, `2G`, `10MB` or `512B` into bytes.
///
/// Fractions are accepted when they come to a whole number of bytes
/// (`1.5K` = 1536, but `0.1K` is refused rather than silently rounded, since
/// an offset or length that is off by a byte is worse than an error).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(format!(
            "not a size: {text:?} (expected e.g. 4096, 4KiB, 1M)"
        ));
    }
    let multiplier = unit_multiplier(unit.trim_start()).ok_or_else(|| {
        format!("unknown size unit in {text:?}: use B, K/KiB, KB, M/MiB, MB, G/GiB, GB, T/TiB, TB")
    })?;
    let too_big = || format!("size {text:?} is too large");
    // u128 keeps `whole * multiplier` and the scaled fraction exact for every
    // input that fits in u64; the digit-count guards keep the parsing itself
    // from overflowing.
    if whole.len() > 30 || fraction.len() > 18 {
        return Err(too_big());
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| format!("not a size: {text:?}"))?
    };
    let mut bytes = whole.checked_mul(multiplier).ok_or_else(too_big)?;
    if !fraction.is_empty() {
        let numerator: u128 = fraction
            .parse()
            .map_err(|_| format!("not a size: {text:?}"))?;
        let denominator = 10u128.pow(fraction.len() as u32);
        let scaled = numerator * multiplier;
        if !scaled.is_multiple_of(denominator) {
            return Err(format!("size {text:?} is not a whole number of bytes"));
        }
        bytes += scaled / denominator;
    }
    u64::try_from(bytes).map_err(|_| too_big())
}

fn unit_multiplier(unit: &str) -> Option<u128> {
    let unit = unit.to_ascii_lowercase();
    let (prefix, rest) = match unit.char_indices().nth(1) {
        Some((i, _)) => unit.split_at(i),
        None => (unit.as_str(), ""),
    };
    let power = match prefix {
        "" => return Some(1),
        "b" if rest.is_empty() => return Some(1),
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        "e" => 6,
        _ => return None,
    };
    let base: u128 = match rest {
        "" | "ib" => 1024,
        "b" => 1000,
        _ => return None,
    };
    Some(base.pow(power))
}

const BINARY_UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// `512 B`, `1.00 KiB`, `1.92 GiB`: exact below 1 KiB, two decimals above.
pub fn format_bytes(bytes: u64) -> String {
    format_binary(bytes as f64)
}

/// A rate in bytes per second, e.g. `1.92 GiB/s`.
pub fn format_rate(bytes_per_sec: f64) -> String {
    format!("{}/s", format_binary(bytes_per_sec))
}

fn format_binary(value: f64) -> String {
    if value.is_nan() || value < 1024.0 {
        // NaN should not happen, but must not panic or print "NaN".
        let whole = if value.is_nan() { 0.0 } else { value.max(0.0) };
        return format!("{} B", whole.round());
    }
    let mut scaled = value;
    let mut unit = 0;
    while scaled >= 1024.0 && unit < BINARY_UNITS.len() {
        scaled /= 1024.0;
        unit += 1;
    }
    format!("{scaled:.2} {}", BINARY_UNITS[unit - 1])
}

/// Bytes per second over `elapsed`; zero when no time passed (an empty
/// transfer), so that text and JSON never show infinity.
pub fn throughput(bytes: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        bytes as f64 / secs
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_bytes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size(" 512B "), Ok(512));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_size("1."), Ok(1));
    }

    #[test]
    fn binary_units() {
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1 MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("2gib"), Ok(2 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert_eq!(parse_size(".5MiB"), Ok(512 << 10));
        assert_eq!(parse_size("15E"), Ok(15 << 60));
    }

    #[test]
    fn decimal_units() {
        assert_eq!(parse_size("4KB"), Ok(4000));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("0.001KB"), Ok(1));
    }

    #[test]
    fn refused() {
        for bad in [
            "",
            " ",
            "K",
            "KiB",
            ".",
            "-1",
            "1.2.3",
            "4 x",
            "4KiBs",
            "4Kb2",
            "0.1K",
            "16E",
            "99999999999999999999",
            "1e3",
            "4XB",
            "4iB",
            "4BB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn formatting() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1.00 KiB");
        assert_eq!(format_bytes(1536), "1.50 KiB");
        assert_eq!(format_bytes(1 << 30), "1.00 GiB");
        assert_eq!(format_bytes(u64::MAX), "16.00 EiB");
        assert_eq!(format_rate(1.92 * (1u64 << 30) as f64), "1.92 GiB/s");
        assert_eq!(format_rate(f64::NAN), "0 B/s");
    }

    #[test]
    fn throughput_of_nothing_is_zero() {
        assert_eq!(throughput(0, Duration::ZERO), 0.0);
        assert_eq!(throughput(2048, Duration::from_secs(2)), 1024.0);
    }
}
