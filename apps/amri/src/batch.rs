//! Batch planning shared by the commands that process many files: input expansion, output paths
//! mirroring the input tree, deterministic sharding (Slurm array jobs), completeness checks,
//! provenance sidecars and summaries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

/// Extensions of measured-data files a folder walk picks up.
const MEASURED: [&str; 5] = [".npz", ".h5", ".hdf5", ".cfl", ".npy"];

/// Image output format of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputExt {
    /// `.nii.gz`.
    NiiGz,
    /// `.nii`.
    Nii,
    /// `.npy`.
    Npy,
    /// `.cfl` + `.hdr`.
    Cfl,
}

impl OutputExt {
    /// Parses `nii.gz`, `nii`, `npy` or `cfl`.
    pub fn parse(s: &str) -> Result<OutputExt> {
        Ok(match s.trim_start_matches('.') {
            "nii.gz" => OutputExt::NiiGz,
            "nii" => OutputExt::Nii,
            "npy" => OutputExt::Npy,
            "cfl" => OutputExt::Cfl,
            other => bail!("--format {other}: expected one of nii.gz, nii, npy, cfl"),
        })
    }

    fn suffix(self) -> &'static str {
        match self {
            OutputExt::NiiGz => ".nii.gz",
            OutputExt::Nii => ".nii",
            OutputExt::Npy => ".npy",
            OutputExt::Cfl => ".cfl",
        }
    }

    fn of_path(p: &Path) -> Option<OutputExt> {
        let n = p.file_name()?.to_string_lossy().to_ascii_lowercase();
        [
            OutputExt::NiiGz,
            OutputExt::Nii,
            OutputExt::Npy,
            OutputExt::Cfl,
        ]
        .into_iter()
        .find(|e| n.ends_with(e.suffix()))
    }
}

/// One input and where its outputs go.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Job {
    /// Path of the input relative to the root it was found under (sort key, mirrored in output).
    pub rel: PathBuf,
    /// The input file.
    pub input: PathBuf,
    /// The output image.
    pub output: PathBuf,
    /// The JSON provenance sidecar, written last: its presence marks a complete output.
    pub sidecar: PathBuf,
}

fn strip_measured_ext(name: &str) -> &str {
    let lower = name.to_ascii_lowercase();
    for e in MEASURED {
        if lower.ends_with(e) {
            return &name[..name.len() - e.len()];
        }
    }
    name
}

fn is_measured(p: &Path) -> bool {
    let n = p
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    // BART masks written beside k-space (`x_mask.cfl`) are part of their k-space file.
    MEASURED.iter().any(|e| n.ends_with(e)) && !n.ends_with("_mask.cfl")
}

/// Appends the files under `dir` (recursively, sorted) for which `keep` holds to `out`.
pub(crate) fn walk_files(
    dir: &Path,
    keep: &dyn Fn(&Path) -> bool,
    out: &mut Vec<PathBuf>,
) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk_files(&p, keep, out)?;
        } else if keep(&p) {
            out.push(p);
        }
    }
    Ok(())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    walk_files(dir, &is_measured, out)
}

fn sidecar_of(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = [".nii.gz", ".nii", ".npy", ".cfl"]
        .iter()
        .find_map(|e| name.strip_suffix(e))
        .unwrap_or(&name)
        .to_string();
    output.with_file_name(format!("{stem}.json"))
}

/// Expands `inputs` (files, folders walked recursively, glob patterns) into jobs writing under
/// `output`: a single input with an image extension on `output` writes exactly there; otherwise
/// `output` is a folder and each input's path relative to its root is mirrored inside it.
pub fn plan(inputs: &[PathBuf], output: &Path, ext: OutputExt) -> Result<Vec<Job>> {
    let mut found: Vec<(PathBuf, PathBuf)> = Vec::new(); // (rel, input)
    for i in inputs {
        let s = i.to_string_lossy();
        if i.is_dir() {
            let mut files = Vec::new();
            walk(i, &mut files)?;
            for f in files {
                let rel = f
                    .strip_prefix(i)
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|_| f.clone());
                found.push((rel, f));
            }
        } else if i.exists() {
            found.push((
                PathBuf::from(i.file_name().unwrap_or(i.as_os_str())),
                i.clone(),
            ));
        } else if s.contains(['*', '?', '[']) {
            let mut n = 0;
            for p in glob::glob(&s).with_context(|| format!("bad glob pattern {s}"))? {
                let p = p.map_err(|e| anyhow!("{s}: {e}"))?;
                if p.is_file() && is_measured(&p) {
                    found.push((PathBuf::from(p.file_name().unwrap_or(p.as_os_str())), p));
                    n += 1;
                }
            }
            if n == 0 {
                bail!("{s}: the pattern matches no measured-data file");
            }
        } else {
            bail!("{}: no such file or folder", i.display());
        }
    }
    found.sort();
    found.dedup_by(|a, b| a.1 == b.1);
    let single = found.len() == 1 && !inputs[0].is_dir() && OutputExt::of_path(output).is_some();
    let mut jobs = Vec::with_capacity(found.len());
    for (rel, input) in found {
        let out = if single {
            output.to_path_buf()
        } else {
            let name = rel
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let stem = strip_measured_ext(&name).to_string();
            output.join(rel.with_file_name(format!("{stem}{}", ext.suffix())))
        };
        let sidecar = sidecar_of(&out);
        jobs.push(Job {
            rel,
            input,
            output: out,
            sidecar,
        });
    }
    let mut seen = BTreeMap::new();
    for j in &jobs {
        if let Some(prev) = seen.insert(j.output.clone(), j.input.clone()) {
            bail!(
                "{} and {} would both write {}; give their folders instead of the files",
                prev.display(),
                j.input.display(),
                j.output.display()
            );
        }
    }
    Ok(jobs)
}

/// Share `index` of `count` (0 ≤ index < count) of a sorted job list: job `i` belongs to shard
/// `i mod count`, so shards are disjoint, cover every job and are balanced within one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This shard, from 0.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Shard, String> {
        let (k, n) = s
            .split_once('/')
            .ok_or_else(|| format!("expected K/N (e.g. 0/4), got '{s}'"))?;
        let index: usize = k
            .trim()
            .parse()
            .map_err(|_| format!("'{k}' is not a shard index"))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| format!("'{n}' is not a shard count"))?;
        if count == 0 || index >= count {
            return Err(format!("shard {index}/{count}: need 0 ≤ K < N"));
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// From Slurm's array environment: `SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN` of
    /// `SLURM_ARRAY_TASK_COUNT`; `None` outside an array job.
    pub fn from_slurm_env() -> Result<Option<Shard>> {
        let get = |k: &str| std::env::var(k).ok();
        let (Some(id), Some(count)) = (get("SLURM_ARRAY_TASK_ID"), get("SLURM_ARRAY_TASK_COUNT"))
        else {
            return Ok(None);
        };
        let min = get("SLURM_ARRAY_TASK_MIN").unwrap_or_else(|| "0".into());
        let parse = |k: &str, v: &str| -> Result<usize> {
            v.trim()
                .parse()
                .map_err(|_| anyhow!("{k}={v} is not a non-negative integer"))
        };
        let (id, count, min) = (
            parse("SLURM_ARRAY_TASK_ID", &id)?,
            parse("SLURM_ARRAY_TASK_COUNT", &count)?,
            parse("SLURM_ARRAY_TASK_MIN", &min)?,
        );
        let index = id.checked_sub(min).ok_or_else(|| {
            anyhow!("SLURM_ARRAY_TASK_ID {id} is below SLURM_ARRAY_TASK_MIN {min}")
        })?;
        format!("{index}/{count}")
            .parse::<Shard>()
            .map(Some)
            .map_err(|e| anyhow!("from the Slurm environment: {e} (array ids must be contiguous)"))
    }

    /// This shard's jobs, in order.
    pub fn select<T>(&self, jobs: Vec<T>) -> Vec<T> {
        jobs.into_iter()
            .enumerate()
            .filter(|(i, _)| i % self.count == self.index)
            .map(|(_, j)| j)
            .collect()
    }
}

/// Whether an existing output can be kept, as `make` decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// The image and its `ok` sidecar exist, for the same input and the same settings, and the
    /// input has not changed since: keep it.
    Current,
    /// No complete output (no image, no sidecar, or a sidecar of a failed or interrupted run).
    Missing,
    /// A complete output made from another input or other settings, or before the input last
    /// changed: the reason, in words.
    Stale(String),
}

/// Whether `job`'s outputs are complete and current for `settings`: the image and its sidecar
/// (written after the image, both atomically) exist, the sidecar says `ok`, it records the same
/// input path and the same settings (compared as JSON), and the input was not modified after the
/// sidecar was written.
pub fn freshness<S: Serialize>(job: &Job, settings: &S) -> Freshness {
    if !job.output.exists() {
        return Freshness::Missing;
    }
    let Ok(text) = std::fs::read_to_string(&job.sidecar) else {
        return Freshness::Missing;
    };
    let Ok(side) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Freshness::Missing;
    };
    if side["status"] != "ok" {
        return Freshness::Missing;
    }
    if side["input"] != job.input.display().to_string() {
        return Freshness::Stale(format!(
            "it was made from {}",
            side["input"].as_str().unwrap_or("another input")
        ));
    }
    match serde_json::to_value(settings) {
        Ok(now) if now == side["settings"] => {}
        _ => return Freshness::Stale("it was made with other settings".into()),
    }
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (modified(&job.input), modified(&job.sidecar)) {
        (Some(input), Some(side)) if input <= side => Freshness::Current,
        _ => Freshness::Stale("the input changed after it was made".into()),
    }
}

/// Writes the provenance sidecar of a finished job (atomically).
pub fn write_sidecar<S: Serialize, R: Serialize>(
    job: &Job,
    settings: &S,
    report: &R,
) -> Result<()> {
    let v = serde_json::json!({
        "amri_version": env!("CARGO_PKG_VERSION"),
        "input": job.input.display().to_string(),
        "output": job.output.display().to_string(),
        "settings": settings,
        "status": "ok",
        "report": report,
    });
    let text = serde_json::to_string_pretty(&v)?;
    amri_io::atomic::write_bytes(&job.sidecar, text.as_bytes())?;
    Ok(())
}

/// Writes a per-file summary as JSON (array of records) or CSV with columns `cols`, by extension.
pub fn write_summary<R: Serialize>(path: &Path, rows: &[R], cols: &[&str]) -> Result<()> {
    let values: Vec<serde_json::Value> = rows
        .iter()
        .map(serde_json::to_value)
        .collect::<std::result::Result<_, _>>()?;
    let name = path.to_string_lossy().to_ascii_lowercase();
    let text = if name.ends_with(".csv") {
        let mut s = cols.join(",") + "\n";
        for v in &values {
            let cells: Vec<String> = cols
                .iter()
                .map(|c| match &v[*c] {
                    serde_json::Value::Null => String::new(),
                    serde_json::Value::String(t) => csv_cell(t),
                    other => other.to_string(),
                })
                .collect();
            s += &(cells.join(",") + "\n");
        }
        s
    } else if name.ends_with(".json") {
        serde_json::to_string_pretty(&values)?
    } else {
        bail!("{}: summary must end in .json or .csv", path.display());
    };
    amri_io::atomic::write_bytes(path, text.as_bytes())?;
    Ok(())
}

fn csv_cell(t: &str) -> String {
    if t.contains([',', '"', '\n']) {
        format!("\"{}\"", t.replace('"', "\"\""))
    } else {
        t.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_disjoint_and_cover_everything() {
        let all: Vec<usize> = (0..23).collect();
        let mut seen = Vec::new();
        for k in 0..4 {
            let s: Shard = format!("{k}/4").parse().unwrap();
            let part = s.select(all.clone());
            assert!(part.len() == 5 || part.len() == 6);
            seen.extend(part);
        }
        seen.sort();
        assert_eq!(seen, all);
        assert!("4/4".parse::<Shard>().is_err());
        assert!("1/0".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
    }

    #[test]
    fn plan_mirrors_folders_and_names_sidecars() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("in/sub");
        std::fs::create_dir_all(&a).unwrap();
        for n in ["x.npz", "y.h5", "k.cfl", "k_mask.cfl", "notes.txt"] {
            std::fs::write(a.join(n), b"").unwrap();
        }
        let out = d.path().join("out");
        let jobs = plan(&[d.path().join("in")], &out, OutputExt::NiiGz).unwrap();
        let outs: Vec<_> = jobs
            .iter()
            .map(|j| j.output.strip_prefix(&out).unwrap().to_path_buf())
            .collect();
        assert_eq!(
            outs,
            vec![
                PathBuf::from("sub/k.nii.gz"),
                PathBuf::from("sub/x.nii.gz"),
                PathBuf::from("sub/y.nii.gz")
            ]
        );
        assert!(jobs[0].sidecar.ends_with("sub/k.json"));
        // One file to an explicit image path writes exactly there.
        let one = plan(
            &[a.join("x.npz")],
            &d.path().join("r.nii.gz"),
            OutputExt::NiiGz,
        )
        .unwrap();
        assert_eq!(one[0].output, d.path().join("r.nii.gz"));
        assert_eq!(one[0].sidecar, d.path().join("r.json"));
        assert!(plan(&[d.path().join("nope")], &out, OutputExt::NiiGz).is_err());
    }
}
