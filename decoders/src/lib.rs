//! scandaq-decoders: bytes <-> scandaq-core values for every wire and file format (including
//! PETLINK 32-bit list mode and its Interfile header).
//!
//! Pure functions and small state machines: no I/O, no global state, and no panic on any
//! byte sequence (property tests in `tests/` prove it). Encoders sit beside their decoders;
//! the simulator and the tests use them.

pub mod archive;
pub mod control;
pub mod idxf;
pub mod interfile;
pub mod meg;
pub mod petlink;
pub mod petsys;
pub mod rawf;
pub mod rf;
pub mod transport;

pub use interfile::{InterfileError, InterfileHeader, PetlinkHeader};
pub use petlink::{PetlinkDecoder, SinogramLayout};
pub use petsys::{FrameScanner, FrameSpan, HitFields};
pub use rawf::RawfHeader;
pub use transport::{TransportError, TransportHeader};
