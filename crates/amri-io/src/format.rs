//! Format detection and the format-independent entry points [`read`], [`read_all`] and [`write`].

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
    Ok(match Format::detect(path)? {
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
    })
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
