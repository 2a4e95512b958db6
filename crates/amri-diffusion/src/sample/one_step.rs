//! One-step reconstruction: `E[x0 | A y]` from a single network evaluation.
//!
//! The network sees the measurement exactly as it saw training inputs, with the measurement's
//! own mask in place of `Ã`: a k-space prior gets `Fᴴ(M ⊙ y)` and the k-space mask `M`, a pixel
//! prior gets `A ⊙ y` and the pixel mask `A` (a prior trained on clean images gets the
//! zero-filled image and an all-ones mask; multi-coil k-space gives a k-space prior the
//! SENSE-combined zero-filled image `Σ_c conj(S_c) Fᴴ(M ⊙ y_c)`, as in training). Its output is
//! the posterior mean of the clean image given what was measured. With `data_consistency`,
//! measured samples (k-space entries or pixels) are then replaced by the measured values; for
//! multi-coil data the SENSE data step `sense_consistency` does that for all coils at once.
//!
//! The noise level given to the network is [`OneStepConfig::sigma`]. EDM preconditioning makes
//! any denoiser tend to its input as σ → 0 (`c_skip → 1`, `c_out → 0`), so a very small σ gives
//! back nearly the zero-filled image; the default 0.05 (in units of the normalised image, where
//! the 99.5th percentile of the zero-filled magnitude is 1) lies inside the training range of σ.
//!
//! **Averaging** ([`Averaging`], off by default). Reflecting a measurement about DC (flips of
//! rows or columns, [`crate::augment::centred_flip_index`]) or transposing it reflects the object
//! it measured, so the exact posterior mean of the reflected measurement is the reflected
//! posterior mean. A network only approximates it, with errors that differ between reflections;
//! with `dihedral` the slice is reflected in each of the 8 ways (4 for a non-square slice),
//! each estimate is reflected back and they are averaged ("self-ensemble", Timofte et al. 2016),
//! which keeps the exact posterior mean and averages the approximation errors. It suits a prior
//! trained with flips and transposes (`--augment flip,transpose`), to which every reflected
//! slice looks like training data.

use ndarray::{Array2, Array3, Axis, Zip};

use super::{
    denoise_input, measured_scale, network_input, Coils, InputDomain, PriorDenoiser, Problem,
    Single,
};
use crate::augment::{apply_to_plane, Draw};
use crate::error::{DiffusionError, Result};
pub(crate) use crate::sense_input::sense_fit;
use amri_core::fft::{fft2c, ifft2c};
use amri_core::{MeasuredDomain, C32};
use amri_ops::sense::Sense;

/// Default [`OneStepConfig::dc_lambda`].
pub const DC_LAMBDA: f32 = 0.05;
/// Default [`OneStepConfig::dc_iterations`].
pub const DC_ITERATIONS: usize = 30;

/// Settings of [`one_step`].
#[derive(Debug, Clone, PartialEq)]
pub struct OneStepConfig {
    /// Noise level σ given to the network (normalised units; > 0).
    pub sigma: f64,
    /// Replace measured samples by the measured values after the network call (multi-coil
    /// data: the SENSE data step `sense_consistency` with [`OneStepConfig::dc_lambda`]).
    pub data_consistency: bool,
    /// Multi-coil data consistency: weight λ ≥ 0 of the network's image in
    /// `argmin ‖A x − y‖² + λ‖x − x̂‖²` (normalised units; 0: fit the data exactly, keeping only
    /// the part of x̂ that `A` does not see).
    pub dc_lambda: f32,
    /// Multi-coil data consistency: conjugate-gradient iterations of that data step.
    pub dc_iterations: usize,
    /// Intensity scale to divide by (see the module docs of [`crate::sample`]); `None`: computed
    /// from this slice alone with [`measured_scale`]. Pass the volume's scale for volumes.
    pub scale: Option<f32>,
    /// Test-time averaging of the network's estimate (off by default: one network call).
    pub averaging: Averaging,
}

/// Test-time averaging of the one-step estimate (module docs, "Averaging"): the mean of the
/// network's estimates over reflections of the measurement, each mapped back to the slice's
/// own frame before the mean.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Averaging {
    /// Average over the flips of rows and columns about DC and, for a square slice, the
    /// transposes (8 estimates for a square slice, 4 otherwise).
    pub dihedral: bool,
}

/// The reflections [`Averaging::dihedral`] averages over for a `square` or not slice (the
/// identity alone when `dihedral` is off).
fn reflections(dihedral: bool, square: bool) -> Vec<Draw> {
    if !dihedral {
        return vec![Draw::IDENTITY];
    }
    let mut v = Vec::new();
    for transpose in [false, true] {
        if transpose && !square {
            continue;
        }
        for flip_rows in [false, true] {
            for flip_cols in [false, true] {
                v.push(Draw {
                    flip_rows,
                    flip_cols,
                    transpose,
                    ..Draw::IDENTITY
                });
            }
        }
    }
    v
}

/// The inverse of the reflection `d` ([`apply_to_plane`] applies the flips, then the
/// transpose; undoing a transpose swaps which axis each flip acts on).
fn inverse(d: &Draw) -> Draw {
    if d.transpose {
        Draw {
            flip_rows: d.flip_cols,
            flip_cols: d.flip_rows,
            ..*d
        }
    } else {
        *d
    }
}

impl Default for OneStepConfig {
    fn default() -> Self {
        Self {
            sigma: 0.05,
            data_consistency: false,
            dc_lambda: DC_LAMBDA,
            dc_iterations: DC_ITERATIONS,
            scale: None,
            averaging: Averaging::default(),
        }
    }
}

/// The measurement's own mask in the network's layout, or an error if the prior cannot take it.
pub(crate) fn own_mask(
    domain: InputDomain,
    measured: MeasuredDomain,
    mask: &Array2<f32>,
) -> Result<Array2<f32>> {
    match (domain, measured) {
        (InputDomain::Kspace, MeasuredDomain::Kspace)
        | (InputDomain::Pixel, MeasuredDomain::Image) => Ok(mask.clone()),
        (InputDomain::Clean, _) => Ok(Array2::ones(mask.dim())),
        (InputDomain::Kspace, MeasuredDomain::Image) => Err(DiffusionError::Unsupported(
            "a k-space prior cannot take an image-domain (pixel/box) measurement in one step; \
             use a pixel prior, or the iterative sampler"
                .into(),
        )),
        (InputDomain::Pixel, MeasuredDomain::Kspace) => Err(DiffusionError::Unsupported(
            "a pixel/box prior cannot take a k-space measurement in one step; use a k-space \
             prior, or the iterative sampler"
                .into(),
        )),
        (_, MeasuredDomain::Projection) => Err(DiffusionError::Unsupported(
            "Gaussian random projections: the learned priors take k-space or image-domain \
             measurements"
                .into(),
        )),
    }
}

/// Hard data consistency: measured samples of `x` (k-space entries or pixels) set to `y`.
pub(crate) fn hard_consistency(
    x: &Array2<C32>,
    y: &Array2<C32>,
    mask: &Array2<f32>,
    measured: MeasuredDomain,
) -> Array2<C32> {
    let replace = |mut v: Array2<C32>| {
        Zip::from(&mut v).and(y).and(mask).for_each(|v, y, m| {
            if *m != 0.0 {
                *v = *y
            }
        });
        v
    };
    match measured {
        MeasuredDomain::Image => replace(x.clone()),
        MeasuredDomain::Kspace | MeasuredDomain::Projection => ifft2c(&replace(fft2c(x))),
    }
}

/// One-step reconstruction of `p` with `prior` (see the module docs); the complex image
/// `[row, col]` in the input's units.
pub fn one_step<D: PriorDenoiser + ?Sized>(
    prior: &D,
    p: &Problem,
    cfg: &OneStepConfig,
) -> Result<Array2<C32>> {
    if !(cfg.sigma.is_finite() && cfg.sigma > 0.0) {
        return Err(DiffusionError::Config(format!(
            "one-step sigma must be > 0, got {}",
            cfg.sigma
        )));
    }
    p.validate()?;
    let scale = match cfg.scale {
        Some(s) => s,
        None => measured_scale(std::slice::from_ref(p))?,
    };
    let single = p.single(scale)?;
    let mut img = averaged_estimate(prior, &single, cfg)?;
    if cfg.data_consistency {
        img = match &single.coils {
            Some(c) => sense_consistency(&img, c, &single.mask, cfg.dc_lambda, cfg.dc_iterations)?,
            None => hard_consistency(&img, &single.y, &single.mask, single.domain),
        };
    }
    Ok(img * C32::new(scale, 0.0))
}

/// The network's estimate for `single` in normalised units, averaged as `cfg.averaging` asks:
/// the network input is formed as in training with the measurement's own mask, reflected,
/// denoised, reflected back, and the estimates are averaged (one call per estimate, batched
/// by 8).
fn averaged_estimate<D: PriorDenoiser + ?Sized>(
    prior: &D,
    single: &Single,
    cfg: &OneStepConfig,
) -> Result<Array2<C32>> {
    let domain = prior.input_domain();
    let m = own_mask(domain, single.domain, &single.mask)?;
    let inp = match (&single.coils, domain) {
        // multi-coil k-space prior: the SENSE-combined image of the coil data, as in training
        (Some(c), InputDomain::Kspace) => c.input(
            &single.mask,
            prior.network_input(),
            cfg.sigma,
            prior.sigma_data(),
        )?,
        _ => {
            let x = single.zero_filled().insert_axis(Axis(0));
            let (inp, _) = network_input(
                domain,
                &x,
                &m.clone().insert_axis(Axis(0)),
                None,
                prior.network_input(),
                cfg.sigma,
                prior.sigma_data(),
            )?;
            inp.index_axis(Axis(0), 0).to_owned()
        }
    };
    let (rows, cols) = single.mask.dim();
    // (network input, mask channel, reflection) of each estimate
    let members: Vec<(Array2<C32>, Array2<f32>, Draw)> =
        reflections(cfg.averaging.dihedral, rows == cols)
            .into_iter()
            .map(|d| {
                (
                    apply_to_plane(inp.view(), &d),
                    apply_to_plane(m.view(), &d),
                    d,
                )
            })
            .collect();
    let mut sum = Array2::<C32>::zeros((rows, cols));
    let n = members.len();
    for chunk in members.chunks(8) {
        let (h, w) = chunk[0].0.dim();
        let mut inp = Array3::<C32>::zeros((chunk.len(), h, w));
        let mut m = Array3::<f32>::zeros((chunk.len(), h, w));
        for (k, (i, mk, _)) in chunk.iter().enumerate() {
            inp.index_axis_mut(Axis(0), k).assign(i);
            m.index_axis_mut(Axis(0), k).assign(mk);
        }
        let out = denoise_input(prior, inp, m, cfg.sigma)?;
        for (o, (_, _, d)) in out.outer_iter().zip(chunk) {
            sum += &apply_to_plane(o, &inverse(d));
        }
    }
    if n > 1 {
        sum.mapv_inplace(|v| v / n as f32);
    }
    Ok(sum)
}

/// Multi-coil data consistency: the image nearest the network's `xhat` `[row, col]` that agrees
/// with the coil data, `argmin_x ‖A x − y‖² + λ‖x − x̂‖²` with `A = M F S` (SENSE, orthonormal
/// centred DFT), by conjugate gradient on `(AᴴA + λI) x = Aᴴy + λx̂` started at `x̂`, at most
/// `iterations` steps. Started there, CG changes `x̂` only within the range of `Aᴴ`: for one coil
/// with a unit map and λ = 0 it is [`hard_consistency`] (measured k-space replaced).
pub(crate) fn sense_consistency(
    xhat: &Array2<C32>,
    coils: &Coils,
    mask: &Array2<f32>,
    lambda: f32,
    iterations: usize,
) -> Result<Array2<C32>> {
    let op = Sense::new(coils.maps.clone(), mask.clone())?;
    let y: Vec<C32> = coils.y.iter().copied().collect();
    sense_fit(&op, &y, xhat, lambda, iterations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::DenoiseFn;
    use crate::precond::{denoiser, DenoiserConfig};
    use crate::sample::karras_sigmas;
    use amri_ops::linop::LinearOperator;
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{VarBuilder, VarMap};

    /// A denoiser that returns `a·x + b` (identity for a = 1, b = 0), squared if `square`.
    struct Affine {
        a: f64,
        b: f64,
        square: bool,
        domain: InputDomain,
        dev: Device,
    }
    impl DenoiseFn for Affine {
        fn denoise(&self, x: &Tensor, _m: &Tensor, _s: &Tensor) -> Result<Tensor> {
            let y = x.affine(self.a, self.b)?;
            Ok(if self.square { y.sqr()? } else { y })
        }
    }
    impl PriorDenoiser for Affine {
        fn input_domain(&self) -> InputDomain {
            self.domain
        }
        fn sigma_data(&self) -> f64 {
            0.5
        }
        fn device(&self) -> &Device {
            &self.dev
        }
    }

    /// A real network at initialisation: `D(x) = c_skip(σ)·x` (zero-initialised output layer).
    struct Net(crate::precond::Denoiser, Device);
    impl DenoiseFn for Net {
        fn denoise(&self, x: &Tensor, m: &Tensor, s: &Tensor) -> Result<Tensor> {
            self.0.forward(x, m, s)
        }
    }
    impl PriorDenoiser for Net {
        fn input_domain(&self) -> InputDomain {
            InputDomain::Kspace
        }
        fn sigma_data(&self) -> f64 {
            0.5
        }
        fn device(&self) -> &Device {
            &self.1
        }
        fn size_multiple(&self) -> usize {
            self.0.config().unet.size_multiple()
        }
    }

    fn image(r: usize, c: usize) -> Array2<C32> {
        Array2::from_shape_fn((r, c), |(i, j)| {
            C32::new(
                1.0 + (i as f32 * 0.7).sin() * (j as f32 * 0.3).cos(),
                0.3 * (j as f32 * 0.5).sin(),
            )
        })
    }

    fn max_diff(a: &Array2<C32>, b: &Array2<C32>) -> f32 {
        (a - b).iter().map(|v| v.norm()).fold(0.0, f32::max)
    }

    #[test]
    fn identity_denoiser_on_fully_sampled_kspace_returns_the_image() -> Result<()> {
        let x = image(12, 10);
        let p = Problem::Kspace {
            kspace: fft2c(&x).insert_axis(Axis(0)),
            mask: Array2::ones((12, 10)),
            maps: None,
        };
        let id = Affine {
            a: 1.0,
            b: 0.0,
            square: false,
            domain: InputDomain::Kspace,
            dev: Device::Cpu,
        };
        let out = one_step(&id, &p, &OneStepConfig::default())?;
        assert!(max_diff(&out, &x) < 1e-4, "{}", max_diff(&out, &x));
        Ok(())
    }

    #[test]
    fn real_network_in_the_small_sigma_limit_returns_nearly_the_input() -> Result<()> {
        let dev = Device::Cpu;
        let mut cfg = DenoiserConfig::complex_preset("tiny", 0.5)?;
        cfg.unet.base_channels = 8;
        cfg.unet.channel_mult = vec![1, 2];
        cfg.unet.attention_levels = vec![];
        cfg.unet.groups = 4;
        let vm = VarMap::new();
        let net = Net(
            denoiser(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev))?,
            dev.clone(),
        );
        // 15×13 is not a multiple of 2: exercises padding and cropping too.
        let x = image(15, 13);
        let p = Problem::Kspace {
            kspace: fft2c(&x).insert_axis(Axis(0)),
            mask: Array2::ones((15, 13)),
            maps: None,
        };
        let peak = x.iter().map(|v| v.norm()).fold(0.0, f32::max);
        let sd2 = 0.25f64;
        for sigma in karras_sigmas(3, 1e-3, 1e-1, 1.0)? {
            let c = OneStepConfig {
                sigma,
                ..Default::default()
            };
            let out = one_step(&net, &p, &c)?;
            // at initialisation D = c_skip(σ)·x with c_skip = σ_d²/(σ²+σ_d²)
            let want = (1.0 - sd2 / (sigma * sigma + sd2)) as f32 * peak;
            let err = max_diff(&out, &x);
            assert!(
                (err - want).abs() < 1e-4 * peak,
                "σ={sigma}: {err} vs {want}"
            );
        }
        Ok(())
    }

    #[test]
    fn data_consistency_returns_exactly_the_measured_samples() -> Result<()> {
        let (r, c) = (16, 16);
        let x = image(r, c);
        // odd columns and the centre measured
        let mask = Array2::from_shape_fn((r, c), |(_, j)| (j % 2 == 1 || j == c / 2) as u8 as f32);
        let mut k = fft2c(&x);
        Zip::from(&mut k).and(&mask).for_each(|v, m| *v *= *m);
        let p = Problem::Kspace {
            kspace: k.clone().insert_axis(Axis(0)),
            mask: mask.clone(),
            maps: None,
        };
        // A denoiser that is wrong everywhere and fills unmeasured frequencies: (0.5·x + 0.3)²
        let bad = Affine {
            a: 0.5,
            b: 0.3,
            square: true,
            domain: InputDomain::Kspace,
            dev: Device::Cpu,
        };
        let cfg = OneStepConfig {
            data_consistency: true,
            scale: Some(2.0),
            ..Default::default()
        };
        let out = one_step(&bad, &p, &cfg)?;
        let ko = fft2c(&out);
        let mut worst = 0f32;
        let mut moved = 0f32;
        Zip::from(&ko).and(&k).and(&mask).for_each(|a, b, m| {
            if *m != 0.0 {
                worst = worst.max((a - b).norm());
            } else {
                moved = moved.max(a.norm());
            }
        });
        assert!(worst < 1e-5, "measured samples changed by {worst}");
        assert!(moved > 1e-3, "unmeasured samples are all zero");
        // pixels: measured pixels exact
        let pm = Array2::from_shape_fn((r, c), |(i, j)| ((i * 7 + j * 3) % 5 != 0) as u8 as f32);
        let mut y = x.clone();
        Zip::from(&mut y).and(&pm).for_each(|v, m| *v *= *m);
        let pp = Problem::Pixels {
            image: y.clone(),
            mask: pm.clone(),
        };
        let badp = Affine {
            domain: InputDomain::Pixel,
            square: false,
            ..bad
        };
        let out = one_step(&badp, &pp, &cfg)?;
        Zip::from(&out).and(&y).and(&pm).for_each(|a, b, m| {
            if *m != 0.0 {
                assert!((a - b).norm() < 1e-6);
            } else {
                // 0.5·0 + 0.3 on both channels, times the scale 2
                assert!((a - C32::new(0.6, 0.6)).norm() < 1e-5, "{a}");
            }
        });
        Ok(())
    }

    #[test]
    fn mismatched_prior_and_measurement_is_a_clear_error() {
        let x = image(8, 8);
        let p = Problem::Pixels {
            image: x,
            mask: Array2::ones((8, 8)),
        };
        let k = Affine {
            a: 1.0,
            b: 0.0,
            square: false,
            domain: InputDomain::Kspace,
            dev: Device::Cpu,
        };
        let e = one_step(&k, &p, &OneStepConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("k-space prior"), "{e}");
    }

    /// `[coils, h, w]` complex → `[1, coils, 2, h, w]` (the training batch layout).
    fn coil_tensor(v: &Array3<C32>) -> Result<Tensor> {
        let (c, h, w) = v.dim();
        let mut out = Vec::with_capacity(c * 2 * h * w);
        for plane in v.outer_iter() {
            out.extend(plane.iter().map(|z| z.re));
            out.extend(plane.iter().map(|z| z.im));
        }
        Ok(Tensor::from_vec(out, (1, c, 2, h, w), &Device::Cpu)?)
    }

    /// 1-D Cartesian mask: every third column and a 4-column centre block measured.
    fn lines(r: usize, c: usize) -> Array2<f32> {
        Array2::from_shape_fn((r, c), |(_, j)| {
            (j % 3 == 0 || (c / 2 - 2..c / 2 + 2).contains(&j)) as u8 as f32
        })
    }

    /// Coil k-space `M ⊙ F(S_c x)` `[coils, r, c]`.
    fn coil_data(x: &Array2<C32>, maps: &Array3<C32>, mask: &Array2<f32>) -> Array3<C32> {
        let mut k = Array3::<C32>::zeros(maps.dim());
        for (mut kc, s) in k.outer_iter_mut().zip(maps.outer_iter()) {
            let mut f = fft2c(&(&s * x));
            Zip::from(&mut f).and(mask).for_each(|v, m| *v *= *m);
            kc.assign(&f);
        }
        k
    }

    /// The identity denoiser of a k-space prior trained with network input `.0`.
    struct IdentityWith(crate::sense_input::NetworkInput, Device);
    impl DenoiseFn for IdentityWith {
        fn denoise(&self, x: &Tensor, _m: &Tensor, _s: &Tensor) -> Result<Tensor> {
            Ok(x.clone())
        }
    }
    impl PriorDenoiser for IdentityWith {
        fn input_domain(&self) -> InputDomain {
            InputDomain::Kspace
        }
        fn sigma_data(&self) -> f64 {
            0.5
        }
        fn device(&self) -> &Device {
            &self.1
        }
        fn network_input(&self) -> crate::sense_input::NetworkInput {
            self.0
        }
    }

    #[test]
    fn multicoil_one_step_feeds_the_network_the_input_it_was_trained_on() -> Result<()> {
        use crate::sense_input::NetworkInput;
        let (r, c, coils) = (16, 12, 3);
        let x = image(r, c);
        let maps = amri_ops::coils::synthetic_maps(coils, r, c, Some(5));
        let mask = lines(r, c);
        let k = coil_data(&x, &maps, &mask);
        let p = Problem::Kspace {
            kspace: k.clone(),
            mask: mask.clone(),
            maps: Some(maps.clone()),
        };
        let cfg = OneStepConfig {
            scale: Some(1.0),
            ..OneStepConfig::default()
        };
        let dft = crate::fourier::CenteredDft2::new(r, c, &Device::Cpu)?;
        let y = coil_tensor(&k)?;
        let mut inputs = Vec::new();
        for kind in [
            NetworkInput::Adjoint,
            NetworkInput::Sense {
                iterations: 4,
                lambda: 0.1,
            },
        ] {
            let got = one_step(&IdentityWith(kind, Device::Cpu), &p, &cfg)?;
            // training's input at one-step's σ with zero noise (the SENSE input's Tikhonov
            // weight depends on σ), formed by the loss module from the same coil data
            let want = crate::loss::multicoil_network_input(
                &kind,
                0.5,
                &dft,
                &y,
                &coil_tensor(&maps)?,
                &Tensor::from_vec(mask.iter().copied().collect(), (1, 1, r, c), &Device::Cpu)?,
                &Tensor::new(&[cfg.sigma as f32], &Device::Cpu)?,
                &y.zeros_like()?,
            )?;
            let want = crate::sample::from_tensor(&want)?;
            let err = max_diff(&got, &want.index_axis(Axis(0), 0).to_owned());
            assert!(
                err < 1e-4,
                "{kind}: one-step input differs from training's by {err}"
            );
            inputs.push(got);
        }
        // the two inputs differ, and the adjoint is not the virtual coil's re-masked image
        assert!(max_diff(&inputs[0], &inputs[1]) > 1e-2);
        let virtual_coil = p.single(1.0)?.zero_filled();
        assert!(max_diff(&inputs[0], &virtual_coil) > 1e-2);
        Ok(())
    }

    /// A denoiser that is not equivariant: it multiplies its input by a fixed, asymmetric
    /// position weight `w[i, j]` (the network frame; `size_multiple` 1, so no padding).
    struct Weighted(Array2<f32>, Device);
    impl DenoiseFn for Weighted {
        fn denoise(&self, x: &Tensor, _m: &Tensor, _s: &Tensor) -> Result<Tensor> {
            let (h, w) = self.0.dim();
            let wt = Tensor::from_vec(self.0.iter().copied().collect(), (1, 1, h, w), &self.1)?;
            Ok(x.broadcast_mul(&wt)?)
        }
    }
    impl PriorDenoiser for Weighted {
        fn input_domain(&self) -> InputDomain {
            InputDomain::Kspace
        }
        fn sigma_data(&self) -> f64 {
            0.5
        }
        fn device(&self) -> &Device {
            &self.1
        }
    }

    fn weight(r: usize, c: usize) -> Array2<f32> {
        Array2::from_shape_fn((r, c), |(i, j)| {
            1.0 + 0.05 * i as f32 + 0.013 * (i * j) as f32
        })
    }

    fn kspace_problem(x: &Array2<C32>, mask: &Array2<f32>) -> Problem {
        let mut k = fft2c(x);
        Zip::from(&mut k).and(mask).for_each(|v, m| *v *= *m);
        Problem::Kspace {
            kspace: k.insert_axis(Axis(0)),
            mask: mask.clone(),
            maps: None,
        }
    }

    fn dihedral() -> OneStepConfig {
        OneStepConfig {
            scale: Some(1.0),
            averaging: Averaging { dihedral: true },
            ..OneStepConfig::default()
        }
    }

    #[test]
    fn dihedral_averaging_maps_every_estimate_back_to_the_slice() -> Result<()> {
        // an equivariant (pointwise) denoiser gives the plain estimate: each reflected estimate
        // is mapped back exactly; square, non-square and odd sizes
        for (r, c) in [(16, 16), (16, 12), (15, 13)] {
            let x = image(r, c);
            let p = kspace_problem(&x, &lines(r, c));
            let f = Affine {
                a: 0.5,
                b: 0.3,
                square: true,
                domain: InputDomain::Kspace,
                dev: Device::Cpu,
            };
            let plain = one_step(
                &f,
                &p,
                &OneStepConfig {
                    scale: Some(1.0),
                    ..Default::default()
                },
            )?;
            let avg = one_step(&f, &p, &dihedral())?;
            assert!(
                max_diff(&avg, &plain) < 1e-5,
                "{r}×{c}: {}",
                max_diff(&avg, &plain)
            );
            // the 8 reflections of the square, the 4 flips of a rectangle, all distinct
            let d = reflections(true, r == c);
            assert_eq!(d.len(), if r == c { 8 } else { 4 });
            assert!(d
                .iter()
                .enumerate()
                .all(|(i, a)| d[..i].iter().all(|b| a != b)));
        }
        Ok(())
    }

    #[test]
    fn dihedral_averaging_makes_any_denoiser_equivariant() -> Result<()> {
        // the averaged estimate of a reflected measurement is the reflected averaged estimate,
        // even for a position-dependent denoiser (for which the plain estimate is not)
        for (r, c) in [(16, 16), (15, 13)] {
            let x = image(r, c);
            let mask = lines(r, c);
            let p = kspace_problem(&x, &mask);
            let f = Weighted(weight(r, c), Device::Cpu);
            let plain_cfg = OneStepConfig {
                scale: Some(1.0),
                ..Default::default()
            };
            let avg = one_step(&f, &p, &dihedral())?;
            let plain = one_step(&f, &p, &plain_cfg)?;
            for d in reflections(true, r == c).into_iter().skip(1) {
                // reflecting k-space about DC reflects the image (crate::augment docs)
                let Problem::Kspace { kspace, .. } = &p else {
                    unreachable!()
                };
                let k = apply_to_plane(kspace.index_axis(Axis(0), 0), &d);
                let pd = Problem::Kspace {
                    kspace: k.insert_axis(Axis(0)),
                    mask: apply_to_plane(mask.view(), &d),
                    maps: None,
                };
                let got = one_step(&f, &pd, &dihedral())?;
                let want = apply_to_plane(avg.view(), &d);
                assert!(
                    max_diff(&got, &want) < 1e-4,
                    "{r}×{c} {d:?}: {}",
                    max_diff(&got, &want)
                );
                let plain_d = one_step(&f, &pd, &plain_cfg)?;
                assert!(max_diff(&plain_d, &apply_to_plane(plain.view(), &d)) > 1e-2);
            }
        }
        Ok(())
    }

    #[test]
    fn sense_consistency_with_one_unit_coil_is_hard_replacement() -> Result<()> {
        let (r, c) = (10, 8);
        let x = image(r, c);
        let mask = lines(r, c);
        let ones = Array3::from_elem((1, r, c), C32::new(1.0, 0.0));
        let coils = Coils {
            y: coil_data(&x, &ones, &mask),
            maps: ones,
        };
        let xhat =
            Array2::from_shape_fn((r, c), |(i, j)| C32::new(0.1 * i as f32, -0.2 * j as f32));
        let got = sense_consistency(&xhat, &coils, &mask, 0.0, 30)?;
        let y = coils.y.index_axis(Axis(0), 0).to_owned();
        let want = hard_consistency(&xhat, &y, &mask, MeasuredDomain::Kspace);
        let err = max_diff(&got, &want);
        assert!(err < 1e-4, "differs from hard replacement by {err}");
        Ok(())
    }

    #[test]
    fn sense_consistency_fits_the_coil_data_and_removes_only_what_they_see() -> Result<()> {
        let (r, c, nc) = (16, 16, 4);
        let x = image(r, c);
        let maps = amri_ops::coils::synthetic_maps(nc, r, c, Some(2));
        let mask = lines(r, c);
        let coils = Coils {
            y: coil_data(&x, &maps, &mask),
            maps: maps.clone(),
        };
        let op = Sense::new(maps.clone(), mask.clone())?;
        // x̂ = x + Aᴴz: a perturbation the data see entirely; λ = 0 removes it
        let z: Vec<C32> = (0..nc * r * c)
            .map(|i| C32::new((i as f32 * 0.37).sin(), (i as f32 * 0.11).cos()))
            .collect();
        let mut ahz = vec![C32::new(0.0, 0.0); r * c];
        op.adjoint(&z, &mut ahz);
        let xhat = &x
            + &Array2::from_shape_vec((r, c), ahz)
                .map_err(|e| DiffusionError::Shape(e.to_string()))?;
        let got = sense_consistency(&xhat, &coils, &mask, 0.0, 200)?;
        let err = max_diff(&got, &x);
        assert!(err < 1e-3, "range perturbation left {err}");
        // from zeros the result fits the data: ‖A x − y‖ ≪ ‖y‖
        let got0 = sense_consistency(&Array2::zeros((r, c)), &coils, &mask, 0.0, 200)?;
        let mut ax = vec![C32::new(0.0, 0.0); nc * r * c];
        op.forward(&got0.iter().copied().collect::<Vec<_>>(), &mut ax);
        let res: f32 = ax
            .iter()
            .zip(coils.y.iter())
            .map(|(a, b)| (a - b).norm_sqr())
            .sum();
        let yn: f32 = coils.y.iter().map(|v| v.norm_sqr()).sum();
        assert!(
            (res / yn).sqrt() < 1e-3,
            "relative residual {}",
            (res / yn).sqrt()
        );
        // λ > 0 pulls towards x̂: the result lies between the data fit and x̂ = 0
        let pulled = sense_consistency(&Array2::zeros((r, c)), &coils, &mask, 10.0, 200)?;
        let norm = |a: &Array2<C32>| a.iter().map(|v| v.norm_sqr()).sum::<f32>().sqrt();
        assert!(norm(&pulled) < norm(&got0) && norm(&pulled) > 0.0);
        Ok(())
    }
}
