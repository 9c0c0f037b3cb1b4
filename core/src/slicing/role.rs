//! [`PieceRole`]: what a piece's rows are to its slice (lead-in, body, lead-out).

use std::fmt;

/// What a piece's rows are to its slice.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum PieceRole {
    /// Rows of `[start - lead_in_ps, start)`: the previous slice's tail, duplicated.
    LeadIn,
    /// Rows of `[start, end)`: the slice itself.
    Body,
    /// Rows of `[end, end + lead_out_ps)`: the next slice's head, duplicated.
    LeadOut,
}

impl PieceRole {
    /// The snake_case name (`lead_in`, `body`, `lead_out`).
    pub fn name(self) -> &'static str {
        match self {
            PieceRole::LeadIn => "lead_in",
            PieceRole::Body => "body",
            PieceRole::LeadOut => "lead_out",
        }
    }
}

impl fmt::Display for PieceRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
