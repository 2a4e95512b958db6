//! Crash-safe output: write to a temporary file in the target folder, then rename over the target.

use std::io::{BufWriter, Write};
use std::path::Path;

use crate::{IoError, Result};

/// Writes a file atomically: `fill` writes into a temporary file created in `path`'s folder,
/// which is flushed, synced and renamed to `path` only if `fill` succeeds. An interrupted or
/// failed write leaves any earlier `path` untouched and no partial file under the final name.
pub fn write_atomic<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> std::io::Result<()>,
{
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".part");
    // Temporary files are private (0600) by default; outputs get the mode an ordinary file
    // would: 0666 minus the process umask.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let tmp = builder.tempfile_in(dir).map_err(|e| IoError::os(path, e))?;
    {
        let mut w = BufWriter::new(tmp.as_file());
        fill(&mut w).map_err(|e| IoError::os(path, e))?;
        w.flush().map_err(|e| IoError::os(path, e))?;
    }
    tmp.as_file().sync_all().map_err(|e| IoError::os(path, e))?;
    tmp.persist(path).map_err(|e| IoError::os(path, e.error))?;
    Ok(())
}

/// Removes the temporary files that an interrupted [`write_atomic`] of `path` left behind (a
/// process killed between creating and renaming its temporary file cannot remove it). Returns
/// how many were removed. Only names of the form `.{file name}.*.part` in `path`'s folder are
/// touched.
pub fn remove_stale_parts(path: &Path) -> usize {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return 0;
    };
    let prefix = format!(".{name}.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(&prefix) && n.ends_with(".part") && std::fs::remove_file(e.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Writes `bytes` to `path` atomically (see [`write_atomic`]).
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |w| w.write_all(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_fill_keeps_old_file_and_leaves_no_part() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.bin");
        write_bytes(&p, b"old").unwrap();
        let r = write_atomic(&p, |w| {
            w.write_all(b"new but broken")?;
            Err(std::io::Error::other("interrupted"))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temporary file left behind");
        write_bytes(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
    }

    #[cfg(unix)]
    #[test]
    fn outputs_get_ordinary_file_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.bin");
        write_bytes(&p, b"data").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        // Readable by group and others unless the umask forbids it; never the private 0600.
        let reference = d.path().join("plain.bin");
        std::fs::write(&reference, b"data").unwrap();
        let plain = std::fs::metadata(&reference).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, plain,
            "atomic output mode {mode:o} differs from a plain file's {plain:o}"
        );
    }

    #[test]
    fn stale_parts_of_a_killed_write_are_removed_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.nii.gz");
        std::fs::write(d.path().join(".x.nii.gz.abc123.part"), b"half").unwrap();
        std::fs::write(d.path().join(".y.nii.gz.abc123.part"), b"other file's").unwrap();
        std::fs::write(&p, b"complete").unwrap();
        assert_eq!(remove_stale_parts(&p), 1);
        assert!(d.path().join(".y.nii.gz.abc123.part").exists());
        assert_eq!(std::fs::read(&p).unwrap(), b"complete");
    }
}
