//! Intensity normalisation comes from the measured data only, and the scale a user's measured
//! scan gets at inference ([`measurement_scale`] on `amri simulate`'s output) is the scale
//! training divided the same scan by.

use amri_core::{Affine, KSpace, Volume, C32};
use amri_diffusion::data::{
    abs_percentile, measurement_scale, MeasuredSlice, TrainObjective, TrainingSet, NORM_PERCENTILE,
};
use amri_diffusion::{DiffusionError, Result};
use amri_ops::simulate::{simulate, Acquisition};
use ndarray::{s, Array4};

const R: usize = 32;
const C: usize = 32;

fn acq(json: serde_json::Value) -> Result<Acquisition> {
    Ok(serde_json::from_value(json)?)
}

/// A 3-slice phantom volume with intensities in the hundreds.
fn volume(gain: f32) -> Volume<f32> {
    let data = Array4::from_shape_fn((1, 3, R, C), |(_, k, i, j)| {
        let (y, x) = (i as f32 / R as f32 - 0.5, j as f32 / C as f32 - 0.5);
        let body = (x * x / 0.16 + y * y / 0.2 < 1.0) as u8 as f32;
        let spot = ((x - 0.1 * k as f32).powi(2) + y * y < 0.01) as u8 as f32;
        gain * (200.0 * body + 150.0 * spot + 20.0 * (8.0 * x).sin() * body)
    });
    Volume::new(data, Affine::default())
}

/// `measurement_scale` of a simulated acquisition, exactly as inference sees the scan.
fn scale_of_simulated(k: &KSpace) -> Result<f32> {
    let mask = k
        .mask
        .as_ref()
        .ok_or_else(|| DiffusionError::Config("simulated data has no mask".into()))?;
    let image_domain = k.domain() == amri_core::MeasuredDomain::Image;
    let slices: Vec<MeasuredSlice> = (0..k.data.dim().0)
        .map(|z| {
            let d = k.data.slice(s![z, .., .., ..]);
            let m = mask.slice(s![z, .., ..]);
            if image_domain {
                MeasuredSlice::Image {
                    image: d.index_axis_move(ndarray::Axis(0), 0),
                    mask: m,
                }
            } else {
                MeasuredSlice::Kspace { kspace: d, mask: m }
            }
        })
        .collect();
    measurement_scale(&slices)
}

fn close(a: f32, b: f32, rel: f32) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs())
}

#[test]
fn training_and_inference_scales_agree_for_kspace_and_pixels() -> Result<()> {
    let vol = volume(1.0);
    for a in [
        acq(serde_json::json!({
            "corruption": {"type": "kspace", "pattern": "random", "acceleration": 4.0,
                           "center_fraction": 0.125},
            "seed": 3
        }))?,
        acq(serde_json::json!({"corruption": {"type": "pixel", "p": 0.3}, "seed": 4}))?,
        acq(serde_json::json!({
            "corruption": {"type": "boxes", "count": 2, "size": [8, 8]}, "seed": 5
        }))?,
    ] {
        let set =
            TrainingSet::from_volumes(std::slice::from_ref(&vol), &a, TrainObjective::Ambient)?;
        assert_eq!(set.scales().len(), 1);
        let train_scale = set.scales()[0];
        let k = simulate(&vol, 0, &a).map_err(DiffusionError::Ops)?;
        let infer_scale = scale_of_simulated(&k)?;
        assert!(
            close(train_scale, infer_scale, 1e-5),
            "{:?}: training {train_scale} vs inference {infer_scale}",
            a.corruption
        );
        // the training images are the volume divided by that scale
        let img = set
            .image(1)
            .ok_or_else(|| DiffusionError::Config("no scan 1".into()))?;
        let v = vol.data[[0, 1, 16, 16]];
        assert!(close(img[16 * C + 16].norm(), v / train_scale, 1e-5));
    }
    Ok(())
}

#[test]
fn scale_ignores_unmeasured_pixels_and_is_linear() -> Result<()> {
    let a = acq(serde_json::json!({"corruption": {"type": "pixel", "p": 0.5}, "seed": 8}))?;
    let vol = volume(1.0);
    let base = TrainingSet::from_volumes(std::slice::from_ref(&vol), &a, TrainObjective::Ambient)?;
    // change the clean volume only where A did not measure: the scale must not move
    let k = simulate(&vol, 0, &a).map_err(DiffusionError::Ops)?;
    let mask = k
        .mask
        .clone()
        .ok_or_else(|| DiffusionError::Config("no mask".into()))?;
    let mut hidden = vol.clone();
    for ((_, z, i, j), v) in hidden.data.indexed_iter_mut() {
        if mask[[z, i, j]] == 0.0 {
            *v = 1e4;
        }
    }
    let h = TrainingSet::from_volumes(&[hidden], &a, TrainObjective::Ambient)?;
    assert_eq!(h.scales(), base.scales());
    // a volume 7× brighter gets a 7× scale and the same normalised images
    let bright = TrainingSet::from_volumes(&[volume(7.0)], &a, TrainObjective::Ambient)?;
    assert!(close(bright.scales()[0], 7.0 * base.scales()[0], 1e-5));
    let (x0, x1) = (base.image(2), bright.image(2));
    if let (Some(x0), Some(x1)) = (x0, x1) {
        for (p, q) in x0.iter().zip(x1) {
            assert!((p - q).norm() <= 1e-5 * p.norm().max(1.0));
        }
    } else {
        return Err(DiffusionError::Config("missing scan 2".into()));
    }
    Ok(())
}

#[test]
fn fully_measured_pixels_give_the_clean_percentile() -> Result<()> {
    // with every pixel measured the zero-filled image is the image: the rule reduces to the
    // clean 99.5th percentile of |x| (independent computation on the raw volume)
    // (`p` is the fraction hidden)
    let a = acq(serde_json::json!({"corruption": {"type": "pixel", "p": 0.0}, "seed": 1}))?;
    let vol = volume(1.0);
    let set = TrainingSet::from_volumes(std::slice::from_ref(&vol), &a, TrainObjective::Ambient)?;
    let raw: Vec<f32> = vol.data.iter().copied().collect();
    let want = abs_percentile(&raw, NORM_PERCENTILE);
    assert!(
        close(set.scales()[0], want, 1e-6),
        "{} vs {want}",
        set.scales()[0]
    );
    // a fully sampled single-coil k-space slice: |Fᴴ F x| = |x|
    let x = vol.data.slice(s![0, 0, .., ..]).mapv(|v| C32::new(v, 0.0));
    let kspace = amri_core::fft::fft2c(&x).insert_axis(ndarray::Axis(0));
    let ones = ndarray::Array2::<f32>::ones((R, C));
    let got = measurement_scale(&[MeasuredSlice::Kspace {
        kspace: kspace.view(),
        mask: ones.view(),
    }])?;
    let slice0: Vec<f32> = vol.data.slice(s![0, 0, .., ..]).iter().copied().collect();
    assert!(close(got, abs_percentile(&slice0, NORM_PERCENTILE), 1e-4));
    // bad input: wrong mask shape, all zeros, NaN
    let small = ndarray::Array2::<f32>::ones((R, C - 1));
    assert!(measurement_scale(&[MeasuredSlice::Kspace {
        kspace: kspace.view(),
        mask: small.view(),
    }])
    .is_err());
    let zeros = ndarray::Array3::<C32>::zeros((1, R, C));
    assert!(measurement_scale(&[MeasuredSlice::Kspace {
        kspace: zeros.view(),
        mask: ones.view(),
    }])
    .is_err());
    let mut nan = vol.clone();
    nan.data[[0, 0, 3, 3]] = f32::NAN;
    let err = TrainingSet::from_volumes(&[nan], &a, TrainObjective::Ambient)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("NaN"), "{err}");
    Ok(())
}
