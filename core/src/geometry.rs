//! Scanner geometry: PETsys channel id -> crystal (module, position). Read from and written as
//! PETsys `map_channel.tsv` (`portID slaveID chipID channelID region xi yi x y z`, mm).

use crate::calib::TableError;
use crate::table_text::rows;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One crystal read by one channel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Crystal {
    /// Region (PETsys) = detector module index.
    pub module: u32,
    /// Column index within the module.
    pub xi: u32,
    /// Row index within the module.
    pub yi: u32,
    /// Crystal centre, mm.
    pub pos_mm: [f32; 3],
}

/// Channel id -> crystal map.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Geometry {
    /// Crystals by PETsys absolute channel id.
    pub crystals: BTreeMap<u32, Crystal>,
}

const LAYOUT: &str = "portID slaveID chipID channelID region xi yi x y z";

impl Geometry {
    /// Parses a PETsys `map_channel.tsv`. `name` is used in error messages.
    pub fn parse_map_channel(name: &str, text: &str) -> Result<Self, TableError> {
        let mut crystals = BTreeMap::new();
        for row in rows(name, text, 10, LAYOUT) {
            let row = row?;
            let id = row.channel(0)?;
            let crystal = Crystal {
                module: row.get(4, "region")?,
                xi: row.get(5, "xi")?,
                yi: row.get(6, "yi")?,
                pos_mm: [
                    row.finite(7, "x")? as f32,
                    row.finite(8, "y")? as f32,
                    row.finite(9, "z")? as f32,
                ],
            };
            if crystals.insert(id.0, crystal).is_some() {
                return Err(row.error(format!("channel {id} appears twice")));
            }
        }
        Ok(Self { crystals })
    }

    /// Writes the map in PETsys `map_channel.tsv` layout.
    pub fn to_map_channel(&self) -> String {
        let mut out = format!("# {LAYOUT}\n");
        for (&id, c) in &self.crystals {
            let (p, s, chip, ch) = crate::ChannelId(id).parts();
            let _ = writeln!(
                out,
                "{p}\t{s}\t{chip}\t{ch}\t{}\t{}\t{}\t{}\t{}\t{}",
                c.module, c.xi, c.yi, c.pos_mm[0], c.pos_mm[1], c.pos_mm[2]
            );
        }
        out
    }

    /// The crystal read by `channel`, if mapped.
    pub fn crystal(&self, channel: u32) -> Option<&Crystal> {
        self.crystals.get(&channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_channel_round_trip_and_errors() {
        let mut g = Geometry::default();
        g.crystals.insert(
            crate::ChannelId::from_parts(0, 0, 1, 5).unwrap().0,
            Crystal {
                module: 1,
                xi: 5,
                yi: 0,
                pos_mm: [135.0, -11.2, 1.6],
            },
        );
        let text = g.to_map_channel();
        assert_eq!(Geometry::parse_map_channel("m", &text).unwrap(), g);
        let err = Geometry::parse_map_channel("map_channel.tsv", "0 0 0 1 0 0 0 1.0 2.0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("map_channel.tsv line 1"), "{err}");
        assert!(err.contains("expected 10 columns"), "{err}");
    }
}
