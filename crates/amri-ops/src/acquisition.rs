//! How one scan is acquired: [`Acquisition`], the one description of an acquisition (corruption
//! model, coils, synthetic phase, noise level, seed) that protocols, `amri simulate` and training
//! share.

use serde::{Deserialize, Serialize};

use crate::corruption::{check_box_size, check_delta, CorruptionSpec, FurtherMode};
use crate::error::{OpsError, Result};

/// Largest number of receive coils an acquisition may have.
pub const MAX_COILS: usize = 64;

fn default_coils() -> usize {
    1
}

fn yes() -> bool {
    true
}

/// Default further-corruption fraction `δ` of an acquisition.
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
    /// The acquisition measured by `corruption`, with every other field at its default (as when
    /// a protocol gives only `[acquisition.corruption]`): δ 0.1, `Ã` per scan, one coil,
    /// synthetic phase, no noise, seed 0, maps not stored.
    pub fn of(corruption: CorruptionSpec) -> Self {
        Acquisition {
            corruption,
            delta: default_delta(),
            further: FurtherMode::default(),
            further_box_size: None,
            coils: default_coils(),
            synthetic_phase: yes(),
            noise_level: 0.0,
            seed: 0,
            store_maps: false,
        }
    }

    /// Checks every limit of the acquisition, the one copy of these rules: `coils` in
    /// `[1, MAX_COILS]`, `noise_level` in `[0, 1]`, `delta` in `[0, 1]`, the corruption's
    /// parameters such as `acceleration` and `center_fraction` ([`CorruptionSpec::validate`],
    /// keys under `corruption.`) and `further_box_size`. Errors are [`OpsError::Invalid`] keyed
    /// relative to the acquisition, e.g. `corruption.acceleration`; a protocol prefixes
    /// `acquisition.`. Limits that depend on the image shape are checked by
    /// [`crate::corruption::Corruption::new`].
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_COILS).contains(&self.coils) {
            return Err(OpsError::invalid(
                "coils",
                self.coils,
                format!("an integer in [1, {MAX_COILS}]"),
            ));
        }
        if !(self.noise_level.is_finite() && (0.0..=1.0).contains(&self.noise_level)) {
            return Err(OpsError::invalid(
                "noise_level",
                self.noise_level,
                "a number in [0, 1] (σ relative to the image maximum)",
            ));
        }
        check_delta(self.delta)?;
        self.corruption
            .validate()
            .map_err(|e| e.under("corruption"))?;
        if let Some(s) = self.further_box_size {
            check_box_size("further_box_size", s)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::BoxConvention;
    use crate::corruption::KspacePattern;
    use crate::gaussian_cs::Entries;

    fn base(corruption: CorruptionSpec) -> Acquisition {
        Acquisition {
            corruption,
            delta: 0.1,
            further: FurtherMode::PerScan,
            further_box_size: None,
            coils: 4,
            synthetic_phase: true,
            noise_level: 0.01,
            seed: 0,
            store_maps: false,
        }
    }

    fn kspace(pattern: KspacePattern, acceleration: f64, cf: f64, axis: usize) -> CorruptionSpec {
        CorruptionSpec::Kspace {
            pattern,
            acceleration,
            center_fraction: cf,
            axis,
        }
    }

    fn key(a: &Acquisition) -> String {
        match a.validate() {
            Err(OpsError::Invalid { key, .. }) => key,
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    #[test]
    fn each_limit_is_rejected_once_with_its_key() {
        let ok = base(kspace(KspacePattern::Random, 4.0, 0.08, 1));
        ok.validate().unwrap();
        let with = |f: &dyn Fn(&mut Acquisition)| {
            let mut a = ok.clone();
            f(&mut a);
            key(&a)
        };
        assert_eq!(with(&|a| a.coils = 0), "coils");
        assert_eq!(with(&|a| a.coils = 65), "coils");
        assert_eq!(with(&|a| a.noise_level = -0.1), "noise_level");
        assert_eq!(with(&|a| a.noise_level = f32::NAN), "noise_level");
        assert_eq!(with(&|a| a.delta = 1.5), "delta");
        let spec = |s: CorruptionSpec| key(&base(s));
        use KspacePattern::{Equispaced, Poisson, Random};
        for (pattern, acceleration, cf, axis, want) in [
            (Random, 0.5, 0.08, 1, "corruption.acceleration"),
            (Poisson, 65.0, 0.08, 1, "corruption.acceleration"),
            (Equispaced, 2.5, 0.08, 1, "corruption.acceleration"),
            (Random, 4.0, 1.5, 1, "corruption.center_fraction"),
            (Random, 4.0, 0.08, 2, "corruption.axis"),
        ] {
            assert_eq!(spec(kspace(pattern, acceleration, cf, axis)), want);
        }
        assert_eq!(spec(CorruptionSpec::Pixel { p: -0.1 }), "corruption.p");
        let boxes = |count, size| CorruptionSpec::Boxes {
            count,
            size,
            convention: BoxConvention::Inside,
        };
        assert_eq!(spec(boxes(0, [4, 4])), "corruption.count");
        assert_eq!(spec(boxes(1001, [4, 4])), "corruption.count");
        assert_eq!(spec(boxes(1, [0, 4])), "corruption.size");
        let mut a = base(boxes(1, [4, 4]));
        a.further_box_size = Some([4, 0]);
        assert_eq!(key(&a), "further_box_size");
        let g = CorruptionSpec::GaussianCs {
            m: Some(3),
            ratio: Some(0.1),
            entries: Entries::Real,
        };
        assert_eq!(spec(g), "corruption.m / ratio");
    }
}
