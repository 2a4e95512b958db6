//! How one scan is acquired: [`Acquisition`], the one description of an acquisition (corruption
//! model, coils, synthetic phase, noise level, seed) that protocols, `amri simulate` and training
//! share.

use serde::{Deserialize, Serialize};

use crate::corruption::{CorruptionConfig, CorruptionSpec, FurtherMode};

fn default_coils() -> usize {
    1
}

fn yes() -> bool {
    true
}

fn default_delta() -> f64 {
    0.1
}

/// How a scan is acquired (or corrupted) in a simulation: the corruption model plus coils,
/// synthetic phase, relative noise level and seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acquisition {
    /// Measurement operator family (TOML table `[acquisition.corruption]`, tagged by `type`).
    pub corruption: CorruptionSpec,
    /// Further-corruption fraction `δ ∈ [0, 1]` used in ambient training (default 0.1).
    #[serde(default = "default_delta")]
    pub delta: f64,
    /// When training redraws `Ã` (default per scan).
    #[serde(default)]
    pub further: FurtherMode,
    /// Size `[height, width]` of the extra box `Ã` hides for box corruptions (default: same).
    #[serde(default)]
    pub further_box_size: Option<[usize; 2]>,
    /// Receive coils (1 = single coil; > 1 = SENSE with synthetic maps).
    #[serde(default = "default_coils")]
    pub coils: usize,
    /// Multiply magnitude images by a smooth synthetic phase (default true).
    #[serde(default = "yes")]
    pub synthetic_phase: bool,
    /// Noise standard deviation per complex sample relative to the volume's maximum magnitude.
    #[serde(default)]
    pub noise_level: f32,
    /// Seed of every random draw (masks, phase, maps, noise).
    #[serde(default)]
    pub seed: u64,
    /// Store the synthetic coil maps in the output (default false: reconstructions estimate
    /// them from the calibration region, as with real data).
    #[serde(default)]
    pub store_maps: bool,
}

impl Acquisition {
    /// The corruption model's configuration, with absolute noise σ per complex sample.
    pub fn corruption_config(&self, noise_sigma: f32) -> CorruptionConfig {
        CorruptionConfig {
            corruption: self.corruption.clone(),
            noise_sigma,
            delta: self.delta,
            further: self.further,
            further_box_size: self.further_box_size,
        }
    }
}
