//! Writing FIF tags: the tag writer, the channel-info records, and the measurement header
//! every file of the export starts with (file id, directory pointer, free list, measurement
//! block and its measurement info).

use super::fiff;
use super::tables::Channel;
use anyhow::Result;
use std::io::Write;

/// A FIF tag writer.
pub(super) struct Fif<W: Write> {
    pub(super) w: W,
    /// Bytes written.
    pub(super) pos: u64,
}

impl<W: Write> Fif<W> {
    /// One tag: its header (kind, type, size, next) and its data.
    pub(super) fn tag(&mut self, kind: i32, typ: i32, data: &[u8], next: i32) -> Result<()> {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&kind.to_be_bytes());
        h[4..8].copy_from_slice(&typ.to_be_bytes());
        h[8..12].copy_from_slice(&(data.len() as i32).to_be_bytes());
        h[12..16].copy_from_slice(&next.to_be_bytes());
        self.w.write_all(&h)?;
        self.w.write_all(data)?;
        self.pos += 16 + data.len() as u64;
        Ok(())
    }
    /// A tag of 32-bit integers.
    pub(super) fn int(&mut self, kind: i32, v: &[i32]) -> Result<()> {
        let d: Vec<u8> = v.iter().flat_map(|x| x.to_be_bytes()).collect();
        self.tag(kind, fiff::T_INT, &d, fiff::NEXT_SEQ)
    }
    /// A tag of one 32-bit float.
    pub(super) fn float(&mut self, kind: i32, v: f32) -> Result<()> {
        self.tag(kind, fiff::T_FLOAT, &v.to_be_bytes(), fiff::NEXT_SEQ)
    }
    /// An id tag (version, machine id, time).
    pub(super) fn id(&mut self, kind: i32, secs: i32, usecs: i32) -> Result<()> {
        let d: Vec<u8> = [fiff::VERSION, 0x5CA9, 0xDA0, secs, usecs]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect();
        self.tag(kind, fiff::T_ID_STRUCT, &d, fiff::NEXT_SEQ)
    }
    /// The channel-info record of channel `index`.
    pub(super) fn ch_info(&mut self, index: i32, ch: &Channel) -> Result<()> {
        let (kind, coil, unit) = match ch.kind.as_str() {
            "meg_mag" => (fiff::MEG_CH, fiff::COIL_OPM_MAG, fiff::UNIT_T),
            "meg_grad" => (fiff::MEG_CH, fiff::COIL_NONE, fiff::UNIT_T_M),
            "trigger" => (fiff::STIM_CH, fiff::COIL_NONE, fiff::UNIT_V),
            _ => (fiff::MISC_CH, fiff::COIL_NONE, fiff::UNIT_NONE),
        };
        let mut d = Vec::with_capacity(96);
        for v in [index + 1, index + 1, kind] {
            d.extend_from_slice(&v.to_be_bytes());
        }
        d.extend_from_slice(&(ch.range as f32).to_be_bytes());
        d.extend_from_slice(&(ch.cal as f32).to_be_bytes());
        d.extend_from_slice(&coil.to_be_bytes());
        // loc: r0, ex, ey, ez (ez = the sensitive axis).
        let ez = ch.ori;
        let (ex, ey) = orthonormal_pair(ez);
        for v in ch.pos.iter().chain(&ex).chain(&ey).chain(&ez) {
            d.extend_from_slice(&(*v as f32).to_be_bytes());
        }
        d.extend_from_slice(&unit.to_be_bytes());
        d.extend_from_slice(&0i32.to_be_bytes());
        let mut name = [0u8; 16];
        name[..ch.name.len()].copy_from_slice(ch.name.as_bytes());
        d.extend_from_slice(&name);
        self.tag(fiff::CH_INFO, fiff::T_CH_INFO_STRUCT, &d, fiff::NEXT_SEQ)
    }
}

/// Two unit vectors completing `z` to an orthonormal frame (zeros for a zero `z`).
fn orthonormal_pair(z: [f64; 3]) -> ([f64; 3], [f64; 3]) {
    let n = (z[0] * z[0] + z[1] * z[1] + z[2] * z[2]).sqrt();
    if n == 0.0 {
        return ([0.0; 3], [0.0; 3]);
    }
    let z = [z[0] / n, z[1] / n, z[2] / n];
    let a = if z[0].abs() < 0.9 {
        [1.0, 0.0, 0.0]
    } else {
        [0.0, 1.0, 0.0]
    };
    let cross = |u: [f64; 3], v: [f64; 3]| {
        [
            u[1] * v[2] - u[2] * v[1],
            u[2] * v[0] - u[0] * v[2],
            u[0] * v[1] - u[1] * v[0],
        ]
    };
    let x = cross(a, z);
    let xn = (x[0] * x[0] + x[1] * x[1] + x[2] * x[2]).sqrt();
    let x = [x[0] / xn, x[1] / xn, x[2] / xn];
    (x, cross(z, x))
}

/// What the measurement info says besides the channels.
pub(super) struct MeasurementInfo<'a> {
    pub(super) stream: u32,
    pub(super) channels: &'a [Channel],
    /// Sampling rate, Hz.
    pub(super) sfreq: f64,
    /// Measurement date: the corrected time of the first sample, ns.
    pub(super) meas_ns: i64,
    /// Largest channel shift, samples, when the channels are aligned.
    pub(super) aligned_shift_samples: Option<f64>,
}

impl MeasurementInfo<'_> {
    /// The measurement id `(seconds, microseconds)` of the file set.
    pub(super) fn id(&self) -> (i32, i32) {
        let secs = self.meas_ns.div_euclid(1_000_000_000);
        let usecs = (self.meas_ns.rem_euclid(1_000_000_000) / 1000) as i32;
        (i32::try_from(secs).unwrap_or(0), usecs)
    }

    /// The bytes every file starts with, up to the end of the measurement info.
    pub(super) fn header(&self) -> Result<Vec<u8>> {
        let mut fif = Fif {
            w: Vec::new(),
            pos: 0,
        };
        let (secs32, usecs) = self.id();
        let sfreq = self.sfreq;
        fif.id(fiff::FILE_ID, secs32, usecs)?;
        fif.int(fiff::DIR_POINTER, &[-1])?;
        fif.int(fiff::FREE_LIST, &[-1])?;
        fif.int(fiff::BLOCK_START, &[fiff::B_MEAS])?;
        fif.id(fiff::BLOCK_ID, secs32, usecs)?;
        fif.int(fiff::BLOCK_START, &[fiff::B_MEAS_INFO])?;
        fif.int(fiff::NCHAN, &[self.channels.len() as i32])?;
        fif.float(fiff::SFREQ, sfreq as f32)?;
        fif.float(fiff::HIGHPASS, 0.0)?;
        fif.float(fiff::LOWPASS, (sfreq / 2.0) as f32)?;
        fif.int(fiff::MEAS_DATE, &[secs32, usecs])?;
        fif.tag(
            fiff::DESCRIPTION,
            fiff::T_STRING,
            self.description().as_bytes(),
            fiff::NEXT_SEQ,
        )?;
        for (i, c) in self.channels.iter().enumerate() {
            fif.ch_info(i as i32, c)?;
        }
        fif.int(fiff::BLOCK_END, &[fiff::B_MEAS_INFO])?;
        Ok(fif.w)
    }

    /// The file's description: the stream and whether (and how) its channels were aligned.
    fn description(&self) -> String {
        let stream = self.stream;
        match self.aligned_shift_samples {
            Some(max_shift_samples) => format!(
                "scandaq: stream {stream}; channels aligned by meg_channels.delay_ps (Kaiser-windowed \
                 sinc, {} taps, beta {}); largest shift {max_shift_samples:.3} samples",
                2 * super::align::HALF_TAPS,
                super::align::KAISER_BETA
            ),
            None => format!(
                "scandaq: stream {stream}; samples as recorded (channel delays not applied)"
            ),
        }
    }
}
