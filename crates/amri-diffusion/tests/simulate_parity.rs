//! Training measures its data with `amri simulate`'s recipe: for the same acquisition and seed,
//! every scan's mask equals `amri_ops::simulate::simulate`'s, and its measured data (noisy
//! single-coil, noiseless single- and multi-coil k-space, image-domain pixels and boxes) equal
//! simulate's divided by the volume's measurement scale, bit for bit: the simulation route is
//! "simulate, then the measured loader".

use amri_core::{Affine, Volume, C32};
use amri_diffusion::data::{TrainObjective, TrainingSet};
use amri_diffusion::{DiffusionError, Result};
use amri_ops::simulate::{simulate, Acquisition};
use ndarray::{Array4, Axis};

const R: usize = 32;
const C: usize = 32;

/// Three different smooth slices: a bright disc with a slice-dependent ramp and a weak
/// background, so every measurement (noise, ACS, pixels) has structure.
fn volume() -> Volume<f32> {
    Volume::new(
        Array4::from_shape_fn((1, 3, R, C), |(_, k, i, j)| {
            let (u, v) = (i as f32 - 15.5, j as f32 - 15.5);
            let disc = if u * u + v * v < 150.0 { 80.0 } else { 5.0 };
            disc + (k as f32 + 1.0) * (0.7 * u + 0.3 * v)
        }),
        Affine::default(),
    )
}

fn bits(v: &[C32]) -> Vec<(u32, u32)> {
    v.iter().map(|c| (c.re.to_bits(), c.im.to_bits())).collect()
}

/// Trains-set data against `simulate`'s output, scan by scan, bit for bit.
fn check(acq: serde_json::Value, objective: TrainObjective, exact: bool) -> Result<()> {
    let vol = volume();
    let acq: Acquisition = serde_json::from_value(acq)?;
    let k = simulate(&vol, 0, &acq).map_err(DiffusionError::Ops)?;
    let set = TrainingSet::from_volumes(std::slice::from_ref(&vol), &acq, objective)?;
    let scale = set.scales()[0];
    let kmask = k
        .mask
        .as_ref()
        .ok_or_else(|| DiffusionError::Config("no mask".into()))?;
    for s in 0..3 {
        // training divides each volume by its scale: the same f32 division of simulate's data
        let want: Vec<C32> = k
            .data
            .index_axis(Axis(0), s)
            .iter()
            .map(|v| v / scale)
            .collect();
        let got = set
            .measured(s)
            .ok_or_else(|| DiffusionError::Config(format!("scan {s}: no measured data")))?;
        if exact {
            assert_eq!(bits(got), bits(&want), "scan {s}: {acq:?}");
        } else {
            let peak = want.iter().fold(0f32, |m, v| m.max(v.norm()));
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).norm() <= 1e-5 * peak, "scan {s}: {g} vs {w}");
                assert_eq!(*w == C32::new(0.0, 0.0), *g == C32::new(0.0, 0.0));
            }
        }
        let (mask_a, _) = set.masks(s, 0)?;
        assert_eq!(mask_a, kmask.index_axis(Axis(0), s), "scan {s} mask");
    }
    Ok(())
}

#[test]
fn training_data_are_simulates_for_the_same_seed() -> Result<()> {
    let kspace = |pattern: &str, cf: f64| {
        serde_json::json!({"type": "kspace", "pattern": pattern, "acceleration": 3.0,
                           "center_fraction": cf})
    };
    let cases = [
        // noisy single-coil k-space (Tweedie): bit for bit
        (
            serde_json::json!({"corruption": kspace("random", 0.125), "noise_level": 0.02,
                               "seed": 11}),
            TrainObjective::Tweedie,
            true,
        ),
        // multi-coil k-space (noiseless, through the synthetic maps): bit for bit
        (
            serde_json::json!({"corruption": kspace("equispaced", 0.25), "coils": 4, "seed": 3}),
            TrainObjective::Ambient,
            true,
        ),
        // image-domain pixels: bit for bit
        (
            serde_json::json!({"corruption": {"type": "pixel", "p": 0.6}, "seed": 9}),
            TrainObjective::Ambient,
            true,
        ),
        // noiseless single-coil k-space: simulate's data, then the measured loader's scale
        (
            serde_json::json!({"corruption": kspace("poisson", 0.125), "seed": 4}),
            TrainObjective::Ambient,
            true,
        ),
        // noiseless single-coil Cartesian lines and boxes: the same
        (
            serde_json::json!({"corruption": kspace("random", 0.125), "seed": 5}),
            TrainObjective::Ambient,
            true,
        ),
        (
            serde_json::json!({"corruption": {"type": "boxes", "count": 2, "size": [6, 5]},
                               "seed": 6}),
            TrainObjective::Ambient,
            true,
        ),
    ];
    for (acq, objective, exact) in cases {
        check(acq, objective, exact)?;
    }
    Ok(())
}
