//! Noisy-data (Tweedie) training sets: the noisy measurements are exactly what `amri simulate`
//! produces for the same scan (normalised), zero outside A, with the σ_n the loss is told, and a
//! trainer steps on them with σ drawn above σ_n.

use amri_core::{Affine, Volume, C32};
use amri_diffusion::data::{TrainObjective, TrainingSet};
use amri_diffusion::testing::micro_config;
use amri_diffusion::train::{Batch, TrainConfig, Trainer};
use amri_diffusion::{DiffusionError, Result};
use amri_ops::simulate::{simulate, Acquisition};
use candle_core::Device;
use ndarray::Array4;

const R: usize = 16;
const C: usize = 16;

fn volume() -> Volume<f32> {
    let data = Array4::from_shape_fn((1, 3, R, C), |(_, k, i, j)| {
        let (y, x) = (i as f32 / R as f32 - 0.5, j as f32 / C as f32 - 0.5);
        100.0 * (1.0 - 2.0 * (x * x + y * y)) * (1.0 + 0.2 * k as f32)
    });
    Volume::new(data, Affine::default())
}

fn acq(json: serde_json::Value) -> Result<Acquisition> {
    Ok(serde_json::from_value(json)?)
}

fn inner_data(b: &Batch) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let Batch::Noisy { inner, sigma_n } = b else {
        return Err(DiffusionError::Config("not a noisy batch".into()));
    };
    let (y, m) = match inner.as_ref() {
        Batch::AmbientPixel { x_a, mask_a, .. } => (x_a, mask_a),
        Batch::AmbientKspace { y, mask_a, .. } => (y, mask_a),
        _ => return Err(DiffusionError::Config("unexpected inner batch".into())),
    };
    Ok((
        y.flatten_all()?.to_vec1::<f32>()?,
        m.flatten_all()?.to_vec1::<f32>()?,
        sigma_n.to_vec1::<f32>()?,
    ))
}

#[test]
fn noisy_measurements_match_simulate_and_carry_their_sigma() -> Result<()> {
    let dev = Device::Cpu;
    let vol = volume();
    let peak = vol.data.iter().fold(0f32, |m, v| m.max(v.abs()));
    for a in [
        acq(serde_json::json!({
            "corruption": {"type": "pixel", "p": 0.3}, "noise_level": 0.05, "seed": 2
        }))?,
        acq(serde_json::json!({
            "corruption": {"type": "kspace", "pattern": "random", "acceleration": 2.0,
                           "center_fraction": 0.25},
            "noise_level": 0.05, "seed": 6
        }))?,
    ] {
        let set =
            TrainingSet::from_volumes(std::slice::from_ref(&vol), &a, TrainObjective::Tweedie)?;
        let scale = set.scales()[0];
        let sn = set
            .noise_levels()
            .ok_or_else(|| DiffusionError::Config("no noise levels".into()))?
            .to_vec();
        let want = 0.05 * peak / (std::f32::consts::SQRT_2 * scale);
        assert!(
            sn.iter().all(|s| (s - want).abs() <= 1e-6 * want),
            "{sn:?} vs {want}"
        );
        // the noisy data are simulate's measured data divided by the training scale
        let k = simulate(&vol, 0, &a).map_err(DiffusionError::Ops)?;
        let b = set.batch(&[2, 0], 0, &dev)?;
        let (y, m, s_b) = inner_data(&b)?;
        assert_eq!(s_b, vec![sn[0]; 2]);
        for (bi, scan) in [2usize, 0].iter().enumerate() {
            for p in 0..R * C {
                let (i, j) = (p / C, p % C);
                let want: C32 = k.data[[*scan, 0, i, j]] / scale;
                let (re, im) = (y[(bi * 2) * R * C + p], y[(bi * 2 + 1) * R * C + p]);
                assert!((re - want.re).abs() <= 1e-5 * (1.0 + want.re.abs()));
                assert!((im - want.im).abs() <= 1e-5 * (1.0 + want.im.abs()));
                if m[bi * R * C + p] == 0.0 {
                    assert_eq!((re, im), (0.0, 0.0), "data outside A");
                }
            }
        }
        // the noise really is there: data minus the clean measurement has std ≈ σ_n
        let clean =
            TrainingSet::from_volumes(std::slice::from_ref(&vol), &a, TrainObjective::Ambient)?;
        let cb = clean.batch(&[2, 0], 0, &dev)?;
        let cy = match &cb {
            Batch::AmbientPixel { x_a, .. } => x_a,
            Batch::AmbientKspace { y, .. } => y,
            _ => return Err(DiffusionError::Config("clean batch".into())),
        };
        // the clean set has its own (noiseless) scale: bring it to the noisy set's units
        let ratio = clean.scales()[0] / scale;
        let cy = cy.flatten_all()?.to_vec1::<f32>()?;
        let (mut ss, mut n) = (0f64, 0usize);
        for (p, (v, c)) in y.iter().zip(&cy).enumerate() {
            if m[(p / (2 * R * C)) * R * C + p % (R * C)] != 0.0 {
                ss += ((v - c * ratio) as f64).powi(2);
                n += 1;
            }
        }
        let std = (ss / n as f64).sqrt() as f32;
        assert!(
            (std / sn[0] - 1.0).abs() < 0.15,
            "residual std {std} vs σ_n {}",
            sn[0]
        );
        // a trainer steps on it, drawing every σ above σ_n
        let mut t = Trainer::new(&micro_config()?, &TrainConfig::default(), &dev)?;
        let big = set.step_batch(8, 0, 0, &dev)?;
        let (sigma, _) = t.draw_noise(&big)?;
        assert!(sigma.to_vec1::<f32>()?.iter().all(|s| *s > sn[0]));
        let st = t.step(&big)?;
        assert!(st.loss.is_finite() && st.loss > 0.0);
    }
    // no noise, no Tweedie
    let quiet = acq(serde_json::json!({"corruption": {"type": "pixel", "p": 0.3}}))?;
    let e = TrainingSet::from_volumes(&[vol], &quiet, TrainObjective::Tweedie)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("noise_level > 0"), "{e}");
    Ok(())
}
