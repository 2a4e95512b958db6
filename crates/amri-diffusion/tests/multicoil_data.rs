//! Multi-coil k-space training sets: the coil data are what `amri simulate` measures (nothing
//! outside M), coil maps come from each scan's measured ACS only and agree with the true
//! sensitivities, the intensity scale matches `measurement_scale` of the simulated scan, and a
//! trainer steps on the batches.

use amri_core::{Affine, Volume, C32};
use amri_diffusion::data::{
    acs_maps, measurement_scale, MeasuredSlice, TrainObjective, TrainingSet,
};
use amri_diffusion::testing::micro_config;
use amri_diffusion::train::{Batch, Objective, TrainConfig, Trainer};
use amri_diffusion::{DiffusionError, Result};
use amri_ops::corruption::Corruption;
use amri_ops::simulate::{simulate, Acquisition};
use candle_core::{Device, Tensor};
use ndarray::{s, Array3, Array4};

const R: usize = 32;
const C: usize = 32;
const NC: usize = 4;

fn volume() -> Volume<f32> {
    let data = Array4::from_shape_fn((1, 3, R, C), |(_, k, i, j)| {
        let (y, x) = (i as f32 / R as f32 - 0.5, j as f32 / C as f32 - 0.5);
        let body = (x * x / 0.18 + y * y / 0.2 < 1.0) as u8 as f32;
        body * (150.0 + 50.0 * (6.0 * x + k as f32).cos())
    });
    Volume::new(data, Affine::default())
}

/// Complex values of scan `b` of a `[N, coils, 2, H, W]` tensor as `[coils, H, W]`.
fn coil_array(t: &Tensor, b: usize) -> Result<Array3<C32>> {
    let v = t.get(b)?.flatten_all()?.to_vec1::<f32>()?;
    let p = R * C;
    Ok(Array3::from_shape_fn((NC, R, C), |(k, i, j)| {
        C32::new(v[(2 * k) * p + i * C + j], v[(2 * k + 1) * p + i * C + j])
    }))
}

/// Random Cartesian R=3 with 25 % centre lines (8 ACS lines of 32), `NC` coils, δ = 0.3.
fn acquisition() -> Result<Acquisition> {
    Ok(serde_json::from_value(serde_json::json!({
        "corruption": {"type": "kspace", "pattern": "random", "acceleration": 3.0,
                       "center_fraction": 0.25},
        "coils": NC, "delta": 0.3, "seed": 3
    }))?)
}

#[test]
fn coil_data_are_simulated_measurements_and_maps_come_from_the_acs() -> Result<()> {
    let dev = Device::Cpu;
    let vol = volume();
    let acq = acquisition()?;
    let set = TrainingSet::from_volumes(std::slice::from_ref(&vol), &acq, TrainObjective::Ambient)?;
    assert_eq!(set.coils(), NC);
    assert_eq!(set.objective(), Objective::AmbientKspace);
    let scale = set.scales()[0];
    // the user's view of the same scan: `amri simulate` output
    let k = simulate(&vol, 0, &acq).map_err(DiffusionError::Ops)?;
    let kmask = k
        .mask
        .clone()
        .ok_or_else(|| DiffusionError::Config("no mask".into()))?;
    let slices: Vec<MeasuredSlice> = (0..3)
        .map(|z| MeasuredSlice::Kspace {
            kspace: k.data.slice(s![z, .., .., ..]),
            mask: kmask.slice(s![z, .., ..]),
        })
        .collect();
    let infer = measurement_scale(&slices)?;
    assert!((infer - scale).abs() <= 1e-5 * scale, "{infer} vs {scale}");

    let scans = [2usize, 0];
    let Batch::AmbientMulticoil {
        y,
        maps,
        mask_a,
        mask_tilde,
    } = set.batch(&scans, 5, &dev)?
    else {
        return Err(DiffusionError::Config("not a multi-coil batch".into()));
    };
    assert_eq!(y.dims(), &[2, NC, 2, R, C]);
    let model = Corruption::new(&acq, R, C)?;
    let true_maps = amri_ops::coils::synthetic_maps(NC, R, C, Some(acq.seed));
    for (b, &i) in scans.iter().enumerate() {
        let yb = coil_array(&y, b)?;
        let sb = coil_array(&maps, b)?;
        let ma = mask_a.get(b)?.flatten_all()?.to_vec1::<f32>()?;
        let mt = mask_tilde.get(b)?.flatten_all()?.to_vec1::<f32>()?;
        let a = model.measurement(i as u64, None)?;
        let at = model.further(&a, i as u64, 5)?;
        let (am, atm) = match (a.mask(), at.mask()) {
            (Some(p), Some(q)) => (p.clone(), q.clone()),
            _ => return Err(DiffusionError::Config("no masks".into())),
        };
        for p in 0..R * C {
            assert_eq!(ma[p], am[[p / C, p % C]]);
            assert_eq!(mt[p], atm[[p / C, p % C]]);
            assert!(mt[p] <= ma[p]);
        }
        for ((kc, i2, j2), v) in yb.indexed_iter() {
            // exactly the simulated scanner data (scaled), zero outside M
            let want = k.data[[i, kc, i2, j2]] / scale;
            assert!((v - want).norm() <= 1e-5 * (1.0 + want.norm()));
            if am[[i2, j2]] == 0.0 {
                assert_eq!(*v, C32::new(0.0, 0.0), "data outside M");
            }
        }
        // the maps are a function of the measured ACS only…
        let acs = a
            .acs
            .clone()
            .ok_or_else(|| DiffusionError::Config("no ACS".into()))?;
        let again = acs_maps(yb.view(), acs.view())?;
        let diff = again
            .iter()
            .zip(sb.iter())
            .fold(0f32, |m, (p, q)| m.max((p - q).norm()));
        assert!(
            diff < 1e-5,
            "maps differ from ESPIRiT on the batch's own ACS: {diff}"
        );
        // …and recover the true sensitivities up to a common phase where the object is
        let mut agree = 0usize;
        let mut inside = 0usize;
        let mut hist = [0usize; 11];
        for i2 in 0..R {
            for j2 in 0..C {
                if vol.data[[0, i, i2, j2]] == 0.0 {
                    continue;
                }
                inside += 1;
                let ip: C32 = (0..NC)
                    .map(|c| sb[[c, i2, j2]].conj() * true_maps[[c, i2, j2]])
                    .sum();
                agree += usize::from(ip.norm() > 0.95);
                hist[((ip.norm() * 10.0) as usize).min(10)] += 1;
            }
        }
        eprintln!("|<S_est, S_true>| histogram (0.1 bins): {hist:?}");
        assert!(
            agree as f64 > 0.9 * inside as f64,
            "maps match the true sensitivities at {agree}/{inside} object pixels"
        );
    }
    // a trainer steps on multi-coil batches
    let mut t = Trainer::new(&micro_config()?, &TrainConfig::default(), &dev)?;
    let st = t.step(&set.step_batch(2, 0, 0, &dev)?)?;
    assert!(st.loss.is_finite() && st.loss > 0.0 && st.grad_norm > 0.0);
    Ok(())
}

#[test]
fn the_multicoil_clean_twin_shares_the_ambient_inputs_and_targets_all_coil_kspace() -> Result<()> {
    let dev = Device::Cpu;
    let vol = volume();
    let acq = acquisition()?;
    let vols = std::slice::from_ref(&vol);
    let amb = TrainingSet::from_volumes(vols, &acq, TrainObjective::Ambient)?;
    let cln = TrainingSet::from_volumes(vols, &acq, TrainObjective::Clean)?;
    assert_eq!(cln.coils(), NC);
    assert_eq!(cln.objective(), Objective::AmbientKspace);
    // the same normalisation: the scale comes from the measured data in both
    assert_eq!(cln.scales(), amb.scales());
    let true_maps = amri_ops::coils::synthetic_maps(NC, R, C, Some(acq.seed));
    let scans = [2usize, 0];
    let parts = |set: &TrainingSet| -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        match set.batch(&scans, 5, &dev)? {
            Batch::AmbientMulticoil {
                y,
                maps,
                mask_a,
                mask_tilde,
            } => Ok((y, maps, mask_a, mask_tilde)),
            _ => Err(DiffusionError::Config("not a multi-coil batch".into())),
        }
    };
    let (ya, sa, maa, mta) = parts(&amb)?;
    let (yc, sc, mac, mtc) = parts(&cln)?;
    let flat = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
    // the same network inputs: the same Ã, the same ACS maps, the same data on Ã
    assert_eq!(flat(&mta)?, flat(&mtc)?);
    assert_eq!(flat(&sa)?, flat(&sc)?);
    assert!(
        flat(&mac)?.iter().all(|v| *v == 1.0),
        "the twin's loss covers all of k-space"
    );
    for (b, &i) in scans.iter().enumerate() {
        let (ya_b, yc_b) = (coil_array(&ya, b)?, coil_array(&yc, b)?);
        let ma = maa.get(b)?.flatten_all()?.to_vec1::<f32>()?;
        let img = cln
            .image(i)
            .ok_or_else(|| DiffusionError::Config("no image".into()))?;
        let mut outside = 0usize;
        for k in 0..NC {
            let sx = ndarray::Array2::from_shape_fn((R, C), |(r, c)| {
                true_maps[[k, r, c]] * img[r * C + c]
            });
            let full = amri_core::fft::fft2c(&sx);
            for ((r, c), want) in full.indexed_iter() {
                let got = yc_b[[k, r, c]];
                assert!(
                    (got - want).norm() <= 1e-4 * (1.0 + want.norm()),
                    "coil {k} ({r}, {c}): {got} vs F(S x) {want}"
                );
                if ma[r * C + c] == 1.0 {
                    // where A measured, exactly the ambient (measured) samples
                    assert!((got - ya_b[[k, r, c]]).norm() <= 1e-4 * (1.0 + want.norm()));
                } else {
                    outside += usize::from(want.norm() > 1e-6);
                }
            }
        }
        assert!(
            outside > 0,
            "A hid nothing: the test would not tell the objectives apart"
        );
    }
    // a trainer steps on it
    let mut t = Trainer::new(&micro_config()?, &TrainConfig::default(), &dev)?;
    let st = t.step(&cln.step_batch(2, 0, 0, &dev)?)?;
    assert!(st.loss.is_finite() && st.loss > 0.0 && st.grad_norm > 0.0);
    Ok(())
}
