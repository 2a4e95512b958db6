//! Zero-filled reconstruction: the inverse centred FFT of the measured k-space with unmeasured
//! samples set to zero; magnitude for single-coil data, root-sum-of-squares over coils
//! `sqrt(Σ_c |x_c|²)` for multi-coil data (fastMRI's baseline). For image-domain (pixel/box)
//! data it is the measured image with unmeasured pixels set to zero.

use amri_core::fft::ifft2c_inplace;
use amri_core::{KSpace, C32};
use ndarray::{Array3, Array4, Axis, Zip};

use crate::error::Result;

/// Coil images `[slice, coil, row, col]`: `F^H (M ⊙ y)` per coil (the mask is applied when the
/// scan has one, so samples stored outside it are ignored); `M ⊙ y` for image-domain data.
pub fn zero_filled_coils(ks: &KSpace) -> Result<Array4<C32>> {
    let domain = super::data_domain(ks)?;
    ks.validate()?;
    let mut d = ks.data.clone();
    if let Some(m) = &ks.mask {
        for (mut sl, ms) in d.axis_iter_mut(Axis(0)).zip(m.axis_iter(Axis(0))) {
            for mut coil in sl.axis_iter_mut(Axis(0)) {
                Zip::from(&mut coil).and(&ms).for_each(|v, &w| *v *= w);
            }
        }
    }
    if domain == amri_core::MeasuredDomain::Kspace {
        ifft2c_inplace(&mut d);
    }
    Ok(d)
}

/// Zero-filled magnitude images `[slice, row, col]`: `|F^H y|` for one coil, the
/// root-sum-of-squares of the coil images for several (in the units of the image whose
/// orthonormal FFT the k-space is).
pub fn zero_filled(ks: &KSpace) -> Result<Array3<f32>> {
    let coils = zero_filled_coils(ks)?;
    let [s, _, r, c] = ks.shape4();
    let mut out = Array3::<f32>::zeros((s, r, c));
    for (mut o, sl) in out.axis_iter_mut(Axis(0)).zip(coils.axis_iter(Axis(0))) {
        for coil in sl.axis_iter(Axis(0)) {
            Zip::from(&mut o)
                .and(&coil)
                .for_each(|a, v| *a += v.norm_sqr());
        }
        o.mapv_inplace(f32::sqrt);
    }
    Ok(out)
}
