//! Augmentation in the measured domain: flips, transposes and intensity gains of training
//! examples, applied to what was measured (k-space or corrupted image), its masks and its coil
//! maps together, so every augmented example is an exact measurement of an augmented object.
//!
//! **Flips on a centred grid.** With `fft2c`'s centring (DC at index `c = ⌊n/2⌋`), the
//! reflection of the image about its centre, `x'[c + m] = x[c − m]` (indices mod `n`), is the
//! reflection of its k-space about DC: `k'[c + m] = k[c − m]`. As an index map on `0..n` that is
//! `i ↦ (2c − i) mod n` ([`centred_flip_index`]): `(n − i) mod n` for even `n` (0 and `n/2` stay
//! put), `n − 1 − i` for odd `n`. It is a permutation of samples, so a flipped k-space is
//! exactly sampled by the flipped mask, DC stays at DC and the calibration region stays around
//! it; coil maps (image domain, same centring) follow with the same map. Image-domain data
//! (pixel masks) use the same map. **Transposes** swap the row and column axes of data, masks
//! and maps (`fft2c(xᵀ) = fft2c(x)ᵀ`); a line mask along columns becomes one along rows. They
//! apply to square matrices only: a transposed non-square slice would leave its shape bucket,
//! so in a non-square bucket the transpose draw is ignored (flips and gains still apply).
//!
//! **Ã follows the example.** The batch's `Ã` is drawn as without augmentation and mapped with
//! the same permutation as `A`. [`amri_ops::corruption::hide_further`] hides each removable
//! line (or sample) independently with probability `δ`, so its distribution commutes with any
//! permutation that maps lines to lines and the calibration region to itself: the mapped `Ã` is
//! distributed exactly as `Ã` drawn on the augmented `A` with the mapped calibration region, it
//! hides lines along the augmented mask's line axis (rows after a transpose of a column-line
//! mask), keeps the calibration region, and under `further = per-scan` a scan keeps one hidden
//! set, as without augmentation.
//!
//! **Intensity gains** multiply the measured data (and a noisy batch's `σ_n`) by `g`, drawn
//! log-uniformly from `[lo, hi]` ([`DEFAULT_GAIN`] = `[0.5, 2]`). Masks and coil maps are
//! unchanged. Each file is normalised by its own measured data (99.5th percentile of the
//! zero-filled magnitude → 1) and the EDM preconditioning assumes σ_data = 0.5 on that scale;
//! a user's scan normalised the same way lands within about a factor 2 of the training scale
//! (skull and fat, or another contrast, move the 99.5th percentile relative to brain tissue;
//! zero-filled aliasing at another acceleration moves it too), so gains of one octave either way
//! cover that error while the data's RMS stays within 2× of σ_data, where `c_in = 1/√(σ² +
//! σ_data²)` keeps the network's input of order one.
//!
//! **Determinism.** Example `b` of training step `t` draws its flips, transpose and gain from
//! `derive_seed(derive_seed(seed, t, TAG_AUGMENT), b, TAG_AUGMENT)` ([`Augmentation::draw`]):
//! a pure function of `(seed, t, b)`, so a resumed run continues exactly. With augmentation off
//! nothing is drawn and batches are bit for bit those of a run without it.

use candle_core::{Device, Tensor};
use ndarray::{Array2, ArrayView2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::batch::Batch;
use crate::error::{DiffusionError, Result};
use crate::seed::{derive_seed, TAG_AUGMENT};

/// Default gain range `[lo, hi]` of `intensity` (log-uniform; see the module docs).
pub const DEFAULT_GAIN: [f32; 2] = [0.5, 2.0];

/// Which augmentations a training run draws per example (all off by default). Serialised in
/// the model card's training record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Augmentation {
    /// Reflect the row axis (up–down) with probability 1/2 ([`centred_flip_index`]).
    #[serde(default)]
    pub flip_rows: bool,
    /// Reflect the column axis (left–right) with probability 1/2.
    #[serde(default)]
    pub flip_cols: bool,
    /// Swap rows and columns with probability 1/2 (square matrices only).
    #[serde(default)]
    pub transpose: bool,
    /// Intensity gain range `[lo, hi]` (log-uniform), `None`: no gain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gain: Option<[f32; 2]>,
}

/// One example's drawn augmentation: flips first, then the transpose, then the gain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Draw {
    /// Reflect the row axis.
    pub flip_rows: bool,
    /// Reflect the column axis.
    pub flip_cols: bool,
    /// Swap rows and columns (after the flips).
    pub transpose: bool,
    /// Multiply the measured data by this gain.
    pub gain: f32,
}

impl Draw {
    /// No change.
    pub const IDENTITY: Draw = Draw {
        flip_rows: false,
        flip_cols: false,
        transpose: false,
        gain: 1.0,
    };
}

impl Augmentation {
    /// Whether nothing is augmented (the training stream is then the plain one).
    pub fn is_off(&self) -> bool {
        *self == Self::default()
    }

    /// Parses a comma-separated list: `flip` (both axes), `flip-rows`, `flip-cols`,
    /// `transpose`, `intensity` ([`DEFAULT_GAIN`]) or `intensity=LO:HI` (0 < LO ≤ HI), or
    /// `none`. Errors name the bad item.
    pub fn parse(s: &str) -> Result<Self> {
        let mut a = Self::default();
        let bad = |item: &str, why: &str| {
            DiffusionError::Config(format!("--augment {s:?}: {item:?} {why}"))
        };
        for item in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match item {
                "none" => {}
                "flip" => {
                    a.flip_rows = true;
                    a.flip_cols = true;
                }
                "flip-rows" => a.flip_rows = true,
                "flip-cols" => a.flip_cols = true,
                "transpose" => a.transpose = true,
                "intensity" => a.gain = Some(DEFAULT_GAIN),
                _ => {
                    let Some(range) = item.strip_prefix("intensity=") else {
                        return Err(bad(
                            item,
                            "is not an augmentation (flip, flip-rows, flip-cols, transpose, \
                             intensity, intensity=LO:HI or none)",
                        ));
                    };
                    let parsed = range
                        .split_once(':')
                        .and_then(|(l, h)| Some((l.parse::<f32>().ok()?, h.parse::<f32>().ok()?)));
                    match parsed {
                        Some((lo, hi))
                            if lo.is_finite() && hi.is_finite() && 0.0 < lo && lo <= hi =>
                        {
                            a.gain = Some([lo, hi])
                        }
                        _ => {
                            return Err(bad(
                                item,
                                "needs a gain range LO:HI with 0 < LO ≤ HI (e.g. intensity=0.5:2)",
                            ))
                        }
                    }
                }
            }
        }
        Ok(a)
    }

    /// The list [`Augmentation::parse`] reads back (`none` when off).
    pub fn describe(&self) -> String {
        let mut v: Vec<String> = Vec::new();
        match (self.flip_rows, self.flip_cols) {
            (true, true) => v.push("flip".into()),
            (true, false) => v.push("flip-rows".into()),
            (false, true) => v.push("flip-cols".into()),
            _ => {}
        }
        if self.transpose {
            v.push("transpose".into());
        }
        if let Some([lo, hi]) = self.gain {
            v.push(format!("intensity={lo}:{hi}"));
        }
        if v.is_empty() {
            "none".into()
        } else {
            v.join(",")
        }
    }

    /// The augmentation of example `example` of training step `step` under `seed` (module
    /// docs); `square`: whether the example's matrix is square (else no transpose). Four
    /// uniform draws are always made, in the order flip rows, flip cols, transpose, gain.
    pub fn draw(&self, seed: u64, step: u64, example: u64, square: bool) -> Draw {
        let s = derive_seed(derive_seed(seed, step, TAG_AUGMENT), example, TAG_AUGMENT);
        let mut rng = ChaCha8Rng::seed_from_u64(s);
        let u: [f64; 4] = std::array::from_fn(|_| rng.random::<f64>());
        Draw {
            flip_rows: self.flip_rows && u[0] < 0.5,
            flip_cols: self.flip_cols && u[1] < 0.5,
            transpose: self.transpose && square && u[2] < 0.5,
            gain: match self.gain {
                Some([lo, hi]) => {
                    let (lo, hi) = (f64::from(lo), f64::from(hi));
                    (lo * (hi / lo).powf(u[3])) as f32
                }
                None => 1.0,
            },
        }
    }

    /// The augmentation a resumed run continues with: the run's own (`run`, from its card)
    /// when `given` is `None` or equal; a different `given` is an error, since the data stream
    /// depends on it.
    pub fn on_resume(run: &Self, given: Option<&Self>) -> Result<Self> {
        match given {
            Some(g) if g != run => Err(DiffusionError::Config(format!(
                "--resume: the run used --augment {}, not {}; the data stream depends on it, so \
                 the run could not continue exactly (leave --augment out or give {})",
                run.describe(),
                g.describe(),
                run.describe()
            ))),
            _ => Ok(*run),
        }
    }
}

/// The reflection about DC of index `i` on a centred axis of length `n` (module docs):
/// `(2⌊n/2⌋ − i) mod n`.
pub fn centred_flip_index(i: usize, n: usize) -> usize {
    let c2 = 2 * (n / 2);
    (c2 + n - i % n) % n
}

/// `a` (`[rows, cols]`, centred) under the draw's flips and transpose (the gain is not applied).
pub fn apply_to_plane<T: Clone>(a: ArrayView2<T>, d: &Draw) -> Array2<T> {
    let (r, c) = a.dim();
    let out = Array2::from_shape_fn((r, c), |(i, j)| {
        let i = if d.flip_rows {
            centred_flip_index(i, r)
        } else {
            i
        };
        let j = if d.flip_cols {
            centred_flip_index(j, c)
        } else {
            j
        };
        a[[i, j]].clone()
    });
    if d.transpose {
        out.reversed_axes().as_standard_layout().into_owned()
    } else {
        out
    }
}

/// The flips and transpose of `d` applied to one example's tensor `[.., H, W]` (any rank ≥ 2).
fn permute(t: &Tensor, d: &Draw, dev: &Device) -> Result<Tensor> {
    let rank = t.rank();
    if rank < 2 {
        return Err(DiffusionError::Shape(format!(
            "augmentation needs [.., rows, cols] tensors, got {:?}",
            t.dims()
        )));
    }
    let mut t = t.clone();
    for (flip, ax) in [(d.flip_rows, rank - 2), (d.flip_cols, rank - 1)] {
        if flip {
            let n = t.dim(ax)?;
            let idx: Vec<u32> = (0..n).map(|i| centred_flip_index(i, n) as u32).collect();
            t = t.index_select(&Tensor::from_vec(idx, n, dev)?, ax)?;
        }
    }
    if d.transpose {
        if t.dim(rank - 2)? != t.dim(rank - 1)? {
            return Err(DiffusionError::Shape(format!(
                "a transpose needs a square matrix, got {:?}",
                t.dims()
            )));
        }
        t = t.transpose(rank - 2, rank - 1)?.contiguous()?;
    }
    Ok(t)
}

/// `t` `[N, .., H, W]` with example `b` permuted by `draws[b]` and, if `data`, multiplied by its
/// gain.
fn per_example(t: &Tensor, draws: &[Draw], data: bool) -> Result<Tensor> {
    let dev = t.device();
    let parts = draws
        .iter()
        .enumerate()
        .map(|(b, d)| {
            let x = permute(&t.narrow(0, b, 1)?, d, dev)?;
            if data && d.gain != 1.0 {
                Ok((x * f64::from(d.gain))?)
            } else {
                Ok(x)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 0)?)
}

/// `batch` with example `b` augmented by `draws[b]`: data, masks (`A` and `Ã`) and coil maps
/// permuted alike, the data (and a noisy batch's `σ_n`) multiplied by the gain. Errors if the
/// number of draws is not the batch size.
pub fn apply_to_batch(batch: &Batch, draws: &[Draw]) -> Result<Batch> {
    let n = batch.data().dim(0)?;
    if draws.len() != n {
        return Err(DiffusionError::Shape(format!(
            "{} augmentation draws for a batch of {n}",
            draws.len()
        )));
    }
    let geo = |t: &Tensor| per_example(t, draws, false);
    let dat = |t: &Tensor| per_example(t, draws, true);
    Ok(match batch {
        Batch::AmbientPixel {
            x_a,
            mask_a,
            mask_tilde,
        } => Batch::AmbientPixel {
            x_a: dat(x_a)?,
            mask_a: geo(mask_a)?,
            mask_tilde: geo(mask_tilde)?,
        },
        Batch::AmbientKspace {
            y,
            mask_a,
            mask_tilde,
        } => Batch::AmbientKspace {
            y: dat(y)?,
            mask_a: geo(mask_a)?,
            mask_tilde: geo(mask_tilde)?,
        },
        Batch::Supervised { x0 } => Batch::Supervised { x0: dat(x0)? },
        Batch::AmbientMulticoil {
            y,
            maps,
            mask_a,
            mask_tilde,
        } => Batch::AmbientMulticoil {
            y: dat(y)?,
            maps: geo(maps)?,
            mask_a: geo(mask_a)?,
            mask_tilde: geo(mask_tilde)?,
        },
        Batch::Noisy { inner, sigma_n } => {
            let gains: Vec<f32> = draws.iter().map(|d| d.gain).collect();
            let g = Tensor::from_vec(gains, n, sigma_n.device())?.to_dtype(sigma_n.dtype())?;
            Batch::Noisy {
                inner: Box::new(apply_to_batch(inner, draws)?),
                sigma_n: sigma_n.mul(&g)?,
            }
        }
    })
}

/// `batch` (training step `step` under `seed`) with every example augmented by its own draw
/// ([`Augmentation::draw`], example = position in the batch); `batch` itself when `aug` is off.
pub fn augment_batch(batch: Batch, aug: &Augmentation, seed: u64, step: u64) -> Result<Batch> {
    if aug.is_off() {
        return Ok(batch);
    }
    let dims = batch.data().dims();
    let (n, h, w) = match dims {
        [n, .., h, w] => (*n, *h, *w),
        _ => {
            return Err(DiffusionError::Shape(format!(
                "a batch of [N, .., rows, cols] data, got {dims:?}"
            )))
        }
    };
    let draws: Vec<Draw> = (0..n as u64)
        .map(|b| aug.draw(seed, step, b, h == w))
        .collect();
    apply_to_batch(&batch, &draws)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use amri_core::fft::{fft2c, ifft2c};
    use amri_core::C32;
    use amri_ops::coils::synthetic_maps;
    use amri_ops::corruption::{hide_further, FurtherStructure};
    use ndarray::{s, Array3, Array4, Axis};
    use proptest::prelude::*;

    /// The image reflected about its centre, by scattering each pixel from centred coordinate
    /// `m = i − ⌊n/2⌋` to `−m` (mod `n`), then transposed: the truth the k-space map must give.
    fn reflected<T: Clone + Default>(x: &Array2<T>, d: &Draw) -> Array2<T> {
        let (r, c) = x.dim();
        let mut out = Array2::<T>::default((r, c));
        let to = |i: usize, n: usize, flip: bool| -> usize {
            if !flip {
                return i;
            }
            let m = i as i64 - (n / 2) as i64;
            (-m + (n / 2) as i64).rem_euclid(n as i64) as usize
        };
        for ((i, j), v) in x.indexed_iter() {
            out[[to(i, r, d.flip_rows), to(j, c, d.flip_cols)]] = v.clone();
        }
        if d.transpose {
            out.reversed_axes().as_standard_layout().into_owned()
        } else {
            out
        }
    }

    fn draws() -> Vec<Draw> {
        (0..8)
            .map(|k| Draw {
                flip_rows: k & 1 != 0,
                flip_cols: k & 2 != 0,
                transpose: k & 4 != 0,
                gain: 1.0,
            })
            .collect()
    }

    fn close(a: &Array2<C32>, b: &Array2<C32>) -> bool {
        let peak = b.iter().fold(0f32, |m, v| m.max(v.norm())).max(1e-6);
        a.iter().zip(b).all(|(x, y)| (x - y).norm() <= 2e-5 * peak)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// ifft2c of the augmented k-space is the augmented image, for odd and even sizes.
        #[test]
        fn kspace_flips_and_transposes_are_image_flips_and_transposes(
            rows in 1usize..14, cols in 1usize..14, k in 0usize..8,
            vals in proptest::collection::vec(-1f32..1.0, 2 * 13 * 13),
        ) {
            let mut d = draws()[k];
            d.transpose &= rows == cols;
            let x = Array2::from_shape_fn((rows, cols), |(i, j)| {
                let p = 2 * (i * cols + j);
                C32::new(vals[p], vals[p + 1])
            });
            let k_aug = apply_to_plane(fft2c(&x).view(), &d);
            let truth = reflected(&x, &d);
            prop_assert!(close(&ifft2c(&k_aug), &truth));
            // the flip is an involution fixing DC
            prop_assert_eq!(centred_flip_index(rows / 2, rows), rows / 2);
            for i in 0..rows {
                prop_assert_eq!(centred_flip_index(centred_flip_index(i, rows), rows), i);
            }
        }
    }

    #[test]
    fn a_plain_reversal_is_not_the_centred_flip_for_even_sizes() {
        // negative control: reversing k-space indices (n−1−i) on an even grid is the image flip
        // times a linear phase, so the property test above can tell the maps apart
        let x = Array2::from_shape_fn((8, 6), |(i, j)| C32::new(i as f32 + 1.0, j as f32 * 0.3));
        let k = fft2c(&x);
        let rev = Array2::from_shape_fn((8, 6), |(i, j)| k[[i, 5 - j]]);
        let d = Draw {
            flip_cols: true,
            ..Draw::IDENTITY
        };
        assert!(!close(&ifft2c(&rev), &reflected(&x, &d)));
        assert!(close(
            &ifft2c(&apply_to_plane(k.view(), &d)),
            &reflected(&x, &d)
        ));
    }

    fn tensor_of(a: &Array4<f32>) -> Tensor {
        let d = a.dim();
        Tensor::from_vec(
            a.iter().copied().collect(),
            (d.0, d.1, d.2, d.3),
            &Device::Cpu,
        )
        .unwrap()
    }

    /// A multi-coil example `(y, maps, A, Ã, acs, x)` measured by the forward model
    /// `y_c = A ⊙ F(S_c x)`: column lines (every 3rd and 6 centre lines), Ã hides half the rest.
    #[allow(clippy::type_complexity)]
    fn example(
        r: usize,
        c: usize,
        coils: usize,
    ) -> (
        Array3<C32>,
        Array3<C32>,
        Array2<f32>,
        Array2<f32>,
        Array2<f32>,
        Array2<C32>,
    ) {
        let x = Array2::from_shape_fn((r, c), |(i, j)| {
            C32::from_polar(1.0 + (i * 7 + j * 3) as f32 % 5.0, 0.1 * (i + 2 * j) as f32)
        });
        let maps = synthetic_maps(coils, r, c, Some(2));
        let acs = Array2::from_shape_fn((r, c), |(_, j)| {
            f32::from(u8::from((c / 2 - 3..c / 2 + 3).contains(&j)))
        });
        let a = Array2::from_shape_fn((r, c), |(i, j)| {
            acs[[i, j]].max(f32::from(u8::from(j % 3 == 0)))
        });
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let at = hide_further(
            &a,
            Some(&acs),
            FurtherStructure::Lines { axis: 1 },
            0.5,
            &mut rng,
        )
        .unwrap();
        let mut y = Array3::zeros((coils, r, c));
        for k in 0..coils {
            let sx = &x * &maps.index_axis(Axis(0), k);
            let yk = fft2c(&sx) * a.mapv(|v| C32::new(v, 0.0));
            y.slice_mut(s![k, .., ..]).assign(&yk);
        }
        (y, maps, a, at, acs, x)
    }

    /// `[1, coils, 2, r, c]` tensor of complex `[coils, r, c]` data.
    fn complex_tensor(z: &Array3<C32>) -> Tensor {
        let (n, r, c) = z.dim();
        let mut v = Vec::with_capacity(2 * z.len());
        for k in 0..n {
            v.extend(z.index_axis(Axis(0), k).iter().map(|v| v.re));
            v.extend(z.index_axis(Axis(0), k).iter().map(|v| v.im));
        }
        Tensor::from_vec(v, (1, n, 2, r, c), &Device::Cpu).unwrap()
    }

    fn complex_of(t: &Tensor) -> Array3<C32> {
        let d = t.dims().to_vec();
        let (n, r, c) = (d[1], d[3], d[4]);
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        Array3::from_shape_fn((n, r, c), |(k, i, j)| {
            C32::new(v[(k * 2 * r + i) * c + j], v[((k * 2 + 1) * r + i) * c + j])
        })
    }

    fn mask_tensor(m: &Array2<f32>) -> Tensor {
        tensor_of(&m.clone().insert_axis(Axis(0)).insert_axis(Axis(0)))
    }

    fn mask_of(t: &Tensor) -> Array2<f32> {
        let d = t.dims().to_vec();
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        Array2::from_shape_vec((d[2], d[3]), v).unwrap()
    }

    #[test]
    fn masks_maps_and_further_corruption_follow_the_data_through_the_forward_model() {
        for (r, c) in [(16, 16), (15, 15), (16, 12)] {
            let coils = 3;
            let (y, maps, a, at, acs, x) = example(r, c, coils);
            let batch = Batch::AmbientMulticoil {
                y: complex_tensor(&y),
                maps: complex_tensor(&maps),
                mask_a: mask_tensor(&a),
                mask_tilde: mask_tensor(&at),
            };
            for mut d in draws() {
                if d.transpose && r != c {
                    continue;
                }
                d.gain = 1.7;
                let Batch::AmbientMulticoil {
                    y: y2,
                    maps: s2,
                    mask_a,
                    mask_tilde,
                } = apply_to_batch(&batch, &[d]).unwrap()
                else {
                    panic!("variant changed");
                };
                let (y2, s2, a2, at2) = (
                    complex_of(&y2),
                    complex_of(&s2),
                    mask_of(&mask_a),
                    mask_of(&mask_tilde),
                );
                // independent truth: measure the reflected object with the reflected maps and mask
                let x_t = reflected(&x, &d);
                let a_t = reflected(&a, &d);
                assert_eq!(a2, a_t, "{d:?}");
                for k in 0..coils {
                    let s_t = reflected(&maps.index_axis(Axis(0), k).to_owned(), &d);
                    assert!(close(&s2.index_axis(Axis(0), k).to_owned(), &s_t));
                    let y_t = fft2c(&(&x_t * &s_t)) * a_t.mapv(|v| C32::new(1.7 * v, 0.0));
                    assert!(
                        close(&y2.index_axis(Axis(0), k).to_owned(), &y_t),
                        "{d:?} {r}×{c}"
                    );
                }
                // Ã ⊆ A, keeps the (mapped) calibration lines, hides whole lines along the
                // augmented axis (rows after a transpose)
                assert!(at2.iter().zip(a2.iter()).all(|(t, a)| t <= a));
                let acs2 = apply_to_plane(acs.view(), &d);
                assert!(acs2
                    .iter()
                    .zip(at2.iter())
                    .all(|(c, t)| *c == 0.0 || *t == 1.0));
                let axis = if d.transpose { 0 } else { 1 };
                assert_eq!(
                    FurtherStructure::of_kspace_mask(&at2),
                    FurtherStructure::Lines { axis }
                );
                assert!(at2.sum() < a2.sum(), "Ã hides something");
            }
        }
    }

    #[test]
    fn hide_further_hides_row_lines_of_a_transposed_mask_and_keeps_its_acs() {
        // what Ã drawn directly on a transposed (row-line) mask would be: rows, never ACS rows
        let (_, _, a, _, acs, _) = example(16, 16, 1);
        let (at, acst) = (a.t().to_owned(), acs.t().to_owned());
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let m = hide_further(
            &at,
            Some(&acst),
            FurtherStructure::Lines { axis: 0 },
            0.6,
            &mut rng,
        )
        .unwrap();
        assert_eq!(
            FurtherStructure::of_kspace_mask(&m),
            FurtherStructure::Lines { axis: 0 }
        );
        assert!(m.iter().zip(at.iter()).all(|(t, a)| t <= a) && m.sum() < at.sum());
        assert!(acst
            .iter()
            .zip(m.iter())
            .all(|(c, t)| *c == 0.0 || *t == 1.0));
    }

    #[test]
    fn draws_are_a_function_of_seed_step_and_example_with_the_stated_distribution() {
        let aug = Augmentation::parse("flip,transpose,intensity").unwrap();
        assert_eq!(aug.draw(3, 10, 2, true), aug.draw(3, 10, 2, true));
        let n = 2000;
        let all: Vec<Draw> = (0..n).map(|t| aug.draw(3, t, t % 4, true)).collect();
        let frac =
            |f: &dyn Fn(&Draw) -> bool| all.iter().filter(|d| f(d)).count() as f64 / n as f64;
        for p in [
            frac(&|d| d.flip_rows),
            frac(&|d| d.flip_cols),
            frac(&|d| d.transpose),
        ] {
            assert!((p - 0.5).abs() < 0.05, "{p}");
        }
        // log-uniform on [0.5, 2]: log2 g uniform on [-1, 1]
        let l: Vec<f64> = all.iter().map(|d| f64::from(d.gain).log2()).collect();
        assert!(l.iter().all(|v| (-1.0..=1.0).contains(v)));
        let mean = l.iter().sum::<f64>() / n as f64;
        let below = l.iter().filter(|v| **v < -0.5).count() as f64 / n as f64;
        assert!(
            mean.abs() < 0.05 && (below - 0.25).abs() < 0.04,
            "{mean} {below}"
        );
        // non-square: never transposed; off: identity
        assert!((0..50).all(|t| !aug.draw(3, t, 0, false).transpose));
        assert_eq!(Augmentation::default().draw(3, 1, 1, true), Draw::IDENTITY);
    }

    #[test]
    fn an_augmented_batch_is_pure_and_off_is_the_batch_itself() {
        let (y, _, a, at, _, _) = example(16, 16, 1);
        let plane = complex_tensor(&y).squeeze(1).unwrap(); // [1, 2, 16, 16]
        let y4 = Tensor::cat(&[&plane, &plane, &plane], 0).unwrap();
        let m = |m: &Array2<f32>| {
            Tensor::cat(&[mask_tensor(m), mask_tensor(m), mask_tensor(m)], 0).unwrap()
        };
        let batch = Batch::AmbientKspace {
            y: y4,
            mask_a: m(&a),
            mask_tilde: m(&at),
        };
        let bits = |b: &Batch| -> Vec<u32> {
            let Batch::AmbientKspace {
                y,
                mask_a,
                mask_tilde,
            } = b
            else {
                panic!()
            };
            [y, mask_a, mask_tilde]
                .iter()
                .flat_map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
                .map(f32::to_bits)
                .collect()
        };
        let aug = Augmentation::parse("flip,transpose,intensity").unwrap();
        let one = augment_batch(batch.clone(), &aug, 5, 7).unwrap();
        assert_eq!(
            bits(&one),
            bits(&augment_batch(batch.clone(), &aug, 5, 7).unwrap())
        );
        let draws: Vec<Draw> = (0..3).map(|b| aug.draw(5, 7, b, true)).collect();
        assert_eq!(bits(&one), bits(&apply_to_batch(&batch, &draws).unwrap()));
        assert_ne!(
            bits(&one),
            bits(&augment_batch(batch.clone(), &aug, 5, 8).unwrap())
        );
        let off = augment_batch(batch.clone(), &Augmentation::default(), 5, 7).unwrap();
        assert_eq!(bits(&off), bits(&batch));
    }

    #[test]
    fn a_noisy_batch_scales_its_noise_level_with_the_gain() {
        let x = Tensor::ones((2, 2, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        let b = Batch::Noisy {
            inner: Box::new(Batch::Supervised { x0: x }),
            sigma_n: Tensor::new(&[0.1f32, 0.2], &Device::Cpu).unwrap(),
        };
        let d = |g| Draw {
            gain: g,
            ..Draw::IDENTITY
        };
        let Batch::Noisy { inner, sigma_n } = apply_to_batch(&b, &[d(2.0), d(0.5)]).unwrap() else {
            panic!()
        };
        assert_eq!(sigma_n.to_vec1::<f32>().unwrap(), vec![0.2, 0.1]);
        let v = inner
            .data()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(v[..32].iter().all(|x| *x == 2.0) && v[32..].iter().all(|x| *x == 0.5));
    }

    #[test]
    fn the_flag_parses_describes_and_is_checked_on_resume() {
        let a = Augmentation::parse("flip, transpose,intensity").unwrap();
        assert!(a.flip_rows && a.flip_cols && a.transpose && a.gain == Some(DEFAULT_GAIN));
        assert_eq!(Augmentation::parse(&a.describe()).unwrap(), a);
        let b = Augmentation::parse("flip-cols,intensity=0.8:1.25").unwrap();
        assert_eq!(b.describe(), "flip-cols,intensity=0.8:1.25");
        assert_eq!(Augmentation::parse(&b.describe()).unwrap(), b);
        assert!(Augmentation::parse("none").unwrap().is_off());
        for bad in ["flop", "intensity=2:1", "intensity=0:1", "intensity=x"] {
            let e = Augmentation::parse(bad).unwrap_err().to_string();
            assert!(e.contains("--augment"), "{e}");
        }
        assert_eq!(Augmentation::on_resume(&a, None).unwrap(), a);
        assert_eq!(Augmentation::on_resume(&a, Some(&a)).unwrap(), a);
        let e = Augmentation::on_resume(&a, Some(&b))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--resume") && e.contains("flip,transpose"),
            "{e}"
        );
        // the record: absent = off (older cards), round trip otherwise
        let v: Augmentation = serde_json::from_str("{}").unwrap();
        assert!(v.is_off());
        let back: Augmentation = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        assert_eq!(back, b);
    }
}
