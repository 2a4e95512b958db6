//! The image volumes a prior is trained on, as `amri train` and `amri memorization` read them.

use std::path::{Path, PathBuf};

use amri_core::Volume;
use amri_io::Scan;
use anyhow::{bail, Context, Result};

/// Reads every image volume named by `inputs` (files, or folders searched recursively for
/// NIfTI/npy files; a folder without those is read as a DICOM series folder), each with the file
/// it came from. Complex images become their magnitude; measured k-space, NaN or ±∞ pixels and
/// finding no volume at all are errors.
pub(crate) fn read_volumes_with_files(inputs: &[PathBuf]) -> Result<Vec<(PathBuf, Volume<f32>)>> {
    let mut files = Vec::new();
    for p in inputs {
        if !p.exists() {
            bail!("training input {} does not exist", p.display());
        }
        if p.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found)?;
            if found.is_empty() {
                files.push(p.clone()); // a DICOM series folder
            } else {
                files.extend(found);
            }
        } else {
            files.push(p.clone());
        }
    }
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

/// [`read_volumes_with_files`] without the file names.
pub(crate) fn read_volumes(inputs: &[PathBuf]) -> Result<Vec<Volume<f32>>> {
    Ok(read_volumes_with_files(inputs)?
        .into_iter()
        .map(|(_, v)| v)
        .collect())
}

/// Appends the `.nii`, `.nii.gz` and `.npy` files under `dir` (recursively, sorted) to `out`.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    crate::batch::walk_files(
        dir,
        &|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().to_lowercase())
                .unwrap_or_default();
            name.ends_with(".nii") || name.ends_with(".nii.gz") || name.ends_with(".npy")
        },
        out,
    )
}
