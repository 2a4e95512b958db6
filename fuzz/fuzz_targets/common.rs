// Shared by the file-reader targets: the readers take paths, so each input is written to a
// per-process file on tmpfs (or /tmp) and read back through the public API.
use std::path::PathBuf;

pub fn scratch(name: &str) -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
    let dir = PathBuf::from(base).join(format!("amri-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir.join(name)
}

/// Writes `data` to a scratch file named `name` and reads it with amri-io; errors are fine,
/// panics, hangs and huge allocations are the bugs libFuzzer looks for.
pub fn read_as(name: &str, data: &[u8]) {
    let p = scratch(name);
    if std::fs::write(&p, data).is_ok() {
        let _ = amri_io::read_all(&p);
    }
}
