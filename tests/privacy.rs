//! Patient privacy end to end: the shipped DICOM samples carry a patient name, ID and birth date
//! (`sample-scans/dicom/oblique_stack`: `CompressedSamples^MR1`, `4MR1`, `19510412`). Every path
//! that reads them — info, convert to every format, simulate, recon, train — is run with `-vv`,
//! and every file written (decompressed where it is compressed: `.gz`, `.npz` members, PNG text
//! chunks) and every log line is searched for those values. Only a DICOM series written without
//! `--deidentify` may hold them (it files the derived series under the source patient, by design).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::{Path, PathBuf};

use assert_cmd::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn stack() -> PathBuf {
    root().join("sample-scans/dicom/oblique_stack")
}

/// The identifying values of the samples, and spellings of the birth date amri could produce.
const SECRETS: &[&str] = &[
    "CompressedSamples",
    "4MR1",
    "19510412",
    "1951-04-12",
    "12.04.1951",
];

fn find(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The byte streams of `path` worth searching: the file itself and, for compressed containers,
/// what they decompress to.
fn streams(path: &Path) -> Vec<Vec<u8>> {
    let raw = std::fs::read(path).unwrap();
    let name = path.to_string_lossy().to_lowercase();
    let mut out = Vec::new();
    if name.ends_with(".gz") {
        let mut d = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut d)
            .unwrap_or_else(|e| panic!("{}: not gzip: {e}", path.display()));
        out.push(d);
    } else if name.ends_with(".npz") {
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(&raw)).unwrap();
        for i in 0..z.len() {
            let mut d = Vec::new();
            z.by_index(i).unwrap().read_to_end(&mut d).unwrap();
            out.push(d);
        }
    } else if name.ends_with(".png") {
        out.extend(png_text(&raw));
    }
    out.push(raw);
    out
}

/// The text chunks of a PNG (tEXt as stored; zTXt and compressed iTXt inflated).
fn png_text(b: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 8;
    while i + 8 <= b.len() {
        let len = u32::from_be_bytes(b[i..i + 4].try_into().unwrap()) as usize;
        let kind = &b[i + 4..i + 8];
        let data = &b[i + 8..(i + 8 + len).min(b.len())];
        if kind == b"tEXt" || kind == b"zTXt" || kind == b"iTXt" {
            out.push(data.to_vec());
            // Compressed text: inflate whatever zlib stream follows the keyword.
            if let Some(z) = data
                .windows(2)
                .position(|w| w == [0x78, 0x9c] || w == [0x78, 0xda])
            {
                let mut d = Vec::new();
                if flate2::read::ZlibDecoder::new(&data[z..])
                    .read_to_end(&mut d)
                    .is_ok()
                {
                    out.push(d);
                }
            }
        }
        i += 12 + len;
    }
    out
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Secrets found in the files under `dir`, as "file: secret".
fn leaks_in(dir: &Path) -> Vec<String> {
    let mut hits = Vec::new();
    for f in files(dir) {
        for s in streams(&f) {
            for secret in SECRETS {
                if find(&s, secret) {
                    hits.push(format!("{}: {secret}", f.display()));
                }
            }
        }
    }
    hits.sort();
    hits.dedup();
    hits
}

/// Runs `amri -vv <args>`, requires success, and returns standard output and error together.
fn run(args: &[&str]) -> String {
    let o = Command::cargo_bin("amri")
        .unwrap()
        .arg("-vv")
        .args(args)
        .output()
        .unwrap();
    let mut log = String::from_utf8_lossy(&o.stdout).into_owned();
    log.push_str(&String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "amri {args:?} failed: {log}");
    log
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn the_samples_hold_the_identifying_values() {
    // So that the searches below can fail: the input carries every value in the raw bytes.
    let f = files(&stack())
        .into_iter()
        .find(|f| f.file_name().unwrap().to_string_lossy().starts_with("IM"))
        .unwrap();
    let b = std::fs::read(&f).unwrap();
    for s in &SECRETS[..3] {
        assert!(find(&b, s), "{}: lacks {s}", f.display());
    }
}

#[test]
fn outputs_and_logs_never_hold_patient_identity() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let src = stack();
    let mut logs = String::new();
    logs += &run(&["info", p(&src)]);
    logs += &run(&["info", "--json", p(&src)]);
    for name in [
        "stack.nii.gz",
        "stack.nii",
        "stack.npy",
        "stack.cfl",
        "stack.png",
    ] {
        logs += &run(&["convert", p(&src), p(&out.join(name))]);
    }
    logs += &run(&[
        "convert",
        "--bits",
        "16",
        "--slice",
        "1",
        p(&src),
        p(&out.join("stack16.png")),
    ]);
    logs += &run(&[
        "convert",
        "--deidentify",
        p(&src),
        p(&out.join("stack_deid")),
    ]);
    let sim = out.join("sim.npz");
    logs += &run(&[
        "simulate",
        "--protocol",
        "singlecoil-r4-cartesian",
        p(&src),
        p(&sim),
    ]);
    logs += &run(&[
        "recon",
        "--method",
        "zero-filled",
        "--no-progress",
        "--summary",
        p(&out.join("summary.csv")),
        p(&sim),
        p(&out.join("recon/sim.nii.gz")),
    ]);
    logs += &run(&[
        "recon",
        "--method",
        "cg-sense",
        "--iters",
        "3",
        "--no-progress",
        "--json",
        "--summary",
        p(&out.join("summary.json")),
        p(&sim),
        p(&out.join("recon/sim_cg.npy")),
    ]);
    logs += &run(&[
        "train",
        "--protocol",
        "pixel-90",
        "--steps",
        "1",
        "--batch",
        "1",
        "--checkpoint-every",
        "1",
        "--no-progress",
        "--out",
        p(&out.join("run")),
        p(&src),
    ]);

    // The runs wrote what they were asked to (so the search below covers them).
    let written = files(&out);
    for want in [
        "stack.nii.gz",
        "stack.png",
        "stack.hdr",
        "sim.npz",
        "summary.csv",
        "summary.json",
        "loss.csv",
    ] {
        assert!(
            written.iter().any(|f| f.ends_with(want)),
            "{want} not written: {written:?}"
        );
    }
    assert!(written
        .iter()
        .any(|f| f.extension().is_some_and(|e| e == "dcm")));
    assert!(written
        .iter()
        .any(|f| f.extension().is_some_and(|e| e == "json") && f.starts_with(out.join("recon"))));
    // -vv turns on every log level amri has (info and debug lines, per-file recon reports).
    assert!(
        logs.contains("INFO"),
        "-vv produced no log lines to search:\n{logs}"
    );

    let leaks = leaks_in(&out);
    assert!(leaks.is_empty(), "patient identity written: {leaks:#?}");
    for secret in SECRETS {
        assert!(!logs.contains(secret), "log holds {secret}:\n{logs}");
    }
}

#[test]
fn dicom_output_keeps_identity_only_without_deidentify() {
    let d = tempfile::tempdir().unwrap();
    let plain = d.path().join("plain");
    let anon = d.path().join("anon");
    let mut logs = run(&["convert", p(&stack()), p(&plain)]);
    logs += &run(&["convert", "--deidentify", p(&stack()), p(&anon)]);
    // A derived series filed under the source patient keeps the identity (documented)...
    let kept = leaks_in(&plain);
    for secret in &SECRETS[..3] {
        assert!(
            kept.iter().any(|h| h.ends_with(secret)),
            "plain DICOM lacks {secret}: {kept:?}"
        );
    }
    // ... and --deidentify removes all of it; neither run logs it.
    let leaks = leaks_in(&anon);
    assert!(leaks.is_empty(), "--deidentify left: {leaks:#?}");
    for secret in SECRETS {
        assert!(!logs.contains(secret), "log holds {secret}:\n{logs}");
    }
}
