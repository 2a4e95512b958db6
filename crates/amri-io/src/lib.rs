//! Readers and writers for amri: every file a scan or a reconstruction lives in.
//!
//! Entry points: [`read`] opens any supported file (or a DICOM series folder) as a [`Scan`];
//! [`write`] writes one, choosing the format from the extension. Every writer goes through
//! [`atomic`], so an interrupted run never leaves a half-written file.
//!
//! | format | read | write | module |
//! | --- | --- | --- | --- |
//! | DICOM (file, series folder, multi-frame) | yes | derived MR series | [`dicom`] |
//! | NIfTI-1/2 `.nii`, `.nii.gz` | yes | yes | [`nifti`] |
//! | BART `.cfl/.hdr` | yes | yes | [`cfl`] |
//! | NumPy `.npy` | yes | yes | [`npy`] |
//! | fastMRI HDF5 `.h5` | yes | no | [`hdf5`] |
//! | ISMRMRD `.h5` (Cartesian) | yes | yes (`.h5` output) | [`ismrmrd`] |
//! | Siemens twix `.dat` | refused with advice (`siemens_to_ismrmrd`) | no | [`format`] |
//! | PNG | no | yes (windowed, 8/16-bit) | [`png`] |

pub mod atomic;
pub mod attrs;
pub mod cfl;
pub mod dicom;
pub mod error;
pub mod format;
pub mod hdf5;
pub mod ismrmrd;
pub mod nifti;
pub mod npy;
pub mod png;

pub use error::{IoError, Result};
pub use format::{
    infer_missing_mask, mask_note, read, read_all, read_noise_covariance, write, Format,
    WriteOptions,
};

use amri_core::{KSpace, Volume, C32};

/// Anything amri reads or writes: an image, a complex image, or measured k-space.
#[derive(Clone, Debug, PartialEq)]
pub enum Scan {
    /// Real-valued image volume `[frame, slice, row, col]` (magnitude images, DICOM, NIfTI).
    Image(Volume<f32>),
    /// Complex image volume `[frame, slice, row, col]` (complex reconstructions, coil images).
    ComplexImage(Volume<C32>),
    /// Measured k-space `[slice, coil, row, col]` with mask, reference and maps when known.
    KSpace(KSpace),
}
