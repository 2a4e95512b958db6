//! The network input of multi-coil k-space priors: the adjoint (coil-combined zero-filled image,
//! every prior before this option) or a few iterations of a SENSE solve.
//!
//! An ambient prior learns `E[x0 | Ã x_t]`; any fixed function of the measurement `Ã x_t` (and
//! of `Ã`) may be the network's input without changing that minimiser. The adjoint
//! `Σ_c conj(S_c) Fᴴ(M̃ ⊙ ỹ_c)` throws away what the coils know: at R = 4 with 1-D Cartesian
//! lines it is the aliased image, and the network must undo the aliasing from one image. The
//! SENSE input keeps it: `K` conjugate-gradient iterations from zero on
//! `(ÃᴴÃ + (λ + σ²/σ_d²) I) x = Ãᴴ ỹ` with `Ã = M̃ F S` (orthonormal centred DFT, the scan's
//! ESPIRiT maps), σ the noise level of `x_t` and σ_d the prior's: the MAP image under a Gaussian
//! prior of variance σ_d² (CG-SENSE with Tikhonov weight), which is plain CG-SENSE at small σ and
//! a shrunk adjoint at large σ, so the input's noise is never amplified by the g-factor (without
//! the σ term a first run's loss at large σ was 3–5× the adjoint input's). The same function forms the input in training (from the
//! further-corrupted noisy coil data), in one-step reconstruction (from the measured coil data)
//! and in the posterior sampler (from the coil data of its iterate), so the three agree.

use std::ops::ControlFlow;

use amri_core::C32;
use amri_ops::linop::LinearOperator;
use amri_ops::sense::Sense;
use amri_recon::alg::cg::{cg, CgConfig};
use candle_core::{DType, Device, Tensor};
use ndarray::{Array2, Array3, ArrayView2, ArrayView3};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{DiffusionError, Result};

/// Default [`NetworkInput::Sense`] iterations (`amri train --network-input sense`).
pub const SENSE_ITERATIONS: usize = 10;
/// Default [`NetworkInput::Sense`] Tikhonov weight λ (normalised units).
pub const SENSE_LAMBDA: f32 = 0.0;

/// How a multi-coil k-space prior's image input is formed from coil data `ỹ_c` (masked by `M̃`).
/// Absent from cards written before the option existed (read as [`NetworkInput::Adjoint`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkInput {
    /// `Σ_c conj(S_c) Fᴴ(M̃ ⊙ ỹ_c)`: the SENSE-combined zero-filled image.
    #[default]
    Adjoint,
    /// `iterations` CG steps from zero on `(ÃᴴÃ + (λ + σ²/σ_d²) I) x = Ãᴴỹ`, `Ã = M̃ F S`.
    Sense {
        /// CG iterations ≥ 1.
        iterations: usize,
        /// Tikhonov weight λ ≥ 0 added to σ²/σ_d² (normalised units).
        lambda: f32,
    },
}

impl NetworkInput {
    /// True for [`NetworkInput::Adjoint`] (cards then omit the field and keep their bytes).
    pub fn is_adjoint(&self) -> bool {
        matches!(self, NetworkInput::Adjoint)
    }

    /// Parses `adjoint`, `sense` (defaults) or `sense:K` / `sense:K:λ`.
    pub fn parse(s: &str) -> Result<Self> {
        let mut parts = s.trim().split(':');
        let bad = |why: &str| {
            DiffusionError::Config(format!(
                "network input {s:?}: {why} (expected adjoint, sense, sense:ITERATIONS or sense:ITERATIONS:LAMBDA)"
            ))
        };
        let v = match parts.next().unwrap_or("") {
            "adjoint" => NetworkInput::Adjoint,
            "sense" => {
                let iterations = match parts.next() {
                    Some(k) => k
                        .parse()
                        .map_err(|_| bad("iterations must be an integer"))?,
                    None => SENSE_ITERATIONS,
                };
                let lambda = match parts.next() {
                    Some(l) => l.parse().map_err(|_| bad("lambda must be a number"))?,
                    None => SENSE_LAMBDA,
                };
                NetworkInput::Sense { iterations, lambda }
            }
            _ => return Err(bad("unknown kind")),
        };
        if parts.next().is_some() {
            return Err(bad("too many fields"));
        }
        v.validate()?;
        Ok(v)
    }

    /// The Tikhonov weight of the SENSE solve at noise level `sigma` for a prior with
    /// `sigma_data`: `λ + σ²/σ_d²` (0 for the adjoint).
    pub fn tikhonov(&self, sigma: f64, sigma_data: f64) -> f32 {
        match *self {
            NetworkInput::Adjoint => 0.0,
            NetworkInput::Sense { lambda, .. } => lambda + ((sigma / sigma_data).powi(2)) as f32,
        }
    }

    /// Checks iterations ≥ 1 and a finite λ ≥ 0.
    pub fn validate(&self) -> Result<()> {
        if let NetworkInput::Sense { iterations, lambda } = *self {
            if iterations == 0 || !(lambda.is_finite() && lambda >= 0.0) {
                return Err(DiffusionError::Config(format!(
                    "SENSE network input needs iterations ≥ 1 and a finite λ ≥ 0, got {iterations} and {lambda}"
                )));
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for NetworkInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetworkInput::Adjoint => write!(f, "adjoint"),
            NetworkInput::Sense { iterations, lambda } => write!(f, "sense:{iterations}:{lambda}"),
        }
    }
}

/// The SENSE input of one scan: `iterations` CG steps from zero on `(AᴴA + λI) x = Aᴴy`,
/// `A = M F S`, for coil k-space `y` `[coil, row, col]` (centred, orthonormal; zero off the mask),
/// maps `[coil, row, col]` and a 0/1 mask `[row, col]`; the image `[row, col]`.
pub fn sense_solve(
    y: ArrayView3<C32>,
    maps: ArrayView3<C32>,
    mask: ArrayView2<f32>,
    iterations: usize,
    lambda: f32,
) -> Result<Array2<C32>> {
    if y.dim() != maps.dim() {
        return Err(DiffusionError::Shape(format!(
            "SENSE input: coil data {:?} and maps {:?} differ",
            y.shape(),
            maps.shape()
        )));
    }
    let (_, r, c) = y.dim();
    let op = Sense::new(maps.to_owned(), mask.to_owned())?;
    let yv: Vec<C32> = y.iter().copied().collect();
    sense_fit(&op, &yv, &Array2::zeros((r, c)), lambda, iterations)
}

/// `argmin_x ‖A x − y‖² + λ‖x − x̂‖²` for a SENSE operator `op` and flat coil data `y`
/// `[coil, row, col]`: at most `iterations` CG steps on `(AᴴA + λI) x = Aᴴy + λx̂` started at
/// `x̂`, stopping once the relative residual is below 1e-6 (the one-step and sampler data
/// steps; [`sense_solve`] is it from zero).
pub fn sense_fit(
    op: &Sense,
    y: &[C32],
    xhat: &Array2<C32>,
    lambda: f32,
    iterations: usize,
) -> Result<Array2<C32>> {
    let mut b = vec![C32::new(0.0, 0.0); xhat.len()];
    op.adjoint(y, &mut b);
    let x0: Vec<C32> = xhat.iter().copied().collect();
    b.iter_mut().zip(&x0).for_each(|(b, x)| *b += x * lambda);
    let mut x = x0;
    let cfg = CgConfig {
        iterations,
        tol: 1e-6,
        lambda,
    };
    cg(
        |v, out| op.normal(v, out),
        &b,
        &mut x,
        &cfg,
        |_| ControlFlow::Continue(()),
    )?;
    Array2::from_shape_vec(xhat.dim(), x).map_err(|e| DiffusionError::Shape(e.to_string()))
}

/// [`sense_solve`] of a training batch: coil k-space `y` `[N, coils, 2, H, W]` (already masked;
/// real, imaginary), maps `[N, coils, 2, H, W]`, masks `[N, 1, H, W]` or `[N, 1, 1, W]`, one
/// Tikhonov weight per example (`lambdas`, length N) → `[N, 2, H, W]` f32 on `y`'s device. Not
/// differentiable (the input is data).
pub fn sense_input_tensor(
    y: &Tensor,
    maps: &Tensor,
    mask: &Tensor,
    iterations: usize,
    lambdas: &[f32],
) -> Result<Tensor> {
    let d = y.dims().to_vec();
    if d.len() != 5 || d[2] != 2 || maps.dims() != d.as_slice() {
        return Err(DiffusionError::Shape(format!(
            "SENSE input: y {:?} and maps {:?} must both be [N, coils, 2, H, W]",
            y.dims(),
            maps.dims()
        )));
    }
    let (n, nc, h, w) = (d[0], d[1], d[3], d[4]);
    if lambdas.len() != n {
        return Err(DiffusionError::Shape(format!(
            "SENSE input: {} Tikhonov weights for a batch of {n}",
            lambdas.len()
        )));
    }
    let dev = y.device().clone();
    let host = |t: &Tensor| -> Result<Vec<f32>> {
        Ok(t.to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    };
    let yv = host(y)?;
    let sv = host(maps)?;
    let mv = host(
        &mask
            .broadcast_as((n, 1, h, w))
            .map_err(|e| DiffusionError::Shape(format!("mask {:?}: {e}", mask.dims())))?
            .contiguous()?,
    )?;
    let complex = |v: &[f32]| -> Array3<C32> {
        Array3::from_shape_fn((nc, h, w), |(c, i, j)| {
            let o = c * 2 * h * w + i * w + j;
            C32::new(v[o], v[o + h * w])
        })
    };
    let per = nc * 2 * h * w;
    let images: Vec<Array2<C32>> = (0..n)
        .into_par_iter()
        .map(|k| {
            let yk = complex(&yv[k * per..(k + 1) * per]);
            let sk = complex(&sv[k * per..(k + 1) * per]);
            let mk = Array2::from_shape_fn((h, w), |(i, j)| {
                (mv[k * h * w + i * w + j] != 0.0) as u8 as f32
            });
            sense_solve(yk.view(), sk.view(), mk.view(), iterations, lambdas[k])
        })
        .collect::<Result<_>>()?;
    let mut out = Vec::with_capacity(n * 2 * h * w);
    for img in &images {
        out.extend(img.iter().map(|v| v.re));
        out.extend(img.iter().map(|v| v.im));
    }
    Ok(Tensor::from_vec(out, (n, 2, h, w), &dev)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use amri_core::fft::fft2c;

    fn image(r: usize, c: usize) -> Array2<C32> {
        Array2::from_shape_fn((r, c), |(i, j)| {
            C32::new(
                1.0 + (i as f32 * 0.7).sin() * (j as f32 * 0.3).cos(),
                0.3 * (j as f32 * 0.5).sin(),
            )
        })
    }

    /// Coil k-space `M ⊙ F(S_c x)`.
    fn coil_data(x: &Array2<C32>, maps: &Array3<C32>, mask: &Array2<f32>) -> Array3<C32> {
        let mut k = Array3::<C32>::zeros(maps.dim());
        for (mut kc, s) in k.outer_iter_mut().zip(maps.outer_iter()) {
            let f = fft2c(&(&s * x)) * mask.mapv(|m| C32::new(m, 0.0));
            kc.assign(&f);
        }
        k
    }

    /// Maps with Σ_c |S_c|² = 1 at every pixel.
    fn unit_maps(nc: usize, r: usize, c: usize) -> Array3<C32> {
        let mut m = amri_ops::coils::synthetic_maps(nc, r, c, Some(4));
        for i in 0..r {
            for j in 0..c {
                let s: f32 = (0..nc).map(|k| m[[k, i, j]].norm_sqr()).sum::<f32>().sqrt();
                for k in 0..nc {
                    m[[k, i, j]] /= s;
                }
            }
        }
        m
    }

    fn max_diff(a: &Array2<C32>, b: &Array2<C32>) -> f32 {
        (a - b).iter().map(|v| v.norm()).fold(0.0, f32::max)
    }

    #[test]
    fn parse_display_round_trip_and_errors() -> Result<()> {
        assert_eq!(NetworkInput::parse("adjoint")?, NetworkInput::Adjoint);
        assert_eq!(
            NetworkInput::parse("sense")?,
            NetworkInput::Sense {
                iterations: SENSE_ITERATIONS,
                lambda: SENSE_LAMBDA
            }
        );
        let s = NetworkInput::parse("sense:7:0.25")?;
        assert_eq!(NetworkInput::parse(&s.to_string())?, s);
        for bad in ["sense:0", "sense:x", "sense:3:-1", "sense:3:1:2", "grappa"] {
            assert!(NetworkInput::parse(bad).is_err(), "{bad}");
        }
        // cards: adjoint is the default when the field is absent
        #[derive(Deserialize)]
        struct Card {
            #[serde(default)]
            input: NetworkInput,
        }
        let c: Card = serde_json::from_str("{}")?;
        assert!(c.input.is_adjoint());
        // the Tikhonov weight grows with the noise level: λ + σ²/σ_d²
        assert_eq!(NetworkInput::Adjoint.tikhonov(3.0, 0.5), 0.0);
        assert!((s.tikhonov(0.0, 0.5) - 0.25).abs() < 1e-7);
        assert!((s.tikhonov(1.0, 0.5) - 4.25).abs() < 1e-6);
        let json = serde_json::to_string(&s)?;
        assert_eq!(serde_json::from_str::<NetworkInput>(&json)?, s);
        Ok(())
    }

    #[test]
    fn fully_sampled_unit_maps_give_the_image_in_one_iteration() -> Result<()> {
        let (r, c, nc) = (12, 10, 3);
        let x = image(r, c);
        let maps = unit_maps(nc, r, c);
        let full = Array2::ones((r, c));
        let got = sense_solve(
            coil_data(&x, &maps, &full).view(),
            maps.view(),
            full.view(),
            1,
            0.0,
        )?;
        // AᴴA = I: the first CG step is exact
        assert!(max_diff(&got, &x) < 1e-4);
        // with λ: x/(1+λ)
        let got = sense_solve(
            coil_data(&x, &maps, &full).view(),
            maps.view(),
            full.view(),
            3,
            0.5,
        )?;
        assert!(max_diff(&got, &(&x / C32::new(1.5, 0.0))) < 1e-4);
        Ok(())
    }

    #[test]
    fn undersampled_solve_converges_to_the_truth_and_beats_the_adjoint() -> Result<()> {
        let (r, c, nc) = (16, 16, 4);
        let x = image(r, c);
        let maps = unit_maps(nc, r, c);
        // every second column plus a centre block: R ≈ 1.8 with 4 coils is well posed
        let mask = Array2::from_shape_fn((r, c), |(_, j)| {
            (j % 2 == 0 || (6..10).contains(&j)) as u8 as f32
        });
        let y = coil_data(&x, &maps, &mask);
        let adjoint = sense_solve(y.view(), maps.view(), mask.view(), 1, 0.0)?;
        let solved = sense_solve(y.view(), maps.view(), mask.view(), 100, 0.0)?;
        assert!(max_diff(&solved, &x) < 1e-3, "{}", max_diff(&solved, &x));
        assert!(max_diff(&adjoint, &x) > 10.0 * max_diff(&solved, &x));
        Ok(())
    }

    #[test]
    fn batched_tensor_form_matches_the_per_scan_solve() -> Result<()> {
        let (n, nc, r, c) = (2, 3, 8, 8);
        let maps = unit_maps(nc, r, c);
        let masks: Vec<Array2<f32>> = (0..n)
            .map(|k| {
                Array2::from_shape_fn((r, c), |(_, j)| ((j + k) % 2 == 0 || j == 4) as u8 as f32)
            })
            .collect();
        let xs: Vec<Array2<C32>> = (0..n)
            .map(|k| image(r, c) * C32::new(1.0 + k as f32, 0.0))
            .collect();
        let (mut yv, mut sv, mut mv) = (Vec::new(), Vec::new(), Vec::new());
        for k in 0..n {
            let y = coil_data(&xs[k], &maps, &masks[k]);
            for (yc, sc) in y.outer_iter().zip(maps.outer_iter()) {
                yv.extend(yc.iter().map(|v| v.re));
                yv.extend(yc.iter().map(|v| v.im));
                sv.extend(sc.iter().map(|v| v.re));
                sv.extend(sc.iter().map(|v| v.im));
            }
            mv.extend(masks[k].iter().copied());
        }
        let dev = Device::Cpu;
        let t = sense_input_tensor(
            &Tensor::from_vec(yv, (n, nc, 2, r, c), &dev)?,
            &Tensor::from_vec(sv, (n, nc, 2, r, c), &dev)?,
            &Tensor::from_vec(mv, (n, 1, r, c), &dev)?,
            5,
            &[0.1, 0.3],
        )?;
        assert_eq!(t.dims(), &[n, 2, r, c]);
        let got = crate::sample::from_tensor(&t)?;
        for k in 0..n {
            let y = coil_data(&xs[k], &maps, &masks[k]);
            let want = sense_solve(y.view(), maps.view(), masks[k].view(), 5, [0.1, 0.3][k])?;
            let err = max_diff(&got.index_axis(ndarray::Axis(0), k).to_owned(), &want);
            assert!(err < 1e-5, "example {k}: {err}");
        }
        Ok(())
    }
}
