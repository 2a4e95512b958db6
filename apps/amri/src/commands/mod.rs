//! One module per subcommand: parse → plan → library call.

pub mod convert;
pub mod demo;
pub mod device;
pub mod info;
pub mod memorization;
pub mod protocol;
pub mod recon;
pub mod simulate;
pub mod train;
pub(crate) mod volumes;

/// Logs one line when the mask of measured data read from `path` did not come from the file
/// (inferred from its non-zero samples, or none: every sample measured), as
/// [`amri_io::mask_note`] words it: a warning when a mask was inferred, since the zeros are then
/// treated as unmeasured. Every command that reads measured data calls it.
pub(crate) fn log_mask_note(path: &std::path::Path, k: &amri_core::KSpace) {
    if let Some(note) = amri_io::mask_note(k) {
        if k.mask.is_some() {
            tracing::warn!("{}: {note}", path.display());
        } else {
            tracing::info!("{}: {note}", path.display());
        }
    }
}
