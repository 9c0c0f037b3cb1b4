//! `cluster.toml` (docs/cluster.md "cluster.toml reference"): the slice length, the
//! `[coincidences]` every builder sorts with, the output root, the flow-control settings and
//! one `[[node]]` per node (name, role, Flight address, and an acquisition node's inputs, given
//! inline as `[[node.input]]` or by a run configuration file). Unknown keys are refused and
//! every error names the key.

use crate::acquire::run_config::{self, CalibrationSection, InputSection, RunFile};
use crate::process::cluster::slices::cluster_spec;
use crate::process::coinc_stage::CoincidenceOptions;
use crate::process::rotating_table::Rotation;
use anyhow::{Context, Result};
use scandaq_core::slicing::SliceSpec;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default slice length.
pub const DEFAULT_SLICE: &str = "10ms";

/// A node's job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Owns front-end boards: inputs -> time-sorted calibrated singles -> builders.
    Acquisition,
    /// Receives slices, sorts coincidences, writes the tables.
    Builder,
}

/// `[flow]`: credits and buffers between acquisition nodes and builders.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowSection {
    /// Batches a sender may have unacknowledged per builder (the builder's credits).
    pub credits: u32,
    /// Batches a sender buffers per builder before it drops (and counts) new ones.
    pub buffer_batches: usize,
    /// Rows per Flight batch at most.
    pub batch_rows: usize,
    /// How often a sender tries to reach a builder it lost (e.g. "1s").
    pub reconnect_every: String,
    /// How long an acquisition node waits at its end for the builders' last acknowledgements.
    pub drain_timeout: String,
    /// How long a builder waits, from the first data of the run, for an acquisition node it
    /// has not heard from; then that node is marked lost (`never_connected`) and its slices
    /// are listed missing.
    pub source_timeout: String,
}

impl Default for FlowSection {
    fn default() -> Self {
        Self {
            credits: 8,
            buffer_batches: 64,
            batch_rows: 65_536,
            reconnect_every: "1s".into(),
            drain_timeout: "30s".into(),
            source_timeout: "30s".into(),
        }
    }
}

/// `[[node]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Unique name (`acq-a`, `builder-0`): the partition value `builder=NAME`.
    pub name: String,
    /// `acquisition` or `builder`.
    pub role: Role,
    /// The node's Arrow Flight address, HOST:PORT.
    pub listen: String,
    /// Acquisition: a run configuration file ([run], [calibration], [[input]]; its
    /// [coincidences] is ignored: the builders sort).
    pub run_config: Option<PathBuf>,
    /// Acquisition: inputs given inline (replace the run configuration's).
    #[serde(default)]
    pub input: Vec<InputSection>,
}

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// Slice length (`10ms`).
    pub slice: Option<String>,
    /// Output root: builders write `OUT/run=R/builder=B/`, acquisition nodes their singles
    /// runs under `OUT/nodes/NAME/`.
    pub out: Option<PathBuf>,
    /// A builder starts new table files once its prompt or delayed file reaches this size
    /// (`"1GiB"`, the default; bounds its memory over a long run).
    pub rotate_size: Option<String>,
    /// A builder starts new table files after this wall-clock time (`"10m"`; none by
    /// default).
    pub rotate_every: Option<String>,
    /// Calibration for every node (an acquisition node's run configuration may give its own).
    #[serde(default)]
    pub calibration: CalibrationSection,
    /// How the builders sort (the run configuration's `[coincidences]`).
    #[serde(default)]
    pub coincidences: CoincidenceOptions,
    /// Credits and buffers.
    #[serde(default)]
    pub flow: FlowSection,
    /// The nodes.
    #[serde(default)]
    pub node: Vec<NodeSection>,
}

/// A validated cluster: the file, where it is, and the values parsed out of it.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// As written.
    pub file: ClusterFile,
    /// The file's directory (relative paths in it are relative to this).
    pub base: PathBuf,
    /// Slicing.
    pub spec: SliceSpec,
    /// Output root.
    pub out: PathBuf,
    /// Every node's Flight address, in file order.
    pub addrs: Vec<SocketAddr>,
    /// `flow.reconnect_every`.
    pub reconnect_every: Duration,
    /// `flow.drain_timeout`.
    pub drain_timeout: Duration,
    /// `flow.source_timeout`.
    pub source_timeout: Duration,
    /// When the builders cut their tables (`rotate_size`, `rotate_every`).
    pub rotation: Rotation,
}

/// Reads and validates `path`.
pub fn read(path: &Path) -> Result<Cluster> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read cluster configuration {}", path.display()))?;
    parse(path, &text)
}

/// Parses and validates the text of `path`.
pub fn parse(path: &Path, text: &str) -> Result<Cluster> {
    let file: ClusterFile =
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    file.validate(path, base)
}

fn duration(key: &str, text: &str) -> Result<Duration> {
    let s =
        scandaq_core::units::parse_duration_s(text).map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
    Ok(Duration::from_secs_f64(s))
}

impl ClusterFile {
    fn validate(self, path: &Path, base: PathBuf) -> Result<Cluster> {
        let at = |msg: String| anyhow::anyhow!("{}: {msg}", path.display());
        let slice_text = self.slice.as_deref().unwrap_or(DEFAULT_SLICE);
        let slice =
            scandaq_core::units::parse_time(slice_text).map_err(|e| at(format!("slice: {e}")))?;
        if !slice.has_unit || !(1e6..=3.6e15).contains(&slice.ps) {
            return Err(at(format!(
                "slice = {slice_text:?}: give a time with a unit between 1us and 1h, e.g. 10ms"
            )));
        }
        self.coincidences
            .validate()
            .map_err(|e| at(format!("[coincidences]: {e:#}")))?;
        if !self.coincidences.enabled {
            return Err(at(
                "[coincidences] enabled = false: a cluster exists to sort coincidences".into(),
            ));
        }
        let mut names = BTreeSet::new();
        let mut addrs = Vec::new();
        for (k, n) in self.node.iter().enumerate() {
            if n.name.is_empty()
                || !n
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(at(format!(
                    "node[{k}].name = {:?}: use letters, digits, - and _",
                    n.name
                )));
            }
            if !names.insert(n.name.clone()) {
                return Err(at(format!("node[{k}].name = {:?} is used twice", n.name)));
            }
            let addr = n
                .listen
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| {
                    at(format!(
                        "node[{k}].listen = {:?} is not an address: use HOST:PORT",
                        n.listen
                    ))
                })?;
            if addrs.contains(&addr) {
                return Err(at(format!("node[{k}].listen = {addr} is used twice")));
            }
            addrs.push(addr);
            let has_inputs = n.run_config.is_some() || !n.input.is_empty();
            match n.role {
                Role::Builder if has_inputs => {
                    return Err(at(format!(
                        "node[{k}] ({}): a builder has no inputs (drop run_config / [[node.input]])",
                        n.name
                    )));
                }
                Role::Acquisition if !has_inputs => {
                    return Err(at(format!(
                        "node[{k}] ({}): an acquisition node needs inputs: [[node.input]] or run_config = \"FILE\"",
                        n.name
                    )));
                }
                _ => {}
            }
        }
        let builders = self.node.iter().filter(|n| n.role == Role::Builder).count();
        let sources = self
            .node
            .iter()
            .filter(|n| n.role == Role::Acquisition)
            .count();
        if builders == 0 || sources == 0 {
            return Err(at(format!(
                "[[node]]: {sources} acquisition and {builders} builder node(s): a cluster needs at least one of each"
            )));
        }
        let flow = &self.flow;
        if flow.credits == 0
            || flow.buffer_batches == 0
            || !(1..=1 << 22).contains(&flow.batch_rows)
        {
            return Err(at(
                "[flow]: credits and buffer_batches must be at least 1, batch_rows 1 .. 4194304"
                    .into(),
            ));
        }
        let spec = cluster_spec(slice.ps.round() as i64, builders as u32, &self.coincidences)
            .map_err(|e| at(format!("slice: {e:#}")))?;
        let out = base.join(
            self.out
                .clone()
                .unwrap_or_else(|| PathBuf::from("cluster-out")),
        );
        let rotation = self.rotation().map_err(|e| at(format!("{e:#}")))?;
        Ok(Cluster {
            rotation,
            reconnect_every: duration("flow.reconnect_every", &flow.reconnect_every)
                .map_err(|e| at(format!("{e:#}")))?,
            drain_timeout: duration("flow.drain_timeout", &flow.drain_timeout)
                .map_err(|e| at(format!("{e:#}")))?,
            source_timeout: duration("flow.source_timeout", &flow.source_timeout)
                .map_err(|e| at(format!("{e:#}")))?,
            file: self,
            base,
            spec,
            out,
            addrs,
        })
    }
}

impl ClusterFile {
    /// `rotate_size` and `rotate_every`.
    fn rotation(&self) -> Result<Rotation> {
        let max_bytes = self
            .rotate_size
            .as_deref()
            .map(scandaq_core::units::parse_bytes)
            .transpose()
            .map_err(|e| anyhow::anyhow!("rotate_size: {e}"))?;
        let max_seconds = self
            .rotate_every
            .as_deref()
            .map(scandaq_core::units::parse_duration_s)
            .transpose()
            .map_err(|e| anyhow::anyhow!("rotate_every: {e}"))?;
        Ok(Rotation {
            max_bytes,
            max_seconds,
            ..Rotation::default()
        })
    }
}

impl Cluster {
    /// The node called `name`, with its index in the file.
    pub fn node(&self, name: &str) -> Result<(usize, &NodeSection)> {
        self.file
            .node
            .iter()
            .enumerate()
            .find(|(_, n)| n.name == name)
            .with_context(|| {
                let known: Vec<&str> = self.file.node.iter().map(|n| n.name.as_str()).collect();
                format!(
                    "no [[node]] called {name:?} in the cluster file (nodes: {})",
                    known.join(", ")
                )
            })
    }

    /// The nodes of `role`, in file order, with their addresses.
    pub fn nodes_of(&self, role: Role) -> Vec<(&NodeSection, SocketAddr)> {
        self.file
            .node
            .iter()
            .zip(&self.addrs)
            .filter(|(n, _)| n.role == role)
            .map(|(n, a)| (n, *a))
            .collect()
    }

    /// The run configuration of acquisition node `node`: its `run_config` file (relative to
    /// the cluster file) or an empty one, its inline inputs, the cluster's calibration when it
    /// gives none, its singles runs under `OUT/nodes/NAME`, and no local coincidence sorting.
    pub fn acquisition_run_file(&self, node: &NodeSection) -> Result<RunFile> {
        let mut file = match &node.run_config {
            Some(p) => run_config::read(&self.base.join(p))
                .with_context(|| format!("node {:?}: run_config", node.name))?,
            None => RunFile::default(),
        };
        if !node.input.is_empty() {
            file.input = node.input.clone();
        }
        let c = &file.calibration;
        if c.dir.is_none() && c.petsys_config.is_none() && c.none.is_none() {
            let mut cal = self.file.calibration.clone();
            cal.dir = cal.dir.map(|d| self.base.join(d));
            cal.petsys_config = cal.petsys_config.map(|d| self.base.join(d));
            file.calibration = cal;
        }
        if file.run.out.is_none() {
            file.run.out = Some(self.out.join("nodes").join(&node.name));
        }
        file.coincidences = CoincidenceOptions {
            enabled: false,
            ..CoincidenceOptions::default()
        };
        Ok(file)
    }

    /// The calibration directory or PETsys config a builder reads its crystal map from.
    pub fn builder_calibration(&self) -> CalibrationSection {
        let mut cal = self.file.calibration.clone();
        cal.dir = cal.dir.map(|d| self.base.join(d));
        cal.petsys_config = cal.petsys_config.map(|d| self.base.join(d));
        cal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
slice = "10ms"
out = "out"
[coincidences]
window_ps = 4000
[[node]]
name = "acq-a"
role = "acquisition"
listen = "127.0.0.1:7101"
[[node.input]]
udp = "127.0.0.1:6001"
[[node]]
name = "b0"
role = "builder"
listen = "127.0.0.1:7201"
"#;

    #[test]
    fn a_good_file_parses_and_bad_keys_are_named() {
        let c = parse(Path::new("c.toml"), GOOD).unwrap();
        assert_eq!(c.spec.slice_ps, 10_000_000_000);
        assert_eq!(c.spec.builders, 1);
        let unknown = GOOD.replace("slice =", "slise =");
        let e = parse(Path::new("c.toml"), &unknown)
            .unwrap_err()
            .to_string();
        assert!(e.contains("slise"), "{e}");
        let e = parse(Path::new("c.toml"), &GOOD.replace("\"10ms\"", "\"10\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("slice"), "{e}");
        let e = parse(
            Path::new("c.toml"),
            &GOOD.replace("role = \"builder\"", "role = \"acquisition\""),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("node[1]"), "{e}");
        let e = parse(Path::new("c.toml"), &GOOD.replace("window_ps", "windowps"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("windowps"), "{e}");
    }

    #[test]
    fn builder_rotation_defaults_to_1_gib_and_bad_values_are_named() {
        let c = parse(Path::new("c.toml"), GOOD).unwrap();
        assert_eq!(c.rotation.max_bytes(), 1 << 30);
        assert_eq!(c.rotation.max_seconds, None);
        let set = format!("rotate_size = \"2GiB\"\nrotate_every = \"10m\"\n{GOOD}");
        let c = parse(Path::new("c.toml"), &set).unwrap();
        assert_eq!(c.rotation.max_bytes(), 2 << 30);
        assert_eq!(c.rotation.max_seconds, Some(600.0));
        for (bad, key) in [
            ("rotate_size = \"2 lots\"", "rotate_size"),
            ("rotate_every = \"soon\"", "rotate_every"),
        ] {
            let e = parse(Path::new("c.toml"), &format!("{bad}\n{GOOD}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains("c.toml"), "{e}");
        }
    }
}
