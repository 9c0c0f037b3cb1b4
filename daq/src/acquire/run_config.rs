//! The run configuration: a TOML file (docs/run-config.md) parsed into typed structs, unknown
//! keys rejected, every value validated before anything starts, and command-line flags laid
//! over it.

use crate::acquire::live::{InputConfig, InputSpec, LiveConfig, RunLimits};
use crate::acquire::ring::OverflowPolicy;
use anyhow::{Context, Result, bail};
use scandaq_core::ClockModel;
use scandaq_core::units::parse_duration_s;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[run]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// Output directory (runs are made inside it).
    pub out: Option<PathBuf>,
    /// Wall-clock limit, e.g. "60s".
    pub duration: Option<String>,
    /// Stop after this many singles.
    pub max_hits: Option<u64>,
    /// Stop after this many transport bytes.
    pub max_bytes: Option<u64>,
    /// Write the raw diagnostic columns.
    pub raw_columns: Option<bool>,
    /// Record packets as received into a `.sdq` archive.
    pub raw_archive: Option<bool>,
    /// Stop once every board has sent end-of-stream (default true).
    pub stop_at_end_of_stream: Option<bool>,
    /// Front-end clock in Hz (default 200 MHz).
    pub clock_hz: Option<u32>,
    /// Start a new singles or coincidence file at this size, e.g. "2GB" or "512MiB".
    pub rotate_size: Option<String>,
    /// Start a new singles or coincidence file after this wall-clock time, e.g. "10m".
    pub rotate_every: Option<String>,
    /// Commit interval, e.g. "1s" (the default) or "250ms": what a power cut may cost at most.
    pub commit_interval: Option<String>,
    /// Write each single's crystal centre (x_mm, y_mm, z_mm) into the singles table.
    pub positions: Option<bool>,
    /// Write only the coincidence tables, no singles table.
    pub coincidences_only: Option<bool>,
    /// Page compression of the singles and coincidence tables: "lz4" (LZ4_RAW, the default),
    /// "zstd" (level 1), "zstd:N" or "none".
    pub compression: Option<String>,
    /// Warn when the output disk has less free space than this (`500MB`, `2GiB`; default
    /// 1 GiB).
    pub disk_warn_free: Option<String>,
    /// Warn when the output disk is full in less than this at the current write rate (`10m`,
    /// `90s`; default 10 minutes).
    pub disk_warn_time: Option<String>,
    /// The boards (transport source ids) expected; packets of other sources are dropped and
    /// counted as `unknown_source_packets` (default: any, up to 256 boards per input).
    pub boards: Option<Vec<u32>>,
    /// TCP inputs: fail the run if no connection is made within this time, e.g. "10s"
    /// (default 10 s).
    pub connect_timeout: Option<String>,
}

/// `[calibration]`: exactly one of `dir`, `petsys_config`, or `none = true`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationSection {
    /// scandaq calibration directory.
    pub dir: Option<PathBuf>,
    /// PETsys config.ini.
    pub petsys_config: Option<PathBuf>,
    /// `true`: the run has no PETsys boards (only OPM-MEG / ultrasound streams), so no PET
    /// calibration; a PETsys board's hits would then be counted as `no_tdc_calibration`.
    pub none: Option<bool>,
}

/// `[[input]]`: exactly one of `udp` / `tcp`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSection {
    /// Address to listen on for datagrams.
    pub udp: Option<String>,
    /// Front-end address to connect to.
    pub tcp: Option<String>,
    /// Front-end IP addresses allowed to send (empty = any).
    #[serde(default)]
    pub allow: Vec<String>,
    /// `drop` (default for live inputs) or `block`.
    pub policy: Option<OverflowPolicy>,
    /// Ring capacity in chunks of up to 256 KiB (default 256).
    pub ring_chunks: Option<usize>,
}

/// The whole file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunFile {
    /// `[run]`.
    #[serde(default)]
    pub run: RunSection,
    /// `[calibration]`.
    #[serde(default)]
    pub calibration: CalibrationSection,
    /// `[[input]]` tables.
    #[serde(default)]
    pub input: Vec<InputSection>,
    /// `[coincidences]`: how prompts and delayeds are sorted (docs/coincidences.md).
    #[serde(default)]
    pub coincidences: crate::process::coinc_stage::CoincidenceOptions,
    /// The keys the file gives in `[coincidences]`, as written (laid over PETsys's
    /// `[sw_trigger]` settings when the calibration is a PETsys config).
    #[serde(skip)]
    pub coincidence_keys: toml::Table,
    /// `[meg]`: OPM-MEG streams (docs/meg.md).
    #[serde(default)]
    pub meg: crate::process::streams::meg::MegSettings,
    /// `[ultrasound]`: ultrasound RF streams (docs/ultrasound.md).
    #[serde(default)]
    pub ultrasound: crate::process::streams::us::UsSettings,
}

/// Parses a run file; errors name the file, line and key.
pub fn parse(path: &Path, text: &str) -> Result<RunFile> {
    let mut file: RunFile =
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let raw: toml::Table =
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if let Some(toml::Value::Table(t)) = raw.get("coincidences") {
        file.coincidence_keys = t.clone();
    }
    Ok(file)
}

/// Reads and parses a run file.
pub fn read(path: &Path) -> Result<RunFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read run configuration {}", path.display()))?;
    parse(path, &text)
}

fn socket_addr(key: &str, text: &str) -> Result<SocketAddr> {
    text.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .with_context(|| {
            format!("{key} = {text:?} is not an address: use HOST:PORT, e.g. 127.0.0.1:5000")
        })
}

/// Checks that runs can be written under `out` (it or its parent exists and is writable).
pub fn check_out_dir(out: &Path) -> Result<()> {
    let probe_dir = if out.exists() {
        if !out.is_dir() {
            bail!("run.out = {}: exists but is not a directory", out.display());
        }
        out.to_path_buf()
    } else {
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !parent.is_dir() {
            bail!(
                "run.out = {}: neither it nor its parent {} exists (create it with mkdir -p)",
                out.display(),
                parent.display()
            );
        }
        parent.to_path_buf()
    };
    let probe = probe_dir.join(format!(".scandaq-write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").with_context(|| {
        format!(
            "run.out = {}: cannot write there (check permissions or choose another --out)",
            out.display()
        )
    })?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// A validated run: the live configuration and where its calibration comes from.
#[derive(Debug, Clone)]
pub struct ValidatedRun {
    /// Live configuration.
    pub live: LiveConfig,
    /// `--calib` directory.
    pub calib_dir: Option<PathBuf>,
    /// `--petsys-config` file.
    pub petsys_config: Option<PathBuf>,
}

impl RunFile {
    /// Validates every value and builds the run configuration.
    pub fn validate(&self) -> Result<ValidatedRun> {
        let duration = self.run.duration()?;
        let out = self
            .run
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("scandaq-runs"));
        check_out_dir(&out)?;
        let (calib_dir, petsys_config) = self.calibration.source()?;
        if self.input.is_empty() {
            bail!(
                "no input: add an [[input]] table with udp = \"HOST:PORT\" or tcp = \"HOST:PORT\" (or pass --udp/--tcp)"
            );
        }
        let ingest = self.run.ingest_options()?;
        let inputs = self
            .input
            .iter()
            .enumerate()
            .map(|(k, i)| i.input_config(k, &ingest))
            .collect::<Result<Vec<_>>>()?;
        let clock_hz = self.run.clock_hz()?;
        self.coincidences.validate()?;
        let rotation = self.run.rotation()?;
        let disk_warn = self.run.disk_warn_levels()?;
        Ok(ValidatedRun {
            live: LiveConfig {
                inputs,
                out_dir: out,
                limits: RunLimits {
                    duration,
                    max_hits: self.run.max_hits,
                    max_bytes: self.run.max_bytes,
                },
                raw_columns: self.run.raw_columns.unwrap_or(false),
                raw_archive: self.run.raw_archive.unwrap_or(false),
                stop_at_end_of_stream: self.run.stop_at_end_of_stream.unwrap_or(true),
                stats_every: Some(Duration::from_secs(1)),
                clock: ClockModel {
                    frequency_hz: clock_hz,
                },
                coincidences: crate::process::coinc_stage::CoincidenceOptions {
                    positions: self.coincidences.positions || self.run.positions.unwrap_or(false),
                    coincidences_only: self.coincidences.coincidences_only
                        || self.run.coincidences_only.unwrap_or(false),
                    ..self.coincidences.clone()
                },
                rotation,
                // Checked now (channel table and sequence read), not at the first packet.
                streams: crate::process::streams::StreamSettings {
                    meg: self.meg.clone(),
                    ultrasound: self.ultrasound.clone(),
                }
                .resolve()?,
                disk_warn,
            },
            calib_dir,
            petsys_config,
        })
    }
}

impl RunSection {
    /// `run.duration`, when given.
    fn duration(&self) -> Result<Option<Duration>> {
        Ok(self
            .duration
            .as_deref()
            .map(|d| parse_duration_s(d).map_err(|e| anyhow::anyhow!("run.duration: {e}")))
            .transpose()?
            .map(Duration::from_secs_f64))
    }

    /// What every input's ingest is told: `run.boards` and `run.connect_timeout`.
    fn ingest_options(&self) -> Result<crate::acquire::ingest::IngestOptions> {
        let connect_timeout = match self.connect_timeout.as_deref() {
            None => crate::acquire::ingest::DEFAULT_CONNECT_TIMEOUT,
            Some(t) => match parse_duration_s(t) {
                Ok(s) if s > 0.0 && s < 1e9 => Duration::from_secs_f64(s),
                Ok(_) => bail!("run.connect_timeout = {t:?}: must be more than 0 s"),
                Err(e) => bail!("run.connect_timeout: {e}"),
            },
        };
        let ingest = crate::acquire::ingest::IngestOptions {
            expected_boards: self.boards.clone(),
            connect_timeout,
        };
        if self.boards.as_ref().is_some_and(|b| b.is_empty()) {
            bail!("run.boards is empty: list the expected boards' source ids, or leave it out");
        }
        Ok(ingest)
    }

    /// `run.clock_hz` (default: the TOFPET2 clock), checked to be 1 MHz .. 2 GHz.
    pub(crate) fn clock_hz(&self) -> Result<u32> {
        let clock_hz = self
            .clock_hz
            .unwrap_or(ClockModel::TOFPET2_DEFAULT.frequency_hz);
        if !(1_000_000..=2_000_000_000).contains(&clock_hz) {
            bail!("run.clock_hz = {clock_hz}: expected 1 MHz .. 2 GHz");
        }
        Ok(clock_hz)
    }

    /// File rotation and commit interval: `run.rotate_size`, `rotate_every`, `commit_interval`.
    fn rotation(&self) -> Result<crate::process::pipeline::Rotation> {
        Ok(crate::process::pipeline::Rotation {
            max_bytes: self
                .rotate_size
                .as_deref()
                .map(scandaq_core::units::parse_bytes)
                .transpose()
                .map_err(|e| anyhow::anyhow!("run.rotate_size: {e}"))?,
            max_seconds: self
                .rotate_every
                .as_deref()
                .map(scandaq_core::units::parse_duration_s)
                .transpose()
                .map_err(|e| anyhow::anyhow!("run.rotate_every: {e}"))?,
            commit_interval_s: self
                .commit_interval
                .as_deref()
                .map(crate::process::pipeline::parse_commit_interval)
                .transpose()
                .map_err(|e| anyhow::anyhow!("run.commit_interval: {e:#}"))?,
            compression: self
                .compression
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e| anyhow::anyhow!("run.compression: {e:#}"))?
                .unwrap_or_default(),
        })
    }

    /// The disk warnings: `run.disk_warn_free` and `disk_warn_time` over the defaults.
    fn disk_warn_levels(&self) -> Result<crate::observe::disk_watch::DiskWarnLevels> {
        let defaults = crate::observe::disk_watch::DiskWarnLevels::default();
        Ok(crate::observe::disk_watch::DiskWarnLevels {
            min_free_bytes: self
                .disk_warn_free
                .as_deref()
                .map(scandaq_core::units::parse_bytes)
                .transpose()
                .map_err(|e| anyhow::anyhow!("run.disk_warn_free: {e}"))?
                .unwrap_or(defaults.min_free_bytes),
            min_time_to_full: self
                .disk_warn_time
                .as_deref()
                .map(scandaq_core::units::parse_duration_s)
                .transpose()
                .map_err(|e| anyhow::anyhow!("run.disk_warn_time: {e}"))?
                .map_or(defaults.min_time_to_full, Duration::from_secs_f64),
        })
    }
}

impl CalibrationSection {
    /// The calibration source: (`dir`, `petsys_config`), exactly one of them unless
    /// `none = true`; the one given must exist.
    fn source(&self) -> Result<(Option<PathBuf>, Option<PathBuf>)> {
        let source = match (&self.dir, &self.petsys_config) {
            (Some(d), None) => {
                if !d.join(crate::process::calib_load::names::TDC).is_file() {
                    bail!(
                        "calibration.dir = {}: no {} there",
                        d.display(),
                        crate::process::calib_load::names::TDC
                    );
                }
                (Some(d.clone()), None)
            }
            (None, Some(p)) => {
                if !p.is_file() {
                    bail!("calibration.petsys_config = {}: no such file", p.display());
                }
                (None, Some(p.clone()))
            }
            (Some(_), Some(_)) => bail!("calibration: give either dir or petsys_config, not both"),
            (None, None) if self.none == Some(true) => (None, None),
            (None, None) => bail!(
                "calibration: missing; set calibration.dir (or --calib DIR) or calibration.petsys_config (or --petsys-config FILE); a run with only OPM-MEG / ultrasound streams sets calibration.none = true (or --no-calib)"
            ),
        };
        if self.none == Some(true) && (self.dir.is_some() || self.petsys_config.is_some()) {
            bail!("calibration: none = true cannot be combined with dir or petsys_config");
        }
        Ok(source)
    }
}

impl InputSection {
    /// The configuration of `input[k]`.
    fn input_config(
        &self,
        k: usize,
        ingest: &crate::acquire::ingest::IngestOptions,
    ) -> Result<InputConfig> {
        let key = format!("input[{k}]");
        let spec = match (&self.udp, &self.tcp) {
            (Some(a), None) => InputSpec::Udp(socket_addr(&format!("{key}.udp"), a)?),
            (None, Some(a)) => InputSpec::Tcp(socket_addr(&format!("{key}.tcp"), a)?),
            _ => bail!("{key}: give exactly one of udp = \"HOST:PORT\" or tcp = \"HOST:PORT\""),
        };
        let allow = self
            .allow
            .iter()
            .map(|a| {
                a.parse::<IpAddr>()
                    .with_context(|| format!("{key}.allow: {a:?} is not an IP address"))
            })
            .collect::<Result<Vec<_>>>()?;
        let ring_chunks = self.ring_chunks.unwrap_or(256);
        if ring_chunks == 0 {
            bail!("{key}.ring_chunks must be at least 1");
        }
        Ok(InputConfig {
            spec,
            allow,
            policy: self.policy.unwrap_or(OverflowPolicy::Drop),
            ring_chunks,
            ingest: ingest.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let p = Path::new("run.toml");
        let e = parse(p, "[run]\ndurationn = \"5s\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("durationn") && e.contains("run.toml"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let cal = dir.path().join("cal");
        std::fs::create_dir(&cal).unwrap();
        std::fs::write(cal.join("tdc_calibration.tsv"), "").unwrap();
        let good = format!(
            "[run]\nout = {:?}\nduration = \"2s\"\n[calibration]\ndir = {:?}\n[[input]]\nudp = \"127.0.0.1:5000\"\nallow = [\"127.0.0.1\"]\n",
            dir.path(),
            cal
        );
        let v = parse(p, &good).unwrap().validate().unwrap();
        assert_eq!(
            v.live.inputs[0].spec,
            InputSpec::Udp("127.0.0.1:5000".parse().unwrap())
        );
        assert_eq!(v.live.limits.duration, Some(Duration::from_secs(2)));
        let bad_addr = good.replace("127.0.0.1:5000", "localhost");
        let e = parse(p, &bad_addr)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("input[0].udp"), "{e}");
        let no_cal = good.replace(&format!("dir = {cal:?}"), "dir = \"/nonexistent\"");
        let e = parse(p, &no_cal)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("calibration.dir"), "{e}");
        let bad_out = good.replace(
            &format!("out = {:?}", dir.path()),
            "out = \"/nonexistent/a/b\"",
        );
        let e = parse(p, &bad_out)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("run.out"), "{e}");
        let bad_policy = good.replace("allow = [", "policy = \"sometimes\"\nallow = [");
        let e = parse(p, &bad_policy).unwrap_err().to_string();
        assert!(e.contains("sometimes") || e.contains("policy"), "{e}");
    }
}
