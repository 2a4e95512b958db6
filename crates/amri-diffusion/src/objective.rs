//! Loss dispatch: which loss a training [`Batch`] gets ([`Trainer::loss`]), with the weighting of
//! hidden samples and the consistency term of noisy-data training. The losses themselves are in
//! [`crate::loss`]; the step that calls this is [`Trainer::step`].

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::batch::Batch;
use crate::error::{DiffusionError, Result};
use crate::fourier::CenteredDft2;
use crate::loss::{
    ambient_kspace_loss, ambient_pixel_loss, consistency_kspace_loss, consistency_pixel_loss,
    multicoil_kspace_loss, supervised_loss, tweedie_kspace_loss, tweedie_pixel_loss,
};
use crate::seed::{derive_seed, TAG_CONSISTENCY};
use crate::train::Trainer;

impl Trainer {
    fn dft_for(&mut self, h: usize, w: usize, dev: &Device) -> Result<CenteredDft2> {
        match &self.dft {
            Some(d) if d.shape() == (h, w) => Ok(d.clone()),
            _ => {
                let d = CenteredDft2::new(h, w, dev)?;
                self.dft = Some(d.clone());
                Ok(d)
            }
        }
    }

    /// The loss mask of a noiseless ambient batch: `A` with the samples Ã hid scaled so that
    /// their squared error counts [`crate::train::TrainConfig::hidden_weight`] times (the losses square the
    /// mask with the residual): `Ã + √w (A − Ã)`.
    fn loss_mask(&self, mask_a: &Tensor, mask_tilde: &Tensor) -> Result<Tensor> {
        let w = self.cfg.hidden_weight;
        if w == 1.0 {
            return Ok(mask_a.clone());
        }
        if !(w.is_finite() && w > 0.0) {
            return Err(DiffusionError::Config(format!(
                "hidden_weight must be > 0, got {w}"
            )));
        }
        let mt = mask_tilde
            .broadcast_as(mask_a.shape())?
            .to_dtype(mask_a.dtype())?;
        Ok((&mt + ((mask_a - &mt)? * w.sqrt())?)?)
    }

    /// The batch's loss (scalar tensor, differentiable) at given `sigma: [N]` and
    /// `noise: [N, 2, H, W]` (image noise, or k-space noise for [`Batch::AmbientKspace`]).
    pub fn loss(&mut self, batch: &Batch, sigma: &Tensor, noise: &Tensor) -> Result<Tensor> {
        let p = self.dcfg.precond;
        if !self.dcfg.input.is_adjoint() && !matches!(batch, Batch::AmbientMulticoil { .. }) {
            return Err(DiffusionError::Unsupported(format!(
                "network input {}: the SENSE input is formed from multi-coil k-space; this batch is not",
                self.dcfg.input
            )));
        }
        match batch {
            Batch::AmbientPixel {
                x_a,
                mask_a,
                mask_tilde,
            } => {
                let wa = self.loss_mask(mask_a, mask_tilde)?;
                ambient_pixel_loss(&self.model, &p, x_a, &wa, mask_tilde, sigma, noise)
            }
            Batch::AmbientKspace {
                y,
                mask_a,
                mask_tilde,
            } => {
                let (_, _, h, w) = y.dims4()?;
                let dft = self.dft_for(h, w, y.device())?;
                let wa = self.loss_mask(mask_a, mask_tilde)?;
                ambient_kspace_loss(&self.model, &p, &dft, y, &wa, mask_tilde, sigma, noise)
            }
            Batch::Supervised { x0 } => supervised_loss(&self.model, &p, x0, sigma, noise),
            Batch::AmbientMulticoil {
                y,
                maps,
                mask_a,
                mask_tilde,
            } => {
                let d = y.dims();
                if d.len() != 5 {
                    return Err(DiffusionError::Shape(format!(
                        "multi-coil data must be [N, coils, 2, H, W], got {d:?}"
                    )));
                }
                let dft = self.dft_for(d[3], d[4], y.device())?;
                let wa = self.loss_mask(mask_a, mask_tilde)?;
                multicoil_kspace_loss(
                    &self.dcfg.input,
                    &self.model,
                    &p,
                    &dft,
                    y,
                    maps,
                    &wa,
                    mask_tilde,
                    sigma,
                    noise,
                )
            }
            Batch::Noisy { inner, sigma_n } if self.cfg.consistency_weight > 0.0 => {
                self.noisy_loss_with_consistency(inner, sigma_n, sigma, noise)
            }
            Batch::Noisy { inner, sigma_n } => match inner.as_ref() {
                Batch::AmbientPixel {
                    x_a,
                    mask_a,
                    mask_tilde,
                } => tweedie_pixel_loss(
                    &self.model,
                    &p,
                    x_a,
                    mask_a,
                    mask_tilde,
                    sigma,
                    sigma_n,
                    noise,
                ),
                Batch::AmbientKspace {
                    y,
                    mask_a,
                    mask_tilde,
                } => {
                    let (_, _, h, w) = y.dims4()?;
                    let dft = self.dft_for(h, w, y.device())?;
                    tweedie_kspace_loss(
                        &self.model,
                        &p,
                        &dft,
                        y,
                        mask_a,
                        mask_tilde,
                        sigma,
                        sigma_n,
                        noise,
                    )
                }
                other => Err(DiffusionError::Unsupported(format!(
                    "noisy-data training of a {:?} batch",
                    other.objective()
                ))),
            },
        }
    }

    /// The noisy-data loss with the consistency term: samples with `σ > σ_n` get the Tweedie
    /// loss, the others the consistency loss (second draw `z2` from a stream of its own for this
    /// step), combined as `(n_T·L_T + w·n_C·L_C)/N`.
    fn noisy_loss_with_consistency(
        &mut self,
        inner: &Batch,
        sigma_n: &Tensor,
        sigma: &Tensor,
        noise: &Tensor,
    ) -> Result<Tensor> {
        let p = self.dcfg.precond;
        let sv = sigma.to_vec1::<f32>()?;
        let nv = sigma_n.to_vec1::<f32>()?;
        let n = sv.len();
        let (mut above, mut below) = (Vec::new(), Vec::new());
        for (i, (s, sn)) in sv.iter().zip(&nv).enumerate() {
            if s > sn {
                above.push(i as u32);
            } else {
                below.push(i as u32);
            }
        }
        let dev = sigma.device();
        let pick = |t: &Tensor, idx: &[u32]| -> Result<Tensor> {
            Ok(t.index_select(&Tensor::new(idx, dev)?, 0)?)
        };
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(
            self.cfg.seed,
            self.step as u64,
            TAG_CONSISTENCY,
        ));
        let z2: Vec<f32> = (0..noise.elem_count())
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let z2 = Tensor::from_vec(z2, noise.dims(), dev)?;
        let mut total: Option<Tensor> = None;
        let mut add = |l: Tensor, count: usize, w: f64| -> Result<()> {
            let l = (l * (w * count as f64 / n as f64))?;
            total = Some(match total.take() {
                Some(t) => (t + l)?,
                None => l,
            });
            Ok(())
        };
        let (data, mask_a, mask_tilde, kspace) = match inner {
            Batch::AmbientPixel {
                x_a,
                mask_a,
                mask_tilde,
            } => (x_a, mask_a, mask_tilde, false),
            Batch::AmbientKspace {
                y,
                mask_a,
                mask_tilde,
            } => (y, mask_a, mask_tilde, true),
            other => {
                return Err(DiffusionError::Unsupported(format!(
                    "noisy-data training of a {:?} batch",
                    other.objective()
                )))
            }
        };
        let (_, _, h, w) = data.dims4()?;
        let dft = if kspace {
            Some(self.dft_for(h, w, dev)?)
        } else {
            None
        };
        if !above.is_empty() {
            let (y, ma, mt) = (
                pick(data, &above)?,
                pick(mask_a, &above)?,
                pick(mask_tilde, &above)?,
            );
            let (s, sn, z) = (
                pick(sigma, &above)?,
                pick(sigma_n, &above)?,
                pick(noise, &above)?,
            );
            let l = match &dft {
                Some(f) => tweedie_kspace_loss(&self.model, &p, f, &y, &ma, &mt, &s, &sn, &z)?,
                None => tweedie_pixel_loss(&self.model, &p, &y, &ma, &mt, &s, &sn, &z)?,
            };
            add(l, above.len(), 1.0)?;
        }
        if !below.is_empty() {
            let (y, mt) = (pick(data, &below)?, pick(mask_tilde, &below)?);
            let (s, sn) = (pick(sigma, &below)?, pick(sigma_n, &below)?);
            let (z, zz) = (pick(noise, &below)?, pick(&z2, &below)?);
            let l = match &dft {
                Some(f) => consistency_kspace_loss(&self.model, &p, f, &y, &mt, &s, &sn, &z, &zz)?,
                None => consistency_pixel_loss(&self.model, &p, &y, &mt, &s, &sn, &z, &zz)?,
            };
            add(l, below.len(), self.cfg.consistency_weight)?;
        }
        total.ok_or_else(|| DiffusionError::Shape("empty batch".into()))
    }
}
