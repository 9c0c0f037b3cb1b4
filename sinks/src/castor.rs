//! CASToR list-mode export (docs/formats.md §5 "CASToR list-mode export"): the `.cdh`
//! header and `.cdf` records of a list-mode data file, the user-defined scanner description
//! (`.hscan` + binary `.lut`), the dense crystal-id mapping that ties them together, and
//! readers for all of them (used by the round-trip tests and by anyone checking an export).
//!
//! Crystal ids: the crystals of `map_channel.tsv` sorted by PETsys absolute channel id
//! (`portID<<17 | slaveID<<12 | chipID<<6 | channelID`) ascending get ids 0, 1, 2, ... — the
//! LUT holds them in that order and the `.cdf` records index it.
//!
//! Every file is written as `NAME.inprogress`, fsynced, then renamed, like the Parquet tables.

use scandaq_core::Geometry;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// f32 values per crystal in a `.lut`: position x, y, z (mm) and orientation x, y, z.
pub const LUT_FLOATS_PER_CRYSTAL: usize = 6;
/// Bytes per crystal in a `.lut`.
pub const LUT_BYTES_PER_CRYSTAL: usize = 4 * LUT_FLOATS_PER_CRYSTAL;

/// A CASToR file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CastorError {
    /// File-system error on a path.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The content is not what the format requires.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
}

impl CastorError {
    fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
    fn format(path: &Path, message: impl Into<String>) -> Self {
        Self::Format {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// One list-mode event as written in a `.cdf` (no attenuation, scatter, random or
/// normalisation fields; one line per event).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CdfEvent {
    /// Milliseconds since the acquisition start.
    pub time_ms: u32,
    /// TOF delta t in ps, `t(crystal 1) - t(crystal 2)`; present iff the header's TOF flag is 1.
    pub tof_ps: Option<f32>,
    /// Crystal id of the first crystal (index into the LUT).
    pub id1: u32,
    /// Crystal id of the second crystal.
    pub id2: u32,
}

/// Bytes per `.cdf` record: u32 time, [f32 TOF], u32 id1, u32 id2.
pub fn record_size(tof: bool) -> usize {
    if tof { 16 } else { 12 }
}

/// Appends the little-endian record of `e` to `out` (the TOF field only when `tof`).
pub fn encode_event(e: &CdfEvent, tof: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(&e.time_ms.to_le_bytes());
    if tof {
        out.extend_from_slice(&e.tof_ps.unwrap_or(0.0).to_le_bytes());
    }
    out.extend_from_slice(&e.id1.to_le_bytes());
    out.extend_from_slice(&e.id2.to_le_bytes());
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}
fn le_f32(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Decodes a whole `.cdf` (`tof` as its header says). The size must be a whole number of
/// records.
pub fn decode_cdf(path: &Path, bytes: &[u8], tof: bool) -> Result<Vec<CdfEvent>, CastorError> {
    let size = record_size(tof);
    if !bytes.len().is_multiple_of(size) {
        return Err(CastorError::format(
            path,
            format!(
                "{} bytes is not a whole number of {size}-byte records (TOF {}): truncated, or the header's TOF flag does not match the data",
                bytes.len(),
                if tof { "on" } else { "off" }
            ),
        ));
    }
    Ok(bytes
        .chunks_exact(size)
        .map(|r| {
            let (tof_ps, ids) = if tof {
                (Some(le_f32(&r[4..8])), &r[8..16])
            } else {
                (None, &r[4..12])
            };
            CdfEvent {
                time_ms: le_u32(&r[0..4]),
                tof_ps,
                id1: le_u32(&ids[0..4]),
                id2: le_u32(&ids[4..8]),
            }
        })
        .collect())
}

/// Reads a `.cdf` file (see [`decode_cdf`]).
pub fn read_cdf(path: &Path, tof: bool) -> Result<Vec<CdfEvent>, CastorError> {
    let bytes = std::fs::read(path).map_err(|e| CastorError::io("reading", path, e))?;
    decode_cdf(path, &bytes, tof)
}

/// Writes `.cdf` records to `NAME.inprogress`; [`CdfWriter::commit`] fsyncs and renames.
pub struct CdfWriter {
    final_path: PathBuf,
    tmp_path: PathBuf,
    out: BufWriter<File>,
    tof: bool,
    events: u64,
    buf: Vec<u8>,
}

impl CdfWriter {
    /// Creates `path.inprogress` for records with (`tof`) or without the TOF field.
    pub fn create(path: &Path, tof: bool) -> Result<Self, CastorError> {
        let tmp_path = inprogress(path);
        let file =
            File::create(&tmp_path).map_err(|e| CastorError::io("creating", &tmp_path, e))?;
        Ok(Self {
            final_path: path.to_path_buf(),
            tmp_path,
            out: BufWriter::with_capacity(1 << 20, file),
            tof,
            events: 0,
            buf: Vec::with_capacity(16),
        })
    }

    /// Appends one event.
    pub fn push(&mut self, e: &CdfEvent) -> Result<(), CastorError> {
        self.buf.clear();
        encode_event(e, self.tof, &mut self.buf);
        self.out
            .write_all(&self.buf)
            .map_err(|err| CastorError::io("writing", &self.tmp_path, err))?;
        self.events += 1;
        Ok(())
    }

    /// Events written so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Flushes, fsyncs and renames to the final name; returns (events, bytes).
    pub fn commit(self) -> Result<(u64, u64), CastorError> {
        let Self {
            final_path,
            tmp_path,
            out,
            tof,
            events,
            ..
        } = self;
        let file = out
            .into_inner()
            .map_err(|e| CastorError::io("writing", &tmp_path, e.into_error()))?;
        file.sync_all()
            .map_err(|e| CastorError::io("syncing", &tmp_path, e))?;
        std::fs::rename(&tmp_path, &final_path)
            .map_err(|e| CastorError::io("renaming", &tmp_path, e))?;
        sync_parent(&final_path);
        Ok((events, events * record_size(tof) as u64))
    }
}

fn inprogress(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".inprogress");
    PathBuf::from(name)
}

fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent() {
        crate::durable_file::sync_dir(dir);
    }
}

/// Writes `bytes` to `path` atomically (`.inprogress`, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CastorError> {
    let tmp = inprogress(path);
    let mut f = File::create(&tmp).map_err(|e| CastorError::io("creating", &tmp, e))?;
    f.write_all(bytes)
        .map_err(|e| CastorError::io("writing", &tmp, e))?;
    f.sync_all()
        .map_err(|e| CastorError::io("syncing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| CastorError::io("renaming", &tmp, e))?;
    sync_parent(path);
    Ok(())
}

/// SHA-256 (hex) and size of a file, computed the way the run manifest records them (used to
/// check exports and committed tables).
pub fn sha256_file(path: &Path) -> Result<(String, u64), CastorError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = File::open(path).map_err(|e| CastorError::io("opening", path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f
            .read(&mut buf)
            .map_err(|e| CastorError::io("reading", path, e))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((scandaq_core::hex::hex_lower(&h.finalize()), n))
}

/// TOF keys of a `.cdh`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TofHeader {
    /// `TOF resolution (ps)`: coincidence time resolution, FWHM.
    pub resolution_ps: f64,
    /// `List TOF measurement range (ps)`: maximum minus minimum possible TOF value.
    pub measurement_range_ps: f64,
}

/// A list-mode `.cdh` header (the keys scandaq writes).
#[derive(Clone, Debug, PartialEq)]
pub struct CdhHeader {
    /// `Scanner name`: the `.hscan`/`.lut` pair CASToR looks up in its scanner directory.
    pub scanner_name: String,
    /// `Data filename`: the `.cdf`, relative to the header's directory.
    pub data_filename: String,
    /// `Number of events`.
    pub number_of_events: u64,
    /// `Start time (s)`.
    pub start_time_s: f64,
    /// `Duration (s)`.
    pub duration_s: f64,
    /// TOF keys (`TOF information flag: 1`), or none (flag 0).
    pub tof: Option<TofHeader>,
    /// `# ...` comment lines written after the keys (provenance; CASToR ignores them).
    pub comments: Vec<String>,
}

impl CdhHeader {
    /// The header text.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let mut kv = |k: &str, v: String| {
            s.push_str(k);
            s.push_str(": ");
            s.push_str(&v);
            s.push('\n');
        };
        kv("Scanner name", self.scanner_name.clone());
        kv("Data filename", self.data_filename.clone());
        kv("Number of events", self.number_of_events.to_string());
        kv("Data mode", "list-mode".into());
        kv("Data type", "PET".into());
        kv("Start time (s)", fmt_f64(self.start_time_s));
        kv("Duration (s)", fmt_f64(self.duration_s));
        kv("Attenuation correction flag", "0".into());
        kv("Normalization correction flag", "0".into());
        kv("Scatter correction flag", "0".into());
        kv("Random correction flag", "0".into());
        match &self.tof {
            Some(t) => {
                kv("TOF information flag", "1".into());
                kv("TOF resolution (ps)", fmt_f64(t.resolution_ps));
                kv(
                    "List TOF measurement range (ps)",
                    fmt_f64(t.measurement_range_ps),
                );
            }
            None => kv("TOF information flag", "0".into()),
        }
        for c in &self.comments {
            s.push_str("# ");
            s.push_str(c);
            s.push('\n');
        }
        s
    }

    /// Parses a `.cdh` (`path` for messages). Refuses headers whose optional correction
    /// fields are on or that describe several lines per event: scandaq writes neither.
    pub fn parse(path: &Path, text: &str) -> Result<Self, CastorError> {
        let keys = parse_keys(text);
        let get = |k: &str| {
            keys.get(k)
                .cloned()
                .ok_or_else(|| CastorError::format(path, format!("required key `{k}:` is missing")))
        };
        let num = |k: &str| -> Result<f64, CastorError> {
            get(k)?.parse::<f64>().map_err(|_| {
                CastorError::format(path, format!("`{k}` is not a number: {:?}", keys[k]))
            })
        };
        if get("Data mode")? != "list-mode" || get("Data type")? != "PET" {
            return Err(CastorError::format(
                path,
                "not a PET list-mode header (Data mode / Data type)",
            ));
        }
        for k in [
            "Attenuation correction flag",
            "Normalization correction flag",
            "Scatter correction flag",
            "Random correction flag",
        ] {
            if keys.get(k).is_some_and(|v| v != "0") {
                return Err(CastorError::format(
                    path,
                    format!("`{k}` is on: this reader handles only records without it"),
                ));
            }
        }
        if keys
            .get("Maximum number of lines per event")
            .is_some_and(|v| v != "1")
        {
            return Err(CastorError::format(
                path,
                "more than one line per event is not supported",
            ));
        }
        let tof = match keys.get("TOF information flag").map(String::as_str) {
            Some("1") => Some(TofHeader {
                resolution_ps: num("TOF resolution (ps)")?,
                measurement_range_ps: num("List TOF measurement range (ps)")?,
            }),
            None | Some("0") => None,
            Some(v) => {
                return Err(CastorError::format(
                    path,
                    format!("`TOF information flag` must be 0 or 1, not {v:?}"),
                ));
            }
        };
        let events = get("Number of events")?;
        Ok(Self {
            scanner_name: get("Scanner name")?,
            data_filename: get("Data filename")?,
            number_of_events: events.parse().map_err(|_| {
                CastorError::format(
                    path,
                    format!("`Number of events` is not a count: {events:?}"),
                )
            })?,
            start_time_s: num("Start time (s)")?,
            duration_s: num("Duration (s)")?,
            tof,
            comments: text
                .lines()
                .filter_map(|l| l.trim().strip_prefix('#'))
                .map(|c| c.trim().to_string())
                .collect(),
        })
    }

    /// Reads and parses a `.cdh` file.
    pub fn read(path: &Path) -> Result<Self, CastorError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| CastorError::io("reading", path, e))?;
        Self::parse(path, &text)
    }
}

/// `Key: value` lines (text after `#` ignored, keys as written) -> map.
pub fn parse_keys(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let l = l.split('#').next().unwrap_or("");
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// Shortest round-tripping decimal form (integers without a fraction).
fn fmt_f64(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// One crystal of a `.lut`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LutEntry {
    /// Crystal centre, mm.
    pub pos_mm: [f32; 3],
    /// Unit orientation vector (crystal axis, pointing away from the scanner axis).
    pub orientation: [f32; 3],
}

/// The binary `.lut` of `entries` (6 little-endian f32 per crystal, crystal-id order).
pub fn lut_bytes(entries: &[LutEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * LUT_BYTES_PER_CRYSTAL);
    for e in entries {
        for v in e.pos_mm.iter().chain(&e.orientation) {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// Decodes a `.lut`.
pub fn decode_lut(path: &Path, bytes: &[u8]) -> Result<Vec<LutEntry>, CastorError> {
    if !bytes.len().is_multiple_of(LUT_BYTES_PER_CRYSTAL) {
        return Err(CastorError::format(
            path,
            format!(
                "{} bytes is not a whole number of {LUT_BYTES_PER_CRYSTAL}-byte crystals (6 f32 each)",
                bytes.len()
            ),
        ));
    }
    Ok(bytes
        .chunks_exact(LUT_BYTES_PER_CRYSTAL)
        .map(|c| LutEntry {
            pos_mm: [le_f32(&c[0..]), le_f32(&c[4..]), le_f32(&c[8..])],
            orientation: [le_f32(&c[12..]), le_f32(&c[16..]), le_f32(&c[20..])],
        })
        .collect())
}

/// Reads a `.lut` file.
pub fn read_lut(path: &Path) -> Result<Vec<LutEntry>, CastorError> {
    let bytes = std::fs::read(path).map_err(|e| CastorError::io("reading", path, e))?;
    decode_lut(path, &bytes)
}

/// The dense crystal ids of a geometry: id `i` is the `i`-th mapped PETsys channel in
/// ascending channel-id order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrystalIds {
    /// PETsys channel id of each crystal id (ascending).
    pub channels: Vec<u32>,
}

impl CrystalIds {
    /// The ids of every crystal in `geometry`.
    pub fn from_geometry(geometry: &Geometry) -> Self {
        Self {
            channels: geometry.crystals.keys().copied().collect(),
        }
    }

    /// The crystal id of PETsys channel `channel`, if it is mapped.
    pub fn id_of(&self, channel: u32) -> Option<u32> {
        self.channels
            .binary_search(&channel)
            .ok()
            .and_then(|i| u32::try_from(i).ok())
    }

    /// Number of crystals.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    /// True when there are no crystals.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// The id map as TSV: `crystal_id channel_id portID slaveID chipID channelID region x y z`.
    pub fn to_tsv(&self, geometry: &Geometry) -> String {
        let mut s = String::from(
            "# crystal_id\tchannel_id\tportID\tslaveID\tchipID\tchannelID\tregion\tx_mm\ty_mm\tz_mm\n",
        );
        for (id, &ch) in self.channels.iter().enumerate() {
            let (p, sl, chip, c) = scandaq_core::ChannelId(ch).parts();
            if let Some(k) = geometry.crystal(ch) {
                s.push_str(&format!(
                    "{id}\t{ch}\t{p}\t{sl}\t{chip}\t{c}\t{}\t{}\t{}\t{}\n",
                    k.module, k.pos_mm[0], k.pos_mm[1], k.pos_mm[2]
                ));
            }
        }
        s
    }
}

/// LUT entries of `geometry` in crystal-id order. Orientation: the unit vector, in the
/// transaxial plane, from the scanner axis (x = y = 0) towards the centre of the crystal's
/// module (the mean of its crystals' x, y), so every crystal of a flat module shares its
/// module's normal; a module centred on the axis falls back to each crystal's own radial
/// direction. A crystal on the axis of such a module has no defined orientation: an error.
pub fn lut_entries(geometry: &Geometry) -> Result<Vec<LutEntry>, String> {
    let mut sums: BTreeMap<u32, (f64, f64)> = BTreeMap::new();
    for c in geometry.crystals.values() {
        let s = sums.entry(c.module).or_default();
        s.0 += f64::from(c.pos_mm[0]);
        s.1 += f64::from(c.pos_mm[1]);
    }
    let unit = |x: f64, y: f64| {
        let r = x.hypot(y);
        (r > 1e-6).then(|| [(x / r) as f32, (y / r) as f32, 0.0])
    };
    geometry
        .crystals
        .iter()
        .map(|(&ch, c)| {
            let (sx, sy) = sums[&c.module];
            let orientation = unit(sx, sy)
                .or_else(|| unit(f64::from(c.pos_mm[0]), f64::from(c.pos_mm[1])))
                .ok_or_else(|| {
                    format!(
                        "crystal of channel {} lies on the scanner axis (x = y = 0) in a module centred on the axis: its orientation is undefined; check map_channel.tsv",
                        scandaq_core::ChannelId(ch)
                    )
                })?;
            Ok(LutEntry {
                pos_mm: c.pos_mm,
                orientation,
            })
        })
        .collect()
}

/// A user-defined scanner description (`.hscan`) for a LUT-based geometry.
#[derive(Clone, Debug, PartialEq)]
pub struct ScannerHeader {
    /// `scanner name` (the file names without extension).
    pub name: String,
    /// `number of elements` = crystals in the LUT.
    pub elements: usize,
    /// `crystals size depth`, mm.
    pub crystal_depth_mm: f64,
    /// `crystals size transaxial`, mm.
    pub crystal_transaxial_mm: f64,
    /// `crystals size axial`, mm.
    pub crystal_axial_mm: f64,
    /// `voxels number transaxial`.
    pub voxels_transaxial: u32,
    /// `voxels number axial`.
    pub voxels_axial: u32,
    /// `field of view transaxial`, mm.
    pub fov_transaxial_mm: f64,
    /// `field of view axial`, mm.
    pub fov_axial_mm: f64,
    /// `description`.
    pub description: String,
}

impl ScannerHeader {
    /// A description of `geometry`: crystal pitches measured from the positions (smallest
    /// in-plane and axial distance between crystals of one module), transaxial field of view
    /// the diameter of the largest circle inside the crystals (2 × the smallest crystal radius),
    /// axial field of view the crystals' z extent plus one axial pitch, voxels of half a pitch.
    pub fn from_geometry(name: &str, geometry: &Geometry, crystal_depth_mm: f64) -> Self {
        let mut by_module: BTreeMap<u32, Vec<[f64; 3]>> = BTreeMap::new();
        for c in geometry.crystals.values() {
            by_module
                .entry(c.module)
                .or_default()
                .push(c.pos_mm.map(f64::from));
        }
        let (mut trans, mut axial) = (f64::INFINITY, f64::INFINITY);
        for pts in by_module.values() {
            for (i, a) in pts.iter().enumerate() {
                for b in &pts[i + 1..] {
                    let dxy = (a[0] - b[0]).hypot(a[1] - b[1]);
                    let dz = (a[2] - b[2]).abs();
                    if dz < 1e-3 && dxy > 1e-3 {
                        trans = trans.min(dxy);
                    }
                    if dxy < 1e-3 && dz > 1e-3 {
                        axial = axial.min(dz);
                    }
                }
            }
        }
        let trans = if trans.is_finite() { trans } else { 1.0 };
        let axial = if axial.is_finite() { axial } else { trans };
        let r_min = geometry
            .crystals
            .values()
            .map(|c| f64::from(c.pos_mm[0]).hypot(f64::from(c.pos_mm[1])))
            .fold(f64::INFINITY, f64::min);
        let (z0, z1) = geometry
            .crystals
            .values()
            .map(|c| f64::from(c.pos_mm[2]))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), z| {
                (a.min(z), b.max(z))
            });
        let fov_t = if r_min.is_finite() && r_min > 0.0 {
            2.0 * r_min
        } else {
            100.0
        };
        let fov_a = if z1 >= z0 { z1 - z0 + axial } else { axial };
        let round = |v: f64| (v * 1000.0).round() / 1000.0;
        Self {
            name: name.to_string(),
            elements: geometry.crystals.len(),
            crystal_depth_mm,
            crystal_transaxial_mm: round(trans),
            crystal_axial_mm: round(axial),
            voxels_transaxial: ((fov_t / (trans / 2.0)).round() as u32).max(1),
            voxels_axial: ((fov_a / (axial / 2.0)).round() as u32).max(1),
            fov_transaxial_mm: round(fov_t),
            fov_axial_mm: round(fov_a),
            description: "written by scandaq export castor from the run's map_channel.tsv; LUT positions are crystal centres".into(),
        }
    }

    /// The `.hscan` text.
    pub fn to_text(&self) -> String {
        format!(
            "modality: PET\n\
             scanner name: {}\n\
             description: {}\n\
             number of elements: {}\n\
             number of layers: 1\n\
             number of crystals in layer: {}\n\
             crystals size depth: {}\n\
             crystals size transaxial: {}\n\
             crystals size axial: {}\n\
             voxels number transaxial: {}\n\
             voxels number axial: {}\n\
             field of view transaxial: {}\n\
             field of view axial: {}\n\
             min angle difference: 0\n\
             mean depth of interaction: -1\n",
            self.name,
            self.description,
            self.elements,
            self.elements,
            fmt_f64(self.crystal_depth_mm),
            fmt_f64(self.crystal_transaxial_mm),
            fmt_f64(self.crystal_axial_mm),
            self.voxels_transaxial,
            self.voxels_axial,
            fmt_f64(self.fov_transaxial_mm),
            fmt_f64(self.fov_axial_mm),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scandaq_core::{ChannelId, Crystal};

    fn geometry() -> Geometry {
        let mut g = Geometry::default();
        for m in 0..2u32 {
            for xi in 0..2u32 {
                for yi in 0..2u32 {
                    let ch = ChannelId::from_parts(0, 0, m, xi * 2 + yi).unwrap().0;
                    let x = if m == 0 { -100.0 } else { 100.0 };
                    g.crystals.insert(
                        ch,
                        Crystal {
                            module: m,
                            xi,
                            yi,
                            pos_mm: [x, xi as f32 * 3.2 - 1.6, yi as f32 * 3.2 - 1.6],
                        },
                    );
                }
            }
        }
        g
    }

    #[test]
    fn cdf_records_round_trip_with_and_without_tof() {
        let dir = tempfile::tempdir().unwrap();
        for tof in [false, true] {
            let path = dir.path().join(format!("a-{tof}.cdf"));
            let events: Vec<CdfEvent> = (0..5u32)
                .map(|i| CdfEvent {
                    time_ms: i * 7,
                    tof_ps: tof.then_some(-(i as f32) * 12.5),
                    id1: i,
                    id2: 100 + i,
                })
                .collect();
            let mut w = CdfWriter::create(&path, tof).unwrap();
            for e in &events {
                w.push(e).unwrap();
            }
            let (n, bytes) = w.commit().unwrap();
            assert_eq!((n, bytes), (5, 5 * record_size(tof) as u64));
            assert_eq!(std::fs::metadata(&path).unwrap().len(), bytes);
            assert!(!inprogress(&path).exists());
            assert_eq!(read_cdf(&path, tof).unwrap(), events);
            // Test vector: first record of the TOF file is 0u32, -0.0f32, 0u32, 100u32.
            let raw = std::fs::read(&path).unwrap();
            if tof {
                assert_eq!(
                    &raw[16..32],
                    &[7, 0, 0, 0, 0, 0, 0x48, 0xc1, 1, 0, 0, 0, 101, 0, 0, 0]
                );
            } else {
                assert_eq!(&raw[0..12], &[0, 0, 0, 0, 0, 0, 0, 0, 100, 0, 0, 0]);
            }
            let err = read_cdf(&path, !tof).unwrap_err().to_string();
            assert!(err.contains("not a whole number"), "{err}");
        }
    }

    #[test]
    fn header_round_trips_and_refuses_what_it_cannot_read() {
        let h = CdhHeader {
            scanner_name: "scandaq_run-000001".into(),
            data_filename: "run-000001.cdf".into(),
            number_of_events: 42,
            start_time_s: 0.0,
            duration_s: 1.25,
            tof: Some(TofHeader {
                resolution_ps: 200.0,
                measurement_range_ps: 8000.0,
            }),
            comments: vec!["tof = t1 - t2".into()],
        };
        let text = h.to_text();
        assert!(
            text.contains("Data mode: list-mode\n") && text.contains("TOF information flag: 1\n")
        );
        assert!(text.contains("List TOF measurement range (ps): 8000\n"));
        let p = Path::new("x.cdh");
        assert_eq!(CdhHeader::parse(p, &text).unwrap(), h);
        let bad = text.replace("Random correction flag: 0", "Random correction flag: 1");
        assert!(CdhHeader::parse(p, &bad).is_err());
        let missing = text.replace("Number of events: 42\n", "");
        let e = CdhHeader::parse(p, &missing).unwrap_err().to_string();
        assert!(e.contains("Number of events"), "{e}");
    }

    #[test]
    fn crystal_ids_lut_and_scanner_follow_the_channel_order() {
        let g = geometry();
        let ids = CrystalIds::from_geometry(&g);
        assert_eq!(ids.len(), 8);
        let mut sorted = ids.channels.clone();
        sorted.sort_unstable();
        assert_eq!(ids.channels, sorted);
        for (i, &ch) in ids.channels.iter().enumerate() {
            assert_eq!(ids.id_of(ch), Some(i as u32));
        }
        assert_eq!(ids.id_of(12345), None);
        let lut = lut_entries(&g).unwrap();
        let bytes = lut_bytes(&lut);
        assert_eq!(bytes.len(), 8 * LUT_BYTES_PER_CRYSTAL);
        let back = decode_lut(Path::new("x.lut"), &bytes).unwrap();
        assert_eq!(back, lut);
        for (e, ch) in back.iter().zip(&ids.channels) {
            let c = g.crystal(*ch).unwrap();
            assert_eq!(e.pos_mm, c.pos_mm);
            let want = if c.module == 0 { -1.0 } else { 1.0 };
            assert_eq!(e.orientation, [want, 0.0, 0.0]);
        }
        let s = ScannerHeader::from_geometry("s", &g, 20.0);
        assert_eq!((s.crystal_transaxial_mm, s.crystal_axial_mm), (3.2, 3.2));
        assert!((s.fov_transaxial_mm - 2.0 * 100.0128).abs() < 1e-3 && s.elements == 8);
        let text = s.to_text();
        assert!(text.contains("number of elements: 8\n") && text.contains("modality: PET\n"));
        assert!(ids.to_tsv(&g).lines().count() == 9);
    }
}
