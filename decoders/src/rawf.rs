//! The PETsys `.rawf` file header: 8 little-endian u64 words before the frames
//! (docs/formats.md §2).

/// Header size in bytes.
pub const RAWF_HEADER_LEN: usize = 64;

/// Decoded `.rawf` header.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RawfHeader {
    /// System clock frequency, Hz (h[0] bits 0..32).
    pub frequency_hz: u32,
    /// QDC mode (h[0] bit 32); false = ToT.
    pub qdc_mode: bool,
    /// DAQ synchronisation epoch, seconds (h[1], f64 bit pattern).
    pub daq_sync_epoch_s: f64,
    /// Trigger unit id when one exists (h[2] = 0x8000 | id).
    pub trigger_id: Option<u16>,
    /// Mixed ToT/QDC mode (h[3] != 0; per-channel modes in `<prefix>.modf`).
    pub mixed_mode: bool,
    /// File creation time in DAQ clock ticks (h[4]).
    pub creation_ticks: u64,
}

/// Why a `.rawf` header is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RawfHeaderError {
    /// File shorter than the header.
    #[error("file is {0} bytes, shorter than the 64-byte .rawf header")]
    Short(usize),
    /// Frequency zero or implausible.
    #[error(
        "header word 0 gives a clock of {0} Hz; a PETsys .rawf has a frequency of 1 MHz..2 GHz \
         (is this really a .rawf file?)"
    )]
    BadFrequency(u32),
    /// Reserved words not zero or odd bits set.
    #[error(
        "header word {word} = {value:#018x} has bits set that a .rawf header never uses (is this really a .rawf file?)"
    )]
    BadWord {
        /// Word index.
        word: usize,
        /// Value.
        value: u64,
    },
}

impl RawfHeader {
    /// A ToT-mode 200 MHz header.
    pub fn tot_200mhz(daq_sync_epoch_s: f64) -> Self {
        Self {
            frequency_hz: 200_000_000,
            qdc_mode: false,
            daq_sync_epoch_s,
            trigger_id: None,
            mixed_mode: false,
            creation_ticks: 0,
        }
    }

    /// Parses the first 64 bytes of a file.
    pub fn parse(bytes: &[u8]) -> Result<Self, RawfHeaderError> {
        if bytes.len() < RAWF_HEADER_LEN {
            return Err(RawfHeaderError::Short(bytes.len()));
        }
        let mut h = [0u64; 8];
        for (k, w) in h.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[8 * k..8 * k + 8]);
            *w = u64::from_le_bytes(b);
        }
        if h[0] >> 33 != 0 {
            return Err(RawfHeaderError::BadWord {
                word: 0,
                value: h[0],
            });
        }
        let frequency_hz = h[0] as u32;
        if !(1_000_000..=2_000_000_000).contains(&frequency_hz) {
            return Err(RawfHeaderError::BadFrequency(frequency_hz));
        }
        if h[2] != 0 && (h[2] & !0xffff != 0 || h[2] & 0x8000 == 0) {
            return Err(RawfHeaderError::BadWord {
                word: 2,
                value: h[2],
            });
        }
        for (k, &w) in h.iter().enumerate().skip(5) {
            if w != 0 {
                return Err(RawfHeaderError::BadWord { word: k, value: w });
            }
        }
        Ok(Self {
            frequency_hz,
            qdc_mode: h[0] >> 32 & 1 == 1,
            daq_sync_epoch_s: f64::from_bits(h[1]),
            trigger_id: (h[2] != 0).then_some((h[2] & 0x7fff) as u16),
            mixed_mode: h[3] != 0,
            creation_ticks: h[4],
        })
    }

    /// Encodes the 64-byte header.
    pub fn encode(&self) -> [u8; RAWF_HEADER_LEN] {
        let h = [
            u64::from(self.frequency_hz) | u64::from(self.qdc_mode) << 32,
            self.daq_sync_epoch_s.to_bits(),
            self.trigger_id
                .map_or(0, |t| 0x8000 | u64::from(t & 0x7fff)),
            u64::from(self.mixed_mode),
            self.creation_ticks,
            0,
            0,
            0,
        ];
        let mut out = [0u8; RAWF_HEADER_LEN];
        for (k, w) in h.iter().enumerate() {
            out[8 * k..8 * k + 8].copy_from_slice(&w.to_le_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let h = RawfHeader {
            trigger_id: Some(12),
            creation_ticks: 99,
            ..RawfHeader::tot_200mhz(1.5)
        };
        let b = h.encode();
        assert_eq!(&b[0..8], &200_000_000u64.to_le_bytes());
        assert_eq!(RawfHeader::parse(&b).unwrap(), h);
        assert!(matches!(
            RawfHeader::parse(&b[..10]),
            Err(RawfHeaderError::Short(10))
        ));
        let mut bad = b;
        bad[0..8].copy_from_slice(&0u64.to_le_bytes());
        assert!(matches!(
            RawfHeader::parse(&bad),
            Err(RawfHeaderError::BadFrequency(0))
        ));
        let mut bad = b;
        bad[60] = 1;
        assert!(matches!(
            RawfHeader::parse(&bad),
            Err(RawfHeaderError::BadWord { word: 7, .. })
        ));
    }
}
