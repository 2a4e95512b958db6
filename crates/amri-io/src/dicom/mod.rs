//! DICOM: read single files, series folders and Enhanced MR multi-frame files into
//! [`Volume`](amri_core::Volume)s with their geometry; write a derived MR image series.
//!
//! Entry points: [`read`] (a `.dcm` file or a folder) and [`write_series`] with
//! [`DicomWriteOptions`].
//!
//! Conventions (the same as nibabel and dicom2nifti):
//! - data axes are `[frame, slice, row, col]`; `row` is the DICOM row index (top to bottom),
//!   `col` the column index; samples are f32 after `RescaleSlope`/`RescaleIntercept` (per frame
//!   from `PixelValueTransformationSequence` in Enhanced files);
//! - the affine maps `(col, row, slice)` to RAS+ mm: in LPS its columns are
//!   `ImageOrientationPatient[0..3] × PixelSpacing[1]` (row direction, the direction of increasing
//!   column index), `ImageOrientationPatient[3..6] × PixelSpacing[0]` (column direction),
//!   `(IPP_last − IPP_first)/(n − 1)` (or the normal times SpacingBetweenSlices/SliceThickness for
//!   a single slice) and `ImagePositionPatient` of the first slice; x and y are then negated;
//! - slices are ordered by position along `row_dir × col_dir`, so slice index increases along
//!   the normal whatever the file names or InstanceNumbers say.
//!
//! Transfer syntaxes read: implicit and explicit VR little endian, explicit VR big endian,
//! deflated explicit VR little endian, RLE lossless, JPEG-LS (lossless and near-lossless), JPEG
//! 2000 (lossless and lossy), JPEG baseline/extended/lossless (through dicom-pixeldata).
//!
//! Robustness: before dicom-rs parses a file, every element header is checked against the bytes
//! that follow it, and the pixel buffer implied by Rows × Columns × NumberOfFrames is checked
//! against the Pixel Data length (native) or a 1000:1 compression bound (encapsulated), so a
//! corrupt or truncated file gives an [`IoError`](crate::IoError) naming the file instead of a
//! huge allocation.
//!
//! ```no_run
//! use std::path::Path;
//! let vols = amri_io::dicom::read(Path::new("sample-scans/dicom/oblique_stack"))?;
//! let v = &vols[0];
//! println!("{:?} voxels of {:?} mm, {}", v.shape4(), v.voxel_size(), v.affine.orientation_code());
//! let opts = amri_io::dicom::DicomWriteOptions { deidentify: true, ..Default::default() };
//! amri_io::dicom::write_series(Path::new("out/derived"), v, &opts)?;
//! # Ok::<(), amri_io::IoError>(())
//! ```

mod guard;
mod read;
mod write;

pub use read::read;
pub use write::{write_series, DicomWriteOptions};
