//! PETSIRD's `Header` (the protocol's first step) for a scandaq run: `ScannerInformation` with
//! one module type from the run's crystal map, the TOF and energy bins, the event policies and
//! no exam information. Field by field in docs/petsird.md, "Header".

use super::bins::{EnergyBins, TofBins};
use super::layout::{Layout, Transform};
use super::yardl;

/// PETSIRD's `CoincidencePolicy` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoincidencePolicy {
    /// Not stored.
    None = 0,
    /// Multiples rejected.
    RejectHigherMultiples = 1,
    /// Every pair of a multiple stored.
    MultiplesAsAllCoincidences = 2,
    /// Anything else.
    Other = 4,
}

impl CoincidencePolicy {
    /// The PETSIRD policy of a scandaq (GATE) multiples policy.
    pub fn of_gate(name: Option<&str>) -> Self {
        match name {
            Some("takeAllGoods") => Self::MultiplesAsAllCoincidences,
            Some("removeMultiples") => Self::RejectHigherMultiples,
            _ => Self::Other,
        }
    }
}

/// What the header says beyond the geometry.
pub struct ScannerFacts<'a> {
    /// `modelName`.
    pub model_name: &'a str,
    /// TOF bins (ps; written in mm).
    pub tof: TofBins,
    /// CTR FWHM, mm (0 when unknown).
    pub tof_resolution_mm: f32,
    /// Energy bins, keV.
    pub energy: &'a EnergyBins,
    /// Prompt policy.
    pub prompts: CoincidencePolicy,
    /// Delayed policy (`None` when no delayed events are written).
    pub delayed: CoincidencePolicy,
}

/// Appends the whole `Header`.
pub fn encode(buf: &mut Vec<u8>, layout: &Layout, facts: &ScannerFacts<'_>) {
    // ScannerInformation
    yardl::string(buf, facts.model_name);
    scanner_geometry(buf, layout);
    bulk_materials(buf);
    yardl::none(buf); // gantryAlignment: identity
    yardl::string(buf, "NONE"); // collimatorType (DICOM defined term)
    // tofBinEdges: LowerTriangularMatrix<BinEdges>, 1 x 1.
    yardl::len(buf, 1);
    yardl::len(buf, 1);
    yardl::f32_array_1d(buf, &facts.tof.edges_mm());
    // tofResolution: 1 x 1.
    yardl::len(buf, 1);
    yardl::f32_vector(buf, &[facts.tof_resolution_mm]);
    // eventEnergyBinEdges: one per module type.
    yardl::len(buf, 1);
    yardl::f32_array_1d(buf, &facts.energy.edges_kev);
    // energyResolutionAt511: unknown to scandaq, 0.
    yardl::f32_vector(buf, &[0.0]);
    yardl::svarint(buf, 0); // singlesHistogramLevel: none
    yardl::len(buf, 0); // moduleSinglesUnitIdxLUTs
    yardl::len(buf, 0); // singlesHistogramEnergyBinEdges
    yardl::svarint(buf, 0); // singleEventPolicy: none
    yardl::svarint(buf, facts.prompts as i64);
    yardl::svarint(buf, facts.delayed as i64);
    yardl::svarint(buf, 0); // tripleEventPolicy: none
    yardl::svarint(buf, 0); // quadrupleEventPolicy: none
    detection_efficiencies(buf);
    // Header.exam: the run records no wall-clock start, patient or study.
    yardl::none(buf);
}

/// `ScannerGeometry`: one `ReplicatedDetectorModule`, no non-detecting volumes.
fn scanner_geometry(buf: &mut Vec<u8>, layout: &Layout) {
    yardl::len(buf, 1); // replicatedModules
    // ReplicatedObject<DetectorModule>.object: DetectorModule
    //   detectingElements: ReplicatedObject<SolidVolume<BoxShape>>
    for corner in layout.box_corners() {
        for c in corner {
            yardl::f32(buf, c); // Coordinate.c: fixed array [3]
        }
    }
    yardl::uvarint(buf, 0); // materialId -> bulkMaterials[0]
    transforms(buf, &layout.elements);
    yardl::len(buf, 0); // nonDetectingElements
    transforms(buf, &layout.modules);
    yardl::none(buf); // nonDetectingVolumes
}

/// A vector of `RigidTransformation` (each a fixed 3x4 `float32` array, row-major).
fn transforms(buf: &mut Vec<u8>, t: &[Transform]) {
    yardl::len(buf, t.len());
    for m in t {
        for row in m {
            for &v in row {
                yardl::f32(buf, v);
            }
        }
    }
}

/// `bulkMaterials`: one entry the element boxes refer to; scandaq does not know the crystal
/// material, so it says so (density 0, no atoms).
fn bulk_materials(buf: &mut Vec<u8>) {
    yardl::len(buf, 1);
    yardl::uvarint(buf, 0); // id
    yardl::string(buf, "unknown (not recorded by scandaq)");
    yardl::f32(buf, 0.0); // density
    yardl::len(buf, 0); // atoms
    yardl::len(buf, 0); // massFractions
}

/// `DetectionEfficiencies`: none measured (empty lists, calibration factor 1).
fn detection_efficiencies(buf: &mut Vec<u8>) {
    yardl::string(
        buf,
        "none: scandaq records no detection efficiencies (normalisation must come from a separate scan)",
    );
    yardl::f32(buf, 1.0); // calibrationFactor
    yardl::len(buf, 0); // detectionBinEfficiencies
    yardl::len(buf, 0); // modulePairSGIDLUT
    yardl::len(buf, 0); // modulePairEfficienciesVectors
}
