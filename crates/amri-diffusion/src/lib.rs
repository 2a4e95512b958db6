//! amri-diffusion: the ambient diffusion prior for MRI in candle.
//!
//! Learns a denoiser `D_θ(x, mask; σ)` from corrupted data only (Ambient Diffusion, Daras et al.,
//! NeurIPS 2023): during training a further corruption `Ã = B·A` hides part of what the
//! measurement `A` kept, the network sees `Ã(x0 + σn)` and `Ã`'s mask, and the loss is taken only
//! where `A` measured. Its minimiser is `E[x0 | Ã x_t]`.
//!
//! Entry points:
//! - [`unet`]: the EDM-style U-Net ([`unet::UNetConfig`] with `tiny` / `small` / `clinical` / `base`
//!   presets; `clinical` has a ×4 space-to-depth stem for CPU training at 256×256);
//! - [`precond`]: EDM preconditioning and the [`precond::Denoiser`] (image + mask channels in,
//!   clean image out);
//! - [`loss`]: ambient losses for pixel masks and single-coil Cartesian k-space, and the
//!   supervised clean-data loss;
//! - [`objective`]: loss dispatch of a training batch ([`train::Trainer::loss`]);
//! - [`fourier`]: the centred orthonormal 2-D DFT as differentiable candle matmuls;
//! - [`augment`]: flips, transposes and intensity gains of training examples in the measured
//!   domain (masks and coil maps follow);
//! - [`batch`]: a training mini-batch (data, masks; its variant picks the loss);
//! - [`checkpoint`]: the model card, checkpoint folders (load, `latest`, validation of the
//!   safetensors files) and crash-safe writes; all that inference needs of a trained model;
//! - [`train`]: AdamW with warm-up, global-norm clipping, EMA; writes checkpoints;
//! - [`adapt`]: fine-tuning a base model with low-rank adapters (LoRA, merged on save) or the
//!   last decoder layers only;
//! - [`run`]: a training run's loss log (`loss.csv`: format, parsing, resume);
//! - [`sample`]: inference — [`sample::Prior`], one-step reconstruction, the posterior sampler
//!   (mean and uncertainty) and the unconditional sampler;
//! - [`seed`]: the one seed-derivation scheme (`(seed, counter, tag)` → independent seed);
//! - [`views`]: training views of image volumes (orientations from the affine, in-plane pixel
//!   sizes by Fourier resampling, padding to the network's size multiple);
//! - [`memorize`]: nearest-training-slice similarity of samples (memorisation report).
//!
//! Conventions: tensors are NCHW `f32`; complex images are 2 channels (real, imaginary); masks
//! are 1 channel with values in {0, 1}; k-space is centred (DC at `(H/2, W/2)`) as in
//! `amri_core::fft::fft2c`.
//!
//! ```
//! use amri_diffusion::precond::{denoiser, DenoiserConfig};
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! # fn main() -> amri_diffusion::Result<()> {
//! let dev = Device::Cpu;
//! let vm = VarMap::new();
//! let cfg = DenoiserConfig::complex_preset("tiny", 0.5)?;
//! let d = denoiser(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
//! let x = Tensor::zeros((1, 2, 16, 16), DType::F32, &dev)?; // real/imag
//! let mask = Tensor::ones((1, 1, 16, 16), DType::F32, &dev)?;
//! let clean = d.forward(&x, &mask, &Tensor::new(&[0.5f32], &dev)?)?;
//! assert_eq!(clean.dims(), &[1, 2, 16, 16]);
//! # Ok(())
//! # }
//! ```

pub mod adapt;
pub mod alloc;
pub mod augment;
pub mod batch;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod fourier;
pub mod fused;
pub mod loss;
pub mod maps_cache;
pub mod measured;
pub mod memorize;
pub mod objective;
pub mod optim;
pub mod precond;
pub mod run;
pub mod sample;
pub mod seed;
pub mod sense_input;
pub mod testing;
pub mod train;
pub mod unet;
pub mod views;

pub use error::{DiffusionError, Result};
