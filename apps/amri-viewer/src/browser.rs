//! A small in-window file browser (no system dialog library, so it works the same on every
//! desktop and in tests): a folder listing, a path field, and buttons to open a file or a whole
//! DICOM series folder.

use std::path::{Path, PathBuf};

/// One listed entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// File or folder name.
    pub name: String,
    /// True for folders.
    pub is_dir: bool,
}

/// State of the open dialog.
#[derive(Clone, Debug, Default)]
pub struct Browser {
    /// Whether the dialog is shown.
    pub open: bool,
    /// Folder being listed.
    pub dir: PathBuf,
    /// Path typed or selected (what "Open" opens).
    pub path_text: String,
    /// Folders first, then files, each sorted by name; hidden entries left out.
    pub entries: Vec<Entry>,
    /// Why the folder could not be listed, if it could not.
    pub error: Option<String>,
}

/// Extensions the viewer reads (DICOM files may have none).
pub const EXTENSIONS: &[&str] = &["nii", "gz", "dcm", "ima", "cfl", "hdr", "npy", "npz", "h5"];

impl Browser {
    /// Shows the dialog listing `dir`.
    pub fn show(&mut self, dir: &Path) {
        self.open = true;
        self.enter(dir);
    }

    /// Lists `dir`.
    pub fn enter(&mut self, dir: &Path) {
        self.dir = dir.to_path_buf();
        self.path_text = dir.display().to_string();
        self.entries.clear();
        self.error = None;
        match std::fs::read_dir(dir) {
            Ok(rd) => {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') {
                        continue;
                    }
                    let is_dir = e.path().is_dir();
                    self.entries.push(Entry { name, is_dir });
                }
                self.entries
                    .sort_by(|a, b| b.is_dir.cmp(&a.is_dir).then_with(|| a.name.cmp(&b.name)));
            }
            Err(e) => self.error = Some(format!("{}: {e}", dir.display())),
        }
    }

    /// Goes to the parent folder.
    pub fn up(&mut self) {
        if let Some(p) = self.dir.parent().map(Path::to_path_buf) {
            self.enter(&p);
        }
    }

    /// Selects entry `name`: a folder is entered, a file becomes the path to open.
    pub fn select(&mut self, name: &str) {
        let p = self.dir.join(name);
        if p.is_dir() {
            self.enter(&p);
        } else {
            self.path_text = p.display().to_string();
        }
    }

    /// The path to open, from the path field.
    pub fn chosen(&self) -> PathBuf {
        PathBuf::from(self.path_text.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_folders_first_and_selects() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("series")).unwrap();
        std::fs::write(d.path().join("b.nii"), b"x").unwrap();
        std::fs::write(d.path().join("a.npz"), b"x").unwrap();
        std::fs::write(d.path().join(".hidden"), b"x").unwrap();
        let mut b = Browser::default();
        b.show(d.path());
        let names: Vec<&str> = b.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["series", "a.npz", "b.nii"]);
        b.select("b.nii");
        assert_eq!(b.chosen(), d.path().join("b.nii"));
        b.select("series");
        assert_eq!(b.dir, d.path().join("series"));
        assert!(b.entries.is_empty());
        b.up();
        assert_eq!(b.dir, d.path());
        b.enter(&d.path().join("missing"));
        assert!(b.error.as_deref().unwrap_or("").contains("missing"));
    }
}
