//! Human-friendly quantities on the command line, shared by `scandaq` and `fpga-sim`:
//! durations and short times (one grammar: a number and a unit, `10ns`, `10000ps`, `250us`,
//! `500ms`, `2s`, `2m`, `1h`), sizes (`512MB`, `2GiB`), rates (`1M`, `250k`, `2.5MHz`) and
//! energy windows (`MIN:MAX` in keV, `400:650` or `400:650keV`).
//!
//! Every time flag goes through [`parse_time`]: [`parse_duration_s`] (seconds; a plain number
//! means seconds) and [`parse_time_ps`] (integer picoseconds; a unit is required) only add
//! their range and their rule for a plain number. Errors say what is wrong with the value and
//! what is accepted (a negative value is named as such).

fn number(s: &str) -> Option<f64> {
    let v: f64 = s.trim().parse().ok()?;
    v.is_finite().then_some(v)
}

/// The time units accepted, with their length in picoseconds. Longer suffixes first, so
/// `ms` is not read as `m` + `s` nor `min` as `m`.
const TIME_UNITS: [(&str, f64); 9] = [
    ("ps", 1.0),
    ("ns", 1e3),
    ("us", 1e6),
    ("\u{b5}s", 1e6),
    ("ms", 1e9),
    ("min", 60e12),
    ("s", 1e12),
    ("m", 60e12),
    ("h", 3600e12),
];

/// The units as the messages list them.
const TIME_UNIT_NAMES: &str = "ps, ns, us, ms, s, m (or min), h";

/// A time as written on the command line, before a flag's own rules apply.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Time {
    /// The value in picoseconds (may be negative or zero: the caller's range decides).
    pub ps: f64,
    /// True when a unit was written (`10ns`), false for a plain number (`10`).
    pub has_unit: bool,
}

/// Parses a time: a finite number with an optional unit among ps, ns, us (or µs), ms, s,
/// m (or min) and h (`10ns`, `10000ps`, `2.5us`, `-1s`, `10`). Range and the meaning of a
/// plain number are the caller's (see [`parse_duration_s`], [`parse_time_ps`]).
pub fn parse_time(s: &str) -> Result<Time, String> {
    let t = s.trim();
    let (num, scale) = TIME_UNITS
        .iter()
        .find_map(|(unit, ps)| t.strip_suffix(unit).map(|n| (n, Some(*ps))))
        .unwrap_or((t, None));
    match number(num) {
        Some(v) => Ok(Time {
            ps: v * scale.unwrap_or(1.0),
            has_unit: scale.is_some(),
        }),
        None => Err(format!(
            "invalid time {t:?}: expected a number with a unit ({TIME_UNIT_NAMES}), for example \
             10ns, 10000ps, 500ms or 2s"
        )),
    }
}

/// Parses a duration in seconds: `5s`, `500ms`, `250us`, `10ns`, `2m`, `1h`, or a plain
/// number of seconds (`10`, `0.5`). Must be positive.
pub fn parse_duration_s(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let time = parse_time(t).map_err(|_| {
        format!(
            "invalid duration {t:?}: expected a positive number with an optional unit \
             ({TIME_UNIT_NAMES}; none = seconds), for example 5s, 500ms, 2m or 10"
        )
    })?;
    let seconds = if time.has_unit {
        time.ps * 1e-12
    } else {
        time.ps
    };
    if seconds <= 0.0 || !seconds.is_finite() {
        let what = if seconds < 0.0 { "negative" } else { "zero" };
        return Err(format!(
            "invalid duration {t:?}: it is {what}; a duration must be more than 0 (for example \
             5s, 500ms or 2m)"
        ));
    }
    Ok(seconds)
}

/// Parses a short time into integer picoseconds: `4ns`, `100ns`, `250ps`, `1.5us`, `2s`, `0`
/// (a unit is required unless the value is 0). Zero is allowed (e.g. "no delayed window");
/// negative values and values of 9e18 ps (about 104 days) or more are refused.
pub fn parse_time_ps(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let time = parse_time(t)?;
    if time.ps == 0.0 {
        return Ok(0);
    }
    if !time.has_unit {
        return Err(format!(
            "invalid time {t:?}: give a unit ({TIME_UNIT_NAMES}), for example {t}ns or {t}ps"
        ));
    }
    if time.ps < 0.0 {
        return Err(format!(
            "invalid time {t:?}: it is negative; a time must be 0 or more (for example 4ns)"
        ));
    }
    if time.ps >= 9.0e18 {
        return Err(format!(
            "invalid time {t:?}: too long (at most about 104 days, 9e18 ps)"
        ));
    }
    Ok(time.ps.round() as i64)
}

/// Parses a time in picoseconds given to an old `...-ps` flag: a plain number is
/// picoseconds (`10000`), a unit is also accepted (`10ns`). 0 or more.
pub fn parse_legacy_ps(s: &str) -> Result<i64, String> {
    let t = s.trim();
    match number(t) {
        Some(v) if v < 0.0 => Err(format!(
            "invalid time {t:?} ps: it is negative; a time must be 0 or more"
        )),
        Some(v) if v < 9.0e18 => Ok(v.round() as i64),
        Some(_) => Err(format!("invalid time {t:?} ps: too long")),
        None => parse_time_ps(t),
    }
}

/// Parses a time in nanoseconds given to an old `...-ns` flag: a plain number is
/// nanoseconds (`20`, `80.5`), a unit is also accepted (`20ns`). 0 or more.
pub fn parse_legacy_ns(s: &str) -> Result<f64, String> {
    let t = s.trim();
    match number(t) {
        Some(v) if v < 0.0 => Err(format!(
            "invalid time {t:?} ns: it is negative; a time must be 0 or more"
        )),
        Some(v) => Ok(v),
        None => parse_time_ps(t).map(|ps| ps as f64 * 1e-3),
    }
}

/// An energy window as given on the command line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KevWindow {
    /// Lower edge, keV.
    pub min_kev: f32,
    /// Upper edge, keV.
    pub max_kev: f32,
    /// Written in the old comma form (`400,650`): the caller prints a deprecation note
    /// ([`KevWindow::deprecation_note`]).
    pub comma_form: bool,
}

impl KevWindow {
    /// `[min, max]` keV.
    pub fn kev(&self) -> [f32; 2] {
        [self.min_kev, self.max_kev]
    }

    /// The note to print for the old comma form (`flag` names the flag), or None.
    pub fn deprecation_note(&self, flag: &str) -> Option<String> {
        self.comma_form.then(|| {
            format!(
                "{flag} {},{}: the comma form is deprecated and will be removed; write \
                 {flag} {}:{} (MIN:MAX in keV, as every energy window is written)",
                self.min_kev, self.max_kev, self.min_kev, self.max_kev
            )
        })
    }
}

/// Parses an energy window `MIN:MAX` in keV (`400:650`, `400:650keV`, `400keV:650keV`).
/// The old comma form `400,650` is accepted and marked ([`KevWindow::comma_form`]). Both
/// edges must be finite, 0 or more, and MIN below MAX.
pub fn parse_kev_window(s: &str) -> Result<KevWindow, String> {
    let t = s.trim();
    let usage = "expected MIN:MAX in keV, for example 400:650 or 400:650keV";
    let (body, comma_form) = match (t.split_once(':'), t.split_once(',')) {
        (Some(parts), None) => (parts, false),
        (None, Some(parts)) => (parts, true),
        _ => return Err(format!("invalid energy window {t:?}: {usage}")),
    };
    let edge = |e: &str| {
        let e = e.trim();
        let e = e
            .strip_suffix("keV")
            .or_else(|| e.strip_suffix("kev"))
            .unwrap_or(e);
        number(e)
    };
    let (Some(min_kev), Some(max_kev)) = (edge(body.0), edge(body.1)) else {
        return Err(format!("invalid energy window {t:?}: {usage}"));
    };
    if min_kev < 0.0 || max_kev < 0.0 {
        return Err(format!(
            "invalid energy window {t:?}: an edge is negative; energies are 0 keV or more \
             ({usage})"
        ));
    }
    if min_kev >= max_kev {
        return Err(format!(
            "invalid energy window {t:?}: MIN must be below MAX ({usage})"
        ));
    }
    Ok(KevWindow {
        min_kev: min_kev as f32,
        max_kev: max_kev as f32,
        comma_form,
    })
}

/// Parses a whole number from `min` to `max` (counts, ids): `-1`, `1.5` and `lots` are
/// refused with the range in the message.
pub fn parse_whole(s: &str, min: u64, max: u64) -> Result<u64, String> {
    let t = s.trim();
    let range = if max == u64::MAX {
        format!("a whole number, {min} or more")
    } else {
        format!("a whole number from {min} to {max}")
    };
    let what = match t.parse::<i128>() {
        Ok(v) if v < 0 => "is negative",
        Ok(v) if v < i128::from(min) => "is too small",
        Ok(v) if v > i128::from(max) => "is too large",
        Ok(v) => return Ok(v as u64),
        Err(_) => "is not a whole number",
    };
    Err(format!("{t} {what}; expected {range}"))
}

/// Parses a finite number from `min` to `max` (`unit` names it in the message: `mm`,
/// `keV`).
pub fn parse_number_in(s: &str, min: f64, max: f64, unit: &str) -> Result<f64, String> {
    let t = s.trim();
    let t = t.strip_suffix(unit).unwrap_or(t);
    let range = if max == f64::INFINITY {
        format!("a number of {unit}, {min} or more")
    } else {
        format!("a number of {unit} from {min} to {max}")
    };
    let what = match number(t) {
        Some(v) if v < 0.0 && min >= 0.0 => "is negative",
        Some(v) if v < min => "is too small",
        Some(v) if v > max => "is too large",
        Some(v) => return Ok(v),
        None => "is not a number",
    };
    Err(format!("{} {what}; expected {range}", s.trim()))
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
    fn one_time_grammar_for_every_time_flag() {
        // The same value means the same time whichever parser reads it.
        for (text, ps) in [
            ("10ns", 10_000.0),
            ("10000ps", 10_000.0),
            ("2s", 2e12),
            ("2m", 120e12),
            ("1min", 60e12),
            ("500ms", 5e11),
            ("1.5us", 1.5e6),
            ("1h", 3600e12),
        ] {
            assert_eq!(parse_time(text).unwrap().ps, ps, "{text}");
            assert_eq!(parse_time_ps(text), Ok(ps as i64), "{text}");
            assert_eq!(parse_duration_s(text), Ok(ps * 1e-12), "{text}");
        }
        assert_eq!(parse_duration_s("10ns"), Ok(1e-8));
        assert!(!parse_time("10").unwrap().has_unit);
        // Negative and zero values are named as such, with what is accepted.
        assert!(parse_duration_s("-1s").unwrap_err().contains("negative"));
        assert!(parse_duration_s("0s").unwrap_err().contains("zero"));
        assert!(parse_time_ps("-4ns").unwrap_err().contains("negative"));
        assert!(parse_time_ps("10").unwrap_err().contains("give a unit"));
    }

    #[test]
    fn old_ps_and_ns_flags_take_plain_numbers_or_units() {
        assert_eq!(parse_legacy_ps("10000"), Ok(10_000));
        assert_eq!(parse_legacy_ps("10ns"), Ok(10_000));
        assert!(parse_legacy_ps("-1").unwrap_err().contains("negative"));
        assert_eq!(parse_legacy_ns("20"), Ok(20.0));
        assert_eq!(parse_legacy_ns("500ps"), Ok(0.5));
        assert!(parse_legacy_ns("-3").unwrap_err().contains("negative"));
        assert!(parse_legacy_ns("x").is_err());
    }

    #[test]
    fn energy_windows_are_min_colon_max_kev() {
        let w = parse_kev_window("400:650").unwrap();
        assert_eq!((w.kev(), w.comma_form), ([400.0, 650.0], false));
        assert_eq!(w.deprecation_note("--energy-window"), None);
        assert_eq!(
            parse_kev_window("400:650keV").unwrap().kev(),
            [400.0, 650.0]
        );
        assert_eq!(
            parse_kev_window(" 425keV : 650.5 keV").unwrap().kev(),
            [425.0, 650.5]
        );
        // The old comma form still reads, and says how to write it.
        let old = parse_kev_window("400,650").unwrap();
        assert!(old.comma_form);
        let note = old.deprecation_note("--energy-window").unwrap();
        assert!(note.contains("--energy-window 400:650"), "{note}");
        for (bad, says) in [
            ("650:400", "MIN must be below MAX"),
            ("-5:650", "negative"),
            ("400", "expected MIN:MAX"),
            ("400:650:700", "expected MIN:MAX"),
            ("a:b", "expected MIN:MAX"),
            ("400,650:700", "expected MIN:MAX"),
        ] {
            let e = parse_kev_window(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn numbers_out_of_range_say_the_range() {
        assert_eq!(parse_whole("10", 1, u64::MAX), Ok(10));
        let e = parse_whole("-1", 1, u64::MAX).unwrap_err();
        assert!(e.contains("negative") && e.contains("1 or more"), "{e}");
        assert!(parse_whole("0", 1, 5).unwrap_err().contains("from 1 to 5"));
        assert!(parse_whole("6", 1, 5).unwrap_err().contains("too large"));
        assert!(
            parse_whole("1.5", 0, 5)
                .unwrap_err()
                .contains("not a whole")
        );
        assert_eq!(parse_number_in("20mm", 0.0, f64::INFINITY, "mm"), Ok(20.0));
        let e = parse_number_in("-3", 0.0, f64::INFINITY, "mm").unwrap_err();
        assert!(e.contains("negative") && e.contains("0 or more"), "{e}");
        assert!(parse_number_in("nan", 0.0, 1.0, "mm").is_err());
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
