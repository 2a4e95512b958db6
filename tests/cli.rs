//! End-to-end tests of the `amri` binary on the shipped sample scans.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sample(rel: &str) -> PathBuf {
    root().join("sample-scans").join(rel)
}

fn amri() -> Command {
    Command::cargo_bin("amri").unwrap()
}

/// Reads `p`, which must hold a real-valued image.
fn read_image(p: &Path) -> amri_core::Volume<f32> {
    match amri_io::read(p).unwrap() {
        amri_io::Scan::Image(v) => v,
        other => panic!("{}: expected an image, got {other:?}", p.display()),
    }
}

/// Reads `p`, which must hold measured data.
fn read_kspace(p: &Path) -> amri_core::KSpace {
    match amri_io::read(p).unwrap() {
        amri_io::Scan::KSpace(k) => k,
        other => panic!("{}: expected measured data, got {other:?}", p.display()),
    }
}

#[test]
fn info_prints_dims_geometry_and_no_patient_identity() {
    let out = amri()
        .arg("info")
        .arg(sample("colin27/t1_axial_val.nii.gz"))
        .arg(sample("dicom/MR_small.dcm"))
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let s = String::from_utf8(out).unwrap();
    assert!(s.contains("slices 24, rows 256, cols 256"), "{s}");
    assert!(s.contains("0.7500 x 0.7500 x 0.7500 mm"), "{s}");
    assert!(s.contains("orientation   RAS"), "{s}");
    assert!(s.contains("rows 64, cols 64"), "{s}");
    // MR_small's PatientName is CompressedSamples^MR1; it must never be printed.
    assert!(!s.contains("CompressedSamples"), "{s}");
}

#[test]
fn info_json_is_valid_and_matches_the_file() {
    let v = success_json(
        amri()
            .args(["info", "--json"])
            .arg(sample("dicom/oblique_stack")),
    );
    assert_eq!(v["kind"], "image");
    assert_eq!(v["shape"], serde_json::json!([1, 5, 64, 64]));
    assert_eq!(v["series"]["instances"], 5);
    let vs = v["voxel_size_mm"].as_array().unwrap();
    assert!((vs[2].as_f64().unwrap() - 2.0).abs() < 1e-3);
}

#[test]
fn convert_dicom_series_to_nifti_keeps_data_and_geometry() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("stack.nii.gz");
    amri()
        .arg("convert")
        .arg(sample("dicom/oblique_stack"))
        .arg(&out)
        .assert()
        .success();
    let (a, b) = (read_image(&sample("dicom/oblique_stack")), read_image(&out));
    assert_eq!(a.data, b.data);
    assert!(a.affine.max_abs_diff(&b.affine) < 1e-4);
}

#[test]
fn convert_nifti_to_deidentified_dicom_and_back() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("val_dicom");
    amri()
        .arg("convert")
        .arg(sample("colin27/t1_axial_val.nii.gz"))
        .arg(&dir)
        .arg("--deidentify")
        .assert()
        .success()
        .stdout(predicate::str::contains("24 files"));
    let back = d.path().join("back.nii.gz");
    amri()
        .arg("convert")
        .arg(&dir)
        .arg(&back)
        .assert()
        .success();
    let (a, b) = (
        read_image(&sample("colin27/t1_axial_val.nii.gz")),
        read_image(&back),
    );
    // uint8 values survive the int16 DICOM round trip exactly; geometry to 1e-4 mm.
    assert_eq!(a.data, b.data);
    assert!(
        a.affine.max_abs_diff(&b.affine) < 1e-4,
        "{:?} vs {:?}",
        a.affine,
        b.affine
    );
}

#[test]
fn convert_to_png_npy_and_cfl() {
    let d = tempfile::tempdir().unwrap();
    for name in ["v.png", "v.npy", "v.cfl"] {
        amri()
            .arg("convert")
            .arg(sample("colin27/t1_axial_val.nii.gz"))
            .arg(d.path().join(name))
            .assert()
            .success();
    }
    let png = std::fs::read(d.path().join("v.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    assert_eq!(
        read_image(&d.path().join("v.npy")).shape4(),
        [1, 24, 256, 256]
    );
    assert!(d.path().join("v.hdr").exists());
}

#[test]
fn missing_and_broken_inputs_fail_with_the_file_named() {
    amri()
        .args(["info", "no/such/file.nii.gz"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no/such/file.nii.gz"));
    amri()
        .arg("info")
        .arg(sample("dicom/MR_truncated.dcm"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("MR_truncated.dcm"))
        .stderr(predicate::str::contains("panicked").not());
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("bad.nii.gz");
    let good = std::fs::read(sample("colin27/t1_axial_val.nii.gz")).unwrap();
    std::fs::write(&bad, &good[..good.len() / 3]).unwrap();
    amri()
        .arg("convert")
        .arg(&bad)
        .arg(d.path().join("x.nii.gz"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("bad.nii.gz"));
    assert!(
        !d.path().join("x.nii.gz").exists(),
        "no output from a failed read"
    );
}

#[test]
fn convert_refuses_to_overwrite_its_input_and_mixed_series() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("a.nii.gz");
    std::fs::copy(sample("colin27/t1_axial_val.nii.gz"), &f).unwrap();
    let before = std::fs::read(&f).unwrap();
    amri()
        .arg("convert")
        .arg(&f)
        .arg(&f)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("is the input"));
    assert_eq!(std::fs::read(&f).unwrap(), before);
    amri()
        .arg("convert")
        .arg(sample("dicom/MR2"))
        .arg(d.path().join("mr2.nii.gz"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("series"));
}

#[test]
fn protocol_list_show_check() {
    amri()
        .args(["protocol", "list"])
        .assert()
        .success()
        .stdout(predicate::str::contains("brain-r4-cartesian"))
        .stdout(predicate::str::contains("pixel-90"));
    let shown = amri()
        .args(["protocol", "show", "brain-poisson-r6"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let d = tempfile::tempdir().unwrap();
    let good = d.path().join("mine.toml");
    std::fs::write(&good, &shown).unwrap();
    let bad = d.path().join("bad.toml");
    let text = String::from_utf8(shown)
        .unwrap()
        .replace("acceleration = 6.0", "accel = 6.0");
    std::fs::write(&bad, text).unwrap();
    amri()
        .args(["protocol", "check"])
        .arg(&good)
        .assert()
        .success();
    amri()
        .args(["protocol", "check"])
        .arg(&good)
        .arg(&bad)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("bad.toml"))
        .stderr(predicate::str::contains("accel"));
}

#[test]
fn simulate_is_reproducible_and_matches_the_protocol() {
    let d = tempfile::tempdir().unwrap();
    let input = sample("dicom/oblique_stack");
    let run = |name: &str, extra: &[&str]| {
        let out = d.path().join(name);
        amri()
            .args([
                "simulate",
                "--protocol",
                "brain-r4-cartesian",
                "--coils",
                "4",
            ])
            .args(extra)
            .arg(&input)
            .arg(&out)
            .assert()
            .success();
        std::fs::read(out).unwrap()
    };
    let a = run("a.npz", &[]);
    let b = run("b.npz", &[]);
    assert_eq!(a, b, "same protocol and seed must give the same bytes");
    let c = run("c.npz", &["--seed", "3"]);
    assert_ne!(a, c);
    let k = read_kspace(&d.path().join("a.npz"));
    assert_eq!(k.shape4(), [5, 4, 64, 64]);
    // fastMRI RandomMaskFunc at R=4 keeps about a quarter of the columns, all centre lines.
    let f = k.sampled_fraction();
    assert!((0.15..0.4).contains(&f), "{f}");
    let mask = k.mask.as_ref().unwrap();
    assert_eq!(mask[[0, 10, 32]], 1.0, "centre column is measured");
    assert_eq!(k.attributes["protocol"], "brain-r4-cartesian");
    // The summary line reports the fraction over all slices (each slice draws its own mask).
    let o = amri()
        .args(["simulate", "--protocol", "brain-r4-cartesian"])
        .arg(&input)
        .arg(d.path().join("m.npz"))
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&o.stdout).to_string();
    let mean = 100.0 * mask.iter().filter(|v| **v != 0.0).count() as f64 / mask.len() as f64;
    assert!(
        line.contains(&format!("{mean:.1} % measured")),
        "{line} vs {mean:.1}"
    );
    // Unmeasured samples are exactly zero in every coil.
    for ((s, _c, i, j), v) in k.data.indexed_iter() {
        if mask[[s, i, j]] == 0.0 {
            assert_eq!(v.norm(), 0.0);
        }
    }
}

/// Runs `cmd`, asserts success and parses its standard output as JSON.
fn success_json(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.assert().success().get_output().stdout.clone();
    serde_json::from_slice(&out).unwrap()
}

/// Runs `amri recon --json --method METHOD EXTRA.. INPUT OUT`, asserts success and an `ok`
/// status, and returns the report of the one file.
fn recon_report(method: &str, extra: &[&str], input: &Path, out: &Path) -> serde_json::Value {
    let v = success_json(
        amri()
            .args(["recon", "--json", "--no-progress", "--method", method])
            .args(extra)
            .arg(input)
            .arg(out),
    );
    assert_eq!(v["files"][0]["status"], "ok", "{v}");
    v["files"][0].clone()
}

fn simulate(protocol: &str, input: &Path, out: &Path) {
    amri()
        .args(["simulate", "--protocol", protocol])
        .arg(input)
        .arg(out)
        .assert()
        .success();
}

#[test]
fn the_pixel_preset_reconstructs_its_own_simulated_data() {
    // A preset whose [reconstruction] cannot take the data its [acquisition] makes is a defect
    // (pixel-90 once named TV when TV refused image-domain data; it now inpaints with l1-wavelet).
    let d = tempfile::tempdir().unwrap();
    let ks = d.path().join("px.npz");
    simulate("pixel-90", &sample("dicom/oblique_stack"), &ks);
    amri()
        .args(["recon", "--protocol", "pixel-90"])
        .arg(&ks)
        .arg(d.path().join("px.nii.gz"))
        .assert()
        .success();
    assert!(d.path().join("px.nii.gz").is_file());
}

#[test]
fn classical_methods_inpaint_pixel_corruptions() {
    // On image-domain data the classical methods solve the inpainting problem (A = M): TV and
    // l1-wavelet must beat the masked image against the stored reference; random projections
    // are refused with a message that names them.
    let d = tempfile::tempdir().unwrap();
    let ks = d.path().join("px.npz");
    simulate("pixel-90", &sample("dicom/oblique_stack"), &ks);
    let psnr_of = |method: &str, extra: &[&str]| -> f64 {
        let out = d.path().join(format!("{method}.nii.gz"));
        recon_report(method, extra, &ks, &out)["psnr"]
            .as_f64()
            .unwrap()
    };
    let zf = psnr_of("zero-filled", &[]);
    let tv = psnr_of("tv", &["--iters", "100", "--lambda", "0.05"]);
    let l1 = psnr_of("l1-wavelet", &["--iters", "100", "--lambda", "0.05"]);
    assert!(
        tv > zf + 3.0,
        "TV inpainting {tv} dB vs masked image {zf} dB"
    );
    assert!(
        l1 > zf + 3.0,
        "l1-wavelet inpainting {l1} dB vs masked image {zf} dB"
    );
    let proj = d.path().join("proj.npz");
    simulate("gaussian-cs", &sample("dicom/oblique_stack"), &proj);
    amri()
        .args(["recon", "--no-progress", "--method", "tv"])
        .arg(&proj)
        .arg(d.path().join("proj.nii.gz"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("projections"));
}

#[test]
fn recon_single_file_beats_zero_filled_and_writes_provenance() {
    let d = tempfile::tempdir().unwrap();
    let ks = d.path().join("stack_r4.npz");
    simulate(
        "singlecoil-r4-cartesian",
        &sample("dicom/oblique_stack"),
        &ks,
    );
    let psnr_of = |method: &str, extra: &[&str]| -> f64 {
        let out = d.path().join(format!("{method}.nii.gz"));
        let report = recon_report(method, extra, &ks, &out);
        let side: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(d.path().join(format!("{method}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(side["settings"]["method"], method);
        assert!(side["amri_version"].is_string());
        let img = read_image(&out);
        assert_eq!(img.shape4(), [1, 5, 64, 64]);
        assert!(img.meta.description.contains(method));
        report["psnr"].as_f64().unwrap()
    };
    let zf = psnr_of("zero-filled", &[]);
    let cg = psnr_of("cg-sense", &["--iters", "20"]);
    let tv = psnr_of("tv", &["--iters", "60", "--lambda", "0.002"]);
    assert!(zf > 10.0, "{zf}");
    assert!(tv > zf, "TV {tv} should beat zero-filled {zf}");
    assert!(cg >= zf - 0.5, "CG {cg} vs zero-filled {zf}");
}

/// A rerun keeps an output only when it is current (as make decides): same input, same
/// settings, input not modified since. Changing λ, or the input, reconstructs again.
#[test]
fn rerun_with_other_settings_or_a_changed_input_recomputes() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("s.npz");
    simulate(
        "singlecoil-r4-cartesian",
        &sample("dicom/MR_small.dcm"),
        &input,
    );
    let out = d.path().join("tv.nii.gz");
    let status = |lambda: &str| {
        let v = success_json(
            amri()
                .args(["recon", "--json", "--no-progress", "--method", "tv"])
                .args(["--iters", "20", "--lambda", lambda])
                .arg(&input)
                .arg(&out),
        );
        v["files"][0]["status"].as_str().unwrap().to_owned()
    };
    assert_eq!(status("0.001"), "ok");
    let first = read_image(&out).data;
    assert_eq!(status("0.001"), "skipped", "same input and settings");
    // another λ: reconstructed again, and the image is the new one
    assert_eq!(
        status("0.05"),
        "ok",
        "changed λ must not return the old image"
    );
    let second = read_image(&out).data;
    assert_ne!(first, second);
    let side: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("tv.json")).unwrap()).unwrap();
    assert_eq!(side["settings"]["lambda"].as_f64().unwrap() as f32, 0.05);
    assert_eq!(status("0.05"), "skipped");
    // the input rewritten after the output: reconstructed again
    let bytes = std::fs::read(&input).unwrap();
    std::fs::write(&input, bytes).unwrap();
    assert_eq!(
        status("0.05"),
        "ok",
        "a changed input must be reconstructed again"
    );
    assert_eq!(read_image(&out).data, second, "same data, same result");
}

#[test]
fn recon_batch_mirrors_tree_reports_failures_skips_and_shards() {
    let d = tempfile::tempdir().unwrap();
    let study = d.path().join("study");
    std::fs::create_dir_all(study.join("a")).unwrap();
    std::fs::create_dir_all(study.join("b")).unwrap();
    simulate(
        "singlecoil-r4-cartesian",
        &sample("dicom/oblique_stack"),
        &study.join("a/s1.npz"),
    );
    simulate(
        "singlecoil-r4-cartesian",
        &sample("dicom/MR_small.dcm"),
        &study.join("b/s2.npz"),
    );
    std::fs::write(study.join("b/broken.npz"), b"not a zip").unwrap();
    let out = d.path().join("out");
    let summary = d.path().join("summary.csv");
    amri()
        .args([
            "recon",
            "--method",
            "zero-filled",
            "--no-progress",
            "--summary",
        ])
        .arg(&summary)
        .arg(&study)
        .arg(&out)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("broken.npz"))
        .stderr(predicate::str::contains("1 of 3 files failed"));
    assert!(out.join("a/s1.nii.gz").exists() && out.join("a/s1.json").exists());
    assert!(out.join("b/s2.nii.gz").exists());
    assert!(
        !out.join("b/broken.nii.gz").exists(),
        "no output for a failed file"
    );
    let csv = std::fs::read_to_string(&summary).unwrap();
    assert!(csv.starts_with("input,output,status"), "{csv}");
    assert_eq!(csv.matches(",ok,").count(), 2, "{csv}");
    // A rerun skips what is complete and retries only the failure.
    std::fs::remove_file(study.join("b/broken.npz")).unwrap();
    let before = std::fs::metadata(out.join("a/s1.nii.gz"))
        .unwrap()
        .modified()
        .unwrap();
    let o = amri()
        .args(["recon", "--method", "zero-filled", "--json"])
        .arg(&study)
        .arg(&out)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&o).unwrap();
    assert!(v["files"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["status"] == "skipped"));
    assert_eq!(
        std::fs::metadata(out.join("a/s1.nii.gz"))
            .unwrap()
            .modified()
            .unwrap(),
        before
    );
    // Shards split the sorted list: 0/2 takes a/s1, 1/2 takes b/s2 (here from Slurm's variables).
    let o = amri()
        .args(["recon", "--method", "zero-filled", "--json", "--force"])
        .env("SLURM_ARRAY_TASK_ID", "1")
        .env("SLURM_ARRAY_TASK_COUNT", "2")
        .arg(&study)
        .arg(&out)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&o).unwrap();
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert!(files[0]["input"].as_str().unwrap().ends_with("s2.npz"));
    assert_eq!(files[0]["status"], "ok");
}

#[test]
fn shipped_pixel_prior_beats_classical_inpainting_on_the_validation_slices() {
    // The shipped inpainting prior, trained only on 90 %-missing slices, against amri's own
    // l1-wavelet inpainting (the pixel-90 preset's method) on the 24 low-res validation slices it
    // never saw; measured 17.64 against 16.82 dB when it was shipped (docs/benchmarks.md).
    let d = tempfile::tempdir().unwrap();
    let ks = d.path().join("val_px.npz");
    simulate(
        "pixel-90",
        &sample("colin27/lowres/t1_axial_val_64.nii.gz"),
        &ks,
    );
    let model = root().join("models/colin27-64-pixel90-ambient");
    let model = model.to_str().unwrap();
    let psnr = |method: &str, extra: &[&str]| -> f64 {
        let out = d.path().join(format!("{method}.nii.gz"));
        recon_report(method, extra, &ks, &out)["psnr"]
            .as_f64()
            .unwrap()
    };
    let zf = psnr("zero-filled", &[]);
    let l1 = psnr("l1-wavelet", &["--lambda", "0.05", "--iters", "100"]);
    let one = psnr("one-step", &["--model", model]);
    assert!(l1 > zf + 8.0, "l1-wavelet {l1} dB vs masked image {zf} dB");
    assert!(one > l1 + 0.3, "one-step {one} dB vs l1-wavelet {l1} dB");
}

/// The learned prior the demo test uses: the shipped one when it exists (then the demo runs
/// with its default `--model`), otherwise a tiny prior trained here for 2 steps on the 64×64
/// training slices under the demo's protocol.
fn demo_prior(dir: &Path) -> Option<PathBuf> {
    if root().join("models/colin27-64-r4-ambient").exists() {
        return None;
    }
    let run = dir.join("prior");
    amri()
        .args([
            "train",
            "--protocol",
            "singlecoil-r4-cartesian",
            "--preset",
            "tiny",
        ])
        .args(["--steps", "2", "--batch", "2", "--warmup", "1"])
        .args(["--checkpoint-every", "2", "--no-progress", "--out"])
        .arg(&run)
        .arg(sample("colin27/lowres/t1_axial_train1_64.nii.gz"))
        .assert()
        .success();
    Some(run)
}

/// SHA-256 of a file by the system's `sha256sum`, when there is one (independent check).
fn system_sha256(p: &Path) -> Option<String> {
    let out = std::process::Command::new("sha256sum")
        .arg(p)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    text.split_whitespace().next().map(str::to_owned)
}

/// Parses a metrics CSV (`method,psnr_db,ssim,nmse,seconds`) into rows.
fn metrics_rows(csv: &str) -> Vec<(String, [f64; 4])> {
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("method,psnr_db,ssim,nmse,seconds"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 5, "{l}");
            let v = |i: usize| f[i].parse::<f64>().unwrap();
            (f[0].to_owned(), [v(1), v(2), v(3), v(4)])
        })
        .collect()
}

#[test]
fn demo_runs_end_to_end_on_the_samples() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("demo");
    let model = demo_prior(d.path());
    let mut cmd = amri();
    cmd.current_dir(root())
        .args(["demo", "--slices", "2", "--iters", "5"])
        .args([
            "--prior-slices",
            "1",
            "--prior-steps",
            "4",
            "--prior-samples",
            "2",
        ])
        .arg("--out")
        .arg(&out);
    if let Some(m) = &model {
        cmd.arg("--model").arg(m);
    }
    let stdout = cmd
        .assert()
        .success()
        .stdout(predicate::str::contains("l1-wavelet"))
        .stdout(predicate::str::contains("comparison.png"))
        .stdout(predicate::str::contains("prior_comparison.png"))
        .stdout(predicate::str::contains("prior_metrics.csv"))
        .get_output()
        .stdout
        .clone();
    let stdout = String::from_utf8(stdout).unwrap();
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let psnr = |m: &str| -> f64 {
        let line = csv
            .lines()
            .find(|l| l.starts_with(&format!("{m},")))
            .unwrap();
        line.split(',').nth(1).unwrap().parse().unwrap()
    };
    assert!(psnr("l1-wavelet") > psnr("zero-filled"), "{csv}");
    for png in ["comparison.png", "prior_comparison.png"] {
        assert_eq!(&std::fs::read(out.join(png)).unwrap()[1..4], b"PNG");
    }
    assert_eq!(
        read_image(&out.join("val_l1-wavelet.nii.gz")).shape4(),
        [1, 2, 256, 256]
    );
    assert!(out.join("val_l1-wavelet_dicom").is_dir());

    // The learned-prior part: every method has a row with finite, sensible metrics.
    let prior_csv = std::fs::read_to_string(out.join("prior_metrics.csv")).unwrap();
    let rows = metrics_rows(&prior_csv);
    let names: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["zero-filled", "l1-wavelet", "tv", "one-step", "iterative"],
        "{prior_csv}"
    );
    for (name, [psnr, ssim, nmse, secs]) in &rows {
        assert!(psnr.is_finite() && *psnr > 0.0, "{name}: {prior_csv}");
        assert!(
            ssim.is_finite() && *ssim > -1.0 && *ssim <= 1.0,
            "{name}: {prior_csv}"
        );
        assert!(nmse.is_finite() && *nmse >= 0.0, "{name}: {prior_csv}");
        assert!(secs.is_finite() && *secs >= 0.0, "{name}: {prior_csv}");
    }
    // Images on the 64×64 grid of the low-resolution validation volume, one central slice.
    for m in ["zero-filled", "l1-wavelet", "tv", "one-step", "iterative"] {
        let v = read_image(&out.join(format!("prior_{m}.nii.gz")));
        assert_eq!(v.shape4(), [1, 1, 64, 64], "{m}");
        assert!(v.data.iter().all(|x| x.is_finite()), "{m}");
    }
    // Two posterior samples with different noise differ somewhere: the std map is ≥ 0, not all 0.
    let sd = read_image(&out.join("prior_iterative_std.nii.gz"));
    assert_eq!(sd.shape4(), [1, 1, 64, 64]);
    assert!(sd.data.iter().all(|x| x.is_finite() && *x >= 0.0));
    assert!(sd.data.iter().any(|x| *x > 0.0));

    // Provenance: the weights' SHA-256 is printed, in the JSON and in the NIfTI descriptions.
    let prov: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("prior_provenance.json")).unwrap())
            .unwrap();
    let sha = prov["model_sha256"].as_str().unwrap().to_owned();
    assert_eq!(sha.len(), 64);
    assert!(stdout.contains(&sha), "{stdout}");
    let ckpt = PathBuf::from(prov["model_checkpoint"].as_str().unwrap());
    let ckpt = if ckpt.is_absolute() {
        ckpt
    } else {
        root().join(ckpt)
    };
    if let Some(sys) = system_sha256(&ckpt.join("ema.safetensors")) {
        assert_eq!(sys, sha);
    }
    assert_eq!(prov["protocol"], "singlecoil-r4-cartesian");
    assert_eq!(prov["iterative"]["steps"], 4);
    for f in ["prior_one-step.nii.gz", "prior_iterative_std.nii.gz"] {
        let desc = read_image(&out.join(f)).meta.description;
        assert!(desc.contains(&sha[..16]), "{f}: {desc}");
    }
    assert!(!read_image(&out.join("prior_tv.nii.gz"))
        .meta
        .description
        .contains("sha256"));
}

#[test]
fn demo_runs_a_prior_that_fits_the_main_8coil_measurement_on_it_beside_cg_sense() {
    let d = tempfile::tempdir().unwrap();
    // a 256×256 8-coil SENSE-input prior, 1 step on two training slices (plumbing, not quality)
    let mut vol = read_image(&sample("colin27/t1_axial_train2.nii.gz"));
    vol.data = vol.data.slice(ndarray::s![.., 20..22, .., ..]).to_owned();
    let two = d.path().join("two.nii.gz");
    amri_io::write(
        &two,
        &amri_io::Scan::Image(vol),
        &amri_io::WriteOptions::default(),
    )
    .unwrap();
    let run = d.path().join("prior256");
    amri()
        .args([
            "train",
            "--protocol",
            "brain-r4-cartesian",
            "--preset",
            "clinical",
        ])
        .args(["--network-input", "sense", "--steps", "1", "--batch", "1"])
        .args(["--warmup", "1", "--no-progress", "--out"])
        .arg(&run)
        .arg(&two)
        .assert()
        .success();
    let out = d.path().join("demo");
    amri()
        .current_dir(root())
        .args(["demo", "--slices", "3", "--iters", "2", "--model"])
        .arg(&run)
        .args([
            "--prior-slices",
            "1",
            "--prior-steps",
            "2",
            "--prior-samples",
            "2",
        ])
        .arg("--out")
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains("1 slices, 8 coils, 256x256"));
    let rows = metrics_rows(&std::fs::read_to_string(out.join("prior_metrics.csv")).unwrap());
    let names: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "zero-filled",
            "cg-sense",
            "l1-wavelet",
            "tv",
            "one-step",
            "iterative"
        ]
    );
    // the same measurement as the main part: its central slice, same samples and mask
    let main = read_kspace(&out.join("val_measured.npz"));
    let part = read_kspace(&out.join("prior_measured.npz"));
    assert_eq!(part.shape4(), [1, 8, 256, 256]);
    assert_eq!(
        part.data.index_axis(ndarray::Axis(0), 0),
        main.data.index_axis(ndarray::Axis(0), 1)
    );
    assert_eq!(
        part.mask.as_ref().unwrap().index_axis(ndarray::Axis(0), 0),
        main.mask.as_ref().unwrap().index_axis(ndarray::Axis(0), 1)
    );
    // the main part's CG-SENSE row on that slice is the prior part's (same data, same method)
    let main_img = read_image(&out.join("val_cg-sense.nii.gz"));
    let part_img = read_image(&out.join("prior_cg-sense.nii.gz"));
    let a = main_img.data.slice(ndarray::s![0, 1, .., ..]);
    let b = part_img.data.slice(ndarray::s![0, 0, .., ..]);
    let diff = a
        .iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let peak = a.iter().fold(0f32, |m, x| m.max(x.abs()));
    assert!(diff <= 1e-4 * peak, "max |Δ| {diff} of peak {peak}");
    let sd = read_image(&out.join("prior_iterative_std.nii.gz"));
    assert_eq!(sd.shape4(), [1, 1, 256, 256]);
    assert!(sd.data.iter().all(|x| x.is_finite() && *x >= 0.0));
}

#[test]
fn demo_without_a_model_says_how_to_skip_and_no_prior_skips() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("demo");
    amri()
        .current_dir(root())
        .args(["demo", "--slices", "1", "--iters", "2", "--model"])
        .arg(d.path().join("no-such-model"))
        .arg("--out")
        .arg(&out)
        .assert()
        .failure()
        .stderr(predicate::str::contains("no-such-model"))
        .stderr(predicate::str::contains("--no-prior"))
        .stderr(predicate::str::contains("panicked").not());
    // The check comes before any work: nothing was reconstructed.
    assert!(!out.join("metrics.csv").exists());
    amri()
        .current_dir(root())
        .args([
            "demo",
            "--slices",
            "1",
            "--iters",
            "2",
            "--no-prior",
            "--model",
        ])
        .arg(d.path().join("no-such-model"))
        .arg("--out")
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains("skipped"));
    assert!(out.join("metrics.csv").exists());
    assert!(!out.join("prior_metrics.csv").exists());
    amri()
        .current_dir(root())
        .args(["demo", "--prior-steps", "0", "--out"])
        .arg(&out)
        .assert()
        .failure()
        .stderr(predicate::str::contains("--prior-steps must be"));
    // The validation volume has 24 slices; too many is refused before any work.
    let out2 = d.path().join("demo2");
    amri()
        .current_dir(root())
        .args(["demo", "--prior-slices", "25", "--out"])
        .arg(&out2)
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "--prior-slices must be in [1, 24], got 25",
        ));
    assert!(!out2.join("metrics.csv").exists());
}

#[test]
fn recon_reads_fastmri_hdf5_and_never_leaks_patient_id() {
    // A fastMRI-layout file written by h5py (tests/fixtures/make_fastmri_like.py).
    let h5 = root().join("tests/fixtures/fastmri_like.h5");
    let d = tempfile::tempdir().unwrap();
    let mut psnr = Vec::new();
    for m in ["zero-filled", "cg-sense"] {
        let out = d.path().join(format!("{m}.nii.gz"));
        psnr.push(
            recon_report(m, &["--iters", "15"], &h5, &out)["psnr"]
                .as_f64()
                .unwrap(),
        );
    }
    assert!(
        psnr[1] > psnr[0] + 1.0,
        "CG-SENSE {} vs zero-filled {}",
        psnr[1],
        psnr[0]
    );
    let info = amri()
        .arg("info")
        .arg(&h5)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let info = String::from_utf8(info).unwrap();
    assert!(info.contains("acquisition"), "{info}");
    assert!(
        !info.contains("do-not-copy-0001"),
        "patient_id leaked: {info}"
    );
    for f in std::fs::read_dir(d.path()).unwrap() {
        let bytes = std::fs::read(f.unwrap().path()).unwrap();
        assert!(!bytes.windows(16).any(|w| w == b"do-not-copy-0001"));
    }
}

/// The broken inputs of tests/bad-inputs/ (made by make_bad_inputs.py): each must give a clear
/// error naming the file, exit status 1, and no panic, through the CLI and through the library.
#[test]
fn bad_input_corpus() {
    let dir = root().join("tests/bad-inputs");
    // (file, subcommand and its arguments before the file, words the message must contain)
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("truncated.nii.gz", &["info"], &["gzip"]),
        ("wrong_magic.nii", &["info"], &["magic"]),
        (
            "huge_header.nii",
            &["info"],
            &["header claims", "file has 400 bytes"],
        ),
        ("zero_dim.nii", &["info"], &["dim[2] = 0"]),
        ("huge_shape.npy", &["info"], &["needs", "bytes"]),
        ("mask_mismatch.npz", &["info"], &["mask", "[2, 8, 6]"]),
        (
            "nan_kspace.npz",
            &["recon", "--method", "zero-filled", "--no-progress"],
            &["NaN"],
        ),
        ("short.cfl", &["info"], &["800 bytes", "header"]),
        ("not_hdf5.h5", &["info"], &["not an HDF5 file"]),
        (
            "nan_pixels.nii",
            &["simulate", "--protocol", "pixel-90"],
            &["NaN"],
        ),
        (
            "protocol_wrong_type.toml",
            &["protocol", "check"],
            &["coils", "string"],
        ),
        (
            "protocol_unknown_key.toml",
            &["protocol", "check"],
            &["noise", "unknown field"],
        ),
        (
            "protocol_out_of_range.toml",
            &["protocol", "check"],
            &["acceleration = 0.5", "[1, 64]"],
        ),
    ];
    let out = tempfile::tempdir().unwrap();
    for (file, args, words) in cases {
        let path = dir.join(file);
        let mut cmd = amri();
        cmd.args(*args).arg(&path);
        if args[0] == "recon" {
            cmd.arg(out.path().join("r.nii.gz"));
        } else if args[0] == "simulate" {
            cmd.arg(out.path().join("s.npz"));
        }
        let o = cmd.assert().code(1).get_output().clone();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(file),
            "{file}: message does not name the file: {err}"
        );
        assert!(!err.contains("panicked"), "{file}: panic: {err}");
        for w in *words {
            assert!(err.contains(w), "{file}: message lacks '{w}': {err}");
        }
        // Through the library too: readers return an error naming the file.
        if args[0] == "info" {
            let e = amri_io::read(&path).unwrap_err().to_string();
            assert!(
                e.contains(file),
                "{file}: library error does not name the file: {e}"
            );
        }
    }
    assert!(!out.path().join("r.nii.gz").exists() && !out.path().join("s.npz").exists());
}

/// Kill a batch with SIGKILL while it writes, then check that every output under its final name
/// is complete (reads back, has its sidecar) and that a rerun finishes the rest.
#[cfg(unix)]
#[test]
fn killed_batch_leaves_no_partial_output_and_rerun_completes() {
    let d = tempfile::tempdir().unwrap();
    let study = d.path().join("study");
    std::fs::create_dir_all(&study).unwrap();
    let src = study.join("s0.npz");
    simulate(
        "singlecoil-r4-cartesian",
        &sample("colin27/t1_axial_val.nii.gz"),
        &src,
    );
    for i in 1..4 {
        std::fs::copy(&src, study.join(format!("s{i}.npz"))).unwrap();
    }
    let out = d.path().join("out");
    let bin = assert_cmd::cargo::cargo_bin("amri");
    let mut child = std::process::Command::new(&bin)
        .args([
            "recon",
            "--method",
            "l1-wavelet",
            "--iters",
            "40",
            "--no-progress",
            "-q",
        ])
        .arg(&study)
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the first complete output, then kill at once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !out.join("s0.json").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no output within 300 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let finished: Vec<_> = (0..4)
        .filter(|i| out.join(format!("s{i}.json")).exists())
        .collect();
    assert!(finished.len() < 4, "killed too late to test anything");
    for i in 0..4 {
        let img = out.join(format!("s{i}.nii.gz"));
        if img.exists() {
            // Whatever carries the final name is a whole file.
            amri_io::read(&img).unwrap();
        }
    }
    amri()
        .args(["recon", "--method", "l1-wavelet", "--iters", "40", "--json"])
        .arg(&study)
        .arg(&out)
        .assert()
        .success();
    for i in 0..4 {
        assert!(out.join(format!("s{i}.json")).exists());
        amri_io::read(&out.join(format!("s{i}.nii.gz"))).unwrap();
    }
    let debris: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert!(debris.is_empty(), "temporary files left: {debris:?}");
}

fn ismrmrd_fixture(name: &str) -> PathBuf {
    root()
        .join("crates/amri-io/tests/fixtures/ismrmrd")
        .join(name)
}

#[test]
fn ismrmrd_files_work_with_info_convert_and_recon() {
    // accel.h5: made by ismrmrd_generate_cartesian_shepp_logan (crates/amri-io/tests/fixtures/
    // ismrmrd/make_ismrmrd.py): 16x16, 4 coils, readout oversampling 2, R=2 interleaved over
    // 2 repetitions, a noise scan.
    let h5 = ismrmrd_fixture("accel.h5");
    let info = amri()
        .arg("info")
        .arg(&h5)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let info = String::from_utf8(info).unwrap();
    for want in [
        "format        ismrmrd",
        "slices 2, coils 4, rows 16, cols 16",
        "noise         32 samples x 4 coils",
        "ismrmrd_encoded_matrix 32x16x1",
        "ismrmrd_trajectory cartesian",
        "readout_oversampling_removed 32 -> 16",
        "acs_cols",
    ] {
        assert!(info.contains(want), "missing '{want}' in:\n{info}");
    }
    let v = success_json(amri().args(["info", "--json"]).arg(&h5));
    assert_eq!(v["format"], "ismrmrd");
    assert_eq!(v["noise_samples"], 32);
    let d = tempfile::tempdir().unwrap();
    let npz = d.path().join("accel.npz");
    amri().arg("convert").arg(&h5).arg(&npz).assert().success();
    let (a, b) = (read_kspace(&h5), read_kspace(&npz));
    assert_eq!(a.data, b.data);
    assert_eq!(a.mask, b.mask);
    let out = d.path().join("zf.nii.gz");
    recon_report("zero-filled", &[], &h5, &out);
    assert_eq!(read_image(&out).shape4()[1..], [2, 16, 16]);
    // CG-SENSE needs ESPIRiT maps, whose 6x6 kernel wants a wider calibration region than
    // accel.h5's 4 lines: the fully sampled full.h5.
    let out = d.path().join("cg.nii.gz");
    recon_report(
        "cg-sense",
        &["--iters", "5"],
        &ismrmrd_fixture("full.h5"),
        &out,
    );
    assert_eq!(read_image(&out).shape4()[1..], [1, 16, 16]);
}

#[test]
fn simulate_and_convert_write_ismrmrd_for_h5_outputs() {
    let d = tempfile::tempdir().unwrap();
    let input = sample("dicom/oblique_stack");
    let run = |out: &Path, protocol: &str| {
        amri()
            .args(["simulate", "--protocol", protocol, "--coils", "4"])
            .arg(&input)
            .arg(out)
            .assert()
    };
    let (npz, h5) = (d.path().join("s.npz"), d.path().join("s.h5"));
    run(&npz, "brain-r4-cartesian").success();
    run(&h5, "brain-r4-cartesian").success();
    assert_eq!(
        amri_io::Format::detect(&h5).unwrap(),
        amri_io::Format::Ismrmrd
    );
    let (a, b) = (read_kspace(&npz), read_kspace(&h5));
    assert_eq!(b.shape4(), a.shape4());
    assert_eq!(b.data, a.data);
    assert_eq!(b.mask, a.mask);
    assert_eq!(b.reference, a.reference);
    assert_eq!(b.attributes["protocol"], "brain-r4-cartesian");
    assert!((b.affine.voxel_size()[0] - a.affine.voxel_size()[0]).abs() < 1e-5);
    // convert: .npz -> .h5 -> .npz keeps the k-space.
    let h5b = d.path().join("c.h5");
    amri().arg("convert").arg(&npz).arg(&h5b).assert().success();
    assert_eq!(read_kspace(&h5b).data, a.data);
    // An image-domain corruption is not ISMRMRD k-space: refused, naming the file, nothing left.
    let px = d.path().join("px.h5");
    run(&px, "pixel-90")
        .failure()
        .stderr(predicate::str::contains("px.h5").and(predicate::str::contains("k-space")));
    assert!(!px.exists());
}
