//! The image volumes a prior is trained on, as `amri train` and `amri memorization` read them.

use std::path::{Path, PathBuf};

use amri_core::{KSpace, Volume};
use amri_io::Scan;
use anyhow::{bail, Context, Result};

/// Reads every image volume named by `inputs` (files, or folders searched recursively for
/// NIfTI/npy files; a folder without those is read as a DICOM series folder), each with the file
/// it came from. Complex images become their magnitude; measured k-space, NaN or ±∞ pixels and
/// finding no volume at all are errors.
pub(crate) fn read_volumes_with_files(inputs: &[PathBuf]) -> Result<Vec<(PathBuf, Volume<f32>)>> {
    let files = expand_inputs(inputs, &[".nii", ".nii.gz", ".npy"])?;
    let mut vols = Vec::new();
    for f in files {
        let scans = amri_io::read_all(&f).with_context(|| format!("reading {}", f.display()))?;
        for s in scans {
            let v = match s {
                Scan::Image(v) => v,
                Scan::ComplexImage(v) => Volume {
                    data: v.data.mapv(|z| z.norm()),
                    affine: v.affine,
                    meta: v.meta,
                },
                Scan::KSpace(_) => bail!(
                    "{} holds measured k-space; training takes image volumes",
                    f.display()
                ),
            };
            let bad = v.data.iter().filter(|x| !x.is_finite()).count();
            if bad > 0 {
                bail!(
                    "{}: {bad} of {} pixel values are NaN or infinite; training needs finite images",
                    f.display(),
                    v.data.len()
                );
            }
            vols.push((f.clone(), v));
        }
    }
    if vols.is_empty() {
        bail!("no training volumes found");
    }
    Ok(vols)
}

/// The files named by `inputs`: each file itself, each folder searched recursively (sorted)
/// for files ending in one of `extensions` (BART `_mask.cfl` siblings left out), or, when it
/// holds none, the folder itself (a DICOM series). A missing input is an error.
fn expand_inputs(inputs: &[PathBuf], extensions: &[&str]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in inputs {
        if !p.exists() {
            bail!("training input {} does not exist", p.display());
        }
        if !p.is_dir() {
            files.push(p.clone());
            continue;
        }
        let mut found = Vec::new();
        crate::batch::walk_files(
            p,
            &|f: &Path| {
                let name = f
                    .file_name()
                    .map(|n| n.to_string_lossy().to_lowercase())
                    .unwrap_or_default();
                extensions.iter().any(|e| name.ends_with(e)) && !name.ends_with("_mask.cfl")
            },
            &mut found,
        )?;
        if found.is_empty() {
            files.push(p.clone()); // a DICOM series folder
        } else {
            files.extend(found);
        }
    }
    Ok(files)
}

/// What the inputs of `amri train` / `amri finetune` hold: image volumes (the simulation route,
/// with `--protocol`) or measured files (the measured route), never both.
pub(crate) enum TrainingInputs {
    /// Image volumes, each with its file.
    Volumes(Vec<(PathBuf, Volume<f32>)>),
    /// Measured data (k-space or corrupted images with masks), each with its file.
    Measured(Vec<(PathBuf, KSpace)>),
}

/// Reads every training input: files, or folders searched recursively for NIfTI/npy image
/// volumes and `.npz`/`.h5`/`.cfl` measured files (a folder with none is read as a DICOM series
/// folder). Errors on a missing input, on finding nothing, and on mixing measured files with
/// image volumes (naming one of each). Image volumes are checked as [`read_volumes_with_files`]
/// checks them; measured files are checked by the training library.
pub(crate) fn read_training_inputs(inputs: &[PathBuf]) -> Result<TrainingInputs> {
    let files = expand_inputs(inputs, &[".nii", ".nii.gz", ".npy", ".npz", ".h5", ".cfl"])?;
    let mut measured = Vec::new();
    let mut images = Vec::new();
    for f in files {
        let scans = amri_io::read_all(&f).with_context(|| format!("reading {}", f.display()))?;
        for s in scans {
            match s {
                Scan::KSpace(k) => measured.push((f.clone(), k)),
                Scan::Image(_) | Scan::ComplexImage(_) => images.push(f.clone()),
            }
        }
    }
    match (measured.first(), images.first()) {
        (Some((m, _)), Some(i)) => bail!(
            "{} holds measured data but {} holds an image volume: a run trains either on \
             measured files (masks from the files) or on image volumes under --protocol \
             (simulation route), not both",
            m.display(),
            i.display()
        ),
        (Some(_), None) => Ok(TrainingInputs::Measured(measured)),
        (None, Some(_)) => Ok(TrainingInputs::Volumes(read_volumes_with_files(inputs)?)),
        (None, None) => bail!("no training inputs found"),
    }
}
