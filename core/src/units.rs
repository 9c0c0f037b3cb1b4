//! Human-friendly quantities on the command line, shared by `scandaq` and `fpga-sim`:
//! durations (`10s`, `500ms`, `250us`, `2m`, `1h`, plain seconds) and rates (`1M`, `250k`,
//! `5e5`, `2.5MHz`, plain Hz).

fn number(s: &str) -> Option<f64> {
    let v: f64 = s.trim().parse().ok()?;
    v.is_finite().then_some(v)
}

/// Parses a duration in seconds: `5s`, `500ms`, `250us`, `2m`, `1h`, or a plain number of
/// seconds (`10`, `0.5`). Must be positive.
pub fn parse_duration_s(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let err = || {
        format!(
            "invalid duration {t:?}: expected a positive number with an optional unit \
             (s, ms, us, m, h), for example 5s, 500ms, 2m or 10"
        )
    };
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix("us").or_else(|| t.strip_suffix("µs")) {
        (n, 1e-6)
    } else if let Some(n) = t.strip_suffix("min").or_else(|| t.strip_suffix('m')) {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else {
        (t, 1.0)
    };
    match number(num) {
        Some(v) if v > 0.0 => Ok(v * scale),
        _ => Err(err()),
    }
}

/// Parses a short time into integer picoseconds: `4ns`, `100ns`, `250ps`, `1.5us`, `0`
/// (unit required unless 0). Zero is allowed (e.g. "no delayed window").
pub fn parse_time_ps(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let err = || {
        format!(
            "invalid time {t:?}: expected a number with a unit (ps, ns, us, ms, s), for example \
             4ns, 250ps or 100ns"
        )
    };
    if t == "0" {
        return Ok(0);
    }
    let (num, scale) = if let Some(n) = t.strip_suffix("ps") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix("ns") {
        (n, 1e3)
    } else if let Some(n) = t.strip_suffix("us").or_else(|| t.strip_suffix("µs")) {
        (n, 1e6)
    } else if let Some(n) = t.strip_suffix("ms") {
        (n, 1e9)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1e12)
    } else {
        return Err(err());
    };
    match number(num) {
        Some(v) if v >= 0.0 && (v * scale) < 9.0e18 => Ok((v * scale).round() as i64),
        _ => Err(err()),
    }
}

/// Parses a size in bytes: `512MB`, `2GB`, `64MiB`, `1GiB`, `1000000` (k/M/G/T = powers of
/// 1000, Ki/Mi/Gi/Ti = powers of 1024; the trailing `B` is optional). Must be positive.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let err = || {
        format!(
            "invalid size {t:?}: expected a positive number of bytes with an optional unit \
             (kB, MB, GB, TB, KiB, MiB, GiB, TiB), for example 512MB or 2GiB"
        )
    };
    let body = t.strip_suffix('B').unwrap_or(t);
    let units: [(&str, f64); 8] = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    let (num, scale) = units
        .iter()
        .find_map(|(u, f)| body.strip_suffix(u).map(|n| (n, *f)))
        .unwrap_or((body, 1.0));
    match number(num) {
        Some(v) if v > 0.0 && v * scale < 1.8e19 => Ok((v * scale).round() as u64),
        _ => Err(err()),
    }
}

/// Parses a rate in Hz: `1M`, `250k`, `5e5`, `2.5MHz`, `100kHz`, `1G`. Must be positive.
pub fn parse_rate_hz(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let err = |extra: &str| {
        format!(
            "invalid rate {t:?}: expected a positive number of hits per second with an optional \
             k, M or G multiplier, for example 1M, 250k or 5e5{extra}"
        )
    };
    let body = t
        .strip_suffix("Hz")
        .or_else(|| t.strip_suffix("hz"))
        .unwrap_or(t);
    let (num, scale) = if let Some(n) = body.strip_suffix(['k', 'K']) {
        (n, 1e3)
    } else if let Some(n) = body.strip_suffix('M') {
        (n, 1e6)
    } else if let Some(n) = body.strip_suffix('G') {
        (n, 1e9)
    } else if body.ends_with('m') {
        return Err(err(
            " (use M for mega; milli-hertz rates are not meaningful here)",
        ));
    } else {
        (body, 1.0)
    };
    match number(num) {
        Some(v) if v > 0.0 => Ok(v * scale),
        _ => Err(err("")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_decimal_and_binary_units() {
        assert_eq!(parse_bytes("512MB"), Ok(512_000_000));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("64Mi"), Ok(64 << 20));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn short_times_are_exact_picoseconds() {
        assert_eq!(parse_time_ps("4ns"), Ok(4_000));
        assert_eq!(parse_time_ps("250ps"), Ok(250));
        assert_eq!(parse_time_ps("1.5us"), Ok(1_500_000));
        assert_eq!(parse_time_ps("0"), Ok(0));
        assert!(parse_time_ps("4").is_err());
        assert!(parse_time_ps("-1ns").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_s("5s"), Ok(5.0));
        assert_eq!(parse_duration_s("500ms"), Ok(0.5));
        assert_eq!(parse_duration_s("2m"), Ok(120.0));
        assert_eq!(parse_duration_s("10"), Ok(10.0));
        assert_eq!(parse_duration_s(" 0.25 "), Ok(0.25));
        assert!((parse_duration_s("250us").unwrap() - 250e-6).abs() < 1e-15);
        assert_eq!(parse_duration_s("1h"), Ok(3600.0));
        for bad in [
            "",
            "s",
            "-1s",
            "0",
            "5x",
            "five",
            "nan",
            "inf",
            "5 parsecs",
            "1e400",
        ] {
            let e = parse_duration_s(bad).unwrap_err();
            assert!(e.contains("invalid duration"), "{bad}: {e}");
        }
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate_hz("1M"), Ok(1e6));
        assert_eq!(parse_rate_hz("250k"), Ok(250e3));
        assert_eq!(parse_rate_hz("5e5"), Ok(5e5));
        assert_eq!(parse_rate_hz("2.5MHz"), Ok(2.5e6));
        assert_eq!(parse_rate_hz("100kHz"), Ok(1e5));
        assert_eq!(parse_rate_hz("1000"), Ok(1000.0));
        assert!(parse_rate_hz("1m").unwrap_err().contains("use M"));
        for bad in ["", "M", "-1M", "0", "1T", "fast", "NaN"] {
            assert!(
                parse_rate_hz(bad).unwrap_err().contains("invalid rate"),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_largest_accepted_values_and_binary_units() {
        // Times: accepted below 9e18 ps (under i64::MAX with margin), refused from it on.
        assert!(parse_time_ps("8999999s").is_ok());
        assert!(parse_time_ps("9000000s").is_err());
        assert!(parse_time_ps("10000000s").is_err());
        // Sizes: accepted below 1.8e19 bytes (under u64::MAX), refused from it on.
        assert_eq!(parse_bytes("1TiB"), Ok(1 << 40));
        assert_eq!(parse_bytes("3Ti"), Ok(3 << 40));
        assert!(parse_bytes("17999999TB").is_ok());
        assert!(parse_bytes("18000000TB").is_err());
        assert!(parse_bytes("20000000TB").is_err());
    }
}
