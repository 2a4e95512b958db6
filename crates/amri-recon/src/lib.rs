//! Classical MRI reconstruction for amri: proximal operators, wavelets and total variation,
//! iterative algorithms, and the reconstruction methods built on them.
//!
//! Layers (SigPy's Alg/Prox/App, BART's `italgos`), each using only those below:
//! - [`thresh`]: soft/hard thresholding and projections on complex vectors;
//! - [`wavelet`]: orthonormal multi-level 2-D Daubechies transforms for any image size;
//! - [`tv`]: the discrete gradient, total variation (isotropic or anisotropic, Neumann or
//!   BART's periodic boundary) and its proximal map;
//! - [`prox`]: proximal operators as objects ([`prox::L1Wavelet`] with cycle spinning, …);
//! - [`alg`]: [`alg::cg()`], [`alg::power()`], [`alg::fista()`], [`alg::pdhg()`],
//!   [`alg::admm()`] on plain closures over flat `&[C32]` buffers, with a per-iteration
//!   callback that can cancel;
//! - [`app`]: zero-filled, CG-SENSE, l1-wavelet and TV reconstructions of an
//!   [`amri_core::KSpace`], slices in parallel.
//!
//! ```
//! use amri_core::{fft::Fft2, KSpace, C32};
//! use amri_recon::app::{cg_sense, CgSenseConfig};
//! use ndarray::{Array3, Array4};
//! // A fully sampled single-coil scan of a small image: CG-SENSE returns the image.
//! let (r, c) = (8, 6);
//! let img: Vec<C32> = (0..r * c).map(|i| C32::new(i as f32, 1.0)).collect();
//! let mut k = img.clone();
//! Fft2::new(r, c).forward(&mut k);
//! let ks = KSpace::new(Array4::from_shape_vec((1, 1, r, c), k).unwrap());
//! let out = cg_sense(&ks, None, &CgSenseConfig::default()).unwrap();
//! assert!((out.images[[0, 3, 2]] - img[3 * c + 2]).norm() < 1e-3);
//! ```

pub mod alg;
pub mod app;
pub mod error;
pub mod prox;
pub mod thresh;
pub mod tv;
pub mod wavelet;

pub use error::{ReconError, Result};
