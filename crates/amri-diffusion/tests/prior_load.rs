//! A prior trained for two steps loads for inference from its run folder (EMA weights, card,
//! training masks of the recorded acquisition) and reconstructs a 32×32 problem.

use std::sync::atomic::AtomicBool;

use amri_core::fft::fft2c;
use amri_diffusion::checkpoint::{load_checkpoint, Weights, EMA_FILE};
use amri_diffusion::loss::DenoiseFn;
use amri_diffusion::sample::{
    one_step, posterior, sha256_file, InputDomain, OneStepConfig, PosteriorConfig, Prior,
    PriorDenoiser, Problem,
};
use amri_diffusion::testing::{TinyRun, TINY_SIZE};
use amri_diffusion::{DiffusionError, Result};
use candle_core::{DType, Device, Tensor};
use ndarray::{Array2, Axis, Zip};

fn io(e: std::io::Error) -> DiffusionError {
    DiffusionError::Io {
        path: "tempdir".into(),
        source: e,
    }
}

#[test]
fn a_trained_tiny_model_loads_and_reconstructs_a_32x32_problem() -> Result<()> {
    let dev = Device::Cpu;
    let (h, w) = (TINY_SIZE, TINY_SIZE);
    let tiny = TinyRun::train(2, &dev)?;
    let set = &tiny.set;
    let run = tempfile::tempdir().map_err(io)?;
    let ckpt = tiny.save(run.path())?;
    let prior = Prior::load(run.path(), &dev)?;
    assert_eq!(prior.card().steps, 2);
    assert_eq!(prior.checkpoint_dir(), ckpt.as_path());
    assert_eq!(prior.sha256(), sha256_file(&ckpt.join(EMA_FILE))?);
    assert_eq!(prior.input_domain(), InputDomain::Kspace);
    // the EMA weights were loaded: same output as the trainer's EMA model
    let x = Tensor::randn(0f32, 1., (1, 2, h, w), &dev)?;
    let m = Tensor::ones((1, 1, h, w), DType::F32, &dev)?;
    let s = Tensor::new(&[0.3f32], &dev)?;
    let (_, ema) = load_checkpoint(&ckpt, Weights::Ema, &dev)?;
    let diff = (prior.denoise(&x, &m, &s)? - ema.forward(&x, &m, &s)?)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    assert_eq!(diff, 0.0);
    // training masks are column masks of the protocol with the centre kept
    let tm = prior.training_mask(h, w, 9)?;
    assert!(tm.column(w / 2).iter().all(|&v| v == 1.0));
    let kept: usize = (0..w).filter(|&c| tm[(0, c)] == 1.0).count();
    assert!(kept < w && kept >= 4, "{kept} columns kept");
    for c in 0..w {
        assert!(tm.column(c).iter().all(|&v| v == tm[(0, c)]));
    }
    // reconstruct scan 0's measurement
    let x0 = set.image(0).map(|v| v.to_vec()).unwrap_or_default();
    let x0 =
        Array2::from_shape_vec((h, w), x0).map_err(|e| DiffusionError::Shape(e.to_string()))?;
    let (a, _) = set.masks(0, 0)?;
    let mut k = fft2c(&x0);
    Zip::from(&mut k).and(&a).for_each(|v, m| *v *= *m);
    let p = Problem::Kspace {
        kspace: k.clone().insert_axis(Axis(0)),
        mask: a.clone(),
        maps: None,
    };
    let cfg = OneStepConfig {
        data_consistency: true,
        ..Default::default()
    };
    let img = one_step(&prior, &p, &cfg)?;
    assert_eq!(img.dim(), (h, w));
    assert!(img.iter().all(|v| v.re.is_finite() && v.im.is_finite()));
    let ko = fft2c(&img);
    Zip::from(&ko).and(&k).and(&a).for_each(|u, v, m| {
        if *m != 0.0 {
            assert!((u - v).norm() < 1e-4);
        }
    });
    let pc = PosteriorConfig {
        steps: 3,
        samples: 2,
        ..Default::default()
    };
    let r = posterior(&prior, &p, &pc, &|_, _| {}, &AtomicBool::new(false))?;
    assert_eq!(r.samples.len(), 2);
    assert_eq!(r.std.dim(), (h, w));
    assert!(r.mean.iter().all(|v| v.re.is_finite() && v.im.is_finite()));
    Ok(())
}
