//! Dense channel -> crystal lookup built once from a [`Geometry`]: position (mm) and module of
//! every mapped channel, indexed without hashing on the hot path.

use crate::Geometry;

/// Channel -> crystal table: `index[channel]` is a dense crystal number (or unmapped); the
/// crystal's position and module sit side by side in one 16-byte entry, so a look-up touches
/// two cache lines (index, entry), not three.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CrystalLut {
    index: Vec<u32>,
    crystals: Vec<Entry>,
}

/// Position (mm) and module of one crystal.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C, align(16))]
struct Entry {
    pos_mm: [f32; 3],
    module: u32,
}

impl CrystalLut {
    /// Crystal number of unmapped channels in [`CrystalLut::crystal_or_unmapped`].
    pub const UNMAPPED: u32 = u32::MAX;

    /// Builds the table from every crystal of `geometry` (size: largest channel id + 1).
    pub fn from_geometry(geometry: &Geometry) -> Self {
        let top = geometry
            .crystals
            .keys()
            .next_back()
            .map_or(0, |&c| c as usize + 1);
        let mut lut = Self {
            index: vec![Self::UNMAPPED; top],
            crystals: Vec::with_capacity(geometry.crystals.len()),
        };
        for (&ch, c) in &geometry.crystals {
            lut.index[ch as usize] = lut.crystals.len() as u32;
            lut.crystals.push(Entry {
                pos_mm: c.pos_mm,
                module: c.module,
            });
        }
        lut
    }

    /// Dense crystal number of `channel`, if mapped.
    #[inline]
    pub fn crystal(&self, channel: u32) -> Option<u32> {
        match self.index.get(channel as usize) {
            Some(&i) if i != Self::UNMAPPED => Some(i),
            _ => None,
        }
    }

    /// Dense crystal number of `channel`, or [`CrystalLut::UNMAPPED`] (branch-free callers).
    #[inline]
    pub fn crystal_or_unmapped(&self, channel: u32) -> u32 {
        self.index
            .get(channel as usize)
            .copied()
            .unwrap_or(Self::UNMAPPED)
    }

    /// Position (mm) and module of `channel`'s crystal, if mapped (one look-up for callers
    /// that need both).
    #[inline]
    pub fn place(&self, channel: u32) -> Option<([f32; 3], u32)> {
        let c = self.crystal(channel)?;
        let e = self.crystals[c as usize];
        Some((e.pos_mm, e.module))
    }

    /// Position (mm) of crystal number `crystal` (from [`CrystalLut::crystal`]).
    #[inline]
    pub fn pos_mm(&self, crystal: u32) -> [f32; 3] {
        self.crystals[crystal as usize].pos_mm
    }

    /// Module of crystal number `crystal`.
    #[inline]
    pub fn module(&self, crystal: u32) -> u32 {
        self.crystals[crystal as usize].module
    }

    /// One past the largest mapped channel id (0 when none is mapped): every channel at or
    /// above it is unmapped.
    pub fn channel_bound(&self) -> u32 {
        self.index.len() as u32
    }

    /// Number of mapped channels.
    pub fn len(&self) -> usize {
        self.crystals.len()
    }

    /// True when no channel is mapped.
    pub fn is_empty(&self) -> bool {
        self.crystals.is_empty()
    }
}
