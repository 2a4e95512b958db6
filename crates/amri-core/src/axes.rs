//! The meaning of each array axis, fixed once for every crate.

/// Image volume axis holding frames (time points, echoes); axis 0 of [`crate::Volume::data`].
pub const VOL_FRAME: usize = 0;
/// Image volume axis holding slices (NIfTI k, the through-plane axis).
pub const VOL_SLICE: usize = 1;
/// Image volume axis holding rows (NIfTI j, DICOM row index).
pub const VOL_ROW: usize = 2;
/// Image volume axis holding columns (NIfTI i, DICOM column index; fastest in memory).
pub const VOL_COL: usize = 3;

/// K-space axis holding slices; axis 0 of [`crate::KSpace::data`].
pub const KS_SLICE: usize = 0;
/// K-space axis holding receive coils.
pub const KS_COIL: usize = 1;
/// K-space axis holding rows (frequency-encode by default).
pub const KS_ROW: usize = 2;
/// K-space axis holding columns (phase-encode, the undersampled axis by default, as in fastMRI).
pub const KS_COL: usize = 3;
