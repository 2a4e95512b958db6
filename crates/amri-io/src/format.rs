//! Format detection and the format-independent entry points [`read`], [`read_all`] and [`write`].
//! The readers return k-space as the file holds it; [`read_all`] then gives k-space without a mask
//! the mask BART's `pics` would infer ([`infer_missing_mask`]), in this one place.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::dicom::DicomWriteOptions;
use crate::png::PngOptions;
use crate::{IoError, Result, Scan};

/// A file format amri reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// DICOM: one file, or a folder holding a series (written as a folder of one file per slice).
    Dicom,
    /// NIfTI-1/2, `.nii` or `.nii.gz`.
    Nifti,
    /// BART `.cfl` + `.hdr` pair.
    Cfl,
    /// NumPy `.npy`.
    Npy,
    /// NumPy `.npz` k-space bundle (`kspace`, `mask`, `reference`, `sensitivities`, `affine`).
    Npz,
    /// fastMRI-style HDF5 (read only).
    Hdf5,
    /// ISMRMRD raw data in HDF5 (an `.h5` with `/dataset/xml` and `/dataset/data`); `.h5`
    /// outputs are written as ISMRMRD.
    Ismrmrd,
    /// Siemens twix raw data (`.dat`, VB or VD/VE): recognised only to explain that amri does not
    /// read it and how to convert it.
    Twix,
    /// PNG (write only: one windowed slice).
    Png,
}

impl Format {
    /// Format of `path`, from its extension; a folder, a `.dcm`/`.ima` file, or an
    /// extension-less file starting with the DICOM preamble is DICOM.
    pub fn detect(path: &Path) -> Result<Format> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if path.is_dir() {
            return Ok(Format::Dicom);
        }
        let f = if name.ends_with(".nii") || name.ends_with(".nii.gz") {
            Format::Nifti
        } else if name.ends_with(".cfl") || name.ends_with(".hdr") {
            Format::Cfl
        } else if name.ends_with(".npy") {
            Format::Npy
        } else if name.ends_with(".npz") {
            Format::Npz
        } else if name.ends_with(".h5") || name.ends_with(".hdf5") {
            if path.is_file() && crate::ismrmrd::is_ismrmrd(path) {
                Format::Ismrmrd
            } else {
                Format::Hdf5
            }
        } else if name.ends_with(".png") {
            Format::Png
        } else if name.ends_with(".dat") && looks_like_twix(path) {
            Format::Twix
        } else if name.ends_with(".dcm") || name.ends_with(".ima") || has_dicom_preamble(path) {
            Format::Dicom
        } else {
            return Err(IoError::UnknownFormat {
                path: path.to_path_buf(),
            });
        };
        Ok(f)
    }

    /// Format an output path asks for: like [`Format::detect`], but a path with no extension that
    /// does not exist yet (or is a folder) is a DICOM series folder.
    /// An `.h5`/`.hdf5` output is ISMRMRD (amri writes no fastMRI HDF5).
    pub fn for_output(path: &Path) -> Result<Format> {
        if path.extension().is_none() {
            return Ok(Format::Dicom);
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if name.ends_with(".h5") || name.ends_with(".hdf5") {
            return Ok(Format::Ismrmrd);
        }
        Format::detect(path)
    }

    /// Short lower-case name, as shown by `amri info`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Dicom => "dicom",
            Format::Nifti => "nifti",
            Format::Cfl => "cfl",
            Format::Npy => "npy",
            Format::Npz => "npz",
            Format::Hdf5 => "hdf5",
            Format::Ismrmrd => "ismrmrd",
            Format::Twix => "twix",
            Format::Png => "png",
        }
    }
}

/// Whether a file starts like Siemens twix raw data: VB (`u32` header length, `u32` count, then
/// the `Config` buffer name) or VD/VE (a `MrParcRaidFileHeader`: `u32` 0, then a measurement count
/// of 1..=64).
fn looks_like_twix(path: &Path) -> bool {
    let mut buf = [0u8; 16];
    if std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_err()
    {
        return false;
    }
    let u = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    let vb = &buf[8..15] == b"Config\0";
    let vd = u(0) == 0 && (1..=64).contains(&u(4));
    vb || vd
}

/// The error for a Siemens twix file: amri does not read it; how to convert it.
fn twix_refused(path: &Path) -> IoError {
    IoError::unsupported(
        path,
        "Siemens twix raw data (.dat) is not read by amri (no twix file made by an independent tool \
         was available to test a reader against); convert it to ISMRMRD with \
         `siemens_to_ismrmrd -f FILE.dat -o FILE.h5` (github.com/ismrmrd/siemens_to_ismrmrd) \
         and give amri the .h5",
    )
}

fn has_dicom_preamble(path: &Path) -> bool {
    let mut buf = [0u8; 132];
    match std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut buf)) {
        Ok(()) => &buf[128..132] == b"DICM",
        Err(_) => false,
    }
}

/// Reads every scan in `path`: one for most files, one per series for a DICOM folder.
pub fn read_all(path: &Path) -> Result<Vec<Scan>> {
    if !path.exists() {
        return Err(IoError::os(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        ));
    }
    let mut scans = match Format::detect(path)? {
        Format::Dicom => crate::dicom::read(path)?
            .into_iter()
            .map(Scan::Image)
            .collect(),
        Format::Nifti => vec![crate::nifti::read(path)?],
        Format::Cfl => vec![crate::cfl::read(path)?],
        Format::Npy | Format::Npz => vec![crate::npy::read(path)?],
        Format::Hdf5 => vec![crate::hdf5::read(path)?],
        Format::Ismrmrd => vec![crate::ismrmrd::read(path)?],
        Format::Twix => return Err(twix_refused(path)),
        Format::Png => {
            return Err(IoError::unsupported(
                path,
                "PNG is an export format; amri does not read it",
            ))
        }
    };
    for s in &mut scans {
        let shape = match s {
            Scan::KSpace(k) => k.data.shape().to_vec(),
            Scan::Image(v) => v.data.shape().to_vec(),
            Scan::ComplexImage(v) => v.data.shape().to_vec(),
        };
        // an empty axis beside a huge one would make every per-slice loop spin for nothing
        if shape.contains(&0) {
            return Err(IoError::malformed(
                path,
                format!("holds no data: its array has an empty axis (shape {shape:?})"),
            ));
        }
        if let Scan::KSpace(k) = s {
            infer_missing_mask(k);
        }
    }
    Ok(scans)
}

/// The `mask_source` attribute's value when the file gave the mask.
pub const MASK_FROM_FILE: &str = "file";
/// The `mask_source` attribute's value when the mask was inferred from the non-zero samples.
pub const MASK_INFERRED: &str = "inferred";
/// The `mask_source` attribute's value when there is no mask: every sample counts as measured.
pub const MASK_NONE: &str = "none";

/// Gives k-space read without a mask the mask BART's `pics` would use, and records where the
/// mask came from in the `mask_source` attribute ([`MASK_FROM_FILE`], [`MASK_INFERRED`],
/// [`MASK_NONE`]); [`read`] and [`read_all`] call it on every k-space they return.
///
/// K-space ([`amri_core::KSpace::domain()`] is k-space) without a mask gets
/// `mask[slice, row, col] = 1` where any coil's sample is non-zero, 0 elsewhere; when every sample is non-zero the data stay fully
/// sampled (`mask = None`). Image-domain and projection data without a mask are left as they
/// are: a zero pixel of an image is a measured value (dark background), not a missing one, so
/// every sample counts as measured.
pub fn infer_missing_mask(k: &mut amri_core::KSpace) {
    use amri_core::MeasuredDomain;
    if k.mask.is_some() {
        k.attributes
            .insert("mask_source".into(), MASK_FROM_FILE.into());
        return;
    }
    if k.domain() != MeasuredDomain::Kspace {
        k.attributes.insert("mask_source".into(), MASK_NONE.into());
        return;
    }
    let [s, _, r, c] = k.shape4();
    let mut mask = ndarray::Array3::<f32>::zeros((s, r, c));
    for (sl, mut m) in mask.outer_iter_mut().enumerate() {
        for coil in k.data.index_axis(ndarray::Axis(0), sl).outer_iter() {
            ndarray::Zip::from(&mut m).and(&coil).for_each(|m, v| {
                if v.re != 0.0 || v.im != 0.0 {
                    *m = 1.0;
                }
            });
        }
    }
    if mask.iter().all(|&v| v == 1.0) {
        k.attributes.insert("mask_source".into(), MASK_NONE.into());
    } else {
        k.mask = Some(mask);
        k.attributes
            .insert("mask_source".into(), MASK_INFERRED.into());
    }
}

/// Reads the one scan in `path`; a DICOM folder holding several series is an error listing them.
pub fn read(path: &Path) -> Result<Scan> {
    let mut all = read_all(path)?;
    match all.len() {
        1 => Ok(all.remove(0)),
        0 => Err(IoError::malformed(path, "holds no image")),
        n => {
            let names: Vec<String> = all
                .iter()
                .map(|s| match s {
                    Scan::Image(v) => v
                        .meta
                        .series
                        .as_ref()
                        .map(|s| format!("{} ({})", s.series_instance_uid, s.series_description))
                        .unwrap_or_default(),
                    _ => String::new(),
                })
                .collect();
            Err(IoError::malformed(
                path,
                format!(
                    "folder holds {n} series, not one: {}; point amri at one series' files",
                    names.join(", ")
                ),
            ))
        }
    }
}

/// One line for the user about a k-space's mask when it did not come from the file (see
/// [`infer_missing_mask`]); `None` when the file gave it (or the data were not read by
/// [`read_all`]).
pub fn mask_note(k: &amri_core::KSpace) -> Option<String> {
    match k.attributes.get("mask_source").map(String::as_str) {
        Some(MASK_INFERRED) => Some(format!(
            "no sampling mask in the file: inferred from the non-zero samples ({:.1} % measured), as BART's pics does",
            100.0 * k.mean_sampled_fraction()
        )),
        Some(MASK_NONE) if k.domain() == amri_core::MeasuredDomain::Kspace => Some(
            "no sampling mask in the file and every sample is non-zero: fully sampled".into(),
        ),
        Some(MASK_NONE) => Some(
            "no sampling mask in the file: every sample counts as measured (not k-space, so zeros are values)"
                .into(),
        ),
        _ => None,
    }
}

/// Reads a coil noise covariance `[coil, coil]` (complex or real) from a `.npy` 2-D array
/// (`[i, j]`, C order) or a BART `.cfl` whose only non-singleton dimensions are two equal ones
/// (`i` the first, as `bart whiten`'s covariance output `[1, 1, 1, C, C]`). Whether it is
/// Hermitian positive definite is checked where it is used.
pub fn read_noise_covariance(path: &Path) -> Result<ndarray::Array2<amri_core::C32>> {
    use amri_core::C32;
    let square = |dims: &[usize]| -> Result<usize> {
        let big: Vec<usize> = dims.iter().copied().filter(|&d| d != 1).collect();
        match big.as_slice() {
            [] => Ok(1),
            [a, b] if a == b => Ok(*a),
            _ => Err(IoError::malformed(
                path,
                format!("dimensions {dims:?}: a noise covariance is a square [coil, coil] matrix"),
            )),
        }
    };
    match Format::detect(path)? {
        Format::Cfl => {
            let (dims, v) = crate::cfl::read_array(path)?;
            let c = square(&dims)?;
            // The two non-singleton dimensions in BART order: the first is fastest.
            Ok(ndarray::Array2::from_shape_fn((c, c), |(i, j)| {
                v[i + c * j]
            }))
        }
        Format::Npy => {
            let a = crate::npy::read_array(path)?;
            let shape = a.shape().to_vec();
            if shape.len() != 2 {
                return Err(IoError::malformed(
                    path,
                    format!(
                        "array of shape {shape:?}: a noise covariance is a 2-D [coil, coil] array"
                    ),
                ));
            }
            let c = square(&shape)?;
            let v = match a.to_c32() {
                Some(v) => v,
                None => a
                    .to_f32()
                    .ok_or_else(|| {
                        IoError::unsupported(
                            path,
                            format!("dtype {}: expected a number type", a.dtype_name()),
                        )
                    })?
                    .mapv(|x| C32::new(x, 0.0)),
            };
            v.into_shape_with_order((c, c))
                .map_err(|e| IoError::malformed(path, format!("shape: {e}")))
        }
        _ => Err(IoError::unsupported(
            path,
            "a noise covariance is read from a .npy or .cfl file",
        )),
    }
}

/// Options for [`write`], per output format.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// DICOM writer options (derived series, de-identification).
    pub dicom: DicomWriteOptions,
    /// PNG windowing and bit depth.
    pub png: PngOptions,
    /// Slice written to PNG (default: the middle slice).
    pub slice: Option<usize>,
    /// PNG: keep the stored row/column order instead of radiological display orientation.
    pub native_order: bool,
}

/// A 2-D slice `[row, col]` flipped into radiological display orientation (anterior up, patient's
/// right on the left) according to `affine`, unless `native` is set.
pub fn display_slice(
    mut img: ndarray::Array2<f32>,
    affine: &amri_core::Affine,
    native: bool,
) -> ndarray::Array2<f32> {
    if native {
        return img;
    }
    let (fr, fc) = affine.display_flips();
    if fr {
        img.invert_axis(ndarray::Axis(0));
    }
    if fc {
        img.invert_axis(ndarray::Axis(1));
    }
    img.as_standard_layout().into_owned()
}

/// Writes `scan` to `path` in the format its extension names (a path with no extension is a
/// DICOM series folder); returns the files written. Every file is written atomically.
pub fn write(path: &Path, scan: &Scan, opts: &WriteOptions) -> Result<Vec<PathBuf>> {
    let one = |r: Result<()>| r.map(|_| vec![path.to_path_buf()]);
    match Format::for_output(path)? {
        Format::Nifti => one(crate::nifti::write(path, scan)),
        Format::Cfl => one(crate::cfl::write(path, scan)),
        Format::Npy => one(crate::npy::write(path, scan)),
        Format::Npz => match scan {
            Scan::KSpace(k) => one(crate::npy::write_kspace_npz(path, k)),
            _ => Err(IoError::Unwritable {
                path: path.to_path_buf(),
                msg: "an .npz bundle holds measured k-space; write images as .nii.gz or .npy"
                    .into(),
            }),
        },
        Format::Hdf5 | Format::Ismrmrd => match scan {
            Scan::KSpace(k) => one(crate::ismrmrd::write(path, k)),
            _ => Err(IoError::Unwritable {
                path: path.to_path_buf(),
                msg: "an .h5 output is ISMRMRD raw data, which holds k-space; write images as .nii.gz, .npy or DICOM".into(),
            }),
        },
        Format::Twix => Err(IoError::Unwritable {
            path: path.to_path_buf(),
            msg: "amri does not write Siemens twix".into(),
        }),
        Format::Dicom => match scan {
            Scan::Image(v) => {
                std::fs::create_dir_all(path).map_err(|e| IoError::os(path, e))?;
                crate::dicom::write_series(path, v, &opts.dicom)
            }
            _ => Err(IoError::Unwritable {
                path: path.to_path_buf(),
                msg: "DICOM output takes a magnitude image; reconstruct k-space first".into(),
            }),
        },
        Format::Png => match scan {
            Scan::Image(v) => {
                let s = opts.slice.unwrap_or(v.slices() / 2);
                if s >= v.slices() {
                    return Err(IoError::Unwritable {
                        path: path.to_path_buf(),
                        msg: format!("slice {s} out of range (volume has {})", v.slices()),
                    });
                }
                let img = display_slice(v.slice(0, s).to_owned(), &v.affine, opts.native_order);
                one(crate::png::write_gray(path, img.view(), &opts.png))
            }
            Scan::ComplexImage(v) => {
                let s = opts.slice.unwrap_or(v.slices() / 2);
                if s >= v.slices() {
                    return Err(IoError::Unwritable {
                        path: path.to_path_buf(),
                        msg: format!("slice {s} out of range (volume has {})", v.slices()),
                    });
                }
                let mag = v.slice(0, s).mapv(|c| c.norm());
                let img = display_slice(mag, &v.affine, opts.native_order);
                one(crate::png::write_gray(path, img.view(), &opts.png))
            }
            Scan::KSpace(_) => Err(IoError::Unwritable {
                path: path.to_path_buf(),
                msg: "PNG output takes an image; reconstruct k-space first".into(),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amri_core::{KSpace, C32};
    use ndarray::{Array3, Array4};
    use proptest::prelude::*;

    proptest! {
        /// Any mask applied to data that are non-zero in at least one coil wherever measured is
        /// recovered exactly; a full mask leaves the data fully sampled.
        #[test]
        fn inference_recovers_the_mask_that_zeroed_the_data(
            bits in proptest::collection::vec(any::<bool>(), 2 * 4 * 5),
            quiet_coil in 0usize..3,
        ) {
            let mask = Array3::from_shape_fn((2, 4, 5), |(s, r, c)| {
                if bits[s * 20 + r * 5 + c] { 1.0f32 } else { 0.0 }
            });
            // One coil is zero everywhere: "any coil" must still see the samples.
            let data = Array4::from_shape_fn((2, 3, 4, 5), |(s, k, r, c)| {
                if k == quiet_coil {
                    C32::new(0.0, 0.0)
                } else {
                    C32::new(1.0 + k as f32, -(r as f32)) * mask[[s, r, c]]
                }
            });
            let mut k = KSpace::new(data);
            infer_missing_mask(&mut k);
            if mask.iter().all(|&v| v == 1.0) {
                prop_assert!(k.mask.is_none());
                prop_assert_eq!(k.attributes["mask_source"].as_str(), MASK_NONE);
            } else {
                prop_assert_eq!(k.mask.as_ref(), Some(&mask));
                prop_assert_eq!(k.attributes["mask_source"].as_str(), MASK_INFERRED);
            }
        }
    }
}
